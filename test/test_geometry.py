"""Box geometry: Eq. 4, IoU in every format, clipping, square crops and their coordinate maps.

Every expectation below is worked out by hand in a comment, not taken from the code under test.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cract_core import geometry as g
from cract_core.geometry import InvalidBoxError


# --------------------------------------------------------------------------- Eq. 4


def test_eq4_decode_worked_example() -> None:
    # Box xywh (10, 20, 40, 80): centre (10 + 40/2, 20 + 80/2) = (30, 60), w = 40, h = 80.
    # Offsets r = (0.25, -0.5, ln 2, 0):
    #   x~ = 30 + 40 * 0.25   = 40
    #   y~ = 60 + 80 * (-0.5) = 20
    #   w~ = 40 * e^(ln 2)    = 80
    #   h~ = 80 * e^0         = 80
    # -> centre (40, 20), size 80 x 80 -> xywh (40 - 40, 20 - 40, 80, 80) = (0, -20, 80, 80)
    #    -> xyxy (0, -20, 80, 60).
    box = np.array([10.0, 20.0, 40.0, 80.0])
    r = np.array([0.25, -0.5, math.log(2.0), 0.0])
    np.testing.assert_allclose(g.decode_offsets(box, r, fmt="xywh"), [0.0, -20.0, 80.0, 80.0], atol=1e-9)
    np.testing.assert_allclose(g.decode_offsets(g.xywh_to_xyxy(box), r, fmt="xyxy"), [0.0, -20.0, 80.0, 60.0], atol=1e-9)
    np.testing.assert_allclose(g.decode_offsets(g.xywh_to_cxcywh(box), r, fmt="cxcywh"), [40.0, 20.0, 80.0, 80.0], atol=1e-9)
    # The same in torch (the network's path) gives the same numbers and stays a tensor.
    out = g.decode_offsets(torch.tensor(box), torch.tensor(r), fmt="xywh")
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, torch.tensor([0.0, -20.0, 80.0, 80.0], dtype=torch.float64))


def test_eq4_encode_worked_example() -> None:
    # From box centre (30, 60) size 40x80 to target centre (40, 20) size 80x80 (the example above):
    #   dx = (40 - 30) / 40 = 0.25, dy = (20 - 60) / 80 = -0.5, dw = ln(80/40) = ln 2, dh = ln(80/80) = 0.
    box = np.array([10.0, 20.0, 40.0, 80.0])
    target = np.array([0.0, -20.0, 80.0, 80.0])
    np.testing.assert_allclose(g.encode_offsets(box, target, fmt="xywh"), [0.25, -0.5, math.log(2.0), 0.0], atol=1e-12)
    # A second case with a shrink: box xyxy (0, 0, 100, 50), centre (50, 25); target xyxy (60, 10, 80, 60),
    # centre (70, 35), size 20x50:
    #   dx = (70 - 50)/100 = 0.2, dy = (35 - 25)/50 = 0.2, dw = ln(20/100) = -ln 5, dh = ln(50/50) = 0.
    r = g.encode_offsets(torch.tensor([0.0, 0.0, 100.0, 50.0]), torch.tensor([60.0, 10.0, 80.0, 60.0]), fmt="xyxy")
    torch.testing.assert_close(r, torch.tensor([0.2, 0.2, -math.log(5.0), 0.0]))


@pytest.mark.parametrize("fmt", ["xywh", "xyxy", "cxcywh"])
def test_eq4_round_trip_random_boxes(fmt: str) -> None:
    gen = torch.Generator().manual_seed(1)
    n = 500
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 400 - 50
    # Sizes 5..200 px keep every size ratio under 40, inside decode's clamp of ln(1000/16)
    # (ratio 62.5), which is deliberate (no exp overflow) and tested separately below.
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 195 + 5
    boxes_xywh = torch.cat([xy, wh], dim=1)
    xy_t = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 400 - 50
    wh_t = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 195 + 5
    targets_xywh = torch.cat([xy_t, wh_t], dim=1)
    conv = {"xywh": lambda b: b, "xyxy": g.xywh_to_xyxy, "cxcywh": g.xywh_to_cxcywh}[fmt]
    boxes, tgts = conv(boxes_xywh), conv(targets_xywh)
    # decode(encode(target)) == target
    r = g.encode_offsets(boxes, tgts, fmt=fmt)
    torch.testing.assert_close(g.decode_offsets(boxes, r, fmt=fmt), tgts, atol=1e-8, rtol=1e-8)
    # encode(decode(r)) == r for offsets within the clamp
    r2 = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(g.encode_offsets(boxes, g.decode_offsets(boxes, r2, fmt=fmt), fmt=fmt), r2, atol=1e-8, rtol=1e-8)
    # numpy gives the same as torch
    np.testing.assert_allclose(g.encode_offsets(boxes.numpy(), tgts.numpy(), fmt=fmt), r.numpy(), atol=1e-10)


def test_eq4_decode_clamps_huge_log_scale() -> None:
    # dw = 100 would overflow exp in float32; the clamp at MAX_LOG_SCALE = ln(1000/16) keeps it finite:
    # a 16-px box grows to at most 16 * 1000/16 = 1000 px.
    out = g.decode_offsets(torch.tensor([[0.0, 0.0, 16.0, 16.0]]), torch.tensor([[0.0, 0.0, 100.0, 100.0]]), fmt="cxcywh")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 1000.0, 1000.0]]))


# --------------------------------------------------------------------------- conversions and IoU


def test_format_conversions_by_hand() -> None:
    # xywh (10, 20, 30, 40) -> xyxy (10, 20, 40, 60) -> cxcywh (25, 40, 30, 40)
    b = np.array([10.0, 20.0, 30.0, 40.0])
    np.testing.assert_array_equal(g.xywh_to_xyxy(b), [10, 20, 40, 60])
    np.testing.assert_array_equal(g.xywh_to_cxcywh(b), [25, 40, 30, 40])
    np.testing.assert_array_equal(g.cxcywh_to_xyxy(np.array([25.0, 40, 30, 40])), [10, 20, 40, 60])
    np.testing.assert_array_equal(g.xyxy_to_cxcywh(np.array([10.0, 20, 40, 60])), [25, 40, 30, 40])
    np.testing.assert_array_equal(g.xyxy_to_xywh(np.array([10.0, 20, 40, 60])), b)
    with pytest.raises(ValueError, match="unknown box format"):
        g.to_xyxy(b, "ltrb")


# Hand cases, each as xyxy; expected IoU worked out in the comment.
IOU_CASES = [
    # identical: 1
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    # disjoint: 0
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
    # touching along an edge (x = 10): intersection has zero width -> 0
    ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),
    # touching at a corner only -> 0
    ([0, 0, 10, 10], [10, 10, 20, 20], 0.0),
    # contained: 2x2 inside 10x10 -> 4 / 100
    ([0, 0, 10, 10], [2, 2, 4, 4], 0.04),
    # half overlap: [0,10]x[0,10] and [5,15]x[0,10] -> inter 5*10 = 50, union 100 + 100 - 50 = 150 -> 1/3
    ([0, 0, 10, 10], [5, 0, 15, 10], 1.0 / 3.0),
    # corner overlap: [0,4]x[0,4] and [2,6]x[2,6] -> inter 2*2 = 4, union 16 + 16 - 4 = 28 -> 1/7
    ([0, 0, 4, 4], [2, 2, 6, 6], 1.0 / 7.0),
    # zero-area box (a point) against a box: 0
    ([5, 5, 5, 5], [0, 0, 10, 10], 0.0),
    # two identical zero-area boxes: union 0 -> 0, not NaN
    ([5, 5, 5, 5], [5, 5, 5, 5], 0.0),
    # inverted box (x2 < x1): area clamps to 0 -> 0
    ([10, 10, 0, 0], [0, 0, 10, 10], 0.0),
    # NaN -> 0
    ([math.nan, 0, 10, 10], [0, 0, 10, 10], 0.0),
]


def _from_xyxy(b: np.ndarray, fmt: str) -> np.ndarray:
    return {"xyxy": lambda x: x, "xywh": g.xyxy_to_xywh, "cxcywh": g.xyxy_to_cxcywh}[fmt](b)


@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_iou_hand_cases(fmt: str, lib: str) -> None:
    a = np.array([c[0] for c in IOU_CASES], dtype=np.float64)
    b = np.array([c[1] for c in IOU_CASES], dtype=np.float64)
    expected = np.array([c[2] for c in IOU_CASES])
    a, b = _from_xyxy(a, fmt), _from_xyxy(b, fmt)
    if lib == "torch":
        out = g.iou(torch.tensor(a), torch.tensor(b), fmt=fmt).numpy()
    else:
        out = g.iou(a, b, fmt=fmt)
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out, expected, atol=1e-12)
    # symmetric
    out_ba = g.iou(b, a, fmt=fmt) if lib == "numpy" else g.iou(torch.tensor(b), torch.tensor(a), fmt=fmt).numpy()
    np.testing.assert_allclose(out_ba, expected, atol=1e-12)


def test_iou_xywh_hand_case_directly() -> None:
    # Written in xywh on purpose (not converted by the helper): (0,0,10,10) and (5,5,10,10)
    # -> inter [5,10]x[5,10] = 25, union 100 + 100 - 25 = 175 -> 1/7.
    assert g.iou(np.array([0.0, 0, 10, 10]), np.array([5.0, 5, 10, 10]), fmt="xywh") == pytest.approx(1 / 7)
    # cxcywh (5,5,10,10) is xyxy (0,0,10,10); (10,5,10,10) is (5,0,15,10) -> 50 / 150 = 1/3
    assert g.iou(np.array([5.0, 5, 10, 10]), np.array([10.0, 5, 10, 10]), fmt="cxcywh") == pytest.approx(1 / 3)


def test_pairwise_iou_shape_and_values() -> None:
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 4, 4]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [2, 2, 6, 6]])
    m = g.pairwise_iou(a, b)
    assert m.shape == (2, 3)
    # row 0: 1, 1/3, inter 4*4=16 / 100 = 0.16 ; row 1: 16/100, 0, 1/7
    torch.testing.assert_close(m, torch.tensor([[1.0, 1 / 3, 0.16], [0.16, 0.0, 1 / 7]]))


def test_center_distance() -> None:
    # centres (5, 5) and (8, 9): sqrt(3^2 + 4^2) = 5
    assert g.center_distance(np.array([0.0, 0, 10, 10]), np.array([3.0, 4, 10, 10])) == pytest.approx(5.0)


# --------------------------------------------------------------------------- clipping


def test_clip_box_partly_outside_is_clipped() -> None:
    # xywh (-10, -5, 30, 20) -> xyxy (-10, -5, 20, 15) -> clipped (0, 0, 20, 15) -> xywh (0, 0, 20, 15)
    np.testing.assert_array_equal(g.clip_box_to_image([-10, -5, 30, 20], (100, 50)), [0, 0, 20, 15])
    # bottom-right: (90, 40, 30, 20) -> (90, 40, 120, 60) -> (90, 40, 100, 50) -> (90, 40, 10, 10)
    np.testing.assert_array_equal(g.clip_box_to_image([90, 40, 30, 20], (100, 50)), [90, 40, 10, 10])
    # inside: unchanged, float64
    out = g.clip_box_to_image(torch.tensor([1.5, 2.5, 10.0, 20.0]), (100, 50))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [1.5, 2.5, 10, 20])


@pytest.mark.parametrize(
    "box, message",
    [
        ([200, 10, 20, 20], "wholly outside"),
        ([-50, 10, 20, 20], "wholly outside"),  # x2 = -30 < 0
        ([100, 10, 20, 20], "wholly outside"),  # starts exactly at the right edge: nothing inside
        ([10, 10, 1.5, 20], "smaller than 2"),
        ([10, 10, 20, 0], "smaller than 2"),
        ([10, 10, -5, 20], "smaller than 2"),
        ([-19, 10, 20, 20], "after clipping"),  # 1 px inside on the left
        ([math.nan, 10, 20, 20], "NaN"),
        ([10, 10, math.inf, 20], "NaN or infinite"),
        ([10, 10, 20], "4 numbers"),
        (None, "None"),
    ],
)
def test_clip_box_invalid_raises_with_reason(box, message: str) -> None:
    with pytest.raises(InvalidBoxError, match=message):
        g.clip_box_to_image(box, (100, 50))


def test_invalid_box_error_is_a_value_error() -> None:
    # Callers (the node's service) catch ValueError for bad user input.
    assert issubclass(InvalidBoxError, ValueError)


# --------------------------------------------------------------------------- crops


def _ramp_image(w: int, h: int) -> np.ndarray:
    """float32 image whose channel 0 is the column u and channel 1 the row v: bilinear resampling of
    it is exact, so the crop's value at a pixel says which image point was sampled there."""
    img = np.zeros((h, w, 3), dtype=np.float32)
    img[..., 0] = np.arange(w, dtype=np.float32)[None, :]
    img[..., 1] = np.arange(h, dtype=np.float32)[:, None]
    img[..., 2] = 1000.0
    return img


