"""cract_core.checkpoint: atomic write, sha256 sidecar, clear errors, weights-only loading."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cract_core.checkpoint import (
    FORMAT,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    sha256_of,
)
from cract_core.config import ExperimentConfig, config_from_dict
from cract_core.errors import CheckpointError


class Heads(torch.nn.Module):
    """The smallest thing with CRACTNet's checkpoint interface (a frozen part left out of it)."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = torch.nn.Linear(3, 3)
        self.head = torch.nn.Linear(3, 2)

    def head_state_dict(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if k.startswith("head.")}


def _save(tmp_path: Path, step: int = 7) -> tuple[Path, Heads, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = Heads()
    opt = torch.optim.SGD(net.head.parameters(), lr=0.1, momentum=0.9)
    net.head(torch.ones(1, 3)).sum().backward()
    opt.step()
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, net, ExperimentConfig(), step, opt, None, {"note": "x"})
    return path, net, opt


def test_roundtrip_and_sidecar(tmp_path: Path) -> None:
    path, net, opt = _save(tmp_path)
    side = path.with_name("last.pt.sha256")
    assert side.read_text().split() == [sha256_of(path), "last.pt"]
    data = load_checkpoint(path)
    assert data["format"] == FORMAT and data["step"] == 7 and data["extra"] == {"note": "x"}
    assert set(data["heads"]) == {"head.weight", "head.bias"}  # frozen part not stored
    assert torch.equal(data["heads"]["head.weight"], net.head.weight)
    # The stored config is the plain dict and rebuilds the same ExperimentConfig.
    assert config_from_dict(data["config"]) == ExperimentConfig()
    opt2 = torch.optim.SGD(Heads().head.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(data["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])
    assert not list(path.parent.glob("*.tmp")), "temporary files left behind"


def test_missing_file_names_path_and_remedy(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.pt does not exist.*cract-train"):
        load_checkpoint(tmp_path / "nope.pt")


def test_checksum_mismatch_names_both_hashes(tmp_path: Path) -> None:
    path, _, _ = _save(tmp_path)
    good = sha256_of(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, expected_sha256="0" * 64)
    assert good in str(err.value) and "0" * 64 in str(err.value)
    assert load_checkpoint(path, expected_sha256=good.upper())["step"] == 7
    # A corrupted file no longer matches its sidecar.
    with open(path, "ab") as fh:
        fh.write(b"junk")
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_checkpoint(path)


def test_wrong_format(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="format is None"):
        load_checkpoint(other)
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable torch checkpoint"):
        load_checkpoint(text)


def test_rng_state_roundtrip_through_file(tmp_path: Path) -> None:
    path, _, _ = _save(tmp_path)
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    save_checkpoint(path, Heads(), ExperimentConfig(), 1)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    restore_rng_state(load_checkpoint(path)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]
    assert capture_rng_state()["torch"].dtype == torch.uint8


def test_export_heads_half(tmp_path: Path) -> None:
    from cract_core.checkpoint import export_heads, main

    path, net, _ = _save(tmp_path)
    dst = tmp_path / "models" / "heads.pt"
    digest = export_heads(path, dst, half=True)
    data = load_checkpoint(dst, expected_sha256=digest)
    assert data["optimizer"] is None and data["heads"]["head.weight"].dtype == torch.float16
    assert data["extra"]["exported_from"]["sha256"] == sha256_of(path)
    # Loading casts back into the float32 network.
    fresh = Heads()
    fresh.load_state_dict({k: v for k, v in data["heads"].items()}, strict=False)
    assert fresh.head.weight.dtype == torch.float32
    assert torch.allclose(fresh.head.weight, net.head.weight, atol=1e-3)
    assert main(["verify", str(dst)]) == 0
    assert main(["verify", str(tmp_path / "missing.pt")]) == 2
