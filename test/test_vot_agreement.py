"""vot-toolkit's own analysis against cract-eval's scoring, on the very same predictions.

A workspace from cract-vot (two real sequences, whole, and each cut away to the other and back:
the absence protocol's spliced runs, with absent frames), OpenCV NanoTrack V2 run by
``vot evaluate`` through cract-trax, ``vot analysis``; the trajectories read back are scored by
cract-eval's code (absence.summarize_runs for the long-term measures, metrics.score_sequence for
the overlap).  Long-term precision, recall, F and the average overlap agree within 0.005.

They are not equal, and the test pins down why: vot-toolkit's frame set includes the
initialisation frame.  Its trajectory holds a marker there that overlaps nothing, so the frame
counts as a visible frame the tracker missed (recall's denominator) and, with no confidence (0),
as an overlap-0 prediction at the lowest thresholds; cract-eval scores frames 1.. for VOT-LT (the
frames the tracker predicted: docs/vot.md says why that is the papers' definition).  For the
overlap it is the other way: cract-eval's one-pass AO keeps frame 0 (IoU 1, as the OTB toolkit),
vot's unsupervised average overlap leaves it out (burn-in 1).  And vot averages per-sequence means
weighted by sequence length, absent frames included, where cract-eval pools the frames with a box:
the same on whole sequences, 0.006 apart on these spliced runs, so the overlap is compared on the
whole sequences and the spliced runs check vot's rule instead.
With frame 0 treated vot's way, cract-eval's functions give vot's numbers to rasterisation
(vot overlaps are pixel counts of rounded boxes): within 1e-3.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, require_shared_model, require_shared_sequences

pytest.importorskip("vot", reason="vot-toolkit is not installed (the optional [vot] extra: pip install 'cract-tracker[vot]')")
pytest.importorskip("trax", reason="vot-trax is not installed (the optional [vot] extra: pip install 'cract-tracker[vot]')")

from cract_core.eval import absence, longterm, metrics  # noqa: E402
from cract_core.vot import results, workspace  # noqa: E402

pytestmark = pytest.mark.slow

TRACKER = "nanotrack_v2"
HOSTS = "otb_woman,uav_building5"  # 300 and 161 frames: whole real sequences
GAP = 20
TOLERANCE = 0.005


def _vot(*args: str, ws: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    vot = [sys.executable, "-m", "vot"]
    proc = subprocess.run(vot + list(args) + ["--workspace", str(ws)], capture_output=True, text=True,
                          env=env, timeout=900, cwd=REPO_ROOT)
    assert proc.returncode == 0 and "error" not in proc.stdout.lower(), proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The workspace, its sequences (cract_core Sequences), vot's numbers and the trajectories."""
    seq_dir = require_shared_sequences()
    require_shared_model("nanotrack_v2/nanotrack_backbone_sim_v2.onnx")
    require_shared_model("nanotrack_v2/nanotrack_head_sim_v2.onnx")
    ws = tmp_path_factory.mktemp("vot_ws")
    argv = ["--sequences", str(seq_dir), "--only", HOSTS, "--protocol", "both", "--absence-scenes", "1",
            "--absence-gap", str(GAP), "--baselines", "nanotrack", "--out", str(ws)]
    assert workspace.main(argv) == 0
    seqs = {s.name: s for s in workspace.load_sequences(workspace.build_parser().parse_args(argv))}
    spliced = [n for n, s in seqs.items() if isinstance(s, absence.SplicedSequence)]
    assert len(spliced) == 2 and len(seqs) == 4
    _vot("evaluate", TRACKER, ws=ws)
    _vot("analysis", TRACKER, "--name", "lt", "--experiments", workspace.LONGTERM, "--sequences", ",".join(spliced), ws=ws)
    _vot("analysis", TRACKER, "--name", "ao", "--experiments", workspace.SHORTTERM, ws=ws)
    return {
        "seqs": seqs, "spliced": spliced,
        "lt": results.analysis_numbers(ws / "analysis" / "lt.json", TRACKER),
        "ao": results.analysis_numbers(ws / "analysis" / "ao.json", TRACKER)["average_overlap"],
        "per_sequence": results.sequence_overlaps(ws / "analysis" / "ao.json", TRACKER),
        "lt_runs": results.read_trajectories(ws, TRACKER, workspace.LONGTERM),
        "st_runs": results.read_trajectories(ws, TRACKER, workspace.SHORTTERM),
    }


def _cract_eval_lt(run) -> dict:
    """cract-eval's absence-protocol figures of the spliced runs (absence.py's own scoring)."""
    scored = [absence.score_absence_run(r.boxes, r.confidences, r.states, run["seqs"][n])
              for n, r in run["lt_runs"].items() if n in run["spliced"]]
    return absence.summarize_runs(scored)


