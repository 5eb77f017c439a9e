"""The follower node as its own process over real DDS, on simulated time (/clock from this test).

The test publishes cract/msg/TrackedObject as the tracker would and reads the follower's
geometry_msgs/Twist and TwistStamped: commands with hand-computed values, and the safety rules:
zero on the very frame that is LOST, IDLE, under the confidence threshold, stale or without a
bearing; no command for a frame older than the last; one zero command when the input stops
for timeout_s (sim time, so the test does not depend on how busy the machine is).
"""
from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

import pytest
import yaml

from cract_ros.follow.follower import PARAMETERS

ROOT = Path(__file__).resolve().parent.parent


def test_params_file_is_exactly_the_follower_parameters() -> None:
    data = yaml.safe_load((ROOT / "config" / "follower.yaml").read_text())
    assert list(data) == ["/**"]
    flat: dict = {}

    def walk(prefix: str, node: dict) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                flat[f"{prefix}{k}"] = v
    walk("", data["/**"]["ros__parameters"])
    assert set(flat) == set(PARAMETERS), (sorted(set(flat) ^ set(PARAMETERS)))
    for name, value in flat.items():
        spec = PARAMETERS[name]
        assert spec.check(name, value) is None
        assert spec.coerce(value) == spec.default, f"{name}: the file and the node's default disagree"


rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time as TimeMsg  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist, TwistStamped  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402

from cract.msg import TrackedObject  # noqa: E402
from cract_ros.follow.demo import follower_command  # noqa: E402
from node_harness import ProcessUnderTest  # noqa: E402

TRACKING, LOST, IDLE = TrackedObject.TRACKING, TrackedObject.LOST, TrackedObject.IDLE


def stamp_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def t_msg(seconds: float) -> TimeMsg:
    ns = int(round(seconds * 1e9))
    return TimeMsg(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class FollowerUnderTest(ProcessUnderTest):
    def __init__(self, log_dir: Path, overrides: dict) -> None:
        # this test's own /clock: the follower's is remapped into the test's namespace, so no other
        # /clock in the domain (a process another test left behind) can move the follower's time
        namespace = f"/t_follower_{uuid.uuid4().hex[:6]}"
        super().__init__(log_dir, "follower", follower_command({"use_sim_time": True, **overrides}, "")
                         + ["-r", f"/clock:={namespace}/clock"], namespace)
        self.clock = self.node.create_publisher(Clock, f"{self.ns}/clock", 10)
        self.tracked = self.node.create_publisher(TrackedObject, f"{self.ns}/cract_tracker/tracked_object", 10)
        self.twists: list[Twist] = []
        self.stamped: list[TwistStamped] = []
        self.node.create_subscription(Twist, f"{self.ns}/cmd_vel", self.twists.append, 100)
        self.node.create_subscription(TwistStamped, f"{self.ns}/cmd_vel_stamped", self.stamped.append, 100)
        self.set_params = self.node.create_client(SetParameters, f"{self.ns}/cract_follower/set_parameters")
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 100)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        if any(s.hardware_id == f"{self.ns}/cract_follower" for s in msg.status):
            self.diagnostics.append(msg)

    def tick(self, seconds: float) -> None:
        """/clock = seconds, and wait until the follower's clock has it: its /diagnostics (every
        diagnostics_period_s of simulated time) carry its clock's time."""
        last = [0.0]

        def reached() -> bool:
            if time.monotonic() - last[0] > 0.2:  # again now and then: the first may precede the match
                self.clock.publish(Clock(clock=t_msg(seconds)))
                last[0] = time.monotonic()
            return any(stamp_s(d.header.stamp) >= seconds - 1e-9 for d in self.diagnostics)
        self.spin_until(reached, 30.0, f"the follower's clock at {seconds}")

    def send(self, stamp: float, state: int = TRACKING, conf: float = 0.9, bx: float = 0.0, by: float = 0.0,
             size: float = 0.02, clock: float | None = None) -> TwistStamped:
        """/clock (the stamp unless given), then one TrackedObject; returns the command for that frame."""
        self.tick(stamp if clock is None else clock)
        msg = TrackedObject(state=state, confidence=conf, bearing_x=bx, bearing_y=by, relative_size=size)
        msg.header.stamp = t_msg(stamp)
        self.tracked.publish(msg)
        cmd = self.spin_until(lambda: [c for c in self.stamped if abs(stamp_s(c.header.stamp) - stamp) < 1e-6], 30.0,
                              f"the command for the frame of {stamp}")[-1]
        self.spin_until(lambda: len(self.twists) >= len(self.stamped), 30.0, "the Twist beside it")
        return cmd

    def set(self, name: str, value) -> object:
        future = self.set_params.call_async(SetParameters.Request(
            parameters=[Parameter(name, value=value).to_parameter_msg()]))
        self.spin_until(future.done, 30.0, f"set {name}")
        return future.result().results[0]


