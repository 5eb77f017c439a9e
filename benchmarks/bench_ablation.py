"""Does each CRAC stage earn its place?  The stage ablation on the validation split, in one run with
the same frames: the proposal stage alone, + R, + R + I, + R + I + D, R + D (D without I), each
trained variant once per seed (heads checkpoint), beside the old Lite0 starter and the baselines.

    .venv/bin/python benchmarks/bench_ablation.py --checkpoint runs/nt_s0/final.pt --checkpoint runs/nt_s1/final.pt

Prints cract-eval's table, then the ablation table: mean AUC / P@20 over the split per variant,
with the mean and the spread (min-max) over seeds for the trained ones.  Everything runs through
one ``cract-eval --jobs 1`` call, so the speed columns are comparable too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_baselines import BASELINE_MODEL_FILES  # noqa: E402
from cract_core.eval import cli  # noqa: E402

# (label, crac settings, needs the trained R / I heads)
STAGES = [
    ("proposals alone", "refinement=none+classifier=none", False),
    ("proposals + D", "refinement=none+classifier=discriminator", False),
    ("+ R", "refinement=cascade+classifier=none", True),
    ("+ R + I", "refinement=cascade+classifier=identifier", True),
    ("+ R + I + D", "refinement=cascade+classifier=joint", True),
    ("R + D (D without I)", "refinement=cascade+classifier=discriminator", True),
]


def tracker_specs(config: str, checkpoints: list[str], baselines: list[str], lite0: bool,
                  extra_settings: str = "") -> tuple[list[str], dict]:
    """cract-eval --trackers entries and, per ablation label, the result names that belong to it."""
    specs, groups = [], {}
    for i, (label, settings, trained) in enumerate(STAGES):
        if extra_settings:
            settings += "+" + extra_settings
        for k, ckpt in enumerate(checkpoints if trained else [None]):
            name = f"stage{i}" + (f"_seed{k}" if trained else "")
            spec = f"cract:config={config}+{settings}+name={name}"
            if ckpt:
                spec += f"+checkpoint={ckpt}"
            specs.append(spec)
            groups.setdefault(label, []).append(name)
    if lite0:
        specs.append(f"cract:config={ROOT / 'config' / 'model' / 'cract_lite0.yaml'}+name=lite0_starter")
        groups["old Lite0 starter"] = ["lite0_starter"]
    for b in baselines:
        specs.append(b)
        groups[b] = [b]
    return specs, groups


def ablation_table(summary: dict, groups: dict) -> str:
    rows = ["| variant | seeds | AUC (mean, min-max) | P@20 | fps | p50 / p95 ms |", "|---|---|---|---|---|---|"]
    for label, names in groups.items():
        means = [summary["trackers"][n]["mean"] for n in names if n in summary["trackers"]]
        if not means:
            continue
        aucs = [m["auc"] for m in means]
        precs = [m["prec20"] for m in means]
        spread = f" ({min(aucs):.3f}-{max(aucs):.3f})" if len(aucs) > 1 else ""
        speed = means[0]
        fps = "" if speed["fps"] is None else f"{speed['fps']:.1f}"
        lat = "" if speed["latency_ms_p50"] is None else f"{speed['latency_ms_p50']:.1f} / {speed['latency_ms_p95']:.1f}"
        rows.append(f"| {label} | {len(aucs)} | {sum(aucs) / len(aucs):.3f}{spread} | {sum(precs) / len(precs):.3f} | {fps} | {lat} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "config" / "model" / "cract_nanotrack.yaml"))
    p.add_argument("--checkpoint", action="append", required=True, help="R + I heads, one per seed (repeat)")
    p.add_argument("--sequences", default="@validation")
    p.add_argument("--baselines", default="csrt,nanotrack,vittrack")
    p.add_argument("--no-lite0", action="store_true", help="leave the old Lite0 starter out")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--settings", default="", help="more cract settings for every variant, e.g. beta=0.5")
    p.add_argument("--out", default=str(ROOT / "runs" / "eval_ablation"))
    args, extra = p.parse_known_args()
    baselines = [b for b in args.baselines.split(",") if b]
    specs, groups = tracker_specs(args.config, args.checkpoint, baselines, not args.no_lite0, args.settings)
    argv = ["--sequences", args.sequences, "--trackers", ",".join(specs), "--jobs", "1", "--threads", str(args.threads),
            "--out", args.out, "--title", "stage ablation"]
    for flag, path in BASELINE_MODEL_FILES.items():
        argv += [flag, str(path)]
    rc = cli.main(argv + extra)
    summary = json.loads((Path(args.out) / "summary.json").read_text())
    table = ablation_table(summary, groups)
    (Path(args.out) / "ablation.md").write_text(table + "\n")
    print(table)
    return rc


if __name__ == "__main__":
    sys.exit(main())
