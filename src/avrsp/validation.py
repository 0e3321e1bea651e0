"""What a training run measures between epochs: precise BatchNorm statistics, and the
validation loss and metrics as ``avrsp evaluate`` defines them (docs/training.md)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .distributed import Dist
from .models import AVRSP


@torch.no_grad()
def recompute_bn_stats(model: AVRSP, batches, device, autocast, dist_: Dist, *, keep: list[nn.Module],
                       train_mode: Callable[[], None]) -> None:
    """Precise BatchNorm: replace running statistics by the exact average of batch
    statistics under the current weights (pytorchvideo/detectron2's "precise BN").
    Running averages lag weights that change quickly, which flattens eval-mode maps.
    ``keep``: BatchNorm layers whose statistics stay (frozen or fixed parts);
    ``train_mode()`` puts the model in training mode with those parts in eval mode."""
    from torch.nn.modules.batchnorm import _BatchNorm

    fixed = {id(m) for m in keep}
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and id(m) not in fixed]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    train_mode()
    for batch in batches:
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
def validate(model, batches, loss_fn, device, autocast, dist_: Dist, videos) -> dict[str, float]:
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
    for batch in batches:
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


__all__ = ["VAL_METRICS", "recompute_bn_stats", "validate"]
