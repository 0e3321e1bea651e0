"""The paper's ablations (Tables III–V, Fig. 6) on the synthetic audio-visual benchmark
(``avrsp ablate``), with the recipe that lets the sound matter.

One study = one ``avrsp synth`` dataset of both kinds of video (the sound says which
disc viewers look at, or it is background music), and per seed:

* **stage 1**: one visual-only network per visual configuration (MS, MRG, pairs), shared
  by every variant built on it, as the paper's stage 1 on DHF1K: all six fusions of
  Table V share one;
* **stage 2**: per variant, that stage 1 continued at the study's input size (at least
  4×6 fusion tokens, where the sound can point at a place), with the audio branch and
  SoundNet started from a pretrained state (the pitch probe, ``avrsp.pretrain``), or
  without audio for the visual-only rows, which get the same training for fairness.
  With ``stage2_relevant_steps`` > 0 stage 2 is a curriculum: that many steps on the
  relevant videos only, where the sound is the one cue to learn, then its epochs on
  both kinds (the built-in model's recipe, docs/default_model.md). ``freeze_soundnet``
  keeps SoundNet at its pretrained state through stage 2, and ``silent_fraction`` writes
  that share of the music videos without sound (the built-in model's stages 4 and 5).

Each variant is then scored on fold 1's held-out test videos of both kinds, and the
measures answer the paper's claims rather than only its tables:

* *uses relevant sound*: relevant-video CC with the sound minus with silence, and how
  often the map peaks on the sounding disc with the sound and with silence;
* *discounts irrelevant sound*: on music videos, how far the maps made with the music
  agree with the maps made with silence and with another video's music (CC 1.0: the
  music is ignored), and the change in score;
* *relevance maps*: per test video, the mean Ret_A and Ret_V of RAVF; how well they
  separate relevant from music videos (ROC AUC per seed).

Every run writes its result when it ends, so a killed study resumes where it stopped.
``report`` turns the results into docs/results.md. Choices are listed there.
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
    """One study. The defaults are the reduced study, sized for about 3 hours on 2 CPU
    cores (docs/results.md has the measured time); configs/studies/ablations_full.yaml
    is the GPU-sized one."""

    out: str = "runs/ablations/reduced"
    model: str = "avrsp_tiny"
    tables: tuple[str, ...] = ("III", "IV", "V")
    table4_modes: tuple[str, ...] = ("AV",)   # Table IV's rows with audio (AV) and/or without (V)
    seeds: tuple[int, ...] = (0, 1, 2)
    only: tuple[str, ...] = ()               # run names (see variants()) to restrict the study to
    # data (avrsp synth): both kinds, so that a model can learn to discount music
    videos: int = 1200
    frames: int = 16
    height: int = 144
    width: int = 256
    relevant_fraction: float = 0.5
    silent_fraction: float = 0.0             # of the music videos, written without sound (avrsp synth)
    data_seed: int = 0
    # stage 1: visual only; at the stage-2 size, where X⁰ carries where things are (docs/training.md)
    stage1_size: tuple[int, int] = (128, 192)
    stage1_epochs: int = 1
    stage1_steps: int = 150                  # optimiser steps per epoch
    # stage 2: the study's input size; X⁰'s grid is (height/32)×(width/32) tokens
    input_size: tuple[int, int] = (128, 192)
    stage2_epochs: int = 1
    stage2_steps: int = 150
    stage2_relevant_steps: int = 0           # curriculum: stage 2 starts with this many steps on relevant videos only
    batch_size: int = 8
    lr: float = 1e-3
    precise_bn: int = 8
    soundnet: str = "probe"                  # "probe" (trained once per study), "" (from scratch) or a file
    probe_steps: int = 300
    freeze_soundnet: bool = False            # stage 2 keeps SoundNet (and its BatchNorm) as it started
    device: str = "auto"
    workers: int = 1
    # analysis: the first videos of each kind in fold 1's test list
    eval_videos: int = 12

    def validate(self) -> None:
        unknown = set(self.tables) - set(TABLES)
        if unknown:
            raise ConfigError(f"tables: unknown {sorted(unknown)} (known: {', '.join(TABLES)})")
        if not set(self.table4_modes) <= {"AV", "V"} or not self.table4_modes:
            raise ConfigError("table4_modes: a list of AV and/or V")
        if not self.seeds:
            raise ConfigError("seeds: give at least one")
        if self.stage2_relevant_steps < 0:
            raise ConfigError(f"stage2_relevant_steps: 0 (off) or more, got {self.stage2_relevant_steps}")
        for name in ("stage1_size", "input_size"):
            h, w = getattr(self, name)
            if h % 32 or w % 32 or h <= 0 or w <= 0:
                raise ConfigError(f"{name}: height and width must be positive multiples of 32, got {h}×{w}")
        if self.soundnet not in ("probe", "") and not Path(self.soundnet).is_file():
            raise ConfigError(f"soundnet: '{self.soundnet}' is not a file (or say probe, or '' for from scratch)")
        if self.freeze_soundnet and not self.soundnet:
            raise ConfigError("freeze_soundnet: a SoundNet trained from scratch would stay random; "
                              "give soundnet=probe or a file")


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


def _switches(overrides: dict[str, Any]) -> dict[str, Any]:
    o = {"audio": True, "fusion": "ravf", "ms": True, "mrg": True, "num_pairs": 3, **overrides}
    if not o["audio"]:
        o["fusion"] = "none"
    return o


def run_name(overrides: dict[str, Any]) -> str:
    """A canonical name: the full model's switches filled in, so equal networks get equal names."""
    o = _switches(overrides)
    return f"{'av' if o['audio'] else 'v'}_{o['fusion']}_ms{int(o['ms'])}_mrg{int(o['mrg'])}_p{o['num_pairs']}"


