"""``cract-export``: the frozen inference parts of a model config as ONNX graphs.

One folder per export, holding:

* ``template.onnx``: template crop (uint8 BGR, 1 x 3 x T x T) -> ``phi_z`` and the proposal stage's
  template kernels ``kernel_0..n`` (everything computed once per target);
* ``search.onnx``: search crop (uint8 BGR, 1 x 3 x S x S) + the kernels -> ``scores`` (1, A*s*s),
  ``boxes`` (1, A*s*s, 4) xyxy in crop pixels, and ``phi_x`` (what the CRAC heads pool from):
  the search branch and the proposal stage in one graph, one run per frame;
* ``regressor.onnx`` / ``identifier.onnx`` when the config runs R / I: pooled proposal features
  (K, P, s, s) + f_init (1, P, s, s) -> offsets (K, 4) (already times OFFSET_STD) / v+ (K,);
* ``manifest.json``: the key, the config name, the weights' sha256, the input normalisation.

Shapes are fixed where the tracker's are (crop sides, one crop a frame); only K of the heads is
dynamic (N proposals, or one RoI for ``confidence: identifier``).  The opset is pinned, and every
graph carries the same metadata as the manifest.  The pooling (RoIAlign) and the online D stay in
torch: they are small, and D is refitted at run time.

Graphs are cached under :func:`graph_cache_dir` keyed by :func:`graphs_key`, a hash of the
exported tensors, the shape-relevant config and the exporter's version: a changed weight or
setting gives a new key, and nothing is ever rebuilt per frame.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ..backbone import nanotrack_weights_path
from ..config import ExperimentConfig, default_config_path, load_config, uses_identifier, uses_regressor

log = logging.getLogger(__name__)

OPSET = 17  # pinned: ORT 1.16+ and TensorRT 8.6+ (JetPack 6) both take it
# Bump when what the graphs contain changes (inputs, outputs, what is inside): old caches are ignored.
EXPORT_VERSION = 2
MANIFEST = "manifest.json"
CACHE_ENV = "CRACT_ONNX_CACHE"


# ----------------------------------------------------------------------------------- graph modules


def extract_for_export(net: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    """CRACTNet.extract as the graphs run it: the same preprocessing (uint8 -> float, BGR -> RGB where
    the backbone wants RGB, (x - mean) / std), minus the steps that are identities for this backbone
    (NanoTrack's mean 0, std 1: two full-crop passes less) and minus torch's memory-format calls."""
    backbone = net.backbone
    body = backbone.body
    x = crops.float()
    if not getattr(body, "takes_bgr", False):
        x = x.flip(1)
    if any(m != 0.0 for m in body.mean):
        x = x - torch.tensor(body.mean, dtype=x.dtype).view(1, 3, 1, 1)
    if any(s != 1.0 for s in body.std):
        x = x / torch.tensor(body.std, dtype=x.dtype).view(1, 3, 1, 1)
    phi3, phi4 = body.features(x)
    return net.neck(phi3, backbone.align_phi4(phi3, phi4))


class TemplateGraph(nn.Module):
    """Template crop -> (phi_z, *kernels)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, template: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: D102
        phi_z = extract_for_export(self.net, template)
        return (phi_z, *self.net.rpn.kernels(phi_z))


class SearchGraph(nn.Module):
    """Search crop + kernels -> (scores, boxes, phi_x): the search branch with the proposal stage."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, search: torch.Tensor, *kernels: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: D102
        phi_x = extract_for_export(self.net, search)
        scores, boxes = self.net.rpn_outputs(tuple(kernels), phi_x)
        return scores, boxes, phi_x


class RegressorGraph(nn.Module):
    """R on pooled features: Eq. 4 offsets, already multiplied by OFFSET_STD (as CRACTNet.refine uses them)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, features: torch.Tensor, f_init: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net.regressor(features, f_init) * self.net.offset_std


class IdentifierGraph(nn.Module):
    """I on pooled features: v+, the probability that each proposal is the target."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, features: torch.Tensor, f_init: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.softmax(self.net.identifier(features, f_init), dim=1)[:, 1]


# ------------------------------------------------------------------------------------ keys, cache


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_sha256(cfg: ExperimentConfig) -> str:
    """sha256 of the backbone's weights file (NanoTrack's tensors; '' where the backbone has none here)."""
    if cfg.backbone.name != "nanotrack_v3" or cfg.backbone.weights == "none":
        return ""
    path = nanotrack_weights_path(cfg.backbone)
    return _file_sha256(path) if path.is_file() else ""


# Config fields that change what a graph computes; the rest (alpha, beta, NMS, thresholds, D) act
# outside the graphs, and changing them must not export again.
KEY_FIELDS = {
    "backbone": ("name", "neck", "phi4_mode", "fused_channels"),
    "rpn": ("type", "anchor_ratios", "anchor_scale", "head_channels"),
    "crac": ("pyramid_sizes", "pooling", "refinement", "classifier", "confidence", "regressor_conv_channels",
             "regressor_fc", "identifier_conv_channels", "identifier_fc"),
}


def graphs_key(cfg: ExperimentConfig, net: nn.Module) -> str:
    """What the graphs depend on: the exporter's version and opset, the config's network and crop
    settings, and every tensor of the modules the graphs hold (weights, folded batch norms, a
    loaded checkpoint; not the untrained R / I of a config that does not run them)."""
    h = hashlib.sha256()
    h.update(f"v{EXPORT_VERSION} opset{OPSET} torch{torch.__version__.split('+')[0]}".encode())
    shape_cfg = {section: {f: getattr(getattr(cfg, section), f) for f in fields} for section, fields in KEY_FIELDS.items()}
    shape_cfg["sizes"] = [cfg.tracker.template_size, cfg.tracker.search_size]
    h.update(json.dumps(shape_cfg, sort_keys=True, default=str).encode())
    used = {"backbone", "neck", "rpn"} | ({"regressor"} if uses_regressor(cfg) else set()) | (
        {"identifier"} if uses_identifier(cfg) else set())
    for name, tensor in sorted(net.state_dict().items()):
        if name.split(".")[0] not in used:
            continue
        t = tensor.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:20]


def graph_cache_dir(root: Optional[str | Path] = None) -> Path:
    """Where exported graphs are cached: ``root``, else $CRACT_ONNX_CACHE, else
    $XDG_CACHE_HOME/cract/onnx (~/.cache/cract/onnx): outside the repository, never committed."""
    if root:
        return Path(root).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cract" / "onnx"


def read_manifest(folder: Path) -> Optional[dict]:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def graph_names(cfg: ExperimentConfig) -> list[str]:
    names = ["template", "search"]
    if uses_regressor(cfg):
        names.append("regressor")
    if uses_identifier(cfg):
        names.append("identifier")
    return names


# ------------------------------------------------------------------------------------------ export


def _normalisation(net: nn.Module) -> dict[str, Any]:
    body = net.backbone.body
    return {"layout": "NCHW uint8", "channel_order": "BGR" if getattr(body, "takes_bgr", False) else "RGB (flipped in-graph)",
            "mean": list(body.mean), "std": list(body.std), "note": "normalisation is inside the graphs: feed raw uint8 crops"}


def _export_one(module: nn.Module, args: tuple, path: Path, inputs: Sequence[str], outputs: Sequence[str],
                dynamic: Optional[dict], metadata: dict[str, str]) -> None:
    import onnx  # lazy: only exporting needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape branches (shapes are fixed)
        torch.onnx.export(module, args, str(path), input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def export_graphs(cfg: ExperimentConfig, net: nn.Module, out_dir: str | Path, key: Optional[str] = None) -> dict:
    """Write the config's graphs and manifest into ``out_dir`` (created); returns the manifest.

    ``net`` is the CRACTNet the torch runtime would run (fused for inference, checkpoint loaded).
    """
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise ImportError("exporting ONNX graphs needs the 'onnx' package: pip install onnx "
                          "(or pip install 'cract-tracker[onnx]')") from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    key = key or graphs_key(cfg, net)
    t, s = cfg.tracker.template_size, cfg.tracker.search_size
    manifest = {
        "key": key, "export_version": EXPORT_VERSION, "opset": OPSET, "config": cfg.name,
        "config_file": cfg.source or "", "weights_sha256": weights_sha256(cfg),
        "checkpoint_sha256": cfg.checkpoint_sha256 or "", "normalisation": _normalisation(net),
        "template_size": t, "search_size": s, "graphs": graph_names(cfg), "torch": torch.__version__,
    }
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in manifest.items() if k != "graphs"}
    gen = torch.Generator().manual_seed(0)
    template = torch.randint(0, 256, (1, 3, t, t), generator=gen, dtype=torch.uint8)
    search = torch.randint(0, 256, (1, 3, s, s), generator=gen, dtype=torch.uint8)
    with torch.no_grad():
        phi_z, *kernels = TemplateGraph(net)(template)
        kernel_names = [f"kernel_{i}" for i in range(len(kernels))]
        _export_one(TemplateGraph(net), (template,), out / "template.onnx", ["template"], ["phi_z", *kernel_names],
                    None, meta)
        _export_one(SearchGraph(net), (search, *kernels), out / "search.onnx", ["search", *kernel_names],
                    ["scores", "boxes", "phi_x"], None, meta)
        p, size = net.pooler.out_channels, net.pooler.output_size
        feats = torch.randn(cfg.rpn.num_proposals, p, size, size, generator=gen)
        f_init = torch.randn(1, p, size, size, generator=gen)
        heads = {"regressor": (RegressorGraph, "offsets"), "identifier": (IdentifierGraph, "identity")}
        for name in graph_names(cfg)[2:]:
            graph, output = heads[name]
            _export_one(graph(net), (feats, f_init), out / f"{name}.onnx", ["features", "f_init"], [output],
                        {"features": {0: "K"}, output: {0: "K"}}, meta)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def cached_graphs(cfg: ExperimentConfig, net: nn.Module, cache_root: Optional[str | Path] = None) -> Path:
    """The folder holding this config's graphs for ``net``, exported now if the cache lacks them.

    Written into a temporary folder and renamed into place, so a crash or a second process
    exporting at the same time never leaves a half-written folder under the key.
    """
    key = graphs_key(cfg, net)
    root = graph_cache_dir(cache_root)
    folder = root / f"{cfg.name}-{key}"
    manifest = read_manifest(folder)
    if manifest and manifest.get("key") == key and all((folder / f"{g}.onnx").is_file() for g in manifest["graphs"]):
        return folder
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=".probe-", dir=root)
        os.rmdir(probe)
    except OSError as exc:
        if cache_root or os.environ.get(CACHE_ENV):
            raise OSError(f"the ONNX cache folder {root} cannot be written ({exc}): set onnx_cache or "
                          f"${CACHE_ENV} to a writable folder") from exc
        # A read-only home (a container, a service user): the system's temporary folder instead.
        root = Path(tempfile.gettempdir()) / f"cract-onnx-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        log.warning("%s is not writable (%s): caching ONNX graphs in %s", graph_cache_dir(cache_root), exc, root)
        return cached_graphs(cfg, net, root)
    scratch = Path(tempfile.mkdtemp(prefix=f".{cfg.name}-", dir=root))
    try:
        export_graphs(cfg, net, scratch, key)
        scratch.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        if folder.exists():  # an incomplete folder (no manifest): replace it
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(scratch, folder)
        except OSError:
            if read_manifest(folder) is None:  # not another process's finished export: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("exported ONNX graphs of %s to %s", cfg.name, folder)
    return folder


def check_graphs(folder: Path, cfg: ExperimentConfig, net: nn.Module) -> dict:
    """A user-given export folder must be the export of this config and these weights."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"{folder} holds no {MANIFEST}: not a cract-export folder")
    key = graphs_key(cfg, net)
    if manifest.get("key") != key:
        raise ValueError(f"{folder} was exported from other weights or settings (key {manifest.get('key')}, "
                         f"this config {cfg.name} gives {key}): run cract-export again")
    return manifest


