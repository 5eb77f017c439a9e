"""The follow loop, closed: tracker node + follower node + a simulated camera on a vehicle, over DDS.

    python -m cract_ros.follow.demo                    # 10 Hz and 30 Hz, output in runs/follow_demo/
    python -m cract_ros.follow.demo --rates 10 --out /tmp/follow

The tracker (`python -m cract_ros.node`, config/cract.yaml) and the follower
(`python -m cract_ros.follow.follower`, config/follower.yaml) run as their own processes, exactly as the
launch file starts them; this process is the world (cract_ros.follow.sim): a camera on a vehicle
over a real aerial image, a real car crop driving a scripted path (turns, speed changes, a
look-alike crossing, a roof it passes under).

Lock-step with simulated time, so that the result does not depend on how busy the machine is:
for frame k at t_k = k / rate, publish /clock = t_k, the CameraInfo and the image (stamp t_k);
wait for the tracker's TrackedObject and the follower's TwistStamped that carry stamp t_k; hold
that command for 1 / rate and integrate the vehicle; render frame k + 1. Both nodes run with
use_sim_time; the tracker in lockstep and sync mode (every frame, deterministic updates) and
with its wall-clock image watchdog off (in lock-step the camera waits for the tracker by
design). "10 Hz" and "30 Hz" are the simulated camera's rates: the control period, the target's
motion between frames and the vehicle's integration step.

Output (--out): per rate, `follow_<rate>hz.png` (bearing error, tracker state, commands, centre
error over time), `follow_<rate>hz_sheet.png` (12 frames: the tracker's box coloured by state,
the true box in white), `follow_<rate>hz.json` (every frame), and `follow_summary.json`; a
summary is printed: centre error median / p95 / max (fraction of the half image, 1 = at the
edge), time in view, frames LOST, zero commands, unsafe commands (non-zero on a LOST, IDLE or
low-confidence frame: must be 0), when the target was re-acquired after the roof.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np

from cract_ros.follow.sim import Renderer, Scenario, Scene, Truth, Vehicle, VehicleState, load_scene, start_behind

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_SEQUENCES = REPO_ROOT.parent / "shared" / "data" / "sequences"
FOLLOWER_PARAMS_FILE = REPO_ROOT / "config" / "follower.yaml"
DEFAULT_OUT = REPO_ROOT / "runs" / "follow_demo"
START_NS = 1_000_000_000_000  # t = 1000 s, like the bags (a zero stamp means "newest" to ~/set_target)
STATE_NAMES = {0: "IDLE", 1: "TRACKING", 2: "LOW_CONFIDENCE", 3: "LOST"}
STATE_COLOURS = {0: (160, 160, 160), 1: (0, 200, 0), 2: (0, 200, 255), 3: (0, 0, 255)}


class FollowLoopError(RuntimeError):
    """A node did not start or did not answer a frame; the message says which and where its log is."""




@dataclass
class FrameRecord:
    """Everything about one simulated frame."""

    t: float
    vehicle: dict
    truth_box: list
    truth_centre: list
    truth_bearing: list
    in_view: bool
    hidden: float
    state: int
    confidence: float
    box: list
    bearing: list
    command: dict  # forward_speed, vertical_speed, yaw_rate, gimbal_pitch_rate
    centre_error: float  # max(|dx| / half width, |dy| / half height) of the true centre from the image centre

    @property
    def command_is_zero(self) -> bool:
        return not any(self.command.values())


@dataclass
class LoopResult:
    rate_hz: float
    frames: list[FrameRecord]
    scenario_events: dict
    min_confidence: float
    desired_size: float
    wall_s: float
    logs: dict = field(default_factory=dict)

    def stats(self) -> dict:
        return loop_statistics(self)


def _stamp(ns: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def camera_info_message(scene: Scene, stamp_ns: int, frame_id: str) -> Any:
    """The simulated camera's calibration as a sensor_msgs/CameraInfo (what the tracker undoes)."""
    from sensor_msgs.msg import CameraInfo

    cam = scene.camera
    k = [cam.fx, cam.skew, cam.cx, 0.0, cam.fy, cam.cy, 0.0, 0.0, 1.0]
    info = CameraInfo(width=cam.width, height=cam.height, distortion_model=cam.distortion_model,
                      d=list(cam.coefficients), k=k, r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[cam.fx, 0.0, cam.cx, 0.0, 0.0, cam.fy, cam.cy, 0.0, 0.0, 0.0, 1.0, 0.0])
    info.header.stamp = _stamp(stamp_ns)
    info.header.frame_id = frame_id
    return info


