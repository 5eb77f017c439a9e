"""Frozen-backbone feature cache: train the heads many epochs without re-running the backbone.

With a frozen backbone (``backbone.trainable_stages: 0``) the backbone forward is more than half
of a CPU training step and gives the same output for the same crop every time.  This module crops
each visible training frame ``search_variants`` times as a search region and ``template_variants``
times as a template, with the pair sampler's augmentation (same crop function, shift, scale, blur,
colour, grey, flip), runs the backbone once on each crop and stores the raw phi_3 and phi_4 (before
phi_4 is resized to phi_3's stride) as float16 ``.npy`` memory maps.  Training pairs are then drawn
from the cache (template variant of frame t with a search variant of frame s, negatives from other
sequences as in pairs.py), and :class:`CachedBackbone` stands in for the backbone: it reads the rows
the batch names instead of computing them.

Trade-off: augmentation is limited to the cached variants (pairs are still new combinations of
template and search variants and frames), and the heads see float16-rounded features.  Only for
small data (every frame is cached): the shared sequences, not GOT-10k.

A batch from :class:`CachedPairDataset` holds, instead of crops, int64 (B, 2) rows
``[store, row]`` (store 0 = templates, 1 = search crops); everything else is as docs/CONTRACTS.md.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence as Seq

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from cract_core.backbone import align_phi4
from cract_core.config import ExperimentConfig, to_dict
from cract_core.train.augment import AugmentConfig, flip_box, flip_crop, to_gray
from cract_core.datasets import DatasetError, TrackingDataset
from cract_core.train.pairs import PairDataset
from cract_core.train.sampler import MixedSampler

log = logging.getLogger(__name__)

TEMPLATE, SEARCH = 0, 1
_FILES = ("template_phi3", "template_phi4", "search_phi3", "search_phi4")

__all__ = ["FeatureCache", "CachedBackbone", "CachedPairDataset", "build_feature_cache", "cache_signature"]


def cache_signature(
    cfg: ExperimentConfig, datasets: Seq[TrackingDataset], augment: AugmentConfig, variants: tuple[int, int], seed: int
) -> str:
    """What the cached features depend on; a cache is reused only when this matches."""
    parts = {
        "backbone": to_dict(cfg)["backbone"],
        "sizes": [cfg.tracker.template_size, cfg.tracker.search_size, cfg.tracker.context_amount],
        "augment": dataclasses.asdict(augment),
        "variants": list(variants),
        "seed": seed,
        "data": [[d.name, [(s.name, len(s), int(s.visible.sum())) for s in d.sequences]] for d in datasets],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """The stored features (memory-mapped) and, per row, where the crop came from and its box."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise DatasetError(f"feature cache {self.folder}: no meta.json (an unfinished or foreign folder)")
        self.meta = json.loads(meta_path.read_text())
        self.arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r") for name in _FILES}
        rows = np.load(self.folder / "rows.npz")
        # rows: (N, 4) int32 [sequence id, frame, variant, flipped] and boxes (N, 4) float32, per store.
        self.rows = [rows["template_rows"], rows["search_rows"]]
        self.boxes = [rows["template_boxes"], rows["search_boxes"]]

    @property
    def signature(self) -> str:
        return self.meta["signature"]

    def features(self, store: int, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = "template" if store == TEMPLATE else "search"
        order = np.argsort(rows)  # sorted reads are kinder to the page cache
        phi3 = np.empty((len(rows),) + self.arrays[f"{prefix}_phi3"].shape[1:], np.float16)
        phi4 = np.empty((len(rows),) + self.arrays[f"{prefix}_phi4"].shape[1:], np.float16)
        phi3[order] = self.arrays[f"{prefix}_phi3"][rows[order]]
        phi4[order] = self.arrays[f"{prefix}_phi4"][rows[order]]
        return torch.from_numpy(phi3).float(), torch.from_numpy(phi4).float()


@torch.no_grad()
def build_feature_cache(
    folder: Path,
    cfg: ExperimentConfig,
    datasets: Seq[TrackingDataset],
    backbone: nn.Module,
    augment: Optional[AugmentConfig] = None,
    search_variants: int = 6,
    template_variants: int = 2,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
) -> FeatureCache:
    """Build (or reuse, when the signature matches) the cache in ``folder``."""
    augment = augment or AugmentConfig()
    if search_variants < 1 or template_variants < 1:
        raise ValueError("feature cache needs at least one search and one template variant per frame")
    folder = Path(folder)
    signature = cache_signature(cfg, datasets, augment, (template_variants, search_variants), seed)
    if (folder / "meta.json").is_file():
        try:
            cache = FeatureCache(folder)
            if cache.signature == signature:
                log.info("feature cache %s: reusing (%d search, %d template crops)", folder, len(cache.rows[1]), len(cache.rows[0]))
                return cache
        except (DatasetError, OSError, ValueError, KeyError):
            pass
        log.info("feature cache %s: stale or broken, building a new one beside it", folder)
    # Built in a folder of its own and renamed into place when complete: a stale cache that another
    # training process still reads is moved aside, never rewritten under its memory maps (its open
    # files keep their data until it lets go of them), and a build that dies leaves no half cache.
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    # Crops are made by the pair sampler's own code so that cached crops are exactly its crops.
    crop_cfg = copy.deepcopy(cfg)
    crop_cfg.train.negative_pair_prob = 0.0  # only its crop function is used here
    cropper = PairDataset(datasets, cfg=crop_cfg, augment=augment, seed=seed)
    # A frozen backbone runs in eval mode in training too (CRACTNet.train_mode): BN uses ImageNet
    # statistics, not the batch's, so the cached features are what training would compute.
    was_training = backbone.training
    backbone.eval()
    try:
        _build(building, cfg, datasets, backbone, augment, search_variants, template_variants, seed, batch_size,
               progress, signature, cropper)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    finally:
        backbone.train(was_training)
    if folder.exists():
        stale = folder.with_name(f"{folder.name}.stale-{os.getpid()}")
        os.replace(folder, stale)
        shutil.rmtree(stale, ignore_errors=True)  # unlinking is safe under another process's maps
    os.replace(building, folder)
    return FeatureCache(folder)


def _build(folder, cfg, datasets, backbone, augment, search_variants, template_variants, seed, batch_size, progress,
           signature, cropper) -> None:
    seqs = [s for d in datasets for s in d.sequences]
    frames = [(si, int(f)) for si, s in enumerate(seqs) for f in s.visible_indices]
    jobs = {TEMPLATE: [], SEARCH: []}
    for si, f in frames:
        for k in range(template_variants):
            jobs[TEMPLATE].append((si, f, k))
        for k in range(search_variants):
            jobs[SEARCH].append((si, f, k))
    shapes = {}
    device = next((b.device for b in backbone.buffers()), torch.device("cpu"))
    for store, size, factor in ((TEMPLATE, cfg.tracker.template_size, 1.0),
                                (SEARCH, cfg.tracker.search_size, cfg.tracker.search_size / cfg.tracker.template_size)):
        probe = backbone.body.features(backbone.preprocess(torch.zeros(1, 3, size, size, dtype=torch.uint8, device=device)))
        shapes[store] = [tuple(t.shape[1:]) for t in probe]
    prefix = {TEMPLATE: "template", SEARCH: "search"}
    arrays = {}
    for store in (TEMPLATE, SEARCH):
        for j, name in enumerate(("phi3", "phi4")):
            arrays[(store, j)] = np.lib.format.open_memmap(
                folder / f"{prefix[store]}_{name}.npy", mode="w+", dtype=np.float16, shape=(len(jobs[store]),) + shapes[store][j]
            )
    rows = {TEMPLATE: np.zeros((len(jobs[TEMPLATE]), 4), np.int32), SEARCH: np.zeros((len(jobs[SEARCH]), 4), np.int32)}
    boxes = {TEMPLATE: np.zeros((len(jobs[TEMPLATE]), 4), np.float32), SEARCH: np.zeros((len(jobs[SEARCH]), 4), np.float32)}
    total = len(jobs[TEMPLATE]) + len(jobs[SEARCH])
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="feature cache", unit="crop", dynamic_ncols=True)
    start = time.monotonic()
    for store, size, factor in ((TEMPLATE, cfg.tracker.template_size, 1.0),
                                (SEARCH, cfg.tracker.search_size, cfg.tracker.search_size / cfg.tracker.template_size)):
        jitter = augment.template() if store == TEMPLATE else augment.search()
        for lo in range(0, len(jobs[store]), batch_size):
            crops = []
            for n, (si, f, k) in enumerate(jobs[store][lo : lo + batch_size], lo):
                rng = np.random.default_rng([seed, store, si, f, k])
                crop, box, _, _ = cropper._crop(seqs[si], f, size, factor, jitter, rng)
                if rng.random() < augment.gray_prob:
                    crop = to_gray(crop)
                # Flip by variant parity, so a template and a search variant of equal parity are
                # mirrored alike (pairs are drawn that way: the object looks the same way in both).
                flipped = augment.flip_prob > 0 and k % 2 == 1
                if flipped:
                    crop, box = flip_crop(crop), flip_box(box, size)
                crops.append(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))))
                rows[store][n] = (si, f, k, int(flipped))
                boxes[store][n] = box
            batch = torch.stack(crops).to(device)
            phi3, phi4 = backbone.body.features(backbone.preprocess(batch))
            arrays[(store, 0)][lo : lo + len(crops)] = phi3.half().cpu().numpy()
            arrays[(store, 1)][lo : lo + len(crops)] = phi4.half().cpu().numpy()
            if bar is not None:
                bar.update(len(crops))
    if bar is not None:
        bar.close()
    for a in arrays.values():
        a.flush()
    np.savez(folder / "rows.npz", template_rows=rows[TEMPLATE], search_rows=rows[SEARCH],
             template_boxes=boxes[TEMPLATE], search_boxes=boxes[SEARCH])
    meta = {
        "signature": signature,
        "sequences": [f"{s.dataset}/{s.name}" for s in seqs],
        "template_variants": template_variants,
        "search_variants": search_variants,
        "frames": len(frames),
        "build_s": time.monotonic() - start,
    }
    # meta.json last: its presence marks a complete cache.
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    log.info("feature cache %s: %d frames, %d crops in %.0f s", folder, len(frames), total, meta["build_s"])


