"""The anomaly task (``--task anomaly``): a generative model learns the normal beats of a beat dataset, and the
scores it gives each beat (reconstruction error, discriminator feature error, latent deviation; higher = more
abnormal) rank how abnormal a beat is.

- Training sees normal beats only (:func:`normal_only`, recorded in splits.json).
- Validation holds normal and abnormal beats. On it alone the scores are combined (logistic regression,
  :class:`toolbox.anomaly.ScoreCombiner`), the decision threshold is chosen and the best epoch is picked (by the
  cross-validated AUROC of the combination, so the combination is never scored on the beats it was fitted on).
- The test split is scored with that combination and threshold (:func:`test_outputs`).
- ``--generate``: samples of a generative prior, their MMD^2 to real normal beats, and train-on-synthetic /
  test-on-real (:func:`generate`).

The losses and optimiser steps of each model are the model's own (``train_step`` in models/generative.py): they
are inseparable from its parts (generator, discriminator, inverse encoder).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loaders.dataset import DataSplits, ECGDataset, make_dataloader
from toolbox import anomaly
from toolbox.utils import ECGError, atomic_write, write_json

LATENT_FIT_MOST = 8192  # normal training beats (evenly spaced) whose latent codes give the Mahalanobis statistics
SHRINKAGE = 1e-3  # of the latent covariance towards its mean variance, so that it can be inverted
NEIGHBOURS = 5  # the knn score: mean distance of a beat's latent code to its nearest training codes
PARTS = 3  # each lead's reconstruction error is also scored in this many consecutive parts of the beat
SELECTION = "auroc"  # the validation score that picks the best epoch (cross-validated AUROC of the combination)
TSTR_MODEL = "cnn1d_3"  # the small classifier of train-on-synthetic / test-on-real
TSTR_EPOCHS = 4
TSTR_LR = 3e-3


def normal_indices(classes: list[str], normal_classes: list[str] | None) -> list[int]:
    """Class indices counted normal: ``normal_classes`` by name, or the first class; unknown names are an error."""
    names = normal_classes or classes[:1]
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise ECGError(f"--normal-classes {' '.join(unknown)}: not a class of this dataset; its classes are "
                       f"{', '.join(classes)}")
    if len(set(names)) == len(classes):
        raise ECGError(f"--normal-classes names every class ({', '.join(classes)}); leave at least one abnormal")
    return [classes.index(n) for n in names]


def subset(ds: ECGDataset, keep: np.ndarray) -> ECGDataset:
    """The examples of ``ds`` where ``keep`` is true, with their meta."""
    idx = np.flatnonzero(keep)
    return ECGDataset(ds.x.numpy()[idx], ds.labels.numpy()[idx], ds.classes,
                      meta={k: np.asarray(v)[idx] for k, v in ds.meta.items()})


def normal_only(data: DataSplits, normal_classes: list[str] | None) -> DataSplits:
    """``data`` with the training split cut to its normal beats; splits.json (the manifest) names only those, and
    says which classes are normal and how many beats of each other class training left out."""
    normal = normal_indices(data.classes, normal_classes)
    labels = data.train.labels.numpy()
    keep = np.isin(labels, normal)
    train = subset(data.train, keep)
    manifest = copy.deepcopy(data.manifest)
    counts = np.bincount(labels[~keep], minlength=len(data.classes))
    note = {"task": "anomaly", "normal_classes": [data.classes[k] for k in normal],
            "training": "normal beats only",
            "left_out_of_training": {c: int(n) for c, n in zip(data.classes, counts, strict=True) if n}}
    if "beats" in manifest and "record" in train.meta:  # raw MIT-BIH: beats by record
        rec, smp = train.meta["record"], train.meta["sample"]
        manifest["beats"]["train"] = {str(r): smp[rec == r].tolist() for r in np.unique(rec)}
        manifest["records"]["train"] = sorted(str(r) for r in np.unique(rec))
    elif "rows" in manifest and "row" in train.meta:  # Kaggle CSVs: rows
        manifest["rows"]["train"] = train.meta["row"].tolist()
    else:
        raise ECGError("--task anomaly: this dataset's splits.json has no per-beat list to restrict training to")
    if "counts" in manifest:
        manifest["counts"]["train"] = {c: int(n) for c, n in zip(
            data.classes, np.bincount(train.labels.numpy(), minlength=len(data.classes)), strict=True)}
    manifest["anomaly"] = note
    return replace(data, train=train, manifest=manifest, selection=SELECTION)


def split_lists(manifest: dict[str, Any]) -> Any:
    """The per-beat lists of a splits.json (MIT-BIH beats by record, or CSV rows), to compare two splits."""
    return manifest.get("beats") or manifest.get("rows")


def is_abnormal(labels: np.ndarray, normal: list[int]) -> np.ndarray:
    return ~np.isin(labels, normal)


@torch.no_grad()
def fit_latent(model: torch.nn.Module, train: ECGDataset, device: torch.device,
               most: int = LATENT_FIT_MOST) -> dict[str, torch.Tensor]:
    """Mean and (shrunk) precision matrix of the latent codes of at most ``most`` evenly spaced normal training
    beats, and the codes themselves (the neighbours of :func:`beat_scores`' ``knn``); no random draw, so a resumed
    run computes the same."""
    model.eval()
    idx = np.unique(np.linspace(0, len(train) - 1, min(most, len(train))).round().astype(np.int64))
    z = torch.cat([model.encode(train.x[idx[i:i + 512]].to(device)).float().cpu() for i in range(0, len(idx), 512)])
    z = z.double()
    cov = torch.cov(z.T) if len(z) > 1 else torch.eye(z.shape[1], dtype=torch.float64)
    scale = float(torch.diagonal(cov).mean()) or 1.0
    cov = (1 - SHRINKAGE) * cov + SHRINKAGE * scale * torch.eye(z.shape[1], dtype=torch.float64)
    return {"mean": z.mean(0).float(), "precision": torch.linalg.inv(cov).float(), "codes": z.float()}


def beat_scores(model: torch.nn.Module, x: torch.Tensor,
                latent: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The model's scores of a batch, plus each lead's squared reconstruction error in ``PARTS`` consecutive parts
    of the beat (``error_lead<k>_part<p>``) and, given the training latents' statistics, the Mahalanobis distance of
    the beat's latent code from them (``mahalanobis``) and its mean Euclidean distance to the ``NEIGHBOURS``
    nearest training codes (``knn``)."""
    scores = dict(model.scores(x))
    err = (x - model.reconstruct(x)).float().pow(2)
    for c in range(err.shape[1]):
        for p, part in enumerate(err[:, c].chunk(PARTS, dim=1)):
            scores[f"error_lead{c + 1}_part{p + 1}"] = part.mean(1)
    if latent is not None:
        z = model.encode(x).float()
        d = z - latent["mean"].to(x.device)
        scores["mahalanobis"] = ((d @ latent["precision"].to(x.device)) * d).sum(1)
        near = torch.cdist(z, latent["codes"].to(x.device)).topk(NEIGHBOURS, dim=1, largest=False).values
        scores["knn"] = near.mean(1)
    return scores


def fit_validation(scores: dict[str, np.ndarray], labels: np.ndarray, normal: list[int], seed: int = 0,
                   groups: np.ndarray | None = None) -> tuple[dict[str, Any], anomaly.ScoreCombiner | None,
                                                              float | None]:
    """On validation beats: the score combination, its threshold, and the metrics logged for the epoch
    (``auroc``: cross-validated AUROC of the combination, holding out whole records when ``groups`` gives each
    beat's record, as on the inter-patient split; ``auroc_<score>``: each score alone)."""
    positive = is_abnormal(labels, normal)
    metrics: dict[str, Any] = {f"auroc_{k}": anomaly.auroc(v, positive) for k, v in scores.items()}
    metrics["beats"], metrics["abnormal_beats"] = int(len(labels)), int(positive.sum())
    if positive.sum() < 2 or (~positive).sum() < 2:  # a short run's few batches may hold no abnormal beat
        metrics.update(auroc=math.nan, auprc=math.nan, f1=math.nan)
        return metrics, None, None
    combiner = anomaly.ScoreCombiner.fit(scores, positive, seed=seed)
    combined = combiner.combine(scores)
    threshold = anomaly.choose_threshold(combined, positive)
    folds = int(min(5, positive.sum(), (~positive).sum()))
    cv = anomaly.cross_validated_auroc(scores, positive, folds=folds, seed=seed, groups=groups)
    metrics["auroc_held_out"] = "records" if groups is not None and cv is not None else "beats"
    if cv is None:  # fewer than 2 validation records hold abnormal beats: hold out beats instead
        cv = anomaly.cross_validated_auroc(scores, positive, folds=folds, seed=seed)
    metrics["auroc"] = cv if cv is not None else math.nan
    metrics["auroc_combined_in_sample"] = anomaly.auroc(combined, positive)
    metrics["auprc"] = anomaly.auprc(combined, positive)
    decided = combined >= threshold
    tp = int((decided & positive).sum())
    metrics["f1"] = 2 * tp / max(int(decided.sum()) + int(positive.sum()), 1)
    metrics["threshold"] = float(threshold)
    return metrics, combiner, float(threshold)


def scores_table(scores: dict[str, np.ndarray], combined: np.ndarray, labels: np.ndarray, classes: list[str],
                 normal: list[int], meta: dict[str, np.ndarray], threshold: float) -> Any:
    """Per-beat scores as a table: meta (record, sample or row), true class, abnormal, each score, combination."""
    import pandas as pd

    table = pd.DataFrame({**{k: np.asarray(v)[: len(labels)] for k, v in meta.items()},
                          "class": [classes[k] for k in labels], "abnormal": is_abnormal(labels, normal).astype(int)})
    for name, values in scores.items():
        table[f"score_{name}"] = np.round(values, 7)
    table["score"] = np.round(combined, 7)
    table["flagged"] = (combined >= threshold).astype(int)
    return table


def test_outputs(pred_dir: Path, tag: str, scores: dict[str, np.ndarray], labels: np.ndarray,
                 data: DataSplits, normal: list[int], combiner: anomaly.ScoreCombiner, threshold: float,
                 resamples: int, title: str, groups: np.ndarray | None = None) -> dict[str, Any]:
    """Write pred/<tag>_scores.csv, _metrics.json (with bootstrap intervals), ROC, PR and histogram PNGs; return
    the metrics."""
    classes, names = data.classes, [data.classes[k] for k in normal]
    combined = combiner.combine(scores)
    metrics = anomaly.anomaly_metrics(combined, labels, classes, names, threshold)
    positive = is_abnormal(labels, normal)
    metrics["per_score"] = {k: {"auroc": anomaly.auroc(v, positive), "auprc": anomaly.auprc(v, positive)}
                            for k, v in scores.items()}
    metrics["ci"] = (anomaly.bootstrap_anomaly(combined, labels, classes, names, threshold, resamples, groups=groups)
                     if resamples else None)
    metrics["combination"] = combiner.to_dict()
    table = scores_table(scores, combined, labels, classes, normal, data.test.meta, threshold)
    atomic_write(pred_dir / f"{tag}_scores.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_json(pred_dir / f"{tag}_metrics.json", metrics)
    anomaly.roc_png(combined, labels, classes, names, pred_dir / f"{tag}_roc.png", title)
    anomaly.pr_png(combined, labels, classes, names, pred_dir / f"{tag}_pr.png", title)
    anomaly.score_histogram_png(combined, labels, classes, pred_dir / f"{tag}_histogram.png", title,
                                threshold=threshold)
    return metrics


def metrics_table(metrics: dict[str, Any]) -> str:
    """Overall and per-class AUROC/AUPRC with their intervals, as printed by --test."""
    ci = metrics.get("ci") or {}

    def cell(value: float | None, bounds: list[float] | None) -> str:
        text = "-" if value is None else f"{value:.4f}"
        return f"{text} [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds and value is not None else text

    lines = [f"{'beats':<10} {'AUROC':>24} {'AUPRC':>24} {'beats':>8}",
             f"{'all':<10} {cell(metrics['auroc'], ci.get('auroc')):>24} {cell(metrics['auprc'], ci.get('auprc')):>24}"
             f" {metrics['beats']:>8}"]
    for name, m in metrics["per_class"].items():
        bounds = (ci.get("per_class") or {}).get(name, {})
        lines.append(f"{name + ' vs N':<10} {cell(m['auroc'], bounds.get('auroc')):>24} "
                     f"{cell(m['auprc'], bounds.get('auprc')):>24} {m['support']:>8}")
    return "\n".join(lines)


# ---- generation ----

def generate(model: torch.nn.Module, n: int, seed: int, device: torch.device) -> np.ndarray:
    """``n`` beats drawn from the model's prior, seeded."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, n, 1024):
            out.append(model.sample(min(1024, n - start), generator).float().cpu())
    return torch.cat(out).numpy()


def _train_classifier(x: np.ndarray, y: np.ndarray, classes: list[str], seed: int, device: torch.device,
                      epochs: int, max_batches: int | None) -> torch.nn.Module:
    """The TSTR classifier: ``TSTR_MODEL`` trained ``epochs`` epochs with class-balanced cross-entropy."""
    import trainer
    from models import get_model
    from toolbox.losses import class_weights, get_criterion
    from toolbox.optimizers import get_optimizer

    torch.manual_seed(seed)
    data = ECGDataset(x, y, classes)
    model = get_model(TSTR_MODEL, x.shape[1], len(classes)).to(device)
    generator = torch.Generator().manual_seed(seed)
    loader = make_dataloader(data, 128, shuffle=True, generator=generator)
    criterion = get_criterion("crossentropy", class_weights(data.class_counts(), "equal")).to(device)
    optimizer = get_optimizer("adamw", model, TSTR_LR, 0.9, 1e-4)
    for epoch in range(1, epochs + 1):
        trainer.train(model, loader, criterion, optimizer, device, epoch, classes, max_batches=max_batches,
                      progress=False)
    return model


def tstr(synthetic: np.ndarray, train: ECGDataset, test: ECGDataset, normal: list[int], seed: int,
         device: torch.device, *, epochs: int = TSTR_EPOCHS, max_batches: int | None = None) -> dict[str, Any]:
    """Train on synthetic, test on real: one classifier learns generated beats (as the first normal class) plus
    the real training beats of every other class, another the same number of real training beats of that class
    plus the same others; both are scored (macro-F1, per class) on the real test split."""
    import trainer
    from toolbox.losses import get_criterion

    x, y = train.x.numpy(), train.labels.numpy()
    label = normal[0]  # the generated beats stand for the first normal class; beats of the others stay real
    normal_rows = np.flatnonzero(y == label)
    rng = np.random.default_rng(seed)
    real_rows = rng.choice(normal_rows, size=min(len(synthetic), len(normal_rows)), replace=False)
    other_rows = np.flatnonzero(y != label)
    sets = {"synthetic": (np.concatenate([synthetic, x[other_rows]]),
                          np.concatenate([np.full(len(synthetic), label), y[other_rows]])),
            "real": (np.concatenate([x[real_rows], x[other_rows]]),
                     np.concatenate([y[real_rows], y[other_rows]]))}
    out: dict[str, Any] = {"classifier": TSTR_MODEL, "epochs": epochs, "normal_beats": int(len(synthetic)),
                           "real_normal_beats": int(len(real_rows)), "other_real_beats": int(len(other_rows)),
                           "synthetic_normal_class": train.classes[label]}
    loader = make_dataloader(test, 512)
    criterion = get_criterion("crossentropy").to(device)
    for name, (xs, ys) in sets.items():
        start = time.perf_counter()
        model = _train_classifier(xs.astype(np.float32), ys.astype(np.int64), train.classes, seed, device, epochs,
                                  max_batches)
        metrics, _, _ = trainer.test(model, loader, criterion, device, train.classes, max_batches=max_batches,
                                     progress=False)
        out[name] = {"macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"],
                     "per_class_f1": {c: m["f1"] for c, m in metrics["per_class"].items()},
                     "seconds": time.perf_counter() - start}
    out["macro_f1_gap"] = out["real"]["macro_f1"] - out["synthetic"]["macro_f1"]
    return out
