"""Anomaly-detection metrics (scikit-learn): AUROC/AUPRC of continuous scores, a validation threshold, bootstrap
intervals, a combination of several scores, MMD² between beat sets, and the figures of an anomaly run.

Scores follow the PyOD convention: one float per beat, higher = more abnormal. ``classes`` holds the class index of
each beat (AAMI: N=0, S=1, V=2, F=3, Q=4) and ``normal`` the class names counted normal; every other class is
abnormal. Numpy only (no torch), so the metrics run anywhere the predictions are.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import sparse  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    average_precision_score,
    f1_score,
    matthews_corrcoef,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold  # noqa: E402

from toolbox.metrics import BOOTSTRAP_SEED, CI_LEVEL, _interval, _resample_weights  # noqa: E402
from toolbox.utils import ECGError, atomic_write  # noqa: E402

# ---- inputs ----


def _scores(scores: Any, name: str = "anomaly scores") -> np.ndarray:
    """``scores`` as a finite float64 vector; a NaN or infinite score (a diverged model) is an ECGError."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.isfinite(s).all():
        raise ECGError(f"{name} hold {int((~np.isfinite(s)).sum())} NaN or infinite values: the model diverged; "
                       f"train it again with a lower learning rate or from an earlier checkpoint")
    return s


def _positive(positive: Any, n: int) -> np.ndarray:
    """``positive`` (abnormal) as a boolean vector of length ``n``."""
    p = np.asarray(positive).reshape(-1).astype(bool)
    if len(p) != n:
        raise ECGError(f"got {n} scores but {len(p)} labels: give one label per beat")
    return p