class CachedBackbone(nn.Module):
    """Stands in for a frozen Backbone: (B, 2) int64 rows [store, row] -> (phi_3, phi_4) at stride 16."""

    def __init__(self, cache: FeatureCache, backbone: nn.Module) -> None:
        super().__init__()
        self.cache = cache
        self.phi3_channels = backbone.phi3_channels
        self.phi4_channels = backbone.phi4_channels
        self.phi_offsets = (backbone.body.phi3_offset, backbone.body.phi4_offset)
        self.cfg = backbone.cfg
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    @property
    def frozen(self) -> bool:
        return True

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if rows.dtype != torch.int64 or rows.dim() != 2 or rows.shape[1] != 2:
            raise ValueError(f"CachedBackbone takes (B, 2) int64 [store, row], got {tuple(rows.shape)} {rows.dtype}")
        r = rows.cpu().numpy()
        stores = np.unique(r[:, 0])
        if len(stores) != 1:
            raise ValueError("one extract() call must read one store (templates or search crops)")
        phi3, phi4 = self.cache.features(int(stores[0]), r[:, 1])
        dev = self._device_probe.device
        phi3, phi4 = phi3.to(dev), phi4.to(dev)
        return phi3, align_phi4(phi3, phi4, *self.phi_offsets)  # exactly what Backbone.forward does


