"""Typed experiment config: every shipped YAML loads, bad keys and types are named, paper constants."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cract_core.config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    default_config_path,
    load_config,
    to_dict,
)

REPO = Path(__file__).resolve().parent.parent
MODEL_CONFIGS = sorted((REPO / "config" / "model").glob("*.yaml"))
# The training experiments at config/train_*.yaml use the same schema (config/cract.yaml, the
# node's ros__parameters, does not), so they must load too.
EXPERIMENT_CONFIGS = MODEL_CONFIGS + sorted((REPO / "config").glob("train_*.yaml"))


def test_there_are_model_configs() -> None:
    # The glob below must not be empty, or the parametrised test would pass vacuously.
    assert MODEL_CONFIGS, "no YAML under config/model/"
    assert default_config_path() in [p.resolve() for p in MODEL_CONFIGS]


@pytest.mark.parametrize("path", EXPERIMENT_CONFIGS, ids=lambda p: p.name)
def test_every_model_yaml_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.source == str(path.resolve())
    # Every key the file names made it into the config (nothing silently dropped).
    raw = yaml.safe_load(path.read_text()) or {}
    flat = to_dict(cfg)
    for section, value in raw.items():
        if isinstance(value, dict):
            for key, v in value.items():
                assert flat[section][key] == v, f"{path.name}: {section}.{key}"
        else:
            assert flat[section] == value


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    "data, key",
    [
        ({"crac": {"alphaa": 0.4}}, "crac.alphaa"),
        ({"rpn": {"num_proposal": 10}}, "rpn.num_proposal"),
        ({"backbone": {"nmae": "resnet18"}}, "backbone.nmae"),
        ({"trakcer": {}}, "trakcer"),
        ({"source": "x"}, "source"),  # filled by the loader, not a user key
    ],
)
def test_unknown_key_is_named(tmp_path: Path, data: dict, key: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert f"'{key}'" in msg, msg
    assert str(path) in msg  # the file is named too
    assert "unknown" in msg


@pytest.mark.parametrize(
    "data, key, expected",
    [
        ({"rpn": {"num_proposals": "ten"}}, "rpn.num_proposals", "int"),
        ({"rpn": {"num_proposals": 10.5}}, "rpn.num_proposals", "int"),
        ({"rpn": {"num_proposals": True}}, "rpn.num_proposals", "int"),  # bool is not an int here
        ({"crac": {"alpha": [1]}}, "crac.alpha", "float"),
        ({"crac": {"alpha": "0.4"}}, "crac.alpha", "float"),
        ({"rpn": {"anchor_ratios": 0.5}}, "rpn.anchor_ratios", "list"),
        ({"rpn": {"anchor_ratios": [0.5, "x"]}}, "rpn.anchor_ratios[1]", "float"),
        ({"crac": {"pooling": "avg"}}, "crac.pooling", "not one of"),
        ({"backbone": {"name": "vgg16"}}, "backbone.name", "not one of"),
        ({"backbone": {"weights": 5}}, "backbone.weights", "str"),
        ({"online": {"enabled": "yes"}}, "online.enabled", "bool"),
        ({"crac": [1, 2]}, "crac", "mapping"),
        ({"name": 3}, "name", "str"),
    ],
)
def test_wrong_type_is_named(tmp_path: Path, data: dict, key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, data))
    msg = str(exc.value)
    assert f"{key}:" in msg, msg
    assert expected in msg, msg


def test_int_is_accepted_for_float_and_kept_as_float() -> None:
    cfg = config_from_dict({"crac": {"alpha": 1}})
    assert cfg.crac.alpha == 1.0 and isinstance(cfg.crac.alpha, float)


def test_range_checks() -> None:
    with pytest.raises(ConfigError, match="crac.alpha"):
        config_from_dict({"crac": {"alpha": 1.5}})
    with pytest.raises(ConfigError, match="rpn.num_proposals"):
        config_from_dict({"rpn": {"num_proposals": 0}})
    with pytest.raises(ConfigError, match="crac.identity_doubt needs crac.identity_veto"):
        config_from_dict({"crac": {"confidence": "memory", "identity_doubt": 0.05}})
    with pytest.raises(ConfigError, match="crac.identity_doubt_frames"):
        config_from_dict({"crac": {"confidence": "memory", "identity_veto": 0.03, "identity_doubt": 0.05,
                                   "identity_doubt_frames": 0}})


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert to_dict(load_config(p)) == to_dict(ExperimentConfig())


def _check_paper_constants(cfg: ExperimentConfig) -> None:
    # Values from the CRACT paper (Fan & Ling), Sec. 3-4.
    assert cfg.rpn.num_proposals == 10  # N
    assert cfg.rpn.anchor_ratios == [0.33, 0.5, 1.0, 2.0, 3.0]
    assert cfg.train.anchor_pos_iou == 0.6
    assert cfg.train.anchor_neg_iou == 0.3
    assert cfg.train.proposal_iou == 0.5
    assert cfg.crac.pyramid_sizes == [6, 3, 1]
    assert cfg.crac.alpha == 0.4
    assert cfg.crac.beta == 0.8
    assert cfg.online.update_interval == 10  # K
    assert cfg.online.update_positives == 50  # n+
    assert cfg.online.update_negatives == 200  # n-
    assert cfg.online.init_positives == 200
    assert cfg.online.init_negatives == 1000
    # The paper's method, not an ablation, is the default.
    assert cfg.crac.pooling == "pyramid"
    assert cfg.crac.refinement == "cascade"
    assert cfg.crac.classifier == "joint"


def test_paper_constants_in_dataclass_defaults() -> None:
    _check_paper_constants(ExperimentConfig())


@pytest.mark.parametrize("name", ["cract_nanotrack_cascade.yaml", "cract_lite0.yaml"])
def test_paper_constants_in_the_cascade_yamls(name: str) -> None:
    """The configs that run the paper's method carry its constants; the shipped default
    (cract_nanotrack.yaml) leaves the stages out that did not earn their place (MODEL_CARD.md)."""
    _check_paper_constants(load_config(REPO / "config" / "model" / name))


def test_a_bare_name_finds_the_package_config(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # not where the configs are
    cfg = load_config("cract_nanotrack_cascade.yaml")
    assert cfg.name == "cract_nanotrack_cascade" and cfg.crac.refinement == "cascade"
    (tmp_path / "cract_nanotrack_cascade.yaml").write_text("name: mine\n")
    assert load_config("cract_nanotrack_cascade.yaml").name == "mine"  # a file here comes first
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("sub/cract_nanotrack_cascade.yaml")  # only bare names are looked up


def test_identifier_confidence_only_without_a_classifier() -> None:
    data = to_dict(load_config(REPO / "config" / "model" / "cract_nanotrack_cascade.yaml"))
    data["crac"].update(refinement="none", classifier="none", confidence="identifier")
    config_from_dict(data)  # I's probability of the chosen box: fine without a classifier
    data["crac"]["classifier"] = "joint"  # then the joint score is the confidence: asking for I's is a mistake
    with pytest.raises(ConfigError, match="crac.confidence identifier needs"):
        config_from_dict(data)


@pytest.mark.parametrize("field, value", [("memory_learning_rate", 1.5), ("memory_learning_rate", -0.1),
                                          ("memory_floor", 1.0), ("memory_floor", -2.0)])
def test_memory_settings_out_of_range_are_refused(field, value) -> None:
    data = to_dict(load_config(default_config_path()))
    assert data["crac"]["confidence"] == "memory"  # the default judges its state on the memory
    data["crac"][field] = value
    with pytest.raises(ConfigError, match=f"crac.{field}"):
        config_from_dict(data)


def test_to_dict_round_trip() -> None:
    cfg = load_config(default_config_path())
    again = config_from_dict(to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)