def follower_command(overrides: dict, namespace: str) -> list[str]:
    """The follower's command line, as follow.launch.py starts it (params file, -p, namespace)."""
    from cract_ros.process import node_command

    cmd = node_command(FOLLOWER_PARAMS_FILE, overrides, namespace)
    # node_command names the tracker's module; the rest of its line is the follower's as well
    cmd[cmd.index("cract_ros.node")] = "cract_ros.follow.follower"
    return cmd


class FollowLoop:
    """Tracker and follower processes plus this process's world; `run()` closes the loop."""

    def __init__(self, scene: Scene, rate_hz: float, log_dir: Path, tracker_params: Optional[dict] = None,
                 follower_params: Optional[dict] = None, redesignate_after_s: Optional[float] = 1.0,
                 answer_timeout: float = 120.0, start_timeout: float = 300.0) -> None:
        import subprocess

        import rclpy
        from geometry_msgs.msg import TwistStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, Image

        from cract.msg import TrackedObject
        from cract.srv import SetTarget
        from cract_ros.process import DEFAULT_PARAMS_FILE, start_node

        self.scene = scene
        self.scenario = Scenario.default(scene)
        self.rate_hz = float(rate_hz)
        self.renderer = Renderer(scene, self.scenario)
        self.redesignate_after_s = redesignate_after_s
        self.answer_timeout = answer_timeout
        self.start_timeout = start_timeout
        self._rclpy = rclpy
        self._own_context = not rclpy.ok()
        if self._own_context:
            rclpy.init()
        self.ns = f"/follow_sim_{uuid.uuid4().hex[:8]}"
        truth0 = self.renderer.truth(start_behind(self.scenario), 0.0)
        cam = scene.camera
        # the mission: keep the car as big as it is at the start
        self.desired_size = float(truth0.box[2] * truth0.box[3] / (cam.width * cam.height))
        # the shipped default: its appearance memory says LOST when the car is hidden (one model for
        # tracking and following)
        tracker = {"use_sim_time": True, "lockstep": True, "tracker_mode": "sync", "watchdog_timeout_s": 3600.0,
                   **(tracker_params or {})}
        follower = {"use_sim_time": True, "desired_size": round(self.desired_size, 6), **(follower_params or {})}
        self.min_confidence = float(follower.get("min_confidence", _follower_default("min_confidence")))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_paths = {"tracker": log_dir / f"tracker_{rate_hz:g}hz.log",
                          "follower": log_dir / f"follower_{rate_hz:g}hz.log"}
        self._logs = {name: path.open("w") for name, path in self.log_paths.items()}
        self.tracker = start_node(DEFAULT_PARAMS_FILE, tracker, namespace=self.ns, log=self._logs["tracker"])
        self.follower = subprocess.Popen(follower_command(follower, self.ns), stdout=self._logs["follower"],
                                         stderr=subprocess.STDOUT, cwd=str(REPO_ROOT))
        self.node = rclpy.create_node(f"follow_sim_{uuid.uuid4().hex[:8]}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.clock = self.node.create_publisher(Clock, "/clock", 10)
        self._Clock = Clock
        # images and calibration as a camera driver sends them (best effort)
        self.camera = self.node.create_publisher(Image, f"{self.ns}/image", qos_profile_sensor_data)
        self.camera_info = self.node.create_publisher(CameraInfo, f"{self.ns}/camera_info", qos_profile_sensor_data)
        # what the nodes said, by the stamp of the frame it is about
        self.tracked: dict[int, list[Any]] = {}
        self.commands: dict[int, list[Any]] = {}
        self.tracked_topic = f"{self.ns}/cract_tracker/tracked_object"
        self.node.create_subscription(TrackedObject, self.tracked_topic,
                                      lambda m: self.tracked.setdefault(_ns(m.header.stamp), []).append(m), 100)
        self.node.create_subscription(TwistStamped, f"{self.ns}/cmd_vel_stamped",
                                      lambda m: self.commands.setdefault(_ns(m.header.stamp), []).append(m), 100)
        self.set_target = self.node.create_client(SetTarget, f"{self.ns}/cract_tracker/set_target")
        self._SetTarget = SetTarget

    # ------------------------------------------------------------------ helpers

    def _check_alive(self, what: str) -> None:
        for name, proc in (("tracker", self.tracker), ("follower", self.follower)):
            if proc.poll() is not None:
                raise FollowLoopError(f"the {name} exited with code {proc.returncode} while {what} "
                                      f"(log: {self.log_paths[name]})")

    def _spin_until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        from cract_ros.process import wait_for

        return wait_for(predicate, timeout, what, self._check_alive, lambda: self.executor.spin_once(timeout_sec=0.02),
                        lambda message: FollowLoopError(
                            f"{message} (logs: {', '.join(str(p) for p in self.log_paths.values())})"))

    def _answered(self, stamp_ns: int) -> bool:
        """The tracker answered this frame and the follower commanded on every answer."""
        n = len(self.tracked.get(stamp_ns, ()))
        return n > 0 and len(self.commands.get(stamp_ns, ())) >= n

    def _publish(self, img: np.ndarray, stamp_ns: int) -> None:
        from cract_ros.conversions import bgr_to_image

        stamp = _stamp(stamp_ns)
        self.clock.publish(self._Clock(clock=stamp))
        self.camera_info.publish(camera_info_message(self.scene, stamp_ns, "camera_optical"))
        msg = bgr_to_image(img, frame_id="camera_optical")
        msg.header.stamp = stamp
        self.camera.publish(msg)

    def wait_ready(self) -> None:
        self._spin_until(self.set_target.service_is_ready, self.start_timeout, "the tracker's ~/set_target")
        self._spin_until(lambda: self.camera.get_subscription_count() > 0, 60.0, "the tracker's image subscription")
        self._spin_until(lambda: self.node.count_subscribers(self.tracked_topic) >= 2, 60.0,
                         "the follower's subscription to the tracker")
        self._spin_until(lambda: self.node.count_publishers(f"{self.ns}/cmd_vel_stamped") > 0, 60.0,
                         "the follower's cmd_vel_stamped")

    # ------------------------------------------------------------------ the loop

    def run(self, progress: Optional[Callable[[int, int, FrameRecord], None]] = None) -> LoopResult:
        t_wall = time.monotonic()
        self.wait_ready()
        dt = 1.0 / self.rate_hz
        n = int(math.floor(self.scenario.duration * self.rate_hz + 1e-9)) + 1
        vehicle = Vehicle(start_behind(self.scenario))
        records: list[FrameRecord] = []
        lost_since: Optional[float] = None
        self.redesignations: list[float] = []
        for k in range(n):
            t = k * dt
            stamp_ns = START_NS + int(round(t * 1e9))
            img = self.renderer.render(vehicle.state, t)
            truth = self.renderer.truth(vehicle.state, t)
            if k == 0:
                self._start(img, stamp_ns, truth)
            else:
                self._publish(img, stamp_ns)
                self._spin_until(lambda: self._answered(stamp_ns), self.answer_timeout, f"frame {k}'s answers")
            state = self.tracked[stamp_ns][-1].state
            lost_since = (lost_since if lost_since is not None else t) if state == 3 else None
            if (self.redesignate_after_s is not None and lost_since is not None
                    and t - lost_since >= self.redesignate_after_s and truth.hidden == 0.0 and truth.in_view):
                # the operator (or a detector) points at the car again, on this very frame
                self._set_target(truth.box, stamp_ns)
                self.redesignations.append(t)
                lost_since = None
            tracked, command = self.tracked[stamp_ns][-1], self.commands[stamp_ns][-1]
            record = self._record(t, vehicle.state, truth, tracked, command)
            records.append(record)
            if progress is not None:
                progress(k, n, record)
            c = record.command
            vehicle.step(c["forward_speed"], c["vertical_speed"], c["yaw_rate"], c["gimbal_pitch_rate"], dt)
        events = dict(self.scenario.events)
        for i, t in enumerate(self.redesignations):
            events[f"re-designated {i + 1}"] = (t, t)
        return LoopResult(self.rate_hz, records, events, self.min_confidence, self.desired_size,
                          time.monotonic() - t_wall, {k: str(v) for k, v in self.log_paths.items()})

    def _start(self, img: np.ndarray, stamp_ns: int, truth: Truth) -> None:
        """Frame 0: published until the tracker has it, then the target is set on it (its true box)."""
        deadline = time.monotonic() + 60.0
        while not self.tracked.get(stamp_ns):
            self._publish(img, stamp_ns)
            t_next = time.monotonic() + 0.5
            while time.monotonic() < t_next and not self.tracked.get(stamp_ns):
                self.executor.spin_once(timeout_sec=0.02)
            self._check_alive("waiting for frame 0's answer")
            if time.monotonic() > deadline:
                raise FollowLoopError("the tracker never answered frame 0 within 60 s")
        self._set_target(truth.box, stamp_ns)

    def _set_target(self, box: np.ndarray, stamp_ns: int) -> None:
        """~/set_target with the true box on the frame with this stamp; wait for the tracker's new
        answer on that frame and the follower's command on it."""
        before = len(self.tracked.get(stamp_ns, ()))
        req = self._SetTarget.Request(x=float(box[0]), y=float(box[1]), width=float(box[2]), height=float(box[3]))
        req.stamp = _stamp(stamp_ns)
        future = self.set_target.call_async(req)
        self._spin_until(future.done, self.answer_timeout, "~/set_target")
        if not future.result().success:
            raise FollowLoopError(f"~/set_target refused the true box {box.round(1).tolist()}: {future.result().message}")
        self._spin_until(lambda: len(self.tracked.get(stamp_ns, ())) > before, self.answer_timeout,
                         "the TrackedObject of the frame the target was set on")
        self._spin_until(lambda: self._answered(stamp_ns), self.answer_timeout, "the follower's command on that frame")

    def _record(self, t: float, state: VehicleState, truth: Truth, tracked: Any, command: Any) -> FrameRecord:
        cam = self.scene.camera
        cx, cy = (cam.width - 1) / 2, (cam.height - 1) / 2
        err = max(abs(truth.centre[0] - cx) / (cam.width / 2), abs(truth.centre[1] - cy) / (cam.height / 2))
        tw = command.twist
        return FrameRecord(
            t=round(t, 6), vehicle={k: round(v, 5) for k, v in asdict(state).items()},
            truth_box=[round(float(v), 2) for v in truth.box], truth_centre=[round(v, 2) for v in truth.centre],
            truth_bearing=[round(v, 6) for v in truth.bearing], in_view=truth.in_view, hidden=truth.hidden,
            state=int(tracked.state), confidence=round(float(tracked.confidence), 4),
            box=[round(float(v), 2) for v in (tracked.x, tracked.y, tracked.width, tracked.height)],
            bearing=[float(tracked.bearing_x), float(tracked.bearing_y)],
            command={"forward_speed": tw.linear.x, "vertical_speed": tw.linear.z, "yaw_rate": tw.angular.z,
                     "gimbal_pitch_rate": tw.angular.y},
            centre_error=float(err) if math.isfinite(err) else math.inf)

    def close(self) -> tuple[int, int]:
        """Stop both nodes (SIGINT) and this side; returns their exit codes (tracker, follower)."""
        from cract_ros.process import stop_node

        codes = (stop_node(self.tracker), stop_node(self.follower))
        self.executor.shutdown()
        self.node.destroy_node()
        if self._own_context:
            self._rclpy.try_shutdown()
        for f in self._logs.values():
            f.close()
        return codes


def _follower_default(name: str) -> Any:
    import yaml

    return yaml.safe_load(FOLLOWER_PARAMS_FILE.read_text())["/**"]["ros__parameters"][name]


# ------------------------------------------------------------------------------------ numbers


def iou_xywh(a: Sequence[float], b: Sequence[float]) -> float:
    ax1, ay1, ax2, ay2 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx1, by1, bx2, by2 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
    union = a[2] * a[3] + b[2] * b[3] - iw * ih
    return float(iw * ih / union) if union > 0 else 0.0


def loop_statistics(result: LoopResult) -> dict:
    """The figures docs/following.md reports and the test checks (see the module docstring)."""
    frames = result.frames
    err = np.array([f.centre_error for f in frames])
    unsafe = [i for i, f in enumerate(frames)
              if (f.state in (0, 3) or f.confidence < result.min_confidence) and not f.command_is_zero]
    lost = [i for i, f in enumerate(frames) if f.state == 3]
    hidden_start, hidden_end = result.scenario_events.get("under the roof", (math.nan, math.nan))
    redesignated = sorted(a for name, (a, _) in result.scenario_events.items() if name.startswith("re-designated"))
    # the tracker's own re-acquisition: on the car again after the roof, before anyone pointed at it
    reacquired_s = math.nan
    for f in frames:
        if redesignated and f.t >= redesignated[0]:
            break
        if f.t > hidden_end and f.state in (1, 2) and iou_xywh(f.box, f.truth_box) >= 0.3:
            reacquired_s = f.t - hidden_end
            break
    following_again_s = math.nan
    for f in frames:
        if f.t > hidden_end and not f.command_is_zero and iou_xywh(f.box, f.truth_box) >= 0.3:
            following_again_s = f.t - hidden_end
            break
    visible = [f for f in frames if f.hidden == 0.0 and f.in_view]
    ious = [iou_xywh(f.box, f.truth_box) for f in visible]
    bearing_err = np.degrees([math.hypot(*f.truth_bearing) for f in frames])
    return {
        "rate_hz": result.rate_hz,
        "frames": len(frames),
        "duration_s": frames[-1].t if frames else 0.0,
        "centre_error_median": float(np.median(err)),
        "centre_error_p95": float(np.percentile(err, 95)),
        "centre_error_max": float(err.max()),
        "bearing_error_deg_median": float(np.median(bearing_err)),
        "bearing_error_deg_p95": float(np.percentile(bearing_err, 95)),
        "time_in_view": float(np.mean([f.in_view for f in frames])),
        "tracker_iou_visible_mean": float(np.mean(ious)) if ious else math.nan,
        "frames_lost": len(lost),
        "lost_while_hidden": sum(1 for i in lost if hidden_start <= frames[i].t <= hidden_end + 1.0),
        "zero_commands": sum(1 for f in frames if f.command_is_zero),
        "unsafe_commands": len(unsafe),
        "hidden_s": [hidden_start, hidden_end],
        "reacquired_by_tracker_after_s": reacquired_s,
        "redesignated_at_s": redesignated,
        "following_again_after_s": following_again_s,
        "wall_s": result.wall_s,
    }


# ------------------------------------------------------------------------------------ output


def plot(result: LoopResult, path: Path) -> Path:
    """Bearing error, tracker state, commands and centre error over time, events shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = result.frames
    t = np.array([f.t for f in frames])
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    for ax in axes:
        for name, (a, b) in result.scenario_events.items():
            if name.startswith("re-designated"):
                ax.axvline(a, color="m", lw=1.0, ls=":")
            elif math.isfinite(a):
                ax.axvspan(a, b, color="0.85" if "roof" in name else "#fde7c8", zorder=0)
    ax = axes[0]
    ax.plot(t, np.degrees([f.truth_bearing[0] for f in frames]), label="true bearing x (target vs optical axis)")
    ax.plot(t, np.degrees([f.truth_bearing[1] for f in frames]), label="true bearing y")
    ax.plot(t, np.degrees([f.bearing[0] for f in frames]), ".", ms=2, label="tracker bearing_x")
    ax.plot(t, np.degrees([f.bearing[1] for f in frames]), ".", ms=2, label="tracker bearing_y")
    ax.set_ylabel("degrees")
    ax.legend(loc="upper right", fontsize=7, ncol=2)
    ax.set_title(f"follow loop at {result.rate_hz:g} Hz (grey: the roof hides the car; orange: look-alike crossing; "
                 f"magenta: target set again)", fontsize=9)
    ax = axes[1]
    ax.step(t, [f.state for f in frames], where="post", label="tracker state")
    ax.plot(t, [f.confidence for f in frames], label="confidence")
    ax.axhline(result.min_confidence, color="r", lw=0.8, ls="--", label="follower min_confidence")
    ax.set_yticks([0, 1, 2, 3], ["IDLE", "TRACKING", "LOW_CONF", "LOST"])
    ax.legend(loc="upper right", fontsize=7)
    ax = axes[2]
    ax.plot(t, [f.command["yaw_rate"] for f in frames], label="yaw rate (rad/s)")
    ax.plot(t, [f.command["vertical_speed"] for f in frames], label="vertical speed (m/s)")
    ax.plot(t, [f.command["forward_speed"] for f in frames], label="forward speed (m/s)")
    if any(f.command["gimbal_pitch_rate"] for f in frames):
        ax.plot(t, [f.command["gimbal_pitch_rate"] for f in frames], label="gimbal pitch rate (rad/s)")
    ax.set_ylabel("command")
    ax.legend(loc="upper right", fontsize=7)
    ax = axes[3]
    ax.plot(t, [f.centre_error for f in frames], label="centre error (1 = image edge)")
    ax.plot(t, [iou_xywh(f.box, f.truth_box) for f in frames], label="tracker IoU with the true box", alpha=0.7)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("simulated time (s)")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def contact_sheet(loop_scene: Scene, result: LoopResult, path: Path, tiles: int = 12, columns: int = 4,
                  tile_width: int = 320) -> Path:
    """Frames re-rendered from the recorded poses: the tracker's box by state, the true box in white."""
    scenario = Scenario.default(loop_scene)
    renderer = Renderer(loop_scene, scenario)
    idx = np.unique(np.linspace(0, len(result.frames) - 1, min(tiles, len(result.frames))).round().astype(int))
    cells = []
    for i in idx:
        f = result.frames[int(i)]
        state = VehicleState(**f.vehicle)
        img = renderer.render(state, f.t)
        scale = tile_width / img.shape[1]
        img = cv2.resize(img, (tile_width, int(round(img.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        g = np.array(f.truth_box) * scale
        if np.all(np.isfinite(g)):
            cv2.rectangle(img, (int(g[0]), int(g[1])), (int(g[0] + g[2]), int(g[1] + g[3])), (255, 255, 255), 1)
        colour = STATE_COLOURS.get(f.state, (255, 255, 255))
        if f.state != 0:
            b = np.array(f.box) * scale
            cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[0] + b[2]), int(b[1] + b[3])), colour, 2)
        label = f"t={f.t:.1f}s {STATE_NAMES[f.state]} {f.confidence:.2f}" + (" zero cmd" if f.command_is_zero else "")
        cv2.rectangle(img, (0, 0), (tile_width, 20), (0, 0, 0), -1)
        cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1, cv2.LINE_AA)
        cells.append(img)
    while len(cells) % columns:
        cells.append(np.zeros_like(cells[0]))
    sheet = np.vstack([np.hstack(cells[r: r + columns]) for r in range(0, len(cells), columns)])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"cannot write {path}")
    return path


