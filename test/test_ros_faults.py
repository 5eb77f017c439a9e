"""Faults a node meets on a vehicle, over real DDS with the node as its own process:

- the camera stops and resumes: the watchdog's LOST (and WARN), tracking again, a new target;
- the clock jumps back (use_sim_time, a bag played again from its start): the frame buffer is
  cleared (a stamp of the old timeline is refused, the same stamp of the new one is found), the
  target is dropped with an IDLE, the diagnostics timer runs on at once, nothing fails;
- the node is killed with SIGKILL mid-stream and started again (same namespace, as a supervisor
  restarts it): it comes back ready and tracks a new target;
- two nodes in two namespaces on one camera topic: each tracks its own target, a clear of one
  leaves the other tracking, their diagnostics stay apart.
"""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time as TimeMsg  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from cract.msg import TrackedObject  # noqa: E402
from cract_ros.conversions import bgr_to_image  # noqa: E402
from cract_ros.bags.sequence import read_frames, read_groundtruth  # noqa: E402
from node_harness import REPLY_TIMEOUT, key, node_factory, stamp_msg  # noqa: E402,F401 (node_factory: a fixture)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FAST = {"warmup": False, "num_threads": 1}


@pytest.fixture
def bird(shared_sequence) -> dict:
    seq = shared_sequence("otb_bird2")
    frames = list(read_frames(seq, 12))
    return {"msgs": [bgr_to_image(f) for f in frames], "gt": read_groundtruth(seq)}


def test_camera_stops_and_resumes_then_a_new_target_tracks(node_factory, bird) -> None:
    nut = node_factory("camera_gap", lockstep=True, watchdog_timeout_s=0.5, diagnostics_period_s=0.2, **FAST)
    msgs, gt = bird["msgs"], bird["gt"]
    nut.publish_until_answered(msgs[0], 0)  # (a first best-effort frame can be lost while transports open)
    assert nut.call_set_target(gt[0], stamp_msg(0)).success
    for i in (1, 2):
        assert nut.publish_and_wait(msgs[i], i).frame_index == i
    # the camera stops: the watchdog says LOST (no frame of the camera's carries it) and WARNs
    lost = nut.spin_until(lambda: [r for r in nut.results if r.state == TrackedObject.LOST
                                   and key(r.header.stamp) not in {key(stamp_msg(i)) for i in range(12)}],
                          30.0, "the watchdog's LOST")[-1]
    assert lost.width > 0 and np.isnan(lost.bearing_x)
    status, _ = nut.latest_diag(lambda v: v["state"] == "LOST", "a LOST diagnostic")
    assert status.level == DiagnosticStatus.WARN
    # it resumes: the frame is tracked (the old target, frame 3), the warning clears
    assert nut.publish_and_wait(msgs[3], 3).frame_index == 3
    nut.diagnostics.clear()
    status, _ = nut.latest_diag(lambda v: v["state"] != "LOST", "diagnostics after the camera came back")
    assert status.level == DiagnosticStatus.OK
    # a new target on a new frame: tracking starts over from it
    nut.publish_and_wait(msgs[4], 4)
    resp = nut.call_set_target(gt[4], stamp_msg(4))
    assert resp.success, resp.message
    again = nut.publish_and_wait(msgs[5], 5)
    assert again.state != TrackedObject.IDLE and again.frame_index == 1
    _, values = nut.latest_diag(lambda v: int(v["processed"]) >= 8, "the final diagnostics")
    assert values["errors"] == "0" and values["bad_images"] == "0"


