"""OnlineLearner: sampling, memory and schedule, fc-only updates, sync/async determinism, concurrency.

The learner tests run on synthetic cached features (64 channels at 3x3) so that they are quick; the
real-frame fit at the default shape is in test_discriminator.py.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np
import pytest
import torch

from cract_core import discriminator as D
from cract_core.config import OnlineConfig
from cract_core.geometry import iou
from cract_core.online import OnlineLearner, sample_boxes

C = 64
S = 3
WORKER = "cract-online-update"


# one torch thread: see conftest.torch_threads
pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def _samples(gen: torch.Generator, n_pos: int, n_neg: int, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.randn(n_pos, C, S, S, generator=gen) * 0.5 + 0.6 + shift
    neg = torch.randn(n_neg, C, S, S, generator=gen) * 0.5
    return torch.cat([pos, neg]), torch.cat([torch.ones(n_pos), torch.zeros(n_neg)])


@pytest.fixture(scope="module")
def data() -> dict:
    gen = torch.Generator().manual_seed(0)
    first = _samples(gen, 200, 1000)
    frames = {t: _samples(gen, 50, 200, shift=0.05 * t) for t in range(0, 60)}
    probe = _samples(gen, 5, 5)[0]
    return {"first": first, "frames": frames, "probe": probe}


def _learner(mode: str = "sync", **cfg_kw) -> OnlineLearner:
    return OnlineLearner(OnlineConfig(**cfg_kw), in_channels=C, mode=mode, spatial_size=S)


# --------------------------------------------------------------------------- sample_boxes

def test_sample_boxes_counts_ious_and_determinism() -> None:
    target = np.array([100.0, 80.0, 60.0, 40.0])
    boxes, labels = sample_boxes(target, 200, 1000, np.random.default_rng(5), 0.7, 0.3, bounds=(640, 480))
    assert boxes.shape == (1200, 4) and labels.shape == (1200,)
    assert labels.dtype == np.float32 and int(labels.sum()) == 200 and np.all(labels[:200] == 1)
    ious = iou(boxes, target[None], fmt="xywh")
    assert ious[labels == 1].min() >= 0.7
    assert ious[labels == 0].max() <= 0.3
    assert np.all(boxes[:, 2:] > 0)
    # negative centres in the image; some near the target (within 2 sizes), some far away
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    neg_c = centres[labels == 0]
    assert np.all((neg_c >= 0) & (neg_c <= [640, 480]))
    dist = np.abs(neg_c - (target[:2] + target[2:] / 2)) / target[2:]
    near = np.all(dist <= 2.0, axis=1)
    assert 0.3 < near.mean() < 0.8
    assert (~near).sum() > 200
    # deterministic for a seeded Generator, different for another seed
    again, _ = sample_boxes(target, 200, 1000, np.random.default_rng(5), 0.7, 0.3, bounds=(640, 480))
    other, _ = sample_boxes(target, 200, 1000, np.random.default_rng(6), 0.7, 0.3, bounds=(640, 480))
    assert np.array_equal(boxes, again) and not np.array_equal(boxes, other)


def test_sample_boxes_without_bounds_and_other_thresholds() -> None:
    target = np.array([10.0, 10.0, 20.0, 80.0])
    boxes, labels = sample_boxes(target, 50, 200, np.random.default_rng(0), pos_iou=0.8, neg_iou=0.1)
    ious = iou(boxes, target[None], fmt="xywh")
    assert len(boxes) == 250 and ious[:50].min() >= 0.8 and ious[50:].max() <= 0.1


def test_sample_boxes_impossible_negatives_return_fewer() -> None:
    # A target filling the image leaves no box with its centre inside and IoU <= 0.3 of some
    # sizes; the sampler must stop (not loop) and return what it found, all valid.
    target = np.array([0.0, 0.0, 100.0, 100.0])
    boxes, labels = sample_boxes(target, 10, 50, np.random.default_rng(0), bounds=(100, 100), max_rounds=3)
    ious = iou(boxes, target[None], fmt="xywh")
    assert int(labels.sum()) == 10
    assert np.all(ious[labels == 0] <= 0.3) and len(boxes) <= 60


def test_sample_boxes_rejects_bad_target() -> None:
    with pytest.raises(ValueError):
        sample_boxes([0, 0, 0, 10], 5, 5, np.random.default_rng(0))
    with pytest.raises(ValueError):
        sample_boxes([0, 0, float("nan"), 10], 5, 5, np.random.default_rng(0))


# --------------------------------------------------------------------------- learner basics

def test_fc_update_leaves_conv_bit_identical(data) -> None:
    learner = _learner()
    learner.initialize(*data["first"])
    conv = learner.conv_params
    w0, b0 = conv.weight.clone(), conv.bias.clone()
    fc_before = learner.fc_weights
    fc_before_tensors = [t.clone() for t in fc_before.tensors()]
    learner.add_samples(10, *data["frames"][10])
    assert learner.maybe_update(10, confidence=0.9)
    assert learner.conv_params is conv
    assert torch.equal(conv.weight, w0) and torch.equal(conv.bias, b0)
    # the fc layers did change, in a new snapshot; the old one is untouched
    fc_after = learner.fc_weights
    assert fc_after is not fc_before and fc_after.version == fc_before.version + 1
    assert not torch.equal(fc_after.fc1_weight, fc_before.fc1_weight)
    assert all(torch.equal(a, b) for a, b in zip(fc_before.tensors(), fc_before_tensors))
    assert fc_before.checksum() == fc_before.built_checksum
    rec = learner.updates[-1]
    assert rec.kind == "long" and rec.n_pos == 250 and rec.n_neg == 1200
    assert rec.stats.loss_history[-1] < rec.stats.loss_history[0]


def test_schedule_long_short_and_memory(data) -> None:
    cfg = dict(update_interval=10, long_term_frames=3, short_term_frames=2, short_term_threshold=0.35)
    learner = _learner(**cfg)
    learner.initialize(*data["first"], frame_index=0)
    frames = data["frames"]
    assert not learner.maybe_update(10, 0.9)  # due, but nothing new to learn from
    for t in (1, 2, 3, 4):
        learner.add_samples(t, *frames[t], reliable=True)
    learner.add_samples(5, *frames[5], reliable=False)  # dropped (MDNet keeps successful frames only)
    assert not learner.maybe_update(5, 0.9)  # not due, confident
    pos, neg = learner.training_set("long")
    assert [len(p) for p in pos] == [200, 50, 50, 50]  # first frame + the last 3 reliable frames
    assert [len(n) for n in neg] == [1000, 200, 200]  # first frame + the last 2 frames
    pos_s, _ = learner.training_set("short")
    assert [len(p) for p in pos_s] == [200, 50, 50]
    # short-term at once on low confidence, but not again until new samples arrive
    assert learner.maybe_update(6, 0.2) and learner.updates[-1].kind == "short"
    assert not learner.maybe_update(7, 0.2)
    learner.add_samples(8, *frames[8])
    assert learner.maybe_update(8, 0.1) and learner.updates[-1].n_pos == 300
    # long-term on the K-th frame from the start
    assert not learner.maybe_update(9, 0.9)
    assert learner.maybe_update(10, 0.9) and learner.updates[-1].kind == "long"
    assert learner.version == 4
    disabled = _learner(enabled=False)
    disabled.initialize(*data["first"])
    disabled.add_samples(10, *frames[10])
    assert not disabled.maybe_update(10, 0.9)


def test_training_set_cap_keeps_whole_frames_spread_over_memory(data) -> None:
    learner = _learner(long_term_frames=10, short_term_frames=10, update_max_positives=200 + 3 * 50,
                       update_max_negatives=1000 + 2 * 200)
    learner.initialize(*data["first"])
    for t in range(1, 11):
        learner.add_samples(t, *data["frames"][t])
    pos, neg = learner.training_set("long")
    assert [len(p) for p in pos] == [200, 50, 50, 50] and [len(n) for n in neg] == [1000, 200, 200]
    # whole frames spread over the memory: oldest, middle, newest for positives; oldest, newest for negatives
    pos_frames, neg_frames = learner._training_frames("long")
    assert [f.index for f in pos_frames][0] == 1 and [f.index for f in pos_frames][-1] == 10
    assert 1 < pos_frames[1].index < 10
    assert [f.index for f in neg_frames] == [1, 10]
    # and the stored activations are the fixed conv's activations of exactly those frames' samples
    feats, labels = data["frames"][10]
    expected = D.conv_forward(feats, learner.conv_params).flatten(1)
    assert torch.equal(pos[-1], expected[labels > 0.5]) and torch.equal(neg[-1], expected[labels < 0.5])
    learner.request_update(10, "long")
    assert (learner.updates[-1].n_pos, learner.updates[-1].n_neg) == (350, 1400)


def test_errors_before_initialize_and_bad_shapes(data) -> None:
    learner = _learner()
    feats, labels = data["first"]
    with pytest.raises(RuntimeError):
        learner.score(feats[:2])
    with pytest.raises(RuntimeError):
        learner.add_samples(1, feats[:2], labels[:2])
    with pytest.raises(ValueError):
        learner.initialize(feats[:, :10], labels)
    with pytest.raises(ValueError):
        learner.initialize(feats[:200], labels[:200])  # positives only
    with pytest.raises(ValueError):
        OnlineLearner(OnlineConfig(), C, mode="threads")


def _wait_until(cond, timeout: float = 60.0) -> None:
    """Wait for a state change of the worker (a generous deadline against hangs, not a timing test)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "worker did not reach the expected state"
        time.sleep(0.001)


