"""Augmentation of training crops (SiamRPN++-style), on uint8 BGR numpy images.

Geometry (shift and scale) is not done here on pixels: it changes *where* crop_square crops, so
training crops stay exactly the crops the tracker makes at run time (see pairs.py).  This module
draws those jitters and does the photometric part (blur, colour, grayscale) and the flip.

Defaults follow pysot's SiamRPN++ training: search shift up to 64 px on 255 and scale 0.18,
template 4 px and 0.05.  TrainConfig has no fields for these yet, so they live in
:class:`AugmentConfig` (the trainer takes overrides from the CLI).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import cv2
import numpy as np

__all__ = ["AugmentConfig", "CropJitter", "draw_jitter", "draw_stretch", "photometric", "flip_crop", "flip_box", "parse_overrides"]


@dataclass
class CropJitter:
    """How far a crop moves from the target: shift in crop pixels, scale as a side multiplier."""

    shift: float = 4.0
    scale: float = 0.05
    blur_prob: float = 0.0
    color_prob: float = 1.0
    gray_prob: float = 0.0
    aspect_prob: float = 0.0
    aspect_max: float = 1.0


@dataclass
class AugmentConfig:
    template_shift: float = 4.0
    template_scale: float = 0.05
    search_shift: float = 64.0
    search_scale: float = 0.18
    # Blur simulates the motion blur of fast drones; applied per crop.
    template_blur_prob: float = 0.0
    search_blur_prob: float = 0.2
    color_prob: float = 1.0  # brightness / contrast / saturation / per-channel gain jitter
    color_strength: float = 0.25
    gray_prob: float = 0.05  # both crops of the pair at once (night / IR-like footage)
    flip_prob: float = 0.5  # both crops at once, boxes mirrored too
    hard_negative_fraction: float = 0.5  # of the negative pairs, the share from the same category
    # Aspect stretch of the search crop (width x sqrt(r), height / sqrt(r), log r uniform in
    # +-log(search_aspect_max)), with this probability: 30 sequences hold few targets thinner than
    # 1:2.5, and R then widens a 1:4.5 walker frame after frame.  0 = off (the starter's recipe).
    search_aspect_prob: float = 0.0
    search_aspect_max: float = 2.0

    def template(self) -> CropJitter:
        return CropJitter(self.template_shift, self.template_scale, self.template_blur_prob, self.color_prob)

    def search(self) -> CropJitter:
        return CropJitter(self.search_shift, self.search_scale, self.search_blur_prob, self.color_prob,
                          aspect_prob=self.search_aspect_prob, aspect_max=self.search_aspect_max)


def parse_overrides(aug: AugmentConfig, items: Optional[list[str]]) -> AugmentConfig:
    """Apply ``KEY=VALUE`` strings (floats) from the command line; unknown keys are errors."""
    names = {f.name for f in fields(AugmentConfig)}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise ValueError(f"--aug {item!r}: expected KEY=VALUE with KEY one of {sorted(names)}")
        try:
            setattr(aug, key, float(value))
        except ValueError:
            raise ValueError(f"--aug {item!r}: {value!r} is not a number") from None
    return aug


def draw_jitter(rng: np.random.Generator, jitter: CropJitter) -> tuple[float, float, float]:
    """(dx, dy, scale): the target's offset from the crop centre in crop pixels, and the side factor.

    Uniform in [-shift, shift] and [1 - scale, 1 + scale] as pysot's ``random() * x`` draws.
    """
    dx, dy = (rng.uniform(-1.0, 1.0, size=2) * jitter.shift).tolist()
    s = 1.0 + rng.uniform(-1.0, 1.0) * jitter.scale
    return dx, dy, s


def draw_stretch(rng: np.random.Generator, jitter: CropJitter) -> float:
    """Aspect stretch r (1 = none): with ``aspect_prob``, log r uniform in +-log(aspect_max).

    Draws nothing when the stretch is off, so recipes without it keep their random streams.
    """
    if jitter.aspect_prob <= 0 or jitter.aspect_max <= 1.0:
        return 1.0
    if rng.random() >= jitter.aspect_prob:
        return 1.0
    return float(np.exp(rng.uniform(-1.0, 1.0) * np.log(jitter.aspect_max)))


def _blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        k = int(rng.choice([3, 5, 7]))
        return cv2.GaussianBlur(img, (k, k), 0)
    # Linear motion blur in a random direction.
    k = int(rng.choice([5, 7, 9]))
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2, :] = 1.0 / k
    rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 180)), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (k, k))
    kernel /= max(kernel.sum(), 1e-6)
    return cv2.filter2D(img, -1, kernel)


def _color(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    x = img.astype(np.float32)
    gain = 1.0 + rng.uniform(-strength, strength)  # brightness
    contrast = 1.0 + rng.uniform(-strength, strength)
    channel = 1.0 + rng.uniform(-strength / 3, strength / 3, size=3).astype(np.float32)  # white balance
    mean = x.mean()
    x = (x - mean) * contrast + mean
    x = x * gain * channel
    sat = 1.0 + rng.uniform(-strength, strength)
    gray = x.mean(axis=2, keepdims=True)
    x = gray + (x - gray) * sat
    return np.clip(x, 0, 255).astype(np.uint8)


def photometric(img: np.ndarray, rng: np.random.Generator, jitter: CropJitter, color_strength: float) -> np.ndarray:
    """Blur and colour jitter of one crop (each with its own probability)."""
    if jitter.blur_prob > 0 and rng.random() < jitter.blur_prob:
        img = _blur(img, rng)
    if jitter.color_prob > 0 and rng.random() < jitter.color_prob:
        img = _color(img, rng, color_strength)
    return img


def to_gray(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)


def flip_crop(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[:, ::-1])


def flip_box(box_xywh: np.ndarray, width: int) -> np.ndarray:
    """Mirror an xywh box in a crop ``width`` pixels wide.

    Crop coordinates are pixel-index coordinates (crop_square's affine maps pixel indices, and
    image_to_crop uses the same map), and a horizontal flip sends index u to width - 1 - u; the
    box's right edge x + w becomes the new left edge.
    """
    out = np.array(box_xywh, dtype=np.float32, copy=True)
    out[..., 0] = (width - 1) - (box_xywh[..., 0] + box_xywh[..., 2])
    return out
