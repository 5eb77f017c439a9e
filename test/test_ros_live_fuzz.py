"""Live fuzz: thousands of bad messages of each kind at a running node over DDS, with good frames
between them. The node keeps answering, its /diagnostics count what it refused (bad_images,
bad_camera_info, refused_targets, refused_parameters: each bad message that reached it, nothing
else), no error is counted, and the good frames around the bad ones are tracked (frame_index goes
up by one per good frame). Bad inputs are drawn from a seeded generator (the same every run);
the test prints how many of each kind it sent and the node counted.

Kinds: sensor_msgs/Image with broken layouts (encodings, steps, sizes, truncated or empty data)
and odd but valid sizes; sensor_msgs/CameraInfo that cannot be used; ~/set_target with random
floats, infinities, huge values and stamps in the past, the future or never seen; ~/target
(TrackedObject) likewise; parameter sets of wrong types and out of range; and, after a lifecycle
reconfiguration to image_transport compressed, CompressedImage with corrupt, truncated or empty
bytes.
"""
from __future__ import annotations

import math
import re
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time as TimeMsg  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from cract.msg import TrackedObject  # noqa: E402
from cract_ros.conversions import bgr_to_compressed, bgr_to_image  # noqa: E402
from cract_ros.bags.sequence import read_frames, read_groundtruth  # noqa: E402
from node_harness import REPLY_TIMEOUT, key, node_factory, stamp_msg  # noqa: E402,F401 (node_factory: a fixture)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

BAD_IMAGES = 2000
BAD_CAMERA_INFOS = 2000
BAD_SET_TARGETS = 2000
BAD_TARGET_MSGS = 2000
BAD_PARAMETERS = 2000
BAD_COMPRESSED = 2000
BATCH = 200  # bad messages between two good frames


def bad_image(rng: np.random.Generator) -> Image:
    h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    msg = Image(height=h, width=w, encoding="bgr8", step=3 * w)
    data = rng.integers(0, 255, 3 * w * h, dtype=np.uint8).tobytes()
    kind = int(rng.integers(0, 6))
    if kind == 0:
        msg.encoding = str(rng.choice(["yuv422", "32FC1", "", "bayer_rggb8", "16UC3"]))
    elif kind == 1:
        msg.step = int(rng.integers(0, 3 * w))  # shorter than a row
    elif kind == 2:
        data = data[: int(rng.integers(0, len(data)))]  # truncated
    elif kind == 3:
        data = data + bytes(int(rng.integers(1, 50)))  # longer than step * height
    elif kind == 4:
        data = b""
    else:
        msg.height, msg.width = 0, int(rng.integers(0, 3)) * w  # empty size, data present
    msg.data = data
    return msg


def odd_valid_image(rng: np.random.Generator) -> Image:
    h, w = [(1, 1), (2, 2), (1, 500), (500, 1), (3, 700), (5, 5)][int(rng.integers(0, 6))]
    return bgr_to_image(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def bad_camera_info(rng: np.random.Generator, width: int, height: int) -> CameraInfo:
    k = [600.0, 0.0, width / 2, 0.0, 600.0, height / 2, 0.0, 0.0, 1.0]
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5, k=k)
    kind = int(rng.integers(0, 5))
    if kind == 0:
        info.k = [0.0] * 9
    elif kind == 1:
        info.distortion_model = str(rng.choice(["kannala_brandt", "", "fov"]))
    elif kind == 2:
        info.d = [float(v) for v in rng.normal(size=int(rng.choice([1, 3, 4, 6, 9])))]
    elif kind == 3:
        info.width = info.height = 0
    else:
        info.k = [float("nan")] * 9
    return info


def random_float(rng: np.random.Generator) -> float:
    kind = int(rng.integers(0, 5))
    if kind == 0:
        return float(rng.choice([math.inf, -math.inf, math.nan, 1e308, -1e308, 0.0, -0.0, 5e-324]))
    if kind == 1:
        return float(rng.normal() * 10.0 ** int(rng.integers(0, 300)))
    return float(rng.uniform(-2000, 2000))


def random_stamp(rng: np.random.Generator) -> TimeMsg:
    """Past, future or never seen; never zero (the newest frame) and never a published one."""
    return TimeMsg(sec=int(rng.choice([1, 999, 1001, 5000, 2**31 - 1])), nanosec=int(rng.integers(1, 999_999_999)))


def wrong_parameter(rng: np.random.Generator, specs: dict) -> Parameter:
    name = str(rng.choice(sorted(specs)))
    default = specs[name].default
    kind = int(rng.integers(0, 3))
    if kind == 0 or not isinstance(default, (int, float)) or isinstance(default, bool):  # wrong type
        wrong = [[1, 2], "text", [0.5], b"x", True, 3.5, 7]
        value = next(v for v in (wrong[int(i)] for i in rng.permutation(len(wrong))) if type(v) is not type(default)
                     and not (isinstance(default, float) and type(v) is int))
        return Parameter(name, value=value) if not isinstance(value, bytes) else Parameter(name, value=[value])
    spec = specs[name]
    if spec.minimum is not None and kind == 1:
        below = spec.minimum - (1 if isinstance(default, int) else 0.5)
        return Parameter(name, value=type(default)(below))
    if isinstance(default, float):
        return Parameter(name, value=float(rng.choice([math.nan, math.inf, -math.inf])))
    return Parameter(name, value=-(2**62))


