"""The NanoTrack V3 port (cract_core/nanotrack.py) against the authors' files: every one of the 438
checkpoint tensors accounted for by the explicit map, and the backbone and BAN head equal to the
authors' ONNX graphs (run with onnxruntime) on real crops, to 1e-4."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cract_core import geometry
from cract_core.backbone import NANOTRACK_V3_FILE, fold_batchnorm_
from cract_core.nanotrack import (
    UNUSED_NECK_KEYS,
    BANHead,
    BANProposalHead,
    NanoTrackV3Backbone,
    NanoTrackWeightsError,
    ban_score_size,
    decode_points,
    extract_tensors,
    load_nanotrack_weights,
    nanotrack_key_map,
    point_grid,
    read_nanotrack_state,
)
from conftest import REPO_ROOT, require_shared_model

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

# sha256 of the authors' checkpoint (../shared/models/README.md) and of the tensors file we ship.
AUTHORS_SHA256 = "4f0d25108385a67bdec5fa01ca37c74acb72343b53996dd645fe18b86e512e69"
SHIPPED_SHA256 = (REPO_ROOT / "models" / "nanotrack_v3" / "nanotrack_v3_tensors.pt.sha256").read_text().split()[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def authors_state() -> dict[str, torch.Tensor]:
    path = require_shared_model("nanotrack_v3/nanotrackv3.pth")
    assert _sha256(path) == AUTHORS_SHA256
    return read_nanotrack_state(path)


@pytest.fixture(scope="module")
def port(authors_state) -> tuple[NanoTrackV3Backbone, BANHead]:
    backbone, head = NanoTrackV3Backbone().eval(), BANHead().eval()
    load_nanotrack_weights(authors_state, backbone, head)
    return backbone, head


@pytest.fixture(scope="module")
def real_crops() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 127 template and a 255 search crop of uav_boat5's first frame, as the tracker cuts them
    (float32 BGR, N C H W: what the authors' graphs take), and the boat's box in the search crop
    (xywh; the search crop is centred off the boat, so the boat is not at the centre point)."""
    from conftest import require_shared_sequences

    seq = require_shared_sequences() / "uav_boat5"
    image = cv2.imread(str(seq / "img" / "000001.jpg"))
    box = np.loadtxt(seq / "groundtruth.txt", delimiter=",", ndmin=2)[0]
    x, y, w, h = box
    center = (x + w / 2, y + h / 2)
    side_z = geometry.context_size(w, h, 0.5)
    z, _ = geometry.crop_square(image, center, side_z, 127)
    search_center = (center[0] + 0.3 * w, center[1] - 0.2 * h)
    s, scale = geometry.crop_square(image, search_center, side_z * 255 / 127, 255)
    box_in_search = geometry.image_to_crop(box, search_center, scale, 255)
    as_input = lambda c: np.ascontiguousarray(c.transpose(2, 0, 1)[None].astype(np.float32))  # noqa: E731
    return as_input(z), as_input(s), box_in_search


def test_the_map_accounts_for_all_438_tensors(authors_state):
    assert len(authors_state) == 438
    mapping = nanotrack_key_map()
    theirs = set(mapping.values())
    assert len(theirs) == len(mapping)  # one to one
    assert theirs | set(UNUSED_NECK_KEYS) == set(authors_state)
    assert len(theirs) == 438 - len(UNUSED_NECK_KEYS) == 432
    # every tensor of our two modules has a name in the map, and no other
    ours = {f"backbone.{k}" for k in NanoTrackV3Backbone().state_dict()} | {f"head.{k}" for k in BANHead().state_dict()}
    assert ours == set(mapping)


def _free_input_size(path: Path) -> bytes:
    """The authors' backbone graph with its fixed 1x3x255x255 input (and output) made symbolic, so
    the 127 template can run through it too (every op in it is a convolution or elementwise)."""
    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for i in (2, 3):
            dims[i].ClearField("dim_value")
            dims[i].dim_param = f"side{i}"
    del model.graph.value_info[:]  # inferred shapes of the fixed size would contradict
    return model.SerializeToString()


def test_backbone_equals_the_onnx_graph_on_real_crops(port, real_crops):
    backbone, _ = port
    z, x, _ = real_crops
    fixed = ort.InferenceSession(str(require_shared_model("nanotrack_v3/nanotrack_backbone.onnx")))
    free = ort.InferenceSession(_free_input_size(require_shared_model("nanotrack_v3/nanotrack_backbone.onnx")))
    with torch.no_grad():
        ours_x = backbone(torch.from_numpy(x)).numpy()
        ours_z = backbone(torch.from_numpy(z)).numpy()
    theirs_x = fixed.run(None, {"input": x})[0]
    theirs_z = free.run(None, {"input": z})[0]
    assert ours_x.shape == theirs_x.shape == (1, 96, 16, 16)
    assert ours_z.shape == theirs_z.shape == (1, 96, 8, 8)
    assert np.abs(theirs_x).max() > 1.0  # real activations, not a degenerate all-zero map
    np.testing.assert_allclose(ours_x, theirs_x, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours_z, theirs_z, rtol=0, atol=1e-4)
    # the graph with the free size gives the fixed graph's answer at 255
    np.testing.assert_allclose(free.run(None, {"input": x})[0], theirs_x, rtol=0, atol=1e-5)


