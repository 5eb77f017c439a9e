"""Reading a vot-toolkit workspace back: a tracker's trajectories as cract-eval arrays, and the analysis numbers.

    runs = read_trajectories("runs/vot_ws", "cract", "longterm")   # {sequence: VotRun}
    numbers = analysis_numbers("runs/vot_ws/analysis/NAME.json", "cract")

vot-toolkit 0.9 stores results as binary trajectories plus one ``<name>_<property>.value`` file per
reported property; its own reader (``vot.tracker.Trajectory``) is used here, so nothing depends on
the file format.  Frame 0 holds the initialisation marker, not a box: it comes back as the
ground-truth box cract-eval's runner writes there, with a NaN confidence and state ``INIT``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

PathLike = Union[str, Path]


@dataclass
class VotRun:
    """One sequence's run as cract-eval's runner records it: (N, 4) xywh (NaN: no box), confidences, states."""

    boxes: np.ndarray
    confidences: np.ndarray
    states: list[str]


def _box(region) -> np.ndarray:
    from vot.region.shapes import Rectangle

    if isinstance(region, Rectangle):
        return np.array([region.x, region.y, region.width, region.height], dtype=np.float64)
    return np.full(4, np.nan)  # special (empty, unknown, initialisation) regions: no box


def _number(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def read_trajectories(workspace: PathLike, tracker: str, experiment: str) -> dict[str, VotRun]:
    """Every sequence's first repetition of ``tracker`` in ``experiment`` (sequences without results are left out)."""
    from vot.workspace import Workspace

    ws = Workspace.load(str(workspace))
    trk = ws.registry[tracker]
    exp = ws.stack.experiments[experiment]
    out: dict[str, VotRun] = {}
    for seq in ws.dataset:
        trajectories = exp.gather(trk, seq)
        if not trajectories:
            continue
        traj = trajectories[0]
        n = len(traj)
        boxes = np.stack([_box(traj.region(i)) for i in range(n)])
        props = [traj.properties(i) for i in range(n)]
        conf = np.array([_number(p.get("confidence")) for p in props])
        states = [str(p.get("state", "") or "") for p in props]
        gt0 = seq.groundtruth(0)
        boxes[0] = _box(gt0)
        conf[0], states[0] = math.nan, "INIT"
        out[seq.name] = VotRun(boxes, conf, states)
    return out


def analysis_numbers(path: PathLike, tracker: str) -> dict[str, Optional[float]]:
    """From ``vot analysis --format json``: the long-term experiment's precision, recall, F (``average_tpr``)
    and the short-term one's average overlap (``average_accuracy``), for the stack cract-vot writes."""
    from cract_core.vot.workspace import LONGTERM, SHORTTERM

    doc = json.loads(Path(path).read_text())
    trackers = list(doc["trackers"])
    if tracker not in trackers:
        raise KeyError(f"{path}: no tracker {tracker!r} (has {', '.join(trackers)})")
    k = trackers.index(tracker)
    out: dict[str, Optional[float]] = {"precision": None, "recall": None, "f": None, "average_overlap": None}
    lt = doc["results"].get(LONGTERM)
    if lt:
        # analyses in stack order: average_tpr first, a grid of (precision, recall, F) per tracker
        pr, re, f = lt["results"][0][k]
        out.update(precision=pr, recall=re, f=f)
    st = doc["results"].get(SHORTTERM)
    if st:
        out["average_overlap"] = st["results"][0][k][0]
    return out


def sequence_overlaps(path: PathLike, tracker: str) -> dict[str, float]:
    """From ``vot analysis --format json``: each sequence's average overlap (the short-term
    experiment's ``accuracy`` analysis; its grid is written tracker by tracker, sequences in the
    document's order)."""
    from cract_core.vot.workspace import SHORTTERM

    doc = json.loads(Path(path).read_text())
    trackers, names = list(doc["trackers"]), list(doc["sequences"])
    cells = doc["results"][SHORTTERM]["results"][1]
    if len(cells) != len(trackers) * len(names):
        raise ValueError(f"{path}: {len(cells)} per-sequence results for {len(trackers)} tracker(s) x {len(names)} sequences")
    k = trackers.index(tracker)
    return {name: cells[k * len(names) + j][0] for j, name in enumerate(names)}