def _stamp(seconds: float) -> TimeMsg:
    ns = int(round(seconds * 1e9))
    return TimeMsg(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def test_clock_jumping_back_resets_the_frame_buffer_and_timers(node_factory, bird) -> None:
    """A bag of frames one second apart played to its 6th frame, then again from its start."""
    nut = node_factory("time_jump", lockstep=True, use_sim_time=True, diagnostics_period_s=0.5,
                       watchdog_timeout_s=30.0, **FAST)
    msgs, gt = bird["msgs"], bird["gt"]
    clock = nut.node.create_publisher(Clock, "/clock", 10)
    nut.spin_until(lambda: clock.get_subscription_count() > 0, 30.0, "the node's /clock subscription")
    diag_stamps: list[float] = []
    nut.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diag_stamps.append(
        m.header.stamp.sec + m.header.stamp.nanosec * 1e-9) if any(s.hardware_id == nut.fqn for s in m.status) else None,
        10)

    def play(i: int, t: float, retry: bool = False) -> TrackedObject:
        """/clock then the frame; `retry`: publish again each second until answered (a first
        best-effort frame can be lost while the transports open; only before a target is set)."""
        msg = msgs[i]
        msg.header.stamp = _stamp(t)
        msg.header.frame_id = "camera"
        n_before = len([r for r in nut.results if key(r.header.stamp) == key(msg.header.stamp)])
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:
            clock.publish(Clock(clock=_stamp(t)))
            nut.camera.publish(msg)
            try:
                return nut.spin_until(lambda: [r for r in nut.results if key(r.header.stamp) == key(msg.header.stamp)][n_before:],
                                      1.0 if retry else REPLY_TIMEOUT, f"the answer to the frame at {t} s")[-1]
            except pytest.fail.Exception:
                if not retry or time.monotonic() > deadline:
                    raise

    play(0, 1000.0, retry=True)
    assert nut.call_set_target(gt[0], _stamp(1000.0)).success
    for i in range(1, 6):
        assert play(i, 1000.0 + i).frame_index == i
    before = len(nut.results)
    # the bag restarts: /clock goes back to 1000 s and the same stamps come again, other images
    clock.publish(Clock(clock=_stamp(1000.0)))
    idle = nut.spin_until(lambda: [r for r in nut.results[before:] if r.state == TrackedObject.IDLE], 30.0,
                          "the IDLE of the dropped target")[-1]
    assert 1000 <= idle.header.stamp.sec < 1005, "stamped on the new timeline"
    assert "time jumped back by 5.000 s" in nut.log_text()
    assert play(1, 1000.0).state == TrackedObject.IDLE  # no target now
    # the timers run on at once (rcl restarts a period at a jump): diagnostics stamped before
    # the old timeline's 1005 s arrive while the clock moves on from 1000 s
    t = 1000.0
    while not [s for s in diag_stamps if s < 1004.0]:
        t += 0.1
        assert t < 1004.0, f"no diagnostics after the jump: {diag_stamps}"
        clock.publish(Clock(clock=_stamp(t)))
        nut.executor.spin_once(timeout_sec=0.05)
    # the buffer holds the new timeline only: the old frame at 1005 s is gone, the new 1000 s is found
    resp = nut.call_set_target(gt[5], _stamp(1005.0))
    assert not resp.success and "no buffered frame with stamp 1005.000000000" in resp.message, resp.message
    assert nut.call_set_target(gt[1], _stamp(1000.0)).success
    assert play(2, t + 0.5).frame_index == 1
    _, values = nut.latest_diag(lambda v: v["time_jumps"] == "1", "the jump counted in the diagnostics")
    assert values["errors"] == "0"
    assert nut.proc.poll() is None


