"""``avrsp train``: the paper's two-stage recipe (Section IV-B), resumable, on one
machine or many.

Stage 1 trains the visual-only network on DHF1K. Stage 2 trains the audio-visual network
on the six STAViS datasets jointly, per split, starting from stage 1. The optimiser is
AdamW (lr 1e-4, weight decay 1e-5), with ReduceLROnPlateau (factor 0.5) on the
validation loss and the Eq. 19 loss.

This module is the loop; the config is :mod:`avrsp.train_config`, the data loading
:mod:`avrsp.data.loader`, the checkpoints :class:`avrsp.checkpoint.CheckpointSaver`,
what is measured between epochs :mod:`avrsp.validation`, and the logs
:mod:`avrsp.train_logs`. A run folder holds ``config.yaml``, ``ckpt/`` (the
checkpoints), ``last.safetensors`` / ``best.safetensors`` (the newest model file and
the best by validation loss), ``metrics.csv``, ``tb/`` and ``images/``. Every write is
atomic; a run killed at any moment resumes with ``--resume`` and loses at most the steps
since its last checkpoint.

"Batch" means one thing here: the clips one process puts through the network at once
(``batch_size``). An optimiser *step* takes ``accumulate`` batches per process.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import CheckpointSaver, Cursor, atomic_write, load_model
from .config import ConfigError, to_dict
from .data.loader import ClipSets, EpochSampler, Plan, TrainingError, read_batches, training_loader
from .distributed import process_device, setup_distributed
from .loss import SaliencyLoss
from .models import AVRSP
from .train_config import (DataConfig, InitConfig, OptimConfig, TrainConfig, config_file, load_train_config,
                           shipped_configs, training_videos)
from .train_logs import Logs, prediction_grid
from .validation import recompute_bn_stats, validate

#: The loss terms logged per step and per epoch, Eq. 19 first.
TERMS = ("loss", "kl", "cc", "sim")


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


def fixed_bn_modules(model: AVRSP, cfg: TrainConfig) -> list[torch.nn.Module]:
    """BatchNorm layers whose statistics training must not change: those of frozen parts
    and of ``init.fixed_bn`` parts."""
    from torch.nn.modules.batchnorm import _BatchNorm

    parts = set(cfg.init.freeze) | set(cfg.init.fixed_bn)
    return [m for part in sorted(parts) for m in getattr(model, part).modules() if isinstance(m, _BatchNorm)]


def train_mode(model: AVRSP, cfg: TrainConfig) -> None:
    """Training mode, but a frozen part keeps its BatchNorm statistics (and any dropout
    off), and a ``fixed_bn`` part its statistics."""
    model.train()
    for part in cfg.init.freeze:
        getattr(model, part).eval()
    for m in fixed_bn_modules(model, cfg):
        m.eval()


# ------------------------------------------------------------------ the loop

def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True, log=print) -> Path:
    """Train per ``cfg``; returns the run folder. Everything that can be checked (paths,
    device, precision, model) is checked before the first step. ``deterministic: true``
    switches torch to deterministic algorithms for this run only: the caller's setting
    is restored on return."""
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    try:
        run = _Run(cfg, resume=resume, progress=progress, log=log)
        return run.fit() if run.todo else run.folder
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.benchmark = flags[2]


class _Run:
    """One training run: set up in ``__init__`` (checks, model, optimiser, data, logs,
    resume), then :meth:`fit` runs the epochs."""

    def __init__(self, cfg: TrainConfig, *, resume: bool, progress: bool, log):
        cfg.validate()
        self.cfg, self.progress = cfg, progress
        self.device = process_device(cfg.device)
        if cfg.precision == "bf16" and self.device.type != "cuda":
            raise ConfigError("precision: bf16 training runs on CUDA only (bf16 autocast training is unsafe on this "
                              "CPU: heap corruption and hangs were measured); use fp32 on CPU")
        train_videos, val_videos = training_videos(cfg)
        self.folder = Path(cfg.out)
        self.saver = CheckpointSaver(self.folder, cfg.keep_checkpoints)
        if self.saver.latest.is_file() and not resume:
            raise ConfigError(f"out: {self.folder} already holds a run; pass --resume to continue it or choose "
                              "another out")
        self.dist = setup_distributed(self.device)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        torch.manual_seed(cfg.seed)
        self.log = log if self.dist.main else (lambda *a, **k: None)
        self._build(resume)
        if self.todo:
            self._data(train_videos, val_videos)
            self.logs = Logs(self.folder, self.cursor.epoch, self.cursor.step, self.dist.main)
            self.log(f"training {cfg.model.name} on {len(train_videos)} videos (validation: {len(val_videos)}), "
                     f"{self.dist.world} process(es) on {self.device}, global batch "
                     f"{cfg.batch_size * cfg.accumulate * self.dist.world}")

    def _build(self, resume: bool) -> None:
        cfg = self.cfg
        self.model = build_model(cfg, self.log).to(self.device)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=cfg.optim.plateau_factor, patience=cfg.optim.plateau_patience)
        self.cursor, self.best, self.saved = Cursor(), math.inf, None
        self.todo = True
        if resume:
            self.cursor, self.best = self.saver.load(self.model, self.optimizer, self.scheduler)
            self.saved = self.cursor.step
            c = self.cursor
            if c.epoch >= cfg.epochs:
                self.log(f"{self.folder}: all {cfg.epochs} epochs are done, nothing to train (resume with "
                         f"epochs=N above {cfg.epochs} to train on)")
                self.todo = False
                return
            self.log(f"resumed {self.folder} at epoch {c.epoch + 1}, step {c.step_in_epoch} of it, step {c.step}")
        elif self.dist.main:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self.folder / "config.yaml", lambda tmp: tmp.write_text(_yaml(to_dict(cfg))))
        self.net = self.model
        if self.dist.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.loss_fn = SaliencyLoss(cfg.optim.alpha_cc, cfg.optim.alpha_sim)
        self.autocast = ((lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))
                         if cfg.precision == "bf16" else contextlib.nullcontext)

    def _data(self, train_videos, val_videos) -> None:
        from .data.clips import ClipDataset

        cfg, size = self.cfg, (self.cfg.model.height, self.cfg.model.width)
        self.train_set = ClipDataset(train_videos, cfg.model.frames, size, audio=cfg.model.audio,
                                     clips_per_video=cfg.data.clips_per_video, seed=cfg.seed)
        self.val_set = ClipDataset(val_videos, cfg.model.frames, size, audio=cfg.model.audio,
                                   clips_per_video=cfg.data.val_clips_per_video, seed=cfg.seed + 1)
        self.sampler = EpochSampler(len(self.train_set), cfg.batch_size * cfg.accumulate, self.dist, cfg.seed,
                                    cfg.steps_per_epoch)
        self.plan = Plan()
        self.loader = training_loader(ClipSets(train=self.train_set, val=self.val_set), self.plan,
                                      batch_size=cfg.batch_size, workers=cfg.workers, timeout=cfg.worker_timeout,
                                      seed=cfg.seed, pin_memory=self.device.type == "cuda")
        self.val_lookup = {(v.dataset, v.name): v for v in self.val_set.videos}
        self.val_keys = [("val", 0, i) for i in range(self.dist.rank, len(self.val_set), self.dist.world)]

    # -------------------------------------------------------------- reading

    def read(self, keys, where: str, keep=None):
        """The batches of ``keys``; if the workers stall, ``keep()`` saves the position first
        and the error says how to resume."""
        def stalled(cause: str) -> str:
            if keep is not None:
                keep()
            again = (f"the run is saved at step {self.saved}: 'avrsp train --resume {self.folder}' continues it"
                     if self.saved is not None else "nothing was saved yet: start the run again")
            return f"{where}: {cause}; {again}"
        return read_batches(self.loader, self.plan, keys, stalled)

    def precise_bn_keys(self, epoch: int) -> list[tuple[str, int, int]]:
        """The training clips precise BatchNorm reads after ``epoch`` (-1: before the
        first), in their own seeded order (seed + 17, epoch), so a resumed run recomputes
        the same statistics."""
        sampler = EpochSampler(len(self.train_set), self.cfg.batch_size, self.dist, self.cfg.seed + 17,
                               self.cfg.precise_bn)
        sampler.set_epoch(epoch + 1)
        return [("train", max(epoch, 0), i) for i in sampler]

    def measure(self, epoch: int, where: str) -> dict[str, float]:
        """Precise BatchNorm (if set), then validation, after ``epoch`` (-1: the start)."""
        if self.cfg.precise_bn:
            recompute_bn_stats(self.model, self.read(self.precise_bn_keys(epoch), f"{where} (precise BatchNorm)"),
                               self.device, self.autocast, self.dist, keep=fixed_bn_modules(self.model, self.cfg),
                               train_mode=lambda: train_mode(self.model, self.cfg))
        # The unwrapped model: DDP's forward broadcasts buffers, and ranks hold unequal
        # numbers of validation clips, so a DDP forward here could deadlock.
        return validate(self.model, self.read(self.val_keys, f"{where} (validation)"), self.loss_fn, self.device,
                        self.autocast, self.dist, self.val_lookup)

    # -------------------------------------------------------------- the epochs

    def fit(self) -> Path:
        cfg = self.cfg
        if self.cursor.step == 0:
            # Epoch 0: the starting point's validation scores, the baseline every later row improves on.
            val = self.measure(-1, "epoch 0")
            self.logs.epoch({"epoch": 0, "step": 0, "lr": cfg.optim.lr, **{f"train_{k}": math.nan for k in TERMS},
                             **{f"val_{k}": v for k, v in val.items()}, "seconds": 0.0}, None)
            self.log(f"epoch 0 (start): val loss {val['loss']:.4f}, val CC {val['cc']:.3f}, SIM {val['sim']:.3f}")
        for epoch in range(self.cursor.epoch, cfg.epochs):
            t0 = time.time()
            totals = self.epoch(epoch)
            self.end_epoch(epoch, totals, time.time() - t0)
        self.logs.close()
        if self.dist.world > 1:
            dist.barrier()
        return self.folder

    def save(self, cursor: Cursor) -> Path:
        path = self.saver.save(self.model, self.optimizer, self.scheduler, cursor, self.best)
        self.saved = cursor.step
        return path

    def epoch(self, epoch: int) -> torch.Tensor:
        """One epoch's steps, from where the cursor stands; returns the sums of the loss
        terms over its batches."""
        cfg = self.cfg
        first = self.cursor.step_in_epoch if epoch == self.cursor.epoch else 0
        self.sampler.set_epoch(epoch, first)
        self.model.train()
        train_mode(self.model, cfg)
        totals = torch.zeros(len(TERMS), dtype=torch.float64)
        steps = self.sampler.steps_per_epoch()
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (self.progress and self.dist.main), dynamic_ncols=True)
        self.cursor = Cursor(epoch, first, self.cursor.step)

        def keep_position() -> None:  # the steps done so far (one process: a torchrun's ranks could disagree)
            if self.dist.world == 1:
                self.save(self.cursor)

        batches = self.read([("train", epoch, i) for i in self.sampler], f"epoch {epoch + 1}/{cfg.epochs}",
                            keep_position)
        micro = 0
        for batch in batches:
            last_micro = micro == cfg.accumulate - 1
            loss, terms = self.forward_backward(batch, sync=last_micro or self.dist.world == 1)
            totals += torch.tensor([loss.item(), *(terms[k].item() for k in TERMS[1:])], dtype=torch.float64)
            micro += 1
            if micro < cfg.accumulate:
                continue
            micro = 0
            self.optimizer_step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            for k, v in (("loss", loss), *terms.items()):
                self.logs.scalar(f"train/{k}", v.item(), self.cursor.step)
            if (cfg.checkpoint_every and self.cursor.step % cfg.checkpoint_every == 0
                    and self.cursor.step_in_epoch < steps and self.dist.main):
                self.save(self.cursor)
        bar.close()
        return totals / (max(steps - first, 1) * cfg.accumulate)

    def forward_backward(self, batch: dict, sync: bool):
        clip = batch["clip"].to(self.device, non_blocking=True)
        audio = batch["audio"].to(self.device, non_blocking=True) if "audio" in batch else None
        target = batch["map"].to(self.device, non_blocking=True)
        with contextlib.nullcontext() if sync else self.net.no_sync():
            with self.autocast():
                pred = self.net(clip, audio)
            loss, terms = self.loss_fn(pred, target, terms=True)
            (loss / self.cfg.accumulate).backward()
        return loss, terms

    def optimizer_step(self) -> None:
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        c = self.cursor
        self.cursor = Cursor(c.epoch, c.step_in_epoch + 1, c.step + 1)

    def end_epoch(self, epoch: int, means: torch.Tensor, seconds: float) -> None:
        """Measure, step the scheduler, checkpoint, keep the best model, log."""
        if self.dist.world > 1:
            _check_in_sync(self.model, self.device)
        val = self.measure(epoch, f"epoch {epoch + 1}/{self.cfg.epochs}")
        self.scheduler.step(val["loss"])
        self.cursor = Cursor(epoch + 1, 0, self.cursor.step)
        row = {"epoch": epoch + 1, "step": self.cursor.step, "lr": self.optimizer.param_groups[0]["lr"],
               **{f"train_{k}": means[i].item() for i, k in enumerate(TERMS)},
               **{f"val_{k}": v for k, v in val.items()}, "seconds": round(seconds, 1)}
        if not self.dist.main:
            return
        improved = val["loss"] < self.best
        self.best = min(self.best, val["loss"])
        path = self.save(self.cursor)
        if improved:
            atomic_write(self.folder / "best.safetensors", lambda tmp: shutil.copyfile(path, tmp))
        grid = (prediction_grid(self.model, self.val_set, self.cfg.log_images, self.device, self.autocast)
                if self.cfg.log_images else None)
        self.logs.epoch(row, grid)
        self.log(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, val loss {val['loss']:.4f}, "
                 f"val CC {val['cc']:.3f}, SIM {val['sim']:.3f}, NSS {val['nss']:.2f}, lr {row['lr']:.2e}"
                 + (" (best)" if improved else ""))


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


__all__ = ["DataConfig", "InitConfig", "OptimConfig", "TrainConfig", "TrainingError", "build_model", "config_file",
           "load_train_config", "shipped_configs", "train"]
