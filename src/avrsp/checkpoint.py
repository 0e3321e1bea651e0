"""Model files: weights as safetensors with the full model config embedded.

A model file is all that ``evaluate`` (and later ``predict``) needs: ``load_model(path)``
rebuilds the exact network from the config stored in the file's metadata. Files are
written atomically (temporary file, then rename), and reading never executes code (no
pickle). Every failure is a one-line :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, from_dict, to_dict
from .models import AVRSP, AVRSPConfig

FORMAT = "avrsp-model/1"


class CheckpointError(Exception):
    """A model file that cannot be used; the message names the file and the cause."""


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` only once it is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_generated(path: Path, block: str, tag: str, *, title: str = "") -> None:
    """Put ``block`` between the ``<!-- {tag}: begin/end -->`` markers of the Markdown file
    ``path``, keeping the hand-written text around them (a new file gets ``title``, and a
    file without the markers gets them appended), atomically."""
    path = Path(path)
    begin, end = f"<!-- {tag}: begin -->", f"<!-- {tag}: end -->"
    text = path.read_text() if path.is_file() else (f"# {title}\n\n" if title else "")
    block = f"{begin}\n{block.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_model(path: str | Path, model: AVRSP, extra: dict[str, Any] | None = None) -> None:
    """Write ``model``'s weights and config (and ``extra`` JSON-able metadata) to ``path``."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(to_dict(model.config))}
    if extra:
        meta["extra"] = json.dumps(extra)
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=meta))


#: What a training run's folder offers as its model, in order of preference.
RUN_MODELS = ("best.safetensors", "last.safetensors")


def model_file(path: str | Path) -> Path:
    """``path`` when it is a file; for a training run's folder, its best model
    (``best.safetensors``, else ``last.safetensors``)."""
    path = Path(path)
    if path.is_dir():
        for name in RUN_MODELS:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: a folder without {' or '.join(RUN_MODELS)}, so not a training run's "
                              f"folder; pass a model file")
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The config (``config``) and extra metadata (``extra``) of a model file (or of a
    training run's best model, :func:`model_file`)."""
    from safetensors import safe_open

    path = model_file(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for foreign files
        raise CheckpointError(f"{path}: not a safetensors model file ({str(e).splitlines()[0]})") from None
    if "avrsp_import" in meta:
        kind = json.loads(meta["avrsp_import"]).get("kind", "backbone")
        part = "s3d" if kind == "s3d" else "soundnet"
        raise CheckpointError(f"{path}: {kind} backbone weights from 'avrsp weights import', not a whole model; "
                              f"train from them (init.{part}={path} in a training config) and pass the run's "
                              f"model file")
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path}: a safetensors file without an avrsp model config (published backbone "
                              f"weights go through 'avrsp weights import' into a training config first)")
    try:
        return {"config": json.loads(meta["config"]), "extra": json.loads(meta.get("extra", "{}"))}
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: the embedded config is not valid JSON") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> AVRSP:
    """Rebuild the network stored in ``path`` (in eval mode); a training run's folder
    gives its best model (:func:`model_file`)."""
    from safetensors.torch import load_file

    path = model_file(path)
    meta = read_metadata(path)
    try:
        config = from_dict(AVRSPConfig, meta["config"], where=f"{path}: config")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    model = AVRSP(config)
    state = load_file(str(path), device="cpu")
    mismatch = describe_mismatch(state, model.state_dict())
    if mismatch:
        raise CheckpointError(f"{path}: weights do not match the embedded config: {mismatch}")
    model.load_state_dict(state)
    return model.to(device).eval()


def describe_mismatch(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str:
    """'' when ``state`` has exactly ``expected``'s keys and shapes; otherwise one line
    counting the missing, unexpected and mis-shaped keys, each with an example."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} mis-shaped (e.g. {k}: {tuple(state[k].shape)} in the file, "
                     f"{tuple(expected[k].shape)} expected)")
    return "; ".join(parts)


# ------------------------------------------------------------------ training runs

@dataclass(frozen=True)
class Cursor:
    """Where a training run stands: ``epoch`` epochs complete, ``step_in_epoch`` optimiser
    steps of the next one done, ``step`` optimiser steps in all."""

    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0


class CheckpointSaver:
    """A run's checkpoints (timm's ``CheckpointSaver`` is the model): each save writes

    - ``ckpt/step_<n>.safetensors``: the model file (config embedded, the cursor in its
      metadata), all that ``predict`` and ``evaluate`` need;
    - ``ckpt/step_<n>.state.pt``: the optimiser, the scheduler, the best validation loss
      and the random streams (read back with ``torch.load(weights_only=True)``);
    - ``ckpt/latest.json``: rewritten only once both are complete, so a kill between the
      writes leaves the previous pair in force;
    - ``last.safetensors``: a copy of the newest model file;

    and keeps the newest ``keep`` pairs. Every write is atomic."""

    def __init__(self, run: Path, keep: int):
        self.run, self.keep = Path(run), keep
        self.folder = self.run / "ckpt"

    @property
    def latest(self) -> Path:
        return self.folder / "latest.json"

    def save(self, model: AVRSP, optimizer, scheduler, cursor: Cursor, best: float) -> Path:
        import shutil
        from dataclasses import asdict

        name = f"step_{cursor.step:08d}"
        where = asdict(cursor)
        model_file = self.folder / f"{name}.safetensors"
        save_model(model_file, model, extra=where)
        state = {**where, "best": best, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": _rng_state()}
        atomic_write(self.folder / f"{name}.state.pt", lambda tmp: torch.save(state, tmp))
        atomic_write(self.latest, lambda tmp: tmp.write_text(json.dumps({"name": name, **where})))
        atomic_write(self.run / "last.safetensors", lambda tmp: shutil.copyfile(model_file, tmp))
        for old in sorted(self.folder.glob("step_*.safetensors"))[:-self.keep]:
            old.unlink()
            old.with_name(old.name.replace(".safetensors", ".state.pt")).unlink(missing_ok=True)
        return model_file

    def load(self, model: AVRSP, optimizer, scheduler) -> tuple[Cursor, float]:
        """Restore the newest pair into ``model``, ``optimizer``, ``scheduler`` and the
        random streams; returns its cursor and best validation loss."""
        from safetensors.torch import load_file

        if not self.latest.is_file():
            raise ConfigError(f"--resume: {self.run} has no checkpoint (ckpt/latest.json)")
        name = json.loads(self.latest.read_text())["name"]
        model.load_state_dict(load_file(str(self.folder / f"{name}.safetensors")))
        state = torch.load(self.folder / f"{name}.state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        # Runs saved before the cursor had its name kept the steps into the epoch as "batch".
        step_in_epoch = state.get("step_in_epoch", state.get("batch", 0))
        return Cursor(state["epoch"], step_in_epoch, state["step"]), state["best"]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state
