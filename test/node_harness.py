"""What the ROS tests share: a node process under test and the rclpy side that talks to it.

A tracker node starts exactly as launch/cract.launch.py starts it:
`python -m cract_ros.node --ros-args --params-file config/cract.yaml -p ...` (cract_ros.process).
The test side is an rclpy node in this process: a camera publishing sensor_msgs/Image (and
CameraInfo), clients of ~/set_target, ~/clear_target, the parameter services and the standard
lifecycle services, and subscribers of ~/tracked_object, ~/debug_image and /diagnostics. Waits
are bounded (a failure, never a timing threshold on performance).
"""
from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

import rclpy
from cract.msg import TrackedObject
from cract.srv import SetTarget
from cract_ros.process import DEFAULT_PARAMS_FILE, REPO_ROOT, node_command, stop_node
from cract_ros.bags.sequence import stamp_of

SHUTDOWN_TRANSITIONS = (Transition.TRANSITION_UNCONFIGURED_SHUTDOWN, Transition.TRANSITION_INACTIVE_SHUTDOWN,
                        Transition.TRANSITION_ACTIVE_SHUTDOWN)
START_TIMEOUT = 180.0  # model load + warm-up on a busy 2-core machine
REPLY_TIMEOUT = 60.0  # one frame (an init or an in-frame update included)


def stamp_msg(index: int) -> TimeMsg:
    sec, nsec = stamp_of(index)
    return TimeMsg(sec=sec, nanosec=nsec)


