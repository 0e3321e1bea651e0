"""The AVRSP network (Fig. 2) and its config.

Data flow (docs/architecture.md has the equation → code table):

    clip ─ S3D blocks 1–4 ─ ASPP+LIP ─ X³ X² X¹ X⁰      (X⁰ lowest resolution)
                                       │  MS at the paired levels → X̂ˡ
    audio ─ SoundNet8 ─ F_a ─┐         │
                             RAVF(X̂⁰, F_a) = F_av
                             MRG chain F_av → F_gated¹ → F_gated² → F_gated³
    decoder([F_av, X̂¹+F_gated¹, X̂²+F_gated², X̂³+F_gated³]) → σ → B×H×W
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..config import ConfigError
from .decoder import SaliencyDecoder
from .fusion import FUSIONS, build_fusion
from .neck import ASPP, LIP, MRG, MS
from .s3d import S3DBackbone
from .soundnet import SoundNet8

#: The config's allowed fusions: the registry's names (models/fusion.py).
Fusion = Literal[tuple(FUSIONS)]

#: The shortest clip S3D accepts: its time axis must survive strides/pools of 2, 2 and 2.
MIN_FRAMES = 5

#: Levels that carry an MS&MRG pair for each pair count of Table IV (X³ = highest res).
PAIR_LEVELS = {0: (), 1: (3,), 2: (3, 2), 3: (3, 2, 1), 4: (3, 2, 1, 0)}


@dataclass(frozen=True)
class AVRSPConfig:
    """Everything that defines an AVRSP network. Paper values unless noted.

    Input size fields (``frames``, ``height``, ``width``, ``sample_rate``) describe the
    window the model is trained and run on; the network itself accepts any T ≥ 5 and
    any H, W divisible by 32.
    """

    name: str = "avrsp"
    frames: int = 32                    # T, Section IV-B
    height: int = 224
    width: int = 384
    sample_rate: int = 22050            # SoundNet's rate (docs/data.md)
    audio: bool = True                  # Table III "Audio"; False = Ours(V); fusion is then unused
    fusion: Fusion = "ravf"             # Table V
    fusion_layers: int = 2              # N stacked RAVF (or MBT) blocks; the paper does not give N
    heads: int = 8
    mlp_ratio: int = 4
    ret_activation: Literal["none", "sigmoid"] = "none"   # Eq. 2–3 as printed; see architecture.md
    # F_av = X̂⁰ + γ·fusion(X̂⁰, F_a), γ per channel from 0: stage 2 starts as stage 1 (architecture.md)
    fusion_residual: bool = False
    dropout: float = 0.0
    ms: bool = True                     # Table III "MS"
    mrg: bool = True                    # Table III "MRG"
    num_pairs: int = 3                  # Table IV; 3 is the paper's model
    dims: tuple[int, int, int, int] = (256, 128, 64, 32)  # channels of X⁰, X¹, X², X³
    aspp_rates: tuple[int, ...] = (1, 2, 4)
    s3d_width: float = 1.0              # 1.0 = published S3D (loads Kinetics weights)
    # What the S3D weights expect; the model always receives RGB in [-1, 1] and converts.
    visual_norm: Literal["minus_one_one", "kinetics_mean_std"] = "minus_one_one"
    soundnet_width: float = 1.0         # 1.0 = published SoundNet8
    backbone_bn_momentum: float = 1e-3  # published S3D value; fine-tuning keeps its statistics
    bn_momentum: float = 0.1

    @property
    def audio_samples(self) -> int:
        """Length L of the audio buffer for one window: 22050/10 · T (docs/data.md)."""
        return self.sample_rate * self.frames // 10

    @property
    def pair_levels(self) -> tuple[int, ...]:
        return PAIR_LEVELS[self.num_pairs]

    def validate(self) -> None:
        if self.num_pairs not in PAIR_LEVELS:
            raise ConfigError(f"num_pairs must be 0–4, got {self.num_pairs}")
        if self.height % 32 or self.width % 32 or self.height <= 0 or self.width <= 0:
            raise ConfigError(f"height and width must be positive multiples of 32, got "
                              f"{self.height}×{self.width}")
        if self.frames < MIN_FRAMES:
            raise ConfigError(f"frames must be at least {MIN_FRAMES} (S3D reduces time 8×), got {self.frames}")
        if any(d <= 0 for d in self.dims):
            raise ConfigError(f"dims must be positive, got {self.dims}")
        if self.heads <= 0 or self.dims[0] % self.heads:
            raise ConfigError(f"dims[0]={self.dims[0]} must be divisible by heads={self.heads}")
        if self.fusion_layers < 1:
            raise ConfigError(f"fusion_layers must be ≥ 1, got {self.fusion_layers}")
        if not self.aspp_rates or any(r < 1 for r in self.aspp_rates):
            raise ConfigError(f"aspp_rates must be positive integers, got {self.aspp_rates}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.s3d_width <= 0 or self.soundnet_width <= 0:
            raise ConfigError("s3d_width and soundnet_width must be positive")


#: The network's top-level parts, the names ``init.freeze`` and ``init.fixed_bn`` take
#: (the audio parts only exist with ``audio=True``).
PARTS = ("visual", "aspp", "lip", "ms", "mrg", "audio_net", "audio_proj", "fusion", "decoder")


class AVRSP(nn.Module):
    """Relevance-guided audio-visual saliency network (Yu, Sun, Gao, Gabbouj).

    ``forward(clip, audio)``: clip B×3×T×H×W, RGB in [-1, 1]; audio B×1×L at 22 050 Hz
    in SoundNet's [-256, 256] scale (ignored by visual-only configs). Returns B×H×W
    saliency for the clip's last frame: a sigmoid map, each pixel in (0, 1); it is not
    normalised to sum 1 (the loss and the metrics normalise it as each requires).

    As timm's models: ``forward = forward_head(forward_features(clip, audio), size)``;
    :meth:`forward_with_relevance` also returns RAVF's Ret_A / Ret_V (Fig. 6), so that
    ``forward`` always returns one tensor; ``feature_info`` describes X⁰..X³.
    """

    def __init__(self, config: AVRSPConfig):
        super().__init__()
        config.validate()
        self.config = cfg = config
        self.visual = S3DBackbone(cfg.s3d_width, cfg.backbone_bn_momentum)
        # Every list here runs X⁰..X³, coarsest first; S3D gives its blocks finest first.
        block_channels = self.visual.channels[::-1]
        dims = cfg.dims
        m = cfg.bn_momentum
        self.aspp = nn.ModuleList(ASPP(block_channels[i], dims[i], cfg.aspp_rates, m) for i in range(4))
        self.lip = nn.ModuleList(LIP(dims[i], m) for i in range(4))

        levels = cfg.pair_levels
        self.ms = nn.ModuleDict()
        if cfg.ms:
            for lv in levels:
                widths = (dims[lv + 1] if lv < 3 else None, dims[lv], dims[lv - 1] if lv > 0 else None)
                self.ms[str(lv)] = MS(widths, m)
        self.mrg = nn.ModuleDict()
        if cfg.mrg:
            prev = dims[0]
            for lv in sorted(levels):
                self.mrg[str(lv)] = MRG(prev, dims[lv], m)
                prev = dims[lv]

        if cfg.audio:
            self.audio_net = SoundNet8(cfg.soundnet_width)
            self.audio_proj = nn.Linear(self.audio_net.out_channels, dims[0])
            self.fusion = build_fusion(cfg.fusion, dims[0], cfg.heads, cfg.fusion_layers, cfg.mlp_ratio,
                                       cfg.ret_activation, cfg.dropout)
            if cfg.fusion_residual:  # a parameter of the fusion part (freezing, counts, init)
                self.fusion.register_parameter("residual_scale", nn.Parameter(torch.zeros(dims[0])))
        self.decoder = SaliencyDecoder(dims, m)
        #: X⁰..X³ after ASPP and LIP: channels, reduction of height and width against the
        #: clip, and the module that produces each (timm's ``feature_info``).
        self.feature_info = [{"module": f"lip.{i}", "num_chs": dims[i], "reduction": block["reduction"]}
                             for i, block in enumerate(self.visual.feature_info[::-1])]

    def features(self, clip: torch.Tensor) -> list[torch.Tensor]:
        """X⁰..X³ (Section III-A): ASPP + LIP after each S3D encoder block."""
        if self.config.visual_norm == "kinetics_mean_std":
            # torchvision's S3D weights: RGB in [0, 1], then their mean/std (docs/datasets.md).
            mean = clip.new_tensor((0.43216, 0.394666, 0.37645)).view(1, 3, 1, 1, 1)
            std = clip.new_tensor((0.22803, 0.22145, 0.216989)).view(1, 3, 1, 1, 1)
            clip = ((clip + 1) / 2 - mean) / std
        blocks = self.visual(clip)[::-1]
        return [self.lip[i](self.aspp[i](blocks[i])) for i in range(4)]

    def forward(self, clip: torch.Tensor, audio: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(clip, audio), clip.shape[-2:])

    def forward_with_relevance(self, clip: torch.Tensor, audio: torch.Tensor | None = None
                               ) -> tuple[torch.Tensor, list | None]:
        """``(saliency, relevance)``: the saliency of :meth:`forward`, and RAVF's Ret_A /
        Ret_V per fusion layer (``None`` for models without relevance maps,
        :func:`has_relevance`). Called directly, not through ``__call__``: module hooks
        and :func:`avrsp.graph.prepare`'s CUDA graphs see only ``forward``."""
        streams, relevance = self._features(clip, audio, relevance=True)
        return self.forward_head(streams, clip.shape[-2:]), relevance

    def forward_features(self, clip: torch.Tensor, audio: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The decoder's inputs: [F_av (X⁰'s fused features), X'¹, X'², X'³] (Eq. 13–15),
        low to high resolution."""
        return self._features(clip, audio, relevance=False)[0]

    def forward_head(self, streams: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """The decoder and the sigmoid: B×H×W saliency at ``size`` from :meth:`forward_features`."""
        return torch.sigmoid(self.decoder(streams, size))

    def _features(self, clip: torch.Tensor, audio: torch.Tensor | None, *, relevance: bool):
        if clip.dim() != 5 or clip.shape[1] != 3:
            raise ValueError(f"clip must be B×3×T×H×W, got {tuple(clip.shape)}")
        if clip.shape[-1] % 32 or clip.shape[-2] % 32:
            raise ValueError(f"clip height and width must be multiples of 32, got {tuple(clip.shape[-2:])}")
        if clip.shape[2] < MIN_FRAMES:
            raise ValueError(f"clip needs at least {MIN_FRAMES} frames, got {clip.shape[2]}")
        x = self.features(clip)
        # MS modules read the un-enhanced neighbours, so their order does not matter.
        xh = [self.ms[str(i)](x[i + 1] if i < 3 else None, x[i], x[i - 1] if i > 0 else None)
              if str(i) in self.ms else x[i] for i in range(4)]

        ret = None
        if self.config.audio:
            if audio is None:
                raise ValueError(f"model '{self.config.name}' uses audio: pass audio of shape B×1×L")
            if audio.dim() != 3 or audio.shape[1] != 1:
                raise ValueError(f"audio must be B×1×L, got {tuple(audio.shape)}")
            # Each part in its own dtype: graph.prepare keeps SoundNet float32 in a bf16 graph.
            fa = self.audio_net(audio.to(_dtype_of(self.audio_net, audio.dtype))).transpose(1, 2)
            fa = self.audio_proj(fa.to(_dtype_of(self.audio_proj, fa.dtype)))     # B×N_a×C
            fav, ret = self.fusion(xh[0], fa, return_relevance=relevance)
            if self.config.fusion_residual:
                fav = xh[0] + self.fusion.residual_scale.view(1, -1, 1, 1, 1).to(fav.dtype) * fav
        else:
            fav = xh[0]

        # Eq. 13–15 from low to high resolution; X'ˡ = X̂ˡ + F_gatedˡ carries fusion into vision.
        streams = [fav] + xh[1:]
        prev = fav
        for lv in sorted(int(k) for k in self.mrg):
            gated = self.mrg[str(lv)](prev, xh[lv])
            streams[lv] = streams[lv] + gated
            prev = gated
        return streams, ret


def has_relevance(config: AVRSPConfig) -> bool:
    """Whether a model of ``config`` gives RAVF's relevance maps (Ret_A, Ret_V)."""
    return config.audio and FUSIONS[config.fusion].has_relevance


def _dtype_of(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of ``module``'s first parameter, ``default`` if it has none."""
    return next((p.dtype for p in module.parameters()), default)


def to_channels_last_3d(model: nn.Module) -> nn.Module:
    """Store every Conv3d weight channels-last (N×D×H×W×C), in place.

    ``Module.to(memory_format=torch.channels_last_3d)`` refuses a model that also holds
    4-D and 2-D weights (SoundNet's Conv2d, the attention's Linear layers).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)
    return model


def describe(config: AVRSPConfig) -> str:
    """One line naming the ablation switches, for logs and tables."""
    parts = [f"audio={'on' if config.audio else 'off'}"]
    if config.audio:
        parts.append(f"fusion={config.fusion}")
    parts += [f"ms={'on' if config.ms else 'off'}", f"mrg={'on' if config.mrg else 'off'}",
              f"pairs={config.num_pairs}"]
    return " ".join(parts)

