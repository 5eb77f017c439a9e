"""sensor_msgs/Image and CompressedImage <-> numpy BGR uint8 (what cract_core takes), and
sensor_msgs/CameraInfo -> cract_core.camera.CameraModel.

cv_bridge is used for raw images where it imports (a real ROS install); otherwise numpy does
the work: `np.frombuffer(msg.data).reshape(...)` reads without a copy, and outgoing messages
take `arr.tobytes()` (assigning an ndarray to `Image.data` element by element is ~50x slower).

Every malformed message (unknown encoding, step or size that disagrees with width/height,
empty data, undecodable compressed bytes) raises ImageConversionError with a message that
says what is wrong, so the node can count and log it and go on.

sensor_msgs is imported only by the functions that build messages, so the readers work on
any object with the message's fields (a rosbags-deserialised message, for instance).
"""
from __future__ import annotations

from typing import Any, Optional

import cv2
import numpy as np

from cract_core.camera import CameraModel, CameraModelError

__all__ = [
    "ImageConversionError",
    "SUPPORTED_ENCODINGS",
    "image_to_bgr",
    "compressed_to_bgr",
    "numpy_to_image",
    "bgr_to_image",
    "bgr_to_compressed",
    "have_cv_bridge",
    "camera_model_from_info",
]


class ImageConversionError(ValueError):
    """An image message that cannot be turned into a BGR array (or an array into a message)."""


