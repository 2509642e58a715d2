"""Beat-by-beat comparison of detected, classified beats with reference annotations (ANSI/AAMI EC57 style).

A detected beat matches a reference beat at most ``MATCH_WINDOW_S`` away; closest pairs are matched first and
each beat is used once. QRS detection is scored by sensitivity (matched / reference beats) and positive
predictivity (matched / detected beats). Classes are scored on the matched beats only (rows: the reference
class, columns: the detected beat's class); missed reference beats and extra detected beats are counted per
class beside them, so a detector's losses never hide inside the class scores.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MATCH_WINDOW_S = 0.150


def match_beats(reference: np.ndarray, detected: np.ndarray, window: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of (reference index, detected index) at most ``window`` samples apart, closest first, each beat
    used once; returned in reference order."""
    ref = np.asarray(reference, dtype=np.float64)
    det = np.asarray(detected, dtype=np.float64)
    if not len(ref) or not len(det):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(det, kind="stable")
    lo = np.searchsorted(det[order], ref - window, side="left")
    hi = np.searchsorted(det[order], ref + window, side="right")
    counts = hi - lo
    ref_idx = np.repeat(np.arange(len(ref)), counts)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    det_idx = order[np.arange(counts.sum()) + starts]
    distance = np.abs(ref[ref_idx] - det[det_idx])
    used_ref = np.zeros(len(ref), bool)
    used_det = np.zeros(len(det), bool)
    pairs = []
    for j in np.lexsort((det_idx, ref_idx, distance)):
        r, d = ref_idx[j], det_idx[j]
        if not used_ref[r] and not used_det[d]:
            used_ref[r] = used_det[d] = True
            pairs.append((r, d))
    pairs.sort()
    paired = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return paired[:, 0], paired[:, 1]


def compare(ref_samples: np.ndarray, ref_labels: np.ndarray, det_samples: np.ndarray, det_labels: np.ndarray,
            fs: float, n_classes: int, window_s: float = MATCH_WINDOW_S) -> dict[str, Any]:
    """Counts of one record: matched beats' confusion matrix (reference x detected class), and per class the
    reference beats missed and the detected beats without a reference beat."""
    ref_labels = np.asarray(ref_labels, dtype=np.int64)
    det_labels = np.asarray(det_labels, dtype=np.int64)
    if len(ref_samples) != len(ref_labels) or len(det_samples) != len(det_labels):
        raise ValueError("each beat needs one sample and one label")
    r, d = match_beats(ref_samples, det_samples, window_s * fs)
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (ref_labels[r], det_labels[d]), 1)
    missed = np.ones(len(ref_labels), bool)
    missed[r] = False
    extra = np.ones(len(det_labels), bool)
    extra[d] = False
    return {"confusion": confusion,
            "missed": np.bincount(ref_labels[missed], minlength=n_classes),
            "extra": np.bincount(det_labels[extra], minlength=n_classes)}


def pool(counts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Gross counts: the sum of records' counts."""
    return {key: sum(c[key] for c in counts) for key in ("confusion", "missed", "extra")}


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def scores(counts: dict[str, Any], classes: Sequence[str], scored: Sequence[str] = ("N", "S", "V", "F")) -> dict:
    """QRS Se and +P, and per class in ``scored`` Se, +P and F1 on the matched beats (over every class of the
    confusion matrix, so a beat labelled with an unscored class still counts as missed), with missed and extra
    beats. A score without beats to count (no reference beats of the class for Se, none detected for +P) is None."""
    confusion = np.asarray(counts["confusion"])
    matched = int(confusion.sum())
    missed, extra = int(np.sum(counts["missed"])), int(np.sum(counts["extra"]))
    out = {}
    for c in scored:
        i = classes.index(c)
        tp, row, col = confusion[i, i], confusion[i].sum(), confusion[:, i].sum()
        out[c] = {"se": _ratio(tp, row), "+p": _ratio(tp, col), "f1": _ratio(2 * tp, row + col),
                  "reference": int(row + counts["missed"][i]), "detected": int(col + counts["extra"][i]),
                  "missed": int(counts["missed"][i]), "extra": int(counts["extra"][i])}
    return {
        "qrs": {"se": matched / (matched + missed) if matched + missed else 0.0,
                "+p": matched / (matched + extra) if matched + extra else 0.0,
                "reference": matched + missed, "detected": matched + extra, "missed": missed, "extra": extra},
        "classes": out,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def table(rows: dict[str, dict[str, Any]], scored: Sequence[str] = ("N", "S", "V", "F")) -> str:
    """Markdown table of :func:`scores` per row name (records, then "gross"): QRS Se/+P (%), missed and extra
    beats, and per class Se, +P and F1 (%) on the matched beats."""
    head = ["record", "beats", "QRS Se", "QRS +P", "missed", "extra"]
    head += [f"{c} {m}" for c in scored for m in ("Se", "+P", "F1")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in rows.items():
        q = s["qrs"]
        cells = [name, str(q["reference"]), _pct(q["se"]), _pct(q["+p"]), str(q["missed"]), str(q["extra"])]
        for c in scored:
            k = s["classes"][c]
            cells += [_pct(k["se"]), _pct(k["+p"]), _pct(k["f1"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bootstrap(counts: Sequence[dict[str, Any]], classes: Sequence[str], scored: Sequence[str], n: int = 1000,
              seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals of the gross QRS Se/+P and each scored class's Se, +P and F1, with records drawn
    with replacement (the record is the unit: beats of one record are not independent)."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n):
        pick = rng.integers(0, len(counts), len(counts))
        s = scores(pool([counts[i] for i in pick]), classes, scored)
        values = {"qrs se": s["qrs"]["se"], "qrs +p": s["qrs"]["+p"]}
        for c in scored:
            values.update({f"{c} {m}": s["classes"][c][m] for m in ("se", "+p", "f1")})
        for key, value in values.items():
            draws.setdefault(key, []).append(np.nan if value is None else value)
    tail = 100 * (1 - level) / 2
    return {k: (float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail))) for k, v in draws.items()}
