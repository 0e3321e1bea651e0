"""The inference graph: BatchNorm folded into the convolution before it, and on the CPU
each ReLU after a 3-D convolution fused into it and S3D's stride-1 max pooling computed
one axis at a time.

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
what ``graph.prepare`` gives them, a copy.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.utils import _triple

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
#: call, more than the plain convolution, which a ReLU pass over fewer values does not
#: repay; the threshold lies where the two broke even on a 2-core CPU (docs/performance.md).
FUSE_MIN_OUTPUTS = 32768


class ConvReLU(nn.Module):
    """``relu(conv(x))`` as one oneDNN convolution that applies the ReLU as it writes its
    output (``torch.ops.mkldnn._convolution_pointwise``, the operator torch.compile's CPU
    backend emits for this pair): one pass over the output instead of two, and one
    operator call instead of two; the same values (bit for bit where measured,
    ``tests/test_inference.py`` holds them to float rounding); the saving is the second
    pass over a large channels-last output. ``conv`` stays a child, holding the weights."""

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


#: Inputs (elements) below which :class:`SeparableMaxPool3d` calls torch's own pooling:
#: its seven operators cost more than they save on small maps; the threshold lies where the
#: two broke even on a 2-core CPU (docs/performance.md).
SEPARABLE_MIN_INPUTS = 131072


class SeparableMaxPool3d(nn.Module):
    """A stride-1 "same" ``nn.MaxPool3d`` (odd kernel, padding kernel // 2) as a maximum
    along W, then H, then T: the maximum over a box is the maximum of the maxima along
    each of its axes, so the values are the same, bit for bit, in any precision. Each
    axis is a copy and two element-wise maxima per unit of radius on shifted slices, in
    the input's own memory layout. torch's CPU kernel visits all 27 positions of each
    window and records the winner's index as well, which the separable maxima avoid.
    S3D's strided poolings are left to torch, which is faster there. ``pool`` stays a child, for smaller inputs and under
    ``torch.compile``: the maxima write into slices (``out=``), which dynamo cannot
    trace, and the graph breaks they made had it compile each of S3D's Mixed units as a
    frame of its own, giving up after 8 at paper size (docs/performance.md); the
    compiler generates its own pooling. Written without ``out=`` (pairwise maxima and a
    concatenation) every axis allocates twice more, and eager mode pays for it."""

    def __init__(self, pool: nn.MaxPool3d):
        super().__init__()
        self.pool = pool
        self.radii = [k // 2 for k in _triple(pool.kernel_size)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() < SEPARABLE_MIN_INPUTS or torch.compiler.is_compiling():
            return self.pool(x)
        for dim in (4, 3, 2):
            x = _max_within(x, dim, self.radii[dim - 2])
        return x


def _max_within(x: torch.Tensor, dim: int, radius: int) -> torch.Tensor:
    """y[i] = max(x[i - radius … i + radius]) along ``dim``, positions beyond the ends left out."""
    if radius == 0:
        return x
    out, n = x.clone(), x.shape[dim]
    for shift in range(1, min(radius, n - 1) + 1):
        later, earlier = out.narrow(dim, shift, n - shift), out.narrow(dim, 0, n - shift)
        torch.maximum(later, x.narrow(dim, 0, n - shift), out=later)
        torch.maximum(earlier, x.narrow(dim, shift, n - shift), out=earlier)
    return out


def separable(pool: nn.Module) -> bool:
    """Whether ``pool`` is a max pooling :class:`SeparableMaxPool3d` computes: stride 1,
    odd kernel, padding half of it, no dilation, no indices."""
    if not isinstance(pool, nn.MaxPool3d) or pool.return_indices or pool.ceil_mode:
        return False
    k, s, p, d = (_triple(v) for v in (pool.kernel_size, pool.stride or pool.kernel_size, pool.padding,
                                        pool.dilation))
    return all(ki % 2 == 1 and si == 1 and pi == ki // 2 and di == 1 for ki, si, pi, di in zip(k, s, p, d))


def separate_max_pools(model: nn.Module) -> int:
    """Replace each stride-1 max pooling of ``model`` (:func:`separable`) by
    :class:`SeparableMaxPool3d`, in place; returns how many."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if separable(child):
                setattr(module, name, SeparableMaxPool3d(child))
                replaced += 1
    return replaced
