"""Trackers behind one small interface, and a registry by name.

Interface (the got10k toolkit's, which every baseline here fits)::

    tracker.init(image_bgr, box_xywh) -> None
    tracker.update(image_bgr) -> box_xywh            or   (box_xywh, confidence)
    tracker.close() -> None                          optional: release threads / files
    tracker.last_updated: bool                       optional: this frame started a model update
                                                     (its latency is reported apart)
    tracker.last_state: str                          optional: the state the tracker reported for
                                                     this frame ("TRACKING", "LOW_CONFIDENCE",
                                                     "LOST"); the absence protocol counts it

Images are uint8 BGR, boxes ``x, y, w, h`` floats in the benchmark's coordinates.  A tracker
that has no box for a frame returns NaNs (scored as IoU 0).  OpenCV's trackers report a lost
target with ``ok=False``; we then keep their last box with confidence 0, because one-pass
evaluation needs a box every frame and that is what a user's controller would hold.  Otherwise
the confidence is None for CSRT/KCF/MIL (they have no score) and NanoTrack's score.

The state each reports (``last_state``, read by the runner every frame): cract its
``TrackResult.state``; the OpenCV trackers "LOST" when their update fails (CSRT, KCF, MIL's
flag), and the scored ones (NanoTrack, VitTrack) also when their tracking score is below
:data:`OPENCV_TRACKING_SCORE` (0.5), "TRACKING" otherwise.

Registered names: ``cract`` (this project's tracker; any config / checkpoint, ablation
overrides), ``csrt``, ``kcf``, ``mil`` (OpenCV contrib, the new ``cv2.TrackerX_create`` API of
OpenCV >= 4.5.1), ``nanotrack`` (``cv2.TrackerNano`` with its two ONNX files: NanoTrack V2) and
``vittrack`` (``cv2.TrackerVit`` with its ONNX file).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Union

import cv2
import numpy as np

from cract_core import geometry

UpdateResult = Union[np.ndarray, tuple[np.ndarray, Optional[float]]]

# The authors' model files of the DNN baselines: option of make_nanotrack / make_vittrack -> the file
# relative to the shared models folder (cract-eval's --nanotrack-backbone etc., cract-trax's
# --baseline, benchmarks/bench_baselines.py all default to these).
ENV_SHARED_MODELS = "CRACT_SHARED_MODELS"
BASELINE_MODEL_FILES = {
    "nanotrack_backbone": "nanotrack_v2/nanotrack_backbone_sim_v2.onnx",
    "nanotrack_neckhead": "nanotrack_v2/nanotrack_head_sim_v2.onnx",
    "vittrack_model": "vittrack/vitTracker.onnx",
}


def shared_models_dir() -> Path:
    """$CRACT_SHARED_MODELS, else ../shared/models next to the project root."""
    from cract_core.config import project_root

    env = os.environ.get(ENV_SHARED_MODELS)
    return Path(env).expanduser() if env else project_root().parent / "shared" / "models"


# The OpenCV DNN trackers (NanoTrack, VitTrack) do not say "lost" themselves: a tracking score
# below this counts as not tracking (VitTrack's own sample draws its box only above 0.3-0.5;
# 0.5 is the middle of NanoTrack's score range and the definition).
OPENCV_TRACKING_SCORE = 0.5

# Paper Tables 7-9: the only config fields an ablation flag may change, and their values.
ABLATION_FIELDS = {
    "refinement": ("cascade", "parallel", "none"),
    "classifier": ("joint", "identifier", "discriminator", "none"),
    "pooling": ("pyramid", "single"),
    # what the state is judged on (crac.confidence): score (the proposals' own), identifier (I on
    # the chosen box), memory (the appearance memory, the default's verifier)
    "confidence": ("score", "identifier", "memory"),
}
# The paper's two weights (Eq. 9: s = alpha v+ + (1 - alpha) tau; Eq. 10: beta s + (1 - beta) c),
# settable per run like the switches above: a number in [0, 1]; so is I's veto over the memory
# (crac.identity_veto, 0 = I not used) and its doubt (crac.identity_doubt, 0 = off).
ABLATION_WEIGHTS = ("alpha", "beta", "identity_veto", "identity_doubt")
# The state thresholds on the confidence (tracker section), settable the same way: the verifier
# variants of the stage ablation each run at their own thresholds.
TRACKER_WEIGHTS = ("low_confidence", "lost_confidence", "found_confidence")


class UnknownTrackerError(ValueError):
    """A tracker name that is not registered."""


class TrackerUnavailableError(RuntimeError):
    """A registered tracker that cannot be built here (missing model files, module not there yet)."""


class EvalTracker(Protocol):
    name: str

    def init(self, image: np.ndarray, box: np.ndarray) -> None: ...

    def update(self, image: np.ndarray) -> UpdateResult: ...


def split_result(result: UpdateResult) -> tuple[np.ndarray, Optional[float]]:
    """(box, confidence) from whatever update() returned."""
    if isinstance(result, tuple) and len(result) == 2 and (result[1] is None or np.isscalar(result[1])):
        box, conf = result
    else:
        box, conf = result, None
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.size != 4:
        raise ValueError(f"tracker returned {box.size} numbers, expected a box x, y, w, h")
    return box, (None if conf is None else float(conf))


# ------------------------------------------------------------------------------ OpenCV trackers


class OpenCVTracker:
    """CSRT / KCF / MIL / NanoTrack through OpenCV's Tracker API (init -> None, update -> (ok, rect))."""

    def __init__(self, name: str, factory: Callable[[], Any]):
        self.name = name
        self._factory = factory
        self._tracker: Any = None
        self._last = np.full(4, np.nan)
        self.last_state = "TRACKING"

    def init(self, image: np.ndarray, box: np.ndarray) -> None:
        h, w = image.shape[:2]
        # OpenCV's trackers take an integer Rect inside the image; clip first so a box that
        # pokes out of the frame (allowed by the benchmarks) does not make them throw.
        b = geometry.clip_box_to_image(box, (w, h), min_size=1.0)
        rect = (int(round(b[0])), int(round(b[1])), max(1, int(round(b[2]))), max(1, int(round(b[3]))))
        self._tracker = self._factory()  # a fresh object: OpenCV trackers keep state across init calls
        self._tracker.init(image, rect)
        self._last = np.asarray(box, dtype=np.float64).copy()

    def update(self, image: np.ndarray) -> tuple[np.ndarray, Optional[float]]:
        if self._tracker is None:
            raise RuntimeError(f"{self.name}: update() before init()")
        ok, rect = self._tracker.update(image)
        if ok:
            self._last = np.asarray(rect, dtype=np.float64)
            # Only NanoTrack (and the DNN trackers) score their output; CSRT/KCF/MIL return -1
            # from getTrackingScore in OpenCV 5, which means "no confidence", not a low one.
            getter = getattr(self._tracker, "getTrackingScore", None)
            score = float(getter()) if callable(getter) else -1.0
            scored = 0.0 <= score <= 1.0
            self.last_state = "LOST" if scored and score < OPENCV_TRACKING_SCORE else "TRACKING"
            return self._last.copy(), (score if scored else None)
        self.last_state = "LOST"
        return self._last.copy(), 0.0

    def close(self) -> None:
        self._tracker = None


