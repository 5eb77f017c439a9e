"""The online discriminator D: functional forward, snapshots, initialisation, and a fit on a real frame.

The real-frame features are built without the project's network (so this test does not depend on
it): a fixed random conv on the first image of otb_bird2, pooled at the sampled boxes with
torchvision's roi_align as a 6x6 / 3x3 / 1x1 pyramid (3 x 128 channels at 6x6, the default
config's shape).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from cract_core import discriminator as D
from cract_core.config import OnlineConfig
from cract_core.geometry import xywh_to_xyxy
from cract_core.online import DiscriminatorProblem, OnlineLearner, class_balanced_weights, sample_boxes


# one torch thread: see conftest.torch_threads
pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def _pyramid_features(feature_map: torch.Tensor, boxes_xywh: np.ndarray, stride: float) -> torch.Tensor:
    xyxy = torch.as_tensor(xywh_to_xyxy(boxes_xywh), dtype=torch.float32)
    rois = torch.cat([torch.zeros(len(xyxy), 1), xyxy], dim=1)
    pooled = [roi_align(feature_map, rois, s, spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True) for s in (6, 3, 1)]
    return torch.cat([pooled[0], F.interpolate(pooled[1], size=6, mode="nearest"), pooled[2].expand(-1, -1, 6, 6)], dim=1)


@pytest.fixture
def bird_frame(shared_sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (1200, 384, 6, 6), labels) for 200 positives / 1000 negatives on otb_bird2 frame 1.

    shared_sequence (test/conftest.py) skips when ../shared/data is absent and fails under CI=true.
    """
    seq: Path = shared_sequence("otb_bird2")
    image = cv2.imread(str(seq / "img" / "000001.jpg"))
    assert image is not None
    first = np.loadtxt(seq / "groundtruth.txt", delimiter=",", max_rows=1)
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(128, 3, 8, 8, generator=g) / np.sqrt(3 * 64)
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255.0 - 0.5
    fmap = F.relu(F.conv2d(x, weight, stride=4, padding=2))
    boxes, labels = sample_boxes(first, 200, 1000, np.random.default_rng(0), bounds=(image.shape[1], image.shape[0]))
    return _pyramid_features(fmap, boxes, 4.0), torch.from_numpy(labels)


def test_fit_on_real_frame_lowers_loss_and_separates(bird_frame) -> None:
    feats, labels = bird_frame
    assert feats.shape == (1200, 384, 6, 6) and int(labels.sum()) == 200
    learner = OnlineLearner(OnlineConfig(), in_channels=384)
    stats = learner.initialize(feats, labels)
    # The solver's own loss (data + weight decay) fell...
    assert stats.loss_history[-1] < stats.loss_history[0]
    assert all(b <= a for a, b in zip(stats.loss_history, stats.loss_history[1:]))
    # ...and so did the data term alone: before, fc2 = 0 gives tau = 0 (balanced L2 loss 0.5).
    w2 = class_balanced_weights(labels) ** 2
    tau = D.forward(feats, learner.conv_params, learner.fc_weights)
    assert float((w2 * (tau - labels) ** 2).sum()) < 0.1
    pred = (learner.score(feats) > 0.5).float()
    acc = float((pred == labels).float().mean())
    acc_pos = float(pred[labels == 1].mean())
    acc_neg = float(1 - pred[labels == 0].mean())
    assert acc > 0.95, (acc, acc_pos, acc_neg)
    assert acc_pos > 0.9 and acc_neg > 0.9, (acc_pos, acc_neg)


def test_conv_subspace_fit_stays_in_span_and_full_basis_is_exact(bird_frame) -> None:
    feats, labels = bird_frame
    feats, labels = feats[::3], labels[::3]  # 400 samples: quicker, both classes
    exact = OnlineLearner(OnlineConfig(), in_channels=384)
    full = OnlineLearner(OnlineConfig(), in_channels=384, conv_subspace=384)  # k = C: no restriction
    exact.initialize(feats, labels)
    full.initialize(feats, labels)
    # k = C is the same problem (the unknowns only rotated), so the same fit up to rounding.
    assert torch.allclose(exact.score(feats), full.score(feats), atol=1e-3)
    sub = OnlineLearner(OnlineConfig(init_conv_subspace=96), in_channels=384)
    assert sub.conv_subspace == 96
    stats = sub.initialize(feats, labels)
    assert stats.loss_history[-1] < stats.loss_history[0]
    pred = (sub.score(feats) > 0.5).float()
    assert float((pred == labels).float().mean()) > 0.95
    # the fitted conv lies in the span of the top-96 principal components of the features
    basis = D.init_conv_pca(feats, 96).weight.reshape(96, 384).double()
    w = sub.conv_params.weight.reshape(32, 384).double()
    assert torch.allclose(w @ basis.T @ basis, w, atol=1e-4)


