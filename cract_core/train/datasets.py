"""Training datasets in their real on-disk formats, as one kind of object: a list of sequences.

Every loader gives :class:`Sequence` objects (frame paths, ``xywh`` boxes in the benchmark's own
coordinates, a visible mask, an object category when the format knows one).  Frame paths are made
on demand from a pattern so that GOT-10k's 1.4 M frames or TrackingNet's 14 M do not sit in memory
as strings.

Layouts (what each loader expects under its root):

* GOT-10k train ``<root>/list.txt`` (optional; else every folder), ``<root>/<seq>/00000001.jpg``,
  ``groundtruth.txt`` (x,y,w,h), ``absence.label`` (1 = absent), optional ``cut_by_image.label``,
  ``cover.label`` (0 = fully covered), ``meta_info.ini`` (``object_class: ...``).
  ``<root>`` may also be the dataset folder that holds ``train/``.
* LaSOT ``<root>/<class>/<class>-<n>/img/00000001.jpg``, ``groundtruth.txt``,
  ``full_occlusion.txt`` and ``out_of_view.txt`` (one comma separated line of 0/1 flags).
* TrackingNet ``<root>/TRAIN_<i>/anno/<seq>.txt`` and ``<root>/TRAIN_<i>/frames/<seq>/<k>.jpg`` (k from 0).
* COCO ``instances_*.json`` and its image folder: every non-crowd annotation is a one-frame
  "sequence" (still-image pairs by augmentation, as Siamese trackers train on COCO).
* Folder (OTB-style) ``<root>/<seq>/img/*.jpg`` + ``<root>/<seq>/groundtruth.txt`` (comma, tab or
  space separated), such as ``../shared/data/sequences``; include/exclude lists pick sequences.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence as Seq, Union

import numpy as np

from cract_core.annotations import read_box_rows, read_flags

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

# The suggested validation split of ../shared/data/README.md: never trained on.
VALIDATION_SEQUENCES: tuple[str, ...] = ("otb_bird2", "otb_woman", "uav_boat5", "uav_person11")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class DatasetError(ValueError):
    """A dataset root or annotation file that does not have the expected layout."""


@dataclass
class Sequence:
    """One annotated sequence: ``frames[i]`` shows ``boxes[i]`` (xywh), usable where ``visible[i]``."""

    name: str
    boxes: np.ndarray  # (N, 4) float32 xywh
    visible: np.ndarray  # (N,) bool
    frame_path: Callable[[int], str] = field(repr=False)
    category: Optional[str] = None
    dataset: str = ""
    # Frames of one still image share a group (COCO: the image id) so that other objects of the
    # same image can serve as distractor negatives.
    group: Optional[str] = None

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def visible_indices(self) -> np.ndarray:
        return np.flatnonzero(self.visible)


class _Pattern:
    """Picklable frame-path maker (DataLoader workers pickle datasets; lambdas do not pickle)."""

    def __init__(self, folder: str, fmt: str, start: int) -> None:
        self.folder, self.fmt, self.start = folder, fmt, start

    def __call__(self, i: int) -> str:
        return f"{self.folder}/{self.fmt.format(i + self.start)}"


class _List:
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __call__(self, i: int) -> str:
        return self.paths[i]


def read_boxes(path: PathLike) -> np.ndarray:
    """An (N, 4) float32 array from a groundtruth file separated by commas, tabs or spaces.

    Lines like ``NaN,NaN,NaN,NaN`` (UAV123 marks absent frames so) become NaN rows; callers mark them
    invisible.  A line that is not four numbers is an error naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"annotation file {path} does not exist")
    boxes = read_box_rows(path, 4, DatasetError)
    if not len(boxes):
        raise DatasetError(f"annotation file {path} is empty")
    return boxes.astype(np.float32)


def _read_flags(path: Path, n: int) -> Optional[np.ndarray]:
    """0/1 flags, one a line (GOT-10k) or one comma separated line (LaSOT); None when absent."""
    flags = read_flags(path)
    if flags is not None and len(flags) < n:
        raise DatasetError(f"{path} has {len(flags)} flags for {n} boxes")
    return None if flags is None else flags[:n]


def _valid_boxes(boxes: np.ndarray, min_size: float = 2.0) -> np.ndarray:
    return np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] >= min_size) & (boxes[:, 3] >= min_size)


def _finish(seqs: list[Sequence], root: Path, kind: str) -> list[Sequence]:
    kept = [s for s in seqs if s.visible.any()]
    if len(kept) < len(seqs):
        log.info("%s %s: dropped %d sequences without a visible frame", kind, root, len(seqs) - len(kept))
    if not kept:
        raise DatasetError(f"{kind} at {root}: no usable sequence found (see cract_core/train/datasets.py for the layout)")
    return kept