def visual_name(overrides: dict[str, Any]) -> str:
    """The stage 1 a variant starts from: its visual network, whatever its fusion."""
    o = _switches(overrides)
    return f"visual_ms{int(o['ms'])}_mrg{int(o['mrg'])}_p{o['num_pairs']}"


# ------------------------------------------------------------------ running

def synth_config(study: StudyConfig):
    from .data.synth import SynthConfig

    return SynthConfig(videos=study.videos, frames=study.frames, height=study.height, width=study.width,
                       relevant_fraction=study.relevant_fraction, silent_fraction=study.silent_fraction,
                       seed=study.data_seed)


def make_data(study: StudyConfig) -> Path:
    from .data.synth import write_dataset

    root = Path(study.out) / "data"
    cfg = synth_config(study)
    meta = root / "synth.json"
    if meta.is_file() and json.loads(meta.read_text()).get("config") == asdict(cfg):
        return root
    write_dataset(root, cfg, overwrite=True)
    return root


def soundnet_file(study: StudyConfig, log) -> str:
    """The SoundNet stage 2 starts from: the pitch probe, trained once per study and kept."""
    if study.soundnet != "probe":
        return study.soundnet
    from .pretrain import pitch_probe, save_probe

    path = Path(study.out) / "probe" / "soundnet.safetensors"
    if not path.is_file():
        state, accuracy = pitch_probe(study.model, steps=study.probe_steps, log=log)
        save_probe(path, state)
        atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps({"accuracy": accuracy})))
    return str(path)