def format_stats(s: dict) -> str:
    return (f"  {s['rate_hz']:g} Hz: {s['frames']} frames, {s['duration_s']:.1f} s simulated in {s['wall_s']:.0f} s; "
            f"centre error median {s['centre_error_median']:.3f} / p95 {s['centre_error_p95']:.3f} / max "
            f"{s['centre_error_max']:.3f} of the half image; in view {100 * s['time_in_view']:.1f} %; bearing error "
            f"median {s['bearing_error_deg_median']:.1f} / p95 {s['bearing_error_deg_p95']:.1f} deg\n"
            f"       tracker IoU (target visible) {s['tracker_iou_visible_mean']:.2f}; LOST {s['frames_lost']} frames "
            f"({s['lost_while_hidden']} under the roof); zero commands {s['zero_commands']}; unsafe commands "
            f"{s['unsafe_commands']}\n"
            f"       after the roof (clear at {s['hidden_s'][1]:.1f} s): the tracker re-acquired by itself "
            f"{_after(s['reacquired_by_tracker_after_s'])}; re-designated at "
            f"{', '.join(f'{t:.1f} s' for t in s['redesignated_at_s']) or 'no time'}; following again "
            f"{_after(s['following_again_after_s'])}")


def _after(seconds: float) -> str:
    return f"{seconds:.1f} s later" if math.isfinite(seconds) else "never"


