"""Training data: pair sampling, augmentation, sharding (the loaders are in test_datasets.py)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cract_core.config import ExperimentConfig
from cract_core.geometry import context_size, crop_square, image_to_crop
from cract_core.train.augment import AugmentConfig, flip_box, flip_crop, parse_overrides
from cract_core.datasets import DatasetError, TrackingDataset, make_dataset
from cract_core.train.pairs import PAIR_KEYS, PairDataset, collate_pairs
from cract_core.train.sampler import MixedSampler, StepBatchSampler

NO_AUG = dict(color_prob=0.0, search_blur_prob=0.0, template_blur_prob=0.0, gray_prob=0.0, flip_prob=0.0)


def _cfg(**train) -> ExperimentConfig:
    cfg = ExperimentConfig()
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def _img(path: Path, w: int = 64, h: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


# -- COCO still images: the hard negative of an object is another object of its image -------
def test_coco_layout_skips_crowd_and_tiny(tmp_path: Path) -> None:
    _img(tmp_path / "train2017" / "000000000001.jpg", 200, 100)
    ann = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 200, "height": 100}],
        "categories": [{"id": 3, "name": "Car"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 30], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [60, 10, 40, 30], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [0, 0, 200, 100], "iscrowd": 1},
            {"id": 13, "image_id": 1, "category_id": 1, "bbox": [5, 5, 4, 30], "iscrowd": 0},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(ann))
    ds = make_dataset("coco", tmp_path)
    assert ds.kind == "coco" and [s.name for s in ds.sequences] == ["1:10", "1:11"]
    assert ds[0].category == "car" and len(ds[0]) == 1 and Path(ds[0].frame_path(0)).is_file()
    # The other car of the same image is the hard negative of the first.
    mixer = MixedSampler([ds])
    other, hard = mixer.sample_other(np.random.default_rng(0), (0, 0), hard=True)
    assert other == (0, 1) and hard


# -- pairs ---------------------------------------------------------------------------------------
@pytest.fixture
def two_sequences(shared_sequences_dir: Path) -> TrackingDataset:
    return make_dataset("folder", shared_sequences_dir, only=["uav_car10", "uav_group1_1"])


def test_pair_format(two_sequences: TrackingDataset) -> None:
    pairs = PairDataset([two_sequences], cfg=_cfg(negative_pair_prob=0.5), seed=1)
    batch = collate_pairs([pairs[i] for i in range(4)])
    assert set(batch) == set(PAIR_KEYS)
    assert batch["template"].shape == (4, 3, 127, 127) and batch["template"].dtype == torch.uint8
    assert batch["search"].shape == (4, 3, 255, 255) and batch["search"].dtype == torch.uint8
    assert batch["template_box"].shape == (4, 4) and batch["template_box"].dtype == torch.float32
    assert batch["search_box"].shape == (4, 4) and batch["positive"].dtype == torch.bool


def test_crops_match_tracker_geometry(two_sequences: TrackingDataset) -> None:
    """Without photometric changes a pair's crops are crop_square's output, boxes image_to_crop's."""
    pairs = PairDataset([two_sequences], cfg=_cfg(negative_pair_prob=0.0), augment=AugmentConfig(**NO_AUG), seed=3)
    seqs = {f"{s.dataset}/{s.name}": s for s in two_sequences.sequences}
    for i in range(6):
        pair, info = pairs.sample(i)
        seq = seqs[info["template_sequence"]]
        assert abs(info["search_frame"] - info["template_frame"]) <= pairs.max_gap
        for which, size in (("template", 127), ("search", 255)):
            frame = info[f"{which}_frame"]
            image = cv2.imread(seq.frame_path(frame))
            box = seq.groundtruth[frame]
            center, scale = info[f"{which}_center"], info[f"{which}_scale"]
            expected, s2 = crop_square(image, center, size / scale, size)
            assert s2 == pytest.approx(scale)
            got = pair[which].numpy().transpose(1, 2, 0)
            # Pad colour is the image mean either way; cv2.mean vs numpy may round 1 level apart.
            assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
            np.testing.assert_allclose(pair[f"{which}_box"].numpy(), image_to_crop(box, center, scale, size), atol=1e-3)
        # The template side is the tracker's context size within the 5% scale jitter, the target
        # within 4 px of the centre; the search target within 64 px.
        tb, sb = pair["template_box"].numpy(), pair["search_box"].numpy()
        box = seq.groundtruth[info["template_frame"]]
        side = 127 / info["template_scale"]
        assert 0.95 - 1e-6 <= side / context_size(box[2], box[3], 0.5) <= 1.05 + 1e-6
        assert np.all(np.abs(tb[:2] + tb[2:] / 2 - 63.5) <= 4.0 + 1e-3)
        assert np.all(np.abs(sb[:2] + sb[2:] / 2 - 127.5) <= 64.0 + 1e-3)


def test_flip_box_matches_flipped_pixels() -> None:
    crop = np.zeros((40, 50, 3), np.uint8)
    crop[5:15, 10:30] = 255  # pixel columns 10..29: box x=10, w=19 in pixel-index coordinates
    box = np.array([10, 5, 19, 9], np.float32)
    fb = flip_box(box, 50)
    cols = np.flatnonzero(flip_crop(crop)[10, :, 0])
    assert (cols.min(), cols.max()) == (fb[0], fb[0] + fb[2])
    np.testing.assert_array_equal(flip_box(fb, 50), box)


