"""The paper's ablations (Tables III–V, Fig. 6) on the synthetic audio-visual benchmark
(``avrsp ablate``).

One study = one ``avrsp synth`` dataset, every variant of the chosen tables trained from
scratch with each seed on fold 1's training videos, then scored on fold 1's held-out
test videos (both kinds: the audio is relevant, or it is background music):

* the MIT metrics per video kind, with the video's own sound, and for audio models also
  with the sound replaced by silence (how much of the score the sound carries);
* for RAVF variants, the Ret_A and Ret_V values of the last RAVF block on those videos,
  for the Fig. 6 analogue.

Every run writes ``result.json`` when it ends; a killed study resumes where it stopped.
``report`` turns the results into docs/results.md with tables (mean ± std over seeds)
and PNG plots. Choices where the paper is silent are in docs/results.md.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .checkpoint import atomic_write, load_model, write_generated
from .config import ConfigError, replace
from .models import get_config

#: table → rows of (label, model overrides); the rows of configs/ablations/table*.yaml.
TABLES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "III": [(f"{'AV' if a else 'V'} MS={'on' if ms else 'off'} MRG={'on' if mrg else 'off'}",
             {"audio": a, "ms": ms, "mrg": mrg})
            for a in (False, True) for ms in (False, True) for mrg in (False, True)],
    "IV": [(f"{'AV' if a else 'V'} {n} pairs", {"audio": a, "num_pairs": n}) for a in (False, True) for n in range(5)],
    "V": [("visual only", {"audio": False})] + [(f, {"audio": True, "fusion": f})
                                                 for f in ("add", "mul", "concat", "bilinear", "mbt", "ravf")],
}
METRICS = ("sim", "cc", "nss", "auc_j")
KINDS = ("relevant", "music")


@dataclass(frozen=True)
class StudyConfig:
    """One study. The defaults are the reduced study (under an hour on 2 CPU cores);
    configs/studies/ablations_full.yaml is the GPU-sized one."""

    out: str = "runs/ablations/reduced"
    model: str = "avrsp_tiny"
    tables: tuple[str, ...] = ("III", "IV", "V")
    table4_modes: tuple[str, ...] = ("AV",)   # Table IV's rows with audio (AV) and/or without (V)
    seeds: tuple[int, ...] = (0, 1, 2)
    only: tuple[str, ...] = ()               # run names (see variants()) to restrict the study to
    # data (avrsp synth)
    videos: int = 48
    frames: int = 32
    height: int = 72
    width: int = 128
    relevant_fraction: float = 0.5
    data_seed: int = 0
    # training
    epochs: int = 3
    batch_size: int = 8
    clips_per_video: int = 3
    lr: float = 1e-3
    precise_bn: int = 4
    device: str = "auto"
    workers: int = 0
    # analysis
    ret_windows_per_video: int = 4

    def validate(self) -> None:
        unknown = set(self.tables) - set(TABLES)
        if unknown:
            raise ConfigError(f"tables: unknown {sorted(unknown)} (known: {', '.join(TABLES)})")
        if not set(self.table4_modes) <= {"AV", "V"} or not self.table4_modes:
            raise ConfigError("table4_modes: a list of AV and/or V")
        if not self.seeds:
            raise ConfigError("seeds: give at least one")


def rows(study: StudyConfig, table: str) -> list[tuple[str, dict[str, Any]]]:
    """The rows of ``table`` this study runs."""
    if table == "IV":
        return [(label, o) for label, o in TABLES["IV"] if ("AV" if o["audio"] else "V") in study.table4_modes]
    return TABLES[table]


def variants(study: StudyConfig) -> dict[str, dict[str, Any]]:
    """Run name → model overrides for every distinct variant of the study's tables. Rows
    that are the same network (e.g. Table III's full AV row, Table IV's 3 pairs, Table V's
    RAVF) share one name and one set of runs."""
    out: dict[str, dict[str, Any]] = {}
    for t in study.tables:
        for _, overrides in rows(study, t):
            out.setdefault(run_name(overrides), overrides)
    if study.only:
        unknown = set(study.only) - set(out)
        if unknown:
            raise ConfigError(f"only: {sorted(unknown)} are not variants of tables {list(study.tables)} "
                              f"(those are: {', '.join(out)})")
        out = {k: v for k, v in out.items() if k in study.only}
    return out


def run_name(overrides: dict[str, Any]) -> str:
    """A canonical name: the full model's switches filled in, so equal networks get equal names."""
    o = {"audio": True, "fusion": "ravf", "ms": True, "mrg": True, "num_pairs": 3, **overrides}
    if not o["audio"]:
        o["fusion"] = "none"
    return f"{'av' if o['audio'] else 'v'}_{o['fusion']}_ms{int(o['ms'])}_mrg{int(o['mrg'])}_p{o['num_pairs']}"


