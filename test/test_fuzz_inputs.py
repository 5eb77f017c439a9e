"""Property-based tests (hypothesis) of every decoder and validator between the outside world and
the tracker: each input ends in a correct result or in the decoder's own clear error, never in
another exception (which, in the node, would escape a callback or count as an internal error).

- sensor_msgs/Image -> BGR for every encoding, random sizes, row padding, endianness, truncated
  or extended data: the pixels equal a reference conversion written here, or ImageConversionError;
- sensor_msgs/CompressedImage: random bytes, real PNG/JPEG truncated or with flipped bytes, empty:
  an H x W x 3 image (a lossless PNG unchanged: the same pixels), or ImageConversionError;
- SetTarget / ~/target boxes (random floats, infinities, huge values) against random image sizes,
  and the frame look-up by stamp (stamps in the past, the future, zero): accepted exactly when the
  box leaves at least 2 x 2 px inside the image, with the frame of that stamp; else the reason;
- parameter sets of every ROS parameter type with wrong types and out-of-range values: refused
  with a reason naming the parameter, or accepted with a value of the right type and range;
- sensor_msgs/CameraInfo with random K, D, models, sizes, binning and ROI: CameraModelError, or a
  model whose bearings are finite or NaN; the node's calibration store counts every refusal;
- checkpoint files truncated, with bytes flipped or appended, sidecars tampered: CheckpointError
  (always, when a sidecar records the sha256), or a checkpoint that passes the format checks;
- rosbag2 files truncated or with bytes flipped: BagError, or frames that decode.

Deterministic in CI: derandomize=True (examples come from a fixed seed per test) and no example
database; each test runs a bounded number of examples (`--hypothesis-show-statistics` prints how
many).
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytest.importorskip("sensor_msgs.msg")
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from cract_core.camera import CameraModelError  # noqa: E402
from cract_ros.conversions import (  # noqa: E402
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    camera_model_from_info,
    compressed_to_bgr,
    image_to_bgr,
)


def fuzz_settings(examples: int) -> settings:
    """Deterministic, bounded, no deadline (a loaded 2-core machine)."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------------------------
# raw images

# encoding (as the message spells it) -> (channels, bytes per channel); lower-case keys
LAYOUT = {"bgr8": (3, 1), "rgb8": (3, 1), "mono8": (1, 1), "8uc1": (1, 1), "8uc3": (3, 1),
          "bgra8": (4, 1), "rgba8": (4, 1), "mono16": (1, 2)}


def reference_bgr(encoding: str, height: int, width: int, step: int, data: bytes, big_endian: bool) -> np.ndarray:
    """What an image should look like as BGR, written independently of cract_ros.conversions."""
    channels, nbytes = LAYOUT[encoding.lower()]
    rows = np.frombuffer(data, np.uint8).reshape(height, step)[:, : width * channels * nbytes]
    if nbytes == 2:
        pairs = rows.reshape(height, width, 2).astype(np.uint16)
        high = pairs[:, :, 0] if big_endian else pairs[:, :, 1]
        grey = high.astype(np.uint8)  # value >> 8 is the high byte
        return np.repeat(grey[:, :, None], 3, axis=2)
    px = rows.reshape(height, width, channels)
    enc = encoding.lower()
    if channels == 1:
        return np.repeat(px, 3, axis=2)
    if enc in ("rgb8", "rgba8"):
        return px[:, :, 2::-1]
    return px[:, :, :3]


