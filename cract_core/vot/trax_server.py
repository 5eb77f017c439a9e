"""cract-trax: cract (or an OpenCV baseline) as a TraX server, for vot-toolkit and any TraX client.

    cract-trax                                   # the shipped default config
    cract-trax --config cract_nanotrack_cascade.yaml --threads 1
    cract-trax --baseline nanotrack              # OpenCV NanoTrack V2 with ../shared/models' files

Protocol (vot-trax's ``trax.Server``): rectangle regions, images as file paths, the color channel,
one object.  ``initialize`` (re-)starts the tracker on the given box and echoes it; each
``frame`` answers the tracker's box with its ``confidence`` property (and ``state``: TRACKING,
LOW_CONFIDENCE or LOST for cract); ``quit`` ends the session with exit status 0.

LOST is reported as the box the tracker holds, with its (low) confidence, never as an empty
region: VOT-LT asks every frame for a position and a certainty and lets the analysis decide
presence by thresholding the certainty (precision/recall over all thresholds, F at the best), so
a low-confidence box is what the measure is built for, and it also keeps the box the tracker
will search around.  vot-toolkit would score an empty region at a threshold it passes as a
prediction with overlap 1 on absent frames (raster overlap of two empty regions), not as "no
prediction" as the VOT-LT papers define it.  docs/vot.md has the longer reasoning.

A request cract-trax cannot serve (a frame before any initialisation, a region that is not a box,
an image that cannot be read, several objects) ends the session with TraX's ``quit`` carrying the
reason, exit status 1, and one line on stderr; no traceback.  Without vot-trax installed the
command says which package to install and exits 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence as Seq

import numpy as np

from cract_core.eval.trackers import BASELINE_MODEL_FILES, ENV_SHARED_MODELS, shared_models_dir
from cract_core.vot import EXIT_MISSING_EXTRA, TRAX_REQUIREMENT, install_hint

PROG = "cract-trax"
# Registered baselines of cract_core.eval.trackers that can sit behind the server.
BASELINES = ("nanotrack", "vittrack", "csrt", "kcf", "mil")


class RequestError(Exception):
    """A request this server cannot serve; the message goes to the client as the quit reason."""


@dataclass
class Step:
    """One frame's answer: box ``x, y, w, h`` (NaN where none), confidence (None: the tracker has none), state."""

    box: np.ndarray
    confidence: Optional[float]
    state: str = ""


class FrameTracker(Protocol):
    def init(self, image: np.ndarray, box: np.ndarray) -> None: ...

    def track(self, image: np.ndarray) -> Step: ...


class CractFrameTracker:
    """cract_core.tracker.Tracker through its public API only (from_config / init / track)."""

    def __init__(self, config: Optional[str] = None, checkpoint: Optional[str] = None, device: str = "auto") -> None:
        from cract_core.config import default_config_path, load_config
        from cract_core.tracker import Tracker

        cfg = load_config(config or default_config_path())
        # sync: the update is solved in the frame that starts it, as cract-eval runs it, so the same
        # frames give the same boxes here and there.
        self._tracker = Tracker.from_config(cfg, checkpoint=checkpoint, device=device, mode="sync")

    def init(self, image: np.ndarray, box: np.ndarray) -> None:
        self._tracker.init(image, box)

    def track(self, image: np.ndarray) -> Step:
        res = self._tracker.track(image)
        state = getattr(res.state, "name", str(res.state))
        return Step(np.asarray(res.box, dtype=np.float64).reshape(-1), float(res.confidence), state)

    def close(self) -> None:
        self._tracker.close()


class BaselineFrameTracker:
    """A baseline registered in cract_core.eval.trackers (the same adapter cract-eval runs)."""

    def __init__(self, name: str, **options: Any) -> None:
        from cract_core.eval import trackers as trk

        self._split = trk.split_result
        self._tracker = trk.create(name, **options)

    def init(self, image: np.ndarray, box: np.ndarray) -> None:
        self._tracker.init(image, box)

    def track(self, image: np.ndarray) -> Step:
        box, confidence = self._split(self._tracker.update(image))
        return Step(box, confidence, str(getattr(self._tracker, "last_state", "") or ""))

    def close(self) -> None:
        close = getattr(self._tracker, "close", None)
        if callable(close):
            close()