def command(cmd: TwistStamped) -> tuple[float, float, float, float]:
    t = cmd.twist
    return t.linear.x, t.linear.z, t.angular.y, t.angular.z


@pytest.mark.ros
def test_commands_and_safety_over_dds(rclpy_init, tmp_path) -> None:
    # simple gains so that the numbers are easy to check by hand: P only, no limits, no deadband
    gains = {f"{axis}.{k}": v for axis in ("yaw", "vertical", "forward")
             for k, v in (("kp", 2.0), ("ki", 0.0), ("rate_limit", 0.0), ("deadband", 0.0), ("output_limit", 10.0))}
    fut = FollowerUnderTest(tmp_path, {**gains, "desired_size": 0.02, "min_confidence": 0.3, "timeout_s": 0.5,
                                       "watchdog_period_s": 0.05, "diagnostics_period_s": 0.05})
    try:
        fut.spin_until(lambda: fut.tracked.get_subscription_count() > 0, 60.0, "the follower's subscription")
        fut.spin_until(lambda: fut.node.count_publishers(f"{fut.ns}/cmd_vel_stamped") > 0, 30.0, "cmd_vel_stamped")
        fut.spin_until(lambda: fut.clock.get_subscription_count() > 0, 30.0, "the follower's /clock subscription")
        t = 100.0
        # target 0.1 rad right, 0.05 rad down, a quarter of the wanted area (half the size):
        # yaw -2 * 0.1, up -2 * 0.05, forward 2 * 0.5 ln 4, same numbers on both topics
        cmd = fut.send(t, bx=0.1, by=0.05, size=0.005)
        assert command(cmd) == pytest.approx((2 * 0.5 * math.log(4.0), -0.1, 0.0, -0.2))
        assert (cmd.header.stamp.sec, cmd.header.stamp.nanosec) == (100, 0) and cmd.header.frame_id == "base_link"
        last = fut.twists[-1]
        assert (last.linear.x, last.linear.z, last.angular.z) == (cmd.twist.linear.x, cmd.twist.linear.z,
                                                                  cmd.twist.angular.z)

        # zero on the very frame that must not be followed, and following again on the next
        cases = [("LOST", dict(state=LOST), 0.0), ("IDLE", dict(state=IDLE), 0.0), ("low confidence", dict(conf=0.1), 0.0),
                 ("no bearing", dict(bx=math.nan), 0.0), ("stale", {}, 0.8)]  # stale: 0.8 s old on arrival
        for name, kw, age in cases:
            t += 0.1
            cmd = fut.send(t, **{"bx": 0.1, **kw}, clock=t + age)
            assert command(cmd) == (0.0, 0.0, 0.0, 0.0), name
            assert fut.twists[-1].angular.z == 0.0, name
            t += 0.1 + age
            assert fut.send(t, bx=0.1).twist.angular.z == pytest.approx(-0.2), f"following again after {name}"

        # a frame older than the last one gets no command: the next command is the next frame's
        n = len(fut.stamped)
        old = TrackedObject(state=TRACKING, confidence=0.9, bearing_x=0.3, relative_size=0.02)
        old.header.stamp = t_msg(t - 0.05)
        fut.tracked.publish(old)
        t += 0.1
        fut.send(t, bx=0.1)
        assert [round(stamp_s(c.header.stamp), 3) for c in fut.stamped[n:]] == [round(t, 3)]

        # the input stops: one zero command once timeout_s of (simulated) time has passed
        n = len(fut.stamped)
        for step in range(1, 9):
            fut.tick(t + 0.1 * step)
        zero = fut.spin_until(lambda: fut.stamped[n:] and fut.stamped[-1], 30.0, "the watchdog's zero command")
        assert command(zero) == (0.0, 0.0, 0.0, 0.0)
        assert t + 0.5 < stamp_s(zero.header.stamp) <= t + 0.8 + 1e-6
        assert len(fut.stamped) == n + 1, "one zero command, then silence"
        assert "no TrackedObject for" in fut.log_text()

        # gains change at run time; bad values and start-up parameters are refused with the reason
        assert fut.set("yaw.kp", 1.0).successful
        t += 1.0
        assert fut.send(t, bx=0.1).twist.angular.z == pytest.approx(-0.1)
        res = fut.set("yaw.kp", -1.0)
        assert not res.successful and "yaw.kp must be >= 0.0" in res.reason
        assert not fut.set("cmd_vel_topic", "other").successful
    finally:
        assert fut.close() == 0
