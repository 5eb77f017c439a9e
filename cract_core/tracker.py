"""CRACT tracker: ``Tracker.init(image, box)`` / ``Tracker.track(image) -> TrackResult`` (Algorithm 1).

Per frame:
  crop the search region around b_{t-1} -> phi_34(x) -> RPN -> N proposals with coarse scores c_i
  -> CRAC: R, Eq. 4 re-align, re-pool, I -> v_i+ ; D -> tau_i
  -> s_i = alpha v_i+ + (1 - alpha) tau_i (Eq. 9) ; b_t = argmax beta s_i + (1 - beta) c_i (Eq. 10)
  -> size smoothing, clipping to the image, state (TRACKING / LOW_CONFIDENCE / LOST)
  -> every K frames: samples around b_t to the online learner (cheap), update solved per mode.

c_i is the RPN's probability after SiamRPN's scale/aspect penalty and cosine window (the motion
prior every Siamese tracker ranks with); the raw RPN probability is in ``TrackResult.details``.
Images are uint8 BGR (OpenCV's order), any size, and may change size between frames.
"""
from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from . import geometry
from .checkpoint import load_checkpoint
from .config import (ExperimentConfig, ConfigError, config_root, default_config_path, load_config, uses_identifier,
                     uses_regressor, validate)
from .errors import CheckpointError, InvalidInputError, NotInitializedError
from .geometry import InvalidBoxError
from .model import CRACTNet, TemplateState
from .online import OnlineLearner, sample_boxes
from .verifier import AppearanceMemory, IdentityDoubt, rejected_confidence
from .rpn import select_proposals

log = logging.getLogger(__name__)

# A LOST search region never grows past this many times the image's larger side (the whole frame
# fits with room for a target at the border).
MAX_SEARCH_FRACTION = 1.2
# Distractors: proposals this strong (coarse score) but this far (IoU) from the chosen box are
# handed to the discriminator as hard negatives.
HARD_NEGATIVE_SCORE = 0.3


class TrackState(enum.IntEnum):
    IDLE = 0
    TRACKING = 1
    LOW_CONFIDENCE = 2
    LOST = 3


@dataclass
class TrackResult:
    box: np.ndarray  # xywh in image pixels (benchmark convention)
    confidence: float  # beta * s + (1 - beta) * c of the chosen candidate, clamped to [0, 1]
    state: TrackState
    frame_index: int
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds
    updated: bool = False  # a discriminator update was started this frame
    weights_version: int = 0  # the discriminator snapshot used for this frame
    details: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device 'cuda' was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    return dev


def resolve_checkpoint(cfg: ExperimentConfig, checkpoint: Optional[str]) -> Optional[Path]:
    """An explicit path (as given), else the config's (relative to the folder holding the config's
    config/ folder), else None (untrained heads)."""
    if checkpoint:
        return Path(checkpoint).expanduser()
    if not cfg.checkpoint:
        return None
    path = Path(cfg.checkpoint).expanduser()
    return path if path.is_absolute() else config_root(cfg) / path


def untrained_stages(cfg: ExperimentConfig) -> list[str]:
    """The stages a config runs whose weights only a trained checkpoint gives (NanoTrack's backbone
    and BAN head come with the package; D is fitted online)."""
    stages = []
    if cfg.rpn.type == "anchor":
        stages.append("the anchor RPN")
    if uses_regressor(cfg):
        stages.append("the box regressor R")
    if uses_identifier(cfg):
        stages.append("the identifier I")
    return stages


