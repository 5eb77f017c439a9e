"""cract-vot: the vot-toolkit workspace it writes, read back by vot-toolkit's own loader."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cract_core.eval import absence
from cract_core.vot import workspace
from conftest import require_shared_sequences

GAP = 5


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    seq_dir = require_shared_sequences()
    pytest.importorskip("vot", reason="vot-toolkit is not installed (the optional [vot] extra: pip install 'cract-tracker[vot]')")
    out = tmp_path_factory.mktemp("ws")
    argv = ["--sequences", str(seq_dir), "--only", "otb_bird2,dtb70_gull2", "--max-frames", "20", "--protocol", "both",
            "--absence-scenes", "1", "--absence-gap", str(GAP), "--out", str(out)]
    assert workspace.main(argv) == 0
    seqs = workspace.load_sequences(workspace.build_parser().parse_args(argv))
    return out, {s.name: s for s in seqs}


def test_sequences_frames_and_groundtruth_in_vot_layout(written):
    out, seqs = written
    names = (out / "sequences" / "list.txt").read_text().split()
    assert names == list(seqs) and len(names) == 4
    for name, seq in seqs.items():
        folder = out / "sequences" / name
        frames = sorted((folder / "color").iterdir())
        assert [f.name for f in frames] == [f"{i:08d}.jpg" for i in range(1, len(seq) + 1)]
        rows = (folder / "groundtruth.txt").read_text().splitlines()
        assert len(rows) == len(seq)
        for i, row in enumerate(rows):
            if np.all(np.isfinite(seq.groundtruth[i])):
                assert np.allclose([float(v) for v in row.split(",")], seq.groundtruth[i])
            else:
                assert row == "NaN,NaN,NaN,NaN"
        meta = dict(line.split("=", 1) for line in (folder / "sequence").read_text().splitlines())
        assert meta["channels.color"] == "color/%08d.jpg" and int(meta["length"]) == len(seq)
        assert (int(meta["width"]), int(meta["height"])) == seq.image_size()
        for i, frame in enumerate(frames):
            # what the tracker reads there is what cract-eval feeds it: linked sources, resized donors
            if frame.is_symlink():
                assert frame.resolve() == Path(seq.frame_path(i)).resolve()
            assert np.array_equal(cv2.imread(str(frame), cv2.IMREAD_COLOR), seq.image(i)), (name, i)
    spliced = [s for s in seqs.values() if isinstance(s, absence.SplicedSequence)]
    assert len(spliced) == 2 and all(int(s.foreign.sum()) == GAP for s in spliced)


def test_vot_toolkit_reads_the_workspace_and_absent_frames_as_not_visible(written):
    from vot.region import is_special
    from vot.workspace import Workspace

    out, seqs = written
    ws = Workspace.load(str(out))
    assert sorted(ws.stack.experiments) == sorted([workspace.LONGTERM, workspace.SHORTTERM])
    assert {s.name: len(s) for s in ws.dataset} == {n: len(s) for n, s in seqs.items()}
    for vseq in ws.dataset:
        seq = seqs[vseq.name]
        special = [is_special(vseq.groundtruth(i)) for i in range(len(vseq))]
        assert special == [not np.all(np.isfinite(row)) for row in seq.groundtruth]
    assert set(ws.registry.identifiers()) >= {"cract", workspace.NANOTRACK_ID}


def test_trackers_ini_runs_cract_trax_by_an_absolute_path(written):
    from cract_core.config import default_config_path

    out, _ = written
    blocks = {}
    for line in (out / "trackers.ini").read_text().splitlines():
        if line.startswith("["):
            current = blocks.setdefault(line.strip("[]"), {})
        elif "=" in line:
            key, value = (x.strip() for x in line.split("=", 1))
            current[key] = value
    assert set(blocks) == {"cract", workspace.NANOTRACK_ID}
    for block in blocks.values():
        assert block["protocol"] == "trax"
        command = shlex.split(block["command"])
        assert Path(command[0]).is_absolute() and Path(command[0]).exists()
    assert shlex.split(blocks["cract"]["command"])[-4:] == ["--config", default_config_path().name, "--threads", "1"]
    assert "--baseline nanotrack" in blocks[workspace.NANOTRACK_ID]["command"]


def test_without_vot_toolkit_cract_vot_says_what_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "vot", None)
    assert workspace.main(["--sequences", str(tmp_path), "--out", str(tmp_path / "ws")]) == 2
    assert "vot-toolkit" in capsys.readouterr().err


def test_an_unknown_baseline_is_refused(tmp_path, capsys):
    pytest.importorskip("vot", reason="vot-toolkit is not installed (the optional [vot] extra)")
    assert workspace.main(["--sequences", str(tmp_path), "--baselines", "nope", "--out", str(tmp_path / "ws")]) == 2
    assert "unknown baseline nope" in capsys.readouterr().err


def _sequence(n: int, nan_rows=()):
    from cract_core.datasets import Sequence

    gt = np.tile([10.0, 10.0, 20.0, 20.0], (n, 1))
    gt[list(nan_rows)] = np.nan
    return Sequence("s", [f"{i}.jpg" for i in range(n)], gt, np.zeros(n, bool))


def test_anchors_every_50_frames_towards_the_longer_part_on_visible_frames():
    a = workspace.anchors(_sequence(161, nan_rows=range(50, 53)))
    assert {i: int(v) for i, v in enumerate(a) if v} == {0: 1, 53: 1, 100: -1, 150: -1}
    assert workspace.anchors(_sequence(51))[50] == 0  # never on the last frame: nothing left to track


def test_eao_interval_sits_around_the_typical_length():
    lengths = [99, 305, 309, 353, 470, 252, 307, 307, 597, 169, 241]  # the validation split's
    low, high = workspace.eao_interval(lengths)
    assert min(lengths) <= low < np.median(lengths) < high <= max(lengths)


@pytest.mark.slow
def test_the_multistart_experiment_runs_and_gives_an_eao(tmp_path):
    """vot-toolkit 0.9.0's own multistart cannot start a tracker; cract_core.vot.multistart's does:
    NanoTrack V2 through cract-trax from both anchors of a 60-frame sequence, then vot's EAO."""
    import json
    import os
    import subprocess

    from conftest import REPO_ROOT, require_shared_model

    pytest.importorskip("vot", reason="vot-toolkit is not installed (the optional [vot] extra)")
    require_shared_model("nanotrack_v2/nanotrack_backbone_sim_v2.onnx")
    out = tmp_path / "ws"
    argv = ["--sequences", str(require_shared_sequences()), "--only", "otb_bird2", "--max-frames", "60",
            "--multistart", "--baselines", "nanotrack", "--out", str(out)]
    assert workspace.main(argv) == 0
    assert [i for i, v in enumerate(np.loadtxt(out / "sequences/otb_bird2/anchor.value")) if v] == [0, 50]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for args in (["evaluate", workspace.NANOTRACK_ID], ["analysis", workspace.NANOTRACK_ID, "--name", "ms"]):
        proc = subprocess.run([sys.executable, "-m", "vot", *args, "--experiments", workspace.MULTISTART,
                               "--workspace", str(out)], capture_output=True, text=True, env=env, timeout=900, cwd=REPO_ROOT)
        assert proc.returncode == 0 and "must be" not in proc.stdout, proc.stdout[-2000:]
    runs = sorted(p.name for p in (out / "results" / workspace.NANOTRACK_ID / workspace.MULTISTART / "otb_bird2").glob("*.bin"))
    assert runs == ["otb_bird2_00000000.bin", "otb_bird2_00000050.bin"]
    eao = json.loads((out / "analysis" / "ms.json").read_text())["results"][workspace.MULTISTART]["results"][0][0][0]
    assert 0.0 < eao <= 1.0
