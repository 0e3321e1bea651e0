"""SoundNet8 audio backbone [24], laid out like ``soundnet8_final.pth`` (docs/datasets.md).

conv1..conv7 (kernels 64, 32, 16, 8, 4, 4, 4, all stride 2, with bias), BatchNorm + ReLU
after each, max-pools of 8 after conv1 and conv2 and of 4 after conv5. Kernels are
(K, 1) Conv2d weights over a B×1×L×1 waveform, as in that file; the unused
``conv8_objs``/``conv8_scns`` heads are not built. A 70 560-sample input gives F_a of
shape B×1024×3.
"""

from __future__ import annotations

import torch
from torch import nn

# (out_channels, kernel, padding) of conv1..conv7; pools after conv1, conv2, conv5.
_LAYERS = ((16, 64, 32), (32, 32, 16), (64, 16, 8), (128, 8, 4), (256, 4, 2), (512, 4, 2), (1024, 4, 2))
_POOLS = {1: 8, 2: 8, 5: 4}


class SoundNet8(nn.Module):
    """Waveform B×1×L (22 050 Hz, amplitude in [-256, 256]) → F_a, B×C×L_a.

    ``width`` scales channel counts for the tiny configuration (1.0 = published).
    """

    conv_bn_pairs = tuple((f"conv{i}", f"batchnorm{i}") for i in range(1, len(_LAYERS) + 1))

    def __init__(self, width: float = 1.0):
        super().__init__()
        cin = 1
        for i, (cout, k, p) in enumerate(_LAYERS, start=1):
            cout = max(4, int(round(cout * width)))
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, (k, 1), (2, 1), (p, 0)))
            setattr(self, f"batchnorm{i}", nn.BatchNorm2d(cout))
            cin = cout
        self.out_channels = cin
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def output_length(samples: int) -> int:
        """Number of F_a time steps for an input of ``samples`` samples."""
        n = samples
        for i, (_, k, p) in enumerate(_LAYERS, start=1):
            n = (n + 2 * p - k) // 2 + 1
            if i in _POOLS:
                n //= _POOLS[i]
        return n

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio.unsqueeze(-1)
        for i in range(1, len(_LAYERS) + 1):
            x = self.relu(getattr(self, f"batchnorm{i}")(getattr(self, f"conv{i}")(x)))
            if i in _POOLS:
                x = nn.functional.max_pool2d(x, (_POOLS[i], 1))
        return x.squeeze(-1)
