"""`avrsp ablate`: the fusion study's rows, runs, records, measures and report."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import avrsp.ablate as ab
from avrsp.ablate_report import RULE_SE, mean_se, paired, tables
from avrsp.ablate_score import ScoringSet, primary, roc_auc, score_model, summarise
from avrsp.cli import main
from avrsp.config import ConfigError, from_dict, read_yaml

REPO = Path(__file__).resolve().parents[1]
TINY = ["videos=24", "frames=12", "height=72", "width=128", "input_size=[64,96]", "stage1_steps=2",
        "attended_steps=2", "all_steps=2", "batch_size=2", "precise_bn=1", "front_end_steps=3", "dev_videos=1",
        "score_frames=10", "device=cpu"]


def test_the_shipped_study_config_parses_and_has_power():
    path = REPO / "configs" / "studies" / "fusion.yaml"
    study = from_dict(ab.StudyConfig, read_yaml(path), where=str(path))
    study.validate()
    assert len(study.seeds) >= 3 and study.test_videos >= 48
    assert {"visual", "add", "concat", "ravf", "ravf_plain", "ravf_scratch"} <= set(study.rows)
    assert study.dev_seed != study.test_seed and study.data_seed not in (study.dev_seed, study.test_seed)


def test_no_two_rows_are_the_same_network_trained_the_same_way():
    study = ab.StudyConfig()
    keys = [ab.network_key(study, name) for name in ab.ROWS]
    assert len(set(keys)) == len(keys)
    # Every fusion row shares the full model's stage 1; MS and MRG off is another visual network.
    assert {ab.stage1_name(study, n) for n in ab.ROWS if n != "ravf_plain"} == {ab.stage1_name(study, "ravf")}
    assert ab.stage1_name(study, "ravf_plain") != ab.stage1_name(study, "ravf")
    # Without audio the fusion is unused: the visual row names no fusion of its own.
    assert ab.row_config(study, "visual").audio is False
    with pytest.raises(ConfigError, match="rows"):
        ab.StudyConfig(rows=("nonsense",)).validate()


def test_a_study_runs_in_two_jobs_records_every_measure_resumes_and_reports(tmp_path, monkeypatch, capsys):
    out, records, md = tmp_path / "out", tmp_path / "records", tmp_path / "results.md"
    md.write_text("# Results\n\nThe protocol, written before any test video was scored.\n")
    args = ["ablate", f"out={out}", f"records={records}", *TINY, "seeds=[0,1]", "rows=[visual,add,ravf,ravf_plain]",
            "jobs=2", "--write", str(md)]
    assert main(args) == 0
    files = sorted((records / "dev").glob("*.json"))
    assert [f.name for f in files] == sorted(f"{r}_seed{s}.json" for r in ("add", "ravf", "ravf_plain", "visual")
                                              for s in (0, 1))
    recs = [json.loads(f.read_text()) for f in files]
    for r in recs:
        assert set(r["kinds"]) == {"relevant", "mixed", "offscreen", "music"}
        for kind, m in r["kinds"].items():
            assert m["videos"] == 1 and -1 <= m["cc_sound"] <= 1 and -1 <= m["agreement"] <= 1
            hits = ("hits_sound", "hits_silence") if kind in ("relevant", "mixed") else ("cue_hits_sound",
                                                                                         "cue_hits_silence")
            assert all(0 <= m[h] <= 1 for h in hits)
        assert r["commit"] and r["machine"] and r["seconds"]["score"] > 0 and r["recipe"]["videos"] == 24
        assert ("ret_auc" in r) == r["row"].startswith("ravf")
        if r["row"] == "visual":  # silence is measured, not copied: a deaf model's maps do not move
            assert all(m["agreement"] == pytest.approx(1.0) and m["cc_gain"] == 0 for m in r["kinds"].values())
    # One stage 1 per (visual network, seed): the fusion rows share one, MS and MRG off has its own.
    stage1 = out / "runs" / "stage1"
    done = sorted(str(p.parent.relative_to(stage1)) for p in stage1.glob("*/seed*/done"))
    assert done == sorted(f"{ab.stage1_name(ab.StudyConfig(), n)}/seed{s}" for n in ("ravf", "ravf_plain")
                          for s in (0, 1))
    # The audio rows' SoundNet is the front-end's, tensor for tensor (frozen through stage 2).
    from safetensors.torch import load_file

    front = load_file(out / "front_end" / "soundnet.safetensors")
    final = load_file(out / "runs" / "ravf" / "seed0" / "all" / "best.safetensors")
    assert all(torch.equal(final[f"audio_net.{k}"], v) for k, v in front.items())
    # The report keeps the hand-written protocol and shows mean ± s.e. of the records.
    text = md.read_text()
    assert "The protocol, written before any test video was scored." in text
    uses = [r["primary"]["uses_sound"] * 100 for r in recs if r["row"] == "ravf"]
    assert f"{np.mean(uses):.1f} ± {np.std(uses, ddof=1) / math.sqrt(2):.1f}" in text
    assert (md.parent / "results" / "fusion_primary.png").stat().st_size > 0
    # The Table III comparison is said in words, with the seed-paired mean and s.e.
    by = {(r["row"], r["seed"]): r["primary"]["uses_sound"] * 100 for r in recs}
    d = [by["ravf", s] - by["ravf_plain", s] for s in (0, 1)]
    assert "The share of MS and MRG (the full model minus RAVF, MS and MRG off): on using the sound " in text
    assert f"({np.mean(d):+.1f} ± {np.std(d, ddof=1) / math.sqrt(2):.1f} points)" in text
    # A finished study trains nothing again, and the report is regenerated between its markers.
    monkeypatch.setattr("avrsp.train.train", lambda *a, **k: pytest.fail("trained again"))
    assert main(args[:-3] + ["jobs=1", "--write", str(md)]) == 0
    assert md.read_text().count("avrsp ablate: begin") == 1
    # A study run in parts says which runs its tables do not hold yet.
    assert "Runs recorded" not in md.read_text()
    partial = [a if a != "seeds=[0,1]" else "seeds=[0,1,2]" for a in args[:-3]]
    assert main(partial + ["--report-only", "--write", str(md)]) == 0
    assert ("**Runs recorded: 8 of 12.** Not yet: visual only (seed 2); add (seed 2); RAVF (the full model) "
            "(seed 2); RAVF, MS and MRG off (seed 2).") in md.read_text()
    # A setting that changes how runs are made cannot share the folder.
    capsys.readouterr()
    assert main([a if a != "attended_steps=2" else "attended_steps=3" for a in args]) == 2
    assert "attended_steps" in capsys.readouterr().err


def test_scoring_counts_hits_on_the_sounding_disc_with_and_without_sound():
    """A stand-in that peaks on the disc whose colour the sounding pitch names, when that
    colour is on screen, and on the disc that moved most otherwise: with the sound its
    map is on the sounding disc in (nearly) every relevant and mixed frame, with silence
    far less often; an off-screen tone names no disc on screen, so its maps are the
    silent ones exactly (agreement 1), while a relevant video's are not."""
    scoring = ScoringSet(seed=11, videos=2, frames=20, height=72, width=128, every=3)
    m = score_model(_Oracle(), scoring)
    for kind in ("relevant", "mixed"):
        k = m["kinds"][kind]
        assert k["hits_sound"] >= 0.85 and k["hits_silence"] <= k["hits_sound"] - 0.3, (kind, k)
        assert k["agreement"] < 0.9
    assert m["kinds"]["offscreen"]["agreement"] == pytest.approx(1.0) and m["kinds"]["offscreen"]["cue_change"] == 0
    assert primary(m)["uses_sound"] == pytest.approx(np.mean(
        [v["hits_sound"] - v["hits_silence"] for v in m["videos"] if v["kind"] in ("relevant", "mixed")]))


