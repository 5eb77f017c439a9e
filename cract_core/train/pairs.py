"""Training pairs: a template crop and a search crop, as the tracker makes them at run time.

One pair (docs/CONTRACTS.md, "Training batch")::

    {"template": uint8 (3, Tz, Tz) BGR channel-first, "search": uint8 (3, Tx, Tx),
     "template_box": float32 (4,) xywh in template-crop pixels,
     "search_box": float32 (4,) xywh in search-crop pixels, "positive": bool}

How a pair is made (``PairDataset.sample``):

1. a sequence by the mixing sampler; template frame t and search frame s, both visible, with
   ``|s - t| <= train.max_frame_gap``; with ``train.still_image_prob`` (and always for one-frame
   sequences such as COCO annotations) s = t, and only augmentation makes the two differ;
2. with ``train.negative_pair_prob`` the search frame comes from another object instead
   (``hard_negative_fraction`` of those from the same category or the same still image);
3. crops by :func:`cract_core.geometry.crop_square`, exactly as the tracker crops: the template
   side is ``context_size(w, h, context_amount)`` resized to ``template_size``; the search side is
   that times ``search_size / template_size`` resized to ``search_size``.  The "previous box" the
   tracker would centre on is simulated by moving the crop centre (shift) and side (scale), so the
   target is not always in the middle and not always at the anchor size;
4. photometric augmentation per crop, grayscale and horizontal flip per pair.

Pair ``i`` depends only on (seed, i): any DataLoader worker, any rank, and a resumed run make the
same pair for the same index.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional, Sequence as Seq

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from cract_core.config import ExperimentConfig
from cract_core.geometry import context_size, crop_square, image_to_crop, stretch_scales
from cract_core.train.augment import AugmentConfig, CropJitter, draw_jitter, draw_stretch, flip_box, flip_crop, photometric, to_gray
from cract_core.datasets import DatasetError, Sequence, TrackingDataset
from cract_core.train.sampler import MixedSampler

__all__ = ["PairDataset", "collate_pairs", "PAIR_KEYS"]

PAIR_KEYS = ("template", "search", "template_box", "search_box", "positive")


class _ImageCache:
    """The last few decoded frames with their mean colour (the tracker's crop padding).

    Still pairs and nearby frames reuse images; a small per-process LRU saves decodes.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.items: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def get(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        hit = self.items.get(path)
        if hit is not None:
            self.items.move_to_end(path)
            return hit
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"cannot read image {path} (missing or not an image)")
        # cv2.mean equals numpy's mean here (up to float rounding) and is ~20x faster on 1280x720.
        mean = np.asarray(cv2.mean(img)[:3])
        self.items[path] = (img, mean)
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return img, mean


class PairDataset(Dataset):
    """Map-style dataset of pairs: ``ds[i]`` is pair i (see module doc); any index is valid."""

    def __init__(
        self,
        datasets: Seq[TrackingDataset],
        weights: Optional[Seq[float]] = None,
        cfg: Optional[ExperimentConfig] = None,
        augment: Optional[AugmentConfig] = None,
        seed: Optional[int] = None,
        length: int = 10**9,
    ) -> None:
        cfg = cfg or ExperimentConfig()
        self.mixer = MixedSampler(datasets, weights)
        self.template_size = cfg.tracker.template_size
        self.search_size = cfg.tracker.search_size
        self.context_amount = cfg.tracker.context_amount
        self.max_gap = cfg.train.max_frame_gap
        self.negative_prob = cfg.train.negative_pair_prob
        self.still_prob = cfg.train.still_image_prob
        self.aug = augment or AugmentConfig()
        self.seed = cfg.train.seed if seed is None else seed
        self.length = length
        self._cache = _ImageCache()
        if self.negative_prob > 0 and self.mixer.num_sequences < 2:
            raise DatasetError("negative pairs need at least two sequences; set train.negative_pair_prob: 0")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sample(index)[0]

    def __getstate__(self) -> dict:
        # Workers start with an empty image cache instead of a pickled copy of the parent's.
        state = self.__dict__.copy()
        state["_cache"] = _ImageCache()
        return state

    # -- the pair ------------------------------------------------------------------------------
    def rng(self, index: int) -> np.random.Generator:
        if index < 0:
            raise IndexError(f"pair index must be >= 0, got {index}")
        return np.random.default_rng([self.seed, index])

    def _frames(self, seq: Sequence, rng: np.random.Generator, still: bool) -> tuple[int, int]:
        vis = seq.visible_indices
        t = int(vis[rng.integers(len(vis))])
        if still or len(vis) == 1:
            return t, t
        near = vis[np.abs(vis - t) <= self.max_gap]
        return t, int(near[rng.integers(len(near))])

    def _crop(
        self, seq: Sequence, frame: int, out_size: int, side_factor: float, jitter: CropJitter, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, tuple[float, float], float]:
        img, mean = self._cache.get(seq.frame_path(frame))
        box = seq.groundtruth[frame]
        dx, dy, s = draw_jitter(rng, jitter)
        r = draw_stretch(rng, jitter)
        side = context_size(box[2], box[3], self.context_amount) * side_factor * s
        sx, sy = stretch_scales(out_size / side, r)
        # The target ends up (dx, dy) crop pixels from the crop centre.
        center = (box[0] + box[2] / 2 - dx / sx, box[1] + box[3] / 2 - dy / sy)
        crop, scale = crop_square(img, center, side, out_size, pad_value=mean, stretch=r)
        crop_box = image_to_crop(box, center, scale, out_size, stretch=r)
        crop = photometric(crop, rng, jitter, self.aug.color_strength)
        return crop, crop_box.astype(np.float32), center, scale

    def sample(self, index: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Pair ``index`` and a description of how it was made (for tests and debugging)."""
        rng = self.rng(index)
        key = self.mixer.sample(rng)
        seq = self.mixer.get(key)
        still = bool(rng.random() < self.still_prob)
        t, s = self._frames(seq, rng, still)
        negative = self.negative_prob > 0 and bool(rng.random() < self.negative_prob)
        hard = False
        search_seq = seq
        if negative:
            want_hard = bool(rng.random() < self.aug.hard_negative_fraction)
            other, hard = self.mixer.sample_other(rng, key, want_hard)
            search_seq = self.mixer.get(other)
            vis = search_seq.visible_indices
            s = int(vis[rng.integers(len(vis))])
        template, tbox, tcenter, tscale = self._crop(seq, t, self.template_size, 1.0, self.aug.template(), rng)
        search, sbox, scenter, sscale = self._crop(
            search_seq, s, self.search_size, self.search_size / self.template_size, self.aug.search(), rng
        )
        gray = bool(rng.random() < self.aug.gray_prob)
        if gray:
            template, search = to_gray(template), to_gray(search)
        flipped = bool(rng.random() < self.aug.flip_prob)
        if flipped:
            template, search = flip_crop(template), flip_crop(search)
            tbox, sbox = flip_box(tbox, self.template_size), flip_box(sbox, self.search_size)
        pair = {
            "template": torch.from_numpy(np.ascontiguousarray(template.transpose(2, 0, 1))),
            "search": torch.from_numpy(np.ascontiguousarray(search.transpose(2, 0, 1))),
            "template_box": torch.from_numpy(tbox),
            "search_box": torch.from_numpy(sbox),
            "positive": torch.tensor(not negative),
        }
        info = {
            "index": index,
            "template_sequence": f"{seq.dataset}/{seq.name}",
            "search_sequence": f"{search_seq.dataset}/{search_seq.name}",
            "template_frame": t,
            "search_frame": s,
            "template_center": tcenter,
            "template_scale": tscale,
            "search_center": scenter,
            "search_scale": sscale,
            "negative": negative,
            "hard": hard,
            "still": t == s and search_seq is seq,
            "flipped": flipped,
            "gray": gray,
        }
        return pair, info


def collate_pairs(pairs: Seq[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack pairs into the batch of docs/CONTRACTS.md."""
    if not pairs:
        raise ValueError("cannot collate an empty list of pairs")
    missing = [k for k in PAIR_KEYS if k not in pairs[0]]
    if missing:
        raise ValueError(f"pair lacks {missing}; a pair has {list(PAIR_KEYS)}")
    return {k: torch.stack([p[k] for p in pairs]) for k in PAIR_KEYS}
