"""Tracker speed (a benchmark, not a test): per-frame latency on 640x480 frames, frames with and
without a discriminator update apart, in synchronous and asynchronous modes, and the init time.

    .venv/bin/python benchmarks/bench_tracker.py [--sequence DIR] [--frames 150] [--threads 2] [--device cpu]

Frames come from a real sequence (default ../shared/data/sequences/uav_boat5, resized to 640x480)
or, when that is absent, from the demo's synthetic sequence.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cract_core.config import project_root
from cract_core.demo import read_folder, synthetic_sequence
from cract_core.tracker import Tracker


def stats(values: list[float]) -> str:
    if not values:
        return "n=0"
    a = np.asarray(values)
    return f"n={len(a):4d} median {np.median(a):6.1f} ms  p95 {np.percentile(a, 95):6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequence", type=Path)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    default = project_root().parent / "shared" / "data" / "sequences" / "uav_boat5"
    folder = args.sequence or (default if default.is_dir() else None)
    if folder is not None:
        frames, gt, n = read_folder(folder, args.frames)
        images = list(frames)
        source = folder.name
    else:
        images, gt = synthetic_sequence(args.frames)
        source = "synthetic"
    h0, w0 = images[0].shape[:2]
    sx, sy = 640 / w0, 480 / h0
    images = [cv2.resize(im, (640, 480), interpolation=cv2.INTER_AREA) for im in images]
    box0 = gt[0] * np.array([sx, sy, sx, sy])
    print(f"bench_tracker: {source}, {len(images)} frames at 640x480, {args.threads} threads, device {args.device}, "
          f"torch {torch.__version__}")
    for mode in ("sync", "async"):
        tracker = Tracker.from_config(args.config, device=args.device, mode=mode)
        # Warm-up on a separate init so that one-time allocations do not count.
        tracker.init(images[0], box0)
        for im in images[1:4]:
            tracker.track(im)
        t0 = time.perf_counter()
        init_result = tracker.init(images[0], box0)
        init_ms = (time.perf_counter() - t0) * 1e3
        upd, other, backbone = [], [], []
        for im in images[1:]:
            r = tracker.track(im)
            (upd if r.updated else other).append(r.timings["total"])
            backbone.append(r.timings["backbone"])
        # In async mode the solve happens on the worker: a frame right after an update start may
        # share the CPU with it, so frames after an update are the ones to watch.
        tracker.close()
        print(f"[{mode:5s}] init {init_ms:7.1f} ms (template {init_result.timings['template_ms']:.0f} ms, discriminator {init_result.timings.get('discriminator_init_ms', 0.0):.0f} ms)")
        print(f"[{mode:5s}] frames without update: {stats(other)}")
        print(f"[{mode:5s}] frames with update:    {stats(upd)}")
        print(f"[{mode:5s}] all frames:            {stats(upd + other)}   backbone {stats(backbone)}")


if __name__ == "__main__":
    main()
