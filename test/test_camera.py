"""cract_core.camera: bearings of pixels against values worked out by hand, and against OpenCV.

Each hand case picks a ray, writes down the pixel the camera model puts it at (the forward model
is closed-form: the arithmetic is in the comments), and checks that the bearing of that pixel is
the ray's angles within 1e-4 rad (the issue's tolerance; the solver reaches ~1e-12).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from cract_core.camera import CameraModel, CameraModelError, box_centre_pixel

TOL = 1e-4  # rad


def k_matrix(fx: float, fy: float, cx: float, cy: float, skew: float = 0.0) -> list[float]:
    return [fx, skew, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]


def assert_bearing(cam: CameraModel, u: float, v: float, horizontal: float, vertical: float) -> None:
    h, vv = cam.bearing(u, v)
    assert abs(float(h) - horizontal) < TOL and abs(float(vv) - vertical) < TOL, (
        f"pixel ({u}, {v}): got ({float(h):.7f}, {float(vv):.7f}), expected ({horizontal:.7f}, {vertical:.7f})")


def test_pinhole_bearings_by_hand() -> None:
    cam = CameraModel.from_matrix(640, 480, k_matrix(500.0, 400.0, 320.0, 240.0), "plumb_bob", [0.0] * 5)
    assert_bearing(cam, 320.0, 240.0, 0.0, 0.0)                   # the principal point: the optical axis
    assert_bearing(cam, 820.0, 240.0, math.pi / 4, 0.0)           # x = (820 - 320) / 500 = 1 -> 45 deg
    assert_bearing(cam, 70.0, 240.0, -0.4636476, 0.0)             # x = -250 / 500 = -0.5 -> atan(-0.5)
    assert_bearing(cam, 320.0, 640.0, 0.0, math.pi / 4)           # y = 400 / 400 = 1 -> 45 deg down
    # x = y = 1: horizontal atan2(1, 1) = 45 deg; vertical atan2(1, hypot(1, 1)) = atan(1 / sqrt 2) = 0.6154797
    assert_bearing(cam, 820.0, 640.0, math.pi / 4, 0.6154797)
    # skew 50: u = cx + fx x + skew y; x = 0.2, y = 0.4 -> u = 320 + 100 + 20 = 440, v = 240 + 160 = 400
    skewed = CameraModel.from_matrix(640, 480, k_matrix(500.0, 400.0, 320.0, 240.0, skew=50.0), "plumb_bob", [0.0] * 5)
    assert_bearing(skewed, 440.0, 400.0, math.atan(0.2), math.atan2(0.4, math.hypot(0.2, 1.0)))


def test_box_centre_is_in_calibration_pixel_coordinates() -> None:
    # a box over columns 810..830 (21 px from x = 810) has its middle column 820 as centre
    assert box_centre_pixel(810.0, 230.0, 21.0, 21.0) == (820.0, 240.0)
    assert box_centre_pixel(0.0, 0.0, 1.0, 1.0) == (0.0, 0.0)  # one pixel: its own centre


def test_plumb_bob_bearings_by_hand() -> None:
    fx = fy = 500.0
    cx, cy = 320.0, 240.0
    # k1 = 0.1 only; ray x = 0.5, y = 0: r^2 = 0.25, radial = 1 + 0.1 * 0.25 = 1.025, xd = 0.5125
    # -> u = 320 + 500 * 0.5125 = 576.25; the bearing is atan(0.5) = 0.4636476, not atan(0.5125) = 0.4738
    cam = CameraModel.from_matrix(640, 480, k_matrix(fx, fy, cx, cy), "plumb_bob", [0.1, 0.0, 0.0, 0.0, 0.0])
    assert_bearing(cam, 576.25, 240.0, 0.4636476, 0.0)
    # k1 = -0.2, k2 = 0.05, p1 = 0.001, p2 = -0.002, k3 = 0.01; ray x = 0.3, y = -0.2:
    #   r^2 = 0.13; radial = 1 - 0.2 * 0.13 + 0.05 * 0.0169 + 0.01 * 0.002197 = 0.97486697
    #   xd = 0.3 * radial + 2 p1 x y + p2 (r^2 + 2 x^2) = 0.292460091 - 0.00012 - 0.00062 = 0.291720091
    #   yd = -0.2 * radial + p1 (r^2 + 2 y^2) + 2 p2 x y = -0.194973394 + 0.00021 + 0.00024 = -0.194523394
    #   u = 320 + 500 xd = 465.8600455, v = 240 + 500 yd = 142.738303
    # bearing: atan2(0.3, 1) = 0.2914568, atan2(-0.2, sqrt(1.09)) = -0.1892722
    cam = CameraModel.from_matrix(640, 480, k_matrix(fx, fy, cx, cy), "plumb_bob", [-0.2, 0.05, 0.001, -0.002, 0.01])
    assert_bearing(cam, 465.8600455, 142.738303, 0.2914568, -0.1892722)


def test_rational_polynomial_by_hand() -> None:
    # k1 = 0.1, k4 = 0.2 (denominator), rest 0; ray x = 0.5, y = 0: r^2 = 0.25,
    # radial = (1 + 0.025) / (1 + 0.05) = 0.976190476, xd = 0.488095238 -> u = 320 + 244.047619 = 564.047619
    cam = CameraModel.from_matrix(640, 480, k_matrix(500.0, 500.0, 320.0, 240.0), "rational_polynomial",
                                  [0.1, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0, 0.0])
    assert_bearing(cam, 564.047619, 240.0, 0.4636476, 0.0)


def test_equidistant_bearings_by_hand() -> None:
    fx = fy = 500.0
    cx, cy = 320.0, 240.0
    # k1 = 0.1; ray x = 0.5, y = 0: theta = atan(0.5) = 0.4636476, theta^2 = 0.2149691,
    # theta_d = theta (1 + 0.1 theta^2) = 0.4636476 * 1.0214969 = 0.4736146 -> u = 320 + 236.8073 = 556.8073
    cam = CameraModel.from_matrix(640, 480, k_matrix(fx, fy, cx, cy), "equidistant", [0.1, 0.0, 0.0, 0.0])
    assert_bearing(cam, 556.8073, 240.0, 0.4636476, 0.0)
    # a ray 100 deg to the right of the axis (behind the image plane: only a fisheye sees it):
    # k = 0, theta = 1.7453293 = r_d -> u = 320 + 500 * 1.7453293 = 1192.66463; horizontal angle 1.7453293
    wide = CameraModel.from_matrix(1280, 1280, k_matrix(fx, fy, cx, cy), "equidistant", [0.0] * 4)
    assert_bearing(wide, 1192.66463, 240.0, 1.7453293, 0.0)
    # diagonal ray at theta = 0.5, phi = 45 deg: r_d = 0.5 -> (xd, yd) = 0.5 (cos 45, sin 45) = 0.35355339 each
    # -> u = 320 + 176.776695, v = 240 + 176.776695; the ray (sin 0.5 cos 45, sin 0.5 sin 45, cos 0.5)
    # = (0.3390050, 0.3390050, 0.8775826): horizontal atan2(0.3390050, 0.8775826) = 0.3686355,
    # vertical atan2(0.3390050, hypot(0.3390050, 0.8775826) = 0.9407857) = 0.3458591
    assert_bearing(wide, 496.776695, 416.776695, 0.3686355, 0.3458591)


def test_matches_opencv_undistortion_to_1e9() -> None:
    """An independent implementation: OpenCV's iterative undistortion, run to convergence."""
    k = np.array(k_matrix(460.0, 455.0, 319.5, 239.5)).reshape(3, 3)
    rng = np.random.default_rng(7)
    pts = rng.uniform([0, 0], [640, 480], (500, 2))
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)
    for model, d, undistort in [
        ("plumb_bob", [-0.28, 0.09, 0.001, -0.0005, -0.012],
         lambda p, d: cv2.undistortPoints(p, k, np.array(d), criteria=criteria)),
        ("rational_polynomial", [0.3, -0.1, 0.0008, 0.0002, 0.01, 0.5, -0.05, 0.02],
         lambda p, d: cv2.undistortPoints(p, k, np.array(d), criteria=criteria)),
        ("equidistant", [0.05, -0.01, 0.002, -0.0003],
         lambda p, d: cv2.fisheye.undistortPoints(p, k, np.array(d), criteria=criteria)),
    ]:
        cam = CameraModel.from_matrix(640, 480, k.ravel(), model, d)
        rays = cam.rays(pts[:, 0], pts[:, 1])
        ours = rays[:, :2] / rays[:, 2:]
        theirs = undistort(pts.reshape(-1, 1, 2), d).reshape(-1, 2)
        assert np.all(np.isfinite(ours)), model
        np.testing.assert_allclose(ours, theirs, atol=1e-9, err_msg=model)
        # and the forward model takes the rays back to the pixels
        np.testing.assert_allclose(cam.project(rays), pts, atol=1e-7, err_msg=model)


