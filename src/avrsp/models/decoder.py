"""Saliency decoder (Section III-D): four blocks of convolution + upsampling."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .neck import ConvBNReLU, resize_to


class SaliencyDecoder(nn.Module):
    """Decode [F_av, X'₁, X'₂, X'₃] (lowest resolution first) to one saliency logit map.

    Block 0 convolves F_av and upsamples it to X'₁'s T×H×W; blocks 1 and 2 convolve the
    concatenation with the skip feature and upsample to the next skip; block 3 convolves
    the concatenation with X'₃, averages over time (one map per clip, whatever T) and
    upsamples to the input's H×W, where a 3×3 convolution gives one channel.
    """

    def __init__(self, widths: Sequence[int], bn_momentum: float = 0.1):
        super().__init__()
        c0, c1, c2, c3 = widths
        self.block0 = ConvBNReLU(c0, c1, 3, bn_momentum)
        self.block1 = ConvBNReLU(2 * c1, c2, 3, bn_momentum)
        self.block2 = ConvBNReLU(2 * c2, c3, 3, bn_momentum)
        self.block3 = ConvBNReLU(2 * c3, c3, 3, bn_momentum)
        self.head = nn.Conv2d(c3, 1, 3, padding=1)

    def forward(self, streams: Sequence[torch.Tensor], out_hw: tuple[int, int]) -> torch.Tensor:
        s0, s1, s2, s3 = streams
        x = resize_to(self.block0(s0), s1)
        x = resize_to(self.block1(torch.cat([x, s1], 1)), s2)
        x = resize_to(self.block2(torch.cat([x, s2], 1)), s3)
        x = self.block3(torch.cat([x, s3], 1))
        # The mean over time and the upsampling in float32, rounded once to the model's
        # dtype for the head: torch's CPU float32 upsampling kernel is faster than its bf16 one.
        up = F.interpolate(mean_frames(x), size=out_hw, mode="bilinear", align_corners=False)
        return self.head(up.to(x.dtype)).squeeze(1)


def mean_frames(x: torch.Tensor) -> torch.Tensor:
    """B×C×T×H×W → its mean over T, B×C×H×W float32, as a sum of frames accumulated in
    float32. Each frame is a slice in the input's layout, so channels-last stays
    channels-last; ``x.mean(2)`` reduces across a strided dimension there, several times
    slower on the CPU, and returns the default layout."""
    total = x[:, :, 0].float()
    for i in range(1, x.shape[2]):
        total = total + x[:, :, i]
    return total * (1.0 / x.shape[2])
