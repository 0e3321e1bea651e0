"""`avrsp ablate` (issue 9): the study's variants, runs, resumption and report."""

import json

import numpy as np
import pytest

import avrsp.ablate as ab
from avrsp.cli import main
from avrsp.config import ConfigError

TINY = ["videos=12", "frames=12", "height=72", "width=128", "stage1_epochs=1", "stage1_steps=2", "stage2_epochs=1",
        "stage2_steps=2", "batch_size=2", "precise_bn=1", "probe_steps=20", "eval_videos=2", "workers=0",
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
    args = ["ablate", f"out={out}", *TINY, f"only=[{FULL},{VISUAL},{ab.run_name({'fusion': 'add'})}]",
            "--write", str(md)]
    md.write_text("# Results\n\nHand-written discussion that must survive.\n")
    assert main(args) == 0
    results = ab.load_results(out)
    add = ab.run_name({"fusion": "add"})
    assert sorted((r["variant"], r["seed"]) for r in results) == sorted(
        (v, s) for v in (FULL, VISUAL, add) for s in (0, 1))
    # One stage 1 per seed serves all three variants: they share the visual network.
    assert sorted(p.parent.name for p in (out / "runs" / "stage1").glob("*/seed*/done")) == ["seed0", "seed1"]
    assert (out / "probe" / "soundnet.safetensors").is_file()
    from safetensors.torch import load_file

    stage1 = load_file(str(out / "runs" / "stage1" / ab.visual_name({}) / "seed0" / "best.safetensors"))
    for r in results:
        sound = r["scores"]["sound"]
        assert {"relevant", "music"} <= set(sound) and all(-1 <= sound[k]["cc"] <= 1 for k in ("relevant", "music"))
        assert 0 <= r["hits"]["sound"] <= 1 and 0 <= r["hits"]["silence"] <= 1
        if r["variant"] == VISUAL:
            assert "silence" not in r["scores"] and "ret" not in r and r["hits"]["sound"] == r["hits"]["silence"]
            continue
        # Silence on both kinds, another video's music on music videos only; agreement of maps in [-1, 1].
        assert set(r["scores"]["silence"]) == {"relevant", "music"} and set(r["scores"]["other"]) == {"music"}
        assert all(-1 <= r["music_agreement"][c] <= 1 for c in ("silence", "other"))
        if r["variant"] == FULL:  # Ret per test video, and the AUC separating the kinds
            assert len(r["ret"]) == 4 and {v["kind"] for v in r["ret"]} == {"relevant", "music"}
            assert 0 <= r["ret_a_auc"] <= 1 and 0 <= r["ret_v_auc"] <= 1
        else:
            assert "ret" not in r
    # Stage 2 started from stage 1: a visual tensor stage 2 cannot have moved far is the same at the start.
    assert set(stage1) <= set(load_file(str(out / "runs" / FULL / "seed0" / "best.safetensors")))
    text = md.read_text()
    assert "Hand-written discussion that must survive." in text
    # The report names where the seconds were measured.
    assert {r["machine"] for r in results} == {ab.machine_label("cpu")} and ab.machine_label("cpu") in text
    # The RAVF row's relevant-CC cell is the mean ± sample std of the two seeds' figures.
    ccs = [r["scores"]["sound"]["relevant"]["cc"] for r in results if r["variant"] == FULL]
    assert f"{np.mean(ccs):.3f} ± {np.std(ccs, ddof=1):.3f}" in text
    gains = [r["scores"]["sound"]["relevant"]["cc"] - r["scores"]["silence"]["relevant"]["cc"]
             for r in results if r["variant"] == FULL]
    assert f"{np.mean(gains):.3f} ± {np.std(gains, ddof=1):.3f}" in text
    assert (md.parent / "results" / "tablev.png").stat().st_size > 0
    assert (md.parent / "results" / "fig6_ret.png").stat().st_size > 0

    # Finished runs are not trained again; the report is regenerated between its markers.
    monkeypatch.setattr("avrsp.train.train", lambda *a, **k: pytest.fail("trained again"))
    assert main(args) == 0
    assert md.read_text().count("avrsp ablate: begin") == 1
    # Settings that change how runs are made cannot share the folder; more seeds can.
    capsys.readouterr()
    assert main([a if a != "stage2_steps=2" else "stage2_steps=3" for a in args]) == 2
    assert "stage2_steps" in capsys.readouterr().err
    saved = json.loads((out / "study.json").read_text())
    assert saved["stage2_steps"] == 2
    # A report covers its own variants and seeds only, though the folder holds more runs.
    narrow = [a for a in args if not a.startswith(("only=", "seeds="))] + ["only=[" + FULL + "]", "seeds=[1]"]
    assert main(narrow + ["--report-only"]) == 0
    text = md.read_text()
    assert "from 1 stage-2 run and" in text and "| add | – |" in text


def test_roc_auc_is_the_probability_a_positive_outranks_a_negative():
    assert ab.roc_auc([3, 4, 5], [0, 1, 2]) == 1.0 and ab.roc_auc([0, 1], [2, 3]) == 0.0
    assert ab.roc_auc([1, 2], [1, 2]) == 0.5 and ab.roc_auc([2.0], [1.0, 2.0, 3.0]) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 200), rng.normal(0, 1, 300)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert ab.roc_auc(list(pos), list(neg)) == pytest.approx(brute)


