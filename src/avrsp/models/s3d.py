"""S3D visual backbone [25], laid out like the published Kinetics-400 weights.

The module tree reproduces ``S3D_kinetics400.pt`` (docs/datasets.md) key for key:
``base.<i>`` for i in 0..15, ``SepConv3d`` = ``conv_s``/``bn_s``/``conv_t``/``bn_t``,
``BasicConv3d`` = ``conv``/``bn``, ``Mixed_*`` = ``branch0.0``, ``branch1.{0,1}``,
``branch2.{0,1}``, ``branch3.1``. The classifier (``fc.0``) is not built: AVRSP uses the
four encoder blocks only (Section III-A).
"""

from __future__ import annotations

import torch
from torch import nn

# Inception-v1 branch widths of each Mixed block: (b0, (b1a, b1b), (b2a, b2b), b3).
_MIXED = {
    "3b": (64, (96, 128), (16, 32), 32),
    "3c": (128, (128, 192), (32, 96), 64),
    "4b": (192, (96, 208), (16, 48), 64),
    "4c": (160, (112, 224), (24, 64), 64),
    "4d": (128, (128, 256), (24, 64), 64),
    "4e": (112, (144, 288), (32, 64), 64),
    "4f": (256, (160, 320), (32, 128), 128),
    "5b": (256, (160, 320), (32, 128), 128),
    "5c": (384, (192, 384), (48, 128), 128),
}

# base.<i> slices of the four encoder blocks (docs/datasets.md) and their (T, H, W) strides.
ENCODER_BLOCKS = ((0, 4), (4, 7), (7, 13), (13, 16))
_REDUCTIONS = ((2, 4, 4), (2, 8, 8), (4, 16, 16), (8, 32, 32))


def _bn(channels: int, momentum: float) -> nn.BatchNorm3d:
    # eps 1e-3 is what the published weights were trained with.
    return nn.BatchNorm3d(channels, eps=1e-3, momentum=momentum)


class BasicConv3d(nn.Module):
    """Conv3d (no bias) + BatchNorm3d + ReLU."""

    # BatchNorm on the conv's output, then ReLU: foldable and fusable (models/fold.py)
    conv_bn_relu = (("conv", "bn", "relu"),)

    def __init__(self, cin: int, cout: int, kernel_size=1, stride=1, padding=0, bn_momentum=1e-3):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size, stride, padding, bias=False)
        self.bn = _bn(cout, bn_momentum)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class SepConv3d(nn.Module):
    """S3D's separable 3-D convolution: spatial (1,k,k) then temporal (k,1,1), each + BN + ReLU."""

    conv_bn_relu = (("conv_s", "bn_s", "relu_s"), ("conv_t", "bn_t", "relu_t"))

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bn_momentum: float = 1e-3):
        super().__init__()
        k, s, p = kernel_size, stride, padding
        self.conv_s = nn.Conv3d(cin, cout, (1, k, k), (1, s, s), (0, p, p), bias=False)
        self.bn_s = _bn(cout, bn_momentum)
        self.relu_s = nn.ReLU(inplace=True)
        self.conv_t = nn.Conv3d(cout, cout, (k, 1, 1), (s, 1, 1), (p, 0, 0), bias=False)
        self.bn_t = _bn(cout, bn_momentum)
        self.relu_t = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu_s(self.bn_s(self.conv_s(x)))
        return self.relu_t(self.bn_t(self.conv_t(x)))


class Mixed(nn.Module):
    """An S3D Inception block: four branches concatenated on channels."""

    def __init__(self, cin: int, b0: int, b1: tuple[int, int], b2: tuple[int, int], b3: int,
                 bn_momentum: float = 1e-3):
        super().__init__()
        m = bn_momentum
        self.branch0 = nn.Sequential(BasicConv3d(cin, b0, bn_momentum=m))
        self.branch1 = nn.Sequential(BasicConv3d(cin, b1[0], bn_momentum=m),
                                     SepConv3d(b1[0], b1[1], 3, padding=1, bn_momentum=m))
        self.branch2 = nn.Sequential(BasicConv3d(cin, b2[0], bn_momentum=m),
                                     SepConv3d(b2[0], b2[1], 3, padding=1, bn_momentum=m))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, stride=1, padding=1),
                                     BasicConv3d(cin, b3, bn_momentum=m))
        self.out_channels = b0 + b1[1] + b2[1] + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


def _scaled(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


class S3DBackbone(nn.Module):
    """The four S3D encoder blocks; ``forward`` returns their outputs, highest resolution first.

    ``width`` scales every channel count (1.0 is the published network; other values
    exist for the tiny test/demo configuration and cannot load published weights).
    At a 32×224×384 input the blocks give 192×16×56×96, 480×16×28×48, 832×8×14×24
    and 1024×4×7×12 (docs/datasets.md). Input: RGB in [-1, 1], B×3×T×H×W.
    """

    def __init__(self, width: float = 1.0, bn_momentum: float = 1e-3):
        super().__init__()
        m = bn_momentum
        c = lambda n: _scaled(n, width)  # noqa: E731
        layers: list[nn.Module] = [
            SepConv3d(3, c(64), 7, stride=2, padding=3, bn_momentum=m),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            BasicConv3d(c(64), c(64), bn_momentum=m),
            SepConv3d(c(64), c(192), 3, padding=1, bn_momentum=m),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        ]
        cin = c(192)
        for name in ("3b", "3c", None, "4b", "4c", "4d", "4e", "4f", "pool5", "5b", "5c"):
            if name is None:
                layers.append(nn.MaxPool3d(3, stride=2, padding=1))
            elif name == "pool5":
                layers.append(nn.MaxPool3d(2, stride=2))
            else:
                b0, b1, b2, b3 = _MIXED[name]
                mixed = Mixed(cin, c(b0), (c(b1[0]), c(b1[1])), (c(b2[0]), c(b2[1])), c(b3),
                              bn_momentum=m)
                layers.append(mixed)
                cin = mixed.out_channels
        self.base = nn.Sequential(*layers)
        self.feature_info = [
            {"module": f"base.{end - 1}", "num_chs": self._out_channels(end), "reduction": red}
            for (_, end), red in zip(ENCODER_BLOCKS, _REDUCTIONS)
        ]

    def _out_channels(self, end: int) -> int:
        for layer in reversed(self.base[:end]):
            if isinstance(layer, Mixed):
                return layer.out_channels
            if isinstance(layer, SepConv3d):
                return layer.conv_t.out_channels
        raise AssertionError("unreachable")

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(f["num_chs"] for f in self.feature_info)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for start, end in ENCODER_BLOCKS:
            for layer in self.base[start:end]:
                x = layer(x)
            feats.append(x)
        return feats
