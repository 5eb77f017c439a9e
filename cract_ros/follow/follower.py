"""FollowerNode: the tracker's cract/msg/TrackedObject in, a velocity command out.

    cract-follower --ros-args --params-file config/follower.yaml -r __ns:=/drone1

Subscribes to `tracked_object_topic` (default `cract_tracker/tracked_object`, the tracker in the
same namespace) and publishes, for every TrackedObject, one command computed from that frame alone
(cract_ros.follow.control: yaw rate from the horizontal bearing, vertical speed or gimbal pitch
rate from the vertical one, forward speed from the size against `desired_size`; PIDs with
limits, rate limits and deadbands, every gain in config/follower.yaml):

- `cmd_vel` (geometry_msgs/Twist): linear.x forward, linear.z up, angular.y pitch rate (gimbal
  mode), angular.z yaw rate, in the body frame (REP 103: x forward, y left, z up);
- `cmd_vel_stamped` (geometry_msgs/TwistStamped): the same with the stamp of the image it was
  computed from (so a consumer can match command and frame) and frame_id `frame_id`.

Safety: the command is zero at once (no ramp down) for a LOST or IDLE target, a confidence under
`min_confidence`, a frame older than `timeout_s` by the node's clock (use_sim_time: /clock), or a
missing bearing; a frame older than the last one gives no command at all. When no TrackedObject
arrives for `timeout_s` while following, a watchdog publishes one zero command and stays silent
until the tracker speaks again (a flight stack that needs a setpoint stream, PX4 offboard among
them, then takes its own loss-of-offboard failsafe). /diagnostics says following or holding, and why.

Parameters (PARAMETERS below): gains, limits and thresholds change at run time
(`ros2 param set /cract_follower yaw.kp 1.2`); topics, modes and the frame id at start-up.
"""
from __future__ import annotations

import math
import sys
import threading
from typing import Any, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from cract.msg import TrackedObject
from cract_ros.follow.control import AxisConfig, Command, FollowConfig, Follower, Observation
from cract_ros.parameters import ParamSpec, apply_update, check_values, declare_parameters

try:
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover - older rclpy
    class ExternalShutdownException(Exception):  # type: ignore[no-redef]
        pass

NODE_NAME = "cract_follower"
AXES = ("yaw", "vertical", "forward")


def _axis_params(axis: str, what: str, kp: float, ki: float, kd: float, limit: float, rate: float,
                 deadband: float, unit: str, error_unit: str) -> dict[str, ParamSpec]:
    return {
        f"{axis}.enabled": ParamSpec(True, f"command {what}", runtime=True),
        f"{axis}.kp": ParamSpec(kp, f"proportional gain ({unit} per {error_unit})", runtime=True, minimum=0.0),
        f"{axis}.ki": ParamSpec(ki, f"integral gain ({unit} per {error_unit} second)", runtime=True, minimum=0.0),
        f"{axis}.kd": ParamSpec(kd, f"derivative gain ({unit} second per {error_unit})", runtime=True, minimum=0.0),
        f"{axis}.output_limit": ParamSpec(limit, f"|{what}| at most this ({unit})", runtime=True, minimum=0.0),
        f"{axis}.rate_limit": ParamSpec(rate, f"change of {what} per second at most ({unit}/s; 0 = no limit)",
                                        runtime=True, minimum=0.0),
        f"{axis}.deadband": ParamSpec(deadband, f"|error| under this counts as zero ({error_unit})", runtime=True,
                                      minimum=0.0),
    }


