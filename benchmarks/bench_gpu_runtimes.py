"""The GPU table of docs/runtime.md: the shipped default on torch CUDA, ONNX Runtime CUDA and ONNX
Runtime TensorRT (fp16), in one run on one card (a benchmark, not a test).

    .venv/bin/python benchmarks/bench_gpu_runtimes.py [--sequence DIR] [--frames 300] [--config NAME]
                                                      [--markdown] [--trtexec]

Needs a CUDA machine; ONNX Runtime's rows need ``onnxruntime-gpu`` instead of ``onnxruntime`` (and
TensorRT's libraries for the TensorRT row).  A row that cannot run here is printed with the reason
instead of figures, so the table says what was and was not measured.  ``--trtexec`` adds the
search graph alone through ``trtexec --fp16`` when it is on PATH (the engine a Jetson user builds).

For ONNX Runtime the tracker's torch parts (pooling, post-processing) stay on the CPU and the graphs
run on the GPU (``device: cpu`` with ``onnx_providers``): the graphs return host arrays, and the
post-processing of 225 proposals is faster on the CPU than as GPU launches.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from cract_core.config import default_config_path, load_config, project_root
from cract_core.datasets.formats import load_folder_sequence
from cract_core.tracker import Tracker

# (label, runtime, tracker device, ONNX Runtime providers)
ROWS = [
    ("torch CUDA (fp32)", "torch", "cuda", []),
    ("onnxruntime CUDA (fp32)", "onnxruntime", "cpu", ["cuda"]),
    ("onnxruntime TensorRT (fp16)", "onnxruntime", "cpu", ["tensorrt", "cuda"]),
]


def card_name() -> str:
    if not torch.cuda.is_available():
        return "no CUDA device"
    props = torch.cuda.get_device_properties(0)
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"


def why_not(runtime: str, device: str, providers: list[str]) -> Optional[str]:
    if not torch.cuda.is_available():
        return "no CUDA device here"
    if runtime == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime-gpu)"
        have = ort.get_available_providers()
        for p in providers:
            full = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[p]
            if full not in have:
                return f"{full} is not installed (providers here: {', '.join(have)})"
    return None


def run_row(cfg_path: str, runtime: str, device: str, providers: list[str], images: list[np.ndarray],
            box0: np.ndarray) -> dict:
    cfg = load_config(cfg_path)
    cfg = dataclasses.replace(cfg, runtime=runtime, onnx_providers=list(providers))
    cfg.source = load_config(cfg_path).source
    t0 = time.perf_counter()
    tracker = Tracker.from_config(cfg, device=device, mode="sync")
    build_s = time.perf_counter() - t0  # includes a TensorRT engine build on the first run (cached after)
    for _ in range(2):  # warm-up: CUDA contexts, cuDNN / TensorRT tactics, allocations
        tracker.init(images[0], box0)
        for im in images[1:10]:
            tracker.track(im)
    t0 = time.perf_counter()
    tracker.init(images[0], box0)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    init_ms = (time.perf_counter() - t0) * 1e3
    frame_ms, net_ms = [], []
    for im in images[1:]:
        t0 = time.perf_counter()
        res = tracker.track(im)
        if device == "cuda":
            torch.cuda.synchronize()
        frame_ms.append((time.perf_counter() - t0) * 1e3)
        net_ms.append(res.timings.get("backbone", np.nan) + res.timings.get("rpn", np.nan))
    tracker.close()
    return {"p50": float(np.median(frame_ms)), "p95": float(np.percentile(frame_ms, 95)),
            "net": float(np.median(net_ms)), "init": init_ms, "build_s": build_s}


def trtexec_row(cfg_path: str) -> str:
    exe = shutil.which("trtexec") or ("/usr/src/tensorrt/bin/trtexec" if Path("/usr/src/tensorrt/bin/trtexec").exists() else None)
    if exe is None:
        return "| trtexec --fp16 (search graph alone) | - | - | - | - | trtexec not found |"
    from cract_core.runtime.export import cached_graphs

    cfg = dataclasses.replace(load_config(cfg_path), runtime="torch")
    folder = cached_graphs(cfg, Tracker.from_config(cfg, device="cpu").net)
    out = subprocess.run([exe, f"--onnx={folder / 'search.onnx'}", "--fp16", "--iterations=500", "--warmUp=500"],
                         capture_output=True, text=True)
    m = re.search(r"GPU Compute Time: min = [\d.]+ ms, max = [\d.]+ ms, mean = [\d.]+ ms, median = ([\d.]+) ms", out.stdout)
    if out.returncode or not m:
        return f"| trtexec --fp16 (search graph alone) | - | - | - | - | failed: {out.stdout[-200:]!r} |"
    return f"| trtexec --fp16 (search graph alone) | - | - | {float(m.group(1)):.2f} | - | GPU compute median |"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequence", type=Path, default=project_root().parent / "shared" / "data" / "sequences" / "uav_boat5")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--config", default=str(default_config_path()))
    p.add_argument("--trtexec", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    seq = load_folder_sequence(args.sequence)
    n = min(len(seq), args.frames)
    images = [seq.image(i) for i in range(n)]
    box0 = np.asarray(seq.init_box, dtype=np.float64)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else "?"
    print(f"GPU: {card_name()}; CPU: {cpu}; {args.sequence.name}, {n} frames "
          f"{images[0].shape[1]}x{images[0].shape[0]}; torch {torch.__version__}")
    print("| runtime | frame p50 ms | frame p95 ms | network ms | init ms | fps (1000 / p50) |")
    print("|---|---|---|---|---|---|")
    for label, runtime, device, providers in ROWS:
        reason = why_not(runtime, device, providers)
        if reason:
            print(f"| {label} | - | - | - | - | not run: {reason} |")
            continue
        try:
            r = run_row(args.config, runtime, device, providers, images, box0)
        except Exception as exc:  # one row failing must not hide the others
            print(f"| {label} | - | - | - | - | failed: {type(exc).__name__}: {str(exc)[:120]} |")
            continue
        print(f"| {label} | {r['p50']:.2f} | {r['p95']:.2f} | {r['net']:.2f} | {r['init']:.0f} | {1000 / r['p50']:.0f} |")
    if args.trtexec:
        print(trtexec_row(args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