# ------------------------------------------------------------------ running

def make_data(study: StudyConfig) -> Path:
    from .data.synth import SynthConfig, write_dataset

    root = Path(study.out) / "data"
    cfg = SynthConfig(videos=study.videos, frames=study.frames, height=study.height, width=study.width,
                      relevant_fraction=study.relevant_fraction, seed=study.data_seed)
    meta = root / "synth.json"
    if meta.is_file() and json.loads(meta.read_text()).get("config") == asdict(cfg):
        return root
    write_dataset(root, cfg, overwrite=True)
    return root


def train_config(study: StudyConfig, data: Path, overrides: dict[str, Any], seed: int, out: Path):
    from .train import TrainConfig

    model = get_config(study.model, **overrides)
    return replace(TrainConfig(model=model), {
        "data": {"layout": "stavis", "root": str(data / "stavis"), "split": 1, "val": "holdout",
                 "clips_per_video": study.clips_per_video, "val_clips_per_video": 1},
        "optim": {"lr": study.lr}, "epochs": study.epochs, "batch_size": study.batch_size,
        "workers": study.workers, "precise_bn": study.precise_bn, "device": study.device, "seed": seed,
        "deterministic": True, "log_images": 0, "out": str(out)}, where="ablation study")


def evaluate_run(checkpoint: Path, data: Path, device: str, ret_windows: int) -> dict:
    """Scores by video kind with sound (and silence for audio models) and Ret samples."""
    from .evaluate import aggregate, plan, score_video, video_kinds
    from .inference import predict_frames, prepare

    model = prepare(load_model(checkpoint), device, "fp32")
    items = plan(data / "stavis", "SynthAV", "1", [checkpoint])
    kinds = video_kinds(data)
    conditions = {"sound": True, "silence": False} if model.config.audio else {"sound": True}
    scores = {}
    for condition, with_sound in conditions.items():
        records = []
        for item in items:
            v = item.video
            if not with_sound and kinds.get(v.name) != "relevant":  # silence matters where sound does
                continue
            preds = [m for _, m in predict_frames(model, v.frames, len(v), v.fps, v.audio if with_sound else None,
                                                  batch=8)]
            records.append({**score_video(v, lambda k: preds[k], postprocess=False),
                            "dataset": item.dataset, "split": item.split})
        scores[condition] = {r["kind"]: {m: r[m] for m in METRICS} for r in aggregate(records, kinds)}
    result = {"scores": scores}
    if model.config.audio and model.config.fusion == "ravf":
        result["ret"] = relevance_samples(model, items, kinds, ret_windows)
    return result


def relevance_samples(model, items, kinds: dict[str, str], per_video: int) -> dict:
    """Ret_A and Ret_V of the last RAVF block, every head and token pair, for
    ``per_video`` evenly spaced windows of each video, by video kind (float16 lists)."""
    import torch

    from .data.datasets import to_model_frames
    from .inference import window

    cfg = model.config
    out: dict[str, dict[str, list]] = {k: {"ret_a": [], "ret_v": []} for k in KINDS}
    for item in items:
        v, kind = item.video, kinds.get(item.video.name)
        if kind not in out:
            continue
        n = len(v)
        for k in np.linspace(cfg.frames - 1, n - 1, per_video).round().astype(int):
            w = window(int(k), cfg.frames, lambda i: i < n)
            clip = to_model_frames(v.frames.read(list(w.indices)), (cfg.height, cfg.width))[None]
            audio = torch.from_numpy(w.audio(v.audio, v.fps, cfg.frames))[None, None]
            with torch.no_grad():
                _, relevance = model(clip, audio, return_relevance=True)
            last = relevance[-1]
            for key in ("ret_a", "ret_v"):
                out[kind][key].append(last[key].float().numpy().ravel())
    return {kind: {key: np.concatenate(vals).astype(np.float16).tolist() if vals else []
                   for key, vals in d.items()} for kind, d in out.items()}


