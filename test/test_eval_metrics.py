"""Metrics against values worked out by hand on small made-up sequences (cract_core/eval/metrics.py)."""
from __future__ import annotations

import numpy as np
import pytest

from cract_core.eval import metrics as M


def _static(n: int, box=(10.0, 10.0, 10.0, 10.0)) -> np.ndarray:
    return np.tile(np.asarray(box, dtype=np.float64), (n, 1))


# ------------------------------------------------------------------------------- one-pass


@pytest.mark.parametrize("convention", ["exclude", "otb_toolkit"])
def test_always_exact_tracker_scores_20_of_21(convention):
    # IoU is never > 1, so the threshold t = 1.0 is never passed: AUC = 20/21, not 1.
    gt = np.array([[10, 10, 20, 30], [12, 11, 20, 30], [15, 13, 22, 31]], dtype=np.float64)
    s = M.score_sequence(gt.copy(), gt, convention=convention)
    assert s.auc == pytest.approx(20 / 21)
    np.testing.assert_array_equal(s.success_curve, [1.0] * 20 + [0.0])
    assert s.prec20 == 1.0
    np.testing.assert_array_equal(s.precision_curve, np.ones(51))
    assert s.norm_prec == 1.0
    assert (s.ao, s.sr50, s.sr75) == (1.0, 1.0, 1.0)
    assert s.evaluated_frames == 3


def test_thresholds_are_the_published_ones():
    np.testing.assert_allclose(M.IOU_THRESHOLDS, np.arange(21) * 0.05, atol=1e-12)
    np.testing.assert_array_equal(M.CENTER_THRESHOLDS, np.arange(51))
    assert M.NORM_THRESHOLDS[-1] == 0.5 and len(M.NORM_THRESHOLDS) == 51


def test_shift_by_half_a_box_width():
    # 10x10 box moved 5 px right: intersection 5x10 = 50, union 150, IoU = 1/3 every frame.
    gt = _static(4)
    pred = gt + [5, 0, 0, 0]
    s = M.score_sequence(pred, gt)
    np.testing.assert_allclose(M.frame_iou(pred, gt), 1 / 3)
    # IoU 1/3 > t for t = 0, 0.05, ..., 0.30 (7 thresholds of 21).
    np.testing.assert_array_equal(s.success_curve, [1.0] * 7 + [0.0] * 14)
    assert s.auc == pytest.approx(7 / 21)
    # Centre error 5 px: fails t = 0..4, passes t = 5..50 (46 of 51).
    np.testing.assert_array_equal(s.precision_curve, [0.0] * 5 + [1.0] * 46)
    assert s.prec20 == 1.0
    # Normalized error 5/10 = 0.5: only the last threshold 0.5 passes.
    assert s.norm_prec == pytest.approx(1 / 51)
    assert s.ao == pytest.approx(1 / 3) and s.sr50 == 0.0 and s.sr75 == 0.0


def test_iou_exactly_on_a_threshold_does_not_count():
    # IoU exactly 0.5: passes t = 0 .. 0.45 (10 thresholds), fails t = 0.5 (strictly greater).
    gt = np.array([[0, 0, 10, 10]], dtype=np.float64)
    pred = np.array([[0, 0, 5, 10]], dtype=np.float64)
    s = M.score_sequence(pred, gt)
    assert s.auc == pytest.approx(10 / 21)
    assert s.sr50 == 0.0  # GOT-10k's SR also counts IoU > 0.5


def test_precision_counts_error_equal_to_20px_and_not_above():
    gt = _static(2, (100, 100, 40, 40))
    pred = np.array([[120, 100, 40, 40], [120.5, 100, 40, 40]], dtype=np.float64)  # 20 px, 20.5 px
    s = M.score_sequence(pred, gt)
    assert s.prec20 == 0.5
    np.testing.assert_allclose(M.center_error(pred, gt), [20.0, 20.5])


def test_absent_frames_are_excluded_by_default():
    gt = _static(4)
    gt[2] = np.nan  # unknown box (UAV123 NaN row)
    absent = np.array([False, False, False, True])  # flagged absent (LaSOT / GOT-10k)
    pred = _static(4)
    pred[2:] = [500, 500, 10, 10]  # whatever the tracker says there is not scored
    s = M.score_sequence(pred, gt, absent)
    assert s.evaluated_frames == 2 and s.frames == 4
    assert s.auc == pytest.approx(20 / 21)
    assert s.prec20 == 1.0


