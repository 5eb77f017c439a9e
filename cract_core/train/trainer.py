"""The offline trainer of CRACT's heads: L = l_rpn + l_reg + l_ide (paper Sec. 3.4).

SGD (lr 1e-2, momentum 0.9, weight decay 1e-4 from TrainConfig), linear warm-up then cosine (or
step) decay, only the parameters CRACTNet makes trainable (``net.trainable_parameters()``: heads,
plus backbone stages when ``backbone.trainable_stages`` > 0).  Mixed precision on CUDA only.

Files under ``out_dir``:

* ``last.pt`` (+ ``.sha256``): full state (heads, optimizer, scheduler, RNG, step), written every
  ``train.checkpoint_every_s`` seconds and at the end; ``--resume`` continues from it;
* ``final.pt`` (+ ``.sha256``): the heads alone at the end (what models/ ships: a few MB);
* ``log.csv``: step, wall time, lr, pairs/s and every loss, appended on resume;
* ``tensorboard/`` when asked and the ``tensorboard`` package is installed.

Distributed: started by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR in the
environment) it joins the process group (nccl on CUDA, gloo on CPU), wraps the loss in
DistributedDataParallel, and each rank loads its own slice of every global batch
(:class:`~cract_core.train.sampler.StepBatchSampler`); ``train.batch_size`` is per process.

Determinism: pair i is a function of (seed, i); the losses' random anchor/proposal sampling uses
one torch.Generator per rank seeded from (seed, rank) and saved in checkpoints; so on the CPU a
fixed seed gives the same weights, and a resumed run the same weights as an uninterrupted one.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import gc
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence as Seq

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from cract_core.backbone import align_phi4
from cract_core.checkpoint import load_checkpoint, restore_rng_state, save_checkpoint
from cract_core.config import ExperimentConfig, config_from_dict, to_dict
from cract_core.errors import CheckpointError
from cract_core.train.augment import AugmentConfig
from cract_core.datasets import TrackingDataset
from cract_core.train.pairs import PairDataset, collate_pairs
from cract_core.train.sampler import StepBatchSampler

log = logging.getLogger(__name__)

LOSS_KEYS = ("total", "rpn_cls", "rpn_reg", "reg", "ide")
MAX_BAD_STEPS = 10  # consecutive non-finite losses before giving up (a diverged run, not a glitch)

__all__ = ["TrainOptions", "Trainer", "WarmupDecay", "resolve_device", "DistributedContext", "setup_distributed", "weights_sha256", "FastFrozenBackbone"]


@dataclass
class TrainOptions:
    """What a run needs beyond the experiment config (CLI flags)."""

    out_dir: Path
    steps: Optional[int] = None  # overrides train.steps
    device: str = "auto"
    resume: bool = False
    batch_size: Optional[int] = None  # per process; overrides train.batch_size
    num_workers: Optional[int] = None  # overrides train.num_workers
    schedule: Literal["cosine", "step"] = "cosine"
    final_lr_fraction: float = 0.01  # cosine: lr decays to this fraction; step: x0.1 at 60% and 85%
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = False
    checkpoint_every_s: Optional[float] = None  # overrides train.checkpoint_every_s
    # Stop (with a checkpoint) at this step although the schedule runs to train.steps: a long run
    # sliced into sessions on a shared machine; --resume continues on the same schedule.
    stop_at: Optional[int] = None
    # Frozen backbone only: cache phi_3/phi_4 of augmented crops in this folder and train the heads
    # on them (cract_core/train/feature_cache.py); (search, template) crops per frame.
    feature_cache: Optional[Path] = None
    cache_variants: tuple[int, int] = (6, 2)
    # The augmentation draws of the cached crops: apart from the training seed, so that runs with
    # different seeds (different heads' init and pair draws) share one cache.
    cache_seed: int = 0
    # Frozen backbone: train with a copy whose batch norms are folded into the convolutions and whose
    # tensors are channels_last (same outputs to ~1e-6; about 1.5x faster CPU steps, 2x faster cache builds).
    fast_backbone: bool = True
    seed: Optional[int] = None  # overrides train.seed
    threads: Optional[int] = None  # torch intra-op threads (CPU)
    dataset_weights: Optional[list[float]] = None
    data_description: list[str] = field(default_factory=list)  # recorded in checkpoints / model card


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (use cpu or auto)")
    return dev


class WarmupDecay:
    """lr multiplier: linear warm-up from 1/warmup to 1, then cosine (or step) decay.

    A plain object (not a lambda) so LambdaLR's state_dict stores it and a resume rebuilds it.
    """

    def __init__(self, warmup: int, total: int, kind: str = "cosine", final: float = 0.01) -> None:
        if kind not in ("cosine", "step"):
            raise ValueError(f"schedule must be 'cosine' or 'step', got {kind!r}")
        self.warmup, self.total, self.kind, self.final = max(0, warmup), max(1, total), kind, final

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        t = min(1.0, (step - self.warmup) / span)
        if self.kind == "cosine":
            return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * t))
        return 1.0 if t < 0.6 else (0.1 if t < 0.85 else 0.01)


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: torch.device) -> DistributedContext:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(), local, False)
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world} but {key} is not set: start distributed runs with torchrun")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistributedContext(rank, world, local, True)


class FastFrozenBackbone(nn.Module):
    """Training-time stand-in for a frozen Backbone: a copy of its body with batch norms folded into
    the convolutions (EfficientNet-Lite; backbone.fold_batchnorm_) and channels_last tensors.

    A frozen backbone runs in eval mode during training (CRACTNet.train_mode), so folding is exact up
    to float rounding (~1e-6 relative).  Offers what Backbone offers to its callers: forward,
    preprocess, body, frozen, phi3/phi4 channels and cfg.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        from cract_core.backbone import fold_batchnorm_

        body = copy.deepcopy(backbone.body).eval()
        fold_batchnorm_(body)
        self.body = body.to(memory_format=torch.channels_last)
        self._preprocess = backbone.preprocess
        self.phi3_channels = backbone.phi3_channels
        self.phi4_channels = backbone.phi4_channels
        self.cfg = backbone.cfg

    @property
    def frozen(self) -> bool:
        return True

    def preprocess(self, crops_bgr: torch.Tensor) -> torch.Tensor:
        return self._preprocess(crops_bgr).contiguous(memory_format=torch.channels_last)

    def forward(self, crops_bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        phi3, phi4 = self.body.features(self.preprocess(crops_bgr))
        phi4 = align_phi4(phi3, phi4, self.body.phi3_offset, self.body.phi4_offset)  # as Backbone.forward
        return phi3.contiguous(), phi4.contiguous()


class _LossModule(nn.Module):
    """DistributedDataParallel syncs gradients of what runs in forward(); CRACTNet trains through
    compute_losses(), so this wrapper makes that the forward."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.generator: Optional[torch.Generator] = None

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.net.compute_losses(batch, generator=self.generator)


def weights_sha256(net: nn.Module) -> str:
    """sha256 over the bytes of every head tensor, in key order (equal weights <=> equal hash)."""
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(net.head_state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class MissingOptionalPackage(ValueError):
    """An option was asked for whose optional package is not installed."""


def _summary_writer() -> Any:
    """torch's SummaryWriter, imported lazily: tensorboard is optional (not in requirements)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingOptionalPackage(
            "--tensorboard needs the optional 'tensorboard' package, which is not installed in this "
            "environment (pip install tensorboard); OUT/log.csv has the same numbers"
        ) from None
    return SummaryWriter


