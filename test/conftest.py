"""Shared pytest fixtures: real data from ../shared/data, and rclpy set-up for the ROS tests.

`make test` exports the ROS environment (AMENT_PREFIX_PATH, ROS_AUTOMATIC_DISCOVERY_RANGE,
FASTDDS_DEFAULT_PROFILES_FILE, ROS_DOMAIN_ID); the defaults below make a plain
`.venv/bin/python -m pytest test/` behave the same, and node subprocesses inherit them.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Optional

import pytest

from cract_ros.process import use_default_ros_environment  # imports no ROS

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_SEQUENCES = REPO_ROOT.parent / "shared" / "data" / "sequences"
SHARED_MODELS = REPO_ROOT.parent / "shared" / "models"

# Set before any test imports rclpy: the DDS participant reads these when it is created.
use_default_ros_environment()



@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's CPU threads set to `n`, the previous count restored after. The solvers' cost is all
    matmuls: on two shared cores, two OpenMP threads that contend with another job (a training run,
    another test) are many times slower than one, and results must not depend on the count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_torch_thread_per_module() -> Iterator[None]:
    """One torch thread for a whole module (its module-scoped fixtures included):
    `pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")`."""
    with torch_threads(1):
        yield


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for each test: `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    with torch_threads(1):
        yield


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def shared_sequences_path() -> Optional[Path]:
    """../shared/data/sequences relative to the repository root, or None when it is absent."""
    return SHARED_SEQUENCES if SHARED_SEQUENCES.is_dir() else None


def require_shared_sequences() -> Path:
    """The sequences folder; skip the calling test when absent, fail under CI=true.

    Usable from tests and fixtures that cannot take the fixture below as an argument.
    """
    path = shared_sequences_path()
    if path is None:
        reason = (f"real sequences not found at {SHARED_SEQUENCES} "
                  "(the shared data folder ../shared/data/sequences next to the repository)")
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def require_shared_model(relative: str) -> Path:
    """A file of ../shared/models (the authors' NanoTrack / VitTrack files); skip the calling test
    when absent, fail under CI=true (CI's copy of ../shared has them)."""
    path = SHARED_MODELS / relative
    if not path.is_file():
        reason = f"pretrained model file not found at {path} (the shared models folder next to the repository)"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def load_sequence(folder: Path, limit: int) -> tuple[list, "np.ndarray"]:
    """The first ``limit`` frames (BGR) of an OTB-style sequence folder and their ground-truth rows."""
    from cract_core.datasets import load_folder_sequence

    seq = load_folder_sequence(folder).head(limit)
    return [seq.image(i) for i in range(len(seq))], seq.groundtruth


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def shared_sequences_dir() -> Path:
    """Path to ../shared/data/sequences; skips when absent, fails when absent under CI=true."""
    return require_shared_sequences()


@pytest.fixture
def shared_sequence(shared_sequences_dir: Path):
    """A factory: shared_sequence("otb_bird2") -> that sequence's folder (skip/fail as above)."""
    def get(name: str) -> Path:
        path = shared_sequences_dir / name
        if not (path / "img").is_dir() or not (path / "groundtruth.txt").is_file():
            if in_ci():
                pytest.fail(f"CI=true and sequence {name} is incomplete at {path}", pytrace=False)
            pytest.skip(f"sequence {name} not found at {path}")
        return path
    return get


@pytest.fixture
def rclpy_init() -> Iterator[None]:
    """rclpy.init() for one test, rclpy.try_shutdown() after it (also after a failure)."""
    rclpy = pytest.importorskip("rclpy") if not in_ci() else __import__("rclpy")
    rclpy.init()
    try:
        yield
    finally:
        rclpy.try_shutdown()
