"""``avrsp train``: the paper's two-stage recipe (Section IV-B), resumable, on one
machine or many.

Stage 1 trains the visual-only network on DHF1K. Stage 2 trains the audio-visual network
on the six STAViS datasets jointly, per split, starting from stage 1. The optimiser is
AdamW (lr 1e-4, weight decay 1e-5), with ReduceLROnPlateau (factor 0.5) on the
validation loss and the Eq. 19 loss.

A run folder holds:

- ``config.yaml``: the resolved training config;
- ``ckpt/step_<n>.safetensors`` + ``ckpt/step_<n>.state.pt``: the model file (config
  embedded) and the optimiser, scheduler, RNG and data position;
- ``ckpt/latest.json``: points to the newest complete pair;
- ``last.safetensors`` / ``best.safetensors``: copies of the newest and the best model
  files by validation loss;
- ``metrics.csv``, ``tb/`` (TensorBoard) and ``images/`` (validation predictions).

Every write is atomic. A run killed at any moment resumes with ``--resume`` and loses at
most the steps since its last checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import atomic_write, load_model, save_model
from .config import ConfigError, read_yaml, replace, to_dict
from .distributed import Dist, process_device, setup_distributed
from .loss import SaliencyLoss
from .models import AVRSP, AVRSPConfig, get_config


# ------------------------------------------------------------------ configuration

@dataclass(frozen=True)
class DataConfig:
    """Where the clips come from. ``layout: stavis`` trains on the ``datasets`` (all
    databases with fold lists when empty) of ``split``; ``layout: dhf1k`` on DHF1K."""

    layout: Literal["stavis", "dhf1k"] = "stavis"
    root: str = ""
    datasets: tuple[str, ...] = ()
    split: int = 1
    val: Literal["holdout", "test", "dhf1k_val"] = "holdout"   # see docs/training.md
    val_fraction: float = 0.1
    clips_per_video: int = 1
    val_clips_per_video: int = 1


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-5
    plateau_factor: float = 0.5
    plateau_patience: int = 3       # the paper gives only the factor
    grad_clip: float = 0.0          # 0 = off
    alpha_cc: float = -0.1          # Eq. 19
    alpha_sim: float = -0.1


@dataclass(frozen=True)
class InitConfig:
    """Starting weights. ``model``: an avrsp model file (e.g. stage 1 for stage 2); every
    tensor whose name and shape match is loaded, and the rest is reported. ``s3d`` /
    ``soundnet``: backbone state dicts in our layout (``avrsp weights import``).
    ``freeze``: top-level parts kept fixed (e.g. [visual, audio_net]). ``fixed_bn``:
    parts whose BatchNorm layers keep the statistics they were loaded with (eval mode)
    while all their weights train; the stage-2 configs fix SoundNet's, whose deepest
    layers see 3 values per channel per clip (docs/training.md)."""

    model: str = ""
    s3d: str = ""
    soundnet: str = ""
    freeze: tuple[str, ...] = ()
    fixed_bn: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainConfig:
    model: AVRSPConfig = field(default_factory=lambda: get_config("avrsp"))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    init: InitConfig = field(default_factory=InitConfig)
    epochs: int = 100
    batch_size: int = 4             # per process; global batch = batch_size × processes × accumulate
    accumulate: int = 1
    workers: int = 2                # loader processes (started once per run, never forked; docs/training.md)
    worker_timeout: float = 300.0   # seconds to wait for a batch before the run stops with an error; 0 = forever
    precision: Literal["fp32", "bf16"] = "fp32"   # bf16 = autocast, CUDA only
    device: str = "auto"
    deterministic: bool = False
    seed: int = 0
    steps_per_epoch: int = 0        # 0 = every clip once per epoch
    checkpoint_every: int = 0       # optimiser steps between mid-epoch checkpoints; 0 = epoch ends only
    keep_checkpoints: int = 2
    precise_bn: int = 0             # batches to recompute BatchNorm statistics on before validating; 0 = off
    log_images: int = 4
    out: str = "runs/train"

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "accumulate"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1")
        if min(self.workers, self.steps_per_epoch, self.checkpoint_every, self.precise_bn, self.worker_timeout) < 0:
            raise ConfigError("workers, worker_timeout, steps_per_epoch, checkpoint_every and precise_bn must be ≥ 0")
        if self.keep_checkpoints < 1:
            raise ConfigError("keep_checkpoints must be ≥ 1")
        if not 0 < self.data.val_fraction < 1:
            raise ConfigError("data.val_fraction must be in (0, 1)")
        from .models.avrsp import PARTS

        parts = set(PARTS)
        for key in ("freeze", "fixed_bn"):
            unknown = set(getattr(self.init, key)) - parts
            if unknown:
                raise ConfigError(f"init.{key}: unknown part(s) {sorted(unknown)} (parts: {', '.join(sorted(parts))})")


def shipped_configs() -> list[str]:
    """The names of the configs that come with the package (``stage1_dhf1k``,
    ``ablations/table5_add``, ``studies/fusion``, …)."""
    root = Path(__file__).resolve().parent / "configs"
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def config_file(name: str | Path) -> Path:
    """A config file: ``name`` itself when it is a file, else the shipped config of that
    name (:func:`shipped_configs`), so that a pip-installed avrsp needs no clone."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = Path(__file__).resolve().parent / "configs" / f"{str(name).removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"{name}: no such file, nor a shipped config of that name (shipped: "
                      f"{', '.join(n for n in shipped_configs() if '/' not in n)}, ablations/…, studies/…)")


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A training config from YAML (a file, or a shipped config's name: :func:`config_file`),
    with ``base:`` inheritance (a path relative to the file) and ``model: {name:
    <registered model>, <field>: <value>, ...}``."""
    path = config_file(path)
    data = _merged_yaml(path, seen=())
    model = data.pop("model", {"name": "avrsp"})
    if isinstance(model, str):
        model = {"name": model}
    if not isinstance(model, dict) or "name" not in model:
        raise ConfigError(f"{path}: 'model' needs a 'name' (one of the registered models)")
    model = dict(model)
    name = model.pop("name")
    try:
        base_model = get_config(name, **model)
    except ConfigError as e:
        raise ConfigError(f"{path}: model: {e}") from None
    cfg = replace(TrainConfig(model=base_model), data, where=str(path))
    if overrides:
        cfg = replace(cfg, overrides, where="overrides")
    return cfg


def _merged_yaml(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / base).resolve()
    if base_path in seen:
        raise ConfigError(f"{path}: 'base' loops back to {base_path}")
    merged = _merged_yaml(base_path, seen + (path.resolve(),))
    return _deep_merge(merged, data)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ------------------------------------------------------------------ data

def _videos(cfg: TrainConfig):
    """(train videos, validation videos), checked before any work starts."""
    from .data.datasets import DataError, dhf1k_videos, stavis_databases, stavis_videos

    d = cfg.data
    root = Path(d.root)
    if not d.root or not root.is_dir():
        raise ConfigError(f"data.root: '{d.root}' is not a directory")
    try:
        if d.layout == "dhf1k":
            train = dhf1k_videos(root, "train")
            val = dhf1k_videos(root, "val") if d.val in ("dhf1k_val", "test") else []
        else:
            names = list(d.datasets) or stavis_databases(root)
            if not names:
                raise ConfigError(f"data.root: {root} has no fold lists (fold_lists/*_list_*_fps.txt)")
            train, val = [], []
            for db in names:
                split = None if db == "DIEM" else d.split
                train += stavis_videos(root, db, "train", split)
                if d.val == "test":
                    val += stavis_videos(root, db, "test", split)
    except DataError as e:
        raise ConfigError(f"data: {e}") from None
    if not train:
        raise ConfigError(f"data: no training videos under {root}")
    if not val:  # hold out a seeded share of the training videos
        order = np.random.default_rng([cfg.seed, 7]).permutation(len(train))
        n_val = max(1, int(round(len(train) * d.val_fraction)))
        if len(train) - n_val < 1:
            raise ConfigError("data: too few videos to hold some out for validation")
        val = [train[i] for i in order[:n_val]]
        held = set(order[:n_val].tolist())
        train = [v for i, v in enumerate(train) if i not in held]
    return train, val


class EpochSampler(torch.utils.data.Sampler):
    """This rank's indices of one epoch: a permutation seeded by (seed, epoch), padded to a
    whole number of global batches, taken round-robin by rank, optionally from a batch
    offset (resume). The order depends only on (seed, epoch), never on the process count
    or the number of workers."""

    def __init__(self, n: int, batch: int, dist_: Dist, seed: int, steps: int = 0):
        self.n, self.batch, self.dist, self.seed, self.steps = n, batch, dist_, seed, steps
        self.epoch, self.skip_batches = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def batches_per_epoch(self) -> int:
        per_step = self.batch * self.dist.world
        return self.steps if self.steps else max(1, math.ceil(self.n / per_step))

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        need = self.batches_per_epoch() * self.batch * self.dist.world
        order: list[int] = []
        while len(order) < need:
            order += torch.randperm(self.n, generator=g).tolist()
        return order[:need]

    def __iter__(self):
        order = self._order()
        per_step = self.batch * self.dist.world
        for b in range(self.skip_batches, self.batches_per_epoch()):
            chunk = order[b * per_step:(b + 1) * per_step]
            yield from chunk[self.dist.rank * self.batch:(self.dist.rank + 1) * self.batch]

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.skip_batches) * self.batch


def _collate(items: list[dict]) -> dict:
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if torch.is_tensor(vals[0]) else vals
    return out


def _seed_worker(worker_id: int) -> None:
    # Items are seeded by (seed, epoch, index); only torch's own RNG needs a fixed start.
    torch.manual_seed(torch.initial_seed() % 2**31 + worker_id)


class TrainingError(Exception):
    """A run that cannot go on (a stalled or dead loader worker); the message is one line
    that says how to continue."""


class _Plan(torch.utils.data.Sampler):
    """The keys the loader's next pass reads, set before each pass, so that one pool of
    workers serves training, precise BatchNorm and validation for the whole run."""

    def __init__(self):
        self.keys: list[tuple[str, int, int]] = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class _Sets(torch.utils.data.Dataset):
    """``(name, epoch, index)`` → that item of the named ClipDataset at that epoch. The
    epoch travels with the key because workers that outlive an epoch keep their own copy
    of the datasets."""

    def __init__(self, **sets):
        self.sets = sets

    def __getitem__(self, key: tuple[str, int, int]) -> dict:
        name, epoch, index = key
        return self.sets[name].item(index, epoch)


def _loader(sets: _Sets, plan: _Plan, cfg: TrainConfig, device: torch.device):
    """The run's one DataLoader. Its workers are spawned, not forked, and live for the whole
    run: a forked child inherits the parent's threads' locks but not the threads, and the
    main process has by then run FFmpeg's threaded scaler (the validation image grid), so
    a forked worker could wait forever on a lock no thread will release. Spawned workers
    start from a fresh interpreter on every platform (spawn is also what macOS and
    Windows use), and starting them once per run keeps their start-up cost off every epoch.
    The loader draws its workers' seeds from its own generator, not from torch's global
    RNG, which dropout uses: a resumed run's dropout masks then match the uninterrupted
    run's."""
    kwargs: dict[str, Any] = {}
    if cfg.workers:
        kwargs = dict(multiprocessing_context="spawn", persistent_workers=True, worker_init_fn=_seed_worker,
                      timeout=cfg.worker_timeout)
    return torch.utils.data.DataLoader(sets, batch_size=cfg.batch_size, sampler=plan, num_workers=cfg.workers,
                                       collate_fn=_collate, pin_memory=device.type == "cuda",
                                       generator=torch.Generator().manual_seed(cfg.seed), **kwargs)


def _batches(loader, plan: _Plan, keys, stalled: Callable[[str], str]):
    """The loader's batches of ``keys``. A worker that gives no batch within
    ``worker_timeout``, or dies, ends the run with one line (``stalled(cause)``); an error
    raised inside a worker (a bad file) reaches the caller as its own one-line error."""
    from .data.datasets import DataError
    from .media import MediaError

    plan.keys = list(keys)
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (DataError, MediaError) as e:
            text = str(e).strip()
            if not text.startswith("Caught "):
                raise
            # Raised again in this process with the worker's traceback in the message.
            raise type(e)(text.splitlines()[-1].split(": ", 1)[-1]) from None
        except RuntimeError as e:
            text = str(e)
            if "DataLoader timed out" in text:
                raise TrainingError(stalled(f"no batch from the data loader's workers in {loader.timeout:g} s "
                                            "(worker_timeout)")) from None
            if "DataLoader worker" in text:
                raise TrainingError(stalled(text.splitlines()[0].rstrip(". "))) from None
            raise
        yield batch


# ------------------------------------------------------------------ model

def build_model(cfg: TrainConfig, log) -> AVRSP:
    from safetensors.torch import load_file

    model = AVRSP(cfg.model)
    if cfg.init.model:
        src = load_model(cfg.init.model)
        if src.config.visual_norm != cfg.model.visual_norm:
            # Its S3D was trained on frames normalised another way: every frame would be off.
            raise ConfigError(f"init.model: {cfg.init.model} was trained with model.visual_norm="
                              f"{src.config.visual_norm} but this run has {cfg.model.visual_norm}; set "
                              f"model.visual_norm={src.config.visual_norm}")
        own = model.state_dict()
        theirs = src.state_dict()
        loaded = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(loaded, strict=False)
        fresh = sorted({k.split(".")[0] for k in own if k not in loaded})
        log(f"init: {len(loaded)}/{len(own)} tensors from {cfg.init.model}"
            + (f"; newly initialised: {', '.join(fresh)}" if fresh else ""))
    for part, path, module in (("s3d", cfg.init.s3d, model.visual),
                               ("soundnet", cfg.init.soundnet, getattr(model, "audio_net", None))):
        if not path:
            continue
        if module is None:
            raise ConfigError(f"init.{part}: the model has no audio branch (model.audio is false)")
        if not Path(path).is_file():
            raise ConfigError(f"init.{part}: '{path}' is not a file")
        from .weights import imported_metadata

        norm = imported_metadata(path).get("normalization")
        if part == "s3d" and norm in ("minus_one_one", "kinetics_mean_std") and norm != cfg.model.visual_norm:
            raise ConfigError(f"init.s3d: {path} expects input normalisation '{norm}' but model.visual_norm is "
                              f"'{cfg.model.visual_norm}'; set model.visual_norm={norm}")
        state = load_file(path)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ConfigError(f"init.{part}: {path} does not fit the backbone "
                              f"({str(e).splitlines()[0]}; is the backbone width 1.0?)") from None
        log(f"init: {part} backbone from {path}")
    for key in ("freeze", "fixed_bn"):
        for part in getattr(cfg.init, key):
            if getattr(model, part, None) is None:
                raise ConfigError(f"init.{key}: this model has no '{part}'")
    for part in cfg.init.freeze:
        for p in getattr(model, part).parameters():
            p.requires_grad_(False)
    return model


def _fixed_bn_modules(model: AVRSP, cfg: TrainConfig) -> list[torch.nn.Module]:
    """BatchNorm layers whose statistics training must not change: those of frozen parts
    and of ``init.fixed_bn`` parts."""
    from torch.nn.modules.batchnorm import _BatchNorm

    parts = set(cfg.init.freeze) | set(cfg.init.fixed_bn)
    return [m for part in sorted(parts) for m in getattr(model, part).modules() if isinstance(m, _BatchNorm)]


def _set_frozen_eval(model: AVRSP, cfg: TrainConfig) -> None:
    # A frozen part keeps its BatchNorm statistics (and any dropout off) too.
    for part in cfg.init.freeze:
        getattr(model, part).eval()
    for m in _fixed_bn_modules(model, cfg):
        m.eval()


# ------------------------------------------------------------------ checkpoints

def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(run: Path, model: AVRSP, optimizer, scheduler, *, epoch: int, batch: int, step: int,
                    best: float, keep: int) -> Path:
    """Write the pair for (epoch, batch) and point ``latest.json`` at it."""
    ckpt = run / "ckpt"
    name = f"step_{step:08d}"
    extra = {"epoch": epoch, "batch": batch, "step": step}
    save_model(ckpt / f"{name}.safetensors", model, extra=extra)
    state = {**extra, "best": best, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": _rng_state()}
    atomic_write(ckpt / f"{name}.state.pt", lambda tmp: torch.save(state, tmp))
    atomic_write(ckpt / "latest.json", lambda tmp: tmp.write_text(json.dumps({"name": name, **extra})))
    atomic_write(run / "last.safetensors", lambda tmp: shutil.copyfile(ckpt / f"{name}.safetensors", tmp))
    pairs = sorted(ckpt.glob("step_*.safetensors"))
    for old in pairs[:-keep]:
        old.unlink()
        old.with_name(old.name.replace(".safetensors", ".state.pt")).unlink(missing_ok=True)
    return ckpt / f"{name}.safetensors"


def load_checkpoint(run: Path, model: AVRSP, optimizer, scheduler) -> dict:
    from safetensors.torch import load_file

    pointer = run / "ckpt" / "latest.json"
    if not pointer.is_file():
        raise ConfigError(f"--resume: {run} has no checkpoint (ckpt/latest.json)")
    name = json.loads(pointer.read_text())["name"]
    model.load_state_dict(load_file(str(run / "ckpt" / f"{name}.safetensors")))
    state = torch.load(run / "ckpt" / f"{name}.state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state


# ------------------------------------------------------------------ validation and logs

@torch.no_grad()
def recompute_bn_stats(model: AVRSP, loader, device, autocast, cfg: TrainConfig, dist_: Dist) -> None:
    """Precise BatchNorm: replace running statistics by the exact average of batch
    statistics under the current weights (pytorchvideo/detectron2's "precise BN").
    Running averages lag weights that change quickly, which flattens eval-mode maps."""
    from torch.nn.modules.batchnorm import _BatchNorm

    fixed = {id(m) for m in _fixed_bn_modules(model, cfg)}
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and id(m) not in fixed]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    _set_frozen_eval(model, cfg)
    for batch in loader:
        with autocast():
            model(batch["clip"].to(device), batch["audio"].to(device) if "audio" in batch else None)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
        if dist_.world > 1:
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf)
                buf.div_(dist_.world)


#: Metrics reported at each validation, as ``avrsp evaluate`` defines them (sAUC needs a
#: whole video's other frames, which a validation clip does not have).
VAL_METRICS = ("sim", "cc", "kld", "nss", "auc_j")


@torch.no_grad()
def validate(model, loader, loss_fn, device, autocast, dist_: Dist, videos) -> dict[str, float]:
    """Eq. 19 on the validation clips at the training size (``loss``), and the paper's
    metrics as ``avrsp evaluate`` computes them: each prediction resized to its frame's
    full-resolution ground truth with MATLAB's ``imresize``, STAViS post-processing for the
    audio-visual datasets (not DHF1K), a metric left out of its average where the frame
    lacks its ground truth. So ``val_cc`` means what a table's CC means. ``videos`` maps
    (dataset, name) to the AnnotatedVideo of each validation clip."""
    from .evaluate import default_postprocess
    from .metrics import score_frame

    model.eval()
    sums = torch.zeros(1 + 2 * len(VAL_METRICS) + 1, dtype=torch.float64)  # loss, (sum, count) per metric, clips
    for batch in loader:
        clip = batch["clip"].to(device)
        audio = batch["audio"].to(device) if "audio" in batch else None
        with autocast():
            pred = model(clip, audio)
        target = batch["map"].to(device)
        for i in range(len(pred)):
            loss = loss_fn(pred[i:i + 1], target[i:i + 1])
            video = videos[(batch["dataset"][i], batch["video"][i])]
            k = batch["frame"][i]
            scores = score_frame(pred[i].float().cpu().numpy(), video.saliency_map(k), video.fixations(k),
                                 seed=k, postprocess=default_postprocess(video.dataset))
            row = [loss.item()]
            for m in VAL_METRICS:
                row += [scores[m], 1.0] if np.isfinite(scores[m]) else [0.0, 0.0]
            sums += torch.tensor(row + [1.0], dtype=torch.float64)
    if dist_.world > 1:
        sums = sums.to(device)
        dist.all_reduce(sums)
        sums = sums.cpu()
    out = {"loss": sums[0].item() / max(sums[-1].item(), 1)}
    for j, m in enumerate(VAL_METRICS):
        total, count = sums[1 + 2 * j].item(), sums[2 + 2 * j].item()
        out[m] = total / count if count else math.nan
    return out


@torch.no_grad()
def prediction_grid(model, dataset, n: int, device, autocast) -> np.ndarray:
    """Rows of (last frame | ground truth | prediction) for the first ``n`` validation clips."""
    model.eval()
    rows = []
    for i in range(min(n, len(dataset))):
        item = dataset[i]
        clip = item["clip"][None].to(device)
        audio = item["audio"][None].to(device) if "audio" in item else None
        with autocast():
            pred = model(clip, audio)[0].float().cpu().numpy()
        frame = ((item["clip"][:, -1].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255)
        to_rgb = lambda m: np.repeat((255 * m / max(m.max(), 1e-8))[..., None], 3, 2)  # noqa: E731
        rows.append(np.concatenate([frame, to_rgb(item["map"].numpy()), to_rgb(pred)], 1))
    return np.concatenate(rows, 0).astype(np.uint8)


class Logs:
    """metrics.csv, TensorBoard and images; only rank 0 writes."""

    # train_*: Eq. 19 and its three terms on the training batches (the loss's own
    # sum-normalised SIM); val_*: Eq. 19 on the validation clips, then the metrics as
    # `avrsp evaluate` defines them (docs/training.md).
    FIELDS = ["epoch", "step", "lr", "train_loss", "train_kl", "train_cc", "train_sim", "val_loss",
              *(f"val_{m}" for m in VAL_METRICS), "seconds"]

    def __init__(self, run: Path, completed_epochs: int, resume_step: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        self.csv = run / "metrics.csv"
        if self.csv.is_file():  # drop rows a killed run wrote after its last checkpoint (rows count from 1)
            rows = [r for r in csv.DictReader(open(self.csv)) if int(r["epoch"]) <= completed_epochs]
            self._write_rows(rows)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(run / "tb"), purge_step=resume_step or None)
        (run / "images").mkdir(exist_ok=True)
        self.run = run

    def _write_rows(self, rows: list[dict]) -> None:
        def w(tmp):
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, self.FIELDS, extrasaction="ignore")  # columns of older versions go
                writer.writeheader()
                writer.writerows(rows)
        atomic_write(self.csv, w)

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.enabled:
            self.tb.add_scalar(name, value, step)

    def epoch(self, row: dict, grid: np.ndarray | None) -> None:
        if not self.enabled:
            return
        rows = list(csv.DictReader(open(self.csv))) if self.csv.is_file() else []
        self._write_rows(rows + [row])
        for k, v in row.items():
            if k.startswith("val_"):
                self.tb.add_scalar(f"val/{k[4:]}", v, row["step"])
        self.tb.add_scalar("lr", row["lr"], row["step"])
        if grid is not None:
            from PIL import Image

            path = self.run / "images" / f"epoch_{row['epoch']:03d}.png"
            atomic_write(path, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
            self.tb.add_image("val/predictions", grid, row["step"], dataformats="HWC")
        self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.tb.close()


# ------------------------------------------------------------------ the loop

def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True, log=print) -> Path:
    """Train per ``cfg``; returns the run folder. Everything that can be checked (paths,
    device, precision, model) is checked before the first step. ``deterministic: true``
    switches torch to deterministic algorithms for this run only: the caller's setting
    is restored on return."""
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    try:
        return _train(cfg, resume=resume, progress=progress, log=log)
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.benchmark = flags[2]


def _train(cfg: TrainConfig, *, resume: bool, progress: bool, log) -> Path:
    import contextlib

    from tqdm import tqdm

    from .data.datasets import ClipDataset

    cfg.validate()
    device = process_device(cfg.device)
    if cfg.precision == "bf16" and device.type != "cuda":
        raise ConfigError("precision: bf16 training runs on CUDA only (bf16 autocast training is unsafe on this "
                          "CPU: heap corruption and hangs were measured); use fp32 on CPU")
    train_videos, val_videos = _videos(cfg)
    run = Path(cfg.out)
    if (run / "ckpt" / "latest.json").is_file() and not resume:
        raise ConfigError(f"out: {run} already holds a run; pass --resume to continue it or choose another out")
    dist_ = setup_distributed(device)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg.seed)
    if not dist_.main:
        log = lambda *a, **k: None  # noqa: E731

    model = build_model(cfg, log).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.optim.plateau_factor,
                                                           patience=cfg.optim.plateau_patience)
    start_epoch, start_batch, step, best = 0, 0, 0, math.inf
    if resume:
        state = load_checkpoint(run, model, optimizer, scheduler)
        start_epoch, start_batch, step, best = state["epoch"], state["batch"], state["step"], state["best"]
        if start_epoch >= cfg.epochs:
            log(f"{run}: all {cfg.epochs} epochs are done, nothing to train (resume with epochs=N above "
                f"{cfg.epochs} to train on)")
            return run
        log(f"resumed {run} at epoch {start_epoch + 1}, batch {start_batch}, step {step}")
    elif dist_.main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write(run / "config.yaml", lambda tmp: tmp.write_text(_yaml(to_dict(cfg))))
    net = model
    if dist_.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    size = (cfg.model.height, cfg.model.width)
    train_set = ClipDataset(train_videos, cfg.model.frames, size, audio=cfg.model.audio,
                            clips_per_video=cfg.data.clips_per_video, seed=cfg.seed)
    val_set = ClipDataset(val_videos, cfg.model.frames, size, audio=cfg.model.audio,
                          clips_per_video=cfg.data.val_clips_per_video, seed=cfg.seed + 1)
    sampler = EpochSampler(len(train_set), cfg.batch_size * cfg.accumulate, dist_, cfg.seed, cfg.steps_per_epoch)
    plan = _Plan()
    loader = _loader(_Sets(train=train_set, val=val_set), plan, cfg, device)
    saved = {"step": step if resume else None}

    def read(keys, where: str, keep: Callable[[], None] | None = None):
        """The batches of ``keys``; if the workers stall, ``keep`` saves the position first."""
        def stalled(cause: str) -> str:
            if keep is not None:
                keep()
            again = (f"the run is saved at step {saved['step']}: 'avrsp train --resume {run}' continues it"
                     if saved["step"] is not None else "nothing was saved yet: start the run again")
            return f"{where}: {cause}; {again}"
        return _batches(loader, plan, keys, stalled)

    val_lookup = {(v.dataset, v.name): v for v in val_set.videos}
    val_keys = [("val", 0, i) for i in range(dist_.rank, len(val_set), dist_.world)]
    loss_fn = SaliencyLoss(cfg.optim.alpha_cc, cfg.optim.alpha_sim)
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if cfg.precision == "bf16"
                else contextlib.nullcontext)
    logs = Logs(run, start_epoch, step, dist_.main)
    log(f"training {cfg.model.name} on {len(train_videos)} videos (validation: {len(val_videos)}), "
        f"{dist_.world} process(es) on {device}, global batch {cfg.batch_size * cfg.accumulate * dist_.world}")

    if step == 0:
        # Epoch 0: the starting point's validation scores, the baseline every later row improves on.
        if cfg.precise_bn:
            recompute_bn_stats(model, read(_precise_bn_keys(train_set, cfg, dist_, epoch=-1), "epoch 0 (precise "
                                                                                                 "BatchNorm)"),
                               device, autocast, cfg, dist_)
        val = validate(model, read(val_keys, "epoch 0 (validation)"), loss_fn, device, autocast, dist_, val_lookup)
        logs.epoch({"epoch": 0, "step": 0, "lr": cfg.optim.lr, **{f"train_{k}": math.nan for k in
                    ("loss", "kl", "cc", "sim")}, **{f"val_{k}": v for k, v in val.items()}, "seconds": 0.0}, None)
        log(f"epoch 0 (start): val loss {val['loss']:.4f}, val CC {val['cc']:.3f}, SIM {val['sim']:.3f}")

    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        where = f"epoch {epoch + 1}/{cfg.epochs}"
        model.train()
        _set_frozen_eval(model, cfg)
        totals = torch.zeros(4, dtype=torch.float64)
        t0 = time.time()
        n_batches = sampler.batches_per_epoch()
        bar = tqdm(total=n_batches, initial=sampler.skip_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (progress and dist_.main), dynamic_ncols=True)
        micro = 0
        batch_index = sampler.skip_batches

        def keep_position() -> None:  # the steps done so far (one process: a torchrun's ranks could disagree)
            if dist_.world == 1:
                save_checkpoint(run, model, optimizer, scheduler, epoch=epoch, batch=batch_index, step=step,
                                best=best, keep=cfg.keep_checkpoints)
                saved["step"] = step

        for batch in read([("train", epoch, i) for i in sampler], where, keep_position):
            clip = batch["clip"].to(device, non_blocking=True)
            audio = batch["audio"].to(device, non_blocking=True) if "audio" in batch else None
            target = batch["map"].to(device, non_blocking=True)
            last_micro = micro == cfg.accumulate - 1
            sync = contextlib.nullcontext() if (last_micro or dist_.world == 1) else net.no_sync()
            with sync:
                with autocast():
                    pred = net(clip, audio)
                loss, terms = loss_fn(pred, target, terms=True)
                (loss / cfg.accumulate).backward()
            totals += torch.tensor([loss.item(), terms["kl"].item(), terms["cc"].item(), terms["sim"].item()],
                                   dtype=torch.float64)
            micro += 1
            if micro < cfg.accumulate:
                continue
            micro = 0
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            batch_index += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            logs.scalar("train/loss", loss.item(), step)
            for k, v in terms.items():
                logs.scalar(f"train/{k}", v.item(), step)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and batch_index < n_batches:
                if dist_.main:
                    save_checkpoint(run, model, optimizer, scheduler, epoch=epoch, batch=batch_index, step=step,
                                    best=best, keep=cfg.keep_checkpoints)
                    saved["step"] = step
        bar.close()
        if dist_.world > 1:
            _check_in_sync(model, device)
        if cfg.precise_bn:
            recompute_bn_stats(model, read(_precise_bn_keys(train_set, cfg, dist_, epoch), f"{where} (precise "
                                                                                          "BatchNorm)"),
                               device, autocast, cfg, dist_)
        # The unwrapped model: DDP's forward broadcasts buffers, and ranks hold unequal
        # numbers of validation clips, so a DDP forward here could deadlock.
        val = validate(model, read(val_keys, f"{where} (validation)"), loss_fn, device, autocast, dist_, val_lookup)
        scheduler.step(val["loss"])
        done = max(n_batches - (start_batch if epoch == start_epoch else 0), 1) * cfg.accumulate
        row = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
               **{f"train_{k}": totals[i].item() / done for i, k in enumerate(("loss", "kl", "cc", "sim"))},
               **{f"val_{k}": v for k, v in val.items()}, "seconds": round(time.time() - t0, 1)}
        if dist_.main:
            improved = val["loss"] < best
            best = min(best, val["loss"])
            path = save_checkpoint(run, model, optimizer, scheduler, epoch=epoch + 1, batch=0, step=step,
                                   best=best, keep=cfg.keep_checkpoints)
            saved["step"] = step
            if improved:
                atomic_write(run / "best.safetensors", lambda tmp, path=path: shutil.copyfile(path, tmp))
            grid = prediction_grid(model, val_set, cfg.log_images, device, autocast) if cfg.log_images else None
            logs.epoch(row, grid)
            log(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, val loss {val['loss']:.4f}, "
                f"val CC {val['cc']:.3f}, SIM {val['sim']:.3f}, NSS {val['nss']:.2f}, lr {row['lr']:.2e}"
                + (" (best)" if improved else ""))
        start_batch = 0
    logs.close()
    if dist_.world > 1:
        dist.barrier()
    return run


def _precise_bn_keys(train_set, cfg: TrainConfig, dist_: Dist, epoch: int) -> list[tuple[str, int, int]]:
    """The training clips precise BatchNorm reads after ``epoch`` (-1: before the first),
    in their own seeded order (seed + 17, epoch), so a resumed run recomputes the same
    statistics."""
    sampler = EpochSampler(len(train_set), cfg.batch_size, dist_, cfg.seed + 17, cfg.precise_bn)
    sampler.set_epoch(epoch + 1)
    return [("train", max(epoch, 0), i) for i in sampler]


def _check_in_sync(model: AVRSP, device: torch.device) -> None:
    """All ranks must hold the same weights; a silent divergence would corrupt the run."""
    with torch.no_grad():
        checksum = torch.stack([p.double().sum() for p in model.parameters()]).sum().reshape(1).to(device)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"ranks diverged: parameter checksums {[g.item() for g in gathered]}")


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


__all__ = ["DataConfig", "InitConfig", "OptimConfig", "TrainConfig", "load_train_config", "train"]
