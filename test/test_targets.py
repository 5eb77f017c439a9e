"""Training targets on hand-made anchors and boxes: anchor labels, R's and I's proposal samples."""
from __future__ import annotations

import math

import torch

from cract_core import geometry
from cract_core.targets import (
    IGNORE,
    assign_anchor_labels,
    identification_samples,
    jitter_boxes,
    regression_samples,
)

GT = torch.tensor([0.0, 0.0, 10.0, 10.0], dtype=torch.float64)  # area 100

# (anchor xyxy, IoU with GT worked out by hand, expected label at pos > 0.6 / neg < 0.3)
HAND_ANCHORS = [
    ([0, 0, 10, 10], 1.0, 1),  # identical
    ([0, 0, 10, 12], 100 / 120, 1),  # inter 100, union 120 -> 0.833
    ([0, 0, 10, 15], 100 / 150, 1),  # 0.667
    ([0, 0, 6, 10], 0.6, IGNORE),  # inter 60, union 100 -> exactly 0.6: not > 0.6
    ([0, 0, 5, 10], 0.5, IGNORE),  # between the thresholds
    ([5, 0, 15, 10], 50 / 150, IGNORE),  # 0.333
    ([0, 0, 3, 10], 0.3, IGNORE),  # exactly 0.3: not < 0.3
    ([0, 0, 2, 10], 0.2, 0),
    ([20, 20, 30, 30], 0.0, 0),  # disjoint
    ([10, 0, 20, 10], 0.0, 0),  # touching
]


def _hand_anchors() -> torch.Tensor:
    return torch.tensor([a for a, _, _ in HAND_ANCHORS], dtype=torch.float64)


def test_hand_anchor_ious_are_what_the_table_says() -> None:
    ious = geometry.iou(_hand_anchors(), GT.expand(len(HAND_ANCHORS), 4))
    torch.testing.assert_close(ious, torch.tensor([i for _, i, _ in HAND_ANCHORS], dtype=torch.float64))


def test_assign_anchor_labels_positive_negative_ignored() -> None:
    labels = assign_anchor_labels(_hand_anchors(), GT, True, 0.6, 0.3, 64, 0.25)
    assert labels.dtype == torch.long
    assert labels.tolist() == [lab for _, _, lab in HAND_ANCHORS]


def test_assign_anchor_labels_negative_pair_has_no_positives() -> None:
    # In a negative pair even the anchor identical to the box is a negative.
    labels = assign_anchor_labels(_hand_anchors(), GT, False, 0.6, 0.3, 64, 0.25)
    assert labels.tolist() == [0] * len(HAND_ANCHORS)


def _many_anchors(num_pos: int, num_neg: int, num_ignored: int) -> tuple[torch.Tensor, torch.Tensor]:
    """num_pos copies of GT (IoU 1), num_neg far-away boxes (IoU 0), num_ignored half boxes (0.5), shuffled."""
    a = torch.cat([
        GT.expand(num_pos, 4),
        torch.tensor([50.0, 50, 60, 60], dtype=torch.float64).expand(num_neg, 4),
        torch.tensor([0.0, 0, 5, 10], dtype=torch.float64).expand(num_ignored, 4),
    ])
    kind = torch.tensor([1] * num_pos + [0] * num_neg + [IGNORE] * num_ignored)
    perm = torch.randperm(a.shape[0], generator=torch.Generator().manual_seed(0))
    return a[perm], kind[perm]


def test_sample_cap_and_positive_fraction() -> None:
    anchors, kind = _many_anchors(200, 300, 50)
    labels = assign_anchor_labels(anchors, GT, True, 0.6, 0.3, 64, 0.25, torch.Generator().manual_seed(1))
    # at most 64 labelled, at most round(64 * 0.25) = 16 positive, the rest (48) negatives
    assert int((labels == 1).sum()) == 16
    assert int((labels == 0).sum()) == 48
    # each label only where it belongs
    assert torch.all(kind[labels == 1] == 1)
    assert torch.all(kind[labels == 0] == 0)
    assert torch.all(labels[kind == IGNORE] == IGNORE)


def test_few_positives_are_all_kept_and_negatives_fill_up() -> None:
    anchors, kind = _many_anchors(3, 300, 10)
    labels = assign_anchor_labels(anchors, GT, True, 0.6, 0.3, 64, 0.25, torch.Generator().manual_seed(2))
    assert int((labels == 1).sum()) == 3  # all three
    assert int((labels == 0).sum()) == 61  # 64 - 3
    assert torch.all(kind[labels == 1] == 1)


def test_negative_pair_sample_cap() -> None:
    anchors, _ = _many_anchors(200, 300, 50)
    labels = assign_anchor_labels(anchors, GT, False, 0.6, 0.3, 64, 0.25, torch.Generator().manual_seed(3))
    assert int((labels == 1).sum()) == 0
    assert int((labels == 0).sum()) == 64


