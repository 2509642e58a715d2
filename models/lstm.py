"""Recurrent networks that read the ECG one time step at a time (the leads are the step's features)."""
from __future__ import annotations

import torch
from torch import nn


class LSTMClassifier(nn.Module):
    """``num_layers`` stacked LSTM layers over the time axis; mean and last hidden states -> linear logits.

    A stride-2 convolution first halves the sequence (187 -> 94 steps for a beat) so the recurrence,
    which cannot be parallelised over time, stays affordable on a CPU.
    """

    def __init__(self, in_channels: int, num_classes: int, num_layers: int = 1, hidden: int = 64,
                 stem: int = 32, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(in_channels, stem, 5, stride=2, padding=2, bias=False),
                                  nn.BatchNorm1d(stem), nn.ReLU(inplace=True))
        self.lstm = nn.LSTM(stem, hidden, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(self.stem(x).transpose(1, 2))  # (batch, steps, hidden)
        return self.head(torch.cat([seq.mean(dim=1), seq[:, -1]], dim=1))
