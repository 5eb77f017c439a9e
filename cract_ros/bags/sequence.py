"""Folder sequences (img/*.jpg + groundtruth.txt, as in ../shared/data/sequences) for the node's
tests, benchmark and demo: frames, ground-truth boxes, and the stamps a camera would give them.

No ROS import here: cract_ros.conversions turns the frames into messages.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from cract_core.datasets.sequence import IMAGE_EXTENSIONS, DatasetError, list_images, read_boxes


class SequenceError(ValueError):
    """A folder that is not a readable sequence."""


def frame_paths(seq_dir: Path | str) -> list[Path]:
    """The sequence's image files in frame order (img/ when present, else the folder itself), listed
    by the project's one folder reader (cract_core.datasets)."""
    seq_dir = Path(seq_dir)
    img_dir = seq_dir / "img" if (seq_dir / "img").is_dir() else seq_dir
    if not img_dir.is_dir():
        raise SequenceError(f"{seq_dir} is not a folder")
    paths = list_images(img_dir)
    if not paths:
        raise SequenceError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {img_dir}")
    return paths


def read_groundtruth(seq_dir: Path | str) -> Optional[np.ndarray]:
    """N x 4 xywh boxes from groundtruth.txt (comma, tab or space separated; NaN rows where the target
    is absent), or None when the file is absent."""
    path = Path(seq_dir) / "groundtruth.txt"
    if not path.is_file():
        return None
    try:
        return read_boxes(path)
    except DatasetError as exc:
        raise SequenceError(str(exc)) from None


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
