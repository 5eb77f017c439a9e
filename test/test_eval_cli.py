"""cract-eval end to end: real sequences from ../shared/data, files, summary.json schema, plots, errors."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from cract_core.eval import cli, runner

SEQ_KEYS = {"auc", "prec20", "frames", "fps", "latency_ms_p50", "latency_ms_p95", "init_ms"}


def _png_ok(path: Path) -> bool:
    img = cv2.imread(str(path))
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and img is not None and img.shape[0] > 100


def test_cli_on_two_real_sequences(shared_sequences_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = cli.main([
        "--sequences", str(shared_sequences_dir), "--only", "otb_bird2,uav_boat5", "--trackers", "csrt,kcf",
        "--jobs", "1", "--threads", "1", "--max-frames", "20", "--no-progress", "--out", str(out),
    ])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "csrt" in printed and "kcf" in printed and "AUC" in printed and "otb_bird2" in printed

    for tracker in ("csrt", "kcf"):
        for seq in ("otb_bird2", "uav_boat5"):
            lines = (out / tracker / f"{seq}.txt").read_text().splitlines()
            assert len(lines) == 20
            gt_first = (shared_sequences_dir / seq / "groundtruth.txt").read_text().splitlines()[0]
            # The first line is the box the tracker was given, in the file's own numbers.
            assert [float(v) for v in lines[0].split(",")] == [float(v) for v in gt_first.split(",")]
            assert all(len(l.split(",")) == 4 for l in lines)

    summary = runner.read_summary(out / "summary.json")
    assert summary["schema"] == 1 and summary["jobs"] == 1 and summary["speed_valid"] is True
    assert summary["benchmark"] == "folder" and summary["max_frames"] == 20
    assert set(summary["trackers"]) == {"csrt", "kcf"}
    for t in summary["trackers"].values():
        assert set(t["sequences"]) == {"otb_bird2", "uav_boat5"}
        for entry in t["sequences"].values():
            assert SEQ_KEYS <= set(entry)
            assert entry["frames"] == 20 and 0.0 <= entry["auc"] <= 20 / 21 + 1e-9 and 0.0 <= entry["prec20"] <= 1.0
            assert entry["fps"] > 0 and entry["latency_ms_p95"] >= entry["latency_ms_p50"] > 0 and entry["init_ms"] > 0
        m = t["mean"]
        assert m["frames"] == 40 and m["sequences"] == 2
        assert m["auc"] == pytest.approx(np.mean([e["auc"] for e in t["sequences"].values()]))
        assert len(m["success_curve"]) == 21 and len(m["precision_curve"]) == 51
        assert m["auc"] == pytest.approx(np.mean(m["success_curve"]), abs=1e-5)
        assert t["errors"] == {}
    assert _png_ok(out / "success.png") and _png_ok(out / "precision.png")
    assert (out / "table.txt").read_text().strip() in printed
    assert not (out / "submission").exists()  # plain folders have no server format


def test_read_summary_refuses_another_schema(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"schema": 2, "trackers": {}}))
    with pytest.raises(ValueError, match="schema 2, this cract reads schema 1"):
        runner.read_summary(tmp_path / "s.json")


def test_cli_parallel_jobs_leave_speed_out(shared_sequences_dir, tmp_path):
    out = tmp_path / "eval"
    rc = cli.main([
        "--sequences", str(shared_sequences_dir), "--only", "otb_woman,uav_person11", "--trackers", "kcf",
        "--jobs", "2", "--threads", "1", "--max-frames", "6", "--no-progress", "--out", str(out),
    ])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["jobs"] == 2 and summary["speed_valid"] is False
    kcf = summary["trackers"]["kcf"]
    assert list(kcf["sequences"]) == ["otb_woman", "uav_person11"]  # the order asked for
    for entry in kcf["sequences"].values():
        assert entry["fps"] is None and entry["latency_ms_p50"] is None and entry["init_ms"] is None
        assert entry["auc"] is not None
    assert kcf["mean"]["fps"] is None
    # The same boxes as one process running them in turn: parallelism changes timing, not results.
    out1 = tmp_path / "eval1"
    assert cli.main([
        "--sequences", str(shared_sequences_dir), "--only", "otb_woman,uav_person11", "--trackers", "kcf",
        "--jobs", "1", "--threads", "1", "--max-frames", "6", "--no-progress", "--out", str(out1),
    ]) == 0
    for seq in ("otb_woman", "uav_person11"):
        assert (out / "kcf" / f"{seq}.txt").read_bytes() == (out1 / "kcf" / f"{seq}.txt").read_bytes()


def test_cli_writes_got10k_submission_and_scores_val(tmp_path):
    # A tiny GOT-10k split of a patch that does not move: CSRT follows it exactly enough.
    rng = np.random.default_rng(1)
    root = tmp_path / "val"
    patch = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    seq = root / "GOT-10k_Val_000001"
    seq.mkdir(parents=True)
    for k in range(6):
        img = np.full((120, 160, 3), 90, np.uint8)
        img[40:70, 50:80] = patch
        cv2.imwrite(str(seq / f"{k + 1:08d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    (seq / "groundtruth.txt").write_text("50,40,30,30\n" * 6)
    (seq / "absence.label").write_text("0\n" * 6)
    (seq / "cover.label").write_text("8\n" * 6)
    (root / "list.txt").write_text("GOT-10k_Val_000001\n")
    out = tmp_path / "eval"
    rc = cli.main(["--sequences", str(root), "--trackers", "csrt", "--jobs", "1", "--threads", "1",
                   "--no-progress", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"] == "got10k"
    entry = summary["trackers"]["csrt"]["sequences"]["GOT-10k_Val_000001"]
    assert entry["evaluated_frames"] == 5  # GOT-10k skips the first frame
    assert entry["ao"] > 0.7
    sub = out / "submission" / "got10k" / "csrt" / "GOT-10k_Val_000001"
    assert len((sub / "GOT-10k_Val_000001_001.txt").read_text().splitlines()) == 6
    assert len((sub / "GOT-10k_Val_000001_time.txt").read_text().splitlines()) == 6
    with zipfile.ZipFile(out / "submission" / "got10k" / "csrt.zip") as z:
        assert "GOT-10k_Val_000001/GOT-10k_Val_000001_001.txt" in z.namelist()


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_cli_errors_are_clear(tmp_path, capsys):
    assert cli.main(["--sequences", str(tmp_path / "missing"), "--trackers", "csrt", "--out", str(tmp_path / "o")]) == 2
    err = _err(capsys)
    assert "sequences folder" in err and "does not exist" in err
    (tmp_path / "data").mkdir()
    assert cli.main(["--sequences", str(tmp_path / "data"), "--trackers", "csrt,siamfc", "--out", str(tmp_path / "o")]) == 2
    assert "unknown tracker siamfc" in _err(capsys)
    assert cli.main(["--sequences", str(tmp_path / "data"), "--trackers", "csrt", "--out", str(tmp_path / "o")]) == 2
    assert "cannot tell which benchmark" in _err(capsys)
    assert cli.main(["--sequences", str(tmp_path / "data"), "--benchmark", "lasot", "--trackers", "csrt",
                     "--out", str(tmp_path / "o")]) == 2
    assert "no LaSOT sequences" in _err(capsys)
    assert cli.main(["--sequences", str(tmp_path / "data"), "--trackers", "csrt", "--ablation", "pooling=single",
                     "--out", str(tmp_path / "o")]) == 2
    assert "add cract to --trackers" in _err(capsys)
    seq = tmp_path / "data" / "one"
    (seq / "img").mkdir(parents=True)
    cv2.imwrite(str(seq / "img" / "0001.jpg"), np.zeros((20, 20, 3), np.uint8))
    (seq / "groundtruth.txt").write_text("1,1,5,5\n")
    assert cli.main(["--sequences", str(tmp_path / "data"), "--trackers", "nanotrack", "--out", str(tmp_path / "o")]) == 2
    assert "nanotrack needs its model files" in _err(capsys)
    assert cli.main(["--sequences", str(tmp_path / "data"), "--only", "two", "--trackers", "csrt",
                     "--out", str(tmp_path / "o")]) == 2
    assert "no sequence named two" in _err(capsys)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--sequences", str(tmp_path / "data"), "--benchmark", "mot17", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2


def test_cli_runs_as_a_module():
    res = subprocess.run([sys.executable, "-m", "cract_core.eval.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--sequences" in res.stdout and "--ablation" in res.stdout


def _static_patch_frames(folder: Path, n: int, names) -> None:
    rng = np.random.default_rng(2)
    patch = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        img = np.full((120, 160, 3), 90, np.uint8)
        img[40:70, 50:80] = patch
        cv2.imwrite(str(folder / names(k)), img, [cv2.IMWRITE_JPEG_QUALITY, 100])


def test_cli_vot_stack_uses_the_reset_protocol(tmp_path):
    root = tmp_path / "vot"
    _static_patch_frames(root / "patch" / "color", 8, lambda k: f"{k + 1:08d}.jpg")
    # Polygon ground truth around the patch (axis-aligned here: x 50..80, y 40..70).
    (root / "patch" / "groundtruth.txt").write_text("50,40,80,40,80,70,50,70\n" * 8)
    (root / "list.txt").write_text("patch\n")
    out = tmp_path / "eval"
    assert cli.main(["--sequences", str(root), "--trackers", "csrt", "--jobs", "1", "--threads", "1",
                     "--eao-interval", "1,8", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"] == "vot" and summary["protocol"] == "reset"
    m = summary["trackers"]["csrt"]["mean"]
    assert m["failures"] == 0 and m["robustness"] == 0.0 and m["eao_interval"] == [1, 8]
    assert 0.5 < m["eao"] <= 1.0
    rows = (out / "submission" / "vot" / "csrt" / "baseline" / "patch" / "patch_001.txt").read_text().splitlines()
    assert rows[0] == "1" and len(rows) == 8 and len(rows[1].split(",")) == 4


def test_cli_trackingnet_and_lasot_submission_formats(tmp_path):
    tn = tmp_path / "trackingnet"
    _static_patch_frames(tn / "TEST" / "frames" / "vid_1", 12, lambda k: f"{k}.jpg")
    (tn / "TEST" / "anno").mkdir(parents=True)
    (tn / "TEST" / "anno" / "vid_1.txt").write_text("50,40,30,30\n")
    out = tmp_path / "eval_tn"
    assert cli.main(["--sequences", str(tn), "--trackers", "kcf", "--jobs", "1", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["trackers"]["kcf"]["sequences"]["vid_1"]
    assert entry["auc"] is None and entry["frames"] == 12  # no ground truth beyond frame 0: not scored
    with zipfile.ZipFile(out / "submission" / "trackingnet" / "kcf.zip") as z:
        assert z.namelist() == ["vid_1.txt"]
        assert len(z.read("vid_1.txt").decode().splitlines()) == 12

    la = tmp_path / "lasot"
    _static_patch_frames(la / "dog" / "dog-3" / "img", 5, lambda k: f"{k + 1:08d}.jpg")
    (la / "dog" / "dog-3" / "groundtruth.txt").write_text("50,40,30,30\n" * 5)
    (la / "dog" / "dog-3" / "full_occlusion.txt").write_text("0,0,0,0,0")
    (la / "dog" / "dog-3" / "out_of_view.txt").write_text("0,0,0,1,0")
    out = tmp_path / "eval_la"
    assert cli.main(["--sequences", str(la), "--benchmark", "lasot", "--trackers", "kcf", "--jobs", "1",
                     "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trackers"]["kcf"]["sequences"]["dog-3"]["evaluated_frames"] == 4  # out of view at frame 3
    assert len((out / "submission" / "lasot" / "kcf" / "dog-3.txt").read_text().splitlines()) == 5
