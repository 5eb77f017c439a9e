"""The node's input: camera images into the frame buffer (the newest-frame slot, the lock-step FIFO and
the history ~/set_target looks stamps up in), CameraInfo into calibrations found by image stamp, the
bearings they give, and a jump back of the clock, which empties both.

FrameInput is a mixin of TrackerNode: its callbacks run in the image callback group and only store
what arrives; the tracker's thread (worker.py) takes it from there.
"""
from __future__ import annotations

import collections
import collections.abc
import math
import threading
import time
from typing import Any, Optional

import numpy as np
from rclpy.clock import TimeJump
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from cract_core.camera import CameraModel, CameraModelError, box_centre_pixel
from cract_ros.conversions import camera_model_from_info
from cract_ros.node.work import Frame, Request, format_ns, format_stamp, stamp_to_ns


def find_frame(frames: "collections.abc.Sequence[Frame]", stamp_ns: int, capacity: int) -> tuple[Optional["Frame"], str]:
    """The buffered frame a target request refers to: the newest one for stamp 0, else the newest
    with exactly that stamp; (None, why not) when there is none. `capacity`: how many frames the
    buffer keeps (for the reason)."""
    if not frames:
        return None, "no image received yet"
    if stamp_ns == 0:
        return frames[-1], ""
    for frame in reversed(frames):
        if frame.stamp_ns == stamp_ns:
            return frame, ""
    first, last = frames[0].header.stamp, frames[-1].header.stamp
    return None, (f"no buffered frame with stamp {format_ns(stamp_ns)}: the node keeps the last {capacity} frames, "
                  f"now {format_stamp(first)} to {format_stamp(last)}")



class Calibrations:
    """The camera's recent CameraInfo messages as CameraModels, found by image stamp.

    Each distinct calibration is checked once (a camera repeats the same one at its frame rate);
    a message that cannot be used is kept as a refusal, so that its frame and, while it is the
    newest, later frames get NaN bearings rather than an older calibration's.
    """

    def __init__(self, size: int, rectified: bool) -> None:
        self._by_stamp: collections.OrderedDict[int, tuple[Optional[CameraModel], str]] = collections.OrderedDict()
        self._size = size
        self._rectified = rectified
        self._parsed: collections.OrderedDict[tuple, tuple[Optional[CameraModel], str]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.latest: Optional[tuple[Optional[CameraModel], str]] = None
        self.refused = 0

    def add(self, msg: Any) -> tuple[str, bool]:
        """Store a CameraInfo; returns (the reason it cannot be used or "", whether this calibration
        is new: seen for the first time among the last few)."""
        key = (msg.width, msg.height, msg.distortion_model, tuple(msg.d), tuple(msg.k), tuple(msg.p),
               msg.binning_x, msg.binning_y, msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height)
        parsed = self._parsed.get(key)
        new = parsed is None
        if new:
            try:
                parsed = (camera_model_from_info(msg, rectified=self._rectified), "")
            except CameraModelError as exc:
                parsed = (None, str(exc))
            self._parsed[key] = parsed
            while len(self._parsed) > 8:
                self._parsed.popitem(last=False)
        with self._lock:
            self._by_stamp[stamp_to_ns(msg.header.stamp)] = parsed
            while len(self._by_stamp) > self._size:
                self._by_stamp.popitem(last=False)
            self.latest = parsed
            if parsed[0] is None:
                self.refused += 1
        return parsed[1], new

    def for_stamp(self, stamp_ns: int) -> tuple[Optional[CameraModel], str]:
        """(model, "") for the image with this stamp, else (None, why not)."""
        with self._lock:
            found = self._by_stamp.get(stamp_ns, self.latest)
        if found is None:
            return None, "no CameraInfo received"
        return found

    def describe(self) -> str:
        latest = self.latest
        if latest is None:
            return "none received"
        model, why = latest
        if model is None:
            return f"refused: {why}"
        return f"{model.width}x{model.height} {model.distortion_model}"


class FrameInput:
    """TrackerNode's image group: store frames and calibrations, never wait for tracking."""

    def _on_image(self, msg: Image) -> None:
        self._enqueue(Frame(msg.header, msg, False, time.monotonic()))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._enqueue(Frame(msg.header, msg, True, time.monotonic()))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        why, new = self._calibrations.add(msg)
        if not why:
            return
        text = f"CameraInfo refused ({self._calibrations.refused} so far), bearings NaN: {why}"
        # each new problem is said at once; a camera repeating it at its frame rate, now and then
        if new:
            self.get_logger().warning(text)
        else:
            self.get_logger().warning(text + " (repeated)", throttle_duration_sec=30.0)

    def _on_time_jump(self, jump: TimeJump) -> None:
        """The node's clock went back (use_sim_time and a bag restarted, or a simulation reset):
        buffered frames belong to the old timeline (their stamps come again, meaning other
        images), so they are forgotten at once, before a frame of the new timeline is stored; the
        calibrations too; the target is dropped with one IDLE message by the tracker's thread
        (the scene jumped: the old box means nothing now). Timers follow by themselves (rcl
        restarts a timer's period at a backward jump)."""
        try:
            with self._cv:
                self._time_jumps += 1
                self._discard_frames()
            self._calibrations = Calibrations(self.p["frame_buffer_size"], self.p["image_is_rectified"])
            self.get_logger().warning(f"time jumped back by {-jump.delta.nanoseconds / 1e9:.3f} s (a bag or simulation "
                                      f"restarted?): frame buffer cleared, target dropped; set a new target")
            if self._thread is not None and self._thread.is_alive():
                self._submit(Request("time_jump", source="clock"))
        except Exception as exc:  # called from rcl inside the /clock callback: never raise into it
            self.get_logger().error(f"time jump: {type(exc).__name__}: {exc}")

    def _enqueue(self, frame: Frame) -> None:
        with self._cv:
            if not self._active:
                return  # a message delivered while deactivating
            self._received += 1
            self._last_image_time = frame.received
            self._history.append(frame)
            if self.p["lockstep"]:
                self._fifo.append(frame)
            else:
                if self._latest is not None:
                    self._dropped += 1  # overwritten before the tracker got to it
                self._latest = frame
            self._cv.notify()

    def _discard_frames(self) -> str:
        """Forget every buffered frame (the ones not yet tracked count as dropped); returns the
        newest one's frame_id. Call with self._cv held."""
        self._dropped += len(self._fifo) + (self._latest is not None)
        self._fifo.clear()
        self._latest = None
        frame_id = self._history[-1].header.frame_id if self._history else ""
        self._history.clear()
        return frame_id

    def _bearing(self, frame: Frame, box: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float]:
        """Bearing of the box centre with the frame's calibration; NaN (counted) when there is none."""
        model, why = self._calibrations.for_stamp(frame.stamp_ns)
        if model is not None and (model.width, model.height) != image_size:
            model, why = None, (f"CameraInfo is for {model.width}x{model.height} images, this one is "
                                f"{image_size[0]}x{image_size[1]}")
        if model is None:
            if self.p["camera_info_topic"]:
                self._frames_without_bearing += 1
                if self._calibrations.latest is not None:  # silence only until a calibration ever came
                    self.get_logger().warning(f"no bearing for frame {format_stamp(frame.header.stamp)}: {why}",
                                              throttle_duration_sec=5.0)
            return math.nan, math.nan
        horizontal, vertical = model.bearing(*box_centre_pixel(*box))
        return float(horizontal), float(vertical)