def test_crop_square_integer_translation_is_exact() -> None:
    # side == out_size -> scale 1; centre (50, 40), out 64: crop pixel (x, y) = image pixel (x - 32 + 50, y - 32 + 40).
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(80, 120, 3), dtype=np.uint8)
    crop, scale = g.crop_square(img, (50.0, 40.0), 64.0, 64)
    assert scale == 1.0 and crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, img[8:72, 18:82])


def test_crop_square_known_pixels_and_padding() -> None:
    # Image 120 x 80 ramp; crop centred (10, 20) with side 50 -> out 100: scale s = 100 / 50 = 2.
    # Crop pixel (x, y) samples image point ((x - 50) / 2 + 10, (y - 50) / 2 + 20).
    img = _ramp_image(120, 80)
    pad = (-7.0, -8.0, -9.0)
    crop, scale = g.crop_square(img, (10.0, 20.0), 50.0, 100, pad_value=pad)
    assert scale == pytest.approx(2.0)
    # crop (70, 60) -> image (10 + 10, 20 + 5) = (20, 25)
    np.testing.assert_allclose(crop[60, 70, :2], [20.0, 25.0], atol=1 / 16)
    # crop (50, 50) is the centre -> image (10, 20)
    np.testing.assert_allclose(crop[50, 50, :2], [10.0, 20.0], atol=1 / 16)
    # crop (31, 50) -> image u = (31 - 50)/2 + 10 = 0.5 (inside, between columns 0 and 1)
    np.testing.assert_allclose(crop[50, 31, 0], 0.5, atol=1 / 16)
    # crop (10, 50) -> image u = (10 - 50)/2 + 10 = -10: outside the image -> padding
    np.testing.assert_array_equal(crop[50, 10], pad)
    # crop (50, 5) -> image v = (5 - 50)/2 + 20 = -2.5: outside -> padding
    np.testing.assert_array_equal(crop[5, 50], pad)
    # every pixel that samples further than one pixel outside is padding; every one inside is the ramp
    ys, xs = np.mgrid[0:100, 0:100]
    u = (xs - 50) / 2 + 10
    v = (ys - 50) / 2 + 20
    outside = (u < -1) | (v < -1) | (u > 120) | (v > 80)
    inside = (u >= 0) & (v >= 0) & (u <= 119) & (v <= 79)
    assert outside.any() and inside.any()
    np.testing.assert_array_equal(crop[outside], np.broadcast_to(np.array(pad, dtype=np.float32), (outside.sum(), 3)))
    np.testing.assert_allclose(crop[inside][:, 0], u[inside], atol=1 / 16)
    np.testing.assert_allclose(crop[inside][:, 1], v[inside], atol=1 / 16)


