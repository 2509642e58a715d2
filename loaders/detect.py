"""R-peak detectors for recordings without beat annotations (the first step of annotating a new recording).

Each detector takes one lead (a 1-D signal in mV) and its sampling rate and returns the sorted sample indices
of the R peaks it finds. They wrap maintained libraries (NeuroKit2 and wfdb), imported on first use.
``benchmarks/detectors.py`` scores every one of them on the 48 MIT-BIH records.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from toolbox.utils import ECGError

# NeuroKit2's ecg_clean has a matching filter for these methods; the others use its default ("neurokit")
# where :func:`align` looks for the R peak around a detection: chosen on the DS1 records only. wfdb-gqrs marks the
# QRS about 33 ms before the reference annotation; aligned, 96.9% of its DS1 detections lie within 8 ms of it
# (benchmarks/detectors.py --align)
ALIGN_BEFORE_S, ALIGN_AFTER_S = 0.05, 0.10
# then every aligned peak moves by this much: the annotators' mark sits before the largest deflection, by a median
# of 1 sample at 360 Hz over the 22 DS1 records' aligned gqrs detections (25.9% of them on the mark unshifted, 41.7%
# shifted; within 8 ms: 96.9% both). Chosen on DS1 by that distance alone; the model scores played no part.
ALIGN_SHIFT_S = -1 / 360
_NK_CLEANING = {"neurokit", "pantompkins1985", "hamilton2002", "elgendi2010", "engzeemod2012"}


def _neurokit(method: str) -> Callable[[np.ndarray, float], np.ndarray]:
    def detect(signal: np.ndarray, fs: float) -> np.ndarray:
        import neurokit2 as nk  # heavy: imported where used

        clean = nk.ecg_clean(signal, sampling_rate=fs, method=method if method in _NK_CLEANING else "neurokit")
        _, info = nk.ecg_peaks(clean, sampling_rate=fs, method=method)
        return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)

    return detect


# wfdb's gqrs is pure Python, one step per sample: it runs on the lead resampled to this rate when the lead's is
# higher. On the 48 MIT-BIH records (benchmarks/detectors.py --align, one run after the other) 120 Hz scores as
# 360 Hz does (44 non-paced records: Se 99.876 against 99.875%, +P 99.557 against 99.508%; on the 22 DS1 records
# alone 99.833 against 99.822% and 99.747 against 99.732%) in 1.07 s per 30-minute record instead of 3.31 s
GQRS_FS = 120.0


def gqrs_rate(fs: float) -> float:
    """The rate ``wfdb-gqrs`` runs at for a lead sampled at ``fs`` Hz."""
    return min(float(fs), GQRS_FS)


def _gqrs(signal: np.ndarray, fs: float) -> np.ndarray:
    from wfdb import processing

    from loaders.dataset import resample, resampled_index

    rate = gqrs_rate(fs)
    low = resample(signal, fs, rate, padtype="line")
    peaks = np.asarray(processing.gqrs_detect(sig=low, fs=rate), dtype=np.int64)
    # back to the lead's samples (to within one sample at ``rate``; align() then finds the R peak)
    return np.minimum(resampled_index(peaks, rate, fs), len(signal) - 1)


def _xqrs(signal: np.ndarray, fs: float) -> np.ndarray:
    from wfdb import processing

    return np.asarray(processing.xqrs_detect(sig=signal, fs=fs, verbose=False), dtype=np.int64)


DETECTORS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    **{f"nk-{m}": _neurokit(m) for m in ("neurokit", "pantompkins1985", "hamilton2002", "elgendi2010",
                                         "kalidas2017", "rodrigues2021")},
    "wfdb-gqrs": _gqrs,
    "wfdb-xqrs": _xqrs,
}


def detect(signal: np.ndarray, fs: float, method: str) -> np.ndarray:
    """R-peak samples of one lead by ``method`` (a key of ``DETECTORS``): sorted, unique, inside the signal."""
    if method not in DETECTORS:
        raise ECGError(f"unknown R-peak detector {method!r}; choose one of {', '.join(DETECTORS)}")
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1 or not np.isfinite(signal).all():
        raise ECGError("R-peak detection needs one lead of finite values")
    try:
        peaks = np.unique(DETECTORS[method](signal, fs))
    except Exception as exc:  # the libraries raise many types, e.g. for a rate they do not support
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ECGError(f"{method} failed at {fs:g} Hz ({detail}); check --fs, or try another --detector") from None
    return peaks[(peaks >= 0) & (peaks < len(signal))]


def flutter_episodes(samples: np.ndarray, symbols: list[str], notes: list[str], length: int) -> list[tuple[int, int]]:
    """[start, end) samples of ventricular flutter or fibrillation episodes, from rhythm annotations ('+' with
    an aux note '(VFL' or '(VF'), each ending at the next rhythm annotation; EC57 leaves them out of QRS scores."""
    rhythm = [(int(s), n) for s, sym, n in zip(samples, symbols, notes, strict=True) if sym == "+"]
    ends = [s for s, _ in rhythm[1:]] + [length]
    return [(s, end) for (s, note), end in zip(rhythm, ends, strict=True) if note.rstrip("\x00") in ("(VFL", "(VF")]


def outside(peaks: np.ndarray, episodes: list[tuple[int, int]]) -> np.ndarray:
    """The ``peaks`` that lie in none of the [start, end) ``episodes``."""
    keep = np.ones(len(peaks), bool)
    for start, end in episodes:
        keep &= (peaks < start) | (peaks >= end)
    return peaks[keep]


def align(signal: np.ndarray, fs: float, peaks: np.ndarray, before_s: float, after_s: float,
          shift_s: float = 0.0) -> np.ndarray:
    """Each peak moved to the largest absolute value of the baseline-free ``signal`` from ``before_s`` before it
    to ``after_s`` after it (the R peak), then by ``shift_s`` (rounded to samples; toward where the reference
    annotations that training cuts at lie), kept inside the signal; sorted, duplicates merged."""
    from loaders.mitdb import remove_baseline

    peaks = np.asarray(peaks, dtype=np.int64)
    if not len(peaks):
        return peaks
    x = np.abs(remove_baseline(np.asarray(signal, dtype=np.float64), fs))
    offsets = np.arange(-int(round(before_s * fs)), int(round(after_s * fs)) + 1)
    idx = np.clip(peaks[:, None] + offsets[None, :], 0, len(x) - 1)
    moved = idx[np.arange(len(peaks)), np.argmax(x[idx], axis=1)] + int(round(shift_s * fs))
    return np.unique(np.clip(moved, 0, len(x) - 1))
