"""Accuracy gap between the tracker's synchronous and asynchronous modes (a benchmark, not a test).

    .venv/bin/python benchmarks/bench_async_gap.py [--sequences DIR] [--only a,b] [--threads 1]

In async mode a discriminator update is solved on a worker while frames go on with the old
weights, so the new weights arrive some frames later than in sync mode; this prints success AUC,
precision@20 and the median frame latency of both modes on the same frames (default: the
validation four of ../shared/data/sequences).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from cract_core.config import project_root
from cract_core.datasets import load_folder
from cract_core.eval.metrics import score_sequence
from cract_core.tracker import Tracker

VALIDATION = "otb_bird2,otb_woman,uav_boat5,uav_person11"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=Path, default=project_root().parent / "shared" / "data" / "sequences")
    parser.add_argument("--only", default=VALIDATION)
    parser.add_argument("--config")
    parser.add_argument("--checkpoint")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sequences = load_folder(args.sequences, only=args.only.split(","))
    print(f"{'sequence':<14s} {'mode':<6s} {'AUC':>6s} {'P@20':>6s} {'p50 ms':>7s} {'updates':>7s}")
    means: dict[str, list[float]] = {"sync": [], "async": []}
    for seq in sequences:
        images = [cv2.imread(p) for p in seq.frames]
        for mode in ("sync", "async"):
            with Tracker.from_config(args.config, checkpoint=args.checkpoint, device="cpu", mode=mode) as tracker:
                boxes = [tracker.init(images[0], seq.groundtruth[0]).box]
                latencies, updates = [], 0
                for image in images[1:]:
                    r = tracker.track(image)
                    boxes.append(r.box)
                    latencies.append(r.timings["total"])
                    updates += int(r.updated)
            scores = score_sequence(np.asarray(boxes), seq.groundtruth, seq.absent)
            means[mode].append(scores.auc)
            print(f"{seq.name:<14s} {mode:<6s} {scores.auc:6.3f} {scores.prec20:6.3f} {np.median(latencies):7.1f} {updates:7d}")
    for mode, values in means.items():
        print(f"{'mean':<14s} {mode:<6s} {np.mean(values):6.3f}")


if __name__ == "__main__":
    main()
