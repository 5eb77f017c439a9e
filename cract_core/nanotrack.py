"""NanoTrack V3 (Honglin Chu, Apache-2.0) as cract modules: its backbone as phi, its BAN head as the
Siamese proposal stage.

NanoTrack V3 is a small Siamese tracker that its authors trained on GOT-10k, LaSOT, ImageNet
VID/DET, YouTube-BB and COCO: tracking-pretrained features that a few thousand frames of our own
data cannot give.  These are our own modules with the published architecture; the weights load
from the authors' checkpoint (``nanotrackv3.pth``, or the plain tensors file shipped in models/)
through :func:`nanotrack_key_map`, an explicit name for every one of its 438 tensors, so loading
never depends on tensor order.  test_nanotrack.py checks both networks against the authors' ONNX
graphs with onnxruntime.

Backbone: MobileNetV3-Small with a ninth inverted residual (96 channels) at stride 1, so the output
stays at stride 16: a 255 search crop gives 96 x 16 x 16, a 127 template 96 x 8 x 8.  Symmetric
padding: feature cell j looks at crop pixel 16 j (the pooler's pixel offset 0).  Its last two
stages are both at stride 16: phi_3 is the 48-channel stage, phi_4 the 96-channel output.

BAN head (box-adaptive, anchor-free): per point of a 15 x 15 grid (stride 16, centred on the crop
centre), two logits (background, target) and four distances (left, top, right, bottom) in crop
pixels from the point to the box sides.  Depth-wise cross-correlation with the template's central
4 x 4 cells and pixel-wise correlation with all 8 x 8 cells, each per branch (cls / reg), then a
tower of six depth-wise separable convolutions per branch.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# (kernel, expanded channels, out channels, squeeze-excite, hard-swish, stride) of the nine
# inverted residuals after the stem, with the expansions the authors' _make_divisible(.., 8) gives.
V3_BLOCKS = [
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 1),
]
PHI3_BLOCK = 7  # index (0-based, after the stem) of the last 48-channel block: phi_3
STRIDE = 16
CHANNELS = 96
SCORE_SIZE = 15  # the BAN head's output side for a 255 search crop and a 127 template
TEMPLATE_CENTER_CELLS = 4  # the depth-wise correlation uses the template's central 4 x 4 cells


def _se_channels(channels: int) -> int:
    """The authors' _make_divisible(channels // 4, 8)."""
    v = channels // 4
    new = max(8, int(v + 4) // 8 * 8)
    return new + 8 if new < 0.9 * v else new


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        hidden = _se_channels(channels)
        self.reduce = nn.Linear(channels, hidden)
        self.expand = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x.mean(dim=(2, 3))
        y = F.hardsigmoid(self.expand(F.relu(self.reduce(y))))
        return x * y[:, :, None, None]


class ConvBN(nn.Sequential):
    """conv (no bias) + batch norm, optionally followed by an activation module."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: nn.Module | None = None):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act)
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """The authors' block.  Without expansion: dw -> BN -> act -> SE -> pw -> BN; with expansion:
    pw -> BN -> act -> dw -> BN -> SE -> act -> pw -> BN (the SE sits before the activation there)."""

    def __init__(self, cin: int, hidden: int, cout: int, k: int, use_se: bool, use_hs: bool, stride: int):
        super().__init__()

        def act() -> nn.Module:
            return nn.Hardswish() if use_hs else nn.ReLU()

        self.residual = stride == 1 and cin == cout
        self.expand = ConvBN(cin, hidden, 1, act=act()) if cin != hidden else None
        self.depthwise = ConvBN(hidden, hidden, k, stride, groups=hidden, act=act() if self.expand is None else None)
        self.se = SqueezeExcite(hidden) if use_se else None
        self.post_act = act() if self.expand is not None else None
        self.project = ConvBN(hidden, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        if self.post_act is not None:
            y = self.post_act(y)
        y = self.project(y)
        return x + y if self.residual else y


class NanoTrackV3Backbone(nn.Module):
    """Crop -> (phi_3 48 x H/16, phi_4 96 x H/16).  The input is BGR 0..255 as floats, as OpenCV gives
    it: the authors train and track on pysot's crops with no normalisation and no channel flip."""

    phi3_channels = 48
    phi4_channels = CHANNELS
    # No normalisation and no channel flip: the authors feed OpenCV's BGR pixels as floats.
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)
    takes_bgr = True
    phi3_offset = 0.0
    phi4_offset = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBN(3, 16, 3, 2, act=nn.Hardswish())
        blocks = []
        cin = 16
        for k, hidden, cout, se, hs, s in V3_BLOCKS:
            blocks.append(InvertedResidual(cin, hidden, cout, k, se, hs, s))
            cin = cout
        self.blocks = nn.ModuleList(blocks)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        phi3 = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == PHI3_BLOCK:
                phi3 = x
        return phi3, x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[1]

    def trainable_stage_modules(self) -> list[nn.Module]:
        """Blocks from the last backwards (cfg.backbone.trainable_stages)."""
        return list(reversed(self.blocks))


