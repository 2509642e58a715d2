"""One pass over a loader: ``train`` (with optimisation), ``validate`` and ``test`` (without)."""
from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from toolbox.metrics import classification_metrics
from toolbox.utils import ECGError


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when ``amp``; nothing on the CPU."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _batches(loader: DataLoader, max_batches: int | None, desc: str, progress: bool):
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    with tqdm(total=total, desc=desc, unit="batch", leave=False, disable=None if progress else True) as bar:
        for i, batch in enumerate(itertools.islice(loader, total)):
            yield i, batch
            bar.update()


def train(model: nn.Module, loader: DataLoader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
          device: torch.device, epoch: int, classes: Sequence[str], *, batch_scheduler: Any = None,
          amp: bool = False, max_batches: int | None = None, progress: bool = True) -> dict[str, float]:
    """Train one epoch; returns loss, accuracy, macro-F1, learning rate and seconds."""
    model.train()
    start = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    loss_sum, n, preds, targets = 0.0, 0, [], []
    for i, (x, y) in _batches(loader, max_batches, f"train {epoch}", progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(x)
            loss = criterion(logits, y)
        value = loss.item()
        if not math.isfinite(value):
            raise ECGError(f"the training loss became {value} at epoch {epoch}, batch {i + 1}; "
                           f"lower --lr (saved checkpoints are unchanged)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        loss_sum += value * len(y)
        n += len(y)
        preds.append(logits.argmax(dim=1).cpu())
        targets.append(y.cpu())
    metrics = classification_metrics(torch.cat(targets).numpy(), torch.cat(preds).numpy(), classes)
    return {"loss": loss_sum / max(n, 1), "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "lr": lr, "seconds": time.perf_counter() - start}


@torch.no_grad()
def _evaluate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
              classes: Sequence[str], desc: str, amp: bool, max_batches: int | None,
              progress: bool) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    model.eval()
    start = time.perf_counter()
    loss_sum, n, probs, targets = 0.0, 0, [], []
    for _, (x, y) in _batches(loader, max_batches, desc, progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(x)
        loss_sum += criterion(logits.float(), y).item() * len(y)
        n += len(y)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        targets.append(y.cpu())
    p, t = torch.cat(probs).numpy(), torch.cat(targets).numpy()
    metrics = classification_metrics(t, p.argmax(axis=1), classes)
    metrics.update(loss=loss_sum / max(n, 1), seconds=time.perf_counter() - start)
    return metrics, p, t


def validate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
             classes: Sequence[str], *, amp: bool = False, max_batches: int | None = None,
             progress: bool = True) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Evaluate on the validation loader: (metrics, probabilities, targets) in loader order."""
    return _evaluate(model, loader, criterion, device, classes, "val", amp, max_batches, progress)


def test(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
         classes: Sequence[str], *, amp: bool = False, max_batches: int | None = None,
         progress: bool = True) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Evaluate on the test loader: (metrics, probabilities, targets) in loader order."""
    return _evaluate(model, loader, criterion, device, classes, "test", amp, max_batches, progress)
