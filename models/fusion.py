"""Per-example features (such as RR intervals) joined with what a signal network makes of the signal."""
from __future__ import annotations

import torch
from torch import nn


class FeatureFusion(nn.Module):
    """Input (batch, signal + ``features`` channels, samples), the last channels constant along time.

    The signal channels go through ``backbone`` (any model here, built with ``hidden`` outputs); the features
    are read at sample 0, batch-normalised and joined with the backbone's output, and a small head gives logits.
    This gives the features a direct path to the decision, instead of through the convolutions.
    """

    def __init__(self, backbone: nn.Module, hidden: int, features: int, num_classes: int,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.backbone = backbone
        self.features = features
        self.norm = nn.BatchNorm1d(features)
        self.head = nn.Sequential(nn.Linear(hidden + features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        signal, extra = x[:, : -self.features], x[:, -self.features:, 0]
        z = torch.relu(self.backbone(signal))
        return self.head(torch.cat([z, self.norm(extra)], dim=1))
