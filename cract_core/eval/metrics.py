"""Tracking metrics, pure numpy, with the conventions of the benchmarks written down.

IoU and centre distance come from :mod:`cract_core.geometry` (the one owner of box maths).

One-pass evaluation (OTB, UAV123, NfS, LaSOT, our folders)
-----------------------------------------------------------
* Success curve: for IoU thresholds ``t = 0, 0.05, ..., 1`` (``np.linspace(0, 1, 21)``), the
  fraction of scored frames whose IoU is **strictly greater** than ``t``.  AUC is the mean of the
  21 values.  This is what the OTB MATLAB toolkit (``errCoverage > thresholdSetOverlap``),
  pysot, pytracking and the got10k toolkit all compute, and it has a quirk worth knowing: IoU
  can never exceed 1, so a tracker that is always exactly right scores **20/21 = 0.952**, not 1.
* Precision curve: the fraction of scored frames whose centre error is ``<= t`` pixels for
  ``t = 0, 1, ..., 50``; precision@20 is the value at 20 px.
* Normalized precision (TrackingNet, also reported on LaSOT): the centre error divided by the
  ground-truth width and height per axis, ``|| ((cx_p - cx_g) / w_g, (cy_p - cy_g) / h_g) ||``,
  the fraction ``<= t`` for ``t = 0, 0.01, ..., 0.5``, and the score is the mean of those 51
  values (the curve's area, as pytracking and the LaSOT toolkit report it).
* A prediction that is NaN, infinite or has zero/negative size counts IoU 0 and an infinite
  centre error: it fails every threshold.
* Frames where the ground truth is absent or unknown (NaN row, non-positive size, or flagged
  absent by the benchmark: UAV123 NaN rows, LaSOT full occlusion / out of view, GOT-10k
  absence / cover 0, NfS "lost") are left out of numerator and denominator
  (``convention="exclude"``, the default; LaSOT's and GOT-10k's own rule).
* ``convention="otb_toolkit"`` reproduces the original OTB/UAV123 MATLAB toolkit (and pysot)
  instead: an invalid prediction is replaced by the previous frame's prediction; frames with an
  invalid ground truth stay in the denominator with overlap -1 (a failure at every threshold) and
  centre error -1 (a *success* at every precision threshold).  Both conventions agree whenever
  every ground-truth box is valid and every prediction is a real box.
* The first frame (the initialisation) is scored, as the OTB toolkit does; ``skip_first=True``
  drops it (GOT-10k).

GOT-10k
-------
AO is the mean IoU and SR_t the fraction of IoU ``> t`` over frames 1.. (the first frame is
skipped) where the target is visible (cover > 0, not absent), with both boxes cut to the image
first (the got10k toolkit's ``bound``; the runner passes the image size for got10k and vot).  Over a set of sequences they are
frame-weighted (the got10k toolkit concatenates every frame's IoU), see :func:`got10k_scores`.

VOT (reset protocol, VOT2016-2018, Table 4 of the paper)
---------------------------------------------------------
The runner re-initialises the tracker 5 frames after a failure (IoU == 0 against a valid ground
truth).  Per frame it records a code: :data:`VOT_INIT` (the tracker was initialised here),
:data:`VOT_FAILURE`, :data:`VOT_SKIPPED` (between a failure and the re-initialisation) or
:data:`VOT_TRACKED`.

* Accuracy: mean IoU over tracked frames, leaving out ``burnin=10`` frames from every
  initialisation (the init frame and the 9 after it, as the VOT toolkit masks them) and frames
  with no ground truth.
* Robustness: failures per 100 frames, ``100 * failures / frames`` (pysot's figure, the scale
  of the VOT2018 tables); the raw failure count is reported as well.
* EAO: every initialisation starts a segment.  A segment that ends in a failure keeps its
  overlaps up to the failure and is padded with zeros to the longest sequence length; one that
  runs to the end of its sequence is padded with NaN (it says nothing about longer runs).  The
  expected overlap for length ``Ns`` is the mean over segments still defined at index ``Ns-1``
  of the mean overlap of frames ``1..Ns-1`` (the init frame is skipped, as pysot does), with
  ``curve[0] = 1``; EAO is the mean of the curve over ``[low, high]`` (1-based, inclusive;
  VOT2018: 100..356).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Optional, Sequence as Seq

import numpy as np

from cract_core import geometry

IOU_THRESHOLDS = np.linspace(0.0, 1.0, 21)
CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64)  # pixels
NORM_THRESHOLDS = np.arange(0, 51, dtype=np.float64) / 100.0  # 0 .. 0.5 of the target size
PRECISION_AT = 20.0

VOT_TRACKED = -1
VOT_SKIPPED = 0
VOT_INIT = 1
VOT_FAILURE = 2
VOT_SKIP_FRAMES = 5
VOT_BURNIN = 10
VOT2018_EAO_INTERVAL = (100, 356)

Convention = Literal["exclude", "otb_toolkit"]


def _boxes(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1, 4)


def valid_boxes(boxes: np.ndarray) -> np.ndarray:
    """True where a box is finite with positive width and height."""
    b = _boxes(boxes)
    with np.errstate(invalid="ignore"):
        return np.all(np.isfinite(b), axis=1) & (b[:, 2] > 0) & (b[:, 3] > 0)


def valid_frames(groundtruth: np.ndarray, absent: Optional[np.ndarray] = None, skip_first: bool = False) -> np.ndarray:
    """Frames that are scored: a valid ground-truth box and not flagged absent (and not frame 0 if asked)."""
    mask = valid_boxes(groundtruth)
    if absent is not None:
        mask &= ~np.asarray(absent, dtype=bool).reshape(-1)
    if skip_first and len(mask):
        mask[0] = False
    return mask


def bound_boxes(boxes: np.ndarray, bound: tuple[float, float]) -> np.ndarray:
    """Cut xywh boxes to a ``(width, height)`` image the way the got10k toolkit's ``rect_iou(bound=)``
    and the VOT toolkit do before an overlap: corner clamped into the image, size to what is left."""
    b = _boxes(boxes).copy()
    w, h = float(bound[0]), float(bound[1])
    with np.errstate(invalid="ignore"):
        b[:, 0] = np.clip(b[:, 0], 0, w)
        b[:, 1] = np.clip(b[:, 1], 0, h)
        b[:, 2] = np.clip(b[:, 2], 0, w - b[:, 0])
        b[:, 3] = np.clip(b[:, 3], 0, h - b[:, 1])
    return b


def frame_iou(pred: np.ndarray, gt: np.ndarray, bound: Optional[tuple[float, float]] = None) -> np.ndarray:
    """Per-frame IoU of xywh boxes; 0 where either box is invalid.  ``bound`` = (width, height)
    cuts both boxes to the image first (GOT-10k, VOT)."""
    p, g = _boxes(pred), _boxes(gt)
    if bound is not None:
        p, g = bound_boxes(p, bound), bound_boxes(g, bound)
    out = np.asarray(geometry.iou(p, g, fmt="xywh"), dtype=np.float64)
    out[~(valid_boxes(p) & valid_boxes(g))] = 0.0
    return out


def center_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame distance of box centres in pixels; +inf where the prediction is invalid."""
    p, g = _boxes(pred), _boxes(gt)
    with np.errstate(invalid="ignore"):
        out = np.asarray(geometry.center_distance(p, g, fmt="xywh"), dtype=np.float64)
    out[~valid_boxes(p)] = np.inf
    out[~np.isfinite(out)] = np.inf
    return out