def run_rate(scene: Scene, rate: float, out: Path, tracker_params: dict, follower_params: dict,
             redesignate_after_s: Optional[float] = 1.0, verbose: bool = True) -> tuple[LoopResult, dict]:
    loop = FollowLoop(scene, rate, out, tracker_params, follower_params, redesignate_after_s)

    def progress(k: int, n: int, rec: FrameRecord) -> None:
        if verbose and (k % max(int(rate), 1) == 0 or k == n - 1):
            c = rec.command
            print(f"  t={rec.t:5.1f}s  {STATE_NAMES[rec.state]:<14s} conf {rec.confidence:.2f}  centre error "
                  f"{rec.centre_error:.2f}  cmd fwd {c['forward_speed']:+.2f} up {c['vertical_speed']:+.2f} "
                  f"yaw {c['yaw_rate']:+.2f}", flush=True)

    try:
        result = loop.run(progress)
    finally:
        codes = loop.close()
    if codes != (0, 0):
        raise FollowLoopError(f"exit codes tracker {codes[0]}, follower {codes[1]} (logs in {out})")
    return result, result.stats()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cract_ros.follow.demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rates", default="10,30", help="simulated camera rates in Hz, comma separated")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    p.add_argument("--data", type=Path, default=SHARED_SEQUENCES, help="the real sequences the scene is cut from")
    p.add_argument("--redesignate-after", default="1.0", metavar="SECONDS|none",
                   help="when the tracker has been LOST this long and the car is in plain view again, the "
                        "operator sets the target again (~/set_target, the true box); none: never")
    p.add_argument("--tracker-param", action="append", default=[], metavar="NAME=VALUE",
                   help="a tracker node parameter (repeatable), e.g. num_threads=2")
    p.add_argument("--follower-param", action="append", default=[], metavar="NAME=VALUE",
                   help="a follower node parameter (repeatable), e.g. yaw.kp=1.0")
    return p


