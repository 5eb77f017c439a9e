"""The trainer on real data (issue 4's must-shows): smoke run, checkpoint/resume/reload, DDP, overfit.

A small head configuration (32 channels) keeps this fast on two CPU cores; the backbone is the
real frozen ImageNet EfficientNet-Lite0 and the data real sequences from ../shared/data.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cract_core.checkpoint import load_checkpoint
from cract_core.config import config_from_dict, load_config
from cract_core.train import cli
from cract_core.train.augment import AugmentConfig
from cract_core.datasets import make_dataset
from cract_core.train.pairs import PairDataset, collate_pairs
from cract_core.train.trainer import TrainOptions, Trainer, WarmupDecay, weights_sha256

REPO = Path(__file__).resolve().parent.parent
SMALL_HEADS = {
    "backbone": {"fused_channels": 32},
    "rpn": {"head_channels": 32},
    "crac": {
        "regressor_conv_channels": 32, "identifier_conv_channels": 32,
        "regressor_fc": [64, 64], "identifier_fc": [64, 64],
    },
}
TWO_SEQUENCES = "uav_car10,uav_group1_1"


# one torch thread: see conftest.torch_threads
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_config(tmp_path: Path, **train) -> Path:
    data = {"name": "test_small", **SMALL_HEADS, "train": {
        "batch_size": 4, "num_workers": 0, "warmup_steps": 5, "steps": 24, "seed": 0, "lr": 0.01,
        "negative_pair_prob": 0.2, "still_image_prob": 0.1, "checkpoint_every_s": 3600.0, **train,
    }}
    path = tmp_path / "train_small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _losses(log_csv: Path) -> list[dict[str, float]]:
    with log_csv.open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _eval_outputs(net, batch) -> list[torch.Tensor]:
    """Inference path outputs of a net on a batch: RPN scores/boxes and the CRAC cascade."""
    net.eval()
    with torch.no_grad():
        outs = []
        for i in range(batch["template"].shape[0]):
            z, x = batch["template"][i : i + 1], batch["search"][i : i + 1]
            box = batch["template_box"][i]
            xyxy = torch.cat([box[:2], box[:2] + box[2:]]).reshape(1, 4)
            state = net.init_target(z, xyxy)
            phi_x = net.extract(x)
            props, c, _, scores = net.propose(phi_x, state)
            ref = net.refine(phi_x, props, state.f_init)
            outs += [scores, props, c, ref.refined_xyxy, ref.identity_prob]
    return outs


def test_fast_frozen_backbone_matches_backbone(shared_sequences_dir: Path) -> None:
    from cract_core.model import CRACTNet
    from cract_core.train.trainer import FastFrozenBackbone

    net = CRACTNet(config_from_dict(SMALL_HEADS)).train_mode()
    fast = FastFrozenBackbone(net.backbone)
    ds = [make_dataset("folder", shared_sequences_dir, only=["uav_car10", "uav_boat1"])]
    batch = collate_pairs([PairDataset(ds, seed=4)[i] for i in range(2)])
    with torch.no_grad():
        for key in ("template", "search"):
            for got, want in zip(fast(batch[key]), net.backbone(batch[key])):
                assert got.shape == want.shape and got.is_contiguous()
                assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    # The network's own backbone is untouched (its batch norms are still there).
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.backbone.body.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.body.modules())


def test_warmup_decay_schedule() -> None:
    f = WarmupDecay(10, 110, "cosine", 0.01)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.505) and f(110) == pytest.approx(0.01)
    s = WarmupDecay(0, 100, "step")
    assert (s(10), s(70), s(90)) == (1.0, 0.1, 0.01)


def test_smoke_train_checkpoint_resume_reload(tmp_path: Path, shared_sequences_dir: Path) -> None:
    config = _write_config(tmp_path)
    data = f"folder={shared_sequences_dir}"
    # A: 24 steps in one go, through the command line.
    rc = cli.main(["--config", str(config), "--data", data, "--include", TWO_SEQUENCES,
                   "--out", str(tmp_path / "a"), "--no-progress", "--device", "cpu"])
    assert rc == 0
    rows = _losses(tmp_path / "a" / "log.csv")
    assert [r["step"] for r in rows] == list(range(1, 25))
    assert all(np.isfinite([r[k] for r in rows for k in ("total", "rpn_cls", "rpn_reg", "reg", "ide")]))
    first = np.mean([r["total"] for r in rows[:5]])
    last = np.mean([r["total"] for r in rows[-5:]])
    assert last < first, f"loss did not fall: first 5 steps {first:.3f}, last 5 {last:.3f}"
    final = load_checkpoint(tmp_path / "a" / "final.pt")
    assert final["step"] == 24 and final["optimizer"] is None
    assert (tmp_path / "a" / "last.pt.sha256").is_file()

    # B: the same run interrupted at step 10 and resumed must end with exactly A's weights.
    cfg = load_config(config)
    ds = [make_dataset("folder", shared_sequences_dir, only=TWO_SEQUENCES.split(","))]
    t1 = Trainer(cfg, ds, TrainOptions(out_dir=tmp_path / "b", stop_at=10, progress=False, device="cpu"))
    t1.train()
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 10 and not (tmp_path / "b" / "final.pt").exists()
    t2 = Trainer(load_config(config), ds, TrainOptions(out_dir=tmp_path / "b", resume=True, progress=False, device="cpu"))
    assert t2.step == 10
    t2.train()
    assert t2.step == 24
    assert weights_sha256(t2.net) == final["extra"]["rank_weights_sha256"][0]
    for key, value in final["heads"].items():
        assert torch.equal(value, t2.net.head_state_dict()[key]), key
    assert [r["step"] for r in _losses(tmp_path / "b" / "log.csv")] == list(range(1, 25))

    # The checkpoint reloaded into a fresh network gives the trained network's outputs.
    from cract_core.model import CRACTNet

    fresh = CRACTNet(config_from_dict(final["config"]))
    fresh.load_head_state_dict(final["heads"])
    batch = collate_pairs([PairDataset(ds, cfg=cfg, seed=99)[i] for i in range(2)])
    for got, want in zip(_eval_outputs(fresh, batch), _eval_outputs(t2.net, batch)):
        assert torch.equal(got, want)


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = _write_config(tmp_path)
    assert cli.main(["--config", str(config), "--data", "imagenet=/x", "--out", str(tmp_path / "o")]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    assert cli.main(["--config", str(config), "--data", f"folder={tmp_path / 'none'}", "--out", str(tmp_path / "o")]) == 2
    assert f"folder root {tmp_path / 'none'} does not exist" in capsys.readouterr().err
    assert cli.main(["--config", str(config), "--data", "@training", "--out", str(tmp_path / "o")]) == 2
    assert "unknown split '@training'; expected one of @train, @validation, @validation4, @all" in capsys.readouterr().err
    try:
        import tensorboard  # noqa: F401
    except ImportError:  # optional: without it, asking for it is a clear error before any work
        assert cli.main(["--config", str(config), "--data", "folder=/x", "--out", str(tmp_path / "o"), "--tensorboard"]) == 2
        assert "optional 'tensorboard' package" in capsys.readouterr().err
    assert cli.parse_data_spec("lasot=/d/LaSOT@2.5") == ("lasot", Path("/d/LaSOT"), 2.5)
    assert cli.parse_data_spec("@train@0.5") == ("split", "train", 0.5)
    assert cli.parse_data_spec("@validation4") == ("split", "validation4", 1.0)
    assert cli._names(["a,b", "@validation"])[:3] == ["a", "b", "otb_bird2"]


def test_resume_without_checkpoint_is_clear(tmp_path: Path, shared_sequences_dir: Path) -> None:
    config = _write_config(tmp_path)
    rc = cli.main(["--config", str(config), "--data", f"folder={shared_sequences_dir}", "--include", "uav_car10,uav_boat1",
                   "--out", str(tmp_path / "r"), "--resume", "--no-progress"])
    assert rc == 2


def test_ddp_two_cpu_processes_end_with_same_weights(tmp_path: Path, shared_sequences_dir: Path) -> None:
    """torchrun, two processes, gloo: each trains on its own slice of every batch; DDP averages."""
    config = _write_config(tmp_path, batch_size=2, steps=4, warmup_steps=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "cract_core.train.cli", "--config", str(config), "--data", f"folder={shared_sequences_dir}",
           "--include", TWO_SEQUENCES, "--out", str(tmp_path / "ddp"), "--no-progress", "--device", "cpu", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    final = load_checkpoint(tmp_path / "ddp" / "final.pt")
    hashes = final["extra"]["rank_weights_sha256"]
    assert final["extra"]["world_size"] == 2 and len(hashes) == 2
    assert hashes[0] == hashes[1], "ranks ended with different weights"
    # And training did change the heads from their (seeded) initial values.
    from cract_core.model import CRACTNet

    torch.manual_seed(0)
    initial = CRACTNet(load_config(config))
    assert weights_sha256(initial) != hashes[0]


def test_overfit_one_pair(shared_sequences_dir: Path) -> None:
    """On one pair, RPN, R and I losses each fall by more than 80% within 300 steps."""
    from cract_core.model import CRACTNet

    cfg = config_from_dict({**SMALL_HEADS, "train": {"negative_pair_prob": 0.0, "still_image_prob": 0.0}})
    torch.manual_seed(0)
    net = CRACTNet(cfg)
    ds = make_dataset("folder", shared_sequences_dir, only=["uav_car10"])
    no_aug = AugmentConfig(color_prob=0, search_blur_prob=0, gray_prob=0, flip_prob=0)
    batch = collate_pairs([PairDataset([ds], cfg=cfg, augment=no_aug, seed=0)[0]])
    opt = torch.optim.SGD(net.trainable_parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    net.train_mode()
    history = []
    for _ in range(300):
        losses = net.compute_losses(batch, generator=gen)
        losses["total"].backward()
        opt.step()
        opt.zero_grad()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    for key in ("rpn_cls", "rpn_reg", "reg", "ide"):
        start = history[0][key]
        end = float(np.mean([h[key] for h in history[-20:]]))  # R and I see freshly sampled boxes each step
        assert end < 0.2 * start, f"{key}: {start:.4f} -> {end:.4f} (fell {100 * (1 - end / start):.0f}%)"


def test_fine_tuned_backbone_stages_learn_at_the_scaled_rate(tmp_path: Path, shared_sequences_dir: Path) -> None:
    cfg = config_from_dict({**SMALL_HEADS, "backbone": {**SMALL_HEADS["backbone"], "trainable_stages": 1},
                            "train": {"lr": 0.02, "backbone_lr_scale": 0.1, "warmup_steps": 0, "steps": 10,
                                      "negative_pair_prob": 0.0}})
    ds = [make_dataset("folder", shared_sequences_dir, only=["uav_car10"])]
    trainer = Trainer(cfg, ds, TrainOptions(out_dir=tmp_path, progress=False, device="cpu"))
    heads, backbone = trainer.optimizer.param_groups
    assert heads["lr"] == pytest.approx(0.02) and backbone["lr"] == pytest.approx(0.002)
    tuned = {id(p) for p in trainer.net.backbone.body.blocks[15].parameters()}
    assert {id(p) for p in backbone["params"]} == tuned
    assert not tuned & {id(p) for p in heads["params"]}
