"""docs/results.md from the fusion study's committed records (``avrsp ablate
--report-only``): every table, figure and verdict below the protocol is computed here
from ``results/fusion_study/<set>/*.json``, so the page can be regenerated, and checked,
by anyone with the repository.

Cells are mean ± standard error over training seeds (the sample standard deviation over
√n). A comparison of two rows is paired by seed: the difference of their figures in each
seed, its mean and standard error; the protocol's rule calls a difference *resolved* when
its mean is more than two standard errors from zero (docs/results.md, "Protocol").
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .ablate import ROWS, StudyConfig, load_records
from .ablate_score import SCORED_KINDS
from .checkpoint import write_generated

#: The rule's threshold, in standard errors of the paired mean.
RULE_SE = 2.0


def mean_se(values: list[float]) -> tuple[float, float]:
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return math.nan, math.nan
    return float(np.mean(v)), float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan


def cell(values: list[float], digits: int = 3, scale: float = 1.0) -> str:
    m, se = mean_se([x * scale for x in values if x is not None])
    if math.isnan(m):
        return "–"
    return f"{m:.{digits}f}" + (f" ± {se:.{digits}f}" if not math.isnan(se) else "")


def paired(a: list[dict], b: list[dict], get, seeds: list[int] | None = None) -> dict:
    """Seed-paired difference ``get(a) − get(b)`` over the seeds both rows have. With
    ``seeds`` (the study's), the rule gives a verdict only once every one of them is
    paired; before, the verdict says which it waits for."""
    by_seed = {r["seed"]: r for r in b}
    diffs = {r["seed"]: get(r) - get(by_seed[r["seed"]]) for r in a if r["seed"] in by_seed}
    m, se = mean_se(list(diffs.values()))
    verdict = "not resolved"
    waiting = sorted(set(seeds or ()) - set(diffs))
    if waiting:
        verdict = f"waits for seed{'s' if len(waiting) > 1 else ''} {', '.join(map(str, waiting))}"
    elif not math.isnan(se) and se > 0 and abs(m) > RULE_SE * se:
        verdict = "higher" if m > 0 else "lower"
    elif not math.isnan(se) and se == 0 and m != 0:
        verdict = "higher" if m > 0 else "lower"
    return {"seeds": sorted(diffs), "diffs": [diffs[s] for s in sorted(diffs)], "mean": m, "se": se,
            "verdict": verdict}


def _difference(p: dict, digits: int, scale: float) -> str:
    """A paired difference as mean ± s.e. [per seed]; one seed has no standard error."""
    se = "" if math.isnan(p["se"]) else f" ± {p['se'] * scale:.{digits}f}"
    return (f"{p['mean'] * scale:+.{digits}f}{se} "
            f"[{', '.join(f'{x * scale:+.{digits}f}' for x in p['diffs'])}]")


def _rows(records: list[dict], name: str) -> list[dict]:
    return sorted((r for r in records if r["row"] == name), key=lambda r: r["seed"])


def _kind(r: dict, kind: str, key: str) -> float | None:
    return r["kinds"].get(kind, {}).get(key)


def _uses(r: dict) -> float:
    return r["primary"]["uses_sound"]


def _discounts(r: dict) -> float:
    return r["primary"]["discounts_sound"]


def tables(study: StudyConfig, records: list[dict]) -> list[str]:
    names = [n for n in study.rows if _rows(records, n)]
    lines = ["### The two primary outcomes", "",
             "*Uses the sound*: points of hits on the sounding disc gained from the sound (sound − silence), "
             "relevant and mixed videos. *Discounts the sound*: CC between the maps made with the sound and "
             "with silence, offscreen and music videos (1 = the sound changes nothing).", "",
             "| Row | uses the sound (points) | discounts the sound (CC) | seeds |", "|---|---|---|---|"]
    for n in names:
        rs = _rows(records, n)
        lines.append(f"| {ROWS[n].label} | {cell([_uses(r) for r in rs], 1, 100)} | "
                     f"{cell([_discounts(r) for r in rs], 3)} | {', '.join(str(r['seed']) for r in rs)} |")
    lines += ["", "### Videos whose viewers follow the tone", "",
              "% of scored frames whose map peaks on the sounding disc, and CC with the ground truth, with the "
              "sound and with silence.", "",
              "| Row | " + " | ".join(f"{k}: hits sound | silence | gain | CC sound | CC gain"
                                      for k in ("relevant", "mixed")) + " |",
              "|---|" + "---|" * 10]
    for n in names:
        rs = _rows(records, n)
        cells = []
        for k in ("relevant", "mixed"):
            cells += [cell([_kind(r, k, "hits_sound") for r in rs], 1, 100),
                      cell([_kind(r, k, "hits_silence") for r in rs], 1, 100),
                      cell([_kind(r, k, "hits_gain") for r in rs], 1, 100),
                      cell([_kind(r, k, "cc_sound") for r in rs]), cell([_kind(r, k, "cc_gain") for r in rs])]
        lines.append(f"| {ROWS[n].label} | " + " | ".join(cells) + " |")
    lines += ["", "### Videos whose viewers ignore the sound", "",
              "CC between the maps made with the sound and with silence (*agreement*); % of frames whose map "
              "peaks on the fastest disc, the visual cue, with the sound and its change from silence; CC with "
              "the ground truth with the sound.", "",
              "| Row | " + " | ".join(f"{k}: agreement | cue hits sound | change | CC sound"
                                      for k in ("offscreen", "music")) + " |",
              "|---|" + "---|" * 8]
    for n in names:
        rs = _rows(records, n)
        cells = []
        for k in ("offscreen", "music"):
            cells += [cell([_kind(r, k, "agreement") for r in rs]),
                      cell([_kind(r, k, "cue_hits_sound") for r in rs], 1, 100),
                      cell([_kind(r, k, "cue_change") for r in rs], 1, 100), cell([_kind(r, k, "cc_sound") for r in rs])]
        lines.append(f"| {ROWS[n].label} | " + " | ".join(cells) + " |")
    lines += _moves_table(names, records)
    ravf_rows = [n for n in names if any("ret_auc" in r for r in _rows(records, n))]
    if ravf_rows:
        keys = [f"{a}_relevant_vs_{b}" for a in ("ret_a", "ret_v") for b in ("offscreen", "music")]
        lines += ["", "### Relevance maps (Fig. 6)", "",
                  "ROC AUC of each test video's mean Ret_A (Ret_V) separating relevant videos from offscreen "
                  "or music videos: 0.5 = not at all, 0 or 1 = perfectly (Ret is not squashed, so its sign is "
                  "free).", "",
                  "| Row | Ret_A: relevant vs offscreen | relevant vs music | Ret_V: relevant vs offscreen | "
                  "relevant vs music |", "|---|---|---|---|---|"]
        for n in ravf_rows:
            rs = [r for r in _rows(records, n) if "ret_auc" in r]
            lines.append(f"| {ROWS[n].label} | " + " | ".join(cell([r["ret_auc"][k] for r in rs], 2) for k in keys)
                         + " |")
    return lines


#: Below this map change from the sound on relevant videos (1 − agreement), a run uses
#: no sound and the offscreen ÷ relevant ratio is left out (0/0).
MOVES_FLOOR = 0.01


def _moves(r: dict, kind: str) -> float | None:
    """How much the sound changes the maps of a kind's videos: 1 − agreement (CC of the
    maps with the sound and with silence)."""
    a = _kind(r, kind, "agreement")
    return None if a is None else 1.0 - a


def _offscreen_share(r: dict) -> float | None:
    """Offscreen videos' map change over relevant videos': 0 when the model discounts a
    tone whose disc is not on screen, 1 when it reacts to it as to a relevant one."""
    rel, off = _moves(r, "relevant"), _moves(r, "offscreen")
    return None if rel is None or off is None or rel < MOVES_FLOOR else off / rel


def _moves_table(names: list[str], records: list[dict]) -> list[str]:
    """Not one of the protocol's measures: the agreement of every kind, side by side, to
    show whether a row tells relevant from irrelevant sound or moves all maps alike."""
    lines = ["", "### How much the sound moves the maps, by kind", "",
             "Beyond the protocol's measures, from the same records: 1 − agreement (CC of the maps made with the "
             "sound and with silence) on each kind, and, per run, offscreen's over relevant's (0 = a tone whose "
             "disc is not on screen is ignored, 1 = it moves the maps as much as a relevant one; left out where "
             f"the sound moves relevant maps by less than {MOVES_FLOOR:g}). The rule does not use this table.", "",
             "| Row | relevant | mixed | offscreen | music | offscreen ÷ relevant |", "|---|---|---|---|---|---|"]
    for n in names:
        rs = _rows(records, n)
        shares = [_offscreen_share(r) for r in rs]
        share = "–" if None in shares else cell(shares, 2)
        lines.append(f"| {ROWS[n].label} | " + " | ".join(cell([_moves(r, k) for r in rs]) for k in SCORED_KINDS)
                     + f" | {share} |")
    return lines


def comparisons(study: StudyConfig, records: list[dict]) -> tuple[list[str], list[str]]:
    """The paired table and the sentences the rule gives."""
    ravf = _rows(records, "ravf")
    lines = ["### RAVF against each other row, paired by seed", "",
             f"Mean ± standard error of RAVF's figure minus the row's, over the seeds both have (per seed in "
             f"brackets); *higher*/*lower*: more than {RULE_SE:g} standard errors from zero (the protocol's rule).",
             "", "| RAVF minus | uses the sound (points) | verdict | discounts the sound (CC) | verdict |",
             "|---|---|---|---|---|"]
    verdicts = {}
    for n in study.rows:
        other = _rows(records, n)
        if n == "ravf" or not other or not ravf:
            continue
        u, d = paired(ravf, other, _uses, study.seeds), paired(ravf, other, _discounts, study.seeds)
        verdicts[n] = (u, d)
        lines.append(f"| {ROWS[n].label} | {_difference(u, 1, 100)} | {u['verdict']} | {_difference(d, 3, 1)} | "
                     f"{d['verdict']} |")
    final = {n: v for n, v in verdicts.items() if not v[0]["verdict"].startswith("waits")}
    sentences = []
    fusions = [n for n in verdicts if ROWS[n].table == "V" and n != "visual"]
    if any(n not in final for n in fusions):
        sentences.append("The rule is applied once RAVF and each fusion it is compared with have every training "
                         "seed recorded (the verdicts above say what each comparison waits for); the paired "
                         "differences so far decide nothing.")
    elif fusions:
        sentences.append(_claim(fusions, final))
    for n, what in (("ravf_plain", "MS and MRG"), ("ravf_scratch", "the pretrained front-end")):
        if n in final:
            u, d = final[n]
            sentences.append(f"The share of {what} (the full model minus {ROWS[n].label}): on using the sound "
                             f"{u['verdict']} ({u['mean'] * 100:+.1f} ± {u['se'] * 100:.1f} points), on discounting "
                             f"it {d['verdict']} ({d['mean']:+.3f} ± {d['se']:.3f} CC).")
    return lines, sentences


def _claim(fusions: list[str], verdicts: dict) -> str:
    """What the rule says of the paper's claim, from RAVF's verdicts against Table V's fusions."""
    beaten = [n for n in fusions if verdicts[n][0]["verdict"] == "higher"]
    worse = [n for n in fusions if verdicts[n][1]["verdict"] == "lower"]
    if len(beaten) == len(fusions) and not worse:
        return (f"By the protocol's rule RAVF uses the relevant sound more than every other fusion "
                f"({_names(fusions)}) without discounting irrelevant sound less: on this data, the claim that "
                f"relevance guidance makes the sound count holds.")
    less = [n for n in fusions if verdicts[n][0]["verdict"] == "lower"]
    return (f"By the protocol's rule RAVF uses the relevant sound more than {_names(beaten) or 'no other fusion'}, "
            f"and the difference is not resolved for "
            f"{_names([n for n in fusions if verdicts[n][0]['verdict'] == 'not resolved']) or 'none'}"
            + (f"; it uses it less than {_names(less)}" if less else "")
            + f". It discounts irrelevant sound less than {_names(worse) or 'no other fusion'}. "
            "On this data the claim that relevance guidance is what makes the sound count is not supported "
            "over " + (_names([n for n in fusions if n not in beaten]) or "—") + ".")


