"""Classification metrics (scikit-learn): accuracy next to macro-F1 and per-class scores."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


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
