"""The absence protocol: sequences cut away to another scene and back, and what a tracker says meanwhile.

Splicing (:func:`splice_with_absence`): the host sequence's first ``k`` frames, then ``gap``
frames of a donor sequence (another sequence of the same split, each frame resized to the host's
image size), then the host's remaining frames.  The donor's frames get NaN ground-truth rows: the
target is absent there, and a NaN row counts as absent everywhere (metrics.valid_frames, the
loaders' convention).  Donor frames are taken from the donor's start; a donor shorter than
``gap`` is repeated from its start again.  Frame ``k + gap`` of the spliced sequence is the
*return*: the first host frame after the cut.

Pairing (:func:`absence_runs`): sequences sorted by name; host ``i`` gets the donor ``i + 1``
(cyclically), and with ``scenes=2`` a second run with the donor ``i + 2``: two different
cut-away scenes per sequence, 2 x N runs from N sequences.  Run names are
``<host>+cut_<donor>``.  ``k`` defaults to a third of the host (at least 1 frame, leaving at least
one frame after the return).

Per run (:func:`score_absence_run`), frames 1.. (frame 0 initialises the tracker):

* ``absent_not_tracking``: share of absent frames (no ground-truth box) whose reported state is
  not TRACKING (cract: LOW_CONFIDENCE or LOST; OpenCV trackers: see trackers.py).
* ``present_tracking``: share of present frames reported TRACKING.
* ``refind_frames``: after the return, the number of frames before the first present frame whose
  box overlaps the ground truth with IoU > :data:`REFIND_IOU` (0 = found on the very first frame
  back).  A run that never re-finds counts the frames from the return to the end (one more than
  any run that does re-find could count) and is flagged ``refound: false``.
* VOT-LT precision / recall / F (longterm.py) with the tracker's confidence per frame, where a
  tracker gives none its TRACKING flag as 0 / 1 (CSRT, KCF, MIL); a frame without a box has no
  prediction.
* ``auc_present``: the success AUC over present frames only (metrics.score_sequence, "exclude").
* ``iou_before_cut``: the IoU on the last host frame before the cut; at most REFIND_IOU means the
  tracker had lost the target before it was cut away, so a slow re-find there is not the cut's.

Over runs: the two shares pool frames (every absent / present frame of every run counts once),
``refind_frames`` is the median over runs (``lost_before_cut`` counts the runs whose
``iou_before_cut`` is at most REFIND_IOU), LT precision / recall / F follow VOT-LT (per-run
curves averaged per threshold, longterm.longterm_pr_curves), ``auc_present`` is the mean over runs.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from cract_core.datasets import Sequence
from cract_core.eval import longterm, metrics

DEFAULT_GAP = 30
DEFAULT_SCENES = 2
REFIND_IOU = 0.3
TRACKING = "TRACKING"


@dataclass
class SplicedSequence(Sequence):
    """A Sequence whose frames flagged in ``foreign`` come from another scene, resized to ``host_size``.

    ``host_size`` is (width, height); ``return_index`` the first host frame after the cut."""

    foreign: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    host_size: tuple[int, int] = (0, 0)
    return_index: int = 0
    host: str = ""
    donor: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.foreign = np.asarray(self.foreign, dtype=bool).reshape(-1)
        if len(self.foreign) != len(self.frames):
            raise ValueError(f"sequence {self.name}: {len(self.foreign)} foreign flags for {len(self.frames)} frames")

    def image(self, index: int) -> np.ndarray:
        img = super().image(index)
        w, h = self.host_size
        if self.foreign[index] and img.shape[1::-1] != (w, h):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        return img

    def image_size(self) -> tuple[int, int]:
        return self.host_size

    def head(self, max_frames: Optional[int]) -> "SplicedSequence":
        if max_frames is None or max_frames >= len(self):
            return self
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        return dataclasses.replace(
            self, frames=list(self.frames[:max_frames]), groundtruth=self.groundtruth[:max_frames],
            absent=self.absent[:max_frames], foreign=self.foreign[:max_frames],
            attrs=dict(self.attrs, truncated_to=max_frames),
        )


def default_k(n_frames: int) -> int:
    """A third of the host's frames, at least 1, and at least one frame left after the cut."""
    return int(min(max(1, round(n_frames / 3)), max(1, n_frames - 1)))