def check_image(image: Any) -> np.ndarray:
    """The tracker's input contract: a non-empty uint8 H x W x 3 BGR array."""
    if image is None:
        raise InvalidInputError("image is None")
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"image must be a numpy array (H x W x 3 uint8 BGR), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidInputError(f"image must be uint8 BGR, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(f"image must be H x W x 3 (BGR), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInputError(f"image is empty: shape {image.shape}")
    return image


# While LOST the scan's tiles are this fraction of the search side apart: the proposal grid reaches
# 0.44 of the side from a crop's centre (15 points, stride 16, on 255), so tiles 0.8 apart leave no gap.
SCAN_TILE_STRIDE = 0.8


def scan_tiles(side: float, width: int, height: int, start: np.ndarray) -> list[np.ndarray]:
    """Centres of search crops of ``side`` that cover a ``width`` x ``height`` image, nearest to
    ``start`` first (ties in row-major order, so the order is deterministic)."""
    stride = SCAN_TILE_STRIDE * side

    def axis(length: int) -> np.ndarray:
        n = max(1, math.ceil(length / stride))
        # n tiles spread evenly so that the first and last reach the image borders
        return np.array([length / 2.0]) if n == 1 else np.linspace(stride / 2, length - stride / 2, n)

    centers = [np.array([x, y]) for y in axis(height) for x in axis(width)]
    distance = [float(np.hypot(*(c - start))) for c in centers]
    return [centers[i] for i in sorted(range(len(centers)), key=lambda i: (round(distance[i], 6), i))]


def _change(r: np.ndarray) -> np.ndarray:
    return np.maximum(r, 1.0 / r)


class Tracker:
    """One target at a time.  Not thread-safe: call init/track from one thread (the ROS node's tracker thread)."""

    def __init__(self, cfg: ExperimentConfig, net: Optional[CRACTNet] = None, device: str | torch.device = "cpu",
                 mode: str = "sync", checkpoint_info: Optional[dict] = None):
        if mode not in ("sync", "async"):
            raise InvalidInputError(f"mode must be 'sync' or 'async', got {mode!r}")
        self.cfg = cfg
        self.device = resolve_device(device)
        self.mode = mode
        self.net = (net or CRACTNet(cfg)).to(self.device).eval()
        self.net.fuse_for_inference()
        from .runtime.ort import wrap_for_runtime  # (here: onnxruntime itself is imported only when asked for)

        # runtime onnxruntime: the same surface on ONNX graphs of this very net (built or read from
        # the cache now, never per frame); runtime torch: the net itself.
        self.net = wrap_for_runtime(cfg, self.net, self.device)
        self.checkpoint_info = checkpoint_info or {}
        s = self.net.score_size
        hann = np.hanning(s)
        window = np.outer(hann, hann).reshape(-1)
        self._window = np.tile(window, self.net.boxes_per_cell).astype(np.float32)
        self.online: Optional[OnlineLearner] = None
        self._template: Optional[TemplateState] = None
        self._reset_state()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: Union[ExperimentConfig, str, Path, None] = None, checkpoint: Optional[str] = None,
                    device: str = "auto", mode: str = "sync") -> "Tracker":
        """Build from a config (object or YAML path; None = the built-in default) and its trained heads.

        A checkpoint named by the argument or the config must exist and match its sha256
        (CheckpointError otherwise); with neither, the heads are untrained (tests, shapes).
        """
        if cfg is None:
            cfg = default_config_path()
        if not isinstance(cfg, ExperimentConfig):
            cfg = load_config(cfg)
        # Untrained heads (no checkpoint) are drawn from a fixed seed, so two trackers built from
        # the same config behave identically, without touching the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = CRACTNet(cfg)
        info: dict = {}
        path = resolve_checkpoint(cfg, checkpoint)
        if path is not None:
            expected = cfg.checkpoint_sha256 if not checkpoint else None
            ckpt = load_checkpoint(path, expected_sha256=expected)
            try:
                net.load_head_state_dict({k: v.float() for k, v in ckpt["heads"].items()})
            except KeyError as exc:
                raise CheckpointError(f"checkpoint {path} does not fit config {cfg.name}: {exc}") from None
            info = {"path": str(path), "step": ckpt.get("step")}
        elif stages := untrained_stages(cfg):
            log.warning("config %s runs %s with untrained weights (no checkpoint named): fine for tests, "
                        "meaningless for tracking", cfg.name, ", ".join(stages))
        return cls(cfg, net, device=device, mode=mode, checkpoint_info=info)

    def _reset_state(self, close_timeout: float = 5.0) -> None:
        if self.online is not None:
            self.online.close(close_timeout)
        self.online = None
        self._template = None
        self._center = np.zeros(2)
        self._size = np.zeros(2)
        self._frame_index = -1
        self._state = TrackState.IDLE
        self._low_count = 0
        ccfg = self.cfg.crac
        self._doubt = IdentityDoubt(ccfg.identity_doubt, ccfg.identity_doubt_frames, ccfg.identity_doubt_interval,
                                    ccfg.identity_doubt_similarity)
        self._lost_growth = 1.0
        self._lost_frames = 0
        self._pad = None
        self._rng = np.random.default_rng(0)
        self._memory: Optional[AppearanceMemory] = None
        # Where the target was last verified (centre, size): LOST goes back there, since the frames
        # between the first doubt and LOST moved the box with an unverified proposal.
        self._last_good: Optional[tuple[np.ndarray, np.ndarray]] = None

    def close(self, timeout: float = 5.0) -> None:
        """Stop the update worker (waiting up to ``timeout`` s for a solve in progress; the worker is
        a daemon thread, so a process may exit without it); the tracker can be initialised again."""
        self._reset_state(timeout)

    @property
    def initialized(self) -> bool:
        return self._template is not None

    @property
    def state(self) -> TrackState:
        return self._state

    # Runtime-safe parameters (the ROS node's `ros2 param set`): the rest need a new Tracker.
    RUNTIME_PARAMS = {
        "alpha": ("crac", float), "beta": ("crac", float),
        "low_confidence": ("tracker", float), "lost_confidence": ("tracker", float),
        "lost_frames": ("tracker", int), "found_confidence": ("tracker", float),
        "window_influence": ("tracker", float), "scale_penalty_k": ("tracker", float), "size_lr": ("tracker", float),
        "update_interval": ("online", int), "short_term_threshold": ("online", float),
    }

    def set_params(self, **values: Any) -> None:
        """Change runtime-safe parameters at once; an unknown name or a bad value raises ConfigError and changes nothing."""
        sections = {}
        for name, value in values.items():
            if name not in self.RUNTIME_PARAMS:
                raise ConfigError(f"{name!r} cannot be changed at run time (runtime-safe: {sorted(self.RUNTIME_PARAMS)})")
            section, tp = self.RUNTIME_PARAMS[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (tp is int and not float(value).is_integer()):
                raise ConfigError(f"{name} must be a {tp.__name__}, got {value!r}")
            if not math.isfinite(float(value)):
                raise ConfigError(f"{name} must be finite, got {value!r}")
            sections.setdefault(section, {})[name] = tp(value)
        new_cfg = replace(self.cfg, **{s: replace(getattr(self.cfg, s), **kv) for s, kv in sections.items()})
        validate(new_cfg)
        self.cfg = new_cfg
        if self.online is not None and "online" in sections:
            self.online.cfg = new_cfg.online

    # ------------------------------------------------------------------ crops
    def _to_tensor(self, crop: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None].to(self.device)

    def _search_side(self, image_shape: tuple[int, ...]) -> float:
        t = self.cfg.tracker
        side = geometry.context_size(self._size[0], self._size[1], t.context_amount) * t.search_size / t.template_size
        if self._state == TrackState.LOST and t.lost_search == "grow":
            side = min(side * self._lost_growth, MAX_SEARCH_FRACTION * max(image_shape[0], image_shape[1]))
        return side

    def _search_center(self, side: float, image_shape: tuple[int, ...]) -> np.ndarray:
        """Where this frame's search crop is centred: the last position, or, while LOST with
        ``lost_search: scan``, every other frame the next tile of a grid over the image.

        The scan keeps the tracking scale (a target squeezed with the whole frame into one crop is
        too small to be found again) and one crop a frame (a LOST frame costs what any frame
        costs).  Tiles are visited nearest-first from where the target was lost, alternating with
        the last position itself (an occluded target tends to reappear where it went).
        """
        if self._state != TrackState.LOST or self.cfg.tracker.lost_search != "scan":
            return self._center.copy()
        self._lost_frames += 1
        if self._lost_frames % 2 == 1:
            return self._center.copy()
        tiles = scan_tiles(side, image_shape[1], image_shape[0], self._center)
        return tiles[(self._lost_frames // 2 - 1) % len(tiles)]

    # ------------------------------------------------------------------ init
    def init(self, image: np.ndarray, box: Any) -> TrackResult:
        """Start tracking the object in ``box`` (xywh).  A box partly outside is clipped; one wholly
        outside or under 2 px raises InvalidBoxError.  Re-initialising while tracking is allowed."""
        t_start = time.perf_counter()
        image = check_image(image)
        h_img, w_img = image.shape[:2]
        box = geometry.clip_box_to_image(box, (w_img, h_img), self.cfg.tracker.min_box_size)
        self._reset_state()
        tcfg = self.cfg.tracker
        self._center = np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])
        self._size = np.array([box[2], box[3]])
        self._pad = image.reshape(-1, 3).mean(axis=0)

        side_z = geometry.context_size(box[2], box[3], tcfg.context_amount)
        crop_z, scale_z = geometry.crop_square(image, tuple(self._center), side_z, tcfg.template_size, self._pad)
        box_z = geometry.image_to_crop(box, tuple(self._center), scale_z, tcfg.template_size)
        box_z_xyxy = torch.as_tensor(geometry.xywh_to_xyxy(box_z), dtype=torch.float32, device=self.device)
        self._template = self.net.init_target(self._to_tensor(crop_z), box_z_xyxy)
        if self.cfg.crac.confidence == "memory":
            self._memory = AppearanceMemory(self._template.f_init, self.cfg.crac.memory_learning_rate,
                                            self.cfg.crac.memory_floor)
        self._last_good = (self._center.copy(), self._size.copy())

        timings = {"template_ms": (time.perf_counter() - t_start) * 1e3}
        if self._uses_discriminator():
            self._init_discriminator(image, timings)
        self._frame_index = 0
        self._state = TrackState.TRACKING
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return TrackResult(box.copy(), 1.0, self._state, 0, timings, False, self._weights_version())

    def _uses_discriminator(self) -> bool:
        return self.cfg.online.enabled and self.cfg.crac.classifier in ("joint", "discriminator")

    def _weights_version(self) -> int:
        return self.online.version if self.online is not None else 0

    def _init_discriminator(self, image: np.ndarray, timings: dict) -> None:
        """Frame 1: 200 positives / 1000 negatives from the search region, with the RPN's strongest
        distractors among the negatives, fitted with Gauss-Newton + CG (conv and fc)."""
        t0 = time.perf_counter()
        ocfg = self.cfg.online
        tcfg = self.cfg.tracker
        side = self._search_side(image.shape)
        crop, scale = geometry.crop_square(image, tuple(self._center), side, tcfg.search_size, self._pad)
        with torch.no_grad():
            phi_x = self.net.extract(self._to_tensor(crop))
            target = self._box_in_crop(self._center, scale)
            boxes, labels = sample_boxes(target, ocfg.init_positives, ocfg.init_negatives, self._rng,
                                         ocfg.positive_iou, ocfg.negative_iou, bounds=(tcfg.search_size, tcfg.search_size))
            hard = self._hard_negative_boxes(phi_x, target, scale, count=ocfg.hard_negatives)
            if len(hard):
                # Hard negatives replace as many ordinary ones, keeping the paper's 200 / 1000.
                boxes = np.concatenate([boxes[: len(boxes) - len(hard)], hard])
                labels = np.concatenate([labels[: len(labels) - len(hard)], np.zeros(len(hard), np.float32)])
            feats = self._pool_boxes(phi_x, boxes)
        self.online = OnlineLearner(ocfg, self.net.pooler.out_channels, device=self.device, mode=self.mode,
                                    spatial_size=self.net.pooler.output_size,
                                    conv_channels=self.cfg.crac.discriminator_conv_channels,
                                    fc_hidden=self.cfg.crac.discriminator_fc)
        self.online.initialize(feats, torch.as_tensor(labels, device=self.device), frame_index=0)
        timings["discriminator_init_ms"] = (time.perf_counter() - t0) * 1e3

    def _box_in_crop(self, crop_center: np.ndarray, scale: float) -> np.ndarray:
        """The tracked box in the pixels of the search crop centred at ``crop_center`` (the box has
        moved since the crop was cut: D's samples must sit where the target is in that crop)."""
        box = np.array([self._center[0] - self._size[0] / 2, self._center[1] - self._size[1] / 2, *self._size])
        return geometry.image_to_crop(box, tuple(crop_center), scale, self.cfg.tracker.search_size)

    def _hard_negative_boxes(self, phi_x: torch.Tensor, target_crop_xywh: np.ndarray, scale: float, count: int) -> np.ndarray:
        """Strong RPN proposals that are not the target (look-alikes in the same frame)."""
        if count <= 0:
            return np.zeros((0, 4))
        scores, boxes = self.net.rpn_outputs(self._template.kernels, phi_x)
        props, c, _ = select_proposals(scores[0], boxes[0], max(self.cfg.rpn.num_proposals, count), self.cfg.rpn.nms_iou,
                                       self.cfg.rpn.pre_nms_top_n)
        return self._distractors(props, c, target_crop_xywh)[:count]

    def _distractors(self, props_xyxy: torch.Tensor, scores: torch.Tensor, target_crop_xywh: np.ndarray) -> np.ndarray:
        """Proposals (xywh, crop pixels) scoring at least HARD_NEGATIVE_SCORE that overlap the target
        no more than a negative may: the hard negatives D learns to reject."""
        props_xywh = geometry.xyxy_to_xywh(props_xyxy.cpu().numpy().astype(np.float64))
        ious = geometry.iou(props_xywh, target_crop_xywh[None, :], fmt="xywh")
        return props_xywh[(ious <= self.cfg.online.negative_iou) & (scores.cpu().numpy() >= HARD_NEGATIVE_SCORE)]

    def _pool_boxes(self, phi_x: torch.Tensor, boxes_xywh: np.ndarray) -> torch.Tensor:
        """PRoIAlign features of xywh boxes in search-crop pixels (D's training samples)."""
        xyxy = torch.as_tensor(geometry.xywh_to_xyxy(boxes_xywh), dtype=torch.float32, device=self.device)
        return self.net.pool(phi_x, xyxy)

    # ------------------------------------------------------------------ track
    def track(self, image: np.ndarray) -> TrackResult:
        if self._template is None:
            raise NotInitializedError("Tracker.track called before Tracker.init (give the target box first)")
        image = check_image(image)
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        self._frame_index += 1
        frame = self._frame_index
        if self.online is not None:
            self.online.begin_frame(frame)
        version = self._weights_version()
        tcfg, ccfg = self.cfg.tracker, self.cfg.crac
        h_img, w_img = image.shape[:2]
        # A resized stream (or a centre that drifted out) is brought back inside the current frame.
        self._center = np.clip(self._center, [0, 0], [w_img, h_img])

        side = self._search_side(image.shape)
        crop_center = self._search_center(side, image.shape)
        crop, scale = geometry.crop_square(image, tuple(crop_center), side, tcfg.search_size, self._pad)
        t0 = time.perf_counter()
        timings["crop"] = (t0 - t_start) * 1e3
        with torch.no_grad():
            phi_x = self.net.extract(self._to_tensor(crop))
            t1 = time.perf_counter()
            timings["backbone"] = (t1 - t0) * 1e3
            scores, boxes = self.net.rpn_outputs(self._template.kernels, phi_x)
            penalized, ranked = self._rank_scores(scores[0], boxes[0], scale)
            props, adjusted, idx = select_proposals(ranked, boxes[0], self.cfg.rpn.num_proposals,
                                                    self.cfg.rpn.nms_iou, self.cfg.rpn.pre_nms_top_n)
            raw_c = scores[0][idx]
            t2 = time.perf_counter()
            timings["rpn"] = (t2 - t1) * 1e3
            identify = ccfg.classifier in ("joint", "identifier")
            if ccfg.refinement == "none" and not identify and not self._uses_discriminator():
                ref = None  # the proposal stage alone: nothing to pool
            else:
                ref = self.net.refine(phi_x, props, self._template.f_init, identify=identify)
            t3 = time.perf_counter()
            timings["crac"] = (t3 - t2) * 1e3
            if self._uses_discriminator() and self.online is not None:
                tau = self.online.score(ref.features)
            else:
                tau = torch.zeros_like(adjusted)
            timings["discriminator"] = (time.perf_counter() - t3) * 1e3
            identity = ref.identity_prob if identify else torch.zeros_like(adjusted)
            if ccfg.classifier == "joint":
                s = ccfg.alpha * identity + (1 - ccfg.alpha) * tau
            elif ccfg.classifier == "identifier":
                s = identity
            else:
                s = tau
            # Eq. 10 chooses with c_i = the ranked score (penalty and cosine window: the motion
            # prior); the confidence of the choice leaves the window out (it says where the target
            # was expected, not whether this is it), so LOST is judged on appearance alone.
            beta = ccfg.beta if ccfg.classifier != "none" else 0.0
            final = beta * s + (1 - beta) * adjusted
            best = int(torch.argmax(final))
            confidence = float((beta * s[best] + (1 - beta) * penalized[idx[best]]).clamp(0, 1))
            chosen_xyxy = ref.refined_xyxy[best] if ref is not None else props[best]
            verified_features = None
            identity_of_chosen: Optional[float] = None  # I's v+ of the chosen box, on frames I judges it
            if ccfg.confidence == "memory":
                t_conf = time.perf_counter()
                best, confidence, verified_features, similarity = self._verify(phi_x, props, ref, best)
                chosen_xyxy = ref.refined_xyxy[best] if ref is not None else props[best]
                if (ccfg.identity_veto > 0 and self._state != TrackState.LOST
                        and (similarity[best] < ccfg.identity_veto_similarity or self._doubt.due())):
                    # I on the features the memory just pooled for this box (not pooled twice); only
                    # where it can judge: most frames are above the similarity that rules a veto
                    # out, and the doubt needs I every frame only once the box is suspect
                    identity_of_chosen = float(self.net.identify(verified_features, self._template.f_init)[0])
                    confidence = self._identity_veto(confidence, float(similarity[best]), identity_of_chosen)
                    self._doubt.observe(identity_of_chosen, float(similarity[best]))
                else:
                    self._doubt.skip()
                timings["confidence"] = (time.perf_counter() - t_conf) * 1e3
            elif ccfg.confidence == "identifier":  # (the config allows it only without R and a classifier)
                # the proposals choose the box; I says whether it is the target (one RoI: ~1 ms)
                t_conf = time.perf_counter()
                confidence = float(self.net.refine(phi_x, props[best:best + 1], self._template.f_init).identity_prob[0])
                timings["confidence"] = (time.perf_counter() - t_conf) * 1e3
            chosen_crop = geometry.xyxy_to_xywh(chosen_xyxy.cpu().numpy().astype(np.float64))

        was_lost = self._state == TrackState.LOST
        self._update_state(confidence)
        if self._state == TrackState.LOST and not was_lost and self._memory is not None:
            self._center, self._size = (v.copy() for v in self._last_good)
        if self._state != TrackState.LOST or confidence >= tcfg.found_confidence:
            if self._state == TrackState.LOST:
                self._state = TrackState.TRACKING
                self._low_count = 0
            self._move_to(chosen_crop, crop_center, scale, confidence, (w_img, h_img))
        if self._state == TrackState.TRACKING:
            self._last_good = (self._center.copy(), self._size.copy())
            if verified_features is not None:
                self._memory.update(verified_features)
        if self._state == TrackState.LOST:
            self._doubt.reset()
        elif self._doubt.doubted and identity_of_chosen is not None:  # (a doubted box is judged every frame)
            # I has called the box not-the-target for frames in a row while the memory still finds
            # it like the target: a look-alike (the next person in a group, the same car model) in
            # the target's place.  What is reported says so; the box, the memory and LOST stay the
            # memory's (I also doubts the target itself when it is small or half hidden: holding
            # the memory back then lost uavdt_s1001's car in a long doubt, AUC 0.484 -> 0.475).
            self._state = TrackState.LOW_CONFIDENCE
            confidence = self._doubt.confidence(confidence, identity_of_chosen, tcfg.low_confidence)
        box = self.current_box((w_img, h_img))

        updated = False
        t4 = time.perf_counter()
        if self.online is not None and self._uses_discriminator():
            updated = self._online_step(frame, phi_x, props, adjusted, crop_center, scale, confidence)
        timings["update"] = (time.perf_counter() - t4) * 1e3
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        details = {
            "proposals_crop_xyxy": props.cpu().numpy(), "coarse": adjusted.cpu().numpy(), "rpn": raw_c.cpu().numpy(),
            "identity": identity.cpu().numpy(), "tau": tau.cpu().numpy(), "final": final.cpu().numpy(),
            "best": best, "search_side": side, "search_center": crop_center,
        }
        if ccfg.confidence == "memory":
            details["similarity"] = similarity
            details["identity_of_chosen"] = identity_of_chosen  # None on frames I did not judge
            details["identity_doubted"] = self._doubt.doubted
        return TrackResult(box, confidence, self._state, frame, timings, updated, version, details)

    def _verify(self, phi_x: torch.Tensor, props: torch.Tensor, ref: Any, best: int
                ) -> tuple[int, float, torch.Tensor, np.ndarray]:
        """The verifier's judgement: (chosen index, confidence, its features, similarities).

        While tracking only the box the proposals chose is verified (one RoI).  While LOST every
        proposal is, and the most similar one is the candidate: the proposal score ranks places
        by how much they look like the template next to the rest of the crop, which picks
        something in any view; only the memory can say which of them is this target.
        """
        boxes = ref.refined_xyxy if ref is not None else props
        similarity = torch.full((len(boxes),), float("nan"))
        candidates = torch.arange(len(boxes)) if self._state == TrackState.LOST else torch.tensor([best])
        features = self.net.pool(phi_x, boxes[candidates])
        similarity[candidates] = self._memory.similarity(features).cpu()
        confidence = self._memory.confidence(similarity[candidates])
        if self._state == TrackState.LOST and self.cfg.crac.identity_veto > 0:
            # I may re-acquire what the memory no longer recognises but does not reject: the target
            # seen anew (after an occluder it comes back turned, nearer or farther, in other light;
            # the memory learnt how it looked before).  I learnt that change offline.
            ccfg = self.cfg.crac
            identity = self.net.identify(features, self._template.f_init).cpu()
            vouched = (identity >= ccfg.identity_reacquire) & (similarity[candidates] >= ccfg.identity_reacquire_similarity)
            confidence = torch.where(vouched, torch.maximum(confidence, identity), confidence)
            # ... and never re-acquires what I calls not-the-target: the look-alike the memory
            # would take back at once, to be doubted again three frames later
            confidence = self._doubt.gate(confidence, identity, similarity[candidates])
        pick = int(torch.argmax(confidence))
        best = int(candidates[pick])
        return best, float(confidence[pick]), features[pick:pick + 1], similarity.numpy()

    def _identity_veto(self, confidence: float, similarity: float, identity: float) -> float:
        """I's veto over the memory: a box I calls not-the-target (v+ under ``identity_veto``) that
        the memory finds only moderately like it (under ``identity_veto_similarity``) is doubtful,
        whatever the memory alone says.  The memory knows this target's looks but not what else
        looks like it; I learnt offline what tells two objects apart (on the validation frames
        where the target is absent, I gives 0.009 median where the memory still passes a
        neighbour in a group of people).  The confidence falls below ``low_confidence``, in
        proportion to v+."""
        ccfg = self.cfg.crac
        if identity >= ccfg.identity_veto or similarity >= ccfg.identity_veto_similarity:
            return confidence
        return rejected_confidence(confidence, identity, ccfg.identity_veto, self.cfg.tracker.low_confidence)

    def _rank_scores(self, scores: torch.Tensor, boxes_xyxy: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """SiamRPN's scale/aspect-change penalty, then its cosine window: (penalized, ranked) scores.

        ``ranked`` is c_i of Eq. 10 (what proposals are chosen by); ``penalized`` is the RPN's
        probability times the penalty alone (what the confidence is made of).
        """
        tcfg = self.cfg.tracker
        b = boxes_xyxy.cpu().numpy()  # (a view on the CPU: the sizes in numpy, no torch ops on 225 boxes)
        w = np.maximum(b[:, 2] - b[:, 0], 1e-3)
        h = np.maximum(b[:, 3] - b[:, 1], 1e-3)
        tw, th = self._size * scale
        s_c = _change(geometry.context_size(w, h, tcfg.context_amount) / geometry.context_size(tw, th, tcfg.context_amount))
        r_c = _change((tw / th) / (w / h))
        penalty = np.exp(-(r_c * s_c - 1.0) * tcfg.scale_penalty_k)
        p = scores.cpu().numpy() * penalty
        # When the target is lost the motion prior is wrong by definition: search the region evenly.
        wi = 0.0 if self._state == TrackState.LOST else tcfg.window_influence
        ranked = p * (1 - wi) + self._window * wi
        return (torch.as_tensor(p, dtype=scores.dtype, device=scores.device),
                torch.as_tensor(ranked, dtype=scores.dtype, device=scores.device))

    def _update_state(self, confidence: float) -> None:
        tcfg = self.cfg.tracker
        if confidence < tcfg.lost_confidence:
            self._low_count += 1
        else:
            self._low_count = 0
        if self._state == TrackState.LOST:
            self._lost_growth = self._lost_growth * tcfg.lost_search_growth
            return
        if self._low_count >= tcfg.lost_frames:
            self._state = TrackState.LOST
            self._lost_growth = tcfg.lost_search_growth
            self._lost_frames = 0
        elif confidence < tcfg.low_confidence:
            self._state = TrackState.LOW_CONFIDENCE
        else:
            self._state = TrackState.TRACKING

    def _move_to(self, chosen_crop_xywh: np.ndarray, crop_center: np.ndarray, scale: float, confidence: float,
                 image_size: tuple[int, int]) -> None:
        """Centre follows the chosen box; size is smoothed with a rate scaled by the confidence."""
        tcfg = self.cfg.tracker
        box = geometry.crop_to_image(chosen_crop_xywh, tuple(crop_center), scale, tcfg.search_size)
        lr = tcfg.size_lr * confidence
        w_img, h_img = image_size
        self._center = np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])
        self._center = np.clip(self._center, [0, 0], [w_img, h_img])
        new_size = self._size * (1 - lr) + np.array([box[2], box[3]]) * lr
        min_side = tcfg.min_box_size
        self._size = np.clip(new_size, [min_side, min_side], [max(w_img, min_side), max(h_img, min_side)])
        self._lost_growth = 1.0

    def current_box(self, image_size: tuple[int, int]) -> np.ndarray:
        """The tracked box, xywh, clipped to the image (the reported box never leaves the frame)."""
        w_img, h_img = image_size
        x1, y1 = self._center - self._size / 2
        x2, y2 = self._center + self._size / 2
        x1, x2 = np.clip([x1, x2], 0, w_img)
        y1, y2 = np.clip([y1, y2], 0, h_img)
        return np.array([x1, y1, max(x2 - x1, 0.0), max(y2 - y1, 0.0)])

    def _online_step(self, frame: int, phi_x: torch.Tensor, props: torch.Tensor, coarse: torch.Tensor,
                     crop_center: np.ndarray, scale: float, confidence: float) -> bool:
        """Collect samples every K frames (cheap, here) and let the learner decide on an update."""
        ocfg = self.cfg.online
        if frame % ocfg.update_interval == 0 and self._state == TrackState.TRACKING:
            tcfg = self.cfg.tracker
            target = self._box_in_crop(crop_center, scale)
            boxes, labels = sample_boxes(target, ocfg.update_positives, ocfg.update_negatives, self._rng,
                                         ocfg.positive_iou, ocfg.negative_iou, bounds=(tcfg.search_size, tcfg.search_size))
            hard = self._distractors(props, coarse, target)
            if len(hard):
                boxes = np.concatenate([boxes, hard])
                labels = np.concatenate([labels, np.zeros(len(hard), np.float32)])
            with torch.no_grad():
                feats = self._pool_boxes(phi_x, boxes)
            self.online.add_samples(frame, feats, torch.as_tensor(labels, device=self.device),
                                    reliable=confidence >= ocfg.reliable_score)
        return self.online.maybe_update(frame, confidence)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
