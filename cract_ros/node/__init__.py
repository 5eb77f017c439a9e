"""The tracker node: camera images in, cract/msg/TrackedObject out, a target set by service or topic.

One module per responsibility (tracker_node.py's docstring tells the states and threads):

- tracker_node: TrackerNode, the wiring (entities, callback groups, parameters) and the lifecycle
- settings:     the node's parameters (PARAMETERS) and their joint checks
- model:        the cract_core Tracker the node runs (build_tracker, warm_up)
- work:         what the threads hand each other (Frame, Request) and the stamp helpers
- frames:       the frame buffer, stamp look-up, calibrations and bearings (image group)
- targets:      ~/set_target, ~/clear_target, ~/target and their validation (service group)
- worker:       the tracker's thread: requests between frames, track, publish
- diagnostics:  /diagnostics and the image watchdog (timer group)
- memory:       RSS / CUDA / model sizes and giving freed memory back
- process_exit: main(): spin, shut down, end the process

`cract_ros.node:main` is the console script; `python -m cract_ros.node` runs it too.
"""
from cract_ros.node.frames import Calibrations, find_frame
from cract_ros.node.memory import cuda_allocated_mib, model_tensor_mib, process_rss_mib, release_memory, trim_heap
from cract_ros.node.model import build_tracker, warm_up
from cract_ros.node.process_exit import main, spin_until_finished
from cract_ros.node.settings import (NODE_NAME, PARAMETERS, STATE_NAMES, TRACKER_RUNTIME_PARAMS, NodeStartupError,
                                     check_parameters)
from cract_ros.node.targets import MIN_TARGET_PX, target_box_problem
from cract_ros.node.tracker_node import TrackerNode
from cract_ros.node.work import Frame, Request, format_ns, format_stamp, stamp_to_ns
from cract_ros.node.worker import draw_debug

__all__ = ["Calibrations", "Frame", "MIN_TARGET_PX", "NODE_NAME", "NodeStartupError", "PARAMETERS", "Request",
           "STATE_NAMES", "TRACKER_RUNTIME_PARAMS", "TrackerNode", "build_tracker", "check_parameters",
           "cuda_allocated_mib", "draw_debug", "find_frame", "format_ns", "format_stamp", "main", "model_tensor_mib",
           "process_rss_mib", "release_memory", "spin_until_finished", "stamp_to_ns", "target_box_problem",
           "trim_heap", "warm_up"]
