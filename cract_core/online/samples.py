"""Sample generation for the discriminator: positive and negative boxes around a target box."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from ..geometry import as_box, iou


def _rejection_sample(
    draw: Callable[[int], np.ndarray],
    accept: Callable[[np.ndarray], np.ndarray],
    n: int,
    max_rounds: int,
) -> np.ndarray:
    """Draw candidate boxes in vectorised batches, keep the accepted ones, until n are found."""
    out: list[np.ndarray] = []
    have = 0
    for _ in range(max_rounds):
        if have >= n:
            break
        # Over-draw: acceptance rates are ~30-90 %, so one or two rounds usually suffice.
        cand = draw(max(4 * (n - have), 16))
        cand = cand[accept(cand)]
        out.append(cand)
        have += len(cand)
    if not out:
        return np.zeros((0, 4))
    return np.concatenate(out, axis=0)[:n]


def sample_boxes(
    target_xywh: Sequence[float] | np.ndarray,
    n_pos: int,
    n_neg: int,
    rng: np.random.Generator,
    pos_iou: float = 0.7,
    neg_iou: float = 0.3,
    bounds: Optional[tuple[float, float]] = None,
    near_fraction: float = 0.5,
    max_rounds: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative training boxes around a target, as MDNet/CRACT draw them.

    Positives: the target's centre shifted and its scale and aspect changed within ranges matched to
    ``pos_iou`` (r = (1 - pos_iou) / (1 + pos_iou): shifts up to r box sizes, scale up to e^r),
    kept when IoU >= ``pos_iou``.  Negatives: ``near_fraction`` of them in
    the surrounding region (centre within two target sizes, scale +-50 %), the rest anywhere in the
    image (``bounds`` = (width, height)) or, without bounds, within five target sizes; kept when
    IoU <= ``neg_iou`` and, with bounds, when the box centre lies in the image (RoIAlign of a box
    wholly outside would only see padding).

    Returns (boxes (n, 4) float64 xywh, labels (n,) float32: 1 for positives, then 0 for
    negatives).  Deterministic for a given Generator state.  Exactly n_pos / n_neg boxes unless the
    geometry makes that impossible (e.g. a target filling the whole image has no negatives inside
    it); then as many as ``max_rounds`` rounds of rejection sampling found.
    """
    t = as_box(target_xywh)
    if t[2] <= 0 or t[3] <= 0:
        raise ValueError(f"target box must have a positive size, got {t.tolist()}")
    tx, ty, tw, th = t
    cx, cy = tx + tw / 2, ty + th / 2
    target = t[None, :]

    def boxes_from(ccx: np.ndarray, ccy: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
        return np.stack([ccx - w / 2, ccy - h / 2, w, h], axis=1)

    # Jitter range matched to the IoU asked for: a shift of r (in box sizes) along one axis, or a
    # scale change of e^r, alone gives IoU ~ (1 - r) / (1 + r) = pos_iou.  Wider ranges would be
    # rejected most of the time (12 % acceptance at 0.7 with +-25 % shifts), narrower ones would
    # never reach the IoU boundary.
    r_pos = max((1.0 - pos_iou) / (1.0 + pos_iou), 0.0)

    def draw_pos(m: int) -> np.ndarray:
        d = rng.uniform(-r_pos, r_pos, size=(m, 2))
        s = np.exp(rng.uniform(-r_pos, r_pos, size=m))
        a = np.exp(rng.uniform(-r_pos / 2, r_pos / 2, size=m))
        return boxes_from(cx + d[:, 0] * tw, cy + d[:, 1] * th, tw * s * a, th * s / a)

    def inside(b: np.ndarray) -> np.ndarray:
        if bounds is None:
            return np.ones(len(b), dtype=bool)
        bx, by = b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
        return (bx >= 0) & (bx <= bounds[0]) & (by >= 0) & (by <= bounds[1])

    def draw_near(m: int) -> np.ndarray:
        d = rng.uniform(-2.0, 2.0, size=(m, 2))
        s = np.exp(rng.uniform(-0.5, 0.5, size=m))
        a = np.exp(rng.uniform(-0.1, 0.1, size=m))
        return boxes_from(cx + d[:, 0] * tw, cy + d[:, 1] * th, tw * s * a, th * s / a)

    def draw_far(m: int) -> np.ndarray:
        if bounds is not None:
            ccx = rng.uniform(0.0, bounds[0], size=m)
            ccy = rng.uniform(0.0, bounds[1], size=m)
        else:
            ccx = cx + rng.uniform(-5.0, 5.0, size=m) * tw
            ccy = cy + rng.uniform(-5.0, 5.0, size=m) * th
        s = np.exp(rng.uniform(-0.5, 0.5, size=m))
        a = np.exp(rng.uniform(-0.1, 0.1, size=m))
        return boxes_from(ccx, ccy, tw * s * a, th * s / a)

    def accept_pos(b: np.ndarray) -> np.ndarray:
        return iou(b, target, fmt="xywh") >= pos_iou

    def accept_neg(b: np.ndarray) -> np.ndarray:
        return (iou(b, target, fmt="xywh") <= neg_iou) & inside(b)

    pos = _rejection_sample(draw_pos, accept_pos, n_pos, max_rounds)
    n_near = int(round(n_neg * near_fraction))
    near = _rejection_sample(draw_near, accept_neg, n_near, max_rounds)
    far = _rejection_sample(draw_far, accept_neg, n_neg - len(near), max_rounds)
    if len(near) + len(far) < n_neg:
        # The far region can be empty (a target filling the image): fill up from the near one.
        near = np.concatenate([near, _rejection_sample(draw_near, accept_neg, n_neg - len(near) - len(far), max_rounds)])
    boxes = np.concatenate([pos, near, far], axis=0).astype(np.float64)
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(near) + len(far))]).astype(np.float32)
    return boxes, labels
