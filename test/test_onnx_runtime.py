"""The ONNX Runtime path (docs/runtime.md): cract-export's graphs against torch on real crops, the
runtime chosen by the model config, by the node's parameter and by cract-eval specs, the cache, and
clear errors when onnxruntime or an execution provider is missing.  No timing thresholds here:
benchmarks/bench_runtime.py measures speed."""
from __future__ import annotations

import copy
import enum
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cract_core import geometry
from cract_core.config import (ConfigError, config_from_dict, default_config_path, load_config, to_dict, uses_identifier,
                               uses_regressor)
from cract_core.tracker import Tracker

from conftest import REPO_ROOT, in_ci

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from cract_core.runtime import OnnxRuntimeNet, RuntimeUnavailableError  # noqa: E402
from cract_core.runtime.export import export_graphs, graphs_key, main as export_main, read_manifest  # noqa: E402
from cract_core.runtime.ort import choose_providers, make_session  # noqa: E402

CASCADE = REPO_ROOT / "config" / "model" / "cract_nanotrack_cascade.yaml"


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test exports into its own cache (never the user's ~/.cache)."""
    folder = tmp_path / "onnx_cache"
    monkeypatch.setenv("CRACT_ONNX_CACHE", str(folder))
    return folder


@pytest.fixture(autouse=True)
def one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(path: Path | None = None, runtime: str = "torch"):
    cfg = load_config(path or default_config_path())
    cfg.runtime = runtime
    return cfg


def real_crops(seq_dir: Path, frame: int = 5) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The template crop of frame 0 and the search crop of ``frame`` around its ground truth, as the
    tracker cuts them (uint8 1 x 3 x H x W), and the template box in crop pixels (xyxy)."""
    from cract_core.datasets import load_folder_sequence

    seq = load_folder_sequence(seq_dir)
    img0, box0 = seq.image(0), np.asarray(seq.init_box, float)
    pad = img0.reshape(-1, 3).mean(axis=0)
    center = (box0[0] + box0[2] / 2, box0[1] + box0[3] / 2)
    side_z = geometry.context_size(box0[2], box0[3], 0.5)
    crop_z, scale_z = geometry.crop_square(img0, center, side_z, 127, pad)
    box_z = geometry.xywh_to_xyxy(geometry.image_to_crop(box0, center, scale_z, 127))
    gt = seq.groundtruth[frame]
    crop_x, _ = geometry.crop_square(seq.image(frame), (gt[0] + gt[2] / 2, gt[1] + gt[3] / 2), side_z * 255 / 127, 255, pad)

    def tensor(c: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(c.transpose(2, 0, 1)))[None]

    return tensor(crop_z), tensor(crop_x), box_z


def torch_net(cfg):
    """The net the torch runtime runs (checkpoint loaded, batch norms folded)."""
    return Tracker.from_config(cfg, device="cpu", mode="sync").net


# --------------------------------------------------------------------------------------- export


@pytest.mark.parametrize("cfg_path", [None, CASCADE], ids=["default", "cascade_R_I"])
def test_exported_graphs_match_torch_on_real_crops(cfg_path, shared_sequence, tmp_path):
    """Every graph the config uses, on real crops, against the torch modules it came from: features
    and probabilities to 1e-4, boxes to 1e-4 of the crop side."""
    cfg = config(cfg_path)
    net = torch_net(cfg)
    out = tmp_path / "export"
    manifest = export_graphs(cfg, net, out)
    expected = ["template", "search"] + (["regressor"] if uses_regressor(cfg) else []) + (
        ["identifier"] if uses_identifier(cfg) else [])
    assert manifest["graphs"] == expected
    assert not cfg_path or expected[2:] == ["regressor", "identifier"]
    z, x, box_z = real_crops(shared_sequence("uav_boat5"))

    def session(name: str):
        return make_session(out / f"{name}.onnx", 1, ["CPUExecutionProvider"])

    phi_z, *kernels = session("template").run(None, {"template": z.numpy()})
    with torch.no_grad():
        phi_z_ref = net.extract(z)
        kernels_ref = net.rpn.kernels(phi_z_ref)
        np.testing.assert_allclose(phi_z, phi_z_ref.numpy(), atol=1e-4, rtol=0)
        for got, ref in zip(kernels, kernels_ref, strict=True):
            np.testing.assert_allclose(got, ref.numpy(), atol=1e-4, rtol=0)
        feeds = {"search": x.numpy(), **{f"kernel_{i}": k for i, k in enumerate(kernels)}}
        scores, boxes, phi_x = session("search").run(None, feeds)
        phi_x_ref = net.extract(x)
        scores_ref, boxes_ref = net.rpn_outputs(kernels_ref, phi_x_ref)
        np.testing.assert_allclose(phi_x, phi_x_ref.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(scores, scores_ref.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(boxes / 255.0, boxes_ref.numpy() / 255.0, atol=1e-4, rtol=0)
        assert scores_ref.max() > 0.5  # a real crop with the target in it, not a trivial input
        if cfg_path:
            f_init = net.pool(phi_z_ref, torch.as_tensor(box_z, dtype=torch.float32).reshape(1, 4))
            props = boxes_ref[0, scores_ref[0].topk(cfg.rpn.num_proposals).indices]
            feats = net.pool(phi_x_ref, props)
            ref = net.refine(phi_x_ref, props, f_init)
            (offsets,) = session("regressor").run(None, {"features": feats.numpy(), "f_init": f_init.numpy()})
            np.testing.assert_allclose(offsets, ref.offsets.numpy(), atol=1e-4, rtol=0)
            (identity,) = session("identifier").run(None, {"features": ref.features.numpy(), "f_init": f_init.numpy()})
            np.testing.assert_allclose(identity, ref.identity_prob.numpy(), atol=1e-4, rtol=0)
            # identify() on features the caller pooled: the same v+ on both runtimes
            ort_net = OnnxRuntimeNet(net, cfg, out, 1, ["CPUExecutionProvider"])
            np.testing.assert_allclose(ort_net.identify(ref.features, f_init).numpy(), ref.identity_prob.numpy(),
                                       atol=1e-4, rtol=0)
            np.testing.assert_allclose(net.identify(ref.features, f_init).numpy(), ref.identity_prob.numpy(), atol=1e-6)
            # K is dynamic: one RoI (confidence: identifier) runs the same graph
            (one,) = session("identifier").run(None, {"features": ref.features[:1].numpy(), "f_init": f_init.numpy()})
            np.testing.assert_allclose(one, identity[:1], atol=1e-5, rtol=0)


def test_export_metadata_names_config_weights_and_normalisation(tmp_path):
    import onnx

    cfg = config()
    out = tmp_path / "export"
    export_graphs(cfg, torch_net(cfg), out)
    manifest = read_manifest(out)
    weights = REPO_ROOT / "models" / "nanotrack_v3" / "nanotrack_v3_tensors.pt"
    assert manifest["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert manifest["config"] == "cract_nanotrack"
    model = onnx.load(str(out / "search.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["weights_sha256"] == manifest["weights_sha256"] and meta["config"] == "cract_nanotrack"
    assert json.loads(meta["normalisation"])["mean"] == [0.0, 0.0, 0.0]
    assert model.opset_import[0].version == manifest["opset"]
    # fixed shapes where the tracker's are
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 255, 255]


def test_cract_export_command_writes_a_folder(tmp_path, capsys):
    out = tmp_path / "cli"
    assert export_main(["--config", "cract_nanotrack.yaml", "--out", str(out)]) == 0
    graphs = read_manifest(out)["graphs"]
    assert graphs[:2] == ["template", "search"]
    assert {p.name for p in out.iterdir()} == {f"{g}.onnx" for g in graphs} | {"manifest.json"}
    assert str(out) in capsys.readouterr().out


# -------------------------------------------------------------------------------- runtime choice


def test_runtime_is_chosen_by_the_config_and_the_cache_is_reused(onnx_cache, monkeypatch):
    torch_tracker = Tracker.from_config(config(runtime="torch"), device="cpu", mode="sync")
    assert not isinstance(torch_tracker.net, OnnxRuntimeNet)
    tracker = Tracker.from_config(config(runtime="onnxruntime"), device="cpu", mode="sync")
    assert isinstance(tracker.net, OnnxRuntimeNet)
    assert tracker.net.providers_in_use == ["CPUExecutionProvider"]
    assert tracker.net.folder.parent == onnx_cache
    # A second tracker reads the cache: exporting again would fail here.
    import cract_core.runtime.export as export_mod

    monkeypatch.setattr(export_mod, "export_graphs", lambda *a, **k: pytest.fail("re-exported a cached graph"))
    again = Tracker.from_config(config(runtime="onnxruntime"), device="cpu", mode="sync")
    assert again.net.folder == tracker.net.folder


def test_cache_key_changes_with_the_weights():
    cfg = config()
    net = torch_net(cfg)
    key = graphs_key(cfg, net)
    with torch.no_grad():
        next(net.rpn.parameters()).add_(1e-3)
    assert graphs_key(cfg, net) != key


def test_onnx_dir_must_match_the_weights(tmp_path):
    cfg = config(runtime="onnxruntime")
    export_graphs(config(), torch_net(config()), tmp_path / "mine")
    cfg.onnx_dir = str(tmp_path / "mine")
    tracker = Tracker.from_config(cfg, device="cpu", mode="sync")
    assert tracker.net.folder == tmp_path / "mine"
    other = config(CASCADE, runtime="onnxruntime")
    other.onnx_dir = str(tmp_path / "mine")
    with pytest.raises(ValueError, match="cract-export again"):
        Tracker.from_config(other, device="cpu", mode="sync")


def test_config_validates_the_runtime_fields():
    data = to_dict(load_config(default_config_path()))
    with pytest.raises(ConfigError, match="runtime"):
        config_from_dict({**data, "runtime": "tensorflow"})
    with pytest.raises(ConfigError, match="need runtime: onnxruntime"):
        config_from_dict({**data, "runtime": "torch", "onnx_providers": ["cuda"]})
    with pytest.raises(ConfigError, match="onnx_providers"):
        config_from_dict({**data, "runtime": "onnxruntime", "onnx_providers": ["quantum"]})
    cfg = config_from_dict({**data, "runtime": "onnxruntime", "onnx_providers": ["TensorRT", "CUDAExecutionProvider"]})
    assert cfg.runtime == "onnxruntime"


def test_eval_spec_takes_the_runtime():
    from cract_core.eval.trackers import create, parse_tracker_spec

    name, opts = parse_tracker_spec("cract:runtime=onnxruntime+name=cract_ort", {})
    assert (name, opts["runtime"], opts["label"]) == ("cract", "onnxruntime", "cract_ort")
    adapter = create(name, **{k: v for k, v in opts.items() if k != "label"}, device="cpu")
    assert isinstance(adapter._tracker.net, OnnxRuntimeNet)
    with pytest.raises(ValueError, match="runtime must be one of"):
        create("cract", runtime="tvm", device="cpu")


def test_node_parameter_sets_the_runtime():
    """The node's ``runtime`` parameter (declared from cract_ros.parameters) reaches the model config."""
    pytest.importorskip("rclpy")
    from cract_ros.parameters import MODEL_RUNTIME_PARAMS, apply_model_runtime

    spec = MODEL_RUNTIME_PARAMS["runtime"]
    assert spec.check("runtime", "onnxruntime") is None and spec.check("runtime", "") is None
    assert "must be one of" in spec.check("runtime", "tensorrt")
    cfg = config(runtime="torch")
    assert apply_model_runtime(cfg, {"runtime": "onnxruntime"}).runtime == "onnxruntime"
    assert apply_model_runtime(config(runtime="onnxruntime"), {"runtime": ""}).runtime == "onnxruntime"
    with pytest.raises(ValueError):
        apply_model_runtime(cfg, {"runtime": "tvm"})
    # the node's own builder (what the configure transition calls) with the parameter set
    from cract_ros.node import PARAMETERS, build_tracker

    assert PARAMETERS["runtime"] is spec
    settings = {name: p.default for name, p in PARAMETERS.items()}
    settings.update(runtime="onnxruntime", device="cpu", tracker_mode="sync", num_threads=1)
    tracker = build_tracker(settings)
    assert isinstance(tracker.net, OnnxRuntimeNet)
    tracker.close()


# ------------------------------------------------------------------------------------- errors


def test_missing_provider_is_named():
    with pytest.raises(RuntimeUnavailableError, match="TensorrtExecutionProvider.*onnxruntime-gpu"):
        choose_providers(["tensorrt"], torch.device("cpu"), ["CPUExecutionProvider"])
    with pytest.raises(RuntimeUnavailableError, match="CUDAExecutionProvider.*onnxruntime-gpu"):
        choose_providers([], torch.device("cuda"), ["CPUExecutionProvider"])
    assert choose_providers(["cuda"], torch.device("cpu"), ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers([], torch.device("cpu"), ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_config_asking_for_an_uninstalled_provider_fails_clearly():
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("TensorRT is installed here: nothing is missing")
    cfg = config(runtime="onnxruntime")
    cfg.onnx_providers = ["tensorrt"]
    with pytest.raises(RuntimeUnavailableError, match="TensorrtExecutionProvider is not installed"):
        Tracker.from_config(cfg, device="cpu", mode="sync")


def test_missing_onnxruntime_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    with pytest.raises(RuntimeUnavailableError, match="'onnxruntime' package.*runtime: torch"):
        Tracker.from_config(config(runtime="onnxruntime"), device="cpu", mode="sync")
    # torch users never import it
    assert not isinstance(Tracker.from_config(config(runtime="torch"), device="cpu").net, OnnxRuntimeNet)


def test_cuda_runtime_paths():
    """torch CUDA and ORT's CUDA provider on a GPU machine; here, the reason they cannot run."""
    if not torch.cuda.is_available():
        if in_ci():
            pytest.skip("no CUDA device in CI: the CUDA paths run on a GPU machine (benchmarks/bench_gpu_runtimes.py)")
        pytest.skip("no CUDA device on this machine: the CUDA paths run on a GPU machine (benchmarks/bench_gpu_runtimes.py)")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu)")
    cfg = config(runtime="onnxruntime")
    tracker = Tracker.from_config(cfg, device="cuda", mode="sync")
    assert tracker.net.providers_in_use[0] == "CUDAExecutionProvider"
    img = np.full((240, 320, 3), 80, np.uint8)
    img[100:140, 140:180] = 220
    tracker.init(img, np.array([140.0, 100.0, 40.0, 40.0]))
    assert np.isfinite(tracker.track(img).box).all()


# ------------------------------------------------------------------------------------- parity


def _state_of(tracker: Tracker) -> dict:
    """The tracker's per-target state (arrays, numbers, enums), whatever its attributes are called."""
    keep = (np.ndarray, int, float, bool, enum.Enum, np.random.Generator, type(None))
    skip = {"cfg", "net", "device", "mode", "online", "checkpoint_info", "_template", "_window"}
    return {k: copy.deepcopy(v) for k, v in vars(tracker).items() if k not in skip and isinstance(v, keep)}


def test_boxes_match_torch_over_a_whole_sequence(shared_sequence):
    """Each frame's box from onnxruntime against torch's, over all of uav_boat5, from the same tracker
    state (torch's, copied before every frame): within 0.5 px.

    The same state matters: the closed loop magnifies any float difference (torch on 1 against 2
    threads drifts apart by about 3 px on this sequence, as does a box moved 1e-4 px at init), so two
    free-running trackers compare the loop's sensitivity, not the runtime (docs/runtime.md)."""
    from cract_core.datasets import load_folder_sequence

    seq = load_folder_sequence(shared_sequence("uav_boat5"))
    ref = Tracker.from_config(config(runtime="torch"), device="cpu", mode="sync")
    ort_tracker = Tracker.from_config(config(runtime="onnxruntime"), device="cpu", mode="sync")
    img0, box0 = seq.image(0), np.asarray(seq.init_box, float)
    ref.init(img0, box0)
    ort_tracker.init(img0, box0)
    worst = 0.0
    for i in range(1, len(seq)):
        img = seq.image(i)
        for k, v in _state_of(ref).items():
            setattr(ort_tracker, k, v)
        a, b = ref.track(img), ort_tracker.track(img)
        worst = max(worst, float(np.abs(a.box - b.box).max()))
        assert a.state == b.state, f"frame {i}"
        assert abs(a.confidence - b.confidence) < 1e-3, f"frame {i}"
    assert worst < 0.5, f"largest box difference {worst:.4f} px"


def test_default_providers_on_a_gpu_without_onnxruntime_gpu_fall_back_to_torch(monkeypatch, caplog):
    """device auto on a GPU machine with the CPU onnxruntime: the torch runtime on the GPU, with a
    warning naming the package (explicit onnx_providers make it an error, above)."""
    from cract_core.runtime.ort import wrap_for_runtime

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    cfg = config(runtime="onnxruntime")
    net = torch_net(config())
    with caplog.at_level("WARNING"):
        assert wrap_for_runtime(cfg, net, torch.device("cuda")) is net
    assert "onnxruntime-gpu" in caplog.text


def test_cache_key_ignores_what_the_graphs_do_not_hold():
    """Scores' weights, thresholds and the untrained R / I of a config that does not run them act
    outside the graphs: changing them must not export again."""
    cfg = config()
    net = torch_net(cfg)
    key = graphs_key(cfg, net)
    other = config()
    other.crac.alpha, other.crac.beta, other.rpn.nms_iou = 0.1, 0.2, 0.3
    assert not uses_regressor(cfg)  # the default runs no R: its (untrained) weights are not in a graph
    with torch.no_grad():
        for p in net.regressor.parameters():
            p.add_(1.0)
    assert graphs_key(other, net) == key


def test_crac_heads_on_onnxruntime_match_torch_in_the_tracker(shared_sequence):
    """R and I through OnnxRuntimeNet.refine, in the tracker (the cascade config with I as the
    classifier; D is left out: its online fit magnifies any float difference, torch on 1 against 2
    threads as much as onnxruntime against torch)."""
    from cract_core.datasets import load_folder_sequence

    seq = load_folder_sequence(shared_sequence("otb_bird2")).head(25)
    trackers = []
    for runtime in ("torch", "onnxruntime"):
        cfg = config(CASCADE, runtime=runtime)
        cfg.crac.classifier = "identifier"
        trackers.append(Tracker.from_config(cfg, device="cpu", mode="sync"))
        trackers[-1].init(seq.image(0), np.asarray(seq.init_box, float))
    ref, ort_tracker = trackers
    assert isinstance(ort_tracker.net, OnnxRuntimeNet) and "identifier" in ort_tracker.net.sessions
    for i in range(1, len(seq)):
        for k, v in _state_of(ref).items():
            setattr(ort_tracker, k, v)
        a, b = ref.track(seq.image(i)), ort_tracker.track(seq.image(i))
        assert np.abs(a.box - b.box).max() < 0.5, f"frame {i}"
        assert abs(a.confidence - b.confidence) < 1e-3, f"frame {i}"
