"""Does the tracker's result depend on torch's thread count?  The same tracker on the same frames at
1 and at 2 intra-op threads (two cract-eval runs, --jobs 1), per validation sequence: AUC at each,
and the first frame where the two runs' boxes part (more than 0.5 px), with how far apart they are
at the end.

    .venv/bin/python benchmarks/bench_threads.py                       # the shipped default
    .venv/bin/python benchmarks/bench_threads.py --trackers "cract:config=config/model/cract_nanotrack_cascade.yaml+name=cascade"

Different thread counts sum convolutions in a different order, so features differ by float
rounding (~1e-6 relative).  A tracker should shrug that off; when a whole sequence flips, some
decision amplified a rounding-sized difference, and this script says on which frame to look.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cract_core.eval import cli  # noqa: E402


def read_boxes(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", ndmin=2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", default="@validation")
    p.add_argument("--trackers", default="cract")
    p.add_argument("--out", default=str(ROOT / "runs" / "eval_threads"))
    args, extra = p.parse_known_args()
    out = Path(args.out)
    summaries = {}
    for threads in (1, 2):
        folder = out / f"threads{threads}"
        rc = cli.main(["--sequences", args.sequences, "--trackers", args.trackers, "--jobs", "1", "--threads", str(threads),
                       "--out", str(folder), "--no-progress"] + extra)
        if rc != 0:
            return rc
        summaries[threads] = json.loads((folder / "summary.json").read_text())
    for name, t1 in summaries[1]["trackers"].items():
        t2 = summaries[2]["trackers"][name]
        print(f"\n{name}: mean AUC {t1['mean']['auc']:.3f} (1 thread) / {t2['mean']['auc']:.3f} (2 threads)")
        print(f"{'sequence':<22} {'AUC 1t':>7} {'AUC 2t':>7} {'first frame apart':>18} {'apart at end px':>16}")
        for seq, r1 in t1["sequences"].items():
            a = read_boxes(out / "threads1" / name / f"{seq}.txt")
            b = read_boxes(out / "threads2" / name / f"{seq}.txt")
            diff = np.abs(a - b).max(axis=1)
            apart = np.flatnonzero(diff > 0.5)
            first = str(int(apart[0])) if len(apart) else "-"
            end = np.hypot(*(a[-1, :2] + a[-1, 2:] / 2 - b[-1, :2] - b[-1, 2:] / 2))
            print(f"{seq:<22} {r1['auc']:>7.3f} {t2['sequences'][seq]['auc']:>7.3f} {first:>18} {end:>16.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
