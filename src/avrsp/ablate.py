"""The fusion study (``avrsp ablate``): is RAVF's relevance guidance what makes the
sound count? Table V's fusions and Table III's audio rows, trained by one recipe on
``avrsp synth`` data where relevance needs the pictures, scored on unseen videos.

One study is one folder of working files (``out``: data, front-end, checkpoints) and one
folder of records (``records``: a small JSON file per scored run, committed to the
repository), and per training seed:

* **stage 1**: one visual-only network per visual configuration (MS&MRG on or off),
  shared by every row built on it, as the paper's stage 1 on DHF1K;
* **stage 2**, per row: that stage 1 with the row's fusion, continued in two parts with
  the same steps, data and budget for every row: first on the videos whose viewers follow
  the tone (relevant and mixed), where the sound is the one cue to learn, then on all
  kinds. SoundNet starts from the study's audio front-end (:mod:`avrsp.pretrain`, one
  file for all rows) and stays frozen, except in the control row that trains it from
  scratch; the visual-only row gets the same training without audio.

Each finished run is scored on a fixed set of unseen videos (:mod:`avrsp.ablate_score`)
and its record written; ``avrsp ablate --report-only`` turns the records into
docs/results.md (:mod:`avrsp.ablate_report`). A killed study resumes where it stopped;
``jobs: 2`` runs two trainings at once, one thread each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from .checkpoint import atomic_write
from .config import ConfigError, replace
from .models import get_config


@dataclass(frozen=True)
class Row:
    """One row of the study: a label, the model's switches, and where SoundNet starts
    (``front_end``: the study's pretrained file, frozen; ``scratch``: random, trained)."""

    label: str
    switches: dict
    soundnet: Literal["front_end", "scratch", "none"] = "front_end"
    table: str = "V"


#: The rows, in report order. No two are the same network trained the same way
#: (``network_key``; tests/test_ablate.py holds that).
ROWS: dict[str, Row] = {
    "visual": Row("visual only", {"audio": False}, "none"),
    "add": Row("add", {"fusion": "add"}),
    "mul": Row("mul", {"fusion": "mul"}),
    "concat": Row("concat", {"fusion": "concat"}),
    "bilinear": Row("bilinear", {"fusion": "bilinear"}),
    "mbt": Row("MBT", {"fusion": "mbt"}),
    "ravf": Row("RAVF (the full model)", {"fusion": "ravf"}),
    "ravf_plain": Row("RAVF, MS and MRG off", {"fusion": "ravf", "ms": False, "mrg": False}, table="III"),
    "ravf_scratch": Row("RAVF, SoundNet from scratch", {"fusion": "ravf"}, "scratch", table="control"),
}


@dataclass(frozen=True)
class StudyConfig:
    """One study; configs/studies/fusion.yaml is the one docs/results.md reports."""

    out: str = "runs/study"
    records: str = "results/fusion_study"
    model: str = "avrsp_tiny"
    rows: tuple[str, ...] = tuple(ROWS)
    seeds: tuple[int, ...] = (0, 1, 2)
    # training data (avrsp synth)
    videos: int = 2400
    frames: int = 16
    height: int = 144
    width: int = 256
    relevant_fraction: float = 0.3
    mixed_fraction: float = 0.2
    offscreen_fraction: float = 0.2
    silent_fraction: float = 0.5            # of the music videos
    data_seed: int = 100
    # the audio front-end (avrsp.pretrain), one for every row
    front_end_steps: int = 1000
    # training; X⁰'s grid is (height/32)×(width/32) fusion tokens
    input_size: tuple[int, int] = (128, 192)
    stage1_steps: int = 300
    attended_steps: int = 300               # stage 2, part 1: relevant and mixed videos
    all_steps: int = 300                    # stage 2, part 2: every kind
    batch_size: int = 8
    lr: float = 1e-3
    precise_bn: int = 8
    val_fraction: float = 0.05
    # scoring: ``score_videos`` unseen videos per kind from ``score_seed``
    score_set: Literal["dev", "test"] = "dev"
    dev_seed: int = 4000
    dev_videos: int = 12
    test_seed: int = 5000
    test_videos: int = 48
    score_frames: int = 24
    score_every: int = 2
    # how it runs (not part of the recipe)
    device: str = "cpu"
    jobs: int = 1                           # trainings at once, each with threads // jobs threads
    threads: int = 0                        # 0: torch's default
    checkpoint_every: int = 100             # steps between a training's checkpoints: what a kill can lose

    def validate(self) -> None:
        unknown = set(self.rows) - set(ROWS)
        if unknown:
            raise ConfigError(f"rows: unknown {sorted(unknown)} (known: {', '.join(ROWS)})")
        if not self.seeds or not self.rows:
            raise ConfigError("seeds and rows: give at least one each")
        h, w = self.input_size
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise ConfigError(f"input_size: height and width must be positive multiples of 32, got {h}×{w}")
        if min(self.stage1_steps, self.attended_steps + self.all_steps, self.jobs) < 1:
            raise ConfigError("stage1_steps, attended_steps + all_steps and jobs must be ≥ 1")
        if self.score_set not in ("dev", "test"):
            raise ConfigError(f"score_set: dev or test, got {self.score_set!r}")

    def scoring(self):
        from .ablate_score import ScoringSet

        seed, videos = (self.dev_seed, self.dev_videos) if self.score_set == "dev" else (self.test_seed,
                                                                                        self.test_videos)
        return ScoringSet(seed, videos, self.score_frames, self.height, self.width, self.score_every)


#: Settings that choose which runs a study holds or how they run, not how each is made:
#: a study can grow by rows or seeds, and be scored on its test set, in the same folder.
SCOPE = {"out", "records", "rows", "seeds", "score_set", "device", "jobs", "threads", "checkpoint_every"}


def recipe(study: StudyConfig) -> dict[str, Any]:
    """The settings every run of the study shares (what a record must match)."""
    return {k: v for k, v in _jsonable(study).items() if k not in SCOPE}


def network_key(study: StudyConfig, name: str) -> str:
    """What makes a row's run: its model config and SoundNet's start. Two rows with equal
    keys would be the same network trained the same way, run twice."""
    row = ROWS[name]
    cfg = row_config(study, name)
    return json.dumps({"config": asdict(cfg), "soundnet": row.soundnet if cfg.audio else "none"}, sort_keys=True,
                      default=str)


def row_config(study: StudyConfig, name: str, *, stage: int = 2):
    """The model config of ``name``'s stage-``stage`` network at the study's input size."""
    h, w = study.input_size
    switches = dict(ROWS[name].switches)
    if stage == 1:
        switches.update(audio=False, fusion="ravf")  # the visual network alone
    if not switches.get("audio", True):
        switches["fusion"] = "ravf"  # unused without audio: every visual-only network is the same
    return get_config(study.model, **switches, height=h, width=w)


def stage1_name(study: StudyConfig, name: str) -> str:
    """The stage 1 a row starts from: its visual network, whatever its fusion."""
    cfg = row_config(study, name, stage=1)
    return f"visual_ms{int(cfg.ms)}_mrg{int(cfg.mrg)}_p{cfg.num_pairs}"


# ------------------------------------------------------------------ working files

def synth_config(study: StudyConfig):
    from .data.synth import SynthConfig

    return SynthConfig(videos=study.videos, frames=study.frames, height=study.height, width=study.width,
                       relevant_fraction=study.relevant_fraction, mixed_fraction=study.mixed_fraction,
                       offscreen_fraction=study.offscreen_fraction, silent_fraction=study.silent_fraction,
                       seed=study.data_seed, dhf1k=False, mp4=False)


def make_data(study: StudyConfig, log) -> Path:
    from .data.synth import write_dataset

    from .data.synth import SynthConfig

    root = Path(study.out) / "data"
    cfg = synth_config(study)
    meta = root / "synth.json"
    # A setting the data's writer did not know yet holds its default there.
    stored = json.loads(meta.read_text()).get("config", {}) if meta.is_file() else None
    defaults = _jsonable_obj(SynthConfig())
    if stored is None or any(stored.get(k, defaults[k]) != v for k, v in _jsonable_obj(cfg).items()):
        t = time.time()
        write_dataset(root, cfg, overwrite=True)
        log(f"data: {root} ({study.videos} videos, {time.time() - t:.0f} s)")
    attended_view(root)
    return root


ATTENDED_VIEW = "stavis_attended"   # beside the data's "stavis" folder: see attended_view


def attended_view(data: Path) -> Path:
    """The data's STAViS folder with its fold lists cut to the videos whose viewers follow
    the tone (relevant and mixed); the frames, maps and sound are links to the data's own."""
    from .data.synth import ATTENDED_KINDS
    from .evaluate import video_kinds

    src, view = data / "stavis", data / ATTENDED_VIEW
    kinds = video_kinds(data)
    (view / "fold_lists").mkdir(parents=True, exist_ok=True)
    for part in ("annotations", "video_frames", "video_audio"):
        if not (view / part).exists():
            (view / part).symlink_to(Path("..") / "stavis" / part)
    for lst in sorted((src / "fold_lists").glob("*.txt")):
        kept = [line for line in lst.read_text().splitlines()
                if line.split() and kinds.get(line.split()[0]) in ATTENDED_KINDS]
        text = "\n".join(kept) + "\n"
        target = view / "fold_lists" / lst.name
        if not target.is_file() or target.read_text() != text:
            atomic_write(target, lambda tmp, t=text: Path(tmp).write_text(t))
    return view


def front_end(study: StudyConfig, log) -> Path:
    """The study's audio front-end (:func:`avrsp.pretrain.chromatic_pretrain`), trained
    once and kept with what it measured."""
    from .pretrain import chromatic_pretrain, save_front_end

    path = Path(study.out) / "front_end" / "soundnet.safetensors"
    if not path.is_file():
        t = time.time()
        state, measured = chromatic_pretrain(study.model, steps=study.front_end_steps, log=log)
        measured["seconds"] = round(time.time() - t, 1)
        save_front_end(path, state)
        atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(measured)))
    return path


