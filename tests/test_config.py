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


@pytest.mark.parametrize("text, value", [
    ("5e-5", 5e-5), ("1e-4", 1e-4), ("1E-4", 1e-4), ("1.0e-4", 1e-4), ("+1e-4", 1e-4), (".5e-3", 5e-4),
    ("0.0001", 1e-4), ("3", 3.0), ("-2.5e+3", -2500.0), ("1_000.5", 1000.5),
])
def test_float_fields_accept_every_usual_notation(tmp_path, text, value):
    """PyYAML reads `1e-4` as a string (YAML 1.1); configs read it as the number it is,
    on the command line and in YAML files alike."""
    from avrsp.train import load_train_config

    # Decimal text to a double is correctly rounded: the literal's own value, exactly.
    cfg = replace(avrsp.get_config("avrsp"), parse_overrides([f"bn_momentum={text}"]))
    assert cfg.bn_momentum == value
    path = tmp_path / "t.yaml"
    path.write_text(f"model: avrsp_tiny\noptim:\n  lr: {text}\n")
    cfg = load_train_config(path, parse_overrides([f"optim.weight_decay={text}"]))
    assert cfg.optim.lr == value and isinstance(cfg.optim.lr, float)
    assert cfg.optim.weight_decay == value


@pytest.mark.parametrize("text, value", [("12", 12), ("1e3", 1000), ("1_000", 1000), ("10.0", 10), ("+7", 7)])
def test_integer_fields_accept_integral_numbers(text, value):
    cfg = replace(avrsp.get_config("avrsp"), parse_overrides([f"mlp_ratio={text}"]))
    assert cfg.mlp_ratio == value and isinstance(cfg.mlp_ratio, int)


@pytest.mark.parametrize("text, message", [("10.5", "expected an integer"), ("'12'", "expected an integer"),
                                           ("1e400", "expected an integer"), ("ten", "expected an integer")])
def test_integer_fields_reject_what_is_not_an_integer(text, message):
    with pytest.raises(ConfigError, match=message):
        replace(avrsp.get_config("avrsp"), parse_overrides([f"mlp_ratio={text}"]))


def test_quoted_numbers_stay_strings_and_pyyaml_is_left_alone():
    import yaml

    with pytest.raises(ConfigError, match="expected a number"):
        replace(avrsp.get_config("avrsp"), parse_overrides(["dropout='1e-4'"]))
    assert yaml.safe_load("x: 1e-4") == {"x": "1e-4"}  # other users of PyYAML see YAML 1.1 as before