class _Oracle(nn.Module):
    """Peaks on the disc whose palette pitch dominates the window's sound if that colour
    is on screen, else on the disc that moved most over the clip."""

    def __init__(self):
        super().__init__()
        from avrsp import get_config

        self.config = get_config("avrsp_tiny", height=64, width=96, frames=8, fusion="add")
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, clip, audio):
        from avrsp.data.synth import PALETTE

        out = []
        for c, a in zip(clip, audio):
            rgb = ((c[:, -1].permute(1, 2, 0) + 1) * 127.5).numpy()
            prev = ((c[:, -2].permute(1, 2, 0) + 1) * 127.5).numpy()
            spec = np.abs(np.fft.rfft(a[0].numpy()))
            hz = np.argmax(spec) * 22050 / len(a[0])
            colour = min(range(len(PALETTE)), key=lambda j: abs(PALETTE[j][1] - hz))
            heard = spec.max() > 1e3 and abs(PALETTE[colour][1] - hz) < 15
            centres = {}
            for j, (col, _) in enumerate(PALETTE):
                mask = np.all(np.abs(rgb - np.array(col)) < 40, -1)
                before = np.all(np.abs(prev - np.array(col)) < 40, -1)
                if mask.sum() > 10 and before.sum() > 10:
                    ys, xs = np.nonzero(mask)
                    y0, x0 = np.nonzero(before)
                    centres[j] = (ys.mean(), xs.mean(), np.hypot(ys.mean() - y0.mean(), xs.mean() - x0.mean()))
            if heard and colour in centres:
                y, x, _ = centres[colour]
            else:
                y, x, _ = max(centres.values(), key=lambda t: t[2])
            yy, xx = np.mgrid[0:rgb.shape[0], 0:rgb.shape[1]]
            out.append(torch.from_numpy(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 20.0)).float())
        return torch.stack(out)


