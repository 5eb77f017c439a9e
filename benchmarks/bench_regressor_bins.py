"""Does the box regressor R improve the boxes it meets at run time?  Its gain per input-IoU bin.

The default tracker runs each sequence of a split; on every frame with the target in view, the box
it chose (the proposal stage's, before any refinement) goes through R (Eq. 4, the trained heads of
each --checkpoint) on the same search crop, and both boxes are scored against the ground truth.
Open loop: R's correction is measured, never fed back, so every checkpoint sees the same inputs.
Per bin of the input box's IoU: frames, mean IoU in and out, the mean gain and the share R
improves; then the same with R gated (its correction accepted only when the corrected box overlaps
the input by at least G: a small correction), for each --gates value.

    .venv/bin/python benchmarks/bench_regressor_bins.py                              # @validation, shipped heads
    .venv/bin/python benchmarks/bench_regressor_bins.py --sequences @train --checkpoint runs/nt_s1/heads_half.pt

The result decides whether R joins the default (docs/eval/stage_ablation.md).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cract_core import geometry  # noqa: E402
from cract_core.config import default_config_path, load_config  # noqa: E402
from cract_core.datasets.splits import load_named_sequences  # noqa: E402
from cract_core.eval import metrics  # noqa: E402
from cract_core.tracker import Tracker  # noqa: E402

BIN_EDGES = (0.0, 0.3, 0.5, 0.7, 0.85, 1.0001)


def measure(cfg_path: Path, checkpoint: str | None, sequences: list, threads: int) -> np.ndarray:
    """(input IoU, refined IoU, overlap of the two boxes) per frame with the target in view."""
    torch.set_num_threads(threads)
    cfg = load_config(cfg_path)
    follower = Tracker.from_config(cfg, device="cpu")
    regressor = Tracker.from_config(replace(cfg, runtime="torch", crac=replace(cfg.crac, refinement="cascade")),
                                    device="cpu", checkpoint=checkpoint)
    size = cfg.tracker.search_size
    rows = []
    for seq in sequences:
        present = metrics.valid_frames(seq.groundtruth, getattr(seq, "absent", None))
        first = seq.image(0)
        follower.init(first, seq.groundtruth[0])
        regressor.init(first, seq.groundtruth[0])
        f_init = regressor._template.f_init
        for i in range(1, len(seq)):
            image = seq.image(i)
            result = follower.track(image)
            if not present[i]:
                continue
            d = result.details
            crop, scale = geometry.crop_square(image, tuple(d["search_center"]), d["search_side"], size, follower._pad)
            box_in = np.asarray(d["proposals_crop_xyxy"][d["best"]], dtype=np.float64)
            with torch.no_grad():
                phi_x = regressor.net.extract(regressor._to_tensor(crop))
                refined = regressor.net.refine(phi_x, torch.as_tensor(box_in[None], dtype=torch.float32), f_init,
                                               identify=False).refined_xyxy[0].numpy().astype(np.float64)
            gt = geometry.xywh_to_xyxy(geometry.image_to_crop(seq.groundtruth[i], tuple(d["search_center"]),
                                                              scale, size))
            rows.append(tuple(float(geometry.iou(a, b)) for a, b in ((box_in, gt), (refined, gt), (box_in, refined))))
    return np.array(rows)


def bin_table(rows: np.ndarray, gates: list[float]) -> list[dict]:
    """Per input-IoU bin (and "all"): frames, mean IoU in / out, mean gain, the share R improves,
    and the mean gain with R gated at each of ``gates`` (correction kept where the corrected box
    overlaps the input by at least the gate, else the input box)."""
    iou_in, iou_out, overlap = np.asarray(rows, dtype=np.float64).reshape(-1, 3).T
    table = []
    for lo, hi in list(zip(BIN_EDGES[:-1], BIN_EDGES[1:])) + [(0.0, BIN_EDGES[-1])]:
        m = (iou_in >= lo) & (iou_in < hi)
        if not m.any():
            continue
        table.append({
            "bin": "all" if (lo, hi) == (0.0, BIN_EDGES[-1]) else f"{lo:.2f}-{min(hi, 1.0):.2f}",
            "frames": int(m.sum()), "iou_in": float(iou_in[m].mean()), "iou_out": float(iou_out[m].mean()),
            "gain": float((iou_out[m] - iou_in[m]).mean()), "better": float((iou_out[m] > iou_in[m]).mean()),
            "gated": [float((np.where(overlap[m] >= g, iou_out[m], iou_in[m]) - iou_in[m]).mean()) for g in gates],
        })
    return table


def report(name: str, rows: np.ndarray, gates: list[float]) -> None:
    print(f"\n{name}: {len(rows)} frames")
    head = f"{'input IoU':<11} {'frames':>6} {'IoU in':>7} {'IoU out':>7} {'gain':>7} {'R better':>8}"
    print(head + "".join(f" {'gain G>=' + format(g, '.2f'):>12}" for g in gates))
    for r in bin_table(rows, gates):
        print(f"{r['bin']:<11} {r['frames']:>6} {r['iou_in']:>7.4f} {r['iou_out']:>7.4f} {r['gain']:>+7.4f} {r['better']:>8.2f}"
              + "".join(f" {g:>+12.4f}" for g in r["gated"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", default="@validation", help="a split (@validation, @train) or a benchmark folder")
    p.add_argument("--config", default=str(default_config_path()), help="the tracker that makes the trajectory")
    p.add_argument("--checkpoint", action="append", default=None, help="trained heads with R (repeat; default: the config's)")
    p.add_argument("--gates", default="0.8,0.9,0.95", help="overlap with the input a gated correction must keep")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    sequences, _ = load_named_sequences(args.sequences)
    gates = [float(g) for g in args.gates.split(",") if g]
    for checkpoint in args.checkpoint or [None]:
        rows = measure(Path(args.config), checkpoint, sequences, args.threads)
        report(f"{args.sequences}, R of {checkpoint or 'the config checkpoint'}", rows, gates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
