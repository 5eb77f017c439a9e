"""Tracker registry, OpenCV baselines, the cract adapter and the runner's protocols."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cract_core.eval import metrics as M
from cract_core.eval import runner as R
from cract_core.eval import trackers as trk
from cract_core.datasets import Sequence


def _moving_square(n: int = 15, step: int = 3, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """A textured 30x30 patch moving right over a smooth background: easy for every baseline."""
    rng = np.random.default_rng(seed)
    patch = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (160, 200, 3), dtype=np.uint8), (21, 21), 0)
    frames, boxes = [], []
    for k in range(n):
        img = bg.copy()
        x, y = 40 + step * k, 60
        img[y : y + 30, x : x + 30] = patch
        frames.append(img)
        boxes.append([x, y, 30, 30])
    return frames, np.asarray(boxes, dtype=np.float64)


def _write_sequence(folder: Path, frames: list[np.ndarray], gt: np.ndarray, name: str = "synthetic") -> Sequence:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, img in enumerate(frames):
        p = folder / f"{k + 1:06d}.png"  # lossless, so the pixels are exactly the ones drawn
        cv2.imwrite(str(p), img)
        paths.append(str(p))
    return Sequence(name, paths, gt, np.zeros(len(gt), bool), 30.0, "folder")


@pytest.mark.parametrize("name", ["csrt", "kcf", "mil"])
def test_opencv_baselines_follow_a_moving_patch(name):
    frames, gt = _moving_square()
    t = trk.create(name)
    assert t.init(frames[0], gt[0]) is None
    boxes = [gt[0]]
    for img in frames[1:]:
        box, conf = trk.split_result(t.update(img))
        assert box.shape == (4,) and (conf is None or 0.0 <= conf <= 1.0)
        boxes.append(box)
    ious = M.frame_iou(np.asarray(boxes), gt)
    assert ious.mean() > 0.5, ious


def test_opencv_tracker_clips_an_init_box_that_pokes_out_of_the_image():
    frames, gt = _moving_square()
    t = trk.create("csrt")
    t.init(frames[0], np.array([-10.0, 60.0, 80.0, 30.0]))  # partly left of the image
    box, _ = trk.split_result(t.update(frames[1]))
    assert np.all(np.isfinite(box))


def test_unknown_tracker_lists_the_known_ones():
    with pytest.raises(trk.UnknownTrackerError, match="unknown tracker siamfc; known: cract, csrt"):
        trk.create("siamfc")


def test_nanotrack_needs_its_model_files(tmp_path):
    with pytest.raises(trk.TrackerUnavailableError, match="--nanotrack-backbone"):
        trk.create("nanotrack")
    with pytest.raises(trk.TrackerUnavailableError, match="does not exist"):
        trk.create("nanotrack", nanotrack_backbone=str(tmp_path / "b.onnx"), nanotrack_neckhead=str(tmp_path / "h.onnx"))


def test_vittrack_needs_its_model_file(tmp_path):
    with pytest.raises(trk.TrackerUnavailableError, match="--vittrack-model"):
        trk.create("vittrack")
    with pytest.raises(trk.TrackerUnavailableError, match="does not exist"):
        trk.create("vittrack", vittrack_model=str(tmp_path / "vit.onnx"))


@pytest.mark.parametrize("name", ["nanotrack", "vittrack"])
def test_pretrained_opencv_baselines_follow_a_real_target(name, shared_sequence):
    """NanoTrack V2 and VitTrack, the small pretrained trackers a user would pick, on uav_boat5's
    first 20 frames with the authors' model files from ../shared/models."""
    from conftest import load_sequence, require_shared_model

    if name == "nanotrack":
        options = {"nanotrack_backbone": str(require_shared_model("nanotrack_v2/nanotrack_backbone_sim_v2.onnx")),
                   "nanotrack_neckhead": str(require_shared_model("nanotrack_v2/nanotrack_head_sim_v2.onnx"))}
    else:
        options = {"vittrack_model": str(require_shared_model("vittrack/vitTracker.onnx"))}
    frames, gt = load_sequence(shared_sequence("uav_boat5"), 20)
    t = trk.create(name, **options)
    t.init(frames[0], gt[0])
    boxes, confidences = [gt[0]], []
    for img in frames[1:]:
        box, conf = trk.split_result(t.update(img))
        boxes.append(box)
        confidences.append(conf)
    assert M.frame_iou(np.asarray(boxes), gt).mean() > 0.5
    # both score their output (OpenCV's getTrackingScore), unlike CSRT / KCF / MIL
    assert all(c is not None and 0.0 <= c <= 1.0 for c in confidences)


def test_split_result_accepts_a_box_or_a_box_and_confidence():
    b, c = trk.split_result(np.array([1, 2, 3, 4]))
    assert b.tolist() == [1, 2, 3, 4] and c is None
    b, c = trk.split_result((np.array([1, 2, 3, 4]), 0.25))
    assert c == 0.25
    with pytest.raises(ValueError, match="3 numbers"):
        trk.split_result(np.array([1, 2, 3]))


