"""Per-stage frame time of the tracker on each runtime (torch, onnxruntime): a benchmark, not a test.

    .venv/bin/python benchmarks/bench_runtime.py [--sequence DIR] [--frames 300] [--threads 1 2]
                                                 [--config cract_nanotrack.yaml] [--runtimes torch onnxruntime]

Stages of one ``Tracker.track`` call, timed by wrapping the functions it calls (so the tracker's
code is measured as it is, with no copy of its logic here):

  crop            geometry.crop_square (the affine warp of the search region)
  pre-processing  Tracker._to_tensor (HWC uint8 -> 1x3xHxW tensor)
  network         net.extract + net.rpn_outputs (torch: backbone, then BAN head; onnxruntime: one
                  search graph, rpn_outputs hands back its outputs)
  post-processing Tracker._rank_scores + select_proposals (penalty, window, top-k, NMS)
  CRAC heads      net.refine (R, I; pooling included)
  online D        OnlineLearner.score / updates
  state logic     everything else of track() (state machine, size smoothing, details for the result)

Frames come from a real sequence (default ../shared/data/sequences/uav_boat5) at their own size.
Prints the load average beside the figures: the timings mean little on a loaded machine.
"""
from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

import cract_core.tracker as tracker_mod
from cract_core import geometry
from cract_core.config import default_config_path, load_config, project_root
from cract_core.datasets.formats import load_folder_sequence

STAGES = ("crop", "pre-processing", "network", "post-processing", "CRAC heads", "online D", "state logic")


class StageClock:
    """Accumulates the time spent inside wrapped callables, per stage, for the current frame."""

    def __init__(self) -> None:
        self.frame: dict[str, float] = defaultdict(float)
        self.depth = 0

    def wrap(self, stage: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kw: Any) -> Any:
            if self.depth:  # nested inside another timed stage: counted there
                return fn(*args, **kw)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.frame[stage] += (time.perf_counter() - t0) * 1e3
                self.depth -= 1
        return timed


def instrument(tracker: Any, clock: StageClock) -> None:
    """Wrap the tracker's stages on this instance (and the module functions track() calls)."""
    tracker_mod.geometry = _GeometryProxy(clock)  # track() calls geometry.crop_square through the module
    tracker_mod.select_proposals = clock.wrap("post-processing", _ORIGINAL_SELECT)
    tracker._to_tensor = clock.wrap("pre-processing", tracker._to_tensor)
    tracker._rank_scores = clock.wrap("post-processing", tracker._rank_scores)
    net = tracker.net
    for name, stage in (("extract", "network"), ("rpn_outputs", "network"), ("refine", "CRAC heads")):
        setattr(net, name, clock.wrap(stage, getattr(net, name)))


_ORIGINAL_SELECT = tracker_mod.select_proposals


class _GeometryProxy:
    def __init__(self, clock: StageClock):
        self._crop = clock.wrap("crop", geometry.crop_square)

    def __getattr__(self, name: str) -> Any:
        return self._crop if name == "crop_square" else getattr(geometry, name)


def run(cfg_path: str, runtime: str, threads: int, images: list[np.ndarray], box0: np.ndarray) -> dict:
    torch.set_num_threads(threads)  # onnxruntime takes the same count (cract_core/runtime/ort.py)
    cv2.setNumThreads(threads)  # the crop's warp, as cract-eval sets it
    cfg = load_config(cfg_path)
    cfg.runtime = runtime
    t0 = time.perf_counter()
    tracker = tracker_mod.Tracker.from_config(cfg, device="cpu", mode="sync")
    build_s = time.perf_counter() - t0
    clock = StageClock()
    instrument(tracker, clock)
    t0 = time.perf_counter()
    tracker.init(images[0], box0)
    init_ms = (time.perf_counter() - t0) * 1e3
    rows: dict[str, list[float]] = defaultdict(list)
    totals, cpu = [], []
    for im in images[1:]:
        clock.frame.clear()
        c0, t0 = time.process_time(), time.perf_counter()
        res = tracker.track(im)
        total = (time.perf_counter() - t0) * 1e3
        cpu.append((time.process_time() - c0) * 1e3)
        totals.append(total)
        d = res.timings.get("discriminator", 0.0) + res.timings.get("update", 0.0)
        measured = sum(clock.frame.values())
        for stage in STAGES[:-2]:
            rows[stage].append(clock.frame.get(stage, 0.0))
        rows["online D"].append(d)
        rows["state logic"].append(max(total - measured - d, 0.0))
    tracker_mod.geometry = geometry
    tracker_mod.select_proposals = _ORIGINAL_SELECT
    tracker.close()
    return {"rows": rows, "totals": totals, "cpu": cpu, "init_ms": init_ms, "build_s": build_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequence", type=Path, default=project_root().parent / "shared" / "data" / "sequences" / "uav_boat5")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--config", default=str(default_config_path()))
    p.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"])
    args = p.parse_args()
    seq = load_folder_sequence(args.sequence)
    n = min(len(seq), args.frames)
    images = [seq.image(i) for i in range(n)]
    box0 = np.asarray(seq.init_box, dtype=np.float64)
    print(f"bench_runtime: {args.sequence.name}, {n} frames {images[0].shape[1]}x{images[0].shape[0]}, "
          f"config {Path(args.config).name}, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    header = f"{'runtime':12s} {'thr':>3s} " + " ".join(f"{s:>15s}" for s in STAGES) + \
        f" {'p50':>6s} {'p95':>6s} {'fps':>6s} {'init':>7s} {'cpu p50':>8s}"
    print("median ms per frame (p50/p95 of the whole step; fps = 1000 / p50; cpu p50: the process's CPU time per\n"
          "frame, all threads: what a frame costs, less sensitive than wall time to other processes on the cores)")
    print(header)
    for threads in args.threads:
        for runtime in args.runtimes:
            run(args.config, runtime, threads, images[: min(n, 20)], box0)  # warm-up: caches, allocations
            r = run(args.config, runtime, threads, images, box0)
            p50, p95 = np.median(r["totals"]), np.percentile(r["totals"], 95)
            cells = " ".join(f"{np.median(r['rows'][s]):15.2f}" for s in STAGES)
            print(f"{runtime:12s} {threads:3d} {cells} {p50:6.2f} {p95:6.2f} {1000 / p50:6.0f} {r['init_ms']:5.0f}ms "
                  f"{np.median(r['cpu']):8.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