# --------------------------------------------------------------------------- determinism

def _drive(learner: OnlineLearner, data: dict, frames: int, sync_shift: Optional[int] = None) -> list:
    """Run a learner through `frames` frames; samples and updates every K=10 frames.

    sync_shift=L (sync learner only): the update that frame t asks for is applied at the start of
    frame t + L instead, before that frame's scoring; no samples arrive in between (L < K), so it
    trains on exactly the memory the frame-t request saw.
    """
    out = []
    for t in range(1, frames):
        learner.begin_frame(t)
        if sync_shift and t > sync_shift and (t - sync_shift) % 10 == 0:
            learner.request_update(t - sync_shift, "long")
        out.append((learner.version, learner.score(data["probe"])))
        if t % 10 == 0:
            learner.add_samples(t, *data["frames"][t])
            if not sync_shift:
                learner.maybe_update(t, 0.9)
    return out


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_delayed_async_equals_shifted_sync(data, delay: int) -> None:
    sync = _learner("sync")
    sync.initialize(*data["first"])
    expected = _drive(sync, data, 36, sync_shift=delay)
    with _learner("async", async_swap_delay=delay) as learner:
        learner.initialize(*data["first"])
        got = _drive(learner, data, 36)
        threads = {rec.thread for rec in learner.updates}
    assert threads == {WORKER}  # the solves really ran on the worker
    versions = [v for v, _ in got]
    assert versions == [v for v, _ in expected]
    for (_, a), (_, b) in zip(got, expected):
        assert torch.equal(a, b)
    # version steps exactly at frame start + L (for L = 0: already during frame start, so the
    # next frame is the first to see it, as in sync mode)
    for start in (10, 20, 30):
        first_new = start + max(delay, 1)
        idx = first_new - 1  # got[i] is frame i + 1
        assert versions[idx] == versions[idx - 1] + 1, (start, versions)
    assert versions[-1] == 4