def _parse_params(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        out[name] = yaml.safe_load(value)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    from cract_ros.follow.sim import SceneError

    args = build_parser().parse_args(argv)
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
        redesignate = None if args.redesignate_after.lower() == "none" else float(args.redesignate_after)
        tracker_params = _parse_params(args.tracker_param)
        follower_params = _parse_params(args.follower_param)
        scene = load_scene(args.data)
    except (ValueError, SceneError) as exc:
        print(f"follow demo: error: {exc}", file=sys.stderr)
        return 2
    summary = {}
    for rate in rates:
        print(f"follow demo: {rate:g} Hz lock-step run (tracker + follower as processes; output {args.out})", flush=True)
        try:
            result, stats = run_rate(scene, rate, args.out, tracker_params, follower_params, redesignate)
        except FollowLoopError as exc:
            print(f"follow demo: error: {exc}", file=sys.stderr)
            return 1
        name = f"follow_{rate:g}hz"
        (args.out / f"{name}.json").write_text(json.dumps(
            {"stats": stats, "desired_size": result.desired_size, "events": result.scenario_events,
             "frames": [asdict(f) for f in result.frames]}, indent=1, default=float))
        plot(result, args.out / f"{name}.png")
        contact_sheet(scene, result, args.out / f"{name}_sheet.png")
        summary[name] = stats
        print(format_stats(stats), flush=True)
    (args.out / "follow_summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print("summary:")
    for stats in summary.values():
        print(format_stats(stats))
    print(f"  plots, contact sheets and per-frame records: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