class CachedPairDataset(Dataset):
    """Pairs drawn from a :class:`FeatureCache` with the pair sampler's rules (gap, still, negatives)."""

    def __init__(
        self,
        cache: FeatureCache,
        datasets: Seq[TrackingDataset],
        weights: Optional[Seq[float]] = None,
        cfg: Optional[ExperimentConfig] = None,
        augment: Optional[AugmentConfig] = None,
        seed: Optional[int] = None,
        length: int = 10**9,
    ) -> None:
        cfg = cfg or ExperimentConfig()
        self.cache = cache
        self.mixer = MixedSampler(datasets, weights)
        self.aug = augment or AugmentConfig()
        self.max_gap = cfg.train.max_frame_gap
        self.negative_prob = cfg.train.negative_pair_prob
        self.still_prob = cfg.train.still_image_prob
        self.seed = cfg.train.seed if seed is None else seed
        self.length = length
        names = {n: i for i, n in enumerate(cache.meta["sequences"])}
        # (dataset index, sequence index) -> cache sequence id
        self.seq_id: dict[tuple[int, int], int] = {}
        for d, ds in enumerate(self.mixer.datasets):
            for s, seq in enumerate(ds.sequences):
                key = f"{seq.dataset}/{seq.name}"
                if key not in names:
                    raise DatasetError(f"feature cache {cache.folder} has no sequence {key}; rebuild it for this data")
                self.seq_id[(d, s)] = names[key]
        # cache sequence id -> frame -> {variant: row}, per store
        self.index: list[dict[int, dict[int, dict[int, int]]]] = [{}, {}]
        for store in (TEMPLATE, SEARCH):
            for row, (si, f, k, _) in enumerate(cache.rows[store]):
                self.index[store].setdefault(int(si), {}).setdefault(int(f), {})[int(k)] = row
        self.frames = {si: np.array(sorted(fr)) for si, fr in self.index[SEARCH].items()}

    def __len__(self) -> int:
        return self.length

    def _pick(self, rng: np.random.Generator, store: int, si: int, frame: int, parity: Optional[int]) -> tuple[int, int]:
        variants = self.index[store][si][frame]
        ks = [k for k in variants if parity is None or k % 2 == parity] or list(variants)
        k = ks[int(rng.integers(len(ks)))]
        return k, variants[k]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        key = self.mixer.sample(rng)
        si = self.seq_id[key]
        frames = self.frames[si]
        t = int(frames[rng.integers(len(frames))])
        still = bool(rng.random() < self.still_prob) or len(frames) == 1
        if still:
            s = t
        else:
            near = frames[np.abs(frames - t) <= self.max_gap]
            s = int(near[rng.integers(len(near))])
        negative = self.negative_prob > 0 and bool(rng.random() < self.negative_prob)
        s_si = si
        if negative:
            other, _ = self.mixer.sample_other(rng, key, bool(rng.random() < self.aug.hard_negative_fraction))
            s_si = self.seq_id[other]
            fr = self.frames[s_si]
            s = int(fr[rng.integers(len(fr))])
        kz, zrow = self._pick(rng, TEMPLATE, si, t, None)
        _, xrow = self._pick(rng, SEARCH, s_si, s, kz % 2 if self.aug.flip_prob > 0 else None)
        return {
            "template": torch.tensor([TEMPLATE, zrow], dtype=torch.int64),
            "search": torch.tensor([SEARCH, xrow], dtype=torch.int64),
            "template_box": torch.from_numpy(self.cache.boxes[TEMPLATE][zrow].copy()),
            "search_box": torch.from_numpy(self.cache.boxes[SEARCH][xrow].copy()),
            "positive": torch.tensor(not negative),
        }
