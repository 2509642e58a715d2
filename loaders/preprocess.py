"""Preprocessors applied once, when records are cached: bandpass, baseline removal, z-score or min-max normalisation.

Each function works along one axis of an array of any shape. ``PREPROCESSORS`` names them in the order
:class:`Preprocess` applies them, whatever order the flags give: filters first (bandpass, then baseline
removal), then at most one normalisation. They run at the cache rate, after resampling (``--fs`` is the
resampling preprocessor): one filter for every record, whatever rate its publisher recorded it at, and the
same filter on a new recording, which is first resampled to the model's rate.

A record in mV is stored as counts of its own resolution (``loaders.mapped``); a normalised one has no mV
left, so it is stored at a fixed resolution that the cache plan knows before any signal is read
(``COUNT_SCALE``, powers of two so that every reader gets exactly the same numbers): z-scores at 2**-10
(about 0.001 sd, within +-32 sd), min-max values in [0, 1] at 2**-14. Samples outside the int16 range are
clipped with a warning.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter
from scipy.signal import butter, sosfiltfilt

from loaders import BANDPASS, preprocess_tag
from loaders.mapped import COUNTS, to_counts, to_mv
from toolbox.utils import ECGError

log = logging.getLogger(__name__)

ORDER = 4  # Butterworth order of the bandpass, per direction (zero phase: run forwards and backwards)
BASELINE_S = (0.2, 0.6)  # median filter lengths of the baseline, in seconds (de Chazal et al. 2004)
NORMALISERS = ("zscore", "minmax")
UNITS = {None: "mV", "zscore": "z-score", "minmax": "min-max"}
COUNT_SCALE = {"zscore": 2.0 ** -10, "minmax": 2.0 ** -14}  # units per int16 count of a normalised record


def bandpass(x: np.ndarray, fs: float, low: float, high: float, order: int = ORDER, axis: int = -1) -> np.ndarray:
    """Zero-phase Butterworth bandpass from ``low`` to ``high`` Hz along ``axis`` (second-order sections, run
    forwards and backwards: no delay, the magnitude response squared); float64."""
    if not 0 < low < high < fs / 2:
        raise ECGError(f"a bandpass of {low:g}-{high:g} Hz needs 0 < low < high < {fs / 2:g} Hz (half the rate "
                       f"of {fs:g} Hz); choose other --bandpass edges")
    sos = butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    x = np.asarray(x, dtype=np.float64)
    short = x.shape[axis] <= 3 * (2 * len(sos) + 1)  # shorter than scipy's default padding
    return sosfiltfilt(sos, x, axis=axis, padlen=x.shape[axis] - 1 if short else None)


def remove_baseline(x: np.ndarray, fs: float, axis: int = -1) -> np.ndarray:
    """Baseline wander removed: the signal minus its median filtered over 200 ms, then 600 ms (de Chazal et al.
    2004), each lane of ``axis`` on its own (scipy's one-dimensional median filter is the fast one); float64."""
    x = np.asarray(x, dtype=np.float64)
    lanes = np.moveaxis(x, axis, -1)
    flat = lanes.reshape(-1, lanes.shape[-1])
    sizes = [int(s * fs) | 1 for s in BASELINE_S]
    out = np.empty_like(flat)
    for i, lane in enumerate(flat):
        out[i] = lane - median_filter(median_filter(lane, sizes[0], mode="nearest"), sizes[1], mode="nearest")
    return np.moveaxis(out.reshape(lanes.shape), -1, axis)


def zscore(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean 0 and standard deviation 1 along ``axis`` (a constant lane becomes 0); float64."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.max(axis=axis, keepdims=True) == x.min(axis=axis, keepdims=True)
    sd = np.where(flat, 1.0, x.std(axis=axis, keepdims=True))
    return np.where(flat, 0.0, (x - x.mean(axis=axis, keepdims=True)) / sd)


def minmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Scaled to [0, 1] along ``axis``: minimum 0, maximum 1 (a constant lane becomes 0); float64."""
    x = np.asarray(x, dtype=np.float64)
    low = x.min(axis=axis, keepdims=True)
    span = x.max(axis=axis, keepdims=True) - low
    return np.where(span > 0, (x - low) / np.where(span > 0, span, 1.0), 0.0)


# --preprocess: name -> the step on (..., samples) at ``fs`` Hz with bandpass edges ``band``; applied in this order
# (the names and order are ``loaders.PREPROCESS_STEPS``, which the flag parser lists without importing this module)
PREPROCESSORS: dict[str, Callable[[np.ndarray, float, tuple[float, float]], np.ndarray]] = {
    "bandpass": lambda x, fs, band: bandpass(x, fs, band[0], band[1]),
    "baseline": lambda x, fs, band: remove_baseline(x, fs),
    "zscore": lambda x, fs, band: zscore(x),
    "minmax": lambda x, fs, band: minmax(x),
}


@dataclass(frozen=True)
class Preprocess:
    """The steps applied to every record (named in any order, applied in ``PREPROCESSORS`` order) and the bandpass
    edges; it names the cache and the run, and ``describe()`` goes into every checkpoint."""

    steps: tuple[str, ...] = ()
    band: tuple[float, float] = BANDPASS

    def __post_init__(self) -> None:
        unknown = [s for s in self.steps if s not in PREPROCESSORS]
        if unknown:
            raise ECGError(f"unknown preprocessing step '{unknown[0]}'; valid: {', '.join(PREPROCESSORS)}")
        if all(s in self.steps for s in NORMALISERS):
            raise ECGError("zscore and minmax both normalise a record; choose one of them")
        object.__setattr__(self, "steps", tuple(s for s in PREPROCESSORS if s in self.steps))
        band = self.band if "bandpass" in self.steps else BANDPASS  # the edges count only with a bandpass
        object.__setattr__(self, "band", (float(band[0]), float(band[1])))

    @classmethod
    def from_dict(cls, d: dict | None) -> Preprocess:
        """The preprocessing a checkpoint's or splits.json's ``preprocess`` records (none when it names no steps)."""
        d = d or {}
        return cls(tuple(d.get("steps") or ()), tuple(d.get("bandpass") or BANDPASS))

    def describe(self) -> dict:
        """What ``preprocess`` of splits.json and the checkpoints records (with ``units``, written beside it)."""
        return {"steps": list(self.steps), **({"bandpass": list(self.band)} if "bandpass" in self.steps else {})}

    @property
    def tag(self) -> str:
        """The steps in one word for cache and run names (``bandpass0.5-40+zscore``); empty without steps."""
        return preprocess_tag(self.steps, self.band)

    @property
    def normaliser(self) -> str | None:
        return next((s for s in self.steps if s in NORMALISERS), None)

    @property
    def units(self) -> str:
        """What a stored sample is: mV, or the normalised unit."""
        return UNITS[self.normaliser]

    def apply(self, x: np.ndarray, fs: float, axis: int = -1) -> np.ndarray:
        """The steps along ``axis`` of ``x`` at ``fs`` Hz (float64; ``x`` itself without steps). Every caller's array
        is worked on in one layout, (..., samples) contiguous, so cache and prediction compute the same numbers."""
        if not self.steps:
            return x
        lanes = np.ascontiguousarray(np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1))
        for step in self.steps:
            lanes = PREPROCESSORS[step](lanes, fs, self.band)
        return np.moveaxis(lanes, -1, axis)

    def scale(self, own: np.ndarray) -> np.ndarray:
        """Units per count of the stored records: their ``own`` mV per count (records, leads), or the fixed
        ``COUNT_SCALE`` of normalised units."""
        fixed = COUNT_SCALE.get(self.normaliser)
        own = np.asarray(own, dtype=np.float32)
        return own if fixed is None else np.full(own.shape, fixed, dtype=np.float32)

    def counts(self, mv: np.ndarray, fs: float, own: np.ndarray, what: str) -> np.ndarray:
        """A record for the cache: ``mv`` (samples, leads) at ``fs`` Hz, preprocessed, as int16 counts of
        ``scale(own)`` (``own``: its mV per count per lead); samples outside the int16 range are clipped with a
        warning naming ``what``."""
        return _quantised(self.apply(mv, fs, axis=0), self.scale(own), what)

    def recording(self, signal: np.ndarray, fs: float) -> np.ndarray:
        """A recording to predict, (leads, samples) at the model's rate ``fs``: preprocessed as the cache was, and
        normalised units rounded to the cache's resolution (so a record gives the numbers its cache read gives);
        float32."""
        if not self.steps:
            return signal
        x = self.apply(signal, fs, axis=-1)
        if self.normaliser is None:
            return x.astype(np.float32)
        scale = self.scale(np.ones(x.shape[0]))
        return to_mv(_quantised(x.T, scale, "a recording"), scale).T


NO_PREPROCESS = Preprocess()  # the default: records as their publisher recorded them (resampled to --fs)


def cache_name(base: str, prep: Preprocess, version: int) -> str:
    """A record cache's name: ``<base>_v<version>`` without steps (the caches made before preprocessing existed keep
    their names), else ``<base>_<steps>_v<version>``, so that no cache's name is another's followed by an underscore
    (``loaders.mapped.cached_records`` takes such names for older inputs of the same cache)."""
    return f"{base}_{prep.tag}_v{version}" if prep.steps else f"{base}_v{version}"


def check_run(saved: dict | None, prep: Preprocess) -> None:
    """A run being continued or tested must be preprocessed as its splits.json's ``preprocess`` says."""
    theirs = Preprocess.from_dict(saved)
    if theirs != prep:
        raise ECGError(f"the run's splits.json was made with preprocessing {theirs.tag or 'none'}, not "
                       f"{prep.tag or 'none'}; give the run's --preprocess and --bandpass")


def _quantised(x: np.ndarray, scale: np.ndarray, what: str) -> np.ndarray:
    """``x`` (samples, leads) as int16 counts of ``scale`` per lead, clipped to the int16 range with a warning."""
    info = np.iinfo(COUNTS)
    steps = np.rint(np.asarray(x, dtype=np.float64) / np.asarray(scale, dtype=np.float64))
    clipped = int(np.count_nonzero((steps < info.min) | (steps > info.max)))
    if clipped:
        log.warning("%s: %d samples lie outside the int16 range at %g units per count and were clipped", what,
                    clipped, float(np.max(scale)))
    return to_counts(x, scale)


def beat_normalised(x: np.ndarray, how: str | None) -> np.ndarray:
    """Beats (n, samples) each normalised on its own by ``how`` (zscore or minmax; None: unchanged); float32."""
    if how is None:
        return x
    if how not in NORMALISERS:
        raise ECGError(f"beats are normalised by {' or '.join(NORMALISERS)}, not {how}")
    return PREPROCESSORS[how](x, 0.0, BANDPASS).astype(np.float32)

