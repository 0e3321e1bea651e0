import json
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import avrsp
from avrsp.cli import main
from avrsp.info import measure


def test_info_matches_an_independent_count():
    cfg = avrsp.get_config("avrsp_tiny")
    info = measure(cfg)
    model = avrsp.create_model(cfg)
    assert info.total_params == sum(p.numel() for p in model.parameters())
    clip = torch.rand(1, 3, cfg.frames, cfg.height, cfg.width)
    audio = torch.rand(1, 1, cfg.audio_samples)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(clip, audio)
    # Components add up to the whole (containers' children are summed, nothing twice). FLOP
    # counts are whole numbers far from 0; relative 1e-9 is float64's rounding of the sums in GFLOPs.
    assert info.total_gflops == pytest.approx(counter.get_total_flops() / 1e9, rel=1e-9)
    assert all(v > 0 for v in info.gflops.values() if v is not None)


def test_info_table_lists_every_model(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in avrsp.list_models():
        assert name in out


def test_info_json_for_one_model_with_overrides(capsys):
    assert main(["info", "avrsp_tiny", "--json", "--set", "fusion=mbt", "num_pairs=1"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["config"]["fusion"] == "mbt" and entry["config"]["num_pairs"] == 1
    assert set(entry["params"]) >= {"visual", "audio_net", "fusion", "decoder"}


def test_info_from_yaml(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text("model: avrsp_tiny\naudio: false\n")
    assert main(["info", "--config", str(path)]) == 0
    assert "audio=off" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["info", "avrsp", "--set", "fusoin=mbt"], "unknown key 'fusoin'"),
    (["info", "nope"], "unknown model 'nope'"),
    (["info", "--config", "/no/such.yaml"], "/no/such.yaml: cannot read config file"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message):
    proc = subprocess.run([sys.executable, "-m", "avrsp", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr
