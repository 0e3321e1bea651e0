"""A training run's logs: ``metrics.csv``, TensorBoard and the validation image grid;
only rank 0 writes (docs/training.md, "Logs")."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write
from .validation import VAL_METRICS


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


__all__ = ["Logs", "prediction_grid"]
