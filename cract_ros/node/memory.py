"""The process's memory: what /diagnostics and the cleanup log report (RSS, CUDA, the model's
weights), and how freed memory is given back to the system (cleanup frees the model; a robot's
process lives long)."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from pathlib import Path
from typing import Any, Optional


def process_rss_mib() -> float:
    """Resident memory of this process (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _torch_cuda() -> Any:
    """torch.cuda when torch is imported and has started CUDA in this process, else None. (The
    diagnostics timer asks while configure may be importing torch: a half-imported module has
    no `cuda` yet.)"""
    cuda = getattr(sys.modules.get("torch"), "cuda", None)
    try:
        return cuda if cuda is not None and cuda.is_initialized() else None
    except Exception:
        return None


def cuda_allocated_mib() -> Optional[float]:
    """torch's CUDA memory in use, or None where torch has not started CUDA in this process."""
    cuda = _torch_cuda()
    return cuda.memory_allocated() / 2**20 if cuda is not None else None


def model_tensor_mib(tracker: Any) -> float:
    """Bytes of the weights a tracker holds, in MiB: its torch modules' weights and buffers, and on
    ONNX Runtime the graphs its sessions loaded (their initializers are a second copy of the weights)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return float("nan")
    total = 0
    for value in vars(tracker).values():
        if isinstance(value, torch.nn.Module):
            for t in (*value.parameters(), *value.buffers()):
                total += t.numel() * t.element_size()
            folder, sessions = getattr(value, "folder", None), getattr(value, "sessions", None)
            if folder is not None and sessions:
                total += sum((Path(folder) / f"{name}.onnx").stat().st_size for name in sessions
                             if (Path(folder) / f"{name}.onnx").is_file())
    return total / 2**20


def release_memory() -> None:
    """Give freed memory back: Python's cycles, torch's CUDA cache, and glibc's heap (malloc_trim:
    the freed weights stay in the process otherwise, and a robot's process lives long)."""
    gc.collect()
    cuda = _torch_cuda()
    if cuda is not None:
        cuda.synchronize()
        cuda.empty_cache()
    trim_heap()


def trim_heap() -> None:
    """glibc's malloc_trim: return the free pages of every malloc arena to the system. Each thread
    that allocates gets an arena of its own, and an arena keeps what it once held: an
    initialisation's thousand samples, a LOST frame's larger crops. Measured in the soak
    (benchmarks/soak_node.py), that is the node's RSS growth after the warm-up, not a leak."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            ctypes.CDLL(libc_name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
