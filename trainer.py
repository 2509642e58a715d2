"""One pass over a loader: ``train`` (with optimisation), ``validate`` and ``test`` (without).

Single-label batches carry class indices and are scored from softmax probabilities. Multi-label batches
(``task`` given) carry multi-hot rows and are scored from sigmoid probabilities; evaluation windows of one
record are averaged into one prediction, and decision thresholds are chosen on the validation split only.

Under torchrun every process passes over its share of a loader; the outputs of all processes are gathered
(:func:`gather_batches`) before any score is computed, so every process computes the scores of the whole
split, each example counted exactly once.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from toolbox.distributed import all_finite, gather, world
from toolbox.metrics import (
    MultiLabelTask,
    classification_metrics,
    decision_scores,
    multilabel_metrics,
    select_thresholds,
)
from toolbox.utils import ECGError

# a training batch's (inputs, labels) -> (inputs, targets of the loss): toolbox.augment.Augmenter
Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when ``amp``; nothing on the CPU."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def gather_batches(batches: list[Any]) -> list[Any]:
    """Per-batch results of every process, back in the loader's order: evaluation loaders give process r the
    batches r, r + world, ... (:class:`loaders.dataset.EvaluationShards`), training loaders give every process
    a share of each batch (concatenated here in rank order)."""
    parts = gather(batches)
    if len(parts) == 1:
        return parts[0]
    return [parts[b % len(parts)][b // len(parts)] for b in range(sum(len(p) for p in parts))]


def _batches(loader: DataLoader, max_batches: int | None, desc: str, progress: bool, *, shard: bool = False):
    """The loader's batches, at most ``max_batches`` of them; for an evaluation ``shard`` of several processes,
    those of the first ``max_batches`` batches of the whole loader that fall to this process."""
    rank, size = world()
    if shard and max_batches is not None and size > 1:
        max_batches = len(range(rank, max_batches, size))
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    with tqdm(total=total, desc=desc, unit="batch", leave=False, disable=None if progress else True) as bar:
        for i, batch in enumerate(itertools.islice(loader, total)):
            yield i, batch
            bar.update()


def _probabilities(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def train(model: nn.Module, loader: DataLoader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
          device: torch.device, epoch: int, classes: Sequence[str], *, batch_scheduler: Any = None,
          amp: bool = False, max_batches: int | None = None, progress: bool = True,
          multilabel: bool = False, augment: Augment | None = None) -> dict[str, float]:
    """Train one epoch; returns loss, accuracy (multi-label: exact match at 0.5), macro-F1, learning rate, seconds.

    ``augment`` transforms each training batch on the device before the forward pass: (inputs, labels) ->
    (inputs, the targets of the loss), which mixup and cutmix make soft. The loss is that against those targets;
    accuracy and macro-F1 compare the predictions with the batch's own labels.
    """
    model.train()
    start = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    loss_sum, n, outputs, targets = 0.0, 0, [], []
    for i, (x, y) in _batches(loader, max_batches, f"train {epoch}", progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        goal = y
        if augment is not None:
            x, goal = augment(x, y)
        with _autocast(device, amp):
            logits = model(x)
            loss = criterion(logits.float() if multilabel else logits, goal)
        value = loss.item()
        if not all_finite(value):  # in every process, so that all of them stop here together
            shown = value if not math.isfinite(value) else "not finite in another process"
            raise ECGError(f"the training loss became {shown} at epoch {epoch}, batch {i + 1}; "
                           f"lower --lr (saved checkpoints are unchanged)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        loss_sum += value * len(y)
        n += len(y)
        outputs.append((logits.detach().float() > 0) if multilabel else logits.argmax(dim=1))
        targets.append(y)
    parts = gather((loss_sum, n, torch.cat(outputs).cpu().numpy(), torch.cat(targets).cpu().numpy()))
    loss_sum, n = sum(p[0] for p in parts), sum(p[1] for p in parts)
    out, tgt = np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts])
    if multilabel:
        metrics = decision_scores(tgt, out)
    else:
        metrics = classification_metrics(tgt, out, classes)
    return {"loss": loss_sum / max(n, 1), "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "lr": lr, "seconds": time.perf_counter() - start}


@torch.no_grad()
def _predict(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device, desc: str,
             amp: bool, max_batches: int | None, progress: bool,
             multilabel: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """(mean loss, probabilities, targets) over the loader, per example (multi-label: per record)."""
    model.eval()
    done = []  # per batch: (loss sum, probabilities, targets)
    for _, (x, y) in _batches(loader, max_batches, desc, progress, shard=True):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(x)
        done.append((criterion(logits.float(), y).item() * len(y), _probabilities(logits.float(), multilabel).cpu(),
                     y.cpu()))
    done = gather_batches(done)
    loss_sum, n = sum(d[0] for d in done), sum(len(d[2]) for d in done)
    p, t = torch.cat([d[1] for d in done]).numpy(), torch.cat([d[2] for d in done]).numpy()
    if multilabel:
        p, t = aggregate_windows(p, t, loader.dataset.groups, loader.dataset.aggregate)
    return loss_sum / max(n, 1), p, t


def aggregate_windows(probs: np.ndarray, targets: np.ndarray, groups: np.ndarray,
                      how: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """One row per record: the mean (or max) probabilities of its windows (``groups[i]``: record of window i,
    ascending)."""
    groups = np.asarray(groups)[: len(probs)]
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    if how == "max":
        out = np.full((len(first), probs.shape[1]), -np.inf)
        np.maximum.at(out, inverse, probs)
        return out.astype(np.float32), targets[first]
    sums = np.zeros((len(first), probs.shape[1]))
    np.add.at(sums, inverse, probs)
    return (sums / np.bincount(inverse)[:, None]).astype(np.float32), targets[first]


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, *, amp: bool = False,
            progress: bool = True, multilabel: bool = True) -> np.ndarray:
    """Probabilities without labels or loss: multi-label per record of a record dataset (its windows averaged),
    or single-label (softmax) per example."""
    model.eval()
    probs = []
    for _, (x, _y) in _batches(loader, None, "predict", progress):
        with _autocast(device, amp):
            probs.append(_probabilities(model(x.to(device)).float(), multilabel).cpu())
    p = torch.cat(probs).numpy()
    if not multilabel:
        return p
    return aggregate_windows(p, np.zeros((len(p), 0)), loader.dataset.groups, loader.dataset.aggregate)[0]


def _evaluate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
              classes: Sequence[str], desc: str, amp: bool, max_batches: int | None, progress: bool,
              task: MultiLabelTask | None, thresholds: np.ndarray | None) -> tuple[dict[str, Any], np.ndarray,
                                                                                np.ndarray]:
    start = time.perf_counter()
    loss, p, t = _predict(model, loader, criterion, device, desc, amp, max_batches, progress, task is not None)
    if task is None:
        metrics = classification_metrics(t, p.argmax(axis=1), classes)
    else:
        if thresholds is None:  # validation: choose them here, on these predictions
            thresholds = select_thresholds(t, p, task.objective, weights=task.weights, normal_index=task.normal_index)
        metrics = multilabel_metrics(t, p, thresholds, classes, weights=task.weights, normal_index=task.normal_index)
        metrics["thresholds"] = [float(v) for v in thresholds]
    metrics.update(loss=loss, seconds=time.perf_counter() - start)
    return metrics, p, t


def validate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
             classes: Sequence[str], *, amp: bool = False, max_batches: int | None = None, progress: bool = True,
             task: MultiLabelTask | None = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Evaluate on the validation loader: (metrics, probabilities, targets) in loader order.

    Multi-label: per-record predictions; the decision thresholds are chosen on them (``metrics['thresholds']``).
    """
    return _evaluate(model, loader, criterion, device, classes, "val", amp, max_batches, progress, task, None)


