"""`avrsp ablate` (issue 9): the study's variants, runs, resumption and report."""

import json

import numpy as np
import pytest

import avrsp.ablate as ab
from avrsp.cli import main
from avrsp.config import ConfigError

TINY = ["videos=6", "frames=16", "epochs=1", "clips_per_video=1", "precise_bn=1", "ret_windows_per_video=2",
        "device=cpu", "seeds=[0,1]", "tables=[V]"]
FULL, VISUAL = ab.run_name({}), ab.run_name({"audio": False})


@pytest.mark.parametrize("name", ["ablations_reduced", "ablations_full"])
def test_shipped_study_configs_parse(name):
    from pathlib import Path

    from avrsp.config import from_dict, read_yaml

    path = Path(__file__).resolve().parents[1] / "configs" / "studies" / f"{name}.yaml"
    study = from_dict(ab.StudyConfig, read_yaml(path), where=str(path))
    study.validate()
    if name == "ablations_reduced":  # the file and the defaults of `avrsp ablate` are the same study
        assert study == ab.StudyConfig()
    assert len(study.seeds) >= 3


def test_equal_networks_share_runs_and_each_table_keeps_its_rows():
    reduced, full = ab.StudyConfig(), ab.StudyConfig(table4_modes=("V", "AV"))
    # Table III: 8 rows; Table IV: 0–4 pairs (3 = the full model); Table V: 5 other fusions.
    assert len(ab.variants(reduced)) == 8 + 4 + 5
    assert len(ab.variants(full)) == 8 + 8 + 5
    assert ab.run_name({"num_pairs": 3}) == ab.run_name({"fusion": "ravf"}) == FULL
    assert ab.run_name({"audio": False, "fusion": "mbt"}) == VISUAL  # fusion is unused without audio
    assert [label for label, _ in ab.rows(reduced, "IV")] == [f"AV {n} pairs" for n in range(5)]
    with pytest.raises(ConfigError, match="only"):
        ab.variants(ab.StudyConfig(only=("nonsense",)))


def test_study_runs_resumes_and_reports(tmp_path, monkeypatch, capsys):
    out, md = tmp_path / "study", tmp_path / "results.md"
    args = ["ablate", f"out={out}", *TINY, f"only=[{FULL},{VISUAL}]", "--write", str(md)]
    md.write_text("# Results\n\nHand-written discussion that must survive.\n")
    assert main(args) == 0
    results = ab.load_results(out)
    assert sorted((r["variant"], r["seed"]) for r in results) == [(FULL, 0), (FULL, 1), (VISUAL, 0), (VISUAL, 1)]
    for r in results:
        sound = r["scores"]["sound"]
        assert {"relevant", "music"} <= set(sound) and all(-1 <= sound[k]["cc"] <= 1 for k in ("relevant", "music"))
        if r["variant"] == FULL:  # silence is scored on relevant videos, Ret sampled for both kinds
            assert set(r["scores"]["silence"]) >= {"relevant"} and "music" not in r["scores"]["silence"]
            assert all(len(r["ret"][k]["ret_a"]) > 0 and len(r["ret"][k]["ret_v"]) > 0 for k in ("relevant", "music"))
        else:
            assert "silence" not in r["scores"] and "ret" not in r
    text = md.read_text()
    assert "Hand-written discussion that must survive." in text
    # The RAVF row's CC cell is the mean ± sample std of the two seeds' figures.
    ccs = [r["scores"]["sound"]["relevant"]["cc"] for r in results if r["variant"] == FULL]
    assert f"{np.mean(ccs):.3f} ± {np.std(ccs, ddof=1):.3f}" in text
    assert (md.parent / "results" / "tablev.png").stat().st_size > 0
    assert (md.parent / "results" / "fig6_ret.png").stat().st_size > 0

    # Finished runs are not trained again; the report is regenerated between its markers.
    monkeypatch.setattr("avrsp.train.train", lambda *a, **k: pytest.fail("trained again"))
    assert main(args) == 0
    assert md.read_text().count("avrsp ablate: begin") == 1
    # Settings that change how runs are made cannot share the folder; more seeds can.
    capsys.readouterr()
    assert main([a if a != "epochs=1" else "epochs=2" for a in args]) == 2
    assert "epochs" in capsys.readouterr().err
    saved = json.loads((out / "study.json").read_text())
    assert saved["epochs"] == 1
