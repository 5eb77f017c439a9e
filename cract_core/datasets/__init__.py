"""Tracking data for training and evaluation: one Sequence type, one loader per on-disk format, named splits.

    from cract_core.datasets import DataLocations, load_sequences, load_split, make_dataset, split_dataset
    seqs = load_sequences("/data/OTB100")                       # evaluation: list[Sequence], format detected
    ds = make_dataset("got10k", "/data/GOT-10k/train")          # training: a named TrackingDataset
    val = load_split("validation", DataLocations.resolve())     # the project's splits (splits.py)
    train = split_dataset("train", DataLocations.resolve())

A :class:`Sequence` has frame paths (``frames``: a list, or a :class:`FramePattern` that makes them
on demand for GOT-10k, LaSOT and TrackingNet), ``groundtruth`` ``(N, 4)`` ``x, y, w, h`` in the
benchmark's own coordinates with NaN rows where no box is known, the benchmark's ``absent`` flags
(not scored), the derived ``visible`` mask (what training samples), ``fps``, ``has_groundtruth``,
``category``/``group`` (hard negatives), ``attrs`` (``notes`` on what a loader had to fix up),
``image(i)`` (BGR), ``head(n)`` and ``init_box``.  Errors are :class:`DatasetError` (a ValueError)
naming the file; a root, sequence or file that is not there is :class:`MissingDataError` (also a
FileNotFoundError).

Layouts (``root`` is what ``--sequences`` / ``--data NAME=`` points at):

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
               ``full_occlusion.txt``, ``out_of_view.txt`` (absent = either; 0/1 flags in one
               comma separated line); ``testing_set.txt`` at the root, when there, is the test
               split (evaluation runs it, training leaves it out).  ``root`` may also be one
               class folder.  The class is the category.
got10k         ``root/list.txt`` (optional), ``root/<seq>/00000001.jpg``, ``groundtruth.txt``
               (train/val: every frame; test: only the first, ``has_groundtruth`` False),
               ``absence.label`` (1 = absent), ``cover.label`` (0 = fully occluded),
               ``meta_info.ini`` (``object_class``: the category).  ``root`` may be the folder
               that holds ``train/``.
trackingnet    ``root/TRAIN_<i>/anno/<seq>.txt`` + ``root/TRAIN_<i>/frames/<seq>/<k>.jpg`` (k from 0;
               names ``TRAIN_<i>/<seq>``), or ``root/TEST/...`` / ``TEST`` itself with only the
               first box (test split; names ``<seq>``).
vot            ``root/list.txt``, ``root/<seq>/color/00000001.jpg`` (or images in ``<seq>/``),
               ``groundtruth.txt`` with polygons ``x1,y1,...,x4,y4`` or rectangles; polygons
               become the axis-aligned min/max rectangle, the VOT toolkit's conversion.
folder         ``root/<seq>/img/*.jpg`` + ``groundtruth.txt`` (+ optional ``source.json``: fps, the
               object kind), like ``../shared/data/sequences`` and the assembled ``data/extra``;
               ``root`` may be one such sequence folder.  NaN rows are absent frames.
coco           (training only) ``instances_*.json`` and its image folder: every non-crowd
               annotation is a one-frame sequence; the objects of one image share a ``group``.
=============  ==========================================================================
"""
from cract_core.datasets.formats import (
    BENCHMARKS,
    FORMATS,
    LOADERS,
    OTB_FRAME_RANGES,
    OTB_INIT_OMIT,
    UAV123_SUBSEQUENCE_START,
    detect_benchmark,
    folder_fps,
    load_coco,
    load_folder,
    load_folder_sequence,
    load_got10k,
    load_lasot,
    load_nfs,
    load_otb,
    load_sequences,
    load_trackingnet,
    load_uav123,
    load_vot,
    make_dataset,
    polygon_to_box,
)
from cract_core.datasets.sequence import (
    DatasetError,
    FramePattern,
    MissingDataError,
    Sequence,
    TrackingDataset,
    category_from_name,
    list_images,
    read_boxes,
    read_flags,
)
from cract_core.datasets.splits import (
    ENV_EXTRA_DATA,
    ENV_SHARED_DATA,
    SPLITS,
    VALIDATION4,
    DataLocations,
    SplitMember,
    load_named_sequences,
    load_split,
    read_manifest,
    split_dataset,
    split_from_spec,
    split_members,
    split_names,
)

__all__ = [
    "BENCHMARKS", "FORMATS", "LOADERS", "OTB_FRAME_RANGES", "OTB_INIT_OMIT", "UAV123_SUBSEQUENCE_START",
    "detect_benchmark", "folder_fps", "load_coco", "load_folder", "load_folder_sequence", "load_got10k",
    "load_lasot", "load_nfs", "load_otb", "load_sequences", "load_trackingnet", "load_uav123", "load_vot",
    "make_dataset", "polygon_to_box",
    "DatasetError", "FramePattern", "MissingDataError", "Sequence", "TrackingDataset", "category_from_name",
    "list_images", "read_boxes", "read_flags",
    "ENV_EXTRA_DATA", "ENV_SHARED_DATA", "SPLITS", "VALIDATION4", "DataLocations", "SplitMember", "load_named_sequences", "load_split",
    "read_manifest", "split_dataset", "split_from_spec", "split_members", "split_names",
]
