"""Real-time replay through the tracker node: a camera that plays recorded frames at their rate.

Used by `cract-bag eval --mode realtime` and by the demo (`python -m cract_ros.tools.demo`). It
starts the node as its own process exactly as the launch file would (cract_ros.process:
`--ros-args --params-file config/cract.yaml`), in a namespace of its own, and talks to it over
real DDS from an rclpy node in this process:

1. frame 0 is published (with /clock) until the node answers it with an IDLE TrackedObject,
   so the node has it buffered; ~/set_target is called with the first box and frame 0's stamp;
2. once the target is set, frames 1.. are published at the recorded rate (their stamp
   differences), best effort with SensorDataQoS like a camera driver, each after a /clock
   message with its stamp (the node runs with use_sim_time). Nothing waits for the node: the
   node tracks the newest frame and drops the rest, as on the robot. The camera starts after
   the initialisation (an init fits the discriminator: seconds on a CPU); a live camera would
   keep running meanwhile and those frames would be dropped too;
3. the node's TrackedObject messages and its /diagnostics are recorded raw (receipt time and
   CDR bytes, for --record) until the last frame's answer arrives.

Time: "receipt minus stamp" latency is the receipt time of a TrackedObject minus the moment
its image was published (the image's stamp in the replay's clock: the publication follows the
stamps). The node's own latency_ms (conversion + tracking, from the image's arrival) is
reported beside it.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

STATE_NAMES = {0: "IDLE", 1: "TRACKING", 2: "LOW_CONFIDENCE", 3: "LOST"}


class ReplayError(RuntimeError):
    """The node could not be started or did not answer; the message says which step failed."""


@dataclass
class ReplayFrame:
    """One camera frame to publish: its stamp and a payload (a sensor_msgs/Image or raw CDR bytes)."""

    stamp_ns: int
    payload: Callable[[], Any]  # called at publication time (decoding/serialising is cheap or cached)


@dataclass
class Output:
    """One TrackedObject from the node, as received."""

    receipt: float  # time.monotonic()
    raw: bytes
    stamp_ns: int
    box: np.ndarray
    state: int
    confidence: float
    latency_ms: float
    frame_index: int


@dataclass
class ReplayResult:
    stamps_ns: list[int]
    publish_times: dict[int, float]  # stamp -> time.monotonic() of the (last) publication
    outputs: list[Output]
    diagnostics: list[tuple[float, bytes, dict]]  # (receipt, raw DiagnosticArray, values of our node)
    init_message: str
    init_s: float
    stream_start: float  # time.monotonic() when frame 1 was published
    stream_end: float  # when the last frame was published
    finished: float  # when the last answer arrived (or the wait gave up)
    node_fqn: str
    tracked_topic: str
    complete: bool  # the last frame was answered
    log_path: Optional[Path] = None
    extra: dict = field(default_factory=dict)

    def last_output_by_stamp(self) -> dict[int, Output]:
        """The node's final word on each stamp (the init result beats frame 0's IDLE)."""
        out: dict[int, Output] = {}
        for o in self.outputs:
            out[o.stamp_ns] = o
        return out


def predictions_by_stamp(result: ReplayResult) -> tuple[np.ndarray, np.ndarray]:
    """One box per replayed frame, as a following controller would have had it.

    A frame the node processed gets its own box. A frame it dropped gets the box of the latest
    processed frame with an earlier stamp (the box the controller was still acting on); a frame
    with no earlier processed frame, or whose answer was IDLE, counts as a failure (NaN box:
    IoU 0, infinite centre error). Returns (boxes (N, 4), processed mask (N,)).
    """
    by_stamp = result.last_output_by_stamp()
    boxes = np.full((len(result.stamps_ns), 4), np.nan)
    processed = np.zeros(len(result.stamps_ns), dtype=bool)
    last: Optional[np.ndarray] = None
    for i, ns in enumerate(result.stamps_ns):
        o = by_stamp.get(ns)
        if o is not None:
            processed[i] = True
            last = o.box if o.state != 0 else None
        if last is not None:
            boxes[i] = last
    return boxes, processed


class NodeReplay:
    """A node process plus this process's rclpy side (camera, /clock, client, recorders)."""

    def __init__(self, image_topic: str, overrides: Optional[dict] = None, log_dir: Optional[Path] = None,
                 namespace: Optional[str] = None, start_timeout: float = 300.0, compressed: bool = False) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CompressedImage, Image

        from cract.msg import TrackedObject
        from cract.srv import SetTarget
        from cract_ros.process import DEFAULT_PARAMS_FILE, start_node

        self._rclpy = rclpy
        self._own_context = not rclpy.ok()
        if self._own_context:
            rclpy.init()
        self.ns = namespace or f"/cract_replay_{uuid.uuid4().hex[:8]}"
        self.fqn = f"{self.ns}/cract_tracker"
        self.tracked_topic = f"{self.fqn}/tracked_object"
        self.start_timeout = start_timeout
        # The image topic as a parameter, not a remap: the compressed transport subscribes to
        # <image_topic>/compressed, which a remap of `image` would not reach.
        base_topic = image_topic[: -len("/compressed")] if compressed and image_topic.endswith("/compressed") else image_topic
        params = {"use_sim_time": True, "image_topic": base_topic,
                  "image_transport": "compressed" if compressed else "raw", **(overrides or {})}
        self.log_path: Optional[Path] = None
        self._log = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            self.log_path = log_dir / "node.log"
            self._log = self.log_path.open("w")
        self.proc = start_node(DEFAULT_PARAMS_FILE, params, namespace=self.ns, log=self._log)
        self.node = rclpy.create_node(f"cract_replay_{uuid.uuid4().hex[:8]}")
        self.image_topic = base_topic + "/compressed" if compressed else base_topic
        self.camera = self.node.create_publisher(CompressedImage if compressed else Image, self.image_topic,
                                                 qos_profile_sensor_data)
        self.clock = self.node.create_publisher(Clock, "/clock", 10)
        self._Clock = Clock
        self._TrackedObject = TrackedObject
        self._DiagnosticArray = DiagnosticArray
        self._SetTarget = SetTarget
        self.set_target = self.node.create_client(SetTarget, f"{self.fqn}/set_target")
        self._lock = threading.Lock()
        self.outputs: list[Output] = []
        self.diagnostics: list[tuple[float, bytes, dict]] = []
        # raw: the bytes go to --record as they came, and are decoded here once
        self.node.create_subscription(TrackedObject, self.tracked_topic, self._on_tracked, 100, raw=True)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10, raw=True)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self._spin_loop, name="replay-spin", daemon=True)
        self._stop = threading.Event()
        self._spin.start()

    # ------------------------------------------------------------------ callbacks (spin thread)

    def _spin_loop(self) -> None:
        while not self._stop.is_set() and self._rclpy.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down under us at close
                break

    def _on_tracked(self, raw: bytes) -> None:
        from rclpy.serialization import deserialize_message

        t = time.monotonic()
        msg = deserialize_message(raw, self._TrackedObject)
        out = Output(t, bytes(raw), int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec),
                     np.array([msg.x, msg.y, msg.width, msg.height], dtype=np.float64), int(msg.state),
                     float(msg.confidence), float(msg.latency_ms), int(msg.frame_index))
        with self._lock:
            self.outputs.append(out)

    def _on_diag(self, raw: bytes) -> None:
        from rclpy.serialization import deserialize_message

        t = time.monotonic()
        msg = deserialize_message(raw, self._DiagnosticArray)
        for status in msg.status:
            if status.hardware_id == self.fqn:  # /diagnostics is shared by every node
                with self._lock:
                    self.diagnostics.append((t, bytes(raw), {kv.key: kv.value for kv in status.values}))

    # ------------------------------------------------------------------ helpers

    def _check_alive(self, what: str) -> None:
        if self.proc.poll() is not None:
            raise ReplayError(f"the node exited with code {self.proc.returncode} while {what}"
                              + (f" (log: {self.log_path})" if self.log_path else ""))

    def _wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        from cract_ros.process import wait_for

        return wait_for(predicate, timeout, what, self._check_alive, lambda: time.sleep(0.02),
                        lambda message: ReplayError(message + (f" (node log: {self.log_path})" if self.log_path else "")))

    def publish(self, frame: ReplayFrame) -> float:
        """/clock with the frame's stamp, then the frame; returns the time.monotonic() of publication."""
        from builtin_interfaces.msg import Time

        sec, nsec = divmod(frame.stamp_ns, 1_000_000_000)
        self.clock.publish(self._Clock(clock=Time(sec=sec, nanosec=nsec)))
        self.camera.publish(frame.payload())
        return time.monotonic()

    def answered(self, stamp_ns: int, non_idle: bool = False) -> bool:
        with self._lock:
            return any(o.stamp_ns == stamp_ns and (not non_idle or o.state != 0) for o in self.outputs)

    def latest_diagnostics(self) -> Optional[dict]:
        with self._lock:
            return self.diagnostics[-1][2] if self.diagnostics else None

    # ------------------------------------------------------------------ the replay

    def wait_ready(self) -> None:
        self._wait(self.set_target.service_is_ready, self.start_timeout, "the node's ~/set_target service")
        self._wait(lambda: self.camera.get_subscription_count() > 0, 60.0, f"the node's subscription to {self.image_topic}")
        self._wait(lambda: self.node.count_publishers(self.tracked_topic) > 0, 60.0, f"a publisher on {self.tracked_topic}")

    def run(self, frames: Sequence[ReplayFrame], init_box: Sequence[float],
            progress: Optional[Callable[[dict], None]] = None, answer_timeout: float = 120.0,
            init_timeout: float = 300.0) -> ReplayResult:
        """Steps 1-3 of the module docstring. `progress(stats)` is called about once a second while streaming."""
        if not frames:
            raise ReplayError("no frames to replay")
        self.wait_ready()
        first = frames[0]
        publish_times: dict[int, float] = {}
        # 1. frame 0 until the node has it (best effort: the first one may precede the match)
        deadline = time.monotonic() + 60.0
        while not self.answered(first.stamp_ns):
            publish_times[first.stamp_ns] = self.publish(first)
            t_next = time.monotonic() + 0.5
            while time.monotonic() < t_next and not self.answered(first.stamp_ns):
                time.sleep(0.01)
            self._check_alive("waiting for the answer to frame 0")
            if time.monotonic() > deadline:
                raise ReplayError(f"the node never answered frame 0 on {self.image_topic} within 60 s")
        req = self._SetTarget.Request(x=float(init_box[0]), y=float(init_box[1]),
                                      width=float(init_box[2]), height=float(init_box[3]))
        req.stamp.sec, req.stamp.nanosec = divmod(first.stamp_ns, 1_000_000_000)
        t0 = time.monotonic()
        future = self.set_target.call_async(req)
        self._wait(future.done, init_timeout, "the answer of ~/set_target")
        resp = future.result()
        init_s = time.monotonic() - t0
        if not resp.success:
            raise ReplayError(f"~/set_target refused the initial box {list(init_box)}: {resp.message}")
        self._wait(lambda: self.answered(first.stamp_ns, non_idle=True), 60.0, "the TrackedObject of the init frame")

        # 2. the camera: frames 1.. at their recorded spacing, never waiting for the node
        start = self._stream_start = time.monotonic()
        base_ns = frames[1].stamp_ns if len(frames) > 1 else first.stamp_ns
        next_report = start + 1.0
        with self._lock:
            reported = len(self.outputs)  # the per-second lines count the camera's frames only
        for frame in frames[1:]:
            due = start + (frame.stamp_ns - base_ns) / 1e9
            while True:
                now = time.monotonic()
                if progress is not None and now >= next_report:
                    reported = self._report(progress, reported, next_report - 1.0, now)
                    next_report += 1.0
                if now >= due:
                    break
                time.sleep(min(0.005, due - now))
            self._check_alive("replaying")
            publish_times[frame.stamp_ns] = self.publish(frame)
        stream_end = time.monotonic()

        # 3. the newest frame is never dropped: wait for the last frame's answer
        last = frames[-1].stamp_ns
        complete = True
        try:
            while not self.answered(last):
                now = time.monotonic()
                if progress is not None and now >= next_report:
                    reported = self._report(progress, reported, next_report - 1.0, now)
                    next_report += 1.0
                self._check_alive("waiting for the last frame's answer")
                if now - stream_end > answer_timeout:
                    complete = False
                    break
                time.sleep(0.01)
        finally:
            finished = time.monotonic()
        self._final_diagnostics(last)
        if progress is not None:
            self._report(progress, reported, next_report - 1.0, finished)
        with self._lock:
            outputs = list(self.outputs)
            diags = list(self.diagnostics)
        return ReplayResult([f.stamp_ns for f in frames], publish_times, outputs, diags, resp.message, init_s,
                            start, stream_end, finished, self.fqn, self.tracked_topic, complete, self.log_path)

    def _final_diagnostics(self, last_ns: int, timeout: float = 5.0) -> None:
        """Advance /clock past one diagnostics period after the last frame and wait for the node's
        /diagnostics: its timers follow /clock (use_sim_time), and the recording should end
        with the node's final counts."""
        from builtin_interfaces.msg import Time

        with self._lock:
            before = len(self.diagnostics)
        deadline = time.monotonic() + timeout
        step = 0
        while time.monotonic() < deadline and self.proc.poll() is None:
            step += 1
            sec, nsec = divmod(last_ns + step * 500_000_000, 1_000_000_000)
            self.clock.publish(self._Clock(clock=Time(sec=sec, nanosec=nsec)))
            t_next = time.monotonic() + 0.25
            while time.monotonic() < t_next:
                with self._lock:
                    if len(self.diagnostics) > before:
                        return
                time.sleep(0.01)

    def _report(self, progress: Callable[[dict], None], reported: int, since: float, now: float) -> int:
        with self._lock:
            new = self.outputs[reported:]
            n = len(self.outputs)
        diag = self.latest_diagnostics() or {}
        last = new[-1] if new else None
        progress({
            "t": now - getattr(self, "_stream_start", now),  # seconds since the camera started
            "window_s": max(now - since, 1e-6),
            "frames": len(new),
            "rate_hz": len(new) / max(now - since, 1e-6),
            "latency_ms": float(np.median([o.latency_ms for o in new])) if new else float("nan"),
            "confidence": last.confidence if last else float("nan"),
            "state": STATE_NAMES.get(last.state, "?") if last else diag.get("state", "?"),
            "dropped": diag.get("dropped", "?"),
            "total_outputs": n,
        })
        return n

    def close(self) -> int:
        """Stop the node (SIGINT, a clean shutdown) and this side; returns the node's exit code."""
        from cract_ros.process import stop_node

        code = stop_node(self.proc)
        self._stop.set()
        self._spin.join(timeout=5.0)
        self.executor.shutdown()
        self.node.destroy_node()
        if self._own_context:
            self._rclpy.try_shutdown()
        if self._log is not None:
            self._log.close()
        return code

    def __enter__(self) -> "NodeReplay":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def replay_stats(result: ReplayResult) -> dict:
    """Processed rate, drops and latency of a replay (frame 0, the initialisation, left out)."""
    by_stamp = result.last_output_by_stamp()
    streamed = result.stamps_ns[1:]
    answered = [by_stamp[ns] for ns in streamed if ns in by_stamp]
    e2e = [(by_stamp[ns].receipt - result.publish_times[ns]) * 1e3 for ns in streamed
           if ns in by_stamp and ns in result.publish_times]
    node_lat = [o.latency_ms for o in answered]
    span = max(result.finished - result.stream_start, 1e-6)

    def pct(v: list[float], q: float) -> Optional[float]:
        return float(np.percentile(v, q)) if v else None

    diag = result.diagnostics[-1][2] if result.diagnostics else {}
    return {
        "frames": len(result.stamps_ns),
        "streamed": len(streamed),
        "processed": len(answered),
        "dropped": len(streamed) - len(answered),
        "processed_rate_hz": len(answered) / span,
        "stream_rate_hz": (len(streamed) - 1) / max(result.stream_end - result.stream_start, 1e-6) if len(streamed) > 1 else None,
        "node_latency_ms_p50": pct(node_lat, 50),
        "node_latency_ms_p95": pct(node_lat, 95),
        "e2e_latency_ms_p50": pct(e2e, 50),
        "e2e_latency_ms_p95": pct(e2e, 95),
        "init_s": result.init_s,
        "complete": result.complete,
        "node_diagnostics": diag,
    }