# ------------------------------------------------------------------ vot-toolkit beside cract-eval


def read_cract_eval_run(out: PathLike, tracker: str, sequence: str) -> VotRun:
    """cract-eval's written run (``OUT/<tracker>/<seq>.txt`` and ``.state.txt``, runner.py)."""
    folder = Path(out) / tracker
    boxes = np.loadtxt(folder / f"{sequence}.txt", delimiter=",", ndmin=2)
    conf, states = [], []
    for line in (folder / f"{sequence}.state.txt").read_text().splitlines():
        c, _, s = line.partition(",")
        conf.append(_number(c))
        states.append(s)
    return VotRun(boxes, np.asarray(conf), states)


def cract_eval_scores(seqs: dict, runs: dict[str, VotRun]) -> dict[str, float]:
    """cract-eval's figures of runs: VOT-LT precision / recall / F over frames 1.. (absence.py's recipe,
    longterm.py's measures) and the one-pass AO (frames with a box pooled, frame 0 included)."""
    from cract_core.eval import absence, longterm, metrics

    arrays, ious = [], []
    for name, run in runs.items():
        seq = seqs[name]
        present = metrics.valid_frames(seq.groundtruth, seq.absent)
        iou = np.nan_to_num(metrics.frame_iou(run.boxes, seq.groundtruth), nan=0.0)
        iou[~present] = 0.0
        tracking = np.array([s == "TRACKING" for s in run.states])
        conf = absence.lt_confidences(run.confidences, tracking, metrics.valid_boxes(run.boxes))
        arrays.append((iou[1:], conf[1:], present[1:]))
        ious.append(metrics.score_sequence(run.boxes, seq.groundtruth, seq.absent).ious)
    f, p, r, _ = longterm.best_f(longterm.longterm_pr_curves(arrays))
    return {"precision": p, "recall": r, "f": f, "average_overlap": metrics.got10k_scores(np.concatenate(ious))[0]}


def compare(workspace: PathLike, analysis: str, eval_out: PathLike, pairs: dict[str, str]) -> str:
    """A markdown table: vot-toolkit's numbers, cract-eval's scoring of the same trajectories, and
    cract-eval's own run (its summary's AUC and AO, and its written boxes scored for VOT-LT)."""
    from cract_core.datasets import load_sequences

    seqs = {s.name: s for s in load_sequences(Path(workspace) / "sequences", "vot")}
    summary = json.loads((Path(eval_out) / "summary.json").read_text())
    rows = ["| tracker | numbers from | LT precision | LT recall | LT F | average overlap | AUC |",
            "|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for vot_id, eval_name in pairs.items():
        vot = analysis_numbers(Path(workspace) / "analysis" / f"{analysis}.json", vot_id)
        traj = read_trajectories(workspace, vot_id, "longterm")
        ours = cract_eval_scores(seqs, traj)
        own_runs = {n: read_cract_eval_run(eval_out, eval_name, n) for n in traj}
        own = cract_eval_scores(seqs, own_runs)
        mean = summary["trackers"][eval_name]["mean"]
        gap = max(float(np.nanmax(np.abs(own_runs[n].boxes - traj[n].boxes))) for n in traj)
        for label, v, auc in (("vot-toolkit analysis", vot, None), ("cract-eval scoring vot's trajectories", ours, None),
                              (f"cract-eval's own run (boxes within {gap:.3f} px of vot's)", own, mean.get("auc"))):
            rows.append(f"| {vot_id} | {label} | {fmt(v['precision'])} | {fmt(v['recall'])} | {fmt(v['f'])} | "
                        f"{fmt(v['average_overlap'])} | {fmt(auc)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="vot-toolkit's numbers beside cract-eval's (docs/vot.md's table)")
    p.add_argument("--workspace", required=True)
    p.add_argument("--analysis", required=True, help="the name given to `vot analysis --name`")
    p.add_argument("--eval", required=True, help="cract-eval's --out of the same sequences")
    p.add_argument("--pairs", default="cract=cract,nanotrack_v2=nanotrack", help="vot id=cract-eval name, comma separated")
    a = p.parse_args()
    print(compare(a.workspace, a.analysis, a.eval, dict(x.split("=", 1) for x in a.pairs.split(","))))
