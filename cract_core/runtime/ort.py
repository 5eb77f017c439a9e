"""ONNX Runtime behind CRACTNet's inference surface (init_target / extract / rpn_outputs / refine / pool).

:class:`OnnxRuntimeNet` holds the torch CRACTNet it was exported from: pooling (RoIAlign), the online
D and any call outside the per-frame path (D's first-frame samples, training) run there, so the
tracker needs no other change than which net it holds.  Per frame the search graph runs once:
:meth:`OnnxRuntimeNet.extract` runs the search branch and the proposal stage together with the
current target's kernels, and :meth:`OnnxRuntimeNet.rpn_outputs` hands back what that run gave
for that same ``phi_x`` (anything else goes to torch).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from .. import geometry
from ..config import ExperimentConfig, config_root
from ..errors import InvalidInputError
from .export import cached_graphs, check_graphs, graph_names

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


class RuntimeUnavailableError(InvalidInputError):
    """The runtime or an execution provider a config asks for is not installed here."""


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeUnavailableError(
            "runtime 'onnxruntime' needs the 'onnxruntime' package (CPU) or 'onnxruntime-gpu' (CUDA, TensorRT): "
            "pip install onnxruntime, or pip install 'cract-tracker[onnx]'; or set runtime: torch") from exc
    return onnxruntime


def choose_providers(requested: Sequence[str], device: torch.device, available: Sequence[str]) -> list[str]:
    """Execution providers in priority order, CPU always last as the fallback.

    ``requested`` empty: CUDA when the tracker's device is cuda and onnxruntime-gpu is installed,
    else CPU.  Named providers must all be installed, or a RuntimeUnavailableError names the one
    that is missing and what is installed.
    """
    if not requested:
        chosen = [CUDA] if device.type == "cuda" and CUDA in available else []
        if device.type == "cuda" and CUDA not in available:
            raise RuntimeUnavailableError(
                f"device cuda with runtime onnxruntime needs {CUDA} (the 'onnxruntime-gpu' package); installed "
                f"providers: {', '.join(available)}")
    else:
        chosen = []
        by_short = {a.removesuffix("ExecutionProvider").lower(): a for a in (*available, CPU, CUDA, TENSORRT)}
        for name in requested:
            short = name.removesuffix("ExecutionProvider").lower()
            full = by_short.get(short, f"{name.removesuffix('ExecutionProvider')}ExecutionProvider")
            if full not in available:
                package = "onnxruntime-gpu (with TensorRT's libraries)" if full == TENSORRT else (
                    "onnxruntime-gpu" if full == CUDA else "an onnxruntime build with it")
                raise RuntimeUnavailableError(
                    f"execution provider {full} is not installed (needs {package}); installed providers: "
                    f"{', '.join(available)}")
            if full != CPU:
                chosen.append(full)
    return [*chosen, CPU]


def make_session(path: str | Path, num_threads: int, providers: Sequence[str], cache_dir: Optional[Path] = None) -> Any:
    """An InferenceSession with all graph optimisations, ``num_threads`` intra-op threads (0: ORT's
    default) and sequential execution (one crop a frame: inter-op threads only add hand-offs)."""
    ort = _import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = max(0, int(num_threads))
    opts.inter_op_num_threads = 1
    if num_threads == 1:
        # One thread: no spinning pool to wake (spinning only burns the core the ROS executor needs).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    provider_list: list[Any] = []
    for name in providers:
        if name == TENSORRT:
            trt_opts: dict[str, Any] = {"trt_fp16_enable": True}
            if cache_dir is not None:  # TensorRT's engine build takes minutes on a Jetson: keep it
                trt_opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir / "trt"))
            provider_list.append((name, trt_opts))
        else:
            provider_list.append(name)
    return ort.InferenceSession(str(path), sess_options=opts, providers=provider_list)


class OnnxRuntimeNet(nn.Module):
    """CRACTNet's inference surface on ONNX Runtime sessions (see the module docstring)."""

    def __init__(self, net: nn.Module, cfg: ExperimentConfig, folder: Path, num_threads: int,
                 providers: Sequence[str]):
        super().__init__()
        self.torch_net = net
        self.cfg = cfg
        self.folder = Path(folder)
        self.providers = list(providers)
        self.num_threads = num_threads
        self.sessions = {name: make_session(self.folder / f"{name}.onnx", num_threads, providers, self.folder)
                         for name in graph_names(cfg)}
        search = self.sessions["search"]
        self._kernel_names = [i.name for i in search.get_inputs()[1:]]
        self._kernels: Optional[tuple[torch.Tensor, ...]] = None
        self._feeds: dict[str, np.ndarray] = {}
        self._last: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None  # phi_x, scores, boxes

    # what the tracker reads of the net
    @property
    def score_size(self) -> int:
        return self.torch_net.score_size

    @property
    def boxes_per_cell(self) -> int:
        return self.torch_net.boxes_per_cell

    @property
    def pooler(self) -> nn.Module:
        return self.torch_net.pooler

    @property
    def offset_std(self) -> torch.Tensor:
        return self.torch_net.offset_std

    def fuse_for_inference(self) -> "OnnxRuntimeNet":
        return self  # the graphs were exported from the fused net

    def state_dict(self, *args: Any, **kwargs: Any) -> dict:  # type: ignore[override]
        """The weights it runs: the torch net's (the graphs are exported from exactly these)."""
        return self.torch_net.state_dict(*args, **kwargs)

    def propose(self, phi_x: torch.Tensor, state: Any, score_adjust: Optional[torch.Tensor] = None) -> tuple:
        from ..model import CRACTNet

        return CRACTNet.propose(self, phi_x, state, score_adjust)  # only uses rpn_outputs and cfg

    @property
    def providers_in_use(self) -> list[str]:
        return self.sessions["search"].get_providers()

    # ------------------------------------------------------------------ inference
    @staticmethod
    def _numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu").contiguous().numpy()

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        dev = self.torch_net.offset_std.device
        return t if dev.type == "cpu" else t.to(dev)

    @torch.no_grad()
    def init_target(self, template_crop: torch.Tensor, box_in_crop_xyxy: torch.Tensor) -> Any:
        from ..model import TemplateState

        phi_z, *kernels = self.sessions["template"].run(None, {"template": self._numpy(template_crop)})
        phi_z_t = self._tensor(phi_z)
        f_init = self.torch_net.pool(phi_z_t, box_in_crop_xyxy.reshape(1, 4).to(phi_z_t.dtype))
        kernels_t = tuple(self._tensor(k) for k in kernels)
        # The search graph is fed the same arrays every frame: kept once, not rebuilt per frame.
        self._kernels = kernels_t
        self._feeds = dict(zip(self._kernel_names, kernels))
        self._last = None
        return TemplateState(kernels_t, f_init)

    @torch.no_grad()
    def extract(self, crops_bgr: torch.Tensor) -> torch.Tensor:
        """phi_x of one search crop; with a target set, the proposal stage runs in the same graph."""
        if self._kernels is None or crops_bgr.shape != (1, 3, self.cfg.tracker.search_size, self.cfg.tracker.search_size):
            self._last = None
            return self.torch_net.extract(crops_bgr)
        self._feeds["search"] = self._numpy(crops_bgr)
        scores, boxes, phi_x = self.sessions["search"].run(None, self._feeds)
        phi_x_t = self._tensor(phi_x)
        self._last = (phi_x_t, self._tensor(scores), self._tensor(boxes))
        return phi_x_t

    @torch.no_grad()
    def rpn_outputs(self, kernels: Sequence[torch.Tensor], phi_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        last = self._last
        if last is not None and phi_x is last[0] and self._kernels is not None and all(
                a is b for a, b in zip(kernels, self._kernels)):
            return last[1], last[2]
        return self.torch_net.rpn_outputs(tuple(kernels), phi_x)

    def pool(self, features: torch.Tensor, boxes_xyxy: torch.Tensor, batch_index: torch.Tensor | int = 0) -> torch.Tensor:
        return self.torch_net.pool(features, boxes_xyxy, batch_index)

    @torch.no_grad()
    def identify(self, features: torch.Tensor, f_init: torch.Tensor) -> torch.Tensor:
        """CRACTNet.identify on the identifier graph (features pooled by the caller)."""
        (v,) = self.sessions["identifier"].run(None, {"features": self._numpy(features), "f_init": self._numpy(f_init)})
        return self._tensor(v)

    @torch.no_grad()
    def refine(self, phi_x: torch.Tensor, boxes_xyxy: torch.Tensor, f_init: torch.Tensor,
               batch_index: torch.Tensor | int = 0, identify: bool = True) -> Any:
        """CRACTNet.refine with R and I on ONNX Runtime (the pooling stays in torch)."""
        from ..model import Refinement

        if not isinstance(batch_index, int):  # batched (training-style) calls: the torch reference
            return self.torch_net.refine(phi_x, boxes_xyxy, f_init, batch_index, identify)
        crac = self.cfg.crac
        f = self.pool(phi_x, boxes_xyxy)
        if crac.refinement == "none":
            offsets = boxes_xyxy.new_zeros(boxes_xyxy.shape)
            refined = boxes_xyxy
        else:
            (off,) = self.sessions["regressor"].run(None, {"features": self._numpy(f), "f_init": self._numpy(f_init)})
            offsets = self._tensor(off)
            refined = geometry.decode_offsets(boxes_xyxy, offsets, fmt="xyxy")
        features = self.pool(phi_x, refined) if crac.refinement == "cascade" else f
        identity = self.identify(features, f_init) if identify else features.new_zeros(0)
        return Refinement(offsets, refined, features, identity)


def wrap_for_runtime(cfg: ExperimentConfig, net: nn.Module, device: torch.device,
                     num_threads: Optional[int] = None) -> nn.Module:
    """The net the tracker runs: ``net`` itself for runtime torch, else an OnnxRuntimeNet over the
    graphs of ``cfg.onnx_dir`` (checked against ``net``) or of the cache (exported now if missing).

    ``num_threads`` None: torch's intra-op count (what the node's num_threads and cract-eval's
    --threads set), so both runtimes use the same cores.
    """
    if cfg.runtime == "torch":
        return net
    ort = _import_onnxruntime()
    available = ort.get_available_providers()
    if device.type == "cuda" and not cfg.onnx_providers and CUDA not in available:
        # device auto found a GPU but this onnxruntime is the CPU build: the torch reference on the
        # GPU beats ONNX Runtime on the CPU, and a config that names no provider asked for no GPU build.
        log.warning("runtime onnxruntime on device cuda needs %s (the onnxruntime-gpu package); running the "
                    "torch runtime on the GPU instead (set onnx_providers to make this an error)", CUDA)
        return net
    providers = choose_providers(cfg.onnx_providers, device, available)
    threads = torch.get_num_threads() if num_threads is None else num_threads
    if cfg.onnx_dir:
        folder = Path(cfg.onnx_dir).expanduser()
        folder = folder if folder.is_absolute() else config_root(cfg) / folder
        check_graphs(folder, cfg, net)
    else:
        folder = cached_graphs(cfg, net, cfg.onnx_cache or None)
    return OnnxRuntimeNet(net, cfg, folder, threads, providers)