def test_long_term_precision_recall_f_agree_with_vot_toolkit(run):
    ours, vot = _cract_eval_lt(run), run["lt"]
    assert ours["runs"] == 2 and ours["absent_frames"] == 2 * GAP
    for key in ("precision", "recall", "f"):
        assert ours[f"lt_{key}"] == pytest.approx(vot[key], abs=TOLERANCE), key


def _pooled_ao(run, names) -> float:
    """cract-eval's AO: every frame with a box pooled (frame 0 included), as its summary's mean."""
    ious = [metrics.score_sequence(run["st_runs"][n].boxes, run["seqs"][n].groundtruth, run["seqs"][n].absent).ious
            for n in names]
    return metrics.got10k_scores(np.concatenate(ious))[0]


def test_average_overlap_agrees_with_vot_toolkit(run):
    """On the whole sequences: cract-eval's AO vs vot's average overlap (its per-sequence values,
    weighted by length as its average_accuracy weights them)."""
    plain = [n for n in run["seqs"] if n not in run["spliced"]]
    vot = np.average([run["per_sequence"][n] for n in plain], weights=[len(run["seqs"][n]) for n in plain])
    assert _pooled_ao(run, plain) == pytest.approx(vot, abs=TOLERANCE)


def test_the_difference_is_the_initialisation_frame(run):
    """Counting frame 0 as vot-toolkit does, cract-eval's functions reproduce vot's numbers to
    rasterisation; the gap closed is the whole difference above."""
    arrays = []
    for n, r in run["lt_runs"].items():
        if n not in run["spliced"]:
            continue
        seq = run["seqs"][n]
        present = metrics.valid_frames(seq.groundtruth, seq.absent)
        iou = np.nan_to_num(metrics.frame_iou(r.boxes, seq.groundtruth), nan=0.0)
        iou[~present] = 0.0
        conf = absence.lt_confidences(r.confidences, np.array([s == "TRACKING" for s in r.states]),
                                      metrics.valid_boxes(r.boxes))
        iou[0], conf[0] = 0.0, 0.0  # vot: the initialisation marker overlaps nothing, confidence 0
        arrays.append((iou, conf, present))
    f, p, rec, _ = longterm.best_f(longterm.longterm_pr_curves(arrays))
    vot = run["lt"]
    assert (p, rec, f) == pytest.approx((vot["precision"], vot["recall"], vot["f"]), abs=1e-3)
    ours = _cract_eval_lt(run)
    assert ours["lt_recall"] > vot["recall"]  # one visible frame fewer in each denominator

    # The overlap: vot leaves frame 0 out (burn-in 1) and weights each sequence's mean by its length,
    # absent frames included; cract-eval pools the frames that have a box.  On the spliced runs the
    # weights part (absent frames weigh in vot, not in the pool), so all four sequences differ by
    # more than the tolerance, and vot's rule applied to cract-eval's overlaps gives vot's number.
    per, lengths = [], []
    for n, r in run["st_runs"].items():
        seq = run["seqs"][n]
        per.append(metrics.score_sequence(r.boxes, seq.groundtruth, seq.absent, skip_first=True, bound=seq.image_size()).ao)
        assert per[-1] == pytest.approx(run["per_sequence"][n], abs=1e-3), n
        lengths.append(len(seq))
    assert np.average(per, weights=lengths) == pytest.approx(run["ao"], abs=1e-3)


def test_cract_trax_reports_what_cract_evals_tracker_adapter_returns(run):
    """The predictions vot-toolkit scored are cract-eval's: the in-process adapter on the frames of
    a spliced run (donor frames resized, as the workspace holds them) gives the same boxes."""
    import cv2

    from cract_core.eval import trackers as trk

    cv2.setNumThreads(1)  # as cract-trax ran it (--threads 1): the same arithmetic, the same boxes
    name = run["spliced"][0]
    seq, got = run["seqs"][name], run["lt_runs"][name]
    tracker = trk.create("nanotrack", nanotrack_backbone=str(require_shared_model("nanotrack_v2/nanotrack_backbone_sim_v2.onnx")),
                         nanotrack_neckhead=str(require_shared_model("nanotrack_v2/nanotrack_head_sim_v2.onnx")))
    tracker.init(seq.image(0), seq.init_box)
    for i in range(1, len(seq)):
        box, conf = trk.split_result(tracker.update(seq.image(i)))
        assert np.allclose(got.boxes[i], box, atol=1e-3), i
        assert got.confidences[i] == pytest.approx(conf, abs=1e-5), i