def test_flipped_pair_is_mirror_of_unflipped(two_sequences: TrackingDataset) -> None:
    kw = dict(cfg=_cfg(negative_pair_prob=0.0), seed=5)
    plain = PairDataset([two_sequences], augment=AugmentConfig(**{**NO_AUG, "flip_prob": 0.0}), **kw)
    flipped = PairDataset([two_sequences], augment=AugmentConfig(**{**NO_AUG, "flip_prob": 1.0}), **kw)
    for i in range(3):
        a, b = plain[i], flipped[i]
        assert torch.equal(b["search"], a["search"].flip(-1)) and torch.equal(b["template"], a["template"].flip(-1))
        np.testing.assert_allclose(b["search_box"].numpy(), flip_box(a["search_box"].numpy(), 255), atol=1e-4)
        np.testing.assert_allclose(b["template_box"].numpy(), flip_box(a["template_box"].numpy(), 127), atol=1e-4)


def test_negative_pairs_come_from_another_sequence(shared_sequences_dir: Path) -> None:
    ds = make_dataset("folder", shared_sequences_dir, only=["uav_group*", "uav_car10", "uav_car16_2", "uav_boat1"])
    pairs = PairDataset([ds], cfg=_cfg(negative_pair_prob=1.0), seed=0)
    category = {f"{s.dataset}/{s.name}": s.category for s in ds.sequences}
    hard = 0
    for i in range(40):
        pair, info = pairs.sample(i)
        assert not pair["positive"] and info["negative"]
        assert info["search_sequence"] != info["template_sequence"]
        if info["hard"]:
            hard += 1
            assert category[info["search_sequence"]] == category[info["template_sequence"]]
    assert 5 <= hard <= 35  # about half were asked to be hard, and every category here has a twin
    positives = PairDataset([ds], cfg=_cfg(negative_pair_prob=0.0), seed=0)
    assert all(positives[i]["positive"] for i in range(5))


def test_still_image_pairs(two_sequences: TrackingDataset) -> None:
    pairs = PairDataset([two_sequences], cfg=_cfg(negative_pair_prob=0.0, still_image_prob=1.0), seed=2)
    for i in range(4):
        pair, info = pairs.sample(i)
        assert info["still"] and info["template_frame"] == info["search_frame"] and pair["positive"]


def test_fixed_seed_reproduces_pairs_across_workers(two_sequences: TrackingDataset) -> None:
    cfg = _cfg(negative_pair_prob=0.3, still_image_prob=0.2)
    a = PairDataset([two_sequences], cfg=cfg, seed=11)
    b = PairDataset([two_sequences], cfg=cfg, seed=11)
    c = PairDataset([two_sequences], cfg=cfg, seed=12)
    sampler = StepBatchSampler(batch_size=3, total_steps=2)
    loader = DataLoader(b, batch_sampler=sampler, num_workers=2, collate_fn=collate_pairs)
    batches = list(loader)
    direct = [collate_pairs([a[i] for i in sampler.indices(s)]) for s in range(2)]
    for got, want in zip(batches, direct):
        for k in PAIR_KEYS:
            assert torch.equal(got[k], want[k]), k
    assert not torch.equal(c[0]["search"], a[0]["search"])


def test_step_batch_sampler_shards_by_rank() -> None:
    single = StepBatchSampler(batch_size=4, total_steps=3)
    ranks = [list(StepBatchSampler(2, 3, rank=r, world_size=2)) for r in range(2)]
    for step in range(3):
        union = sorted(ranks[0][step] + ranks[1][step])
        assert not set(ranks[0][step]) & set(ranks[1][step])
        assert union == single.indices(step)
    assert list(StepBatchSampler(2, 3, start_step=2)) == [[4, 5]]  # resume skips done steps


def test_mixing_weights_pick_datasets(two_sequences: TrackingDataset, shared_sequences_dir: Path) -> None:
    other = make_dataset("folder", shared_sequences_dir, only=["uav_boat1"], name="boats")
    mixer = MixedSampler([two_sequences, other], [3.0, 1.0])
    rng = np.random.default_rng(0)
    picks = np.array([mixer.sample(rng)[0] for _ in range(2000)])
    assert 0.70 < (picks == 0).mean() < 0.80
    with pytest.raises(DatasetError, match="weights"):
        MixedSampler([two_sequences], [1.0, 2.0])


def test_augment_overrides() -> None:
    aug = parse_overrides(AugmentConfig(), ["search_shift=32", "gray_prob=0"])
    assert aug.search_shift == 32.0 and aug.gray_prob == 0.0
    with pytest.raises(ValueError, match="KEY one of"):
        parse_overrides(AugmentConfig(), ["nope=1"])


def test_aspect_stretch_changes_the_search_box_shape_only_when_asked(two_sequences: TrackingDataset) -> None:
    seqs = {f"{s.dataset}/{s.name}": s for s in two_sequences.sequences}
    ratios = {}
    for prob in (0.0, 1.0):
        aug = AugmentConfig(**{**NO_AUG, "search_aspect_prob": prob, "search_aspect_max": 2.0})
        pairs = PairDataset([two_sequences], cfg=_cfg(negative_pair_prob=0.0), augment=aug, seed=5)
        got = []
        for i in range(12):
            pair, info = pairs.sample(i)
            box = seqs[info["search_sequence"]].groundtruth[info["search_frame"]]
            sb = pair["search_box"].numpy()
            got.append((sb[2] / sb[3]) / (box[2] / box[3]))
            # The shift jitter still holds in crop pixels: the target centre within 64 px.
            assert np.all(np.abs(sb[:2] + sb[2:] / 2 - 127.5) <= 64.0 + 1e-3)
        ratios[prob] = np.array(got)
    np.testing.assert_allclose(ratios[0.0], 1.0, rtol=1e-5)
    assert np.all((ratios[1.0] >= 0.5 - 1e-6) & (ratios[1.0] <= 2.0 + 1e-6))
    assert np.mean(np.abs(np.log(ratios[1.0]))) > 0.15  # log r uniform in +-0.69: mean |log r| 0.35
