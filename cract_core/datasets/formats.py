"""Loaders for the on-disk layouts of the public tracking benchmarks: one per format, for training and evaluation.

Every loader is ``load_<format>(root, only=None, exclude=None, ...) -> list[Sequence]``; ``only``
and ``exclude`` are sequence names or globs.  :func:`load_sequences` (evaluation: the order asked
for, every ``only`` name must exist) and :func:`make_dataset` (training: a named
:class:`TrackingDataset`, sequences without a visible frame dropped) are the two entry points.
The layouts are listed in ``cract_core/datasets/__init__.py``.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from cract_core.datasets.sequence import (
    DatasetError,
    FrameList,
    FramePattern,
    NameFilter,
    PathLike,
    Sequence,
    TrackingDataset,
    category_from_object,
    fit_length,
    list_images,
    read_boxes,
    read_frame_flags,
    require_dir,
    valid_boxes,
)

log = logging.getLogger(__name__)

# Formats with whole sequences (what cract-eval runs); COCO's still images are for training only.
BENCHMARKS = ("otb", "uav123", "got10k", "lasot", "trackingnet", "vot", "nfs", "folder")
FORMATS = BENCHMARKS + ("coco",)

Names = Optional[Iterable[str]]


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


def load_otb(root: PathLike, only: Names = None, exclude: Names = None) -> list[Sequence]:
    """``root/<Seq>/img/0001.jpg`` + ``groundtruth_rect.txt``; two-target sequences (``.1.txt``,
    ``.2.txt``) become ``<Seq>-1`` / ``<Seq>-2`` (pysot's names)."""
    root = require_dir(root)
    keep = NameFilter(only, exclude)
    seqs = []
    for seq_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        annos = sorted(seq_dir.glob("groundtruth_rect*.txt"))
        if not annos:
            continue
        images = list_images(seq_dir / "img")
        if not images:
            raise DatasetError(f"OTB sequence {seq_dir.name}: no images in {seq_dir / 'img'}")
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
            frames, gt = fit_length(frames, gt, attrs)
            seqs.append(Sequence(name, [str(f) for f in frames], gt, np.zeros(len(frames), bool), 30.0, "otb", True, attrs))
    if not seqs and only is None and exclude is None:
        raise DatasetError(f"{root}: no OTB sequences (expected <Seq>/img/*.jpg and <Seq>/groundtruth_rect.txt)")
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


def load_uav123(root: PathLike, only: Names = None, exclude: Names = None, subset: Optional[str] = None) -> list[Sequence]:
    """``root/anno/<subset>/<name>.txt`` + ``root/data_seq/<subset>/<folder>/000001.jpg``: UAV123, or
    with ``subset`` UAV123_10fps / UAV20L from the same release.

    One subset at a time: the three share sequence names.  Default: UAV123 when its annotations
    are there, else the only (first) subset under ``anno/``.  ``NaN`` rows mean absent.
    """
    root = require_dir(root)
    subsets = [p.name for p in sorted((root / "anno").glob("*")) if p.is_dir()] if (root / "anno").is_dir() else []
    if not subsets:
        raise DatasetError(f"{root}: not a UAV123 layout (expected anno/UAV123/*.txt and data_seq/UAV123/<seq>/)")
    if subset is None:
        subset = "UAV123" if "UAV123" in subsets else subsets[0]
    elif subset not in subsets:
        raise DatasetError(f"{root}: no anno/{subset} (found: {', '.join(subsets)})")
    keep = NameFilter(only, exclude)
    anno_dir, data_dir = root / "anno" / subset, root / "data_seq" / subset
    if not data_dir.is_dir() and subset == "UAV20L":
        data_dir = root / "data_seq" / "UAV123"  # UAV20L's annotations index the UAV123 folders
    if not data_dir.is_dir():
        raise DatasetError(f"{root}: anno/{subset} has no matching image folder data_seq/{subset}")
    # UAV123_10fps keeps every 3rd frame of the 30 fps original; UAV20L is the long-term subset.
    stride, fps = (3, 10.0) if "10fps" in subset.lower() else (1, 30.0)
    seqs = []
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
                raise DatasetError(f"UAV123 sequence {name}: no folder data_seq/{subset}/{name} or a known sub-range of one")
            images = list_images(data_dir / base)
            start = (UAV123_SUBSEQUENCE_START[name] - 1) // stride + 1
            attrs["frame_range"] = [start, start + len(gt) - 1]
        frames, gt = fit_length(images[start - 1 : start - 1 + len(gt)], gt, attrs)
        # UAV123 writes NaN rows while the target is out of view: that is its absent flag.
        absent = ~np.all(np.isfinite(gt), axis=1)
        seqs.append(Sequence(name, [str(f) for f in frames], gt, absent, fps, "uav123", True, attrs))
    return seqs


# ------------------------------------------------------------------------------------------- NfS


def load_nfs(root: PathLike, only: Names = None, exclude: Names = None, fps: int = 30) -> list[Sequence]:
    """``root/<seq>/30/<seq>/00001.jpg`` + ``root/<seq>/30/<seq>.txt`` (rows ``id x1 y1 x2 y2 frame
    lost occluded generated "label"``); the 30 fps folders carry the 240 fps annotation, so every
    8th row is used (as the got10k toolkit does)."""
    root = require_dir(root)
    keep = NameFilter(only, exclude)
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
            raise DatasetError(f"NfS sequence {name}: no images in {sub / seq_dir.name}")
        rows = []
        with open(anno) as fh:
            for lineno, line in enumerate(fh, 1):
                f = line.split()
                if not f:
                    continue
                if len(f) < 7:
                    raise DatasetError(f"{anno}:{lineno}: expected 'id x1 y1 x2 y2 frame lost ...', got {line.strip()!r}")
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
        images, gt = fit_length(images, gt, attrs)
        lost = np.concatenate([lost, np.zeros(len(gt) - len(lost), bool)])[: len(gt)]
        gt[lost] = np.nan
        seqs.append(Sequence(name, [str(p) for p in images], gt, lost, float(fps), "nfs", True, attrs))
    if not seqs and only is None and exclude is None:
        raise DatasetError(f"{root}: no NfS sequences (expected <seq>/{fps}/<seq>/*.jpg and <seq>/{fps}/<seq>.txt)")
    return seqs


# ----------------------------------------------------------------------------------------- LaSOT


def _lasot_sequence(seq_dir: Path) -> Sequence:
    gt = read_boxes(seq_dir / "groundtruth.txt")
    # LaSOT numbers every frame img/00000001.jpg ...: made on demand (3.5 M frames in all).
    frames = FramePattern(str(seq_dir / "img"), "{:08d}.jpg", 1, len(gt))
    attrs: dict = {}
    absent = np.zeros(len(gt), bool)
    for label in ("full_occlusion.txt", "out_of_view.txt"):
        flags = read_frame_flags(seq_dir / label, len(gt))
        if flags is not None:
            absent |= flags > 0
        else:
            attrs.setdefault("notes", []).append(f"{label} missing")
    return Sequence(seq_dir.name, frames, gt, absent, 30.0, "lasot", True, attrs, category=seq_dir.parent.name.lower())


def load_lasot(root: PathLike, only: Names = None, exclude: Names = None, split: str = "test") -> list[Sequence]:
    """``root/<class>/<class>-<n>/img/00000001.jpg``, ``groundtruth.txt``, ``full_occlusion.txt`` and
    ``out_of_view.txt`` (absent = either).  ``root`` may be the dataset, one class folder or one
    sequence.  A ``testing_set.txt`` at the root names the test split: ``split="test"`` (evaluation)
    keeps those sequences, ``"train"`` (training) leaves them out, ``"all"`` ignores the file."""
    root = require_dir(root)
    if split not in ("test", "train", "all"):
        raise ValueError(f"LaSOT split must be test, train or all, got {split!r}")
    keep = NameFilter(only, exclude)
    if (root / "groundtruth.txt").is_file():
        candidates = [root]
    else:
        found = sorted(root.glob("*/groundtruth.txt")) + sorted(root.glob("*/*/groundtruth.txt"))
        candidates = sorted({p.parent for p in found})
    if not candidates:
        raise DatasetError(f"{root}: no LaSOT sequences (expected <class>/<class>-<n>/img/ and groundtruth.txt)")
    listing = root / "testing_set.txt"
    if listing.is_file() and split != "all":
        test_names = set(listing.read_text().split())
        candidates = [c for c in candidates if (c.name in test_names) == (split == "test")]
    return [_lasot_sequence(c) for c in candidates if keep(c.name)]


# ---------------------------------------------------------------------------- GOT-10k, TrackingNet


def _frames_of(folder: Path, fmt: str, start: int, gt: np.ndarray, what: str) -> tuple[FrameList, np.ndarray, bool]:
    """(frames, ground truth, has_groundtruth) of a GOT-10k or TrackingNet sequence.

    Train and val splits give a box a frame, the frames numbered from ``start``: their paths are
    made on demand (1.4 M frames in GOT-10k train, 14 M in TrackingNet).  Test splits publish only
    the first box: the images are listed, and the other frames' boxes are unknown (NaN), not absent.
    """
    if len(gt) > 1:
        return FramePattern(str(folder), fmt, start, len(gt)), gt, True
    frames = [str(p) for p in list_images(folder)]
    if not frames:
        raise DatasetError(f"{what}: no images in {folder}")
    return frames, np.vstack([gt, np.full((len(frames) - 1, 4), np.nan)]), False


def _listed_sequences(root: Path, what: str, keep: NameFilter) -> list[str]:
    """The names ``keep`` keeps of list.txt (GOT-10k and VOT both ship one), else of every <seq>/groundtruth.txt."""
    listing = root / "list.txt"
    if listing.is_file():
        names = listing.read_text().split()
    else:
        names = sorted(p.parent.name for p in root.glob("*/groundtruth.txt"))
    if not names:
        raise DatasetError(f"{root}: not {what} (expected list.txt and <seq>/groundtruth.txt)")
    return [n for n in names if keep(n)]


def _got10k_meta(seq_dir: Path) -> Optional[str]:
    """The object class of meta_info.ini ("key: value" lines under a [METAINFO] header)."""
    meta = seq_dir / "meta_info.ini"
    if not meta.is_file():
        return None
    for line in meta.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "object_class":
            return value.strip() or None
    return None


def load_got10k(root: PathLike, only: Names = None, exclude: Names = None) -> list[Sequence]:
    """``root/list.txt``, ``root/<seq>/00000001.jpg``, ``groundtruth.txt`` (train/val: every frame;
    test: only the first, the rest unknown and ``has_groundtruth`` False), ``absence.label``,
    ``cover.label`` (0 = fully occluded), ``meta_info.ini`` (``object_class``).  ``root`` may also be
    the dataset folder that holds ``train/``."""
    root = require_dir(root)
    if not (root / "list.txt").is_file() and (root / "train").is_dir():
        root = root / "train"
    seqs = []
    for name in _listed_sequences(root, "a GOT-10k split", NameFilter(only, exclude)):
        seq_dir = root / name
        frames, gt, has_gt = _frames_of(seq_dir, "{:08d}.jpg", 1, read_boxes(seq_dir / "groundtruth.txt"),
                                        f"GOT-10k sequence {name}")
        absent = np.zeros(len(gt), bool)
        absence = read_frame_flags(seq_dir / "absence.label", len(gt))
        if absence is not None:
            absent |= absence > 0
        cover = read_frame_flags(seq_dir / "cover.label", len(gt))
        if cover is not None:  # cover 0 = fully occluded; the GOT-10k toolkit scores only cover > 0
            absent |= cover == 0
        object_class = _got10k_meta(seq_dir)
        attrs = {"object_class": object_class} if object_class else {}
        seqs.append(Sequence(name, frames, gt, absent, 10.0, "got10k", has_gt, attrs,
                             category=object_class.lower() if object_class else None))
    return seqs


# ----------------------------------------------------------------------------------- TrackingNet


def load_trackingnet(root: PathLike, only: Names = None, exclude: Names = None,
                     chunks: Optional[Iterable[int]] = None) -> list[Sequence]:
    """``<chunk>/frames/<seq>/0.jpg`` ... (0-based, numeric order) and ``<chunk>/anno/<seq>.txt``.

    ``root`` is the dataset (its ``TRAIN_<i>`` chunks, named ``TRAIN_<i>/<seq>``; ``chunks`` picks
    some), ``TEST`` or the folder holding ``TEST`` (names ``<seq>``; only the first box is published).
    """
    root = require_dir(root)
    if (root / "TEST").is_dir():
        chunk_dirs, prefixed = [root / "TEST"], False
    elif (root / "frames").is_dir() and (root / "anno").is_dir():
        chunk_dirs, prefixed = [root], False
    else:
        wanted = None if chunks is None else set(chunks)
        chunk_dirs = sorted(p for p in root.glob("TRAIN_*") if p.is_dir()
                            and (wanted is None or int(p.name.split("_")[1]) in wanted))
        prefixed = True
    if not chunk_dirs or not all((c / "anno").is_dir() and (c / "frames").is_dir() for c in chunk_dirs):
        raise DatasetError(f"{root}: not a TrackingNet split (expected TEST/ or TRAIN_<i>/ with frames/<seq>/0.jpg "
                           "and anno/<seq>.txt)")
    keep = NameFilter(only, exclude)
    seqs = []
    for chunk in chunk_dirs:
        for anno in sorted((chunk / "anno").glob("*.txt")):
            name = f"{chunk.name}/{anno.stem}" if prefixed else anno.stem
            if not keep(name):
                continue
            frames, gt, has_gt = _frames_of(chunk / "frames" / anno.stem, "{}.jpg", 0, read_boxes(anno),
                                            f"TrackingNet sequence {name}")
            seqs.append(Sequence(name, frames, gt, np.zeros(len(gt), bool), 30.0, "trackingnet", has_gt, {}))
    if not seqs and only is None and exclude is None:
        raise DatasetError(f"{root}: no TrackingNet annotation files in {', '.join(str(c / 'anno') for c in chunk_dirs)}")
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
        raise DatasetError(f"VOT region with {v.size} numbers is neither a rectangle nor a polygon")
    xs, ys = v[0::2], v[1::2]
    return np.array([xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()], dtype=np.float64)


def load_vot(root: PathLike, only: Names = None, exclude: Names = None) -> list[Sequence]:
    """``root/list.txt``, ``root/<seq>/color/00000001.jpg`` (or images in ``<seq>/``), ``groundtruth.txt``
    with polygons ``x1,y1,...,x4,y4`` (the axis-aligned min/max rectangle) or rectangles."""
    root = require_dir(root)
    seqs = []
    for name in _listed_sequences(root, "a VOT stack", NameFilter(only, exclude)):
        seq_dir = root / name
        images = list_images(seq_dir / "color") or list_images(seq_dir)
        if not images:
            raise DatasetError(f"VOT sequence {name}: no images in {seq_dir / 'color'} or {seq_dir}")
        rows = []
        with open(seq_dir / "groundtruth.txt") as fh:
            for lineno, line in enumerate(fh, 1):
                text = line.strip()
                if not text:
                    continue
                if text.startswith("m"):
                    raise DatasetError(f"{seq_dir / 'groundtruth.txt'}:{lineno}: mask regions (VOT2020+) are not supported")
                try:
                    vals = np.array([float(x) for x in text.split(",")])
                except ValueError:
                    raise DatasetError(f"{seq_dir / 'groundtruth.txt'}:{lineno}: not numbers: {text!r}") from None
                rows.append(np.full(4, np.nan) if np.isnan(vals).any() else polygon_to_box(vals))
        gt = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        attrs: dict = {}
        images, gt = fit_length(images, gt, attrs)
        seqs.append(Sequence(name, [str(p) for p in images], gt, ~valid_boxes(gt), 30.0, "vot", True, attrs))
    return seqs


# ---------------------------------------------------------------------------------------- folder


def folder_fps(meta: dict) -> Optional[float]:
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


def _is_folder_sequence(folder: Path) -> bool:
    return (folder / "img").is_dir() or (folder / "groundtruth.txt").is_file()


def load_folder_sequence(seq_dir: PathLike) -> Sequence:
    """One OTB-style folder: ``img/*.jpg`` (or the images in the folder itself), ``groundtruth.txt``
    (or ``groundtruth_rect.txt``), optional ``source.json`` (fps, object kind).  NaN rows are absent."""
    seq_dir = require_dir(seq_dir, "sequence folder")
    image_dir = seq_dir / "img" if (seq_dir / "img").is_dir() else seq_dir
    images = list_images(image_dir)
    if not images:
        raise DatasetError(f"sequence {seq_dir.name}: no images in {image_dir}")
    gt_path = seq_dir / "groundtruth.txt"
    if not gt_path.is_file() and (seq_dir / "groundtruth_rect.txt").is_file():
        gt_path = seq_dir / "groundtruth_rect.txt"
    if not gt_path.is_file():
        raise DatasetError(f"sequence {seq_dir.name}: {seq_dir / 'groundtruth.txt'} missing")
    gt = read_boxes(gt_path)
    attrs: dict = {}
    meta_path = seq_dir / "source.json"
    if meta_path.is_file():
        try:
            attrs["source"] = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{meta_path}: not valid JSON: {exc}") from None
        if not isinstance(attrs["source"], dict):
            raise DatasetError(f"{meta_path}: expected a JSON object, got {type(attrs['source']).__name__}")
    images, gt = fit_length(images, gt, attrs)
    absent = ~np.all(np.isfinite(gt), axis=1)
    source = attrs.get("source", {})
    return Sequence(seq_dir.name, [str(p) for p in images], gt, absent, folder_fps(source), "folder", True, attrs,
                    category=category_from_object(source.get("object"), seq_dir.name))


def load_folder(root: PathLike, only: Names = None, exclude: Names = None) -> list[Sequence]:
    """``root/<seq>/img/*.jpg`` + ``groundtruth.txt`` (+ optional ``source.json``), like
    ``../shared/data/sequences`` and ``data/extra``; ``root`` may be one such sequence folder.
    Hidden folders (assemble.py's ``.<name>.partial`` while it writes) are not sequences."""
    root = require_dir(root)
    if _is_folder_sequence(root):
        return [load_folder_sequence(root)]
    dirs = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and _is_folder_sequence(p)]
    if not dirs:
        raise DatasetError(f"{root}: no sequences (expected <seq>/img/*.jpg and <seq>/groundtruth.txt)")
    keep = NameFilter(only, exclude)
    return [load_folder_sequence(d) for d in dirs if keep(d.name)]