class TrackingDataset:
    """A named list of sequences; subclasses only parse their format in ``__init__``."""

    kind = "dataset"

    def __init__(self, name: str, sequences: list[Sequence]) -> None:
        self.name = name
        self.sequences = sequences
        for s in sequences:
            s.dataset = name

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> Sequence:
        return self.sequences[i]

    def __repr__(self) -> str:
        frames = sum(len(s) for s in self.sequences)
        return f"{type(self).__name__}({self.name!r}, {len(self.sequences)} sequences, {frames} frames)"


def _require_dir(root: PathLike, kind: str, layout: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{kind} root {root} is not a folder; expected {layout}")
    return root


def _matches(name: str, patterns: Optional[Iterable[str]]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns or ())


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


def _folder_category(folder: Path) -> str:
    """The object kind: source.json's "object" (shared/data writes one) or else the folder name."""
    meta = folder / "source.json"
    if meta.is_file():
        try:
            obj = json.loads(meta.read_text()).get("object")
        except (ValueError, AttributeError):
            obj = None
        if isinstance(obj, str) and obj.strip():
            word = re.match(r"[a-z]+", obj.strip().lower())
            if word:
                return _CATEGORY_SYNONYMS.get(word.group(0), word.group(0))
    return category_from_name(folder.name)


class FolderDataset(TrackingDataset):
    """OTB-style folders: ``<root>/<seq>/img/*.jpg`` + ``groundtruth.txt`` (or one sequence folder)."""

    kind = "folder"

    def __init__(
        self,
        root: PathLike,
        include: Optional[Seq[str]] = None,
        exclude: Optional[Seq[str]] = None,
        name: Optional[str] = None,
    ) -> None:
        root = _require_dir(root, "folder", "<root>/<sequence>/img/*.jpg and <root>/<sequence>/groundtruth.txt")
        if (root / "groundtruth.txt").is_file():  # the root is itself one sequence
            candidates = [root]
        else:
            candidates = sorted(p for p in root.iterdir() if p.is_dir())
        if include:
            unknown = [p for p in include if not any(fnmatch.fnmatchcase(c.name, p) for c in candidates)]
            if unknown:
                raise DatasetError(f"folder {root}: --include names no sequence: {unknown}")
        seqs = []
        for folder in candidates:
            if include and not _matches(folder.name, include):
                continue
            if _matches(folder.name, exclude):
                continue
            gt = folder / "groundtruth.txt"
            img = folder / "img" if (folder / "img").is_dir() else folder
            if not gt.is_file():
                log.info("folder %s: skipping %s (no groundtruth.txt)", root, folder.name)
                continue
            frames = sorted(str(p) for p in img.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            boxes = read_boxes(gt)
            if not frames:
                raise DatasetError(f"{folder}: no images in {img}")
            n = min(len(frames), len(boxes))
            if len(frames) != len(boxes):
                log.warning("%s: %d frames but %d boxes; using the first %d", folder, len(frames), len(boxes), n)
            boxes = boxes[:n]
            seqs.append(Sequence(folder.name, boxes, _valid_boxes(boxes), _List(frames[:n]), _folder_category(folder)))
        if not seqs:
            raise DatasetError(f"folder {root}: no sequence left after include={include} exclude={exclude}")
        super().__init__(name or f"folder:{root.name}", _finish(seqs, root, "folder"))


class Got10kDataset(TrackingDataset):
    kind = "got10k"

    def __init__(self, root: PathLike, name: str = "got10k", sequences: Optional[Seq[str]] = None) -> None:
        root = _require_dir(root, "GOT-10k", "<root>/list.txt and <root>/GOT-10k_Train_*/groundtruth.txt")
        if not (root / "list.txt").is_file() and (root / "train").is_dir():
            root = root / "train"
        listing = root / "list.txt"
        if sequences is not None:
            names = list(sequences)
        elif listing.is_file():
            names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
        else:
            names = sorted(p.name for p in root.iterdir() if (p / "groundtruth.txt").is_file())
        if not names:
            raise DatasetError(f"GOT-10k {root}: no sequences (no list.txt and no */groundtruth.txt)")
        seqs = []
        for seq in names:
            folder = root / seq
            boxes = read_boxes(folder / "groundtruth.txt")
            visible = _valid_boxes(boxes)
            absent = _read_flags(folder / "absence.label", len(boxes))
            if absent is not None:
                visible &= absent == 0
            cover = _read_flags(folder / "cover.label", len(boxes))
            if cover is not None:  # 0 = fully covered: nothing to learn from
                visible &= cover > 0
            seqs.append(Sequence(seq, boxes, visible, _Pattern(str(folder), "{:08d}.jpg", 1), _got_class(folder)))
        super().__init__(name, _finish(seqs, root, "GOT-10k"))


def _got_class(folder: Path) -> Optional[str]:
    meta = folder / "meta_info.ini"
    if not meta.is_file():
        return None
    for line in meta.read_text(errors="replace").splitlines():
        if line.strip().startswith("object_class:"):
            return line.split(":", 1)[1].strip().lower() or None
    return None


class LasotDataset(TrackingDataset):
    kind = "lasot"

    def __init__(
        self,
        root: PathLike,
        name: str = "lasot",
        exclude: Optional[Seq[str]] = None,
        include: Optional[Seq[str]] = None,
    ) -> None:
        root = _require_dir(root, "LaSOT", "<root>/<class>/<class>-<n>/img/*.jpg and groundtruth.txt")
        seqs = []
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for folder in sorted(p for p in class_dir.iterdir() if p.is_dir()):
                if include and not _matches(folder.name, include):
                    continue
                if _matches(folder.name, exclude) or not (folder / "groundtruth.txt").is_file():
                    continue
                boxes = read_boxes(folder / "groundtruth.txt")
                visible = _valid_boxes(boxes)
                for flag_file in ("full_occlusion.txt", "out_of_view.txt"):
                    flags = _read_flags(folder / flag_file, len(boxes))
                    if flags is not None:
                        visible &= flags == 0
                pattern = _Pattern(str(folder / "img"), "{:08d}.jpg", 1)
                seqs.append(Sequence(folder.name, boxes, visible, pattern, class_dir.name.lower()))
        if not seqs:
            raise DatasetError(f"LaSOT {root}: no <class>/<class>-<n>/groundtruth.txt found")
        super().__init__(name, _finish(seqs, root, "LaSOT"))


class TrackingNetDataset(TrackingDataset):
    kind = "trackingnet"

    def __init__(self, root: PathLike, name: str = "trackingnet", chunks: Optional[Seq[int]] = None) -> None:
        root = _require_dir(root, "TrackingNet", "<root>/TRAIN_<i>/anno/<seq>.txt and <root>/TRAIN_<i>/frames/<seq>/<k>.jpg")
        chunk_dirs = sorted(p for p in root.glob("TRAIN_*") if p.is_dir())
        if chunks is not None:
            chunk_dirs = [p for p in chunk_dirs if int(p.name.split("_")[1]) in set(chunks)]
        if not chunk_dirs:
            raise DatasetError(f"TrackingNet {root}: no TRAIN_<i> folders")
        seqs = []
        for chunk in chunk_dirs:
            for anno in sorted((chunk / "anno").glob("*.txt")):
                boxes = read_boxes(anno)
                pattern = _Pattern(str(chunk / "frames" / anno.stem), "{}.jpg", 0)
                seqs.append(Sequence(f"{chunk.name}/{anno.stem}", boxes, _valid_boxes(boxes), pattern, None))
        super().__init__(name, _finish(seqs, root, "TrackingNet"))


class CocoDataset(TrackingDataset):
    """COCO-style detection data: each kept annotation becomes a one-frame sequence."""

    kind = "coco"

    def __init__(
        self,
        root: PathLike,
        name: str = "coco",
        annotation_file: Optional[PathLike] = None,
        image_dir: Optional[PathLike] = None,
        min_size: float = 10.0,
        min_area_fraction: float = 0.001,
    ) -> None:
        root = Path(root).expanduser()
        ann, images = _find_coco(root, annotation_file, image_dir)
        with open(ann) as fh:
            data = json.load(fh)
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise DatasetError(f"{ann} is not a COCO instances file: no {key!r}")
        cats = {c["id"]: str(c["name"]).lower() for c in data["categories"]}
        imgs = {im["id"]: im for im in data["images"]}
        seqs = []
        for a in data["annotations"]:
            if a.get("iscrowd", 0):
                continue  # crowd boxes cover many objects: no single target to track
            im = imgs.get(a["image_id"])
            if im is None:
                continue
            box = np.asarray(a["bbox"], dtype=np.float32).reshape(1, 4)
            w, h = float(box[0, 2]), float(box[0, 3])
            # Tiny boxes blow up to mush in a 127 px template; the same rule as pysot's COCO crop.
            if w < min_size or h < min_size or w * h < min_area_fraction * im["width"] * im["height"]:
                continue
            path = str(images / im["file_name"])
            seqs.append(
                Sequence(
                    f"{im['id']}:{a['id']}", box, np.ones(1, bool), _List([path]), cats.get(a["category_id"]),
                    group=str(im["id"]),
                )
            )
        super().__init__(name, _finish(seqs, root, "COCO"))


def _find_coco(root: Path, annotation_file: Optional[PathLike], image_dir: Optional[PathLike]) -> tuple[Path, Path]:
    if root.is_file() and root.suffix == ".json":  # NAME=path/to/instances_train2017.json
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


DATASET_KINDS = {
    "got10k": Got10kDataset,
    "lasot": LasotDataset,
    "trackingnet": TrackingNetDataset,
    "coco": CocoDataset,
    "folder": FolderDataset,
}


def make_dataset(kind: str, path: PathLike, **kwargs) -> TrackingDataset:
    """Build a dataset by its CLI name (got10k, lasot, trackingnet, coco, folder)."""
    try:
        cls = DATASET_KINDS[kind]
    except KeyError:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {sorted(DATASET_KINDS)}") from None
    return cls(path, **kwargs)
