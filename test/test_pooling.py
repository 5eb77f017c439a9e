"""Pyramid RoIAlign: output shapes, and pooled values worked out by hand on ramp feature maps."""
from __future__ import annotations

import pytest
import torch

from cract_core.pooling import PyramidRoIAlign, boxes_to_rois

STRIDE = 16


def _ramp_features(batch: int = 1, side: int = 16) -> torch.Tensor:
    """Channel 0 is f(x, y) = x, channel 1 is f(x, y) = y (feature-cell indices): bilinear
    sampling of a linear ramp is exact, so every pooled value is the mean sample position."""
    xs = torch.arange(side, dtype=torch.float32)
    f = torch.stack([xs.view(1, -1).expand(side, side), xs.view(-1, 1).expand(side, side)])
    return f.unsqueeze(0).repeat(batch, 1, 1, 1)


def test_shapes_pyramid_and_single() -> None:
    c, k = 8, 10
    feats = torch.randn(1, c, 16, 16)
    boxes = torch.tensor([[10.0, 20.0, 100.0, 90.0]]).repeat(k, 1)
    pyr = PyramidRoIAlign(c, [6, 3, 1], STRIDE, "pyramid")
    single = PyramidRoIAlign(c, [6, 3, 1], STRIDE, "single")
    assert pyr.out_channels == 3 * c and pyr.output_size == 6
    assert single.out_channels == c and single.output_size == 6
    assert pyr(feats, boxes_to_rois(boxes)).shape == (k, 3 * c, 6, 6)
    assert single(feats, boxes_to_rois(boxes)).shape == (k, c, 6, 6)


def test_one_by_one_value_is_the_ramp_at_the_box_centre() -> None:
    # Box xyxy (64, 32, 128, 96) in crop pixels, spatial scale 1/16, aligned=True (half-pixel shift):
    #   x: 64/16 - 0.5 = 3.5 .. 128/16 - 0.5 = 7.5 ; y: 32/16 - 0.5 = 1.5 .. 96/16 - 0.5 = 5.5
    # 1x1 bin, sampling ratio 2: x samples at 3.5 + 4 * (1/4, 3/4) = 4.5 and 6.5 -> mean 5.5,
    # y samples at 2.5 and 4.5 -> mean 3.5: the box centre (96, 64) in feature coordinates
    # (96/16 - 0.5, 64/16 - 0.5) = (5.5, 3.5).  (Without the half-pixel alignment it would be 6.0, 4.0.)
    pool = PyramidRoIAlign(2, [1], STRIDE, "pyramid")
    out = pool(_ramp_features(), boxes_to_rois(torch.tensor([[64.0, 32.0, 128.0, 96.0]])))
    assert out.shape == (1, 2, 1, 1)
    torch.testing.assert_close(out.flatten(), torch.tensor([5.5, 3.5]))


def test_pyramid_levels_by_hand() -> None:
    # Same box, x from 3.5 to 7.5 (width 4 feature cells), channel 0 = x ramp.
    #   6x6 level: bin width 4/6, bin j has mean 3.5 + (j + 0.5) * 4/6:
    #     j = 0..5 -> 3.8333, 4.5, 5.1667, 5.8333, 6.5, 7.1667
    #   3x3 level: bin width 4/3, bin j mean 3.5 + (j + 0.5) * 4/3 -> 4.1667, 5.5, 6.8333,
    #     upsampled (nearest) to 6 columns -> each value twice
    #   1x1 level: 5.5 everywhere
    # Channel layout: [6x6 level (C) | 3x3 level (C) | 1x1 level (C)], C = 2 here.
    pool = PyramidRoIAlign(2, [6, 3, 1], STRIDE, "pyramid")
    out = pool(_ramp_features(), boxes_to_rois(torch.tensor([[64.0, 32.0, 128.0, 96.0]])))
    assert out.shape == (1, 6, 6, 6)
    l6 = torch.tensor([3.5 + (j + 0.5) * 4 / 6 for j in range(6)])
    l3 = torch.tensor([3.5 + (j + 0.5) * 4 / 3 for j in range(3)]).repeat_interleave(2)
    torch.testing.assert_close(out[0, 0], l6.view(1, 6).expand(6, 6))
    torch.testing.assert_close(out[0, 2], l3.view(1, 6).expand(6, 6))
    torch.testing.assert_close(out[0, 4], torch.full((6, 6), 5.5))
    # y channel: y from 1.5 to 5.5 -> same spacing shifted by -2, along rows
    torch.testing.assert_close(out[0, 1], (l6 - 2).view(6, 1).expand(6, 6))
    torch.testing.assert_close(out[0, 3], (l3 - 2).view(6, 1).expand(6, 6))
    torch.testing.assert_close(out[0, 5], torch.full((6, 6), 3.5))
    # "single" pooling is exactly the 6x6 level
    single = PyramidRoIAlign(2, [6, 3, 1], STRIDE, "single")
    torch.testing.assert_close(single(_ramp_features(), boxes_to_rois(torch.tensor([[64.0, 32.0, 128.0, 96.0]]))), out[:, :2])


def test_batch_index_selects_the_feature_map() -> None:
    feats = _ramp_features(batch=2)
    feats[1] += 100.0  # second crop: ramp + 100
    boxes = torch.tensor([[64.0, 32.0, 128.0, 96.0], [64.0, 32.0, 128.0, 96.0]])
    pool = PyramidRoIAlign(2, [1], STRIDE)
    out = pool(feats, boxes_to_rois(boxes, torch.tensor([1, 0])))
    torch.testing.assert_close(out.flatten(1), torch.tensor([[105.5, 103.5], [5.5, 3.5]]))


def test_boxes_to_rois() -> None:
    boxes = torch.tensor([[1.0, 2, 3, 4], [5.0, 6, 7, 8]])
    torch.testing.assert_close(boxes_to_rois(boxes), torch.tensor([[0.0, 1, 2, 3, 4], [0.0, 5, 6, 7, 8]]))
    torch.testing.assert_close(boxes_to_rois(boxes, 3), torch.tensor([[3.0, 1, 2, 3, 4], [3.0, 5, 6, 7, 8]]))
    torch.testing.assert_close(boxes_to_rois(boxes, torch.tensor([2, 0])), torch.tensor([[2.0, 1, 2, 3, 4], [0.0, 5, 6, 7, 8]]))


@pytest.mark.parametrize("mode", ["pyramid", "single"])
def test_pooling_is_per_box(mode: str) -> None:
    # K boxes at once give what each gives alone (no cross-talk in the fused levels).
    torch.manual_seed(0)
    feats = torch.randn(1, 4, 16, 16)
    boxes = torch.tensor([[0.0, 0, 50, 80], [100, 120, 250, 200], [30, 30, 31, 31]])
    pool = PyramidRoIAlign(4, [6, 3, 1], STRIDE, mode)
    batch = pool(feats, boxes_to_rois(boxes))
    for i in range(3):
        torch.testing.assert_close(pool(feats, boxes_to_rois(boxes[i : i + 1]))[0], batch[i])
