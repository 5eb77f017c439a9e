"""The follow simulator (cract_ros.follow.sim), without ROS: geometry by hand, the rendering where
the ground truth says, and the control law closing the loop on perfect measurements.

The same loop with the tracker and the follower as nodes over DDS is test_follow_loop.py.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from cract_core.camera import CameraModel
from cract_ros.follow.control import Follower, Observation, TRACKING
from cract_ros.follow.sim import (Path2D, Renderer, Scenario, Segment, Vehicle, VehicleState, camera_axes,
                                  load_scene, start_behind)
from cract_ros.follow.follower import PARAMETERS, follow_config


@pytest.fixture(scope="module")
def scene():
    from conftest import require_shared_sequences

    return load_scene(require_shared_sequences())


def test_path_left_turn_by_hand() -> None:
    # heading north at 4 m/s, turning left at pi/6 rad/s for 3 s: a quarter circle of radius
    # R = v / w = 4 / (pi / 6) = 7.6394 m about (-R, 0): it ends at (-R, R) heading west
    path = Path2D((0.0, 0.0), math.pi / 2, 4.0, [Segment(3.0, 4.0, yaw_rate=math.pi / 6)])
    x, y, h, v = path.at(3.0)
    assert (x, y) == pytest.approx((-7.6394, 7.6394), abs=0.02)
    assert h == pytest.approx(math.pi) and v == pytest.approx(4.0)
    # speeding up linearly from 4 to 6 m/s over 2 s covers 10 m
    x, y, _, v = Path2D((0.0, 0.0), 0.0, 4.0, [Segment(2.0, 6.0)]).at(2.0)
    assert (x, y, v) == pytest.approx((10.0, 0.0, 6.0), abs=0.01)


def test_vehicle_kinematics_and_lag_by_hand() -> None:
    exact = Vehicle(VehicleState(0.0, 0.0, 20.0, 0.0, math.radians(45)), response_time=0.0)
    s = exact.step(forward_speed=2.0, vertical_speed=-1.0, yaw_rate=0.0, pitch_rate=0.1, dt=1.0)
    assert (s.x, s.y, s.z, s.camera_pitch) == pytest.approx((2.0, 0.0, 19.0, math.radians(45) + 0.1))
    s = exact.step(forward_speed=0.0, vertical_speed=0.0, yaw_rate=0.5, pitch_rate=0.0, dt=1.0)
    assert s.yaw == pytest.approx(0.5) and s.x == pytest.approx(2.0)
    # first-order lag: one time constant reaches 1 - 1/e = 63.2 % of the command
    lagged = Vehicle(VehicleState(0.0, 0.0, 20.0, 0.0, 0.5), response_time=0.25)
    assert lagged.step(4.0, 0.0, 0.0, 0.0, dt=0.25).forward_speed == pytest.approx(4.0 * (1 - math.exp(-1)))


def test_camera_geometry_by_hand() -> None:
    """Facing east, 45 degrees down, 20 m up: the ground point 20 m ahead is on the optical axis;
    2 m to its right is atan2(2, 20 sqrt 2) = 0.070593 rad right of it, on the same image row."""
    state = VehicleState(0.0, 0.0, 20.0, 0.0, math.radians(45))
    cam = CameraModel.pinhole(640, 480, 460.0, 460.0, 319.5, 239.5)
    axes = camera_axes(state)
    on_axis = axes @ np.array([20.0, 0.0, -20.0])
    right = axes @ np.array([20.0, -2.0, -20.0])
    np.testing.assert_allclose(cam.project(on_axis), [319.5, 239.5], atol=1e-9)
    h, v = cam.bearing(*cam.project(right))
    assert float(h) == pytest.approx(math.atan2(2.0, 20.0 * math.sqrt(2.0)), abs=1e-9) and abs(float(v)) < 1e-9


def test_start_truth_and_the_car_is_drawn_where_the_truth_says(scene) -> None:
    scenario = Scenario.default(scene)
    state = start_behind(scenario)
    truth = Renderer(scene, scenario).truth(state, 0.0)
    assert truth.centre == pytest.approx((319.5, 239.5), abs=1e-6) and truth.bearing == pytest.approx((0.0, 0.0), abs=1e-9)
    assert truth.in_view and truth.hidden == 0.0
    # the car (2.91 m wide) 28.28 m away: about 460 * 2.91 / 28.28 = 47 px wide
    assert truth.box[2] == pytest.approx(460 * scene.target.body_m[0] / (20 * math.sqrt(2)), rel=0.1)
    # the rendering with and without the car differs around the true box, and nowhere else
    with_car = Renderer(scene, scenario, noise_sigma=0.0).render(state, 0.0)
    hidden_scene = replace(scene, target=replace(scene.target, alpha=np.zeros_like(scene.target.alpha)))
    without = Renderer(hidden_scene, scenario, noise_sigma=0.0).render(state, 0.0)
    ys, xs = np.nonzero(np.abs(with_car.astype(int) - without.astype(int)).max(axis=2) > 10)
    x, y, w, h = truth.box
    assert xs.min() <= x + 2 and xs.max() >= x + w - 3 and ys.min() <= y + 2 and ys.max() >= y + h - 3
    assert abs((xs.min() + xs.max()) / 2 - truth.centre[0]) < 4 and abs((ys.min() + ys.max()) / 2 - truth.centre[1]) < 6


def test_scenario_events(scene) -> None:
    scenario = Scenario.default(scene)
    # the look-alike goes through the point 6 m ahead of the target at t = 9 s
    tx, ty, th, _ = scenario.target.at(9.0)
    lx, ly, _, _ = scenario.lookalike.at(9.0)
    assert math.hypot(lx - tx, ly - ty) == pytest.approx(6.0, abs=0.05)
    # the roof hides the whole car at t = 21 s, none of it well before or after
    start, end = scenario.events["under the roof"]
    assert scenario.roof_cover(21.0) == 1.0 and start < 21.0 < end
    assert scenario.roof_cover(start - 0.5) == 0.0 and scenario.roof_cover(end + 0.5) == 0.0


@pytest.mark.parametrize("rate", [10.0, 30.0])
def test_control_law_closes_the_loop_on_perfect_measurements(scene, rate: float) -> None:
    """The shipped gains (config/follower.yaml) on the true bearings and size: the car stays within
    0.3 of the half image from the centre (the loop with the real tracker is test_follow_loop.py)."""
    scenario = Scenario.default(scene)
    renderer = Renderer(scene, scenario)
    values = {name: spec.default for name, spec in PARAMETERS.items()}
    start_truth = renderer.truth(start_behind(scenario), 0.0)
    values["desired_size"] = start_truth.box[2] * start_truth.box[3] / (640 * 480)
    follower = Follower(follow_config(values))
    vehicle = Vehicle(start_behind(scenario))
    errors = []
    for k in range(int(scenario.duration * rate) + 1):
        t = k / rate
        truth = renderer.truth(vehicle.state, t)
        errors.append(max(abs(truth.centre[0] - 319.5) / 320, abs(truth.centre[1] - 239.5) / 240))
        size = truth.box[2] * truth.box[3] / (640 * 480)
        cmd = follower.update(Observation(t, TRACKING, 1.0, *truth.bearing, relative_size=size), t)
        vehicle.step(cmd.forward_speed, cmd.vertical_speed, cmd.yaw_rate, cmd.gimbal_pitch_rate, 1.0 / rate)
    assert max(errors) < 0.3, f"max centre error {max(errors):.3f} at {rate} Hz"