def normalized_center_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Centre error with each axis divided by the ground truth's width / height (TrackingNet)."""
    p, g = _boxes(pred), _boxes(gt)
    cp, cg = geometry.xywh_to_cxcywh(p), geometry.xywh_to_cxcywh(g)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = (cp[:, :2] - cg[:, :2]) / g[:, 2:]
        out = np.sqrt((d**2).sum(axis=1))
    out[~valid_boxes(p)] = np.inf
    out[~np.isfinite(out)] = np.inf
    return out


def success_curve(ious: np.ndarray, thresholds: np.ndarray = IOU_THRESHOLDS, n: Optional[int] = None) -> np.ndarray:
    """Fraction of frames with IoU > t for each threshold (``n`` overrides the denominator)."""
    ious = np.asarray(ious, dtype=np.float64).reshape(-1)
    n = len(ious) if n is None else n
    if n == 0:
        return np.full(len(thresholds), np.nan)
    return (ious[:, None] > thresholds[None, :]).sum(axis=0) / float(n)


def precision_curve(errors: np.ndarray, thresholds: np.ndarray = CENTER_THRESHOLDS, n: Optional[int] = None) -> np.ndarray:
    """Fraction of frames with error <= t for each threshold."""
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)
    n = len(errors) if n is None else n
    if n == 0:
        return np.full(len(thresholds), np.nan)
    return (errors[:, None] <= thresholds[None, :]).sum(axis=0) / float(n)