def _opencv_factory(attr: str) -> Callable[[], Any]:
    fn = getattr(cv2, attr, None)
    if fn is None and hasattr(cv2, "legacy"):
        # OpenCV < 4.5.1 or a build without the new API: the legacy module has the same trackers.
        fn = getattr(cv2.legacy, attr, None)
    if fn is None:
        raise TrackerUnavailableError(f"this OpenCV ({cv2.__version__}) has no {attr}; install opencv-contrib-python-headless")
    return fn


def make_csrt(**_: Any) -> OpenCVTracker:
    return OpenCVTracker("csrt", _opencv_factory("TrackerCSRT_create"))


def make_kcf(**_: Any) -> OpenCVTracker:
    return OpenCVTracker("kcf", _opencv_factory("TrackerKCF_create"))


def make_mil(**_: Any) -> OpenCVTracker:
    return OpenCVTracker("mil", _opencv_factory("TrackerMIL_create"))


def make_nanotrack(
    nanotrack_backbone: Optional[str] = None, nanotrack_neckhead: Optional[str] = None, **_: Any
) -> OpenCVTracker:
    """NanoTrack needs its backbone and neck-head ONNX files (OpenCV's samples name them
    nanotrack_backbone_sim.onnx and nanotrack_head_sim.onnx)."""
    if not nanotrack_backbone or not nanotrack_neckhead:
        raise TrackerUnavailableError(
            "nanotrack needs its model files: --nanotrack-backbone PATH.onnx --nanotrack-neckhead PATH.onnx"
        )
    for label, p in (("backbone", nanotrack_backbone), ("neck-head", nanotrack_neckhead)):
        if not Path(p).is_file():
            raise TrackerUnavailableError(f"nanotrack {label} model {p} does not exist")
    if not hasattr(cv2, "TrackerNano_Params"):
        raise TrackerUnavailableError(f"this OpenCV ({cv2.__version__}) has no TrackerNano")

    def factory() -> Any:
        params = cv2.TrackerNano_Params()
        params.backbone = str(nanotrack_backbone)
        params.neckhead = str(nanotrack_neckhead)
        return cv2.TrackerNano_create(params)

    factory()  # load once now, so a broken model file is reported before any sequence runs
    return OpenCVTracker("nanotrack", factory)


