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
