"""TrackerNode: camera images in, cract/msg/TrackedObject out, a target set by service or topic.

A ROS 2 managed (lifecycle) node, as Nav2's and yolo_ros's are, driven through the standard
services (~/change_state, ~/get_state, ...; `ros2 lifecycle set /cract_tracker configure`):

- unconfigured: parameters declared and checked, nothing loaded; /diagnostics says so.
- configure: loads the model and warms it up, creates ~/tracked_object and ~/debug_image
  (lifecycle publishers), ~/set_target, ~/clear_target, ~/target and the tracker's thread. A model
  that does not load fails the transition (back to unconfigured, the reason in the log).
- activate: subscribes to the camera (and camera_info) and publishes. Only now are targets taken.
- deactivate: unsubscribes, drops the target (a follower must not act on a box from before the
  pause), publishes one IDLE TrackedObject so that listeners stop at once, keeps the model.
- cleanup: stops the tracker's thread and frees the model (GPU memory included), back to
  unconfigured; configure-time parameters may change again.
- shutdown (from any state): releases everything and ends the process (exit code 0).
- autostart (parameter, default true): the node walks itself to active at start, so
  `ros2 run cract tracker_node` tracks at once as before; a model that does not load then ends the
  process with exit code 1.

Threads and callback groups (under a MultiThreadedExecutor):

- default group (mutually exclusive): the lifecycle services and the autostart timer, so that
  transitions never overlap.
- image group (mutually exclusive): the image and camera_info subscriptions. The image callback
  only stores the message (the newest-frame slot, or the FIFO in lockstep, plus the history for
  ~/set_target) and wakes the tracker; it never waits for tracking or for an update.
- the tracker's thread: a dedicated thread owns the cract_core Tracker. It takes the newest
  frame (frames that were overwritten before it got to them are counted as dropped), tracks it
  and publishes; set_target / clear_target / ~/target requests and the deactivation are handed
  to it and run there, between frames, so the tracker is never used from two threads.
- service group (reentrant): ~/set_target and ~/clear_target hand their request to the tracker's
  thread and wait for the answer with a timeout, so a call is answered while a frame is tracked.
- timer group: /diagnostics (every state) and the image watchdog.
- the discriminator update runs on the Tracker's own worker (its asynchronous mode).

Bearings: with a sensor_msgs/CameraInfo on `camera_info_topic` (SensorDataQoS, as image_pipeline
publishes it), each TrackedObject carries bearing_x / bearing_y, the angles of the box centre from
the optical axis with the lens distortion undone (cract_core.camera). The calibration is taken
from the CameraInfo with the image's stamp, else the newest one. Without one, or with one that
cannot be used (zero focal length, unknown model, wrong D length, another image size), the
bearings are NaN; refused messages are counted in /diagnostics and logged (throttled).

Parameters (PARAMETERS below; config/cract.yaml holds every one of them) are validated at start
and on `ros2 param set`: a bad value is rejected with the reason; those marked runtime are
applied at once (thresholds, alpha, beta, K through Tracker.set_params); the others are read by
the configure transition and may change only while the node is unconfigured (autostart and
diagnostics_period_s: at process start only).
"""
from __future__ import annotations

import collections
import collections.abc
import ctypes
import ctypes.util
import faulthandler
import gc
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Optional

import cv2
import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.exceptions import InvalidHandle
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_srvs.srv import Trigger

from cract.msg import TrackedObject
from cract.srv import SetTarget
from cract_core.camera import CameraModel, CameraModelError, box_centre_pixel
from cract_ros.conversions import (ImageConversionError, bgr_to_image, camera_model_from_info, compressed_to_bgr,
                                   image_to_bgr)
from cract_ros.parameters import ParamSpec, apply_update, check_values, declare_parameters

try:  # rclpy >= Humble: raised by spin() when the context is shut down from outside (signals)
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover - older rclpy
    class ExternalShutdownException(Exception):  # type: ignore[no-redef]
        pass

NODE_NAME = "cract_tracker"
STATE_NAMES = {0: "IDLE", 1: "TRACKING", 2: "LOW_CONFIDENCE", 3: "LOST"}
SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


# --------------------------------------------------------------------------------------------
# Parameters


