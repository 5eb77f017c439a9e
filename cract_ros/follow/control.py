"""The follower's control law, without ROS: one tracked-object observation in, a velocity command out.

cract_ros.follow.follower wraps it in a node (TrackedObject in, Twist / TwistStamped out); the tests
check it against numbers worked out by hand.

Axes (body frame, REP 103: x forward, y left, z up):

* yaw: `yaw_rate` (angular.z, positive = turn left) from the horizontal bearing (or offset):
  error = -bearing_x, so a target on the right turns the vehicle right;
* vertical: `vertical_speed` (linear.z, positive = up; error = -bearing_y, a target below the
  centre makes the vehicle descend) or, in gimbal mode, `gimbal_pitch_rate` (angular.y,
  positive = camera down; error = +bearing_y);
* forward: `forward_speed` (linear.x) from the target's size against the wanted one:
  error = ln(sqrt(desired_size / relative_size)), the log of the ratio of linear sizes, so a target
  that looks too small (far) drives forward and one twice too big backs off as fast as one half
  as big approaches.

Each axis is a PID on the error with, in this order: a deadband (the error shrinks by the
deadband, so the command does not jump at its edge), anti-windup (|ki * integral| <= the output
limit), the output limit, and a rate limit (the command changes by at most rate_limit * dt per
step). dt is the time between the frames' stamps, never the wall clock, so a replay or a
simulation in lock-step gives the same commands on any machine.

Safety first (`Follower.update`): the command is zero, at once and without the rate limit, when
the target is IDLE or LOST, its confidence is under `min_confidence`, the frame is older than
`timeout_s`, or an input an axis needs is missing (NaN bearing without CameraInfo); the PIDs are
then reset, so following resumes from rest. A frame older than the last one used gives no command
at all (`None`): never a command from an old frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["AxisConfig", "FollowConfig", "PID", "Observation", "Command", "Follower",
           "IDLE", "TRACKING", "LOW_CONFIDENCE", "LOST"]

# TrackedObject.state values (msg/TrackedObject.msg)
IDLE, TRACKING, LOW_CONFIDENCE, LOST = 0, 1, 2, 3
_STATE_NAMES = {IDLE: "IDLE", TRACKING: "TRACKING", LOW_CONFIDENCE: "LOW_CONFIDENCE", LOST: "LOST"}


@dataclass
class AxisConfig:
    enabled: bool = True
    kp: float = 1.0
    ki: float = 0.0
    kd: float = 0.0
    output_limit: float = 1.0  # |command| <= this
    rate_limit: float = 0.0  # |d command / dt| <= this (per second); 0 = no limit
    deadband: float = 0.0  # |error| under this counts as zero


@dataclass
class FollowConfig:
    yaw: AxisConfig = field(default_factory=AxisConfig)
    vertical: AxisConfig = field(default_factory=AxisConfig)
    forward: AxisConfig = field(default_factory=AxisConfig)
    vertical_mode: str = "velocity"  # velocity (linear.z) | gimbal (angular.y, pitch rate)
    error_source: str = "bearing"  # bearing (radians, needs CameraInfo) | offset (normalised image offset)
    desired_size: float = 0.02  # wanted relative_size (box area / image area)
    min_confidence: float = 0.3
    timeout_s: float = 0.5


class PID:
    """One axis: deadband, PID with anti-windup, output and rate limits (see the module docstring)."""

    def __init__(self, config: AxisConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.integral = 0.0
        self.previous_error: Optional[float] = None
        self.output = 0.0  # the last command (the vehicle is at rest after a reset)

    def update(self, error: float, dt: float) -> float:
        c = self.config
        if abs(error) <= c.deadband:
            error = 0.0
        else:
            error -= math.copysign(c.deadband, error)
        dt = max(dt, 0.0)
        if c.ki > 0.0:
            self.integral += error * dt
            bound = c.output_limit / c.ki
            self.integral = min(max(self.integral, -bound), bound)
        derivative = 0.0
        if self.previous_error is not None and dt > 0.0:
            derivative = (error - self.previous_error) / dt
        self.previous_error = error
        u = c.kp * error + c.ki * self.integral + c.kd * derivative
        u = min(max(u, -c.output_limit), c.output_limit)
        if c.rate_limit > 0.0:
            step = c.rate_limit * dt
            u = min(max(u, self.output - step), self.output + step)
        self.output = u
        return u


@dataclass
class Observation:
    """The fields of one cract/msg/TrackedObject that the follower uses."""

    stamp: float  # seconds (the image's stamp)
    state: int
    confidence: float
    bearing_x: float = math.nan
    bearing_y: float = math.nan
    offset_x: float = 0.0
    offset_y: float = 0.0
    relative_size: float = 0.0


@dataclass
class Command:
    """A body-frame velocity command; `reason` says why it is zero ("" when following)."""

    forward_speed: float = 0.0
    vertical_speed: float = 0.0
    gimbal_pitch_rate: float = 0.0
    yaw_rate: float = 0.0
    reason: str = ""

    @property
    def is_zero(self) -> bool:
        return not any((self.forward_speed, self.vertical_speed, self.gimbal_pitch_rate, self.yaw_rate))


class Follower:
    """Observations in stamp order -> commands (see the module docstring for the rules)."""

    def __init__(self, config: FollowConfig) -> None:
        if config.vertical_mode not in ("velocity", "gimbal"):
            raise ValueError(f"vertical_mode must be velocity or gimbal, got {config.vertical_mode!r}")
        if config.error_source not in ("bearing", "offset"):
            raise ValueError(f"error_source must be bearing or offset, got {config.error_source!r}")
        self.config = config
        self.yaw = PID(config.yaw)
        self.vertical = PID(config.vertical)
        self.forward = PID(config.forward)
        self.last_stamp: Optional[float] = None  # the newest frame used (followed or not)
        self.following = False  # the last command came from a followed frame

    def reset(self) -> None:
        for pid in (self.yaw, self.vertical, self.forward):
            pid.reset()
        self.following = False

    def stop(self, reason: str) -> Command:
        """A zero command, at once (no rate limit); the axes restart from rest."""
        self.reset()
        return Command(reason=reason)

    def _unsafe(self, obs: Observation, now: float) -> str:
        """Why this observation must not be followed ("" when it may)."""
        c = self.config
        if obs.state in (IDLE, LOST):
            return f"target {_STATE_NAMES[obs.state]}"
        if obs.state not in (TRACKING, LOW_CONFIDENCE):
            return f"unknown state {obs.state}"
        if not obs.confidence >= c.min_confidence:
            return f"confidence {obs.confidence:.2f} < {c.min_confidence:.2f}"
        age = now - obs.stamp
        if age > c.timeout_s:
            return f"stale: the frame is {age:.2f} s old (timeout_s {c.timeout_s:g})"
        if c.error_source == "bearing":
            needed = [("bearing_x", obs.bearing_x, c.yaw.enabled), ("bearing_y", obs.bearing_y, c.vertical.enabled)]
            missing = [name for name, value, used in needed if used and not math.isfinite(value)]
            if missing:
                return f"no {' / '.join(missing)} (NaN: is the tracker getting CameraInfo?)"
        if c.forward.enabled and not (obs.relative_size > 0.0 and math.isfinite(obs.relative_size)):
            return f"no target size (relative_size {obs.relative_size})"
        return ""

    def update(self, obs: Observation, now: float) -> Optional[Command]:
        """The command for this frame at time `now` (seconds, same clock as the stamps); None for a
        frame older than the last one used (no command from an old frame)."""
        if self.last_stamp is not None and obs.stamp < self.last_stamp:
            return None
        dt = obs.stamp - self.last_stamp if self.last_stamp is not None and self.following else 0.0
        self.last_stamp = obs.stamp
        reason = self._unsafe(obs, now)
        if reason:
            return self.stop(reason)
        c = self.config
        horizontal, vertical = ((obs.bearing_x, obs.bearing_y) if c.error_source == "bearing"
                                else (obs.offset_x, obs.offset_y))
        cmd = Command()
        if c.yaw.enabled:
            cmd.yaw_rate = self.yaw.update(-horizontal, dt)
        if c.vertical.enabled:
            if c.vertical_mode == "velocity":
                cmd.vertical_speed = self.vertical.update(-vertical, dt)
            else:
                cmd.gimbal_pitch_rate = self.vertical.update(vertical, dt)
        if c.forward.enabled:
            cmd.forward_speed = self.forward.update(0.5 * math.log(c.desired_size / obs.relative_size), dt)
        self.following = True
        return cmd
