#!/usr/bin/env python3
"""Soak: the tracker node under a 30 Hz camera for thousands of frames, its resources every second.

Streams a real sequence from ../shared/data (resized to 640x480, looped) through the node, which
runs as its own process exactly as the launch file starts it, while targets are set, cleared and
set again, the camera stops (the watchdog's LOST) and resumes, and the view is blanked (the
tracker loses the target) - cract_ros.tools.soak.default_schedule. Once a second: the node's RSS, thread
count, open file descriptors, processed rate and latency. Prints the growth after the warm-up and
the latency drift (p95 of the node's latency_ms over the first and the last minute), and writes
OUT/soak.json (every sample) and OUT/soak.png (the plot).

    nice -n 19 .venv/bin/python benchmarks/soak_node.py --frames 5000 --out runs/soak

Not a test: figures only (test/test_ros_soak.py is the short version that CI runs). Run it with
the environment `make test` exports; the defaults below are filled in when they are missing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from cract_ros.process import use_default_ros_environment  # noqa: E402  (imports no ROS)

use_default_ros_environment()  # before rclpy is imported

from cract_ros.tools.soak import load_scaled_sequence, plot, run_soak, summarize  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=5000, help="frames to stream (default 5000: 167 s at 30 Hz)")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--sequence", type=Path, default=ROOT.parent / "shared" / "data" / "sequences" / "otb_woman")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in the node (num_threads)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds of streaming before growth is counted")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "soak")
    args = ap.parse_args()

    frames, boxes = load_scaled_sequence(args.sequence, (args.width, args.height))
    overrides = {"num_threads": args.threads, "watchdog_timeout_s": 1.0}
    print(f"soak: {args.frames} frames of {args.sequence.name} ({len(frames)} looped) at {args.fps:g} Hz, "
          f"{args.width}x{args.height}; output {args.out}", flush=True)
    result = run_soak(frames, boxes, args.frames, args.fps, overrides, log_dir=args.out, pause_s=3.0,
                      progress=lambda text: print(text, flush=True))
    summary = summarize(result, warmup_s=args.warmup)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(result.to_json())
    png = plot(result, args.out / "soak.png", f"{args.frames} frames of {args.sequence.name} at {args.fps:g} Hz through "
                                                f"the node ({result.duration_s:.0f} s)")
    s = summary
    print()
    print(f"frames        {s['frames']} published at {s['fps']:g} Hz in {s['duration_s']} s; {s['answers']} answers "
          f"({s['processed_hz_mean']} Hz mean); node dropped {s['node_dropped']}, errors {s['node_errors']}")
    print(f"RSS           start {s['rss_mib_start']} MiB, after {s['warmup_s']:g} s warm-up {s['rss_mib_after_warmup']}, "
          f"end {s['rss_mib_end']}, max {s['rss_mib_max']}: growth {s['rss_growth_mib']:+} MiB")
    print(f"threads       {s['threads_after_warmup']} after warm-up, {s['threads_end']} at the end (max {s['threads_max']})")
    print(f"descriptors   {s['fds_after_warmup']} after warm-up, {s['fds_end']} at the end (max {s['fds_max']})")
    drift = s["latency_p95_drift"]
    print(f"latency p95   first {s['window_s']:g} s {s['latency_ms_p95_first_window']} ms, last {s['window_s']:g} s "
          f"{s['latency_ms_p95_last_window']} ms: drift {'-' if drift is None else f'{drift * 100:+.1f} %'}")
    print(f"states        {s['states']}; targets set {s['targets_set']}")
    for e in result.events:
        answer = f"-> {'ok' if e.get('success') else 'refused'} after {e['answered_t'] - e['t']:.1f} s" if "answered_t" in e else ""
        print(f"  t={e['t']:6.1f} s frame {e['frame']:5d}: {e['kind']} {answer}")
    print(f"plot          {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
