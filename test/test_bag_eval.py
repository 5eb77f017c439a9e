"""Bag evaluation on a real sequence: lock-step equals the folder evaluation; real-time replay
through the node (a real process over real DDS) completes and is scored.

No timing is asserted: the machine is shared; only that things complete, and what they compute.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")

from cract_ros.bags import bag_eval, bag_io  # noqa: E402

N_FRAMES = 20


def make_bag(seq_dir: Path, out: Path, fps: float) -> Path:
    assert bag_eval.main(["from-sequence", str(seq_dir), str(out), "--max-frames", str(N_FRAMES),
                          "--fps", str(fps)]) == 0
    return out


@pytest.mark.slow
def test_lockstep_bag_eval_equals_the_folder_eval(shared_sequence, tmp_path, capsys) -> None:
    """The same 20 otb_bird2 frames: cract-eval on the folder and cract-bag eval on the bag give
    the same boxes and the same AUC / precision (both one thread, sync tracker)."""
    import torch

    threads = torch.get_num_threads()  # cract-eval sets torch's threads for its run: restored below
    try:
        _lockstep_vs_folder(shared_sequence, tmp_path, capsys)
    finally:
        torch.set_num_threads(threads)


def _lockstep_vs_folder(shared_sequence, tmp_path, capsys) -> None:
    from cract_core.eval import cli

    seq_dir = shared_sequence("otb_bird2")
    bag = make_bag(seq_dir, tmp_path / "bag", 30.0)
    folder_out = tmp_path / "folder_eval"
    assert cli.main(["--sequences", str(seq_dir), "--benchmark", "folder", "--trackers", "cract",
                     "--max-frames", str(N_FRAMES), "--jobs", "1", "--threads", "1", "--out", str(folder_out),
                     "--no-progress"]) == 0
    folder_boxes = np.loadtxt(folder_out / "cract" / "otb_bird2.txt", delimiter=",")
    folder_scores = json.loads((folder_out / "summary.json").read_text())["trackers"]["cract"]["sequences"]["otb_bird2"]

    bag_out = tmp_path / "bag_eval"
    record = tmp_path / "recorded"
    assert bag_eval.main(["eval", str(bag), "--mode", "lockstep", "--threads", "1", "--out", str(bag_out),
                          "--record", str(record)]) == 0
    report = capsys.readouterr().out
    assert "lockstep: 20 frames" in report and "success AUC" in report
    result = json.loads((bag_out / "result.json").read_text())
    bag_boxes = np.loadtxt(bag_out / "boxes.txt", delimiter=",")

    assert bag_boxes.shape == folder_boxes.shape == (N_FRAMES, 4)
    np.testing.assert_allclose(bag_boxes, folder_boxes, atol=6e-4)  # cract-eval writes 3 decimals
    assert result["auc"] == pytest.approx(folder_scores["auc"], abs=1e-12)
    assert result["prec20"] == pytest.approx(folder_scores["prec20"], abs=1e-12)
    assert result["evaluated_frames"] == folder_scores["evaluated_frames"] == N_FRAMES

    # --record: one TrackedObject per image, at the image's stamp, with the boxes scored above
    rec = bag_io.Bag(record)
    assert rec.topics[bag_eval.RECORD_TOPIC].count == N_FRAMES
    stamps = bag_io.load_sequence(bag).stamps_ns
    msgs = [rec.decode(raw, t) for _, t, _, raw in rec.messages([bag_eval.RECORD_TOPIC])]
    assert [bag_io.stamp_ns(m.header.stamp) for m in msgs] == stamps
    np.testing.assert_allclose([[m.x, m.y, m.width, m.height] for m in msgs], bag_boxes, atol=1e-3)


@pytest.mark.ros
@pytest.mark.slow
def test_realtime_replay_through_the_node_completes_and_scores(shared_sequence, tmp_path, rclpy_init, capsys) -> None:
    """20 otb_bird2 frames at 10 fps through the node process: every frame is answered or counted
    as dropped, the answers carry the bag's stamps, and the run is scored against the ground truth."""
    from cract_ros.bags.replay import predictions_by_stamp

    seq_dir = shared_sequence("otb_bird2")
    bag = make_bag(seq_dir, tmp_path / "bag", 10.0)
    seq = bag_io.load_sequence(bag)
    res, replay = bag_eval.eval_realtime(seq, overrides={"num_threads": 1}, log_dir=tmp_path / "node")

    assert replay.complete, "the last frame was never answered"
    stamps = set(seq.stamps_ns)
    assert all(o.stamp_ns in stamps for o in replay.outputs), "an answer with a stamp that was never published"
    by_stamp = replay.last_output_by_stamp()
    assert by_stamp[seq.stamps_ns[0]].state != bag_io.IDLE  # the init frame: the box it was given
    np.testing.assert_allclose(by_stamp[seq.stamps_ns[0]].box, seq.groundtruth[0], atol=1e-3)
    assert seq.stamps_ns[-1] in by_stamp  # the newest frame is never dropped

    sp = res.speed
    assert sp["streamed"] == N_FRAMES - 1 and sp["processed"] + sp["dropped"] == sp["streamed"]
    assert sp["processed"] >= 1 and sp["processed_rate_hz"] > 0
    assert sp["node_latency_ms_p50"] > 0 and sp["e2e_latency_ms_p50"] > 0
    assert sp["node_diagnostics"], "no /diagnostics from the node"

    # scoring: processed frames carry their own box, dropped ones the latest earlier one
    boxes, processed = predictions_by_stamp(replay)
    assert processed.sum() == sp["processed"] + 1
    for i in range(1, N_FRAMES):
        if processed[i]:
            np.testing.assert_array_equal(boxes[i], by_stamp[seq.stamps_ns[i]].box)
        else:
            np.testing.assert_array_equal(boxes[i], boxes[i - 1])
    from cract_core.eval import metrics

    expected = metrics.score_sequence(boxes, seq.groundtruth)
    assert res.scores["auc"] == pytest.approx(expected.auc) and 0.0 <= res.scores["auc"] <= 1.0
    assert res.scores["prec20"] == pytest.approx(expected.prec20)

    # --record: the node's answers and diagnostics, decodable, plus the ground truth
    record = tmp_path / "recorded"
    bag_eval.record_realtime(record, seq, replay, gt_topic="/cract/ground_truth")
    rec = bag_io.Bag(record)
    assert rec.topics[bag_eval.RECORD_TOPIC].count == len(replay.outputs)
    assert rec.topics["/diagnostics"].msgtype == "diagnostic_msgs/msg/DiagnosticArray"
    assert rec.topics["/cract/ground_truth"].count == N_FRAMES
    msgs = [rec.decode(raw, t) for _, t, _, raw in rec.messages([bag_eval.RECORD_TOPIC])]
    assert {bag_io.stamp_ns(m.header.stamp) for m in msgs} <= stamps
    print(bag_eval.format_report(res))
