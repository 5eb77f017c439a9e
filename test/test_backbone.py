"""Backbones: documented shapes of phi_3 / phi_4 / phi_34, the weight sources, and that the
EfficientNet-Lite0 weights are ImageNet's (a real boat and a real car are classified as such)."""
from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision

from cract_core import geometry
from cract_core.backbone import (
    RESNET18_FILE,
    STRIDE,
    Backbone,
    EfficientNetLite0,
    FusionNeck,
    MissingWeightsError,
    bgr_uint8_to_input,
    default_lite0_weights,
    fold_batchnorm_,
    lite0_key_map,
    load_lite0_weights,
)
from cract_core.config import BackboneConfig

FUSED = 128

# The table in cract_core/backbone.py's docstring (and docs/backbone_shapes.md), written out again
# here by hand: (backbone, crop) -> (phi_3 channels, phi_4 channels, feature side).
DOCUMENTED = {
    ("efficientnet_lite0", 127): (112, 320, 8),
    ("efficientnet_lite0", 255): (112, 320, 16),
    ("resnet18", 127): (256, 512, 8),
    ("resnet18", 255): (256, 512, 16),
}


def _lite0_checkpoint() -> dict[str, torch.Tensor]:
    return torch.load(default_lite0_weights(), map_location="cpu", weights_only=True)


