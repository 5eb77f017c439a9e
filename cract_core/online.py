"""Online learning of the discriminator D (paper Eq. 7-8, section 3.4): samples, memory, solver, swap.

What happens when
-----------------
* Frame 1 (:meth:`OnlineLearner.initialize`): D's conv is set to the PCA of the frame's features,
  fc1 is small random, fc2 zero; then conv + fc are fitted together by Gauss-Newton with
  conjugate gradient (``init_gn_iterations`` x ``init_cg_iterations``) on 200 positives and 1000
  negatives, L2 loss, weight decay lambda (Eq. 8).  The conv is fixed from then on, so the memory
  stores conv activations (1152 numbers a sample instead of 13824), which keeps 100 frames of
  samples small and spares every later solve the conv.  In async mode that 1x1 conv runs on the
  worker at the next solve, not on the hot path.
* Every frame the tracker may hand samples over (:meth:`add_samples`: cheap, on the hot path):
  n+ positives and n- negatives around the tracked box plus hard negatives (features of distractor
  proposals with high coarse scores and low IoU to the tracked box, labelled 0).  As in MDNet only
  reliable frames are kept: a box the tracker is unsure of may be the distractor, so its
  "positives" would teach D the wrong object.
* MDNet's short-long strategy (:meth:`maybe_update`): a long-term update every K frames
  (positives from the last ``long_term_frames`` reliable frames, negatives from the last
  ``short_term_frames``), and a short-term update at once when the confidence drops below
  ``short_term_threshold`` (positives and negatives from the last ``short_term_frames`` frames).
  The first frame's samples are always part of the training set; past ``update_max_positives`` /
  ``update_max_negatives`` whole memory frames are taken evenly spaced over the memory (a full
  memory of ~10,000 samples takes seconds to solve on a CPU).  Updates touch fc1 and fc2 only,
  warm-started from the newest weights (``update_gn_iterations`` x ``update_cg_iterations``).

Collect, solve, swap
--------------------
The hot path reads D's fc weights as one immutable :class:`~cract_core.discriminator.FCWeights`
reference.  A solve never writes into a published snapshot; it builds a new one.  Modes:

* ``"sync"``: :meth:`maybe_update` solves in the caller's thread and swaps at once (deterministic;
  for evaluation).
* ``"async"``: :meth:`maybe_update` hands a request to one worker thread (on CUDA with its own
  stream) and returns.  Newest request wins: a request not yet started (or held at
  ``solve_gate``) is replaced by a newer one, so there is never more than one solve running and
  never a backlog.  The finished snapshot is
  parked in a slot; the next :meth:`begin_frame` swaps it in (one reference assignment between
  frames, so one frame never mixes two versions).
* ``"async"`` with ``cfg.async_swap_delay = L >= 0`` (deterministic test setting): the solve still
  runs on the worker, but requests queue in order and the snapshot of an update requested at frame
  t is swapped in exactly at ``begin_frame(t + L)`` (for L = 0: before ``maybe_update(t)`` returns),
  waiting for the solve if it is not done.  This gives exactly the scores of a synchronous learner
  whose update is applied L frames later.

No lock is held while a network runs: ``self._lock`` only guards the hand-over of requests and
results.  ``solve_gate`` (a threading.Event) makes the worker wait before each solve, so tests and
the ROS node can hold updates back; ``solve_hook`` is called by the worker before each solve (tests
use it to make solves slow).  :meth:`close` stops and joins the worker.
"""
from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import torch

from .config import OnlineConfig
from .discriminator import (
    ConvParams,
    FCWeights,
    conv_forward,
    fc_forward,
    init_conv_pca,
    init_fc,
)
from .discriminator import score as d_score
from .geometry import as_box, iou
from .optimization import LeastSquaresProblem, SolverStats, gauss_newton_cg, ridge_residuals

log = logging.getLogger(__name__)

UpdateKind = Literal["long", "short"]
# Async mode: memory frames whose 1x1 conv still waits for the worker; beyond this many the hot
# path projects the oldest itself (raw features are 12x the size of the conv activations).
MAX_UNPROJECTED = 3


# --------------------------------------------------------------------------- sample generation