def _grads_finite(optimizer: torch.optim.Optimizer) -> bool:
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack([g.detach().float().abs().sum() for g in grads])).all())


def _make_net(cfg: ExperimentConfig, device: torch.device, seed: int) -> nn.Module:
    from cract_core.model import CRACTNet  # the network module is heavy; the data side must not need it

    # The same seed on every rank gives the same initial heads (DDP also broadcasts rank 0's).
    torch.manual_seed(seed)
    return CRACTNet(cfg, device=device)


class Trainer:
    def __init__(
        self,
        cfg: ExperimentConfig,
        datasets: Seq[TrackingDataset],
        options: TrainOptions,
        augment: Optional[AugmentConfig] = None,
    ) -> None:
        self.cfg = cfg
        self.opts = options
        self.out_dir = Path(options.out_dir)
        tc = cfg.train
        if options.seed is not None:
            tc.seed = options.seed
        if options.batch_size is not None:
            tc.batch_size = options.batch_size
        if options.num_workers is not None:
            tc.num_workers = options.num_workers
        if options.checkpoint_every_s is not None:
            tc.checkpoint_every_s = options.checkpoint_every_s
        if options.steps is not None:
            tc.steps = options.steps
        if tc.steps < 1 or tc.batch_size < 1:
            raise ValueError(f"train.steps and train.batch_size must be >= 1, got {tc.steps}, {tc.batch_size}")
        if options.threads:
            torch.set_num_threads(options.threads)
        self.device = resolve_device(options.device)
        self.ctx = setup_distributed(self.device)
        if self.device.type == "cuda" and self.ctx.enabled:
            self.device = torch.device("cuda", self.ctx.local_rank)
            torch.cuda.set_device(self.device)
        if options.tensorboard:
            _summary_writer()  # fail before any work when the optional package is missing
        self.augment = augment or AugmentConfig()
        self.net = _make_net(cfg, self.device, tc.seed)
        # The backbone the network keeps (and a tracker uses); during train() a stand-in may
        # replace it (fast copy, or cached features) and the original is put back afterwards, so
        # after training self.net is an ordinary CRACTNet.
        self.base_backbone = self.net.backbone
        self.train_backbone: Optional[nn.Module] = None
        if options.fast_backbone and self.base_backbone.frozen:
            self.train_backbone = FastFrozenBackbone(self.base_backbone)
        if options.feature_cache is not None:
            self.pairs = self._use_feature_cache(datasets, Path(options.feature_cache))
        else:
            self.pairs = PairDataset(datasets, options.dataset_weights, cfg, self.augment, seed=tc.seed)
        params = self.net.trainable_parameters()
        if not params:
            raise ValueError("the network has no trainable parameters")
        backbone_ids = {id(p) for p in self.base_backbone.parameters()}
        groups = [{"params": [p for p in params if id(p) not in backbone_ids], "lr": tc.lr}]
        tuned = [p for p in params if id(p) in backbone_ids]
        if tuned:
            groups.append({"params": tuned, "lr": tc.lr * tc.backbone_lr_scale})
        self.optimizer = torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupDecay(tc.warmup_steps, tc.steps, options.schedule, options.final_lr_fraction)
        )
        self.use_amp = bool(tc.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.generator = torch.Generator().manual_seed(tc.seed * 1000 + self.ctx.rank + 1)
        self.step = 0
        self.wall_s = 0.0  # training time over all sessions of this run (resumes add up)
        self.pairs_seen = 0
        if options.resume:
            self._resume()
        self.loss_module = _LossModule(self.net)
        self.loss_module.generator = self.generator
        self.model: Optional[nn.Module] = None  # built in train(), after the backbone swap
        self.history: list[dict[str, float]] = []

    def _use_feature_cache(self, datasets: Seq[TrackingDataset], folder: Path) -> Any:
        from cract_core.train.feature_cache import (
            CachedBackbone,
            CachedPairDataset,
            FeatureCache,
            build_feature_cache,
            cache_signature,
        )

        if not self.base_backbone.frozen:
            raise ValueError("--feature-cache needs a frozen backbone (backbone.trainable_stages: 0)")
        n_search, n_template = self.opts.cache_variants
        tc = self.cfg.train
        if self.ctx.is_main:
            builder = self.train_backbone if self.train_backbone is not None else self.base_backbone
            cache = build_feature_cache(folder, self.cfg, datasets, builder, self.augment,
                                        n_search, n_template, self.opts.cache_seed, progress=self.opts.progress)
        else:
            # Rank 0 builds; the others wait for its meta.json (written last) by polling, not with a
            # collective barrier, whose default timeout (30 min) a large cache build can exceed.
            want = cache_signature(self.cfg, datasets, self.augment, (n_template, n_search), self.opts.cache_seed)
            while True:
                try:
                    cache = FeatureCache(folder)
                    if cache.signature == want:
                        break
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(5.0)
        self.train_backbone = CachedBackbone(cache, self.base_backbone).to(self.device)
        # Drawing a cached pair is a few index look-ups: workers would only copy the memory maps.
        tc.num_workers = 0
        return CachedPairDataset(cache, datasets, self.opts.dataset_weights, self.cfg, self.augment, seed=tc.seed)

    # ------------------------------------------------------------------ checkpoints
    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def final_path(self) -> Path:
        return self.out_dir / "final.pt"

    def _extra(self) -> dict:
        gens = [self.generator.get_state()]
        if self.ctx.enabled:  # rank 0 writes the file, so it gathers every rank's sampling state
            gathered: list[Any] = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, self.generator.get_state())
            gens = gathered
        return {
            "generators": gens,
            "world_size": self.ctx.world_size,
            "batch_size": self.cfg.train.batch_size,
            "total_steps": self.cfg.train.steps,
            "pairs_seen": self.pairs_seen,
            "wall_s": self.wall_s,
            "augment": dataclasses.asdict(self.augment),
            "data": list(self.opts.data_description),
            "feature_cache": None if self.opts.feature_cache is None else list(self.opts.cache_variants),
            "scaler": self.scaler.state_dict() if self.use_amp else None,
            "device": str(self.device),
            "torch": str(torch.__version__),
        }

    def save(self, final: bool = False) -> Optional[Path]:
        if self.ctx.enabled:
            # DDP broadcasts rank 0's buffers (BN running statistics) at the start of each forward,
            # so after the last step every rank holds its own; make the replicas equal again.
            for buf in self.net.buffers():
                dist.broadcast(buf.data, 0)
        extra = self._extra()  # collective: every rank must call it
        rank_hashes = [weights_sha256(self.net)]
        if final and self.ctx.enabled:
            # DDP keeps replicas equal by construction; recording every rank's hash makes that
            # checkable (a test does) and a divergence visible instead of silently shipped.
            gathered: list[Any] = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, rank_hashes[0])
            rank_hashes = gathered
            if len(set(rank_hashes)) > 1 and self.ctx.is_main:
                log.error("weights differ across ranks at the end: %s", rank_hashes)
        if not self.ctx.is_main:
            return None
        save_checkpoint(self.last_path, self.net, self.cfg, self.step, self.optimizer, self.scheduler, extra)
        if final:
            extra["rank_weights_sha256"] = rank_hashes
            # Heads only: small enough to ship in models/, and nothing a tracker does not need.
            keep = {k: extra[k] for k in ("rank_weights_sha256", "feature_cache", "world_size", "batch_size", "total_steps", "pairs_seen", "wall_s", "augment", "data", "device", "torch")}
            save_checkpoint(self.final_path, self.net, self.cfg, self.step, None, None, keep)
        return self.last_path

    def _resume(self) -> None:
        path = self.last_path
        if not path.is_file():
            raise CheckpointError(f"--resume: no checkpoint at {path} (run once without --resume to start)")
        data = load_checkpoint(path, map_location=self.device)
        saved = config_from_dict(data["config"])
        if to_dict(saved)["backbone"] != to_dict(self.cfg)["backbone"]:
            raise CheckpointError(f"--resume: {path} was trained with a different backbone config than {self.cfg.source}")
        self.net.load_head_state_dict(data["heads"])
        if data.get("optimizer") is None:
            raise CheckpointError(f"--resume: {path} holds no optimizer state (a heads-only export); resume from last.pt")
        self.optimizer.load_state_dict(data["optimizer"])
        if data.get("scheduler") is not None:
            self.scheduler.load_state_dict(data["scheduler"])
            # The schedule follows this run's total steps (a resume may extend the run).
            self.scheduler.lr_lambdas[0] = WarmupDecay(
                self.cfg.train.warmup_steps, self.cfg.train.steps, self.opts.schedule, self.opts.final_lr_fraction
            )
            for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
                group["lr"] = base * self.scheduler.lr_lambdas[0](data["step"])
        restore_rng_state(data.get("rng") or {})
        extra = data.get("extra") or {}
        gens = extra.get("generators") or []
        if extra.get("world_size", 1) != self.ctx.world_size or extra.get("batch_size") != self.cfg.train.batch_size:
            log.warning(
                "resuming with world_size=%d batch_size=%d (checkpoint: %s, %s): later pairs differ from an "
                "uninterrupted run", self.ctx.world_size, self.cfg.train.batch_size, extra.get("world_size"), extra.get("batch_size"),
            )
        if self.ctx.rank < len(gens):
            self.generator.set_state(gens[self.ctx.rank])
        if self.use_amp and extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])
        self.step = int(data["step"])
        self.wall_s = float(extra.get("wall_s", 0.0))
        self.pairs_seen = int(extra.get("pairs_seen", 0))
        if self.ctx.is_main:
            log.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ the loop
    def _loader(self) -> DataLoader:
        tc = self.cfg.train
        end = tc.steps if self.opts.stop_at is None else min(tc.steps, self.opts.stop_at)
        sampler = StepBatchSampler(tc.batch_size, end, self.step, self.ctx.rank, self.ctx.world_size)
        workers = max(0, tc.num_workers)
        return DataLoader(
            self.pairs,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=collate_pairs,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
        )

    def _open_logs(self) -> tuple[Any, Any, Any]:
        if not self.ctx.is_main:
            return None, None, None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "log.csv"
        new = not path.is_file() or not self.opts.resume
        fh = path.open("w" if new else "a", newline="")
        writer = csv.writer(fh)
        if new:
            writer.writerow(["step", "time_s", "lr", "pairs_per_s", *LOSS_KEYS])
        tb = None
        if self.opts.tensorboard:
            tb = _summary_writer()(str(self.out_dir / "tensorboard"))
        return fh, writer, tb

    def train(self) -> dict[str, Any]:
        """Run from the current step to train.steps; returns a summary (losses, pairs/s, paths)."""
        tc = self.cfg.train
        fh, writer, tb = self._open_logs()
        bar = None
        if self.ctx.is_main and self.opts.progress:
            from tqdm import tqdm

            bar = tqdm(total=tc.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        pairs_per_step = tc.batch_size * self.ctx.world_size
        last_ckpt = time.monotonic()
        window_t, window_pairs = time.monotonic(), 0
        rate = 0.0
        bad = 0
        session_start = time.monotonic()
        wall_base = self.wall_s
        if self.train_backbone is not None:
            self.net.backbone = self.train_backbone
        if self.model is None:
            if self.ctx.enabled:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self.model = nn.parallel.DistributedDataParallel(self.loss_module, device_ids=ids)
            else:
                self.model = self.loss_module
        try:
            self.net.train_mode()
            for batch in self._loader():
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.use_amp):
                    losses = self.model(batch)
                total = losses["total"]
                self.scaler.scale(total).backward()
                # After backward, DDP has averaged the gradients, so every rank sees the same
                # verdict and skips together (a rank skipping alone would hang the all-reduce).
                # With AMP the GradScaler does this check itself.
                if not self.use_amp and not _grads_finite(self.optimizer):
                    bad += 1
                    self.optimizer.zero_grad(set_to_none=True)
                    log.warning("step %d: non-finite loss or gradient %s; step skipped", self.step,
                                {k: float(v) for k, v in losses.items()})
                    if bad >= MAX_BAD_STEPS:
                        raise RuntimeError(
                            f"{bad} consecutive non-finite steps at step {self.step}: training diverged "
                            f"(lower train.lr, or check the data)"
                        )
                    self.step += 1
                    self.scheduler.step()
                    continue
                bad = 0
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                lr = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step()
                self.step += 1
                self.pairs_seen += pairs_per_step
                window_pairs += pairs_per_step
                now = time.monotonic()
                self.wall_s = wall_base + (now - session_start)
                values = {k: float(losses[k].detach()) for k in LOSS_KEYS}
                self.history.append({"step": self.step, **values})
                if now - window_t >= 2.0 or self.step == tc.steps:
                    rate = window_pairs / (now - window_t)
                    window_t, window_pairs = now, 0
                if self.ctx.is_main:
                    writer.writerow([self.step, f"{self.wall_s:.2f}", f"{lr:.6g}", f"{rate:.2f}", *(f"{values[k]:.5f}" for k in LOSS_KEYS)])
                    if self.step % max(1, self.opts.log_every) == 0:
                        fh.flush()
                    if tb is not None:
                        for k, v in values.items():
                            tb.add_scalar(f"loss/{k}", v, self.step)
                        tb.add_scalar("lr", lr, self.step)
                        tb.add_scalar("pairs_per_s", rate, self.step)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{values['total']:.3f}", pairs_s=f"{rate:.1f}", lr=f"{lr:.2g}")
                # Every rank must agree on when to save (the save gathers RNG states).
                due = time.monotonic() - last_ckpt >= tc.checkpoint_every_s
                if self.ctx.enabled:
                    flag = torch.tensor([1 if due else 0], device=self.device if self.device.type == "cuda" else "cpu")
                    dist.broadcast(flag, 0)
                    due = bool(flag.item())
                if due and self.step < tc.steps:
                    self.save()
                    last_ckpt = time.monotonic()
            # final.pt only when the schedule is complete; a stop_at session leaves last.pt to resume.
            self.save(final=self.step >= tc.steps)
            if self.ctx.enabled:
                dist.barrier()  # every rank is past its last collective before any tears down
        except KeyboardInterrupt:
            # Ctrl-C on a long single-process run keeps its progress (--resume continues); under
            # DDP the other ranks may already be gone, so no collective save is attempted.
            if not self.ctx.enabled and self.step > 0:
                self.save()
                log.warning("interrupted at step %d; saved %s (continue with --resume)", self.step, self.last_path)
            raise
        finally:
            self.net.backbone = self.base_backbone
            if bar is not None:
                bar.close()
            if fh is not None:
                fh.close()
            if tb is not None:
                tb.close()
        first = self.history[:5]
        last = self.history[-5:]
        mean = lambda rows, k: sum(r[k] for r in rows) / max(1, len(rows))  # noqa: E731
        return {
            "steps": self.step,
            "pairs_seen": self.pairs_seen,
            "wall_s": self.wall_s,
            "pairs_per_s": rate,
            "first_losses": {k: mean(first, k) for k in LOSS_KEYS} if first else {},
            "last_losses": {k: mean(last, k) for k in LOSS_KEYS} if last else {},
            "checkpoint": str(self.last_path),
            "final": str(self.final_path),
        }

    def close(self) -> None:
        # DDP's reducer holds the process group: drop it first, so destroy_process_group frees
        # gloo's worker threads while the interpreter is alive.  A rank that reaches interpreter
        # finalisation still holding them can abort (SIGABRT, "terminate called without an active
        # exception"; seen once in CI on the 2-process test, after training had finished).
        self.model = None
        gc.collect()
        if self.ctx.initialized_here and dist.is_initialized():
            dist.destroy_process_group()
