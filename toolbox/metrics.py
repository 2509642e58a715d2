"""Classification metrics (scikit-learn): accuracy next to macro-F1 and per-class scores; multi-label scores."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix

CI_LEVEL = 0.95
BOOTSTRAP_SEED = 0  # every --test draws the same resamples, so its intervals are reproducible


def confusion_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of confusion matrices ``cm`` (..., k, k), rows = targets, columns = predictions.

    Per class: precision (+P) and recall (Se), 0 where undefined, and F1, NaN where the class has neither
    examples nor predictions (the PhysioNet scorers' convention). Macro-F1 and balanced accuracy (mean recall)
    average over every class that appears in the targets or the predictions: a predicted class without
    examples counts 0, as in scikit-learn's ``f1_score(average="macro")``.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support, predicted = cm.sum(-1), cm.sum(-2)
    present = (support + predicted) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(present, 2 * tp / (support + predicted), np.nan)
        n_present = present.sum(-1)
        total = cm.sum((-2, -1))
        return {"accuracy": np.where(total > 0, tp.sum(-1) / total, 0.0),
                "balanced_accuracy": np.where(n_present > 0, np.where(present, recall, 0).sum(-1) / n_present, 0.0),
                "macro_f1": np.where(n_present > 0, np.nansum(f1, -1) / n_present, 0.0),
                "precision": precision, "recall": recall, "f1": f1}


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def classification_metrics(targets: np.ndarray, preds: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    k = len(classes)
    cm = confusion_matrix(targets, preds, labels=np.arange(k)) if len(targets) else np.zeros((k, k), np.int64)
    s = confusion_scores(cm)
    return {
        "accuracy": float(s["accuracy"]), "balanced_accuracy": float(s["balanced_accuracy"]),
        "macro_f1": float(s["macro_f1"]),
        "per_class": {c: {"precision": float(s["precision"][j]), "recall": float(s["recall"][j]),
                          "f1": _number(s["f1"][j]), "support": int(cm[j].sum())} for j, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
    }


def _interval(values: np.ndarray, level: float = CI_LEVEL) -> list[float] | None:
    """Percentile interval of bootstrap ``values`` (NaN draws left out); None when every draw is NaN."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def _resample_weights(units: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of ``units`` units is drawn in each resample: (resamples, units) counts."""
    draws = rng.integers(0, units, size=(resamples, units))
    return np.stack([np.bincount(d, minlength=units) for d in draws]) if resamples else np.zeros((0, units))


def bootstrap_classification(targets: np.ndarray, preds: np.ndarray | Sequence[np.ndarray], classes: Sequence[str],
                             groups: np.ndarray | None, resamples: int, seed: int = BOOTSTRAP_SEED,
                             chunk: int = 100) -> dict[str, Any]:
    """95% bootstrap intervals of accuracy, balanced accuracy, macro-F1 and per-class +P, Se and F1.

    ``groups`` (for example the record of each beat) makes whole groups the resampled unit; without it
    examples are resampled. ``preds`` may hold several runs' predictions of the same examples (seeds): each
    resample then scores every run on the same draw and averages the scores, so the interval is that of the
    mean over runs. Seeded, so the same predictions give the same intervals.
    """
    k = len(classes)
    runs = [np.asarray(p, dtype=np.int64) for p in (preds if isinstance(preds, list | tuple) else [preds])]
    unit = np.unique(np.asarray(groups), return_inverse=True)[1] if groups is not None else np.arange(len(targets))
    n_units = int(unit.max()) + 1 if len(unit) else 0
    per_unit = []  # each run's confusion cells per unit: (units, k * k)
    for p in runs:
        counts = np.zeros((n_units, k * k))
        np.add.at(counts, (unit, np.asarray(targets, dtype=np.int64) * k + p), 1)
        per_unit.append(counts)
    rng = np.random.default_rng(seed)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, resamples, chunk):  # chunks keep (resamples x units) small for beats
        weights = _resample_weights(n_units, min(chunk, resamples - start), rng)
        scores = [confusion_scores((weights @ counts).reshape(-1, k, k)) for counts in per_unit]
        with np.errstate(invalid="ignore"):
            parts.append({key: np.mean([sc[key] for sc in scores], axis=0) for key in scores[0]})
    s = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]} if parts else {}
    if not s:
        return {}
    return {"accuracy": _interval(s["accuracy"]), "balanced_accuracy": _interval(s["balanced_accuracy"]),
            "macro_f1": _interval(s["macro_f1"]),
            "per_class": {c: {m: _interval(s[m][:, j]) for m in ("precision", "recall", "f1")}
                          for j, c in enumerate(classes)}}