def run_study(study: StudyConfig, *, log: Callable[[str], None] = print) -> Path:
    """Train and score every (variant, seed) not yet done; returns the study folder."""
    from .train import train

    study.validate()
    out = Path(study.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "study.json"
    if saved.is_file():
        before = {k: v for k, v in json.loads(saved.read_text()).items() if k not in SCOPE}
        changed = sorted(k for k, v in _jsonable(study).items() if k not in SCOPE and before.get(k, v) != v)
        if changed:
            raise ConfigError(f"{saved}: this folder holds a study whose runs used other {', '.join(changed)}; "
                              f"use another out=")
    atomic_write(saved, lambda tmp: Path(tmp).write_text(json.dumps(_jsonable(study), indent=1)))
    t0 = time.time()
    data = make_data(study)
    log(f"data: {data} ({study.videos} videos, {time.time() - t0:.0f} s)")
    todo = [(name, o, seed) for name, o in variants(study).items() for seed in study.seeds]
    for i, (name, overrides, seed) in enumerate(todo, 1):
        run = out / "runs" / name / f"seed{seed}"
        if (run / "result.json").is_file():
            continue
        t = time.time()
        train(train_config(study, data, overrides, seed, run), progress=False, log=lambda *_: None)
        result = {"variant": name, "overrides": overrides, "seed": seed, "train_seconds": time.time() - t}
        result.update(evaluate_run(run / "best.safetensors", data, study.device, study.ret_windows_per_video))
        result["seconds"] = time.time() - t
        atomic_write(run / "result.json", lambda tmp, r=result: Path(tmp).write_text(json.dumps(r)))
        cc = result["scores"]["sound"]
        log(f"[{i}/{len(todo)}] {name} seed {seed}: CC relevant {cc['relevant']['cc']:.3f}, "
            f"music {cc['music']['cc']:.3f} ({result['seconds']:.0f} s)")
    log(f"study done in {time.time() - t0:.0f} s: {out}")
    return out


#: Settings that choose which runs a study holds, not how each run is made: a study can
#: grow by more seeds or tables in the same folder.
SCOPE = {"out", "tables", "table4_modes", "seeds", "only", "device", "workers"}


def _jsonable(study: StudyConfig) -> dict:
    return json.loads(json.dumps(asdict(study)))


def load_results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "runs").glob("*/seed*/result.json"))]


# ------------------------------------------------------------------ report

@dataclass
class Cell:
    values: list[float] = field(default_factory=list)

    def __str__(self) -> str:
        v = [x for x in self.values if not math.isnan(x)]
        if not v:
            return "–"
        return f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}"


def _cells(results: list[dict], name: str, condition: str, kind: str, metric: str) -> Cell:
    return Cell([r["scores"][condition][kind][metric] for r in results
                 if r["variant"] == name and condition in r["scores"] and kind in r["scores"][condition]])