def train_config(study: StudyConfig, data: Path, overrides: dict[str, Any], seed: int, out: Path, *,
                 stage: int, init: str = "", soundnet: str = "", relevant_only: bool = False):
    """The training run of one stage; ``relevant_only``: the curriculum's first part of
    stage 2 (``stage2_relevant_steps`` steps on :func:`relevant_view`)."""
    from .train import TrainConfig

    h, w = study.stage1_size if stage == 1 else study.input_size
    visual_only = {"audio": False} if stage == 1 else {}
    model = get_config(study.model, **{**overrides, "height": h, "width": w, **visual_only})
    if stage == 1:
        epochs, steps = study.stage1_epochs, study.stage1_steps
    elif relevant_only:
        epochs, steps = 1, study.stage2_relevant_steps
    else:
        epochs, steps = study.stage2_epochs, study.stage2_steps
    root = data / (RELEVANT_VIEW if relevant_only else "stavis")
    return replace(TrainConfig(model=model), {
        "data": {"layout": "stavis", "root": str(root), "split": 1, "val": "holdout",
                 "clips_per_video": 1, "val_clips_per_video": 1},
        "init": {"model": init, "soundnet": soundnet if model.audio else "",
                 "freeze": ["audio_net"] if study.freeze_soundnet and model.audio else []},
        "optim": {"lr": study.lr}, "epochs": epochs, "steps_per_epoch": steps, "batch_size": study.batch_size,
        "workers": study.workers, "precise_bn": study.precise_bn, "device": study.device, "seed": seed,
        "deterministic": True, "log_images": 0, "out": str(out)}, where="ablation study")


RELEVANT_VIEW = "stavis_relevant"   # beside the study's "stavis" folder: see relevant_view


def relevant_view(data: Path) -> Path:
    """The study's STAViS folder with its fold lists cut to the relevant videos (the
    frames, maps and sound are links to the study's own), for the curriculum's first part."""
    from .evaluate import video_kinds

    src, view = data / "stavis", data / RELEVANT_VIEW
    kinds = video_kinds(data)
    (view / "fold_lists").mkdir(parents=True, exist_ok=True)
    for part in ("annotations", "video_frames", "video_audio"):
        if not (view / part).exists():
            (view / part).symlink_to(Path("..") / "stavis" / part)
    for lst in sorted((src / "fold_lists").glob("*.txt")):
        kept = [line for line in lst.read_text().splitlines()
                if line.split() and kinds.get(line.split()[0]) == "relevant"]
        text = "\n".join(kept) + "\n"
        target = view / "fold_lists" / lst.name
        if not target.is_file() or target.read_text() != text:
            atomic_write(target, lambda tmp, t=text: Path(tmp).write_text(t))
    return view


def test_videos(study: StudyConfig, data: Path) -> list:
    """Fold 1's test videos the study scores: the first ``eval_videos`` of each kind."""
    from .evaluate import plan, video_kinds

    kinds = video_kinds(data)
    items = sorted(plan(data / "stavis", "SynthAV", "1", [None]), key=lambda i: i.video.name)
    out = []
    for kind in KINDS:
        out += [i for i in items if kinds.get(i.video.name) == kind][:study.eval_videos]
    return out


