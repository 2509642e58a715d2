"""InceptionTime (Fawaz et al. 2020) in one dimension, as the PTB-XL benchmark configures it.

As in helme/ecg_ptbxl_benchmarking ``code/models/inception1d.py`` (``kernel_size=40``): six inception blocks,
each a 1x1 bottleneck (32) feeding convolutions of 39, 19 and 9 samples (32 filters each) beside a
max-pool-then-1x1 branch (32), concatenated (128 channels), batch-normed and ReLU'd; every third block adds a
1x1 conv-BN shortcut from the input of its group of three. The benchmark head follows.
"""
from __future__ import annotations

import torch
from torch import nn

from models.heads import benchmark_init, pooled_head


def _conv(cin: int, cout: int, k: int) -> nn.Conv1d:
    return nn.Conv1d(cin, cout, k, padding=(k - 1) // 2, bias=False)


class InceptionBlock(nn.Module):
    """Bottleneck, parallel wide convolutions and a pooled 1x1 branch, concatenated, then BN and ReLU."""

    def __init__(self, cin: int, filters: int, kernel_sizes: tuple[int, ...], bottleneck: int) -> None:
        super().__init__()
        self.bottleneck = _conv(cin, bottleneck, 1)
        self.convs = nn.ModuleList(_conv(bottleneck, filters, k) for k in kernel_sizes)
        self.pool_branch = nn.Sequential(nn.MaxPool1d(3, stride=1, padding=1), _conv(cin, filters, 1))
        self.bn_relu = nn.Sequential(nn.BatchNorm1d(filters * (len(kernel_sizes) + 1)), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bottleneck(x)
        return self.bn_relu(torch.cat([conv(b) for conv in self.convs] + [self.pool_branch(x)], dim=1))


class Inception1d(nn.Module):
    """``depth`` inception blocks with a residual shortcut over every three, the benchmark head."""

    def __init__(self, in_channels: int, num_classes: int, kernel_size: int = 40, depth: int = 6,
                 filters: int = 32, bottleneck: int = 32, residual: bool = True, head_hidden: tuple[int, ...] = (128,),
                 dropout: float = 0.5) -> None:
        super().__init__()
        # 40 -> 39, 19, 9: odd widths keep 'same' padding exact
        kernel_sizes = tuple(k - 1 if k % 2 == 0 else k for k in (kernel_size, kernel_size // 2, kernel_size // 4))
        channels = filters * (len(kernel_sizes) + 1)
        self.blocks = nn.ModuleList(InceptionBlock(in_channels if d == 0 else channels, filters, kernel_sizes,
                                                   bottleneck) for d in range(depth))
        self.shortcuts = nn.ModuleList(
            nn.Sequential(_conv(in_channels if g == 0 else channels, channels, 1), nn.BatchNorm1d(channels))
            for g in range(depth // 3)) if residual else nn.ModuleList()
        self.relu = nn.ReLU(inplace=True)
        self.head = pooled_head(channels, num_classes, head_hidden, dropout)
        benchmark_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        group_input = x
        for d, block in enumerate(self.blocks):
            x = block(x)
            if d % 3 == 2 and d // 3 < len(self.shortcuts):
                x = self.relu(x + self.shortcuts[d // 3](group_input))
                group_input = x
        return self.head(x)
