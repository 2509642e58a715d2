"""Training-time augmentation of signal batches (batch, leads, samples), drawn from torch's global generator.

Every transform scales its strength by each example's own standard deviation, so the same settings suit
min-max scaled beats and records in mV. Only the first ``signal_channels`` channels are changed: channels after
them (such as RR-interval features) are per-example numbers, not signal.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from toolbox.utils import ECGError

MAX_SCALE = 0.2  # amplitude factor drawn from [1 - MAX_SCALE, 1 + MAX_SCALE]
MAX_NOISE = 0.05  # Gaussian noise sd up to this fraction of the example's sd
MAX_WANDER = 0.1  # sinusoid amplitude up to this fraction of the example's sd ...
WANDER_CYCLES = (0.1, 1.0)  # ... with this many cycles over the example (slow baseline drift)
MAX_SHIFT = 0.05  # delay or advance by up to this fraction of the length, zero-filled


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
    """``n`` draws from U(lo, hi), shaped (n, 1, 1) to broadcast over leads and samples."""
    return lo + (hi - lo) * torch.rand(n, 1, 1, device=like.device, dtype=like.dtype)


def _sd(x: torch.Tensor) -> torch.Tensor:
    return x.std(dim=(1, 2), keepdim=True).clamp_min(1e-6)


def scale(x: torch.Tensor) -> torch.Tensor:
    """Multiply each example by a factor from [0.8, 1.2]."""
    return x * _uniform(len(x), 1 - MAX_SCALE, 1 + MAX_SCALE, x)


def noise(x: torch.Tensor) -> torch.Tensor:
    """Add white Gaussian noise with an sd of up to 5% of the example's sd."""
    return x + torch.randn_like(x) * _uniform(len(x), 0, MAX_NOISE, x) * _sd(x)


def wander(x: torch.Tensor) -> torch.Tensor:
    """Add a slow sinusoid (0.1 to 1 cycle over the example, random phase) of up to 10% of the example's sd."""
    n, length = len(x), x.shape[-1]
    t = torch.arange(length, device=x.device, dtype=x.dtype) / length
    cycles = _uniform(n, *WANDER_CYCLES, x)
    phase = _uniform(n, 0, 2 * math.pi, x)
    return x + _uniform(n, 0, MAX_WANDER, x) * _sd(x) * torch.sin(2 * math.pi * cycles * t + phase)


def shift(x: torch.Tensor) -> torch.Tensor:
    """Delay or advance each example by up to 5% of its length, filling with zeros."""
    n, length = len(x), x.shape[-1]
    most = max(1, int(MAX_SHIFT * length))
    offset = torch.randint(-most, most + 1, (n, 1, 1), device=x.device)
    src = torch.arange(length, device=x.device).view(1, 1, -1) - offset
    inside = (src >= 0) & (src < length)
    moved = x.gather(2, src.clamp(0, length - 1).expand(n, x.shape[1], length))
    return torch.where(inside, moved, torch.zeros((), dtype=x.dtype, device=x.device))


AUGMENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "scale": scale, "noise": noise, "wander": wander, "shift": shift,
}


class Augmenter:
    """Apply the named augmentations, in ``AUGMENTATIONS`` order, to the first ``signal_channels`` channels."""

    def __init__(self, names: Sequence[str], signal_channels: int) -> None:
        unknown = sorted(set(names) - set(AUGMENTATIONS))
        if unknown:
            raise ECGError(f"unknown augmentation '{unknown[0]}'; valid: {', '.join(AUGMENTATIONS)}")
        self.transforms = [f for name, f in AUGMENTATIONS.items() if name in names]
        self.signal_channels = signal_channels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        signal, features = x[:, : self.signal_channels], x[:, self.signal_channels:]
        for transform in self.transforms:
            signal = transform(signal)
        return torch.cat([signal, features], dim=1) if features.shape[1] else signal
