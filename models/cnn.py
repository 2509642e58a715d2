"""Plain convolutional networks: stacked conv-BN-ReLU-pool stages, global average pooling, a linear head."""
from __future__ import annotations

import torch
from torch import nn


class CNN1d(nn.Module):
    """``len(widths)`` convolution stages (kernel 5, max-pool 2), global average pool, linear logits."""

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...] = (32, 64, 128),
                 kernel_size: int = 5, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for w in widths:
            layers += [nn.Conv1d(prev, w, kernel_size, padding=kernel_size // 2, bias=False),
                       nn.BatchNorm1d(w), nn.ReLU(inplace=True), nn.MaxPool1d(2)]
            prev = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(prev, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