# --------------------------------------------------------------------------------------------- CLI


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="cract-export", description=__doc__.split("\n\n")[0] + " (see docs/runtime.md)")
    p.add_argument("--config", default=None, help="model config YAML or a bare name of config/model/ "
                   "(default: the shipped default)")
    p.add_argument("--checkpoint", default=None, help="trained heads (default: the config's)")
    p.add_argument("--out", default=None, help="output folder (default: the runtime's cache folder, keyed by hash)")
    args = p.parse_args(argv)
    from ..tracker import Tracker  # the same net the tracker runs: checkpoint loaded, batch norms folded

    cfg = load_config(args.config or default_config_path())
    torch_cfg = dataclasses.replace(cfg, runtime="torch", onnx_providers=[], onnx_dir=None)
    torch_cfg.source = cfg.source
    net = Tracker.from_config(torch_cfg, checkpoint=args.checkpoint, device="cpu", mode="sync").net
    if args.out:
        manifest = export_graphs(cfg, net, args.out)
        folder = Path(args.out)
    else:
        folder = cached_graphs(cfg, net)
        manifest = read_manifest(folder) or {}
    print(f"{cfg.name}: {', '.join(manifest.get('graphs', []))} -> {folder} (key {manifest.get('key')}, "
          f"opset {OPSET})", file=sys.stderr)
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
