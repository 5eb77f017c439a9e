"""Run trackers over sequences (in parallel processes), time them, score them, write the results.

Outputs under ``OUT`` (cli.main writes them with the functions here):

* ``OUT/<tracker>/<sequence>.txt`` one line a frame, the first included: ``x,y,w,h`` in the
  benchmark's own coordinates (the first line is the ground-truth box the tracker was given;
  ``nan`` where a tracker had no box, e.g. the frames skipped after a VOT failure).
* ``OUT/<tracker>/<sequence>.state.txt`` one line a frame: ``confidence,STATE`` (``nan`` where
  the tracker gives no confidence; STATE is what it reported, ``INIT`` on initialisation frames,
  empty where it says nothing; trackers.py lists each tracker's states).
* ``OUT/summary.json`` (schema below), the plots (see plots.py), ``OUT/table.txt`` (the table the
  CLI prints) and ``OUT/submission/<benchmark>/`` (see submission.py).

summary.json, schema 1
----------------------
::

    {"schema": 1,
     "created": "2026-11-25T17:00:00+00:00", "benchmark": "folder", "sequences_dir": "...",
     "protocol": "ope" | "reset" | "absence",   # reset = VOT's re-initialisation protocol;
                                       # absence = sequences cut away and back (absence.py)
     "absence": {"k": null, "gap": 30, "scenes": 2, "refind_iou": 0.3,      # protocol absence only
                 "runs": {"<host>+cut_<donor>": {"host", "donor", "k", "gap", "return_index"}}},
     "convention": "exclude" | "otb_toolkit",   # metrics.py explains both
     "jobs": 1, "threads": 2, "max_frames": null,
     "speed_valid": true,              # speed figures only when sequences ran one at a time
     "trackers": {
       "<name>": {
         "mean": {"sequences": 4, "frames": 559, "evaluated_frames": 559,
                  "auc": ..., "prec20": ..., "norm_prec": ...,     # means over sequences
                  "ao": ..., "sr50": ..., "sr75": ...,             # frame-weighted (GOT-10k)
                  "fps": ..., "latency_ms_p50": ..., "latency_ms_p95": ..., "latency_ms_p99": ...,
                  "init_ms": ...,
                  # trackers that flag update frames (cract): "update_frames",
                  # "latency_ms_p50_update", "latency_ms_p95_update",
                  # "latency_ms_p50_no_update", "latency_ms_p95_no_update"
                  "success_curve": [21 floats], "precision_curve": [51 floats],
                  "norm_precision_curve": [51 floats],
                  # protocol "reset" only: "accuracy", "robustness", "failures", "eao", "eao_interval"
                  # protocol "absence" only (absence.summarize_runs): "runs", "absent_frames",
                  # "present_frames", "absent_not_tracking", "present_tracking",
                  # "refind_frames_median", "never_refound", "lt_f", "lt_precision", "lt_recall",
                  # "lt_threshold", "auc_present", "lt_curve": {"precision", "recall", "thresholds"}
                 },
         "sequences": {"<seq>": {"auc", "prec20", "norm_prec", "ao", "sr50", "sr75",
                                 "frames", "evaluated_frames",
                                 "fps", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "init_ms"
                                 (+ the update-frame fields above for cract,
                                  + "accuracy", "failures", "robustness" for "reset",
                                  + absence.AbsenceRun.as_dict()'s fields for "absence")}},
         "errors": {"<seq>": "message"}          # sequences where the tracker raised
       }}}

Any metric that cannot be computed (no scorable frame, a test split without ground truth) is
``null``; with ``"speed_valid": false`` every speed field is ``null``.  Speed: ``latency_ms_*``
are the per-frame ``update()`` times (median and 95th percentile, image decoding excluded),
``fps`` is update frames per second of update time, ``init_ms`` the initialisation time apart
(the mean over initialisations under the reset protocol).  In "mean", fps and the latency
percentiles pool every frame of every sequence and init_ms is the mean over sequences.
"""
from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import json
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import cv2
import numpy as np