# ------------------------------------------------------------------------------------------ COCO


def _find_coco(root: Path, annotation_file: Optional[PathLike], image_dir: Optional[PathLike]) -> tuple[Path, Path]:
    if root.is_file() and root.suffix == ".json":  # coco=path/to/instances_train2017.json
        annotation_file, root = root, root.parent.parent
    if annotation_file is None:
        found = sorted(root.glob("annotations/instances_*.json")) or sorted(root.glob("instances_*.json"))
        found = [f for f in found if "train" in f.name] or found
        if not found:
            raise DatasetError(f"COCO {root}: no annotations/instances_*.json (give the json path itself)")
        annotation_file = found[0]
    ann = Path(annotation_file)
    if image_dir is None:
        split = ann.stem.replace("instances_", "")
        for cand in (root / split, root / "images" / split, root / "images", ann.parent.parent / split):
            if cand.is_dir():
                image_dir = cand
                break
        else:
            raise DatasetError(f"COCO {root}: no image folder {split}/ or images/{split}/ next to {ann}")
    return ann, Path(image_dir)


def load_coco(
    root: PathLike,
    only: Names = None,
    exclude: Names = None,
    annotation_file: Optional[PathLike] = None,
    image_dir: Optional[PathLike] = None,
    min_size: float = 10.0,
    min_area_fraction: float = 0.001,
) -> list[Sequence]:
    """COCO ``annotations/instances_*.json`` and its image folder: every kept non-crowd annotation is
    a one-frame sequence ``<image id>:<annotation id>`` (still-image pairs by augmentation, as Siamese
    trackers train on COCO); objects of one image share a ``group``."""
    ann, images = _find_coco(Path(root).expanduser(), annotation_file, image_dir)
    with open(ann) as fh:
        data = json.load(fh)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{ann} is not a COCO instances file: no {key!r}")
    cats = {c["id"]: str(c["name"]).lower() for c in data["categories"]}
    imgs = {im["id"]: im for im in data["images"]}
    keep = NameFilter(only, exclude)
    seqs = []
    for a in data["annotations"]:
        if a.get("iscrowd", 0):
            continue  # crowd boxes cover many objects: no single target to track
        im = imgs.get(a["image_id"])
        if im is None:
            continue
        box = np.asarray(a["bbox"], dtype=np.float64).reshape(1, 4)
        w, h = float(box[0, 2]), float(box[0, 3])
        # Tiny boxes blow up to mush in a 127 px template; the same rule as pysot's COCO crop.
        if w < min_size or h < min_size or w * h < min_area_fraction * im["width"] * im["height"]:
            continue
        name = f"{im['id']}:{a['id']}"
        if keep(name):
            seqs.append(Sequence(name, [str(images / im["file_name"])], box, np.zeros(1, bool), None, "coco", True, {},
                                 category=cats.get(a["category_id"]), group=str(im["id"])))
    return seqs


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
    "coco": load_coco,
}