def test_async_gate_holds_update_and_newest_request_wins(data) -> None:
    gate = threading.Event()
    with _learner("async") as learner:
        learner.initialize(*data["first"])
        learner.solve_gate = gate
        v0 = learner.version
        learner.add_samples(10, *data["frames"][10])
        assert learner.maybe_update(10, 0.9)
        _wait_until(lambda: learner.solving)  # taken by the worker, which now waits on the gate
        for t in range(11, 40):
            learner.begin_frame(t)
            learner.score(data["probe"])
            if t % 10 == 0:
                learner.add_samples(t, *data["frames"][t])
                assert learner.maybe_update(t, 0.9)
        assert learner.version == v0  # held: tracking went on with the old weights
        gate.set()
        assert learner.wait_idle(timeout=60)
        assert learner.version == v0  # finished, but only swapped in between frames
        learner.begin_frame(40)
        # Only the newest request (frame 30) was solved: 10 waited at the gate and was superseded,
        # 20 never started.  Its training set is frame 30's memory.
        assert learner.version == v0 + 1
        assert [r.frame_index for r in learner.updates] == [30]
        assert learner.updates[-1].n_pos == 200 + 3 * 50


def test_reinitialize_discards_inflight_update(data) -> None:
    gate = threading.Event()
    with _learner("async") as learner:
        learner.initialize(*data["first"])
        learner.solve_gate = gate
        learner.add_samples(10, *data["frames"][10])
        learner.maybe_update(10, 0.9)
        learner.initialize(*data["first"])  # new target while the old one's update is held
        v = learner.version
        snap = learner.fc_weights
        gate.set()
        assert learner.wait_idle(timeout=60)
        learner.begin_frame(11)
        assert learner.version == v and learner.fc_weights is snap


