"""Inference runtimes for CRACTNet: torch (the reference and training path) and ONNX Runtime.

``runtime: onnxruntime`` in a model config runs the frozen inference parts (template branch,
search branch with the proposal stage, the R / I heads a config uses) as ONNX graphs exported
from the same torch modules (:mod:`cract_core.runtime.export`), through :class:`OnnxRuntimeNet`,
which keeps CRACTNet's inference surface so the tracker does not know which one it holds.
onnxruntime is imported lazily: torch-only users never need it.
"""
from __future__ import annotations

from .export import EXPORT_VERSION, OPSET, export_graphs, graph_cache_dir, graphs_key
from .ort import OnnxRuntimeNet, RuntimeUnavailableError, make_session, wrap_for_runtime

__all__ = ["EXPORT_VERSION", "OPSET", "export_graphs", "graph_cache_dir", "graphs_key", "OnnxRuntimeNet",
           "RuntimeUnavailableError", "make_session", "wrap_for_runtime"]