def table_markdown(study: StudyConfig, table: str, results: list[dict]) -> str:
    head = ["Variant"] + [f"{k} {m.upper().replace('_', '-')}" for k in KINDS for m in METRICS] + \
        ["relevant CC, silence", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, overrides in rows(study, table):
        name = run_name(overrides)
        cells = [str(_cells(results, name, "sound", k, m)) for k in KINDS for m in METRICS]
        silence = str(_cells(results, name, "silence", "relevant", "cc")) if overrides.get("audio", True) else "n/a"
        seeds = sorted(r["seed"] for r in results if r["variant"] == name)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {silence} | {', '.join(map(str, seeds))} |")
    return "\n".join(lines)


def ret_summary(results: list[dict]) -> list[dict]:
    """Per RAVF run: mean Ret_A and Ret_V by kind."""
    rows = []
    for r in results:
        if "ret" not in r:
            continue
        row = {"variant": r["variant"], "seed": r["seed"]}
        for kind in KINDS:
            for key in ("ret_a", "ret_v"):
                vals = np.asarray(r["ret"][kind][key], np.float32)
                row[f"{kind}_{key}"] = float(vals.mean()) if vals.size else math.nan
        rows.append(row)
    return rows


def plot_ret(results: list[dict], variant: str, path: Path) -> None:
    """Fig. 6 analogue: Ret_A and Ret_V histograms, relevant against music, all seeds pooled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, title in zip(axes, ("ret_a", "ret_v"), ("Ret_A (Eq. 2)", "Ret_V (Eq. 3)")):
        pooled = {k: np.concatenate([np.asarray(r["ret"][k][key], np.float32) for r in results
                                     if r["variant"] == variant and "ret" in r] or [np.zeros(0)]) for k in KINDS}
        both = np.concatenate(list(pooled.values()))
        if both.size == 0:
            continue
        lo, hi = np.percentile(both, [0.5, 99.5])
        bins = np.linspace(lo, hi, 60)
        for kind, colour in zip(KINDS, ("tab:red", "tab:blue")):
            label = "relevant audio" if kind == "relevant" else "background music"
            ax.hist(pooled[kind], bins=bins, density=True, alpha=0.55, color=colour,
                    label=f"{label} (mean {pooled[kind].mean():.3f})")
        ax.set_title(title)
        ax.set_xlabel("value")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("density")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_table(study: StudyConfig, table: str, results: list[dict], path: Path) -> None:
    """CC by variant and video kind, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table_rows = rows(study, table)
    x = np.arange(len(table_rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(table_rows) + 2), 3.6))
    for j, (kind, colour) in enumerate(zip(KINDS, ("tab:red", "tab:blue"))):
        cells = [_cells(results, run_name(o), "sound", kind, "cc").values for _, o in table_rows]
        means = [np.mean(c) if c else np.nan for c in cells]
        stds = [np.std(c, ddof=1) if len(c) > 1 else 0 for c in cells]
        ax.bar(x + (j - 0.5) * 0.38, means, 0.38, yerr=stds, color=colour, alpha=0.75, capsize=3,
               label="relevant audio" if kind == "relevant" else "background music")
    ax.set_xticks(x, [label for label, _ in table_rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("CC")
    ax.set_title(f"Table {table} analogue (synthetic data)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(study: StudyConfig, out_md: Path, *, command: str) -> Path:
    """docs/results.md (tables and plots) from the study's results, between the file's
    ``avrsp ablate`` markers: the discussion written around them stays."""
    results = load_results(Path(study.out))
    if not results:
        raise ConfigError(f"{study.out}: no finished runs to report")
    out_md = Path(out_md)
    figs = out_md.parent / "results"
    figs.mkdir(parents=True, exist_ok=True)
    seconds = sum(r["seconds"] for r in results)
    lines = ["Generated by `avrsp ablate` (src/avrsp/ablate.py) from "
             f"{len(results)} training runs ({seconds / 60:.0f} min of training and scoring in all).", "",
             "```bash", command, "```", "", "## Setup", "",
             f"- **Data**: `avrsp synth` with {study.videos} videos of {study.frames} frames at "
             f"{study.height}×{study.width}, relevant fraction {study.relevant_fraction}, seed {study.data_seed}. "
             "Fold 1: two thirds of the videos train (10 % of them held out to pick the best epoch), the "
             "other third is the test set scored here, both kinds.",
             f"- **Model**: `{study.model}` with each row's switches, trained from scratch: {study.epochs} epochs, "
             f"batch {study.batch_size}, {study.clips_per_video} clips per video per epoch, AdamW lr {study.lr}, "
             f"precise BatchNorm ({study.precise_bn} batches), deterministic.",
             f"- **Seeds**: {', '.join(map(str, study.seeds))} (model initialisation and clip sampling; the data "
             "are the same). Cells are mean ± sample standard deviation over seeds.",
             "- **Scores**: SIM, CC, NSS, AUC-J of every test frame, averaged per video then over the videos "
             "of each kind, without post-processing. *relevant CC, silence*: the same audio model scored "
             "with the sound replaced by silence; the gap to *relevant CC* is what the sound contributes.", ""]
    for table, title in (("III", "Table III: audio, MS, MRG"), ("IV", "Table IV: number of MS&MRG pairs"),
                         ("V", "Table V: fusion methods")):
        if table not in study.tables:
            continue
        plot_table(study, table, results, figs / f"table{table.lower()}.png")
        lines += [f"## {title}", "", table_markdown(study, table, results), "",
                  f"![Table {table}](results/table{table.lower()}.png)", ""]
    full = run_name({})
    if any(r["variant"] == full and "ret" in r for r in results):
        plot_ret(results, full, figs / "fig6_ret.png")
        lines += ["## Fig. 6 analogue: relevance values", "",
                  "Ret_A and Ret_V of the last RAVF block of the full model (every head and token pair, "
                  f"{study.ret_windows_per_video} windows per test video), relevant audio against background "
                  "music, all seeds pooled. Per seed, the means:", "",
                  "| Seed | Ret_A relevant | Ret_A music | Ret_V relevant | Ret_V music |", "|---|---|---|---|---|"]
        for row in ret_summary([r for r in results if r["variant"] == full]):
            lines.append(f"| {row['seed']} | {row['relevant_ret_a']:.4f} | {row['music_ret_a']:.4f} | "
                         f"{row['relevant_ret_v']:.4f} | {row['music_ret_v']:.4f} |")
        lines += ["", "![Fig. 6 analogue](results/fig6_ret.png)", ""]
    write_generated(out_md, "\n".join(lines), "avrsp ablate",
                    title="Results: the paper's ablations on synthetic audio-visual data")
    return out_md
