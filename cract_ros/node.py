"""TrackerNode: camera images in, cract/msg/TrackedObject out, a target set by service or topic.

Threads and callback groups (under a MultiThreadedExecutor):

- image group (mutually exclusive): the image subscription. Its callback only stores the
  message (the newest-frame slot, or the FIFO in lockstep, plus the 30-frame history for
  ~/set_target) and wakes the tracker; it never waits for tracking or for an update.
- the tracker's thread: a dedicated thread owns the cract_core Tracker. It takes the newest
  frame (frames that were overwritten before it got to them are counted as dropped), tracks it
  and publishes; set_target / clear_target / ~/target requests are handed to it and run there,
  between frames, so the tracker is never used from two threads.
- service group (reentrant): ~/set_target and ~/clear_target hand their request to the tracker's
  thread and wait for the answer with a timeout, so a call is answered while a frame is tracked.
- timer group: /diagnostics and the image watchdog.
- the discriminator update runs on the Tracker's own worker (its asynchronous mode).

Parameters (PARAMETERS below; config/cract.yaml holds every one of them) are validated at start
and on `ros2 param set`: a bad value is rejected with the reason; those marked runtime are
applied at once (thresholds, alpha, beta, K through Tracker.set_params), the others need a
restart and are read-only.
"""
from __future__ import annotations

import collections
import faulthandler
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import cv2
import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_srvs.srv import Trigger

from cract.msg import TrackedObject
from cract.srv import SetTarget
from cract_ros.conversions import ImageConversionError, bgr_to_image, compressed_to_bgr, image_to_bgr

try:  # rclpy >= Humble: raised by spin() when the context is shut down from outside (signals)
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover - older rclpy
    class ExternalShutdownException(Exception):  # type: ignore[no-redef]
        pass

NODE_NAME = "cract_tracker"
STATE_NAMES = {0: "IDLE", 1: "TRACKING", 2: "LOW_CONFIDENCE", 3: "LOST"}


# --------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class ParamSpec:
    default: Any
    description: str
    runtime: bool = False  # may change while running (else read-only: restart to change)
    choices: tuple = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive_minimum: bool = False

    def check(self, name: str, value: Any) -> Optional[str]:
        """None when `value` is acceptable, else the reason it is not."""
        want = type(self.default)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not want:
            return f"{name} must be a {want.__name__}, got {type(value).__name__} {value!r}"
        if self.choices and value not in self.choices:
            return f"{name} must be one of {list(self.choices)}, got {value!r}"
        if want in (int, float):
            if isinstance(value, float) and not math.isfinite(value):
                return f"{name} must be finite, got {value!r}"
            if self.minimum is not None:
                if self.exclusive_minimum and value <= self.minimum:
                    return f"{name} must be > {self.minimum}, got {value!r}"
                if not self.exclusive_minimum and value < self.minimum:
                    return f"{name} must be >= {self.minimum}, got {value!r}"
            if self.maximum is not None and value > self.maximum:
                return f"{name} must be <= {self.maximum}, got {value!r}"
        return None


