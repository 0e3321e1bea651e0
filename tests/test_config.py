from dataclasses import dataclass, field

import pytest

import avrsp
from avrsp.config import ConfigError, from_dict, parse_overrides, replace, to_dict


def test_override_changes_only_named_fields():
    base = avrsp.get_config("avrsp")
    cfg = replace(base, {"fusion": "bilinear", "dims": [64, 32, 16, 8]})
    assert cfg.fusion == "bilinear" and cfg.dims == (64, 32, 16, 8)
    assert cfg.frames == base.frames and base.fusion == "ravf"


@pytest.mark.parametrize("overrides, message", [
    ({"fusoin": "add"}, "unknown key 'fusoin'"),
    ({"fusion": "sum"}, "'sum' is not one of"),
    ({"frames": "32"}, "expected an integer"),
    ({"frames": True}, "expected an integer"),
    ({"audio": "yes"}, "expected true/false"),
    ({"dims": [1, 2, 3]}, "expected 4 values"),
    ({"num_pairs": 5}, "num_pairs must be 0–4"),
    ({"height": 100}, "multiples of 32"),
    ({"heads": 7}, "divisible by heads"),
    ({"frames": 4}, "at least 5"),
])
def test_bad_overrides_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message):
        avrsp.get_config("avrsp", **overrides)


def test_unknown_model_lists_known_names():
    with pytest.raises(ConfigError, match="avrsp_tiny"):
        avrsp.create_model("avrsp_nope")


def test_parse_overrides_reads_yaml_values():
    assert parse_overrides(["fusion=mbt", "dims=[8, 8, 8, 8]", "ms=false", "dropout=0.1"]) == {
        "fusion": "mbt", "dims": [8, 8, 8, 8], "ms": False, "dropout": 0.1}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["fusion"])


def test_yaml_model_config_round_trip(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("model: avrsp_tiny\nfusion: concat\nnum_pairs: 1\n")
    cfg = avrsp.load_model_config(path, ms=False)
    assert (cfg.name, cfg.fusion, cfg.num_pairs, cfg.ms) == ("avrsp_tiny", "concat", 1, False)
    assert from_dict(avrsp.AVRSPConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("text, message", [
    ("fusion: add\n", "needs 'model: <name>'"),
    ("model: avrsp\nfusion: [\n", "malformed YAML"),
    ("- a\n- b\n", "expected a mapping"),
    ("model: avrsp\nwidht: 3\n", "unknown key 'widht'"),
])
def test_bad_yaml_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        avrsp.load_model_config(path)
    assert str(path) in str(e.value)


def test_nested_dataclass_overrides():
    @dataclass(frozen=True)
    class Inner:
        lr: float = 1.0

    @dataclass(frozen=True)
    class Outer:
        inner: Inner = field(default_factory=Inner)
        steps: int = 1

    cfg = replace(Outer(), {"inner.lr": 3, "steps": 2})
    assert cfg == Outer(Inner(3.0), 2) and isinstance(cfg.inner.lr, float)
    with pytest.raises(ConfigError, match="unknown key 'inner.lr2'"):
        replace(Outer(), {"inner.lr2": 3})