def _mean_cc(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean over frames of the CC between two videos' maps (1.0: the same maps)."""
    from .metrics import cc

    values = [cc(x, y) for x, y in zip(a, b)]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """P(a positive scores above a negative), ties counting half: the area under the ROC
    curve of separating the two by thresholding the score."""
    from scipy.stats import rankdata

    if not positive or not negative:
        return math.nan
    ranks = rankdata(np.concatenate([positive, negative]))
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate_run(checkpoint: Path, study: StudyConfig, data: Path, items: list | None = None) -> dict:
    """Every measure of the module docstring for one trained model, on the study's test
    videos (or on ``items``: validation videos, to choose among checkpoints)."""
    from .data.synth import peak_on_sounding_disc
    from .evaluate import aggregate, score_video, video_kinds
    from .inference import predict_frames_with_relevance, prepare
    from .media import resize_map

    model = prepare(load_model(checkpoint), study.device, "fp32")
    items = test_videos(study, data) if items is None else items
    kinds = video_kinds(data)
    meta = {v["name"]: v for v in json.loads((data / "synth.json").read_text())["videos"]}
    music = [i.video for i in items if kinds[i.video.name] == "music"]

    def predict(video, sound):
        out = list(predict_frames_with_relevance(model, video.frames, len(video), video.fps,
                                                 sound if model.config.audio else None, batch=8))
        return [m for _, m, _, _ in out], [(a, v) for _, _, a, v in out]

    conditions = {"sound": lambda v: v.audio}
    if model.config.audio:
        conditions["silence"] = lambda v: None
        # Another video's music: the next music video's soundtrack (cyclically).
        conditions["other"] = lambda v: music[(music.index(v) + 1) % len(music)].audio if v in music else None
    records: dict[str, list] = {c: [] for c in conditions}
    maps: dict[str, dict[str, list]] = {c: {} for c in conditions}
    hits = {c: [0, 0] for c in ("sound", "silence")}
    ret_per_video = []
    size = (study.height, study.width)  # the synthetic frames' size, where the discs' positions are given
    for item in items:
        v, kind = item.video, kinds[item.video.name]
        for condition, sound in conditions.items():
            if condition == "other" and kind != "music":
                continue
            preds, rets = predict(v, sound(v))
            maps[condition][v.name] = preds
            records[condition].append({**score_video(v, lambda k, p=preds: p[k], postprocess=False),
                                       "dataset": item.dataset, "split": item.split})
            if kind == "relevant" and condition in hits:
                m = meta[v.name]
                for k, p in enumerate(preds):
                    hits[condition][0] += peak_on_sounding_disc(m["positions"][k], m["sounding"][k], m["radius"],
                                                                resize_map(p, size))
                    hits[condition][1] += 1
            if condition == "sound" and rets and rets[0][0] is not None:
                ret_per_video.append({"video": v.name, "kind": kind,
                                      "ret_a": float(np.mean([a.mean() for a, _ in rets])),
                                      "ret_v": float(np.mean([b.mean() for _, b in rets]))})
    result: dict[str, Any] = {"scores": {c: {r["kind"]: {m: r[m] for m in METRICS}
                                             for r in aggregate(recs, kinds) if r["kind"] != "all"}
                                         for c, recs in records.items() if recs}}
    result["hits"] = {c: (h / n if n else math.nan) for c, (h, n) in hits.items()}
    if not model.config.audio:
        result["hits"]["silence"] = result["hits"]["sound"]  # it does not hear anything
    else:
        agree = {c: [_mean_cc(maps["sound"][v.name], maps[c][v.name]) for v in music] for c in ("silence", "other")}
        result["music_agreement"] = {c: float(np.nanmean(vals)) if vals else math.nan for c, vals in agree.items()}
    if ret_per_video:
        result["ret"] = ret_per_video
        for key in ("ret_a", "ret_v"):
            result[f"{key}_auc"] = roc_auc([r[key] for r in ret_per_video if r["kind"] == "relevant"],
                                           [r[key] for r in ret_per_video if r["kind"] == "music"])
    return result


def run_study(study: StudyConfig, *, log: Callable[[str], None] = print) -> Path:
    """Train and score every (variant, seed) not yet done; returns the study folder."""
    from .train import train

    study.validate()
    out = Path(study.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "study.json"
    if saved.is_file():
        # A setting newer than the folder's study.json ran there as its default (e.g. no curriculum).
        before = {**_jsonable(StudyConfig()), **json.loads(saved.read_text())}
        changed = sorted(k for k, v in _jsonable(study).items() if k not in SCOPE and before.get(k) != v)
        if changed:
            raise ConfigError(f"{saved}: this folder holds a study whose runs used other {', '.join(changed)}; "
                              f"use another out=")
    atomic_write(saved, lambda tmp: Path(tmp).write_text(json.dumps(_jsonable(study), indent=1)))
    t0 = time.time()
    data = make_data(study)
    log(f"data: {data} ({study.videos} videos, {time.time() - t0:.0f} s)")
    soundnet = soundnet_file(study, log) if any(o.get("audio", True) for o in variants(study).values()) else ""
    if study.stage2_relevant_steps:
        relevant_view(data)
    todo = [(name, o, seed) for seed in study.seeds for name, o in variants(study).items()]
    for i, (name, overrides, seed) in enumerate(todo, 1):
        run = out / "runs" / name / f"seed{seed}"
        if (run / "result.json").is_file():
            continue
        t = time.time()
        stage1 = out / "runs" / "stage1" / visual_name(overrides) / f"seed{seed}"
        if _train_once(train_config(study, data, overrides, seed, stage1, stage=1), t):
            log(f"stage 1 {visual_name(overrides)} seed {seed}: {time.time() - t:.0f} s")
        t2 = time.time()
        init, second_soundnet = str(stage1 / "best.safetensors"), soundnet
        if study.stage2_relevant_steps:
            # The curriculum's first part; the second starts from all of it, SoundNet included.
            first = run / "relevant"
            _train_once(train_config(study, data, overrides, seed, first, stage=2, init=init, soundnet=soundnet,
                                     relevant_only=True), t2)
            init, second_soundnet = str(first / "best.safetensors"), ""
        resume = (run / "ckpt" / "latest.json").is_file()
        train(train_config(study, data, overrides, seed, run, stage=2, init=init, soundnet=second_soundnet),
              resume=resume, progress=False, log=lambda *_: None)
        result = {"variant": name, "overrides": overrides, "seed": seed, "train_seconds": time.time() - t2,
                  "machine": machine_label(study.device)}
        result.update(evaluate_run(run / "best.safetensors", study, data))
        result["seconds"] = time.time() - t2
        atomic_write(run / "result.json", lambda tmp, r=result: Path(tmp).write_text(json.dumps(r)))
        s = result["scores"]
        line = (f"[{i}/{len(todo)}] {name} seed {seed}: CC relevant {s['sound']['relevant']['cc']:.3f}, "
                f"music {s['sound']['music']['cc']:.3f}; hits {result['hits']['sound']:.2f}")
        if "silence" in s:
            line += (f" / {result['hits']['silence']:.2f} silent; relevant CC with silence "
                     f"{s['silence']['relevant']['cc']:.3f}; music maps vs silence CC "
                     f"{result['music_agreement']['silence']:.3f}")
        if "ret_a_auc" in result:
            line += f"; Ret_A AUC {result['ret_a_auc']:.2f}"
        log(line + f" ({result['seconds']:.0f} s)")
    log(f"study done in {time.time() - t0:.0f} s: {out}")
    return out


def _train_once(cfg, since: float) -> bool:
    """Train ``cfg`` into ``cfg.out`` unless its ``done`` file (seconds since ``since``)
    says it finished; a killed run resumes from its checkpoint. True if it trained."""
    from .train import train

    folder = Path(cfg.out)
    if (folder / "done").is_file():
        return False
    train(cfg, resume=(folder / "ckpt" / "latest.json").is_file(), progress=False, log=lambda *_: None)
    atomic_write(folder / "done", lambda tmp: Path(tmp).write_text(f"{time.time() - since:.1f}\n"))
    return True


def machine_label(device: str) -> str:
    """Where a run's seconds were measured, e.g. "AMD EPYC (2 cores)"."""
    from .bench import machine
    from .inference import resolve_device

    return machine(str(resolve_device(device)))["label"]


#: Settings that choose which runs a study holds, not how each run is made: a study can
#: grow by more seeds or tables in the same folder.
SCOPE = {"out", "tables", "table4_modes", "seeds", "only", "device", "workers"}


def _jsonable(study: StudyConfig) -> dict:
    return json.loads(json.dumps(asdict(study)))


def load_results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "runs").glob("*/seed*/result.json"))]


