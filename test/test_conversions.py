"""cract_ros.conversions with hand-made messages: every encoding, padding, and each malformed case."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from cract_ros.conversions import (  # noqa: E402
    ImageConversionError,
    bgr_to_compressed,
    bgr_to_image,
    compressed_to_bgr,
    have_cv_bridge,
    image_to_bgr,
    numpy_to_image,
)

# A 2 x 3 image whose pixels are all different: B, G, R = 10*i, 10*i + 1, 10*i + 2.
BGR = np.array([[[10 * (3 * r + c), 10 * (3 * r + c) + 1, 10 * (3 * r + c) + 2] for c in range(3)] for r in range(2)],
               dtype=np.uint8)


def _msg(encoding: str, height: int, width: int, step: int, data: bytes, bigendian: int = 0) -> Image:
    m = Image()
    m.encoding, m.height, m.width, m.step, m.is_bigendian = encoding, height, width, step, bigendian
    m.data = data
    return m


def test_bgr8_is_read_without_copy() -> None:
    m = _msg("bgr8", 2, 3, 9, BGR.tobytes())
    out = image_to_bgr(m)
    np.testing.assert_array_equal(out, BGR)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    if not have_cv_bridge():
        assert np.shares_memory(out, np.frombuffer(m.data, np.uint8))


def test_rgb8_bgra8_rgba8_mono8_by_hand() -> None:
    rgb = BGR[:, :, ::-1]
    np.testing.assert_array_equal(image_to_bgr(_msg("rgb8", 2, 3, 9, rgb.tobytes())), BGR)
    alpha = np.full((2, 3, 1), 255, np.uint8)
    np.testing.assert_array_equal(image_to_bgr(_msg("bgra8", 2, 3, 12, np.concatenate([BGR, alpha], 2).tobytes())), BGR)
    np.testing.assert_array_equal(image_to_bgr(_msg("rgba8", 2, 3, 12, np.concatenate([rgb, alpha], 2).tobytes())), BGR)
    gray = np.array([[0, 50, 100], [150, 200, 255]], np.uint8)
    out = image_to_bgr(_msg("mono8", 2, 3, 3, gray.tobytes()))
    assert out.shape == (2, 3, 3)
    for ch in range(3):  # grey replicated into all three channels
        np.testing.assert_array_equal(out[:, :, ch], gray)


def test_mono16_little_and_big_endian() -> None:
    values = np.array([[0, 256, 65535], [512, 1024, 32768]], np.uint16)
    expected = (values >> 8).astype(np.uint8)
    little = image_to_bgr(_msg("mono16", 2, 3, 6, values.astype("<u2").tobytes(), bigendian=0))
    big = image_to_bgr(_msg("mono16", 2, 3, 6, values.astype(">u2").tobytes(), bigendian=1))
    np.testing.assert_array_equal(little[:, :, 1], expected)
    np.testing.assert_array_equal(big[:, :, 2], expected)


def test_padded_step_is_honoured() -> None:
    padded = np.zeros((2, 12), np.uint8)  # 9 bytes of pixels + 3 of padding per row
    padded[:, :9] = BGR.reshape(2, 9)
    padded[:, 9:] = 77
    out = image_to_bgr(_msg("bgr8", 2, 3, 12, padded.tobytes()))
    np.testing.assert_array_equal(out, BGR)
    assert out.flags["C_CONTIGUOUS"]
    rgb_padded = np.zeros((2, 10), np.uint8)
    rgb_padded[:, :9] = BGR[:, :, ::-1].reshape(2, 9)
    np.testing.assert_array_equal(image_to_bgr(_msg("rgb8", 2, 3, 10, rgb_padded.tobytes())), BGR)


@pytest.mark.parametrize(
    "encoding,height,width,step,nbytes,needle",
    [
        ("yuv422", 2, 3, 6, 12, "unsupported image encoding 'yuv422'"),
        ("32FC1", 2, 3, 12, 24, "unsupported image encoding"),
        ("bgr8", 2, 3, 8, 16, "step 8 is smaller than width*channels*bytes"),
        ("bgr8", 2, 3, 9, 17, "data has 17 bytes, expected step*height = 9*2 = 18"),
        ("bgr8", 2, 3, 9, 19, "data has 19 bytes"),
        ("bgr8", 2, 3, 9, 0, "empty image data"),
        ("mono8", 0, 0, 0, 4, "image size 0x0 is empty"),
        ("mono16", 2, 3, 5, 10, "step 5 is smaller"),
    ],
)
def test_malformed_images_raise_clear_errors(encoding, height, width, step, nbytes, needle) -> None:
    with pytest.raises(ImageConversionError, match=needle.replace("*", r"\*").replace("(", r"\(")):
        image_to_bgr(_msg(encoding, height, width, step, bytes(nbytes)))


def test_error_type_is_a_value_error() -> None:
    assert issubclass(ImageConversionError, ValueError)


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "bgra8", "rgba8"])
def test_bgr_to_image_round_trip(encoding: str) -> None:
    m = bgr_to_image(BGR, encoding, frame_id="cam")
    assert (m.encoding, m.height, m.width, m.header.frame_id) == (encoding, 2, 3, "cam")
    assert m.step == 3 * (4 if encoding.endswith("a8") else 3)
    assert len(m.data) == m.step * 2
    np.testing.assert_array_equal(image_to_bgr(m), BGR)


def test_bgr_to_image_mono8_is_grey() -> None:
    m = bgr_to_image(BGR, "mono8")
    assert m.step == 3
    np.testing.assert_array_equal(np.frombuffer(m.data, np.uint8).reshape(2, 3), cv2.cvtColor(BGR, cv2.COLOR_BGR2GRAY))


def test_array_to_message_errors() -> None:
    with pytest.raises(ImageConversionError, match="H x W x 3 uint8"):
        bgr_to_image(BGR.astype(np.float32))
    with pytest.raises(ImageConversionError, match="H x W x 3 uint8"):
        bgr_to_image(BGR[:, :, 0])
    with pytest.raises(ImageConversionError, match="empty array"):
        bgr_to_image(np.zeros((0, 3, 3), np.uint8))
    with pytest.raises(ImageConversionError, match="expected a numpy array"):
        bgr_to_image([[1, 2, 3]])  # type: ignore[arg-type]
    with pytest.raises(ImageConversionError, match="cannot write encoding 'yuv422'"):
        bgr_to_image(BGR, "yuv422")
    with pytest.raises(ImageConversionError, match="does not fit encoding 'rgba8'"):
        numpy_to_image(BGR, "rgba8")


def test_compressed_png_round_trip_is_exact_and_jpeg_is_close() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    png = bgr_to_compressed(img, "png", frame_id="cam")
    assert png.format == "bgr8; png compressed bgr8" and png.header.frame_id == "cam"
    np.testing.assert_array_equal(compressed_to_bgr(png), img)
    smooth = cv2.GaussianBlur(img, (0, 0), 5)
    jpg = compressed_to_bgr(bgr_to_compressed(smooth, "jpeg", quality=95))
    assert jpg.shape == smooth.shape
    assert np.abs(jpg.astype(int) - smooth.astype(int)).mean() < 3.0


def test_compressed_errors() -> None:
    m = CompressedImage()
    m.format = "jpeg"
    with pytest.raises(ImageConversionError, match="empty compressed image data"):
        compressed_to_bgr(m)
    m.data = b"definitely not a jpeg"
    with pytest.raises(ImageConversionError, match="could not decode 21 bytes"):
        compressed_to_bgr(m)
    m.format = "16UC1; compressedDepth"
    with pytest.raises(ImageConversionError, match="compressedDepth"):
        compressed_to_bgr(m)
    with pytest.raises(ImageConversionError, match="'jpeg' or 'png'"):
        bgr_to_compressed(BGR, "webp")


def test_real_frame_round_trips(shared_sequence) -> None:
    """A real 720x400 JPEG frame through every raw encoding and back."""
    path = shared_sequence("otb_bird2") / "img" / "000001.jpg"
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert frame is not None and frame.shape == (400, 720, 3)
    for encoding in ("bgr8", "rgb8", "bgra8", "rgba8"):
        np.testing.assert_array_equal(image_to_bgr(bgr_to_image(frame, encoding)), frame)
    # the compressed path reads the original file bytes as a camera's jpeg topic would carry them
    m = CompressedImage()
    m.format = "jpeg"
    m.data = path.read_bytes()
    np.testing.assert_array_equal(compressed_to_bgr(m), frame)
