"""Parameter counts and FLOPs of a config, measured without running the network.

The model is built on PyTorch's ``meta`` device and traced once under
``torch.utils.flop_counter.FlopCounterMode``: shapes propagate, no arithmetic happens,
so paper-size figures cost a fraction of a second. FLOPs are PyTorch's count of
convolutions and matrix products (2 × multiply-accumulates); pooling, normalisation and
element-wise operations are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .models import AVRSPConfig, create_model


@dataclass
class ModelInfo:
    config: AVRSPConfig
    params: dict[str, int]          # top-level component → parameter count
    gflops: dict[str, float]        # top-level component → GFLOPs per window

    @property
    def total_params(self) -> int:
        return sum(self.params.values())

    @property
    def total_gflops(self) -> float:
        return sum(self.gflops.values())


def measure(config: AVRSPConfig, batch: int = 1) -> ModelInfo:
    """Parameters and GFLOPs per window (``batch`` windows of the config's size) by component."""
    with torch.device("meta"):
        model = create_model(config).eval()
        clip = torch.empty(batch, 3, config.frames, config.height, config.width)
        audio = torch.empty(batch, 1, config.audio_samples)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(clip, audio)
    per_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__
    params, gflops = {}, {}
    for name, module in model.named_children():
        params[name] = sum(p.numel() for p in module.parameters())
        gflops[name] = _component_flops(per_module, f"{root}.{name}") / 1e9 / batch
    return ModelInfo(config, params, gflops)


def _component_flops(per_module: dict[str, int], key: str) -> int:
    """FLOPs under ``key``. Containers (ModuleList/ModuleDict) are never called, so the
    counter only knows their children: sum those instead."""
    if key in per_module:
        return per_module[key]
    children = [k for k in per_module if k.startswith(key + ".")]
    return sum(per_module[k] for k in children if "." not in k[len(key) + 1:])