from cract_core.eval import absence, metrics
from cract_core.eval import trackers as trk
from cract_core.datasets import Sequence

SCHEMA_VERSION = 1
SPEED_KEYS = ("fps", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "init_ms")


@dataclass
class RunResult:
    """What one tracker did on one sequence."""

    tracker: str
    sequence: str
    boxes: np.ndarray  # (N, 4) xywh, row 0 = the init box
    confidences: np.ndarray  # (N,), NaN where none
    latencies_ms: np.ndarray  # update() times of the tracked frames
    init_ms: list[float] = field(default_factory=list)  # one per initialisation
    codes: Optional[np.ndarray] = None  # VOT reset protocol: metrics.VOT_* per frame
    error: Optional[str] = None
    # Per latency: did that frame start a model update (None when the tracker does not say).
    updated: Optional[np.ndarray] = None
    # Per frame: the state the tracker reported (trackers.py: last_state), "INIT" where it was
    # initialised, "" where it said nothing or was not run.
    states: Optional[list[str]] = None


@dataclass
class Task:
    tracker: str
    options: dict
    sequence: Sequence
    protocol: str = "ope"
    threads: int = 1

    @property
    def result_name(self) -> str:
        return trk.result_name(self.tracker, self.options)


def _set_threads(threads: int) -> None:
    """Limit intra-op threads so parallel sequences do not oversubscribe the cores."""
    cv2.setNumThreads(threads)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)


def _timed(fn, *args) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1000.0


def run_sequence(task: Task, on_frame: Optional[Callable[[], None]] = None) -> RunResult:
    """Run one tracker over one sequence: one-pass ("ope") or VOT's reset protocol ("reset").

    ``on_frame`` is called after every frame (the in-process progress bar)."""
    tick = on_frame or (lambda: None)
    seq = task.sequence
    n = len(seq)
    name = task.result_name
    boxes = np.full((n, 4), np.nan)
    conf = np.full(n, np.nan)
    lat: list[float] = []
    upd: list[bool] = []
    inits: list[float] = []
    states = [""] * n
    codes = np.full(n, metrics.VOT_SKIPPED, dtype=np.int64) if task.protocol == "reset" else None
    tracker = None
    try:
        _set_threads(task.threads)
        tracker = trk.create(task.tracker, **task.options)
        if task.protocol in ("ope", "absence"):  # absence: one pass over a spliced sequence
            box0 = seq.init_box
            _, ms = _timed(tracker.init, seq.image(0), box0)
            inits.append(ms)
            boxes[0] = box0
            states[0] = "INIT"
            tick()
            for i in range(1, n):
                img = seq.image(i)  # decoding is not the tracker's time
                out, ms = _timed(tracker.update, img)
                boxes[i], c = trk.split_result(out)
                conf[i] = np.nan if c is None else c
                states[i] = str(getattr(tracker, "last_state", ""))
                lat.append(ms)
                upd.append(bool(getattr(tracker, "last_updated", False)))
                tick()
        elif task.protocol == "reset":
            gt_ok = metrics.valid_boxes(seq.groundtruth)
            i = 0
            while i < n:
                if not gt_ok[i]:
                    i += 1  # initialise only on a frame with a known box
                    continue
                _, ms = _timed(tracker.init, seq.image(i), seq.groundtruth[i])
                inits.append(ms)
                boxes[i], codes[i] = seq.groundtruth[i], metrics.VOT_INIT
                states[i] = "INIT"
                j = i + 1
                next_init = n
                while j < n:
                    img = seq.image(j)
                    out, ms = _timed(tracker.update, img)
                    lat.append(ms)
                    upd.append(bool(getattr(tracker, "last_updated", False)))
                    boxes[j], c = trk.split_result(out)
                    conf[j] = np.nan if c is None else c
                    states[j] = str(getattr(tracker, "last_state", ""))
                    # Overlap within the image bounds, the same overlap the scores use.
                    bound = (img.shape[1], img.shape[0])
                    if gt_ok[j] and metrics.frame_iou(boxes[j], seq.groundtruth[j], bound)[0] <= 0.0:
                        codes[j] = metrics.VOT_FAILURE
                        next_init = j + metrics.VOT_SKIP_FRAMES
                        break
                    codes[j] = metrics.VOT_TRACKED
                    j += 1
                i = next_init
        else:
            raise ValueError(f"unknown protocol {task.protocol!r}")
        error = None
    except Exception as exc:  # one sequence's failure must not lose the others' results
        error = f"{type(exc).__name__}: {exc}"
        if os.environ.get("CRACT_EVAL_TRACEBACK"):
            error += "\n" + traceback.format_exc()
    finally:
        close = getattr(tracker, "close", None)
        if callable(close):
            close()
    has_flags = tracker is not None and hasattr(tracker, "last_updated")
    return RunResult(name, seq.name, boxes, conf, np.asarray(lat, dtype=np.float64), inits, codes, error,
                     np.asarray(upd, dtype=bool) if has_flags else None, states)


