"""Validation-split comparison: OpenCV baselines (and cract when asked) through cract-eval, --jobs 1.

    .venv/bin/python benchmarks/bench_baselines.py                 # csrt, kcf, mil
    .venv/bin/python benchmarks/bench_baselines.py --trackers cract,csrt,kcf,mil --docs

Runs the evaluation CLI on the validation split of ../shared/data/sequences (the README's four:
otb_bird2, otb_woman, uav_boat5, uav_person11) one sequence at a time, so the speed columns are
real, and prints the table.  --docs copies the table, summary.json and the two plots to docs/eval/
for the README.  Speed depends on what else the machine is doing: say so when quoting it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cract_core.eval import cli  # noqa: E402

VALIDATION = "otb_bird2,otb_woman,uav_boat5,uav_person11"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", default=str(ROOT.parent / "shared" / "data" / "sequences"))
    p.add_argument("--trackers", default="csrt,kcf,mil")
    p.add_argument("--out", default=str(ROOT / "runs" / "eval_val"))
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--docs", action="store_true", help="copy table, summary and plots to docs/eval/")
    args, extra = p.parse_known_args()
    argv = ["--sequences", args.sequences, "--only", VALIDATION, "--trackers", args.trackers,
            "--jobs", "1", "--out", args.out, "--title", "validation split (4 sequences)"]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.max_frames:
        argv += ["--max-frames", str(args.max_frames)]
    rc = cli.main(argv + extra)
    if rc == 0 and args.docs:
        docs = ROOT / "docs" / "eval"
        docs.mkdir(parents=True, exist_ok=True)
        for name in ("success.png", "precision.png", "table.txt", "summary.json"):
            shutil.copyfile(Path(args.out) / name, docs / f"validation_{name}")
        print(f"copied to {docs} (machine load when measured: {os.getloadavg()[0]:.1f})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
