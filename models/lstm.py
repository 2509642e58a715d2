"""Recurrent networks that read the ECG one time step at a time (the leads are the step's features)."""
from __future__ import annotations

import torch
from torch import nn

from models.heads import benchmark_init, mlp_head


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


class BidirectionalLSTM(nn.Module):
    """The PTB-XL benchmark's ``lstm_bidir`` (``RNN1d`` in helme/ecg_ptbxl_benchmarking ``code/models/rnn1d.py``):
    ``num_layers`` bidirectional LSTM layers of ``hidden`` units over the raw samples (no stem), then the mean,
    the maximum and the final state of each direction side by side (6 x hidden) into the benchmark head.

    The final states are the forward direction's at the last step and the backward direction's at the first;
    the reference takes both at the last step, where the backward direction has read one sample.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 256, num_layers: int = 2,
                 head_hidden: tuple[int, ...] = (128,), dropout: float = 0.5) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_channels, hidden, num_layers=num_layers, batch_first=True, bidirectional=True)
        self.head = mlp_head(6 * hidden, num_classes, head_hidden, dropout)
        benchmark_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x.transpose(1, 2))  # (batch, steps, 2 * hidden): forward then backward features
        h = self.lstm.hidden_size
        final = torch.cat([seq[:, -1, :h], seq[:, 0, h:]], dim=1)
        return self.head(torch.cat([seq.mean(dim=1), seq.amax(dim=1), final], dim=1))
