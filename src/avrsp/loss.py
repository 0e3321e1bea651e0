"""The training loss of Section III-E: Loss = KL + α₁·CC + α₂·SIM (Eq. 16–19)."""

from __future__ import annotations

import torch
from torch import nn

_EPS = 2.2204e-16  # MATLAB's eps, as in the benchmark's KL (docs/evaluation.md)


def _as_distribution(x: torch.Tensor) -> torch.Tensor:
    """Scale each map to sum 1; an all-zero map stays all-zero (its sum is floored at eps)."""
    x = x.clamp_min(0)
    return x / x.sum(dim=(-2, -1), keepdim=True).clamp_min(_EPS)


def kl_divergence(pred: torch.Tensor, target: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Eq. 16, KL(P, G) = Σ Gᵢ log((ε + Gᵢ)/(ε + Pᵢ)) on sum-normalised maps; one value per map."""
    p, g = _as_distribution(pred), _as_distribution(target)
    return (g * (torch.log(g + eps) - torch.log(p + eps))).sum(dim=(-2, -1))


def correlation(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 17, Pearson's CC; 0 where either map is constant (its variance is floored at ``eps``)."""
    p = pred - pred.mean(dim=(-2, -1), keepdim=True)
    g = target - target.mean(dim=(-2, -1), keepdim=True)
    # sqrt(x + eps) rather than sqrt(x) + eps: sqrt's gradient at 0 is infinite.
    den = torch.sqrt((p * p).sum(dim=(-2, -1)) + eps) * torch.sqrt((g * g).sum(dim=(-2, -1)) + eps)
    return (p * g).sum(dim=(-2, -1)) / den


def similarity(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 18, SIM = Σ min(Pᵢ, Gᵢ) on sum-normalised maps."""
    return torch.minimum(_as_distribution(pred), _as_distribution(target)).sum(dim=(-2, -1))


class SaliencyLoss(nn.Module):
    """Eq. 19: KL + α₁·CC + α₂·SIM, α₁ = α₂ = −0.1 in the paper.

    Maps are B×H×W (or H×W). Computed in at least float32 whatever the input dtype, averaged over
    the batch. ``forward(..., terms=True)`` also returns each term's batch mean for logging.
    Safe on all-zero and constant maps: no NaN or inf in value or gradient.
    """

    def __init__(self, alpha_cc: float = -0.1, alpha_sim: float = -0.1):
        super().__init__()
        self.alpha_cc, self.alpha_sim = alpha_cc, alpha_sim

    def forward(self, pred: torch.Tensor, target: torch.Tensor, terms: bool = False):
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        # Upcast half precision (never downcast float64): the sums span every pixel.
        dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
        pred, target = pred.to(dtype), target.to(dtype)
        kl = kl_divergence(pred, target).mean()
        cc = correlation(pred, target).mean()
        sim = similarity(pred, target).mean()
        loss = kl + self.alpha_cc * cc + self.alpha_sim * sim
        if terms:
            return loss, {"kl": kl.detach(), "cc": cc.detach(), "sim": sim.detach()}
        return loss
