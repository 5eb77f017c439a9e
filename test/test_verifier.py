"""The appearance memory (cract_core/verifier.py) against hand-computed numbers, and the default
tracker's state on real footage: the target cut away to another scene, a blank view, its return."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from cract_core.config import default_config_path, load_config
from cract_core.errors import InvalidInputError
from cract_core.eval.metrics import frame_iou
from cract_core.tracker import Tracker, TrackState
from cract_core.verifier import AppearanceMemory, IdentityDoubt
from conftest import load_sequence

torch.set_num_threads(1)


def test_similarity_confidence_and_update_by_hand() -> None:
    f_init = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    memory = AppearanceMemory(f_init, learning_rate=0.25, floor=0.4)
    candidates = torch.tensor([[2.0, 0.0, 0.0, 0.0],    # same direction: cos 1
                               [1.0, 1.0, 0.0, 0.0],    # 45 degrees: cos 0.70711
                               [0.0, 0.0, 3.0, 0.0],    # orthogonal: cos 0
                               [-1.0, 0.0, 0.0, 0.0]])  # opposite: cos -1
    sim = memory.similarity(candidates)
    np.testing.assert_allclose(sim.numpy(), [1.0, 0.70710678, 0.0, -1.0], atol=1e-6)
    # (s - 0.4) / 0.6, clipped: 1, 0.51184, 0, 0
    np.testing.assert_allclose(memory.confidence(sim).numpy(), [1.0, 0.51184464, 0.0, 0.0], atol=1e-6)
    # prototype <- 0.75 [1, 0, 0, 0] + 0.25 [0, 0, 4, 0] = [0.75, 0, 1, 0]
    memory.update(torch.tensor([[0.0, 0.0, 4.0, 0.0]]))
    np.testing.assert_allclose(memory.prototype.numpy(), [[0.75, 0.0, 1.0, 0.0]])
    # cos([0, 0, 1, 0], [0.75, 0, 1, 0]) = 1 / 1.25 = 0.8
    np.testing.assert_allclose(memory.similarity(torch.tensor([[0.0, 0.0, 1.0, 0.0]])).numpy(), [0.8], atol=1e-6)


def test_memory_accepts_any_feature_shape_and_refuses_bad_settings() -> None:
    memory = AppearanceMemory(torch.ones(1, 2, 3, 3), learning_rate=0.1, floor=0.0)
    assert memory.similarity(torch.ones(5, 2, 3, 3)).shape == (5,)
    with pytest.raises(InvalidInputError, match="learning rate"):
        AppearanceMemory(torch.ones(1, 4), learning_rate=1.5, floor=0.4)
    with pytest.raises(InvalidInputError, match="floor"):
        AppearanceMemory(torch.ones(1, 4), learning_rate=0.1, floor=1.0)


@pytest.fixture(scope="module")
def default_cfg():
    cfg = load_config(default_config_path())
    assert cfg.crac.confidence == "memory"
    return cfg


def _run(cfg, images, first_box):
    with Tracker.from_config(cfg, device="cpu") as tracker:
        results = [tracker.init(images[0], first_box)]
        results += [tracker.track(image) for image in images[1:]]
    return results


def test_cut_away_says_lost_goes_back_and_refinds_the_target(shared_sequence, default_cfg) -> None:
    """otb_woman for 15 frames, 12 frames of another scene (uav_bike1 resized), then the woman again:
    the default is TRACKING on her, leaves TRACKING on the first foreign frame and is LOST by the
    third, its box back where she was last verified; it finds her again within 3 frames of her return.
    The proposal score alone (confidence: score, the old default's thresholds) stays TRACKING on
    that foreign scene (on others it drops: it is no judge either way)."""
    images, gt = load_sequence(shared_sequence("otb_woman"), 30)
    h, w = images[0].shape[:2]
    other, _ = load_sequence(shared_sequence("uav_bike1"), 12)
    k, gap = 15, len(other)
    spliced = images[:k] + [cv2.resize(img, (w, h)) for img in other] + images[k:]
    truth = np.concatenate([gt[:k], np.full((gap, 4), np.nan), gt[k:]])
    results = _run(default_cfg, spliced, gt[0])

    assert all(r.state == TrackState.TRACKING for r in results[:k])
    assert min(frame_iou(np.array([r.box for r in results[1:k]]), truth[1:k])) > 0.3
    away = results[k:k + gap]
    assert away[0].state != TrackState.TRACKING
    assert all(r.state == TrackState.LOST for r in away[default_cfg.tracker.lost_frames - 1:])
    # LOST holds the last verified box (the frame before the cut), not where the doubtful frames led
    np.testing.assert_allclose(away[-1].box, results[k - 1].box, atol=1e-6)
    back = results[k + gap:]
    found = [i for i, r in enumerate(back) if r.state == TrackState.TRACKING]
    assert found and found[0] < 3, [r.state.name for r in back]
    ious = frame_iou(np.array([r.box for r in back[found[0]:]]), truth[k + gap + found[0]:])
    assert np.median(ious) > 0.5

    score_cfg = replace(default_cfg, crac=replace(default_cfg.crac, confidence="score"),
                        tracker=replace(default_cfg.tracker, low_confidence=0.45, lost_confidence=0.2,
                                        found_confidence=0.5))
    proposals_alone = _run(score_cfg, spliced, gt[0])
    assert sum(r.state == TrackState.TRACKING for r in proposals_alone[k:k + gap]) > gap // 2


def test_blank_view_is_lost_and_the_boxes_match_proposals_alone_while_the_target_is_there(
        shared_sequence, default_cfg) -> None:
    images, gt = load_sequence(shared_sequence("otb_bird2"), 10)
    blank = [np.full_like(images[0], 127)] * 6
    results = _run(default_cfg, images + blank, gt[0])
    score_cfg = replace(default_cfg, crac=replace(default_cfg.crac, confidence="score"))
    alone = _run(score_cfg, images, gt[0])
    for a, b in zip(results[:len(images)], alone):
        assert a.state == TrackState.TRACKING
        # the same proposal; only the size update's rate follows the confidence (so the crops differ by a hair)
        np.testing.assert_allclose(a.box[:2] + a.box[2:] / 2, b.box[:2] + b.box[2:] / 2, atol=2.0)
        np.testing.assert_allclose(a.box[2:], b.box[2:], rtol=0.05)
    assert results[-1].state == TrackState.LOST
    assert results[-1].confidence < default_cfg.tracker.lost_confidence
    assert "confidence" in results[-1].timings and "similarity" in results[-1].details
    # I judged the first tracked frame of the bird (every 4th after, v+ >= 0.5) and never doubted it
    assert results[1].details["identity_of_chosen"] is not None
    assert not any(r.details["identity_doubted"] for r in results[1:len(images)])


def test_identity_veto_by_hand(default_cfg) -> None:
    """I's veto (identity_veto 0.03, identity_veto_similarity 0.8, low_confidence 0.5): a box I calls
    not-the-target that the memory finds only moderately like it falls below low_confidence, in
    proportion to v+; a box the memory is sure of, or one I does not reject, keeps its confidence."""
    assert (default_cfg.crac.identity_veto, default_cfg.crac.identity_veto_similarity,
            default_cfg.tracker.low_confidence) == (0.03, 0.8, 0.5)
    tracker = Tracker(default_cfg, device="cpu")
    veto = tracker._identity_veto
    assert veto(0.9, 0.9, 0.01) == 0.9                          # memory sure (similarity >= 0.8)
    assert veto(0.7, 0.75, 0.05) == 0.7                         # I does not reject (v+ >= 0.03)
    assert veto(0.7, 0.75, 0.01) == pytest.approx(0.5 * 0.01 / 0.03)  # = 0.1667
    assert veto(0.3, 0.58, 0.015) == pytest.approx(0.3 * 0.5)          # = 0.15
    tracker.close()


def test_identity_doubt_by_hand() -> None:
    """Doubted from the third v+ under 0.05 in a row; one frame at or over it ends the streak; the
    doubted confidence is min(confidence, 0.5) * v+ / 0.05; while LOST a candidate with v+ under
    0.05 keeps at most its v+ as confidence, the others keep theirs."""
    doubt = IdentityDoubt(threshold=0.05, frames=3)
    verdicts = [doubt.observe(v) for v in (0.01, 0.04, 0.02, 0.0, 0.05, 0.01, 0.9, 0.01, 0.01)]
    assert verdicts == [False, False, True, True, False, False, False, False, False]
    assert doubt.streak == 2
    doubt.observe(0.03)
    assert doubt.doubted
    doubt.reset()
    assert not doubt.doubted and doubt.streak == 0
    assert doubt.confidence(0.9, 0.02, ceiling=0.5) == pytest.approx(0.5 * 0.02 / 0.05)   # 0.2
    assert doubt.confidence(0.3, 0.01, ceiling=0.5) == pytest.approx(0.3 * 0.01 / 0.05)   # 0.06
    gated = doubt.gate(torch.tensor([0.9, 0.8, 0.7, 0.01]), torch.tensor([0.02, 0.05, 0.6, 0.04]), torch.zeros(4))
    np.testing.assert_allclose(gated.numpy(), [0.02, 0.8, 0.7, 0.01])
    off = IdentityDoubt(threshold=0.0, frames=1)
    assert not off.observe(0.0)
    np.testing.assert_allclose(off.gate(torch.tensor([0.9]), torch.tensor([0.0]), torch.zeros(1)).numpy(), [0.9])
    # with an entry similarity of 0.93: a streak on boxes the memory finds at least that like the
    # target starts no doubt; one started below it lasts while v+ stays low, whatever the similarity
    entry = IdentityDoubt(threshold=0.05, frames=2, entry_similarity=0.93)
    assert [entry.observe(v, s) for v, s in ((0.01, 0.95), (0.01, 0.96), (0.01, 0.92), (0.02, 0.99),
                                             (0.3, 0.99), (0.01, 0.99), (0.01, 0.99))] == \
        [False, False, True, True, False, False, False]
    gated = entry.gate(torch.tensor([0.9, 0.9, 0.9]), torch.tensor([0.01, 0.01, 0.6]), torch.tensor([0.95, 0.9, 0.5]))
    np.testing.assert_allclose(gated.numpy(), [0.9, 0.01, 0.9])
    with pytest.raises(InvalidInputError, match="entry similarity"):
        IdentityDoubt(threshold=0.05, frames=3, entry_similarity=0.0)
    # every 4th frame while v+ >= 0.5; every frame from a lower one on, until one is >= 0.5 again
    sparse = IdentityDoubt(threshold=0.05, frames=2, interval=4)
    due = []
    for v in (0.9, None, None, None, 0.3, 0.01, 0.02, 0.7, None, None, None, 0.9):
        due.append(sparse.due())
        sparse.observe(v) if v is not None else sparse.skip()
        if v == 0.02:
            assert sparse.doubted
    assert due == [True, False, False, False, True, True, True, True, False, False, False, True]
    assert not sparse.doubted
    with pytest.raises(InvalidInputError, match="interval"):
        IdentityDoubt(threshold=0.05, frames=3, interval=0)
    with pytest.raises(InvalidInputError, match="threshold"):
        IdentityDoubt(threshold=1.0, frames=3)
    with pytest.raises(InvalidInputError, match="frame"):
        IdentityDoubt(threshold=0.05, frames=0)
