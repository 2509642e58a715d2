"""Figures written into run folders (matplotlib, no display needed)."""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

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


SALIENCY_SMOOTH_S = 0.04  # saliency is drawn as a moving average over this long (per-sample attributions are spiky)


def saliency_png(signal: np.ndarray, saliency: np.ndarray, leads: Sequence[str], path: Path, *, fs: float,
                 title: str, signed: bool, label: str, start_s: float = 0.0, units: str = "") -> None:
    """Save each lead's trace (``signal``: leads x samples at ``fs``) over its ``saliency`` as a colour band, one
    row per lead, labelled by name, on one colour scale for all leads: red raises the explained class, blue lowers
    it when ``signed``; otherwise darker means more. The scale ends at the 99.5th percentile of the smoothed
    magnitudes, so one spike does not wash out the rest."""
    signal, saliency = np.asarray(signal, dtype=np.float64), np.asarray(saliency, dtype=np.float64)
    if signal.shape != saliency.shape or signal.ndim != 2 or len(leads) != len(signal):
        raise ValueError(f"expected a signal and a saliency of the same (leads, samples) shape and one name per "
                         f"lead, got {signal.shape}, {saliency.shape} and {len(leads)} names")
    width = max(1, round(SALIENCY_SMOOTH_S * fs))
    kernel = np.ones(width) / width
    shown = np.stack([np.convolve(s, kernel, mode="same") for s in saliency])
    top = float(np.percentile(np.abs(shown), 99.5)) or float(np.abs(shown).max()) or 1.0
    t = start_s + np.arange(signal.shape[1]) / fs
    edges = (t[0], t[-1] + 1 / fs)
    rows = len(leads)
    lines = [part for line in title.splitlines() for part in textwrap.wrap(line, 150) or [""]]
    margin = 0.3 + 0.17 * len(lines)  # inches above the first lead, for the title
    height = 0.85 * rows + 0.85 + margin
    fig, axes = plt.subplots(rows, 1, figsize=(12, height), sharex=True, squeeze=False)
    fig.subplots_adjust(left=0.1, right=0.9, top=1 - margin / height, bottom=0.55 / height, hspace=0.12)
    for ax, trace, band, name in zip(axes[:, 0], signal, shown, leads, strict=True):
        low, high = trace.min(), trace.max()
        pad = 0.1 * (high - low) or 0.5
        im = ax.imshow(band[None, :], aspect="auto", cmap="RdBu_r" if signed else "Reds",
                       vmin=-top if signed else 0, vmax=top, extent=(*edges, low - pad, high + pad),
                       interpolation="nearest", alpha=0.8)
        ax.plot(t, trace, color="black", linewidth=0.7)
        ax.set_ylim(low - pad, high + pad)
        ax.set_ylabel(textwrap.fill(name, 10), rotation=0, ha="right", va="center", fontsize=10)
        ax.yaxis.set_major_locator(MaxNLocator(3))
        ax.tick_params(axis="y", labelsize=7)
    axes[-1, 0].set_xlabel("time (s)" + (f"; traces in {units}" if units else ""))
    axes[0, 0].set_title("\n".join(lines), fontsize=9, loc="left")
    fig.colorbar(im, cax=fig.add_axes((0.915, 0.25, 0.012, 0.5)), label=label, format="%.2g")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
