"""What the node says about itself on its timer group: /diagnostics (every state: counters, latencies,
memory, device, calibration) and the image watchdog (no image for watchdog_timeout_s while tracking:
state LOST and a warning). The diagnostics timer also gives free heap pages back now and then.

Diagnostics is a mixin of TrackerNode.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, DiagnosticArray, KeyValue

from cract.msg import TrackedObject
from cract_ros.node.memory import cuda_allocated_mib, process_rss_mib, trim_heap
from cract_ros.node.settings import STATE_NAMES

HEAP_TRIM_PERIOD_S = 20.0  # the diagnostics timer gives free heap pages back this often (trim_heap)


def percentile(values: Any, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


class Diagnostics:
    """TrackerNode's timers: the image watchdog and /diagnostics."""

    def _check_watchdog(self) -> None:
        try:
            self._check_watchdog_unguarded()
        except Exception as exc:  # as above: never end the executor from a timer
            self.get_logger().error(f"watchdog: {type(exc).__name__}: {exc}", throttle_duration_sec=10.0)

    def _check_watchdog_unguarded(self) -> None:
        with self._cv:
            last = self._last_image_time
        if self._active and last is None and not self._no_image_warned:
            waited = time.monotonic() - self._active_since
            if waited > self.p["watchdog_timeout_s"]:  # a camera that never published (or a wrong image_topic)
                self._no_image_warned = True
                topic = self._image_sub.topic_name
                self.get_logger().warning(f"no image on {topic} {waited:.1f} s after activation "
                                          f"({self.count_publishers(topic)} publishers): is the camera running "
                                          f"and image_topic right?")
        if not self._active or not self._target_set or self._watchdog_tripped or last is None:
            return
        silent = time.monotonic() - max(last, self._watch_since)
        if silent <= self.p["watchdog_timeout_s"]:
            return
        self._watchdog_tripped = True
        self._state = TrackedObject.LOST
        self.get_logger().warning(f"watchdog: no image for {silent:.1f} s on {self._image_sub.topic_name}: "
                                  f"target LOST until images come back")
        out = self._empty_message(TrackedObject.LOST)
        with self._cv:
            if self._history:
                out.header.frame_id = self._history[-1].header.frame_id
        out.x, out.y, out.width, out.height = (float(v) for v in self._last_box)
        self._pub.publish(out)

    def diagnostics_values(self) -> dict[str, str]:
        with self._cv:
            received, dropped, last = self._received, self._dropped, self._last_image_time
        now = time.monotonic()
        # copy each deque in one C call before iterating in Python: the tracker's thread appends
        times = [t for t in list(self._processed_times) if now - t <= 5.0]
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else 0.0
        lat = list(self._latencies)
        upd = list(self._update_latencies)
        cuda = cuda_allocated_mib()
        return {
            "state": STATE_NAMES.get(self._state, str(self._state)),
            "lifecycle_state": self.lifecycle_state,
            "processed_rate_hz": f"{rate:.2f}",
            "received": str(received),
            "processed": str(self._processed),
            "dropped": str(dropped),
            "bad_images": str(self._bad_images),
            "refused_targets": str(self._refused_targets),
            "refused_parameters": str(self._refused_parameters),
            "time_jumps": str(self._time_jumps),
            "errors": str(self._errors),
            "latency_ms_p50": f"{percentile(lat, 50):.2f}",
            "latency_ms_p95": f"{percentile(lat, 95):.2f}",
            "update_frames": str(self._updates),
            "update_latency_ms_p50": f"{percentile(upd, 50):.2f}",
            "update_latency_ms_p95": f"{percentile(upd, 95):.2f}",
            "weights_version": str(self._weights_version),
            "seconds_since_image": f"{now - last:.2f}" if last is not None else "never",
            "device": self._device_name,
            "camera_info": self._calibrations.describe() if self.p["camera_info_topic"] else "off",
            "bad_camera_info": str(self._calibrations.refused),
            "frames_without_bearing": str(self._frames_without_bearing),
            "model_mib": f"{self._model_mib:.1f}",
            "rss_mib": f"{process_rss_mib():.1f}",
            "cuda_allocated_mib": f"{cuda:.1f}" if cuda is not None else "n/a",
            "configure_error": self._configure_error or "",
        }

    def _publish_diagnostics(self) -> None:
        try:
            self._publish_diagnostics_unguarded()
        except Exception as exc:  # an exception in a timer would end executor.spin(): log it instead
            self.get_logger().error(f"diagnostics: {type(exc).__name__}: {exc}", throttle_duration_sec=10.0)

    def _publish_diagnostics_unguarded(self) -> None:
        now = time.monotonic()
        if now - self._last_heap_trim >= HEAP_TRIM_PERIOD_S:
            self._last_heap_trim = now
            trim_heap()
        values = self.diagnostics_values()
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: tracker"
        status.hardware_id = self.get_fully_qualified_name()
        if self._configure_error and self.lifecycle_state == "unconfigured":
            status.level = DiagnosticStatus.ERROR
            status.message = f"configure failed: {self._configure_error}"
        elif self._watchdog_tripped:
            status.level = DiagnosticStatus.WARN
            status.message = f"no image for {values['seconds_since_image']} s"
        elif self._no_image_warned and values["seconds_since_image"] == "never" and self._active:
            status.level = DiagnosticStatus.WARN
            status.message = f"no image on {self._image_sub.topic_name} since activation"
        elif self._errors:
            status.level = DiagnosticStatus.WARN
            status.message = f"{values['state']}; {self._errors} errors"
        elif self.lifecycle_state != "active":
            status.level = DiagnosticStatus.OK
            status.message = self.lifecycle_state
        else:
            status.level = DiagnosticStatus.OK
            status.message = values["state"]
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diag_pub.publish(array)