PARAMETERS: dict[str, ParamSpec] = {
    # model
    "model_config": ParamSpec("", "experiment YAML (config/model/*.yaml); empty = the built-in default"),
    "checkpoint": ParamSpec("", "trained heads (.pt); empty = the checkpoint the model config names"),
    "device": ParamSpec("auto", "where the network runs: auto (CUDA when present), cpu or cuda",
                        choices=("auto", "cpu", "cuda")),
    "num_threads": ParamSpec(0, "torch CPU threads; 0 = torch's default", minimum=0),
    "tracker_mode": ParamSpec("async", "async: discriminator updates on the tracker's worker, off the frame path; "
                              "sync: inside the frame (deterministic, for evaluation)", choices=("async", "sync")),
    "warmup": ParamSpec(True, "run the network on a synthetic frame at start so the first real frame is not slow"),
    # input
    "image_topic": ParamSpec("image", "image topic (relative names resolve in the node's namespace; remappable)"),
    "image_transport": ParamSpec("raw", "raw: sensor_msgs/Image on image_topic; compressed: "
                                 "sensor_msgs/CompressedImage on image_topic + '/compressed'",
                                 choices=("raw", "compressed")),
    "lockstep": ParamSpec(False, "process every frame in arrival order instead of only the newest "
                          "(bag evaluation, tests); nothing is dropped", runtime=True),
    "frame_buffer_size": ParamSpec(30, "frames kept for ~/set_target's stamp look-up", minimum=1),
    "target_topic_type": ParamSpec("tracked_object", "message type of ~/target: tracked_object "
                                   "(cract/msg/TrackedObject, its header stamp picks the frame) or roi "
                                   "(sensor_msgs/RegionOfInterest, the newest frame)",
                                   choices=("tracked_object", "roi")),
    # tracker (runtime: applied through Tracker.set_params)
    "alpha": ParamSpec(0.4, "s = alpha * v+ + (1 - alpha) * tau (Eq. 9)", runtime=True, minimum=0.0, maximum=1.0),
    "beta": ParamSpec(0.8, "final score beta * s + (1 - beta) * c (Eq. 10)", runtime=True, minimum=0.0, maximum=1.0),
    "low_confidence": ParamSpec(0.45, "final score below this: LOW_CONFIDENCE", runtime=True, minimum=0.0, maximum=1.0),
    "lost_confidence": ParamSpec(0.2, "final score below this for a few frames: LOST (<= low_confidence)",
                                 runtime=True, minimum=0.0, maximum=1.0),
    "update_interval": ParamSpec(10, "K: frames between discriminator updates", runtime=True, minimum=1),
    # output
    "debug_image": ParamSpec(True, "publish ~/debug_image (box drawn) while someone subscribes to it", runtime=True),
    "diagnostics_period_s": ParamSpec(1.0, "period of /diagnostics", minimum=0.0, exclusive_minimum=True),
    "watchdog_timeout_s": ParamSpec(2.0, "no image for this long while tracking: state LOST and a warning",
                                    runtime=True, minimum=0.0, exclusive_minimum=True),
    "init_timeout_s": ParamSpec(30.0, "how long ~/set_target waits for the tracker's thread", runtime=True,
                                minimum=0.0, exclusive_minimum=True),
    # tests
    "test_hold_updates": ParamSpec(False, "test only: true holds the discriminator solver (the tracker's "
                                   "online.solve_gate) so that no new weights arrive; false releases it",
                                   runtime=True),
}

# node parameter -> keyword of Tracker.set_params
TRACKER_RUNTIME_PARAMS = ("alpha", "beta", "low_confidence", "lost_confidence", "update_interval")


class NodeStartupError(RuntimeError):
    """The node cannot start: a bad parameter, or the model would not load."""


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def format_stamp(stamp: Any) -> str:
    return f"{int(stamp.sec)}.{int(stamp.nanosec):09d}"