def key(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def spin_until(executor: SingleThreadedExecutor, predicate: Callable[[], Any], timeout: float, what: str,
               exit_code: Callable[[], Optional[int]] = lambda: None, log: Callable[[], str] = lambda: "") -> Any:
    """Spin ``executor`` until ``predicate()`` is truthy and return that value; the test fails after
    ``timeout`` s, or once ``exit_code()`` says the process under test ended (what it sent before
    it ended may still be on its way, its last IDLE say: what arrives for one more second counts).
    ``log()``: the process's output, quoted in the failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        code = exit_code()
        if code is not None:
            drain_end = min(deadline, time.monotonic() + 1.0)
            while time.monotonic() < drain_end:
                executor.spin_once(timeout_sec=0.05)
                value = predicate()
                if value:
                    return value
            pytest.fail(f"process exited with {code} while waiting for {what}; its log:\n{log()[-4000:]}")
        executor.spin_once(timeout_sec=0.05)
    value = predicate()
    if not value:
        pytest.fail(f"timed out after {timeout} s waiting for {what}; log:\n{log()[-4000:]}")
    return value


class ProcessUnderTest:
    """A node's process (its output in a log file) plus the test side's rclpy node and executor."""

    def __init__(self, log_dir: Path, name: str, command: list[str], namespace: Optional[str] = None) -> None:
        self.ns = namespace or f"/t_{name}_{uuid.uuid4().hex[:6]}"
        self.log_path = log_dir / f"{name}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(command + ["-r", f"__ns:={self.ns}"], stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=str(REPO_ROOT))
        self.expected_exit = 0  # the exit code the fixture expects at the end
        self.node = rclpy.create_node(f"tester_{name}_{uuid.uuid4().hex[:6]}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def spin_until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        return spin_until(self.executor, predicate, timeout, what, self.proc.poll, self.log_text)

    def close(self) -> int:
        code = stop_node(self.proc)
        self.executor.shutdown()
        self.node.destroy_node()
        self.log.close()
        return code


class NodeUnderTest(ProcessUnderTest):
    """The tracker node's process plus the test side that talks to it."""

    def __init__(self, log_dir: Path, overrides: dict, name: str, namespace: Optional[str] = None) -> None:
        super().__init__(log_dir, name, node_command(DEFAULT_PARAMS_FILE, overrides), namespace)
        self.fqn = f"{self.ns}/cract_tracker"
        self.results: list[TrackedObject] = []
        self.debug_images: list[Image] = []
        self.diagnostics: list[DiagnosticStatus] = []
        topic = str(overrides.get("image_topic", "image"))  # the node's image topic, resolved in its namespace
        self.camera_topic = topic if topic.startswith("/") else f"{self.ns}/{topic}"
        self.camera = self.node.create_publisher(Image, self.camera_topic, qos_profile_sensor_data)
        self.camera_info = self.node.create_publisher(CameraInfo, f"{self.ns}/camera_info", qos_profile_sensor_data)
        self.node.create_subscription(TrackedObject, f"{self.fqn}/tracked_object", self.results.append, 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.set_target = self.node.create_client(SetTarget, f"{self.fqn}/set_target")
        self.clear_target = self.node.create_client(Trigger, f"{self.fqn}/clear_target")
        self.set_params = self.node.create_client(SetParameters, f"{self.fqn}/set_parameters")
        self.get_params = self.node.create_client(GetParameters, f"{self.fqn}/get_parameters")
        self.change_state_client = self.node.create_client(ChangeState, f"{self.fqn}/change_state")
        self.get_state_client = self.node.create_client(GetState, f"{self.fqn}/get_state")
        self.transitions_client = self.node.create_client(GetAvailableTransitions,
                                                          f"{self.fqn}/get_available_transitions")

    def _on_diag(self, msg: DiagnosticArray) -> None:
        self.diagnostics.extend(s for s in msg.status if s.hardware_id == self.fqn)

    def wait_ready(self) -> None:
        self.spin_until(lambda: self.set_target.service_is_ready(), START_TIMEOUT, "the node's ~/set_target")
        self.spin_until(lambda: self.camera.get_subscription_count() > 0, 30.0, "the node's image subscription")
        self.spin_until(lambda: self.node.count_publishers(f"{self.fqn}/tracked_object") > 0, 30.0,
                        "the node's ~/tracked_object publisher")

    def call(self, client: Any, request: Any, what: str) -> Any:
        future = client.call_async(request)
        self.spin_until(future.done, REPLY_TIMEOUT, what)
        return future.result()

    def call_set_target(self, box: Any, stamp: Optional[TimeMsg] = None) -> SetTarget.Response:
        req = SetTarget.Request(x=float(box[0]), y=float(box[1]), width=float(box[2]), height=float(box[3]))
        if stamp is not None:
            req.stamp = stamp
        return self.call(self.set_target, req, f"~/set_target {list(box)}")

    def publish(self, msg: Image, index: Optional[int] = None) -> None:
        if index is not None:
            msg.header.stamp = stamp_msg(index)
        msg.header.frame_id = "camera"
        self.camera.publish(msg)

    def results_for(self, stamp: TimeMsg) -> list[TrackedObject]:
        return [r for r in self.results if key(r.header.stamp) == key(stamp)]

    def publish_until_answered(self, msg: Image, index: int, period: float = 0.5) -> TrackedObject:
        """Newest-frame mode, a new subscriber: publish frame `index` again every `period` s until
        it is answered (a first frame can go to a reader that discovery has not matched yet, or to
        a killed node's reader that the graph still lists), return the answer."""
        deadline = time.monotonic() + REPLY_TIMEOUT
        while time.monotonic() < deadline:
            self.publish(msg, index)
            try:
                return self.spin_until(lambda: self.results_for(stamp_msg(index)) and self.results_for(stamp_msg(index))[-1],
                                       period, f"the TrackedObject of frame {index}")
            except pytest.fail.Exception:
                continue
        pytest.fail(f"frame {index} was never answered; node log:\n{self.log_text()[-3000:]}")

    def publish_and_wait(self, msg: Image, index: int, what: str = "") -> TrackedObject:
        """Lockstep: publish frame `index`, return the TrackedObject that carries its stamp."""
        before = len(self.results_for(stamp_msg(index)))
        self.publish(msg, index)
        return self.spin_until(lambda: self.results_for(stamp_msg(index))[before:] and self.results_for(stamp_msg(index))[-1],
                               REPLY_TIMEOUT, what or f"the TrackedObject of frame {index}")

    def latest_diag(self, predicate: Callable[[dict], bool] = lambda v: True, what: str = "diagnostics") -> tuple[DiagnosticStatus, dict]:
        def find():
            for status in reversed(self.diagnostics):
                values = {kv.key: kv.value for kv in status.values}
                if predicate(values):
                    return status, values
            return None
        return self.spin_until(find, 30.0, what)

    def set_param(self, name: str, value: Any) -> Any:
        req = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call(self.set_params, req, f"set {name}").results[0]

    # ---- the standard lifecycle services (what `ros2 lifecycle` and Nav2's manager call)

    def wait_lifecycle(self) -> None:
        self.spin_until(self.get_state_client.service_is_ready, START_TIMEOUT, "the node's ~/get_state")

    def lifecycle_state(self) -> str:
        return self.call(self.get_state_client, GetState.Request(), "~/get_state").current_state.label

    def change_state(self, transition_id: int) -> bool:
        """ChangeState by id (Transition.TRANSITION_*); the node's answer: did the transition succeed."""
        req = ChangeState.Request(transition=Transition(id=transition_id))
        future = self.change_state_client.call_async(req)
        if transition_id in SHUTDOWN_TRANSITIONS:
            # the node answers and then ends; the answer can be lost with the process (rmw gives
            # up on a response whose client it has not matched yet): a clean exit 0 is the answer
            deadline = time.monotonic() + START_TIMEOUT
            while not future.done() and self.proc.poll() is None and time.monotonic() < deadline:
                self.executor.spin_once(timeout_sec=0.05)
            if not future.done():
                return self.proc.poll() == 0
        self.spin_until(future.done, START_TIMEOUT, f"~/change_state {transition_id}")  # configure loads the model
        return future.result().success

    def available_transitions(self) -> set[str]:
        res = self.call(self.transitions_client, GetAvailableTransitions.Request(), "~/get_available_transitions")
        return {t.transition.label for t in res.available_transitions}

    def services(self) -> set[str]:
        """The node's services as the ROS graph lists them (none while discovery has not seen the node)."""
        from rclpy.node import NodeNameNonExistentError

        try:
            names = self.node.get_service_names_and_types_by_node(self.fqn.rsplit("/", 1)[1], self.ns)
        except NodeNameNonExistentError:
            return set()
        return {name for name, _ in names}



@pytest.fixture
def node_factory(rclpy_init, tmp_path):
    """start(name, ready=True, namespace=None, exits_with=None, **parameters) -> NodeUnderTest; every
    node is stopped (SIGINT) after the test and must exit with 0 unless it already exited
    (`expected_exit` set by the test). A node started with `exits_with` is expected to end by itself
    with that code: nothing waits for its services (it may be gone before discovery sees them)."""
    started: list[NodeUnderTest] = []

    def start(name: str, ready: bool = True, namespace: Optional[str] = None, exits_with: Optional[int] = None,
              **overrides: Any) -> NodeUnderTest:
        nut = NodeUnderTest(tmp_path, overrides, name, namespace)
        started.append(nut)
        if exits_with is not None:
            nut.expected_exit = exits_with
        elif ready:
            nut.wait_ready()
        else:
            nut.wait_lifecycle()
        return nut

    yield start
    for nut in started:
        code = nut.close()
        assert code == nut.expected_exit, f"node {nut.fqn} exited with {code} at shutdown:\n{nut.log_text()[-3000:]}"
