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

Parameters (PARAMETERS in settings.py; config/cract.yaml holds every one of them) are validated at start
and on `ros2 param set`: a bad value is rejected with the reason; those marked runtime are
applied at once (thresholds, alpha, beta, K through Tracker.set_params); the others are read by
the configure transition and may change only while the node is unconfigured (autostart and
diagnostics_period_s: at process start only).
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_srvs.srv import Trigger

from cract.msg import TrackedObject
from cract.srv import SetTarget
from cract_ros.node.diagnostics import Diagnostics
from cract_ros.node.frames import Calibrations, FrameInput
from cract_ros.node.memory import cuda_allocated_mib, model_tensor_mib, process_rss_mib, release_memory
from cract_ros.node.model import build_tracker, model_tracker_values, warm_up
from cract_ros.node.settings import (FROM_MODEL_CONFIG, NODE_NAME, PARAMETERS, TRACKER_RUNTIME_PARAMS, NodeStartupError,
                                     check_parameters, resolve_tracker_values)
from cract_ros.node.targets import TargetRequests
from cract_ros.node.work import Frame, Request
from cract_ros.node.worker import TrackingWorker
from cract_ros.parameters import apply_update, declare_parameters

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
STOP_JOIN_S = 2.0  # how long destroy_node waits for the tracker's thread


# The mixins hold the node's responsibilities (frames.py, targets.py, worker.py, diagnostics.py);
# this class wires them to ROS (entities, callback groups) and drives the lifecycle.
class TrackerNode(FrameInput, TargetRequests, TrackingWorker, Diagnostics, LifecycleNode):
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
        # the loaded model config's alpha, beta, thresholds and K (None while no model is loaded):
        # what a tracker parameter left at FROM_MODEL_CONFIG (-1) stands for
        self._model_values: Optional[dict] = None

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
        self._configure_error: Optional[str] = None  # why the last configure failed (/diagnostics: ERROR)
        self._active_since = time.monotonic()  # no image this long after activation: a warning
        self._no_image_warned = False

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
        problems = check_parameters(new, self._model_values)
        if problems:
            self._refused_parameters += 1
            return SetParametersResult(successful=False, reason="; ".join(problems))
        changed = {k: v for k, v in new.items() if v != self.p[k]}
        self.p = new
        # -1 hands a parameter back to the model config: the tracker gets the config's value
        tracker_kw = resolve_tracker_values({k: v for k, v in changed.items() if k in TRACKER_RUNTIME_PARAMS},
                                            self._model_values)
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
                self._publish_diagnostics()  # the reason, on /diagnostics too, before the process ends
                self.exit_code = 1
                self.finished.set_result("autostart failed")
                return

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        t0 = time.perf_counter()
        try:
            self._configure()
        except Exception as exc:  # rclpy would swallow it: say why the transition failed
            self.get_logger().error(f"configure failed: {exc}")
            self._configure_error = str(exc)
            self._unconfigure()
            return FAILURE
        self._configure_error = None
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
        self._active_since, self._no_image_warned = time.monotonic(), False
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
        self._model_values = None
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
        return {k: self.p[k] for k in ("model_config", "checkpoint", "device", "tracker_mode", "num_threads", "runtime",
                                       *TRACKER_RUNTIME_PARAMS)}

    def _load_tracker(self, factory: Optional[Callable[[dict], Any]]) -> Any:
        t0 = time.perf_counter()
        settings = self._tracker_settings()
        try:
            tracker = (factory or build_tracker)(settings)
        except Exception as exc:  # ConfigError, CheckpointError, missing weights: the transition fails
            raise NodeStartupError(f"could not load the tracker ({type(exc).__name__}): {exc}") from exc
        self._device_name = str(getattr(tracker, "device", self.p["device"]))
        self._model_values = model_tracker_values(tracker)
        if self._model_values is not None:
            kept = {k: self._model_values[k] for k in TRACKER_RUNTIME_PARAMS if self.p[k] == FROM_MODEL_CONFIG}
            if kept:
                self.get_logger().info(f"from the model config: {kept}")
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

    # ---------------------------------------------------------------- shutdown

    def destroy_node(self) -> None:
        """SIGINT or the end of main: stop the tracker's thread and close the tracker, in any state."""
        if not hasattr(self, "_cv"):
            # the constructor stopped at bad parameters (NodeStartupError, logged by main) and
            # rclpy's shutdown destroys the node it registered: nothing of ours was made yet
            super().destroy_node()
            self._state_machine.destroy_when_not_in_use()
            return
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