@st.composite
def raw_images(draw: st.DrawFn) -> tuple[Image, bool]:
    """An Image message and whether its layout is valid. Valid ones are common (each encoding,
    padded rows); broken ones change one thing: the encoding, the step, the size or the data."""
    encoding = draw(st.sampled_from(SUPPORTED_ENCODINGS + ("BGR8", "Mono16", "yuv422", "32FC1", "", "bgr8 ")))
    height = draw(st.integers(0, 24))
    width = draw(st.integers(0, 24))
    known = encoding.lower() in LAYOUT
    channels, nbytes = LAYOUT.get(encoding.lower(), (3, 1))
    row = width * channels * nbytes
    step = row + draw(st.integers(0, 7)) if draw(st.booleans()) else draw(st.integers(0, 4 * row + 8))
    size = step * height
    how = draw(st.sampled_from(["exact", "exact", "truncated", "extended", "empty", "random"]))
    if how == "truncated":
        size = draw(st.integers(0, max(size - 1, 0)))
    elif how == "extended":
        size += draw(st.integers(1, 64))
    elif how == "empty":
        size = 0
    elif how == "random":
        size = draw(st.integers(0, 2000))
    data = draw(st.binary(min_size=size, max_size=size))
    big_endian = draw(st.integers(0, 255))
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=big_endian, step=step, data=data)
    valid = known and height > 0 and width > 0 and step >= row and len(data) == step * height and len(data) > 0
    return msg, valid


@fuzz_settings(600)
@given(raw_images())
def test_raw_image_decoder(case: tuple[Image, bool]) -> None:
    msg, valid = case
    if valid:
        out = image_to_bgr(msg)
        assert out.dtype == np.uint8 and out.shape == (msg.height, msg.width, 3)
        expected = reference_bgr(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data), bool(msg.is_bigendian))
        np.testing.assert_array_equal(out, expected)
    else:
        with pytest.raises(ImageConversionError) as err:
            image_to_bgr(msg)
        assert str(err.value)


# ------------------------------------------------------------------------------------------
# compressed images


def _encoded(fmt: str, seed: int) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), (0, 0), 2)
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", img)
    assert ok
    return buf.tobytes(), img


@st.composite
def compressed_images(draw: st.DrawFn) -> tuple[CompressedImage, str, np.ndarray | None]:
    kind = draw(st.sampled_from(["png", "jpeg", "random", "empty"]))
    fmt = draw(st.sampled_from(["jpeg", "png", "bgr8; jpeg compressed bgr8", "rgb8; png compressed rgb8", ""]))
    original = None
    if kind in ("png", "jpeg"):
        data, original = _encoded(kind, draw(st.integers(0, 3)))
        change = draw(st.sampled_from(["none", "truncate", "flip", "flip", "prefix"]))
        if change == "truncate":
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif change == "flip":
            buf = bytearray(data)
            for _ in range(draw(st.integers(1, 8))):
                i = draw(st.integers(0, len(buf) - 1))
                buf[i] ^= draw(st.integers(1, 255))
            data = bytes(buf)
        elif change == "prefix":
            data = draw(st.binary(min_size=1, max_size=16)) + data
        if change != "none":
            original = None  # no longer the same image
    elif kind == "random":
        data = draw(st.binary(min_size=1, max_size=4000))
    else:
        data = b""
    return CompressedImage(format=fmt, data=data), kind, original


@fuzz_settings(400)
@given(compressed_images())
def test_compressed_image_decoder(case: tuple[CompressedImage, str, np.ndarray | None]) -> None:
    msg, kind, original = case
    try:
        out = compressed_to_bgr(msg)
    except ImageConversionError as exc:
        assert str(exc)
        assert original is None, "an intact image must decode"
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.size > 0
    if original is not None and kind == "png":
        np.testing.assert_array_equal(out, original)  # lossless
    elif original is not None:
        assert out.shape == original.shape


# ------------------------------------------------------------------------------------------
# SetTarget / ~/target: the box and the stamp

from cract_ros.node import MIN_TARGET_PX, Frame, find_frame, target_box_problem  # noqa: E402

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),  # every float, huge and tiny
    st.floats(-2000.0, 2000.0),  # mostly near the image
    st.sampled_from([0.0, -0.0, 1.0, 1.9999999, 2.0, 2.0000001, 1e308, -1e308, 5e-324, math.inf, -math.inf]),
)