def test(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
         classes: Sequence[str], *, amp: bool = False, max_batches: int | None = None, progress: bool = True,
         task: MultiLabelTask | None = None, thresholds: np.ndarray | None = None) -> tuple[dict[str, Any],
                                                                                          np.ndarray, np.ndarray]:
    """Evaluate on the test loader: (metrics, probabilities, targets) in loader order.

    Multi-label: ``thresholds`` (chosen on validation, from the checkpoint) are required.
    """
    if task is not None and thresholds is None:
        raise ValueError("multi-label testing needs the thresholds chosen on the validation split")
    return _evaluate(model, loader, criterion, device, classes, "test", amp, max_batches, progress, task, thresholds)


# ---- generative models (--task anomaly): the model's own train_step and scores ----

def train_generative(model: nn.Module, loader: DataLoader, optimizers: dict[str, torch.optim.Optimizer],
                     device: torch.device, epoch: int, *, max_batches: int | None = None,
                     progress: bool = True) -> dict[str, float]:
    """Train a generative model one epoch through its ``train_step`` (its losses, its optimisers); returns the
    example-weighted mean of every loss part it reports ("loss" first), the learning rate and seconds."""
    model.train()
    start = time.perf_counter()
    lr = next(iter(optimizers.values())).param_groups[0]["lr"]
    sums: dict[str, float] = {}
    n = 0
    for i, (x, _y) in _batches(loader, max_batches, f"train {epoch}", progress):
        parts = model.train_step(x.to(device, non_blocking=True), optimizers)
        if not math.isfinite(parts["loss"]):
            raise ECGError(f"the training loss became {parts['loss']} at epoch {epoch}, batch {i + 1}; "
                           f"lower --lr (saved checkpoints are unchanged)")
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value * len(x)
        n += len(x)
    return {**{k: v / max(n, 1) for k, v in sums.items()}, "lr": lr, "seconds": time.perf_counter() - start}


def anomaly_scores(model: nn.Module, loader: DataLoader, device: torch.device, *,
                   score: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None, desc: str = "score",
                   max_batches: int | None = None, progress: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every anomaly score (higher = more abnormal) per example, and the examples' labels; ``score`` (a batch ->
    named per-example scores) defaults to the model's own ``scores``."""
    model.eval()
    score = score or model.scores
    done: list[tuple[dict[str, torch.Tensor], torch.Tensor]] = []
    for _, (x, y) in _batches(loader, max_batches, desc, progress, shard=True):
        with torch.no_grad():
            scores = score(x.to(device, non_blocking=True))
        done.append(({k: v.float().cpu() for k, v in scores.items()}, y.cpu()))
    done = gather_batches(done)
    if not done:
        return {}, np.zeros(0, np.int64)
    names = list(done[0][0])
    return ({k: torch.cat([d[0][k] for d in done]).numpy() for k in names},
            torch.cat([d[1] for d in done]).numpy())


def evaluate_pretext(model: nn.Module, loader: DataLoader, device: torch.device, *, seed: int,
                     max_batches: int | None = None, progress: bool = True) -> dict[str, float]:
    """A pretext model's validation scores (its ``evaluate``: "loss" first), example-weighted over the loader, with
    its random draws (masks, views, flips) from ``seed`` so that every epoch is scored on the same draws; the
    global random state is left as it was."""
    model.eval()
    start = time.perf_counter()
    sums: dict[str, float] = {}
    n = 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for _, (x, _y) in _batches(loader, max_batches, "val", progress):
            parts = model.evaluate(x.to(device, non_blocking=True))
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value * len(x)
            n += len(x)
    return {**{k: v / max(n, 1) for k, v in sums.items()}, "seconds": time.perf_counter() - start}
