"""The inference graph: BatchNorm folded into the convolution before it.

In eval mode a BatchNorm after a convolution is an affine map per output channel,
y = γ·(conv(x) − μ)/√(σ² + ε) + β, so it can be folded into the convolution's weights and
bias: w' = w·s, b' = (b − μ)·s + β with s = γ/√(σ² + ε). The folded network computes the
same function (exactly in real arithmetic; within float32 rounding, measured in
``tests/test_models.py``) with one pass over each activation instead of two. Only pairs
whose modules say their forward applies the BatchNorm directly to the convolution's
output are folded: ``nn.Sequential`` neighbours, and the ``conv_bn_pairs`` that a module
class declares (S3D's ``BasicConv3d`` and ``SepConv3d``, ``SoundNet8``). The training
model is never changed: :func:`fold_batchnorm` works on what ``inference.prepare`` gives
it, a copy.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .neck import memory_format

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _fold_pair(conv: nn.Module, bn: _BatchNorm) -> None:
    """Fold ``bn`` into ``conv`` in place (float64 arithmetic, then the conv's dtype)."""
    w = conv.weight.detach().double()
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    new_w = (w * scale.view(-1, *([1] * (w.dim() - 1)))).to(conv.weight.dtype)
    new_b = ((bias - bn.running_mean.double()) * scale + bn.bias.detach().double()).to(conv.weight.dtype)
    conv.weight = nn.Parameter(new_w.contiguous(memory_format=memory_format(conv.weight)), requires_grad=False)
    conv.bias = nn.Parameter(new_b, requires_grad=False)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, _CONVS) and isinstance(bn, _BatchNorm) and bn.track_running_stats and bn.affine
            and bn.num_features == conv.out_channels)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every declared conv → BatchNorm pair of ``model`` (in eval mode), in place;
    returns how many were folded. A folded BatchNorm becomes ``nn.Identity``."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (folding uses the running statistics)")
    folded = 0
    for module in list(model.modules()):
        pairs: list[tuple[str, str]] = []
        if isinstance(module, nn.Sequential):
            names = [name for name, _ in module.named_children()]
            pairs = [(a, b) for a, b in zip(names, names[1:])]
        pairs += list(getattr(type(module), "conv_bn_pairs", ()))
        for conv_name, bn_name in pairs:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if conv is not None and bn is not None and _foldable(conv, bn):
                _fold_pair(conv, bn)
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded
