"""Boxes: the one module that owns every box convention and conversion in cract.

Conventions
-----------
* ``xywh``   top-left corner and size, exactly as the benchmark files write it (OTB, UAV123,
  GOT-10k, LaSOT).  Like pysot and pytracking we use the numbers as pixel coordinates without
  shifting the 1-based benchmark origin, so whatever we read is what we write back.
* ``xyxy``   corners ``x1, y1, x2, y2`` with ``x2 = x + w`` (continuous coordinates, no +1).
* ``cxcywh`` centre and size.

Every function accepts numpy arrays or torch tensors of shape ``(..., 4)`` and returns the same
kind.  Eq. 4 of the paper (box refinement) is :func:`encode_offsets` / :func:`decode_offsets`.
"""
from __future__ import annotations

import math
from typing import Sequence, TypeVar, Union

import cv2
import numpy as np
import torch

BoxArray = TypeVar("BoxArray", np.ndarray, torch.Tensor)
BoxLike = Union[Sequence[float], np.ndarray, torch.Tensor]

# Offsets for log-size regression are clamped so that exp() never overflows (as in Detectron).
MAX_LOG_SCALE = math.log(1000.0 / 16.0)


class InvalidBoxError(ValueError):
    """A box that cannot be tracked: NaN, infinite, non-positive or too small, or outside the image."""


def _stack(parts: list, like: BoxArray) -> BoxArray:
    if isinstance(like, torch.Tensor):
        return torch.stack(parts, dim=-1)
    return np.stack(parts, axis=-1)


def _exp(x: BoxArray) -> BoxArray:
    return torch.exp(x) if isinstance(x, torch.Tensor) else np.exp(x)


def _log(x: BoxArray) -> BoxArray:
    return torch.log(x) if isinstance(x, torch.Tensor) else np.log(x)


def _clamp(x: BoxArray, lo: float | None = None, hi: float | None = None) -> BoxArray:
    if isinstance(x, torch.Tensor):
        return torch.clamp(x, min=lo, max=hi)
    return np.clip(x, lo, hi)


def xywh_to_xyxy(b: BoxArray) -> BoxArray:
    return _stack([b[..., 0], b[..., 1], b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]], b)


def xyxy_to_xywh(b: BoxArray) -> BoxArray:
    return _stack([b[..., 0], b[..., 1], b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], b)


def xywh_to_cxcywh(b: BoxArray) -> BoxArray:
    return _stack([b[..., 0] + b[..., 2] / 2, b[..., 1] + b[..., 3] / 2, b[..., 2], b[..., 3]], b)


def cxcywh_to_xywh(b: BoxArray) -> BoxArray:
    return _stack([b[..., 0] - b[..., 2] / 2, b[..., 1] - b[..., 3] / 2, b[..., 2], b[..., 3]], b)


def cxcywh_to_xyxy(b: BoxArray) -> BoxArray:
    return xywh_to_xyxy(cxcywh_to_xywh(b))


def xyxy_to_cxcywh(b: BoxArray) -> BoxArray:
    return xywh_to_cxcywh(xyxy_to_xywh(b))


_TO_XYXY = {"xyxy": lambda b: b, "xywh": xywh_to_xyxy, "cxcywh": cxcywh_to_xyxy}


def to_xyxy(b: BoxArray, fmt: str) -> BoxArray:
    try:
        return _TO_XYXY[fmt](b)
    except KeyError:
        raise ValueError(f"unknown box format {fmt!r}; expected one of {sorted(_TO_XYXY)}") from None


