"""Long-term tracking measures (VOT-LT): tracking precision, recall and F over confidence thresholds.

Definitions (the VOT long-term challenge's, as vot-toolkit's ``vot/analysis/longterm.py`` computes
them; pysot's ``F1Benchmark`` is the same up to the details listed below):

* Per frame the tracker reports a box and a confidence.  ``ious[i]`` is the overlap of that box
  with the ground truth, 0 where the target is absent or the tracker has no box; ``present[i]`` is
  True where the ground truth has a box; a NaN confidence means "no prediction" on that frame.
* For a threshold ``t`` the frames taken as predictions are those with ``confidence >= t`` (a NaN
  confidence never is).  Precision = mean IoU over those frames (1 when there is none, as both
  toolkits set it); recall = the IoU summed over those frames / the number of present frames
  (0 when no frame is present).  Absent frames with a prediction add 0 to both sums, so they pull
  precision down; present frames without one pull recall down.
* Thresholds (:func:`determine_thresholds`): vot-toolkit's, from the sorted confidences pooled over
  every sequence of one tracker: up to ``resolution - 2`` evenly spaced quantiles, with +inf first
  (no frame is a prediction) and -inf last (every frame with a confidence is).
* Several sequences (:func:`longterm_pr_curves`): precision and recall are computed per sequence
  at the shared thresholds and then averaged over sequences threshold by threshold (vot-toolkit's
  ``PrecisionRecallCurve`` and pysot's ``show_result`` both do this), and only then
  ``F = 2 P R / (P + R)`` per threshold; the reported numbers are the precision, recall and
  threshold where that F is largest (the first such threshold on ties, in the +inf .. -inf
  order).  F is 0 where P + R is 0 (the toolkits would divide by zero there).
* Differences from pysot's F1Benchmark: pysot turns a NaN confidence into 0 and, at its -inf
  threshold, takes only ``confidence > 0`` frames; it places its thresholds with ``floor`` where
  vot-toolkit rounds.  We follow vot-toolkit.

The evaluation runner leaves the initialisation frame (frame 0, the box handed to the tracker) out
of these arrays: it is no prediction.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence as Seq

import numpy as np

DEFAULT_RESOLUTION = 100


def _arrays(ious: np.ndarray, confidences: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked float / bool arrays; NaN IoUs count 0, None confidences become NaN (no prediction)."""
    iou = np.asarray(ious, dtype=np.float64).reshape(-1).copy()
    conf = np.array([np.nan if c is None else c for c in np.asarray(confidences, dtype=object).reshape(-1)],
                    dtype=np.float64)
    pres = np.asarray(present, dtype=bool).reshape(-1)
    if not (len(iou) == len(conf) == len(pres)):
        raise ValueError(f"ious, confidences and present differ in length: {len(iou)}, {len(conf)}, {len(pres)}")
    iou[~np.isfinite(iou)] = 0.0
    return iou, conf, pres


def determine_thresholds(confidences: Iterable[float], resolution: int = DEFAULT_RESOLUTION) -> np.ndarray:
    """vot-toolkit's thresholds: +inf, up to ``resolution - 2`` confidences in decreasing order, -inf."""
    scores = np.asarray([c for c in confidences if c is not None], dtype=np.float64)
    scores = np.sort(scores[np.isfinite(scores)])[::-1]
    if len(scores) > resolution - 2:
        delta = int(np.floor(len(scores) / (resolution - 2)))
        idxs = np.round(np.linspace(delta, len(scores) - delta, num=resolution - 2)).astype(int)
        scores = scores[idxs]
    return np.concatenate(([np.inf], scores, [-np.inf]))


def _pr(iou: np.ndarray, conf: np.ndarray, pres: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_present = int(pres.sum())
    precision = np.ones(len(thresholds))
    recall = np.zeros(len(thresholds))
    with np.errstate(invalid="ignore"):
        for k, t in enumerate(thresholds):
            taken = conf >= t  # NaN >= t is False: no prediction at any threshold
            if taken.any():
                precision[k] = iou[taken].mean()
                recall[k] = iou[taken].sum() / n_present if n_present else 0.0
    return precision, recall


def _f(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    s = precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s > 0, 2.0 * precision * recall / np.where(s > 0, s, 1.0), 0.0)


def longterm_pr_curve(
    ious: np.ndarray,
    confidences: np.ndarray,
    present: np.ndarray,
    thresholds: Optional[np.ndarray] = None,
) -> dict:
    """One sequence's tracking precision / recall / F at each threshold.

    ``thresholds`` default to :func:`determine_thresholds` of this sequence's confidences.
    Returns ``{"thresholds", "precision", "recall", "f"}`` (numpy arrays of one length)."""
    iou, conf, pres = _arrays(ious, confidences, present)
    th = determine_thresholds(conf) if thresholds is None else np.asarray(thresholds, dtype=np.float64).reshape(-1)
    precision, recall = _pr(iou, conf, pres, th)
    return {"thresholds": th, "precision": precision, "recall": recall, "f": _f(precision, recall)}


def longterm_pr_curves(
    runs: Seq[tuple[np.ndarray, np.ndarray, np.ndarray]],
    thresholds: Optional[np.ndarray] = None,
    resolution: int = DEFAULT_RESOLUTION,
) -> dict:
    """Several sequences ``[(ious, confidences, present), ...]``: thresholds from every confidence
    pooled, precision and recall per sequence, averaged per threshold, then F (module docstring)."""
    checked = [_arrays(*r) for r in runs]
    if not checked:
        raise ValueError("longterm_pr_curves needs at least one sequence")
    if thresholds is None:
        th = determine_thresholds(np.concatenate([c for _, c, _ in checked]), resolution)
    else:
        th = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    per = [_pr(i, c, p, th) for i, c, p in checked]
    precision = np.mean([p for p, _ in per], axis=0)
    recall = np.mean([r for _, r in per], axis=0)
    return {"thresholds": th, "precision": precision, "recall": recall, "f": _f(precision, recall)}


def best_f(curve: dict) -> tuple[float, float, float, float]:
    """(F, precision, recall, threshold) where a curve's F is largest (first on ties)."""
    k = int(np.argmax(curve["f"]))
    return float(curve["f"][k]), float(curve["precision"][k]), float(curve["recall"][k]), float(curve["thresholds"][k])


def longterm_f(
    ious: np.ndarray,
    confidences: np.ndarray,
    present: np.ndarray,
    thresholds: Optional[np.ndarray] = None,
) -> tuple[float, float, float, float]:
    """(F, precision, recall, threshold) at the best F of one sequence (:func:`longterm_pr_curve`)."""
    return best_f(longterm_pr_curve(ious, confidences, present, thresholds))
