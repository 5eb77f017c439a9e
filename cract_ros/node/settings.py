"""The tracker node's parameters (every one declared, described and bounded here; config/cract.yaml
holds their values) and the rules that tie several of them together."""
from __future__ import annotations

from typing import Optional

from cract_ros.parameters import MODEL_RUNTIME_PARAMS, ParamSpec, check_values

NODE_NAME = "cract_tracker"
STATE_NAMES = {0: "IDLE", 1: "TRACKING", 2: "LOW_CONFIDENCE", 3: "LOST"}
# a tracker parameter (alpha, beta, thresholds, K) at this value takes the model config's own
FROM_MODEL_CONFIG = -1


def left_to_model(kind: type, description: str, **bounds: float) -> ParamSpec:
    """A runtime tracker parameter that defaults to FROM_MODEL_CONFIG (the model config's value)."""
    unset = kind(FROM_MODEL_CONFIG)
    return ParamSpec(unset, f"{description}; -1 = the model config's", runtime=True, unset=unset, **bounds)


PARAMETERS: dict[str, ParamSpec] = {
    # lifecycle
    "autostart": ParamSpec(True, "configure and activate at start (ros2 run tracks at once); false: stay "
                           "unconfigured until a lifecycle manager drives the node", startup=True),
    # model
    "model_config": ParamSpec("", "experiment YAML (config/model/*.yaml); empty = the built-in default"),
    "checkpoint": ParamSpec("", "trained heads (.pt); empty = the checkpoint the model config names"),
    "device": ParamSpec("auto", "where the network runs: auto (CUDA when present), cpu or cuda",
                        choices=("auto", "cpu", "cuda")),
    # 1: measured faster than 2 on a 2-core machine for both runtimes (docs/runtime.md: bench_runtime.py)
    "num_threads": ParamSpec(1, "CPU threads of the network (torch and onnxruntime); 0 = torch's default (all cores)",
                             minimum=0),
    **MODEL_RUNTIME_PARAMS,  # runtime: torch | onnxruntime (docs/runtime.md)
    "tracker_mode": ParamSpec("async", "async: discriminator updates on the tracker's worker, off the frame path; "
                              "sync: inside the frame (deterministic, for evaluation)", choices=("async", "sync")),
    "warmup": ParamSpec(True, "run the network on a synthetic frame at configure so the first real frame is not slow"),
    # input
    "image_topic": ParamSpec("image", "image topic (relative names resolve in the node's namespace; remappable)"),
    "image_transport": ParamSpec("raw", "raw: sensor_msgs/Image on image_topic; compressed: "
                                 "sensor_msgs/CompressedImage on image_topic + '/compressed'",
                                 choices=("raw", "compressed")),
    "camera_info_topic": ParamSpec("camera_info", "sensor_msgs/CameraInfo of the camera (remappable); its "
                                   "calibration gives TrackedObject's bearings; empty = none (bearings NaN)"),
    "image_is_rectified": ParamSpec(False, "the image is rectified (image_proc's image_rect): bearings from "
                                    "CameraInfo's P without distortion; false: from K and D (image_raw)"),
    "lockstep": ParamSpec(False, "process every frame in arrival order instead of only the newest "
                          "(bag evaluation, tests, lock-step simulation); nothing is dropped", runtime=True),
    "frame_buffer_size": ParamSpec(30, "frames kept for ~/set_target's stamp look-up", minimum=1),
    "target_topic_type": ParamSpec("tracked_object", "message type of ~/target: tracked_object "
                                   "(cract/msg/TrackedObject, its header stamp picks the frame) or roi "
                                   "(sensor_msgs/RegionOfInterest, the newest frame)",
                                   choices=("tracked_object", "roi")),
    # tracker (runtime: applied through Tracker.set_params).  -1 (FROM_MODEL_CONFIG): the model
    # config's own value, so a model whose confidence has another scale (the cascade's score:
    # 0.45 / 0.2) keeps its thresholds; a value here is written over the model config's.
    "alpha": left_to_model(float, "s = alpha * v+ + (1 - alpha) * tau (Eq. 9)", minimum=0.0, maximum=1.0),
    "beta": left_to_model(float, "final score beta * s + (1 - beta) * c (Eq. 10)", minimum=0.0, maximum=1.0),
    "low_confidence": left_to_model(float, "confidence below this: LOW_CONFIDENCE", minimum=0.0, maximum=1.0),
    "lost_confidence": left_to_model(float, "confidence below this for a few frames: LOST (<= low_confidence)",
                                     minimum=0.0, maximum=1.0),
    "update_interval": left_to_model(int, "K: frames between discriminator updates", minimum=1),
    # output
    "debug_image": ParamSpec(True, "publish ~/debug_image (box drawn) while someone subscribes to it", runtime=True),
    "diagnostics_period_s": ParamSpec(1.0, "period of /diagnostics", minimum=0.0, exclusive_minimum=True,
                                      startup=True),
    "watchdog_timeout_s": ParamSpec(2.0, "no image for this long while tracking: state LOST and a warning",
                                    runtime=True, minimum=0.0, exclusive_minimum=True),
    "init_timeout_s": ParamSpec(30.0, "how long ~/set_target waits for the tracker's thread", runtime=True,
                                minimum=0.0, exclusive_minimum=True),
    # tests
    "test_hold_updates": ParamSpec(False, "test only: true holds the discriminator solver (the tracker's "
                                   "online.solve_gate) so that no new weights arrive; false releases it",
                                   runtime=True),
}

# node parameter -> keyword of Tracker.set_params
TRACKER_RUNTIME_PARAMS = ("alpha", "beta", "low_confidence", "lost_confidence", "update_interval")


class NodeStartupError(RuntimeError):
    """The node cannot start or configure: a bad parameter, or the model would not load."""


def resolve_tracker_values(values: dict, model_values: Optional[dict]) -> dict:
    """The tracker parameters of ``values`` as the tracker gets them: FROM_MODEL_CONFIG replaced by
    ``model_values`` (the loaded model config's; None before a model is loaded: left out)."""
    out = {}
    for name in TRACKER_RUNTIME_PARAMS:
        if name not in values:
            continue
        if values[name] != FROM_MODEL_CONFIG:
            out[name] = values[name]
        elif model_values is not None:
            out[name] = model_values[name]
    return out


def check_parameters(values: dict, model_values: Optional[dict] = None) -> list[str]:
    """Every reason why the node's parameter values are not acceptable together (``model_values``:
    the loaded model config's, for the parameters left to it)."""
    problems = check_values(PARAMETERS, values)
    if problems:
        return problems
    resolved = resolve_tracker_values(values, model_values)
    if "lost_confidence" in resolved and "low_confidence" in resolved \
            and resolved["lost_confidence"] > resolved["low_confidence"]:
        problems.append(f"lost_confidence ({resolved['lost_confidence']}) must be <= low_confidence "
                        f"({resolved['low_confidence']})")
    return problems
