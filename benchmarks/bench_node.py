#!/usr/bin/env python3
"""The tracker node under a simulated camera: 30 Hz, 640x480 bgr8, for 60 s (--duration).

Starts the node as its own process exactly as the launch file does (config/cract.yaml, newest
frame only, asynchronous updates), streams real frames of a sequence from ../shared/data
(resized to 640x480, looped) stamped with the wall clock at publication, sets the target from
the first ground-truth box, and prints:

- processed rate (TrackedObject messages per second) and drops (frames the node never tracked,
  and the node's own count of frames overwritten while it was busy);
- end-to-end latency, image stamp to TrackedObject receipt here: median and p95;
- the node's own latency (receipt to publish) for frames with and without a discriminator
  update, from its /diagnostics;
- CPU % of the node process over the run and its RSS at start (ready) and end (psutil).

    .venv/bin/python benchmarks/bench_node.py [--duration 60] [--fps 30] [--threads 2]

Not a test: figures only. Run it with the environment `make test` exports (AMENT_PREFIX_PATH,
FASTDDS_DEFAULT_PROFILES_FILE, ...); the defaults below are filled in when they are missing.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from cract_ros.process import use_default_ros_environment  # noqa: E402  (imports no ROS)

use_default_ros_environment()  # before rclpy is imported

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from cract.msg import TrackedObject  # noqa: E402
from cract.srv import SetTarget  # noqa: E402
from cract_ros.conversions import bgr_to_image  # noqa: E402
from cract_ros.process import start_node, stop_node  # noqa: E402
from cract_ros.bags.sequence import read_frames, read_groundtruth  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of camera stream (default 60)")
    ap.add_argument("--fps", type=float, default=30.0, help="camera rate (default 30)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in the node (num_threads)")
    ap.add_argument("--sequence", default=str(ROOT.parent / "shared" / "data" / "sequences" / "otb_bird2"))
    ap.add_argument("--frames", type=int, default=60, help="frames of the sequence to loop over")
    ap.add_argument("--tracker-mode", default="async", choices=("async", "sync"))
    ap.add_argument("--log", default="", help="node log file (default: a temp file)")
    ap.add_argument("--model-config", default="", help="model config YAML for the node (default: built-in)")
    ap.add_argument("--force-updates", action="store_true",
                    help="keep every frame's samples (reliable_score 0) and the state TRACKING (thresholds 0), "
                         "so discriminator updates run every K frames even with untrained heads: measures "
                         "update frames against the others")
    args = ap.parse_args()
    overrides = {"num_threads": args.threads, "tracker_mode": args.tracker_mode, "diagnostics_period_s": 1.0}
    if args.model_config:
        overrides["model_config"] = args.model_config
    if args.force_updates:
        import tempfile

        import yaml
        from cract_core.config import default_config_path

        data = yaml.safe_load(Path(args.model_config or default_config_path()).read_text()) or {}
        data.setdefault("online", {})["reliable_score"] = 0.0
        tmp = Path(tempfile.mkdtemp(prefix="cract_bench_")) / "model.yaml"
        tmp.write_text(yaml.safe_dump(data))
        overrides.update(model_config=str(tmp), low_confidence=0.0, lost_confidence=0.0)

    seq = Path(args.sequence)
    raw = list(read_frames(seq, args.frames))
    gt = read_groundtruth(seq)
    sx, sy = args.width / raw[0].shape[1], args.height / raw[0].shape[0]
    frames = [cv2.resize(f, (args.width, args.height), interpolation=cv2.INTER_AREA) for f in raw]
    box0 = [gt[0][0] * sx, gt[0][1] * sy, gt[0][2] * sx, gt[0][3] * sy]
    msgs = [bgr_to_image(f, frame_id="camera") for f in frames]

    ns = f"/bench_{uuid.uuid4().hex[:6]}"
    log_path = Path(args.log) if args.log else Path("/tmp") / f"cract_bench_node_{os.getpid()}.log"
    log = log_path.open("w")
    proc = start_node(overrides=overrides, namespace=ns, log=log)
    rclpy.init()
    node = rclpy.create_node(f"bench_{uuid.uuid4().hex[:6]}")
    fqn = f"{ns}/cract_tracker"
    results: list[tuple[int, int, int]] = []  # (stamp ns, receipt ns, state)
    diags: list[dict] = []
    lock = threading.Lock()

    def on_result(msg: TrackedObject) -> None:
        now = time.time_ns()
        with lock:
            results.append((msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, now, msg.state))

    def on_diag(msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.hardware_id == fqn:
                diags.append({kv.key: kv.value for kv in s.values})

    camera = node.create_publisher(Image, f"{ns}/image", qos_profile_sensor_data)
    node.create_subscription(TrackedObject, f"{fqn}/tracked_object", on_result, 100)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    client = node.create_client(SetTarget, f"{fqn}/set_target")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    try:
        print(f"starting the node (log: {log_path}) ...", flush=True)
        t0 = time.monotonic()
        while not client.service_is_ready() or camera.get_subscription_count() == 0:
            if proc.poll() is not None:
                print(log_path.read_text()[-3000:])
                raise SystemExit(f"node exited with {proc.returncode}")
            if time.monotonic() - t0 > 300:
                raise SystemExit("node not ready after 300 s")
            time.sleep(0.1)
        ps = psutil.Process(proc.pid)
        rss_start = ps.memory_info().rss
        print(f"node ready after {time.monotonic() - t0:.1f} s; RSS {rss_start / 2**20:.0f} MiB", flush=True)

        def stamp_now(msg: Image) -> None:
            ns_now = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = ns_now // 1_000_000_000, ns_now % 1_000_000_000

        # the first frame, then the target on it (an init fits the discriminator: seconds on a CPU)
        stamp_now(msgs[0])
        camera.publish(msgs[0])
        time.sleep(0.5)
        req = SetTarget.Request(x=box0[0], y=box0[1], width=box0[2], height=box0[3])
        future = client.call_async(req)
        while not future.done():
            time.sleep(0.05)
        resp = future.result()
        print(f"set_target: success={resp.success} {resp.message}", flush=True)
        if not resp.success:
            return 1

        with lock:
            results.clear()
        cpu0 = ps.cpu_times()
        wall0 = time.monotonic()
        period = 1.0 / args.fps
        published = 0
        next_t = time.monotonic()
        last_print = wall0
        while time.monotonic() - wall0 < args.duration:
            msg = msgs[published % len(msgs)]
            stamp_now(msg)
            camera.publish(msg)
            published += 1
            next_t += period
            now = time.monotonic()
            if now - last_print >= 5.0:
                last_print = now
                with lock:
                    n = len(results)
                print(f"  {now - wall0:5.1f} s: published {published}, results {n}", flush=True)
            time.sleep(max(0.0, next_t - time.monotonic()))
        time.sleep(1.0)  # the last frames' results
        wall = time.monotonic() - wall0
        cpu1 = ps.cpu_times()
        rss_end = ps.memory_info().rss
        cpu_pct = 100.0 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / wall
        with lock:
            res = list(results)
        lat = np.array([(r - s) / 1e6 for s, r, _ in res])
        states = np.bincount([st for _, _, st in res], minlength=4)
        diag = diags[-1] if diags else {}
        print()
        print(f"camera          {args.width}x{args.height} bgr8 at {args.fps:g} Hz for {wall:.1f} s: {published} frames")
        print(f"processed       {len(res)} TrackedObjects = {len(res) / wall:.1f} Hz")
        print(f"drops           {published - len(res)} frames never tracked "
              f"({100.0 * (published - len(res)) / max(published, 1):.1f} %); node's count: {diag.get('dropped', '?')}")
        if len(lat):
            print(f"end-to-end      image stamp -> TrackedObject receipt: median {np.median(lat):.1f} ms, "
                  f"p95 {np.percentile(lat, 95):.1f} ms, max {lat.max():.1f} ms")
        print(f"node latency    receipt -> publish (last {min(300, len(res))} frames): p50 {diag.get('latency_ms_p50')} ms, "
              f"p95 {diag.get('latency_ms_p95')} ms; update frames ({diag.get('update_frames')}): "
              f"p50 {diag.get('update_latency_ms_p50')} ms, p95 {diag.get('update_latency_ms_p95')} ms")
        print(f"states          TRACKING {states[1]}, LOW_CONFIDENCE {states[2]}, LOST {states[3]}, IDLE {states[0]}")
        print(f"node CPU        {cpu_pct:.0f} % of one core (torch threads {args.threads})")
        print(f"node RSS        start {rss_start / 2**20:.0f} MiB, end {rss_end / 2**20:.0f} MiB")
        print(f"weights_version {diag.get('weights_version')}, device {diag.get('device')}")
        return 0
    finally:
        executor.shutdown()
        code = stop_node(proc)
        node.destroy_node()
        rclpy.try_shutdown()
        log.close()
        if code != 0:
            print(f"node exit code {code}; log {log_path}")


if __name__ == "__main__":
    sys.exit(main())
