"""Multi-scale feature enhancement: ASPP + LIP (Section III-A), MS (Eq. 8–12), MRG (Eq. 13–15).

Scale convention (docs/architecture.md): X⁰ is the lowest resolution (after S3D block 4)
and X³ the highest (after block 1), so that RAVF fuses audio with X⁰ and the MRG chain
runs l = 1, 2, 3 from low to high resolution, as Eq. 13 requires.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """A 3-D convolution + BN + ReLU.

    ``kernel_size=3`` is factorised like S3D's own convolutions, spatial (1,3,3) then
    temporal (3,1,1): it covers the same 3×3×3 neighbourhood at 12/27 of the cost, which
    matters at X³ (16×56×96 positions at paper size).
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, bn_momentum: float = 0.1):
        if kernel_size == 1:
            layers = [nn.Conv3d(cin, cout, 1, bias=False), nn.BatchNorm3d(cout, momentum=bn_momentum),
                      nn.ReLU(inplace=True)]
        else:
            k, p = kernel_size, kernel_size // 2
            layers = [nn.Conv3d(cin, cout, (1, k, k), padding=(0, p, p), bias=False),
                      nn.BatchNorm3d(cout, momentum=bn_momentum), nn.ReLU(inplace=True),
                      nn.Conv3d(cout, cout, (k, 1, 1), padding=(p, 0, 0), bias=False),
                      nn.BatchNorm3d(cout, momentum=bn_momentum), nn.ReLU(inplace=True)]
        super().__init__(*layers)


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels-last 3-D when ``x`` is stored that way (and is not also plainly contiguous,
    as tensors with one channel or one position are), else the default layout."""
    cl = x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
    return torch.channels_last_3d if cl else torch.contiguous_format


def spread_like(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-clip B×C×1×1×1 tensor repeated over ``x``'s T×H×W, in ``x``'s memory layout,
    to be concatenated with ``x``-shaped features. Not a broadcast view: it has no
    layout, so the concatenation, and every layer after it, would fall back to the
    default layout, each convolution converting its input first."""
    return v.expand(-1, -1, *x.shape[2:]).contiguous(memory_format=memory_format(x))


def resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` (B×C×T×H×W) to ``like``'s T×H×W: trilinear up, average-pool down."""
    size = like.shape[-3:]
    if x.shape[-3:] == size:
        return x
    if all(s <= t for s, t in zip(x.shape[-3:], size)):
        if x.shape[2] == size[0]:
            return upsample_frames(x, size[1:])
        return F.interpolate(x, size=size, mode="trilinear", align_corners=False)
    if all(s >= t and s % t == 0 for s, t in zip(x.shape[-3:], size)):
        return block_mean(x, tuple(s // t for s, t in zip(x.shape[-3:], size)))  # all our scales
    if all(s >= t for s, t in zip(x.shape[-3:], size)):
        return F.adaptive_avg_pool3d(x, size)
    # Mixed directions (e.g. fewer frames but more pixels): interpolation handles both.
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def upsample_frames(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Trilinear upsampling of B×C×T×H×W to T×``size`` when T stays: the same values
    (align_corners=False puts each output frame exactly on an input frame), computed as
    bilinear upsampling of every frame, on a 4-D view of the tensor in its own memory
    layout: on the CPU torch's bilinear kernel is the faster of the two, in both layouts
    and precisions."""
    B, C, T, H, W = x.shape
    if memory_format(x) == torch.channels_last_3d:
        frames = x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)   # channels-last 2-D, no copy
        up = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
        return up.reshape(B, T, C, *size).permute(0, 2, 1, 3, 4)
    up = F.interpolate(x.reshape(B, C * T, H, W), size=size, mode="bilinear", align_corners=False)
    return up.reshape(B, C, T, *size)


def block_mean(x: torch.Tensor, factors: tuple[int, int, int]) -> torch.Tensor:
    """Average pooling with kernel = stride = ``factors`` over T, H, W, as sums of strided
    slices: the same values as ``avg_pool3d``, which has no bf16 CPU kernel, and as a
    reshape-and-mean, which copies a channels-last tensor.
    Slices keep the input's memory layout, and export to ONNX."""
    for dim, f in zip((2, 3, 4), factors):
        if f > 1:
            end = x.shape[dim] // f * f
            parts = [x[(slice(None),) * dim + (slice(j, end, f),)] for j in range(f)]
            x = sum(parts[1:], parts[0])
    return x * (1.0 / (factors[0] * factors[1] * factors[2]))


def box_sum3(x: torch.Tensor) -> torch.Tensor:
    """Σ over each position's 3×3×3 neighbourhood, zeros beyond the borders: the sums of
    ``avg_pool3d(kernel 3, stride 1, padding 1)``, as a depthwise convolution with a
    kernel of ones. It keeps the input's memory layout, runs on oneDNN's convolution
    kernels (ahead of a shifted-add form and of ``avg_pool3d`` on the CPU), and accepts
    maps smaller than the window."""
    c = x.shape[1]
    ones = torch.ones(c, 1, 3, 3, 3, dtype=x.dtype, device=x.device).contiguous(memory_format=memory_format(x))
    return F.conv3d(x, ones, padding=1, groups=c)


class GlobalMean(nn.Module):
    """Global average over T×H×W. Same as AdaptiveAvgPool3d(1), but it exports to ONNX."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4), keepdim=True)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling [28] on a 3-D feature map.

    A 1×1×1 reduction to ``cout`` channels, then parallel branches (1×1×1, one (1,3,3)
    atrous convolution per rate, and global average pooling + 1×1×1 convolution)
    concatenated and projected back to ``cout``.
    """

    def __init__(self, cin: int, cout: int, rates: Sequence[int], bn_momentum: float = 0.1):
        super().__init__()
        bn = lambda c: nn.BatchNorm3d(c, momentum=bn_momentum)  # noqa: E731
        self.reduce = ConvBNReLU(cin, cout, 1, bn_momentum)
        self.branches = nn.ModuleList([ConvBNReLU(cout, cout, 1, bn_momentum)])
        for r in rates:
            self.branches.append(nn.Sequential(
                nn.Conv3d(cout, cout, (1, 3, 3), padding=(0, r, r), dilation=(1, r, r), bias=False),
                bn(cout), nn.ReLU(inplace=True)))
        # No BatchNorm (batch size 1 must train) and no ReLU (without BN it can start dead);
        # the projection's BN + ReLU follows the concatenation anyway.
        self.pool = nn.Sequential(GlobalMean(), nn.Conv3d(cout, cout, 1))
        self.project = ConvBNReLU(cout * (len(rates) + 2), cout, 1, bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        outs = [b(x) for b in self.branches]
        outs.append(spread_like(self.pool(x), x))
        return self.project(torch.cat(outs, 1))


class LIP(nn.Module):
    """Local importance-based pooling [29]: ``avgpool(x·w) / avgpool(w)``, w = exp(logit).

    Stride 1 (3×3×3 window), so X^i keeps its encoder block's resolution and any H, W
    divisible by 32 works. As in LIP, the logit is ``12·sigmoid(z)``; we subtract 12
    before ``exp`` (the ratio is unchanged) so the weights lie in [e⁻¹², 1] and cannot
    overflow in bf16/fp16.
    """

    def __init__(self, channels: int, bn_momentum: float = 0.1):
        super().__init__()
        self.logit = nn.Sequential(nn.Conv3d(channels, channels, 1, bias=False),
                                   nn.BatchNorm3d(channels, momentum=bn_momentum))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # avgpool(x·w)/avgpool(w) over 3×3×3 windows is a ratio of two window sums (the
        # divisor cancels), computed in float32: bf16 sums would cost the ratio its
        # precision. Zeros beyond the borders add nothing to either sum. x · w is float32
        # by type promotion, without a float32 copy of x first.
        w = torch.exp(12.0 * (torch.sigmoid(self.logit(x).float()) - 1.0))
        return (box_sum3(x * w) / box_sum3(w)).to(x.dtype)


#: MS's three inputs, Eq. 8's h, m, l: the finer neighbour, the scale itself, the coarser
#: neighbour. They key its modules ("0" is h's) as model files store them; the code names
#: the roles, so no index arithmetic runs against the model's own X⁰ (coarsest) … X³ order.
H, M, L = 0, 1, 2
_COARSER = {H: M, M: L}
_FINER = {M: H, L: M}


class MS(nn.Module):
    """Multi-scale feature Synergy, Eq. 8–12: X̂ᵐ = MS(Xʰ, Xᵐ, Xˡ).

    ``widths`` are the channel counts of (Xʰ, Xᵐ, Xˡ); ``None`` marks a missing
    neighbour (X³ has no higher-resolution neighbour, X⁰ no lower one). Terms of
    Eq. 10–11 that would need a missing neighbour are dropped. 𝒰 = trilinear upsampling
    then convolution, 𝒟 = block mean (average pooling, kernel = stride = the scales'
    ratio; :func:`resize_to`) then convolution, 𝒞 = convolution; each convolution maps
    to the channel count of the scale it produces, so scales of different widths combine.
    """

    def __init__(self, widths: tuple[int | None, int, int | None], bn_momentum: float = 0.1):
        super().__init__()
        conv = lambda a, b: ConvBNReLU(a, b, 3, bn_momentum)  # noqa: E731
        self.levels = [i for i in (H, M, L) if widths[i] is not None]
        w = widths
        # Eq. 9: X₁ⁱ = 𝒞(Xⁱ)
        self.c1 = nn.ModuleDict({str(i): conv(w[i], w[i]) for i in self.levels})
        # Eq. 10: X₂ⁱ = 𝒰(X₁^{i_low}) + 𝒞(X₁ⁱ) + 𝒟(X₁^{i_high})
        self.c2 = nn.ModuleDict({str(i): conv(w[i], w[i]) for i in self.levels})
        self.u2 = nn.ModuleDict({str(i): conv(w[_COARSER[i]], w[i]) for i in self.levels
                                 if _COARSER.get(i) in self.levels})
        self.d2 = nn.ModuleDict({str(i): conv(w[_FINER[i]], w[i]) for i in self.levels if _FINER.get(i) in self.levels})
        # Eq. 11: X₃ᵐ = 𝒟(X₂ʰ) + 𝒞(X₂ᵐ) + 𝒰(X₂ˡ)
        self.c3 = conv(w[M], w[M])
        self.d3 = conv(w[H], w[M]) if w[H] is not None else None
        self.u3 = conv(w[L], w[M]) if w[L] is not None else None

    def forward(self, xh: torch.Tensor | None, xm: torch.Tensor, xl: torch.Tensor | None) -> torch.Tensor:
        xs = {H: xh, M: xm, L: xl}
        x1 = {i: self.c1[str(i)](xs[i]) for i in self.levels}
        x2 = {}
        for i in self.levels:
            y = self.c2[str(i)](x1[i])
            if str(i) in self.u2:
                y = y + self.u2[str(i)](resize_to(x1[_COARSER[i]], x1[i]))
            if str(i) in self.d2:
                y = y + self.d2[str(i)](resize_to(x1[_FINER[i]], x1[i]))
            x2[i] = y
        x3 = self.c3(x2[M])
        if self.d3 is not None:
            x3 = x3 + self.d3(resize_to(x2[H], xm))
        if self.u3 is not None:
            x3 = x3 + self.u3(resize_to(x2[L], xm))
        return x3 + xm  # Eq. 12


class MRG(nn.Module):
    """Multi-scale Regulator Gate, Eq. 13–15.

    F̂ = UpSample(F_av^{l-1}) (Eq. 13); G = GAP(σ(Conv(Cat(F̂, X̂ˡ)))) (Eq. 14), one gate
    per channel of F̂; F_gated = Conv(G ⊙ F̂) (Eq. 15), mapped to X̂ˡ's width. The gate's
    convolution is 1×1×1, a choice: the paper gives no kernel size, and a larger kernel
    would not be equivalent, because the sigmoid comes before the average (σ of a wider
    convolution, then GAP, is another gate, not the same gate computed more slowly).
    """

    def __init__(self, fav_channels: int, x_channels: int, bn_momentum: float = 0.1):
        super().__init__()
        self.gate = nn.Conv3d(fav_channels + x_channels, fav_channels, 1)
        self.out = ConvBNReLU(fav_channels, x_channels, 3, bn_momentum)

    def forward(self, fav: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        f = resize_to(fav, x)
        g = torch.sigmoid(self.gate(torch.cat([f, x], 1))).mean(dim=(2, 3, 4), keepdim=True)
        return self.out(g * f)
