"""cract-eval: run trackers over benchmark sequences, score them, write results, plots and a table.

    cract-eval --sequences ../shared/data/sequences --only otb_bird2,otb_woman \
               --trackers cract,csrt,kcf --jobs 1 --out runs/eval
    cract-eval --sequences @validation --trackers cract,csrt --out runs/eval_validation
    python -m cract_core.eval.cli --help

``--protocol absence`` cuts every sequence away to another scene of the set for --absence-gap
frames after its first --absence-k frames and back (cract_core/eval/absence.py), and adds the
absence figures, VOT-LT precision / recall / F and a precision-recall plot.

``--sequences @validation`` (also @validation4, @train, @all) runs one of the project's splits
(cract_core/datasets/splits.py); its extra sequences are read from --extra-data, else
$CRACT_EXTRA_DATA, else data/extra under the project root.

Exit status: 0 when every tracker ran on every sequence, 1 when some sequence raised (its error
is in the table and summary.json), 2 for a bad command line, a missing folder, an unknown tracker
or a folder that is not in the benchmark's layout.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence as Seq

from cract_core import datasets
from cract_core.eval import absence, metrics, plots, runner, submission
from cract_core.eval import trackers as trk


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cract-eval",
        description="Evaluate trackers (cract and OpenCV baselines) on benchmark sequences.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--sequences", required=True,
                   help=f"benchmark root, a folder of sequences, or a split: {', '.join('@' + s for s in datasets.SPLITS)}")
    p.add_argument("--extra-data", type=Path, default=None,
                   help=f"the assembled extra sequences of a split (default: ${datasets.ENV_EXTRA_DATA}, else data/extra "
                        "under the project root)")
    p.add_argument("--benchmark", choices=datasets.BENCHMARKS, default=None,
                   help="layout of --sequences (default: detected from its files)")
    p.add_argument("--only", default=None, help="comma-separated sequence names to run")
    p.add_argument("--trackers", default="csrt",
                   help=f"comma-separated; known: {', '.join(sorted(trk.REGISTRY))}; cract variants side by side: "
                        "cract:refinement=parallel+pooling=single+checkpoint=PATH+name=LABEL")
    p.add_argument("--config", default=None, help="cract experiment YAML (default: the packaged default)")
    p.add_argument("--checkpoint", default=None, help="cract heads checkpoint (default: the config's)")
    p.add_argument("--device", default="auto", help="cract device: auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--ablation", action="append", default=[],
                   help="cract ablation (paper Tables 7-9), repeatable: refinement=cascade|parallel, "
                        "classifier=joint|identifier|discriminator, pooling=pyramid|single")
    p.add_argument("--nanotrack-backbone", default=None, help="NanoTrack backbone ONNX file")
    p.add_argument("--nanotrack-neckhead", default=None, help="NanoTrack neck-head ONNX file")
    p.add_argument("--vittrack-model", default=None, help="VitTrack ONNX file (cv2.TrackerVit)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="sequences run in parallel processes; speed is only reported with --jobs 1")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads per process (default: cores / jobs)")
    p.add_argument("--max-frames", type=int, default=None, help="run only the first N frames of each sequence")
    p.add_argument("--protocol", choices=("ope", "reset", "absence"), default=None,
                   help="one-pass, VOT's reset protocol, or one pass over sequences cut away to another scene "
                        "and back (absence; see cract_core/eval/absence.py) (default: reset for vot, ope otherwise)")
    p.add_argument("--absence-k", type=int, default=None,
                   help="absence protocol: host frames before the cut (default: a third of each sequence)")
    p.add_argument("--absence-gap", type=int, default=absence.DEFAULT_GAP,
                   help="absence protocol: frames of another sequence spliced in (the target absent)")
    p.add_argument("--absence-scenes", type=int, default=absence.DEFAULT_SCENES,
                   help="absence protocol: runs per sequence, each cut away to a different sequence")
    p.add_argument("--convention", choices=("exclude", "otb_toolkit"), default="exclude",
                   help="how absent frames and empty predictions are scored (see cract_core/eval/metrics.py)")
    p.add_argument("--eao-interval", default=f"{metrics.VOT2018_EAO_INTERVAL[0]},{metrics.VOT2018_EAO_INTERVAL[1]}",
                   help="EAO sequence-length interval LOW,HIGH (VOT2018: 100,356)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--title", default=None, help="title suffix for the plots (default: benchmark and sequence count)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _fail(msg: str) -> int:
    print(f"cract-eval: error: {msg}", file=sys.stderr)
    return 2


def main(argv: Optional[Seq[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    specs = [n.strip() for n in args.trackers.split(",") if n.strip()]
    if not specs:
        return _fail("--trackers names no tracker")
    names = [s.partition(":")[0].strip() for s in specs]
    try:
        trk.check_names(names)
        ablations = trk.parse_ablations(args.ablation)
    except ValueError as exc:
        return _fail(str(exc))
    if ablations and "cract" not in specs:
        return _fail("--ablation applies to the cract tracker; add cract to --trackers")
    if args.jobs < 1:
        return _fail(f"--jobs must be >= 1, got {args.jobs}")
    if args.max_frames is not None and args.max_frames < 2:
        return _fail(f"--max-frames must be >= 2 (the first frame only initialises), got {args.max_frames}")
    try:
        low, high = (int(v) for v in args.eao_interval.split(","))
    except ValueError:
        return _fail(f"--eao-interval must be LOW,HIGH, got {args.eao_interval!r}")

    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    if datasets.split_from_spec(args.sequences) is not None and args.benchmark not in (None, "folder"):
        return _fail(f"--sequences {args.sequences} is a split of folder sequences, not {args.benchmark}")
    try:
        seqs, benchmark = datasets.load_named_sequences(args.sequences, args.extra_data, args.benchmark, only)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    seqs = [s.head(args.max_frames) for s in seqs]
    protocol = args.protocol or ("reset" if benchmark == "vot" else "ope")
    if protocol == "absence":
        if args.absence_k is not None and args.absence_k < 1:
            return _fail(f"--absence-k must be >= 1, got {args.absence_k}")
        try:
            # --max-frames cut the hosts above; the spliced runs are longer by the gap.
            seqs = absence.absence_runs(seqs, args.absence_k, args.absence_gap, args.absence_scenes)
        except ValueError as exc:
            return _fail(str(exc))

    options = {
        "config": args.config,
        "checkpoint": args.checkpoint,
        "device": args.device,
        "ablations": ablations,
        "nanotrack_backbone": args.nanotrack_backbone,
        "nanotrack_neckhead": args.nanotrack_neckhead,
        "vittrack_model": args.vittrack_model,
    }
    try:
        tasks = runner.make_tasks(specs, options, seqs, protocol, 1)
    except ValueError as exc:
        return _fail(str(exc))
    # Build every tracker once here, so a missing model file or module is one clear error up
    # front rather than the same failure in every worker.
    for t in {t.result_name: t for t in tasks}.values():
        try:
            built = trk.create(t.tracker, **t.options)
        except Exception as exc:
            return _fail(f"cannot build tracker {t.result_name}: {exc}")
        close = getattr(built, "close", None)
        if callable(close):
            close()

    jobs = min(args.jobs, len(tasks))
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    for t in tasks:
        t.threads = threads
    print(f"cract-eval: {len(specs)} tracker(s) x {len(seqs)} {benchmark} sequence(s), protocol {protocol}, "
          f"jobs {jobs}, threads {threads}", file=sys.stderr)
    results = runner.run_all(tasks, jobs=jobs, progress=not args.no_progress)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    runner.write_results(out, results)
    summary = runner.summarize(
        results, seqs, jobs=jobs, threads=threads, benchmark=benchmark, sequences_dir=str(args.sequences),
        protocol=protocol, convention=args.convention, max_frames=args.max_frames, eao_interval=(low, high),
    )
    if protocol == "absence":
        summary["absence"] = {"k": args.absence_k, "gap": args.absence_gap, "scenes": args.absence_scenes,
                              "refind_iou": absence.REFIND_IOU, "runs": absence.describe_runs(seqs)}
        for s in seqs:  # the spliced ground truth (NaN rows where cut away): results can be re-scored
            runner.write_boxes(out / "groundtruth" / f"{s.name}.txt", s.groundtruth)
        plots.plot_longterm_pr(summary, out / "lt_precision_recall.png",
                               f"Long-term precision / recall: {args.title}" if args.title else None)
    runner.write_summary(out, summary)
    plots.plot_success(summary, out / "success.png", f"Success plot: {args.title}" if args.title else None)
    plots.plot_precision(summary, out / "precision.png", f"Precision plot: {args.title}" if args.title else None)
    submission.write_submission(out / "submission", "vot" if protocol == "reset" else benchmark, results)
    table = runner.format_table(summary)
    (out / "table.txt").write_text(table + "\n")
    print(table)
    print(f"results in {out}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
