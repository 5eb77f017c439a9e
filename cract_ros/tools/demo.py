"""The main job (`make demo`): the tracker node on the built-in default, fed a camera, end to end.

    python -m cract_ros.tools.demo                          # a real sequence from ../shared/data, else a generated one
    python -m cract_ros.tools.demo --source VIDEO.mp4 --init-box 300,200,80,60
    python -m cract_ros.tools.demo --source FOLDER          # img/*.jpg (+ groundtruth.txt) or a folder of images
    python -m cract_ros.tools.demo --source BAG             # a rosbag2 directory (cract-bag from-sequence makes them)

What it does: starts the node as its own process exactly as the launch file does
(`--ros-args --params-file config/cract.yaml`), publishes the frames as a best-effort camera at
the source's frame rate with /clock (cract_ros.bags.replay), sets the target through ~/set_target
(the first ground-truth box, or --init-box), prints a line a second (processed rate, latency,
confidence, state, drops), and at the end writes an annotated contact sheet PNG plus
result.json / boxes.txt to --out (default runs/demo/) and prints a summary, with success AUC
and precision@20 when the source has ground truth (frames the node dropped are scored with
the box it last published, as a controller would have it).

The offline demo without ROS is `python -m cract_core.demo`.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence as Seq

import cv2
import numpy as np

from cract_ros.bags import bag_io
from cract_ros.bags.bag_io import BagError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_SEQUENCES = REPO_ROOT.parent / "shared" / "data" / "sequences"
DEFAULT_SEQUENCES = ("uav_boat5", "otb_bird2")  # aerial footage first: what our users fly
DEFAULT_OUT = REPO_ROOT / "runs" / "demo"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
STATE_COLOURS = {0: (160, 160, 160), 1: (0, 200, 0), 2: (0, 200, 255), 3: (0, 0, 255)}
STATE_NAMES = {0: "IDLE", 1: "TRACKING", 2: "LOW_CONF", 3: "LOST", -1: "dropped"}


class DemoError(ValueError):
    """A source the demo cannot use; the message says why."""


@dataclass
class Source:
    """Frames to play as a camera: n frames at fps, read on demand, with optional ground truth."""

    name: str
    n: int
    fps: float
    image: Callable[[int], np.ndarray]  # BGR uint8
    groundtruth: Optional[np.ndarray]
    stamps_ns: list[int]
    raw: Optional[Callable[[int], bytes]] = None  # bags: the stored message, published untouched
    note: str = ""


def _stamps(n: int, fps: float) -> list[int]:
    return [bag_io.DEFAULT_START_NS + int(round(i * 1e9 / fps)) for i in range(n)]


def folder_source(folder: Path, max_frames: Optional[int], fps: Optional[float]) -> Source:
    from cract_ros.bags.sequence import SequenceError, frame_paths, read_groundtruth

    try:
        paths = frame_paths(folder)[:max_frames]
        gt = read_groundtruth(folder)
    except SequenceError as exc:
        raise DemoError(str(exc)) from None
    note = "--fps" if fps else ""
    if fps is None:
        fps, why = bag_io.sequence_fps(folder)
        note = why
        if fps is None:
            fps, note = 30.0, f"30 fps default ({why})"

    def image(i: int) -> np.ndarray:
        img = cv2.imread(str(paths[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise DemoError(f"cannot read image {paths[i]}")
        return img

    if gt is not None:
        gt = gt[: len(paths)]
        if len(gt) < len(paths):  # frames past the ground truth are played, not scored
            gt = np.vstack([gt, np.full((len(paths) - len(gt), 4), np.nan)])
    return Source(folder.name, len(paths), float(fps), image, gt, _stamps(len(paths), fps), note=note)


def video_source(path: Path, max_frames: Optional[int], fps: Optional[float]) -> Source:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DemoError(f"OpenCV cannot open video {path}")
    frames: list[np.ndarray] = []
    limit = max_frames or 600  # held in memory: a demo, not a long recording
    while len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    video_fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    if not frames:
        raise DemoError(f"video {path} has no readable frames")
    if fps is None:
        fps = float(video_fps) if video_fps and 0 < video_fps < 1000 else 30.0
    return Source(path.name, len(frames), float(fps), lambda i: frames[i], None, _stamps(len(frames), fps),
                  note=f"{len(frames)} frames read from the video")


def bag_source(path: Path, max_frames: Optional[int], image_topic: str, gt_topic: str) -> Source:
    bag = bag_io.Bag(path)
    has_gt = gt_topic in bag.topics
    seq = bag_io.load_sequence(path, image_topic, gt_topic if has_gt else None, max_frames)
    stamps = seq.stamps_ns
    fps = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9) if len(stamps) > 1 and stamps[-1] > stamps[0] else 30.0
    return Source(Path(path).name, len(stamps), fps, seq.image, seq.groundtruth, stamps,
                  raw=lambda i: seq.frames[i].raw, note=f"recorded rate {fps:.1f} fps")


def synthetic_source(max_frames: Optional[int]) -> Source:
    from cract_core.demo import synthetic_sequence

    images, gt = synthetic_sequence(max_frames or 60)
    return Source("synthetic", len(images), 30.0, lambda i: images[i], gt, _stamps(len(images), 30.0),
                  note="generated (no ../shared/data here)")


def open_source(source: Optional[Path], max_frames: Optional[int], fps: Optional[float], image_topic: str,
                gt_topic: str) -> Source:
    if source is None:
        for name in DEFAULT_SEQUENCES:
            folder = SHARED_SEQUENCES / name
            if (folder / "img").is_dir() and (folder / "groundtruth.txt").is_file():
                return folder_source(folder, max_frames, fps)
        return synthetic_source(max_frames)
    if not source.exists():
        raise DemoError(f"--source {source} does not exist")
    if (source.is_dir() and (source / "metadata.yaml").is_file()) or source.suffix in (".mcap", ".db3"):
        return bag_source(source, max_frames, image_topic, gt_topic)
    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        return video_source(source, max_frames, fps)
    if source.is_dir():
        return folder_source(source, max_frames, fps)
    raise DemoError(f"--source {source}: expected a video ({', '.join(VIDEO_SUFFIXES)}), an image folder or a rosbag2")


# ------------------------------------------------------------------------------------ output


def contact_sheet(source: Source, boxes: np.ndarray, states: list[int], confs: list[float],
                  processed: Optional[np.ndarray], path: Path, tiles: int = 12, columns: int = 4,
                  tile_width: int = 360) -> Path:
    """Evenly spaced frames with the node's box (colour = state) and the ground truth (white)."""
    from cract_core.geometry import iou

    idx = np.unique(np.linspace(0, source.n - 1, min(tiles, source.n)).round().astype(int))
    cells = []
    for i in idx:
        img = np.ascontiguousarray(source.image(int(i))).copy()
        h, w = img.shape[:2]
        scale = tile_width / w
        img = cv2.resize(img, (tile_width, int(round(h * scale))), interpolation=cv2.INTER_AREA)
        if source.groundtruth is not None and np.all(np.isfinite(source.groundtruth[i])):
            g = source.groundtruth[i] * scale
            cv2.rectangle(img, (int(g[0]), int(g[1])), (int(g[0] + g[2]), int(g[1] + g[3])), (255, 255, 255), 1)
        state = states[i] if i < len(states) else -1
        colour = STATE_COLOURS.get(state, (255, 255, 255))
        if np.all(np.isfinite(boxes[i])):
            b = boxes[i] * scale
            cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[0] + b[2]), int(b[1] + b[3])), colour, 2)
        label = f"#{i} {STATE_NAMES.get(state, '?')}"
        if np.isfinite(confs[i]) if i < len(confs) else False:
            label += f" {confs[i]:.2f}"
        if source.groundtruth is not None and np.all(np.isfinite(boxes[i])) and np.all(np.isfinite(source.groundtruth[i])):
            label += f" IoU {float(iou(boxes[i], source.groundtruth[i], 'xywh')):.2f}"
        if processed is not None and not processed[i]:
            label += " (last box)"  # the node skipped this frame: the box a controller still had
        cv2.rectangle(img, (0, 0), (tile_width, 22), (0, 0, 0), -1)
        cv2.putText(img, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        cells.append(img)
    tile_h = max(c.shape[0] for c in cells)
    cells = [cv2.copyMakeBorder(c, 0, tile_h - c.shape[0], 0, 0, cv2.BORDER_CONSTANT) for c in cells]
    while len(cells) % columns:
        cells.append(np.zeros_like(cells[0]))
    rows = [np.hstack(cells[r: r + columns]) for r in range(0, len(cells), columns)]
    sheet = np.vstack(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"cannot write {path}")
    return path


# ------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cract_ros.tools.demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", type=Path, default=None,
                   help=f"video file, image folder (img/ + groundtruth.txt, or images) or rosbag2; default: "
                        f"{' or '.join(DEFAULT_SEQUENCES)} from {SHARED_SEQUENCES} when present, else a generated sequence")
    p.add_argument("--frames", type=int, default=None, help="play at most this many frames")
    p.add_argument("--fps", type=float, default=None,
                   help="camera rate (default: the source's: source.json, the video's, the bag's stamps; else 30)")
    p.add_argument("--init-box", default=None, help="x,y,w,h of the target in the first frame (default: its ground truth)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for contact_sheet.png, result.json, boxes.txt, node.log")
    p.add_argument("--image-topic", default=bag_io.DEFAULT_IMAGE_TOPIC, help="camera topic (a bag's image topic)")
    p.add_argument("--gt-topic", default=bag_io.DEFAULT_GT_TOPIC, help="a bag's ground-truth topic (used when present)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a node parameter over config/cract.yaml (repeatable), e.g. num_threads=2")
    return p