PARAMETERS: dict[str, ParamSpec] = {
    # lifecycle
    "autostart": ParamSpec(True, "configure and activate at start (ros2 run tracks at once); false: stay "
                           "unconfigured until a lifecycle manager drives the node", startup=True),
    # model
    "model_config": ParamSpec("", "experiment YAML (config/model/*.yaml); empty = the built-in default"),
    "checkpoint": ParamSpec("", "trained heads (.pt); empty = the checkpoint the model config names"),
    "device": ParamSpec("auto", "where the network runs: auto (CUDA when present), cpu or cuda",
                        choices=("auto", "cpu", "cuda")),
    "num_threads": ParamSpec(0, "torch CPU threads; 0 = torch's default", minimum=0),
    "tracker_mode": ParamSpec("async", "async: discriminator updates on the tracker's worker, off the frame path; "
                              "sync: inside the frame (deterministic, for evaluation)", choices=("async", "sync")),
    "warmup": ParamSpec(True, "run the network on a synthetic frame at configure so the first real frame is not slow"),
    # input
    "image_topic": ParamSpec("image", "image topic (relative names resolve in the node's namespace; remappable)"),
    "image_transport": ParamSpec("raw", "raw: sensor_msgs/Image on image_topic; compressed: "
                                 "sensor_msgs/CompressedImage on image_topic + '/compressed'",
                                 choices=("raw", "compressed")),
    "camera_info_topic": ParamSpec("camera_info", "sensor_msgs/CameraInfo of the camera (remappable); its "
                                   "calibration gives TrackedObject's bearings; empty = none (bearings NaN)"),
    "image_is_rectified": ParamSpec(False, "the image is rectified (image_proc's image_rect): bearings from "
                                    "CameraInfo's P without distortion; false: from K and D (image_raw)"),
    "lockstep": ParamSpec(False, "process every frame in arrival order instead of only the newest "
                          "(bag evaluation, tests, lock-step simulation); nothing is dropped", runtime=True),
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
    "diagnostics_period_s": ParamSpec(1.0, "period of /diagnostics", minimum=0.0, exclusive_minimum=True,
                                      startup=True),
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
    """The node cannot start or configure: a bad parameter, or the model would not load."""


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def format_stamp(stamp: Any) -> str:
    return f"{int(stamp.sec)}.{int(stamp.nanosec):09d}"


def format_ns(ns: int) -> str:
    sec, nsec = divmod(int(ns), 1_000_000_000)
    return f"{sec}.{nsec:09d}"


def percentile(values: Any, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def check_parameters(values: dict) -> list[str]:
    """Every reason why the node's parameter values are not acceptable together."""
    problems = check_values(PARAMETERS, values)
    if values["lost_confidence"] > values["low_confidence"]:
        problems.append(f"lost_confidence ({values['lost_confidence']}) must be <= low_confidence "
                        f"({values['low_confidence']})")
    return problems


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

    def size(self) -> tuple[int, int]:
        """(width, height) of the image: from the header of a raw image, by decoding a compressed one."""
        if self.compressed:
            h, w = self.bgr().shape[:2]
            return w, h
        return int(self.msg.width), int(self.msg.height)

    def bgr(self) -> np.ndarray:
        """Converted once, on first use (dropped frames are never converted)."""
        if self._bgr is None:
            self._bgr = compressed_to_bgr(self.msg) if self.compressed else image_to_bgr(self.msg)
        return self._bgr


@dataclass
class Request:
    """A command for the tracker's thread; the caller may wait on `done`."""
    kind: str  # "init", "clear", "params", "release" (deactivation), "time_jump" (the clock went back)
    frame: Optional[Frame] = None
    box: Optional[np.ndarray] = None
    params: dict = field(default_factory=dict)
    source: str = ""
    waited: bool = False  # the caller waits for the answer (and counts a refusal itself)
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    success: bool = False
    message: str = ""

    def finish(self, success: bool, message: str) -> None:
        self.success, self.message = success, message
        self.done.set()


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


# --------------------------------------------------------------------------------------------
# Memory (cleanup frees the model; /diagnostics and the log show what is left)


def process_rss_mib() -> float:
    """Resident memory of this process (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _torch_cuda() -> Any:
    """torch.cuda when torch is imported and has started CUDA in this process, else None. (The
    diagnostics timer asks while configure may be importing torch: a half-imported module has
    no `cuda` yet.)"""
    cuda = getattr(sys.modules.get("torch"), "cuda", None)
    try:
        return cuda if cuda is not None and cuda.is_initialized() else None
    except Exception:
        return None


def cuda_allocated_mib() -> Optional[float]:
    """torch's CUDA memory in use, or None where torch has not started CUDA in this process."""
    cuda = _torch_cuda()
    return cuda.memory_allocated() / 2**20 if cuda is not None else None


def model_tensor_mib(tracker: Any) -> float:
    """Bytes of the weights and buffers of the torch modules a tracker holds, in MiB."""
    torch = sys.modules.get("torch")
    if torch is None:
        return float("nan")
    total = 0
    for value in vars(tracker).values():
        if isinstance(value, torch.nn.Module):
            for t in (*value.parameters(), *value.buffers()):
                total += t.numel() * t.element_size()
    return total / 2**20


def release_memory() -> None:
    """Give freed memory back: Python's cycles, torch's CUDA cache, and glibc's heap (malloc_trim:
    the freed weights stay in the process otherwise, and a robot's process lives long)."""
    gc.collect()
    cuda = _torch_cuda()
    if cuda is not None:
        cuda.synchronize()
        cuda.empty_cache()
    trim_heap()


def trim_heap() -> None:
    """glibc's malloc_trim: return the free pages of every malloc arena to the system. Each thread
    that allocates gets an arena of its own, and an arena keeps what it once held: an
    initialisation's thousand samples, a LOST frame's larger crops. Measured in the soak
    (benchmarks/soak_node.py), that is the node's RSS growth after the warm-up, not a leak."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            ctypes.CDLL(libc_name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


# --------------------------------------------------------------------------------------------


class TrackerNode(LifecycleNode):
    """The cract tracker as a ROS 2 lifecycle node (see the module docstring for states and threads)."""

    def __init__(self, tracker_factory: Optional[Callable[[dict], Any]] = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._tracker_factory = tracker_factory
        try:
            self.p: dict[str, Any] = declare_parameters(self, PARAMETERS, read_only_unless_runtime=False)
        except ValueError as exc:
            raise NodeStartupError(str(exc)) from exc
        problems = check_parameters(self.p)
        if problems:
            raise NodeStartupError("bad parameters: " + "; ".join(problems))

        self.lifecycle_state = "unconfigured"
        self.exit_code = 0
        self.finished: Future = Future()  # done when the process should end (shutdown, autostart failure)

        # shared state (guarded by _cv's lock)
        self._cv = threading.Condition()
        self._history: collections.deque[Frame] = collections.deque(maxlen=self.p["frame_buffer_size"])
        self._latest: Optional[Frame] = None
        self._fifo: collections.deque[Frame] = collections.deque()
        self._requests: collections.deque[Request] = collections.deque()
        self._stop = False
        self._active = False
        self._received = 0
        self._dropped = 0
        self._last_image_time: Optional[float] = None

        # owned by the tracker's thread (read, not written, by diagnostics)
        self._target_set = False
        self._state = TrackedObject.IDLE
        self._processed = 0
        self._bad_images = 0
        self._refused_targets = 0  # ~/set_target and ~/target requests answered with a refusal
        self._refused_parameters = 0  # parameter changes refused by the node's own checks
        self._time_jumps = 0  # backward jumps of the node's clock (a bag or simulation restarted)
        self._errors = 0
        self._updates = 0
        self._frames_without_bearing = 0
        self._weights_version = -1
        self._latencies: collections.deque[float] = collections.deque(maxlen=300)
        self._update_latencies: collections.deque[float] = collections.deque(maxlen=100)
        self._processed_times: collections.deque[float] = collections.deque(maxlen=300)
        self._last_box = np.zeros(4)
        self._watchdog_tripped = False
        self._watch_since = time.monotonic()
        self._last_heap_trim = time.monotonic()

        # made by configure / activate, released by cleanup / deactivate
        self._tracker: Any = None
        self._device_name = "none (unconfigured)"
        self._model_mib = 0.0
        self._thread: Optional[threading.Thread] = None
        self._solve_gate = threading.Event()
        self._calibrations = Calibrations(self.p["frame_buffer_size"], self.p["image_is_rectified"])
        self._pub: Any = None
        self._debug_pub: Any = None
        self._configured_entities: list[tuple[Callable[[Any], Any], Any]] = []  # (destroy, entity)
        self._image_sub: Any = None
        self._camera_info_sub: Any = None

        self._image_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.p["diagnostics_period_s"], self._publish_diagnostics, callback_group=self._timer_group)
        # registered after declaration, so start-up values went through check_parameters instead
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # A bag played again from its start (or a simulation reset) sends /clock backwards: kept in
        # the handle, or the callback is unregistered when the handle is collected
        self._time_jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=False),
            post_callback=self._on_time_jump)
        self._autostart_timer = None
        if self.p["autostart"]:
            # in the default group, with the lifecycle services: a transition asked for over DDS
            # meanwhile waits for these to finish
            self._autostart_timer = self.create_timer(0.0, self._autostart)
        self.get_logger().info(f"unconfigured ({'autostart: configuring now' if self.p['autostart'] else 'waiting for configure'})")

    # ---------------------------------------------------------------- parameters

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        new, reason = apply_update(PARAMETERS, self.p, params, configurable=self.lifecycle_state == "unconfigured",
                                   state=self.lifecycle_state)
        if new is None:
            self._refused_parameters += 1  # (parameter callbacks run one at a time: rclpy's own lock)
            return SetParametersResult(successful=False, reason=reason)
        problems = check_parameters(new)
        if problems:
            self._refused_parameters += 1
            return SetParametersResult(successful=False, reason="; ".join(problems))
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

    # ---------------------------------------------------------------- lifecycle transitions

    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        for name, transition in (("configure", self.trigger_configure), ("activate", self.trigger_activate)):
            if transition() != SUCCESS:
                self.get_logger().fatal(f"autostart: {name} failed (see above); exiting")
                self.exit_code = 1
                self.finished.set_result("autostart failed")
                return

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        t0 = time.perf_counter()
        try:
            self._configure()
        except Exception as exc:  # rclpy would swallow it: say why the transition failed
            self.get_logger().error(f"configure failed: {exc}")
            self._unconfigure()
            return FAILURE
        self.lifecycle_state = "inactive"
        self.get_logger().info(f"configured in {time.perf_counter() - t0:.1f} s: inactive "
                               f"(activate to subscribe to the camera)")
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ret = super().on_activate(state)  # enables the lifecycle publishers, before any frame comes
        try:
            self._subscribe()
        except Exception as exc:
            self.get_logger().error(f"activate failed: {type(exc).__name__}: {exc}")
            self._unsubscribe()
            LifecycleNode.on_deactivate(self, state)
            return FAILURE
        self._active = True
        self.lifecycle_state = "active"
        self.get_logger().info(
            f"ready: tracking {self._image_sub.topic_name} ({self.p['image_transport']}, "
            f"{'lockstep' if self.p['lockstep'] else 'newest frame only'}), tracker {self.p['tracker_mode']} "
            f"on {self._device_name}; bearings from {self._camera_info_sub.topic_name if self._camera_info_sub else 'nothing (NaN)'}; "
            f"set a target with {self.get_fully_qualified_name()}/set_target")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self.get_logger().info("deactivated: camera unsubscribed, target dropped, model kept")
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        rss, cuda = process_rss_mib(), cuda_allocated_mib()
        self._unconfigure()
        cuda_now = cuda_allocated_mib()
        self.get_logger().info(f"cleaned up: model released; RSS {rss:.0f} -> {process_rss_mib():.0f} MiB"
                               + (f", CUDA allocated {cuda:.1f} -> {cuda_now:.1f} MiB" if cuda is not None else ""))
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._active:
            self._deactivate()
        self._unconfigure()
        self.lifecycle_state = "finalized"
        self.get_logger().info(f"shut down from {state.label}: exiting")
        if not self.finished.done():
            self.finished.set_result("shutdown")
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in a transition from {state.label}: releasing everything, back to unconfigured")
        self._active = False
        self._unsubscribe()
        self._unconfigure()
        return SUCCESS

    def _configure(self) -> None:
        with self._cv:
            self._stop = False
            self._history = collections.deque(maxlen=self.p["frame_buffer_size"])
            self._latest = None
            self._fifo.clear()
        self._calibrations = Calibrations(self.p["frame_buffer_size"], self.p["image_is_rectified"])
        self._tracker = self._load_tracker(self._tracker_factory)
        self._pub = self.create_lifecycle_publisher(TrackedObject, "~/tracked_object", 10)
        self._debug_pub = self.create_lifecycle_publisher(Image, "~/debug_image", qos_profile_sensor_data)
        entities = self._configured_entities
        entities.append((self.destroy_lifecycle_publisher, self._pub))
        entities.append((self.destroy_lifecycle_publisher, self._debug_pub))
        if self.p["target_topic_type"] == "roi":
            sub = self.create_subscription(RegionOfInterest, "~/target", self._on_target_roi, 10,
                                           callback_group=self._service_group)
        else:
            sub = self.create_subscription(TrackedObject, "~/target", self._on_target_msg, 10,
                                           callback_group=self._service_group)
        entities.append((self.destroy_subscription, sub))
        entities.append((self.destroy_timer, self.create_timer(0.1, self._check_watchdog,
                                                               callback_group=self._timer_group)))
        self._thread = threading.Thread(target=self._run, name="cract-tracker", daemon=True)
        self._thread.start()
        # services last: a client that sees ~/set_target finds the model loaded
        entities.append((self.destroy_service, self.create_service(
            SetTarget, "~/set_target", self._on_set_target, callback_group=self._service_group)))
        entities.append((self.destroy_service, self.create_service(
            Trigger, "~/clear_target", self._on_clear_target, callback_group=self._service_group)))

    def _subscribe(self) -> None:
        topic = self.p["image_topic"]
        # Best effort, as camera drivers publish (a reliable reader would not match them). Newest
        # frame mode keeps SensorDataQoS's short queue; lockstep (chosen at activation) a deep one,
        # so a burst from a bag player is not thinned out by DDS before the callback sees it.
        image_qos = qos_profile_sensor_data
        if self.p["lockstep"]:
            image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                   reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
        if self.p["camera_info_topic"]:
            # before the images: a frame's own CameraInfo, published with it, is then rarely late
            self._camera_info_sub = self.create_subscription(
                CameraInfo, self.p["camera_info_topic"], self._on_camera_info, image_qos,
                callback_group=self._image_group)
        if self.p["image_transport"] == "compressed":
            self._image_sub = self.create_subscription(
                CompressedImage, topic.rstrip("/") + "/compressed", self._on_compressed, image_qos,
                callback_group=self._image_group)
        else:
            self._image_sub = self.create_subscription(
                Image, topic, self._on_image, image_qos, callback_group=self._image_group)

    def _unsubscribe(self) -> None:
        for sub in (self._image_sub, self._camera_info_sub):
            if sub is not None:
                self.destroy_subscription(sub)
        self._image_sub = self._camera_info_sub = None

    def _deactivate(self) -> None:
        self._active = False
        self._unsubscribe()
        if self._thread is not None and self._thread.is_alive():
            request = self._submit(Request("release", source="deactivate"))
            if not request.done.wait(self.p["init_timeout_s"]):
                request.cancelled = True
                self.get_logger().warning("deactivate: the tracker's thread did not answer; target dropped anyway")
        self._target_set = False
        self._state = TrackedObject.IDLE
        LifecycleNode.on_deactivate(self, None)  # disables the lifecycle publishers
        self.lifecycle_state = "inactive"

    def _unconfigure(self) -> None:
        """Stop the tracker's thread, destroy what configure made, free the model."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            self._thread = None
        for destroy, entity in reversed(self._configured_entities):
            try:
                destroy(entity)
            except Exception as exc:  # an entity already gone must not stop the release
                self.get_logger().warning(f"cleanup: {type(exc).__name__}: {exc}")
        self._configured_entities.clear()
        self._pub = self._debug_pub = None
        with self._cv:
            self._history.clear()
            self._latest = None
            self._fifo.clear()
        self._target_set = False
        self._state = TrackedObject.IDLE
        self._close_tracker()
        self._device_name = "none (unconfigured)"
        self._model_mib = 0.0
        release_memory()
        self.lifecycle_state = "unconfigured"

    def _close_tracker(self) -> None:
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return
        self._solve_gate.set()  # a held solver must not keep close() waiting
        try:
            # A solve in progress may take seconds on a busy CPU; its daemon thread need not
            # finish for the model to be released, so this does not wait long for it.
            tracker.close(timeout=1.0)
        except Exception as exc:
            self.get_logger().warning(f"tracker.close(): {exc}")
        del tracker

    # ---------------------------------------------------------------- model

    def _tracker_settings(self) -> dict:
        return {k: self.p[k] for k in ("model_config", "checkpoint", "device", "tracker_mode", "num_threads",
                                       *TRACKER_RUNTIME_PARAMS)}

    def _load_tracker(self, factory: Optional[Callable[[dict], Any]]) -> Any:
        t0 = time.perf_counter()
        settings = self._tracker_settings()
        try:
            tracker = (factory or build_tracker)(settings)
        except Exception as exc:  # ConfigError, CheckpointError, missing weights: the transition fails
            raise NodeStartupError(f"could not load the tracker ({type(exc).__name__}): {exc}") from exc
        self._device_name = str(getattr(tracker, "device", self.p["device"]))
        load_ms = (time.perf_counter() - t0) * 1e3
        warm_ms = 0.0
        if self.p["warmup"]:
            t1 = time.perf_counter()
            warm_up(tracker)
            warm_ms = (time.perf_counter() - t1) * 1e3
        self._apply_hold(self.p["test_hold_updates"])
        self._model_mib = model_tensor_mib(tracker)
        self.get_logger().info(f"model loaded in {load_ms:.0f} ms ({self._model_mib:.1f} MiB of weights), "
                               f"warm-up {warm_ms:.0f} ms")
        return tracker

    # ---------------------------------------------------------------- input (image group)

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

    def _submit(self, request: Request) -> Request:
        with self._cv:
            self._requests.append(request)
            self._cv.notify()
        return request

    # ---------------------------------------------------------------- services (service group)

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

    # ---------------------------------------------------------------- the tracker's thread

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

    def _discard_frames(self) -> str:
        """Forget every buffered frame (the ones not yet tracked count as dropped); returns the
        newest one's frame_id. Call with self._cv held."""
        self._dropped += len(self._fifo) + (self._latest is not None)
        self._fifo.clear()
        self._latest = None
        frame_id = self._history[-1].header.frame_id if self._history else ""
        self._history.clear()
        return frame_id

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

    # ---------------------------------------------------------------- timers (timer group)

    def _check_watchdog(self) -> None:
        try:
            self._check_watchdog_unguarded()
        except Exception as exc:  # as above: never end the executor from a timer
            self.get_logger().error(f"watchdog: {type(exc).__name__}: {exc}", throttle_duration_sec=10.0)

    def _check_watchdog_unguarded(self) -> None:
        with self._cv:
            last = self._last_image_time
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
        if self._watchdog_tripped:
            status.level = DiagnosticStatus.WARN
            status.message = f"no image for {values['seconds_since_image']} s"
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

    # ---------------------------------------------------------------- shutdown

    def destroy_node(self) -> None:
        """SIGINT or the end of main: stop the tracker's thread and close the tracker, in any state."""
        self._active = False
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            # A frame ends in well under this; an initialisation (the discriminator's fit) can take
            # 20 s on a loaded CPU, and the process ends anyway: do not wait for that.
            self._thread.join(timeout=STOP_JOIN_S)
        if self._thread is not None and self._thread.is_alive():
            self.get_logger().warning(f"the tracker's thread is still busy after {STOP_JOIN_S:g} s (an "
                                      f"initialisation): ending without closing the tracker")
        else:
            self._close_tracker()
        super().destroy_node()
        # rclpy's LifecycleNode leaves its state machine to the garbage collector, and the state
        # machine keeps the node's handle (and so the DDS participant and its shared-memory
        # segments) alive until then: main() ends the process without a final collection
        self._state_machine.destroy_when_not_in_use()


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
STOP_JOIN_S = 2.0  # how long destroy_node waits for the tracker's thread
HEAP_TRIM_PERIOD_S = 20.0  # the diagnostics timer gives free heap pages back this often (trim_heap)


def main(args: Optional[list] = None) -> NoReturn:
    """Entry point of `cract-tracker-node` and of lib/cract/tracker_node. Ends the process.

    After an orderly shutdown (node, executor and rclpy's context released: the DDS participant
    is gone, peers see the node leave) the process ends with os._exit, without CPython's own
    finalization: with torch loaded that is a full garbage collection and the teardown of
    thousands of modules, 1-2 s of CPU on an idle 2-core machine and more than 20 s on a loaded
    one, during which no Python thread (the shutdown watchdog neither) runs any more. That was
    the node killed 20 s after SIGINT at test teardown (scripts/teardown_loop.py).
    """
    # The discriminator's update worker runs many small tensor ops, each taking the GIL; with
    # CPython's default 5 ms switch interval the tracker thread then waits up to 5 ms at each of
    # its own ops (a convoy), and frames take seconds. A short interval lets the two interleave.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    # SIGSEGV/SIGABRT print every thread's Python stack (a supervisor or test that finds the node
    # hung sends SIGABRT before SIGKILL: cract_ros.process.stop_node)
    faulthandler.enable()
    rclpy.init(args=args)
    node: Optional[TrackerNode] = None
    executor: Optional[MultiThreadedExecutor] = None
    code = 0
    try:
        node = TrackerNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        # until the shutdown transition (or a failed autostart) or SIGINT
        spin_until_finished(executor, node)
        if node.finished.done() and rclpy.ok():
            # the answer to the `shutdown` request is sent after on_shutdown returns: let it go out
            executor.spin_until_future_complete(Future(), timeout_sec=0.5)
        code = node.exit_code
    except NodeStartupError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        t_stop = time.monotonic()
        _exit_watchdog(SHUTDOWN_GRACE_S, code)
        if node is not None:
            node.destroy_node()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
        context = rclpy.utilities.get_default_context()
        context.destroy()  # the rcl context and with it the DDS participant, now rather than at exit
        sys.stderr.write(f"cract_tracker: shut down in {time.monotonic() - t_stop:.2f} s, exit code {code}\n")
    _end_process(code)


def spin_until_finished(executor: MultiThreadedExecutor, node: TrackerNode) -> None:
    """Spin until node.finished. A transition (deactivate, cleanup, shutdown) destroys entities on
    an executor thread while this thread may be gathering them into its next wait set: rclpy then
    raises InvalidHandle here (seen once in 30 rounds of the node tests: a node ending with 1 after
    a clean shutdown transition). The next spin gathers what is left, so that is not an error."""
    while not node.finished.done() and rclpy.ok():  # (SIGINT shuts the context down: rclpy raises or returns)
        try:
            executor.spin_until_future_complete(node.finished)
        except InvalidHandle as exc:
            node.get_logger().debug(f"an entity went away while the executor gathered it ({exc}): spinning on")


def _end_process(code: int) -> NoReturn:
    """Flush the output and end at once (see main: no interpreter finalization)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


# After SIGINT the node must end: rclpy's executor runs callbacks in non-daemon pool threads, and
# one still blocked (e.g. a service waiting for an init) keeps the interpreter from exiting.
SHUTDOWN_GRACE_S = 8.0


def _exit_watchdog(seconds: float, code: int) -> None:
    """If shutdown has not finished the process after ``seconds``, print every thread's stack (so the
    hang says where it is) and exit with ``code``. A second watchdog in C (faulthandler's own
    thread, which needs no GIL) does the same a little later with exit code 1, for a hang in C
    code that holds the GIL."""
    def fire() -> None:
        sys.stderr.write(f"cract_tracker: shutdown still blocked after {seconds:.0f} s; thread stacks:\n")
        faulthandler.dump_traceback(all_threads=True)
        _end_process(code)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(seconds + 4.0, exit=True)


if __name__ == "__main__":
    raise SystemExit(main())
