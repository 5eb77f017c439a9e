"""A long run of the tracker node under a camera, with its resources recorded every second.

The node runs as its own process exactly as the launch file starts it (cract_ros.bags.replay.NodeReplay:
`--ros-args --params-file config/cract.yaml`, use_sim_time with /clock before every frame). A real
sequence, resized and looped, is published at the camera's rate (best effort, SensorDataQoS) for
a number of frames, while a schedule of events plays what an operator and a camera do over hours:

    set the target, clear it, set it again, the camera stops (the watchdog's LOST) and resumes,
    the view is blanked (the tracker loses the target: LOW_CONFIDENCE / LOST), the target is set
    again, cleared and set a last time.

Targets are set through ~/set_target with the ground-truth box of the frame being published and
that frame's stamp, asynchronously: the camera never waits for an answer (an initialisation takes
seconds on a CPU, and a live camera keeps running meanwhile).

Once a second the node process's RSS, thread count and open file descriptors (psutil) are sampled
with the frames published and answered so far; at the end the answers are binned by second into
the processed rate and the node's latency (its own latency_ms, and receipt minus publication).
`summarize` gives the figures docs/reliability.md reports (growth after the warm-up, latency p95 in the
first and the last minute) and `plot` draws them.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

# set_target refers to an answered frame at most this many frames old (the node keeps 30)
RECENT_FRAMES = 15
# the first target is set once this many frames are out
SET_TARGET_LAG = 3
# TrackedObject.state
STATE_NAMES = {0: "IDLE", 1: "TRACKING", 2: "LOW_CONFIDENCE", 3: "LOST"}


@dataclass(frozen=True)
class SoakEvent:
    """Something done at a frame index: 'set', 'clear', 'pause' (no frames for `seconds`) or 'blank'
    (grey frames for `frames` frames)."""

    frame: int
    kind: str
    seconds: float = 0.0
    frames: int = 0


def default_schedule(total: int, fps: float, pause_s: float) -> list[SoakEvent]:
    """Set, clear, re-set, camera pause (watchdog LOST), blank view (tracker LOST), re-set, clear,
    re-set: at fixed fractions of the run, so a short run and a long one play the same story."""
    at = lambda f: int(total * f)  # noqa: E731 (a local shorthand)
    blank = max(int(2 * fps), total // 20)  # long enough for LOW_CONFIDENCE frames to turn LOST
    return [SoakEvent(SET_TARGET_LAG, "set"), SoakEvent(at(0.2), "clear"), SoakEvent(at(0.25), "set"),
            SoakEvent(at(0.4), "pause", seconds=pause_s), SoakEvent(at(0.55), "blank", frames=blank),
            SoakEvent(at(0.55) + blank + int(fps), "set"), SoakEvent(at(0.85), "clear"), SoakEvent(at(0.88), "set")]


def load_scaled_sequence(seq_dir: Path, size: tuple[int, int], limit: Optional[int] = None) -> tuple[list[np.ndarray], np.ndarray]:
    """A sequence's frames resized to (width, height) and its ground-truth boxes scaled alike; frames
    without a box get the last known one (they are set as targets only where one exists)."""
    import cv2

    from cract_ros.bags.sequence import read_frames, read_groundtruth

    raw = list(read_frames(seq_dir, limit))
    gt = read_groundtruth(seq_dir)
    if gt is None:
        raise ValueError(f"{seq_dir} has no groundtruth.txt: the soak sets targets from it")
    sx, sy = size[0] / raw[0].shape[1], size[1] / raw[0].shape[0]
    frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in raw]
    boxes = np.asarray(gt[: len(frames)], dtype=np.float64) * np.array([sx, sy, sx, sy])
    for i in range(1, len(boxes)):
        if not np.all(np.isfinite(boxes[i])):
            boxes[i] = boxes[i - 1]
    return frames, boxes


@dataclass
class ResourceSample:
    t: float  # seconds since the camera started
    rss_mib: float
    threads: int
    fds: int
    published: int
    answered: int


@dataclass
class SoakResult:
    frames: int
    fps: float
    duration_s: float
    samples: list[ResourceSample]
    per_second: list[dict]  # t, processed_hz, node p50/p95 latency, e2e p95, states
    events: list[dict]  # what was done when (t, kind, and the answer of a set/clear)
    states: dict[str, int]
    node_diagnostics: dict
    log_path: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "summary": summarize(self)}, indent=1)


class ResourceSampler:
    """Samples a process once a second on a thread of its own (psutil)."""

    def __init__(self, pid: int, counts: Callable[[], tuple[int, int]], period_s: float = 1.0) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self._counts = counts
        self._period = period_s
        self._stop = threading.Event()
        self.samples: list[ResourceSample] = []
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def sample(self) -> ResourceSample:
        published, answered = self._counts()
        with self._process.oneshot():
            return ResourceSample(time.monotonic() - self._t0, self._process.memory_info().rss / 2**20,
                                  self._process.num_threads(), self._process.num_fds(), published, answered)

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception:  # the process ended (a failure the caller reports)
                return
            next_t += self._period
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def run_soak(frames_bgr: list[np.ndarray], boxes: np.ndarray, total: int, fps: float = 30.0,
             overrides: Optional[dict] = None, log_dir: Optional[Path] = None, pause_s: float = 3.0,
             settle_s: float = 3.0, schedule: Optional[list[SoakEvent]] = None,
             progress: Optional[Callable[[str], None]] = None) -> SoakResult:
    """Stream `total` frames (`frames_bgr` looped; `boxes[i]` the target's box in frame i) through
    a node at `fps`, playing `schedule` (default_schedule), then wait `settle_s` with the target
    cleared and take a last sample. `overrides`: node parameters (watchdog_timeout_s should be
    under `pause_s`)."""
    import rclpy
    from builtin_interfaces.msg import Time
    from rclpy.qos import qos_profile_sensor_data  # noqa: F401 (NodeReplay's camera QoS)
    from std_srvs.srv import Trigger

    from cract.srv import SetTarget
    from cract_ros.conversions import bgr_to_image
    from cract_ros.bags.replay import NodeReplay, ReplayError, ReplayFrame

    say = progress or (lambda text: None)
    schedule = sorted(schedule if schedule is not None else default_schedule(total, fps, pause_s), key=lambda e: e.frame)
    msgs = [bgr_to_image(f, frame_id="camera") for f in frames_bgr]
    h, w = frames_bgr[0].shape[:2]
    blank = bgr_to_image(np.full((h, w, 3), 127, np.uint8), frame_id="camera")
    start_ns = 1_000_000_000_000
    replay = NodeReplay(f"/cract_soak_{uuid.uuid4().hex[:8]}/image_raw", overrides, log_dir)  # a camera of its own
    clear_client = replay.node.create_client(Trigger, f"{replay.fqn}/clear_target")
    events: list[dict] = []
    pending: list[tuple[dict, Any]] = []  # (event record, future) of calls not answered yet
    published = 0
    publish_times: dict[int, float] = {}
    stamps: list[int] = []  # by frame index
    index_of_stamp: dict[int, int] = {}
    sampler: Optional[ResourceSampler] = None
    try:
        say("starting the node (model load and warm-up take a while on a CPU) ...")
        replay.wait_ready()
        sampler = ResourceSampler(replay.proc.pid, lambda: (published, len(replay.outputs)))
        period = 1.0 / fps
        blank_until = -1
        stamp_ns = start_ns
        t_start = time.monotonic()
        sampler.start()
        next_t = t_start
        event_iter = iter(schedule)
        event = next(event_iter, None)
        for i in range(total):
            while event is not None and event.frame <= i:
                record = {"t": time.monotonic() - t_start, "frame": i, "kind": event.kind}
                if event.kind == "set":
                    # the box in the newest frame the node has answered (so it has that frame: a
                    # best-effort camera's frames can be lost on the way), by the frame's stamp, as
                    # a detector or an operator's click on the debug image gives it; when the node
                    # lags so far that the frame may have left its buffer (30 frames), the box of
                    # the frame just published with stamp 0 (the node's newest frame)
                    # (answers to frames only: the watchdog's LOST and a clear's IDLE carry the clock's
                    # time, which is a frame's stamp under /clock but maybe of a frame never received)
                    answered = [index_of_stamp[o.stamp_ns] for o in replay.outputs[-5:]
                                if o.stamp_ns in index_of_stamp and o.latency_ms > 0]
                    recent = bool(answered) and i - answered[-1] <= RECENT_FRAMES
                    j = answered[-1] if recent else max(0, i - 1)
                    box = boxes[j % len(boxes)]
                    req = SetTarget.Request(x=float(box[0]), y=float(box[1]), width=float(box[2]), height=float(box[3]))
                    if recent:
                        req.stamp = Time(sec=stamps[j] // 1_000_000_000, nanosec=stamps[j] % 1_000_000_000)
                    pending.append((record, replay.set_target.call_async(req)))
                    say(f"  frame {i}: set_target {np.round(box, 1).tolist()}")
                elif event.kind == "clear":
                    pending.append((record, clear_client.call_async(Trigger.Request())))
                    say(f"  frame {i}: clear_target")
                elif event.kind == "pause":
                    say(f"  frame {i}: camera stops for {event.seconds:g} s")
                    time.sleep(event.seconds)
                    next_t = time.monotonic()
                elif event.kind == "blank":
                    blank_until = i + event.frames
                    say(f"  frame {i}: grey frames for {event.frames} frames")
                events.append(record)
                event = next(event_iter, None)
            # stamps follow the wall clock (a pause leaves a gap, as a real camera's would)
            stamp_ns = start_ns + int((time.monotonic() - t_start) * 1e9)
            msg = blank if i < blank_until else msgs[i % len(msgs)]
            msg.header.stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
            stamps.append(stamp_ns)
            index_of_stamp[stamp_ns] = i
            publish_times[stamp_ns] = replay.publish(ReplayFrame(stamp_ns, lambda m=msg: m))
            published += 1
            for record, future in [p for p in pending if p[1].done()]:
                res = future.result()
                record.update(success=bool(res.success), message=str(res.message), answered_t=time.monotonic() - t_start)
                pending.remove((record, future))
            if replay.proc.poll() is not None:
                raise ReplayError(f"the node exited with {replay.proc.returncode} during the soak (log: {replay.log_path})")
            if i % int(10 * fps) == 0:
                say(f"  t={time.monotonic() - t_start:6.1f} s  frame {i}/{total}  answers {len(replay.outputs)}  "
                    f"RSS {sampler.samples[-1].rss_mib if sampler.samples else float('nan'):.0f} MiB")
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
        duration = time.monotonic() - t_start
        # the end: answers still due, the target cleared, a quiet moment, a last sample
        deadline = time.monotonic() + 120.0
        while pending and time.monotonic() < deadline:
            for record, future in [p for p in pending if p[1].done()]:
                res = future.result()
                record.update(success=bool(res.success), message=str(res.message), answered_t=time.monotonic() - t_start)
                pending.remove((record, future))
            time.sleep(0.05)
        future = clear_client.call_async(Trigger.Request())
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(settle_s)
        sampler.stop()
        sampler.samples.append(sampler.sample())
        diag = replay.latest_diagnostics() or {}
    finally:
        if sampler is not None:
            sampler.stop()
        code = replay.close()
    outputs = list(replay.outputs)
    if code != 0:
        raise ReplayError(f"the node exited with code {code} at shutdown (log: {replay.log_path})")
    states = {name: sum(1 for o in outputs if o.state == s) for s, name in STATE_NAMES.items()}
    return SoakResult(total, fps, duration, sampler.samples, per_second(outputs, publish_times, t_start),
                      events, states, diag, str(replay.log_path) if replay.log_path else None)


def per_second(outputs: list, publish_times: dict[int, float], t_start: float) -> list[dict]:
    """The node's answers binned by the second they arrived in: rate, latency, states."""
    bins: dict[int, list] = {}
    for o in outputs:
        if o.receipt >= t_start:
            bins.setdefault(int(o.receipt - t_start), []).append(o)
    rows = []
    for second in range(max(bins) + 1 if bins else 0):
        answers = bins.get(second, [])
        node = [o.latency_ms for o in answers]
        e2e = [(o.receipt - publish_times[o.stamp_ns]) * 1e3 for o in answers if o.stamp_ns in publish_times]
        rows.append({"t": second, "processed_hz": len(answers),
                     "latency_ms_p50": float(np.percentile(node, 50)) if node else None,
                     "latency_ms_p95": float(np.percentile(node, 95)) if node else None,
                     "e2e_ms_p95": float(np.percentile(e2e, 95)) if e2e else None,
                     "latencies_ms": [round(v, 2) for v in node],
                     "states": [o.state for o in answers]})
    return rows


def summarize(result: SoakResult, warmup_s: float = 20.0, window_s: float = 60.0) -> dict:
    """Growth of RSS, threads and descriptors from the end of the warm-up to the end (the last
    sample, taken after the quiet settle), and the node's latency p95 (its own latency_ms) over the
    first `window_s` seconds after the warm-up and the last `window_s` seconds, frames with a
    target only (IDLE answers left out)."""
    samples = result.samples
    after = [s for s in samples if s.t >= warmup_s] or samples[-1:]
    base, end = after[0], samples[-1]
    tracked = [(r["t"], r) for r in result.per_second if r["latency_ms_p95"] is not None]

    def window_p95(rows: list[tuple[int, dict]]) -> Optional[float]:
        # frames with a target only: an IDLE frame costs a conversion, not a tracker step
        values = [v for _, r in rows for v, state in zip(r["latencies_ms"], r["states"]) if state != 0]
        return float(np.percentile(values, 95)) if values else None

    t_last = tracked[-1][0] if tracked else 0
    first = [(t, r) for t, r in tracked if warmup_s <= t < warmup_s + window_s]
    last = [(t, r) for t, r in tracked if t > t_last - window_s]
    p95_first, p95_last = window_p95(first), window_p95(last)
    return {
        "frames": result.frames, "fps": result.fps, "duration_s": round(result.duration_s, 1),
        "answers": int(sum(r["processed_hz"] for r in result.per_second)),
        "processed_hz_mean": round(float(np.mean([r["processed_hz"] for r in result.per_second])), 2) if result.per_second else None,
        "warmup_s": warmup_s,
        "rss_mib_start": round(samples[0].rss_mib, 1), "rss_mib_after_warmup": round(base.rss_mib, 1),
        "rss_mib_end": round(end.rss_mib, 1), "rss_mib_max": round(max(s.rss_mib for s in samples), 1),
        "rss_growth_mib": round(end.rss_mib - base.rss_mib, 1),
        "threads_after_warmup": base.threads, "threads_end": end.threads, "threads_max": max(s.threads for s in after),
        "fds_after_warmup": base.fds, "fds_end": end.fds, "fds_max": max(s.fds for s in after),
        "latency_ms_p95_first_window": None if p95_first is None else round(p95_first, 1),
        "latency_ms_p95_last_window": None if p95_last is None else round(p95_last, 1),
        "latency_p95_drift": None if not (p95_first and p95_last) else round(p95_last / p95_first - 1.0, 3),
        "window_s": window_s, "states": result.states,
        "targets_set": sum(1 for e in result.events if e["kind"] == "set" and e.get("success")),
        "node_dropped": result.node_diagnostics.get("dropped"), "node_errors": result.node_diagnostics.get("errors"),
    }


def plot(result: SoakResult, path: Path, title: str = "") -> Path:
    """RSS, threads and descriptors, processed rate and latency over time, with the events marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.samples
    t = [x.t for x in s]
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    axes[0].plot(t, [x.rss_mib for x in s], color="tab:blue")
    axes[0].set_ylabel("RSS (MiB)")
    axes[1].plot(t, [x.threads for x in s], label="threads", color="tab:green")
    axes[1].plot(t, [x.fds for x in s], label="open fds", color="tab:orange")
    axes[1].set_ylabel("count")
    axes[1].legend(loc="center right")
    ps = result.per_second
    axes[2].plot([r["t"] for r in ps], [r["processed_hz"] for r in ps], color="tab:purple")
    axes[2].set_ylabel("processed (Hz)")
    axes[3].plot([r["t"] for r in ps], [r["latency_ms_p50"] if r["latency_ms_p50"] is not None else np.nan for r in ps],
                 label="node p50", color="tab:gray")
    axes[3].plot([r["t"] for r in ps], [r["latency_ms_p95"] if r["latency_ms_p95"] is not None else np.nan for r in ps],
                 label="node p95", color="tab:red")
    axes[3].set_yscale("log")  # the first frame after an initialisation waited for it: seconds, not ms
    axes[3].set_ylabel("latency (ms, log)")
    axes[3].set_xlabel("seconds since the camera started")
    axes[3].legend(loc="upper right")
    for ax in axes:
        for e in result.events:
            ax.axvline(e["t"], color="black", alpha=0.25, lw=0.8)
    for e in result.events:
        axes[0].annotate(e["kind"], (e["t"], 1.0), xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                         va="top", ha="right")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