def auc(curve: np.ndarray) -> float:
    """Area under a success curve as the toolkits compute it: the mean of its values."""
    return float(np.mean(curve))


def precision_at(curve: np.ndarray, px: float = PRECISION_AT, thresholds: np.ndarray = CENTER_THRESHOLDS) -> float:
    idx = int(np.flatnonzero(thresholds == px)[0])
    return float(curve[idx])


@dataclass
class SequenceScores:
    """Scores of one sequence.  Curves are None (and scores NaN) when no frame could be scored."""

    auc: float
    prec20: float
    norm_prec: float
    ao: float
    sr50: float
    sr75: float
    frames: int
    evaluated_frames: int
    success_curve: np.ndarray
    precision_curve: np.ndarray
    norm_precision_curve: np.ndarray
    ious: np.ndarray  # IoU of the scored frames (pooled for frame-weighted AO)

    def as_dict(self) -> dict:
        def f(x: float) -> Optional[float]:
            return None if x is None or not np.isfinite(x) else float(x)

        return {
            "auc": f(self.auc),
            "prec20": f(self.prec20),
            "norm_prec": f(self.norm_prec),
            "ao": f(self.ao),
            "sr50": f(self.sr50),
            "sr75": f(self.sr75),
            "frames": int(self.frames),
            "evaluated_frames": int(self.evaluated_frames),
        }


def _carry_forward(pred: np.ndarray, gt_ok: np.ndarray) -> np.ndarray:
    """OTB toolkit: an invalid prediction in a frame with a ground truth takes the previous prediction."""
    out = pred.copy()
    ok = valid_boxes(out)
    for i in range(1, len(out)):
        if not ok[i] and gt_ok[i]:
            out[i] = out[i - 1]
            ok[i] = ok[i - 1]
    return out


def score_sequence(
    pred: np.ndarray,
    groundtruth: np.ndarray,
    absent: Optional[np.ndarray] = None,
    convention: Convention = "exclude",
    skip_first: bool = False,
    bound: Optional[tuple[float, float]] = None,
) -> SequenceScores:
    """Every one-pass metric of one sequence (see the module docstring for the conventions).

    ``bound`` (image width, height) cuts boxes to the image before the IoU, as the got10k toolkit
    does; centre errors are always taken on the boxes as given."""
    pred, gt = _boxes(pred), _boxes(groundtruth)
    if len(pred) != len(gt):
        raise ValueError(f"{len(pred)} predictions for {len(gt)} ground-truth rows")
    n = len(gt)
    scored = valid_frames(gt, absent, skip_first)
    if convention == "exclude":
        ious = frame_iou(pred[scored], gt[scored], bound)
        ce = center_error(pred[scored], gt[scored])
        nce = normalized_center_error(pred[scored], gt[scored])
        denom = int(scored.sum())
    elif convention == "otb_toolkit":
        frames = np.ones(n, bool)
        if skip_first and n:
            frames[0] = False
        p = _carry_forward(pred, scored)[frames]
        g, ok = gt[frames], scored[frames]
        ious = np.where(ok, frame_iou(p, g, bound), -1.0)
        ce = np.where(ok, center_error(p, g), -1.0)
        nce = np.where(ok, normalized_center_error(p, g), -1.0)
        denom = int(frames.sum())
    else:
        raise ValueError(f"unknown convention {convention!r}; expected 'exclude' or 'otb_toolkit'")
    if denom == 0:
        nan = float("nan")
        empty = np.full(len(IOU_THRESHOLDS), np.nan)
        return SequenceScores(nan, nan, nan, nan, nan, nan, n, 0, empty, np.full(51, np.nan), np.full(51, np.nan), np.zeros(0))
    sc = success_curve(ious, n=denom)
    pc = precision_curve(ce, n=denom)
    npc = precision_curve(nce, NORM_THRESHOLDS, n=denom)
    valid_ious = ious[ious >= 0]
    ao, sr50, sr75 = got10k_scores(valid_ious)
    return SequenceScores(
        auc=auc(sc),
        prec20=precision_at(pc),
        norm_prec=auc(npc),
        ao=ao,
        sr50=sr50,
        sr75=sr75,
        frames=n,
        evaluated_frames=denom,
        success_curve=sc,
        precision_curve=pc,
        norm_precision_curve=npc,
        ious=valid_ious,
    )


