"""The tracker node as a real process over real DDS (loopback, shared memory), fed real frames.

Each node starts exactly as launch/cract.launch.py starts it:
`python -m cract_ros.node --ros-args --params-file config/cract.yaml -p ...` (cract_ros.process).
The test side (test/node_harness.py) is an rclpy node in this process: a camera publishing
otb_bird2 frames as sensor_msgs/Image (and CameraInfo), a client of ~/set_target and
~/clear_target, and subscribers of ~/tracked_object, ~/debug_image and /diagnostics. Waits are
bounded (a failure, never a timing threshold on performance). The lifecycle transitions have
their own tests (test_ros_lifecycle.py); these nodes walk to active by themselves (autostart).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time as TimeMsg  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from cract.msg import TrackedObject  # noqa: E402
from cract_ros.conversions import bgr_to_image  # noqa: E402
from cract_ros.node import PARAMETERS, build_tracker  # noqa: E402
from cract_ros.bags.sequence import read_frames, read_groundtruth  # noqa: E402
from node_harness import REPLY_TIMEOUT, key, node_factory, stamp_msg  # noqa: E402,F401 (node_factory: a fixture)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SEQUENCE = "otb_bird2"
N_FRAMES = 30


@pytest.fixture
def bird(shared_sequence) -> dict:
    seq = shared_sequence(SEQUENCE)
    frames = list(read_frames(seq, N_FRAMES))
    gt = read_groundtruth(seq)
    return {"frames": frames, "msgs": [bgr_to_image(f) for f in frames], "gt": gt}


# ------------------------------------------------------------------------------------------


def shared_heads_checkpoint(tmp_path: Path) -> str:
    """The trained heads the default config names when they exist; else one set of untrained
    heads written to a file, so that the node process and the offline tracker use the same."""
    from cract_core.config import default_config_path, load_config
    from cract_core.tracker import resolve_checkpoint, untrained_stages

    cfg = load_config(default_config_path())
    shipped = resolve_checkpoint(cfg, None)
    if shipped is not None and shipped.is_file():
        return ""
    if not untrained_stages(cfg):
        return ""  # the default runs no trained head of ours (NanoTrack's weights ship in models/)
    import torch
    from cract_core.checkpoint import save_checkpoint
    from cract_core.model import CRACTNet

    torch.manual_seed(0)
    path = tmp_path / "heads.pt"
    save_checkpoint(path, CRACTNet(cfg), cfg, step=0)
    return str(path)


def test_lockstep_boxes_match_the_offline_tracker(node_factory, bird, tmp_path) -> None:
    """30 real frames through the node in lockstep: right stamps, boxes within 1 px of Tracker offline."""
    checkpoint = shared_heads_checkpoint(tmp_path)
    settings = {k: s.default for k, s in PARAMETERS.items()}
    settings.update(tracker_mode="sync", num_threads=1, checkpoint=checkpoint)
    nut = node_factory("lockstep", lockstep=True, tracker_mode="sync", num_threads=1, checkpoint=checkpoint)
    msgs, gt = bird["msgs"], bird["gt"]

    idle = nut.publish_and_wait(msgs[0], 0)
    assert idle.state == TrackedObject.IDLE and idle.header.frame_id == "camera"
    resp = nut.call_set_target(gt[0], stamp_msg(0))
    assert resp.success, resp.message
    init = nut.spin_until(lambda: [r for r in nut.results_for(stamp_msg(0)) if r.state != TrackedObject.IDLE], 30.0,
                          "the TrackedObject of the init frame")[-1]
    np.testing.assert_allclose([init.x, init.y, init.width, init.height], gt[0], atol=1e-3)
    online = [init]
    for i in range(1, N_FRAMES):
        online.append(nut.publish_and_wait(msgs[i], i))

    import torch
    threads = torch.get_num_threads()
    tracker = build_tracker(settings)
    try:
        offline = [tracker.init(bird["frames"][0], gt[0])]
        offline += [tracker.track(f) for f in bird["frames"][1:]]
    finally:
        tracker.close()
        torch.set_num_threads(threads)

    h, w = bird["frames"][0].shape[:2]
    for i, (on, off) in enumerate(zip(online, offline)):
        assert key(on.header.stamp) == key(stamp_msg(i))
        assert on.header.frame_id == "camera"
        np.testing.assert_allclose([on.x, on.y, on.width, on.height], off.box, atol=1.0,
                                   err_msg=f"frame {i}: node vs offline tracker")
        assert on.state == int(off.state) and on.frame_index == off.frame_index == i
        assert 0.0 <= on.confidence <= 1.0
        assert math.isclose(on.confidence, min(max(off.confidence, 0.0), 1.0), abs_tol=1e-4)
        cx, cy = on.x + on.width / 2, on.y + on.height / 2
        assert math.isclose(on.offset_x, (cx - w / 2) / (w / 2), abs_tol=1e-4)
        assert math.isclose(on.offset_y, (cy - h / 2) / (h / 2), abs_tol=1e-4)
        assert math.isclose(on.relative_size, on.width * on.height / (w * h), rel_tol=1e-4)
    # the diagnostics saw every frame, none dropped (lockstep)
    _, values = nut.latest_diag(lambda v: int(v["processed"]) >= N_FRAMES + 1, "diagnostics of all frames")
    assert values["dropped"] == "0" and values["bad_images"] == "0"


def test_set_target_errors_answer_false_and_the_node_stays_up(node_factory, bird) -> None:
    nut = node_factory("services", warmup=False, frame_buffer_size=3)
    msgs, gt = bird["msgs"], bird["gt"]

    resp = nut.call_set_target(gt[0])
    assert not resp.success and "no image received yet" in resp.message

    for i in range(5):  # newest-frame mode: wait for each so that all five enter the history
        nut.publish_and_wait(msgs[i], i)
    cases = {
        "wholly outside": ([5000.0, 5000.0, 50.0, 50.0], None, "wholly outside"),
        "zero size": ([100.0, 100.0, 0.0, 40.0], None, "under 2 px"),
        "NaN": ([float("nan"), 100.0, 40.0, 40.0], None, "NaN"),
        "never seen stamp": (gt[0], TimeMsg(sec=7, nanosec=5), "no buffered frame with stamp 7.000000005"),
        "no longer buffered": (gt[0], stamp_msg(0), "no buffered frame with stamp"),
    }
    for name, (box, stamp, needle) in cases.items():
        resp = nut.call_set_target(box, stamp)
        assert not resp.success, name
        assert needle in resp.message, f"{name}: {resp.message!r}"
        assert nut.proc.poll() is None
    # the last three frames are kept: frame 2 still is, and a partly outside box is clipped
    resp = nut.call_set_target([-20.0, 200.0, 80.0, 60.0], stamp_msg(2))
    assert resp.success and "clipped" in resp.message, resp.message
    resp = nut.call_set_target(gt[4], stamp_msg(4))
    assert resp.success, resp.message
    tracked = nut.publish_and_wait(msgs[5], 5)
    assert tracked.state != TrackedObject.IDLE and tracked.frame_index == 1

    cleared = nut.call(nut.clear_target, Trigger.Request(), "~/clear_target")
    assert cleared.success and cleared.message == "target cleared"
    assert nut.publish_and_wait(msgs[6], 6).state == TrackedObject.IDLE


def test_bad_images_parameters_debug_image_watchdog_and_sim_time(node_factory, bird) -> None:
    nut = node_factory("misc", warmup=False, lockstep=True, diagnostics_period_s=0.2, watchdog_timeout_s=1.0,
                       use_sim_time=True)
    msgs, gt, frame = bird["msgs"], bird["gt"], bird["frames"][0]

    # /clock drives the node's clock (its timers and stamps): a simulated clock from 4242 s on
    clock_pub = nut.node.create_publisher(Clock, "/clock", 10)
    t_start = time.monotonic()

    def tick() -> None:
        ns = 4242 * 1_000_000_000 + int((time.monotonic() - t_start) * 1e9)
        clock_pub.publish(Clock(clock=TimeMsg(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)))
    nut.node.create_timer(0.02, tick)
    nut.spin_until(lambda: clock_pub.get_subscription_count() > 0, 30.0, "the node's /clock subscription")

    # bad images: unknown encoding, step mismatch, size mismatch, empty data
    bad = []
    m = bgr_to_image(frame)
    m.encoding = "yuv422"
    bad.append(m)
    m = bgr_to_image(frame)
    m.step = m.step - 3
    bad.append(m)
    m = bgr_to_image(frame)
    m.data = bytes(len(m.data) - 10)
    bad.append(m)
    m = bgr_to_image(frame)
    m.data = b""
    bad.append(m)
    for j, m in enumerate(bad):
        nut.publish(m, 100 + j)
        nut.executor.spin_once(timeout_sec=0.05)
    ok = nut.publish_and_wait(msgs[0], 0)  # lockstep: processed after the four bad ones
    assert ok.state == TrackedObject.IDLE
    _, values = nut.latest_diag(lambda v: int(v["processed"]) >= 1 and int(v["bad_images"]) >= 4, "bad_images = 4")
    assert values["bad_images"] == "4" and values["errors"] == "0"
    assert "unsupported image encoding 'yuv422'" in nut.log_text()
    assert nut.proc.poll() is None

    # parameters: bad values are refused with the reason; runtime ones apply at once
    for name, value, needle in [("alpha", 1.5, "alpha must be <= 1.0"), ("update_interval", 0, "update_interval must be >= 1"),
                                ("lost_confidence", 0.9, "lost_confidence (0.9) must be <= low_confidence"),
                                ("device", "tpu", "read-only"), ("alpha", "high", "")]:
        res = nut.set_param(name, value)
        assert not res.successful, (name, value)
        assert needle.lower() in res.reason.lower(), (name, res.reason)
    res = nut.set_param("beta", 0.7)
    assert res.successful, res.reason
    res = nut.call(nut.get_params, GetParameters.Request(names=["beta", "alpha"]), "get beta")
    assert [v.double_value for v in res.values] == [0.7, -1.0]  # alpha left to the model config
    # the values left at -1 came from the default model config (config/model/cract_nanotrack.yaml),
    # and the cross-parameter rule judges a threshold against them
    assert ("from the model config: {'alpha': 0.4, 'beta': 0.8, 'low_confidence': 0.5, 'lost_confidence': 0.5, "
            "'update_interval': 10}") in nut.log_text()
    res = nut.set_param("lost_confidence", 0.6)
    assert not res.successful and "lost_confidence (0.6) must be <= low_confidence (0.5)" in res.reason, res.reason

    # debug image, only while subscribed: the frame with the box drawn, same stamp and size
    nut.node.create_subscription(Image, f"{nut.fqn}/debug_image", nut.debug_images.append, qos_profile_sensor_data)
    nut.spin_until(lambda: nut.node.count_publishers(f"{nut.fqn}/debug_image") > 0, 30.0, "debug_image publisher")
    resp = nut.call_set_target(gt[0], stamp_msg(0))
    assert resp.success, resp.message
    nut.spin_until(lambda: nut.debug_images, REPLY_TIMEOUT, "a debug image")
    dbg = nut.debug_images[-1]
    assert (dbg.height, dbg.width, dbg.encoding) == (frame.shape[0], frame.shape[1], "bgr8")
    assert key(dbg.header.stamp) == key(stamp_msg(0))
    tracked = nut.publish_and_wait(msgs[1], 1)
    assert tracked.state != TrackedObject.IDLE

    # watchdog: no image for 1 s while tracking -> LOST and a diagnostic warning
    lost = nut.spin_until(lambda: [r for r in nut.results if r.state == TrackedObject.LOST and
                                   key(r.header.stamp) != key(stamp_msg(1))], 30.0, "a watchdog LOST")
    assert lost
    status, values = nut.latest_diag(lambda v: v["state"] == "LOST", "a LOST diagnostic")
    assert status.level == DiagnosticStatus.WARN and "no image" in status.message
    assert "watchdog" in nut.log_text()
    # use_sim_time: the watchdog's message is stamped with /clock's time, not the wall clock's
    assert 4242 <= lost[-1].header.stamp.sec < 4242 + 3600
    # images again: the frame is tracked and the warning clears
    resumed = nut.publish_and_wait(msgs[2], 2)
    assert resumed.frame_index == 2
    status, values = nut.latest_diag(lambda v: int(v["processed"]) >= 4 and v["seconds_since_image"] != "never"
                                     and float(v["seconds_since_image"]) < 1.0, "diagnostics after resuming")
    assert status.level == DiagnosticStatus.OK and values["dropped"] == "0"


def test_updates_held_off_the_frame_path(node_factory, bird, tmp_path) -> None:
    """Hold the update solver: frames keep being tracked; release it: the new weights are used.

    Thresholds at 0 keep the state TRACKING and a model config with reliable_score 0 keeps every
    frame's samples, whatever the heads score (untrained heads included); with K=2, discriminator
    updates are requested within the first frames.
    """
    import yaml
    from cract_core.config import default_config_path

    data = yaml.safe_load(default_config_path().read_text()) or {}
    data.setdefault("online", {})["reliable_score"] = 0.0
    data.setdefault("crac", {})["classifier"] = "discriminator"  # D on: the default leaves it out
    model_config = tmp_path / "model_all_reliable.yaml"
    model_config.write_text(yaml.safe_dump(data))
    nut = node_factory("hold", warmup=False, lockstep=True, tracker_mode="async", diagnostics_period_s=0.1,
                       test_hold_updates=True, low_confidence=0.0, lost_confidence=0.0, update_interval=2,
                       model_config=str(model_config))
    msgs, gt = bird["msgs"], bird["gt"]
    nut.publish_and_wait(msgs[0], 0)
    resp = nut.call_set_target(gt[0], stamp_msg(0))
    assert resp.success, resp.message
    _, values = nut.latest_diag(lambda v: int(v["processed"]) >= 2, "diagnostics after init")
    v0 = int(values["weights_version"])

    # held: every frame comes back, and no frame uses new weights, while updates are requested
    index = 0
    held_updates = 0
    while index < N_FRAMES - 1 and held_updates == 0 or index < 12:
        index += 1
        res = nut.publish_and_wait(msgs[index % N_FRAMES], index)
        assert res.frame_index == index
        _, values = nut.latest_diag(lambda v, n=index: int(v["processed"]) >= n + 2, f"diagnostics of frame {index}")
        assert int(values["weights_version"]) == v0, f"new weights at frame {index} while the solver is held"
        held_updates = int(values["update_frames"])
    assert held_updates >= 1, "no update was requested in the held stretch"

    # released: the waiting solve runs and a later frame uses the new snapshot
    assert nut.set_param("test_hold_updates", False).successful
    for extra in range(1, 200):
        index += 1
        nut.publish_and_wait(msgs[index % N_FRAMES], index)
        _, values = nut.latest_diag(lambda v, n=index: int(v["processed"]) >= n + 2, f"diagnostics of frame {index}")
        if int(values["weights_version"]) > v0:
            break
    assert int(values["weights_version"]) > v0, "the released update never reached a frame"


def camera_info(width: int, height: int, k: list, model: str, d: list, stamp: TimeMsg) -> "CameraInfo":
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(width=width, height=height, distortion_model=model, d=[float(v) for v in d],
                      k=[float(v) for v in k], r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0])
    info.header.stamp = stamp
    info.header.frame_id = "camera"
    return info


def opencv_bearing(msg: TrackedObject, k: list, model: str, d: list) -> tuple[float, float]:
    """The bearing of the box centre by OpenCV's own undistortion (run to convergence): an
    implementation independent of cract_core.camera."""
    import cv2

    centre = np.array([[[msg.x + msg.width / 2 - 0.5, msg.y + msg.height / 2 - 0.5]]], dtype=np.float64)
    kk, dd = np.array(k, dtype=np.float64).reshape(3, 3), np.array(d, dtype=np.float64)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)
    if model == "equidistant":
        x, y = cv2.fisheye.undistortPoints(centre, kk, dd, criteria=criteria).reshape(2)
    else:
        x, y = cv2.undistortPoints(centre, kk, dd, criteria=criteria).reshape(2)
    return math.atan2(x, 1.0), math.atan2(y, math.hypot(x, 1.0))


def test_bearings_from_camera_info_and_bad_calibrations_refused(node_factory, bird) -> None:
    """TrackedObject.bearing_x/y over DDS: NaN without CameraInfo, OpenCV's angles (1e-4 rad) with a
    distorted pinhole or fisheye calibration, NaN and a counted refusal for calibrations that
    cannot be used (the node keeps tracking), and back once a good one comes."""
    nut = node_factory("bearings", warmup=False, lockstep=True, num_threads=1, diagnostics_period_s=0.2)
    msgs, gt = bird["msgs"], bird["gt"]
    h, w = bird["frames"][0].shape[:2]
    k = [600.0, 0.0, w / 2 - 0.5, 0.0, 590.0, h / 2 - 0.5, 0.0, 0.0, 1.0]
    plumb_bob = [-0.25, 0.08, 0.001, -0.0007, -0.01]
    fisheye = [0.05, -0.01, 0.002, -0.0003]

    nut.publish_and_wait(msgs[0], 0)
    assert nut.call_set_target(gt[0], stamp_msg(0)).success
    init = nut.spin_until(lambda: [r for r in nut.results_for(stamp_msg(0)) if r.state != TrackedObject.IDLE],
                          REPLY_TIMEOUT, "the init frame's TrackedObject")[-1]
    assert math.isnan(init.bearing_x) and math.isnan(init.bearing_y), "no CameraInfo yet: bearings must be NaN"

    def send_info(info, index: int, diag: Callable[[dict], bool], what: str) -> None:
        nut.camera_info.publish(info)
        nut.latest_diag(diag, what)

    index = 0
    refused = 0
    for model, d in [("plumb_bob", plumb_bob), ("equidistant", fisheye)]:
        send_info(camera_info(w, h, k, model, d, stamp_msg(index + 1)), index + 1,
                  lambda v, m=model: v["camera_info"] == f"{w}x{h} {m}", f"the {model} calibration")
        for _ in range(3):
            index += 1
            res = nut.publish_and_wait(msgs[index], index)
            assert res.state != TrackedObject.IDLE
            expected = opencv_bearing(res, k, model, d)
            assert abs(res.bearing_x - expected[0]) < 1e-4 and abs(res.bearing_y - expected[1]) < 1e-4, (
                model, (res.bearing_x, res.bearing_y), expected)
            # the distortion matters here: the undistorted angle differs from the pinhole one
            pinhole_x = math.atan((res.x + res.width / 2 - 0.5 - k[2]) / k[0])
            assert abs(pinhole_x - expected[0]) > 1e-4 or abs(expected[0]) < 0.05

    bad = [
        ("zero focal length", camera_info(w, h, [0.0] * 9, "plumb_bob", plumb_bob, stamp_msg(0)),
         "focal length fx=0, fy=0 must be > 0"),
        ("unknown model", camera_info(w, h, k, "kannala_brandt", fisheye, stamp_msg(0)),
         "unknown distortion model 'kannala_brandt'"),
        ("wrong D length", camera_info(w, h, k, "plumb_bob", plumb_bob[:4], stamp_msg(0)),
         "plumb_bob needs 5 coefficients in D, got 4"),
    ]
    for name, info, needle in bad:
        refused += 1
        info.header.stamp = stamp_msg(index + 1)
        send_info(info, index + 1, lambda v, n=refused: v["bad_camera_info"] == str(n), f"refusal of {name}")
        index += 1
        res = nut.publish_and_wait(msgs[index], index)
        assert res.state != TrackedObject.IDLE, name  # still tracking
        assert math.isnan(res.bearing_x) and math.isnan(res.bearing_y), name
        assert needle in nut.log_text(), f"{name}: the log should say {needle!r}"
    # a calibration for another image size: NaN for this image, counted per frame
    send_info(camera_info(640, 480, k, "plumb_bob", plumb_bob, stamp_msg(index + 1)), index + 1,
              lambda v: v["camera_info"] == "640x480 plumb_bob", "the 640x480 calibration")
    index += 1
    res = nut.publish_and_wait(msgs[index], index)
    assert math.isnan(res.bearing_x), "a calibration of another image size must not give bearings"
    # and a good one again: bearings are back, nothing else was lost
    send_info(camera_info(w, h, k, "plumb_bob", plumb_bob, stamp_msg(index + 1)), index + 1,
              lambda v: v["camera_info"] == f"{w}x{h} plumb_bob", "the good calibration again")
    index += 1
    res = nut.publish_and_wait(msgs[index], index)
    expected = opencv_bearing(res, k, "plumb_bob", plumb_bob)
    assert abs(res.bearing_x - expected[0]) < 1e-4 and abs(res.bearing_y - expected[1]) < 1e-4
    _, values = nut.latest_diag(lambda v, n=index: int(v["processed"]) >= n + 2, "the final diagnostics")
    assert values["bad_camera_info"] == str(len(bad)) and values["errors"] == "0"
    assert int(values["frames_without_bearing"]) == len(bad) + 2  # the three refusals, the size mismatch, the init
    assert nut.proc.poll() is None


def test_tracker_parameters_left_to_the_model_config(repo_root) -> None:
    """-1 keeps a model config's own alpha, beta, thresholds and K; a number is written over them
    (the cascade's score confidence has thresholds 0.45 / 0.2, the default's memory 0.5 / 0.5)."""
    settings = {name: p.default for name, p in PARAMETERS.items()}
    settings.update(device="cpu", tracker_mode="sync", num_threads=1, warmup=False,
                    model_config=str(repo_root / "config" / "model" / "cract_nanotrack_cascade.yaml"))
    tracker = build_tracker(settings)
    try:
        assert (tracker.cfg.tracker.low_confidence, tracker.cfg.tracker.lost_confidence) == (0.45, 0.2)
        assert (tracker.cfg.crac.alpha, tracker.cfg.crac.beta, tracker.cfg.online.update_interval) == (0.4, 0.8, 10)
    finally:
        tracker.close()
    settings.update(low_confidence=0.3, lost_confidence=0.1, update_interval=5, model_config="")
    tracker = build_tracker(settings)
    try:
        assert (tracker.cfg.tracker.low_confidence, tracker.cfg.tracker.lost_confidence) == (0.3, 0.1)
        assert tracker.cfg.online.update_interval == 5 and tracker.cfg.crac.beta == 0.8
    finally:
        tracker.close()
    # a threshold set against one left to the model is judged when the model is loaded
    from cract_core.config import ConfigError
    with pytest.raises(ConfigError, match="lost_confidence <= low_confidence"):
        build_tracker(dict(settings, low_confidence=-1.0, lost_confidence=0.6))
    # the cross-parameter rule resolves -1 against the model's values
    from cract_ros.node import check_parameters
    values = {name: p.default for name, p in PARAMETERS.items()}
    assert check_parameters(dict(values, lost_confidence=0.6), {"alpha": 0.4, "beta": 0.8, "low_confidence": 0.5,
                                                                "lost_confidence": 0.5, "update_interval": 10}) == [
        "lost_confidence (0.6) must be <= low_confidence (0.5)"]
    assert check_parameters(dict(values, lost_confidence=0.6)) == []  # no model yet: judged at configure
    # what a `ros2 param set` hands the running tracker: -1 becomes the model's value again
    from cract_ros.node.settings import resolve_tracker_values
    model = {"alpha": 0.4, "beta": 0.8, "low_confidence": 0.45, "lost_confidence": 0.2, "update_interval": 10}
    assert resolve_tracker_values({"low_confidence": -1.0, "beta": 0.7, "lockstep": True}, model) == {
        "low_confidence": 0.45, "beta": 0.7}
    assert resolve_tracker_values({"low_confidence": -1.0, "beta": 0.7}, None) == {"beta": 0.7}