def detect_benchmark(root: PathLike) -> str:
    """Guess the layout of ``root`` from the files each benchmark is known by."""
    root = require_dir(root)
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
    raise DatasetError(f"{root}: cannot tell which benchmark this is; pass --benchmark {{{','.join(BENCHMARKS)}}}")


def _loader(fmt: str) -> Callable[..., list[Sequence]]:
    if fmt not in LOADERS:
        raise DatasetError(f"unknown benchmark {fmt!r}; expected one of {', '.join(FORMATS)}")
    return LOADERS[fmt]


def _load(fmt: str, root: PathLike, only: Names, exclude: Names, **options) -> list[Sequence]:
    """The sequences of ``fmt`` at ``root``; every ``only`` name or glob must name one of them."""
    only_list = None if only is None else list(only)
    seqs = _loader(fmt)(root, only=only_list, exclude=exclude, **options)
    if only_list is not None:
        missing = NameFilter(only_list).unmatched(s.name for s in seqs)
        if missing:
            available = sorted(s.name for s in LOADERS[fmt](root, **options))
            shown = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "")
            raise DatasetError(f"no sequence named {', '.join(missing)} in {root} ({fmt}); available: {shown}")
    if not seqs:
        raise DatasetError(f"{root}: no usable {fmt} sequence (only={only_list}, exclude={exclude})")
    return seqs


