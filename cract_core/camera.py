"""A calibrated camera: pixel <-> ray, and the bearing of a pixel from the optical axis (numpy only).

The calibration is what a ROS sensor_msgs/CameraInfo carries (cract_ros builds a CameraModel from
one; nothing here imports ROS): the 3x3 intrinsic matrix K, a distortion model with its
coefficients D, the calibrated image size, and binning / region of interest.

Distortion models (OpenCV's, under the names ROS gives them):

* ``plumb_bob``: radial-tangential, D = (k1, k2, p1, p2, k3) (cv2.undistortPoints' 5 terms);
* ``rational_polynomial``: D = (k1, k2, p1, p2, k3, k4, k5, k6) (OpenCV's 8-term model);
* ``equidistant``: fisheye, D = (k1, k2, k3, k4) (cv2.fisheye), theta_d = theta (1 + k1 theta^2 + ...).

A distorted pixel is mapped back to its ray by Newton's method on the closed-form forward model,
iterated to 1e-12 in normalised coordinates: cv2.undistortPoints stops after 5 fixed-point steps
by default, which leaves errors above 1e-4 rad near the corners of a strongly distorted lens. A
pixel where the forward model folds over (outside the calibrated field) or where Newton does not
converge has no ray: NaN, never a wrong number.

Pixel coordinates follow OpenCV and ROS calibration: the centre of pixel (column i, row j) is at
(u, v) = (i, j). A tracker box (x, y, w, h) covering columns x .. x + w - 1 therefore has its
centre at u = x + w / 2 - 0.5 (`box_centre_pixel`).

Bearing (`CameraModel.bearing`): for the ray d = (dx, dy, dz) in the camera's optical frame
(x right, y down, z forward), horizontal = atan2(dx, dz) and vertical = atan2(dy, hypot(dx, dz)),
in radians, positive to the right and downwards (the signs of the image axes). A pan of
`horizontal` followed by a tilt of `vertical` points the optical axis at the ray: the angles a
pan-tilt gimbal or a yaw controller needs. `vertical` stays within +-pi/2; a fisheye ray more than
90 degrees off the axis has |horizontal| > pi/2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "CameraModelError",
    "CameraModel",
    "DISTORTION_COEFFICIENTS",
    "box_centre_pixel",
]

# distortion model -> number of coefficients in D
DISTORTION_COEFFICIENTS: dict[str, int] = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}

_NEWTON_ITERATIONS = 50
_NEWTON_TOLERANCE = 1e-12


class CameraModelError(ValueError):
    """A calibration that cannot map pixels to rays; the message says what is wrong."""


def box_centre_pixel(x: float, y: float, width: float, height: float) -> tuple[float, float]:
    """The centre of a box (top-left corner and size, pixel edges) in calibration pixel coordinates."""
    return x + width / 2.0 - 0.5, y + height / 2.0 - 0.5


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics, distortion and image geometry of one camera.

    `width` x `height` is the size of the images the pixels come from (after binning and region of
    interest); `fx, fy, cx, cy, skew` and the distortion are in the full-resolution calibration,
    as CameraInfo gives them. A pixel (u, v) of the image is (roi_x + u * binning_x,
    roi_y + v * binning_y) in the calibration, as ROS's image_geometry maps it.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    skew: float = 0.0
    distortion_model: str = "plumb_bob"
    coefficients: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    binning_x: int = 1
    binning_y: int = 1
    roi_x: int = 0
    roi_y: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "coefficients", tuple(float(c) for c in self.coefficients))
        problems = self.problems()
        if problems:
            raise CameraModelError("; ".join(problems))

    # ----------------------------------------------------------------- construction and checks

    def problems(self) -> list[str]:
        """Why this calibration cannot be used (empty when it can)."""
        out = []
        if self.width <= 0 or self.height <= 0:
            out.append(f"image size {self.width}x{self.height} is empty")
        for name in ("fx", "fy", "cx", "cy", "skew"):
            if not math.isfinite(getattr(self, name)):
                out.append(f"{name} is {getattr(self, name)!r}")
        if not (self.fx > 0 and self.fy > 0):
            out.append(f"focal length fx={self.fx:g}, fy={self.fy:g} must be > 0 (an uncalibrated camera "
                       f"publishes K = 0)")
        want = DISTORTION_COEFFICIENTS.get(self.distortion_model)
        if want is None:
            out.append(f"unknown distortion model {self.distortion_model!r} "
                       f"(supported: {', '.join(DISTORTION_COEFFICIENTS)})")
        elif len(self.coefficients) != want:
            out.append(f"distortion model {self.distortion_model} needs {want} coefficients in D, "
                       f"got {len(self.coefficients)}")
        if not all(math.isfinite(c) for c in self.coefficients):
            out.append(f"D has NaN or infinite values: {list(self.coefficients)}")
        if self.binning_x < 1 or self.binning_y < 1:
            out.append(f"binning {self.binning_x}x{self.binning_y} must be >= 1")
        return out

    @classmethod
    def pinhole(cls, width: int, height: int, fx: float, fy: float, cx: float, cy: float) -> "CameraModel":
        """A camera without distortion."""
        return cls(width, height, fx, fy, cx, cy, distortion_model="plumb_bob", coefficients=(0.0,) * 5)

    @classmethod
    def from_matrix(cls, width: int, height: int, k: Sequence[float], distortion_model: str,
                    d: Sequence[float], binning: tuple[int, int] = (1, 1),
                    roi: tuple[int, int] = (0, 0)) -> "CameraModel":
        """From a row-major 3x3 K (9 numbers, as CameraInfo.k) and D; raises CameraModelError."""
        k = [float(v) for v in k]
        if len(k) != 9:
            raise CameraModelError(f"K must have 9 elements, got {len(k)}")
        return cls(int(width), int(height), fx=k[0], fy=k[4], cx=k[2], cy=k[5], skew=k[1],
                   distortion_model=str(distortion_model), coefficients=tuple(float(v) for v in d),
                   binning_x=max(int(binning[0]), 1), binning_y=max(int(binning[1]), 1),
                   roi_x=int(roi[0]), roi_y=int(roi[1]))

    # ----------------------------------------------------------------- pixel -> ray

    def _to_calibration(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.roi_x + u * self.binning_x, self.roi_y + v * self.binning_y

    def _from_calibration(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (u - self.roi_x) / self.binning_x, (v - self.roi_y) / self.binning_y

    def rays(self, u: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
        """Unit rays (..., 3) in the optical frame through image pixels (u, v); NaN where none."""
        u_c, v_c = self._to_calibration(np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))
        yd = (v_c - self.cy) / self.fy
        xd = (u_c - self.cx - self.skew * yd) / self.fx
        if self.distortion_model == "equidistant":
            return _equidistant_rays(xd, yd, self.coefficients)
        x, y = _undistort_radial_tangential(xd, yd, self.coefficients)
        ray = np.stack([x, y, np.ones_like(x)], axis=-1)
        return ray / np.linalg.norm(ray, axis=-1, keepdims=True)

    def bearing(self, u: np.ndarray | float, v: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(horizontal, vertical) angles in radians of pixels (u, v) from the optical axis (see module doc)."""
        return bearing_of_rays(self.rays(u, v))

    # ----------------------------------------------------------------- ray -> pixel

    def project(self, rays: np.ndarray) -> np.ndarray:
        """Image pixels (..., 2) of rays (..., 3) in the optical frame (the forward model; NaN behind
        a pinhole camera, where z <= 0)."""
        rays = np.asarray(rays, dtype=np.float64)
        dx, dy, dz = rays[..., 0], rays[..., 1], rays[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.distortion_model == "equidistant":
                r = np.hypot(dx, dy)
                theta = np.arctan2(r, dz)
                k1, k2, k3, k4 = self.coefficients
                t2 = theta * theta
                theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
                scale = np.where(r > 0, theta_d / np.where(r > 0, r, 1.0), 1.0)
                xd, yd = dx * scale, dy * scale
            else:
                x = np.where(dz > 0, dx / dz, np.nan)
                y = np.where(dz > 0, dy / dz, np.nan)
                xd, yd = _distort_radial_tangential(x, y, self.coefficients)
        u = self.fx * xd + self.skew * yd + self.cx
        v = self.fy * yd + self.cy
        u, v = self._from_calibration(u, v)
        return np.stack([u, v], axis=-1)


def bearing_of_rays(rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(horizontal, vertical) = (atan2(dx, dz), atan2(dy, hypot(dx, dz))) of rays (..., 3)."""
    rays = np.asarray(rays, dtype=np.float64)
    dx, dy, dz = rays[..., 0], rays[..., 1], rays[..., 2]
    return np.arctan2(dx, dz), np.arctan2(dy, np.hypot(dx, dz))


# ------------------------------------------------------------------------------- the models


def _radial_tangential_terms(coefficients: Sequence[float]) -> tuple[float, ...]:
    c = list(coefficients) + [0.0] * (8 - len(coefficients))
    return tuple(c)  # k1, k2, p1, p2, k3, k4, k5, k6


def _distort_radial_tangential(x: np.ndarray, y: np.ndarray,
                               coefficients: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's forward model: undistorted normalised (x, y) -> distorted normalised (xd, yd)."""
    k1, k2, p1, p2, k3, k4, k5, k6 = _radial_tangential_terms(coefficients)
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def _undistort_radial_tangential(xd: np.ndarray, yd: np.ndarray,
                                 coefficients: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Solve distort(x, y) = (xd, yd) by Newton's method with the analytic 2x2 Jacobian."""
    k1, k2, p1, p2, k3, k4, k5, k6 = _radial_tangential_terms(coefficients)
    if not any((k1, k2, p1, p2, k3, k4, k5, k6)):
        return np.array(xd, dtype=np.float64), np.array(yd, dtype=np.float64)
    x, y = np.array(xd, dtype=np.float64), np.array(yd, dtype=np.float64)
    converged = np.zeros(x.shape, dtype=bool)
    for _ in range(_NEWTON_ITERATIONS):
        r2 = x * x + y * y
        num = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
        radial = num / den
        d_num = k1 + r2 * (2 * k2 + 3 * k3 * r2)
        d_den = k4 + r2 * (2 * k5 + 3 * k6 * r2)
        d_radial = (d_num * den - num * d_den) / (den * den)  # d radial / d r2
        fx = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xd
        fy = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - yd
        j11 = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x
        j12 = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
        j21 = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
        j22 = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x
        det = j11 * j22 - j12 * j21
        with np.errstate(divide="ignore", invalid="ignore"):
            step_x = (j22 * fx - j12 * fy) / det
            step_y = (j11 * fy - j21 * fx) / det
        x, y = x - step_x, y - step_y
        converged = np.hypot(step_x, step_y) < _NEWTON_TOLERANCE
        if np.all(converged | ~np.isfinite(step_x)):
            break
    # A root where the model folds over (det <= 0: the mapping is not one-to-one there) or one
    # not reached is not the pixel's ray: NaN.
    r2 = x * x + y * y
    num = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
    residual = np.hypot(*(a - b for a, b in zip(_distort_radial_tangential(x, y, coefficients), (xd, yd))))
    ok = converged & (det > 0) & (num / den > 0) & (residual < 1e-9)
    return np.where(ok, x, np.nan), np.where(ok, y, np.nan)


def _equidistant_rays(xd: np.ndarray, yd: np.ndarray, coefficients: Sequence[float]) -> np.ndarray:
    """cv2.fisheye's model inverted: r_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)."""
    k1, k2, k3, k4 = coefficients
    r_d = np.hypot(xd, yd)
    theta = np.array(np.clip(r_d, 0.0, math.pi / 2), dtype=np.float64)
    converged = np.zeros(theta.shape, dtype=bool)
    slope = np.ones_like(theta)
    for _ in range(_NEWTON_ITERATIONS):
        t2 = theta * theta
        f = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - r_d
        slope = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
        with np.errstate(divide="ignore", invalid="ignore"):
            step = f / slope
        theta = theta - step
        converged = np.abs(step) < _NEWTON_TOLERANCE
        if np.all(converged | ~np.isfinite(step)):
            break
    ok = converged & (slope > 0) & (theta >= 0) & (theta < math.pi)
    theta = np.where(ok, theta, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_phi = np.where(r_d > 0, xd / np.where(r_d > 0, r_d, 1.0), 0.0)
        sin_phi = np.where(r_d > 0, yd / np.where(r_d > 0, r_d, 1.0), 0.0)
    s = np.sin(theta)
    return np.stack([s * cos_phi, s * sin_phi, np.cos(theta)], axis=-1)
