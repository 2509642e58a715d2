"""Criterion selector and class weights. Losses take logits."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toolbox.utils import ECGError

# How strongly rare classes are up-weighted: weight of class c is proportional to n_c ** -power.
BALANCE_POWERS = {"equal": 1.0, "importance": 0.5}


def class_weights(counts: np.ndarray, mode: str) -> torch.Tensor:
    """Per-class weights from class counts: ``equal`` ~ 1/n_c, ``importance`` ~ 1/sqrt(n_c); mean example weight 1."""
    if mode not in BALANCE_POWERS:
        raise ECGError(f"unknown class balance '{mode}'; valid: {', '.join(BALANCE_POWERS)}")
    counts = np.asarray(counts, dtype=np.float64)
    w = np.where(counts > 0, np.maximum(counts, 1.0) ** -BALANCE_POWERS[mode], 0.0)
    w /= (w * counts).sum() / counts.sum()
    return torch.tensor(w, dtype=torch.float32)


def positive_weights(positives: np.ndarray, total: int, mode: str) -> torch.Tensor:
    """Multi-label ``pos_weight``: (negatives / positives) ** power per class (``equal`` 1, ``importance`` 0.5).

    A class without positives (or without negatives) keeps weight 1.
    """
    if mode not in BALANCE_POWERS:
        raise ECGError(f"unknown class balance '{mode}'; valid: {', '.join(BALANCE_POWERS)}")
    pos = np.asarray(positives, dtype=np.float64)
    neg = total - pos
    ratio = np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0)
    return torch.tensor(ratio ** BALANCE_POWERS[mode], dtype=torch.float32)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true) ** gamma, optional class weights.

    ``target``: class indices, or probability rows (as mixup and cutmix make), for which the loss of an example
    is the sum over classes of target_c x the loss of class c, and its weight the sum of target_c x weight_c
    (so a one-hot row gives exactly what its index gives).
    """

    def __init__(self, weight: torch.Tensor | None = None, gamma: float = 2.0) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        if target.dtype.is_floating_point:
            loss = -(target * (1 - logp.exp()) ** self.gamma * logp).sum(dim=1)
            w = target @ self.weight if self.weight is not None else None
        else:
            logp = logp.gather(1, target[:, None]).squeeze(1)
            loss = -((1 - logp.exp()) ** self.gamma) * logp
            w = self.weight[target] if self.weight is not None else None
        if w is not None:
            return (w * loss).sum() / w.sum()
        return loss.mean()


class CrossEntropy(nn.Module):
    """Cross-entropy with optional class weights and label smoothing, on class indices or probability rows.

    Indices go to PyTorch's loss. For probability rows (mixup, cutmix), PyTorch divides a weighted batch by its
    size; here, as for indices, by the sum over examples of their weight (the row times the class weights), so a
    one-hot row gives exactly what its index gives and a mixer does not change the loss's scale.
    """

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not target.dtype.is_floating_point:
            return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.label_smoothing)
        logp = F.log_softmax(logits.float(), dim=1)
        smoothed = target * (1 - self.label_smoothing) + self.label_smoothing / logits.shape[1]
        if self.weight is None:
            return -(smoothed * logp).sum(dim=1).mean()
        return -(smoothed * logp * self.weight).sum() / (target @ self.weight).sum()


CRITERIA: dict[str, Callable[..., nn.Module]] = {
    "crossentropy": lambda weight, label_smoothing=0.0: CrossEntropy(weight=weight, label_smoothing=label_smoothing),
    "focal": lambda weight: FocalLoss(weight=weight),
    "bce": lambda weight: nn.BCEWithLogitsLoss(pos_weight=weight),  # multi-label; weight = per-class pos_weight
}


def get_criterion(name: str, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> nn.Module:
    """Loss ``name`` with optional per-class ``weight`` (for ``bce``: the weight of positive examples).

    ``label_smoothing`` (cross-entropy only) mixes each one-hot target with the uniform distribution.
    """
    if name not in CRITERIA:
        raise ECGError(f"unknown criterion '{name}'; valid: {', '.join(CRITERIA)}")
    if not label_smoothing:
        return CRITERIA[name](weight)
    if name != "crossentropy":
        raise ECGError(f"label smoothing applies to --criterion crossentropy, not {name}")
    return CRITERIA[name](weight, label_smoothing)
