"""cract-bag: turn sequences into rosbag2 files, and score the tracker on bags.

    cract-bag from-sequence ../shared/data/sequences/otb_bird2 runs/bags/otb_bird2
    cract-bag info runs/bags/otb_bird2
    cract-bag eval runs/bags/otb_bird2 --mode lockstep --out runs/bag_eval/bird2
    cract-bag eval runs/bags/otb_bird2 --mode realtime --out runs/bag_eval/bird2_rt --record runs/bag_eval/bird2_rt/out_bag

Modes of `eval`:

- lockstep: every frame, in order, through cract_core's Tracker in synchronous mode, in this
  process: deterministic, and the same boxes as `cract-eval` gives on the sequence's folder.
- realtime: the node runs as its own process (as the launch file starts it); the bag's images
  are published at their recorded rate as a best-effort camera with /clock (cract_ros.bags.replay);
  the target is set through ~/set_target with the first ground-truth box (or --init-box) and
  the first image's stamp; the node's TrackedObject messages are scored against the ground
  truth by stamp. A frame the node dropped counts as the box of the latest processed frame
  before it (what a following controller still had); with none, or IDLE, it is a failure.

Both score with cract_core.eval.metrics (success AUC over 21 IoU thresholds, precision at 20 px,
frames without a ground-truth box left out, the first frame scored as the OTB toolkit does).

Exit status: 0 done; 2 a bad command line or an unusable bag (one line on stderr says why: a
truncated or corrupt file, a missing topic with the topics there are, a wrong message type);
1 the node failed or did not answer.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence as Seq

import numpy as np

from cract_ros.bags import bag_io
from cract_ros.bags.bag_io import BagError

PROG = "cract-bag"
RECORD_TOPIC = "/cract_tracker/tracked_object"  # where --record writes the boxes (both modes)


@dataclass
class BagEvalResult:
    """What one evaluation of a bag gave (boxes per image frame, scores, speed)."""

    mode: str
    bag: str
    boxes: np.ndarray  # (N, 4) xywh, row 0 = the init box
    groundtruth: Optional[np.ndarray]
    stamps_ns: list[int]
    scores: dict  # cract_core.eval.metrics.SequenceScores.as_dict(), {} without ground truth
    speed: dict
    states: list[int] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    processed: Optional[np.ndarray] = None  # realtime: the frames the node answered

    def summary(self) -> dict:
        return {"schema": 1, "mode": self.mode, "bag": self.bag, "frames": len(self.stamps_ns),
                **{k: self.scores.get(k) for k in ("auc", "prec20", "norm_prec", "evaluated_frames")},
                "speed": self.speed}


def parse_box(text: str) -> np.ndarray:
    try:
        box = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError:
        raise BagError(f"--init-box must be x,y,w,h numbers, got {text!r}") from None
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] < 2 or box[3] < 2:
        raise BagError(f"--init-box must be x,y,w,h with w,h >= 2 px, got {text!r}")
    return box


def initial_box(seq: bag_io.SequenceData, init_box: Optional[np.ndarray]) -> np.ndarray:
    if init_box is not None:
        return np.asarray(init_box, dtype=np.float64)
    if seq.groundtruth is None or not np.all(np.isfinite(seq.groundtruth[0])):
        raise BagError(f"the first image of {seq.image_topic} has no ground-truth box: give --init-box x,y,w,h")
    return seq.groundtruth[0].copy()


def score(boxes: np.ndarray, gt: Optional[np.ndarray]) -> dict:
    if gt is None:
        return {}
    from cract_core.eval import metrics

    return metrics.score_sequence(boxes, gt).as_dict()


# ------------------------------------------------------------------------------- lockstep


def eval_lockstep(seq: bag_io.SequenceData, init_box: Optional[np.ndarray] = None, config: Optional[str] = None,
                  checkpoint: Optional[str] = None, device: str = "auto", threads: Optional[int] = None,
                  progress: bool = False) -> BagEvalResult:
    """Every frame through Tracker (sync mode), as cract-eval's cract tracker runs a folder."""
    import torch

    box0 = initial_box(seq, init_box)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))  # restored below: a library call must not change the caller's
    try:
        return _lockstep(seq, box0, config, checkpoint, device, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _lockstep(seq: bag_io.SequenceData, box0: np.ndarray, config: Optional[str], checkpoint: Optional[str],
              device: str, progress: bool) -> BagEvalResult:
    import torch

    from cract_core.eval.trackers import build_cract_config
    from cract_core.tracker import Tracker

    tracker = Tracker.from_config(build_cract_config(config), checkpoint=checkpoint, device=device, mode="sync")
    n = len(seq.frames)
    boxes = np.full((n, 4), np.nan)
    states, confs, lat = [], [], []
    try:
        t0 = time.perf_counter()
        res = tracker.init(seq.image(0), box0)
        init_ms = (time.perf_counter() - t0) * 1e3
        boxes[0] = box0  # the box the tracker was given, as cract-eval writes it
        states.append(int(res.state))
        confs.append(float(res.confidence))
        for i in range(1, n):
            img = seq.image(i)  # decoding is not the tracker's time
            t0 = time.perf_counter()
            res = tracker.track(img)
            lat.append((time.perf_counter() - t0) * 1e3)
            boxes[i] = np.asarray(res.box, dtype=np.float64)
            states.append(int(res.state))
            confs.append(float(res.confidence))
            if progress and (i % 10 == 0 or i == n - 1):
                print(f"  frame {i + 1}/{n}  conf {res.confidence:.2f}  {lat[-1]:.0f} ms", file=sys.stderr)
    finally:
        tracker.close()
    speed = {"fps": 1e3 / float(np.mean(lat)) if lat else None,
             "latency_ms_p50": float(np.percentile(lat, 50)) if lat else None,
             "latency_ms_p95": float(np.percentile(lat, 95)) if lat else None,
             "init_ms": init_ms, "threads": torch.get_num_threads()}
    return BagEvalResult("lockstep", str(seq.bag.path), boxes, seq.groundtruth, seq.stamps_ns,
                         score(boxes, seq.groundtruth), speed, states, confs)


# ------------------------------------------------------------------------------- realtime


def bag_replay_frames(seq: bag_io.SequenceData) -> list:
    """The bag's image messages as the replay publishes them: the stored CDR bytes, untouched."""
    from cract_ros.bags.replay import ReplayFrame

    return [ReplayFrame(f.stamp_ns, (lambda raw=f.raw: raw)) for f in seq.frames]


def eval_realtime(seq: bag_io.SequenceData, init_box: Optional[np.ndarray] = None,
                  overrides: Optional[dict] = None, log_dir: Optional[Path] = None, progress: bool = False,
                  frames: Optional[list] = None) -> tuple[BagEvalResult, Any]:
    """Replay through the node (cract_ros.bags.replay); returns the result and the raw ReplayResult."""
    from cract_ros.bags.replay import NodeReplay, ReplayError

    box0 = initial_box(seq, init_box)
    stamps = seq.stamps_ns
    if len(set(stamps)) != len(stamps) or any(b <= a for a, b in zip(stamps, stamps[1:])):
        # the node's answers are matched to frames by stamp, and frames are paced by stamp
        raise BagError(f"the image stamps on {seq.image_topic} are not strictly increasing (repeated or "
                       f"out of order): real-time replay matches the node's answers by stamp; use --mode lockstep")
    report = None
    if progress:
        def report(s: dict) -> None:
            print(f"  {s['rate_hz']:5.1f} Hz  latency {s['latency_ms']:6.1f} ms  conf {s['confidence']:.2f}  "
                  f"{s['state']:<14s} dropped {s['dropped']}", file=sys.stderr)
    compressed = seq.frames[0].msgtype == bag_io.COMPRESSED_TYPE
    replay = NodeReplay(seq.image_topic, overrides, log_dir, compressed=compressed)
    try:
        result = replay.run(frames or bag_replay_frames(seq), box0, progress=report)
    finally:
        code = replay.close()
    if code != 0:
        raise ReplayError(f"the node exited with code {code} at shutdown"
                          + (f" (log: {result.log_path})" if result.log_path else ""))
    return realtime_result(result, str(seq.bag.path), seq.groundtruth, seq.stamps_ns), result


def realtime_result(result: Any, source: str, groundtruth: Optional[np.ndarray], stamps_ns: list[int]) -> BagEvalResult:
    """A node replay (cract_ros.bags.replay.ReplayResult) as a BagEvalResult: per frame stamp the box in
    force (the last published one for dropped frames), the node's state and confidence, and scores."""
    from cract_ros.bags.replay import predictions_by_stamp, replay_stats

    boxes, processed = predictions_by_stamp(result)
    by_stamp = result.last_output_by_stamp()
    states = [by_stamp[ns].state if ns in by_stamp else -1 for ns in result.stamps_ns]
    confs = [by_stamp[ns].confidence if ns in by_stamp else float("nan") for ns in result.stamps_ns]
    return BagEvalResult("realtime", source, boxes, groundtruth, stamps_ns, score(boxes, groundtruth),
                         replay_stats(result), states, confs, processed)


# ------------------------------------------------------------------------------- recording


def record_lockstep(path: Path, seq: bag_io.SequenceData, res: BagEvalResult, topic: str = RECORD_TOPIC,
                    gt_topic: Optional[str] = None) -> None:
    """The lock-step boxes as cract/msg/TrackedObject, one per image, logged at the image's stamp."""
    size = seq.image(0).shape[1::-1]
    with bag_io.BagWriter(path) as bag:
        for i, f in enumerate(seq.frames):
            msg = bag_io.tracked_object_message(f.stamp_ns, f.frame_id, res.boxes[i], res.states[i], i,
                                                confidence=min(max(res.confidences[i], 0.0), 1.0),
                                                image_size=tuple(size))
            bag.write(topic, bag_io.TRACKED_TYPE, f.stamp_ns, msg)
            _record_gt(bag, seq, i, gt_topic)


def _record_gt(bag: bag_io.BagWriter, seq: bag_io.SequenceData, i: int, gt_topic: Optional[str]) -> None:
    if gt_topic and seq.groundtruth is not None:
        f = seq.frames[i]
        box = seq.groundtruth[i]
        ok = bool(np.all(np.isfinite(box)))
        bag.write(gt_topic, bag_io.TRACKED_TYPE, f.stamp_ns, bag_io.tracked_object_message(
            f.stamp_ns, f.frame_id, box, bag_io.TRACKING if ok else bag_io.LOST, i))


def record_realtime(path: Path, seq: bag_io.SequenceData, replay: Any, gt_topic: Optional[str] = None) -> None:
    """The node's output as received (raw CDR of TrackedObject and /diagnostics), plus the ground truth.

    Log times are in the bag's clock: a message received t seconds after frame 1 was published
    is logged at frame 1's stamp + t (messages before that, at the init frame's stamp).
    """
    base_ns = replay.stamps_ns[1] if len(replay.stamps_ns) > 1 else replay.stamps_ns[0]

    def log_ns(receipt: float) -> int:
        return max(replay.stamps_ns[0], base_ns + int(round((receipt - replay.stream_start) * 1e9)))

    with bag_io.BagWriter(path) as bag:
        # one topic name whatever namespace the replay ran in, the same as record_lockstep writes
        items = [(log_ns(o.receipt), RECORD_TOPIC, bag_io.TRACKED_TYPE, o.raw) for o in replay.outputs]
        items += [(log_ns(t), "/diagnostics", bag_io.DIAGNOSTICS_TYPE, raw) for t, raw, _ in replay.diagnostics]
        for ns, topic, msgtype, raw in sorted(items, key=lambda x: x[0]):
            bag.write_raw(topic, msgtype, ns, raw)
        for i in range(len(seq.frames)):
            _record_gt(bag, seq, i, gt_topic)


# ------------------------------------------------------------------------------- output


def write_outputs(out: Path, res: BagEvalResult) -> Path:
    """boxes.txt and result.json, each written whole or not at all (cract_core.atomic)."""
    from cract_core.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "boxes.txt", "".join(
        ",".join("nan" if not np.isfinite(v) else f"{v:.4f}" for v in b) + "\n" for b in res.boxes))
    path = out / "result.json"
    summary = res.summary()
    summary["per_frame"] = [{"stamp_ns": s, "box": [None if not np.isfinite(v) else float(v) for v in b],
                             "state": st, "processed": None if res.processed is None else bool(res.processed[i])}
                            for i, (s, b, st) in enumerate(zip(res.stamps_ns, res.boxes, res.states))]
    atomic_write_text(path, json.dumps(summary, indent=1))
    return path


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def format_report(res: BagEvalResult) -> str:
    s, sp = res.scores, res.speed
    lines = [f"{res.mode}: {len(res.stamps_ns)} frames of {res.bag}"]
    if s:
        lines.append(f"  success AUC {_fmt(s.get('auc'))}   precision@20 {_fmt(s.get('prec20'))}   "
                     f"({s.get('evaluated_frames')} frames scored)")
    else:
        lines.append("  no ground truth: not scored")
    if res.mode == "lockstep":
        lines.append(f"  tracker {_fmt(sp.get('fps'), '.1f')} fps, latency p50 {_fmt(sp.get('latency_ms_p50'), '.1f')} ms "
                     f"p95 {_fmt(sp.get('latency_ms_p95'), '.1f')} ms, init {_fmt(sp.get('init_ms'), '.0f')} ms, "
                     f"{sp.get('threads')} thread(s)")
    else:
        lines.append(f"  processed {sp['processed']}/{sp['streamed']} streamed frames at {_fmt(sp['processed_rate_hz'], '.1f')} Hz "
                     f"(camera {_fmt(sp.get('stream_rate_hz'), '.1f')} Hz), dropped {sp['dropped']}"
                     + ("" if sp["complete"] else "  (the last frame was never answered)"))
        lines.append(f"  latency: node p50 {_fmt(sp['node_latency_ms_p50'], '.1f')} / p95 {_fmt(sp['node_latency_ms_p95'], '.1f')} ms, "
                     f"receipt - stamp p50 {_fmt(sp['e2e_latency_ms_p50'], '.1f')} / p95 {_fmt(sp['e2e_latency_ms_p95'], '.1f')} ms; "
                     f"init {sp['init_s']:.1f} s")
        lines.append("  dropped frames are scored with the latest earlier box the node published (none: a failure)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- CLI


FPS_HELP = ("frames per second of the camera (default: what the sequence's source.json implies, else 30). "
            "UAV123@10fps sequences are 10 fps, divided by the frame_stride in source.json where there is "
            "one (stride 3: 3.33 fps); OTB, UAV123 and DTB70 are 30 fps (also divided by a frame_stride)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    fs = sub.add_parser("from-sequence", help="a folder sequence (img/ + groundtruth.txt) -> a rosbag2 (mcap)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fs.add_argument("sequence", type=Path, help="folder with img/*.jpg and groundtruth.txt (x,y,w,h a line)")
    fs.add_argument("out", type=Path, help="rosbag2 directory to create (must not exist)")
    fs.add_argument("--fps", type=float, default=None, help=FPS_HELP)
    fs.add_argument("--image-topic", default=bag_io.DEFAULT_IMAGE_TOPIC)
    fs.add_argument("--gt-topic", default=bag_io.DEFAULT_GT_TOPIC)
    fs.add_argument("--frame-id", default=bag_io.DEFAULT_FRAME_ID)
    fs.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    fs.add_argument("--compressed", choices=("png", "jpeg"), default=None,
                    help="sensor_msgs/CompressedImage on IMAGE_TOPIC/compressed instead of raw bgr8 "
                         "(png is lossless: the same pixels as raw)")

    info = sub.add_parser("info", help="topics, types and counts of a bag")
    info.add_argument("bag", type=Path)

    ev = sub.add_parser("eval", help="score the tracker on a bag (lockstep in-process, or realtime through the node)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ev.add_argument("bag", type=Path, help="rosbag2 directory (or its .mcap/.db3 file)")
    ev.add_argument("--image-topic", default=bag_io.DEFAULT_IMAGE_TOPIC, help="sensor_msgs/Image or CompressedImage topic")
    ev.add_argument("--gt-topic", default=bag_io.DEFAULT_GT_TOPIC,
                    help="cract/msg/TrackedObject ground truth matched by stamp; 'none' for a bag without")
    ev.add_argument("--init-box", default=None, help="x,y,w,h in the first image (default: its ground truth)")
    ev.add_argument("--mode", choices=("lockstep", "realtime"), default="lockstep")
    ev.add_argument("--out", type=Path, default=None, help="folder for result.json and boxes.txt (and node.log)")
    ev.add_argument("--record", type=Path, default=None,
                    help="write the tracker's output (TrackedObject boxes and states, /diagnostics in realtime, "
                         "the ground truth) to this new rosbag2 directory")
    ev.add_argument("--max-frames", type=int, default=None, help="only the first N images")
    ev.add_argument("--config", default=None, help="lockstep: experiment YAML (default: the built-in default)")
    ev.add_argument("--checkpoint", default=None, help="trained heads (default: the config's)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--threads", type=int, default=None, help="lockstep: torch threads (default: torch's)")
    ev.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="realtime: a node parameter over config/cract.yaml (repeatable), e.g. num_threads=2")
    return p


def _parse_param(text: str) -> tuple[str, Any]:
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise BagError(f"--param must be NAME=VALUE, got {text!r}")
    return name.strip(), yaml.safe_load(value)


def _fail(msg: str, code: int = 2) -> int:
    print(f"{PROG}: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return code


def cmd_from_sequence(args: argparse.Namespace) -> int:
    from cract_ros.bags.sequence import SequenceError

    fps, why = args.fps, "--fps"
    if fps is None:
        fps, why = bag_io.sequence_fps(args.sequence)
        if fps is None:
            fps, why = 30.0, f"default ({why})"
    try:
        written = bag_io.write_sequence_bag(args.sequence, args.out, fps, args.image_topic, args.gt_topic,
                                            args.frame_id, args.max_frames, compressed=args.compressed)
    except (SequenceError, OSError) as exc:
        return _fail(str(exc))
    w, h = written.image_size
    kind = f"{args.compressed} CompressedImage" if args.compressed else "bgr8"
    print(f"wrote {written.path}: {written.frames} frames {w}x{h} {kind} at {written.fps:g} fps ({why}) on "
          f"{written.image_topic}, ground truth on {args.gt_topic}, /clock")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    bag = bag_io.Bag(args.bag)
    print(f"{bag.path}: {bag.message_count} messages, {(bag.end_ns - bag.start_ns) / 1e9:.2f} s")
    for t in bag.topics.values():
        print(f"  {t.name:<40s} {t.msgtype:<36s} {t.count}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from cract_ros.bags.replay import ReplayError

    init_box = parse_box(args.init_box) if args.init_box else None
    overrides = dict(_parse_param(p) for p in args.param)
    if args.record is not None and args.record.exists():
        raise BagError(f"--record {args.record} already exists: rosbag2 writes a new directory")
    gt_topic = None if str(args.gt_topic).lower() == "none" else args.gt_topic
    seq = bag_io.load_sequence(args.bag, args.image_topic, gt_topic, args.max_frames)
    print(f"{PROG}: {len(seq.frames)} images on {args.image_topic}"
          + (f", ground truth on {gt_topic}" if gt_topic else "") + f", mode {args.mode}", file=sys.stderr)
    if args.mode == "lockstep":
        res = eval_lockstep(seq, init_box, args.config, args.checkpoint, args.device, args.threads, progress=True)
        if args.record is not None:
            record_lockstep(args.record, seq, res, gt_topic=gt_topic)
    else:
        if args.config:
            overrides.setdefault("model_config", str(Path(args.config).resolve()))
        if args.checkpoint:
            overrides.setdefault("checkpoint", str(Path(args.checkpoint).resolve()))
        if args.device != "auto":
            overrides.setdefault("device", args.device)
        try:
            res, replay = eval_realtime(seq, init_box, overrides, args.out, progress=True)
        except ReplayError as exc:
            return _fail(str(exc), 1)
        if args.record is not None:
            record_realtime(args.record, seq, replay, gt_topic=gt_topic)
    print(format_report(res))
    if args.out is not None:
        print(f"results in {write_outputs(args.out, res)}", file=sys.stderr)
    if args.record is not None:
        print(f"recorded the tracker's output to {args.record}", file=sys.stderr)
    return 0


def main(argv: Optional[Seq[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "from-sequence":
            return cmd_from_sequence(args)
        if args.command == "info":
            return cmd_info(args)
        return cmd_eval(args)
    except BagError as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
