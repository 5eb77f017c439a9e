"""Sequence loaders for the on-disk layouts of the public tracking benchmarks.

Every loader returns a list of :class:`Sequence`: frame paths (images are read lazily with
``cv2.imread``, BGR), ground truth as an ``(N, 4)`` float array of ``x, y, w, h`` in the
benchmark's own coordinates (copied unchanged, so what we read is what we write back), NaN rows
where a frame has no usable box, and an ``absent`` mask for frames where the benchmark says the
target is not visible (absent, fully occluded, out of view).

Layouts (``root`` is what ``--sequences`` points at):

=============  ==========================================================================
otb            ``root/<Seq>/img/0001.jpg``, ``root/<Seq>/groundtruth_rect.txt`` (comma, tab or
               space separated); two-target sequences have ``groundtruth_rect.1.txt`` /
               ``.2.txt`` and become ``<Seq>-1`` / ``<Seq>-2`` (pysot's names).  The few
               sequences whose annotation covers only part of the frames (David, BlurCar1,
               ...) use the OTB toolkit's frame ranges, and Tiger1 omits its first 5 frames.
uav123         ``root/anno/UAV123/<name>.txt`` + ``root/data_seq/UAV123/<folder>/000001.jpg``
               (or ``UAV123_10fps`` / ``UAV20L``, one subset a run).  ``NaN,NaN,NaN,NaN`` rows mean absent.
               Sub-sequences (``car1_2``) share their folder with the toolkit's frame ranges.
nfs            ``root/<seq>/30/<seq>/00001.jpg`` + ``root/<seq>/30/<seq>.txt`` whose rows are
               ``id x1 y1 x2 y2 frame lost occluded generated "label"``; the 30 fps folders
               carry the 240 fps annotation, so every 8th row is used (as the got10k toolkit).
lasot          ``root/<class>/<class-n>/img/00000001.jpg``, ``groundtruth.txt``,
               ``full_occlusion.txt``, ``out_of_view.txt`` (absent = either); ``testing_set.txt``
               at the root, when there, selects the test split.  ``root`` may also be one class
               folder.
got10k         ``root/list.txt``, ``root/<seq>/00000001.jpg``, ``groundtruth.txt`` (val: every
               frame; test: only the first), ``absence.label``, ``cover.label`` (0 = fully
               occluded).  Unknown boxes of the test split are NaN and ``has_groundtruth`` is
               False beyond frame 0.
trackingnet    ``root/TEST/frames/<seq>/0.jpg`` ... (0-based, numeric order) and
               ``root/TEST/anno/<seq>.txt`` with only the first box; ``root`` may be ``TEST``.
vot            ``root/list.txt``, ``root/<seq>/color/00000001.jpg`` (or images in ``<seq>/``),
               ``groundtruth.txt`` with polygons ``x1,y1,...,x4,y4`` or rectangles; polygons
               become the axis-aligned min/max rectangle, the VOT toolkit's conversion.
folder         ``root/<seq>/img/*.jpg`` + ``groundtruth.txt`` (+ optional ``source.json``), like
               ``../shared/data/sequences``; ``root`` may be one such sequence folder.
=============  ==========================================================================
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import cv2
import numpy as np

from cract_core.annotations import read_box_rows, read_flags

BENCHMARKS = ("otb", "uav123", "got10k", "lasot", "trackingnet", "vot", "nfs", "folder")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


class LayoutError(ValueError):
    """A folder does not have the layout of the benchmark it was loaded as; the message says what is missing."""


@dataclass
class Sequence:
    """One tracking sequence.

    ``groundtruth`` is ``(N, 4)`` ``x, y, w, h`` float64 with NaN rows where no box is known;
    ``absent[i]`` is True when the benchmark marks the target as not visible in frame i (those
    frames are left out of scoring, see metrics.valid_frames).  ``has_groundtruth`` is False for
    test splits that only publish the first box (GOT-10k test, TrackingNet): they can be run and
    submitted, not scored here.
    """

    name: str
    frames: list[str]
    groundtruth: np.ndarray
    absent: np.ndarray
    fps: Optional[float] = None
    benchmark: str = "folder"
    has_groundtruth: bool = True
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.groundtruth = np.asarray(self.groundtruth, dtype=np.float64).reshape(-1, 4)
        self.absent = np.asarray(self.absent, dtype=bool).reshape(-1)
        if not (len(self.frames) == len(self.groundtruth) == len(self.absent)):
            raise LayoutError(
                f"sequence {self.name}: {len(self.frames)} frames but {len(self.groundtruth)} ground-truth rows "
                f"and {len(self.absent)} absent flags"
            )

    def __len__(self) -> int:
        return len(self.frames)

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
        if not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
            raise LayoutError(f"sequence {self.name}: the first frame has no valid box ({box.tolist()})")
        return box.copy()

    def head(self, max_frames: Optional[int]) -> "Sequence":
        """The first ``max_frames`` frames (all when None): quick runs and tests."""
        if max_frames is None or max_frames >= len(self):
            return self
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        return Sequence(
            name=self.name,
            frames=self.frames[:max_frames],
            groundtruth=self.groundtruth[:max_frames],
            absent=self.absent[:max_frames],
            fps=self.fps,
            benchmark=self.benchmark,
            has_groundtruth=self.has_groundtruth,
            attrs=dict(self.attrs, truncated_to=max_frames),
        )


# ----------------------------------------------------------------------------------------- helpers


def _require_dir(root: Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"sequences folder {root} does not exist")
    if not root.is_dir():
        raise LayoutError(f"{root} is not a folder")
    return root


def _numeric_key(path: Path) -> tuple:
    """Sort '10.jpg' after '9.jpg' (TrackingNet names frames 0.jpg, 1.jpg, ... without padding)."""
    parts = re.split(r"(\d+)", path.name)
    return tuple(int(p) if p.isdigit() else p for p in parts)


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder in natural (numeric) order."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
    return sorted(files, key=_numeric_key)


def read_boxes(path: Path, columns: int = 4) -> np.ndarray:
    """``(N, columns)`` float64 rows, 'NaN' as NaN; a malformed row is a LayoutError naming file and line."""
    return read_box_rows(path, columns, LayoutError)


def _fit_length(seq_name: str, frames: list, gt: np.ndarray, attrs: dict) -> tuple[list, np.ndarray]:
    """Short ground truth gets NaN rows (unknown frames); extra rows beyond the images are cut.

    Both are recorded in ``attrs['notes']`` so a run can say what it did.
    """
    n_img, n_gt = len(frames), len(gt)
    if n_gt < n_img:
        attrs.setdefault("notes", []).append(f"{n_gt} ground-truth rows for {n_img} frames: the rest are unknown (NaN)")
        gt = np.vstack([gt, np.full((n_img - n_gt, 4), np.nan)])
    elif n_gt > n_img:
        attrs.setdefault("notes", []).append(f"{n_gt} ground-truth rows for {n_img} frames: extra rows ignored")
        gt = gt[:n_img]
    return frames, gt


def _invalid_rows(gt: np.ndarray) -> np.ndarray:
    return ~np.all(np.isfinite(gt), axis=1) | (gt[:, 2] <= 0) | (gt[:, 3] <= 0)


def _only(only: Optional[Iterable[str]]) -> Callable[[str], bool]:
    wanted = None if only is None else set(only)
    return lambda n: wanted is None or n in wanted


# -------------------------------------------------------------------------------------- OTB-2015

# Sequences whose annotation covers a frame range, from the OTB toolkit's configSeqs (1-based,
# inclusive).  Everywhere else the annotation starts at the first image.
OTB_FRAME_RANGES = {
    "David": (300, 770),
    "Football1": (1, 74),
    "Freeman3": (1, 460),
    "Freeman4": (1, 283),
    "Diving": (1, 215),
    "BlurCar1": (247, 988),
    "BlurCar3": (3, 359),
    "BlurCar4": (18, 397),
}
# Sequences whose first frames the OTB toolkit leaves out of both images and annotation
# ("initOmit" in configSeqs): Tiger1 starts at its 6th frame.
OTB_INIT_OMIT = {"Tiger1": 5}


def load_otb(root: Path, only: Optional[Iterable[str]] = None) -> list[Sequence]:
    root = _require_dir(root)
    keep = _only(only)
    seqs = []
    for seq_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        annos = sorted(seq_dir.glob("groundtruth_rect*.txt"))
        if not annos:
            continue
        images = list_images(seq_dir / "img")
        if not images:
            raise LayoutError(f"OTB sequence {seq_dir.name}: no images in {seq_dir / 'img'}")
        for anno in annos:
            m = re.match(r"groundtruth_rect\.(\d+)\.txt$", anno.name)
            name = f"{seq_dir.name}-{m.group(1)}" if m else seq_dir.name
            if not keep(name):
                continue
            gt = read_boxes(anno)
            attrs: dict = {"annotation": str(anno)}
            frames = images
            if seq_dir.name in OTB_FRAME_RANGES:
                start, end = OTB_FRAME_RANGES[seq_dir.name]
                frames = images[start - 1 : end]
                attrs["frame_range"] = [start, end]
            omit = OTB_INIT_OMIT.get(seq_dir.name, 0)
            if omit:
                frames, gt = frames[omit:], gt[omit:]
                attrs["init_omit"] = omit
            frames, gt = _fit_length(name, frames, gt, attrs)
            seqs.append(
                Sequence(name, [str(f) for f in frames], gt, np.zeros(len(frames), bool), 30.0, "otb", True, attrs)
            )
    if not seqs and only is None:
        raise LayoutError(f"{root}: no OTB sequences (expected <Seq>/img/*.jpg and <Seq>/groundtruth_rect.txt)")
    return seqs


# ---------------------------------------------------------------------------------------- UAV123

# Sub-sequences that share one image folder, with the UAV123 toolkit's 30 fps frame ranges
# (1-based, inclusive).  Only the start matters here: the annotation's length gives the end.
UAV123_SUBSEQUENCE_START = {
    "bird1_1": 1, "bird1_2": 775, "bird1_3": 1573,
    "car1_1": 1, "car1_2": 751, "car1_3": 1627,
    "car16_1": 1, "car16_2": 415,
    "car6_1": 1, "car6_2": 487, "car6_3": 1807, "car6_4": 2953, "car6_5": 3925,
    "car8_1": 1, "car8_2": 1357,
    "group1_1": 1, "group1_2": 1333, "group1_3": 2515, "group1_4": 3925,
    "group2_1": 1, "group2_2": 907, "group2_3": 1771,
    "group3_1": 1, "group3_2": 1567, "group3_3": 2827, "group3_4": 4369,
    "person12_1": 1, "person12_2": 601,
    "person14_1": 1, "person14_2": 847, "person14_3": 1813,
    "person17_1": 1, "person17_2": 1501,
    "person19_1": 1, "person19_2": 1243, "person19_3": 2791,
    "person2_1": 1, "person2_2": 1189,
    "person4_1": 1, "person4_2": 1501,
    "person5_1": 1, "person5_2": 877,
    "person7_1": 1, "person7_2": 1249,
    "person8_1": 1, "person8_2": 1075,
    "truck4_1": 1, "truck4_2": 577,
    "uav1_1": 1, "uav1_2": 1555, "uav1_3": 2473,
}


def load_uav123(root: Path, only: Optional[Iterable[str]] = None, subset: Optional[str] = None) -> list[Sequence]:
    """UAV123 (or, with ``subset``, UAV123_10fps / UAV20L from the same release).

    One subset at a time: the three share sequence names.  Default: UAV123 when its
    annotations are there, else the only (first) subset under ``anno/``.
    """
    root = _require_dir(root)
    subsets = [p.name for p in sorted((root / "anno").glob("*")) if p.is_dir()] if (root / "anno").is_dir() else []
    if not subsets:
        raise LayoutError(f"{root}: not a UAV123 layout (expected anno/UAV123/*.txt and data_seq/UAV123/<seq>/)")
    if subset is None:
        subset = "UAV123" if "UAV123" in subsets else subsets[0]
    elif subset not in subsets:
        raise LayoutError(f"{root}: no anno/{subset} (found: {', '.join(subsets)})")
    keep = _only(only)
    seqs = []
    for subset in [subset]:
        anno_dir, data_dir = root / "anno" / subset, root / "data_seq" / subset
        if not data_dir.is_dir() and subset == "UAV20L":
            data_dir = root / "data_seq" / "UAV123"  # UAV20L's annotations index the UAV123 folders
        if not data_dir.is_dir():
            raise LayoutError(f"{root}: anno/{subset} has no matching image folder data_seq/{subset}")
        # UAV123_10fps keeps every 3rd frame of the 30 fps original; UAV20L is the long-term subset.
        stride, fps = (3, 10.0) if "10fps" in subset.lower() else (1, 30.0)
        for anno in sorted(anno_dir.glob("*.txt")):
            name = anno.stem
            if not keep(name):
                continue
            gt = read_boxes(anno)
            attrs: dict = {"annotation": str(anno), "subset": subset}
            if (data_dir / name).is_dir():
                images, start = list_images(data_dir / name), 1
            else:
                base = re.sub(r"_\d+$", "", name)
                if name not in UAV123_SUBSEQUENCE_START or not (data_dir / base).is_dir():
                    raise LayoutError(f"UAV123 sequence {name}: no folder data_seq/{subset}/{name} or a known sub-range of one")
                images = list_images(data_dir / base)
                start = (UAV123_SUBSEQUENCE_START[name] - 1) // stride + 1
                attrs["frame_range"] = [start, start + len(gt) - 1]
            frames = images[start - 1 : start - 1 + len(gt)]
            frames, gt = _fit_length(name, frames, gt, attrs)
            # UAV123 writes NaN rows while the target is out of view: that is its absent flag.
            absent = ~np.all(np.isfinite(gt), axis=1)
            seqs.append(Sequence(name, [str(f) for f in frames], gt, absent, fps, "uav123", True, attrs))
    return seqs


# ------------------------------------------------------------------------------------------- NfS


def load_nfs(root: Path, only: Optional[Iterable[str]] = None, fps: int = 30) -> list[Sequence]:
    root = _require_dir(root)
    keep = _only(only)
    seqs = []
    for seq_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        sub = seq_dir / str(fps)
        anno = sub / f"{seq_dir.name}.txt"
        if not anno.is_file():
            continue
        name = seq_dir.name
        if not keep(name):
            continue
        images = list_images(sub / seq_dir.name)
        if not images:
            raise LayoutError(f"NfS sequence {name}: no images in {sub / seq_dir.name}")
        rows = []
        with open(anno) as fh:
            for lineno, line in enumerate(fh, 1):
                f = line.split()
                if not f:
                    continue
                if len(f) < 7:
                    raise LayoutError(f"{anno}:{lineno}: expected 'id x1 y1 x2 y2 frame lost ...', got {line.strip()!r}")
                rows.append([float(v) for v in f[1:5]] + [float(f[6])])
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        gt = np.stack([arr[:, 0], arr[:, 1], arr[:, 2] - arr[:, 0], arr[:, 3] - arr[:, 1]], axis=1)
        lost = arr[:, 4] > 0
        attrs: dict = {"annotation": str(anno)}
        # The 30 fps folders ship the 240 fps annotation: keep every 8th row (got10k toolkit's rule).
        if len(gt) != len(images) and abs(len(gt) / len(images) - 240 / fps) < 1:
            step = 240 // fps
            gt, lost = gt[::step], lost[::step]
            attrs["annotation_step"] = step
        n = len(images)
        if abs(len(gt) - n) <= 1:
            m = min(len(gt), n)
            images, gt, lost = images[:m], gt[:m], lost[:m]
        images, gt = _fit_length(name, images, gt, attrs)
        lost = np.concatenate([lost, np.zeros(len(gt) - len(lost), bool)])[: len(gt)]
        gt[lost] = np.nan
        seqs.append(Sequence(name, [str(p) for p in images], gt, lost, float(fps), "nfs", True, attrs))
    if not seqs and only is None:
        raise LayoutError(f"{root}: no NfS sequences (expected <seq>/{fps}/<seq>/*.jpg and <seq>/{fps}/<seq>.txt)")
    return seqs


# ----------------------------------------------------------------------------------------- LaSOT


def _lasot_sequence(seq_dir: Path) -> Sequence:
    images = list_images(seq_dir / "img")
    if not images:
        raise LayoutError(f"LaSOT sequence {seq_dir.name}: no images in {seq_dir / 'img'}")
    gt = read_boxes(seq_dir / "groundtruth.txt")
    attrs: dict = {}
    images, gt = _fit_length(seq_dir.name, images, gt, attrs)
    absent = np.zeros(len(images), bool)
    for label in ("full_occlusion.txt", "out_of_view.txt"):
        flags = read_flags(seq_dir / label)
        if flags is not None:
            flags = np.concatenate([flags, np.zeros(max(0, len(images) - len(flags)), np.int64)])[: len(images)]
            absent |= flags > 0
        else:
            attrs.setdefault("notes", []).append(f"{label} missing")
    return Sequence(seq_dir.name, [str(p) for p in images], gt, absent, 30.0, "lasot", True, attrs)


def load_lasot(root: Path, only: Optional[Iterable[str]] = None) -> list[Sequence]:
    root = _require_dir(root)
    keep = _only(only)
    if (root / "groundtruth.txt").is_file() and (root / "img").is_dir():
        candidates = [root]
    else:
        candidates = sorted(root.glob("*/groundtruth.txt")) + sorted(root.glob("*/*/groundtruth.txt"))
        candidates = sorted({p.parent for p in candidates})
    split = root / "testing_set.txt"
    if split.is_file():
        names = set(split.read_text().split())
        candidates = [c for c in candidates if c.name in names]
    seqs = [_lasot_sequence(c) for c in candidates if keep(c.name)]
    if not candidates:
        raise LayoutError(f"{root}: no LaSOT sequences (expected <class>/<class>-<n>/img/ and groundtruth.txt)")
    return seqs


# --------------------------------------------------------------------------------------- GOT-10k


def _listed_sequences(root: Path, what: str) -> list[str]:
    """Sequence names from list.txt (GOT-10k and VOT both ship one), else every <seq>/groundtruth.txt."""
    listing = root / "list.txt"
    if listing.is_file():
        names = listing.read_text().split()
    else:
        names = sorted(p.parent.name for p in root.glob("*/groundtruth.txt"))
    if not names:
        raise LayoutError(f"{root}: not {what} (expected list.txt and <seq>/groundtruth.txt)")
    return names


def load_got10k(root: Path, only: Optional[Iterable[str]] = None) -> list[Sequence]:
    root = _require_dir(root)
    names = _listed_sequences(root, "a GOT-10k split")
    keep = _only(only)
    seqs = []
    for name in names:
        if not keep(name):
            continue
        seq_dir = root / name
        images = list_images(seq_dir)
        if not images:
            raise LayoutError(f"GOT-10k sequence {name}: no images in {seq_dir}")
        if not (seq_dir / "groundtruth.txt").is_file():
            raise LayoutError(f"GOT-10k sequence {name}: {seq_dir / 'groundtruth.txt'} missing")
        gt = read_boxes(seq_dir / "groundtruth.txt")
        # The test split publishes only the first box; the rest are unknown, not absent.
        has_gt = len(gt) > 1
        attrs: dict = {}
        if has_gt:
            images, gt = _fit_length(name, images, gt, attrs)
        else:
            gt = np.vstack([gt, np.full((len(images) - len(gt), 4), np.nan)])
        absence = read_flags(seq_dir / "absence.label")
        cover = read_flags(seq_dir / "cover.label")
        absent = np.zeros(len(images), bool)
        if absence is not None:
            absent |= np.concatenate([absence, np.zeros(max(0, len(images) - len(absence)), np.int64)])[: len(images)] > 0
        if cover is not None:
            # cover 0 = the target is fully occluded; the GOT-10k toolkit scores only cover > 0.
            cov = np.concatenate([cover, np.ones(max(0, len(images) - len(cover)), np.int64)])[: len(images)]
            absent |= cov == 0
            attrs["cover"] = cov.tolist()
        fps = 10.0
        meta = seq_dir / "meta_info.ini"
        if meta.is_file():
            # "key: value" lines under a [METAINFO] header; only the class is of use here.
            for line in meta.read_text(errors="replace").splitlines():
                key, sep, value = line.partition(":")
                if sep and key.strip() == "object_class":
                    attrs["object_class"] = value.strip()
        seqs.append(Sequence(name, [str(p) for p in images], gt, absent, fps, "got10k", has_gt, attrs))
    return seqs


# ----------------------------------------------------------------------------------- TrackingNet


def load_trackingnet(root: Path, only: Optional[Iterable[str]] = None) -> list[Sequence]:
    root = _require_dir(root)
    base = root / "TEST" if (root / "TEST").is_dir() else root
    frames_dir, anno_dir = base / "frames", base / "anno"
    if not frames_dir.is_dir() or not anno_dir.is_dir():
        raise LayoutError(f"{root}: not a TrackingNet split (expected TEST/frames/<seq>/0.jpg and TEST/anno/<seq>.txt)")
    keep = _only(only)
    seqs = []
    for anno in sorted(anno_dir.glob("*.txt")):
        name = anno.stem
        if not keep(name):
            continue
        images = list_images(frames_dir / name)
        if not images:
            raise LayoutError(f"TrackingNet sequence {name}: no frames in {frames_dir / name}")
        gt = read_boxes(anno)
        has_gt = len(gt) == len(images) and len(images) > 1
        if len(gt) < len(images):
            gt = np.vstack([gt, np.full((len(images) - len(gt), 4), np.nan)])
        gt = gt[: len(images)]
        seqs.append(Sequence(name, [str(p) for p in images], gt, np.zeros(len(images), bool), 30.0, "trackingnet", has_gt, {}))
    if not seqs and only is None:
        raise LayoutError(f"{anno_dir}: no annotation files")
    return seqs


# ------------------------------------------------------------------------------------------- VOT


def polygon_to_box(values: np.ndarray) -> np.ndarray:
    """A VOT region row -> ``x, y, w, h``.

    4 numbers are a rectangle already; 8 (or more, even) are polygon corners and become their
    axis-aligned min/max rectangle, as the VOT toolkit converts a polygon to a rectangle.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 4:
        return v.copy()
    if v.size < 6 or v.size % 2:
        raise LayoutError(f"VOT region with {v.size} numbers is neither a rectangle nor a polygon")
    xs, ys = v[0::2], v[1::2]
    return np.array([xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()], dtype=np.float64)