def _rejection_sample(
    draw: Callable[[int], np.ndarray],
    accept: Callable[[np.ndarray], np.ndarray],
    n: int,
    max_rounds: int,
) -> np.ndarray:
    """Draw candidate boxes in vectorised batches, keep the accepted ones, until n are found."""
    out: list[np.ndarray] = []
    have = 0
    for _ in range(max_rounds):
        if have >= n:
            break
        # Over-draw: acceptance rates are ~30-90 %, so one or two rounds usually suffice.
        cand = draw(max(4 * (n - have), 16))
        cand = cand[accept(cand)]
        out.append(cand)
        have += len(cand)
    if not out:
        return np.zeros((0, 4))
    return np.concatenate(out, axis=0)[:n]


def sample_boxes(
    target_xywh: Sequence[float] | np.ndarray,
    n_pos: int,
    n_neg: int,
    rng: np.random.Generator,
    pos_iou: float = 0.7,
    neg_iou: float = 0.3,
    bounds: Optional[tuple[float, float]] = None,
    near_fraction: float = 0.5,
    max_rounds: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative training boxes around a target, as MDNet/CRACT draw them.

    Positives: the target's centre shifted and its scale and aspect changed within ranges matched to
    ``pos_iou`` (r = (1 - pos_iou) / (1 + pos_iou): shifts up to r box sizes, scale up to e^r),
    kept when IoU >= ``pos_iou``.  Negatives: ``near_fraction`` of them in
    the surrounding region (centre within two target sizes, scale +-50 %), the rest anywhere in the
    image (``bounds`` = (width, height)) or, without bounds, within five target sizes; kept when
    IoU <= ``neg_iou`` and, with bounds, when the box centre lies in the image (RoIAlign of a box
    wholly outside would only see padding).

    Returns (boxes (n, 4) float64 xywh, labels (n,) float32: 1 for positives, then 0 for
    negatives).  Deterministic for a given Generator state.  Exactly n_pos / n_neg boxes unless the
    geometry makes that impossible (e.g. a target filling the whole image has no negatives inside
    it); then as many as ``max_rounds`` rounds of rejection sampling found.
    """
    t = as_box(target_xywh)
    if t[2] <= 0 or t[3] <= 0:
        raise ValueError(f"target box must have a positive size, got {t.tolist()}")
    tx, ty, tw, th = t
    cx, cy = tx + tw / 2, ty + th / 2
    target = t[None, :]

    def boxes_from(ccx: np.ndarray, ccy: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
        return np.stack([ccx - w / 2, ccy - h / 2, w, h], axis=1)

    # Jitter range matched to the IoU asked for: a shift of r (in box sizes) along one axis, or a
    # scale change of e^r, alone gives IoU ~ (1 - r) / (1 + r) = pos_iou.  Wider ranges would be
    # rejected most of the time (12 % acceptance at 0.7 with +-25 % shifts), narrower ones would
    # never reach the IoU boundary.
    r_pos = max((1.0 - pos_iou) / (1.0 + pos_iou), 0.0)

    def draw_pos(m: int) -> np.ndarray:
        d = rng.uniform(-r_pos, r_pos, size=(m, 2))
        s = np.exp(rng.uniform(-r_pos, r_pos, size=m))
        a = np.exp(rng.uniform(-r_pos / 2, r_pos / 2, size=m))
        return boxes_from(cx + d[:, 0] * tw, cy + d[:, 1] * th, tw * s * a, th * s / a)

    def inside(b: np.ndarray) -> np.ndarray:
        if bounds is None:
            return np.ones(len(b), dtype=bool)
        bx, by = b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
        return (bx >= 0) & (bx <= bounds[0]) & (by >= 0) & (by <= bounds[1])

    def draw_near(m: int) -> np.ndarray:
        d = rng.uniform(-2.0, 2.0, size=(m, 2))
        s = np.exp(rng.uniform(-0.5, 0.5, size=m))
        a = np.exp(rng.uniform(-0.1, 0.1, size=m))
        return boxes_from(cx + d[:, 0] * tw, cy + d[:, 1] * th, tw * s * a, th * s / a)

    def draw_far(m: int) -> np.ndarray:
        if bounds is not None:
            ccx = rng.uniform(0.0, bounds[0], size=m)
            ccy = rng.uniform(0.0, bounds[1], size=m)
        else:
            ccx = cx + rng.uniform(-5.0, 5.0, size=m) * tw
            ccy = cy + rng.uniform(-5.0, 5.0, size=m) * th
        s = np.exp(rng.uniform(-0.5, 0.5, size=m))
        a = np.exp(rng.uniform(-0.1, 0.1, size=m))
        return boxes_from(ccx, ccy, tw * s * a, th * s / a)

    def accept_pos(b: np.ndarray) -> np.ndarray:
        return iou(b, target, fmt="xywh") >= pos_iou

    def accept_neg(b: np.ndarray) -> np.ndarray:
        return (iou(b, target, fmt="xywh") <= neg_iou) & inside(b)

    pos = _rejection_sample(draw_pos, accept_pos, n_pos, max_rounds)
    n_near = int(round(n_neg * near_fraction))
    near = _rejection_sample(draw_near, accept_neg, n_near, max_rounds)
    far = _rejection_sample(draw_far, accept_neg, n_neg - len(near), max_rounds)
    if len(near) + len(far) < n_neg:
        # The far region can be empty (a target filling the image): fill up from the near one.
        near = np.concatenate([near, _rejection_sample(draw_near, accept_neg, n_neg - len(near) - len(far), max_rounds)])
    boxes = np.concatenate([pos, near, far], axis=0).astype(np.float64)
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(near) + len(far))]).astype(np.float32)
    return boxes, labels


# --------------------------------------------------------------------------- the L2 problem

def class_balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """sqrt of per-sample loss weights: each class gets half the loss, whatever its count.

    Without this the 1000 (or 4000) negatives would outweigh the 200 positives five to one and the
    cheapest fit would score everything low.  With one class only, a plain mean.
    """
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return torch.full_like(labels, 1.0 / math.sqrt(max(len(labels), 1)))
    w = torch.where(pos, torch.tensor(0.5 / n_pos, dtype=labels.dtype, device=labels.device),
                    torch.tensor(0.5 / n_neg, dtype=labels.dtype, device=labels.device))
    return w.sqrt()


class DiscriminatorProblem(LeastSquaresProblem):
    """Eq. 8: residuals sqrt(w_i) (D(x_i) - y_i) and sqrt(lambda) * params.

    ``fit_conv=True`` (frame 1): params are [conv_w, conv_b, fc1_w, fc1_b, fc2_w, fc2_b] and
    ``inputs`` are RoIAlign features (n, C, S, S); with ``conv_basis`` (k, C) the conv weight is
    ``A @ conv_basis`` and params[0] is A (out, k) (same weight decay: the basis is orthonormal).  ``fit_conv=False`` (updates): params are the
    four fc tensors and ``inputs`` are the fixed conv's flattened activations (n, F).
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, weight_decay: float, fit_conv: bool,
                 sample_weights: Optional[torch.Tensor] = None, conv_basis: Optional[torch.Tensor] = None):
        self.labels = labels.to(inputs.dtype)
        self.sqrt_w = sample_weights if sample_weights is not None else class_balanced_weights(self.labels)
        self.weight_decay = weight_decay
        self.fit_conv = fit_conv
        if fit_conv:
            # A 1x1 conv is a matrix product over (sample, cell) rows; as one matmul it runs about
            # three times faster on the CPU than conv2d and its backward, and each CG iteration
            # runs it twice.  Rows are laid out once here.
            n, c, s1, s2 = inputs.shape
            self.n, self.cells = n, s1 * s2
            self.inputs = inputs.permute(0, 2, 3, 1).reshape(n * self.cells, c).contiguous()
            if conv_basis is not None:
                # Conv weight W = A @ basis (basis: k orthonormal rows): the rows are projected once
                # and the unknown is A (out x k), so every pass costs k / C of the full conv.
                self.inputs = self.inputs @ conv_basis.T
        else:
            self.inputs = inputs

    def predict(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.fit_conv:
            w, b = params[0], params[1]
            h = torch.relu(torch.addmm(b, self.inputs, w.reshape(w.shape[0], -1).T))  # (n*cells, out)
            # The rows come out cell-major within each sample; conv_forward(...).flatten(1) is
            # channel-major.  Permuting fc1's columns (73k numbers) instead of the activations
            # (n * 36 * 32) spares a large copy in every forward and backward pass.
            hidden = h.reshape(self.n, -1)
            fc1_w = params[2]
            fc1_w = fc1_w.reshape(fc1_w.shape[0], h.shape[1], self.cells).transpose(1, 2).reshape(fc1_w.shape[0], -1)
            fc = [fc1_w, *params[3:]]
        else:
            hidden, fc = self.inputs, params
        return fc_forward(hidden, *fc)

    def residuals(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.sqrt_w * (self.predict(params) - self.labels)] + ridge_residuals(params, self.weight_decay)


def _spread(sizes: Sequence[int], budget: int) -> list[int]:
    """Indices of whole frames (oldest first) holding at most ``budget`` samples: all when they
    fit, else frames evenly spaced over the memory with the newest always in.

    Whole frames keep each frame's hard negatives (the tracker appends them to a frame's rows), and
    spacing keeps the memory's whole time span.  Deterministic, so sync and async agree.
    """
    n = len(sizes)
    total = sum(sizes)
    if total <= budget:
        return list(range(n))
    if budget <= 0 or n == 0:
        return []
    k = max(int(budget // max(total / n, 1.0)), 1)
    if k >= n:
        return list(range(n))
    # k indices spread over 0..n-1 with the last one at n-1 (the newest frame).
    idx = sorted({n - 1 - int(round(i * (n - 1) / max(k - 1, 1))) for i in range(k)}) if k > 1 else [n - 1]
    while len(idx) > 1 and sum(sizes[i] for i in idx) > budget:
        idx.pop(0)  # frames of unequal size: drop the oldest until it fits
    return idx


class _MemFrame:
    """One add_samples call in the memory: raw features until projected by the fixed conv.

    In async mode the 1x1 conv of a frame's samples runs on the worker, at the first solve that
    uses it, not on the hot path.  ``data`` is replaced by one assignment, ("raw", features, mask)
    -> ("hidden", positives, negatives), so a reader on another thread sees one or the other whole;
    if two threads project the same frame at once both compute the same thing and one wins.
    """

    __slots__ = ("index", "n_pos", "n_neg", "conv", "data")

    def __init__(self, index: int, features: torch.Tensor, pos_mask: torch.Tensor, conv: ConvParams):
        self.index = index
        self.n_pos = int(pos_mask.sum())
        self.n_neg = int(pos_mask.numel() - self.n_pos)
        self.conv = conv
        self.data: tuple = ("raw", features, pos_mask)

    @property
    def projected(self) -> bool:
        return self.data[0] == "hidden"

    def hidden(self) -> tuple[torch.Tensor, torch.Tensor]:
        kind, a, b = self.data
        if kind == "hidden":
            return a, b
        with torch.no_grad():
            h = conv_forward(a, self.conv).flatten(1)
        if a.is_cuda:
            # The raw features die with this frame's old data, maybe while this (worker) stream
            # still reads them: the allocator must not hand their memory out before it is done.
            a.record_stream(torch.cuda.current_stream(a.device))
        pos, neg = h[b], h[~b]
        self.data = ("hidden", pos, neg)
        return pos, neg


class _SubsetProblem(LeastSquaresProblem):
    """A problem over some of another problem's parameters, the others held at given values."""

    def __init__(self, problem: LeastSquaresProblem, params: Sequence[torch.Tensor], free: Sequence[int]):
        self.problem = problem
        self.params = [p.detach() for p in params]
        self.free = list(free)

    def residuals(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        full = list(self.params)
        for i, p in zip(self.free, params):
            full[i] = p
        return self.problem.residuals(full)


# --------------------------------------------------------------------------- the learner

@dataclass
class _Request:
    id: int
    epoch: int
    frame_index: int
    kind: UpdateKind
    due_frame: Optional[int]
    first_pos: torch.Tensor
    first_neg: torch.Tensor
    pos_frames: list[_MemFrame]
    neg_frames: list[_MemFrame]
    cuda_event: Optional[object] = None


@dataclass
class UpdateRecord:
    """What an update did: for logs, diagnostics and tests."""

    frame_index: int
    kind: UpdateKind
    version: int
    n_pos: int
    n_neg: int
    stats: SolverStats
    thread: str = field(default="")


class OnlineLearner:
    """D's weights, its sample memory and its updates (see the module docstring)."""

    def __init__(
        self,
        cfg: OnlineConfig,
        in_channels: int,
        device: str | torch.device = "cpu",
        mode: Literal["sync", "async"] = "sync",
        spatial_size: int = 6,
        conv_channels: int = 32,
        fc_hidden: int = 64,
        seed: int = 0,
        conv_subspace: Optional[int] = None,
    ):
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
        self.cfg = cfg
        self.in_channels = in_channels
        self.spatial_size = spatial_size
        self.conv_channels = conv_channels
        self.fc_hidden = fc_hidden
        self.seed = seed
        # None: the frame-1 fit moves the conv freely in all C input channels (the paper).  k: the
        # conv may only move within the top-k principal components of the first frame's features,
        # which makes the fit's conv passes k / C as costly (an approximation for slow CPUs).
        # The argument wins over cfg.init_conv_subspace (0 there means None).
        self.conv_subspace = conv_subspace if conv_subspace is not None else (cfg.init_conv_subspace or None)
        self.device = torch.device(device)
        self.mode = mode
        self.swap_delay: Optional[int] = cfg.async_swap_delay if (mode == "async" and cfg.async_swap_delay >= 0) else None

        # Hot-path state: assigned only by the tracker's thread, each read as one reference.
        self._conv: Optional[ConvParams] = None
        self._fc: Optional[FCWeights] = None
        self._init_frame = 0
        self._first_pos: Optional[torch.Tensor] = None
        self._first_neg: Optional[torch.Tensor] = None
        # Both deques hold the same _MemFrame objects (a frame is in both while it is recent).
        self._long: deque[_MemFrame] = deque(maxlen=max(cfg.long_term_frames, 1))
        self._short: deque[_MemFrame] = deque(maxlen=max(cfg.short_term_frames, 1))
        self._unprojected: deque[_MemFrame] = deque()
        self._added_since: dict[str, int] = {"long": 0, "short": 0}
        self._last_kind: Optional[str] = None
        self._next_id = 0
        self._delayed: deque[_Request] = deque()  # delay mode: requested, not yet swapped in

        # Hand-over state, guarded by _lock (never held while a network runs).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._epoch = 0
        self._queue: deque[_Request] = deque()
        self._results: dict[int, tuple[Optional[FCWeights], Optional[BaseException]]] = {}
        self._ready: Optional[FCWeights] = None
        self._last_solved: Optional[FCWeights] = None
        self._solving = False
        self._closed = False
        self._worker: Optional[threading.Thread] = None
        self._stream = None

        self.solve_gate: Optional[threading.Event] = None
        self.solve_hook: Optional[Callable[[_Request], None]] = None
        self.last_error: Optional[BaseException] = None
        self.updates: deque[UpdateRecord] = deque(maxlen=100)
        self.init_stats: Optional[SolverStats] = None

    # ------------------------------------------------------------------ read side (hot path)

    @property
    def initialized(self) -> bool:
        return self._fc is not None

    @property
    def version(self) -> int:
        fc = self._fc
        return fc.version if fc is not None else 0

    @property
    def fc_weights(self) -> Optional[FCWeights]:
        """The snapshot the hot path scores with now."""
        return self._fc

    @property
    def conv_params(self) -> Optional[ConvParams]:
        return self._conv

    @property
    def solving(self) -> bool:
        """The worker has taken a request (it may still be waiting on ``solve_gate``)."""
        with self._lock:
            return self._solving

    @property
    def busy(self) -> bool:
        """A request is queued, being solved, or solved and waiting for its swap."""
        with self._lock:
            return bool(self._queue) or self._solving or self._ready is not None or bool(self._delayed)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """tau in [0, 1] for features (n, C, S, S), with the current snapshot."""
        conv, fc = self._conv, self._fc
        if conv is None or fc is None:
            raise RuntimeError("OnlineLearner.score called before initialize")
        return d_score(features, conv, fc)

    # ------------------------------------------------------------------ frame 1

    def _check_features(self, features: torch.Tensor, labels: Optional[torch.Tensor]) -> None:
        if features.dim() != 4 or features.shape[1] != self.in_channels or features.shape[2:] != (self.spatial_size,) * 2:
            raise ValueError(
                f"features must be (n, {self.in_channels}, {self.spatial_size}, {self.spatial_size}), got {tuple(features.shape)}")
        if labels is not None and (labels.dim() != 1 or labels.shape[0] != features.shape[0]):
            raise ValueError(f"labels must be ({features.shape[0]},), got {tuple(labels.shape)}")

    def initialize(self, features: torch.Tensor, labels: torch.Tensor, frame_index: int = 0) -> SolverStats:
        """Fit D's conv and fc layers on the first frame's samples (blocking, in the caller's thread).

        Also starts a new target: pending or running updates of the previous one are discarded,
        the memory is emptied and the first frame's samples are kept for good.
        """
        features = features.to(self.device)
        labels = torch.as_tensor(labels, device=self.device).to(features.dtype)
        self._check_features(features, labels)
        pos_mask = labels > 0.5
        if int(pos_mask.sum()) == 0 or int((~pos_mask).sum()) == 0:
            raise ValueError("initialize needs both positive and negative samples")
        with self._cond:
            # A new epoch: whatever the worker returns for the old target is thrown away.
            self._epoch += 1
            self._queue.clear()
            self._results.clear()
            self._ready = None
            self._last_solved = None
        self._delayed.clear()

        k = self.conv_subspace
        use_basis = k is not None and self.conv_channels <= k < self.in_channels
        # One eigen-decomposition gives the conv's PCA init (the top conv_channels components) and,
        # in subspace mode, the basis (top k) that the conv may move in.
        pca = init_conv_pca(features, k if use_basis else self.conv_channels)
        conv0 = ConvParams(pca.weight[: self.conv_channels], pca.bias[: self.conv_channels])
        basis = pca.weight.reshape(pca.weight.shape[0], -1) if use_basis else None
        n_in = self.conv_channels * self.spatial_size ** 2
        fc0 = init_fc(n_in, self.fc_hidden, seed=self.seed, device=self.device, dtype=features.dtype)
        problem = DiscriminatorProblem(features, labels, self.cfg.weight_decay, fit_conv=True, conv_basis=basis)
        if basis is not None:
            coeff0 = torch.eye(basis.shape[0], dtype=features.dtype, device=features.device)[: self.conv_channels]
            params0 = [coeff0, conv0.bias] + fc0.tensors()
        else:
            params0 = conv0.tensors() + fc0.tensors()
        # With fc2 = 0 the conv and fc1 have a zero Jacobian, so a joint Gauss-Newton step would
        # see only their weight decay and set them to exactly zero (a dead network that outputs a
        # constant).  The first step therefore fits fc2 alone (a ridge regression on fc1's random
        # features of the PCA projection); the remaining steps fit conv + fc together.
        head = _SubsetProblem(problem, params0, free=[4, 5])
        loss0 = problem.loss(params0)
        fc2, stats_head = gauss_newton_cg(head, params0[4:], 1, self.cfg.init_cg_iterations)
        params1 = params0[:4] + fc2
        params, stats = gauss_newton_cg(problem, params1, max(self.cfg.init_gn_iterations - 1, 0),
                                        self.cfg.init_cg_iterations)
        stats.loss_history.insert(0, loss0)
        stats.cg_iterations[:0] = stats_head.cg_iterations
        stats.cg_residuals[:0] = stats_head.cg_residuals
        stats.step_scales[:0] = stats_head.step_scales
        weight = params[0] if basis is None else params[0] @ basis
        conv = ConvParams(weight.reshape(self.conv_channels, self.in_channels, 1, 1).contiguous(), params[1])
        fc = FCWeights(params[2], params[3], params[4], params[5], version=self.version + 1)
        with torch.no_grad():
            hidden = conv_forward(features, conv).flatten(1)
        self._first_pos, self._first_neg = hidden[pos_mask], hidden[~pos_mask]
        self._long.clear()
        self._short.clear()
        self._unprojected.clear()
        self._added_since = {"long": 0, "short": 0}
        self._last_kind = None
        self._init_frame = frame_index
        self.init_stats = stats
        self.last_error = None
        self._conv, self._fc = conv, fc
        return stats

    # ------------------------------------------------------------------ collect (hot path, cheap)

    def add_samples(self, frame_index: int, features: torch.Tensor, labels: torch.Tensor, reliable: bool = True) -> None:
        """Put one frame's samples in the memory (features (n, C, S, S), labels 1 / 0).

        Hard negatives are simply more rows with label 0.  Unreliable frames are dropped (MDNet):
        their positives may show the distractor and their negatives the target.  The samples are
        kept as conv activations (the conv is fixed after frame 1); sync mode projects them here,
        async mode leaves the 1x1 conv to the worker (at most ``MAX_UNPROJECTED`` frames wait for
        it, so a held gate cannot pile up raw features).
        """
        if self._conv is None:
            raise RuntimeError("OnlineLearner.add_samples called before initialize")
        if not reliable:
            return
        features = features.to(self.device)
        labels = torch.as_tensor(labels, device=self.device)
        self._check_features(features, labels)
        frame = _MemFrame(frame_index, features, labels > 0.5, self._conv)
        if self.mode == "sync":
            frame.hidden()
        else:
            self._unprojected.append(frame)
            while self._unprojected and self._unprojected[0].projected:
                self._unprojected.popleft()
            while len(self._unprojected) > MAX_UNPROJECTED:
                self._unprojected.popleft().hidden()
        self._long.append(frame)
        self._short.append(frame)
        self._added_since["long"] += 1
        self._added_since["short"] += 1

    # ------------------------------------------------------------------ decide and solve

    def maybe_update(self, frame_index: int, confidence: Optional[float] = None) -> bool:
        """Start an update when one is due; True when one started (the tracker's `updated` flag).

        Short-term at once when ``confidence < short_term_threshold`` (unless the previous update
        was short-term and no samples came since: it would solve the same problem again);
        otherwise long-term every K frames after the first, when samples came since the last
        long-term update.
        """
        if self._fc is None or not self.cfg.enabled:
            return False
        kind: Optional[UpdateKind] = None
        if confidence is not None and confidence < self.cfg.short_term_threshold:
            if self._short and not (self._last_kind == "short" and self._added_since["short"] == 0):
                kind = "short"
        elif (frame_index - self._init_frame) % self.cfg.update_interval == 0 and frame_index != self._init_frame:
            if self._added_since["long"] > 0:
                kind = "long"
        if kind is None:
            return False
        self.request_update(frame_index, kind)
        return True

    def _training_frames(self, kind: UpdateKind) -> tuple[list[_MemFrame], list[_MemFrame]]:
        """Memory frames whose positives / negatives an update of this kind trains on (oldest first),
        capped at ``update_max_positives`` / ``update_max_negatives`` with the first frame's samples."""
        if self._first_pos is None or self._first_neg is None:
            raise RuntimeError("OnlineLearner has no first-frame samples; call initialize first")
        pos_frames = list(self._long) if kind == "long" else list(self._short)
        neg_frames = list(self._short)
        pos_idx = _spread([f.n_pos for f in pos_frames], self.cfg.update_max_positives - len(self._first_pos))
        neg_idx = _spread([f.n_neg for f in neg_frames], self.cfg.update_max_negatives - len(self._first_neg))
        return [pos_frames[i] for i in pos_idx], [neg_frames[i] for i in neg_idx]

    def training_set(self, kind: UpdateKind) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The conv activations an update of this kind trains on, first frame first (projects
        memory frames that are not yet)."""
        pos_frames, neg_frames = self._training_frames(kind)
        return ([self._first_pos, *(f.hidden()[0] for f in pos_frames)],
                [self._first_neg, *(f.hidden()[1] for f in neg_frames)])

    def request_update(self, frame_index: int, kind: UpdateKind = "long") -> None:
        """Start an fc update now, whatever the schedule (maybe_update calls this)."""
        if self._fc is None:
            raise RuntimeError("OnlineLearner.request_update called before initialize")
        pos_frames, neg_frames = self._training_frames(kind)
        self._added_since[kind] = 0
        if kind == "long":
            self._added_since["short"] = 0  # the long-term set contains every short-term frame too
        self._last_kind = kind
        self._next_id += 1
        due = frame_index + self.swap_delay if self.swap_delay is not None else None
        req = _Request(self._next_id, self._epoch, frame_index, kind, due,
                       self._first_pos, self._first_neg, pos_frames, neg_frames)
        if self.mode == "sync":
            new, record = self._solve(req, self._fc)
            self.updates.append(record)
            self._fc = new
            return
        if self.device.type == "cuda":
            # The worker's stream must see the samples that this thread's stream produced.
            ev = torch.cuda.Event()
            ev.record()
            req.cuda_event = ev
        self._ensure_worker()
        with self._cond:
            if self.swap_delay is None:
                self._queue.clear()  # newest request wins: an unstarted older one is dropped
            self._queue.append(req)
            self._cond.notify_all()
        if self.swap_delay is not None:
            self._delayed.append(req)
            if self.swap_delay == 0:
                self._apply_due(frame_index)

    def _solve(self, req: _Request, start: FCWeights) -> tuple[FCWeights, UpdateRecord]:
        # Projecting frames here (the worker, in async mode) keeps the 1x1 conv off the hot path.
        pos = torch.cat([req.first_pos, *(f.hidden()[0] for f in req.pos_frames)])
        neg = torch.cat([req.first_neg, *(f.hidden()[1] for f in req.neg_frames)])
        inputs = torch.cat([pos, neg])
        labels = torch.cat([torch.ones(len(pos), dtype=inputs.dtype, device=inputs.device),
                            torch.zeros(len(neg), dtype=inputs.dtype, device=inputs.device)])
        problem = DiscriminatorProblem(inputs, labels, self.cfg.weight_decay, fit_conv=False)
        params, stats = gauss_newton_cg(problem, start.tensors(), self.cfg.update_gn_iterations,
                                        self.cfg.update_cg_iterations)
        # gauss_newton_cg returns fresh tensors, so `start` (maybe being read right now) is untouched.
        new = FCWeights(params[0], params[1], params[2], params[3], version=start.version + 1)
        record = UpdateRecord(req.frame_index, req.kind, new.version, len(pos), len(neg), stats,
                              threading.current_thread().name)
        return new, record

    # ------------------------------------------------------------------ swap (between frames)

    def begin_frame(self, frame_index: int) -> None:
        """Call first thing in every frame: swaps in finished updates (async) or due ones (delay mode)."""
        if self.mode != "async":
            return
        if self.swap_delay is not None:
            self._apply_due(frame_index)
            return
        with self._lock:
            new, self._ready = self._ready, None
        if new is not None:
            self._swap(new)

    def _swap(self, new: FCWeights) -> None:
        if new.device.type == "cuda":
            # The tensors were made on the worker's stream; tell the allocator this stream uses them.
            for t in new.tensors():
                t.record_stream(torch.cuda.current_stream(new.device))
        self._fc = new  # the one reference assignment the hot path sees

    def _apply_due(self, frame_index: int) -> None:
        while self._delayed and self._delayed[0].due_frame is not None and self._delayed[0].due_frame <= frame_index:
            req = self._delayed[0]
            with self._cond:
                while req.id not in self._results:
                    if self._closed:
                        raise RuntimeError("OnlineLearner closed while an update was due")
                    self._cond.wait(0.1)
                new, err = self._results.pop(req.id)
            self._delayed.popleft()
            if err is not None:
                raise RuntimeError(f"online update requested at frame {req.frame_index} failed: {err}") from err
            if new is not None:
                self._swap(new)

    # ------------------------------------------------------------------ the worker

    def _ensure_worker(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            return
        if self._closed:
            raise RuntimeError("OnlineLearner is closed")
        if self.device.type == "cuda" and self._stream is None:
            self._stream = torch.cuda.Stream(device=self.device)
        self._worker = threading.Thread(target=self._worker_loop, name="cract-online-update", daemon=True)
        self._worker.start()

    def _wait_gate(self) -> bool:
        gate = self.solve_gate
        if gate is None:
            return True
        while not gate.wait(0.05):
            if self._closed:
                return False
        return not self._closed

    def _worker_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                req = self._queue.popleft()
                self._solving = True
            new: Optional[FCWeights] = None
            err: Optional[BaseException] = None
            try:
                if not self._wait_gate():
                    return
                if self.swap_delay is None:
                    with self._lock:
                        if self._queue:
                            # A newer request came while this one waited at the gate: newest wins,
                            # the older one is not worth a solve of its own.
                            req = self._queue.pop()
                            self._queue.clear()
                hook = self.solve_hook
                if hook is not None:
                    hook(req)
                with self._lock:
                    # Warm start from the newest weights of this target: the worker's own last
                    # result when it is not swapped in yet, else the current snapshot.
                    start = self._fc
                    if self._last_solved is not None and start is not None and self._last_solved.version > start.version:
                        start = self._last_solved
                if start is None or req.epoch != self._epoch:
                    raise _Stale()
                if self._stream is not None:
                    with torch.cuda.stream(self._stream):
                        if req.cuda_event is not None:
                            self._stream.wait_event(req.cuda_event)
                        new, record = self._solve(req, start)
                    self._stream.synchronize()  # the snapshot is complete before anyone can read it
                else:
                    new, record = self._solve(req, start)
                self.updates.append(record)
            except _Stale:
                new = None
            except BaseException as exc:  # noqa: BLE001 - kept and surfaced, the worker goes on
                err = exc
                log.exception("online update failed")
            with self._cond:
                self._solving = False
                if req.epoch == self._epoch:
                    if err is not None:
                        self.last_error = err
                    if new is not None:
                        self._last_solved = new
                    if self.swap_delay is not None:
                        self._results[req.id] = (new, err)
                    elif new is not None:
                        self._ready = new
                self._cond.notify_all()

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until no request is queued or being solved (tests, clean shutdown). False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._solving, timeout)

    def close(self, timeout: Optional[float] = 5.0) -> None:
        """Stop the worker (a solve in progress finishes first) and join it."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
            if worker.is_alive():
                log.warning("online update worker did not stop within %.1f s", timeout or 0.0)

    def __enter__(self) -> "OnlineLearner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Stale(Exception):
    """A request of a target that initialize() has since replaced."""
