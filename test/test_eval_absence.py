"""The absence protocol and the VOT-LT measures: hand-computed numbers, a hand-listed splice, the
trackers' reported states, and one real run through the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from cract_core.datasets import Sequence
from cract_core.eval import absence, cli, longterm
from cract_core.eval import trackers as trk

NAN = np.nan


# ------------------------------------------------------------------------------ VOT-LT measures


def test_pr_curve_of_one_sequence_by_hand():
    # 4 frames: present, absent, present, present; the last has no prediction (NaN confidence).
    ious = np.array([0.8, 0.0, 0.5, 0.0])
    conf = np.array([0.9, 0.2, 0.6, NAN])
    present = np.array([True, False, True, True])
    c = longterm.longterm_pr_curve(ious, conf, present)
    np.testing.assert_array_equal(c["thresholds"], [np.inf, 0.9, 0.6, 0.2, -np.inf])
    # +inf: nothing taken (P = 1, R = 0 by convention); 0.9: frame 0; 0.6: frames 0, 2;
    # 0.2 and -inf: frames 0, 1, 2 (the absent frame 1 adds IoU 0); 3 present frames.
    np.testing.assert_allclose(c["precision"], [1.0, 0.8, 0.65, 1.3 / 3, 1.3 / 3])
    np.testing.assert_allclose(c["recall"], [0.0, 0.8 / 3, 1.3 / 3, 1.3 / 3, 1.3 / 3])
    np.testing.assert_allclose(c["f"], [0.0, 0.4, 0.52, 1.3 / 3, 1.3 / 3])
    f, p, r, t = longterm.longterm_f(ious, conf, present)
    assert (f, p, r, t) == pytest.approx((0.52, 0.65, 1.3 / 3, 0.6))


def test_pr_curve_takes_none_as_no_prediction_and_given_thresholds():
    c = longterm.longterm_pr_curve([1.0, 0.5], [None, 0.3], [True, True], thresholds=np.array([0.5, 0.0]))
    np.testing.assert_allclose(c["precision"], [1.0, 0.5])  # 0.5: nothing taken; 0.0: frame 1 only
    np.testing.assert_allclose(c["recall"], [0.0, 0.25])


def test_thresholds_are_vot_toolkits_quantiles():
    th = longterm.determine_thresholds(np.arange(200, dtype=float))
    # 200 scores > 98: delta = floor(200 / 98) = 2; indices round(linspace(2, 198, 98)) of the
    # decreasing scores 199, 198, ...: first 199 - 2 = 197, last 199 - 198 = 1.
    assert len(th) == 100 and th[0] == np.inf and th[-1] == -np.inf
    assert th[1] == 197.0 and th[-2] == 1.0 and np.all(np.diff(th[1:-1]) < 0)
    # Few scores: all of them, NaNs dropped.
    np.testing.assert_array_equal(longterm.determine_thresholds([0.2, NAN, 0.7]), [np.inf, 0.7, 0.2, -np.inf])


def test_several_sequences_average_per_threshold_not_pooled_frames():
    a = (np.array([1.0]), np.array([0.5]), np.array([True]))
    b = (np.zeros(4), np.array([0.9, NAN, NAN, NAN]), np.array([False, True, True, True]))
    c = longterm.longterm_pr_curves([a, b])
    np.testing.assert_array_equal(c["thresholds"], [np.inf, 0.9, 0.5, -np.inf])
    # a: (P, R) = (1, 0), (1, 0), (1, 1), (1, 1); b: (1, 0), (0, 0), (0, 0), (0, 0).
    np.testing.assert_allclose(c["precision"], [1.0, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(c["recall"], [0.0, 0.0, 0.5, 0.5])
    # Pooling frames would give recall 1 / 4 at 0.5; averaging sequences gives 0.5.
    assert longterm.best_f(c) == pytest.approx((0.5, 0.5, 0.5, 0.5))


def test_f_is_zero_not_nan_when_nothing_is_right():
    f, p, r, _ = longterm.longterm_f([0.0, 0.0], [0.9, 0.8], [True, False])
    assert (f, p, r) == (0.0, 1.0, 0.0)  # +inf threshold first: the tie goes to it


# ------------------------------------------------------------------------------------ splicing


def _folder_sequence(root: Path, name: str, values: list[int], size: tuple[int, int], gt: np.ndarray) -> Sequence:
    """A sequence of flat images, frame i filled with values[i], so spliced frames can be told apart."""
    folder = root / name
    folder.mkdir(parents=True)
    frames = []
    for i, v in enumerate(values):
        path = folder / f"{i:04d}.png"
        cv2.imwrite(str(path), np.full((size[1], size[0], 3), v, np.uint8))
        frames.append(str(path))
    return Sequence(name=name, frames=frames, groundtruth=gt, absent=np.zeros(len(values), bool))


@pytest.fixture
def host_and_donor(tmp_path):
    host_gt = np.array([[1, 1, 3, 2], [2, 1, 3, 2], [3, 1, 3, 2], [4, 1, 3, 2], [4, 2, 3, 2], [4, 3, 3, 2]], float)
    host = _folder_sequence(tmp_path, "host", [10, 11, 12, 13, 14, 15], (8, 6), host_gt)
    donor = _folder_sequence(tmp_path, "donor", [200, 201, 202], (4, 4), np.tile([0, 0, 2, 2.0], (3, 1)))
    return host, donor


def test_splice_of_six_frames_listed_by_hand(host_and_donor):
    host, donor = host_and_donor
    s = absence.splice_with_absence(host, donor, k=2, gap=4)
    # h0 h1 | d0 d1 d2 d0 (the 3-frame donor repeats) | h2 h3 h4 h5
    assert [Path(p).parent.name + "/" + Path(p).stem for p in s.frames] == [
        "host/0000", "host/0001", "donor/0000", "donor/0001", "donor/0002", "donor/0000",
        "host/0002", "host/0003", "host/0004", "host/0005"]
    assert [int(s.image(i)[0, 0, 0]) for i in range(len(s))] == [10, 11, 200, 201, 202, 200, 12, 13, 14, 15]
    # Donor frames come at the host's size, so the tracker sees one camera.
    assert all(s.image(i).shape == (6, 8, 3) for i in range(len(s)))
    assert s.image_size() == (8, 6)
    nan_rows = np.flatnonzero(np.isnan(s.groundtruth).any(axis=1)).tolist()
    assert nan_rows == [2, 3, 4, 5] and s.absent.tolist() == [False] * 2 + [True] * 4 + [False] * 4
    np.testing.assert_array_equal(s.groundtruth[6:], host.groundtruth[2:])
    assert s.return_index == 6 and s.name == "host+cut_donor"
    assert s.head(3).image(2)[0, 0, 0] == 200 and len(s.head(3)) == 3


def test_splice_default_k_is_a_third_and_bad_k_is_refused(host_and_donor):
    host, donor = host_and_donor
    assert absence.splice_with_absence(host, donor, gap=1).return_index == 2 + 1  # round(6 / 3) = 2
    with pytest.raises(ValueError, match="k must be"):
        absence.splice_with_absence(host, donor, k=6, gap=1)  # nothing left after the cut
    with pytest.raises(ValueError, match="gap"):
        absence.splice_with_absence(host, donor, k=2, gap=0)


def test_pairing_is_the_next_sequences_by_name(tmp_path):
    seqs = [_folder_sequence(tmp_path, n, [v, 2, 3], (4, 4), np.tile([0, 0, 2, 2.0], (3, 1)))
            for n, v in zip("cab", (7, 8, 9))]
    names = [r.name for r in absence.absence_runs(seqs, gap=2, scenes=2)]
    assert names == ["a+cut_b", "a+cut_c", "b+cut_c", "b+cut_a", "c+cut_a", "c+cut_b"]
    with pytest.raises(ValueError, match="scenes"):
        absence.absence_runs(seqs, scenes=3)


def test_two_sequences_of_one_footage_are_never_each_others_cut_away(tmp_path):
    """OTB's Jogging-1 and Jogging-2 are the same images with another target each: cutting one to
    the other would leave the 'absent' target in view.  The pairing skips to the next footage."""
    gt = np.tile([0, 0, 2, 2.0], (3, 1))
    seqs = [_folder_sequence(tmp_path, "jog1", [5, 6, 7], (4, 4), gt),
            _folder_sequence(tmp_path, "jog2", [5, 6, 7], (4, 4), gt),  # the same frames, another folder
            _folder_sequence(tmp_path, "kite", [8, 6, 7], (4, 4), gt),
            _folder_sequence(tmp_path, "lake", [9, 6, 7], (4, 4), gt)]
    names = [r.name for r in absence.absence_runs(seqs, gap=2, scenes=2)]
    assert names == ["jog1+cut_kite", "jog1+cut_lake", "jog2+cut_kite", "jog2+cut_lake",
                     "kite+cut_lake", "kite+cut_jog1", "lake+cut_jog1", "lake+cut_jog2"]
    with pytest.raises(ValueError, match="jog1: only 2 other footage"):
        absence.absence_runs(seqs, scenes=3)


# ----------------------------------------------------------------------------- per-run scores


def test_refind_frames_by_hand():
    ious = np.array([0.9, 0.0, 0.0, 0.0, 0.2, 0.5, 0.8])
    present = np.array([True, False, False, True, True, True, True])
    assert absence.refind_frames(ious, present, 3) == (2, True)  # frame 5 is the first IoU > 0.3
    assert absence.refind_frames(ious, present, 5) == (0, True)  # right on the return
    assert absence.refind_frames(np.where(np.arange(7) >= 3, 0.3, 0.9), present, 3) == (4, False)  # 0.3 is not > 0.3


def test_lt_confidence_falls_back_on_the_tracking_flag():
    conf = absence.lt_confidences([NAN, 0.7, NAN, 0.4], [True, True, False, True], [True, True, True, False])
    np.testing.assert_array_equal(conf, [1.0, 0.7, 0.0, NAN])


def test_score_of_one_spliced_run_by_hand(host_and_donor):
    host, donor = host_and_donor
    s = absence.splice_with_absence(host, donor, k=2, gap=2)  # h0 h1 d0 d1 h2 h3 h4 h5, return at 4
    boxes = s.groundtruth.copy()
    boxes[2:4] = [1, 1, 3, 2]  # a box on the cut-away frames
    boxes[4] = [20, 20, 3, 2]  # off the target on the return (IoU 0) ...
    boxes[5] = [4, 1, 3, 2]  # ... found the frame after (exact: IoU 1)
    states = ["INIT", "TRACKING", "TRACKING", "LOST", "LOST", "TRACKING", "TRACKING", "LOW_CONFIDENCE"]
    conf = np.array([NAN, 0.9, 0.8, 0.2, 0.3, 0.7, 0.9, 0.4])
    d = absence.score_absence_run(boxes, conf, states, s).as_dict()
    assert d["absent_frames"] == 2 and d["present_frames"] == 5  # frame 0 initialises: left out
    assert d["absent_not_tracking"] == 0.5  # frames 2 (TRACKING) and 3 (LOST)
    assert d["present_tracking"] == 3 / 5  # frames 1, 5, 6 of 1, 4, 5, 6, 7
    assert d["refind_frames"] == 1 and d["refound"]
    # Present IoUs (frames 1..7): 1, -, -, 0, 1, 1, 1 with confidences 0.9, 0.8, 0.2, 0.3, 0.7, 0.9, 0.4.
    # Best F at threshold 0.4: frames 1, 2, 5, 6, 7 taken: P = 4 / 5, R = 4 / 5.
    # (0.9: P = 1, R = 2 / 5; 0.7 adds the absent frame 2: P = 3 / 4, R = 3 / 5; 0.3 and 0.2 add IoU-0 frames.)
    assert (d["lt_f"], d["lt_precision"], d["lt_recall"], d["lt_threshold"]) == pytest.approx((0.8, 0.8, 0.8, 0.4))
    # Present frames 0, 1, 4..7 (frame 0 scored, as the one-pass AUC does): IoUs 1, 1, 0, 1, 1, 1.
    assert d["auc_present"] == pytest.approx((5 * 20 / 21) / 6)

    assert d["iou_before_cut"] == 1.0  # frame 1, the last before the cut, is exact

    lost = boxes.copy()
    lost[1] = [30, 30, 3, 2]  # lost before the cut: a slow re-find there is not the cut's doing
    runs = [absence.score_absence_run(boxes, conf, states, s), absence.score_absence_run(lost, conf, states, s)]
    assert absence.summarize_runs(runs)["lost_before_cut"] == 1

    summary = absence.summarize_runs([absence.score_absence_run(boxes, conf, states, s)] * 2)
    assert summary["runs"] == 2 and summary["absent_frames"] == 4 and summary["never_refound"] == 0
    assert summary["refind_frames_median"] == 1.0 and summary["lt_f"] == pytest.approx(0.8)


# -------------------------------------------------------------------- what the trackers report


class _FakeOpenCV:
    """OpenCV's tracker API with scripted answers: (ok, score) per update."""

    def __init__(self, script, scored=True):
        self.script = list(script)
        if not scored:
            self.getTrackingScore = None  # CSRT-like: no score

    def init(self, image, rect):
        pass

    def update(self, image):
        ok, self._score = self.script.pop(0)
        return ok, (1, 1, 4, 4)

    def getTrackingScore(self):  # noqa: N802 (OpenCV's name)
        return self._score


