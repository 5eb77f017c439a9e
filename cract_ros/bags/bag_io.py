"""rosbag2 files for cract, written and read with `rosbags` (pure Python; no rclpy import here).

Bags are standard rosbag2 directories (metadata.yaml + one .mcap file) that a real ROS 2
install's `ros2 bag play` reads. What a sequence bag holds (cract-bag from-sequence):

- IMAGE_TOPIC (default /camera/image_raw): sensor_msgs/msg/Image, bgr8, one a frame, header
  stamp = the frame's capture time at the bag's fps, header.frame_id = the camera frame;
- GT_TOPIC (default /cract/ground_truth): cract/msg/TrackedObject with the image's stamp and
  frame_id, the ground-truth box in x/y/width/height, state TRACKING (LOST where the sequence
  has no box for the frame, with a NaN box), frame_index = the frame's index;
- /clock: rosgraph_msgs/msg/Clock, one per frame with the frame's stamp, so that a player
  with use_sim_time nodes (and ours) follow the recording's time.

Every message is logged at its stamp (the bag's receive time = the capture time), so
`ros2 bag play` replays at the recorded rate.

cract/msg/TrackedObject is not in rosbags' built-in type stores: it is registered from
msg/TrackedObject.msg (the same file rosidl builds), so the message definition stored in the
bag is the real one and other tools (mcap's ROS 2 decoder, Foxglove) can decode it.

Every failure to read a bag is a BagError whose message is one line that says what is wrong
(a missing or corrupt file, a missing topic with the topics that exist, a wrong type).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from cract_ros.conversions import ImageConversionError, compressed_to_bgr, image_to_bgr

REPO_ROOT = Path(__file__).resolve().parents[2]

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
TRACKED_TYPE = "cract/msg/TrackedObject"
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)

DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_GT_TOPIC = "/cract/ground_truth"
CLOCK_TOPIC = "/clock"
DEFAULT_FRAME_ID = "camera"
# 1000 s after the epoch: the same origin as cract_ros.bags.sequence.stamp_of, far from zero (a zero
# stamp means "the newest frame" to ~/set_target).
DEFAULT_START_NS = 1_000_000_000_000

# TrackedObject.state constants (msg/TrackedObject.msg)
IDLE, TRACKING, LOW_CONFIDENCE, LOST = 0, 1, 2, 3


class BagError(RuntimeError):
    """A bag that cannot be used as asked; str() is a one-line reason for the user."""


# ----------------------------------------------------------------------------- type store


def tracked_object_msg_path() -> Path:
    """msg/TrackedObject.msg from the source tree, else from an installed share/cract/msg."""
    candidates = [REPO_ROOT / "msg" / "TrackedObject.msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "cract" / "msg" / "TrackedObject.msg")
    for path in candidates:
        if path.is_file():
            return path
    raise BagError(f"cannot find TrackedObject.msg (looked in {', '.join(str(c) for c in candidates)})")


_TYPESTORE: Any = None


def typestore() -> Any:
    """rosbags' ROS 2 Kilted type store with cract/msg/TrackedObject registered (built once)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        store = get_typestore(Stores.ROS2_KILTED)
        store.register(get_types_from_msg(tracked_object_msg_path().read_text(), TRACKED_TYPE))
        _TYPESTORE = store
    return _TYPESTORE


def split_ns(ns: int) -> tuple[int, int]:
    return int(ns) // 1_000_000_000, int(ns) % 1_000_000_000


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _time(ns: int) -> Any:
    sec, nsec = split_ns(ns)
    return typestore().types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec)


def _header(ns: int, frame_id: str) -> Any:
    return typestore().types["std_msgs/msg/Header"](stamp=_time(ns), frame_id=frame_id)


