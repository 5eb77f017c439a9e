"""The robot-stack path, run for real (issue 20): the repository in a colcon workspace's src/,
`colcon build` with the venv's Python, then from fresh `bash -c` shells that source
install/setup.bash and have no venv on PATH: `ros2 launch`, `ros2 run`, `ros2 lifecycle`,
`ros2 service call` and `ros2 param get`, with a camera (an rclpy publisher in this process)
sending real frames of ../shared/data/sequences/uav_boat5 over DDS.

The venv stands in for a ROS 2 install: AMENT_PREFIX_PATH names it as the underlay and `ros2` is
called by its full path (the one place a ROS install's own `ros2` would be). The tracker's
executable, lib/cract/tracker_node, must then start with the interpreter that built the package:
with `#!/usr/bin/env python3` the shell's python3 runs it and the node dies at once.

One colcon build for the module (about 35 s); each test starts its own launch or node (a model
load each), every process in a group of its own that is ended at teardown. The ros2 commands run
with --no-daemon, so nothing outlives a test; the domain is the run's own ROS_DOMAIN_ID.
The tools come from scripts/setup_ros2_tools.sh (make test / make venv).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT, in_ci, load_sequence, require_shared_sequences

VENV = Path(sys.prefix)
ROS2 = VENV / "bin" / "ros2"
COLCON = VENV / "bin" / "colcon"
SEQUENCE = "uav_boat5"
N_FRAMES = 12
START_TIMEOUT = 180.0  # a launch until the node is active (model load on a busy 2-core machine)
REPLY_TIMEOUT = 60.0
CLI_TIMEOUT = 120.0
# a PATH without the venv: what a robot's shell, a systemd unit or another workspace has
PLAIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

if not (ROS2.is_file() and COLCON.is_file()):
    reason = f"ros2 / colcon not in {VENV} (scripts/setup_ros2_tools.sh installs them; make test runs it)"
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rclpy.time import Time  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from cract.msg import TrackedObject  # noqa: E402
from cract.srv import SetTarget  # noqa: E402
from cract_core.geometry import iou  # noqa: E402
from cract_ros.conversions import bgr_to_image  # noqa: E402
from node_harness import spin_until  # noqa: E402


def _shell_env(log_dir: Path) -> dict:
    """A fresh shell's environment: no venv on PATH, nothing of this process's PYTHONPATH."""
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": PLAIN_PATH, "LANG": "C.UTF-8",
           "AMENT_PREFIX_PATH": str(VENV),  # the underlay, as `source /opt/ros/<distro>/setup.bash` sets it
           "ROS_LOG_DIR": str(log_dir), "RCUTILS_COLORIZED_OUTPUT": "0", "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1",
           "TMPDIR": str(log_dir)}  # launch_ros's generated parameter files stay in the test's folder
    for name in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE"):
        env[name] = os.environ[name]
    assert not any(str(VENV) in p for p in env["PATH"].split(":"))
    return env


class Workspace:
    """The built workspace, and shells that source its install/setup.bash."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.env = _shell_env(self.logs)
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def _bash(self, command: str) -> list[str]:
        return ["bash", "-c", f"source {self.root}/install/setup.bash && {command}"]

    def run(self, command: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(self._bash(command), env=self.env, cwd=self.root, capture_output=True, text=True,
                              timeout=timeout, start_new_session=True)

    def ros2(self, args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        return self.run(f"{ROS2} {args}", timeout)

    def ros2_graph(self, args: str) -> subprocess.CompletedProcess:
        """A `ros2` verb that looks the node up in the graph: without the daemon, discovery is its
        --spin-time (spent twice by `lifecycle`); asked again with a longer one while the answer is
        'Node not found' (a loaded machine)."""
        for spin in (1, 3, 8):
            done = self.ros2(f"{args} --no-daemon --spin-time {spin}")
            if "Node not found" not in done.stdout + done.stderr:
                break
        return done

    def start(self, name: str, command: str) -> "Started":
        """`command` (exec'd by the shell, so signals reach it) in a process group of its own."""
        log = self.logs / f"{name}-{uuid.uuid4().hex[:6]}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(self._bash(f"exec {command}"), env=self.env, cwd=self.root, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append((proc, log))
        return Started(proc, log)

    def stop_all(self) -> None:
        for proc, _ in self.started:
            stop_group(proc)
        self.started.clear()


class Started:
    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc, self.log = proc, log

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = START_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after {timeout} s:\n{self.text()[-3000:]}")


def stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> Optional[int]:
    """SIGINT to the process group (Ctrl-C in a terminal), SIGKILL to what is left after `timeout`."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a node the launch left behind
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(10)
    return proc.returncode


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Workspace:
    """The repository linked into src/ of a new workspace and built once by colcon."""
    root = tmp_path_factory.mktemp("colcon_ws")
    (root / "src").mkdir()
    (root / "src" / "cract").symlink_to(REPO_ROOT, target_is_directory=True)
    # the build may see the venv (a developer's shell after `source /opt/ros/<distro>/setup.bash`)
    env = {**_shell_env(root), "PATH": f"{VENV / 'bin'}:{PLAIN_PATH}", "CMAKE_PREFIX_PATH": str(VENV)}
    log = root / "colcon-build.log"
    with log.open("w") as out:
        done = subprocess.run([str(COLCON), "build", "--event-handlers", "console_direct+",
                               "--cmake-args", f"-DPython3_EXECUTABLE={VENV / 'bin' / 'python'}",
                               "-DBUILD_TESTING=OFF"],
                              cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=900)
    assert done.returncode == 0, f"colcon build failed:\n{log.read_text()[-5000:]}"
    ws = Workspace(root)
    yield ws
    ws.stop_all()


@pytest.fixture
def ws(built: Workspace) -> Workspace:
    yield built
    built.stop_all()


@pytest.fixture(scope="module")
def boat() -> dict:
    frames, gt = load_sequence(require_shared_sequences() / SEQUENCE, N_FRAMES)
    return {"frames": frames, "gt": gt}


@pytest.fixture
def graph(rclpy_init) -> "Graph":
    g = Graph()
    yield g
    g.close()


class Graph:
    """This test's side of the ROS graph: a camera, and clients and subscribers of a tracker."""

    def __init__(self) -> None:
        self.node = rclpy.create_node(f"colcon_test_{uuid.uuid4().hex[:6]}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.stamps: dict[int, Any] = {}  # frame index -> the stamp it was first sent with
        self.results: list[TrackedObject] = []
        self.diagnostics: list[DiagnosticStatus] = []
        self.fqn = ""
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diagnostics.extend(m.status), 50)

    def tracker(self, fqn: str, camera_topic: str, camera_info_topic: Optional[str] = None) -> None:
        self.fqn = fqn
        self.camera = self.node.create_publisher(Image, camera_topic, qos_profile_sensor_data)
        self.info = (self.node.create_publisher(CameraInfo, camera_info_topic, qos_profile_sensor_data)
                     if camera_info_topic else None)
        self.node.create_subscription(TrackedObject, f"{fqn}/tracked_object", self.results.append, 100)
        self.get_state = self.node.create_client(GetState, f"{fqn}/get_state")
        self.set_target = self.node.create_client(SetTarget, f"{fqn}/set_target")

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()

    def spin_until(self, predicate: Callable[[], Any], timeout: float, what: str,
                   process: Optional[Started] = None) -> Any:
        if process is None:
            return spin_until(self.executor, predicate, timeout, what)
        return spin_until(self.executor, predicate, timeout, what, process.proc.poll, process.text)

    def call(self, client: Any, request: Any, what: str, process: Optional[Started] = None) -> Any:
        self.spin_until(client.service_is_ready, START_TIMEOUT, f"{client.srv_name}", process)
        future = client.call_async(request)
        self.spin_until(future.done, REPLY_TIMEOUT, what, process)
        return future.result()

    def state(self, process: Started) -> str:
        return self.call(self.get_state, GetState.Request(), "~/get_state", process).current_state.label

    def wait_state(self, label: str, process: Started) -> None:
        self.spin_until(lambda: self.state(process) == label, START_TIMEOUT, f"lifecycle state {label}", process)

    def stamp(self, index: int) -> Any:
        """The time a frame is first sent, as a camera driver stamps it (the follower refuses old frames)."""
        if index not in self.stamps:
            self.stamps[index] = Time(nanoseconds=time.time_ns()).to_msg()
        return self.stamps[index]

    def publish(self, frame: np.ndarray, index: int) -> None:
        msg = bgr_to_image(frame, frame_id="camera")
        msg.header.stamp = self.stamp(index)
        if self.info is not None:
            h, w = frame.shape[:2]
            f = float(w)
            info = CameraInfo(width=w, height=h, distortion_model="plumb_bob", d=[0.0] * 5,
                              k=[f, 0.0, w / 2, 0.0, f, h / 2, 0.0, 0.0, 1.0],
                              r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                              p=[f, 0.0, w / 2, 0.0, 0.0, f, h / 2, 0.0, 0.0, 0.0, 1.0, 0.0])
            info.header = msg.header
            self.info.publish(info)
        self.camera.publish(msg)

    def answer(self, index: int) -> Optional[TrackedObject]:
        want = self.stamp(index)
        found = [r for r in self.results if (r.header.stamp.sec, r.header.stamp.nanosec) == (want.sec, want.nanosec)]
        return found[-1] if found else None

    def publish_until_answered(self, frame: np.ndarray, index: int, process: Started) -> TrackedObject:
        """A first frame can go to a reader that discovery has not matched yet: publish it again
        every half second until its TrackedObject comes."""
        self.spin_until(lambda: self.camera.get_subscription_count() > 0, START_TIMEOUT, "the camera's subscriber",
                        process)
        deadline = time.monotonic() + REPLY_TIMEOUT
        while time.monotonic() < deadline:
            self.publish(frame, index)
            end = time.monotonic() + 0.5
            while time.monotonic() < end and self.answer(index) is None:
                self.executor.spin_once(timeout_sec=0.05)
            if self.answer(index) is not None:
                return self.answer(index)
        pytest.fail(f"frame {index} never answered:\n{process.text()[-3000:]}")

    def publish_and_wait(self, frame: np.ndarray, index: int, process: Started) -> TrackedObject:
        """Lockstep: frame `index` out, its TrackedObject back."""
        self.publish(frame, index)
        return self.spin_until(lambda: self.answer(index), REPLY_TIMEOUT, f"the TrackedObject of frame {index}", process)

    def diag(self, predicate: Callable[[DiagnosticStatus], bool], what: str, process: Started) -> DiagnosticStatus:
        return self.spin_until(lambda: next((s for s in reversed(self.diagnostics)
                                             if s.hardware_id == self.fqn and predicate(s)), None),
                               REPLY_TIMEOUT, what, process)


def params_file(tmp_path: Path, **overrides: Any) -> Path:
    """config/cract.yaml with `overrides`, as a robot's own params file."""
    data = yaml.safe_load((REPO_ROOT / "config" / "cract.yaml").read_text())
    data["/**"]["ros__parameters"].update(overrides)
    path = tmp_path / f"tracker_{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def set_target_cli(ws: Workspace, fqn: str, box: np.ndarray, stamp: Any) -> str:
    """~/set_target through `ros2 service call` (the frame of `stamp`, the box in pixels)."""
    request = (f"{{stamp: {{sec: {stamp.sec}, nanosec: {stamp.nanosec}}}, x: {box[0]:.2f}, y: {box[1]:.2f}, "
               f"width: {box[2]:.2f}, height: {box[3]:.2f}}}")
    done = ws.ros2(f"service call {fqn}/set_target cract/srv/SetTarget '{request}'")
    assert done.returncode == 0 and "success=True" in done.stdout, done.stdout + done.stderr
    return done.stdout


def track(graph: Graph, boat: dict, process: Started, first: int = 1) -> list[float]:
    """Frames first.. in lockstep; the IoU of each answer with the ground truth."""
    ious = []
    for i in range(first, N_FRAMES):
        out = graph.publish_and_wait(boat["frames"][i], i, process)
        assert out.state != TrackedObject.IDLE, f"frame {i}: {out.state}"
        box = np.array([out.x, out.y, out.width, out.height])
        ious.append(float(iou(box[None], boat["gt"][i][None], fmt="xywh")[0]))
    return ious


# ---------------------------------------------------------------------------------------------


def test_installed_executables_name_the_building_interpreter(built: Workspace) -> None:
    for program in ("tracker_node", "follower_node"):
        path = built.root / "install" / "cract" / "lib" / "cract" / program
        assert os.access(path, os.X_OK), path
        assert path.read_text().splitlines()[0] == f"#!{VENV / 'bin' / 'python'}", program
    # the shell the launches below start from cannot run the node with its own python3
    probe = built.run("command -v python3 >/dev/null && python3 -c 'import rclpy, cract_ros' || echo NO-PYTHON")
    assert "NO-PYTHON" in probe.stdout, probe.stdout + probe.stderr


def test_launch_tracks_the_target_from_a_shell_without_the_venv(ws: Workspace, graph: Graph, boat: dict,
                                                                 tmp_path: Path) -> None:
    """`ros2 launch cract cract.launch.py` with the camera remapped and a params file of its own:
    active, the params file's values in force, a target set by `ros2 service call`, boxes on it."""
    params = params_file(tmp_path, lockstep=True, num_threads=1, warmup=False)
    launch = ws.start("launch", f"{ROS2} launch cract cract.launch.py image_topic:=/t20/cam/image_raw "
                                f"camera_info_topic:=/t20/cam/camera_info params_file:={params}")
    graph.tracker("/cract_tracker", "/t20/cam/image_raw", "/t20/cam/camera_info")
    graph.wait_state("active", launch)
    got = ws.ros2_graph("lifecycle get /cract_tracker")
    assert got.returncode == 0 and got.stdout.startswith("active [3]"), got.stdout + got.stderr
    lockstep = ws.ros2_graph("param get /cract_tracker lockstep")
    assert "Boolean value is: True" in lockstep.stdout, lockstep.stdout + lockstep.stderr  # from the params file
    first = graph.publish_until_answered(boat["frames"][0], 0, launch)
    assert first.state == TrackedObject.IDLE
    set_target_cli(ws, "/cract_tracker", boat["gt"][0], graph.stamp(0))
    ious = track(graph, boat, launch)
    assert min(ious) > 0.5 and np.mean(ious) > 0.7, ious
    assert "/t20/cam/image_raw" in launch.text()  # the node says which topic it tracks
    assert stop_group(launch.proc) == 0, launch.text()[-3000:]


def test_autostart_false_waits_for_ros2_lifecycle_set(ws: Workspace, graph: Graph) -> None:
    launch = ws.start("launch_manual", f"{ROS2} launch cract cract.launch.py namespace:=t20m autostart:=false")
    graph.tracker("/t20m/cract_tracker", "/camera/image_raw")
    graph.wait_state("unconfigured", launch)
    got = ws.ros2_graph("lifecycle get /t20m/cract_tracker")
    assert got.stdout.startswith("unconfigured [1]"), got.stdout + got.stderr
    for transition in ("configure", "activate"):
        done = ws.ros2_graph(f"lifecycle set /t20m/cract_tracker {transition}")
        assert done.returncode == 0 and "Transitioning successful" in done.stdout, done.stdout + done.stderr
    assert graph.state(launch) == "active"
    assert stop_group(launch.proc) == 0, launch.text()[-3000:]


def test_follow_launch_commands_once_the_target_is_set(ws: Workspace, graph: Graph, boat: dict,
                                                       tmp_path: Path) -> None:
    """follow.launch.py: tracker and follower in /drone1; zero commands while no target is set,
    commands that steer once it is (set through rclpy here)."""
    params = params_file(tmp_path, lockstep=True, num_threads=1, warmup=False)
    launch = ws.start("follow", f"{ROS2} launch cract follow.launch.py tracker_params_file:={params}")
    graph.tracker("/drone1/cract_tracker", "/drone1/camera/image_raw", "/drone1/camera/camera_info")
    commands: list[TwistStamped] = []
    graph.node.create_subscription(TwistStamped, "/drone1/cmd_vel_stamped", commands.append, 100)
    graph.wait_state("active", launch)
    graph.spin_until(lambda: graph.node.count_publishers("/drone1/cmd_vel_stamped") > 0, START_TIMEOUT,
                     "the follower's cmd_vel_stamped", launch)
    graph.spin_until(lambda: graph.node.count_subscribers("/drone1/cract_tracker/tracked_object") > 0,
                     START_TIMEOUT, "the follower's subscription", launch)
    graph.publish_until_answered(boat["frames"][0], 0, launch)
    before = graph.spin_until(lambda: commands, REPLY_TIMEOUT, "a command before the target", launch)
    assert all(_speed(c) == 0.0 for c in before), "a command without a target"
    res = graph.call(graph.set_target, SetTarget.Request(stamp=graph.stamp(0), x=float(boat["gt"][0][0]),
                                                         y=float(boat["gt"][0][1]), width=float(boat["gt"][0][2]),
                                                         height=float(boat["gt"][0][3])), "~/set_target", launch)
    assert res.success, res.message
    ious = track(graph, boat, launch)
    assert np.mean(ious) > 0.7, ious
    tracked = {(graph.stamp(i).sec, graph.stamp(i).nanosec) for i in range(1, N_FRAMES)}
    steering = graph.spin_until(lambda: [c for c in commands if (c.header.stamp.sec, c.header.stamp.nanosec) in tracked
                                         and _speed(c) > 0.0], REPLY_TIMEOUT, "commands on tracked frames", launch)
    assert steering
    assert stop_group(launch.proc) == 0, launch.text()[-3000:]


def _speed(cmd: TwistStamped) -> float:
    t = cmd.twist
    return float(np.abs([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z]).sum())


def test_ros2_run_and_a_camera_that_never_publishes(ws: Workspace, graph: Graph) -> None:
    """`ros2 run cract tracker_node --ros-args ...` comes up active; its camera never publishes:
    the node logs the topic, and /diagnostics warns."""
    run = ws.start("run", f"{ROS2} run cract tracker_node --ros-args -r __ns:=/t20r -r image:=/t20r/silent_camera "
                          f"-p watchdog_timeout_s:=0.5 -p diagnostics_period_s:=0.2 -p warmup:=false")
    graph.tracker("/t20r/cract_tracker", "/t20r/silent_camera")
    graph.wait_state("active", run)
    status = graph.diag(lambda s: s.level == DiagnosticStatus.WARN, "a warning on /diagnostics", run)
    assert "no image on /t20r/silent_camera" in status.message, status.message
    graph.spin_until(lambda: "no image on /t20r/silent_camera" in run.text(), REPLY_TIMEOUT, "the log line", run)
    assert "is the camera running" in run.text()
    assert stop_group(run.proc) == 0, run.text()[-3000:]


def test_example_parent_launch_includes_cract_launch(ws: Workspace, graph: Graph, boat: dict) -> None:
    """launch/example_robot.launch.py: cract.launch.py included in /robot7, the camera remapped
    to the robot's; it tracks what that camera sends."""
    launch = ws.start("example", f"{ROS2} launch cract example_robot.launch.py robot:=robot7 camera:=down_camera")
    graph.tracker("/robot7/cract_tracker", "/robot7/down_camera/image_raw", "/robot7/down_camera/camera_info")
    graph.wait_state("active", launch)
    graph.publish_until_answered(boat["frames"][0], 0, launch)
    res = graph.call(graph.set_target, SetTarget.Request(stamp=graph.stamp(0), x=float(boat["gt"][0][0]),
                                                         y=float(boat["gt"][0][1]), width=float(boat["gt"][0][2]),
                                                         height=float(boat["gt"][0][3])), "~/set_target", launch)
    assert res.success, res.message
    out = graph.publish_until_answered(boat["frames"][1], 1, launch)
    assert out.state != TrackedObject.IDLE and out.frame_index == 1
    box = np.array([out.x, out.y, out.width, out.height])
    assert iou(box[None], boat["gt"][1][None], fmt="xywh")[0] > 0.5
    assert stop_group(launch.proc) == 0, launch.text()[-3000:]


def test_missing_params_file_or_bad_values_end_the_launch_with_an_error(ws: Workspace, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_params.yaml"
    done = ws.ros2(f"launch cract cract.launch.py params_file:={missing}")
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert f"params_file '{missing}' does not exist" in out, out
    assert "process started" not in out, out  # refused before the node started
    # the node itself, started without launch, says the same in one line and exits 1
    run = ws.ros2(f"run cract tracker_node --ros-args --params-file {missing}")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "cannot start" in run.stderr and "Couldn't parse params file" in run.stderr, run.stderr
    # a value the node refuses: one FATAL line with the reason, exit 1, and the launch exits non-zero
    bad = ws.ros2(f"launch cract cract.launch.py namespace:=t20p params_file:={params_file(tmp_path, alpha=5.0)}",
                  timeout=START_TIMEOUT)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0, out
    assert "bad parameters: alpha must be <= 1.0, got 5.0" in out and "exited with code 1" in out, out
    assert "Traceback" not in out, out


def test_unknown_model_config_ends_the_launch_with_an_error(ws: Workspace, graph: Graph, tmp_path: Path) -> None:
    """A model config name that does not exist: with autostart the node logs why, exits 1 and the
    launch exits non-zero; without autostart `ros2 lifecycle set configure` fails and
    /diagnostics carries the reason at ERROR."""
    params = params_file(tmp_path, model_config="no_such_model.yaml", num_threads=1)
    done = ws.ros2(f"launch cract cract.launch.py namespace:=t20u params_file:={params}", timeout=START_TIMEOUT)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "no_such_model.yaml does not exist" in out, out
    assert "exited with code 1" in out, out

    launch = ws.start("bad_model", f"{ROS2} launch cract cract.launch.py namespace:=t20v autostart:=false "
                                   f"params_file:={params}")
    graph.tracker("/t20v/cract_tracker", "/camera/image_raw")
    graph.wait_state("unconfigured", launch)
    failed = ws.ros2_graph("lifecycle set /t20v/cract_tracker configure")
    assert "Transitioning failed" in failed.stderr, failed.stdout + failed.stderr  # (exit status 0 all the same)
    status = graph.diag(lambda s: s.level == DiagnosticStatus.ERROR, "an ERROR on /diagnostics", launch)
    assert "configure failed" in status.message and "no_such_model.yaml" in status.message, status.message
    assert graph.state(launch) == "unconfigured"
    assert stop_group(launch.proc) == 0, launch.text()[-3000:]
