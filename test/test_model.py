"""CRACTNet: batch vs one-at-a-time refinement, training losses, head checkpoints, BN folding,
ablation switches, and the inference path's shapes."""
from __future__ import annotations

import copy

import pytest
import torch

from cract_core import geometry
from cract_core.config import ExperimentConfig, config_from_dict
from cract_core.model import CRACTNet, Refinement


def _randomise_heads(net: CRACTNet, seed: int) -> CRACTNet:
    """Give R a non-zero output layer and every head BN non-trivial statistics, so that comparisons
    between two paths cannot pass just because an output is identically zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in net.head_modules:
            for m in getattr(net, head).modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    # scale near 1 (not near 0, or the features after it would vanish)
                    m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                    m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    fan_in = m.weight[0].numel()
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / fan_in**0.5)
                    if m.bias is not None:
                        m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=gen))
        # R's output layer is zero at construction; small but non-zero offsets here
        net.regressor.out.weight.mul_(0.3)
    return net


def _crops(batch: int, size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # Smooth-ish random crops (a coarse pattern upsampled) so that features are not pure noise.
    coarse = torch.randint(0, 256, (batch, 3, size // 16 + 1, size // 16 + 1), generator=gen).float()
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).to(torch.uint8)


@pytest.fixture(scope="module")
def net() -> CRACTNet:
    torch.manual_seed(0)
    return _randomise_heads(CRACTNet(ExperimentConfig()), 1).eval()


@pytest.fixture(scope="module")
def search_features(net: CRACTNet) -> torch.Tensor:
    with torch.no_grad():
        return net.extract(_crops(2, 255, 2))


@pytest.fixture(scope="module")
def template_state(net: CRACTNet):
    # Target 64 x 64 at the template crop's centre: xyxy (31.5, 31.5, 95.5, 95.5).
    return net.init_target(_crops(1, 127, 3), torch.tensor([31.5, 31.5, 95.5, 95.5]))


def _boxes(k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    c = torch.rand(k, 2, generator=gen) * 160 + 48
    wh = torch.rand(k, 2, generator=gen) * 80 + 20
    return geometry.cxcywh_to_xyxy(torch.cat([c, wh], dim=1))


def test_shapes_of_the_inference_path(net: CRACTNet, search_features: torch.Tensor, template_state) -> None:
    assert net.score_size == 9 and net.anchors.shape == (405, 4)
    assert search_features.shape == (2, 128, 16, 16)
    assert template_state.f_init.shape == (1, 384, 6, 6)
    scores, boxes = net.rpn_outputs(template_state.kernels, search_features[:1])
    assert scores.shape == (1, 405) and boxes.shape == (1, 405, 4)
    assert torch.all((scores >= 0) & (scores <= 1))
    props, c, adjusted, all_scores = net.propose(search_features[:1], template_state)
    assert props.shape == (10, 4) and c.shape == (10,) and adjusted.shape == (10,)
    torch.testing.assert_close(all_scores, scores[0])
    assert torch.all(adjusted[:-1] >= adjusted[1:])  # ranked by the (here unadjusted) score


def test_propose_ranks_by_adjusted_but_returns_raw_scores(net: CRACTNet, search_features: torch.Tensor, template_state) -> None:
    phi = search_features[:1]
    scores, boxes = net.rpn_outputs(template_state.kernels, phi)
    k = int(scores[0].argsort()[100])  # a mediocre anchor of the RPN ...
    adjust = torch.zeros(405)
    adjust[k] = 1.0  # ... made the only candidate by the tracker's penalty/window
    props, c, adjusted, _ = net.propose(phi, template_state, adjust)
    torch.testing.assert_close(props[0], boxes[0, k])
    torch.testing.assert_close(c[0], scores[0, k])  # c_i: the RPN's own probability
    torch.testing.assert_close(adjusted[0], scores[0, k])
    assert torch.all(adjusted[1:] == 0) and bool((c[1:] > 0).any())  # ranked by adjusted, reported raw


def test_refine_batch_equals_one_at_a_time(net: CRACTNet, search_features: torch.Tensor, template_state) -> None:
    phi = search_features[:1]
    boxes = _boxes(10, 4)
    with torch.no_grad():
        batch = net.refine(phi, boxes, template_state.f_init)
        assert torch.count_nonzero(batch.offsets) > 0  # R really moves the boxes here
        for i in range(10):
            one = net.refine(phi, boxes[i : i + 1], template_state.f_init)
            torch.testing.assert_close(one.offsets[0], batch.offsets[i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(one.refined_xyxy[0], batch.refined_xyxy[i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(one.features[0], batch.features[i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(one.identity_prob[0], batch.identity_prob[i], atol=1e-5, rtol=1e-5)


def test_refine_with_batch_index_equals_per_crop(net: CRACTNet, search_features: torch.Tensor) -> None:
    # The training path: proposals of two crops in one call, each with its own f_init.
    f_init = torch.randn(2, 384, 6, 6, generator=torch.Generator().manual_seed(5)).relu()
    boxes = _boxes(6, 6)
    bidx = torch.tensor([0, 1, 1, 0, 1, 0])
    with torch.no_grad():
        mixed = net.refine(search_features, boxes, f_init, bidx)
        for crop in (0, 1):
            rows = torch.nonzero(bidx == crop).flatten()
            alone = net.refine(search_features[crop : crop + 1], boxes[rows], f_init[crop : crop + 1])
            torch.testing.assert_close(alone.refined_xyxy, mixed.refined_xyxy[rows], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(alone.identity_prob, mixed.identity_prob[rows], atol=1e-5, rtol=1e-5)


def test_refined_box_follows_eq4(net: CRACTNet, search_features: torch.Tensor, template_state) -> None:
    boxes = _boxes(4, 7)
    with torch.no_grad():
        ref = net.refine(search_features[:1], boxes, template_state.f_init)
    torch.testing.assert_close(ref.refined_xyxy, geometry.decode_offsets(boxes, ref.offsets, fmt="xyxy"))
    # cascade: classification features are pooled at the re-aligned boxes
    torch.testing.assert_close(ref.features, net.pool(search_features[:1], ref.refined_xyxy), atol=1e-5, rtol=1e-5)


def test_r_initial_offsets_are_zero() -> None:
    torch.manual_seed(0)
    fresh = CRACTNet(ExperimentConfig()).eval()
    with torch.no_grad():
        phi = fresh.extract(_crops(1, 255, 2))
        state = fresh.init_target(_crops(1, 127, 3), torch.tensor([31.5, 31.5, 95.5, 95.5]))
        boxes = _boxes(10, 8)
        ref = fresh.refine(phi, boxes, state.f_init)
    assert torch.count_nonzero(ref.offsets) == 0
    torch.testing.assert_close(ref.refined_xyxy, boxes)


def test_parallel_refinement_classifies_unaligned_features(net: CRACTNet, search_features: torch.Tensor, template_state) -> None:
    par = copy.deepcopy(net)
    par.cfg = copy.deepcopy(net.cfg)
    par.cfg.crac.refinement = "parallel"
    boxes = _boxes(5, 9)
    with torch.no_grad():
        ref = par.refine(search_features[:1], boxes, template_state.f_init)
    torch.testing.assert_close(ref.features, par.pool(search_features[:1], boxes))
    assert torch.count_nonzero(ref.offsets) > 0  # R still runs; only the alignment is skipped


def test_single_pooling_ablation_shapes() -> None:
    cfg = config_from_dict({"backbone": {"weights": "none"}, "crac": {"pooling": "single"}})
    net = CRACTNet(cfg).eval()
    state = net.init_target(_crops(1, 127, 3), torch.tensor([31.5, 31.5, 95.5, 95.5]))
    assert state.f_init.shape == (1, 128, 6, 6)
    with torch.no_grad():
        ref = net.refine(net.extract(_crops(1, 255, 2)), _boxes(3, 1), state.f_init)
    assert ref.features.shape == (3, 128, 6, 6) and ref.identity_prob.shape == (3,)


def _tiny_batch() -> dict:
    # Pair 0 positive: target 64 x 64 at the template centre and at (100, 120) in the search crop.
    # Pair 1 negative (another object in the search crop).
    return {
        "template": _crops(2, 127, 10),
        "search": _crops(2, 255, 11),
        "template_box": torch.tensor([[31.5, 31.5, 64.0, 64.0], [31.5, 40.0, 64.0, 48.0]]),
        "search_box": torch.tensor([[100.0, 120.0, 64.0, 64.0], [80.0, 90.0, 70.0, 50.0]]),
        "positive": torch.tensor([True, False]),
    }


def test_compute_losses_tiny_batch() -> None:
    torch.manual_seed(0)
    net = _randomise_heads(CRACTNet(ExperimentConfig()), 2).train_mode()
    assert not net.backbone.training and net.rpn.training  # frozen backbone keeps ImageNet BN stats
    losses = net.compute_losses(_tiny_batch(), torch.Generator().manual_seed(0))
    assert set(losses) == {"total", "rpn_cls", "rpn_reg", "reg", "ide"}
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    torch.testing.assert_close(losses["total"], losses["rpn_cls"] + losses["rpn_reg"] + losses["reg"] + losses["ide"])
    # the positive pair has positive anchors and jittered boxes with IoU >= 0.5, so each part is active
    for name in ("rpn_cls", "rpn_reg", "reg", "ide"):
        assert losses[name] > 0, name
    losses["total"].backward()
    for mod in ("neck", "rpn", "regressor", "identifier"):
        grads = [p.grad for p in getattr(net, mod).parameters()]
        assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads), mod
    assert all(p.grad is None for p in net.backbone.parameters())


def test_compute_losses_all_negative_batch_is_finite() -> None:
    torch.manual_seed(0)
    net = CRACTNet(config_from_dict({"backbone": {"weights": "none"}})).train_mode()
    batch = _tiny_batch()
    batch["positive"] = torch.tensor([False, False])
    losses = net.compute_losses(batch, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["rpn_reg"] == 0 and losses["reg"] == 0  # nothing to regress in negative pairs


def test_train_mode_keeps_frozen_stages_bn_statistics() -> None:
    # With the last stage trainable, the stages that stay frozen (requires_grad False) must keep
    # ImageNet's BN statistics: a training forward must not move their running means.
    cfg = config_from_dict({"backbone": {"name": "resnet18", "weights": "none", "trainable_stages": 1}})
    torch.manual_seed(0)
    net = CRACTNet(cfg).train_mode()
    frozen_bn = net.backbone.body.net.layer1[0].bn1
    trained_bn = net.backbone.body.net.layer4[0].bn1
    assert not frozen_bn.weight.requires_grad and trained_bn.weight.requires_grad
    before = frozen_bn.running_mean.clone()
    net.compute_losses(_tiny_batch(), torch.Generator().manual_seed(0))
    drift = float((frozen_bn.running_mean - before).abs().max())
    assert drift == 0.0, f"a frozen stage's BN running_mean moved by up to {drift:.3g} in one training step"


def test_head_state_dict_round_trip(net: CRACTNet, search_features: torch.Tensor, template_state) -> None:
    state = net.head_state_dict()
    assert net.head_modules == ("neck", "rpn", "regressor", "identifier")
    assert state and all(k.split(".")[0] in net.head_modules for k in state)  # frozen backbone not saved
    torch.manual_seed(123)
    other = CRACTNet(ExperimentConfig()).eval()
    boxes = _boxes(10, 12)
    with torch.no_grad():
        before = other.refine(search_features[:1], boxes, template_state.f_init)
        other.load_head_state_dict({k: v.clone() for k, v in state.items()})
        expected: Refinement = net.refine(search_features[:1], boxes, template_state.f_init)
        got = other.refine(search_features[:1], boxes, template_state.f_init)
        assert not torch.equal(before.identity_prob, expected.identity_prob)  # the load changed something
        for field in ("offsets", "refined_xyxy", "features", "identity_prob"):
            assert torch.equal(getattr(got, field), getattr(expected, field)), field
        # the whole inference path, from crops
        crop_z, crop_x = _crops(1, 127, 3), _crops(1, 255, 2)
        s1 = net.init_target(crop_z, torch.tensor([31.5, 31.5, 95.5, 95.5]))
        s2 = other.init_target(crop_z, torch.tensor([31.5, 31.5, 95.5, 95.5]))
        assert torch.equal(s1.f_init, s2.f_init)
        p1 = net.propose(net.extract(crop_x), s1)
        p2 = other.propose(other.extract(crop_x), s2)
        for a, b in zip(p1, p2):
            assert torch.equal(a, b)


def test_load_head_state_dict_rejects_misfits(net: CRACTNet) -> None:
    state = net.head_state_dict()
    missing = dict(state)
    del missing["identifier.out.bias"]
    with pytest.raises(KeyError, match="identifier.out.bias"):
        copy.deepcopy(net).load_head_state_dict(missing)
    extra = dict(state)
    extra["regressor.extra"] = torch.zeros(1)
    with pytest.raises(KeyError, match="regressor.extra"):
        copy.deepcopy(net).load_head_state_dict(extra)


def test_fuse_for_inference_keeps_phi34(net: CRACTNet) -> None:
    fused = copy.deepcopy(net).fuse_for_inference()
    assert not fused.training
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.backbone.modules())
    crops = _crops(2, 255, 13)
    with torch.no_grad():
        a = net.extract(crops)
        b = fused.extract(crops)
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- pooling <-> backbone alignment


def _linearised_backbone(net: CRACTNet) -> torch.nn.Module:
    """The backbone with its geometry kept and its arithmetic made trivial: every conv a centre tap
    (so an output cell depends on exactly one input pixel per path), BN and ReLU identities, max
    pooling an average pooling of the same window.  The input gradient of one feature cell is then
    concentrated where that cell looks: its receptive-field centre, set by strides and padding only."""
    bb = copy.deepcopy(net.backbone).eval()
    for m in list(bb.modules()):
        if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)):
            m.forward = lambda x: x  # type: ignore[method-assign]
        elif isinstance(m, torch.nn.MaxPool2d):
            m.forward = torch.nn.AvgPool2d(m.kernel_size, m.stride, m.padding).forward  # type: ignore[method-assign]
    with torch.no_grad():
        for m in bb.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                kh, kw = m.weight.shape[-2:]
                m.weight[:, :, kh // 2, kw // 2] = 1.0 / m.weight.shape[1]
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)
                m.weight.fill_(1.0)
                m.bias.zero_()
    return bb


def _cell_centre_offsets(bb: torch.nn.Module, size: int, cell: int) -> tuple[float, float]:
    """(c3, c4): phi_3's and phi_4's cell ``cell`` (at stride 16) of a ``size`` crop look at crop
    pixel 16 cell + c, measured as the input-gradient centroid through the linearised backbone."""
    x = torch.full((1, 3, size, size), 128.0, requires_grad=True)
    phi3, phi4 = bb(x)
    out = []
    for phi in (phi3, phi4):
        (grad,) = torch.autograd.grad(phi[0, :, cell, cell].sum(), x, retain_graph=True)
        g = grad[0].abs().sum(0).sum(0).double()  # mass per column
        out.append(float((g @ torch.arange(size, dtype=torch.float64)) / g.sum()) - 16 * cell)
    return out[0], out[1]


@pytest.mark.parametrize("mode", ["resize", "dilate"])
@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_pooling_samples_the_feature_cell_that_looks_at_the_box(name: str, mode: str) -> None:
    # A box centred at crop pixel P must be pooled from the features whose receptive field is
    # centred at P, or every f_i is shifted against its box.  The pooler's side: pool a 1-px box
    # at P from a ramp map f(u) = u to read the feature coordinate u(P) it samples (plain
    # roi_align aligned=True, scale 1/16 would give u = P/16 - 0.5: cell j looks at 16 j + 8).
    # The backbone's side: cell j looks at 16 j + c, c measured on the linearised backbone for
    # both crops the tracker uses (template 127, search 255), for phi_3 and phi_4 (the concat must
    # stack features of one place).  Hand analysis of the paddings, before any correction: Lite0
    # phi_3 c = 14 (TF "same" pads bottom/right), bilinear-resized phi_4 c = 22; ResNet-18 phi_3
    # c = 0, resized phi_4 c = -8.  So 16 u(P) + c must be P, within 2 px.
    net = CRACTNet(config_from_dict({"backbone": {"name": name, "weights": "none", "phi4_mode": mode}})).eval()
    bb = _linearised_backbone(net)
    ramp = torch.arange(16, dtype=torch.float32).view(1, 1, 1, 16).expand(1, 1, 16, 16).contiguous()
    for size, cell in ((127, 4), (255, 8)):  # interior cells (no border clamping)
        for which, c in zip((3, 4), _cell_centre_offsets(bb, size, cell)):
            for p in (60.0, 100.0, 127.5, 150.0):
                pooled = net.pool(ramp, torch.tensor([[p - 0.5, p - 0.5, p + 0.5, p + 0.5]]))
                u = float(pooled[0, -1].mean())  # the 1x1 level (last channels); all levels agree for a 1-px box
                looked_at = 16 * u + c
                assert abs(looked_at - p) <= 2.0, (
                    f"{name}/{mode} crop {size} phi_{which}: a box centred at crop pixel {p} is pooled from feature "
                    f"x = {u:.3f}, whose receptive field is centred at pixel {looked_at:.1f} "
                    f"({looked_at - p:+.1f} px off; cell j looks at 16 j + {c:.1f})"
                )


@pytest.mark.parametrize("search_size", [287, 271])
def test_another_search_size_is_aligned_or_refused(search_size: int) -> None:
    # tracker.search_size is a config value (SiamRPN++ uses 255, DaSiamRPN 271).  Lite0's TF
    # padding makes where a cell looks depend on the crop side: measured, sides 31 mod 32 (127,
    # 255, 287) give phi_3 and phi_4 c = 14, but 271 gives phi_4 c = -2 (phi_3 side 17 is odd, so
    # its stride-2 stage pads differently).  A size the pooler's fixed offsets do not fit must be
    # refused by the config, or be aligned like 255 is.
    from cract_core.config import ConfigError

    try:
        cfg = config_from_dict({"backbone": {"weights": "none"}, "tracker": {"search_size": search_size}})
    except ConfigError:
        return  # refused with a message: acceptable
    net = CRACTNet(cfg).eval()
    cell = -(-search_size // 16) // 2
    c3, c4 = _cell_centre_offsets(_linearised_backbone(net), search_size, cell)
    side = -(-search_size // 16)
    ramp = torch.arange(side, dtype=torch.float32).view(1, 1, 1, side).expand(1, 1, side, side).contiguous()
    p = 16.0 * cell + 8.0
    u = float(net.pool(ramp, torch.tensor([[p - 0.5, p - 0.5, p + 0.5, p + 0.5]]))[0, -1].mean())
    for which, c in ((3, c3), (4, c4)):
        assert abs(16 * u + c - p) <= 2.0, (
            f"search_size {search_size}: phi_{which} cell j looks at 16 j + {c:.1f}; a box at {p} is pooled from "
            f"the feature looking at {16 * u + c:.1f} ({16 * u + c - p:+.1f} px off)"
        )


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
@pytest.mark.parametrize("shift", [(0, 0), (32, 0), (-48, 64)])
def test_score_map_peak_is_the_anchor_over_the_target(name: str, shift: tuple[int, int]) -> None:
    # The template crop is centred on image point T; the search crop is centred on T - d, so T
    # lies at search pixel 127.5 + d.  Through the linearised backbone (features = the image
    # subsampled every 16 px) the template matches the search features exactly at one cell of
    # the 9x9 map: there the sum of squared differences is 0.  That cell's anchors must be
    # centred on 127.5 + d (hand: cell 4 + d / 16, spacing 16), whatever offset the paddings add,
    # because template and search share it.
    from cract_core import geometry as geo
    from cract_core.rpn import xcorr_depthwise

    net = CRACTNet(config_from_dict({"backbone": {"name": name, "weights": "none"}})).eval()
    bb = _linearised_backbone(net)
    rng = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (600, 600, 3), dtype=torch.uint8, generator=rng).numpy()
    t = (300.0, 300.0)
    dx, dy = shift
    z, _ = geo.crop_square(image, t, 127, 127)
    x, _ = geo.crop_square(image, (t[0] - dx, t[1] - dy), 255, 255)
    with torch.no_grad():
        fz = bb(torch.from_numpy(z).permute(2, 0, 1)[None])[0]
        fx = bb(torch.from_numpy(x).permute(2, 0, 1)[None])[0]
        ssd = (xcorr_depthwise(fx**2, torch.ones_like(fz)) - 2 * xcorr_depthwise(fx, fz) + (fz**2).sum((2, 3), keepdim=True)).sum(1)[0]
    assert ssd.shape == (9, 9)
    row, col = divmod(int(ssd.argmin()), 9)
    assert (col, row) == (4 + dx // 16, 4 + dy // 16)
    cell_anchors = net.anchors.reshape(-1, 9, 9, 4)[:, row, col]
    torch.testing.assert_close(cell_anchors[:, :2], torch.tensor([127.5 + dx, 127.5 + dy]).expand_as(cell_anchors[:, :2]))


def test_fine_tuned_stages_travel_with_the_heads_and_nothing_else_of_the_backbone() -> None:
    # trainable_stages 1 on Lite0 = its last stage (block 15): only that block's tensors join the
    # heads in the checkpoint, and a frozen-config network that loads them gets them exactly.
    torch.manual_seed(0)
    tuned = CRACTNet(config_from_dict({"backbone": {"weights": "none", "trainable_stages": 1}}))
    with torch.no_grad():
        for p in tuned.backbone.body.blocks[15].parameters():
            p.add_(0.5)
    state = tuned.head_state_dict()
    backbone_keys = sorted(k for k in state if k.startswith("backbone."))
    want = sorted(f"backbone.body.blocks.15.{k}" for k in tuned.backbone.body.blocks[15].state_dict())
    assert backbone_keys == want and len(want) > 0
    frozen = CRACTNet(config_from_dict({"backbone": {"weights": "none"}}))
    frozen.load_head_state_dict({k: v.clone() for k, v in state.items()})
    for k, v in frozen.backbone.body.blocks[15].state_dict().items():
        assert torch.equal(v, tuned.backbone.body.blocks[15].state_dict()[k]), k
