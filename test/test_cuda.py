"""The CUDA paths: the network, the tracker (both modes) and mixed-precision training on a GPU.

Skipped where torch sees no CUDA device (CI, the 2-core dev VM); run on a GPU machine with
``python -m pytest test/test_cuda.py``.  Each test checks the GPU against the CPU on real data,
so a device-specific bug (a tensor left on the CPU, a stream race in the async swap, AMP overflow)
fails here rather than on the robot.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cract_core import geometry
from cract_core.config import default_config_path, load_config
from cract_core.tracker import Tracker
from conftest import load_sequence

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

FRAMES = 25


@pytest.fixture(scope="module")
def cfg():
    return load_config(default_config_path())


def _run(tracker: Tracker, images: list[np.ndarray], box: np.ndarray) -> np.ndarray:
    out = [tracker.init(images[0], box).box]
    out += [tracker.track(img).box for img in images[1:]]
    return np.asarray(out)


def test_network_outputs_on_cuda_match_cpu(cfg, shared_sequences_dir: Path) -> None:
    images, gt = load_sequence(shared_sequences_dir / "uav_boat5", 2)
    results = {}
    for device in ("cpu", "cuda"):
        with Tracker.from_config(cfg, device=device) as tracker:
            net = tracker.net
            box = gt[0]
            s_z = geometry.context_size(box[2], box[3], cfg.tracker.context_amount)
            center = (box[0] + box[2] / 2, box[1] + box[3] / 2)
            z, scale = geometry.crop_square(images[0], center, s_z, cfg.tracker.template_size)
            x, _ = geometry.crop_square(images[1], center, s_z * 255 / 127, cfg.tracker.search_size)
            zb = geometry.image_to_crop(box, center, scale, cfg.tracker.template_size)
            to = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].to(device)
            with torch.no_grad():
                state = net.init_target(to(z), torch.tensor([geometry.xywh_to_xyxy(zb)], dtype=torch.float32, device=device))
                phi_x = net.extract(to(x))
                props, c, _, scores = net.propose(phi_x, state)
                ref = net.refine(phi_x, props, state.f_init)
            results[device] = [t.float().cpu() for t in (scores, props, c, ref.refined_xyxy, ref.identity_prob)]
    for name, want, got in zip(("scores", "proposals", "c", "refined", "identity"), results["cpu"], results["cuda"]):
        assert got.shape == want.shape, name
        # TF32 convolutions on Ampere+ keep ~1e-3 relative; boxes are in crop pixels.
        tol = 0.5 if name in ("proposals", "refined") else 2e-2
        assert (got - want).abs().max().item() <= tol, f"{name}: cuda differs from cpu by {(got - want).abs().max():.4f}"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_tracker_on_cuda_follows_the_cpu_tracker(cfg, mode: str, shared_sequences_dir: Path) -> None:
    images, gt = load_sequence(shared_sequences_dir / "uav_boat5", FRAMES)
    with Tracker.from_config(cfg, device="cpu", mode="sync") as cpu:
        want = _run(cpu, images, gt[0])
    with Tracker.from_config(cfg, device="cuda", mode=mode) as gpu:
        assert next(gpu.net.parameters()).is_cuda
        got = _run(gpu, images, gt[0])
        assert gpu.online is not None and gpu.online.version >= 1, "no discriminator update reached the GPU tracker"
    agreement = geometry.iou(got, want, fmt="xywh")
    truth = geometry.iou(got, gt, fmt="xywh")
    assert np.isfinite(got).all()
    assert agreement.mean() > 0.9, f"cuda ({mode}) and cpu boxes agree only at mean IoU {agreement.mean():.3f}"
    assert truth.mean() > 0.6, f"cuda ({mode}) tracker mean IoU with the ground truth {truth.mean():.3f}"


def test_amp_training_on_cuda_lowers_the_loss(tmp_path: Path, shared_sequences_dir: Path) -> None:
    from cract_core.checkpoint import load_checkpoint
    from cract_core.datasets import make_dataset
    from cract_core.train.trainer import TrainOptions, Trainer

    cfg = load_config(default_config_path())
    cfg = replace(cfg, checkpoint=None, checkpoint_sha256=None,
                  train=replace(cfg.train, batch_size=16, steps=60, warmup_steps=10, num_workers=2, amp=True,
                                checkpoint_every_s=3600.0))
    ds = [make_dataset("folder", shared_sequences_dir, only=["uav_car10", "uav_group1_1"])]
    trainer = Trainer(cfg, ds, TrainOptions(out_dir=tmp_path, progress=False, device="cuda"))
    try:
        assert trainer.use_amp
        trainer.train()
    finally:
        trainer.close()
    totals = [h["total"] for h in trainer.history]
    assert len(totals) == 60 and np.isfinite(totals).all()
    assert np.mean(totals[-10:]) < np.mean(totals[:10])
    ck = load_checkpoint(tmp_path / "final.pt")
    assert all(v.device.type == "cpu" for v in ck["heads"].values())
    assert load_checkpoint(tmp_path / "last.pt")["extra"]["scaler"] is not None
