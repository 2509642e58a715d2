"""One-dimensional residual networks: post-activation (He et al. 2016a) and pre-activation (2016b) blocks."""
from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv1d:
    return nn.Conv1d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus shortcut, then ReLU (the original ResNet block)."""

    def __init__(self, cin: int, cout: int, stride: int, k: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(cin, cout, k, stride), nn.BatchNorm1d(cout), nn.ReLU(inplace=True),
                                  _conv(cout, cout, k), nn.BatchNorm1d(cout))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm1d(cout)))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv plus shortcut (identity mappings, ResNet v2)."""

    def __init__(self, cin: int, cout: int, stride: int, k: int) -> None:
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm1d(cin), nn.ReLU(inplace=True))
        self.body = nn.Sequential(_conv(cin, cout, k, stride), nn.BatchNorm1d(cout), nn.ReLU(inplace=True),
                                  _conv(cout, cout, k))
        self.shortcut = None if stride == 1 and cin == cout else _conv(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pre(x)
        skip = x if self.shortcut is None else self.shortcut(out)
        return self.body(out) + skip


class ResNet1d(nn.Module):
    """Stem convolution, four stages of ``blocks[i]`` residual blocks (stride 2 after the first), linear logits."""

    def __init__(self, in_channels: int, num_classes: int, blocks: tuple[int, ...] = (1, 1, 1, 1),
                 widths: tuple[int, ...] = (32, 64, 128, 256), kernel_size: int = 5, preact: bool = False,
                 dropout: float = 0.2) -> None:
        super().__init__()
        block = PreActBlock if preact else BasicBlock
        stem: list[nn.Module] = [_conv(in_channels, widths[0], 7)]
        if not preact:
            stem += [nn.BatchNorm1d(widths[0]), nn.ReLU(inplace=True)]
        layers: list[nn.Module] = [nn.Sequential(*stem)]
        prev = widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths, strict=False)):
            for j in range(n):
                layers.append(block(prev, w, 2 if i > 0 and j == 0 else 1, kernel_size))
                prev = w
        if preact:
            layers += [nn.BatchNorm1d(prev), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(prev, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
