"""cract-trax over the TraX protocol: a normal session through vot-trax's own client, malformed
requests answered with TraX's quit and a reason (never a traceback), and the missing-extra message."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cract_core.vot import trax_server
from conftest import REPO_ROOT, require_shared_sequences


def test_without_vot_trax_the_command_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trax", None)  # `import trax` raises ImportError
    assert trax_server.main([]) == 2
    err = capsys.readouterr().err
    assert "vot-trax" in err and "pip install" in err


trax = pytest.importorskip("trax", reason="vot-trax is not installed (the optional [vot] extra: pip install 'cract-tracker[vot]')")
from trax.client import Client  # noqa: E402


def _server(*args: str, stderr_path: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(stderr_path, "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "cract_core.vot.trax_server", "--threads", "1", *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=REPO_ROOT, env=env, bufsize=0)


def _client(proc: subprocess.Popen) -> Client:
    # log must be callable or a file: vot-trax 4.0.2 fails on log=False with a pipe client
    return Client(stream=(proc.stdin.fileno(), proc.stdout.fileno()), timeout=120, log=lambda _: None)


def _bird2():
    from cract_core.datasets import load_folder_sequence

    return load_folder_sequence(require_shared_sequences() / "otb_bird2")


def _image(seq, i: int) -> dict:
    return {"color": trax.FileImage.create(str(Path(seq.frame_path(i)).resolve()))}


def _rect(box) -> "trax.Rectangle":
    return trax.Rectangle.create(*(float(v) for v in box))


@pytest.mark.slow
def test_a_session_reports_what_the_tracker_returns_with_reinit_and_quit(tmp_path):
    """Init, frames, a re-initialisation mid-session and quit; every box and confidence equals an
    in-process cract Tracker's on the same frames (to TraX's float32 text), so TraX adds nothing."""
    from cract_core.config import default_config_path, load_config
    from cract_core.tracker import Tracker, TrackState
    from conftest import torch_threads

    seq = _bird2()
    proc = _server(stderr_path=tmp_path / "err.txt")
    client = _client(proc)
    assert client.tracker_name == "cract" and client.region_formats == ["rectangle"]
    with torch_threads(1):
        ref = Tracker.from_config(load_config(default_config_path()), mode="sync")
        for start, frames in ((0, range(1, 4)), (10, range(11, 14))):  # the second init is a re-initialisation
            objects, _ = client.initialize(_image(seq, start), [(_rect(seq.groundtruth[start]), {})], {})
            assert np.allclose(objects[0][0].bounds(), seq.groundtruth[start])
            ref.init(seq.image(start), seq.groundtruth[start])
            for i in frames:
                objects, _ = client.frame(_image(seq, i), {}, [])
                region, props = objects[0]
                want = ref.track(seq.image(i))
                assert np.allclose(region.bounds(), want.box, atol=1e-3)
                assert float(props["confidence"]) == pytest.approx(want.confidence, abs=1e-6)
                assert props["state"] in TrackState.__members__ and props["state"] == want.state.name
    client.quit()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in (tmp_path / "err.txt").read_text()


def _raw_session(lines: list[str], tmp_path: Path) -> tuple[int, str, str]:
    proc = _server(stderr_path=tmp_path / "err.txt")
    out, _ = proc.communicate("".join(line + "\n" for line in lines).encode(), timeout=120)
    return proc.returncode, out.decode(), (tmp_path / "err.txt").read_text()


@pytest.mark.parametrize("line, reason", [
    ('@@TRAX:frame "file:///frame.jpg"', "before any initialisation"),  # a frame before initialize
    ("@@TRAX:bogus", "bad request"),                                      # not a TraX command
    ("this is not TraX", "bad request"),
])
def test_a_malformed_request_is_answered_with_quit_and_a_reason(line, reason, tmp_path):
    rc, out, err = _raw_session([line], tmp_path)
    assert out.startswith("@@TRAX:hello")
    quit_lines = [x for x in out.splitlines() if x.startswith("@@TRAX:quit")]
    assert len(quit_lines) == 1 and "trax.reason=" in quit_lines[0] and reason in quit_lines[0]
    assert rc == 1
    assert "Traceback" not in err and reason in err


@pytest.mark.parametrize("image, box, reason", [
    ("missing.jpg", (10, 10, 20, 20), "cannot read image"),
    (None, (10, 10, 0, 20), "not a box"),
])
def test_an_initialisation_that_cannot_be_served_ends_the_session_with_its_reason(image, box, reason, tmp_path):
    seq = _bird2()
    path = str(tmp_path / image) if image else str(Path(seq.frame_path(0)).resolve())
    proc = _server(stderr_path=tmp_path / "err.txt")
    client = _client(proc)
    with pytest.raises(trax.TraxException, match=reason):
        client.initialize({"color": trax.FileImage.create(path)}, [(_rect(box), {})], {})
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in (tmp_path / "err.txt").read_text()


def test_a_bad_config_name_is_refused_before_the_handshake():
    proc = subprocess.run([sys.executable, "-m", "cract_core.vot.trax_server", "--config", "no_such_config.yaml"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "no_such_config.yaml" in proc.stderr and "@@TRAX" not in proc.stdout