def make_vittrack(vittrack_model: Optional[str] = None, **_: Any) -> OpenCVTracker:
    """VitTrack (``cv2.TrackerVit``) needs its ONNX file (opencv_zoo's vitTracker.onnx)."""
    if not vittrack_model:
        raise TrackerUnavailableError("vittrack needs its model file: --vittrack-model PATH.onnx")
    if not Path(vittrack_model).is_file():
        raise TrackerUnavailableError(f"vittrack model {vittrack_model} does not exist")
    if not hasattr(cv2, "TrackerVit_Params"):
        raise TrackerUnavailableError(f"this OpenCV ({cv2.__version__}) has no TrackerVit")

    def factory() -> Any:
        params = cv2.TrackerVit_Params()
        params.net = str(vittrack_model)
        return cv2.TrackerVit_create(params)

    factory()  # load once now, so a broken model file is reported before any sequence runs
    return OpenCVTracker("vittrack", factory)


# ---------------------------------------------------------------------------------------- cract


def parse_ablations(items: Optional[list[str]]) -> dict[str, Any]:
    """``["refinement=parallel", "classifier=identifier", "beta=0.5"]`` (or comma-joined) -> {field: value},
    checked (switches by name, alpha/beta as floats in [0, 1])."""
    out: dict[str, Any] = {}
    for item in items or []:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if key.startswith("crac."):
                key = key[5:]
            if sep and key in ABLATION_WEIGHTS + TRACKER_WEIGHTS:
                try:
                    weight = float(value)
                except ValueError:
                    weight = float("nan")
                if not 0.0 <= weight <= 1.0:
                    raise ValueError(f"bad ablation {part!r}: {key} must be a number in [0, 1]")
                out[key] = weight
                continue
            if not sep or key not in ABLATION_FIELDS:
                raise ValueError(
                    f"bad ablation {part!r}: expected one of "
                    + ", ".join(f"{k}={'|'.join(v)}" for k, v in ABLATION_FIELDS.items())
                    + ", " + ", ".join(f"{k}=NUMBER" for k in ABLATION_WEIGHTS + TRACKER_WEIGHTS)
                )
            if value not in ABLATION_FIELDS[key]:
                raise ValueError(f"bad ablation {part!r}: {key} must be one of {', '.join(ABLATION_FIELDS[key])}")
            out[key] = value
    return out


def ablation_suffix(ablations: dict[str, Any]) -> str:
    """A file-system-safe name suffix, so ablation runs land in their own OUT/<tracker>/ folders."""
    return "".join(f"-{k}_{v}" for k, v in sorted(ablations.items()))


def build_cract_config(config: Optional[str] = None, ablations: Optional[dict[str, Any]] = None) -> Any:
    """Load an experiment config (the default when None) and apply ablation overrides to ``crac``.

    Goes through config_from_dict so that the config module's own type and range checks apply.
    """
    from cract_core import config as cfgmod  # lazy: keeps the baselines free of torch imports

    cfg = cfgmod.load_config(config) if config else cfgmod.load_config(cfgmod.default_config_path())
    if ablations:
        data = cfgmod.to_dict(cfg)
        data["crac"].update({k: v for k, v in ablations.items() if k not in TRACKER_WEIGHTS})
        data["tracker"].update({k: v for k, v in ablations.items() if k in TRACKER_WEIGHTS})
        source = cfg.source
        cfg = cfgmod.config_from_dict(data)
        cfg.source = source  # relative checkpoint paths still resolve against the original file
    return cfg


