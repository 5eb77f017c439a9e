"""What the node's threads hand each other: a received Frame (converted on first use) and a Request
for the tracker's thread (init, clear, params, release, time_jump), and the stamp helpers both use."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from cract_ros.conversions import compressed_to_bgr, image_to_bgr


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def format_stamp(stamp: Any) -> str:
    return f"{int(stamp.sec)}.{int(stamp.nanosec):09d}"


def format_ns(ns: int) -> str:
    sec, nsec = divmod(int(ns), 1_000_000_000)
    return f"{sec}.{nsec:09d}"


@dataclass
class Frame:
    header: Any
    msg: Any
    compressed: bool
    received: float  # time.monotonic() at receipt
    _bgr: Optional[np.ndarray] = None

    @property
    def stamp_ns(self) -> int:
        return stamp_to_ns(self.header.stamp)

    def size(self) -> tuple[int, int]:
        """(width, height) of the image: from the header of a raw image, by decoding a compressed one."""
        if self.compressed:
            h, w = self.bgr().shape[:2]
            return w, h
        return int(self.msg.width), int(self.msg.height)

    def bgr(self) -> np.ndarray:
        """Converted once, on first use (dropped frames are never converted)."""
        if self._bgr is None:
            self._bgr = compressed_to_bgr(self.msg) if self.compressed else image_to_bgr(self.msg)
        return self._bgr


@dataclass
class Request:
    """A command for the tracker's thread; the caller may wait on `done`."""
    kind: str  # "init", "clear", "params", "release" (deactivation), "time_jump" (the clock went back)
    frame: Optional[Frame] = None
    box: Optional[np.ndarray] = None
    params: dict = field(default_factory=dict)
    source: str = ""
    waited: bool = False  # the caller waits for the answer (and counts a refusal itself)
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    success: bool = False
    message: str = ""

    def finish(self, success: bool, message: str) -> None:
        self.success, self.message = success, message
        self.done.set()