def run_all(tasks: list[Task], jobs: int = 1, progress: bool = True) -> list[RunResult]:
    """Run every task; ``jobs > 1`` runs sequences in that many spawned processes."""
    from tqdm import tqdm

    results: list[RunResult] = []
    # Counted in frames, so one long sequence (LaSOT has thousands) still shows progress.
    total = sum(len(t.sequence) for t in tasks)
    bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    try:
        if jobs <= 1:
            for t in tasks:
                bar.set_postfix_str(f"{t.result_name}/{t.sequence.name}")
                before = bar.n
                results.append(run_sequence(t, on_frame=lambda: bar.update(1)))
                bar.update(len(t.sequence) - (bar.n - before))  # frames a failure or reset skipped
        else:
            # spawn, not fork: torch and OpenCV keep thread pools that a fork would copy half-alive.
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                futures = {pool.submit(run_sequence, t): t for t in tasks}
                for fut in cf.as_completed(futures):
                    t = futures[fut]
                    try:
                        results.append(fut.result())
                    except Exception as exc:  # a crashed worker process
                        n = len(t.sequence)
                        results.append(
                            RunResult(t.result_name, t.sequence.name, np.full((n, 4), np.nan), np.full(n, np.nan),
                                      np.zeros(0), [], None, f"{type(exc).__name__}: {exc}")
                        )
                    bar.set_postfix_str(f"{t.result_name}/{t.sequence.name}")
                    bar.update(len(t.sequence))
    finally:
        bar.close()
    order = {(t.result_name, t.sequence.name): k for k, t in enumerate(tasks)}
    results.sort(key=lambda r: order.get((r.tracker, r.sequence), 0))
    return results


# ---------------------------------------------------------------------------------- scoring


def _f(x: Any) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def speed_fields(latencies_ms: np.ndarray, init_ms: list[float], updated: Optional[np.ndarray] = None) -> dict:
    """fps, latency percentiles, init time; with update flags also the two kinds of frame apart."""
    lat = np.asarray(latencies_ms, dtype=np.float64)

    def pct(x: np.ndarray, q: float) -> Optional[float]:
        return _f(np.percentile(x, q)) if len(x) else None

    out = {
        "fps": _f(1000.0 * len(lat) / lat.sum()) if len(lat) and lat.sum() > 0 else None,
        "latency_ms_p50": pct(lat, 50),
        "latency_ms_p95": pct(lat, 95),
        "latency_ms_p99": pct(lat, 99),
        "init_ms": _f(np.mean(init_ms)) if init_ms else None,
    }
    if updated is not None and len(updated) == len(lat):
        upd = np.asarray(updated, dtype=bool)
        out.update({
            "update_frames": int(upd.sum()),
            "latency_ms_p50_update": pct(lat[upd], 50),
            "latency_ms_p95_update": pct(lat[upd], 95),
            "latency_ms_p50_no_update": pct(lat[~upd], 50),
            "latency_ms_p95_no_update": pct(lat[~upd], 95),
        })
    return out