# encoding -> (channels, dtype, cv2 conversion code to BGR or None when already BGR)
_ENCODINGS: dict[str, tuple[int, np.dtype, Optional[int]]] = {
    "bgr8": (3, np.dtype(np.uint8), None),
    "rgb8": (3, np.dtype(np.uint8), cv2.COLOR_RGB2BGR),
    "mono8": (1, np.dtype(np.uint8), cv2.COLOR_GRAY2BGR),
    "8uc1": (1, np.dtype(np.uint8), cv2.COLOR_GRAY2BGR),
    "8uc3": (3, np.dtype(np.uint8), None),  # OpenCV's own type name: assumed BGR as cv_bridge does
    "bgra8": (4, np.dtype(np.uint8), cv2.COLOR_BGRA2BGR),
    "rgba8": (4, np.dtype(np.uint8), cv2.COLOR_RGBA2BGR),
    "mono16": (1, np.dtype(np.uint16), cv2.COLOR_GRAY2BGR),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = ("bgr8", "rgb8", "mono8", "bgra8", "rgba8", "mono16", "8UC1", "8UC3")

try:  # ROS 2's cv_bridge: present on a real ROS install, not installable from PyPI here
    from cv_bridge import CvBridge, CvBridgeError  # type: ignore

    _BRIDGE: Any = CvBridge()
except Exception:  # ImportError, or a ROS 1 cv_bridge that fails on numpy 2
    _BRIDGE = None
    CvBridgeError = Exception  # type: ignore[misc,assignment]


def have_cv_bridge() -> bool:
    return _BRIDGE is not None


def _encoding_info(encoding: str) -> tuple[int, np.dtype, Optional[int]]:
    info = _ENCODINGS.get(encoding.lower()) if isinstance(encoding, str) else None
    if info is None:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    return info


def _check_layout(msg: Any) -> tuple[int, int, int, int, np.dtype, Optional[int]]:
    """Validate height/width/step/data against the encoding; return what the reader needs."""
    channels, dtype, code = _encoding_info(msg.encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    n = len(msg.data)
    if n == 0:
        raise ImageConversionError(f"empty image data ({msg.encoding} {w}x{h})")
    if h <= 0 or w <= 0:
        raise ImageConversionError(f"image size {w}x{h} is empty but data has {n} bytes")
    row = w * channels * dtype.itemsize
    if step < row:
        raise ImageConversionError(
            f"step {step} is smaller than width*channels*bytes = {w}*{channels}*{dtype.itemsize} = {row} ({msg.encoding})")
    if n != step * h:
        raise ImageConversionError(f"data has {n} bytes, expected step*height = {step}*{h} = {step * h}")
    return h, w, step, channels, dtype, code


def image_to_bgr(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> H x W x 3 uint8 BGR.

    bgr8 without row padding comes back as a read-only view of the message's buffer (no copy;
    it keeps the message's data alive); every other case is converted into a new array.
    mono16 is scaled to 8 bits (value >> 8).
    """
    h, w, step, channels, dtype, code = _check_layout(msg)
    if _BRIDGE is not None and dtype.itemsize == 1:
        try:
            return _BRIDGE.imgmsg_to_cv2(msg, desired_encoding="bgr8")
        except CvBridgeError as exc:  # layout was checked above: this is cv_bridge's own refusal
            raise ImageConversionError(f"cv_bridge: {exc}") from exc
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    rows = buf.reshape(h, step)[:, : w * channels * dtype.itemsize]
    if dtype.itemsize == 1:
        arr = rows.reshape(h, w, channels)
    else:
        # a strided view cannot be re-typed in place when step has padding: copy just then
        data = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
        arr = (data.reshape(h, w, channels) >> 8).astype(np.uint8)
    if code is None:
        # padded rows: hand the tracker a contiguous copy rather than a strided view
        return arr if step == w * channels else np.ascontiguousarray(arr)
    return cv2.cvtColor(arr if channels > 1 else arr[:, :, 0], code)


def compressed_to_bgr(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png, as image_transport writes it) -> H x W x 3 uint8 BGR."""
    fmt = str(getattr(msg, "format", ""))
    if "compresseddepth" in fmt.lower():
        raise ImageConversionError(f"compressedDepth images are not supported (format {fmt!r})")
    if len(msg.data) == 0:
        raise ImageConversionError(f"empty compressed image data (format {fmt!r})")
    arr = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if arr is None or arr.size == 0:
        raise ImageConversionError(f"could not decode {len(msg.data)} bytes of compressed image (format {fmt!r})")
    return arr


def _as_image_array(arr: Any) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise ImageConversionError(f"expected a numpy array, got {type(arr).__name__}")
    if arr.size == 0:
        raise ImageConversionError(f"empty array of shape {arr.shape}")
    return arr


def numpy_to_image(arr: np.ndarray, encoding: str, header: Any = None, frame_id: str = "") -> Any:
    """An array already laid out in `encoding` (H x W or H x W x C) -> sensor_msgs/Image, as is."""
    from sensor_msgs.msg import Image

    arr = _as_image_array(arr)
    channels, dtype, _ = _encoding_info(encoding)
    shape_ok = (arr.ndim == 2 and channels == 1) or (arr.ndim == 3 and arr.shape[2] == channels)
    if not shape_ok or arr.dtype != dtype:
        raise ImageConversionError(
            f"array of shape {arr.shape} and dtype {arr.dtype} does not fit encoding {encoding!r} "
            f"({channels} channel(s) of {dtype})")
    msg = Image()
    if header is not None:
        msg.header = header
    elif frame_id:
        msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0 if dtype.itemsize == 1 else int(dtype.byteorder == ">")
    msg.step = int(arr.shape[1] * channels * dtype.itemsize)
    msg.data = np.ascontiguousarray(arr).tobytes()
    return msg


_FROM_BGR = {
    "bgr8": None,
    "rgb8": cv2.COLOR_BGR2RGB,
    "mono8": cv2.COLOR_BGR2GRAY,
    "bgra8": cv2.COLOR_BGR2BGRA,
    "rgba8": cv2.COLOR_BGR2RGBA,
}


def bgr_to_image(bgr: np.ndarray, encoding: str = "bgr8", header: Any = None, frame_id: str = "") -> Any:
    """H x W x 3 uint8 BGR -> sensor_msgs/Image in `encoding` (bgr8, rgb8, mono8, bgra8, rgba8)."""
    bgr = _as_image_array(bgr)
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ImageConversionError(f"expected an H x W x 3 uint8 BGR array, got shape {bgr.shape} dtype {bgr.dtype}")
    if encoding not in _FROM_BGR:
        raise ImageConversionError(f"cannot write encoding {encoding!r} from BGR (choose from {sorted(_FROM_BGR)})")
    code = _FROM_BGR[encoding]
    out = bgr if code is None else cv2.cvtColor(bgr, code)
    return numpy_to_image(out, encoding, header=header, frame_id=frame_id)


def bgr_to_compressed(bgr: np.ndarray, fmt: str = "jpeg", quality: int = 90, header: Any = None,
                      frame_id: str = "") -> Any:
    """H x W x 3 uint8 BGR -> sensor_msgs/CompressedImage (jpeg or png), format string as image_transport writes it."""
    from sensor_msgs.msg import CompressedImage

    bgr = _as_image_array(bgr)
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ImageConversionError(f"expected an H x W x 3 uint8 BGR array, got shape {bgr.shape} dtype {bgr.dtype}")
    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {bgr.shape} image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    elif frame_id:
        msg.header.frame_id = frame_id
    msg.format = f"bgr8; {fmt} compressed bgr8"
    msg.data = buf.tobytes()
    return msg


def camera_model_from_info(msg: Any, rectified: bool = False) -> CameraModel:
    """sensor_msgs/CameraInfo -> CameraModel of the images it describes; raises CameraModelError.

    `rectified=False` (image_raw): K and the distortion model with D. `rectified=True` (image_proc's
    image_rect): the projection P's left 3x3 and no distortion, as image_geometry's rectified model.
    Binning and the region of interest map the image's pixels into the calibration (a ROI of zero
    size is the whole image). The model's width x height is the size of the images themselves
    (the ROI's, divided by the binning), which the node checks every frame against.
    """
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise CameraModelError(f"CameraInfo size {width}x{height} is empty (an uncalibrated camera)")
    bin_x, bin_y = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    roi = msg.roi
    roi_w = int(roi.width) or width
    roi_h = int(roi.height) or height
    image_w, image_h = roi_w // bin_x, roi_h // bin_y
    binning, offset = (bin_x, bin_y), (int(roi.x_offset), int(roi.y_offset))
    if rectified:
        p = [float(v) for v in msg.p]
        if len(p) != 12:
            raise CameraModelError(f"P must have 12 elements, got {len(p)}")
        k = [p[0], p[1], p[2], p[4], p[5], p[6], p[8], p[9], p[10]]
        return CameraModel.from_matrix(image_w, image_h, k, "plumb_bob", [0.0] * 5, binning, offset)
    return CameraModel.from_matrix(image_w, image_h, list(msg.k), str(msg.distortion_model), list(msg.d),
                                   binning, offset)