def test_binning_and_roi_map_to_the_full_resolution_calibration() -> None:
    full = CameraModel.from_matrix(1280, 960, k_matrix(900.0, 900.0, 640.0, 480.0), "plumb_bob",
                                   [-0.1, 0.01, 0.0, 0.0, 0.0])
    # a 2x2-binned 300x200 window starting at (100, 60) of the full image
    binned = CameraModel.from_matrix(300, 200, k_matrix(900.0, 900.0, 640.0, 480.0), "plumb_bob",
                                     [-0.1, 0.01, 0.0, 0.0, 0.0], binning=(2, 2), roi=(100, 60))
    for u, v in [(0.0, 0.0), (150.0, 100.0), (299.0, 199.0)]:
        np.testing.assert_allclose(binned.bearing(u, v), full.bearing(100 + 2 * u, 60 + 2 * v), atol=1e-12)


@pytest.mark.parametrize("k, model, d, needle", [
    (k_matrix(0.0, 0.0, 320.0, 240.0), "plumb_bob", [0.0] * 5, "focal length fx=0, fy=0 must be > 0"),
    (k_matrix(500.0, 500.0, 320.0, 240.0), "kannala_brandt", [0.0] * 4, "unknown distortion model 'kannala_brandt'"),
    (k_matrix(500.0, 500.0, 320.0, 240.0), "plumb_bob", [0.1, 0.0, 0.0, 0.0], "plumb_bob needs 5 coefficients in D, got 4"),
    (k_matrix(500.0, 500.0, 320.0, 240.0), "equidistant", [0.0] * 5, "equidistant needs 4 coefficients in D, got 5"),
    (k_matrix(500.0, 500.0, 320.0, 240.0), "plumb_bob", [float("nan")] + [0.0] * 4, "D has NaN"),
    (k_matrix(500.0, float("inf"), 320.0, 240.0), "plumb_bob", [0.0] * 5, "fy is inf"),
])
def test_unusable_calibrations_are_refused_with_the_reason(k, model, d, needle) -> None:
    with pytest.raises(CameraModelError) as info:
        CameraModel.from_matrix(640, 480, k, model, d)
    assert needle in str(info.value)
    with pytest.raises(CameraModelError, match="K must have 9 elements, got 4"):
        CameraModel.from_matrix(640, 480, [1.0, 2.0, 3.0, 4.0], "plumb_bob", [0.0] * 5)


def test_pixels_outside_the_calibrated_field_have_no_ray() -> None:
    """Strong barrel k1 = -0.5: xd = x (1 - 0.5 x^2) peaks at x = sqrt(2/3), xd = 0.5443; a pixel at
    xd = 0.6 has no preimage and must come back NaN, never a wrong angle."""
    cam = CameraModel.from_matrix(640, 480, k_matrix(500.0, 500.0, 320.0, 240.0), "plumb_bob", [-0.5, 0.0, 0.0, 0.0, 0.0])
    h, v = cam.bearing(320.0 + 500.0 * 0.6, 240.0)
    assert math.isnan(float(h)) and math.isnan(float(v))
    # inside the field the same camera works: x = 0.5 -> xd = 0.5 * (1 - 0.125) = 0.4375
    assert_bearing(cam, 320.0 + 500.0 * 0.4375, 240.0, 0.4636476, 0.0)