@fuzz_settings(800)
@given(x=FLOATS, y=FLOATS, w=FLOATS, h=FLOATS, width=st.integers(1, 4096), height=st.integers(1, 4096))
def test_target_box_validation(x: float, y: float, w: float, h: float, width: int, height: int) -> None:
    problem = target_box_problem([x, y, w, h], (width, height))
    finite = all(math.isfinite(v) for v in (x, y, w, h))
    # the part of the box inside the image, computed here from the definition
    inside_w = min(x + w, width) - max(x, 0.0) if finite else -1.0
    inside_h = min(y + h, height) - max(y, 0.0) if finite else -1.0
    acceptable = (finite and w >= MIN_TARGET_PX and h >= MIN_TARGET_PX
                  and inside_w >= MIN_TARGET_PX and inside_h >= MIN_TARGET_PX)
    assert (problem == "") == acceptable, (problem, inside_w, inside_h)
    if not finite:
        assert "NaN or infinite" in problem
    elif problem:
        assert any(k in problem for k in ("under", "smaller", "outside")), problem


def _frames(stamps: list[int]) -> list[Frame]:
    def header(ns: int) -> SimpleNamespace:
        return SimpleNamespace(stamp=SimpleNamespace(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id="c")
    return [Frame(header(ns), None, False, 0.0) for ns in stamps]


STAMPS = st.integers(0, 2**31 * 1_000_000_000 - 1)  # builtin_interfaces/Time: int32 sec, uint32 nanosec


@fuzz_settings(500)
@given(stamps=st.lists(st.one_of(STAMPS, st.integers(1_000_000_000_000, 1_000_000_010_000)), max_size=30),
       wanted=st.one_of(st.just(0), STAMPS, st.integers(1_000_000_000_000, 1_000_000_010_000)))
def test_frame_lookup_by_stamp(stamps: list[int], wanted: int) -> None:
    """Stamps in the past, the future, repeated (a bag played twice) or zero (= the newest)."""
    frames = _frames(stamps)
    frame, reason = find_frame(frames, wanted, 30)
    if not stamps:
        assert frame is None and reason == "no image received yet"
    elif wanted == 0:
        assert frame is frames[-1] and reason == ""
    elif wanted in stamps:
        newest = max(i for i, s in enumerate(stamps) if s == wanted)  # the newest of repeated stamps
        assert frame is frames[newest] and reason == ""
    else:
        sec, nsec = divmod(wanted, 1_000_000_000)
        assert frame is None and f"no buffered frame with stamp {sec}.{nsec:09d}" in reason


# ------------------------------------------------------------------------------------------
# parameters

from rclpy.parameter import Parameter  # noqa: E402

from cract_ros.node import PARAMETERS, check_parameters  # noqa: E402
from cract_ros.parameters import apply_update  # noqa: E402

PARAM_VALUES = st.one_of(
    st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["auto", "cpu", "cuda", "async", "sync", "raw", "compressed", "roi", ""]),
    st.lists(st.booleans(), max_size=3), st.lists(st.integers(-2**63, 2**63 - 1), max_size=3),
    st.lists(st.floats(), max_size=3), st.lists(st.text(max_size=5), max_size=3),
    st.sampled_from([0, 1, -1, 0.0, 1.0, -1.0, 0.5, 1.5, 1e308, -1e308]),
)


@fuzz_settings(800)
@given(name=st.sampled_from(sorted(PARAMETERS)), value=PARAM_VALUES,
       state=st.sampled_from(["unconfigured", "inactive", "active"]))