class _Backbones:
    """Backbones built on first use and kept for the module: Lite0 with its real weights, ResNet-18
    random (its ImageNet file is not on this machine; shapes do not depend on weights).  Lazy, so
    that one configuration that fails to build fails only its own tests."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], Backbone] = {}

    def __getitem__(self, key: tuple[str, str]) -> Backbone:
        if key not in self._cache:
            name, mode = key
            torch.manual_seed(0)
            weights = None if name == "efficientnet_lite0" else "none"
            self._cache[key] = Backbone(BackboneConfig(name=name, weights=weights, phi4_mode=mode)).eval()
        return self._cache[key]


@pytest.fixture(scope="module")
def backbones() -> _Backbones:
    return _Backbones()


@pytest.mark.parametrize("mode", ["resize", "dilate"])
@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
@pytest.mark.parametrize("crop", [127, 255])
def test_fused_features_have_documented_shapes(backbones, name: str, mode: str, crop: int) -> None:
    bb = backbones[(name, mode)]
    c3, c4, side = DOCUMENTED[(name, crop)]
    # side = ceil(crop / 16): 127 -> 8, 255 -> 16
    assert side == -(-crop // STRIDE)
    neck = FusionNeck(bb.phi3_channels, bb.phi4_channels, FUSED).eval()
    x = torch.randint(0, 256, (2, 3, crop, crop), dtype=torch.uint8)
    with torch.no_grad():
        phi3, phi4 = bb(x)
        phi34 = neck(phi3, phi4)
    assert tuple(phi3.shape) == (2, c3, side, side)
    assert tuple(phi4.shape) == (2, c4, side, side)
    assert tuple(phi34.shape) == (2, FUSED, side, side)
    assert torch.isfinite(phi34).all()
    assert (phi34 >= 0).all()  # ReLU at the end of the fusion


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_phi4_mode_decides_the_raw_stride_of_phi4(backbones, name: str) -> None:
    # "resize": the last stage really runs at stride 32 (8x8 on 255) and is upsampled afterwards;
    # "dilate": it runs at stride 16 (16x16) with no resize at all.
    x = torch.randint(0, 256, (1, 3, 255, 255), dtype=torch.uint8)
    with torch.no_grad():
        _, raw_resize = backbones[(name, "resize")].body.features(backbones[(name, "resize")].preprocess(x))
        _, raw_dilate = backbones[(name, "dilate")].body.features(backbones[(name, "dilate")].preprocess(x))
    assert raw_resize.shape[-1] == 8
    assert raw_dilate.shape[-1] == 16


def test_backbone_is_frozen_by_default_and_trainable_stages_unfreeze_the_last(backbones) -> None:
    assert backbones[("efficientnet_lite0", "resize")].frozen
    bb = Backbone(BackboneConfig(name="resnet18", weights="none", trainable_stages=1))
    assert not bb.frozen
    n = bb.body.net
    assert all(p.requires_grad for p in n.layer4.parameters())
    assert not any(p.requires_grad for p in n.layer3.parameters())
    assert not any(p.requires_grad for p in n.conv1.parameters())


def test_lite0_trainable_stages_count_stages_not_blocks() -> None:
    # config: "trainable_stages: n = the last n stages train too".  Lite0's last two stages are
    # stage 6 (320 ch, block 15) and stage 5 (192 ch, blocks 11-14: 4 repeats); stage 4, which
    # ends phi_3 (blocks 8-10), stays frozen.
    bb = Backbone(BackboneConfig(weights="none", trainable_stages=2))
    trainable = [i for i, blk in enumerate(bb.body.blocks) if all(p.requires_grad for p in blk.parameters())]
    assert trainable == [11, 12, 13, 14, 15]


def test_bgr_to_input_flips_channels_and_normalises() -> None:
    # A pixel B=10, G=20, R=30 -> RGB (30, 20, 10); with mean (1, 2, 3) and std (2, 2, 2):
    # ((30-1)/2, (20-2)/2, (10-3)/2) = (14.5, 9, 3.5)
    x = torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 3, 1, 1)
    out = bgr_uint8_to_input(x, (1.0, 2.0, 3.0), (2.0, 2.0, 2.0))
    torch.testing.assert_close(out.flatten(), torch.tensor([14.5, 9.0, 3.5]))


# --------------------------------------------------------------------------- weight sources


def test_resnet18_default_weights_missing_names_file_and_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Point torch's hub at an empty folder so the test does not depend on this machine's cache.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / RESNET18_FILE
    with pytest.raises(MissingWeightsError) as exc:
        Backbone(BackboneConfig(name="resnet18"))
    msg = str(exc.value)
    assert str(expected) in msg, msg  # which file is missing
    assert RESNET18_FILE in msg and "backbone.weights" in msg  # and where to put one instead
    assert isinstance(exc.value, FileNotFoundError)


def test_resnet18_explicit_missing_path_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "r18.pth"
    with pytest.raises(MissingWeightsError, match=str(path)):
        Backbone(BackboneConfig(name="resnet18", weights=str(path)))


def test_resnet18_loads_from_a_local_path(tmp_path: Path) -> None:
    torch.manual_seed(3)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / RESNET18_FILE
    torch.save(ref.state_dict(), path)
    bb = Backbone(BackboneConfig(name="resnet18", weights=str(path)))
    torch.testing.assert_close(bb.body.net.conv1.weight, ref.conv1.weight)
    torch.testing.assert_close(bb.body.net.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)


def test_lite0_name_map_uses_all_296_checkpoint_tensors() -> None:
    theirs = _lite0_checkpoint()
    assert len(theirs) == 296
    model = EfficientNetLite0()
    mapping = lite0_key_map(model)
    assert set(mapping) == set(model.state_dict())  # every model tensor is filled
    assert set(mapping.values()) == set(theirs)  # every checkpoint tensor is used
    assert len(set(mapping.values())) == len(mapping)  # and none twice
    for ours, their_name in mapping.items():
        assert model.state_dict()[ours].shape == theirs[their_name].shape, ours


def test_lite0_weights_land_by_name_not_by_order() -> None:
    theirs = _lite0_checkpoint()
    model = EfficientNetLite0()
    load_lite0_weights(model, default_lite0_weights())
    sd = model.state_dict()
    # Spot checks, including the two "_bn1" of the checkpoint: the head's (top level) and a block's.
    torch.testing.assert_close(sd["stem.0.weight"], theirs["_conv_stem.weight"])
    torch.testing.assert_close(sd["head.1.running_var"], theirs["_bn1.running_var"])
    torch.testing.assert_close(sd["blocks.7.depthwise.1.running_mean"], theirs["_blocks.7._bn1.running_mean"])
    torch.testing.assert_close(sd["blocks.15.project.0.weight"], theirs["_blocks.15._project_conv.weight"])
    torch.testing.assert_close(sd["classifier.weight"], theirs["_fc.weight"])
    assert model.blocks[0].expand is None  # expand ratio 1: the checkpoint has no _blocks.0._expand_conv


def _save(tmp_path: Path, state: dict) -> Path:
    p = tmp_path / "lite0.pth"
    torch.save(state, p)
    return p


def test_lite0_missing_key_raises(tmp_path: Path) -> None:
    state = _lite0_checkpoint()
    del state["_blocks.3._bn2.running_var"]
    with pytest.raises(RuntimeError, match=r"_blocks\.3\._bn2\.running_var"):
        load_lite0_weights(EfficientNetLite0(), _save(tmp_path, state))


def test_lite0_extra_key_raises(tmp_path: Path) -> None:
    state = _lite0_checkpoint()
    state["_blocks.16._expand_conv.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r"unused \['_blocks\.16\._expand_conv\.weight'\]"):
        load_lite0_weights(EfficientNetLite0(), _save(tmp_path, state))


def test_lite0_wrong_shape_raises(tmp_path: Path) -> None:
    state = _lite0_checkpoint()
    state["_conv_head.weight"] = state["_conv_head.weight"][:-1]
    with pytest.raises(RuntimeError, match="shape mismatch"):
        load_lite0_weights(EfficientNetLite0(), _save(tmp_path, state))


def test_lite0_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="does not exist"):
        Backbone(BackboneConfig(weights=str(tmp_path / "absent.pth")))


def test_fold_batchnorm_keeps_lite0_features(backbones) -> None:
    bb = backbones[("efficientnet_lite0", "resize")]
    folded = copy.deepcopy(bb.body)
    fold_batchnorm_(folded)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = bb.preprocess(torch.randint(0, 256, (1, 3, 127, 127), dtype=torch.uint8))
    with torch.no_grad():
        a3, a4 = bb.body.features(x)
        b3, b4 = folded.features(x)
    torch.testing.assert_close(b3, a3, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b4, a4, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- ImageNet check on real crops

IMAGENET = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # metadata only
BOAT_CLASSES = {
    "container ship", "aircraft carrier", "speedboat", "fireboat", "liner", "lifeboat", "yawl", "catamaran",
    "trimaran", "schooner", "wreck", "canoe", "gondola", "paddle", "submarine", "pirate", "dock",
}
CAR_CLASSES = {
    "minivan", "moving van", "sports car", "beach wagon", "convertible", "cab", "jeep", "limousine", "racer",
    "police van", "pickup", "car wheel", "grille", "Model T", "ambulance", "tow truck", "trailer truck",
}


def _top5_of_first_frame(seq_dir: Path, body: EfficientNetLite0) -> list[str]:
    first = (seq_dir / "groundtruth.txt").read_text().splitlines()[0]
    x, y, w, h = (float(v) for v in first.replace("\t", ",").replace(" ", ",").split(",") if v)
    image = cv2.imread(str(seq_dir / "img" / "000001.jpg"))
    assert image is not None, seq_dir
    # A square 1.3x the larger side around the ground-truth box, resized to ImageNet's 224.
    crop, _ = geometry.crop_square(image, (x + w / 2, y + h / 2), 1.3 * max(w, h), 224)
    inp = bgr_uint8_to_input(torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None], body.mean, body.std)
    with torch.no_grad():
        logits = body.classify(inp)
    return [IMAGENET[i] for i in logits[0].topk(5).indices.tolist()]


@pytest.fixture(scope="module")
def lite0_classifier() -> EfficientNetLite0:
    return Backbone(BackboneConfig()).body.eval()


@pytest.mark.parametrize(
    "sequence, fitting, wrong",
    [("uav_boat1", BOAT_CLASSES, CAR_CLASSES), ("uav_car10", CAR_CLASSES, BOAT_CLASSES)],
)
def test_lite0_weights_are_imagenet(shared_sequence, lite0_classifier, sequence: str, fitting: set, wrong: set) -> None:
    assert fitting <= set(IMAGENET) and wrong <= set(IMAGENET)  # no typo in the class lists
    top5 = _top5_of_first_frame(shared_sequence(sequence), lite0_classifier)
    assert set(top5) & fitting, f"{sequence}: no fitting ImageNet class in top 5 {top5}"
    # and the crop is not mistaken for the other kind of vehicle
    assert not set(top5) & wrong, f"{sequence}: top 5 {top5} contains {set(top5) & wrong}"


def test_random_lite0_does_not_pass_the_imagenet_check(shared_sequence) -> None:
    # The control: the same crop through random weights gives no fitting class, so the test above
    # really depends on the checkpoint.
    torch.manual_seed(0)
    body = Backbone(BackboneConfig(weights="none")).body.eval()
    top5 = _top5_of_first_frame(shared_sequence("uav_boat1"), body)
    assert not set(top5) & BOAT_CLASSES, top5
