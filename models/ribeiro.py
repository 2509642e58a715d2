"""Residual network for twelve-lead ECGs in the style of Ribeiro et al. (2020, Nature Communications 11:1760).

A stem convolution, then residual units that each downsample by 4 and widen the signal; the skip path
(max-pool, then a 1x1 convolution when the width changes) carries the block's pre-activation sum, and
batch norm, ReLU and dropout follow the addition. Two departures from the paper, both for inputs of any
length: an odd kernel (17 rather than 16) keeps 'same' padding exact, and global average pooling replaces
the flatten before the linear layer.
"""
from __future__ import annotations

import torch
from torch import nn


class ResidualUnit(nn.Module):
    """conv-BN-ReLU-dropout-conv(stride) plus the downsampled skip stream; returns (activated, skip stream)."""

    def __init__(self, cin: int, cout: int, downsample: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(cin, cout, kernel_size, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, kernel_size, stride=downsample, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.drop = nn.Dropout(dropout)
        self.relu = nn.ReLU(inplace=True)
        skip: list[nn.Module] = [nn.MaxPool1d(downsample, ceil_mode=True)] if downsample > 1 else []
        if cin != cout:
            skip.append(nn.Conv1d(cin, cout, 1, bias=False))
        self.skip = nn.Sequential(*skip)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.skip(y)
        x = self.drop(self.relu(self.bn1(self.conv1(x))))
        y = self.conv2(x) + y
        return self.drop(self.relu(self.bn2(y))), y


class RibeiroResNet(nn.Module):
    """Stem (conv-BN-ReLU) and ``len(widths) - 1`` residual units downsampling by ``downsample``; linear logits."""

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...] = (64, 128, 196, 256, 320),
                 downsample: int = 4, kernel_size: int = 17, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(in_channels, widths[0], kernel_size, padding=kernel_size // 2,
                                            bias=False), nn.BatchNorm1d(widths[0]), nn.ReLU(inplace=True))
        self.units = nn.ModuleList(ResidualUnit(a, b, downsample, kernel_size, dropout)
                                   for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(widths[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = y = self.stem(x)
        for unit in self.units:
            x, y = unit(x, y)
        return self.head(x)