def _names(names: list[str]) -> str:
    return ", ".join(ROWS[n].label for n in names)


def plot_primary(study: StudyConfig, records: list[dict], path: Path) -> None:
    """Each row's two primary outcomes, one dot per seed, mean ± s.e. as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in study.rows if _rows(records, n)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, get, scale, title in ((axes[0], _uses, 100, "uses the sound: hits gain (points)"),
                                  (axes[1], _discounts, 1, "discounts the sound: CC sound vs silence")):
        for j, n in enumerate(names):
            vals = [get(r) * scale for r in _rows(records, n)]
            m, se = mean_se(vals)
            ax.bar(j, m, 0.6, yerr=0 if math.isnan(se) else se, color="tab:red" if n == "ravf" else "tab:grey",
                   alpha=0.6, capsize=3)
            ax.scatter(np.full(len(vals), j), vals, s=10, color="black", zorder=3)
        ax.set_xticks(range(len(names)), [ROWS[n].label for n in names], rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ret(records: list[dict], path: Path) -> None:
    """Fig. 6 analogue: each test video's mean Ret_A and Ret_V by kind, for each RAVF seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in _rows(records, "ravf") if "ret_auc" in r]
    colours = {"relevant": "tab:red", "mixed": "tab:orange", "offscreen": "tab:blue", "music": "tab:green"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, key in zip(axes, ("ret_a", "ret_v")):
        for j, r in enumerate(runs):
            for i, kind in enumerate(SCORED_KINDS):
                vals = [v[key] for v in r["videos"] if v["kind"] == kind]
                x = j + (i - 1.5) * 0.18 + np.random.default_rng(j * 10 + i).uniform(-0.05, 0.05, len(vals))
                ax.scatter(x, vals, s=8, color=colours[kind], alpha=0.7, label=kind if j == 0 else None)
        ax.set_xticks(range(len(runs)), [f"seed {r['seed']}" for r in runs], fontsize=8)
        ax.set_title(f"{'Ret_A (Eq. 2)' if key == 'ret_a' else 'Ret_V (Eq. 3)'}, video mean", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(study: StudyConfig, out_md: Path, *, command: str) -> Path:
    """The generated part of docs/results.md (between its ``avrsp ablate`` markers; the
    protocol and discussion around it stay)."""
    from .config import ConfigError

    records = load_records(study)
    if not records:
        raise ConfigError(f"{Path(study.records) / study.score_set}: no records to report")
    out_md = Path(out_md)
    figs = out_md.parent / "results"
    figs.mkdir(parents=True, exist_ok=True)
    stage1 = {(r["stage1"], r["seed"]): r["seconds"]["stage1"] for r in records}
    hours = (sum(v for r in records for k, v in r["seconds"].items() if k != "stage1") + sum(stage1.values())) / 3600
    machines = sorted({r["machine"] for r in records})
    commits = sorted({r["commit"] for r in records})
    per_kind = {k for r in records for k in r["kinds"]}
    n_videos = sorted({r["kinds"][k]["videos"] for r in records for k in r["kinds"]})
    lines = [f"Generated by `{command}` from {len(records)} records in `{study.records}/{study.score_set}/` "
             f"(the {study.score_set} set: {', '.join(f'{n}' for n in n_videos)} videos of each of "
             f"{', '.join(k for k in SCORED_KINDS if k in per_kind)}; code at {', '.join(c[:12] for c in commits)}; "
             f"{', '.join(machines)}; {hours:.1f} hours of training and scoring in all).", ""]
    done = {(r["row"], r["seed"]) for r in records}
    missing = [(n, s) for n in study.rows for s in study.seeds if (n, s) not in done]
    if missing:  # a study run in parts: say what the tables do not hold yet
        rows = {n: [s for m, s in missing if m == n] for n, _ in missing}
        lines += [f"**Runs recorded: {len(study.rows) * len(study.seeds) - len(missing)} of "
                  f"{len(study.rows) * len(study.seeds)}.** Not yet: " + "; ".join(
                      f"{ROWS[n].label} (seed{'s' if len(ss) > 1 else ''} {', '.join(map(str, ss))})"
                      for n, ss in rows.items()) + ".", ""]
    lines += tables(study, records) + [""]
    comparison, sentences = comparisons(study, records)
    if not sentences:
        sentences = ["No comparison yet: the rule needs RAVF and another row recorded with the same seeds."]
    lines += comparison + [""]
    plot_primary(study, records, figs / "fusion_primary.png")
    lines += ["![The primary outcomes by row](results/fusion_primary.png)", ""]
    if any("ret_auc" in r for r in _rows(records, "ravf")):
        plot_ret(records, figs / "fusion_ret.png")
        lines += ["![Ret_A and Ret_V per test video](results/fusion_ret.png)", ""]
    lines += ["### What the rule says", ""] + [f"- {s}" for s in sentences]
    write_generated(out_md, "\n".join(lines), "avrsp ablate", title="Results: the fusion study on synthetic data")
    return out_md
