"""Audio-visual fusion at the lowest visual scale: RAVF (Section III-B, Eq. 1–7) and the
alternatives of Table V (element-wise addition, multiplication, concatenation, bilinear,
MBT attention bottlenecks [37]).

Every fusion module maps the visual feature X⁰ (B×C×T×H×W) and the audio tokens
(B×Nₐ×C, SoundNet's F_a projected to C channels) to F_av with X⁰'s shape, and returns
``(F_av, relevance)``; ``relevance`` is RAVF's list of per-block Ret_A/Ret_V maps and
``None`` for the other methods.

Fusions are registered (:func:`register_fusion`) by name with their properties; the
config's allowed values, the builder and every "does this model have relevance maps"
question read the registry (:data:`FUSIONS`), so a new fusion is one decorated function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .neck import memory_format, spread_like


@dataclass(frozen=True)
class FusionSpec:
    """A registered fusion: how to build it from the model's settings, and whether its
    forward returns RAVF's relevance maps (Ret_A, Ret_V; Fig. 6)."""

    name: str
    build: Callable[..., nn.Module]
    has_relevance: bool = False


#: name → spec, in Table V's order (RAVF first: the paper's model).
FUSIONS: dict[str, FusionSpec] = {}


def register_fusion(name: str, *, has_relevance: bool = False):
    """Register ``build(dim, heads, layers, mlp_ratio, ret_activation, dropout) → module``."""
    def decorate(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        FUSIONS[name] = FusionSpec(name, build, has_relevance)
        return build
    return decorate


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # B×C×T×H×W → B×N×C


def _untokens(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """B×N×C → ``like``'s B×C×T×H×W in ``like``'s memory layout (for channels-last, the
    tokens' own memory). Viewed through B×T×H×W×C so that every stride is the layout's
    own, batch 1 included: a reshape leaves a size-1 batch an odd stride, and operators
    that read the layout from strides (trilinear upsampling) then fall back to the
    default layout, and every convolution after them converts back."""
    b, c, t_, h, w = like.shape
    return t.reshape(b, t_, h, w, c).permute(0, 4, 1, 2, 3).contiguous(memory_format=memory_format(like))


class RelevanceAwareCrossAttention(nn.Module):
    """Relevance-aware multi-head cross-attention without softmax, Eq. 1–7.

    Eq. 1: V_i = f_vi(X⁰), A_i = f_ai(F_a) for i = q, k, v (six affine maps).
    Eq. 2: Ret_A = V_Q A_Kᵀ / √d_k  (B×h×N_v×N_a) — the retention of audio values.
    Eq. 3: Ret_V = A_Q V_Kᵀ / √d_k  (B×h×N_a×N_v) — the retention of visual values.
    Eq. 4: v2a_attn = Ret_A·A_V + V_V;  Eq. 5: a2v_attn = Ret_V·V_V + A_V.
    Eq. 6: C_weights = Softmax(MLP(Cat(v2a_attn, a2v_attn))) over the h heads.
    Eq. 7: F_av = C_weights · v2a_attn, heads concatenated, then an output projection.

    The two attentions have N_v and N_a tokens; Eq. 6 concatenates each visual token's
    v2a_attn with the audio-token mean of a2v_attn, so the head weights vary per visual
    token. ``ret_activation="none"`` is Eq. 2–3 exactly; ``"sigmoid"`` bounds Ret in
    (0, 1), the range Fig. 6 displays (see docs/architecture.md).
    """

    def __init__(self, dim: int, heads: int, ret_activation: str = "none"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dk = heads, dim // heads
        self.ret_activation = ret_activation
        self.f_vq, self.f_vk, self.f_vv = (nn.Linear(dim, dim) for _ in range(3))
        self.f_aq, self.f_ak, self.f_av = (nn.Linear(dim, dim) for _ in range(3))
        # LayerNorm first: without softmax the a2v sums over N_v tokens have no fixed scale.
        self.head_mlp = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, dim), nn.GELU(),
                                      nn.Linear(dim, heads))
        self.proj = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dk).transpose(1, 2)  # B×h×N×d_k

    def _ret(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        r = q @ k.transpose(-1, -2) / math.sqrt(self.dk)
        return torch.sigmoid(r) if self.ret_activation == "sigmoid" else r

    def forward(self, v: torch.Tensor, a: torch.Tensor):
        vq, vk, vv = self._split(self.f_vq(v)), self._split(self.f_vk(v)), self._split(self.f_vv(v))
        aq, ak, av = self._split(self.f_aq(a)), self._split(self.f_ak(a)), self._split(self.f_av(a))
        ret_a = self._ret(vq, ak)                      # Eq. 2
        ret_v = self._ret(aq, vk)                      # Eq. 3
        v2a = ret_a @ av + vv                          # Eq. 4, B×h×N_v×d_k
        a2v = ret_v @ vv + av                          # Eq. 5, B×h×N_a×d_k
        b, _, nv, _ = v2a.shape
        v2a_cat = v2a.transpose(1, 2).reshape(b, nv, -1)
        a2v_pool = a2v.mean(2).reshape(b, 1, -1).expand(b, nv, -1)
        c_weights = torch.softmax(self.head_mlp(torch.cat([v2a_cat, a2v_pool], -1)), -1)  # Eq. 6
        fav = (c_weights.transpose(1, 2).unsqueeze(-1) * v2a)                             # Eq. 7
        fav = self.proj(fav.transpose(1, 2).reshape(b, nv, -1))
        return fav, ret_a, ret_v


class RAVFBlock(nn.Module):
    """One RAVF block (Fig. 3): cross-attention → residual + LayerNorm → FFN → residual + LayerNorm."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, ret_activation: str, dropout: float = 0.0):
        super().__init__()
        self.attn = RelevanceAwareCrossAttention(dim, heads, ret_activation)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(dim * mlp_ratio, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, v: torch.Tensor, a: torch.Tensor):
        fav, ret_a, ret_v = self.attn(v, a)
        x = self.norm1(v + self.drop(fav))
        x = self.norm2(x + self.drop(self.ffn(x)))
        return x, ret_a, ret_v


class RAVF(nn.Module):
    """Relevance-guided Audio-Visual feature Fusion: N stacked RAVF blocks.

    Each block attends from the current visual tokens to the same audio tokens F_a (the
    paper refines the fused visual stream; it does not describe an audio update).
    With ``return_relevance``, Ret_A is returned as B×h×Nₐ×T×H×W and Ret_V as
    B×h×Nₐ×T×H×W (transposed so both are maps over the visual grid), one dict per block.
    """

    def __init__(self, dim: int, heads: int, layers: int, mlp_ratio: int = 4,
                 ret_activation: str = "none", dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(RAVFBlock(dim, heads, mlp_ratio, ret_activation, dropout)
                                    for _ in range(layers))

    def forward(self, x0: torch.Tensor, a: torch.Tensor, return_relevance: bool = False):
        v = _tokens(x0)
        relevance = [] if return_relevance else None
        t, h, w = x0.shape[-3:]
        for block in self.blocks:
            v, ret_a, ret_v = block(v, a)
            if relevance is not None:
                b, heads, _, na = ret_a.shape
                relevance.append({
                    "ret_a": ret_a.transpose(-1, -2).reshape(b, heads, na, t, h, w).detach(),
                    "ret_v": ret_v.reshape(b, heads, na, t, h, w).detach(),
                })
        return _untokens(v, x0), relevance


class AddFusion(nn.Module):
    """Element-wise addition of the token-averaged audio vector to every visual position."""

    def forward(self, x0, a, return_relevance=False):
        return x0 + a.mean(1)[:, :, None, None, None], None


class MulFusion(nn.Module):
    """Element-wise multiplication of every visual position by the token-averaged audio vector."""

    def forward(self, x0, a, return_relevance=False):
        return x0 * a.mean(1)[:, :, None, None, None], None


class ConcatFusion(nn.Module):
    """Concatenate the audio vector to every visual position, then a 1×1×1 conv + BN + ReLU."""

    def __init__(self, dim: int):
        super().__init__()
        self.fuse = nn.Sequential(nn.Conv3d(2 * dim, dim, 1, bias=False), nn.BatchNorm3d(dim),
                                  nn.ReLU(inplace=True))

    def forward(self, x0, a, return_relevance=False):
        av = spread_like(a.mean(1)[:, :, None, None, None], x0)
        return self.fuse(torch.cat([x0, av], 1)), None


class BilinearFusion(nn.Module):
    """A bilinear form per visual position, f_k = xᵀ W_k a + b_k (``nn.Bilinear``), plus x."""

    def __init__(self, dim: int):
        super().__init__()
        self.bilinear = nn.Bilinear(dim, dim, dim)

    def forward(self, x0, a, return_relevance=False):
        # The audio vector is the same at every position: contract W with it once per
        # sample (B×d×d), so the per-position cost is d² rather than nn.Bilinear's d³.
        w = torch.einsum("kij,bj->bik", self.bilinear.weight, a.mean(1))
        f = _tokens(x0) @ w + self.bilinear.bias
        return x0 + _untokens(f, x0), None


class MBTFusion(nn.Module):
    """Attention bottlenecks for multimodal fusion (MBT [37]).

    ``n_bottleneck`` learned tokens are the only path between modalities. Per layer the
    audio tokens and the bottleneck self-attend (the bottleneck collects audio), then the
    visual tokens and that bottleneck self-attend (vision reads audio, the bottleneck
    collects vision for the next layer). MBT updates both sides in parallel and averages
    the two bottleneck copies; the sequential order lets a single layer carry audio to
    vision and leaves no audio layer whose output is unused (only vision is decoded).
    """

    def __init__(self, dim: int, heads: int, layers: int, mlp_ratio: int = 4, n_bottleneck: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        layer = lambda: nn.TransformerEncoderLayer(  # noqa: E731
            dim, heads, dim * mlp_ratio, dropout, activation="gelu", batch_first=True)
        self.bottleneck = nn.Parameter(torch.randn(1, n_bottleneck, dim) * 0.02)
        self.audio_layers = nn.ModuleList(layer() for _ in range(layers))
        self.visual_layers = nn.ModuleList(layer() for _ in range(layers))

    def forward(self, x0, a, return_relevance=False):
        v = _tokens(x0)
        nb = self.bottleneck.shape[1]
        z = self.bottleneck.expand(v.shape[0], -1, -1).to(v.dtype)
        for la, lv in zip(self.audio_layers, self.visual_layers):
            za = la(torch.cat([a, z], 1))
            a, z = za[:, :-nb], za[:, -nb:]
            zv = lv(torch.cat([v, z], 1))
            v, z = zv[:, :-nb], zv[:, -nb:]
        return _untokens(v, x0), None


@register_fusion("ravf", has_relevance=True)
def _ravf(dim, heads, layers, mlp_ratio, ret_activation, dropout):
    return RAVF(dim, heads, layers, mlp_ratio, ret_activation, dropout)


@register_fusion("add")
def _add(dim, heads, layers, mlp_ratio, ret_activation, dropout):
    return AddFusion()


@register_fusion("mul")
def _mul(dim, heads, layers, mlp_ratio, ret_activation, dropout):
    return MulFusion()


@register_fusion("concat")
def _concat(dim, heads, layers, mlp_ratio, ret_activation, dropout):
    return ConcatFusion(dim)


@register_fusion("bilinear")
def _bilinear(dim, heads, layers, mlp_ratio, ret_activation, dropout):
    return BilinearFusion(dim)


@register_fusion("mbt")
def _mbt(dim, heads, layers, mlp_ratio, ret_activation, dropout):
    return MBTFusion(dim, heads, layers, mlp_ratio, dropout=dropout)


def build_fusion(kind: str, dim: int, heads: int, layers: int, mlp_ratio: int,
                 ret_activation: str, dropout: float) -> nn.Module:
    if kind not in FUSIONS:
        raise ValueError(f"unknown fusion {kind!r}; choose one of {', '.join(FUSIONS)}")
    return FUSIONS[kind].build(dim, heads, layers, mlp_ratio, ret_activation, dropout)