def load_vot(root: Path, only: Optional[Iterable[str]] = None) -> list[Sequence]:
    root = _require_dir(root)
    names = _listed_sequences(root, "a VOT stack")
    keep = _only(only)
    seqs = []
    for name in names:
        if not keep(name):
            continue
        seq_dir = root / name
        images = list_images(seq_dir / "color") or list_images(seq_dir)
        if not images:
            raise LayoutError(f"VOT sequence {name}: no images in {seq_dir / 'color'} or {seq_dir}")
        rows = []
        with open(seq_dir / "groundtruth.txt") as fh:
            for lineno, line in enumerate(fh, 1):
                text = line.strip()
                if not text:
                    continue
                if text.startswith("m"):
                    raise LayoutError(f"{seq_dir / 'groundtruth.txt'}:{lineno}: mask regions (VOT2020+) are not supported")
                try:
                    vals = np.array([float(x) for x in text.split(",")])
                except ValueError:
                    raise LayoutError(f"{seq_dir / 'groundtruth.txt'}:{lineno}: not numbers: {text!r}") from None
                rows.append(np.full(4, np.nan) if np.isnan(vals).any() else polygon_to_box(vals))
        gt = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        attrs: dict = {}
        images, gt = _fit_length(name, images, gt, attrs)
        absent = _invalid_rows(gt)
        seqs.append(Sequence(name, [str(p) for p in images], gt, absent, 30.0, "vot", True, attrs))
    return seqs


