"""Optimizer and learning-rate scheduler selectors."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from toolbox.utils import ECGError

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, momentum, weight_decay: torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0),
    "adam": lambda params, lr, momentum, weight_decay: torch.optim.Adam(
        params, lr=lr, weight_decay=weight_decay),
    "adamw": lambda params, lr, momentum, weight_decay: torch.optim.AdamW(
        params, lr=lr, weight_decay=weight_decay),
}


def get_optimizer(name: str, model: nn.Module, lr: float, momentum: float,
                  weight_decay: float) -> torch.optim.Optimizer:
    """Optimizer ``name`` over the model's parameters (``momentum`` is used by sgd only)."""
    if name not in OPTIMIZERS:
        raise ECGError(f"unknown optimizer '{name}'; valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](model.parameters(), lr, momentum, weight_decay)


SCHEDULERS: dict[str, Callable[..., Any]] = {
    "StepLR": lambda opt, epochs, steps, step, decay, lr: lr_scheduler.StepLR(opt, step_size=step, gamma=decay),
    "ExponentialLR": lambda opt, epochs, steps, step, decay, lr: lr_scheduler.ExponentialLR(opt, gamma=decay),
    "ReduceLROnPlateau": lambda opt, epochs, steps, step, decay, lr: lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=decay, patience=step),
    "CosineAnnealingLR": lambda opt, epochs, steps, step, decay, lr: lr_scheduler.CosineAnnealingLR(
        opt, T_max=epochs),
    "OneCycleLR": lambda opt, epochs, steps, step, decay, lr: lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps),
    "none": lambda opt, epochs, steps, step, decay, lr: None,
}
# Schedulers stepped after every batch rather than every epoch.
PER_BATCH = {"OneCycleLR"}


def get_scheduler(name: str, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int,
                  step: int, decay: float, lr: float) -> Any:
    """Scheduler ``name``: ``step`` is StepLR's step size and the plateau patience, ``decay`` the factor."""
    if name not in SCHEDULERS:
        raise ECGError(f"unknown scheduler '{name}'; valid: {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name](optimizer, epochs, steps_per_epoch, step, decay, lr)


def step_epoch(scheduler: Any, val_score: float) -> None:
    """Advance an epoch-wise scheduler once an epoch ends (plateau schedulers watch ``val_score``)."""
    if scheduler is None or type(scheduler).__name__ in PER_BATCH:
        return
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_score)
    else:
        scheduler.step()


def set_hyperparameters(optimizer: torch.optim.Optimizer, scheduler: Any, values: dict[str, Any]) -> None:
    """Change a restored optimizer's and scheduler's settings (``--override`` on resume): ``lr``,
    ``weight_decay``, ``momentum``, ``lr_decay`` (StepLR and ExponentialLR gamma, plateau factor) and
    ``step`` (StepLR step size, plateau patience). Other keys are ignored."""
    for group in optimizer.param_groups:
        for key in ("lr", "weight_decay", "momentum"):
            if key in values:
                group[key] = values[key]
    if "lr" in values and scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [values["lr"]] * len(optimizer.param_groups)
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
        scheduler.factor = values.get("lr_decay", scheduler.factor)
        scheduler.patience = values.get("step", scheduler.patience)
    elif isinstance(scheduler, lr_scheduler.StepLR | lr_scheduler.ExponentialLR):
        scheduler.gamma = values.get("lr_decay", scheduler.gamma)
        if isinstance(scheduler, lr_scheduler.StepLR):
            scheduler.step_size = values.get("step", scheduler.step_size)