def test_parameter_updates(name: str, value, state: str) -> None:
    spec = PARAMETERS[name]
    current = {k: s.default for k, s in PARAMETERS.items()}
    param = Parameter(name, value=value)
    new, reason = apply_update(PARAMETERS, current, [param], configurable=state == "unconfigured", state=state)
    want = type(spec.default)
    right_type = type(value) is want or (want is float and type(value) is int)
    number = float(value) if right_type and want in (int, float) else None
    left_to_model = right_type and spec.unset is not None and value == spec.unset  # -1: the model config's
    fits = left_to_model or right_type and (
        number is None or (math.isfinite(number)
                            and (spec.minimum is None or number > spec.minimum
                                 or (number == spec.minimum and not spec.exclusive_minimum))
                            and (spec.maximum is None or number <= spec.maximum))) and (
        not spec.choices or value in spec.choices)
    may_change = spec.runtime or (not spec.startup and state == "unconfigured")
    assert (new is not None) == (fits and may_change), (name, value, state, reason)
    if new is None:
        assert name in reason, reason
        return
    # accepted: only values of the parameter's type (an int for a float), finite, in range, in
    # the choices, and only when the parameter may change in this state
    assert right_type, (name, value)
    assert spec.runtime or (not spec.startup and state == "unconfigured"), (name, state)
    got = new[name]
    assert type(got) is want
    if want in (int, float) and not left_to_model:
        assert math.isfinite(got)
        if spec.minimum is not None:
            assert got > spec.minimum if spec.exclusive_minimum else got >= spec.minimum
        if spec.maximum is not None:
            assert got <= spec.maximum
    if spec.choices:
        assert got in spec.choices
    problems = check_parameters(new)  # the cross-parameter rule never raises
    assert all(isinstance(p, str) and p for p in problems)


# ------------------------------------------------------------------------------------------
# CameraInfo

from cract_ros.node import Calibrations  # noqa: E402

CAMERA_FLOATS = st.one_of(st.floats(-1e4, 1e4), st.floats(allow_nan=True, allow_infinity=True),
                          st.sampled_from([0.0, 1.0, -1.0, 500.0, 320.0]))


@st.composite
def camera_infos(draw: st.DrawFn) -> CameraInfo:
    width, height = draw(st.integers(0, 5000)), draw(st.integers(0, 5000))
    fx, fy = draw(st.one_of(CAMERA_FLOATS, st.floats(100.0, 2000.0))), draw(st.one_of(CAMERA_FLOATS, st.floats(100.0, 2000.0)))
    cx, cy = draw(st.one_of(CAMERA_FLOATS, st.just(width / 2))), draw(st.one_of(CAMERA_FLOATS, st.just(height / 2)))
    k = [fx, draw(st.one_of(st.just(0.0), CAMERA_FLOATS)), cx, 0.0, fy, cy, 0.0, 0.0, draw(st.sampled_from([1.0, 0.0, 2.0]))]
    model = draw(st.sampled_from(["plumb_bob", "rational_polynomial", "equidistant", "kannala_brandt", "", "PLUMB_BOB"]))
    d = draw(st.lists(st.one_of(st.floats(-1.0, 1.0), CAMERA_FLOATS), max_size=9))
    info = CameraInfo(width=width, height=height, distortion_model=model, d=d, k=k,
                      p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
                      binning_x=draw(st.integers(0, 2**32 - 1)), binning_y=draw(st.integers(0, 8)))
    info.roi.x_offset, info.roi.y_offset = draw(st.integers(0, 6000)), draw(st.integers(0, 6000))
    info.roi.width, info.roi.height = draw(st.integers(0, 6000)), draw(st.integers(0, 6000))
    info.header.stamp.sec = draw(st.integers(0, 2**31 - 1))
    return info


@fuzz_settings(400)
@given(info=camera_infos(), rectified=st.booleans(), u=st.floats(-100, 6000), v=st.floats(-100, 6000))
def test_camera_info_decoder(info: CameraInfo, rectified: bool, u: float, v: float) -> None:
    try:
        model = camera_model_from_info(info, rectified=rectified)
    except CameraModelError as exc:
        assert str(exc)
        model = None
    if model is not None:
        with np.errstate(all="ignore"):
            horizontal, vertical = model.bearing(u, v)
        for angle in (float(horizontal), float(vertical)):
            assert math.isnan(angle) or -math.pi <= angle <= math.pi
    store = Calibrations(size=4, rectified=rectified)
    why, new = store.add(info)
    assert new and (why == "") == (model is not None)
    assert store.refused == (0 if model is not None else 1)
    found, reason = store.for_stamp(int(info.header.stamp.sec) * 1_000_000_000)
    assert (found is None) == (model is None) and (reason == why)


# ------------------------------------------------------------------------------------------
# checkpoints

import torch  # noqa: E402

from cract_core.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from cract_core.config import ExperimentConfig  # noqa: E402
from cract_core.errors import CheckpointError  # noqa: E402


