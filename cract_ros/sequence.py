"""Folder sequences (img/*.jpg + groundtruth.txt, as in ../shared/data/sequences) for the node's
tests, benchmark and demo: frames, ground-truth boxes, and the stamps a camera would give them.

No ROS import here: cract_ros.conversions turns the frames into messages.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class SequenceError(ValueError):
    """A folder that is not a readable sequence."""


def frame_paths(seq_dir: Path | str) -> list[Path]:
    """The sequence's image files in frame order (img/ when present, else the folder itself)."""
    seq_dir = Path(seq_dir)
    img_dir = seq_dir / "img" if (seq_dir / "img").is_dir() else seq_dir
    if not img_dir.is_dir():
        raise SequenceError(f"{seq_dir} is not a folder")
    paths = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SequenceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}")
    return paths


def read_groundtruth(seq_dir: Path | str) -> Optional[np.ndarray]:
    """N x 4 xywh boxes from groundtruth.txt (comma, tab or space separated), or None when absent."""
    path = Path(seq_dir) / "groundtruth.txt"
    if not path.is_file():
        return None
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
        if len(parts) != 4:
            raise SequenceError(f"{path}:{i}: expected 4 numbers x,y,w,h, got {line!r}")
        rows.append([float(p) for p in parts])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def read_frames(seq_dir: Path | str, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """BGR uint8 frames in order (at most max_frames)."""
    for path in frame_paths(seq_dir)[:max_frames]:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise SequenceError(f"cannot read image {path}")
        yield img


def stamp_of(index: int, fps: float = 30.0, start_ns: int = 1_000_000_000_000) -> tuple[int, int]:
    """(sec, nanosec) of frame `index` of a camera running at `fps` from `start_ns`."""
    ns = start_ns + int(round(index * 1e9 / fps))
    return ns // 1_000_000_000, ns % 1_000_000_000
