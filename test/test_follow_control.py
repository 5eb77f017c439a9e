"""cract_ros.follow.control: the follower's control law against numbers worked out by hand.

No ROS here: the node (test_follower_node.py) and the closed loop (test_follow_loop.py) are
tested over DDS.
"""
from __future__ import annotations

import math

import pytest

from cract_ros.follow.control import (IDLE, LOST, LOW_CONFIDENCE, TRACKING, AxisConfig, FollowConfig, Follower,
                                      Observation, PID)

OFF = AxisConfig(enabled=False)


def only(axis: str, desired_size: float = 0.02, **kw) -> FollowConfig:
    """A follower with one axis on (the others off), no limits unless given."""
    cfg = dict(kp=0.0, ki=0.0, kd=0.0, output_limit=100.0, rate_limit=0.0, deadband=0.0)
    cfg.update(kw)
    axes = {"yaw": OFF, "vertical": OFF, "forward": OFF}
    axes[axis] = AxisConfig(**cfg)
    return FollowConfig(**axes, desired_size=desired_size, min_confidence=0.3, timeout_s=0.5)


def obs(t: float, bx: float = 0.0, by: float = 0.0, state: int = TRACKING, conf: float = 0.9,
        size: float = 0.02, **kw) -> Observation:
    return Observation(stamp=100.0 + t, state=state, confidence=conf, bearing_x=bx, bearing_y=by,
                       relative_size=size, **kw)


def run(follower: Follower, observations: list[Observation]) -> list:
    return [follower.update(o, o.stamp) for o in observations]


def test_yaw_is_proportional_and_turns_towards_the_target() -> None:
    f = Follower(only("yaw", kp=2.0))
    # a target 0.1 rad to the right: turn right, i.e. negative yaw rate (REP 103, z up): -2 * 0.1
    assert f.update(obs(0.0, bx=0.1), 100.0).yaw_rate == pytest.approx(-0.2)
    assert f.update(obs(0.1, bx=-0.05), 100.1).yaw_rate == pytest.approx(0.1)


def test_deadband_shrinks_the_error_without_a_jump() -> None:
    f = Follower(only("yaw", kp=2.0, deadband=0.05))
    # inside the deadband: nothing; outside: the error less the deadband, 2 * (0.1 - 0.05) = 0.1
    assert f.update(obs(0.0, bx=0.03), 100.0).yaw_rate == 0.0
    assert f.update(obs(0.1, bx=0.1), 100.1).yaw_rate == pytest.approx(-0.1)
    assert f.update(obs(0.2, bx=-0.06), 100.2).yaw_rate == pytest.approx(0.02)


def test_integral_uses_the_stamps_and_does_not_wind_up() -> None:
    f = Follower(only("yaw", ki=1.0, output_limit=0.05))
    # error -0.2 each frame, frames 0.1 s apart (stamps): the first frame has no dt; then
    # integral -0.02, -0.04, then clamped at output_limit / ki = 0.05
    out = [c.yaw_rate for c in run(f, [obs(0.1 * i, bx=0.2) for i in range(5)])]
    assert out == pytest.approx([0.0, -0.02, -0.04, -0.05, -0.05])
    # the error flips: the integral leaves the clamp at once (-0.05 + 0.1 * 0.2 = -0.03)
    assert f.update(obs(0.5, bx=-0.2), 100.5).yaw_rate == pytest.approx(-0.03)


def test_derivative_of_the_error() -> None:
    f = Follower(only("yaw", kd=0.5))
    # error 0 then -0.1 over 0.1 s: de/dt = -1, times kd 0.5 = -0.5
    assert f.update(obs(0.0, bx=0.0), 100.0).yaw_rate == 0.0
    assert f.update(obs(0.1, bx=0.1), 100.1).yaw_rate == pytest.approx(-0.5)


def test_output_and_rate_limits() -> None:
    f = Follower(only("yaw", kp=10.0, output_limit=1.0, rate_limit=2.0))
    # wanted -10 * 0.5 = -5, limited to -1; reached at 2 per second: 0 (no dt yet), -0.2, -0.4, ...
    out = [c.yaw_rate for c in run(f, [obs(0.1 * i, bx=0.5) for i in range(8)])]
    assert out == pytest.approx([0.0, -0.2, -0.4, -0.6, -0.8, -1.0, -1.0, -1.0])


def test_vertical_velocity_and_gimbal_modes() -> None:
    # a target 0.1 rad below the centre: descend (-3 * 0.1) in velocity mode ...
    f = Follower(only("vertical", kp=3.0))
    cmd = f.update(obs(0.0, by=0.1), 100.0)
    assert cmd.vertical_speed == pytest.approx(-0.3) and cmd.gimbal_pitch_rate == 0.0
    # ... or pitch the camera down (positive pitch rate about y, REP 103) in gimbal mode
    cfg = only("vertical", kp=3.0)
    cfg.vertical_mode = "gimbal"
    cmd = Follower(cfg).update(obs(0.0, by=0.1), 100.0)
    assert cmd.gimbal_pitch_rate == pytest.approx(0.3) and cmd.vertical_speed == 0.0