def percentile(values: Any, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


# --------------------------------------------------------------------------------------------
# Work handed between threads


@dataclass
class Frame:
    header: Any
    msg: Any
    compressed: bool
    received: float  # time.monotonic() at receipt
    _bgr: Optional[np.ndarray] = None

    @property
    def stamp_ns(self) -> int:
        return stamp_to_ns(self.header.stamp)

    def bgr(self) -> np.ndarray:
        """Converted once, on first use (dropped frames are never converted)."""
        if self._bgr is None:
            self._bgr = compressed_to_bgr(self.msg) if self.compressed else image_to_bgr(self.msg)
        return self._bgr


@dataclass
class Request:
    """A command for the tracker's thread; the caller may wait on `done`."""
    kind: str  # "init", "clear", "params"
    frame: Optional[Frame] = None
    box: Optional[np.ndarray] = None
    params: dict = field(default_factory=dict)
    source: str = ""
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    success: bool = False
    message: str = ""

    def finish(self, success: bool, message: str) -> None:
        self.success, self.message = success, message
        self.done.set()


# --------------------------------------------------------------------------------------------


class TrackerNode(Node):
    """The cract tracker as a ROS 2 node (see the module docstring for its threads)."""

    def __init__(self, tracker_factory: Optional[Callable[[dict], Any]] = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._declare_parameters()
        self.p: dict[str, Any] = {name: self.get_parameter(name).value for name in PARAMETERS}
        self._validate_all(self.p)

        # shared state (guarded by _cv's lock)
        self._cv = threading.Condition()
        self._history: collections.deque[Frame] = collections.deque(maxlen=self.p["frame_buffer_size"])
        self._latest: Optional[Frame] = None
        self._fifo: collections.deque[Frame] = collections.deque()
        self._requests: collections.deque[Request] = collections.deque()
        self._stop = False
        self._received = 0
        self._dropped = 0
        self._last_image_time: Optional[float] = None

        # owned by the tracker's thread (read, not written, by diagnostics)
        self._target_set = False
        self._state = TrackedObject.IDLE
        self._processed = 0
        self._bad_images = 0
        self._errors = 0
        self._updates = 0
        self._weights_version = -1
        self._latencies: collections.deque[float] = collections.deque(maxlen=300)
        self._update_latencies: collections.deque[float] = collections.deque(maxlen=100)
        self._processed_times: collections.deque[float] = collections.deque(maxlen=300)
        self._last_box = np.zeros(4)
        self._watchdog_tripped = False
        self._watch_since = time.monotonic()

        self._tracker = self._load_tracker(tracker_factory)

        self._image_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()

        self._pub = self.create_publisher(TrackedObject, "~/tracked_object", 10)
        self._debug_pub = self.create_publisher(Image, "~/debug_image", qos_profile_sensor_data)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        topic = self.p["image_topic"]
        # Best effort, as camera drivers publish (a reliable reader would not match them). Newest
        # frame mode keeps SensorDataQoS's short queue; lockstep (chosen at start) a deep one, so
        # a burst from a bag player is not thinned out by DDS before the callback sees it.
        image_qos = qos_profile_sensor_data
        if self.p["lockstep"]:
            image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                   reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
        if self.p["image_transport"] == "compressed":
            self._image_sub = self.create_subscription(
                CompressedImage, topic.rstrip("/") + "/compressed", self._on_compressed, image_qos,
                callback_group=self._image_group)
        else:
            self._image_sub = self.create_subscription(
                Image, topic, self._on_image, image_qos, callback_group=self._image_group)
        if self.p["target_topic_type"] == "roi":
            self.create_subscription(RegionOfInterest, "~/target", self._on_target_roi, 10,
                                     callback_group=self._service_group)
        else:
            self.create_subscription(TrackedObject, "~/target", self._on_target_msg, 10,
                                     callback_group=self._service_group)
        self.create_service(SetTarget, "~/set_target", self._on_set_target, callback_group=self._service_group)
        self.create_service(Trigger, "~/clear_target", self._on_clear_target, callback_group=self._service_group)
        self.create_timer(self.p["diagnostics_period_s"], self._publish_diagnostics, callback_group=self._timer_group)
        self.create_timer(0.1, self._check_watchdog, callback_group=self._timer_group)
        # registered after declaration, so start-up values went through _validate_all instead
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._thread = threading.Thread(target=self._run, name="cract-tracker", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"ready: tracking {self._image_sub.topic_name} ({self.p['image_transport']}, "
            f"{'lockstep' if self.p['lockstep'] else 'newest frame only'}), tracker {self.p['tracker_mode']} "
            f"on {self._device_name}; set a target with {self.get_fully_qualified_name()}/set_target")

    # ---------------------------------------------------------------- parameters

    def _declare_parameters(self) -> None:
        for name, spec in PARAMETERS.items():
            desc = ParameterDescriptor(description=spec.description, read_only=not spec.runtime)
            try:
                self.declare_parameter(name, spec.default, desc)
            except Exception as exc:  # a wrong type in the params file: say which parameter
                raise NodeStartupError(f"parameter {name}: {exc} (expected a {type(spec.default).__name__}, "
                                       f"default {spec.default!r})") from exc

    def _validate_all(self, values: dict) -> None:
        problems = [r for r in (PARAMETERS[n].check(n, v) for n, v in values.items()) if r]
        if values["lost_confidence"] > values["low_confidence"]:
            problems.append(f"lost_confidence ({values['lost_confidence']}) must be <= low_confidence "
                            f"({values['low_confidence']})")
        if problems:
            raise NodeStartupError("bad parameters: " + "; ".join(problems))

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        new = dict(self.p)
        for param in params:
            if param.name not in PARAMETERS:
                continue  # use_sim_time and other rclpy-owned parameters
            spec = PARAMETERS[param.name]
            if not spec.runtime:
                return SetParametersResult(successful=False,
                                           reason=f"{param.name} is read at start-up only: restart the node to change it")
            value = param.value
            if type(spec.default) is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            reason = spec.check(param.name, value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            new[param.name] = value
        if new["lost_confidence"] > new["low_confidence"]:
            return SetParametersResult(successful=False, reason=(
                f"lost_confidence ({new['lost_confidence']}) must be <= low_confidence ({new['low_confidence']})"))
        changed = {k: v for k, v in new.items() if v != self.p[k]}
        self.p = new
        tracker_kw = {k: v for k, v in changed.items() if k in TRACKER_RUNTIME_PARAMS}
        if tracker_kw:
            self._submit(Request("params", params=tracker_kw, source="ros2 param"))
        if "test_hold_updates" in changed:
            self._apply_hold(bool(changed["test_hold_updates"]))
        if changed:
            self.get_logger().info(f"parameters changed: {changed}")
        return SetParametersResult(successful=True)

    def _apply_hold(self, hold: bool) -> None:
        """test_hold_updates: clear (hold) or set (release) the solve gate.

        The gate is the node's own Event, handed to every OnlineLearner the tracker makes (a new
        one at each init), so a hold survives re-initialisation and a release reaches a solve
        that is already waiting.
        """
        if hold:
            self._solve_gate.clear()
        else:
            self._solve_gate.set()

    # ---------------------------------------------------------------- model

    def _tracker_settings(self) -> dict:
        return {k: self.p[k] for k in ("model_config", "checkpoint", "device", "tracker_mode", "num_threads",
                                       *TRACKER_RUNTIME_PARAMS)}

    def _load_tracker(self, factory: Optional[Callable[[dict], Any]]) -> Any:
        t0 = time.perf_counter()
        settings = self._tracker_settings()
        try:
            tracker = (factory or build_tracker)(settings)
        except Exception as exc:  # ConfigError, CheckpointError, missing weights: all fatal at start
            raise NodeStartupError(f"could not load the tracker ({type(exc).__name__}): {exc}") from exc
        self._device_name = str(getattr(tracker, "device", self.p["device"]))
        load_ms = (time.perf_counter() - t0) * 1e3
        warm_ms = 0.0
        if self.p["warmup"]:
            t1 = time.perf_counter()
            warm_up(tracker)
            warm_ms = (time.perf_counter() - t1) * 1e3
        self._solve_gate = threading.Event()
        self._apply_hold(self.p["test_hold_updates"])
        self.get_logger().info(f"model loaded in {load_ms:.0f} ms, warm-up {warm_ms:.0f} ms")
        return tracker

    # ---------------------------------------------------------------- input (image group)

    def _on_image(self, msg: Image) -> None:
        self._enqueue(Frame(msg.header, msg, False, time.monotonic()))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._enqueue(Frame(msg.header, msg, True, time.monotonic()))

    def _enqueue(self, frame: Frame) -> None:
        with self._cv:
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

    def _submit(self, request: Request) -> Request:
        with self._cv:
            self._requests.append(request)
            self._cv.notify()
        return request

    # ---------------------------------------------------------------- services (service group)

    def _find_frame(self, stamp: TimeMsg) -> tuple[Optional[Frame], str]:
        with self._cv:
            frames = list(self._history)
        if not frames:
            return None, f"no image received yet on {self._image_sub.topic_name}"
        if stamp.sec == 0 and stamp.nanosec == 0:
            return frames[-1], ""
        want = stamp_to_ns(stamp)
        for frame in reversed(frames):
            if frame.stamp_ns == want:
                return frame, ""
        return None, (f"no buffered frame with stamp {format_stamp(stamp)}: the node keeps the last "
                      f"{self._history.maxlen} frames, now {format_stamp(frames[0].header.stamp)} to "
                      f"{format_stamp(frames[-1].header.stamp)}")

    def _request_init(self, x: float, y: float, w: float, h: float, stamp: TimeMsg, source: str,
                      wait: bool) -> tuple[bool, str]:
        box = np.array([x, y, w, h], dtype=np.float64)
        if not np.all(np.isfinite(box)):
            return False, f"box {box.tolist()} has NaN or infinite values"
        if w < 2.0 or h < 2.0:
            return False, f"box size {w:g}x{h:g} is under 2 px"
        frame, reason = self._find_frame(stamp)
        if frame is None:
            return False, reason
        request = self._submit(Request("init", frame=frame, box=box, source=source))
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

    # ---------------------------------------------------------------- the tracker's thread

    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._stop or self._requests or self._latest is not None or self._fifo):
                    self._cv.wait(0.5)
                if self._stop:
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

    def _execute(self, request: Request) -> None:
        if request.cancelled:
            return
        if request.kind == "init":
            self._init_target(request)
        elif request.kind == "clear":
            was = self._target_set
            self._target_set = False
            self._state = TrackedObject.IDLE
            request.finish(True, "target cleared" if was else "no target was set")
        elif request.kind == "params":
            try:
                self._tracker.set_params(**request.params)
                request.finish(True, "applied")
            except Exception as exc:
                self.get_logger().error(f"Tracker.set_params({request.params}) failed: {exc}")
                request.finish(False, str(exc))

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
                self._fifo.popleft()
            if self._latest is frame:
                self._latest = None
        box = np.asarray(result.box, dtype=np.float64)
        self._publish(frame, bgr, result, (time.monotonic() - frame.received) * 1e3)
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

    # ---------------------------------------------------------------- timers (timer group)

    def _check_watchdog(self) -> None:
        try:
            self._check_watchdog_unguarded()
        except Exception as exc:  # as above: never end the executor from a timer
            self.get_logger().error(f"watchdog: {type(exc).__name__}: {exc}", throttle_duration_sec=10.0)

    def _check_watchdog_unguarded(self) -> None:
        with self._cv:
            last = self._last_image_time
        if not self._target_set or self._watchdog_tripped or last is None:
            return
        silent = time.monotonic() - max(last, self._watch_since)
        if silent <= self.p["watchdog_timeout_s"]:
            return
        self._watchdog_tripped = True
        self._state = TrackedObject.LOST
        self.get_logger().warning(f"watchdog: no image for {silent:.1f} s on {self._image_sub.topic_name}: "
                                  f"target LOST until images come back")
        out = TrackedObject()
        out.header.stamp = self.get_clock().now().to_msg()
        with self._cv:
            if self._history:
                out.header.frame_id = self._history[-1].header.frame_id
        out.x, out.y, out.width, out.height = (float(v) for v in self._last_box)
        out.state = TrackedObject.LOST
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
        return {
            "state": STATE_NAMES.get(self._state, str(self._state)),
            "processed_rate_hz": f"{rate:.2f}",
            "received": str(received),
            "processed": str(self._processed),
            "dropped": str(dropped),
            "bad_images": str(self._bad_images),
            "errors": str(self._errors),
            "latency_ms_p50": f"{percentile(lat, 50):.2f}",
            "latency_ms_p95": f"{percentile(lat, 95):.2f}",
            "update_frames": str(self._updates),
            "update_latency_ms_p50": f"{percentile(upd, 50):.2f}",
            "update_latency_ms_p95": f"{percentile(upd, 95):.2f}",
            "weights_version": str(self._weights_version),
            "seconds_since_image": f"{now - last:.2f}" if last is not None else "never",
            "device": self._device_name,
        }

    def _publish_diagnostics(self) -> None:
        try:
            self._publish_diagnostics_unguarded()
        except Exception as exc:  # an exception in a timer would end executor.spin(): log it instead
            self.get_logger().error(f"diagnostics: {type(exc).__name__}: {exc}", throttle_duration_sec=10.0)

    def _publish_diagnostics_unguarded(self) -> None:
        values = self.diagnostics_values()
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: tracker"
        status.hardware_id = self.get_fully_qualified_name()
        if self._watchdog_tripped:
            status.level = DiagnosticStatus.WARN
            status.message = f"no image for {values['seconds_since_image']} s"
        elif self._errors:
            status.level = DiagnosticStatus.WARN
            status.message = f"{values['state']}; {self._errors} errors"
        else:
            status.level = DiagnosticStatus.OK
            status.message = values["state"]
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diag_pub.publish(array)

    # ---------------------------------------------------------------- shutdown

    def destroy_node(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if getattr(self, "_thread", None) is not None:
            self._thread.join(timeout=10.0)
        tracker = getattr(self, "_tracker", None)
        if tracker is not None:
            if getattr(self, "_solve_gate", None) is not None:
                self._solve_gate.set()  # a held solver must not keep close() waiting
            try:
                # A solve in progress may take seconds on a busy CPU; its daemon thread need not
                # finish for the node to exit cleanly, so shutdown does not wait long for it.
                tracker.close(timeout=1.0)
            except Exception as exc:
                self.get_logger().warning(f"tracker.close(): {exc}")
        super().destroy_node()


# --------------------------------------------------------------------------------------------
# Model helpers (no ROS in them; the tests build the offline tracker with the same function)


def build_tracker(settings: dict) -> Any:
    """The cract_core Tracker the node runs, from the node's parameters.

    The model config (model_config, or the built-in default) gets the node's runtime values
    (alpha, beta, thresholds, K) written over it, so config/cract.yaml is the one place a user
    sets them.
    """
    import torch

    from cract_core.config import default_config_path, load_config
    from cract_core.tracker import Tracker

    if settings.get("num_threads", 0) > 0:
        torch.set_num_threads(int(settings["num_threads"]))
    cfg = load_config(settings.get("model_config") or default_config_path())
    cfg.crac.alpha = float(settings["alpha"])
    cfg.crac.beta = float(settings["beta"])
    cfg.tracker.low_confidence = float(settings["low_confidence"])
    cfg.tracker.lost_confidence = float(settings["lost_confidence"])
    cfg.online.update_interval = int(settings["update_interval"])
    return Tracker.from_config(cfg, checkpoint=settings.get("checkpoint") or None,
                               device=settings.get("device", "auto"), mode=settings.get("tracker_mode", "async"))


def warm_up(tracker: Any) -> None:
    """One init and two tracks on a synthetic 640x480 frame: allocations and kernel choices happen now."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    cv2.rectangle(img, (280, 200), (360, 280), (0, 0, 255), -1)
    tracker.init(img, np.array([280.0, 200.0, 80.0, 80.0]))
    for _ in range(2):
        tracker.track(img)


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


GIL_SWITCH_INTERVAL_S = 0.0002


def main(args: Optional[list] = None) -> int:
    """Entry point of `cract-tracker-node` and of lib/cract/tracker_node."""
    # The discriminator's update worker runs many small tensor ops, each taking the GIL; with
    # CPython's default 5 ms switch interval the tracker thread then waits up to 5 ms at each of
    # its own ops (a convoy), and frames take seconds. A short interval lets the two interleave.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    rclpy.init(args=args)
    node: Optional[TrackerNode] = None
    code = 0
    try:
        node = TrackerNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except NodeStartupError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        _exit_watchdog(SHUTDOWN_GRACE_S, code)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


# After SIGINT the node must end: rclpy's executor runs callbacks in non-daemon pool threads, and
# one still blocked (e.g. a service waiting for an init) keeps the interpreter from exiting.
SHUTDOWN_GRACE_S = 8.0


def _exit_watchdog(seconds: float, code: int) -> None:
    """If shutdown has not finished the process after ``seconds``, print every thread's stack (so the
    hang says where it is) and exit with ``code``."""
    def fire() -> None:
        sys.stderr.write(f"cract_tracker: shutdown still blocked after {seconds:.0f} s; thread stacks:\n")
        faulthandler.dump_traceback(all_threads=True)
        sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


if __name__ == "__main__":
    raise SystemExit(main())
