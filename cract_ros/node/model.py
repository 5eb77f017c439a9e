"""The cract_core Tracker the node runs, built from the node's parameters and warmed up (no ROS in
here; the tests build the offline tracker with the same function)."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def build_tracker(settings: dict) -> Any:
    """The cract_core Tracker the node runs, from the node's parameters.

    The model config (model_config, or the built-in default) gets the node's runtime values
    (alpha, beta, thresholds, K) written over it, so config/cract.yaml is the one place a user
    sets them.
    """
    import torch

    from cract_core.config import default_config_path, load_config
    from cract_core.tracker import Tracker
    from cract_ros.parameters import apply_model_runtime

    if settings.get("num_threads", 0) > 0:
        torch.set_num_threads(int(settings["num_threads"]))
        # the crop's warp too: OpenCV's own pool would take the cores the network was given
        cv2.setNumThreads(int(settings["num_threads"]))
    cfg = load_config(settings.get("model_config") or default_config_path())
    cfg.crac.alpha = float(settings["alpha"])
    cfg.crac.beta = float(settings["beta"])
    cfg.tracker.low_confidence = float(settings["low_confidence"])
    cfg.tracker.lost_confidence = float(settings["lost_confidence"])
    cfg.online.update_interval = int(settings["update_interval"])
    apply_model_runtime(cfg, settings)  # the node's runtime parameter, when set
    return Tracker.from_config(cfg, checkpoint=settings.get("checkpoint") or None,
                               device=settings.get("device", "auto"), mode=settings.get("tracker_mode", "async"))


def warm_up(tracker: Any) -> None:
    """One init and two tracks on a synthetic 640x480 frame: allocations and kernel choices happen now."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    cv2.rectangle(img, (280, 200), (360, 280), (0, 0, 255), -1)
    tracker.init(img, np.array([280.0, 200.0, 80.0, 80.0]))
    for _ in range(2):
        tracker.track(img)