def splice_with_absence(host: Sequence, donor: Sequence, k: Optional[int] = None, gap: int = DEFAULT_GAP,
                        name: Optional[str] = None) -> SplicedSequence:
    """host[:k] + gap donor frames (NaN ground truth, resized to the host) + host[k:] (module docstring)."""
    n = len(host)
    k = default_k(n) if k is None else int(k)
    if n < 2:
        raise ValueError(f"host {host.name} has {n} frame(s); splicing needs at least 2")
    if not 1 <= k < n:
        raise ValueError(f"k must be in 1..{n - 1} for host {host.name} ({n} frames), got {k}")
    if gap < 1:
        raise ValueError(f"gap must be >= 1, got {gap}")
    if len(donor) < 1:
        raise ValueError(f"donor {donor.name} has no frames")
    host_frames = [host.frame_path(i) for i in range(n)]
    donor_frames = [donor.frame_path(j % len(donor)) for j in range(gap)]
    frames = host_frames[:k] + donor_frames + host_frames[k:]
    nan_rows = np.full((gap, 4), np.nan)
    gt = np.concatenate([host.groundtruth[:k], nan_rows, host.groundtruth[k:]])
    absent = np.concatenate([host.absent[:k], np.ones(gap, dtype=bool), host.absent[k:]])
    foreign = np.concatenate([np.zeros(k, dtype=bool), np.ones(gap, dtype=bool), np.zeros(n - k, dtype=bool)])
    return SplicedSequence(
        name=name or f"{host.name}+cut_{donor.name}", frames=frames, groundtruth=gt, absent=absent,
        fps=host.fps, benchmark=host.benchmark, has_groundtruth=host.has_groundtruth,
        attrs=dict(host.attrs, absence={"host": host.name, "donor": donor.name, "k": k, "gap": gap}),
        category=host.category, dataset=host.dataset,
        foreign=foreign, host_size=host.image_size(), return_index=k + gap, host=host.name, donor=donor.name,
    )


def absence_runs(sequences: list[Sequence], k: Optional[int] = None, gap: int = DEFAULT_GAP,
                 scenes: int = DEFAULT_SCENES) -> list[SplicedSequence]:
    """Every sequence spliced with the next ``scenes`` sequences in name order (cyclic) as donors."""
    seqs = sorted(sequences, key=lambda s: s.name)
    if len(seqs) < 2:
        raise ValueError("the absence protocol needs at least 2 sequences (one is cut away to another)")
    if not 1 <= scenes < len(seqs):
        raise ValueError(f"scenes must be in 1..{len(seqs) - 1} for {len(seqs)} sequences, got {scenes}")
    # Two sequences of one footage (OTB's Jogging-1 and -2: the same images, another target each)
    # are never each other's cut-away: the "absent" target would be in view.
    footage = [_first_frame_digest(s) for s in seqs]
    out = []
    for i, host in enumerate(seqs):
        kk = None if k is None else min(int(k), len(host) - 1)  # a short host keeps one frame after the cut
        donors = [seqs[(i + step) % len(seqs)] for step in range(1, len(seqs))
                  if footage[(i + step) % len(seqs)] != footage[i]][:scenes]
        if len(donors) < scenes:
            raise ValueError(f"{host.name}: only {len(donors)} other footage(s) to cut away to, {scenes} asked for")
        out.extend(splice_with_absence(host, donor, kk, gap) for donor in donors)
    return out


def _first_frame_digest(sequence: Sequence) -> str:
    """What tells one footage from another: the bytes of its first frame (copies under other names
    or paths are the same footage)."""
    return hashlib.sha256(Path(sequence.frame_path(0)).read_bytes()).hexdigest()