def study_results(study: StudyConfig) -> list[dict]:
    """The finished runs of ``study``'s variants and seeds: a folder may hold more (other
    tables or seeds run into it), and a report covers only what its tables show."""
    names = variants(study)
    return [r for r in load_results(Path(study.out)) if r["variant"] in names and r["seed"] in study.seeds]


def compute_seconds(study: StudyConfig, results: list[dict]) -> float:
    """Training and scoring time of ``results`` and of the stage 1s they started from."""
    stage1 = {(visual_name(r["overrides"]), r["seed"]) for r in results}
    done = [Path(study.out) / "runs" / "stage1" / name / f"seed{seed}" / "done" for name, seed in stage1]
    return sum(r["seconds"] for r in results) + sum(float(p.read_text()) for p in done if p.is_file())


# ------------------------------------------------------------------ report

@dataclass
class Cell:
    values: list[float] = field(default_factory=list)

    def __str__(self) -> str:
        return self.format()

    def format(self, digits: int = 3, percent: bool = False) -> str:
        v = [x for x in self.values if x is not None and not math.isnan(x)]
        if not v:
            return "–"
        scale, suffix = (100, "") if percent else (1, "")
        d = 0 if percent else digits
        mean, sd = np.mean(v) * scale, (np.std(v, ddof=1) if len(v) > 1 else 0) * scale
        return f"{mean:.{d}f} ± {sd:.{d}f}{suffix}"