def train_config(study: StudyConfig, name: str, seed: int, out: Path, *, part: str, data: Path, init: str = ""):
    """The ``avrsp train`` config of one part of a run: ``stage1``, ``attended`` or ``all``."""
    from .train import TrainConfig

    row = ROWS[name]
    model = row_config(study, name, stage=1 if part == "stage1" else 2)
    steps = {"stage1": study.stage1_steps, "attended": study.attended_steps, "all": study.all_steps}[part]
    soundnet = str(Path(study.out) / "front_end" / "soundnet.safetensors") if (
        part == "attended" and row.soundnet == "front_end" and model.audio) else ""
    frozen = ["audio_net"] if row.soundnet == "front_end" and model.audio else []
    root = data / (ATTENDED_VIEW if part == "attended" else "stavis")
    return replace(TrainConfig(model=model), {
        "data": {"layout": "stavis", "root": str(root), "split": 1, "val": "holdout",
                 "val_fraction": study.val_fraction, "clips_per_video": 1, "val_clips_per_video": 1},
        "init": {"model": init, "soundnet": soundnet, "freeze": frozen},
        "optim": {"lr": study.lr}, "epochs": 1, "steps_per_epoch": steps, "batch_size": study.batch_size,
        "workers": 0, "precise_bn": study.precise_bn, "device": study.device, "seed": seed,
        "deterministic": True, "log_images": 0, "checkpoint_every": study.checkpoint_every, "out": str(out)},
        where="study")