def refind_frames(ious: np.ndarray, present: np.ndarray, return_index: int,
                  threshold: float = REFIND_IOU) -> tuple[int, bool]:
    """(frames from the return to the first present frame with IoU > threshold, re-found?);
    never re-found: (frames from the return to the end, False)."""
    iou = np.nan_to_num(np.asarray(ious, dtype=np.float64).reshape(-1), nan=0.0)
    pres = np.asarray(present, dtype=bool).reshape(-1)
    hit = np.flatnonzero((iou[return_index:] > threshold) & pres[return_index:])
    if hit.size:
        return int(hit[0]), True
    return int(len(iou) - return_index), False


def lt_confidences(confidences: np.ndarray, tracking: np.ndarray, has_box: np.ndarray) -> np.ndarray:
    """The confidence the LT measures use: the tracker's own where it gives one, else its TRACKING
    flag as 1 / 0; NaN (no prediction) where it reported no box."""
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1).copy()
    flag = np.asarray(tracking, dtype=bool).reshape(-1).astype(np.float64)
    conf = np.where(np.isfinite(conf), conf, flag)
    conf[~np.asarray(has_box, dtype=bool).reshape(-1)] = np.nan
    return conf


@dataclass
class AbsenceRun:
    """One run's per-frame arrays (frames 1..) and its scores."""

    ious: np.ndarray
    confidences: np.ndarray  # the LT confidence (lt_confidences)
    present: np.ndarray
    tracking: np.ndarray
    refind_frames: int
    refound: bool
    auc_present: Optional[float]
    iou_before_cut: float = float("nan")

    def as_dict(self) -> dict:
        absent = ~self.present
        f, p, r, t = longterm.longterm_f(self.ious, self.confidences, self.present)
        return {
            "absent_frames": int(absent.sum()),
            "present_frames": int(self.present.sum()),
            "absent_not_tracking": _share(~self.tracking[absent]),
            "present_tracking": _share(self.tracking[self.present]),
            "refind_frames": self.refind_frames,
            "refound": self.refound,
            "lt_f": f, "lt_precision": p, "lt_recall": r, "lt_threshold": _finite(t),
            "auc_present": self.auc_present,
            "iou_before_cut": _finite(self.iou_before_cut),
        }


def _share(mask: np.ndarray) -> Optional[float]:
    return float(np.mean(mask)) if mask.size else None


def _finite(x: float) -> Optional[float]:
    return float(x) if np.isfinite(x) else None