# ---------------------------------------------------------------------------------------- folder


def _folder_fps(meta: dict) -> Optional[float]:
    """fps from source.json: an explicit 'fps', else what the origin implies, divided by the frame stride."""
    if isinstance(meta.get("fps"), (int, float)):
        return float(meta["fps"])
    origin = str(meta.get("origin", ""))
    stride = meta.get("frame_stride") or meta.get("stride") or 1
    base = None
    if "UAV123@10fps" in origin:
        base = 10.0
    elif origin.startswith("OTB") or origin.startswith("DTB70") or origin.startswith("UAV123"):
        base = 30.0
    return None if base is None else base / float(stride)


def _folder_sequence(seq_dir: Path) -> Sequence:
    images = list_images(seq_dir / "img")
    if not images:
        raise LayoutError(f"sequence {seq_dir.name}: no images in {seq_dir / 'img'}")
    gt_path = seq_dir / "groundtruth.txt"
    if not gt_path.is_file():
        gt_path = seq_dir / "groundtruth_rect.txt"
    if not gt_path.is_file():
        raise LayoutError(f"sequence {seq_dir.name}: {seq_dir / 'groundtruth.txt'} missing")
    gt = read_boxes(gt_path)
    attrs: dict = {}
    meta_path = seq_dir / "source.json"
    if meta_path.is_file():
        try:
            attrs["source"] = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise LayoutError(f"{meta_path}: not valid JSON: {exc}") from None
    images, gt = _fit_length(seq_dir.name, images, gt, attrs)
    absent = ~np.all(np.isfinite(gt), axis=1)
    fps = _folder_fps(attrs.get("source", {}))
    return Sequence(seq_dir.name, [str(p) for p in images], gt, absent, fps, "folder", True, attrs)


