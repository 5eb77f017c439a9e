"""Frozen-backbone feature cache: cached features are the backbone's, pairs follow the rules,
training on the cache works and its checkpoint loads into an ordinary network."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from cract_core.checkpoint import load_checkpoint
from cract_core.config import config_from_dict
from cract_core.geometry import context_size, crop_square
from cract_core.train import cli
from cract_core.train.augment import AugmentConfig
from cract_core.datasets import make_dataset
from cract_core.train.feature_cache import (
    SEARCH,
    TEMPLATE,
    CachedBackbone,
    CachedPairDataset,
    FeatureCache,
    build_feature_cache,
)
from cract_core.train.pairs import collate_pairs

SMALL = {
    "backbone": {"fused_channels": 32},
    "rpn": {"head_channels": 32},
    "crac": {"regressor_conv_channels": 32, "identifier_conv_channels": 32, "regressor_fc": [64, 64], "identifier_fc": [64, 64]},
}
SHORT = ["uav_truck2", "uavdt_s0310"]  # 27 + 19 frames: a cache of them builds in seconds


@pytest.fixture(scope="module")
def short_cache(tmp_path_factory: pytest.TempPathFactory):
    """One cache of SHORT (2 search, 1 template crops per frame) shared by the tests below."""
    from conftest import require_shared_sequences  # module scope cannot take the function fixture
    from cract_core.model import CRACTNet

    torch.set_num_threads(1)
    root = require_shared_sequences()
    cfg = config_from_dict({**SMALL, "train": {"negative_pair_prob": 0.5}})
    ds = [make_dataset("folder", root, only=SHORT)]
    folder = tmp_path_factory.mktemp("cache") / "c"
    cache = build_feature_cache(folder, cfg, ds, CRACTNet(cfg).backbone, AugmentConfig(), 2, 1, seed=0, progress=False)
    return cfg, ds, cache, folder


# one torch thread: see conftest.torch_threads
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cached_features_are_the_backbones(tmp_path: Path, shared_sequences_dir: Path) -> None:
    from cract_core.model import CRACTNet

    cfg = config_from_dict(SMALL)
    net = CRACTNet(cfg).train_mode()  # as in training: the cache must still hold eval-mode features
    ds = [make_dataset("folder", shared_sequences_dir, only=["uavdt_s0310"])]
    still = AugmentConfig(template_shift=0, template_scale=0, search_shift=0, search_scale=0, color_prob=0,
                          search_blur_prob=0, gray_prob=0, flip_prob=0)
    cache = build_feature_cache(tmp_path / "c", cfg, ds, net.backbone, still, 1, 1, seed=0, progress=False)
    seq = ds[0].sequences[0]
    cached = CachedBackbone(cache, net.backbone)
    for store, size in ((TEMPLATE, 127), (SEARCH, 255)):
        rows = np.flatnonzero(cache.rows[store][:, 1] == 5)  # frame 5
        assert len(rows) == 1
        box = seq.groundtruth[5]
        side = context_size(box[2], box[3], 0.5) * size / 127
        image = cv2.imread(seq.frame_path(5))
        crop, _ = crop_square(image, (box[0] + box[2] / 2, box[1] + box[3] / 2), side, size)
        with torch.no_grad():
            want = net.backbone(torch.from_numpy(crop.transpose(2, 0, 1).copy())[None])
            got = cached(torch.tensor([[store, int(rows[0])]]))
        for g, w in zip(got, want):
            assert g.shape == w.shape
            # float16 storage: relative error ~1e-3 of the feature scale
            assert (g - w).abs().max() <= 2e-3 * w.abs().max() + 1e-3


def test_cache_reuse_and_pairs(short_cache) -> None:
    from cract_core.model import CRACTNet

    cfg, ds, cache, folder = short_cache
    frames = sum(int(s.visible.sum()) for s in ds[0].sequences)
    assert len(cache.rows[SEARCH]) == 2 * frames and len(cache.rows[TEMPLATE]) == frames
    stamp = os.stat(folder / "search_phi3.npy").st_mtime_ns
    again = build_feature_cache(folder, cfg, ds, CRACTNet(cfg).backbone, AugmentConfig(), 2, 1, seed=0, progress=False)
    assert again.signature == cache.signature and os.stat(folder / "search_phi3.npy").st_mtime_ns == stamp
    pairs = CachedPairDataset(cache, ds, cfg=cfg, seed=0)
    negatives = 0
    for i in range(40):
        p = pairs[i]
        zrow, xrow = int(p["template"][1]), int(p["search"][1])
        z_seq, z_frame, _, z_flip = cache.rows[TEMPLATE][zrow]
        x_seq, x_frame, _, x_flip = cache.rows[SEARCH][xrow]
        assert z_flip == x_flip  # both crops mirrored alike
        if p["positive"]:
            assert z_seq == x_seq and abs(int(z_frame) - int(x_frame)) <= cfg.train.max_frame_gap
            assert torch.equal(p["search_box"], torch.from_numpy(cache.boxes[SEARCH][xrow]))
        else:
            negatives += 1
            assert z_seq != x_seq
    assert 8 <= negatives <= 32
    batch = collate_pairs([pairs[i] for i in range(4)])
    assert batch["template"].shape == (4, 2) and batch["template"].dtype == torch.int64


def test_a_stale_cache_in_use_is_moved_aside_not_rewritten(tmp_path: Path, short_cache) -> None:
    """Another training process may still read a cache whose signature this build does not match
    (another cache seed): the new cache is built beside it and renamed into place, so the old
    reader's memory maps keep the old features (rewriting the files in place once fed a running
    training zeros), and no half-built folder is left behind."""
    from cract_core.model import CRACTNet

    cfg, ds, shared, shared_folder = short_cache
    folder = tmp_path / "cache"
    shutil.copytree(shared_folder, folder)  # the module's cache stays as the other tests expect it
    cache = FeatureCache(folder)
    before = cache.features(SEARCH, np.arange(4))[1].clone()
    assert before.abs().sum() > 0
    other = build_feature_cache(folder, cfg, ds, CRACTNet(cfg).backbone, AugmentConfig(), 2, 1, seed=1, progress=False)
    assert other.signature != cache.signature
    assert torch.equal(cache.features(SEARCH, np.arange(4))[1], before)  # the old reader is untouched
    assert FeatureCache(folder).signature == other.signature
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no .building / .stale left


def test_train_on_cache_checkpoint_loads_into_plain_net(tmp_path: Path, shared_sequences_dir: Path, short_cache) -> None:
    from cract_core.model import CRACTNet

    cache_dir = short_cache[3]  # same data, backbone, augmentation and variants: reused, not rebuilt
    stamp = os.stat(cache_dir / "search_phi3.npy").st_mtime_ns
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "train": {"batch_size": 4, "steps": 6, "warmup_steps": 2, "checkpoint_every_s": 3600.0}}))
    rc = cli.main(["--config", str(config), "--data", f"folder={shared_sequences_dir}", "--include", ",".join(SHORT),
                   "--out", str(tmp_path / "run"), "--feature-cache", str(cache_dir), "--cache-variants", "2,1",
                   "--no-progress", "--device", "cpu"])
    assert rc == 0
    final = load_checkpoint(tmp_path / "run" / "final.pt")
    assert os.stat(cache_dir / "search_phi3.npy").st_mtime_ns == stamp
    assert final["step"] == 6 and final["extra"]["feature_cache"] == [2, 1]
    assert not any(k.startswith("backbone.") for k in final["heads"])
    net = CRACTNet(config_from_dict(final["config"]))
    net.load_head_state_dict(final["heads"])
    lines = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(lines) == 7 and all(np.isfinite(float(x)) for x in lines[-1].split(",")[4:])
    assert cli.main(["--config", str(config), "--data", f"folder={shared_sequences_dir}", "--out", str(tmp_path / "x"),
                     "--feature-cache", str(tmp_path / "other"), "--cache-variants", "0,1"]) == 2