def summarize(
    results: list[RunResult],
    sequences: list[Sequence],
    *,
    jobs: int,
    threads: int,
    benchmark: str,
    sequences_dir: str,
    protocol: str = "ope",
    convention: metrics.Convention = "exclude",
    max_frames: Optional[int] = None,
    eao_interval: tuple[int, int] = metrics.VOT2018_EAO_INTERVAL,
) -> dict:
    """The summary.json dictionary (schema documented in this module's docstring)."""
    by_name = {s.name: s for s in sequences}
    speed_valid = jobs == 1
    # GOT-10k's own rule skips the initialisation frame; the OTB family scores it.
    skip_first = benchmark == "got10k"
    out: dict = {
        "schema": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "benchmark": benchmark,
        "sequences_dir": sequences_dir,
        "protocol": protocol,
        "convention": convention,
        "jobs": jobs,
        "threads": threads,
        "max_frames": max_frames,
        "speed_valid": speed_valid,
        "trackers": {},
    }
    names = list(dict.fromkeys(r.tracker for r in results))
    for name in names:
        rs = [r for r in results if r.tracker == name]
        seq_out: dict = {}
        errors: dict = {}
        scores: list[metrics.SequenceScores] = []
        all_lat, all_init, all_upd = [], [], []
        vot_runs, vot_acc_ov, vot_fail, vot_frames = [], [], 0, 0
        absence_runs: list[absence.AbsenceRun] = []
        for r in rs:
            seq = by_name[r.sequence]
            if r.error:
                errors[r.sequence] = r.error
                continue
            entry: dict = {}
            # GOT-10k and VOT cut boxes to the image before the overlap; the OTB family does not.
            bound = seq.image_size() if (benchmark == "got10k" or protocol == "reset") else None
            if protocol == "reset":
                ov = metrics.vot_overlaps(r.boxes, seq.groundtruth, r.codes, bound)
                acc, _ = metrics.vot_accuracy(ov, r.codes)
                fails = metrics.vot_failures(r.codes)
                mask = r.codes == metrics.VOT_TRACKED
                for i in np.flatnonzero(r.codes == metrics.VOT_INIT):
                    mask[i : i + metrics.VOT_BURNIN] = False
                vot_acc_ov.append(ov[mask & np.isfinite(ov)])
                vot_runs.append((ov, r.codes))
                vot_fail += fails
                vot_frames += len(seq)
                entry.update({k: None for k in ("auc", "prec20", "norm_prec", "ao", "sr50", "sr75")})
                entry.update({"frames": len(seq), "evaluated_frames": int(metrics.valid_boxes(seq.groundtruth).sum()),
                              "accuracy": _f(acc), "failures": fails,
                              "robustness": _f(metrics.vot_robustness(fails, len(seq)))})
            elif seq.has_groundtruth:
                sc = metrics.score_sequence(r.boxes, seq.groundtruth, seq.absent, convention, skip_first, bound)
                scores.append(sc)
                entry.update(sc.as_dict())
            else:
                entry.update({k: None for k in ("auc", "prec20", "norm_prec", "ao", "sr50", "sr75")})
                entry.update({"frames": len(seq), "evaluated_frames": 0})
            if protocol == "absence" and isinstance(seq, absence.SplicedSequence) and r.states is not None:
                run = absence.score_absence_run(r.boxes, r.confidences, r.states, seq)
                absence_runs.append(run)
                entry.update(run.as_dict())
            sp = speed_fields(r.latencies_ms, r.init_ms, r.updated)
            entry.update(sp if speed_valid else {k: None for k in sp})
            all_lat.append(r.latencies_ms)
            all_upd.append(r.updated)
            if r.init_ms:
                all_init.append(float(np.mean(r.init_ms)))
            seq_out[r.sequence] = entry

        mean: dict = {"sequences": len(seq_out), "frames": int(sum(e["frames"] for e in seq_out.values())),
                      "evaluated_frames": int(sum(e["evaluated_frames"] for e in seq_out.values()))}
        scored = [s for s in scores if s.evaluated_frames > 0]
        for key in ("auc", "prec20", "norm_prec"):
            mean[key] = _f(np.mean([getattr(s, key) for s in scored])) if scored else None
        ao, sr50, sr75 = metrics.got10k_scores(np.concatenate([s.ious for s in scored]) if scored else np.zeros(0))
        mean.update({"ao": _f(ao), "sr50": _f(sr50), "sr75": _f(sr75)})
        if speed_valid and all_lat:
            flags = None if any(u is None for u in all_upd) else np.concatenate(all_upd)
            sp = speed_fields(np.concatenate(all_lat), [], flags)
            sp["init_ms"] = _f(np.mean(all_init)) if all_init else None
            mean.update(sp)
        else:
            mean.update({k: None for k in SPEED_KEYS})
        if scored:
            mean["success_curve"] = np.mean([s.success_curve for s in scored], axis=0).round(6).tolist()
            mean["precision_curve"] = np.mean([s.precision_curve for s in scored], axis=0).round(6).tolist()
            mean["norm_precision_curve"] = np.mean([s.norm_precision_curve for s in scored], axis=0).round(6).tolist()
        if protocol == "reset":
            pooled = np.concatenate(vot_acc_ov) if vot_acc_ov else np.zeros(0)
            curve = metrics.expected_overlap_curve(vot_runs)
            mean.update({
                "accuracy": _f(pooled.mean()) if pooled.size else None,
                "failures": vot_fail,
                "robustness": _f(metrics.vot_robustness(vot_fail, vot_frames)),
                "eao": _f(metrics.eao(curve, eao_interval)) if curve.size else None,
                "eao_interval": list(eao_interval),
            })
        if protocol == "absence":
            mean.update(absence.summarize_runs(absence_runs))
        out["trackers"][name] = {"mean": mean, "sequences": seq_out, "errors": errors}
    return out