def load_sequences(root: PathLike, benchmark: Optional[str] = None, only: Names = None, exclude: Names = None,
                   **options) -> list[Sequence]:
    """Evaluation's entry point: the sequences under ``root`` (format detected when not given), in
    the order ``only`` names them; an ``only`` name that matches nothing is an error."""
    root = require_dir(root)
    benchmark = benchmark or detect_benchmark(root)
    seqs = _load(benchmark, root, only, exclude, **options)
    if only is not None:
        keep = NameFilter(only)
        seqs.sort(key=lambda s: keep.order(s.name))
    return seqs


def make_dataset(kind: str, path: PathLike, name: Optional[str] = None, only: Names = None, exclude: Names = None,
                 **options) -> TrackingDataset:
    """Training's entry point: a named dataset of format ``kind`` (any of FORMATS) at ``path``, in the
    layout's order, without the sequences that have no frame to train on.  LaSOT's test split
    (``testing_set.txt``) is left out unless ``split=`` says otherwise."""
    _loader(kind)
    if kind == "lasot":
        options.setdefault("split", "train")
    if kind != "coco":  # COCO's root may be the instances json itself
        require_dir(path, f"{kind} root")
    seqs = _load(kind, path, only, exclude, **options)
    root = Path(path)
    return named_dataset(name or (f"folder:{root.name}" if kind == "folder" else kind), seqs, kind, str(root))


def named_dataset(name: str, sequences: list[Sequence], kind: str, where: str) -> TrackingDataset:
    """A TrackingDataset of the sequences that have a frame to train on (the others are logged)."""
    kept = [s for s in sequences if s.visible.any()]
    if len(kept) < len(sequences):
        log.info("%s %s: dropped %d sequences without a visible frame", kind, where, len(sequences) - len(kept))
    if not kept:
        raise DatasetError(f"{kind} at {where}: no usable sequence found (see cract_core/datasets/__init__.py for the layout)")
    return TrackingDataset(name, kept, kind)