def test_anchor_sampling_is_seeded() -> None:
    anchors, _ = _many_anchors(200, 300, 50)
    a = assign_anchor_labels(anchors, GT, True, 0.6, 0.3, 64, 0.25, torch.Generator().manual_seed(7))
    b = assign_anchor_labels(anchors, GT, True, 0.6, 0.3, 64, 0.25, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


# Proposals for R and I: IoU with GT
#   0: identical 1.0 | 1: (0,0,10,15) 0.667 | 2: (0,0,5,10) exactly 0.5 (>= 0.5: taken)
#   3: (5,0,15,10) 0.333 | 4: disjoint 0 | 5: (0,0,4.9,10) 0.49
PROPOSALS = torch.tensor(
    [[0, 0, 10, 10], [0, 0, 10, 15], [0, 0, 5, 10], [5, 0, 15, 10], [40, 40, 50, 50], [0, 0, 4.9, 10]],
    dtype=torch.float64,
)


def test_regression_samples_pick_iou_at_least_half() -> None:
    idx = regression_samples(PROPOSALS, GT, True, 0.5, 16)
    assert sorted(idx.tolist()) == [0, 1, 2]
    # capped at max_count, still only from the qualifying ones
    idx2 = regression_samples(PROPOSALS, GT, True, 0.5, 2, torch.Generator().manual_seed(0))
    assert len(idx2) == 2 and set(idx2.tolist()) <= {0, 1, 2}
    # a negative pair has nothing to regress, nor has an empty candidate set
    assert regression_samples(PROPOSALS, GT, False, 0.5, 16).numel() == 0
    assert regression_samples(PROPOSALS[:0], GT, True, 0.5, 16).numel() == 0


def test_identification_samples_labels_by_hand() -> None:
    idx, lab = identification_samples(PROPOSALS, GT, True, 0.5, 32)
    got = dict(zip(idx.tolist(), lab.tolist()))
    assert got == {0: 1, 1: 1, 2: 1, 3: 0, 4: 0, 5: 0}


def test_identification_samples_at_most_half_positive() -> None:
    # 10 positives (IoU 1) and 10 negatives (IoU 0), max 8 -> 4 + 4
    cand = torch.cat([GT.expand(10, 4), torch.tensor([40.0, 40, 50, 50], dtype=torch.float64).expand(10, 4)])
    idx, lab = identification_samples(cand, GT, True, 0.5, 8, torch.Generator().manual_seed(0))
    assert len(idx) == 8 and int(lab.sum()) == 4
    assert torch.all((idx[lab == 1] < 10)) and torch.all(idx[lab == 0] >= 10)
    # odd cap 7 -> at most 7 // 2 = 3 positives
    idx, lab = identification_samples(cand, GT, True, 0.5, 7, torch.Generator().manual_seed(0))
    assert len(idx) == 7 and int(lab.sum()) == 3
    # 1 positive among 20 negatives, max 8 -> 1 positive + 7 negatives
    cand = torch.cat([GT.view(1, 4), torch.tensor([40.0, 40, 50, 50], dtype=torch.float64).expand(20, 4)])
    idx, lab = identification_samples(cand, GT, True, 0.5, 8, torch.Generator().manual_seed(0))
    assert len(idx) == 8 and int(lab.sum()) == 1 and idx[lab == 1].tolist() == [0]


def test_identification_samples_negative_pair_all_negative() -> None:
    idx, lab = identification_samples(PROPOSALS, GT, False, 0.5, 32)
    assert sorted(idx.tolist()) == list(range(6))
    assert lab.tolist() == [0] * 6


def test_jitter_boxes_stay_within_bounds() -> None:
    gt = torch.tensor([100.0, 50.0, 140.0, 130.0])  # centre (120, 90), 40 x 80
    boxes = jitter_boxes(gt, 500, 0.35, 0.35, torch.Generator().manual_seed(0))
    assert boxes.shape == (500, 4)
    c = geometry.xyxy_to_cxcywh(boxes)
    assert torch.all((c[:, 0] - 120).abs() <= 0.35 * 40 + 1e-4)
    assert torch.all((c[:, 1] - 90).abs() <= 0.35 * 80 + 1e-4)
    assert torch.all((torch.log(c[:, 2] / 40)).abs() <= 0.35 + 1e-5)
    assert torch.all((torch.log(c[:, 3] / 80)).abs() <= 0.35 + 1e-5)
    assert c[:, 0].std() > 1.0  # really jittered
    assert math.isclose(float(c[:, 0].mean()), 120.0, abs_tol=1.5)