def _runs(results: list[dict], name: str) -> list[dict]:
    return [r for r in results if r["variant"] == name]


def _score(r: dict, condition: str, kind: str, metric: str) -> float | None:
    return r["scores"].get(condition, {}).get(kind, {}).get(metric)


def measures(r: dict) -> dict[str, float | None]:
    """One run's answers to the paper's claims (None where the variant has no audio/RAVF)."""
    audio = "silence" in r["scores"]
    sound, silence = _score(r, "sound", "relevant", "cc"), _score(r, "silence", "relevant", "cc")
    music, music_silence = _score(r, "sound", "music", "cc"), _score(r, "silence", "music", "cc")
    return {
        "relevant_cc": sound, "relevant_cc_silence": silence if audio else None,
        "relevant_gain": sound - silence if audio else None,
        "hits_sound": r["hits"]["sound"], "hits_silence": r["hits"]["silence"],
        "music_cc": music, "music_agree_silence": r.get("music_agreement", {}).get("silence"),
        "music_agree_other": r.get("music_agreement", {}).get("other"),
        "music_change": music - music_silence if audio else None,
        "ret_a_auc": r.get("ret_a_auc"), "ret_v_auc": r.get("ret_v_auc"),
    }


USE_COLUMNS = (("relevant_cc", "relevant CC", 3, False), ("relevant_cc_silence", "… with silence", 3, False),
               ("relevant_gain", "gain from the sound", 3, False), ("hits_sound", "on sounding disc", 0, True),
               ("hits_silence", "… with silence", 0, True), ("music_cc", "music CC", 3, False),
               ("music_agree_silence", "music ≈ silence", 3, False), ("music_agree_other", "music ≈ other music", 3,
                                                                      False),
               ("music_change", "music score change", 3, False), ("ret_a_auc", "Ret_A AUC", 2, False),
               ("ret_v_auc", "Ret_V AUC", 2, False))