def image_message(bgr: np.ndarray, ns: int, frame_id: str) -> Any:
    """A rosbags sensor_msgs/Image (bgr8, no row padding) of a BGR uint8 frame."""
    h, w = bgr.shape[:2]
    return typestore().types[IMAGE_TYPE](
        header=_header(ns, frame_id), height=h, width=w, encoding="bgr8", is_bigendian=0, step=w * 3,
        data=np.frombuffer(np.ascontiguousarray(bgr).tobytes(), dtype=np.uint8))


def tracked_object_message(ns: int, frame_id: str, box: Any, state: int, frame_index: int,
                           confidence: float = 1.0, latency_ms: float = 0.0,
                           image_size: Optional[tuple[int, int]] = None) -> Any:
    """A rosbags cract/msg/TrackedObject; offsets and relative size as the node computes them (no
    camera calibration here: bearings NaN, as the node sends them without CameraInfo)."""
    x, y, bw, bh = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    ox = oy = rel = 0.0
    if image_size is not None and all(np.isfinite([x, y, bw, bh])):
        w, h = image_size
        ox = float(np.clip((x + bw / 2 - w / 2) / (w / 2), -1.0, 1.0))
        oy = float(np.clip((y + bh / 2 - h / 2) / (h / 2), -1.0, 1.0))
        rel = float(bw * bh / (w * h))
    return typestore().types[TRACKED_TYPE](
        header=_header(ns, frame_id), x=x, y=y, width=bw, height=bh, confidence=float(confidence),
        state=int(state), frame_index=int(frame_index), latency_ms=float(latency_ms),
        offset_x=ox, offset_y=oy, relative_size=rel, bearing_x=math.nan, bearing_y=math.nan)


def compressed_message(bgr: np.ndarray, ns: int, frame_id: str, fmt: str = "png") -> Any:
    """A rosbags sensor_msgs/CompressedImage as image_transport's compressed plugin writes it."""
    import cv2

    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", bgr)
    if not ok:
        raise BagError(f"OpenCV could not encode a {bgr.shape} frame as {fmt}")
    return typestore().types[COMPRESSED_TYPE](header=_header(ns, frame_id), format=f"bgr8; {fmt} compressed bgr8",
                                              data=np.frombuffer(buf.tobytes(), dtype=np.uint8))


def clock_message(ns: int) -> Any:
    return typestore().types[CLOCK_TYPE](clock=_time(ns))


# ----------------------------------------------------------------------------- writing


