"""Result files in the formats the benchmark servers and toolkits take.

* GOT-10k (server, test split): ``got10k/<tracker>/<seq>/<seq>_001.txt`` (one ``x,y,w,h`` line a
  frame, the first frame's box included, 3 decimals, as the got10k toolkit writes it) and
  ``<seq>_time.txt`` (seconds a frame, init time for frame 0), plus ``got10k/<tracker>.zip``
  holding the sequence folders at its top level: the archive the server accepts.
* TrackingNet (server): ``trackingnet/<tracker>/<seq>.txt`` (comma separated ``x,y,w,h``) and
  ``trackingnet/<tracker>.zip`` with the files at its top level.
* LaSOT (its MATLAB/Python toolkits): ``lasot/<tracker>/<seq>.txt`` comma separated ``x,y,w,h``.
* VOT (reset protocol, the toolkit's "baseline" experiment): ``vot/<tracker>/baseline/<seq>/<seq>_001.txt``
  with ``1`` on initialisation frames, ``2`` on failures, ``0`` on skipped frames and the box otherwise.

Times written while several sequences ran at once (``--jobs`` > 1) are not real speeds; the server
only uses them for its fps column.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cract_core.eval import metrics
from cract_core.eval.runner import RunResult

FORMATS = ("got10k", "trackingnet", "lasot", "vot")


def _lines(boxes: np.ndarray, fmt: str = "{:.3f}") -> str:
    rows = []
    for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        rows.append(",".join("nan" if not np.isfinite(v) else fmt.format(v) for v in b))
    return "\n".join(rows) + "\n"


def _times_s(r: RunResult) -> np.ndarray:
    init = r.init_ms[0] if r.init_ms else float("nan")
    return np.concatenate([[init], r.latencies_ms]) / 1000.0


def write_got10k(out: Path, results: list[RunResult]) -> list[Path]:
    root = Path(out) / "got10k"
    written = []
    for tracker in dict.fromkeys(r.tracker for r in results):
        tdir = root / tracker
        for r in (r for r in results if r.tracker == tracker and not r.error):
            sdir = tdir / r.sequence
            sdir.mkdir(parents=True, exist_ok=True)
            (sdir / f"{r.sequence}_001.txt").write_text(_lines(r.boxes))
            t = _times_s(r)
            (sdir / f"{r.sequence}_time.txt").write_text("".join(f"{v:.8f}\n" for v in t))
        if tdir.is_dir():
            written.append(Path(shutil.make_archive(str(root / tracker), "zip", root_dir=tdir)))
    return written


def write_trackingnet(out: Path, results: list[RunResult]) -> list[Path]:
    root = Path(out) / "trackingnet"
    written = []
    for tracker in dict.fromkeys(r.tracker for r in results):
        tdir = root / tracker
        tdir.mkdir(parents=True, exist_ok=True)
        for r in (r for r in results if r.tracker == tracker and not r.error):
            (tdir / f"{r.sequence}.txt").write_text(_lines(r.boxes, "{:.4f}"))
        written.append(Path(shutil.make_archive(str(root / tracker), "zip", root_dir=tdir)))
    return written


def write_lasot(out: Path, results: list[RunResult]) -> list[Path]:
    root = Path(out) / "lasot"
    written = []
    for r in results:
        if r.error:
            continue
        p = root / r.tracker / f"{r.sequence}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(_lines(r.boxes, "{:.4f}"))
        written.append(p)
    return written


def write_vot(out: Path, results: list[RunResult]) -> list[Path]:
    root = Path(out) / "vot"
    written = []
    for r in results:
        if r.error or r.codes is None:
            continue
        rows = []
        for box, code in zip(r.boxes, r.codes):
            if code == metrics.VOT_TRACKED:
                rows.append(",".join(f"{v:.4f}" for v in box))
            else:
                rows.append(str(int(code)))
        p = root / r.tracker / "baseline" / r.sequence / f"{r.sequence}_001.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(rows) + "\n")
        written.append(p)
    return written


WRITERS = {"got10k": write_got10k, "trackingnet": write_trackingnet, "lasot": write_lasot, "vot": write_vot}


def write_submission(out: Path, benchmark: str, results: list[RunResult]) -> list[Path]:
    """Write ``results`` under ``out/<benchmark>/`` in that benchmark's format (others: nothing)."""
    writer = WRITERS.get(benchmark)
    return writer(Path(out), results) if writer else []