def main(argv: Optional[Seq[str]] = None) -> int:
    from cract_ros.bags import bag_eval
    from cract_ros.bags.replay import NodeReplay, ReplayError, ReplayFrame

    args = build_parser().parse_args(argv)
    try:
        if args.frames is not None and args.frames < 2:
            raise DemoError(f"--frames must be >= 2 (the first one initialises), got {args.frames}")
        src = open_source(args.source, args.frames, args.fps, args.image_topic, args.gt_topic)
        if args.init_box:
            box0 = bag_eval.parse_box(args.init_box)
        elif src.groundtruth is not None and np.all(np.isfinite(src.groundtruth[0])):
            box0 = src.groundtruth[0].copy()
        else:
            raise DemoError(f"{src.name} has no ground-truth box for its first frame: give --init-box x,y,w,h")
        overrides = dict(bag_eval._parse_param(p) for p in args.param)
    except (DemoError, BagError) as exc:
        print(f"cract demo: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2

    from cract_ros.conversions import bgr_to_image

    def payload(i: int) -> Callable[[], Any]:
        if src.raw is not None:
            return lambda: src.raw(i)

        def make() -> Any:
            msg = bgr_to_image(src.image(i), frame_id=bag_io.DEFAULT_FRAME_ID)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(src.stamps_ns[i], 1_000_000_000)
            return msg
        return make

    frames = [ReplayFrame(src.stamps_ns[i], payload(i)) for i in range(src.n)]
    first = src.image(0)
    print(f"cract demo: {src.name}, {src.n} frames {first.shape[1]}x{first.shape[0]} at {src.fps:.1f} fps "
          f"({src.note}); target {np.round(box0, 1).tolist()}; output {args.out}")
    print("starting the tracker node (config/cract.yaml, built-in default model; loading and warm-up take a while) ...")
    t_start = time.monotonic()

    def line(s: dict) -> None:
        print(f"  t={s['t']:4.0f}s  {s['rate_hz']:5.1f} Hz  latency {s['latency_ms']:6.1f} ms  "
              f"confidence {s['confidence']:.2f}  {s['state']:<14s}  dropped {s['dropped']}", flush=True)

    compressed = src.raw is not None and bag_io.Bag(args.source).topics[args.image_topic].msgtype == bag_io.COMPRESSED_TYPE
    try:
        replay = NodeReplay(args.image_topic, overrides, args.out, compressed=compressed)
    except Exception as exc:
        print(f"cract demo: error: cannot start the node: {exc}", file=sys.stderr)
        return 1
    try:
        replay.wait_ready()
        print(f"node ready after {time.monotonic() - t_start:.0f} s; setting the target on frame 0 and playing "
              f"{src.n - 1} frames as a camera on {replay.image_topic}", flush=True)
        result = replay.run(frames, box0, progress=line)
    except ReplayError as exc:
        print(f"cract demo: error: {exc}", file=sys.stderr)
        return 1
    finally:  # also on Ctrl-C: the node process is stopped, never left behind
        code = replay.close()

    res = bag_eval.realtime_result(result, src.name, src.groundtruth, result.stamps_ns)
    states = res.states
    sheet = contact_sheet(src, res.boxes, states, res.confidences, res.processed, args.out / "contact_sheet.png")
    bag_eval.write_outputs(args.out, res)
    sp = res.speed
    print("summary:")
    print(f"  {src.name}: {sp['processed']} of {sp['streamed']} frames after the first processed at "
          f"{sp['processed_rate_hz']:.1f} Hz (camera {src.fps:.1f} fps), {sp['dropped']} dropped; init {sp['init_s']:.1f} s")
    print(f"  latency: node p50 {bag_eval._fmt(sp['node_latency_ms_p50'], '.1f')} ms / p95 "
          f"{bag_eval._fmt(sp['node_latency_ms_p95'], '.1f')} ms; image stamp to answer p50 "
          f"{bag_eval._fmt(sp['e2e_latency_ms_p50'], '.1f')} ms / p95 {bag_eval._fmt(sp['e2e_latency_ms_p95'], '.1f')} ms")
    counts = {STATE_NAMES[s]: states.count(s) for s in sorted(set(states))}
    print(f"  states: {', '.join(f'{k} {v}' for k, v in counts.items())}")
    if res.scores:
        print(f"  success AUC {bag_eval._fmt(res.scores['auc'])}, precision@20 {bag_eval._fmt(res.scores['prec20'])} "
              f"over {res.scores['evaluated_frames']} frames (dropped frames scored with the last published box)")
    else:
        print("  no ground truth: not scored")
    print(f"  contact sheet: {sheet} (white: ground truth; the node's box green TRACKING, orange "
          f"LOW_CONFIDENCE, red LOST)")
    print(f"  boxes and per-frame results: {args.out / 'result.json'}; node log: {args.out / 'node.log'}")
    if code != 0:
        print(f"cract demo: the node exited with code {code} (log: {args.out / 'node.log'})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