def _train_once(cfg) -> float:
    """Train ``cfg`` into ``cfg.out`` unless its ``done`` file says it finished (a killed
    run resumes from its checkpoint); returns the seconds it took (then or now)."""
    from .train import train

    folder = Path(cfg.out)
    done = folder / "done"
    if done.is_file():
        return float(done.read_text())
    t = time.time()
    train(cfg, resume=(folder / "ckpt" / "latest.json").is_file(), progress=False, log=lambda *_: None)
    seconds = round(time.time() - t, 1)
    atomic_write(done, lambda tmp: Path(tmp).write_text(f"{seconds}\n"))
    return seconds


class _Lock:
    """An exclusive lock on a file, so that two jobs needing one stage 1 train it once."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.f.close()


def train_run(study: StudyConfig, name: str, seed: int, data: Path) -> tuple[Path, dict[str, float]]:
    """Train one (row, seed) through its three parts; returns the final model file and
    the seconds of each part."""
    out = Path(study.out) / "runs"
    s1 = out / "stage1" / stage1_name(study, name) / f"seed{seed}"
    with _Lock(s1.parent / f".seed{seed}.lock"):
        seconds = {"stage1": _train_once(train_config(study, name, seed, s1, part="stage1", data=data))}
    run = out / name / f"seed{seed}"
    init = str(s1 / "best.safetensors")
    for part in ("attended", "all"):
        steps = study.attended_steps if part == "attended" else study.all_steps
        if steps == 0:
            continue
        seconds[part] = _train_once(train_config(study, name, seed, run / part, part=part, data=data, init=init))
        init = str(run / part / "best.safetensors")
    return Path(init), seconds


def record_path(study: StudyConfig, name: str, seed: int) -> Path:
    return Path(study.records) / study.score_set / f"{name}_seed{seed}.json"


def score_run(study: StudyConfig, model_file: Path) -> tuple[dict, float]:
    from .ablate_score import score_model
    from .checkpoint import load_model
    from .graph import prepare

    t = time.time()
    model = prepare(load_model(model_file), study.device, "fp32")
    return score_model(model, study.scoring()), round(time.time() - t, 1)


def run_one(study: StudyConfig, name: str, seed: int, data: Path, log) -> dict:
    """Train, score and record one (row, seed) unless its record exists."""
    path = record_path(study, name, seed)
    if path.is_file():
        return json.loads(path.read_text())
    model_file, seconds = train_run(study, name, seed, data)
    measures, seconds["score"] = score_run(study, model_file)
    from .ablate_score import primary

    record = {"row": name, "label": ROWS[name].label, "seed": seed, "set": study.score_set,
              "stage1": stage1_name(study, name),
              "scoring": asdict(study.scoring()), "recipe": recipe(study), "network": json.loads(
                  network_key(study, name)), "commit": code_commit(), "machine": machine_label(study.device),
              "threads": _threads(), "seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "primary": primary(measures), **measures}
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    p = record["primary"]
    log(f"{name} seed {seed}: hits gain from the sound {100 * p['uses_sound']:+.1f} points, maps with the sound vs "
        f"silence on offscreen and music videos CC {p['discounts_sound']:.3f} ({sum(seconds.values()) / 60:.0f} min)")
    return record


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def code_commit() -> str:
    """The commit of the code that ran (with ``+dirty`` when it had uncommitted changes),
    or "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=here.parents[1],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine_label(device: str) -> str:
    """Where a run's seconds were measured, e.g. "AMD EPYC (2 cores)"."""
    from .bench import machine
    from .runtime import resolve_device

    return machine(str(resolve_device(device)))["label"]


