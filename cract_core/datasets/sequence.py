"""One tracking sequence, for training and evaluation alike, and the pieces every format loader shares."""
from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import cv2
import numpy as np

PathLike = Union[str, Path]

_SEPARATORS = re.compile(r"[,\s]+")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

# Boxes smaller than this (pixels, either side) are not sampled for training: a 127 px template
# blown up from one pixel teaches nothing.  Evaluation scores by its own rules (metrics.py).
MIN_TRAINING_BOX = 2.0


class DatasetError(ValueError):
    """A dataset root or annotation file that does not have the expected layout; the message says what."""


class MissingDataError(DatasetError, FileNotFoundError):
    """A dataset root, sequence or file that is not there (a FileNotFoundError too, for callers that catch that)."""


class FramePattern:
    """Frame paths made on demand from a pattern, so GOT-10k's 1.4 M or TrackingNet's 14 M frames do
    not sit in memory as strings.  Behaves as a read-only list of ``count`` paths; picklable (DataLoader
    workers pickle the datasets, and lambdas do not pickle)."""

    def __init__(self, folder: str, fmt: str, start: int, count: int) -> None:
        self.folder, self.fmt, self.start, self.count = str(folder), fmt, int(start), int(count)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: Union[int, slice]) -> Union[str, "FramePattern", list[str]]:
        if isinstance(index, slice):
            picked = range(self.count)[index]
            if picked.step == 1:
                return FramePattern(self.folder, self.fmt, self.start + picked.start, len(picked))
            return [self[i] for i in picked]
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(f"frame {index} of {self.count} in {self.folder}")
        return f"{self.folder}/{self.fmt.format(index + self.start)}"

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(self.count))

    def __repr__(self) -> str:
        return f"FramePattern({self.folder!r}, {self.fmt!r}, start={self.start}, count={self.count})"


FrameList = Union[list[str], FramePattern]


def valid_boxes(boxes: np.ndarray, min_size: float = 0.0) -> np.ndarray:
    """Rows that are a box: finite, width and height above ``min_size`` (>= when min_size > 0)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.all(np.isfinite(boxes), axis=1)
    with np.errstate(invalid="ignore"):
        if min_size > 0:
            big = (boxes[:, 2] >= min_size) & (boxes[:, 3] >= min_size)
        else:
            big = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    return finite & big


@dataclass
class Sequence:
    """One annotated sequence: ``frames[i]`` (a path) shows ``groundtruth[i]``.

    ``groundtruth`` is ``(N, 4)`` ``x, y, w, h`` float64 in the benchmark's own coordinates (copied
    unchanged, so what is read is what is written back), NaN rows where no box is known.
    ``absent[i]`` is True where the benchmark marks the target as not visible (absent, fully
    occluded, out of view): evaluation leaves those frames out of scoring (metrics.valid_frames).
    ``visible`` (derived) is where training may sample: a box of at least ``MIN_TRAINING_BOX``
    pixels and not absent.  ``has_groundtruth`` is False for test splits that publish only the
    first box (GOT-10k test, TrackingNet test): they can be run and submitted, not scored or trained
    on.  ``category`` is the object kind, for same-kind hard negatives; ``group`` joins objects of
    one still image (COCO: the image id) so that they serve as each other's distractors;
    ``dataset`` is the name of the TrackingDataset that holds the sequence.
    """

    name: str
    frames: FrameList = field(repr=False)
    groundtruth: np.ndarray = field(repr=False)
    absent: np.ndarray = field(repr=False)
    fps: Optional[float] = None
    benchmark: str = "folder"
    has_groundtruth: bool = True
    attrs: dict = field(default_factory=dict, repr=False)
    category: Optional[str] = None
    group: Optional[str] = None
    dataset: str = ""
    visible: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.groundtruth = np.asarray(self.groundtruth, dtype=np.float64).reshape(-1, 4)
        self.absent = np.asarray(self.absent, dtype=bool).reshape(-1)
        if not (len(self.frames) == len(self.groundtruth) == len(self.absent)):
            raise DatasetError(
                f"sequence {self.name}: {len(self.frames)} frames but {len(self.groundtruth)} ground-truth rows "
                f"and {len(self.absent)} absent flags"
            )
        self.visible = valid_boxes(self.groundtruth, MIN_TRAINING_BOX) & ~self.absent

    def __len__(self) -> int:
        return len(self.groundtruth)

    @property
    def visible_indices(self) -> np.ndarray:
        return np.flatnonzero(self.visible)

    def frame_path(self, index: int) -> str:
        return self.frames[index]

    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` as uint8 BGR (cv2.imread); a missing or unreadable file is an error naming it."""
        path = self.frames[index]
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"sequence {self.name}: cannot read frame {index} at {path}")
        return img

    def image_size(self) -> tuple[int, int]:
        """(width, height) of the first frame (benchmarks keep one size per sequence)."""
        h, w = self.image(0).shape[:2]
        return w, h

    @property
    def init_box(self) -> np.ndarray:
        """The first frame's box (the initialisation every benchmark hands the tracker)."""
        box = self.groundtruth[0]
        if not valid_boxes(box)[0]:
            raise DatasetError(f"sequence {self.name}: the first frame has no valid box ({box.tolist()})")
        return box.copy()

    def head(self, max_frames: Optional[int]) -> "Sequence":
        """The first ``max_frames`` frames (all when None): quick runs and tests."""
        if max_frames is None or max_frames >= len(self):
            return self
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        return dataclasses.replace(
            self,
            frames=self.frames[:max_frames],
            groundtruth=self.groundtruth[:max_frames],
            absent=self.absent[:max_frames],
            attrs=dict(self.attrs, truncated_to=max_frames),
        )