def table_markdown(study: StudyConfig, table: str, results: list[dict]) -> str:
    """Two tables per paper table: whether each row uses the sound, then its scores."""
    head = ["Variant"] + [label for _, label, _, _ in USE_COLUMNS] + ["seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, overrides in rows(study, table):
        runs = _runs(results, run_name(overrides))
        cells = []
        for key, _, digits, percent in USE_COLUMNS:
            values = [measures(r)[key] for r in runs]
            cells.append("n/a" if values and all(v is None for v in values) else
                         Cell([v for v in values if v is not None]).format(digits, percent))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {', '.join(str(r['seed']) for r in runs)} |")
    lines += ["", "| Variant | " + " | ".join(f"{k} {m.upper().replace('_', '-')}" for k in KINDS for m in METRICS)
              + " |", "|" + "---|" * (1 + len(KINDS) * len(METRICS))]
    for label, overrides in rows(study, table):
        runs = _runs(results, run_name(overrides))
        lines.append(f"| {label} | " + " | ".join(str(Cell([_score(r, "sound", k, m) for r in runs]))
                                                for k in KINDS for m in METRICS) + " |")
    return "\n".join(lines)


def plot_ret(results: list[dict], variant: str, path: Path) -> None:
    """Fig. 6 analogue: each test video's mean Ret_A and Ret_V, relevant against music, per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in _runs(results, variant) if "ret" in r]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, title in zip(axes, ("ret_a", "ret_v"), ("Ret_A (Eq. 2), video mean", "Ret_V (Eq. 3), video mean")):
        for j, r in enumerate(runs):
            for kind, colour, dx in (("relevant", "tab:red", -0.12), ("music", "tab:blue", 0.12)):
                vals = [v[key] for v in r["ret"] if v["kind"] == kind]
                ax.scatter(np.full(len(vals), j + dx) + np.random.default_rng(j).uniform(-0.05, 0.05, len(vals)),
                           vals, s=12, color=colour, alpha=0.7,
                           label=("relevant audio" if kind == "relevant" else "background music") if j == 0 else None)
        ax.set_xticks(range(len(runs)), [f"seed {r['seed']}\nAUC {r.get(key + '_auc', math.nan):.2f}" for r in runs],
                      fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_table(study: StudyConfig, table: str, results: list[dict], path: Path) -> None:
    """Per variant: relevant-video CC with the sound and with silence, music CC (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table_rows = rows(study, table)
    x = np.arange(len(table_rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(table_rows) + 2), 3.6))
    bars = (("relevant_cc", "relevant, with sound", "tab:red"), ("relevant_cc_silence", "relevant, with silence",
                                                                  "lightcoral"), ("music_cc", "music", "tab:blue"))
    for j, (key, label, colour) in enumerate(bars):
        vals = [[measures(r)[key] for r in _runs(results, run_name(o))] for _, o in table_rows]
        vals = [[v for v in c if v is not None] for c in vals]
        means = [np.mean(c) if c else np.nan for c in vals]
        stds = [np.std(c, ddof=1) if len(c) > 1 else 0 for c in vals]
        ax.bar(x + (j - 1) * 0.27, means, 0.27, yerr=stds, color=colour, alpha=0.85, capsize=3, label=label)
    ax.set_xticks(x, [label for label, _ in table_rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("CC")
    ax.set_title(f"Table {table} analogue (synthetic data)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def report(study: StudyConfig, out_md: Path, *, command: str) -> Path:
    """docs/results.md (tables and plots) from the study's results, between the file's
    ``avrsp ablate`` markers: the discussion written around them stays."""
    results = study_results(study)
    if not results:
        raise ConfigError(f"{study.out}: no finished runs to report")
    out_md = Path(out_md)
    figs = out_md.parent / "results"
    figs.mkdir(parents=True, exist_ok=True)
    seconds = compute_seconds(study, results)
    probe = Path(study.out) / "probe" / "soundnet.json"
    probe_text = (f"the pitch probe (`avrsp.pretrain`, {study.probe_steps} steps; it names the sounding colour in "
                  f"{json.loads(probe.read_text())['accuracy']:.0%} of held-out windows)") if probe.is_file() else \
        ("from scratch" if not study.soundnet else f"`{study.soundnet}`")
    (h1, w1), (h2, w2) = study.stage1_size, study.input_size
    machines = sorted({r["machine"] for r in results if "machine" in r})
    unrecorded = sum("machine" not in r for r in results)
    where = ", ".join(machines) or "machines the runs did not record"
    if machines and unrecorded:
        where += f" ({unrecorded} of the runs {'predates' if unrecorded == 1 else 'predate'} recording it)"
    lines = ["Generated by `avrsp ablate` (src/avrsp/ablate.py) from "
             f"{_count(len(results), 'stage-2 run')} and their stage 1s ({seconds / 60:.0f} min of training and "
             f"scoring in all, on {where}).", "",
             "```bash", command, "```", "", "## Setup", "",
             f"- **Data**: `avrsp synth` with {study.videos} videos of {study.frames} frames at "
             f"{study.height}×{study.width}, relevant fraction {study.relevant_fraction}"
             + (f" ({study.silent_fraction:.0%} of the music videos without sound)" if study.silent_fraction else "")
             + f", seed {study.data_seed}. "
             "Fold 1: two thirds of the videos train (10 % of them held out to pick the best epoch), the "
             f"other third is the test set; the first {study.eval_videos} test videos of each kind are scored.",
             f"- **Stage 1** (per seed, one per visual network: MS, MRG, pairs): `{study.model}` without audio at "
             f"{h1}×{w1}, {_count(study.stage1_epochs, 'epoch')} of {study.stage1_steps} steps, batch "
             f"{study.batch_size}, AdamW lr {study.lr}, precise BatchNorm ({study.precise_bn} batches), "
             "deterministic.",
             f"- **Stage 2** (per variant): that stage 1 at {h2}×{w2} (X⁰: {h2 // 32}×{w2 // 32} fusion tokens), "
             f"{_count(study.stage2_epochs, 'epoch')} of {study.stage2_steps} steps; the audio rows add the audio "
             f"branch with SoundNet from {probe_text}{', frozen,' if study.freeze_soundnet else ''} and a fresh "
             "fusion; the visual-only rows get the same "
             "training without audio. The best epoch by validation loss is scored."
             + (f" A curriculum: stage 2 starts with {_count(study.stage2_relevant_steps, 'step')} on the relevant "
                "training videos only, and its epochs on both kinds continue from there."
                if study.stage2_relevant_steps else ""),
             f"- **Seeds**: {', '.join(map(str, study.seeds))} (initialisation and clip sampling; the data are the "
             "same). Cells are mean ± sample standard deviation over seeds.",
             "- **Measures** (test videos, without post-processing): *relevant CC* with the sound, *… with silence* "
             "(the same model, the sound replaced by silence), and their difference, *gain from the sound*; *on "
             "sounding disc*: % of relevant-video frames whose map peaks on the sounding disc (within 1.5 radii, on no "
             "nearer disc; a visual-only model's rate is the baseline), with the sound and with silence; *music CC*; "
             "*music ≈ silence* and *music ≈ other music*: the CC between the maps a model makes of a music video "
             "with its music and with silence or another video's music (1.000: the music changes nothing), and "
             "*music score change*: music-video CC with the music minus with silence; *Ret_A/Ret_V AUC*: how well a "
             "test video's mean Ret_A (Ret_V) separates relevant from music videos, 0.5 = not at all (RAVF rows).",
             ""]
    for table, title in (("III", "Table III: audio, MS, MRG"), ("IV", "Table IV: number of MS&MRG pairs"),
                         ("V", "Table V: fusion methods")):
        if table not in study.tables:
            continue
        plot_table(study, table, results, figs / f"table{table.lower()}.png")
        lines += [f"## {title}", "", table_markdown(study, table, results), "",
                  f"![Table {table}](results/table{table.lower()}.png)", ""]
    full = run_name({})
    ravf = [r for r in _runs(results, full) if "ret" in r]
    if ravf:
        plot_ret(results, full, figs / "fig6_ret.png")
        lines += ["## Fig. 6 analogue: relevance values", "",
                  "Each test video's Ret_A and Ret_V (last RAVF block, averaged over heads, audio tokens, time, the "
                  "fusion grid and the video's frames) of the full model, by seed:", "",
                  "| Seed | Ret_A relevant | Ret_A music | Ret_A AUC | Ret_V relevant | Ret_V music | Ret_V AUC |",
                  "|---|---|---|---|---|---|---|"]
        for r in ravf:
            mean = {(k, key): np.mean([v[key] for v in r["ret"] if v["kind"] == k]) for k in KINDS
                    for key in ("ret_a", "ret_v")}
            lines.append(f"| {r['seed']} | {mean['relevant', 'ret_a']:.4f} | {mean['music', 'ret_a']:.4f} | "
                         f"{r['ret_a_auc']:.2f} | {mean['relevant', 'ret_v']:.4f} | {mean['music', 'ret_v']:.4f} | "
                         f"{r['ret_v_auc']:.2f} |")
        lines += ["", "![Fig. 6 analogue](results/fig6_ret.png)", ""]
    write_generated(out_md, "\n".join(lines), "avrsp ablate",
                    title="Results: the paper's ablations on synthetic audio-visual data")
    return out_md
