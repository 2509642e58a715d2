"""The time-series baselines of Wang et al. (2017) as the PTB-XL benchmark configures them.

As in helme/ecg_ptbxl_benchmarking: ``resnet1d_wang`` (``code/models/resnet1d.py``) is a kernel-7 stem (128
channels, stride 1, no pooling) and three basic residual blocks of 128 channels (kernels 5 and 3, stride 2 from
the second); ``fcn_wang`` (``code/models/basic_conv1d.py``) is three conv-BN-ReLU layers (128, 256, 128
channels; kernels 8, 5, 3). Both end in the benchmark head. Convolutions pad (k - 1) // 2, as the benchmark's
do, so the kernel-8 layer shortens the signal by one sample.
"""
from __future__ import annotations

import torch
from torch import nn

from models.heads import benchmark_init, pooled_head


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv1d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=False), nn.BatchNorm1d(cout)]


class WangBlock(nn.Module):
    """conv(k1, stride)-BN-ReLU-conv(k2)-BN plus the shortcut (1x1 conv-BN when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, kernel_sizes: tuple[int, int]) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, kernel_sizes[0], stride), nn.ReLU(inplace=True),
                                  *_conv_bn(cout, cout, kernel_sizes[1]))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else nn.Sequential(*_conv_bn(cin, cout, 1, stride)))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet1dWang(nn.Module):
    """Stem conv-BN-ReLU, ``blocks`` residual blocks of ``width`` channels (stride 2 after the first), the head."""

    def __init__(self, in_channels: int, num_classes: int, blocks: int = 3, width: int = 128, stem_kernel: int = 7,
                 kernel_sizes: tuple[int, int] = (5, 3), head_hidden: tuple[int, ...] = (128,),
                 dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(in_channels, width, stem_kernel), nn.ReLU(inplace=True)]
        layers += [WangBlock(width, width, 2 if i > 0 else 1, kernel_sizes) for i in range(blocks)]
        self.features = nn.Sequential(*layers)
        self.head = pooled_head(width, num_classes, head_hidden, dropout)
        benchmark_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FCNWang(nn.Module):
    """Fully convolutional network: one conv-BN-ReLU layer per (width, kernel), no pooling, the head."""

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...] = (128, 256, 128),
                 kernel_sizes: tuple[int, ...] = (8, 5, 3), head_hidden: tuple[int, ...] = (128,),
                 dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for w, k in zip(widths, kernel_sizes, strict=True):
            layers += [*_conv_bn(prev, w, k), nn.ReLU(inplace=True)]
            prev = w
        self.features = nn.Sequential(*layers)
        self.head = pooled_head(prev, num_classes, head_hidden, dropout)
        benchmark_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