def test_summaries_and_primary_outcomes_are_plain_means_over_videos():
    rows = [{"kind": "relevant", "index": 0, "frames": 9, "cc_sound": 0.8, "cc_silence": 0.5, "hits_sound": 0.9,
             "hits_silence": 0.3, "agreement": 0.2},
            {"kind": "mixed", "index": 1, "frames": 9, "cc_sound": 0.6, "cc_silence": 0.5, "hits_sound": 0.5,
             "hits_silence": 0.4, "agreement": 0.4},
            {"kind": "offscreen", "index": 2, "frames": 9, "cc_sound": 0.7, "cc_silence": 0.7, "cue_hits_sound": 0.6,
             "cue_hits_silence": 0.7, "agreement": 0.9},
            {"kind": "music", "index": 3, "frames": 9, "cc_sound": 0.7, "cc_silence": 0.7, "cue_hits_sound": 0.8,
             "cue_hits_silence": 0.8, "agreement": 0.7}]
    s = summarise(rows)
    assert s["kinds"]["relevant"]["hits_gain"] == pytest.approx(0.6)
    assert s["kinds"]["offscreen"]["cue_change"] == pytest.approx(-0.1)
    p = primary(s)
    assert p["uses_sound"] == pytest.approx((0.6 + 0.1) / 2) and p["discounts_sound"] == pytest.approx(0.8)


def test_the_rule_calls_a_difference_resolved_beyond_two_standard_errors():
    rec = lambda seed, v: {"seed": seed, "primary": {"uses_sound": v}}  # noqa: E731
    get = lambda r: r["primary"]["uses_sound"]  # noqa: E731
    a = [rec(0, 0.30), rec(1, 0.32), rec(2, 0.34)]
    b = [rec(0, 0.10), rec(1, 0.15), rec(2, 0.12)]
    p = paired(a, b, get)
    diffs = [0.20, 0.17, 0.22]
    assert p["diffs"] == pytest.approx(diffs) and p["mean"] == pytest.approx(np.mean(diffs))
    assert p["se"] == pytest.approx(np.std(diffs, ddof=1) / math.sqrt(3)) and p["verdict"] == "higher"
    noisy = [rec(0, 0.30), rec(1, 0.05), rec(2, 0.40)]
    assert paired(noisy, b, get)["verdict"] == "not resolved"  # mean 0.127, s.e. 0.103: within 2 s.e.
    assert paired(b, a, get)["verdict"] == "lower"
    assert paired(a, b[:2], get)["seeds"] == [0, 1]  # paired over the seeds both have
    # The study's rule is over all its training seeds: before the last is paired, no verdict.
    assert paired(a, b[:2], get, [0, 1, 2])["verdict"] == "waits for seed 2"
    assert paired(a, b[:1], get, [0, 1, 2])["verdict"] == "waits for seeds 1, 2"
    assert paired(a, b, get, [0, 1, 2])["verdict"] == "higher"
    assert mean_se([1.0]) [1] != mean_se([1.0])[1]  # one seed has no standard error (nan)
    assert RULE_SE == 2.0


def test_the_map_change_table_sets_each_kind_beside_relevant_and_skips_a_deaf_row():
    agreements = {"add": [(0.80, 0.85, 0.90, 0.95), (0.90, 0.90, 0.92, 0.96), (0.70, 0.75, 0.70, 0.90)],
                  "ravf_plain": [(1.0, 1.0, 1.0, 1.0), (0.999, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0)]}
    kinds = ("relevant", "mixed", "offscreen", "music")
    records = [{"row": n, "seed": s, "primary": {"uses_sound": 0.0, "discounts_sound": 0.0},
                "kinds": {k: {"agreement": a} for k, a in zip(kinds, ag)}}
               for n, per_seed in agreements.items() for s, ag in enumerate(per_seed)]
    text = "\n".join(tables(ab.StudyConfig(rows=("add", "ravf_plain")), records))
    text = text.split("### How much the sound moves the maps, by kind")[1].split("###")[0]
    row = next(line for line in text.splitlines() if line.startswith("| add |")).split(" | ")
    change = {k: [1 - ag[i] for ag in agreements["add"]] for i, k in enumerate(("rel", "mix", "off", "mus"))}
    se = lambda v: np.std(v, ddof=1) / math.sqrt(len(v))  # noqa: E731
    assert row[1] == f"{np.mean(change['rel']):.3f} ± {se(change['rel']):.3f}"
    assert row[3] == f"{np.mean(change['off']):.3f} ± {se(change['off']):.3f}"
    share = [o / r for o, r in zip(change["off"], change["rel"])]  # 0.5, 0.8, 1.0: per run, then averaged
    assert row[5] == f"{np.mean(share):.2f} ± {se(share):.2f} |"
    # A row whose sound moves no relevant map has no ratio (0/0), not a huge or a zero one.
    assert next(line for line in text.splitlines() if line.startswith("| RAVF, MS and MRG off |")).endswith("| – |")


def test_roc_auc_is_the_probability_a_positive_outranks_a_negative():
    assert roc_auc([3, 4, 5], [0, 1, 2]) == 1.0 and roc_auc([0, 1], [2, 3]) == 0.0
    assert roc_auc([1, 2], [1, 2]) == 0.5 and roc_auc([2.0], [1.0, 2.0, 3.0]) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 200), rng.normal(0, 1, 300)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(list(pos), list(neg)) == pytest.approx(brute)