def todo(study: StudyConfig) -> list[tuple[str, int]]:
    """(row, seed) pairs without a record, row by row, so that parallel jobs start on
    different seeds' stage 1."""
    return [(name, seed) for name in study.rows for seed in study.seeds
            if not record_path(study, name, seed).is_file()]


def run_study(study: StudyConfig, *, log: Callable[[str], None] = print, job: tuple[int, int] | None = None) -> Path:
    """Prepare the data and front-end, then train, score and record every (row, seed)
    without a record; with ``jobs`` > 1, in that many processes (``job``: this process's
    share, index and count)."""
    study.validate()
    _check_folder(study)
    data = make_data(study, log)
    if any(ROWS[r].soundnet == "front_end" for r in study.rows):
        front_end(study, log)
    pending = todo(study)
    if job is None and study.jobs > 1 and len(pending) > 1:
        return _in_processes(study, log)
    if job is not None:
        pending = pending[job[0]::job[1]]
    if study.threads:
        import torch

        torch.set_num_threads(study.threads)
    for name, seed in pending:
        run_one(study, name, seed, data, log)
    return Path(study.records)


def _in_processes(study: StudyConfig, log) -> Path:
    threads = max(1, (study.threads or os.cpu_count() or 1) // study.jobs)
    settings = json.dumps({**_jsonable(study), "threads": threads})
    procs = [subprocess.Popen([sys.executable, "-m", "avrsp.ablate", settings, f"{i}/{study.jobs}"])
             for i in range(study.jobs)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise ConfigError(f"study: {sum(1 for c in codes if c)} of {study.jobs} jobs failed (exit {codes}); run "
                          "the same command again to resume")
    log(f"study done: records in {study.records}")
    return Path(study.records)


def _check_folder(study: StudyConfig) -> None:
    """A folder's runs were made by one recipe: a study with another cannot reuse it."""
    out = Path(study.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "study.json"
    if saved.is_file():
        before = json.loads(saved.read_text())
        changed = sorted(k for k, v in recipe(study).items() if before.get(k) != v)
        if changed:
            raise ConfigError(f"{saved}: this folder holds a study whose runs used other {', '.join(changed)}; "
                              f"use another out=")
    else:
        atomic_write(saved, lambda tmp: Path(tmp).write_text(json.dumps(recipe(study), indent=1)))


def _jsonable(study: StudyConfig) -> dict:
    return json.loads(json.dumps(asdict(study)))


def _jsonable_obj(obj) -> dict:
    return json.loads(json.dumps(asdict(obj)))


def load_records(study: StudyConfig) -> list[dict]:
    """The records of ``study``'s scoring set, rows and seeds."""
    folder = Path(study.records) / study.score_set
    out = []
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        if r["row"] in study.rows and r["seed"] in study.seeds:
            out.append(r)
    return out


def _job_main(argv: list[str]) -> int:
    """``python -m avrsp.ablate SETTINGS I/N``: job I of N of a study (run_study's workers)."""
    from .config import from_dict

    settings, share = argv
    study = from_dict(StudyConfig, json.loads(settings), where="study job")
    i, n = (int(x) for x in share.split("/"))
    run_study(study, log=lambda s: print(s, file=sys.stderr, flush=True), job=(i, n))
    return 0


if __name__ == "__main__":
    raise SystemExit(_job_main(sys.argv[1:]))