def test_crop_square_default_pad_is_mean_colour() -> None:
    img = np.zeros((10, 10, 3), dtype=np.uint8)
    img[:5] = (200, 100, 50)  # mean colour (100, 50, 25)
    crop, _ = g.crop_square(img, (0.0, 0.0), 100.0, 100)
    np.testing.assert_array_equal(crop[0, 0], [100, 50, 25])


def test_crop_square_rejects_bad_side() -> None:
    img = np.zeros((10, 10, 3), dtype=np.uint8)
    for side in (0.0, -3.0, math.nan, math.inf):
        with pytest.raises(InvalidBoxError):
            g.crop_square(img, (5.0, 5.0), side, 32)


def test_image_to_crop_agrees_with_the_crop() -> None:
    # Box xywh (20, 24, 8, 6) in the image; crop around (30, 30), side 40, out 80 -> s = 2:
    #   x' = (20 - 30) * 2 + 40 = 20, y' = (24 - 30) * 2 + 40 = 28, w' = 16, h' = 12.
    center, side, out = (30.0, 30.0), 40.0, 80
    scale = out / side
    box = np.array([20.0, 24.0, 8.0, 6.0])
    in_crop = g.image_to_crop(box, center, scale, out)
    np.testing.assert_allclose(in_crop, [20.0, 28.0, 16.0, 12.0])
    # and the crop really shows image point (20, 24) at crop pixel (20, 28), and (28, 30) at (36, 40)
    crop, _ = g.crop_square(_ramp_image(64, 64), center, side, out)
    np.testing.assert_allclose(crop[28, 20, :2], [20.0, 24.0], atol=1 / 16)
    np.testing.assert_allclose(crop[40, 36, :2], [28.0, 30.0], atol=1 / 16)
    # round trip, numpy and torch
    np.testing.assert_allclose(g.crop_to_image(in_crop, center, scale, out), box)
    t = torch.tensor([[20.0, 24.0, 8.0, 6.0], [-5.0, 100.0, 3.0, 50.0]], dtype=torch.float64)
    torch.testing.assert_close(g.crop_to_image(g.image_to_crop(t, center, 1.7, 127), center, 1.7, 127), t)


