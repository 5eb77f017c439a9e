"""A simulated camera on a moving vehicle over a textured ground, for closing the follow loop (no ROS).

The world: the ground plane z = 0, textured with a real aerial frame (uav_car14's road, the car in
it painted out; mirrored beyond its edges), scale `GROUND_M_PER_PX` (the car in that frame is 68 px
long, ~4.6 m). On it move real crops: the target (that car), a look-alike (a dark car of the same kind, cut
from a later frame of the flight) that crosses the target's path, and a roof it drives under
(the sheds in the same frame): sprites lying on the ground, drawn in that order, so the roof hides the car.

The vehicle: position (x, y, z), heading `yaw`, and the camera's tilt below the horizon
`camera_pitch` (a stabilised gimbal: the body's own roll and pitch do not reach the image). It
takes the follower's body-frame command (forward speed, vertical speed, yaw rate, gimbal pitch
rate) through a first-order lag of `RESPONSE_TIME_S` (a multirotor does not change speed at
once) and integrates it over the frame interval.

The camera: 640 x 480, fx = fy = 460 px (70 degrees across), mild barrel distortion (plumb_bob);
`render` draws what it sees with that distortion (cract_core.camera gives every pixel's ray) and
`CameraModel` is what a CameraInfo carries, so the tracker's bearings must undo it. Ground truth
(`truth`) comes from the same geometry: the target's box (its footprint's corners projected),
its centre pixel and bearing, whether it is in view and how much of it the roof hides.

The scripted path (`Scenario.default()`, 26 s): straight, a left turn, a speed-up to 7 m/s, the
look-alike crossing 6 m ahead, a right turn while slowing, a straight stretch, under a roof that
hides the whole car for half a second (most of it for three), and a bend while speeding up. It is defined in
continuous time and sampled at any frame rate, so 10 Hz and 30 Hz runs follow the same path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from cract_core.camera import CameraModel, bearing_of_rays

__all__ = ["SceneError", "Scene", "Sprite", "Segment", "Scenario", "Path2D", "VehicleState", "Vehicle", "Renderer",
           "Truth", "camera_axes", "start_behind", "default_camera", "load_scene"]

GROUND_SEQUENCE = "uav_car14"  # frame 1: a road seen from above, the target car on it
LOOKALIKE_FRAME = ("uav_car14", 50)  # a dark car like the target, from higher up
GROUND_M_PER_PX = 4.6 / 68.0  # the target car: 68 px long in its frame, ~4.6 m
OCCLUDER_PX = (1150, 45, 130, 90)  # a shed's roof in uav_car14's frame 1 (x, y, w, h): 8.8 m x 6.1 m
RESPONSE_TIME_S = 0.25
SKY_BGR = (200, 180, 150)


class SceneError(ValueError):
    """The real images the scene is made of are missing or unreadable."""


def default_camera() -> CameraModel:
    return CameraModel(640, 480, fx=460.0, fy=460.0, cx=319.5, cy=239.5, distortion_model="plumb_bob",
                       coefficients=(-0.12, 0.03, 0.0005, -0.0004, 0.0))


@dataclass
class Sprite:
    """A real image patch lying on the ground: BGR + alpha, `m_per_px` metres a pixel; its "up" is
    the direction it faces (a car's front)."""

    bgr: np.ndarray
    alpha: np.ndarray  # float32 0..1
    m_per_px: float
    body_px: tuple[float, float]  # width, length of the object itself (its ground-truth box), pixels

    @property
    def body_m(self) -> tuple[float, float]:
        return self.body_px[0] * self.m_per_px, self.body_px[1] * self.m_per_px


@dataclass
class Scene:
    ground: np.ndarray  # BGR texture, GROUND_M_PER_PX metres a pixel, world origin at its centre
    target: Sprite
    lookalike: Sprite
    occluder: Sprite
    camera: CameraModel = field(default_factory=default_camera)
    start_xy: tuple[float, float] = (0.0, 0.0)  # where the target car stands in the ground image, metres


def _ellipse_alpha(h: int, w: int, body: tuple[float, float], feather_px: float) -> np.ndarray:
    """1 inside an ellipse around the body (a little larger), fading to 0 over `feather_px`."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rx, ry = body[0] * 0.75 + feather_px / 2, body[1] * 0.72 + feather_px / 2
    r = np.sqrt(((xx - (w - 1) / 2) / rx) ** 2 + ((yy - (h - 1) / 2) / ry) ** 2)
    edge = feather_px / max(rx, ry)
    return np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0).astype(np.float32)


def _read_frame(sequences: Path, name: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame `index` of a sequence and its ground-truth box."""
    folder = sequences / name
    frames = sorted((folder / "img").glob("*.jpg"))
    if len(frames) <= index or not (folder / "groundtruth.txt").is_file():
        raise SceneError(f"sequence {name} (frame {index}) not found at {folder} (img/*.jpg + groundtruth.txt)")
    img = cv2.imread(str(frames[index]), cv2.IMREAD_COLOR)
    if img is None:
        raise SceneError(f"cannot read {frames[index]}")
    box = np.loadtxt(folder / "groundtruth.txt", delimiter=",", ndmin=2)[index]
    return img, box


def _car_sprite(img: np.ndarray, box: np.ndarray, m_per_px: float, rotate: int = 0) -> Sprite:
    x, y, w, h = (int(round(v)) for v in box)
    margin = int(round(max(w, h) * 0.35))
    crop = img[max(y - margin, 0): y + h + margin, max(x - margin, 0): x + w + margin].copy()
    body = (float(w), float(h))
    if rotate:
        crop = np.ascontiguousarray(np.rot90(crop, rotate))
        body = body[::-1] if rotate % 2 else body
    ch, cw = crop.shape[:2]
    return Sprite(crop, _ellipse_alpha(ch, cw, body, feather_px=6.0), m_per_px, body)


def load_scene(sequences: Path) -> Scene:
    """The scene from the real frames in `sequences` (../shared/data/sequences); SceneError if absent."""
    ground_img, car_box = _read_frame(sequences, GROUND_SEQUENCE, 0)
    look_img, look_box = _read_frame(sequences, *LOOKALIKE_FRAME)
    # the target car, then the ground without it (painted out, so the texture holds no twin)
    target = _car_sprite(ground_img, car_box, GROUND_M_PER_PX)
    mask = np.zeros(ground_img.shape[:2], np.uint8)
    x, y, w, h = (int(round(v)) for v in car_box)
    cv2.rectangle(mask, (x - 8, y - 8), (x + w + 14, y + h + 14), 255, -1)  # its shadow falls right and down
    ground = cv2.inpaint(ground_img, mask, 7, cv2.INPAINT_TELEA)
    # the look-alike: a dark car of the same kind, from later in the same flight (51 px long there,
    # the drone higher), scaled to the target's 4.6 m
    lookalike = _car_sprite(look_img, look_box, 4.6 / look_box[3])
    ox, oy, ow, oh = OCCLUDER_PX
    roof = ground_img[oy: oy + oh, ox: ox + ow].copy()
    roof_alpha = np.ones(roof.shape[:2], np.float32)
    roof_alpha[:2, :] = roof_alpha[-2:, :] = 0.5
    roof_alpha[:, :2] = roof_alpha[:, -2:] = 0.5
    occluder = Sprite(roof, roof_alpha, GROUND_M_PER_PX, (float(ow), float(oh)))
    gh, gw = ground.shape[:2]
    start = ((x + w / 2 - gw / 2) * GROUND_M_PER_PX, -(y + h / 2 - gh / 2) * GROUND_M_PER_PX)
    return Scene(ground, target, lookalike, occluder, start_xy=start)


# ------------------------------------------------------------------------------------ motion


@dataclass(frozen=True)
class Segment:
    """`duration` seconds: speed goes linearly to `speed_to`, heading turns at `yaw_rate` rad/s."""

    duration: float
    speed_to: float
    yaw_rate: float = 0.0


class Path2D:
    """A ground path from segments, integrated once on a 1 ms grid and sampled at any time."""

    STEP = 0.001

    def __init__(self, start_xy: tuple[float, float], heading: float, speed: float, segments: list[Segment]) -> None:
        n = int(round(sum(s.duration for s in segments) / self.STEP)) + 1
        xs, ys, hs, vs = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
        x, y = start_xy
        h, v = heading, speed
        i = 0
        xs[0], ys[0], hs[0], vs[0] = x, y, h, v
        for seg in segments:
            steps = int(round(seg.duration / self.STEP))
            dv = (seg.speed_to - v) / max(steps, 1)
            for _ in range(steps):
                i += 1
                v += dv
                h += seg.yaw_rate * self.STEP
                x += v * math.cos(h) * self.STEP
                y += v * math.sin(h) * self.STEP
                xs[i], ys[i], hs[i], vs[i] = x, y, h, v
        self.duration = i * self.STEP
        self._xs, self._ys, self._hs, self._vs = xs[: i + 1], ys[: i + 1], hs[: i + 1], vs[: i + 1]

    def at(self, t: float) -> tuple[float, float, float, float]:
        """(x, y, heading, speed) at time t (held at the ends)."""
        i = int(round(min(max(t, 0.0), self.duration) / self.STEP))
        return float(self._xs[i]), float(self._ys[i]), float(self._hs[i]), float(self._vs[i])


@dataclass
class Scenario:
    """Where everything is when: the target's and the look-alike's paths, the roof, the vehicle's start."""

    target: Path2D
    lookalike: Path2D
    occluder_xy: tuple[float, float]
    occluder_heading: float
    duration: float
    target_body_m: tuple[float, float]  # width, length of the target car
    roof_m: tuple[float, float]  # width (across its heading), length of the roof
    altitude: float = 20.0
    camera_pitch: float = math.radians(45.0)
    events: dict = field(default_factory=dict)  # name -> (t_start, t_end), for plots and checks

    @classmethod
    def default(cls, scene: Scene) -> "Scenario":
        """The scripted run over `scene`: 26 s, the events in the module docstring."""
        north = math.pi / 2
        start_xy = scene.start_xy
        segments = [
            Segment(3.0, 4.0),                          # straight up the road at 4 m/s
            Segment(3.0, 4.0, yaw_rate=math.pi / 6),    # a left turn, 90 degrees in 3 s
            Segment(2.5, 7.0),                          # speeding up to 7 m/s
            Segment(1.5, 7.0),                          # the look-alike crosses ahead
            Segment(3.0, 4.0, yaw_rate=-math.pi / 6),   # a right turn while slowing
            Segment(4.0, 3.0),                          # straight, slowing: the vehicle gets behind it
            Segment(3.0, 3.0),
            Segment(2.0, 3.0),                          # under the roof
            Segment(2.0, 3.0),
            Segment(2.0, 5.0, yaw_rate=0.2),            # a gentle bend, speeding up
        ]
        target = Path2D(start_xy, north, 4.0, segments)
        duration = target.duration
        # the look-alike crosses 6 m ahead of the target at t_cross, square to its path
        t_cross = 9.0
        tx, ty, th, _ = target.at(t_cross)
        ahead = 6.0
        cross_xy = (tx + ahead * math.cos(th), ty + ahead * math.sin(th))
        look_heading = th - math.pi / 2  # from the target's left to its right
        look_speed = 6.0
        look_start = (cross_xy[0] - look_speed * t_cross * math.cos(look_heading),
                      cross_xy[1] - look_speed * t_cross * math.sin(look_heading))
        lookalike = Path2D(look_start, look_heading, look_speed, [Segment(duration, look_speed)])
        # the roof lies across the target's path where the target is at t_roof
        t_roof = 21.0
        rx, ry, rh, _ = target.at(t_roof)
        events = {"look-alike crossing": (t_cross - 1.0, t_cross + 1.0)}
        scenario = cls(target, lookalike, (rx, ry), rh, duration, scene.target.body_m, scene.occluder.body_m,
                       events=events)
        scenario.events["under the roof"] = scenario.hidden_interval()
        return scenario

    def hidden_interval(self, step: float = 0.01) -> tuple[float, float]:
        """When the roof covers any of the target's body (from the geometry alone)."""
        times = [t for t in np.arange(0.0, self.duration, step) if self.roof_cover(t) > 0.0]
        return (float(times[0]), float(times[-1])) if times else (math.nan, math.nan)

    def roof_cover(self, t: float) -> float:
        """Fraction of the target's footprint under the roof at time t (sampled on a 9 x 9 grid)."""
        x, y, h, _ = self.target.at(t)
        gx, gy = np.meshgrid(np.linspace(-0.5, 0.5, 9), np.linspace(-0.5, 0.5, 9))
        along, left = gy.ravel() * self.target_body_m[1], gx.ravel() * self.target_body_m[0]
        px = x + along * math.cos(h) - left * math.sin(h)
        py = y + along * math.sin(h) + left * math.cos(h)
        ox, oy = self.occluder_xy
        oh = self.occluder_heading
        dx, dy = px - ox, py - oy
        r_along = dx * math.cos(oh) + dy * math.sin(oh)
        r_left = -dx * math.sin(oh) + dy * math.cos(oh)
        # a sprite's "up" (its length) lies along the heading it is given
        inside = (np.abs(r_along) <= self.roof_m[1] / 2) & (np.abs(r_left) <= self.roof_m[0] / 2)
        return float(inside.mean())


# ------------------------------------------------------------------------------------ vehicle


@dataclass
class VehicleState:
    x: float
    y: float
    z: float
    yaw: float
    camera_pitch: float  # below the horizon, radians
    forward_speed: float = 0.0
    vertical_speed: float = 0.0
    yaw_rate: float = 0.0
    pitch_rate: float = 0.0


class Vehicle:
    """Body-frame commands -> pose, through a first-order lag (RESPONSE_TIME_S)."""

    MIN_ALTITUDE = 2.0
    PITCH_RANGE = (math.radians(5.0), math.radians(90.0))

    def __init__(self, state: VehicleState, response_time: float = RESPONSE_TIME_S) -> None:
        self.state = state
        self.response_time = response_time

    def step(self, forward_speed: float, vertical_speed: float, yaw_rate: float, pitch_rate: float,
             dt: float) -> VehicleState:
        s = self.state
        k = 1.0 - math.exp(-dt / self.response_time) if self.response_time > 0 else 1.0
        s = replace(s, forward_speed=s.forward_speed + (forward_speed - s.forward_speed) * k,
                    vertical_speed=s.vertical_speed + (vertical_speed - s.vertical_speed) * k,
                    yaw_rate=s.yaw_rate + (yaw_rate - s.yaw_rate) * k,
                    pitch_rate=s.pitch_rate + (pitch_rate - s.pitch_rate) * k)
        yaw = s.yaw + s.yaw_rate * dt
        mid = (s.yaw + yaw) / 2
        self.state = replace(s, x=s.x + s.forward_speed * math.cos(mid) * dt,
                             y=s.y + s.forward_speed * math.sin(mid) * dt,
                             z=max(s.z + s.vertical_speed * dt, self.MIN_ALTITUDE), yaw=yaw,
                             camera_pitch=min(max(s.camera_pitch + s.pitch_rate * dt, self.PITCH_RANGE[0]),
                                              self.PITCH_RANGE[1]))
        return self.state


def camera_axes(state: VehicleState) -> np.ndarray:
    """Rows: the camera's x (right), y (down), z (forward) axes in the world (x east, y north, z up)."""
    cp, sp = math.cos(state.camera_pitch), math.sin(state.camera_pitch)
    cy, sy = math.cos(state.yaw), math.sin(state.yaw)
    forward = np.array([cp * cy, cp * sy, -sp])
    right = np.array([sy, -cy, 0.0])
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def start_behind(scenario: Scenario) -> VehicleState:
    """The vehicle behind the target's start, at the scenario's altitude, looking at it."""
    x, y, h, _ = scenario.target.at(0.0)
    ground = scenario.altitude / math.tan(scenario.camera_pitch)
    return VehicleState(x - ground * math.cos(h), y - ground * math.sin(h), scenario.altitude, h,
                        scenario.camera_pitch)


# ------------------------------------------------------------------------------------ rendering


@dataclass
class Truth:
    """What the image shows of the target, from the geometry."""

    box: np.ndarray  # xywh, pixels (the footprint's projection; NaN when behind the camera)
    centre: tuple[float, float]  # pixel of the target's centre (calibration convention)
    bearing: tuple[float, float]  # of the target's centre, radians
    in_view: bool  # the centre is inside the image
    hidden: float  # fraction of the footprint under the roof


class Renderer:
    """Draws the camera's view (distorted, as the real lens would) and says where the target is."""

    def __init__(self, scene: Scene, scenario: Scenario, noise_sigma: float = 2.0, seed: int = 0) -> None:
        self.scene = scene
        self.scenario = scenario
        cam = scene.camera
        vv, uu = np.mgrid[0: cam.height, 0: cam.width].astype(np.float64)
        self._rays = cam.rays(uu, vv).reshape(-1, 3)  # every pixel's ray, optical frame, once
        self._noise = noise_sigma
        self._rng = np.random.default_rng(seed)

    def _ground_points(self, state: VehicleState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = self._rays @ camera_axes(state)
        hit = d[:, 2] < -1e-6
        t = np.where(hit, -state.z / np.where(hit, d[:, 2], -1.0), np.nan)
        return state.x + t * d[:, 0], state.y + t * d[:, 1], hit

    def render(self, state: VehicleState, t: float) -> np.ndarray:
        cam = self.scene.camera
        shape = (cam.height, cam.width)
        gx, gy, hit = self._ground_points(state)
        g = self.scene.ground
        s = GROUND_M_PER_PX
        map_u = (gx / s + g.shape[1] / 2).astype(np.float32).reshape(shape)
        map_v = (-gy / s + g.shape[0] / 2).astype(np.float32).reshape(shape)
        img = cv2.remap(g, np.nan_to_num(map_u, nan=-1e6), np.nan_to_num(map_v, nan=-1e6), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT_101)
        img[~hit.reshape(shape)] = SKY_BGR
        sc = self.scenario
        lx, ly, lh, _ = sc.lookalike.at(t)
        tx, ty, th, _ = sc.target.at(t)
        for sprite, (px, py, heading) in ((self.scene.lookalike, (lx, ly, lh)), (self.scene.target, (tx, ty, th)),
                                          (self.scene.occluder, (*sc.occluder_xy, sc.occluder_heading))):
            self._draw(img, sprite, px, py, heading, gx.reshape(shape), gy.reshape(shape), state)
        if self._noise > 0:
            noise = self._rng.normal(0.0, self._noise, img.shape)
            img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        return img

    def _draw(self, img: np.ndarray, sprite: Sprite, px: float, py: float, heading: float, gx: np.ndarray,
              gy: np.ndarray, state: VehicleState) -> None:
        """Paste a sprite lying on the ground at (px, py), its "up" along `heading`."""
        h, w = sprite.bgr.shape[:2]
        half = 0.5 * math.hypot(w, h) * sprite.m_per_px
        corners = np.array([[px + dx, py + dy, 0.0] for dx in (-half, half) for dy in (-half, half)])
        pix = self._project(corners, state)
        if not np.all(np.isfinite(pix)):
            return
        x0, y0 = np.floor(pix.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(pix.max(axis=0)).astype(int) + 2
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, img.shape[1]), min(y1, img.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        dx, dy = gx[y0:y1, x0:x1] - px, gy[y0:y1, x0:x1] - py
        along = dx * math.cos(heading) + dy * math.sin(heading)
        left = -dx * math.sin(heading) + dy * math.cos(heading)
        map_u = (w / 2 - left / sprite.m_per_px).astype(np.float32)
        map_v = (h / 2 - along / sprite.m_per_px).astype(np.float32)
        map_u, map_v = np.nan_to_num(map_u, nan=-1e6), np.nan_to_num(map_v, nan=-1e6)
        patch = cv2.remap(sprite.bgr, map_u, map_v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        alpha = cv2.remap(sprite.alpha, map_u, map_v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        roi = img[y0:y1, x0:x1].astype(np.float32)
        img[y0:y1, x0:x1] = (roi + (patch.astype(np.float32) - roi) * alpha[..., None]).astype(np.uint8)

    def _project(self, points: np.ndarray, state: VehicleState) -> np.ndarray:
        """World points (n, 3) -> image pixels (n, 2) through the distorted camera (NaN behind it)."""
        rel = points - np.array([state.x, state.y, state.z])
        cam_pts = rel @ camera_axes(state).T
        return self.scene.camera.project(cam_pts)

    def truth(self, state: VehicleState, t: float) -> Truth:
        x, y, h, _ = self.scenario.target.at(t)
        bw, bl = self.scene.target.body_m
        pts = []
        for along in (-bl / 2, 0.0, bl / 2):
            for left in (-bw / 2, 0.0, bw / 2):
                pts.append([x + along * math.cos(h) - left * math.sin(h), y + along * math.sin(h) + left * math.cos(h), 0.0])
        pix = self._project(np.array(pts), state)
        box = np.full(4, np.nan)
        if np.all(np.isfinite(pix)):
            # projected points are in calibration pixels (pixel centres at integers); a box's edges
            # are half a pixel further out (cract_core.camera.box_centre_pixel is the inverse)
            lo, hi = pix.min(axis=0), pix.max(axis=0)
            box = np.array([lo[0] + 0.5, lo[1] + 0.5, hi[0] - lo[0], hi[1] - lo[1]])
        centre = pix[4]  # along 0, left 0
        rel = np.array([x - state.x, y - state.y, -state.z]) @ camera_axes(state).T
        bearing = tuple(float(b) for b in bearing_of_rays(rel))
        cam = self.scene.camera
        in_view = bool(np.all(np.isfinite(centre)) and -0.5 <= centre[0] <= cam.width - 0.5
                       and -0.5 <= centre[1] <= cam.height - 0.5)
        return Truth(box, (float(centre[0]), float(centre[1])), bearing, in_view, self.scenario.roof_cover(t))