def _classes(classes: Any, class_names: Sequence[str], normal: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Class index per beat and which class indices are normal, checked against ``class_names``."""
    c = np.asarray(classes).reshape(-1).astype(np.int64)
    if len(c) != n:
        raise ECGError(f"got {n} scores but {len(c)} class labels: give one class per beat")
    if len(c) and (c.min() < 0 or c.max() >= len(class_names)):
        raise ECGError(f"class indices must lie in 0..{len(class_names) - 1} (classes {list(class_names)}), "
                       f"got {int(c.min())}..{int(c.max())}")
    unknown = [x for x in normal if x not in class_names]
    if unknown or not normal:
        raise ECGError(f"the normal classes must be some of {list(class_names)}, got {list(normal)}")
    if set(normal) >= set(class_names):
        raise ECGError(f"every class ({list(class_names)}) is counted normal: leave at least one abnormal class")
    return c, np.isin(np.asarray(class_names), np.asarray(list(normal)))


def _abnormal_classes(class_names: Sequence[str], normal_class: np.ndarray) -> list[int]:
    """Indices of the classes that are not normal, in ``class_names`` order."""
    return [k for k in range(len(class_names)) if not normal_class[k]]


# ---- point metrics ----


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of continuous ``scores`` for ``positive`` (tied scores count half); None when
    the beats hold only one kind."""
    s = _scores(scores)
    p = _positive(positive, len(s))
    return float(roc_auc_score(p, s)) if 0 < p.sum() < len(p) else None


def auprc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Average precision (area under the precision-recall curve, scikit-learn's step sum) of continuous
    ``scores`` for ``positive``; None when the beats hold only one kind."""
    s = _scores(scores)
    p = _positive(positive, len(s))
    return float(average_precision_score(p, s)) if 0 < p.sum() < len(p) else None


def choose_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The threshold t maximising the F1 of ``score >= t`` on these (validation) beats; deterministic.

    Every distinct score is a candidate cut; the chosen cut is returned as the midpoint between it and the next
    lower distinct score (the same decisions on these beats, less tied to one beat's value), or the lowest score
    itself. Among cuts of equal F1 the highest (fewest alarms) wins.
    """
    s = _scores(scores)
    p = _positive(positive, len(s))
    if not p.any():
        raise ECGError("the validation beats hold no abnormal beat, so no threshold can be chosen: "
                       "use a split whose validation side has abnormal beats")
    values, inverse = np.unique(s, return_inverse=True)  # ascending
    pos = np.bincount(inverse, weights=p, minlength=len(values))[::-1]  # per distinct value, descending
    count = np.bincount(inverse, minlength=len(values))[::-1]
    tp, flagged = np.cumsum(pos), np.cumsum(count)
    f1 = 2 * tp / (flagged + p.sum())  # 2TP / (2TP + FP + FN), flagged = TP + FP
    best = int(np.flatnonzero(f1 >= f1.max() - 1e-12)[0])  # highest cut among the best
    descending = values[::-1]
    if best + 1 < len(descending):
        return float((descending[best] + descending[best + 1]) / 2)
    return float(descending[best])


def _decisions(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict[str, float]:
    """F1, MCC, precision and recall of ``score >= threshold`` against ``positive`` (0 where undefined)."""
    flagged = scores >= threshold
    return {"f1": float(f1_score(positive, flagged, zero_division=0)),
            "mcc": float(matthews_corrcoef(positive, flagged)) if len(positive) else 0.0,
            "precision": float(precision_score(positive, flagged, zero_division=0)),
            "recall": float(recall_score(positive, flagged, zero_division=0))}


def anomaly_metrics(scores: np.ndarray, classes: np.ndarray, class_names: Sequence[str], normal: Sequence[str],
                    threshold: float) -> dict[str, Any]:
    """AUROC and AUPRC of the scores (abnormal vs normal beats), F1/MCC/precision/recall at ``threshold``, and
    per abnormal class its AUROC/AUPRC against the normal beats only (beats of the other abnormal classes left
    out) and its support; a class without beats gets None."""
    s = _scores(scores)
    c, normal_class = _classes(classes, class_names, normal, len(s))
    abnormal = ~normal_class[c]
    normal_beats = ~abnormal
    per_class = {}
    for k in _abnormal_classes(class_names, normal_class):
        keep = normal_beats | (c == k)
        per_class[class_names[k]] = {"auroc": auroc(s[keep], c[keep] == k), "auprc": auprc(s[keep], c[keep] == k),
                                     "support": int((c == k).sum())}
    return {"auroc": auroc(s, abnormal), "auprc": auprc(s, abnormal), **_decisions(s, abnormal, threshold),
            "threshold": float(threshold), "beats": int(len(s)), "abnormal_beats": int(abnormal.sum()),
            "per_class": per_class}


# ---- bootstrap ----


@dataclass(frozen=True)
class _Ranking:
    """One comparison's beats sorted by score, as 0/1 matrices (rows, beats) that sum draw counts per row; only
    the distinct scores held by a positive beat (its "positive groups", highest first) need a row.

    ``positive``: the positive beats of each positive group. ``tied``: the negative beats tied with it.
    ``above``: the negative beats scored at least as high as the group but lower than the group before it (one
    extra last row for the negatives below every positive), so its cumulative sum counts the negatives ranked
    at or above each group. Beats outside the comparison are in no row.
    """

    positive: sparse.csr_matrix
    tied: sparse.csr_matrix
    above: sparse.csr_matrix


def _ranking(scores: np.ndarray, positive: np.ndarray, keep: np.ndarray) -> _Ranking:
    """The :class:`_Ranking` of the beats ``keep`` selects, ``positive`` telling their kind."""
    idx = np.flatnonzero(keep)
    _, group = np.unique(-scores[idx], return_inverse=True)  # group 0 = the highest score
    is_pos = positive[idx]
    held = np.unique(group[is_pos])  # the positive groups, highest first
    row = np.searchsorted(held, group)  # each beat's positive group at or below its score (len(held): none)
    tied = ~is_pos & (np.append(held, -1)[row] == group)  # negatives sharing a positive group's score

    def rows(kind: np.ndarray, count: int) -> sparse.csr_matrix:
        return sparse.csr_matrix((np.ones(int(kind.sum())), (row[kind], idx[kind])), shape=(count, len(scores)))

    return _Ranking(positive=rows(is_pos, len(held)), tied=rows(tied, len(held)),
                    above=rows(~is_pos, len(held) + 1))


def _weighted_areas(ranking: _Ranking, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision under each column of ``counts`` (beats, resamples): beat i counted
    counts[i, r] times, tied scores counted half in AUROC and as one cut in AUPRC (scikit-learn's results with
    ``sample_weight``); NaN where a column draws no positive or no negative."""
    pos, tied = ranking.positive @ counts, ranking.tied @ counts  # (positive groups, resamples)
    neg = ranking.above @ counts
    n_pos, n_neg = pos.sum(0), neg.sum(0)
    tp, fp = np.cumsum(pos, axis=0), np.cumsum(neg[:-1], axis=0)  # ranked at or above each positive group
    with np.errstate(invalid="ignore", divide="ignore"):
        roc = (pos * (n_neg - fp + 0.5 * tied)).sum(0) / (n_pos * n_neg)  # negatives below, ties counted half
        ap = (pos * (tp / np.maximum(tp + fp, 1e-300))).sum(0) / n_pos
    defined = (n_pos > 0) & (n_neg > 0)
    return np.where(defined, roc, np.nan), np.where(defined, ap, np.nan)


def _weighted_decisions(flagged: np.ndarray, positive: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """F1, MCC, precision and recall of fixed decisions under each column of ``counts`` (beats, resamples); 0
    where undefined, as in scikit-learn."""
    tp, fp = (flagged & positive) @ counts, (flagged & ~positive) @ counts
    fn, tn = (~flagged & positive) @ counts, (~flagged & ~positive) @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return {"f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0),
                "mcc": np.where(denom > 0, (tp * tn - fp * fn) / denom, 0.0),
                "precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),
                "recall": np.where(tp + fn > 0, tp / (tp + fn), 0.0)}


def bootstrap_anomaly(scores: np.ndarray | Sequence[np.ndarray], classes: np.ndarray, class_names: Sequence[str],
                      normal: Sequence[str], threshold: float | Sequence[float], resamples: int,
                      groups: np.ndarray | None = None, seed: int = BOOTSTRAP_SEED, chunk: int = 100) -> dict[str, Any]:
    """95% percentile bootstrap intervals of :func:`anomaly_metrics`' AUROC, AUPRC, F1, MCC, precision, recall and
    per-class AUROC/AUPRC (each abnormal class against the normal beats), resampling beats or, with ``groups``
    (the record of each beat), whole groups; seeded, so the same input gives the same intervals.

    ``scores`` (and ``threshold``) may hold several runs' scores of the same beats (seeds): each resample then
    scores every run on the same draw and averages, so the interval is that of the mean over runs.
    Vectorised: each chunk of resamples is a matrix of draw counts, and every area is a sum over the tie groups
    of the beats sorted once (sparse group sums of the counts), so 22,000 beats x 1,000 resamples take seconds.
    {} when ``resamples`` is 0.
    """
    several = isinstance(scores, list | tuple)
    runs = [_scores(x) for x in (scores if several else [scores])]
    thresholds = list(threshold) if several else [threshold]
    if len(thresholds) != len(runs) or any(len(r) != len(runs[0]) for r in runs):
        raise ECGError("give one threshold per run, and every run's scores of the same beats")
    n = len(runs[0])
    c, normal_class = _classes(classes, class_names, normal, n)
    if groups is not None and len(np.asarray(groups).reshape(-1)) != n:
        raise ECGError(f"got {n} scores but {len(np.asarray(groups).reshape(-1))} groups: give one per beat")
    if resamples <= 0 or not n:
        return {}
    abnormal = ~normal_class[c]
    kept = _abnormal_classes(class_names, normal_class)
    per_run = []
    for s in runs:
        rankings = {None: _ranking(s, abnormal, np.ones(n, bool))}  # None: all abnormal beats vs normal
        rankings.update({class_names[k]: _ranking(s, c == k, ~abnormal | (c == k)) for k in kept})
        per_run.append(rankings)
    unit = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)[1] if groups is not None \
        else np.arange(n)
    n_units = int(unit.max()) + 1
    rng = np.random.default_rng(seed)
    draws: dict[tuple[str | None, str], list[np.ndarray]] = {}  # (class or None, metric) -> chunks of draws
    for start in range(0, resamples, chunk):  # chunks keep (resamples x beats) small
        weights = _resample_weights(n_units, min(chunk, resamples - start), rng)
        counts = np.ascontiguousarray(weights.T[unit], dtype=np.float64)  # (beats, resamples)
        here: dict[tuple[str | None, str], list[np.ndarray]] = {}
        for s, t, rankings in zip(runs, thresholds, per_run, strict=True):
            for name, ranking in rankings.items():
                roc, ap = _weighted_areas(ranking, counts)
                here.setdefault((name, "auroc"), []).append(roc)
                here.setdefault((name, "auprc"), []).append(ap)
            for key, values in _weighted_decisions(s >= t, abnormal, counts).items():
                here.setdefault((None, key), []).append(values)
        with np.errstate(invalid="ignore"):
            for key, values in here.items():
                draws.setdefault(key, []).append(np.mean(values, axis=0))
    d = {key: np.concatenate(parts) for key, parts in draws.items()}
    overall = ("auroc", "auprc", "f1", "mcc", "precision", "recall")
    return {**{key: _interval(d[None, key], CI_LEVEL) for key in overall},
            "per_class": {class_names[k]: {m: _interval(d[class_names[k], m], CI_LEVEL)
                                           for m in ("auroc", "auprc")} for k in kept}}


# ---- score combination ----


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    """sign(x) log(1 + |x|): log1p for non-negative scores, still defined (and monotone) for negative ones."""
    return np.sign(x) * np.log1p(np.abs(x))


TRANSFORMS = {"identity": lambda x: x, "log1p": _signed_log1p}


class ScoreCombiner:
    """A logistic regression over several standardised anomaly scores, fitted on validation beats only.

    Each score is first transformed: ``log1p`` when every fitting value is non-negative (reconstruction errors
    and distances are heavy-tailed; at combine time a negative value maps to -log1p(-x), so nothing is
    undefined), else ``identity``; then standardised with the mean and sd of the fitting data; then weighted by
    ``LogisticRegression(class_weight="balanced")``, with non-negative weights: every score means "higher = more
    abnormal", so one the fit would weigh negatively (it learnt a quirk of the fitting beats, such as which patients
    they come from) is dropped and the rest refitted. :meth:`combine` returns the decision function (higher = more
    abnormal), computed here from plain numbers, so :meth:`to_dict` / :meth:`from_dict` round-trip exactly and a
    checkpoint read with ``weights_only=True`` can hold it.
    """

    def __init__(self, names: Sequence[str], means: Sequence[float], sds: Sequence[float], coef: Sequence[float],
                 intercept: float, transform: Sequence[str]) -> None:
        if not (len(names) == len(means) == len(sds) == len(coef) == len(transform)) or not names:
            raise ECGError("a score combination needs one mean, sd, coefficient and transform per score name")
        unknown = [t for t in transform if t not in TRANSFORMS]
        if unknown:
            raise ECGError(f"unknown score transforms {unknown}: valid ones are {sorted(TRANSFORMS)}")
        self.names = [str(n) for n in names]
        self.means = np.asarray(means, dtype=np.float64)
        self.sds = np.asarray(sds, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.transform = [str(t) for t in transform]

    @classmethod
    def fit(cls, scores: Mapping[str, np.ndarray], positive: np.ndarray, seed: int = 0) -> ScoreCombiner:
        """Fit the combination of ``scores`` (name -> one score per beat) to ``positive`` (abnormal) beats."""
        names = sorted(scores)
        if not names:
            raise ECGError("a score combination needs at least one score")
        values = [_scores(scores[n], f"{n} scores") for n in names]
        p = _positive(positive, len(values[0]))
        if any(len(v) != len(p) for v in values):
            raise ECGError(f"the scores {names} must each hold one value per beat ({len(p)})")
        if p.all() or not p.any():
            raise ECGError("fitting a score combination needs normal and abnormal beats: use validation beats "
                           "of both kinds")
        transform = ["log1p" if v.min() >= 0 else "identity" for v in values]
        moved = np.stack([TRANSFORMS[t](v) for t, v in zip(transform, values, strict=True)], axis=1)
        means, sds = moved.mean(0), moved.std(0)
        sds = np.where(sds > 0, sds, 1.0)
        z = (moved - means) / sds
        active = list(range(len(names)))
        model = LogisticRegression(class_weight="balanced", random_state=seed, max_iter=1000)
        while True:  # every score says "higher = more abnormal": one the fit weighs negatively is left out
            model.fit(z[:, active], p)
            weights = model.coef_[0]
            if (weights >= 0).all() or len(active) == 1:
                break
            active = [a for a, w in zip(active, weights, strict=True) if w >= 0] or [active[int(np.argmax(weights))]]
        coef = np.zeros(len(names))
        coef[active] = np.maximum(weights, 0.0)
        if not coef.any():  # the one score left is weighed negatively too: take it as it is
            coef[active] = 1.0
        return cls(names, means.tolist(), sds.tolist(), coef.tolist(), float(model.intercept_[0]), transform)

    def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """The combined score of each beat (the logistic regression's decision function; higher = more abnormal)."""
        missing = [n for n in self.names if n not in scores]
        if missing:
            raise ECGError(f"the score combination needs the scores {self.names}; missing {missing}")
        values = [_scores(scores[n], f"{n} scores") for n in self.names]
        if len({len(v) for v in values}) > 1:
            raise ECGError(f"the scores {self.names} must each hold one value per beat")
        moved = np.stack([TRANSFORMS[t](v) for t, v in zip(self.transform, values, strict=True)], axis=1)
        return ((moved - self.means) / self.sds) @ self.coef + self.intercept

    def to_dict(self) -> dict[str, Any]:
        """The combination as plain floats, lists and strings (what a ``weights_only`` checkpoint can hold)."""
        return {"names": list(self.names), "means": [float(x) for x in self.means],
                "sds": [float(x) for x in self.sds], "coef": [float(x) for x in self.coef],
                "intercept": float(self.intercept), "transform": list(self.transform)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScoreCombiner:
        """The combination :meth:`to_dict` described."""
        try:
            return cls(d["names"], d["means"], d["sds"], d["coef"], d["intercept"], d["transform"])
        except KeyError as e:
            raise ECGError(f"a saved score combination lacks {e}: the checkpoint is damaged or from another "
                           f"version; train again") from None


def cross_validated_auroc(scores: Mapping[str, np.ndarray], positive: np.ndarray, folds: int = 5,
                          seed: int = 0, groups: np.ndarray | None = None) -> float | None:
    """AUROC of the combination's out-of-fold decision values on these (validation) beats (StratifiedKFold): each
    beat is scored by a combination fitted without it, so the epoch can be chosen on it. With ``groups`` (the
    record of each beat) whole records are held out (StratifiedGroupKFold), so the combination is scored on
    patients it was not fitted on. Fewer folds when the rarer kind has fewer beats (or groups) than ``folds``;
    None when it has fewer than 2."""
    names = sorted(scores)
    if not names:
        raise ECGError("a score combination needs at least one score")
    values = {n: _scores(scores[n], f"{n} scores") for n in names}
    p = _positive(positive, len(values[names[0]]))
    k = min(folds, int(p.sum()), int((~p).sum()))
    if groups is not None:
        g = np.asarray(groups).reshape(-1)
        k = min(k, len(np.unique(g[p])), len(np.unique(g)))
    if k < 2:
        return None
    out = np.full(len(p), np.nan)
    if groups is None:
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(p)), p)
    else:
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(p)), p, g)
    for train, held in splits:
        if p[train].all() or not p[train].any():  # a fold whose other records hold one kind only: left unscored
            continue
        combiner = ScoreCombiner.fit({n: v[train] for n, v in values.items()}, p[train], seed=seed)
        out[held] = combiner.combine({n: v[held] for n, v in values.items()})
    scored = ~np.isnan(out)
    return auroc(out[scored], p[scored])


# ---- distribution distance ----


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and ``b``."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0.0)


def mmd2(x: np.ndarray, y: np.ndarray, sigma: float | None = None, most: int = 2000, seed: int = 0) -> float:
    """Unbiased squared maximum mean discrepancy between samples ``x`` (n, ...) and ``y`` (m, ...), flattened per
    sample, with the Gaussian kernel exp(-|a - b|² / (2 sigma²)).

    ``sigma`` None: the median heuristic, the median distance between distinct samples of the pooled
    (sub)sample. At most ``most`` samples of each are used, drawn without replacement (seeded). Near 0 (possibly
    slightly negative) for samples of one distribution.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if len(x) < 2 or len(y) < 2 or x.shape[1] != y.shape[1]:
        raise ECGError(f"MMD² needs at least 2 samples of the same shape on each side, got {x.shape} and {y.shape}")
    rng = np.random.default_rng(seed)
    if len(x) > most:
        x = x[np.sort(rng.choice(len(x), most, replace=False))]
    if len(y) > most:
        y = y[np.sort(rng.choice(len(y), most, replace=False))]
    dxx, dyy, dxy = _squared_distances(x, x), _squared_distances(y, y), _squared_distances(x, y)
    if sigma is None:
        pooled = np.concatenate([dxx[np.triu_indices(len(x), 1)], dyy[np.triu_indices(len(y), 1)], dxy.ravel()])
        sigma = float(np.sqrt(np.median(pooled))) or 1.0
    if not sigma > 0:
        raise ECGError(f"the MMD² kernel width must be positive, got {sigma}")
    g = -1.0 / (2 * sigma ** 2)
    kxx, kyy, kxy = np.exp(g * dxx), np.exp(g * dyy), np.exp(g * dxy)
    n, m = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


# ---- figures ----


def _curves(scores: np.ndarray, classes: np.ndarray, class_names: Sequence[str], normal: Sequence[str]
            ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, positive, scores) of each comparison drawn: all abnormal vs normal, then each abnormal class with
    beats vs the normal beats; comparisons lacking one kind are left out."""
    s = _scores(scores)
    c, normal_class = _classes(classes, class_names, normal, len(s))
    abnormal = ~normal_class[c]
    normal_label = "+".join(normal)
    out = [(f"abnormal vs {normal_label}", abnormal, s)]
    for k in _abnormal_classes(class_names, normal_class):
        keep = ~abnormal | (c == k)
        out.append((f"{class_names[k]} vs {normal_label}", c[keep] == k, s[keep]))
    return [(label, p, v) for label, p, v in out if 0 < p.sum() < len(p)]


def _save(fig: plt.Figure, path: Path) -> None:
    """Write ``fig`` to ``path`` as a PNG, atomically, and close it."""
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def roc_png(scores: np.ndarray, classes: np.ndarray, class_names: Sequence[str], normal: Sequence[str], path: Path,
            title: str) -> None:
    """Save the ROC curve of all abnormal beats vs normal ones and one per abnormal class vs the normal beats,
    AUROC in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, (label, p, s) in enumerate(_curves(scores, classes, class_names, normal)):
        fpr, tpr, _ = roc_curve(p, s)
        ax.plot(fpr, tpr, linewidth=2 if i == 0 else 1,
                label=f"{label}: AUROC {roc_auc_score(p, s):.3f} ({int(p.sum())} beats)")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate (sensitivity)",
           title=title)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def pr_png(scores: np.ndarray, classes: np.ndarray, class_names: Sequence[str], normal: Sequence[str], path: Path,
           title: str) -> None:
    """Save the precision-recall curve of all abnormal beats vs normal ones and one per abnormal class vs the
    normal beats, AUPRC (average precision) in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, (label, p, s) in enumerate(_curves(scores, classes, class_names, normal)):
        precision, recall, _ = precision_recall_curve(p, s)
        ax.plot(recall, precision, drawstyle="steps-post", linewidth=2 if i == 0 else 1,
                label=f"{label}: AUPRC {average_precision_score(p, s):.3f} (prevalence {p.mean():.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision (+P)", title=title)
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)


