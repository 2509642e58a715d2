"""The classifier head and weight initialisation of the PTB-XL benchmark (Strodthoff et al. 2021).

The benchmark (helme/ecg_ptbxl_benchmarking, ``create_head1d`` with ``lin_ftrs_head=[128]``, ``ps_head=0.5``)
pools the features by global max and average side by side, then applies batch norm, dropout and a linear layer
per step: to 128 units with ReLU (dropout halved, 0.25), then to the logits (dropout 0.5).
"""
from __future__ import annotations

import torch
from torch import nn


class ConcatPool1d(nn.Module):
    """Global max and average pooling over time, side by side: (batch, C, T) -> (batch, 2C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)


def mlp_head(in_features: int, num_classes: int, hidden: tuple[int, ...] = (128,),
             dropout: float = 0.5) -> nn.Sequential:
    """BN-dropout(p/2)-linear-ReLU per ``hidden`` width, then BN-dropout(p)-linear to the logits."""
    widths = (in_features, *hidden, num_classes)
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        last = i == len(widths) - 2
        layers += [nn.BatchNorm1d(cin), nn.Dropout(dropout if last else dropout / 2), nn.Linear(cin, cout)]
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def pooled_head(channels: int, num_classes: int, hidden: tuple[int, ...] = (128,),
                dropout: float = 0.5) -> nn.Sequential:
    """The benchmark head for a (batch, channels, time) feature map: concat pooling, then :func:`mlp_head`."""
    return nn.Sequential(ConcatPool1d(), mlp_head(2 * channels, num_classes, hidden, dropout))


def benchmark_init(model: nn.Module) -> None:
    """Kaiming-normal convolution and linear weights, zero biases, unit batch-norm scales (the benchmark's
    ``weight_init``, applied before training from scratch); recurrent layers keep PyTorch's initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