class TrackingDataset:
    """A named list of sequences: one ``--data`` source of training, whatever its format."""

    def __init__(self, name: str, sequences: list[Sequence], kind: str = "folder") -> None:
        self.name = name
        self.kind = kind
        self.sequences = sequences
        for s in sequences:
            s.dataset = name

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> Sequence:
        return self.sequences[i]

    def __repr__(self) -> str:
        frames = sum(len(s) for s in self.sequences)
        return f"TrackingDataset({self.name!r}, {self.kind}, {len(self.sequences)} sequences, {frames} frames)"


# ----------------------------------------------------------------------------------------- files


def require_dir(root: PathLike, what: str = "sequences folder") -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise MissingDataError(f"{what} {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{what} {root} is not a folder")
    return root


def _numeric_key(path: Path) -> tuple:
    """Sort '10.jpg' after '9.jpg' (TrackingNet names frames 0.jpg, 1.jpg, ... without padding)."""
    parts = re.split(r"(\d+)", path.name)
    return tuple(int(p) if p.isdigit() else p for p in parts)


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder in natural (numeric) order; [] when the folder is absent."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(files, key=_numeric_key)


def read_boxes(path: PathLike, columns: int = 4) -> np.ndarray:
    """``(N, columns)`` float64 rows of a ground-truth file, as every benchmark writes them: numbers
    separated by commas, tabs or spaces (OTB mixes them), 'NaN' as NaN (UAV123's absent frames),
    blank lines skipped.  A missing or empty file, or a row that is not ``columns`` numbers (a broken
    file, not an absent target), is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"annotation file {path} does not exist")
    rows = []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text:
                continue
            fields = [f for f in _SEPARATORS.split(text) if f]
            try:
                values = [float(f) for f in fields]
            except ValueError:
                raise DatasetError(f"{path}:{lineno}: expected {columns} numbers, got {text!r}") from None
            if len(values) != columns:
                raise DatasetError(f"{path}:{lineno}: expected {columns} numbers, got {len(values)} in {text!r}")
            rows.append(values)
    if not rows:
        raise DatasetError(f"annotation file {path} is empty")
    return np.asarray(rows, dtype=np.float64).reshape(-1, columns)


def read_flags(path: PathLike) -> Optional[np.ndarray]:
    """Integer flags separated by newlines or commas (GOT-10k's ``absence.label``, LaSOT's
    ``full_occlusion.txt``); None when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return None
    text = path.read_text().replace(",", " ").split()
    try:
        return np.asarray([int(float(t)) for t in text], dtype=np.int64)
    except ValueError:
        raise DatasetError(f"{path}: expected 0/1 flags, got {' '.join(text[:8])!r}") from None