def iou(a: BoxArray, b: BoxArray, fmt: str = "xyxy") -> BoxArray:
    """Element-wise IoU of two broadcastable box arrays in the same format.

    Degenerate boxes (zero or negative area, NaN) give IoU 0, which is what the benchmark toolkits
    count for a missing prediction.
    """
    a, b = to_xyxy(a, fmt), to_xyxy(b, fmt)
    lib = torch if isinstance(a, torch.Tensor) else np
    ix1 = lib.maximum(a[..., 0], b[..., 0])
    iy1 = lib.maximum(a[..., 1], b[..., 1])
    ix2 = lib.minimum(a[..., 2], b[..., 2])
    iy2 = lib.minimum(a[..., 3], b[..., 3])
    inter = _clamp(ix2 - ix1, 0.0) * _clamp(iy2 - iy1, 0.0)
    area_a = _clamp(a[..., 2] - a[..., 0], 0.0) * _clamp(a[..., 3] - a[..., 1], 0.0)
    area_b = _clamp(b[..., 2] - b[..., 0], 0.0) * _clamp(b[..., 3] - b[..., 1], 0.0)
    union = area_a + area_b - inter
    valid = union > 0
    if isinstance(a, torch.Tensor):
        out = torch.where(valid, inter / torch.where(valid, union, torch.ones_like(union)), torch.zeros_like(union))
        return torch.nan_to_num(out, nan=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(valid, inter / np.where(valid, union, 1.0), 0.0)
    return np.nan_to_num(out, nan=0.0)


def pairwise_iou(a: BoxArray, b: BoxArray, fmt: str = "xyxy") -> BoxArray:
    """IoU matrix of shape (len(a), len(b))."""
    return iou(a[:, None, :], b[None, :, :], fmt)


def encode_offsets(boxes: BoxArray, targets: BoxArray, fmt: str = "xywh") -> BoxArray:
    """Offsets r = (dx, dy, dw, dh) that move ``boxes`` onto ``targets`` (inverse of Eq. 4).

    dx = (x* - x) / w, dy = (y* - y) / h, dw = log(w* / w), dh = log(h* / h), on box centres.
    """
    p = xyxy_to_cxcywh(to_xyxy(boxes, fmt))
    t = xyxy_to_cxcywh(to_xyxy(targets, fmt))
    return _stack(
        [
            (t[..., 0] - p[..., 0]) / p[..., 2],
            (t[..., 1] - p[..., 1]) / p[..., 3],
            _log(t[..., 2] / p[..., 2]),
            _log(t[..., 3] / p[..., 3]),
        ],
        p,
    )


def decode_offsets(boxes: BoxArray, offsets: BoxArray, fmt: str = "xywh") -> BoxArray:
    """Eq. 4: the re-aligned box x~ = x + w dx, y~ = y + h dy, w~ = w e^dw, h~ = h e^dh (centres).

    Returned in the same format as ``boxes``.
    """
    p = xyxy_to_cxcywh(to_xyxy(boxes, fmt))
    dw = _clamp(offsets[..., 2], None, MAX_LOG_SCALE)
    dh = _clamp(offsets[..., 3], None, MAX_LOG_SCALE)
    out = _stack(
        [
            p[..., 0] + p[..., 2] * offsets[..., 0],
            p[..., 1] + p[..., 3] * offsets[..., 1],
            p[..., 2] * _exp(dw),
            p[..., 3] * _exp(dh),
        ],
        p,
    )
    if fmt == "cxcywh":
        return out
    out = cxcywh_to_xyxy(out)
    return out if fmt == "xyxy" else xyxy_to_xywh(out)


def center_distance(a: BoxArray, b: BoxArray, fmt: str = "xywh") -> BoxArray:
    """Euclidean distance between box centres (the precision metric's error)."""
    ca = xyxy_to_cxcywh(to_xyxy(a, fmt))
    cb = xyxy_to_cxcywh(to_xyxy(b, fmt))
    d = (ca[..., :2] - cb[..., :2]) ** 2
    return (d.sum(-1)) ** 0.5


def as_box(box: BoxLike) -> np.ndarray:
    """A float64 array of 4 numbers, or InvalidBoxError naming what is wrong."""
    if box is None:
        raise InvalidBoxError("box is None")
    if isinstance(box, torch.Tensor):
        box = box.detach().cpu().numpy()
    try:
        arr = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidBoxError(f"box {box!r} is not 4 numbers: {exc}") from None
    if arr.size != 4:
        raise InvalidBoxError(f"box must have 4 numbers (x, y, w, h), got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise InvalidBoxError(f"box has NaN or infinite values: {arr.tolist()}")
    return arr


def clip_box_to_image(box_xywh: BoxLike, image_size: tuple[int, int], min_size: float = 2.0) -> np.ndarray:
    """Clip an ``xywh`` box to an image of ``(width, height)``.

    A box partly outside is cut to the part inside; one wholly outside, or whose width or height
    is under ``min_size`` pixels (before or after clipping), raises InvalidBoxError with the reason.
    """
    b = as_box(box_xywh)
    width, height = image_size
    if b[2] < min_size or b[3] < min_size:
        raise InvalidBoxError(f"box {b.tolist()} is smaller than {min_size} px (width and height must be >= {min_size})")
    x1, y1, x2, y2 = xywh_to_xyxy(b)
    cx1, cy1 = max(x1, 0.0), max(y1, 0.0)
    cx2, cy2 = min(x2, float(width)), min(y2, float(height))
    if cx2 <= cx1 or cy2 <= cy1:
        raise InvalidBoxError(f"box {b.tolist()} lies wholly outside the {width}x{height} image")
    if cx2 - cx1 < min_size or cy2 - cy1 < min_size:
        raise InvalidBoxError(
            f"box {b.tolist()} leaves under {min_size} px inside the {width}x{height} image after clipping"
        )
    return np.array([cx1, cy1, cx2 - cx1, cy2 - cy1], dtype=np.float64)


def context_size(w: float | np.ndarray, h: float | np.ndarray, context_amount: float) -> float | np.ndarray:
    """Side of the square crop around a w x h target, as SiamFC/SiamRPN define it: sqrt((w+p)(h+p)), p = c (w+h)."""
    p = context_amount * (w + h)
    return np.sqrt((w + p) * (h + p))


def stretch_scales(scale: float, stretch: float = 1.0) -> tuple[float, float]:
    """Crop pixels per image pixel along x and y of a :func:`crop_square` crop with ``stretch``."""
    root = math.sqrt(stretch)
    return scale * root, scale / root


def crop_square(
    image: np.ndarray,
    center_xy: tuple[float, float],
    side: float,
    out_size: int,
    pad_value: Sequence[float] | None = None,
    stretch: float = 1.0,
) -> tuple[np.ndarray, float]:
    """Crop a ``side`` x ``side`` square centred at ``center_xy`` and resize it to ``out_size``.

    Pixels outside the image take ``pad_value`` (the image's mean colour when None), as Siamese
    trackers pad.  One affine warp does crop, pad and resize at once.  Returns the crop and the
    scale (output pixels per image pixel).  The tracker and the training pair sampler both call this,
    so training crops are exactly the crops seen at run time.

    Image pixel (u, v) maps to crop pixel ((u - cx) * s + out/2, (v - cy) * s + out/2),
    with s = out_size / side.  ``stretch`` r != 1 (training augmentation only) scales x by
    sqrt(r) and y by 1/sqrt(r) more; map boxes with :func:`image_to_crop` and the same ``stretch``.
    """
    if side <= 0 or not math.isfinite(side):
        raise InvalidBoxError(f"crop side must be positive and finite, got {side}")
    scale = out_size / side
    cx, cy = center_xy
    if stretch <= 0 or not math.isfinite(stretch):
        raise ValueError(f"stretch must be positive and finite, got {stretch}")
    sx, sy = stretch_scales(scale, stretch)
    matrix = np.array(
        [[sx, 0.0, out_size / 2.0 - cx * sx], [0.0, sy, out_size / 2.0 - cy * sy]],
        dtype=np.float64,
    )
    if pad_value is None:
        pad_value = image.reshape(-1, image.shape[2]).mean(axis=0) if image.ndim == 3 else float(image.mean())
    border = tuple(float(v) for v in np.atleast_1d(pad_value))
    crop = cv2.warpAffine(
        image,
        matrix,
        (out_size, out_size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border,
    )
    return crop, scale


def image_to_crop(
    box_xywh: BoxArray, center_xy: tuple[float, float], scale: float, out_size: int, stretch: float = 1.0
) -> BoxArray:
    """Map ``xywh`` boxes from image pixels to the pixels of a :func:`crop_square` crop."""
    cx, cy = center_xy
    sx, sy = stretch_scales(scale, stretch)
    return _stack(
        [
            (box_xywh[..., 0] - cx) * sx + out_size / 2.0,
            (box_xywh[..., 1] - cy) * sy + out_size / 2.0,
            box_xywh[..., 2] * sx,
            box_xywh[..., 3] * sy,
        ],
        box_xywh,
    )


def crop_to_image(box_xywh: BoxArray, center_xy: tuple[float, float], scale: float, out_size: int) -> BoxArray:
    """Inverse of :func:`image_to_crop`."""
    cx, cy = center_xy
    return _stack(
        [
            (box_xywh[..., 0] - out_size / 2.0) / scale + cx,
            (box_xywh[..., 1] - out_size / 2.0) / scale + cy,
            box_xywh[..., 2] / scale,
            box_xywh[..., 3] / scale,
        ],
        box_xywh,
    )
