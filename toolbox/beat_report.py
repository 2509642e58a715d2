"""What ``predict.py`` writes for one annotated recording: a beat table, a WFDB annotation file, a summary and
a strip plot of the windows with most non-N beats."""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolbox.utils import atomic_write

# WFDB annotation symbols of the model's classes (AAMI classes are their own symbols; a binary model's
# "abnormal" is written as Q, unclassifiable, since WFDB has no symbol for "not normal")
SYMBOLS = {"N": "N", "S": "S", "V": "V", "F": "F", "Q": "Q", "abnormal": "Q"}
COLOURS = {"N": "tab:green", "S": "tab:orange", "V": "tab:red", "F": "tab:purple", "Q": "tab:gray",
           "abnormal": "tab:red"}
HR_BEATS = 8  # the minimum and maximum heart rate are those of running means over this many RR intervals
RUN_LENGTH = 3  # a run is at least this many consecutive V beats
STRIP_S = 10.0  # seconds per strip window
STRIPS = 3  # windows in the strip plot


def output_names(record: str, extension: str) -> list[str]:
    """The files written for ``record``."""
    return [f"{record}_beats.csv", f"{record}.{extension}", f"{record}_summary.json", f"{record}_strip.png"]


def write_beats_csv(path: Path, samples: np.ndarray, fs: float, labels: np.ndarray, probs: np.ndarray,
                    classes: Sequence[str]) -> None:
    """One row per beat: sample (at the recording's rate), time in s, class, then the class probabilities."""
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["sample", "time_s", "class", *(f"p_{c}" for c in classes)])
            for s, lab, p in zip(samples, labels, probs, strict=True):
                out.writerow([int(s), f"{s / fs:.3f}", classes[lab], *(f"{v:.4f}" for v in p)])

    atomic_write(path, write)


def write_annotations(out_dir: Path, record: str, extension: str, samples: np.ndarray, fs: float,
                      labels: np.ndarray, classes: Sequence[str]) -> None:
    """``<record>.<extension>``: a WFDB annotation file with the beats' AAMI symbols (``wfdb.rdann`` reads it)."""
    import wfdb

    wfdb.wrann(record, extension, np.asarray(samples, dtype=np.int64),
               symbol=[SYMBOLS[classes[lab]] for lab in labels], fs=fs, write_dir=str(out_dir))


def runs_of(labels: np.ndarray, target: int, min_length: int = RUN_LENGTH) -> list[tuple[int, int]]:
    """(first index, length) of every run of at least ``min_length`` consecutive ``target`` labels."""
    hit = np.concatenate([[0], (np.asarray(labels) == target).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(hit))
    starts, ends = edges[::2], edges[1::2]
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True) if e - s >= min_length]


def summary(samples: np.ndarray, fs: float, labels: np.ndarray, classes: Sequence[str],
            duration_s: float) -> dict[str, Any]:
    """Beats per class, heart rate (mean, and min/max of ``HR_BEATS``-interval running means), ectopic burden
    (% of beats that are not N, and per class) and runs of >= ``RUN_LENGTH`` consecutive V beats."""
    counts = np.bincount(labels, minlength=len(classes))
    rr = np.diff(np.asarray(samples, dtype=np.float64)) / fs
    heart = {"mean_bpm": None, "min_bpm": None, "max_bpm": None}
    if len(rr):
        k = min(HR_BEATS, len(rr))
        running = np.convolve(rr, np.ones(k) / k, mode="valid")
        heart = {"mean_bpm": round(60.0 / float(rr.mean()), 1), "min_bpm": round(60.0 / float(running.max()), 1),
                 "max_bpm": round(60.0 / float(running.min()), 1)}
    total = max(int(counts.sum()), 1)
    normal = classes.index("N") if "N" in classes else None
    runs = []
    if "V" in classes:
        runs = [{"start_s": round(float(samples[i]) / fs, 3), "beats": n}
                for i, n in runs_of(labels, classes.index("V"))]
    return {
        "duration_s": round(duration_s, 2), "beats": int(counts.sum()),
        "beats_per_class": {c: int(n) for c, n in zip(classes, counts, strict=True)},
        "heart_rate": {**heart, "running_mean_of_rr_intervals": HR_BEATS},
        "ectopic_burden_percent": {
            "not_N": round(100.0 * (total - (counts[normal] if normal is not None else 0)) / total, 2),
            **{c: round(100.0 * n / total, 2) for c, n in zip(classes, counts, strict=True) if c != "N"}},
        "v_runs": {"min_beats": RUN_LENGTH, "count": len(runs), "runs": runs},
    }


def strip_windows(samples: np.ndarray, labels: np.ndarray, normal: int | None, fs: float, length: int,
                  n: int = STRIPS, window_s: float = STRIP_S) -> list[int]:
    """Start samples of the ``n`` windows of ``window_s`` (on a grid of whole windows) with most non-N beats,
    earliest first among equals; fewer when the recording is shorter."""
    win = int(round(window_s * fs))
    n_windows = max(1, -(-length // win))
    abnormal = np.asarray(labels) != normal if normal is not None else np.ones(len(labels), bool)
    per_window = np.bincount(np.asarray(samples)[abnormal] // win, minlength=n_windows)[:n_windows]
    order = sorted(range(n_windows), key=lambda w: (-per_window[w], w))[:n]
    return sorted(w * win for w in order)


def plot_strips(path: Path, signal: np.ndarray, fs: float, lead: str, samples: np.ndarray, labels: np.ndarray,
                classes: Sequence[str], title: str) -> None:
    """The strip plot: the windows of :func:`strip_windows`, one per row, beats coloured and labelled by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    normal = classes.index("N") if "N" in classes else None
    starts = strip_windows(samples, labels, normal, fs, len(signal))
    win = int(round(STRIP_S * fs))
    fig, axes = plt.subplots(len(starts), 1, figsize=(14, 2.6 * len(starts)), squeeze=False)
    for ax, start in zip(axes[:, 0], starts, strict=True):
        stop = min(start + win, len(signal))
        t = np.arange(start, stop) / fs
        ax.plot(t, signal[start:stop], color="black", linewidth=0.7)
        inside = (samples >= start) & (samples < stop)
        low, top = (float(np.min(signal[start:stop])), float(np.max(signal[start:stop]))) if stop > start else (0, 1)
        span = max(top - low, 1e-6)
        ax.set_ylim(low - 0.05 * span, top + 0.25 * span)  # room for the labels above the highest peak
        top += 0.05 * span
        for s, lab in zip(samples[inside], labels[inside], strict=True):
            name = classes[lab]
            ax.axvline(s / fs, color=COLOURS.get(name, "tab:blue"), alpha=0.35, linewidth=2)
            ax.text(s / fs, top, SYMBOLS.get(name, name), color=COLOURS.get(name, "tab:blue"), ha="center",
                    va="bottom", fontsize=9, fontweight="bold")
        ax.set_xlim(start / fs, start / fs + STRIP_S)
        ax.set_ylabel(lead)
        counts = np.bincount(labels[inside], minlength=len(classes))
        ax.set_title(f"{start / fs:.0f}-{start / fs + STRIP_S:.0f} s: "
                     + ", ".join(f"{n} {c}" for c, n in zip(classes, counts, strict=True) if n), fontsize=9)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
