"""``avrsp train``'s configuration: the dataclasses a YAML config fills, the shipped
configs by name, and the videos a config trains and validates on (docs/training.md has
every key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import ConfigError, read_yaml, replace
from .models import AVRSPConfig, get_config


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


def training_videos(cfg: TrainConfig):
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


__all__ = ["DataConfig", "InitConfig", "OptimConfig", "TrainConfig", "config_file", "load_train_config",
           "shipped_configs", "training_videos"]