# ----------------------------------------------------------------------------------- writing


def format_number(v: float) -> str:
    """Integers stay integers ('82'), others get 3 decimals at most ('82.125'); NaN is 'nan'."""
    v = float(v)
    if not np.isfinite(v):
        return "nan"
    if v == int(v):
        return str(int(v))
    return f"{v:.3f}".rstrip("0").rstrip(".")


def write_boxes(path: Path, boxes: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for b in np.asarray(boxes).reshape(-1, 4):
            fh.write(",".join(format_number(v) for v in b) + "\n")


def write_states(path: Path, confidences: np.ndarray, states: list[str]) -> None:
    """One ``confidence,STATE`` line a frame (the per-frame record the absence protocol scores)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for c, st in zip(np.asarray(confidences, dtype=np.float64).reshape(-1), states):
            # 6 significant digits, not the boxes' 3 decimals: LT thresholds are quantiles of these.
            fh.write(f"{'nan' if not np.isfinite(c) else format(c, '.6g')},{st}\n")


def write_results(out: Path, results: list[RunResult]) -> None:
    for r in results:
        write_boxes(Path(out) / r.tracker / f"{r.sequence}.txt", r.boxes)
        if r.states is not None:
            write_states(Path(out) / r.tracker / f"{r.sequence}.state.txt", r.confidences, r.states)


def write_summary(out: Path, summary: dict) -> Path:
    path = Path(out) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path


def read_summary(path: Path) -> dict:
    """Load a summary.json written by this module; another schema version is an error, not a guess."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"{path}: summary schema {data.get('schema') if isinstance(data, dict) else None!r}, "
                         f"this cract reads schema {SCHEMA_VERSION}")
    return data


def _cell(v: Any, fmt: str) -> str:
    if v is None:
        width = fmt.split(".")[0]
        return "-".rjust(int(width) if width.isdigit() else 0)  # keep the columns aligned
    return format(v, fmt)