def _cell(value: float | None, ci: list[float] | None = None) -> str:
    text = f"{value:.4f}" if value is not None else "-"
    return f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else text


def per_class_table(metrics: dict[str, Any], ci: dict[str, Any] | None = None) -> str:
    """Per-class sensitivity (Se, recall), positive predictivity (+P, precision), F1 and support, with their
    bootstrap intervals when ``ci`` holds them."""
    width = 24 if ci else 7
    lines = [f"{'class':<10} {'Se':>{width}} {'+P':>{width}} {'F1':>{width}} {'support':>8}"]
    for c, m in metrics["per_class"].items():
        bounds = (ci or {}).get("per_class", {}).get(c, {})
        cells = [_cell(m[k], bounds.get(k)) for k in ("recall", "precision", "f1")]
        lines.append(f"{c:<10} " + " ".join(f"{x:>{width}}" for x in cells) + f" {m['support']:>8d}")
    return "\n".join(lines)


def headline(metrics: dict[str, Any], keys: Sequence[str], ci: dict[str, Any] | None = None) -> str:
    """'name value [lo, hi]' for each of ``keys`` that ``metrics`` holds, on one line."""
    names = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
             "macro_auroc": "macro AUROC", "macro_auprc": "macro AUPRC", "challenge": "Challenge metric",
             "fmax": "Fmax", "f_beta": "F2", "g_beta": "G2", "loss": "loss"}
    return "  ".join(f"{names[k]} {_cell(metrics[k], (ci or {}).get(k))}" for k in keys if k in metrics)


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
    """Challenge 2020 metric: the reward normalised so that always 'normal' scores 0 and the true labels 1.

    Where the true labels score no better than always 'normal', the official scorer returns 0.0; so does this.
    """
    labels = np.asarray(labels, dtype=bool)
    normal = np.zeros_like(labels)
    normal[:, normal_index] = True
    best, base = challenge_reward(weights, labels, labels), challenge_reward(weights, labels, normal)
    if best == base:
        return 0.0
    return (challenge_reward(weights, labels, outputs) - base) / (best - base)