class CractTracker:
    """Adapter over cract_core.tracker.Tracker (synchronous mode: deterministic for evaluation)."""

    def __init__(
        self,
        config: Optional[str] = None,
        checkpoint: Optional[str] = None,
        device: str = "auto",
        ablations: Optional[dict[str, str]] = None,
        runtime: Optional[str] = None,
        **_: Any,
    ):
        try:
            from cract_core.tracker import Tracker  # lazy: the tracker module may land after this one
        except ImportError as exc:
            raise TrackerUnavailableError(f"the cract tracker cannot be imported (cract_core.tracker): {exc}") from exc
        self.ablations = dict(ablations or {})
        self.name = "cract" + ablation_suffix(self.ablations)
        self.last_updated = False
        self.last_state = "TRACKING"
        cfg = build_cract_config(config, self.ablations)
        if runtime:  # spec runtime=torch|onnxruntime; without it, the config's own
            if runtime not in RUNTIMES:
                raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
            cfg.runtime = runtime
        self._tracker = Tracker.from_config(cfg, checkpoint=checkpoint, device=device, mode="sync")

    def init(self, image: np.ndarray, box: np.ndarray) -> None:
        self._tracker.init(image, np.asarray(box, dtype=np.float64))

    def update(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        res = self._tracker.track(image)
        # Read by the runner: frames that start a discriminator update are timed apart (DESIGN.md).
        self.last_updated = bool(getattr(res, "updated", False))
        # Read by the runner: the state the tracker reported (the absence protocol scores it).
        self.last_state = getattr(res.state, "name", str(res.state))
        return np.asarray(res.box, dtype=np.float64), float(res.confidence)

    def close(self) -> None:
        close = getattr(self._tracker, "close", None)
        if callable(close):
            close()


def make_cract(**kw: Any) -> CractTracker:
    return CractTracker(**kw)


# ------------------------------------------------------------------------------------- registry

REGISTRY: dict[str, Callable[..., EvalTracker]] = {
    "cract": make_cract,
    "csrt": make_csrt,
    "kcf": make_kcf,
    "mil": make_mil,
    "nanotrack": make_nanotrack,
    "vittrack": make_vittrack,
}


def register(name: str, factory: Callable[..., EvalTracker]) -> None:
    """Add a tracker (a factory taking the CLI's keyword options) under ``name``."""
    REGISTRY[name] = factory


def check_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise UnknownTrackerError(f"unknown tracker {', '.join(unknown)}; known: {', '.join(sorted(REGISTRY))}")


def create(name: str, **options: Any) -> EvalTracker:
    """Build a registered tracker; options the factory does not use are ignored."""
    check_names([name])
    return REGISTRY[name](**options)


def result_name(name: str, options: dict) -> str:
    """The folder / summary name a tracker's results go under (ablations make cract's distinct)."""
    if options.get("label"):
        return str(options["label"])
    if name == "cract" and options.get("ablations"):
        return "cract" + ablation_suffix(options["ablations"])
    return name


SPEC_KEYS = ("config", "checkpoint", "name", "runtime")
RUNTIMES = ("torch", "onnxruntime")  # cract's runtime= (docs/runtime.md)


def parse_tracker_spec(spec: str, options: dict) -> tuple[str, dict]:
    """``"cract:refinement=parallel+pooling=single+checkpoint=heads.pt+name=abl"`` -> (name, options).

    A spec lets one run hold several cract variants side by side (the paper's ablation tables in
    one plot).  After the ``:``, ``+``-separated ``key=value`` pairs: ablation fields (see
    ABLATION_FIELDS; they replace --ablation for this entry), ``config``, ``checkpoint`` (variants
    such as single RoIAlign need heads trained for them), ``name`` (the result folder) and
    ``runtime`` (torch | onnxruntime: ``cract:runtime=onnxruntime+name=cract_ort``).
    A plain name takes ``options`` as they are; ablations only ever reach cract.
    """
    base, sep, rest = spec.strip().partition(":")
    base = base.strip()
    check_names([base])
    opts = dict(options)
    if base != "cract":
        opts.pop("ablations", None)
        if sep:
            raise ValueError(f"tracker spec {spec!r}: only cract takes ':key=value' settings")
        return base, opts
    if not sep:
        return base, opts
    ablations: dict[str, Any] = {}
    for part in rest.split("+"):
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not value:
            raise ValueError(f"tracker spec {spec!r}: expected key=value, got {part!r}")
        if key in SPEC_KEYS:
            opts["label" if key == "name" else key] = value
        else:
            ablations.update(parse_ablations([f"{key}={value}"]))
    opts["ablations"] = ablations
    return base, opts
