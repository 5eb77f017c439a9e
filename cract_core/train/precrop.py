"""Pre-cropped training data: each frame cut down to the region that training crops can reach.

Siamese trackers train from full frames but only ever look at a square around the target: the
search crop (side ``s_x`` = the template context times search/template size), moved by the
shift jitter and grown by the scale jitter.  pysot precrops GOT-10k and LaSOT to 511 px squares
once, so that a GPU is not starved by JPEG decoding of 1280x720 frames; here it also makes the
data small enough to ship to another machine.

``--data`` takes what cract-train's does, a split too: ``--data @train`` precrops the whole
training split (cract_core/datasets/splits.py).  The output is an OTB-style folder (``<out>/<seq>/img/00000001.jpg`` + ``groundtruth.txt``, the
sequence's ``source.json`` copied, or one naming its object class), so ``cract-train --data
folder=<out>`` reads it with no new loader.  Each frame's square is ``reach * s_x`` image pixels around its own target box and keeps
the image's resolution, shrunk only where that square is wider than ``reach * search_size`` pixels
(the search crop would shrink it anyway).  With the default augmentation (shift 64 px on 255,
scale 0.18) a search crop reaches 0.885 ``s_x`` from the target centre, so ``reach`` 1.8 holds
every crop the sampler draws (with the aspect stretch ``search_aspect_max`` r the crop reaches
sqrt(r) further along one axis: use ``reach`` 1.8 sqrt(r), 2.5 for r = 2).  Frames without a visible target are written as 2x2 images with a
zero box, so frame numbers (and the sampler's frame gap) stay as they were.

    python -m cract_core.train.precrop --config config/train_starter_lite0.yaml --data @train --out /data/precrop
    python -m cract_core.train.precrop --config config/train_starter_lite0.yaml \\
        --data folder=../shared/data/sequences --exclude @validation --out /data/precrop_short
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence as Seq

import cv2
import numpy as np

from cract_core.config import ConfigError, load_config
from cract_core.geometry import context_size, crop_square, image_to_crop
from cract_core.datasets import DatasetError, Sequence

log = logging.getLogger(__name__)

__all__ = ["PrecropSpec", "precrop_frame", "precrop_sequence", "main"]


@dataclass(frozen=True)
class PrecropSpec:
    """How big a square to keep around each target, from the tracker's crop geometry."""

    context_amount: float = 0.5
    template_size: int = 127
    search_size: int = 255
    reach: float = 1.8  # square side in units of the search context s_x
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        if not (self.reach >= 1.0 and math.isfinite(self.reach)):
            raise ValueError(f"reach must be >= 1 (a square at least as wide as the search crop), got {self.reach}")
        if not 50 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [50, 100], got {self.jpeg_quality}")

    @property
    def max_side_px(self) -> int:
        return int(math.ceil(self.reach * self.search_size))


def precrop_frame(image: np.ndarray, box_xywh: np.ndarray, spec: PrecropSpec) -> tuple[np.ndarray, np.ndarray]:
    """The square around ``box_xywh`` and the box in its pixels (see the module docstring)."""
    box = np.asarray(box_xywh, dtype=np.float64)
    s_x = context_size(box[2], box[3], spec.context_amount) * spec.search_size / spec.template_size
    side = spec.reach * s_x
    out_size = max(2, int(round(min(side, spec.max_side_px))))
    center = (box[0] + box[2] / 2.0, box[1] + box[3] / 2.0)
    crop, scale = crop_square(image, center, side, out_size)
    return crop, image_to_crop(box, center, scale, out_size)


def precrop_sequence(seq: Sequence, out_root: Path, spec: PrecropSpec, source_dir: Optional[Path] = None) -> int:
    """Write one sequence's precropped frames; returns the bytes written."""
    folder = out_root / seq.name
    img_dir = folder / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows, total = [], 0
    params = [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality]
    for i in range(len(seq)):
        path = img_dir / f"{i + 1:08d}.jpg"
        if not seq.visible[i]:
            crop, box = np.zeros((2, 2, 3), np.uint8), np.zeros(4)
        else:
            image = cv2.imread(seq.frame_path(i), cv2.IMREAD_COLOR)
            if image is None:
                raise DatasetError(f"{seq.name}: cannot read frame {seq.frame_path(i)}")
            crop, box = precrop_frame(image, seq.groundtruth[i], spec)
        ok, data = cv2.imencode(".jpg", crop, params)
        if not ok:
            raise DatasetError(f"{seq.name}: JPEG encoding failed for frame {i}")
        path.write_bytes(data.tobytes())
        total += len(data)
        rows.append(",".join(f"{v:.2f}" for v in box))
    (folder / "groundtruth.txt").write_text("\n".join(rows) + "\n")
    if source_dir is not None and (source_dir / "source.json").is_file():
        shutil.copy2(source_dir / "source.json", folder / "source.json")
    elif seq.category:  # GOT-10k's meta_info.ini, LaSOT's class: kept for same-kind hard negatives
        (folder / "source.json").write_text(json.dumps({"object": seq.category}))
    return total


def _source_dir(seq: Sequence) -> Optional[Path]:
    """The folder a folder-dataset sequence came from (for its source.json), else None."""
    try:
        first = Path(seq.frame_path(0))
    except (IndexError, TypeError):
        return None
    return first.parent.parent if first.parent.name == "img" else first.parent


def _one(args: tuple[Sequence, Path, PrecropSpec]) -> tuple[str, int, int]:
    seq, out_root, spec = args
    return seq.name, len(seq), precrop_sequence(seq, out_root, spec, _source_dir(seq))


def main(argv: Optional[Seq[str]] = None) -> int:
    from cract_core.train.cli import add_data_arguments, data_from_arguments  # one --data syntax

    p = argparse.ArgumentParser(prog="python -m cract_core.train.precrop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML: its tracker sizes and context amount set the squares")
    add_data_arguments(p)  # as cract-train's --data (weights are ignored here)
    p.add_argument("--out", required=True, type=Path, help="output folder (OTB-style; read with --data folder=OUT)")
    p.add_argument("--reach", type=float, default=PrecropSpec.reach, help="square side / search context (default 1.8)")
    p.add_argument("--quality", type=int, default=PrecropSpec.jpeg_quality, help="JPEG quality (default 92)")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
        spec = PrecropSpec(cfg.tracker.context_amount, cfg.tracker.template_size, cfg.tracker.search_size,
                           args.reach, args.quality)
        datasets, _ = data_from_arguments(args)
    except (ConfigError, DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"precrop: error: {exc}", file=sys.stderr)
        return 2
    if args.out.exists() and any(args.out.iterdir()):
        print(f"precrop: error: {args.out} is not empty; precrop writes a fresh folder", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(seq, args.out, spec) for ds in datasets for seq in ds.sequences]
    frames = size = 0
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for name, n, nbytes in pool.map(_one, jobs):
            frames, size = frames + n, size + nbytes
            log.info("%s: %d frames, %.1f MB", name, n, nbytes / 1e6)
    (args.out / "precrop.json").write_text(json.dumps({**spec.__dict__, "sequences": len(jobs), "frames": frames}, indent=1))
    print(f"precrop: {len(jobs)} sequences, {frames} frames, {size / 1e6:.1f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