def test_matmul_problem_matches_conv_forward() -> None:
    # The solver's problem runs the 1x1 conv as a matmul with fc1's columns permuted; it must give
    # exactly what the functional forward (conv2d, channel-major flatten) gives.
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(7, 40, 6, 6, generator=g, dtype=torch.float64)
    conv = D.ConvParams(torch.randn(32, 40, 1, 1, generator=g, dtype=torch.float64), torch.randn(32, generator=g, dtype=torch.float64))
    fc = D.FCWeights(torch.randn(64, 32 * 36, generator=g, dtype=torch.float64), torch.randn(64, generator=g, dtype=torch.float64),
                     torch.randn(1, 64, generator=g, dtype=torch.float64), torch.randn(1, generator=g, dtype=torch.float64))
    problem = DiscriminatorProblem(feats, torch.zeros(7), 0.0, fit_conv=True)
    assert torch.allclose(problem.predict(conv.tensors() + fc.tensors()), D.forward(feats, conv, fc), atol=1e-10)
    hidden = D.conv_forward(feats, conv).flatten(1)
    fc_problem = DiscriminatorProblem(hidden, torch.zeros(7), 0.0, fit_conv=False)
    assert torch.allclose(fc_problem.predict(fc.tensors()), D.forward(feats, conv, fc), atol=1e-10)


def test_score_is_clamped_and_shaped() -> None:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(10, 48, 6, 6, generator=g)
    conv = D.init_conv_pca(feats, 32)
    fc = D.init_fc(32 * 36, 64, seed=0)
    fc = D.FCWeights(fc.fc1_weight, fc.fc1_bias, torch.full((1, 64), 5.0), torch.tensor([-3.0]))
    s = D.score(feats, conv, fc)
    assert s.shape == (10,) and float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    raw = D.forward(feats, conv, fc)
    assert torch.equal(s, raw.clamp(0, 1))


def test_pca_init_is_deterministic_and_spans_top_components() -> None:
    g = torch.Generator().manual_seed(2)
    # Features with a known dominant 3-dim subspace.
    basis = torch.linalg.qr(torch.randn(20, 3, generator=g))[0]
    coeff = torch.randn(50, 6, 6, 3, generator=g) * torch.tensor([5.0, 3.0, 2.0])
    feats = (coeff @ basis.T + 0.01 * torch.randn(50, 6, 6, 20, generator=g)).permute(0, 3, 1, 2).contiguous()
    a = D.init_conv_pca(feats, 3)
    b = D.init_conv_pca(feats.clone(), 3)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    w = a.weight.reshape(3, 20).double()
    assert torch.allclose(w @ w.T, torch.eye(3, dtype=torch.float64), atol=1e-5)  # orthonormal components
    # They span the planted subspace: projecting the basis onto them keeps (nearly) all of it.
    assert float((w @ basis.double()).norm() ** 2) > 3 - 1e-3
    with pytest.raises(ValueError):
        D.init_conv_pca(feats, 21)


def test_init_fc_seeded_and_fc2_zero() -> None:
    a, b, c = D.init_fc(100, 8, seed=3), D.init_fc(100, 8, seed=3), D.init_fc(100, 8, seed=4)
    assert torch.equal(a.fc1_weight, b.fc1_weight) and not torch.equal(a.fc1_weight, c.fc1_weight)
    assert float(a.fc2_weight.abs().sum()) == 0.0 and float(a.fc2_bias.abs().sum()) == 0.0
    assert float(a.fc1_weight.abs().max()) < 1.0  # small


def test_snapshot_checksum_detects_writes_and_from_tensors_copies() -> None:
    src = [torch.randn(4, 6), torch.randn(4), torch.randn(1, 4), torch.randn(1)]
    snap = D.FCWeights.from_tensors(src, version=7)
    assert snap.version == 7 and snap.checksum() == snap.built_checksum
    src[0].add_(1.0)  # the caller's tensors are not the snapshot's
    assert snap.checksum() == snap.built_checksum
    snap.fc1_bias.add_(1e-3)  # what a torn update would look like
    assert snap.checksum() != snap.built_checksum
    with pytest.raises(AttributeError):
        snap.version = 8  # frozen
