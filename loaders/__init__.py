"""Dataset selectors: ``get_loader(name)`` describes a dataset and returns the function that builds its splits.

This module imports nothing heavy: a dataset's reader (``loaders/<db>.py``) is imported when its splits
are built, so the flag parser can list datasets, splits and beat formats at once.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolbox.utils import ECGError

__all__ = ["BANDPASS", "BEAT_FORMAT_FS", "BEAT_FORMAT_NAMES", "DATASETS", "DETECTOR_NAMES", "LEAD_SETS",
           "PREPROCESS_STEPS", "PTBXL_LABEL_SETS", "SOURCES", "DatasetSpec", "get_loader", "preprocess_tag", "raw_dir"]

# PhysioNet/CinC Challenge 2020-2021 record-name prefix -> source database (the ``source-X`` splits)
SOURCES = {"A": "CPSC 2018", "Q": "CPSC-Extra", "I": "St Petersburg INCART", "S": "PTB", "HR": "PTB-XL",
           "E": "Georgia", "JS": "Chapman-Shaoxing/Ningbo"}
# --beat-format values; their extraction parameters are ``loaders.mitdb.BEAT_FORMATS`` (same names, same order)
BEAT_FORMAT_NAMES = ("kaggle", "centered", "filtered", "beatgan")
BEAT_FORMAT_FS = {"kaggle": 125, "centered": 125, "filtered": 125, "beatgan": 360}  # their rates in Hz (``fs``)
# R-peak detectors of ``loaders.detect.DETECTORS`` (named here so that --help imports nothing heavy)
CHALLENGE_SPLITS = ("records", *(f"source-{s}" for s in SOURCES))
# the PTB-XL benchmark's label sets (loaders.ptbxl.label_map defines them)
PTBXL_LABEL_SETS = ("superdiagnostic", "subdiagnostic", "diagnostic", "form", "rhythm", "all")
LEAD_SETS = (12, 6, 4, 3, 2)  # the Challenge 2021 lead subsets (loaders.cinc2020.LEAD_SETS names their leads)
DETECTOR_NAMES = ("nk-neurokit", "nk-pantompkins1985", "nk-hamilton2002", "nk-elgendi2010", "nk-kalidas2017",
                  "nk-rodrigues2021", "wfdb-gqrs", "wfdb-xqrs")
# --preprocess steps, in the order they are applied (``loaders.preprocess.PREPROCESSORS``: same names, same order),
# and the default --bandpass edges in Hz
PREPROCESS_STEPS = ("bandpass", "baseline", "zscore", "minmax")
BANDPASS = (0.5, 40.0)


def preprocess_tag(steps: Sequence[str], band: Sequence[float] = BANDPASS) -> str:
    """Preprocessing steps in one word for cache and run names, e.g. ``bandpass0.5-40+zscore``; empty without steps."""
    return "+".join(f"bandpass{band[0]:.12g}-{band[1]:.12g}" if s == "bandpass" else s for s in steps)


def _lazy(module: str, function: str, **fixed: Any) -> Callable[..., Any]:
    """``loaders.<module>.<function>(..., **fixed)``, imported on the first call."""
    def build(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(f"loaders.{module}"), function)(*args, **fixed, **kwargs)

    build.__name__ = f"{module}.{function}"
    return build


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its raw folder, split builder, valid ``--split`` values (first = default) and kind.

    Record datasets (``fs`` set) are multi-label twelve-lead records cut into windows; the builder then also
    takes ``fs`` and ``seq_len``. Beat datasets are single-label examples of fixed length.
    """

    db: str
    build: Callable[..., Any]  # (raw_dir, cache_dir, *, split_seed, protocol, saved_manifest, ...) -> DataSplits
    splits: tuple[str, ...]
    fs: int | None = None  # default --fs of a record dataset
    lead_sets: tuple[int, ...] = ()  # --leads values (the Challenge 2021 subsets); the builder then takes ``leads``
    label_sets: tuple[str, ...] = ()  # --labels values (first = default); the builder then takes ``labels``

    @property
    def multilabel(self) -> bool:
        return self.fs is not None


DATASETS: dict[str, DatasetSpec] = {
    "ecg": DatasetSpec("mitdb", _lazy("mitdb", "build_beats", binary=False), ("intra", "inter")),
    "ecg_bin": DatasetSpec("mitdb", _lazy("mitdb", "build_beats", binary=True), ("intra", "inter")),
    "ptb": DatasetSpec("ptbdb", _lazy("kaggle", "build_ptb"), ("intra",)),
    "cinc2020": DatasetSpec("cinc2020", _lazy("cinc2020", "build"), CHALLENGE_SPLITS, fs=500, lead_sets=LEAD_SETS),
    "cinc2021": DatasetSpec("cinc2021", _lazy("cinc2020", "build", release=2021), CHALLENGE_SPLITS, fs=500,
                            lead_sets=LEAD_SETS),
    "ptbxl": DatasetSpec("ptbxl", _lazy("ptbxl", "build"), ("folds",), fs=100, label_sets=PTBXL_LABEL_SETS),
}


def get_loader(name: str) -> DatasetSpec:
    """The description and split builder of dataset ``name``."""
    if name not in DATASETS:
        raise ECGError(f"unknown dataset '{name}'; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def raw_dir(db: str, root_dir: Path) -> Path:
    """Where raw database ``db`` is read from: ``$ECG_DATA_ROOT/<db>`` if that is set, else ``<root-dir>/<db>``."""
    env = os.environ.get("ECG_DATA_ROOT")
    return (Path(env) if env else Path(root_dir)) / db