# ----------------------------------------------------------------------------------------- BAN head


def xcorr_depthwise_padded(search: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-channel cross-correlation with one pixel of zero padding (BAN's depth-wise branch)."""
    b, c = kernel.shape[:2]
    x = search.reshape(1, b * c, search.shape[2], search.shape[3])
    k = kernel.reshape(b * c, 1, kernel.shape[2], kernel.shape[3])
    out = F.conv2d(x, k, padding=1, groups=b * c)
    return out.reshape(b, c, out.shape[2], out.shape[3])


def xcorr_pixelwise(search: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Every template cell's feature dotted with every search cell: (B, Hz*Wz, Hx, Wx)."""
    b, c, h, w = search.shape
    return torch.bmm(kernel.reshape(b, c, -1).transpose(1, 2), search.reshape(b, c, -1)).reshape(b, -1, h, w)


class ConvBiasBN(nn.Sequential):
    """1x1 conv with bias + batch norm (the correlation branches' input adjustments)."""

    def __init__(self, channels: int):
        super().__init__(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels))


class DepthwiseBranch(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.kernel_adjust = ConvBiasBN(channels)
        self.search_adjust = ConvBiasBN(channels)

    def kernel(self, z_center: torch.Tensor) -> torch.Tensor:
        return self.kernel_adjust(z_center)

    def forward(self, kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return xcorr_depthwise_padded(self.search_adjust(x), kernel)


class PixelwiseBranch(nn.Module):
    """Pixel-wise correlation (64 = 8 x 8 template cells), channel attention, then a 2 x 2 depth-wise
    conv that brings 16 x 16 to the 15 x 15 grid, and a 1 x 1 conv."""

    def __init__(self, channels: int, cells: int = 64):
        super().__init__()
        self.kernel_adjust = ConvBiasBN(channels)
        self.search_adjust = ConvBiasBN(channels)
        self.attention_reduce = nn.Conv2d(cells, cells, 1)
        self.attention_expand = nn.Conv2d(cells, cells, 1)
        self.depthwise = nn.Sequential(nn.Conv2d(cells, cells, 2, groups=cells, bias=False), nn.BatchNorm2d(cells),
                                       nn.ReLU6())
        self.pointwise = nn.Sequential(nn.Conv2d(cells, cells, 1), nn.BatchNorm2d(cells))

    def kernel(self, z: torch.Tensor) -> torch.Tensor:
        return self.kernel_adjust(z)

    def forward(self, kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        corr = xcorr_pixelwise(self.search_adjust(x), kernel)
        weight = torch.sigmoid(self.attention_expand(F.relu(self.attention_reduce(corr.mean(dim=(2, 3), keepdim=True)))))
        return self.pointwise(self.depthwise(corr * weight))


def separable_tower(channels: int, depth: int = 6) -> nn.Sequential:
    """``depth`` x (3x3 depth-wise -> BN -> ReLU6 -> 1x1 -> BN), no activation after the last BN of a unit."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False), nn.BatchNorm2d(channels),
                   nn.ReLU6(), nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)]
    return nn.Sequential(*layers)


class BANHead(nn.Module):
    """NanoTrack V3's head: template features (B, 96, 8, 8) + search features (B, 96, 16, 16) ->
    logits (B, 2, 15, 15) and distances l, t, r, b (B, 4, 15, 15) in crop pixels (exp of the output)."""

    def __init__(self, channels: int = CHANNELS, cells: int = 64):
        super().__init__()
        self.dw_reg = DepthwiseBranch(channels)
        self.pw_reg = PixelwiseBranch(channels, cells)
        self.dw_cls = DepthwiseBranch(channels)
        self.pw_cls = PixelwiseBranch(channels, cells)
        self.fuse_reg = nn.Conv2d(channels + cells, channels, 1)
        self.fuse_cls = nn.Conv2d(channels + cells, channels, 1)
        self.cls_tower = separable_tower(channels)
        self.reg_tower = separable_tower(channels)
        self.cls_logits = nn.Conv2d(channels, 2, 1)
        self.reg_pred = nn.Conv2d(channels, 4, 1)

    @staticmethod
    def template_center(z: torch.Tensor) -> torch.Tensor:
        """The central 4 x 4 cells of an 8 x 8 template map (the target itself, little context)."""
        if z.shape[-1] <= TEMPLATE_CENTER_CELLS:
            return z
        lo = (z.shape[-1] - TEMPLATE_CENTER_CELLS) // 2
        return z[:, :, lo : lo + TEMPLATE_CENTER_CELLS, lo : lo + TEMPLATE_CENTER_CELLS]

    def kernels(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Everything that depends on the template alone, computed once per target."""
        zc = self.template_center(z)
        return (self.pw_reg.kernel(z), self.pw_cls.kernel(z), self.dw_reg.kernel(zc), self.dw_cls.kernel(zc))

    def forward_with_kernels(self, kernels: Sequence[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k_pw_reg, k_pw_cls, k_dw_reg, k_dw_cls = kernels
        reg = self.fuse_reg(torch.cat([self.pw_reg(k_pw_reg, x), self.dw_reg(k_dw_reg, x)], dim=1))
        cls = self.fuse_cls(torch.cat([self.pw_cls(k_pw_cls, x), self.dw_cls(k_dw_cls, x)], dim=1))
        logits = self.cls_logits(self.cls_tower(cls))
        distances = torch.exp(self.reg_pred(self.reg_tower(reg)))
        return logits, distances

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_with_kernels(self.kernels(z), x)


def point_grid(score_size: int, stride: int, search_size: int) -> torch.Tensor:
    """(S*S, 2) x, y of the BAN points in crop pixels, row-major: centred on the crop centre
    (point S // 2 is the previous target centre, as NanoTrack's tracker decodes), spaced by stride."""
    offsets = (torch.arange(score_size, dtype=torch.float32) - score_size // 2) * stride + search_size / 2.0
    ys, xs = torch.meshgrid(offsets, offsets, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def ban_score_size(search_size: int) -> int:
    """The BAN output side: one less than the search map's ceil(size / 16) (both correlations
    trim one cell: the 4 x 4 kernel with one pixel of padding, the 2 x 2 depth-wise conv)."""
    return math.ceil(search_size / STRIDE) - 1


class BANProposalHead(nn.Module):
    """The BAN head as a Siamese proposal stage: ``kernels(z)`` once per target, then per search crop
    ``proposals(kernels, x)`` -> (target probability (B, S*S), boxes xyxy (B, S*S, 4) in crop pixels)."""

    boxes_per_cell = 1

    def __init__(self, search_size: int):
        super().__init__()
        self.head = BANHead()
        self.score_size = ban_score_size(search_size)
        self.register_buffer("points", point_grid(self.score_size, STRIDE, search_size), persistent=False)

    def kernels(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.head.kernels(z)

    def proposals(self, kernels: Sequence[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, distances = self.head.forward_with_kernels(kernels, x)
        scores = F.softmax(logits.reshape(logits.shape[0], 2, -1), dim=1)[:, 1]
        return scores, decode_points(distances, self.points)


def decode_points(distances: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, 4, S, S) distances l, t, r, b -> (B, S*S, 4) boxes xyxy in crop pixels."""
    d = distances.reshape(distances.shape[0], 4, -1).transpose(1, 2)
    p = points.to(d.dtype)
    return torch.stack([p[:, 0] - d[..., 0], p[:, 1] - d[..., 1], p[:, 0] + d[..., 2], p[:, 1] + d[..., 3]], dim=-1)


# -------------------------------------------------------------------------------------- weights


def nanotrack_key_map() -> dict[str, str]:
    """Our tensor names (``backbone.*`` for :class:`NanoTrackV3Backbone`, ``head.*`` for
    :class:`BANHead`) -> the authors' (``backbone.features.*``, ``ban_head.*``).

    Covers every tensor of both modules; of the authors' 438, only the neck that V3 never applies
    (:data:`UNUSED_NECK_KEYS`) is left out.
    """
    out: dict[str, str] = {}

    def bn(ours: str, theirs: str) -> None:
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"{ours}.{name}"] = f"{theirs}.{name}"

    def conv(ours: str, theirs: str, bias: bool) -> None:
        out[f"{ours}.weight"] = f"{theirs}.weight"
        if bias:
            out[f"{ours}.bias"] = f"{theirs}.bias"

    def conv_bn(ours: str, theirs_conv: str, theirs_bn: str) -> None:
        conv(f"{ours}.0", theirs_conv, False)
        bn(f"{ours}.1", theirs_bn)

    conv_bn("backbone.stem", "backbone.features.0.0", "backbone.features.0.1")
    cin = 16
    for i, (_, hidden, cout, use_se, _, _) in enumerate(V3_BLOCKS):
        t = f"backbone.features.{i + 1}.conv"
        o = f"backbone.blocks.{i}"
        expands, cin = hidden != cin, cout
        if not expands:  # dw(0) bn(1) act(2) se(3) pw(4) bn(5)
            conv_bn(f"{o}.depthwise", f"{t}.0", f"{t}.1")
            se_index, pw, pw_bn = 3, 4, 5
        else:  # pw(0) bn(1) act(2) dw(3) bn(4) se(5) act(6) pw(7) bn(8)
            conv_bn(f"{o}.expand", f"{t}.0", f"{t}.1")
            conv_bn(f"{o}.depthwise", f"{t}.3", f"{t}.4")
            se_index, pw, pw_bn = 5, 7, 8
        if use_se:
            conv(f"{o}.se.reduce", f"{t}.{se_index}.fc.0", True)
            conv(f"{o}.se.expand", f"{t}.{se_index}.fc.2", True)
        conv_bn(f"{o}.project", f"{t}.{pw}", f"{t}.{pw_bn}")

    for branch in ("reg", "cls"):
        for kind, theirs in (("dw", "corr_dw"), ("pw", "corr_pw")):
            o, t = f"head.{kind}_{branch}", f"ban_head.{theirs}_{branch}"
            for ours_adj, theirs_adj in (("kernel_adjust", "conv_kernel"), ("search_adjust", "conv_search")):
                conv(f"{o}.{ours_adj}.0", f"{t}.{theirs_adj}.0", True)
                bn(f"{o}.{ours_adj}.1", f"{t}.{theirs_adj}.1")
            if kind == "pw":
                conv(f"{o}.attention_reduce", f"{t}.CA_layer.fc1", True)
                conv(f"{o}.attention_expand", f"{t}.CA_layer.fc2", True)
                conv(f"{o}.depthwise.0", f"{t}.conv.0", False)
                bn(f"{o}.depthwise.1", f"{t}.conv.1")
                conv(f"{o}.pointwise.0", f"{t}.conv.3", True)
                bn(f"{o}.pointwise.1", f"{t}.conv.4")
        conv(f"head.fuse_{branch}", f"ban_head.down_{branch}.0", True)
    for ours_tower, theirs_tower in (("cls_tower", "cls_tower"), ("reg_tower", "bbox_tower")):
        for unit in range(6):
            base = 5 * unit
            conv(f"head.{ours_tower}.{base}", f"ban_head.{theirs_tower}.{base}", False)
            bn(f"head.{ours_tower}.{base + 1}", f"ban_head.{theirs_tower}.{base + 1}")
            conv(f"head.{ours_tower}.{base + 3}", f"ban_head.{theirs_tower}.{base + 3}", False)
            bn(f"head.{ours_tower}.{base + 4}", f"ban_head.{theirs_tower}.{base + 4}")
    conv("head.cls_logits", "ban_head.cls_logits.0", True)
    conv("head.reg_pred", "ban_head.bbox_pred.0", True)
    return out


# The authors' V3 neck: a 1x1 conv + BN that V3 never applies (96 in = 96 out makes it an identity).
UNUSED_NECK_KEYS = tuple(f"neck.downsample.{n}" for n in (
    "0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"))


class NanoTrackWeightsError(FileNotFoundError):
    """The NanoTrack tensors file is missing or does not fit the architecture."""


def read_nanotrack_state(path: Path) -> dict[str, torch.Tensor]:
    """The authors' 438 tensors from their training checkpoint (``{'state_dict': ...}``) or from a
    plain tensors file with the same names.  Only tensors and plain containers are unpickled."""
    path = Path(path)
    if not path.is_file():
        raise NanoTrackWeightsError(
            f"NanoTrack V3 weights file {path} does not exist (the package ships models/nanotrack_v3/"
            "nanotrack_v3_tensors.pt; the authors' nanotrackv3.pth works too)")
    # The authors' checkpoint pickles a few numpy scalars (in its optimizer state): allow exactly
    # those, under the name numpy < 2 wrote, instead of unpickling arbitrary objects.
    import codecs

    import numpy as np
    from numpy._core.multiarray import scalar

    allowed = [(scalar, "numpy.core.multiarray.scalar"), np.dtype, codecs.encode,
               np.dtypes.Float64DType, np.dtypes.Float32DType, np.dtypes.Int64DType]
    try:
        with torch.serialization.safe_globals(allowed):
            data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise NanoTrackWeightsError(f"NanoTrack V3 weights file {path} cannot be read: {exc}") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NanoTrackWeightsError(f"{path} holds no NanoTrack state dict of tensors")
    return state


def load_nanotrack_weights(state: dict[str, torch.Tensor], backbone: Optional[NanoTrackV3Backbone] = None,
                           head: Optional[BANHead] = None) -> None:
    """Fill the given modules through the explicit map, with equal shapes.  Every tensor of ours must
    be filled; when both modules are given, every tensor of theirs must be used too (bar the neck)."""
    modules = {prefix: m for prefix, m in (("backbone", backbone), ("head", head)) if m is not None}
    mapping = {k: v for k, v in nanotrack_key_map().items() if k.split(".", 1)[0] in modules}
    ours = {f"{prefix}.{k}": v for prefix, m in modules.items() for k, v in m.state_dict().items()}
    unmapped = sorted(set(ours) - set(mapping))
    stale = sorted(set(mapping) - set(ours))
    absent = sorted(set(mapping.values()) - set(state))
    unused = sorted(set(state) - set(mapping.values()) - set(UNUSED_NECK_KEYS)) if len(modules) == 2 else []
    if unmapped or stale or unused or absent:
        raise NanoTrackWeightsError(
            f"NanoTrack V3 name map mismatch: ours without a mapping {unmapped[:5]}, mapped but not ours {stale[:5]}, "
            f"theirs unused {unused[:5]}, mapped names absent {absent[:5]}")
    for our_name, their_name in mapping.items():
        if ours[our_name].shape != state[their_name].shape:
            raise NanoTrackWeightsError(f"shape mismatch {our_name} {tuple(ours[our_name].shape)} vs "
                                        f"{their_name} {tuple(state[their_name].shape)}")
    for prefix, module in modules.items():
        n = len(prefix) + 1
        module.load_state_dict({k[n:]: state[v] for k, v in mapping.items() if k.startswith(prefix + ".")})


def extract_tensors(source: Path, dest: Path) -> str:
    """Write the authors' 438 state-dict tensors (no optimizer state, no pickled numpy) from their
    training checkpoint to a plain tensors file, and its sha256 beside it; returns the sha256.
    This is how models/nanotrack_v3/nanotrack_v3_tensors.pt was made."""
    import collections
    import hashlib
    import os
    import shutil
    import tempfile

    from .atomic import atomic_write_text

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    state = collections.OrderedDict((k, v.clone()) for k, v in read_nanotrack_state(source).items())
    # torch names the archive's inner folder after the file: save under the final name in a
    # folder beside it, then rename into place (atomic, and the same bytes as the shipped file)
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        torch.save(state, scratch / dest.name)
        digest = hashlib.sha256((scratch / dest.name).read_bytes()).hexdigest()
        os.replace(scratch / dest.name, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    atomic_write_text(dest.parent / (dest.name + ".sha256"), f"{digest}  {dest.name}\n")
    return digest


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Extract NanoTrack V3's tensors from the authors' nanotrackv3.pth "
                                            "into a plain tensors file with a sha256 (what models/nanotrack_v3 ships)")
    p.add_argument("source", type=Path, help="the authors' nanotrackv3.pth")
    p.add_argument("dest", type=Path, help="output .pt (a .sha256 file is written beside it)")
    args = p.parse_args(argv)
    print(extract_tensors(args.source, args.dest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