def test_forward_from_the_log_size_ratio() -> None:
    f = Follower(only("forward", desired_size=0.02, kp=1.0))
    # a quarter of the wanted area: half the linear size, 0.5 ln 4 = 0.6931 forward
    assert f.update(obs(0.0, size=0.005), 100.0).forward_speed == pytest.approx(0.5 * math.log(4.0))
    # four times the wanted area: as fast backwards
    assert f.update(obs(0.1, size=0.08), 100.1).forward_speed == pytest.approx(-0.5 * math.log(4.0))


def test_offset_as_the_error_source() -> None:
    cfg = only("yaw", kp=2.0)
    cfg.error_source = "offset"
    f = Follower(cfg)
    cmd = f.update(Observation(stamp=100.0, state=TRACKING, confidence=0.9, offset_x=0.5, relative_size=0.02), 100.0)
    assert cmd.yaw_rate == pytest.approx(-1.0)  # no bearing needed


@pytest.mark.parametrize("observation, now, reason", [
    (obs(0.3, bx=0.2, state=LOST), 100.3, "target LOST"),
    (obs(0.3, bx=0.2, state=IDLE), 100.3, "target IDLE"),
    (obs(0.3, bx=0.2, conf=0.29), 100.3, "confidence 0.29 < 0.30"),
    (obs(0.3, bx=0.2), 100.9, "stale: the frame is 0.60 s old"),
    (obs(0.3, bx=math.nan), 100.3, "no bearing_x (NaN: is the tracker getting CameraInfo?)"),
    (obs(0.3, bx=0.2, size=0.0), 100.3, "no target size"),
])
def test_zero_at_once_when_unsafe(observation: Observation, now: float, reason: str) -> None:
    cfg = FollowConfig(yaw=AxisConfig(kp=2.0, rate_limit=0.5, output_limit=1.0), vertical=OFF,
                       forward=AxisConfig(kp=1.0), min_confidence=0.3, timeout_s=0.5)
    f = Follower(cfg)
    for i in range(3):  # following: a non-zero command, ramping under its rate limit
        cmd = f.update(obs(0.1 * i, bx=0.2, size=0.01), 100.0 + 0.1 * i)
    assert cmd.yaw_rate == pytest.approx(-0.1) and not cmd.is_zero
    stop = f.update(observation, now)
    # zero on this very frame, not ramped down by the rate limit, and the reason says why
    assert stop.is_zero and stop.reason.startswith(reason), stop.reason
    # following resumes from rest: the rate limit applies from zero again, the integral is gone
    resumed = [f.update(obs(0.4 + 0.1 * i, bx=0.2, size=0.01), 100.4 + 0.1 * i).yaw_rate for i in range(3)]
    assert resumed == pytest.approx([0.0, -0.05, -0.1])


def test_low_confidence_state_is_followed_above_the_threshold() -> None:
    f = Follower(only("yaw", kp=1.0))
    assert f.update(obs(0.0, bx=0.1, state=LOW_CONFIDENCE, conf=0.35), 100.0).yaw_rate == pytest.approx(-0.1)


def test_never_a_command_from_an_old_frame() -> None:
    f = Follower(only("yaw", kp=1.0))
    assert f.update(obs(1.0, bx=0.1), 101.0) is not None
    assert f.update(obs(0.9, bx=0.5), 101.0) is None  # older than the last one: no command at all
    # the same stamp again (the tracker answers an init on the frame it came with): a command
    assert f.update(obs(1.0, bx=0.2), 101.0).yaw_rate == pytest.approx(-0.2)


def test_commands_depend_on_the_stamps_not_on_when_they_arrive() -> None:
    """The same frames give the same commands whether processed at once or with delay (below timeout)."""
    cfg = FollowConfig(yaw=AxisConfig(kp=1.5, ki=0.5, kd=0.1, rate_limit=2.0), vertical=AxisConfig(kp=2.0),
                       forward=AxisConfig(kp=3.0, ki=1.0), desired_size=0.02, min_confidence=0.3, timeout_s=0.5)
    frames = [obs(0.1 * i, bx=0.1 * math.sin(i), by=0.05 * math.cos(i), size=0.015 + 0.001 * i) for i in range(20)]
    prompt = [vars(c) for c in run(Follower(cfg), frames)]
    delayed = Follower(cfg)
    late = [vars(delayed.update(o, o.stamp + 0.4)) for o in frames]
    assert prompt == late


def test_bad_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="vertical_mode must be velocity or gimbal"):
        Follower(FollowConfig(vertical_mode="thrust"))
    with pytest.raises(ValueError, match="error_source must be bearing or offset"):
        Follower(FollowConfig(error_source="pixels"))


def test_pid_reset_starts_from_rest() -> None:
    pid = PID(AxisConfig(kp=1.0, ki=1.0, rate_limit=1.0))
    pid.update(0.5, 0.1)
    pid.update(0.5, 0.1)
    pid.reset()
    assert (pid.integral, pid.previous_error, pid.output) == (0.0, None, 0.0)