def score_absence_run(boxes: np.ndarray, confidences: np.ndarray, states: list[str], seq: SplicedSequence) -> AbsenceRun:
    """Score one spliced run: boxes (N, 4) with row 0 the init box, confidences (N,), states (N,)
    (state names; row 0 is the initialisation and ignored)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    gt = seq.groundtruth
    present_all = metrics.valid_frames(gt, seq.absent)
    iou_all = np.nan_to_num(metrics.frame_iou(boxes, gt), nan=0.0)
    iou_all[~present_all] = 0.0
    tracking_all = np.array([s == TRACKING for s in states], dtype=bool)
    has_box = metrics.valid_boxes(boxes)
    conf_all = lt_confidences(confidences, tracking_all, has_box)
    n_re, found = refind_frames(iou_all, present_all, seq.return_index)
    sc = metrics.score_sequence(boxes, gt, seq.absent, "exclude")
    cut = int(np.flatnonzero(seq.foreign)[0]) if seq.foreign.any() else seq.return_index
    before = float(iou_all[cut - 1]) if cut >= 1 and present_all[cut - 1] else float("nan")
    return AbsenceRun(iou_all[1:], conf_all[1:], present_all[1:], tracking_all[1:], n_re, found,
                      _finite(sc.auc) if sc.evaluated_frames > 0 else None, before)


def summarize_runs(runs: list[AbsenceRun]) -> dict:
    """The tracker's absence figures over runs (pooling rules in the module docstring), with the
    mean PR curve for the plot."""
    if not runs:
        return {}
    absent = np.concatenate([~r.tracking[~r.present] for r in runs])
    present = np.concatenate([r.tracking[r.present] for r in runs])
    curve = longterm.longterm_pr_curves([(r.ious, r.confidences, r.present) for r in runs])
    f, p, rc, t = longterm.best_f(curve)
    aucs = [r.auc_present for r in runs if r.auc_present is not None]
    return {
        "runs": len(runs),
        "absent_frames": int(absent.size),
        "present_frames": int(present.size),
        "absent_not_tracking": _share(absent),
        "present_tracking": _share(present),
        "refind_frames_median": float(np.median([r.refind_frames for r in runs])),
        "never_refound": int(sum(not r.refound for r in runs)),
        "lost_before_cut": int(sum(bool(r.iou_before_cut <= REFIND_IOU) for r in runs)),
        "lt_f": f, "lt_precision": p, "lt_recall": rc, "lt_threshold": _finite(t),
        "auc_present": float(np.mean(aucs)) if aucs else None,
        "lt_curve": {"precision": curve["precision"].round(6).tolist(), "recall": curve["recall"].round(6).tolist(),
                     "thresholds": [_finite(x) for x in curve["thresholds"]]},
    }


def _cell(v: Optional[float], fmt: str, width: int) -> str:
    return (format(v, fmt) if v is not None else "-").rjust(width)


def format_table(summary: dict) -> str:
    """The absence protocol's table: one row per tracker (summary["trackers"][name]["mean"])."""
    nw = max([28] + [len(n) for n in summary["trackers"]])
    head = (f"{'tracker (absence protocol)':<{nw}} {'runs':>4} {'absent!TRK':>10} {'presentTRK':>10} "
            f"{'refind p50':>10} {'never':>5} {'lost<cut':>8} {'LT-P':>6} {'LT-R':>6} {'LT-F':>6} {'thr':>6} {'AUCpres':>7}")
    lines = [head, "-" * len(head)]
    for name, t in summary["trackers"].items():
        m = t["mean"]
        lines.append(
            f"{name:<{nw}} {m.get('runs', 0):>4} {_cell(m.get('absent_not_tracking'), '.3f', 10)} "
            f"{_cell(m.get('present_tracking'), '.3f', 10)} {_cell(m.get('refind_frames_median'), '.1f', 10)} "
            f"{m.get('never_refound', 0):>5} {m.get('lost_before_cut', 0):>8} {_cell(m.get('lt_precision'), '.3f', 6)} {_cell(m.get('lt_recall'), '.3f', 6)} "
            f"{_cell(m.get('lt_f'), '.3f', 6)} {_cell(m.get('lt_threshold'), '.3f', 6)} {_cell(m.get('auc_present'), '.3f', 7)}"
        )
    a = summary.get("absence", {})
    lines.append(f"(absent!TRK: share of absent frames not reported TRACKING; presentTRK: share of present frames "
                 f"reported TRACKING; refind p50: median frames after the return until IoU > {a.get('refind_iou', REFIND_IOU)}, "
                 f"never: runs that never re-find; lost<cut: runs lost (IoU <= {a.get('refind_iou', REFIND_IOU)}) on the last frame before the cut; LT-P/R/F at the best threshold thr (VOT-LT); gap {a.get('gap')}, "
                 f"k {a.get('k') or 'a third of each sequence'})")
    return "\n".join(lines)


def describe_runs(runs: list[SplicedSequence]) -> dict:
    """Each run's splice, for summary.json (``absence.runs``): enough to rebuild the sequences."""
    return {r.name: {"host": r.host, "donor": r.donor, "k": r.return_index - int(r.foreign.sum()),
                     "gap": int(r.foreign.sum()), "return_index": r.return_index} for r in runs}
