"""The tracker's thread: the one thread that uses the cract_core Tracker. It runs the Requests handed to
it between frames (init, clear, params, release, time_jump), tracks the newest frame (or each one in
lock-step) and publishes ~/tracked_object and ~/debug_image.

TrackingWorker is a mixin of TrackerNode; TrackerNode starts _run on a thread at configure.
"""
from __future__ import annotations

import math
import time
from typing import Any, Optional

import cv2
import numpy as np

from cract.msg import TrackedObject
from cract_ros.conversions import ImageConversionError, bgr_to_image
from cract_ros.node.memory import trim_heap
from cract_ros.node.settings import STATE_NAMES
from cract_ros.node.work import Frame, Request, format_stamp


class TrackingWorker:
    """TrackerNode's tracker thread: requests between frames, then track and publish."""

    def _run(self) -> None:
        pending: list[Request] = []
        while True:
            with self._cv:
                while not (self._stop or self._requests or self._latest is not None or self._fifo):
                    self._cv.wait(0.5)
                if self._stop:
                    # cleanup: callers waiting on a target request get an answer now; parameter
                    # changes stay queued for the next configure's tracker
                    pending = [r for r in self._requests if r.kind != "params"]
                    kept = [r for r in self._requests if r.kind == "params"]
                    self._requests.clear()
                    self._requests.extend(kept)
                    break
                requests = list(self._requests)
                self._requests.clear()
                frame: Optional[Frame] = None
                if not requests:
                    if self._fifo:
                        frame = self._fifo.popleft()
                    elif self._latest is not None:
                        frame, self._latest = self._latest, None
            for request in requests:
                try:
                    self._execute(request)
                except Exception as exc:  # never let a request kill the tracker's thread
                    self._errors += 1
                    self.get_logger().error(f"{request.kind} request failed: {type(exc).__name__}: {exc}")
                    request.finish(False, f"{type(exc).__name__}: {exc}")
            if frame is not None:
                try:
                    self._process(frame)
                except Exception as exc:
                    self._errors += 1
                    self.get_logger().error(f"frame {format_stamp(frame.header.stamp)} failed: "
                                            f"{type(exc).__name__}: {exc}", throttle_duration_sec=2.0)
        for request in pending:
            request.finish(False, "the node is being cleaned up: no tracker any more")

    def _execute(self, request: Request) -> None:
        if request.cancelled:
            return
        if request.kind == "init":
            if not self._active:  # deactivated after the request was queued
                request.finish(False, f"the node is {self.lifecycle_state}, not active")
                return
            self._init_target(request)
            if not request.success and not request.waited:  # ~/target: nobody waits for the answer
                self._count_refused_target()
                self.get_logger().warning(f"{request.source} refused: {request.message}", throttle_duration_sec=2.0)
        elif request.kind == "clear":
            was = self._target_set
            self._target_set = False
            self._state = TrackedObject.IDLE
            request.finish(True, "target cleared" if was else "no target was set")
        elif request.kind == "release":
            self._release_target()
            request.finish(True, "released")
        elif request.kind == "time_jump":  # the frames went with the jump already (_on_time_jump)
            self._release_target(discard_frames=False)
            request.finish(True, "target dropped")
        elif request.kind == "params":
            if self._tracker is None:
                request.finish(True, "stored for the next configure")
                return
            try:
                self._tracker.set_params(**request.params)
                request.finish(True, "applied")
            except Exception as exc:
                self.get_logger().error(f"Tracker.set_params({request.params}) failed: {exc}")
                request.finish(False, str(exc))

    def _release_target(self, discard_frames: bool = True) -> None:
        """Deactivation (and a jump back in time): drop the target and the frames not yet tracked,
        and say so with one IDLE TrackedObject (a follower then stops at once instead of waiting
        for its timeout)."""
        was = self._target_set
        self._target_set = False
        self._state = TrackedObject.IDLE
        with self._cv:
            if discard_frames:
                frame_id = self._discard_frames()
            else:
                frame_id = self._history[-1].header.frame_id if self._history else ""
        if was and self._pub is not None:
            out = self._empty_message(TrackedObject.IDLE)
            out.header.frame_id = frame_id
            self._pub.publish(out)

    def _empty_message(self, state: int) -> TrackedObject:
        out = TrackedObject()
        out.header.stamp = self.get_clock().now().to_msg()
        out.state = state
        out.bearing_x = out.bearing_y = math.nan
        return out

    def _init_target(self, request: Request) -> None:
        frame = request.frame
        t0 = time.monotonic()
        try:
            bgr = frame.bgr()
        except ImageConversionError as exc:
            request.finish(False, f"the frame with stamp {format_stamp(frame.header.stamp)} is not usable: {exc}")
            return
        try:
            result = self._tracker.init(bgr, request.box)
        except ValueError as exc:  # InvalidBoxError / InvalidInputError: the reason is the message
            request.finish(False, str(exc))
            return
        self._target_set = True
        self._watchdog_tripped = False
        self._watch_since = time.monotonic()  # an init takes seconds: the watchdog counts from its end
        online = getattr(self._tracker, "online", None)
        if online is not None:  # a new learner per init: give it the node's gate (test_hold_updates)
            online.solve_gate = self._solve_gate
        with self._cv:  # frames up to the init frame precede the target: do not track them
            while self._fifo and self._fifo[0].stamp_ns <= frame.stamp_ns:
                skipped = self._fifo.popleft()
                self._dropped += skipped is not frame  # (the init frame itself is answered by the init)
            if self._latest is frame:
                self._latest = None
        box = np.asarray(result.box, dtype=np.float64)
        self._publish(frame, bgr, result, (time.monotonic() - frame.received) * 1e3)
        trim_heap()  # the initialisation's temporaries (the discriminator's 1200 samples) are free now
        h, w = bgr.shape[:2]
        clipped = "" if np.allclose(box, request.box, atol=1e-3) else f" (clipped to the {w}x{h} image)"
        request.finish(True, f"tracking from {box.round(1).tolist()}{clipped} in the frame of "
                             f"{format_stamp(frame.header.stamp)}; init took {(time.monotonic() - t0) * 1e3:.0f} ms")

    def _process(self, frame: Frame) -> None:
        try:
            bgr = frame.bgr()
        except ImageConversionError as exc:
            self._bad_images += 1
            self.get_logger().warning(f"bad image ({self._bad_images} so far) skipped: {exc}",
                                      throttle_duration_sec=5.0)
            return
        result = None
        if self._target_set:
            try:
                result = self._tracker.track(bgr)
            except ValueError as exc:  # InvalidInputError: a frame the tracker cannot use
                self._bad_images += 1
                self.get_logger().warning(f"bad image ({self._bad_images} so far) skipped: {exc}",
                                          throttle_duration_sec=5.0)
                return
        self._publish(frame, bgr, result, (time.monotonic() - frame.received) * 1e3)

    def _publish(self, frame: Frame, bgr: np.ndarray, result: Any, latency_ms: float) -> None:
        h, w = bgr.shape[:2]
        out = TrackedObject()
        out.header = frame.header
        out.latency_ms = float(latency_ms)
        out.bearing_x = out.bearing_y = math.nan
        if result is None:
            out.state = TrackedObject.IDLE
        else:
            box = np.asarray(result.box, dtype=np.float64).reshape(4)
            x, y, bw, bh = (float(v) for v in box)
            out.x, out.y, out.width, out.height = x, y, bw, bh
            conf = float(result.confidence)
            out.confidence = min(max(conf, 0.0), 1.0) if math.isfinite(conf) else 0.0
            out.state = int(result.state)
            out.frame_index = int(result.frame_index)
            out.offset_x = float(np.clip((x + bw / 2 - w / 2) / (w / 2), -1.0, 1.0))
            out.offset_y = float(np.clip((y + bh / 2 - h / 2) / (h / 2), -1.0, 1.0))
            out.relative_size = float(bw * bh / (w * h))
            out.bearing_x, out.bearing_y = self._bearing(frame, box, (w, h))
            self._last_box = box
            self._weights_version = int(getattr(result, "weights_version", -1))
            if getattr(result, "updated", False):
                self._updates += 1
                self._update_latencies.append(latency_ms)
            if self._watchdog_tripped:
                self._watchdog_tripped = False
                self.get_logger().info("images again: watchdog cleared")
        self._state = out.state
        self._pub.publish(out)
        self._processed += 1
        self._latencies.append(latency_ms)
        self._processed_times.append(time.monotonic())
        if self.p["debug_image"] and self._debug_pub.get_subscription_count() > 0:
            self._debug_pub.publish(bgr_to_image(draw_debug(bgr, out), header=frame.header))


_STATE_COLOURS = {0: (160, 160, 160), 1: (0, 200, 0), 2: (0, 200, 255), 3: (0, 0, 255)}


def draw_debug(bgr: np.ndarray, out: TrackedObject) -> np.ndarray:
    img = np.ascontiguousarray(bgr).copy()
    colour = _STATE_COLOURS.get(out.state, (255, 255, 255))
    if out.state != TrackedObject.IDLE:
        p1 = (int(round(out.x)), int(round(out.y)))
        p2 = (int(round(out.x + out.width)), int(round(out.y + out.height)))
        cv2.rectangle(img, p1, p2, colour, 2)
    cv2.putText(img, f"{STATE_NAMES.get(out.state, '?')} {out.confidence:.2f} {out.latency_ms:.0f}ms",
                (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2, cv2.LINE_AA)
    return img
