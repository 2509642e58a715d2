"""Classification metrics (scikit-learn): accuracy next to macro-F1 and per-class scores; multi-label scores."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)


def classification_metrics(targets: np.ndarray, preds: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    labels = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, preds, labels=labels, zero_division=0)
    present = support > 0  # a class absent from the targets does not drag the macro average
    return {
        "accuracy": float(accuracy_score(targets, preds)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,  # mean recall
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {c: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                          "support": int(support[k])} for k, c in enumerate(classes)},
        "confusion_matrix": confusion_matrix(targets, preds, labels=labels).tolist(),
    }


def per_class_table(metrics: dict[str, Any]) -> str:
    """Per-class sensitivity (Se, recall), positive predictivity (+P, precision), F1 and support."""
    lines = [f"{'class':<10} {'Se':>7} {'+P':>7} {'F1':>7} {'support':>8}"]
    for c, m in metrics["per_class"].items():
        lines.append(f"{c:<10} {m['recall']:>7.4f} {m['precision']:>7.4f} {m['f1']:>7.4f} {m['support']:>8d}")
    return "\n".join(lines)


# ---- multi-label (twelve-lead records) ----

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
THRESHOLD_OBJECTIVES = ("f1", "challenge")


@dataclass(frozen=True)
class MultiLabelTask:
    """How a multi-label evaluation is scored: the threshold objective and, for the Challenge, its reward matrix."""

    objective: str = "f1"
    weights: np.ndarray | None = None
    normal_index: int | None = None


def challenge_reward(weights: np.ndarray, labels: np.ndarray, outputs: np.ndarray) -> float:
    """Unnormalised Challenge 2020 reward: each record spreads one unit over |labels OR outputs| pairs.

    The modified confusion matrix A[j, k] counts, per record, 1/|labels ∪ outputs| for every true class j and
    output class k; the reward is sum(weights * A).
    """
    labels, outputs = np.asarray(labels, dtype=np.float64), np.asarray(outputs, dtype=np.float64)
    union = np.maximum(np.logical_or(labels, outputs).sum(axis=1), 1)
    return float((weights * (labels.T @ (outputs / union[:, None]))).sum())


def challenge_metric(weights: np.ndarray, labels: np.ndarray, outputs: np.ndarray, normal_index: int) -> float:
    """Challenge 2020 metric: the reward normalised so that always 'normal' scores 0 and the true labels 1."""
    labels = np.asarray(labels, dtype=bool)
    normal = np.zeros_like(labels)
    normal[:, normal_index] = True
    best, base = challenge_reward(weights, labels, labels), challenge_reward(weights, labels, normal)
    if best == base:
        return float("nan")
    return (challenge_reward(weights, labels, outputs) - base) / (best - base)


def _f1(targets: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per-class F1 of boolean (n, classes) arrays (0 where a class has neither positives nor outputs)."""
    tp = (targets & outputs).sum(0)
    denom = targets.sum(0) + outputs.sum(0)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def decision_scores(targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """Exact-match accuracy and macro F-measure (over classes present in targets or outputs) of boolean decisions."""
    targets, outputs = np.asarray(targets, dtype=bool), np.asarray(outputs, dtype=bool)
    scored = (targets.sum(0) + outputs.sum(0)) > 0
    return {"accuracy": float((targets == outputs).all(axis=1).mean()) if len(targets) else 0.0,
            "macro_f1": float(_f1(targets, outputs)[scored].mean()) if scored.any() else 0.0}


def select_thresholds(targets: np.ndarray, probs: np.ndarray, objective: str = "f1", *,
                      weights: np.ndarray | None = None, normal_index: int | None = None) -> np.ndarray:
    """Per-class decision thresholds chosen on validation data from ``THRESHOLD_GRID``.

    ``f1``: each class's own F1 (classes without positives keep 0.5). ``challenge``: starting from the F1
    thresholds, two rounds of coordinate ascent on the Challenge metric, keeping only strict gains.
    """
    targets = np.asarray(targets, dtype=bool)
    thresholds = np.full(targets.shape[1], 0.5)
    for c in np.flatnonzero(targets.any(axis=0)):
        scores = [_f1(targets[:, [c]], probs[:, [c]] >= t)[0] for t in THRESHOLD_GRID]
        best = np.flatnonzero(np.isclose(scores, max(scores)))
        thresholds[c] = THRESHOLD_GRID[best[np.argmin(np.abs(THRESHOLD_GRID[best] - 0.5))]]  # ties: nearest 0.5
    if objective == "f1":
        return thresholds
    if objective != "challenge":
        raise ValueError(f"unknown threshold objective {objective!r}")
    if weights is None or normal_index is None:
        raise ValueError("the challenge threshold objective needs the Challenge weights and normal class")

    def score(th: np.ndarray) -> float:
        return challenge_metric(weights, targets, probs >= th, normal_index)

    current = score(thresholds)
    for _ in range(2):
        for c in range(targets.shape[1]):
            for t in THRESHOLD_GRID:
                trial = thresholds.copy()
                trial[c] = t
                value = score(trial)
                if value > current + 1e-12:
                    thresholds, current = trial, value
    return thresholds


def multilabel_metrics(targets: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, classes: Sequence[str], *,
                       weights: np.ndarray | None = None, normal_index: int | None = None) -> dict[str, Any]:
    """Macro AUROC and AUPRC, exact-match accuracy, macro F-measure, per-class scores and the Challenge metric.

    Threshold-free scores average over classes with positives (and, for AUROC, negatives) in ``targets``;
    the macro F-measure averages over classes present in the targets or the outputs.
    """
    targets = np.asarray(targets, dtype=bool)
    outputs = probs >= np.asarray(thresholds)[None, :]
    auroc = [float(roc_auc_score(targets[:, c], probs[:, c])) if 0 < targets[:, c].sum() < len(targets) else None
             for c in range(len(classes))]
    auprc = [float(average_precision_score(targets[:, c], probs[:, c])) if targets[:, c].any() else None
             for c in range(len(classes))]
    f1 = _f1(targets, outputs)
    tp, pos, out = (targets & outputs).sum(0), targets.sum(0), outputs.sum(0)

    def mean(values: list[float | None]) -> float:
        kept = [v for v in values if v is not None]
        return float(np.mean(kept)) if kept else float("nan")

    metrics = {
        **decision_scores(targets, outputs),
        "macro_auroc": mean(auroc),
        "macro_auprc": mean(auprc),
        "per_class": {c: {"precision": float(tp[k] / out[k]) if out[k] else 0.0,
                          "recall": float(tp[k] / pos[k]) if pos[k] else 0.0, "f1": float(f1[k]),
                          "auroc": auroc[k], "auprc": auprc[k], "support": int(pos[k]),
                          "threshold": float(thresholds[k])} for k, c in enumerate(classes)},
        "multilabel_confusion": {c: {"tp": int(tp[k]), "fp": int(out[k] - tp[k]), "fn": int(pos[k] - tp[k]),
                                     "tn": int(len(targets) - pos[k] - out[k] + tp[k])} for k, c in enumerate(classes)},
    }
    if weights is not None and normal_index is not None:
        metrics["challenge"] = challenge_metric(weights, targets, outputs, normal_index)
    return metrics


def multilabel_table(metrics: dict[str, Any], names: Sequence[str] | None = None) -> str:
    """Per-class Se, +P, F1, AUROC, threshold and support of a multi-label evaluation (``names`` beside codes)."""
    labels = [f"{c} {n}" if names else c for c, n in zip(metrics["per_class"], names or metrics["per_class"],
                                                           strict=True)]
    width = max(12, *(len(label) for label in labels))
    lines = [f"{'class':<{width}} {'Se':>7} {'+P':>7} {'F1':>7} {'AUROC':>7} {'thresh':>7} {'support':>8}"]
    for label, m in zip(labels, metrics["per_class"].values(), strict=True):
        auroc = f"{m['auroc']:>7.4f}" if m["auroc"] is not None else f"{'-':>7}"
        lines.append(f"{label:<{width}} {m['recall']:>7.4f} {m['precision']:>7.4f} {m['f1']:>7.4f} {auroc} "
                     f"{m['threshold']:>7.2f} {m['support']:>8d}")
    return "\n".join(lines)
