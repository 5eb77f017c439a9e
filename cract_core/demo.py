"""Offline demo: track one sequence end to end and print boxes, confidence, state and speed.

    python -m cract_core.demo [--sequence DIR] [--config YAML] [--checkpoint PT] [--frames N] [--mode sync|async]

Without --sequence it uses ../shared/data/sequences/uav_boat5 next to the repository when that
exists, otherwise a synthetic sequence it generates (a textured object moving over clutter), so
the demo runs on a user's clone too.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from .config import project_root
from .datasets import load_folder_sequence
from .eval.metrics import score_sequence
from .geometry import iou


def synthetic_sequence(frames: int = 60, size: tuple[int, int] = (640, 480), seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """A textured 60x40 object on a smooth path over a cluttered background, with its true boxes."""
    rng = np.random.default_rng(seed)
    w, h = size
    background = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    patch = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    patch = cv2.resize(cv2.resize(patch, (6, 4), interpolation=cv2.INTER_AREA), (60, 40), interpolation=cv2.INTER_NEAREST)
    images, boxes = [], []
    for t in range(frames):
        x = int(w / 2 - 30 + 0.3 * w * np.sin(t / 15.0))
        y = int(h / 2 - 20 + 0.25 * h * np.sin(t / 23.0))
        img = background.copy()
        img[y:y + 40, x:x + 60] = patch
        images.append(img)
        boxes.append([x, y, 60, 40])
    return images, np.asarray(boxes, dtype=np.float64)


def read_folder(folder: Path, limit: Optional[int]) -> tuple[Iterator[np.ndarray], np.ndarray, int]:
    seq = load_folder_sequence(folder).head(limit or None)
    return (seq.image(i) for i in range(len(seq))), seq.groundtruth, len(seq)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequence", type=Path, help="folder with img/ and groundtruth.txt (x,y,w,h per line)")
    parser.add_argument("--config", help="experiment YAML (default: config/model/cract_lite0.yaml)")
    parser.add_argument("--checkpoint", help="trained heads .pt (default: the config's)")
    parser.add_argument("--frames", type=int, default=0, help="track at most this many frames (0: all)")
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    import torch

    from .tracker import Tracker

    torch.set_num_threads(2)
    default = project_root().parent / "shared" / "data" / "sequences" / "uav_boat5"
    folder = args.sequence or (default if default.is_dir() else None)
    if folder is not None:
        frames, gt, n = read_folder(folder, args.frames or None)
        name = folder.name
    else:
        images, gt = synthetic_sequence(args.frames or 60)
        frames, n, name = iter(images), len(images), "synthetic"
    tracker = Tracker.from_config(args.config, checkpoint=args.checkpoint, device=args.device, mode=args.mode)
    ckpt = tracker.checkpoint_info.get("path", "none (untrained heads)")
    print(f"cract demo: sequence {name} ({n} frames), config {tracker.cfg.name}, heads {ckpt}, "
          f"device {tracker.device}, mode {args.mode}")
    boxes, latencies = [], []
    t0 = time.perf_counter()
    for i, image in enumerate(frames):
        if i == 0:
            result = tracker.init(image, gt[0])
            boxes.append(result.box)
            print(f"frame {i:4d}  init  box {np.round(result.box, 1).tolist()}  {result.timings['total']:.0f} ms")
            continue
        result = tracker.track(image)
        latencies.append(result.timings["total"])
        boxes.append(result.box)
        print(f"frame {i:4d}  box {np.round(result.box, 1).tolist()}  conf {result.confidence:.2f}  "
              f"{result.state.name:<14s} iou {float(iou(result.box, gt[i], 'xywh')):.2f}  {result.timings['total']:.1f} ms"
              f"{'  (update)' if result.updated else ''}")
    wall = time.perf_counter() - t0
    tracker.close()
    scores = score_sequence(np.asarray(boxes), gt[: len(boxes)])
    print(f"summary: {n} frames, success AUC {scores.auc:.3f}, precision@20 {scores.prec20:.3f}, "
          f"latency median {np.median(latencies):.1f} ms p95 {np.percentile(latencies, 95):.1f} ms, "
          f"{(n - 1) / wall:.1f} fps including I/O")
    return 0


if __name__ == "__main__":
    sys.exit(main())
