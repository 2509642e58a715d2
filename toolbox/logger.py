"""Per-epoch metrics: logger.json always, TensorBoard scalars when asked for."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolbox.utils import atomic_write, read_json, write_json

SCALARS = ("loss", "accuracy", "macro_f1", "macro_auroc", "macro_auprc", "challenge")


class RunLogger:
    """Appends one record per epoch and split to ``logger.json``; mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool, start_epoch: int = 0) -> None:
        self.path = run_dir / "logger.json"
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
        if self.path.is_file():  # resuming: keep the epochs before the one we restart from
            old = read_json(self.path)
            self.history = {k: [r for r in old.get(k, []) if r["epoch"] <= start_epoch] for k in self.history}
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_epoch + 1)

    def log_epoch(self, epoch: int, split: str, metrics: dict[str, Any]) -> None:
        """Record ``metrics`` (numbers only) of 1-based ``epoch`` for ``split`` and save logger.json."""
        self.history[split].append({"epoch": epoch, **metrics})
        write_json(self.path, self.history)
        if self.writer is not None:
            for key in SCALARS:
                if key in metrics:
                    self.writer.add_scalar(f"{key}/{split}", metrics[key], epoch)
            if "lr" in metrics:
                self.writer.add_scalar("lr", metrics["lr"], epoch)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def save_predictions(path: Path, probs: np.ndarray, targets: np.ndarray, classes: list[str],
                     meta: dict[str, np.ndarray]) -> None:
    """CSV of one split's predictions: index, per-example meta (record, sample), target, pred, probabilities."""
    table = pd.DataFrame({"index": np.arange(len(targets)), **{k: v[: len(targets)] for k, v in meta.items()},
                          "target": targets, "pred": probs.argmax(axis=1)})
    for k, c in enumerate(classes):
        table[f"p_{c}"] = probs[:, k].round(6)
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def save_multilabel_predictions(path: Path, probs: np.ndarray, targets: np.ndarray, classes: list[str],
                                records: np.ndarray, thresholds: np.ndarray) -> None:
    """CSV of one split's per-record predictions: record, then per class the target, decision and probability."""
    table = pd.DataFrame({"record": records[: len(targets)]})
    outputs = probs >= np.asarray(thresholds)[None, :]
    for k, c in enumerate(classes):
        table[f"y_{c}"] = targets[:, k].astype(int)
        table[f"pred_{c}"] = outputs[:, k].astype(int)
        table[f"p_{c}"] = probs[:, k].round(6)
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
