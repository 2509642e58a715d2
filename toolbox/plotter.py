"""Figures written into run folders (matplotlib, no display needed)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from toolbox.utils import atomic_write  # noqa: E402


def confusion_matrix_png(cm: np.ndarray, classes: Sequence[str], path: Path, *, normalize: bool, title: str) -> None:
    """Save a confusion matrix (rows: true class, columns: predicted), raw counts or row-normalised."""
    cm = np.asarray(cm, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2.5, 1.1 * len(classes) + 2))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="true", title=title)
    threshold = shown.max() / 2 if shown.size else 0
    for i in range(len(classes)):
        for j in range(len(classes)):
            text = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", color="white" if shown[i, j] > threshold else "black")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def multilabel_confusion_png(confusion: dict[str, dict[str, int]], path: Path, *, title: str) -> None:
    """Save per-class TP/FN/FP/TN counts of a multi-label evaluation as one row per class, shaded per row."""
    classes = list(confusion)
    cells = ("tp", "fn", "fp", "tn")
    counts = np.array([[confusion[c][k] for k in cells] for c in classes], dtype=np.float64)
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(classes) + 1.8))
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set(xticks=range(len(cells)), yticks=range(len(classes)), xticklabels=[k.upper() for k in cells],
           yticklabels=classes, title=title)
    for i in range(len(classes)):
        for j in range(len(cells)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                    color="white" if shown[i, j] > 0.5 else "black", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