def test_worker_error_is_kept_and_worker_goes_on(data) -> None:
    with _learner("async") as learner:
        learner.initialize(*data["first"])
        calls = []

        def hook(req) -> None:
            calls.append(req.frame_index)
            if len(calls) == 1:
                raise RuntimeError("boom")

        learner.solve_hook = hook
        learner.add_samples(10, *data["frames"][10])
        learner.maybe_update(10, 0.9)
        assert learner.wait_idle(timeout=60)
        assert isinstance(learner.last_error, RuntimeError)
        v = learner.version
        learner.add_samples(20, *data["frames"][20])
        learner.maybe_update(20, 0.9)
        assert learner.wait_idle(timeout=60)
        learner.begin_frame(21)
        assert learner.version == v + 1 and calls == [10, 20]


def test_close_while_gate_held_does_not_hang(data) -> None:
    learner = _learner("async")
    learner.initialize(*data["first"])
    learner.solve_gate = threading.Event()  # never set
    learner.add_samples(10, *data["frames"][10])
    learner.maybe_update(10, 0.9)
    learner.close(timeout=10)
    assert learner._worker is not None and not learner._worker.is_alive()


# --------------------------------------------------------------------------- concurrency

def test_concurrent_swaps_never_tear_weights(data) -> None:
    """The worker solves and publishes while the hot loop swaps, reads and scores 2,000 times.

    Solves are made slow (a hook that sleeps, and a gate that another thread toggles), so that
    reads overlap solves.  Every snapshot the hot loop uses must still have the checksum it was
    built with, the score must be what that snapshot gives, versions never go back, and both
    threads end cleanly.
    """
    feats = data["probe"]
    errors: list[BaseException] = []
    learner = _learner("async")
    learner.initialize(*data["first"])
    gate = threading.Event()
    gate.set()
    learner.solve_gate = gate
    learner.solve_hook = lambda req: time.sleep(0.005)
    stop = threading.Event()

    def toggler() -> None:
        try:
            while not stop.is_set():
                gate.clear()
                time.sleep(0.002)
                gate.set()
                time.sleep(0.002)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            gate.set()

    tog = threading.Thread(target=toggler, daemon=True)
    tog.start()
    seen_versions = []
    checked = 0
    try:
        last_version = learner.version
        for i in range(1, 2001):
            learner.begin_frame(i)
            snap = learner.fc_weights
            tau = learner.score(feats)
            # the snapshot used was whole and unchanged since it was built
            assert snap.checksum() == snap.built_checksum, f"torn weights at iteration {i}"
            assert snap.version >= last_version
            last_version = snap.version
            seen_versions.append(snap.version)
            if i % 25 == 0:
                assert torch.equal(tau, D.score(feats, learner.conv_params, snap))
                checked += 1
            if i % 10 == 0:
                learner.add_samples(i, *data["frames"][(i // 10) % 60])
                learner.maybe_update(i, 0.9)
            if i == 1000:
                # Make sure at least one solve finished during the loop, without timing assumptions.
                assert learner.wait_idle(timeout=60)
    except BaseException as exc:
        errors.append(exc)
    finally:
        stop.set()
        tog.join(timeout=10)
        learner.close(timeout=30)
    assert not errors, errors
    assert not tog.is_alive() and not learner._worker.is_alive(), "deadlock: a thread did not stop"
    assert learner.last_error is None
    assert len(set(seen_versions)) >= 2 and checked == 80
    # every published snapshot (even ones never swapped in) is intact too
    for rec in learner.updates:
        assert rec.thread == WORKER
    final = learner.fc_weights
    assert final.checksum() == final.built_checksum


def test_async_projects_memory_on_the_worker_and_bounds_raw_frames(data) -> None:
    gate = threading.Event()
    with _learner("async") as learner:
        learner.initialize(*data["first"])
        learner.solve_gate = gate
        for t in range(1, 7):
            learner.add_samples(t, *data["frames"][t])
        frames = list(learner._long)
        # the hot path left the 1x1 conv to the worker, but never for more than MAX_UNPROJECTED frames
        from cract_core.online import MAX_UNPROJECTED
        assert sum(not f.projected for f in frames) == MAX_UNPROJECTED
        assert all(f.projected for f in frames[: 6 - MAX_UNPROJECTED])
        learner.request_update(6, "long")
        gate.set()
        assert learner.wait_idle(timeout=60)
        assert all(f.projected for f in frames)  # the solve projected the rest, on the worker
    sync = _learner("sync")
    sync.initialize(*data["first"])
    sync.add_samples(1, *data["frames"][1])
    assert sync._long[-1].projected
    # same activations whichever thread projected them
    assert torch.equal(sync._long[-1].hidden()[0], frames[0].hidden()[0])
