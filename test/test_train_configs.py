"""Every trainer run config (config/train_*.yaml) loads in the experiment schema."""
from __future__ import annotations

from pathlib import Path

import pytest

from cract_core.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "config").glob("train_*.yaml"))


def test_there_are_train_configs() -> None:
    names = {p.name for p in CONFIGS}
    assert {"train_starter_lite0.yaml", "train_resnet18_paper.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_train_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.train.steps > cfg.train.warmup_steps > 0 and cfg.train.batch_size >= 1
    if "ablation_parallel" in path.name:
        assert cfg.crac.refinement == "parallel"
    if "ablation_single" in path.name:
        assert cfg.crac.pooling == "single"
    if "resnet18" in path.name:
        assert cfg.backbone.name == "resnet18" and cfg.backbone.trainable_stages > 0
