"""The inference graph: BatchNorm folded into the convolution before it, and on the CPU
each ReLU after a 3-D convolution fused into it.

In eval mode a BatchNorm after a convolution is an affine map per output channel,
y = γ·(conv(x) − μ)/√(σ² + ε) + β, so it can be folded into the convolution's weights and
bias: w' = w·s, b' = (b − μ)·s + β with s = γ/√(σ² + ε). The folded network computes the
same function (exactly in real arithmetic; within float32 rounding, measured in
``tests/test_models.py``) with one pass over each activation instead of two. Only pairs
whose modules say their forward applies the BatchNorm directly to the convolution's
output are folded: ``nn.Sequential`` neighbours, and the pairs that a module class
declares (``conv_bn_relu`` triples in S3D's ``BasicConv3d`` and ``SepConv3d``,
``conv_bn_pairs`` in ``SoundNet8``, whose one ReLU module serves every layer). The
training model is never changed: :func:`fold_batchnorm` and :func:`fuse_relu` work on
what ``inference.prepare`` gives them, a copy.
"""

from __future__ import annotations

import functools

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
        pairs += [(conv, bn) for conv, bn, _ in getattr(type(module), "conv_bn_relu", ())]
        for conv_name, bn_name in pairs:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if conv is not None and bn is not None and _foldable(conv, bn):
                _fold_pair(conv, bn)
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


#: Outputs (positions × channels, before any stride) below which :class:`ConvReLU` calls the
#: convolution and the ReLU apart: the fused operator sets up its oneDNN primitive on every
#: call, a few µs more than the plain convolution, which a ReLU pass over fewer values does
#: not repay (measured on 2 cores, one thread, both precisions: even at about 25 000
#: outputs, ahead from 100 000; docs/performance.md).
FUSE_MIN_OUTPUTS = 32768


class ConvReLU(nn.Module):
    """``relu(conv(x))`` as one oneDNN convolution that applies the ReLU as it writes its
    output (``torch.ops.mkldnn._convolution_pointwise``, the operator torch.compile's CPU
    backend emits for this pair): one pass over the output instead of two, and one
    operator call instead of two; the same values (bit for bit where measured,
    ``tests/test_inference.py`` holds them to float rounding). At 64 channels, 16×56×96,
    channels-last: 16.2 against 19.5 ms in float32, 6.8 against 7.4 in bfloat16
    (docs/performance.md). ``conv`` stays a child, holding the weights."""

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        self.conv = conv
        self.geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if x.numel() // x.shape[1] * conv.out_channels < FUSE_MIN_OUTPUTS:
            return torch.relu_(conv(x))
        return _conv_pointwise()(x, conv.weight, conv.bias, *self.geometry, "relu", [None], "")


@functools.cache
def _conv_pointwise():
    # The overload, looked up once: through the operator packet each call costs more.
    return torch.ops.mkldnn._convolution_pointwise.default


def fusable(conv: nn.Module) -> bool:
    """Whether oneDNN computes ``conv`` with a fused ReLU here: a zero-padded 3-D
    convolution on the CPU in float32, or in bfloat16 where oneDNN has a bfloat16 path
    (AVX-512 or newer; elsewhere torch computes a bfloat16 convolution without oneDNN)."""
    if not (isinstance(conv, nn.Conv3d) and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
            and conv.weight.device.type == "cpu" and torch.backends.mkldnn.is_available()):
        return False
    if conv.weight.dtype == torch.bfloat16:
        return onednn_bf16()
    return conv.weight.dtype == torch.float32


def onednn_bf16() -> bool:
    """Whether oneDNN computes bfloat16 convolutions on this CPU."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def fuse_relu(model: nn.Module) -> int:
    """Replace each 3-D convolution whose output goes straight to a ReLU (a folded
    BatchNorm, now ``nn.Identity``, between them) by :class:`ConvReLU`, and that ReLU by
    ``nn.Identity``, in place, where :func:`fusable`; returns how many were fused. The
    pairs are ``nn.Sequential`` neighbours and a module class's ``conv_bn_relu``."""
    fused = 0
    for module in list(model.modules()):
        triples: list[tuple[str, str | None, str]] = []
        if isinstance(module, nn.Sequential):  # each child and the next one that is not an Identity
            kept = [name for name, child in module.named_children() if not isinstance(child, nn.Identity)]
            triples = [(a, None, b) for a, b in zip(kept, kept[1:])]
        triples += list(getattr(type(module), "conv_bn_relu", ()))
        for conv_name, bn_name, relu_name in triples:
            conv, relu = getattr(module, conv_name, None), getattr(module, relu_name, None)
            folded = bn_name is None or isinstance(getattr(module, bn_name, None), nn.Identity)
            if conv is not None and fusable(conv) and folded and isinstance(relu, nn.ReLU):
                setattr(module, conv_name, ConvReLU(conv))
                setattr(module, relu_name, nn.Identity())
                fused += 1
    return fused
