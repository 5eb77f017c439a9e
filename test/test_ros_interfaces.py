"""The package's own interfaces, built by CMakeLists.txt into the venv, over real DDS."""
from __future__ import annotations

import math
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import MultiThreadedExecutor  # noqa: E402

from cract.msg import TrackedObject  # noqa: E402
from cract.srv import SetTarget  # noqa: E402

pytestmark = pytest.mark.ros


def test_tracked_object_fields_and_constants() -> None:
    fields = TrackedObject.get_fields_and_field_types()
    assert fields == {
        "header": "std_msgs/Header",
        "x": "float", "y": "float", "width": "float", "height": "float",
        "confidence": "float",
        "state": "uint8",
        "frame_index": "uint32",
        "latency_ms": "float",
        "offset_x": "float", "offset_y": "float", "relative_size": "float",
        "bearing_x": "float", "bearing_y": "float",  # added last: older consumers keep their layout
    }
    assert (TrackedObject.IDLE, TrackedObject.TRACKING, TrackedObject.LOW_CONFIDENCE, TrackedObject.LOST) == (0, 1, 2, 3)


def test_set_target_fields() -> None:
    assert SetTarget.Request.get_fields_and_field_types() == {
        "x": "float", "y": "float", "width": "float", "height": "float",
        "stamp": "builtin_interfaces/Time",
    }
    assert SetTarget.Response.get_fields_and_field_types() == {"success": "boolean", "message": "string"}


def _spin_until(executor, predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def test_interfaces_round_trip_over_dds(rclpy_init) -> None:
    """A TrackedObject topic and a SetTarget service between two nodes in one process."""
    server = rclpy.create_node("cract_iface_server")
    client_node = rclpy.create_node("cract_iface_client")
    executor = MultiThreadedExecutor()
    executor.add_node(server)
    executor.add_node(client_node)
    try:
        received: list[TrackedObject] = []
        client_node.create_subscription(TrackedObject, "cract_iface_test/tracked", received.append, 10)
        pub = server.create_publisher(TrackedObject, "cract_iface_test/tracked", 10)

        def handle(req: SetTarget.Request, resp: SetTarget.Response) -> SetTarget.Response:
            resp.success = req.width > 0
            resp.message = f"box {req.x:g},{req.y:g},{req.width:g},{req.height:g} at {req.stamp.sec}"
            return resp

        server.create_service(SetTarget, "cract_iface_test/set_target", handle)
        cli = client_node.create_client(SetTarget, "cract_iface_test/set_target")
        assert _spin_until(executor, lambda: pub.get_subscription_count() > 0), "subscriber never matched"

        msg = TrackedObject()
        msg.header.frame_id = "camera"
        msg.header.stamp.sec = 12
        msg.x, msg.y, msg.width, msg.height = 1.5, 2.5, 30.0, 40.0
        msg.state = TrackedObject.TRACKING
        msg.frame_index = 7
        msg.bearing_x, msg.bearing_y = 0.25, float("nan")  # NaN (no calibration) crosses DDS as NaN
        pub.publish(msg)
        assert _spin_until(executor, lambda: len(received) > 0), "TrackedObject never arrived"
        got = received[0]
        assert (got.header.frame_id, got.header.stamp.sec, got.x, got.height, got.state, got.frame_index) == \
            ("camera", 12, 1.5, 40.0, TrackedObject.TRACKING, 7)
        assert got.bearing_x == 0.25 and math.isnan(got.bearing_y)

        assert cli.wait_for_service(timeout_sec=20.0)
        req = SetTarget.Request(x=10.0, y=20.0, width=30.0, height=40.0)
        req.stamp.sec = 5
        future = cli.call_async(req)
        assert _spin_until(executor, future.done), "service never answered"
        assert future.result().success
        assert future.result().message == "box 10,20,30,40 at 5"
    finally:
        executor.shutdown()
        server.destroy_node()
        client_node.destroy_node()