def test_opencv_states_from_flag_and_score():
    img = np.zeros((10, 10, 3), np.uint8)
    nano = trk.OpenCVTracker("nanotrack", lambda: _FakeOpenCV([(True, 0.6), (True, 0.4), (False, 0.9)]))
    nano.init(img, np.array([1, 1, 4, 4.0]))
    seen = []
    for _ in range(3):
        _, c = nano.update(img)
        seen.append((nano.last_state, c))
    assert seen == [("TRACKING", 0.6), ("LOST", 0.4), ("LOST", 0.0)]
    csrt = trk.OpenCVTracker("csrt", lambda: _FakeOpenCV([(True, None), (False, None)], scored=False))
    csrt.init(img, np.array([1, 1, 4, 4.0]))
    assert [(csrt.update(img)[1], csrt.last_state) for _ in range(2)] == [(None, "TRACKING"), (0.0, "LOST")]


# ------------------------------------------------------------------------- one real CLI run


def test_cli_absence_protocol_on_real_sequences(shared_sequences_dir, tmp_path, capsys):
    out = tmp_path / "abs"
    rc = cli.main([
        "--sequences", str(shared_sequences_dir), "--only", "otb_bird2,uav_boat5,otb_woman", "--trackers", "csrt",
        "--protocol", "absence", "--absence-gap", "4", "--max-frames", "12", "--jobs", "1", "--threads", "1",
        "--no-progress", "--out", str(out),
    ])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "absence protocol" in printed and "otb_bird2+cut_otb_woman" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "absence" and summary["absence"]["gap"] == 4
    runs = summary["absence"]["runs"]
    assert sorted(runs) == ["otb_bird2+cut_otb_woman", "otb_bird2+cut_uav_boat5", "otb_woman+cut_otb_bird2",
                            "otb_woman+cut_uav_boat5", "uav_boat5+cut_otb_bird2", "uav_boat5+cut_otb_woman"]
    m = summary["trackers"]["csrt"]["mean"]
    assert m["runs"] == 6 and m["absent_frames"] == 6 * 4 and m["present_frames"] == 6 * 11
    # The written per-frame records give back the summary's shares.
    tracking_present, absent_not = [], []
    for name, info in runs.items():
        assert info["k"] == 4 and info["return_index"] == 8  # round(12 / 3) = 4 host frames, then 4 cut away
        gt = np.loadtxt(out / "groundtruth" / f"{name}.txt", delimiter=",")
        assert gt.shape == (16, 4) and np.isnan(gt[4:8]).all() and not np.isnan(gt[[*range(4), *range(8, 16)]]).any()
        rows = [ln.split(",") for ln in (out / "csrt" / f"{name}.state.txt").read_text().splitlines()]
        assert len(rows) == 16 and rows[0][1] == "INIT"
        assert {r[1] for r in rows[1:]} <= {"TRACKING", "LOST"}
        for i in range(1, 16):
            (absent_not if np.isnan(gt[i]).any() else tracking_present).append(
                rows[i][1] != "TRACKING" if np.isnan(gt[i]).any() else rows[i][1] == "TRACKING")
        e = summary["trackers"]["csrt"]["sequences"][name]
        assert 0 <= e["refind_frames"] <= 8 and e["lt_threshold"] in (None, 0.0, 1.0)  # CSRT: its flag
    assert m["present_tracking"] == pytest.approx(np.mean(tracking_present))
    assert m["absent_not_tracking"] == pytest.approx(np.mean(absent_not))
    assert 0.0 <= m["lt_f"] <= 1.0 and len(m["lt_curve"]["precision"]) == len(m["lt_curve"]["recall"])
    assert math.isclose(m["auc_present"], m["auc"], rel_tol=1e-9)
    img = cv2.imread(str(out / "lt_precision_recall.png"))
    assert img is not None and img.shape[0] > 100


def test_cli_refuses_absence_with_one_sequence(shared_sequences_dir, tmp_path, capsys):
    rc = cli.main(["--sequences", str(shared_sequences_dir), "--only", "otb_bird2", "--protocol", "absence",
                   "--trackers", "csrt", "--jobs", "1", "--out", str(tmp_path / "x"), "--no-progress"])
    assert rc == 2 and "at least 2 sequences" in capsys.readouterr().err