PARAMETERS: dict[str, ParamSpec] = {
    "tracked_object_topic": ParamSpec("cract_tracker/tracked_object", "the tracker's output (relative to the "
                                      "namespace; remappable)", startup=True),
    "cmd_vel_topic": ParamSpec("cmd_vel", "geometry_msgs/Twist output", startup=True),
    "cmd_vel_stamped_topic": ParamSpec("cmd_vel_stamped", "geometry_msgs/TwistStamped output (stamp = the "
                                       "image's)", startup=True),
    "frame_id": ParamSpec("base_link", "frame_id of cmd_vel_stamped (the body frame)", startup=True),
    "error_source": ParamSpec("bearing", "bearing: TrackedObject.bearing_x/y in radians (needs the tracker's "
                              "CameraInfo); offset: offset_x/y, the normalised image offset", startup=True,
                              choices=("bearing", "offset")),
    "vertical_mode": ParamSpec("velocity", "velocity: linear.z from the vertical bearing; gimbal: angular.y "
                               "(camera pitch rate) instead", startup=True, choices=("velocity", "gimbal")),
    "desired_size": ParamSpec(0.01, "wanted TrackedObject.relative_size (box area / image area)", runtime=True,
                              minimum=0.0, exclusive_minimum=True, maximum=1.0),
    "min_confidence": ParamSpec(0.25, "below this confidence: zero command", runtime=True, minimum=0.0, maximum=1.0),
    "timeout_s": ParamSpec(0.5, "a frame older than this, or no frame for this long: zero command", runtime=True,
                           minimum=0.0, exclusive_minimum=True),
    "watchdog_period_s": ParamSpec(0.05, "how often the no-input watchdog looks", startup=True, minimum=0.0,
                                   exclusive_minimum=True),
    "diagnostics_period_s": ParamSpec(1.0, "period of /diagnostics", startup=True, minimum=0.0,
                                      exclusive_minimum=True),
    **_axis_params("yaw", "yaw rate", 2.5, 0.5, 0.0, 1.5, 3.0, 0.01, "rad/s", "rad"),
    **_axis_params("vertical", "vertical speed or gimbal pitch rate", 20.0, 1.0, 0.0, 4.0, 4.0, 0.02,
                   "m/s or rad/s", "rad"),
    **_axis_params("forward", "forward speed", 25.0, 5.0, 0.0, 10.0, 4.0, 0.03, "m/s", "log size ratio"),
}


def follow_config(values: dict) -> FollowConfig:
    """The control law's configuration from the node's parameter values."""
    def axis(name: str) -> AxisConfig:
        return AxisConfig(enabled=values[f"{name}.enabled"], kp=values[f"{name}.kp"], ki=values[f"{name}.ki"],
                          kd=values[f"{name}.kd"], output_limit=values[f"{name}.output_limit"],
                          rate_limit=values[f"{name}.rate_limit"], deadband=values[f"{name}.deadband"])
    return FollowConfig(yaw=axis("yaw"), vertical=axis("vertical"), forward=axis("forward"),
                        vertical_mode=values["vertical_mode"], error_source=values["error_source"],
                        desired_size=values["desired_size"], min_confidence=values["min_confidence"],
                        timeout_s=values["timeout_s"])


def twist_of(cmd: Command) -> Twist:
    twist = Twist()
    twist.linear.x = float(cmd.forward_speed)
    twist.linear.z = float(cmd.vertical_speed)
    twist.angular.y = float(cmd.gimbal_pitch_rate)
    twist.angular.z = float(cmd.yaw_rate)
    return twist


def seconds(stamp: Any) -> float:
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


