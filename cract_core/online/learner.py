"""OnlineLearner: initialise D on frame 1, collect samples, solve updates (sync or on a worker
thread) and swap the new weights in between frames (see the package docstring for when)."""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import torch

from ..config import OnlineConfig
from ..discriminator import ConvParams, FCWeights, conv_forward, init_conv_pca, init_fc
from ..discriminator import score as d_score
from ..optimization import SolverStats, gauss_newton_cg
from .memory import MAX_UNPROJECTED, _MemFrame, _spread
from .problem import DiscriminatorProblem, _SubsetProblem

log = logging.getLogger(__name__)

UpdateKind = Literal["long", "short"]


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