class BagWriter:
    """A rosbag2 (mcap) writer that takes rosbags messages or already serialised CDR bytes.

    Used as a context manager; the output directory must not exist yet (rosbag2's own rule). The
    bag is written in a hidden folder beside it (`.<name>.partial-<pid>/<name>`) and renamed to
    its name only when it is complete, so a writer that is killed or fails never leaves a bag
    without its end (a reader would report it truncated): the directory is there whole, or not
    at all. A failed write removes its partial folder; a killed one leaves it, hidden, for
    `remove_partial_bags` (the next writer beside it calls it).
    """

    def __init__(self, out_dir: Path | str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(out_dir)
        if self.path.exists():
            raise BagError(f"{self.path} already exists: rosbag2 writes a new directory (remove it or choose another)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_partial_bags(self.path)
        self._partial_root = self.path.parent / f".{self.path.name}.partial-{os.getpid()}"
        self._partial = self._partial_root / self.path.name  # the bag's files keep their final names
        self._partial_root.mkdir()
        # version 8: what Humble..Kilted's rosbag2 all read
        self._writer = Writer(self._partial, version=8, storage_plugin=StoragePlugin.MCAP)
        self._connections: dict[str, Any] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        import shutil

        from cract_core.atomic import fsync_dir

        try:
            self._writer.close()
            if exc_type is None:
                for f in self._partial.iterdir():  # the bag's bytes on the disk before it gets its name
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
                os.rename(self._partial, self.path)
                fsync_dir(self.path.parent)
        finally:
            shutil.rmtree(self._partial_root, ignore_errors=True)

    def _connection(self, topic: str, msgtype: str) -> Any:
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=typestore())
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(f"topic {topic} already holds {conn.msgtype}, cannot also write {msgtype}")
        return conn

    def write(self, topic: str, msgtype: str, log_ns: int, msg: Any) -> None:
        self.write_raw(topic, msgtype, log_ns, typestore().serialize_cdr(msg, msgtype))

    def write_raw(self, topic: str, msgtype: str, log_ns: int, data: bytes | memoryview) -> None:
        self._writer.write(self._connection(topic, msgtype), int(log_ns), data)


def remove_partial_bags(path: Path) -> list[Path]:
    """Delete the hidden partial folders that killed writers of the bag `path` left, unless their
    process still runs; returns them."""
    import shutil

    removed = []
    for partial in path.parent.glob(f".{path.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and Path(f"/proc/{pid}").exists():
            continue  # another writer at work
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial)
    return removed


def sequence_fps(seq_dir: Path | str) -> tuple[Optional[float], str]:
    """The frame rate a sequence folder's source.json implies, and why (None when it says nothing).

    UAV123@10fps sequences are 10 fps, OTB/UAV123/DTB70 30 fps; either divided by the
    source.json's frame_stride (only every n-th frame was kept). An explicit 'fps' wins.
    """
    meta_path = Path(seq_dir) / "source.json"
    if not meta_path.is_file():
        return None, "no source.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"{meta_path} unreadable ({exc})"
    # one owner of the rule: the eval toolkit's folder loader
    from cract_core.datasets.formats import folder_fps

    fps = folder_fps(meta)
    if fps is None:
        return None, f"origin {meta.get('origin')!r} has no known frame rate"
    stride = meta.get("frame_stride") or meta.get("stride") or 1
    return fps, f"source.json: {meta.get('origin')}, frame_stride {stride}"


@dataclass
class WrittenBag:
    path: Path
    frames: int
    fps: float
    image_size: tuple[int, int]  # (width, height) of the first frame
    stamps_ns: list[int]
    image_topic: str = DEFAULT_IMAGE_TOPIC


def write_sequence_bag(seq_dir: Path | str, out_dir: Path | str, fps: float = 30.0,
                       image_topic: str = DEFAULT_IMAGE_TOPIC, gt_topic: str = DEFAULT_GT_TOPIC,
                       frame_id: str = DEFAULT_FRAME_ID, max_frames: Optional[int] = None,
                       start_ns: int = DEFAULT_START_NS, compressed: Optional[str] = None) -> WrittenBag:
    """A folder sequence (img/ + optional groundtruth.txt) -> a rosbag2 directory (see the module doc).

    Frames are decoded with cv2.imread (the bytes the evaluation toolkit tracks on) and stored as
    bgr8; frame i is stamped start_ns + i / fps. compressed="png" (lossless: the same pixels) or
    "jpeg" stores sensor_msgs/CompressedImage instead, on image_topic + "/compressed" as
    image_transport names it.
    """
    if compressed not in (None, "png", "jpeg"):
        raise BagError(f"compressed must be png or jpeg, got {compressed!r}")
    if compressed and not image_topic.endswith("/compressed"):
        image_topic = image_topic.rstrip("/") + "/compressed"
    from cract_ros.bags.sequence import frame_paths, read_frames, read_groundtruth

    if not (fps > 0 and np.isfinite(fps)):
        raise BagError(f"--fps must be a positive number, got {fps}")
    seq_dir = Path(seq_dir)
    paths = frame_paths(seq_dir)[:max_frames]
    gt = read_groundtruth(seq_dir)
    stamps: list[int] = []
    size = (0, 0)
    with BagWriter(out_dir) as bag:
        for i, bgr in enumerate(read_frames(seq_dir, len(paths))):
            ns = start_ns + int(round(i * 1e9 / fps))
            stamps.append(ns)
            if i == 0:
                size = (bgr.shape[1], bgr.shape[0])
            # /clock first: a sim-time subscriber's clock has reached the frame when it arrives
            bag.write(CLOCK_TOPIC, CLOCK_TYPE, ns, clock_message(ns))
            if compressed:
                bag.write(image_topic, COMPRESSED_TYPE, ns, compressed_message(bgr, ns, frame_id, compressed))
            else:
                bag.write(image_topic, IMAGE_TYPE, ns, image_message(bgr, ns, frame_id))
            if gt is not None and i < len(gt):
                box = gt[i]
                ok = bool(np.all(np.isfinite(box)) and box[2] > 0 and box[3] > 0)
                bag.write(gt_topic, TRACKED_TYPE, ns, tracked_object_message(
                    ns, frame_id, box if ok else [np.nan] * 4, TRACKING if ok else LOST, i,
                    confidence=1.0 if ok else 0.0, image_size=(bgr.shape[1], bgr.shape[0])))
    return WrittenBag(Path(out_dir), len(stamps), float(fps), size, stamps, image_topic)


# ----------------------------------------------------------------------------- reading


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class TopicInfo:
    name: str
    msgtype: str
    count: int


class Bag:
    """A rosbag2 directory (or a single .mcap / .db3 file's directory) opened for reading.

    Opening checks that the bag can be read at all; topic() checks a topic exists with one of
    the wanted types. Iteration re-reads the file each time (bags can be larger than memory).
    """

    def __init__(self, path: Path | str) -> None:
        from rosbags.rosbag2 import Reader

        path = Path(path)
        if path.is_file() and path.suffix in (".mcap", ".db3"):
            path = path.parent  # a rosbag2 directory is what the reader wants
        if not path.exists():
            raise BagError(f"bag {path} does not exist")
        if not (path / "metadata.yaml").is_file():
            raise BagError(f"{path} is not a rosbag2 directory: metadata.yaml is missing")
        self.path = path
        self._reader_cls = Reader
        try:
            with Reader(path) as reader:
                self.topics = {name: TopicInfo(name, t.msgtype or "?", int(t.msgcount))
                               for name, t in reader.topics.items()}
                self.start_ns, self.end_ns = int(reader.start_time), int(reader.end_time)
                self.message_count = int(reader.message_count)
        except BagError:
            raise
        except Exception as exc:  # ReaderError, yaml, mcap record errors: all mean "unreadable"
            raise BagError(f"cannot read bag {path}: {_one_line(exc)}") from None

    def describe_topics(self) -> str:
        return ", ".join(f"{t.name} ({t.msgtype}, {t.count})" for t in self.topics.values()) or "none"

    def topic(self, name: str, types: tuple[str, ...], role: str = "topic") -> TopicInfo:
        info = self.topics.get(name)
        if info is None:
            raise BagError(f"{role} {name} is not in bag {self.path}; its topics: {self.describe_topics()}")
        if info.msgtype not in types:
            raise BagError(f"{role} {name} in bag {self.path} has type {info.msgtype}, expected "
                           f"{' or '.join(types)}")
        if info.count == 0:
            raise BagError(f"{role} {name} in bag {self.path} has no messages")
        return info

    def messages(self, topics: list[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, log time ns, raw CDR bytes) in log-time order."""
        try:
            with self._reader_cls(self.path) as reader:
                conns = [c for c in reader.connections if c.topic in topics]
                for conn, log_ns, raw in reader.messages(connections=conns):
                    yield conn.topic, conn.msgtype, int(log_ns), bytes(raw)
        except BagError:
            raise
        except Exception as exc:  # a corrupt or truncated chunk is found only while reading
            raise BagError(f"cannot read messages of bag {self.path}: {_one_line(exc)}") from None

    def decode(self, raw: bytes, msgtype: str) -> Any:
        try:
            return typestore().deserialize_cdr(raw, msgtype)
        except Exception as exc:
            raise BagError(f"a {msgtype} message in bag {self.path} does not decode: {_one_line(exc)}") from None


@dataclass
class BagFrame:
    index: int
    stamp_ns: int
    log_ns: int
    frame_id: str
    raw: bytes  # the CDR message as stored (what a player publishes)
    msgtype: str


def frame_to_bgr(bag: Bag, frame: BagFrame) -> np.ndarray:
    msg = bag.decode(frame.raw, frame.msgtype)
    try:
        return compressed_to_bgr(msg) if frame.msgtype == COMPRESSED_TYPE else image_to_bgr(msg)
    except ImageConversionError as exc:
        raise BagError(f"image {frame.index} (stamp {frame.stamp_ns}) in bag {bag.path} is not usable: {exc}") from None


@dataclass
class SequenceData:
    """The image frames of a bag (raw, decoded on demand) and the ground truth matched by stamp."""

    bag: Bag
    image_topic: str
    frames: list[BagFrame]
    groundtruth: Optional[np.ndarray]  # (N, 4) xywh per frame, NaN where none; None without a GT topic
    clock: list[tuple[int, bytes]]  # (log ns, raw /clock) as recorded

    def image(self, index: int) -> np.ndarray:
        return frame_to_bgr(self.bag, self.frames[index])

    @property
    def stamps_ns(self) -> list[int]:
        return [f.stamp_ns for f in self.frames]


def load_sequence(path: Path | str, image_topic: str = DEFAULT_IMAGE_TOPIC, gt_topic: Optional[str] = DEFAULT_GT_TOPIC,
                  max_frames: Optional[int] = None) -> SequenceData:
    """Read a bag's image topic (raw bytes, in order) and its ground truth, matched to the images by stamp.

    A ground-truth message whose stamp matches no image is ignored; an image without one gets
    a NaN row (not scored). gt_topic=None reads no ground truth.
    """
    bag = Bag(path)
    img_info = bag.topic(image_topic, IMAGE_TYPES, "image topic")
    topics = [image_topic]
    if gt_topic:
        bag.topic(gt_topic, (TRACKED_TYPE,), "ground-truth topic")
        topics.append(gt_topic)
    if CLOCK_TOPIC in bag.topics and bag.topics[CLOCK_TOPIC].msgtype == CLOCK_TYPE:
        topics.append(CLOCK_TOPIC)
    frames: list[BagFrame] = []
    gt_by_stamp: dict[int, np.ndarray] = {}
    clock: list[tuple[int, bytes]] = []
    for topic, msgtype, log_ns, raw in bag.messages(topics):
        if topic == image_topic:
            if max_frames is not None and len(frames) >= max_frames:
                continue
            msg = bag.decode(raw, msgtype)  # only the header is used here; data is a view
            frames.append(BagFrame(len(frames), stamp_ns(msg.header.stamp), log_ns, str(msg.header.frame_id),
                                   raw, msgtype))
        elif topic == gt_topic:
            msg = bag.decode(raw, msgtype)
            box = np.array([msg.x, msg.y, msg.width, msg.height], dtype=np.float64)
            if int(msg.state) in (IDLE, LOST):
                box[:] = np.nan  # no box known for this frame
            gt_by_stamp[stamp_ns(msg.header.stamp)] = box
        elif topic == CLOCK_TOPIC:
            clock.append((log_ns, raw))
    if not frames:
        raise BagError(f"image topic {image_topic} in bag {bag.path} has no readable messages "
                       f"(metadata says {img_info.count})")
    gt = None
    if gt_topic:
        gt = np.full((len(frames), 4), np.nan)
        for i, f in enumerate(frames):
            if f.stamp_ns in gt_by_stamp:
                gt[i] = gt_by_stamp[f.stamp_ns]
        if not np.isfinite(gt).all(axis=1).any():
            raise BagError(f"no message on ground-truth topic {gt_topic} has the stamp of an image on {image_topic}")
    return SequenceData(bag, image_topic, frames, gt, clock)