class FollowerNode(Node):
    """TrackedObject -> Twist + TwistStamped (see the module docstring)."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.p = declare_parameters(self, PARAMETERS, read_only_unless_runtime=True)
        problems = check_values(PARAMETERS, self.p)
        if problems:
            raise ValueError("bad parameters: " + "; ".join(problems))
        self._lock = threading.Lock()  # the watchdog timer and the subscription share the follower
        self._follower = Follower(follow_config(self.p))
        self._last_input: Optional[float] = None  # node clock, seconds, of the last frame followed
        self._holding_reason = "no TrackedObject yet"  # "" while following
        self._commands = 0
        self._zero_commands = 0
        self._ignored_old = 0
        self._cmd_pub = self.create_publisher(Twist, self.p["cmd_vel_topic"], 10)
        self._stamped_pub = self.create_publisher(TwistStamped, self.p["cmd_vel_stamped_topic"], 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # reliable, depth 10: the tracker publishes one message per frame, and a follower must see
        # the LOST one
        self._sub = self.create_subscription(TrackedObject, self.p["tracked_object_topic"], self._on_tracked, 10)
        self.create_timer(self.p["watchdog_period_s"], self._watchdog)
        self.create_timer(self.p["diagnostics_period_s"], self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info(
            f"following {self._sub.topic_name} ({self.p['error_source']}; vertical {self.p['vertical_mode']}) -> "
            f"{self._cmd_pub.topic_name}, {self._stamped_pub.topic_name}")

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        new, reason = apply_update(PARAMETERS, self.p, params, configurable=False, state="")
        if new is None:
            return SetParametersResult(successful=False, reason=reason)
        with self._lock:
            self.p = new
            config = follow_config(new)
            # new gains, same state: the PIDs keep their integral and last output
            f = self._follower
            f.config = config
            f.yaw.config, f.vertical.config, f.forward.config = config.yaw, config.vertical, config.forward
        return SetParametersResult(successful=True)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_tracked(self, msg: TrackedObject) -> None:
        obs = Observation(stamp=seconds(msg.header.stamp), state=int(msg.state), confidence=float(msg.confidence),
                          bearing_x=float(msg.bearing_x), bearing_y=float(msg.bearing_y),
                          offset_x=float(msg.offset_x), offset_y=float(msg.offset_y),
                          relative_size=float(msg.relative_size))
        with self._lock:
            now = self._now()
            cmd = self._follower.update(obs, now)
            if cmd is None:
                self._ignored_old += 1
                self.get_logger().warning(f"ignored a TrackedObject older than the last one "
                                          f"({obs.stamp:.3f} s)", throttle_duration_sec=5.0)
                return
            self._last_input = now if not cmd.reason else None
            self._publish(cmd, msg.header.stamp)

    def _watchdog(self) -> None:
        with self._lock:
            if self._last_input is None:
                return
            silent = self._now() - self._last_input
            if silent <= self.p["timeout_s"]:
                return
            self._last_input = None
            cmd = self._follower.stop(f"no TrackedObject for {silent:.2f} s (timeout_s {self.p['timeout_s']:g})")
            self._publish(cmd, self.get_clock().now().to_msg())

    def _publish(self, cmd: Command, stamp: Any) -> None:
        """Both outputs, and a log line when following starts or stops (not every frame)."""
        twist = twist_of(cmd)
        stamped = TwistStamped()
        stamped.header.stamp = stamp
        stamped.header.frame_id = self.p["frame_id"]
        stamped.twist = twist
        self._cmd_pub.publish(twist)
        self._stamped_pub.publish(stamped)
        self._commands += 1
        if cmd.is_zero:
            self._zero_commands += 1
        if cmd.reason and not self._holding_reason:
            self.get_logger().warning(f"zero command: {cmd.reason}")
        elif cmd.reason:
            self.get_logger().warning(f"holding: {cmd.reason}", throttle_duration_sec=5.0)
        elif self._holding_reason:
            self.get_logger().info(f"following (was holding: {self._holding_reason})")
        self._holding_reason = cmd.reason

    def _publish_diagnostics(self) -> None:
        with self._lock:
            status = DiagnosticStatus(name=f"{self.get_name()}: follower", hardware_id=self.get_fully_qualified_name())
            status.level = DiagnosticStatus.OK
            status.message = f"holding: {self._holding_reason}" if self._holding_reason else "following"
            values = {"following": str(not self._holding_reason).lower(), "reason": self._holding_reason,
                      "commands": str(self._commands), "zero_commands": str(self._zero_commands),
                      "ignored_old_frames": str(self._ignored_old)}
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def main(args: Optional[list] = None) -> int:
    """Entry point of `cract-follower` and of lib/cract/follower_node."""
    rclpy.init(args=args)
    node: Optional[FollowerNode] = None
    code = 0
    try:
        node = FollowerNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except ValueError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
