"""Outputs are never left half-written: writers are killed (SIGKILL) while they write, and what is
left at the output's name is checked.

- `cract-bag from-sequence` (a real sequence, ~85 MB of frames) killed mid-write: no bag at the
  output path (its partial folder is hidden beside it and removed by the next writer); the next
  run writes the whole bag there.
- checkpoints (cract_core.checkpoint.save_checkpoint, what the trainer calls for last.pt and
  final.pt): a process saving a 64 MB checkpoint over and over is killed at random moments; every
  time, the checkpoint at the path loads with its sha256 sidecar and holds one of the saved steps.
- a save killed between its two renames (new checkpoint, old sidecar): the next load finishes it.
"""
from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cract_core.checkpoint import load_checkpoint, save_checkpoint, sha256_of
from cract_core.config import ExperimentConfig

REPO_ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(0.005)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_cract_bag_killed_mid_write_leaves_no_bag(shared_sequence, tmp_path) -> None:
    from cract_ros.bags import bag_io

    seq = shared_sequence("otb_bird2")
    frames = len(list((seq / "img").glob("*.jpg")))
    rng = random.Random(0)
    out = tmp_path / "bird2"

    def whole_bag() -> None:
        data = bag_io.load_sequence(out)
        assert len(data.frames) == frames and data.image(frames - 1).shape == (400, 720, 3)

    kills = 0
    for attempt in range(10):
        proc = subprocess.Popen([sys.executable, "-m", "cract_ros.bags.bag_eval", "from-sequence", str(seq), str(out)],
                                cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the bag is being written: its mcap file has bytes (in the hidden partial folder)
        own = tmp_path / f".bird2.partial-{proc.pid}"

        def own_partial_has_bytes() -> bool:
            # this writer's own folder: a killed earlier writer's stays until this one removes it, and
            # waiting on that one let a loaded machine kill this writer before it had made its own
            for f in own.glob("bird2/*.mcap"):
                try:
                    if f.stat().st_size > 0:
                        return True
                except FileNotFoundError:  # renamed into place meanwhile: finished
                    return True
            return False

        wait_for(lambda: proc.poll() is not None or own_partial_has_bytes(), 120.0, "the partial bag")
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():  # it had finished (renamed its bag) before the signal: then the bag is whole
            whole_bag()
            shutil.rmtree(out)
            continue
        kills += 1
        assert own.is_dir(), "the partial folder should be hidden beside the output"
        if kills == 3:
            break
    assert kills == 3, "the writer was not killed mid-write often enough to show anything"
    done = subprocess.run([sys.executable, "-m", "cract_ros.bags.bag_eval", "from-sequence", str(seq), str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob(".bird2.partial-*")), "the next writer removes what killed ones left"
    whole_bag()


SAVER = textwrap.dedent('''
    import sys, torch
    from cract_core.checkpoint import save_checkpoint
    from cract_core.config import ExperimentConfig

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(4096, 4096)  # 64 MB: a write takes a while
        def head_state_dict(self):
            return self.state_dict()

    net, path = Heads(), sys.argv[1]
    step = int(sys.argv[2])
    while True:
        step += 1
        with torch.no_grad():
            net.head.bias.fill_(step)
        save_checkpoint(path, net, ExperimentConfig(), step)
        print(step, flush=True)
''')


def test_checkpoint_saves_killed_mid_write(tmp_path) -> None:
    path = tmp_path / "run" / "last.pt"
    rng = random.Random(1)
    last_step = 0
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(last_step)], cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # one whole save of this process, then a kill at a random moment
        assert first.strip(), f"the saver printed nothing (exit {proc.poll()})"
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saved = [int(line) for line in [first, *proc.stdout.read().split()] if str(line).strip()]
        proc.stdout.close()
        data = load_checkpoint(path)  # never half-written: it loads and matches its sidecar
        # the newest complete save, or the one that finished after its step was printed
        assert data["step"] in (saved[-1], saved[-1] + 1), (data["step"], saved)
        assert float(data["heads"]["head.bias"][0]) == data["step"]
        last_step = data["step"]
    leftovers = sorted(p.name for p in path.parent.iterdir() if p.name.endswith(".tmp"))
    save_checkpoint(path, _Tiny(), ExperimentConfig(), last_step + 1)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")], f"stale temporaries {leftovers} stay"


class _Tiny(__import__("torch").nn.Module):
    def __init__(self) -> None:
        import torch

        super().__init__()
        self.head = torch.nn.Linear(2, 2)

    def head_state_dict(self) -> dict:
        return self.state_dict()


def test_a_save_killed_between_its_renames_is_finished_by_the_next_load(tmp_path) -> None:
    """The state a kill between `os.replace(checkpoint)` and `os.replace(sidecar)` leaves: the new
    checkpoint, the old sidecar, and the new sidecar still under its temporary name."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, _Tiny(), ExperimentConfig(), 1)
    old_sidecar = path.with_name("last.pt.sha256").read_text()
    save_checkpoint(path, _Tiny(), ExperimentConfig(), 2)
    side = path.with_name("last.pt.sha256")
    pending = path.with_name("last.pt.sha256.x1y2z3.tmp")
    side.rename(pending)
    side.write_text(old_sidecar)
    data = load_checkpoint(path)
    assert data["step"] == 2
    assert side.read_text().split()[0] == sha256_of(path) and not pending.exists()
    # a temporary that records another file's hash is not taken for this one
    side.write_text(old_sidecar)
    pending.write_text("0" * 64 + "  last.pt\n")
    from cract_core.errors import CheckpointError

    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_checkpoint(path)