def test_sigkill_mid_stream_and_restart_comes_back_ready(node_factory, bird) -> None:
    msgs, gt = bird["msgs"], bird["gt"]
    namespace = f"/t_restart_{uuid.uuid4().hex[:6]}"
    first = node_factory("killed", namespace=namespace, **FAST)
    first.publish_until_answered(msgs[0], 0)
    assert first.call_set_target(gt[0], stamp_msg(0)).success
    for i in range(1, 4):  # newest-frame mode, a camera that does not wait: answers come while it streams
        first.publish(msgs[i], i)
        first.executor.spin_once(timeout_sec=0.1)
    first.spin_until(lambda: [r for r in first.results if r.state != TrackedObject.IDLE and r.frame_index >= 1],
                     REPLY_TIMEOUT, "a tracked frame before the kill")
    first.publish(msgs[4], 4)
    first.proc.kill()  # SIGKILL mid-stream: no shutdown at all
    assert first.proc.wait(timeout=30) == -9
    first.expected_exit = -9
    # the supervisor starts it again, same name and namespace
    second = node_factory("restarted", namespace=namespace, **FAST)
    assert second.fqn == first.fqn
    # (the graph lists the killed node's reader until its lease runs out: frame 5 may go there first)
    second.publish_until_answered(msgs[5], 5)
    resp = second.call_set_target(gt[5], stamp_msg(5))
    assert resp.success, resp.message
    tracked = second.publish_and_wait(msgs[6], 6)
    assert tracked.state != TrackedObject.IDLE and tracked.frame_index == 1
    _, values = second.latest_diag(lambda v: int(v["processed"]) >= 2, "the restarted node's diagnostics")
    assert values["errors"] == "0" and values["lifecycle_state"] == "active"


def test_two_nodes_on_one_camera_do_not_interfere(node_factory, bird, rclpy_init) -> None:
    msgs, gt = bird["msgs"], bird["gt"]
    camera_topic = f"/shared_camera_{uuid.uuid4().hex[:6]}/image_raw"
    a = node_factory("node_a", image_topic=camera_topic, lockstep=True, diagnostics_period_s=0.2, **FAST)
    b = node_factory("node_b", image_topic=camera_topic, lockstep=True, diagnostics_period_s=0.2, **FAST)
    assert a.fqn != b.fqn and a.fqn.endswith("/cract_tracker") and b.fqn.endswith("/cract_tracker")
    camera = a.camera  # on camera_topic: both nodes subscribe to it
    a.spin_until(lambda: camera.get_subscription_count() >= 2, 30.0, "both nodes on the camera topic")

    def frame(i: int, retry: bool = False) -> tuple[TrackedObject, TrackedObject]:
        """`retry`: publish again each second until both answer (only before a target is set)."""
        msg = msgs[i]
        msg.header.stamp = stamp_msg(i)
        msg.header.frame_id = "camera"
        camera.publish(msg)
        deadline = time.monotonic() + REPLY_TIMEOUT
        next_retry = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            got = [n.results_for(stamp_msg(i)) for n in (a, b)]
            if all(got):
                return got[0][-1], got[1][-1]
            a.executor.spin_once(timeout_sec=0.02)
            b.executor.spin_once(timeout_sec=0.02)
            if retry and time.monotonic() > next_retry:
                camera.publish(msg)
                next_retry += 1.0
        pytest.fail(f"no answer of both nodes to frame {i}")

    ra, rb = frame(0, retry=True)
    assert ra.state == rb.state == TrackedObject.IDLE
    assert a.call_set_target(gt[0], stamp_msg(0)).success  # only a gets a target
    ra, rb = frame(1)
    assert ra.state != TrackedObject.IDLE and ra.frame_index == 1 and rb.state == TrackedObject.IDLE
    # b gets a target of its own, one frame later and somewhere else
    resp = b.call_set_target([40.0, 40.0, 60.0, 50.0], stamp_msg(1))
    assert resp.success, resp.message
    ra, rb = frame(2)
    assert ra.frame_index == 2 and rb.frame_index == 1 and rb.state != TrackedObject.IDLE
    # clearing a leaves b tracking
    clear = a.call(a.clear_target, Trigger.Request(), "a's ~/clear_target")
    assert clear.success
    ra, rb = frame(3)
    assert ra.state == TrackedObject.IDLE and rb.state != TrackedObject.IDLE and rb.frame_index == 2
    # each node's diagnostics are its own
    _, va = a.latest_diag(lambda v: int(v["processed"]) >= 5, "a's diagnostics")
    assert va["state"] == "IDLE" and va["errors"] == "0" and va["refused_targets"] == "0"
    assert b.proc.poll() is None and a.proc.poll() is None