def test_head_equals_the_onnx_graph_on_real_features(port, real_crops):
    backbone, head = port
    z, x, target = real_crops
    session = ort.InferenceSession(str(require_shared_model("nanotrack_v3/nanotrack_head.onnx")))
    with torch.no_grad():
        zf, xf = backbone(torch.from_numpy(z)), backbone(torch.from_numpy(x))
        logits, distances = head(zf, xf)
    theirs_cls, theirs_loc = session.run(None, {"input1": zf.numpy(), "input2": xf.numpy()})
    assert logits.shape == theirs_cls.shape == (1, 2, 15, 15)
    assert distances.shape == theirs_loc.shape == (1, 4, 15, 15)
    np.testing.assert_allclose(logits.numpy(), theirs_cls, rtol=0, atol=1e-4)
    # The distances are exp of the network's last conv (pixels, up to ~70): compared where the
    # network computes them, in log space, 1e-4 there is 1e-4 relative in pixels.
    np.testing.assert_allclose(np.log(distances.numpy()), np.log(theirs_loc), rtol=0, atol=1e-4)
    # The network found the boat: the most confident point's box overlaps the boat's box well,
    # though the boat is off the crop centre (left of and below it).
    prob = torch.softmax(logits.reshape(2, -1), dim=0)[1]
    best = int(prob.argmax())
    assert best != 7 * 15 + 7 and float(prob[best]) > 0.9
    box = decode_points(distances, point_grid(15, 16, 255))[0, best].numpy().astype(np.float64)
    assert geometry.iou(geometry.xyxy_to_xywh(box)[None], target[None], fmt="xywh")[0] > 0.6


def test_folding_batch_norm_keeps_the_outputs(port, real_crops):
    import copy

    backbone, head = port
    z, x, _ = real_crops
    fb, fh = fold_batchnorm_(copy.deepcopy(backbone)), fold_batchnorm_(copy.deepcopy(head))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in list(fb.modules()) + list(fh.modules()))
    with torch.no_grad():
        zt, xt = torch.from_numpy(z), torch.from_numpy(x)
        np.testing.assert_allclose(fb(xt).numpy(), backbone(xt).numpy(), rtol=0, atol=1e-3)
        for a, b in zip(fh(fb(zt), fb(xt)), head(backbone(zt), backbone(xt))):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-3)


def test_shipped_tensors_are_the_authors(authors_state):
    shipped = REPO_ROOT / NANOTRACK_V3_FILE
    assert _sha256(shipped) == SHIPPED_SHA256
    ours = read_nanotrack_state(shipped)
    assert set(ours) == set(authors_state)
    for k, v in authors_state.items():
        assert torch.equal(ours[k], v), k


def test_the_extract_command_rebuilds_the_shipped_file_byte_for_byte(tmp_path):
    dest = tmp_path / NANOTRACK_V3_FILE.name
    digest = extract_tensors(require_shared_model("nanotrack_v3/nanotrackv3.pth"), dest)
    assert digest == SHIPPED_SHA256 == _sha256(dest)
    assert (tmp_path / (dest.name + ".sha256")).read_text().split() == [SHIPPED_SHA256, dest.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name, dest.name + ".sha256"]  # no scratch left


def test_points_and_decoding_by_hand():
    assert ban_score_size(255) == 15 and ban_score_size(287) == 17
    points = point_grid(15, 16, 255)
    # point (row 0, col 0) is 7 strides up-left of the crop centre 127.5; (7, 7) is the centre
    assert points[0].tolist() == [127.5 - 112, 127.5 - 112]
    assert points[7 * 15 + 7].tolist() == [127.5, 127.5]
    assert points[1].tolist() == [127.5 - 96, 127.5 - 112]  # row-major: x moves first
    d = torch.zeros(1, 4, 15, 15)
    d[0, :, 7, 7] = torch.tensor([10.0, 20.0, 30.0, 40.0])  # l, t, r, b
    box = decode_points(d, points)[0, 7 * 15 + 7]
    assert box.tolist() == [117.5, 107.5, 157.5, 167.5]


def test_proposal_head_scores_and_boxes_shapes():
    torch.manual_seed(0)
    ban = BANProposalHead(255).eval()
    with torch.no_grad():
        scores, boxes = ban.proposals(ban.kernels(torch.randn(2, 96, 8, 8)), torch.randn(2, 96, 16, 16))
    assert scores.shape == (2, 225) and boxes.shape == (2, 225, 4)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    assert bool((boxes[..., 2] > boxes[..., 0]).all() and (boxes[..., 3] > boxes[..., 1]).all())  # exp distances > 0


def test_missing_truncated_or_foreign_weights_are_clear_errors(tmp_path, authors_state):
    with pytest.raises(NanoTrackWeightsError, match="does not exist"):
        read_nanotrack_state(tmp_path / "nope.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((REPO_ROOT / NANOTRACK_V3_FILE).read_bytes()[:5000])
    with pytest.raises(NanoTrackWeightsError, match="cannot be read"):
        read_nanotrack_state(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"something.else": torch.zeros(3)}}, foreign)
    with pytest.raises(NanoTrackWeightsError, match="name map mismatch"):
        load_nanotrack_weights(read_nanotrack_state(foreign), NanoTrackV3Backbone(), BANHead())
    tampered = dict(authors_state)
    tampered["ban_head.cls_logits.0.weight"] = torch.zeros(3, 96, 1, 1)
    with pytest.raises(NanoTrackWeightsError, match="shape mismatch"):
        load_nanotrack_weights(tampered, NanoTrackV3Backbone(), BANHead())