def test_curriculum_trains_on_relevant_videos_then_continues_on_both(tmp_path):
    """stage2_relevant_steps: stage 2 first trains on the relevant videos alone, and the
    part on both kinds starts from everything it learned (SoundNet included)."""
    from avrsp.config import read_yaml
    from avrsp.evaluate import video_kinds

    out, md = tmp_path / "study", tmp_path / "results.md"
    tiny = [a for a in TINY if not a.startswith("seeds=")]
    assert main(["ablate", f"out={out}", *tiny, "seeds=[0]", f"only=[{FULL}]", "stage2_relevant_steps=1",
                 "--write", str(md)]) == 0
    data = out / "data"
    kinds = video_kinds(data)
    for lst in sorted((data / "stavis" / "fold_lists").glob("*.txt")):
        every = [line.split()[0] for line in lst.read_text().splitlines() if line.strip()]
        cut = [line.split()[0] for line in (data / "stavis_relevant" / "fold_lists" / lst.name).read_text().splitlines()
               if line.strip()]
        assert cut == [v for v in every if kinds[v] == "relevant"] and cut and len(cut) < len(every)
    run = out / "runs" / FULL / "seed0"
    first, second = read_yaml(run / "relevant" / "config.yaml"), read_yaml(run / "config.yaml")
    assert first["data"]["root"] == str(data / "stavis_relevant") and first["steps_per_epoch"] == 1
    assert first["init"]["model"] == str(out / "runs" / "stage1" / ab.visual_name({}) / "seed0" / "best.safetensors")
    assert first["init"]["soundnet"] == str(out / "probe" / "soundnet.safetensors")
    assert second["data"]["root"] == str(data / "stavis") and second["steps_per_epoch"] == 2
    assert second["init"] == {**second["init"], "model": str(run / "relevant" / "best.safetensors"), "soundnet": ""}
    assert "starts with 1 step on the relevant" in md.read_text()
    # A folder of one recipe does not take runs of the other, nor does one from before the setting.
    assert main(["ablate", f"out={out}", *tiny, "seeds=[0]", f"only=[{FULL}]", "--write", str(md)]) == 2
    saved = json.loads((out / "study.json").read_text())
    (out / "study.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "stage2_relevant_steps"}))
    assert main(["ablate", f"out={out}", *tiny, "seeds=[0]", f"only=[{FULL}]", "stage2_relevant_steps=1",
                 "--write", str(md)]) == 2


def test_frozen_soundnet_stays_the_probe_and_silent_music_videos_are_trained_on(tmp_path):
    """freeze_soundnet: the scored model's SoundNet is the probe's, tensor for tensor;
    silent_fraction: the study's data holds music videos without sound, and the report
    says both."""
    import torch
    from safetensors.torch import load_file

    from avrsp.evaluate import video_kinds

    out, md = tmp_path / "study", tmp_path / "results.md"
    tiny = [a for a in TINY if not a.startswith("seeds=")]
    assert main(["ablate", f"out={out}", *tiny, "seeds=[0]", f"only=[{FULL}]", "freeze_soundnet=true",
                 "silent_fraction=0.5", "--write", str(md)]) == 0
    assert "silent" in set(video_kinds(out / "data").values())
    probe = load_file(out / "probe" / "soundnet.safetensors")
    trained = load_file(out / "runs" / FULL / "seed0" / "best.safetensors")
    own = {k.removeprefix("audio_net."): v for k, v in trained.items() if k.startswith("audio_net.")}
    assert own and own.keys() == probe.keys()
    assert all(torch.equal(own[k], probe[k]) for k in probe)
    text = md.read_text()
    assert "frozen" in text and "50% of the music videos without sound" in text
    with pytest.raises(ConfigError, match="freeze_soundnet"):
        ab.StudyConfig(soundnet="", freeze_soundnet=True).validate()