def test_ablation_flags_parse_and_reach_the_config():
    ab = trk.parse_ablations(["refinement=parallel", "classifier=identifier,pooling=single"])
    assert ab == {"refinement": "parallel", "classifier": "identifier", "pooling": "single"}
    assert trk.ablation_suffix(ab) == "-classifier_identifier-pooling_single-refinement_parallel"
    cfg = trk.build_cract_config(None, ab)
    assert (cfg.crac.refinement, cfg.crac.classifier, cfg.crac.pooling) == ("parallel", "identifier", "single")
    assert cfg.source  # relative checkpoint paths still resolve against the config file
    assert trk.build_cract_config(None, {}).crac.refinement == "none"  # the shipped default's
    with pytest.raises(ValueError, match="bad ablation 'refinement=sideways'"):
        trk.parse_ablations(["refinement=sideways"])
    weights = trk.parse_ablations(["alpha=0.25,beta=1"])
    assert weights == {"alpha": 0.25, "beta": 1.0}
    cfg = trk.build_cract_config(None, weights)
    assert (cfg.crac.alpha, cfg.crac.beta) == (0.25, 1.0)
    for bad in ("alpha=1.5", "beta=-0.1", "beta=nan", "beta=high", "gamma=0.5"):
        with pytest.raises(ValueError, match=f"bad ablation '{bad}'"):
            trk.parse_ablations([bad])


def test_cract_adapter_runs_on_real_frames(shared_sequence):
    pytest.importorskip("cract_core.tracker")
    from cract_core.datasets import load_folder

    (seq,) = load_folder(shared_sequence("uav_boat5"))
    seq = seq.head(4)
    task = R.Task("cract", {"ablations": {"refinement": "parallel"}, "device": "cpu"}, seq, "ope", 1)
    res = R.run_sequence(task)
    assert res.error is None, res.error
    assert res.tracker == "cract-refinement_parallel"
    assert res.boxes.shape == (4, 4) and np.all(np.isfinite(res.boxes))
    assert np.all((res.confidences[1:] >= 0) & (res.confidences[1:] <= 1))
    assert len(res.latencies_ms) == 3 and len(res.init_ms) == 1
    assert res.updated is not None and res.updated.shape == (3,)  # cract says which frames started an update
    sp = R.speed_fields(res.latencies_ms, res.init_ms, res.updated)
    assert sp["update_frames"] == int(res.updated.sum())
    assert sp["latency_ms_p50_no_update"] is not None


# ----------------------------------------------------------------------------------- runner


class StuckTracker:
    """Returns the box it was given, forever: fails as soon as the target has moved away."""

    name = "stuck"

    def init(self, image, box):
        self.box = np.asarray(box, dtype=np.float64).copy()

    def update(self, image):
        return self.box.copy()


class BrokenTracker:
    name = "broken"

    def init(self, image, box):
        pass

    def update(self, image):
        raise RuntimeError("model exploded")


def test_vot_reset_protocol_reinitialises_five_frames_after_a_failure(tmp_path, monkeypatch):
    monkeypatch.setitem(trk.REGISTRY, "stuck", lambda **_: StuckTracker())
    # A 10x10 target moving 4 px a frame: a stuck box overlaps for 2 frames and fails on the 3rd.
    n = 20
    frames = [np.full((60, 120, 3), 128, np.uint8) for _ in range(n)]
    gt = np.array([[4.0 * k, 20, 10, 10] for k in range(n)])
    seq = _write_sequence(tmp_path / "seq", frames, gt)
    res = R.run_sequence(R.Task("stuck", {}, seq, "reset", 1))
    assert res.error is None
    I, T, F, S = M.VOT_INIT, M.VOT_TRACKED, M.VOT_FAILURE, M.VOT_SKIPPED
    expected = [I, T, T, F, S, S, S, S, I, T, T, F, S, S, S, S, I, T, T, F]
    assert res.codes.tolist() == expected
    assert len(res.init_ms) == 3
    summary = R.summarize([res], [seq], jobs=1, threads=1, benchmark="vot", sequences_dir=str(tmp_path),
                          protocol="reset", eao_interval=(1, 4))
    m = summary["trackers"]["stuck"]["mean"]
    assert m["failures"] == 3 and m["robustness"] == pytest.approx(100 * 3 / 20)
    # IoUs of the stuck box: 4 px behind -> 60/140, 8 px behind -> 20/180.
    curve = M.expected_overlap_curve([(M.vot_overlaps(res.boxes, gt, res.codes), res.codes)])
    np.testing.assert_allclose(curve[:4], [1.0, 3 / 7, (3 / 7 + 1 / 9) / 2, (3 / 7 + 1 / 9) / 3])
    assert m["eao"] == pytest.approx(curve[:4].mean())
    assert m["accuracy"] is None  # every tracked frame lies in a 10-frame burn-in


