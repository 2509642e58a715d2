"""One-dimensional xresnet (He et al. 2019, "Bag of tricks") as the PTB-XL benchmark configures it.

As in helme/ecg_ptbxl_benchmarking ``code/models/xresnet1d.py`` with ``kernel_size=5``: a stem of three
conv-BN-ReLU layers (32, 32, 64 channels, the first with stride 2) and a max-pool, then bottleneck blocks
(1x1 to 64, k-wide conv with the stage's stride, 1x1 to 256) whose shortcut average-pools before any 1x1
convolution. Every stage keeps 64 bottleneck channels (256 outputs), unlike the 64-512 of image xresnets.
With ``se_reduction`` each block's branch ends in squeeze-and-excitation (Hu et al. 2018) before the addition.
"""
from __future__ import annotations

import torch
from torch import nn

from models.heads import benchmark_init, pooled_head


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv1d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=False),
                               nn.BatchNorm1d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Channel gates from the time-averaged features: linear (C/r), ReLU, linear (C), sigmoid; x times gates."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels),
                                  nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=2)).unsqueeze(2)


class Bottleneck(nn.Module):
    """1x1 reduce, k-wide conv (stride), 1x1 expand, optional SE; shortcut avg-pool (stride 2) and 1x1 conv-BN
    (width change); ReLU after the sum."""

    def __init__(self, cin: int, width: int, cout: int, stride: int, kernel_size: int, se_reduction: int) -> None:
        super().__init__()
        branch = [_conv_bn(cin, width, 1), _conv_bn(width, width, kernel_size, stride),
                  _conv_bn(width, cout, 1, relu=False)]
        if se_reduction:
            branch.append(SqueezeExcite(cout, se_reduction))
        self.branch = nn.Sequential(*branch)
        shortcut: list[nn.Module] = [nn.AvgPool1d(2, ceil_mode=True)] if stride > 1 else []
        if cin != cout:
            shortcut.append(_conv_bn(cin, cout, 1, relu=False))
        self.shortcut = nn.Sequential(*shortcut)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.branch(x) + self.shortcut(x))


class XResNet1d(nn.Module):
    """Stem, ``len(blocks)`` stages of bottleneck blocks (stride 2 from the second stage), the benchmark head."""

    def __init__(self, in_channels: int, num_classes: int, blocks: tuple[int, ...] = (3, 4, 6, 3),
                 kernel_size: int = 5, stem: tuple[int, ...] = (32, 32, 64), width: int = 64, expansion: int = 4,
                 se_reduction: int = 0, head_hidden: tuple[int, ...] = (128,), dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, w in enumerate(stem):
            layers.append(_conv_bn(prev, w, kernel_size, stride=2 if i == 0 else 1))
            prev = w
        layers.append(nn.MaxPool1d(3, stride=2, padding=1))
        cout = width * expansion
        for i, n in enumerate(blocks):
            for j in range(n):
                layers.append(Bottleneck(prev, width, cout, 2 if i > 0 and j == 0 else 1, kernel_size, se_reduction))
                prev = cout
        self.features = nn.Sequential(*layers)
        self.head = pooled_head(prev, num_classes, head_hidden, dropout)
        benchmark_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