@pytest.fixture
def bird(shared_sequence) -> dict:
    seq = shared_sequence("otb_bird2")
    frames = list(read_frames(seq, 40))
    return {"frames": frames, "msgs": [bgr_to_image(f) for f in frames], "gt": read_groundtruth(seq)}


def test_live_fuzz(node_factory, bird) -> None:
    from cract_ros.node import PARAMETERS

    rng = np.random.default_rng(13)
    nut = node_factory("fuzz", lockstep=True, diagnostics_period_s=0.2, watchdog_timeout_s=60.0, warmup=False,
                       num_threads=1)
    msgs, gt, frames = bird["msgs"], bird["gt"], bird["frames"]
    h, w = frames[0].shape[:2]
    good = [0]  # good frames published (index into the sequence, also the stamp index)
    report: dict[str, str] = {}

    def counts() -> dict:
        return nut.latest_diag(lambda v: True, "diagnostics")[1]

    def settled(predicate, what: str) -> dict:
        nut.diagnostics.clear()
        return nut.latest_diag(predicate, what)[1]

    def accounted(inits: int, what: str) -> dict:
        """Lockstep: every frame received is processed or counted bad (processed also counts the
        answer of each initialisation)."""
        return settled(lambda v: int(v["bad_images"]) + int(v["processed"]) - inits == int(v["received"])
                       and v["dropped"] == "0", f"every received frame accounted for ({what})")

    def pace(n: int) -> None:
        """A camera-like burst, not a flood: best effort drops what the reader's queue cannot hold."""
        if n % 25 == 24:
            time.sleep(0.01)

    def good_frame() -> TrackedObject:
        i = good[0] = good[0] + 1
        return nut.publish_and_wait(msgs[i % len(msgs)], i)

    nut.publish_until_answered(msgs[0], 0)  # (a first best-effort frame can be lost while transports open)
    assert nut.call_set_target(gt[0], stamp_msg(0)).success
    assert good_frame().frame_index == 1

    # ---- raw images: broken layouts (refused, counted) and odd valid sizes (tracked)
    sent_bad = sent_odd = 0
    start = counts()
    for batch in range(BAD_IMAGES // BATCH):
        for n in range(BATCH):
            nut.camera.publish(bad_image(rng))
            sent_bad += 1
            pace(n)
        for _ in range(2):
            nut.camera.publish(odd_valid_image(rng))
            sent_odd += 1
        res = good_frame()
        assert res.state != TrackedObject.IDLE, f"frame {good[0]} after bad batch {batch}"
    values = accounted(1, "raw images")
    received = int(values["received"]) - int(start["received"])
    bad = int(values["bad_images"]) - int(start["bad_images"])
    assert 0 < bad <= sent_bad, values
    report["Image"] = f"{sent_bad} broken + {sent_odd} odd sizes sent, {received} received, {bad} refused as bad images"

    # ---- CameraInfo that cannot be used
    start = counts()
    for batch in range(BAD_CAMERA_INFOS // BATCH):
        for n in range(BATCH):
            nut.camera_info.publish(bad_camera_info(rng, w, h))
            pace(n)
        assert good_frame().state != TrackedObject.IDLE
    values = settled(lambda v: True, "counts after camera infos")
    refused = int(values["bad_camera_info"]) - int(start["bad_camera_info"])
    assert 0 < refused <= BAD_CAMERA_INFOS, values
    report["CameraInfo"] = f"{BAD_CAMERA_INFOS} sent, {refused} received and refused"

    # ---- ~/set_target: every one answered with a reason, counted
    start = counts()
    reasons = set()
    for n in range(BAD_SET_TARGETS):
        box = [random_float(rng) for _ in range(4)]
        resp = nut.call_set_target(box, random_stamp(rng))
        assert not resp.success and resp.message and "internal error" not in resp.message, (box, resp.message)
        reasons.add(re.sub(r"[-0-9.e+]+|nan|inf", "#", resp.message)[:50])  # the kind of reason, numbers aside
        if n % BATCH == BATCH - 1:
            assert good_frame().state != TrackedObject.IDLE
    values = settled(lambda v, s=int(start["refused_targets"]): int(v["refused_targets"]) >= s + BAD_SET_TARGETS,
                     "refused set_target counted")
    assert int(values["refused_targets"]) - int(start["refused_targets"]) == BAD_SET_TARGETS
    report["SetTarget"] = f"{BAD_SET_TARGETS} sent, {BAD_SET_TARGETS} refused with a reason ({len(reasons)} kinds)"

    # ---- ~/target (TrackedObject): refused without an answer, counted
    target_pub = nut.node.create_publisher(TrackedObject, f"{nut.fqn}/target", 10)
    nut.spin_until(lambda: target_pub.get_subscription_count() > 0, 30.0, "the node's ~/target subscription")
    start = counts()
    for n in range(BAD_TARGET_MSGS):
        msg = TrackedObject(x=random_float(rng), y=random_float(rng), width=random_float(rng), height=random_float(rng))
        msg.header.stamp = random_stamp(rng)
        target_pub.publish(msg)
        if n % 10 == 9:  # reliable, depth 10: let the node take them before the queue wraps
            s = int(start["refused_targets"])
            settled(lambda v, k=n + 1: int(v["refused_targets"]) >= s + k, f"~/target refusal {n + 1}")
    values = settled(lambda v: True, "counts after ~/target")
    refused = int(values["refused_targets"]) - int(start["refused_targets"])
    assert refused == BAD_TARGET_MSGS, values
    assert good_frame().state != TrackedObject.IDLE
    report["~/target"] = f"{BAD_TARGET_MSGS} sent, {refused} refused"

    # ---- parameters: wrong types and out of range, in requests of 100
    get = nut.call(nut.get_params, GetParameters.Request(names=sorted(PARAMETERS)), "parameters before")
    before = [v.__repr__() for v in get.values]
    start = counts()
    results = []
    for _ in range(BAD_PARAMETERS // 100):
        params = [wrong_parameter(rng, PARAMETERS).to_parameter_msg() for _ in range(100)]
        results += nut.call(nut.set_params, SetParameters.Request(parameters=params), "set_parameters").results
    assert len(results) == BAD_PARAMETERS and not any(r.successful for r in results)
    assert all(r.reason for r in results)
    get = nut.call(nut.get_params, GetParameters.Request(names=sorted(PARAMETERS)), "parameters after")
    assert [v.__repr__() for v in get.values] == before, "a refused value changed a parameter"
    values = settled(lambda v: True, "counts after parameters")
    by_node = int(values["refused_parameters"]) - int(start["refused_parameters"])
    assert by_node <= BAD_PARAMETERS
    assert good_frame().state != TrackedObject.IDLE
    report["parameters"] = (f"{BAD_PARAMETERS} sent, {BAD_PARAMETERS} refused ({by_node} by the node's checks, "
                            f"{BAD_PARAMETERS - by_node} by rclpy's type check before them)")

    # ---- CompressedImage: reconfigure (lifecycle) to the compressed transport
    for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):
        assert nut.change_state(transition)
    assert nut.set_param("image_transport", "compressed").successful
    for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        assert nut.change_state(transition)
    compressed_cam = nut.node.create_publisher(CompressedImage, f"{nut.camera_topic}/compressed", qos_profile_sensor_data)
    nut.spin_until(lambda: compressed_cam.get_subscription_count() > 0, 30.0, "the compressed subscription")
    small = cv2.resize(frames[0], (48, 32))
    encoded = [bgr_to_compressed(small, "png").data, bgr_to_compressed(small, "jpeg").data]
    good_png = [bgr_to_compressed(f, "png") for f in frames[:10]]

    def compressed_good(i: int) -> TrackedObject:
        msg = good_png[i % len(good_png)]
        msg.header.stamp = stamp_msg(1000 + i)
        compressed_cam.publish(msg)
        return nut.spin_until(lambda: nut.results_for(stamp_msg(1000 + i)) and nut.results_for(stamp_msg(1000 + i))[-1],
                              REPLY_TIMEOUT, f"compressed frame {i}")

    compressed_good(0)
    assert nut.call_set_target(gt[0], stamp_msg(1000)).success
    start = counts()
    sent = 0
    for batch in range(BAD_COMPRESSED // BATCH):
        for _ in range(BATCH):
            kind = int(rng.integers(0, 4))
            data = bytes(encoded[int(rng.integers(0, 2))])
            if kind == 0:
                data = rng.integers(0, 255, int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
            elif kind == 1:
                data = data[: int(rng.integers(0, max(1, len(data) // 3)))]  # truncated to its header
            elif kind == 2:
                data = b""
            else:
                data = data[:8] + rng.integers(0, 255, len(data) - 8, dtype=np.uint8).tobytes()  # a signature, then noise
            compressed_cam.publish(CompressedImage(format="png", data=data))
            sent += 1
            pace(sent)
        assert compressed_good(batch + 1).state != TrackedObject.IDLE
    values = accounted(2, "compressed images")
    received = int(values["received"]) - int(start["received"])
    bad = int(values["bad_images"]) - int(start["bad_images"])
    assert 0 < bad <= sent, values
    report["CompressedImage"] = f"{sent} corrupt sent, {received} received, {bad} refused, {received - bad} decoded (tracked)"

    values = settled(lambda v: True, "the final diagnostics")
    assert values["errors"] == "0" and nut.proc.poll() is None, values
    print("live fuzz:", report)
    for kind, text in report.items():
        print(f"  {kind}: {text}")
