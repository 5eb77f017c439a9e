"""Siamese RPN: anchor grid, depthwise cross-correlation, decoding and NMS down to N proposals."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import nms

from cract_core import geometry
from cract_core.config import RPNConfig
from cract_core.rpn import (
    RPNHead,
    decode_anchor_offsets,
    make_anchors,
    score_map_size,
    select_proposals,
    xcorr_depthwise,
)

RATIOS = [0.33, 0.5, 1.0, 2.0, 3.0]
STRIDE = 16
SCALE = 4.0


def test_score_map_size_for_127_255_at_stride_16() -> None:
    # search features ceil(255/16) = 16, template ceil(127/16) = 8; after the two 3x3 valid convs
    # 14 and 6; cross-correlation 14 - 6 + 1 = 9.
    assert score_map_size(255, 127, 16) == 9
    # 287 search (a larger region): ceil(287/16) = 18 -> 18 - 8 + 1 = 11
    assert score_map_size(287, 127, 16) == 11


@pytest.fixture(scope="module")
def anchors() -> torch.Tensor:
    return make_anchors(RATIOS, SCALE, STRIDE, 9, 255)


def test_anchor_count_and_shape(anchors: torch.Tensor) -> None:
    # A * S * S = 5 * 9 * 9 = 405 anchors, cxcywh
    assert anchors.shape == (5 * 9 * 9, 4) == (405, 4)
    assert anchors.dtype == torch.float32


def test_anchor_centres(anchors: torch.Tensor) -> None:
    grid = anchors.reshape(5, 9, 9, 4)  # (anchor, row, column) order as documented
    # The centre cell (4, 4) of every ratio sits at the crop centre 255 / 2 = 127.5.
    for a in range(5):
        torch.testing.assert_close(grid[a, 4, 4, :2], torch.tensor([127.5, 127.5]))
    # Columns move x by 16, rows move y by 16: cell (r, c) -> (127.5 + 16 (c - 4), 127.5 + 16 (r - 4)).
    # Cell (0, 0): 127.5 - 64 = 63.5; cell (8, 8): 127.5 + 64 = 191.5; cell (row 2, col 7): (175.5, 95.5).
    torch.testing.assert_close(grid[0, 0, 0, :2], torch.tensor([63.5, 63.5]))
    torch.testing.assert_close(grid[3, 8, 8, :2], torch.tensor([191.5, 191.5]))
    torch.testing.assert_close(grid[1, 2, 7, :2], torch.tensor([175.5, 95.5]))
    dx = grid[:, :, 1:, 0] - grid[:, :, :-1, 0]
    dy = grid[:, 1:, :, 1] - grid[:, :-1, :, 1]
    assert torch.all(dx == 16) and torch.all(dy == 16)
    assert torch.all(grid[:, :, 1:, 1] == grid[:, :, :-1, 1])  # along a row y is constant
    # The grid is symmetric about the crop centre.
    torch.testing.assert_close(anchors[:, :2].mean(0), torch.tensor([127.5, 127.5]))


def test_anchor_sizes(anchors: torch.Tensor) -> None:
    grid = anchors.reshape(5, 81, 4)
    base = SCALE * STRIDE  # 64 px
    for a, r in enumerate(RATIOS):
        w, h = grid[a, :, 2], grid[a, :, 3]
        assert torch.all(w == w[0]) and torch.all(h == h[0])  # one size per ratio over the grid
        # area (scale * stride)^2 = 4096 and h / w = ratio; e.g. r = 2: w = 64/sqrt2 = 45.25, h = 90.51
        assert float(w[0] * h[0]) == pytest.approx(base * base, rel=1e-5)
        assert float(h[0] / w[0]) == pytest.approx(r, rel=1e-5)
        assert float(w[0]) == pytest.approx(base / math.sqrt(r), rel=1e-5)
    # ratio 1 is the 64 x 64 square
    torch.testing.assert_close(grid[2, 0, 2:], torch.tensor([64.0, 64.0]))


def test_xcorr_depthwise_by_hand() -> None:
    # Batch 2, 2 channels. Search channel = 3x3 ramp 0..8, kernel 2x2:
    #   [[0,1,2],[3,4,5],[6,7,8]] * [[1,0],[0,1]] -> [[0+4, 1+5], [3+7, 4+8]] = [[4, 6], [10, 12]]
    #   * [[1,1],[1,1]] -> [[0+1+3+4, 1+2+4+5], [3+4+6+7, 4+5+7+8]] = [[8, 12], [20, 24]]
    ramp = torch.arange(9.0).view(3, 3)
    search = torch.stack([torch.stack([ramp, ramp]), torch.stack([ramp, 2 * ramp])])  # (2, 2, 3, 3)
    eye, ones = torch.eye(2), torch.ones(2, 2)
    kernel = torch.stack([torch.stack([eye, ones]), torch.stack([ones, eye])])  # (2, 2, 2, 2)
    out = xcorr_depthwise(search, kernel)
    expected = torch.stack([
        torch.stack([torch.tensor([[4.0, 6], [10, 12]]), torch.tensor([[8.0, 12], [20, 24]])]),
        # second pair: channel 0 ones on ramp -> [[8,12],[20,24]]; channel 1 eye on 2*ramp -> 2*[[4,6],[10,12]]
        torch.stack([torch.tensor([[8.0, 12], [20, 24]]), torch.tensor([[8.0, 12], [20, 24]])]),
    ])
    torch.testing.assert_close(out, expected)


def test_rpn_head_output_layout() -> None:
    torch.manual_seed(0)
    head = RPNHead(32, 16, 5).eval()
    z, x = torch.randn(2, 32, 8, 8), torch.randn(2, 32, 16, 16)
    cls, loc = head(z, x)
    assert cls.shape == (2, 2, 5, 9, 9)
    assert loc.shape == (2, 4, 5, 9, 9)
    # Template kernels computed once give the same result as the full forward (the tracker's path).
    cls2, loc2 = head.forward_with_kernels(head.kernels(z), x)
    torch.testing.assert_close(cls2, cls)
    torch.testing.assert_close(loc2, loc)
    # Each pair is correlated with its own template: pair 1 alone gives the batch's pair 1.
    cls1, _ = head(z[1:], x[1:])
    torch.testing.assert_close(cls1[0], cls[1], atol=1e-5, rtol=1e-5)


def test_decode_anchor_offsets_by_hand(anchors: torch.Tensor) -> None:
    std = (0.1, 0.1, 0.2, 0.2)
    loc = torch.zeros(1, 4, 5, 9, 9)
    # Zero offsets give the anchors themselves (in xyxy).
    torch.testing.assert_close(decode_anchor_offsets(loc, anchors, std)[0], geometry.cxcywh_to_xyxy(anchors))
    # Centre square anchor (ratio 1, cell 4,4): cx = cy = 127.5, 64 x 64. Raw offsets (1, -2, ln2 / 0.2, 0)
    # -> scaled (0.1, -0.2, ln 2, 0) -> cx = 127.5 + 6.4 = 133.9, cy = 127.5 - 12.8 = 114.7, w = 128, h = 64
    # -> xyxy (69.9, 82.7, 197.9, 146.7).
    loc[0, :, 2, 4, 4] = torch.tensor([1.0, -2.0, math.log(2.0) / 0.2, 0.0])
    boxes = decode_anchor_offsets(loc, anchors, std)
    idx = 2 * 81 + 4 * 9 + 4
    torch.testing.assert_close(boxes[0, idx], torch.tensor([69.9, 82.7, 197.9, 146.7]))


def _random_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * 200
    wh = torch.rand(n, 2, generator=gen) * 60 + 4
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iou", [0.3, 0.6])
def test_select_proposals_agrees_with_torchvision_nms(seed: int, iou: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    boxes = _random_boxes(300, gen)
    scores = torch.rand(300, generator=gen)
    ref = nms(boxes, scores, iou)  # kept indices, by decreasing score
    # N large and no pre-NMS cut: exactly torchvision's kept set, in its order.
    props, sc, idx = select_proposals(scores, boxes, ref.numel(), iou, 300)
    torch.testing.assert_close(idx, ref)
    torch.testing.assert_close(props, boxes[ref])
    torch.testing.assert_close(sc, scores[ref])
    # N = 10: its first ten.
    _, sc10, idx10 = select_proposals(scores, boxes, 10, iou, 300)
    torch.testing.assert_close(idx10, ref[:10])
    assert torch.all(sc10[:-1] >= sc10[1:])
    # A pre-NMS cut to the top 100 equals NMS over those 100 boxes only.
    top = scores.topk(100).indices
    ref_top = top[nms(boxes[top], scores[top], iou)]
    _, _, idx_top = select_proposals(scores, boxes, ref_top.numel(), iou, 100)
    torch.testing.assert_close(idx_top, ref_top)


def test_select_proposals_pads_to_n_when_nms_leaves_fewer() -> None:
    # Three near-identical boxes (IoU > 0.6 with each other) and one far away: NMS keeps 2 of 4.
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.5, 0, 10.5, 10], [0, 0.5, 10, 10.5], [50, 50, 60, 60]])
    scores = torch.tensor([0.5, 0.9, 0.3, 0.2])
    props, sc, idx = select_proposals(scores, boxes, 10, 0.6, 100)
    assert props.shape == (10, 4) and sc.shape == (10,) and idx.shape == (10,)
    # kept: index 1 (0.9) then index 3 (0.2); the last kept one repeated to fill N = 10
    assert idx.tolist() == [1, 3] + [3] * 8
    torch.testing.assert_close(sc, torch.tensor([0.9] + [0.2] * 9))
    torch.testing.assert_close(props[2:], boxes[3].expand(8, 4))


def test_select_proposals_with_fewer_candidates_than_pre_nms_top_n() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]])
    scores = torch.tensor([0.1, 0.7])
    _, sc, idx = select_proposals(scores, boxes, 3, 0.6, 100)
    assert idx.tolist() == [1, 0, 0]
    torch.testing.assert_close(sc, torch.tensor([0.7, 0.1, 0.1]))


def test_rpn_config_defaults_match_anchor_grid() -> None:
    cfg = RPNConfig()
    a = make_anchors(cfg.anchor_ratios, cfg.anchor_scale, STRIDE, 9, 255)
    assert a.shape[0] == len(cfg.anchor_ratios) * 81
