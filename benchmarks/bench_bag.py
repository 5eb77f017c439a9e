"""Real-time vs lock-step on bags (a benchmark, not a test): what dropping frames costs in accuracy.

For each sequence: `cract-bag from-sequence` at the sequence's own frame rate (source.json), then
`cract-bag eval` in both modes, and a table of success AUC, precision@20, speed, drops and
latency side by side.

    .venv/bin/python benchmarks/bench_bag.py                       # the validation split, every frame
    .venv/bin/python benchmarks/bench_bag.py --only otb_bird2 --max-frames 40 --threads 2

Run with the ROS environment `make` exports (see docs/setup.md). Lock-step speed is the tracker's
time per frame in this process (sync mode, --threads); real-time speed is the node's processed
rate with the camera at the recorded rate (async mode, the node's num_threads), so on a loaded
machine the second also measures the load.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from cract_ros.bags import bag_eval, bag_io  # noqa: E402

VALIDATION = ("otb_bird2", "otb_woman", "uav_boat5", "uav_person11")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequences", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "sequences")
    p.add_argument("--only", default=",".join(VALIDATION))
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--threads", type=int, default=2, help="lock-step torch threads")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="node parameter (real-time)")
    p.add_argument("--modes", default="lockstep,realtime")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench_bag")
    p.add_argument("--keep-bags", action="store_true", help="keep the bags under OUT/bags (uav sequences: ~220 MB each)")
    args = p.parse_args()

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    overrides = dict(bag_eval._parse_param(x) for x in args.param)
    args.out.mkdir(parents=True, exist_ok=True)
    bag_root = args.out / "bags" if args.keep_bags else Path(tempfile.mkdtemp(prefix="cract_bench_bag_"))
    rows = []
    try:
        for name in [s.strip() for s in args.only.split(",") if s.strip()]:
            seq_dir = args.sequences / name
            fps, why = bag_io.sequence_fps(seq_dir)
            fps = fps or 30.0
            bag = bag_root / name
            if bag.exists():
                shutil.rmtree(bag)
            written = bag_io.write_sequence_bag(seq_dir, bag, fps, max_frames=args.max_frames)
            print(f"{name}: {written.frames} frames {written.image_size[0]}x{written.image_size[1]} at {fps:g} fps ({why})",
                  file=sys.stderr, flush=True)
            seq = bag_io.load_sequence(bag)
            row: dict = {"sequence": name, "frames": written.frames, "fps": fps}
            if "lockstep" in modes:
                res = bag_eval.eval_lockstep(seq, threads=args.threads)
                print(bag_eval.format_report(res), file=sys.stderr, flush=True)
                row["lockstep"] = res.summary()
            if "realtime" in modes:
                res, _ = bag_eval.eval_realtime(seq, overrides=overrides, log_dir=args.out / f"node_{name}")
                print(bag_eval.format_report(res), file=sys.stderr, flush=True)
                row["realtime"] = res.summary()
            rows.append(row)
            del seq
            if not args.keep_bags:
                shutil.rmtree(bag, ignore_errors=True)
    finally:
        if not args.keep_bags:
            shutil.rmtree(bag_root, ignore_errors=True)

    def f(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    head = (f"{'sequence':<14} {'frames':>6} {'fps':>5} | {'LS AUC':>6} {'LS P20':>6} {'LS fps':>6} | "
            f"{'RT AUC':>6} {'RT P20':>6} {'proc Hz':>7} {'drops':>7} {'node p50/p95 ms':>16} {'e2e p50/p95 ms':>15}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ls, rt = r.get("lockstep", {}), r.get("realtime", {})
        lss, rts = ls.get("speed", {}), rt.get("speed", {})
        lines.append(
            f"{r['sequence']:<14} {r['frames']:>6} {r['fps']:>5.1f} | {f(ls.get('auc')):>6} {f(ls.get('prec20')):>6} "
            f"{f(lss.get('fps'), '.1f'):>6} | {f(rt.get('auc')):>6} {f(rt.get('prec20')):>6} "
            f"{f(rts.get('processed_rate_hz'), '.1f'):>7} {str(rts.get('dropped', '-')) + '/' + str(rts.get('streamed', '-')):>7} "
            f"{f(rts.get('node_latency_ms_p50'), '.0f') + '/' + f(rts.get('node_latency_ms_p95'), '.0f'):>16} "
            f"{f(rts.get('e2e_latency_ms_p50'), '.0f') + '/' + f(rts.get('e2e_latency_ms_p95'), '.0f'):>15}")
    for mode in ("lockstep", "realtime"):
        aucs = [r[mode]["auc"] for r in rows if mode in r and r[mode].get("auc") is not None]
        p20s = [r[mode]["prec20"] for r in rows if mode in r and r[mode].get("prec20") is not None]
        if aucs:
            lines.append(f"mean {mode}: AUC {sum(aucs) / len(aucs):.3f}, P@20 {sum(p20s) / len(p20s):.3f} over {len(aucs)} sequences")
    table = "\n".join(lines)
    print(table)
    (args.out / "table.txt").write_text(table + "\n")
    for r in rows:
        for mode in ("lockstep", "realtime"):
            r.get(mode, {}).get("speed", {}).pop("node_diagnostics", None)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"results in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