def baseline_options(args: argparse.Namespace) -> dict[str, str]:
    """The baselines' model files: the command line's, else the shared models folder's."""
    models = Path(args.models_dir) if args.models_dir else shared_models_dir()
    return {key: str(getattr(args, key) or models / rel) for key, rel in BASELINE_MODEL_FILES.items()}


# ------------------------------------------------------------------------------------- regions


def region_box(region: Any) -> np.ndarray:
    """A TraX rectangle (or polygon: its min/max rectangle, as vot-toolkit converts) -> xywh floats."""
    import trax

    if isinstance(region, trax.Rectangle):
        box = np.asarray(region.bounds(), dtype=np.float64)
    elif isinstance(region, trax.Polygon):
        pts = np.asarray([region.get(i) for i in range(region.size())], dtype=np.float64).reshape(-1, 2)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        box = np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
    else:
        raise RequestError(f"the initialisation region must be a rectangle, got {region}")
    if not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
        raise RequestError(f"the initialisation region {box.tolist()} is not a box (width and height must be > 0)")
    return box


def box_region(box: np.ndarray) -> Any:
    """xywh -> a TraX rectangle; a frame without a box (NaN or empty) -> the empty region (special 0)."""
    import trax

    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.size == 4 and np.all(np.isfinite(b)) and b[2] > 0 and b[3] > 0:
        return trax.Rectangle.create(float(b[0]), float(b[1]), float(b[2]), float(b[3]))
    return trax.Special.create(0)


def step_properties(step: Step) -> dict[str, str]:
    """The frame's TraX properties: ``confidence`` (when the tracker has one) and ``state``."""
    props: dict[str, str] = {}
    if step.confidence is not None and np.isfinite(step.confidence):
        props["confidence"] = f"{float(step.confidence):.6f}"
    if step.state:
        props["state"] = step.state
    return props


def read_image(images: Any) -> np.ndarray:
    """The request's color image (a file path) as uint8 BGR."""
    import cv2

    image = (images or {}).get("color")
    if image is None:
        raise RequestError("the request carries no color image")
    if image.type() != "path":
        raise RequestError(f"images must be file paths, got a {image.type()} image")
    path = image.path()
    data = cv2.imread(path, cv2.IMREAD_COLOR)
    if data is None:
        raise RequestError(f"cannot read image {path}")
    return data


# --------------------------------------------------------------------------------------- server


def serve(server: Any, make_tracker: Callable[[], FrameTracker]) -> int:
    """Answer requests until quit (0) or a request that cannot be served (1, quit with the reason)."""
    import trax

    tracker: Optional[FrameTracker] = None
    initialized = False
    while True:
        try:
            request = server.wait()
        except trax.TraxException as exc:
            # The client broke the protocol (or went away): say so once and stop.
            return _fail(server, f"bad request: {exc}")
        if request.type == trax.TraxStatus.QUIT:
            return 0
        try:
            if request.type == trax.TraxStatus.INITIALIZE:
                if len(request.objects or []) != 1:
                    raise RequestError(f"one object is tracked, the request has {len(request.objects or [])}")
                box = region_box(request.objects[0][0])
                image = read_image(request.image)
                if tracker is None:
                    tracker = make_tracker()
                initialized = False
                try:
                    tracker.init(image, box)
                except ValueError as exc:  # the tracker refuses the box (wholly outside, too small)
                    raise RequestError(f"cannot initialise on {box.tolist()}: {exc}") from None
                initialized = True
                server.status([(box_region(box), {})])
            elif request.type == trax.TraxStatus.FRAME:
                if not initialized or tracker is None:
                    raise RequestError("a frame request before any initialisation")
                if request.objects:
                    raise RequestError("new objects in a frame request: this server tracks one object")
                step = tracker.track(read_image(request.image))
                server.status([(box_region(step.box), step_properties(step))])
            else:
                raise RequestError(f"unexpected request {request.type}")
        except RequestError as exc:
            return _fail(server, str(exc))
        except trax.TraxException as exc:
            return _fail(server, f"cannot answer: {exc}")
        except Exception as exc:  # the tracker itself failed: the client hears why, the log has the trace
            logging.getLogger(PROG).debug("tracker error", exc_info=True)
            return _fail(server, f"tracker error: {type(exc).__name__}: {exc}")