HISTOGRAM_BINS = 60
HISTOGRAM_CLIP = 99.5  # the bins end at this percentile of all scores, larger scores fall in the last bin


def score_histogram_png(scores: np.ndarray, classes: np.ndarray, class_names: Sequence[str], path: Path, title: str,
                        threshold: float | None = None) -> None:
    """Save one density histogram of the scores per class with beats, on shared bins (scores above the 99.5th
    percentile drawn in the last bin), with the decision threshold as a vertical line."""
    s = _scores(scores)
    c = np.asarray(classes).reshape(-1).astype(np.int64)
    if len(c) != len(s) or (len(c) and (c.min() < 0 or c.max() >= len(class_names))):
        raise ECGError(f"give one class index in 0..{len(class_names) - 1} per score")
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(s):
        top = float(np.percentile(s, HISTOGRAM_CLIP))
        edges = np.histogram_bin_edges(s[s <= top], bins=HISTOGRAM_BINS)
        for k, name in enumerate(class_names):
            if (c == k).any():
                ax.hist(np.clip(s[c == k], edges[0], edges[-1]), bins=edges, density=True, histtype="step",
                        linewidth=1.4, label=f"{name} ({int((c == k).sum())} beats)")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.4g}")
    ax.set(xlabel=f"anomaly score (higher = more abnormal; clipped at the {HISTOGRAM_CLIP}th percentile)",
           ylabel="density", title=title)
    ax.legend(fontsize=8)
    _save(fig, path)


GRID_BEATS = 16


def beat_grid_png(beats: np.ndarray, path: Path, title: str, fs: float) -> None:
    """Save up to 16 beats (n, channels, length) in a grid, one small axis per beat, every channel drawn, time
    in ms."""
    beats = np.asarray(beats, dtype=np.float64)
    if beats.ndim != 3 or not len(beats):
        raise ValueError(f"expected beats of shape (n, channels, length) with n >= 1, got {beats.shape}")
    beats = beats[:GRID_BEATS]
    cols = math.ceil(math.sqrt(len(beats)))
    rows = math.ceil(len(beats) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 1.8 * rows + 0.5), squeeze=False)
    t = np.arange(beats.shape[2]) / fs * 1000
    for i, ax in enumerate(axes.ravel()):
        if i >= len(beats):
            ax.axis("off")
            continue
        for ch, trace in enumerate(beats[i]):
            ax.plot(t, trace, linewidth=0.8, label=f"channel {ch}")
        ax.tick_params(labelsize=6)
        if i + cols >= len(beats):  # the lowest beat of its column
            ax.set_xlabel("ms", fontsize=7)
    if beats.shape[1] > 1:
        axes[0, 0].legend(fontsize=5, loc="upper right")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
