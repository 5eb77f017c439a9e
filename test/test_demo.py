"""The main job (`make demo` = python -m cract_ros.tools.demo) end to end, as a user runs it: a real
node process, a real sequence (or the generated one where ../shared/data is absent) played as a
camera over DDS, the target set by service, a contact sheet PNG and a summary at the end.
No timing is asserted.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600  # node start-up and warm-up on a busy 2-core machine, then ~2 s of camera


def run_demo(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cract_ros.tools.demo", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def check_output(proc: subprocess.CompletedProcess, out: Path, frames: int, scored: bool) -> dict:
    assert proc.returncode == 0, f"demo failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    text = proc.stdout
    assert "node ready" in text and "summary:" in text
    assert "Hz  latency" in text and "confidence" in text  # the line a second
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 0 and sheet.shape[1] == 4 * 360
    result = json.loads((out / "result.json").read_text())
    assert result["frames"] == frames and len(result["per_frame"]) == frames
    assert result["speed"]["processed"] + result["speed"]["dropped"] == frames - 1
    assert (out / "node.log").is_file()
    if scored:
        assert "success AUC" in text and 0.0 <= result["auc"] <= 1.0
    else:
        assert "no ground truth: not scored" in text and result["auc"] is None
    return result


@pytest.mark.ros
@pytest.mark.slow
def test_demo_default_source_writes_the_contact_sheet(tmp_path) -> None:
    out = tmp_path / "demo"
    proc = run_demo(["--frames", "15", "--out", str(out), "--param", "num_threads=1"])
    result = check_output(proc, out, 15, scored=True)
    shared = REPO_ROOT.parent / "shared" / "data" / "sequences" / "uav_boat5"
    if shared.is_dir():
        assert "uav_boat5" in proc.stdout and "10.0 fps" in proc.stdout  # UAV123@10fps
    assert result["per_frame"][0]["state"] != 0  # the init frame was answered with the target


@pytest.mark.ros
@pytest.mark.slow
def test_demo_plays_a_video_file_with_an_init_box(tmp_path) -> None:
    """A user's own footage: a video without ground truth, the target given with --init-box."""
    from cract_core.demo import synthetic_sequence

    images, gt = synthetic_sequence(12)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, images[0].shape[1::-1])
    assert writer.isOpened()
    for img in images:
        writer.write(img)
    writer.release()
    out = tmp_path / "demo_video"
    box = ",".join(str(int(v)) for v in gt[0])
    proc = run_demo(["--source", str(video), "--init-box", box, "--out", str(out), "--param", "num_threads=1"])
    result = check_output(proc, out, 12, scored=False)
    np.testing.assert_allclose(result["per_frame"][0]["box"], gt[0], atol=1e-3)


def test_demo_without_a_box_for_the_first_frame_says_what_to_do(tmp_path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    proc = run_demo(["--source", str(folder), "--out", str(tmp_path / "o")])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "cract demo: error: frames has no ground-truth box for its first frame: give --init-box x,y,w,h")
    proc = run_demo(["--source", str(tmp_path / "nope.mp4")])
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.ros
@pytest.mark.slow
def test_demo_plays_a_bag_with_its_ground_truth(shared_sequence, tmp_path) -> None:
    """A rosbag2 as the source: its images are published as recorded, its ground truth scores them."""
    from cract_ros.bags import bag_eval

    bag = tmp_path / "bag"
    assert bag_eval.main(["from-sequence", str(shared_sequence("otb_woman")), str(bag), "--max-frames", "10"]) == 0
    out = tmp_path / "demo_bag"
    proc = run_demo(["--source", str(bag), "--out", str(out), "--param", "num_threads=1"])
    check_output(proc, out, 10, scored=True)
    assert "bag, 10 frames 352x288 at 30.0 fps" in proc.stdout