def got10k_scores(ious: np.ndarray) -> tuple[float, float, float]:
    """AO, SR0.5 and SR0.75 of pooled per-frame IoUs (pool every sequence's frames for a benchmark figure)."""
    ious = np.asarray(ious, dtype=np.float64).reshape(-1)
    if ious.size == 0:
        return float("nan"), float("nan"), float("nan")
    return float(ious.mean()), float((ious > 0.5).mean()), float((ious > 0.75).mean())


# ------------------------------------------------------------------------------------------ VOT


def vot_overlaps(
    pred: np.ndarray, groundtruth: np.ndarray, codes: np.ndarray, bound: Optional[tuple[float, float]] = None
) -> np.ndarray:
    """Per-frame IoU for tracked frames; NaN for init, failure and skipped frames and unknown ground truth.

    ``bound`` (image width, height) cuts boxes to the image first, as the VOT toolkit bounds regions."""
    pred, gt = _boxes(pred), _boxes(groundtruth)
    codes = np.asarray(codes).reshape(-1)
    ov = frame_iou(pred, gt, bound)
    ov[codes != VOT_TRACKED] = np.nan
    ov[~valid_boxes(gt)] = np.nan
    return ov


def vot_accuracy(overlaps: np.ndarray, codes: np.ndarray, burnin: int = VOT_BURNIN) -> tuple[float, int]:
    """Mean overlap over tracked frames outside the burn-in after each initialisation; (accuracy, frames used)."""
    ov = np.asarray(overlaps, dtype=np.float64).reshape(-1)
    codes = np.asarray(codes).reshape(-1)
    mask = codes == VOT_TRACKED
    for i in np.flatnonzero(codes == VOT_INIT):
        mask[i : i + burnin] = False
    mask &= np.isfinite(ov)
    used = int(mask.sum())
    return (float(ov[mask].mean()) if used else float("nan")), used


def vot_failures(codes: np.ndarray) -> int:
    return int((np.asarray(codes) == VOT_FAILURE).sum())


def vot_robustness(failures: int, frames: int) -> float:
    """Failures per 100 frames (the VOT2018 table scale as pysot computes it)."""
    return float("nan") if frames == 0 else 100.0 * failures / frames


def vot_segments(overlaps: np.ndarray, codes: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Split a reset-protocol run into (overlaps from one initialisation on, ended_by_failure)."""
    ov = np.asarray(overlaps, dtype=np.float64).reshape(-1)
    codes = np.asarray(codes).reshape(-1)
    starts = list(np.flatnonzero(codes == VOT_INIT))
    segments = []
    for k, s in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(ov)
        fails = np.flatnonzero(codes[s:end] == VOT_FAILURE)
        if len(fails):
            f = s + int(fails[0])
            segments.append((np.nan_to_num(ov[s : f + 1], nan=0.0), True))
        else:
            segments.append((np.nan_to_num(ov[s:end], nan=0.0), False))
    return segments


def expected_overlap_curve(runs: Iterable[tuple[np.ndarray, np.ndarray]], max_len: Optional[int] = None) -> np.ndarray:
    """Expected average overlap for every length, from (overlaps, codes) of reset-protocol runs."""
    runs = list(runs)
    segments = [seg for ov, codes in runs for seg in vot_segments(ov, codes)]
    if max_len is None:
        max_len = max((len(ov) for ov, _ in runs), default=0)
    if not segments or max_len == 0:
        return np.zeros(0)
    frag = np.full((len(segments), max_len), np.nan)
    for k, (seg, failed) in enumerate(segments):
        seg = seg[:max_len]
        if failed:
            frag[k, :] = 0.0  # a failed segment contributes 0 to every longer run
        frag[k, : len(seg)] = seg
    curve = np.zeros(max_len)
    curve[0] = 1.0
    for i in range(1, max_len):
        alive = np.isfinite(frag[:, i])
        if alive.any():
            curve[i] = frag[alive, 1 : i + 1].mean(axis=1).mean()
    return curve


def eao(curve: np.ndarray, interval: Seq[int] = VOT2018_EAO_INTERVAL) -> float:
    """Mean of the expected-overlap curve over the 1-based inclusive length interval (clipped to the curve)."""
    low, high = int(interval[0]), int(interval[1])
    if low < 1 or high < low:
        raise ValueError(f"EAO interval must be 1 <= low <= high, got {interval}")
    part = np.asarray(curve)[low - 1 : high]
    return float(part.mean()) if part.size else float("nan")