def _fail(server: Any, reason: str) -> int:
    print(f"{PROG}: error: {reason}", file=sys.stderr)
    try:
        server.quit(reason=reason)
    except Exception:  # the stream may be gone already; the exit status still says it
        pass
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="cract (or an OpenCV baseline) as a TraX server for vot-toolkit.")
    p.add_argument("--config", default=None,
                   help="cract config: a YAML path or a bare name of config/model/ (default: the shipped default)")
    p.add_argument("--checkpoint", default=None, help="cract heads checkpoint (default: the config's)")
    p.add_argument("--device", default="auto", help="cract device: auto, cpu, cuda, ...")
    p.add_argument("--baseline", choices=BASELINES, default=None,
                   help="serve this OpenCV baseline (cract_core.eval.trackers) instead of cract")
    p.add_argument("--models-dir", default=None,
                   help=f"the baselines' model folder (default: ${ENV_SHARED_MODELS}, else ../shared/models)")
    p.add_argument("--nanotrack-backbone", default=None, help="NanoTrack backbone ONNX (default: in --models-dir)")
    p.add_argument("--nanotrack-neckhead", default=None, help="NanoTrack neck-head ONNX (default: in --models-dir)")
    p.add_argument("--vittrack-model", default=None, help="VitTrack ONNX (default: in --models-dir)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (torch and OpenCV); default: theirs")
    p.add_argument("--log", default=None, help="write the TraX protocol log to this file")
    p.add_argument("--debug", action="store_true", help="log tracker errors with their traceback on stderr")
    return p


def _set_threads(threads: Optional[int], torch_too: bool) -> None:
    if threads is None:
        return
    import cv2

    cv2.setNumThreads(threads)
    if torch_too:
        import torch

        torch.set_num_threads(threads)


def main(argv: Optional[Seq[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr)
    if args.threads is not None and args.threads < 1:
        print(f"{PROG}: error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    try:
        import trax
    except (ImportError, OSError) as exc:  # OSError: the package is there but libtrax.so does not load
        print(f"{PROG}: error: the TraX protocol needs the vot-trax package ({exc}); install it: "
              f"{install_hint(TRAX_REQUIREMENT)}", file=sys.stderr)
        return EXIT_MISSING_EXTRA

    if args.baseline:
        if args.config or args.checkpoint:
            print(f"{PROG}: error: --config/--checkpoint are cract's; --baseline {args.baseline} takes neither",
                  file=sys.stderr)
            return 2
        name = args.baseline
        _set_threads(args.threads, torch_too=False)
        try:  # OpenCV loads these in a moment: a missing model file is an error before the handshake
            baseline = BaselineFrameTracker(name, **baseline_options(args))
        except Exception as exc:
            print(f"{PROG}: error: cannot build {name}: {exc}", file=sys.stderr)
            return 2

        def make_tracker() -> FrameTracker:
            return baseline
    else:
        # Read the config before the handshake, so a bad name is a clear error and exit status 2
        # (the heavy part, torch and the weights, loads after it: TraX clients time the handshake).
        from cract_core.config import ConfigError, default_config_path, load_config

        try:
            load_config(args.config or default_config_path())
        except (ConfigError, OSError) as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
        name = "cract"

        def make_tracker() -> FrameTracker:
            _set_threads(args.threads, torch_too=True)
            return CractFrameTracker(args.config, args.checkpoint, args.device)

    server = trax.Server([trax.Region.RECTANGLE], [trax.Image.PATH], ["color"], tracker_name=name,
                         tracker_description=f"{name} via cract-trax", tracker_family="cract",
                         log=args.log if args.log else False)
    return serve(server, make_tracker)


if __name__ == "__main__":
    sys.exit(main())
