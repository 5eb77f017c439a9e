"""The cract_core Tracker the node runs, built from the node's parameters and warmed up (no ROS in
here; the tests build the offline tracker with the same function)."""
from __future__ import annotations

from typing import Any, Optional

import cv2
import numpy as np


def build_tracker(settings: dict) -> Any:
    """The cract_core Tracker the node runs, from the node's parameters.

    The model config (model_config, or the built-in default) gets the node's runtime values
    (alpha, beta, thresholds, K) written over it where they are set; at FROM_MODEL_CONFIG (-1)
    the model config's own value stays.
    """
    import torch

    from cract_core.config import default_config_path, load_config, validate
    from cract_core.tracker import Tracker
    from cract_ros.node.settings import resolve_tracker_values
    from cract_ros.parameters import apply_model_runtime

    if settings.get("num_threads", 0) > 0:
        torch.set_num_threads(int(settings["num_threads"]))
        # the crop's warp too: OpenCV's own pool would take the cores the network was given
        cv2.setNumThreads(int(settings["num_threads"]))
    cfg = load_config(settings.get("model_config") or default_config_path())
    for name, value in resolve_tracker_values(settings, None).items():  # those not left to the model
        section, kind = Tracker.RUNTIME_PARAMS[name]
        setattr(getattr(cfg, section), name, kind(value))
    apply_model_runtime(cfg, settings)  # the node's runtime parameter, when set
    validate(cfg)  # a value set here against one left to the model (lost above the model's low)
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


def model_tracker_values(tracker: Any) -> Optional[dict]:
    """The tracker parameters the loaded tracker runs with (its config's), or None for a tracker
    without a config."""
    from cract_ros.node.settings import TRACKER_RUNTIME_PARAMS

    cfg = getattr(tracker, "cfg", None)
    runtime = getattr(tracker, "RUNTIME_PARAMS", None)
    if cfg is None or runtime is None:
        return None
    return {name: getattr(getattr(cfg, runtime[name][0]), name) for name in TRACKER_RUNTIME_PARAMS}