def _f1(targets: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per-class F1 of boolean (n, classes) arrays; NaN where a class has neither positives nor outputs."""
    tp = (targets & outputs).sum(0)
    denom = targets.sum(0) + outputs.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def _nanmean(values: np.ndarray) -> float:
    """Mean over the defined values (the scorers' ``np.nanmean``); 0.0 when none is defined."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else 0.0


def decision_scores(targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """Exact-match accuracy and macro F-measure (over classes present in targets or outputs) of boolean decisions."""
    targets, outputs = np.asarray(targets, dtype=bool), np.asarray(outputs, dtype=bool)
    return {"accuracy": float((targets == outputs).all(axis=1).mean()) if len(targets) else 0.0,
            "macro_f1": _nanmean(_f1(targets, outputs))}


def beta_measures(targets: np.ndarray, outputs: np.ndarray, beta: float = 2.0) -> tuple[float, float]:
    """Macro F-beta and G-beta of the Challenge 2020 scorer (its unofficial-phase metrics, beta = 2).

    Each record's contributions to the per-class confusion counts are divided by its number of labels; per
    class F = (1 + b^2) TP / ((1 + b^2) TP + FP + b^2 FN) and G = TP / (TP + FP + b FN), NaN where the
    denominator is 0, averaged over the defined classes.
    """
    t, o = np.asarray(targets, dtype=np.float64), np.asarray(outputs, dtype=np.float64)
    w = 1.0 / np.maximum(t.sum(1), 1)[:, None]
    tp, fp, fn = (w * t * o).sum(0), (w * (1 - t) * o).sum(0), (w * t * (1 - o)).sum(0)
    b2 = beta ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where((1 + b2) * tp + fp + b2 * fn > 0, (1 + b2) * tp / ((1 + b2) * tp + fp + b2 * fn), np.nan)
        g = np.where(tp + fp + beta * fn > 0, tp / (tp + fp + beta * fn), np.nan)
    return _nanmean(f), _nanmean(g)


def auroc_per_class(targets: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-class AUROC (Mann-Whitney U with tied scores counted half, as the trapezoidal ROC area of
    scikit-learn and the Challenge scorer); NaN for a class without positives or without negatives."""
    from scipy.stats import rankdata

    t = np.asarray(targets, dtype=bool)
    ranks = rankdata(np.asarray(probs, dtype=np.float64), axis=0)
    pos = t.sum(0)
    neg = len(t) - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * t).sum(0) - pos * (pos + 1) / 2) / (pos * neg)
    return np.where((pos > 0) & (neg > 0), auc, np.nan)


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


FMAX_GRID = np.round(np.arange(0, 101) / 100, 2)  # the thresholds Fmax searches (CAFA; Strodthoff et al. 2021)


def fmax(targets: np.ndarray, probs: np.ndarray, grid: np.ndarray = FMAX_GRID) -> float:
    """The sample-centred maximum F1 over one threshold shared by all classes (CAFA's Fmax, the PTB-XL benchmark's).

    At threshold t, precision is the mean over the records with at least one score >= t of the share of their
    positive outputs that are true, recall the mean over the records with a label of the share of their labels
    found (a record without labels has no recall to count), and
    F(t) their harmonic mean; Fmax is the largest F(t). A summary of the scores' ranking like AUROC: it takes
    its threshold from the data it scores, so it is never a decision rule (those come from validation).
    """
    targets = np.asarray(targets, dtype=bool)
    labels = targets.sum(axis=1)
    labelled = labels > 0
    if not labelled.any():
        return float("nan")
    best = 0.0
    for t in grid:
        out = probs >= t
        made = out.sum(axis=1)
        hits = (out & targets).sum(axis=1)
        precision = (hits[made > 0] / made[made > 0]).mean() if (made > 0).any() else 0.0
        recall = (hits[labelled] / labels[labelled]).mean()
        if precision + recall > 0:
            best = max(best, float(2 * precision * recall / (precision + recall)))
    return best


def multilabel_metrics(targets: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, classes: Sequence[str], *,
                       weights: np.ndarray | None = None, normal_index: int | None = None) -> dict[str, Any]:
    """Macro AUROC and AUPRC, exact-match accuracy, macro F-measure, F2 and G2, per-class scores, Challenge metric.

    Per the Challenge scorer, a per-class score is undefined (None) where it divides by zero, and macro values
    average the defined ones: AUROC needs positives and negatives, AUPRC positives, F1 positives or outputs.
    """
    targets = np.asarray(targets, dtype=bool)
    outputs = probs >= np.asarray(thresholds)[None, :]
    auroc = auroc_per_class(targets, probs)
    auprc = np.array([average_precision_score(targets[:, c], probs[:, c]) if targets[:, c].any() else np.nan
                      for c in range(len(classes))])
    f1 = _f1(targets, outputs)
    tp, pos, out = (targets & outputs).sum(0), targets.sum(0), outputs.sum(0)
    f_beta, g_beta = beta_measures(targets, outputs)
    metrics = {
        **decision_scores(targets, outputs),
        "macro_auroc": _nanmean(auroc) if (~np.isnan(auroc)).any() else float("nan"),
        "macro_auprc": _nanmean(auprc) if (~np.isnan(auprc)).any() else float("nan"),
        "fmax": fmax(targets, probs), "f_beta": f_beta, "g_beta": g_beta,
        "per_class": {c: {"precision": float(tp[k] / out[k]) if out[k] else 0.0,
                          "recall": float(tp[k] / pos[k]) if pos[k] else 0.0, "f1": _number(f1[k]),
                          "auroc": _number(auroc[k]), "auprc": _number(auprc[k]), "support": int(pos[k]),
                          "threshold": float(thresholds[k])} for k, c in enumerate(classes)},
        "multilabel_confusion": {c: {"tp": int(tp[k]), "fp": int(out[k] - tp[k]), "fn": int(pos[k] - tp[k]),
                                     "tn": int(len(targets) - pos[k] - out[k] + tp[k])} for k, c in enumerate(classes)},
    }
    if weights is not None and normal_index is not None:
        metrics["challenge"] = challenge_metric(weights, targets, outputs, normal_index)
    return metrics


def bootstrap_multilabel(targets: np.ndarray, probs: np.ndarray | Sequence[np.ndarray],
                         thresholds: np.ndarray | Sequence[np.ndarray], classes: Sequence[str], resamples: int, *,
                         weights: np.ndarray | None = None, normal_index: int | None = None,
                         seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """95% bootstrap intervals of the multi-label headline scores, resampling whole records (rows); seeded.

    Macro AUROC, Fmax, exact-match accuracy, macro F-measure, F2, G2, per-class F1 and AUROC, and the Challenge
    metric when ``weights`` are given. Several runs (``probs`` and ``thresholds`` as lists) are scored on the
    same draws and averaged, as in :func:`bootstrap_classification`.
    """
    runs = list(probs) if isinstance(probs, list | tuple) else [probs]
    cuts = list(thresholds) if isinstance(probs, list | tuple) else [thresholds]  # one per run
    targets = np.asarray(targets, dtype=bool)
    outputs = [p >= np.asarray(t)[None, :] for p, t in zip(runs, cuts, strict=True)]
    rng = np.random.default_rng(seed)
    keys = ("macro_auroc", "fmax", "accuracy", "macro_f1", "f_beta", "g_beta", "challenge")
    draws: dict[str, list] = {k: [] for k in (*keys, "f1", "auroc")}
    for _ in range(resamples):
        idx = rng.integers(0, len(targets), len(targets))
        t = targets[idx]
        scores: dict[str, list] = {k: [] for k in draws}
        for p, o in zip(runs, outputs, strict=True):
            auroc, f1 = auroc_per_class(t, p[idx]), _f1(t, o[idx])
            scores["macro_auroc"].append(np.nanmean(auroc) if (~np.isnan(auroc)).any() else np.nan)
            scores["auroc"].append(auroc)
            scores["fmax"].append(fmax(t, p[idx]))
            scores["f1"].append(f1)
            for key, value in decision_scores(t, o[idx]).items():
                scores[key].append(value)
            f_beta, g_beta = beta_measures(t, o[idx])
            scores["f_beta"].append(f_beta)
            scores["g_beta"].append(g_beta)
            if weights is not None and normal_index is not None:
                scores["challenge"].append(challenge_metric(weights, t, o[idx], normal_index))
        with np.errstate(invalid="ignore"):
            for key, values in scores.items():
                if values:
                    draws[key].append(np.mean(values, axis=0))
    out: dict[str, Any] = {k: _interval(np.array(draws[k])) for k in keys if draws[k]}
    per_f1 = np.array(draws["f1"]).reshape(resamples, -1)
    per_auroc = np.array(draws["auroc"]).reshape(resamples, -1)
    out["per_class"] = {c: {"f1": _interval(per_f1[:, k]), "auroc": _interval(per_auroc[:, k])}
                        for k, c in enumerate(classes)}
    return out


def multilabel_table(metrics: dict[str, Any], names: Sequence[str] | None = None,
                     ci: dict[str, Any] | None = None) -> str:
    """Per-class Se, +P, F1, AUROC, threshold and support of a multi-label evaluation (``names`` beside codes),
    with bootstrap intervals of F1 and AUROC when ``ci`` holds them."""
    labels = [f"{c} {n}" if names else c for c, n in zip(metrics["per_class"], names or metrics["per_class"],
                                                           strict=True)]
    width = max(12, *(len(label) for label in labels))
    wide = 24 if ci else 7
    lines = [f"{'class':<{width}} {'Se':>7} {'+P':>7} {'F1':>{wide}} {'AUROC':>{wide}} {'thresh':>7} {'support':>8}"]
    for label, (c, m) in zip(labels, metrics["per_class"].items(), strict=True):
        bounds = (ci or {}).get("per_class", {}).get(c, {})
        f1, auroc = _cell(m["f1"], bounds.get("f1")), _cell(m["auroc"], bounds.get("auroc"))
        lines.append(f"{label:<{width}} {m['recall']:>7.4f} {m['precision']:>7.4f} {f1:>{wide}} {auroc:>{wide}} "
                     f"{m['threshold']:>7.2f} {m['support']:>8d}")
    return "\n".join(lines)
