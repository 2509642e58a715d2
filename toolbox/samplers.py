"""Sampler selector: ``None`` (shuffle) or a class-rebalancing WeightedRandomSampler."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from toolbox.losses import BALANCE_POWERS, class_weights
from toolbox.utils import ECGError


def get_sampler(mode: str | None, labels: torch.Tensor, generator: torch.Generator) -> WeightedRandomSampler | None:
    """Draw ``len(labels)`` examples per epoch with probability ~ n_c ** -power (``equal``: classes drawn equally)."""
    if mode is None:
        return None
    if mode not in BALANCE_POWERS:
        raise ECGError(f"unknown sampler '{mode}'; valid: {', '.join(BALANCE_POWERS)}")
    per_class = class_weights(np.bincount(labels.numpy()), mode).double()
    weights = per_class[labels]
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)