def load_folder(root: Path, only: Optional[Iterable[str]] = None) -> list[Sequence]:
    root = _require_dir(root)
    if (root / "img").is_dir():
        return [_folder_sequence(root)]
    keep = _only(only)
    dirs = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / "img").is_dir()]
    if not dirs:
        raise LayoutError(f"{root}: no sequences (expected <seq>/img/*.jpg and <seq>/groundtruth.txt)")
    return [_folder_sequence(d) for d in dirs if keep(d.name)]


# ------------------------------------------------------------------------------------- dispatch

LOADERS: dict[str, Callable[..., list[Sequence]]] = {
    "otb": load_otb,
    "uav123": load_uav123,
    "nfs": load_nfs,
    "lasot": load_lasot,
    "got10k": load_got10k,
    "trackingnet": load_trackingnet,
    "vot": load_vot,
    "folder": load_folder,
}


def detect_benchmark(root: Path) -> str:
    """Guess the layout of ``root`` from the files each benchmark is known by."""
    root = _require_dir(root)
    if (root / "anno").is_dir() and (root / "data_seq").is_dir():
        return "uav123"
    if (root / "TEST" / "frames").is_dir() or ((root / "frames").is_dir() and (root / "anno").is_dir()):
        return "trackingnet"
    if (root / "img").is_dir():
        return "folder"
    if (root / "testing_set.txt").is_file() or any(root.glob("*/*/full_occlusion.txt")) or (root / "full_occlusion.txt").is_file():
        return "lasot"
    if any(root.glob("*/absence.label")) or any(root.glob("*/cover.label")):
        return "got10k"
    if any(root.glob("*/groundtruth_rect*.txt")):
        return "otb"
    if any(root.glob("*/30/*.txt")):
        return "nfs"
    if any(root.glob("*/color")) or (root / "list.txt").is_file():
        return "vot"
    if any(root.glob("*/img")):
        return "folder"
    raise LayoutError(
        f"{root}: cannot tell which benchmark this is; pass --benchmark {{{','.join(BENCHMARKS)}}}"
    )


def load_sequences(root: Path, benchmark: Optional[str] = None, only: Optional[Iterable[str]] = None) -> list[Sequence]:
    """Load the sequences under ``root``; ``only`` keeps those names (an unknown name is an error)."""
    root = Path(root)
    _require_dir(root)
    benchmark = benchmark or detect_benchmark(root)
    if benchmark not in LOADERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {', '.join(BENCHMARKS)}")
    only_list = list(only) if only is not None else None
    seqs = LOADERS[benchmark](root, only=only_list)
    if only_list is not None:
        found = {s.name for s in seqs}
        missing = [n for n in only_list if n not in found]
        if missing:
            available = sorted(s.name for s in LOADERS[benchmark](root))
            shown = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "")
            raise LayoutError(f"no sequence named {', '.join(missing)} in {root} ({benchmark}); available: {shown}")
        order = {n: i for i, n in enumerate(only_list)}
        seqs.sort(key=lambda s: order[s.name])
    if not seqs:
        raise LayoutError(f"{root}: no {benchmark} sequences found")
    return seqs