class TinyHeads(torch.nn.Module):
    """The checkpoint interface of CRACTNet on two small layers (what is stored does not matter here)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(8, 4)

    def head_state_dict(self) -> dict:
        return self.state_dict()


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> tuple[bytes, str]:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    save_checkpoint(path, TinyHeads(), ExperimentConfig(), step=3)
    return path.read_bytes(), path.with_name("last.pt.sha256").read_text()


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    change = draw(st.sampled_from(["truncate", "flip", "append", "zero_block"]))
    if change == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if change == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    buf = bytearray(data)
    if change == "zero_block":
        start = draw(st.integers(0, len(buf) - 1))
        end = min(len(buf), start + draw(st.integers(1, 512)))
        assume(any(buf[start:end]))
        buf[start:end] = bytes(end - start)
    else:
        for _ in range(draw(st.integers(1, 4))):
            buf[draw(st.integers(0, len(buf) - 1))] ^= draw(st.integers(1, 255))
    return bytes(buf)


@fuzz_settings(300)
@given(data=st.data(), keep_sidecar=st.booleans(), tamper_sidecar=st.booleans())
def test_damaged_checkpoints(checkpoint_bytes, data, keep_sidecar: bool, tamper_sidecar: bool) -> None:
    original, sidecar = checkpoint_bytes
    broken = data.draw(damaged(original))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "last.pt"
        path.write_bytes(broken)
        if keep_sidecar:
            side = sidecar
            if tamper_sidecar:
                side = data.draw(st.sampled_from(["", "xyz", "0" * 64 + "  last.pt\n", sidecar[:-5], sidecar.upper()]))
            path.with_name("last.pt.sha256").write_text(side)
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as exc:
            assert str(exc)
            return
        # loaded: only possible without a (valid) record of the sha256, and it passed the checks
        assert not keep_sidecar or (tamper_sidecar and side == sidecar.upper()), "a changed file matched its sha256"
        assert loaded["format"] == "cract-heads-1" and {"config", "step", "heads"} <= set(loaded)


# ------------------------------------------------------------------------------------------
# rosbag2 files

from cract_ros.bags import bag_io  # noqa: E402


@pytest.fixture(scope="module")
def bag_bytes(tmp_path_factory) -> tuple[dict[str, bytes], list[np.ndarray]]:
    """A small real bag (5 frames 32x24, ground truth, /clock) as the bytes of its files."""
    out = tmp_path_factory.mktemp("bag") / "bag"
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(5)]
    with bag_io.BagWriter(out) as bag:
        for i, f in enumerate(frames):
            ns = bag_io.DEFAULT_START_NS + i * 33_333_333
            bag.write(bag_io.CLOCK_TOPIC, bag_io.CLOCK_TYPE, ns, bag_io.clock_message(ns))
            bag.write(bag_io.DEFAULT_IMAGE_TOPIC, bag_io.IMAGE_TYPE, ns, bag_io.image_message(f, ns, "camera"))
            bag.write(bag_io.DEFAULT_GT_TOPIC, bag_io.TRACKED_TYPE, ns,
                      bag_io.tracked_object_message(ns, "camera", [4, 4, 10, 8], bag_io.TRACKING, i))
    return {p.name: p.read_bytes() for p in out.iterdir()}, frames


@fuzz_settings(150)
@given(data=st.data(), target=st.sampled_from(["mcap", "metadata"]))
def test_damaged_bags(bag_bytes, data, target: str) -> None:
    files, frames = bag_bytes
    name = next(n for n in files if n.endswith(".mcap")) if target == "mcap" else "metadata.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bag"
        root.mkdir()
        for n, content in files.items():
            (root / n).write_bytes(data.draw(damaged(content)) if n == name else content)
        try:
            seq = bag_io.load_sequence(root)
            images = [seq.image(i) for i in range(len(seq.frames))]
        except bag_io.BagError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        # read: what came back are whole frames of the bag's size
        assert 0 < len(images) <= len(frames)
        assert all(im.shape == (24, 32, 3) and im.dtype == np.uint8 for im in images)
