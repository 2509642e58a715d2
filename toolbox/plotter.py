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