def read_frame_flags(path: Path, frames: int) -> Optional[np.ndarray]:
    """``read_flags`` cut to ``frames``; fewer flags than frames is a broken file, not 'visible'."""
    flags = read_flags(path)
    if flags is not None and len(flags) < frames:
        raise DatasetError(f"{path} has {len(flags)} flags for {frames} frames")
    return None if flags is None else flags[:frames]


def fit_length(frames: list, groundtruth: np.ndarray, attrs: dict) -> tuple[list, np.ndarray]:
    """Short ground truth gets NaN rows (unknown frames); rows beyond the images are cut.

    Both are recorded in ``attrs['notes']`` so that a run can say what it did.
    """
    n_img, n_gt = len(frames), len(groundtruth)
    if n_gt < n_img:
        attrs.setdefault("notes", []).append(f"{n_gt} ground-truth rows for {n_img} frames: the rest are unknown (NaN)")
        groundtruth = np.vstack([groundtruth, np.full((n_img - n_gt, 4), np.nan)])
    elif n_gt > n_img:
        attrs.setdefault("notes", []).append(f"{n_gt} ground-truth rows for {n_img} frames: extra rows ignored")
        groundtruth = groundtruth[:n_img]
    return frames, groundtruth


# ------------------------------------------------------------------------------------ selection


class NameFilter:
    """Which sequences to load: ``only`` names or globs (each must match one), minus ``exclude``."""

    def __init__(self, only: Optional[Iterable[str]] = None, exclude: Optional[Iterable[str]] = None) -> None:
        self.only = None if only is None else list(only)
        self.exclude = list(exclude or ())

    def __call__(self, name: str) -> bool:
        if any(fnmatch.fnmatchcase(name, p) for p in self.exclude):
            return False
        return self.only is None or any(fnmatch.fnmatchcase(name, p) for p in self.only)

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """The ``only`` patterns that name none of ``names``."""
        names = list(names)
        return [p for p in self.only or () if not any(fnmatch.fnmatchcase(n, p) for n in names)]

    def order(self, name: str) -> int:
        """Index of the first ``only`` pattern that names ``name`` (the order a user asked for)."""
        return next((i for i, p in enumerate(self.only or ()) if fnmatch.fnmatchcase(name, p)), 0)


# ------------------------------------------------------------------------------------ categories

# Object names that look alike from a drone (for hard negatives): anything human is "person",
# road vehicles are "vehicle".  Used only to pick "same kind of object" negatives.
_CATEGORY_SYNONYMS = {
    "group": "person", "human": "person", "woman": "person", "man": "person", "pedestrian": "person",
    "bolt": "person", "sprinter": "person", "girl": "person", "boy": "person", "walking": "person",
    "cyclist": "person", "surfer": "person", "wakeboarder": "person", "biker": "person", "mountain": "person", "baby": "person",
    "car": "vehicle", "truck": "vehicle", "bus": "vehicle", "van": "vehicle",
}


def category_from_name(name: str) -> str:
    """'uav_group1_1' -> 'person', 'uav_car14_b' -> 'vehicle', 'otb_bird2' -> 'bird'.

    Benchmark names hold the object kind after a source prefix and before the numbers.
    """
    stem = re.sub(r"^(uav|otb|dtb70|uavdt|vot|got|lasot)_", "", name.lower())
    word = re.match(r"[a-z]+", stem)
    token = word.group(0) if word else stem
    return _CATEGORY_SYNONYMS.get(token, token)


def category_from_object(description: Optional[str], name: str) -> str:
    """The kind from a source.json "object" ('car (aerial)' -> 'vehicle'), else from the sequence name."""
    if isinstance(description, str):
        word = re.match(r"[a-z]+", description.strip().lower())
        if word:
            return _CATEGORY_SYNONYMS.get(word.group(0), word.group(0))
    return category_from_name(name)