def test_absent_frames_under_the_otb_toolkit_convention():
    # The MATLAB toolkit keeps invalid-ground-truth frames in the denominator with overlap -1
    # (a failure at every threshold) and centre error -1 (a success at every threshold).
    gt = _static(4)
    gt[2:] = np.nan
    pred = _static(4)
    s = M.score_sequence(pred, gt, convention="otb_toolkit")
    assert s.evaluated_frames == 4
    assert s.auc == pytest.approx(0.5 * 20 / 21)
    assert s.prec20 == 1.0


def test_empty_prediction_counts_iou_zero_and_infinite_error():
    gt = _static(4)
    pred = _static(4)
    pred[1] = np.nan  # no box
    pred[3] = [10, 10, 0, 10]  # zero width
    assert M.frame_iou(pred, gt).tolist() == [1.0, 0.0, 1.0, 0.0]
    ce = M.center_error(pred, gt)
    assert ce[0] == 0.0 and np.isinf(ce[1]) and np.isinf(ce[3])
    s = M.score_sequence(pred, gt)
    assert s.auc == pytest.approx(0.5 * 20 / 21)
    assert s.prec20 == 0.5
    np.testing.assert_array_equal(s.precision_curve, np.full(51, 0.5))
    assert s.ao == 0.5


def test_otb_toolkit_carries_the_previous_prediction_over_an_empty_one():
    gt = _static(4)
    pred = _static(4)
    pred[1] = np.nan
    pred[3] = [10, 10, 0, 10]
    s = M.score_sequence(pred, gt, convention="otb_toolkit")
    assert s.auc == pytest.approx(20 / 21)  # frames 1 and 3 take frame 0's / 2's (exact) box


def test_normalized_precision_by_hand():
    # gt 100 x 50 at (0, 0), centre (50, 25).
    gt = np.array([[0, 0, 100, 50], [0, 0, 100, 50]], dtype=np.float64)
    # Frame 0: 11.5 px right -> 11.5 / 100 = 0.115: passes t = 0.12 .. 0.50 (39 of 51).
    # Frame 1: 10 px down -> 10 / 50 = 0.2 (per axis: the height normalises y): passes t = 0.20 .. 0.50 (31).
    pred = np.array([[11.5, 0, 100, 50], [0, 10, 100, 50]], dtype=np.float64)
    np.testing.assert_allclose(M.normalized_center_error(pred, gt), [0.115, 0.2])
    s = M.score_sequence(pred, gt)
    assert s.norm_prec == pytest.approx((39 / 51 + 31 / 51) / 2)
    assert s.norm_precision_curve[11] == 0.0 and s.norm_precision_curve[12] == 0.5 and s.norm_precision_curve[20] == 1.0


def test_got10k_scores_skip_first_frame_and_pool_frames():
    gt = _static(5)
    pred = _static(5)
    pred[1] = [15, 10, 10, 10]  # IoU 1/3
    pred[2] = [100, 100, 10, 10]  # IoU 0
    pred[0] = [100, 100, 10, 10]  # the init frame: must not count
    absent = np.array([False, False, False, False, True])
    s = M.score_sequence(pred, gt, absent, skip_first=True)
    assert s.evaluated_frames == 3  # frames 1, 2, 3
    assert s.ao == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert s.sr50 == pytest.approx(1 / 3) and s.sr75 == pytest.approx(1 / 3)
    ao, sr50, sr75 = M.got10k_scores(np.array([1.0, 0.6, 0.2, 0.8]))
    assert (ao, sr50, sr75) == (pytest.approx(0.65), 0.75, 0.5)  # 1.0 and 0.8 exceed 0.75


def test_no_scorable_frame_gives_nan_not_a_crash():
    gt = np.full((3, 4), np.nan)
    s = M.score_sequence(_static(3), gt)
    assert s.evaluated_frames == 0 and np.isnan(s.auc)
    assert s.as_dict()["auc"] is None


def test_unknown_convention_and_length_mismatch_are_errors():
    with pytest.raises(ValueError, match="convention"):
        M.score_sequence(_static(2), _static(2), convention="pysot")
    with pytest.raises(ValueError, match="3 predictions for 2"):
        M.score_sequence(_static(3), _static(2))


# ------------------------------------------------------------------------------------ VOT

T, I, F, S = M.VOT_TRACKED, M.VOT_INIT, M.VOT_FAILURE, M.VOT_SKIPPED


