"""Target requests: ~/set_target and ~/clear_target (services) and ~/target (a topic), checked here
(lifecycle state, NaN, the stamp's frame in the buffer, the box against the image) and handed to
the tracker's thread as Requests; a bad request is answered at once and never costs a frame.

TargetRequests is a mixin of TrackerNode; its callbacks run in the reentrant service group.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from sensor_msgs.msg import RegionOfInterest
from std_srvs.srv import Trigger

from cract.msg import TrackedObject
from cract.srv import SetTarget
from cract_ros.conversions import ImageConversionError
from cract_ros.node.frames import find_frame
from cract_ros.node.work import Request, format_stamp, stamp_to_ns


MIN_TARGET_PX = 2.0  # a target under this many pixels (wide or high, inside the image) is refused


def target_box_problem(box: Any, image_size: tuple[int, int]) -> str:
    """Why a requested target box (x, y, w, h in pixels) cannot be tracked in an image of
    (width, height), or "" when it can (a box partly outside is clipped by the tracker).

    The same rule as the tracker's own (cract_core.geometry.clip_box_to_image), checked before the
    request reaches the tracker's thread: a bad box is answered at once and never costs a frame.
    """
    from cract_core.geometry import InvalidBoxError, clip_box_to_image  # torch is loaded by now (configured)

    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.size != 4 or not np.all(np.isfinite(values)):
        return f"box {values.tolist()} has NaN or infinite values" if values.size == 4 else \
            f"box must be 4 numbers, got {values.size}"
    if values[2] < MIN_TARGET_PX or values[3] < MIN_TARGET_PX:
        return f"box size {values[2]:g}x{values[3]:g} is under {MIN_TARGET_PX:g} px"
    try:
        clip_box_to_image(values, image_size, MIN_TARGET_PX)
    except InvalidBoxError as exc:
        return str(exc)
    return ""


class TargetRequests:
    """TrackerNode's target services and topic: validate, then hand over to the tracker's thread."""

    def _submit(self, request: Request) -> Request:
        with self._cv:
            self._requests.append(request)
            self._cv.notify()
        return request

    def _request_init(self, x: float, y: float, w: float, h: float, stamp: TimeMsg, source: str,
                      wait: bool) -> tuple[bool, str]:
        ok, message = self._request_init_unguarded(x, y, w, h, stamp, source, wait)
        if not ok:
            self._count_refused_target()
        return ok, message

    def _count_refused_target(self) -> None:
        with self._cv:  # service threads (a reentrant group) and the tracker's thread all count here
            self._refused_targets += 1

    def _request_init_unguarded(self, x: float, y: float, w: float, h: float, stamp: TimeMsg, source: str,
                                wait: bool) -> tuple[bool, str]:
        if not self._active:
            return False, (f"the node is {self.lifecycle_state}, not active: it takes a target only while active "
                           f"(ros2 lifecycle set {self.get_fully_qualified_name()} activate)")
        box = np.array([x, y, w, h], dtype=np.float64)
        if not np.all(np.isfinite(box)):  # before the frame look-up: a NaN box is refused with or without images
            return False, f"box {box.tolist()} has NaN or infinite values"
        with self._cv:
            frames = list(self._history)
        frame, reason = find_frame(frames, stamp_to_ns(stamp), self._history.maxlen or 0)
        if frame is None:
            if not frames:
                topic = self._image_sub.topic_name if self._image_sub is not None else self.p["image_topic"]
                reason = f"{reason} on {topic}"
            return False, reason
        try:
            size = frame.size()
        except ImageConversionError as exc:
            return False, f"the frame with stamp {format_stamp(frame.header.stamp)} is not usable: {exc}"
        problem = target_box_problem(box, size)
        if problem:
            return False, problem
        request = self._submit(Request("init", frame=frame, box=box, source=source, waited=wait))
        if not wait:
            return True, "queued"
        if not request.done.wait(self.p["init_timeout_s"]):
            request.cancelled = True
            return False, f"the tracker's thread did not answer within {self.p['init_timeout_s']} s"
        return request.success, request.message

    def _on_set_target(self, req: SetTarget.Request, resp: SetTarget.Response) -> SetTarget.Response:
        try:
            resp.success, resp.message = self._request_init(req.x, req.y, req.width, req.height, req.stamp,
                                                            "~/set_target", wait=True)
        except Exception as exc:  # answer, never end the executor
            resp.success, resp.message = False, f"internal error: {type(exc).__name__}: {exc}"
        text = (f"set_target {req.x:g},{req.y:g},{req.width:g},{req.height:g} @ {format_stamp(req.stamp)}: "
                f"{'ok' if resp.success else 'refused'}: {resp.message}")
        # (one severity per call site: rclpy refuses a logger call that changes it)
        if resp.success:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)
        return resp

    def _on_clear_target(self, req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        request = self._submit(Request("clear", source="~/clear_target"))
        if request.done.wait(self.p["init_timeout_s"]):
            resp.success, resp.message = request.success, request.message
        else:
            request.cancelled = True
            resp.success, resp.message = False, f"the tracker's thread did not answer within {self.p['init_timeout_s']} s"
        return resp

    def _on_target_msg(self, msg: TrackedObject) -> None:
        ok, why = self._request_init(msg.x, msg.y, msg.width, msg.height, msg.header.stamp, "~/target", wait=False)
        if not ok:
            self.get_logger().warning(f"~/target refused: {why}", throttle_duration_sec=2.0)

    def _on_target_roi(self, msg: RegionOfInterest) -> None:
        ok, why = self._request_init(float(msg.x_offset), float(msg.y_offset), float(msg.width), float(msg.height),
                                     TimeMsg(), "~/target", wait=False)
        if not ok:
            self.get_logger().warning(f"~/target refused: {why}", throttle_duration_sec=2.0)