def test_context_size_by_hand() -> None:
    # w = 40, h = 10, c = 0.5: p = 0.5 * 50 = 25; sqrt((40 + 25) * (10 + 25)) = sqrt(2275)
    assert g.context_size(40, 10, 0.5) == pytest.approx(math.sqrt(2275))


def test_crop_square_stretch_maps_the_box_where_the_pixels_go() -> None:
    # A white 20 x 40 rectangle at (100, 80) in a black 200 x 200 image, cropped around its centre
    # (110, 100) with side 100 -> 100 px (scale 1) and stretch r = 4: x scales by 2, y by 0.5, so
    # the rectangle covers crop x 30..70 and y 40..60 (box [30, 40, 40, 20]).
    image = np.zeros((200, 200, 3), np.uint8)
    image[80:120, 100:120] = 255
    crop, scale = g.crop_square(image, (110.0, 100.0), 100.0, 100, stretch=4.0)
    box = g.image_to_crop(np.array([100.0, 80.0, 20.0, 40.0]), (110.0, 100.0), scale, 100, stretch=4.0)
    np.testing.assert_allclose(box, [30.0, 40.0, 40.0, 20.0])
    cols = np.flatnonzero(crop[50, :, 0] > 127)
    rows = np.flatnonzero(crop[:, 50, 0] > 127)
    # Edges sit within a pixel of the box (bilinear sampling puts a half-white pixel on each edge).
    assert abs(cols.min() - 30) <= 1 and abs(cols.max() + 1 - 70) <= 1 and abs(len(cols) - 40) <= 1
    assert abs(rows.min() - 40) <= 1 and abs(rows.max() + 1 - 60) <= 1 and abs(len(rows) - 20) <= 1
    with pytest.raises(ValueError, match="stretch"):
        g.crop_square(image, (110.0, 100.0), 100.0, 100, stretch=0.0)