def test_one_pass_run_scores_and_a_raising_tracker_is_reported(tmp_path, monkeypatch):
    monkeypatch.setitem(trk.REGISTRY, "stuck", lambda **_: StuckTracker())
    monkeypatch.setitem(trk.REGISTRY, "broken", lambda **_: BrokenTracker())
    frames, gt = _moving_square(n=6, step=0)  # the patch does not move: stuck is exact
    seq = _write_sequence(tmp_path / "seq", frames, gt)
    tasks = R.make_tasks(["stuck", "broken"], {"ablations": {"pooling": "single"}}, [seq], "ope", 1)
    assert "ablations" not in tasks[0].options  # ablations apply to cract only
    results = R.run_all(tasks, jobs=1, progress=False)
    assert results[0].error is None and "model exploded" in results[1].error
    summary = R.summarize(results, [seq], jobs=1, threads=1, benchmark="folder", sequences_dir=str(tmp_path))
    stuck = summary["trackers"]["stuck"]
    assert stuck["sequences"]["synthetic"]["auc"] == pytest.approx(20 / 21)
    assert stuck["mean"]["fps"] > 0 and stuck["sequences"]["synthetic"]["init_ms"] >= 0
    assert results[0].updated is None and "update_frames" not in stuck["mean"]  # it does not flag updates
    assert summary["trackers"]["broken"]["errors"]["synthetic"].startswith("RuntimeError: model exploded")
    table = R.format_table(summary)
    assert "ERROR broken on synthetic: RuntimeError: model exploded" in table
    # Several jobs: the same scores, no speed figures.
    summary2 = R.summarize(results, [seq], jobs=2, threads=1, benchmark="folder", sequences_dir=str(tmp_path))
    assert summary2["speed_valid"] is False and summary2["trackers"]["stuck"]["mean"]["fps"] is None
    assert summary2["trackers"]["stuck"]["sequences"]["synthetic"]["latency_ms_p95"] is None


def test_speed_fields_by_hand():
    lat = np.array([10.0, 10.0, 10.0, 50.0])
    sp = R.speed_fields(lat, [200.0, 100.0], np.array([False, False, False, True]))
    assert sp["fps"] == pytest.approx(1000 * 4 / 80)  # frames over the update time, init apart
    assert sp["latency_ms_p50"] == 10.0 and sp["init_ms"] == 150.0
    assert sp["update_frames"] == 1 and sp["latency_ms_p50_update"] == 50.0 and sp["latency_ms_p95_no_update"] == 10.0
    assert R.speed_fields(np.zeros(0), [])["fps"] is None


def test_result_file_numbers_keep_the_benchmark_convention(tmp_path):
    R.write_boxes(tmp_path / "a.txt", np.array([[82, 218, 69, 73], [1.25, 2.5, 3.0, np.nan]]))
    assert (tmp_path / "a.txt").read_text() == "82,218,69,73\n1.25,2.5,3,nan\n"


def test_tracker_specs_put_cract_variants_side_by_side():
    base = {"device": "cpu", "ablations": {"pooling": "single"}}
    assert trk.parse_tracker_spec("csrt", base) == ("csrt", {"device": "cpu"})  # ablations never reach csrt
    assert trk.parse_tracker_spec("cract", base) == ("cract", base)  # --ablation applies to plain cract
    name, opts = trk.parse_tracker_spec("cract:refinement=parallel+checkpoint=/m/par.pt", base)
    assert name == "cract" and opts["ablations"] == {"refinement": "parallel"} and opts["checkpoint"] == "/m/par.pt"
    assert trk.result_name(name, opts) == "cract-refinement_parallel"
    name, opts = trk.parse_tracker_spec("cract:classifier=identifier+name=ide_only", {})
    assert trk.result_name(name, opts) == "ide_only"
    with pytest.raises(ValueError, match="only cract takes"):
        trk.parse_tracker_spec("kcf:pooling=single", {})
    with pytest.raises(ValueError, match="bad ablation 'pooling=triple'"):
        trk.parse_tracker_spec("cract:pooling=triple", {})
    with pytest.raises(ValueError, match="expected key=value"):
        trk.parse_tracker_spec("cract:parallel", {})
    seq = Sequence("s", ["a.jpg"], np.zeros((1, 4)), np.zeros(1, bool))
    tasks = R.make_tasks(["cract", "cract:refinement=parallel", "kcf"], {}, [seq], "ope", 1)
    assert [t.result_name for t in tasks] == ["cract", "cract-refinement_parallel", "kcf"]
    with pytest.raises(ValueError, match="would both write to cract/"):
        R.make_tasks(["cract", "cract:checkpoint=/x.pt"], {}, [seq], "ope", 1)