def format_table(summary: dict) -> str:
    """The terminal table: one row per tracker (means), then AUC per sequence and tracker."""
    reset = summary.get("protocol") == "reset"
    lines = []
    nw = max([28] + [len(n) for n in summary["trackers"]])  # long cract variant names stay aligned
    if reset:
        head = f"{'tracker':<{nw}} {'seqs':>4} {'frames':>6} {'EAO':>6} {'A':>6} {'R':>6} {'fails':>5} {'fps':>7} {'p50 ms':>7} {'p95 ms':>7} {'init ms':>7}"
    else:
        head = f"{'tracker':<{nw}} {'seqs':>4} {'frames':>6} {'AUC':>6} {'P@20':>6} {'NormP':>6} {'AO':>6} {'fps':>7} {'p50 ms':>7} {'p95 ms':>7} {'init ms':>7}"
    lines += [head, "-" * len(head)]
    for name, t in summary["trackers"].items():
        m = t["mean"]
        if reset:
            mid = f"{_cell(m.get('eao'), '6.3f')} {_cell(m.get('accuracy'), '6.3f')} {_cell(m.get('robustness'), '6.3f')} {m.get('failures', 0):>5}"
        else:
            mid = f"{_cell(m['auc'], '6.3f')} {_cell(m['prec20'], '6.3f')} {_cell(m['norm_prec'], '6.3f')} {_cell(m['ao'], '6.3f')}"
        lines.append(
            f"{name:<{nw}} {m['sequences']:>4} {m['frames']:>6} {mid} {_cell(m['fps'], '7.1f')} "
            f"{_cell(m['latency_ms_p50'], '7.2f')} {_cell(m['latency_ms_p95'], '7.2f')} {_cell(m['init_ms'], '7.2f')}"
        )
    if not summary.get("speed_valid"):
        lines.append(f"(speed not measured: {summary['jobs']} sequences ran at once; use --jobs 1 for speed figures)")
    names = list(summary["trackers"])
    seqs = list(dict.fromkeys(s for t in summary["trackers"].values() for s in t["sequences"]))
    if seqs and not reset:
        lines.append("")
        key = "auc"
        widths = [max(15, len(n)) for n in names]
        lines.append(f"{'AUC / P@20 per sequence':<24} " + " ".join(f"{n:>{w}}" for n, w in zip(names, widths)))
        for s in seqs:
            cells = []
            for n, w in zip(names, widths):
                e = summary["trackers"][n]["sequences"].get(s)
                cells.append(f"{'error' if e is None else _cell(e[key], '.3f') + ' / ' + _cell(e['prec20'], '.3f'):>{w}}")
            lines.append(f"{s:<24} " + " ".join(cells))
    if summary.get("protocol") == "absence":
        lines += ["", absence.format_table(summary)]
    for n, t in summary["trackers"].items():
        for s, msg in t.get("errors", {}).items():
            lines.append(f"ERROR {n} on {s}: {msg.splitlines()[0]}")
    return "\n".join(lines)


def make_tasks(
    tracker_specs: Iterable[str], options: dict, sequences: list[Sequence], protocol: str, threads: int,
    max_frames: Optional[int] = None,
) -> list[Task]:
    """Every (tracker, sequence) pair.  Specs are names or cract variants (trackers.parse_tracker_spec);
    ablations apply to cract only; two entries with one result name are an error."""
    tasks = []
    seen: dict[str, str] = {}
    for spec in tracker_specs:
        name, opts = trk.parse_tracker_spec(spec, options)
        label = trk.result_name(name, opts)
        if label in seen:
            raise ValueError(f"trackers {seen[label]!r} and {spec!r} would both write to {label}/; add +name=... to one")
        seen[label] = spec
        for seq in sequences:
            tasks.append(Task(name, opts, seq.head(max_frames), protocol, threads))
    return tasks