def test_eao_on_a_tiny_hand_worked_case():
    # Sequence A (4 frames): init, then overlaps 0.5, 0.5, 0.5, no failure -> segment padded with NaN.
    ov_a = np.array([np.nan, 0.5, 0.5, 0.5])
    codes_a = np.array([I, T, T, T])
    # Sequence B (4 frames): init, 0.8, failure at frame 2, frame 3 skipped -> zeros to the end.
    ov_b = np.array([np.nan, 0.8, np.nan, np.nan])
    codes_b = np.array([I, T, F, S])
    curve = M.expected_overlap_curve([(ov_a, codes_a), (ov_b, codes_b)])
    # Phi_1 = 1 by definition; Phi_2 = mean(0.5, 0.8); Phi_3 = mean(mean(.5,.5), mean(.8,0));
    # Phi_4 = mean(mean(.5,.5,.5), mean(.8,0,0)).
    np.testing.assert_allclose(curve, [1.0, 0.65, 0.45, (0.5 + 0.8 / 3) / 2])
    assert M.eao(curve, (2, 4)) == pytest.approx((0.65 + 0.45 + (0.5 + 0.8 / 3) / 2) / 3)
    assert M.eao(curve, (3, 3)) == pytest.approx(0.45)


def test_segments_split_at_reinitialisation():
    # init, tracked, failure, 5 skipped... here: failure at 2, re-init at 7 (2 + 5), tracked to the end.
    codes = np.array([I, T, F, S, S, S, S, I, T, T])
    ov = np.array([np.nan, 0.6, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, 0.7, 0.9])
    segs = M.vot_segments(ov, codes)
    assert [(list(np.round(s, 3)), failed) for s, failed in segs] == [([0.0, 0.6, 0.0], True), ([0.0, 0.7, 0.9], False)]
    assert M.vot_failures(codes) == 1
    assert M.vot_robustness(1, 10) == pytest.approx(10.0)  # failures per 100 frames


def test_vot_accuracy_leaves_out_the_burn_in_after_every_initialisation():
    codes = np.array([I, T, T, T, F, S, S, S, S, I, T, T, T])
    ov = np.array([np.nan, 0.1, 0.2, 0.9, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, 0.3, 0.5, 0.7])
    # burn-in 3: frames 0-2 and 9-11 masked -> frames 3 (0.9) and 12 (0.7).
    acc, used = M.vot_accuracy(ov, codes, burnin=3)
    assert used == 2 and acc == pytest.approx(0.8)
    # burn-in 0: every tracked frame.
    acc0, used0 = M.vot_accuracy(ov, codes, burnin=0)
    assert used0 == 6 and acc0 == pytest.approx((0.1 + 0.2 + 0.9 + 0.3 + 0.5 + 0.7) / 6)
    # The default burn-in is VOT's 10 frames.
    assert M.VOT_BURNIN == 10 and M.VOT_SKIP_FRAMES == 5


def test_vot_overlaps_are_nan_on_special_frames():
    gt = _static(3)
    pred = np.array([[10, 10, 10, 10], [10, 10, 10, 10], [10, 10, 10, 10]], dtype=np.float64)
    ov = M.vot_overlaps(pred, gt, np.array([I, T, F]))
    assert np.isnan(ov[0]) and ov[1] == 1.0 and np.isnan(ov[2])


def test_eao_interval_must_be_ordered():
    with pytest.raises(ValueError):
        M.eao(np.ones(5), (3, 2))


def test_bound_cuts_boxes_to_the_image_like_the_got10k_toolkit():
    # The toolkit clamps the corner into the image and then only limits the size to what is left:
    # a 20x20 box 10 px left of the image becomes (0, 0, 20, 20), not (0, 0, 10, 20).
    pred = np.array([[-10.0, 0, 20, 20]])
    gt = np.array([[0.0, 0, 20, 20]])
    np.testing.assert_array_equal(M.bound_boxes(pred, (100, 100)), [[0, 0, 20, 20]])
    assert M.frame_iou(pred, gt)[0] == pytest.approx(200 / 600)  # unbounded: 10x20 overlap
    assert M.frame_iou(pred, gt, (100, 100))[0] == 1.0
    far = np.array([[90.0, 90, 50, 50]])
    np.testing.assert_array_equal(M.bound_boxes(far, (100, 100)), [[90, 90, 10, 10]])
    s = M.score_sequence(far, np.array([[90.0, 90, 10, 10]]), bound=(100, 100))
    assert s.ao == 1.0
