"""Dataset selectors: ``get_loader(name)`` describes a dataset and returns the function that builds its splits."""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loaders import cinc2020, kaggle, mitdb, ptbxl
from loaders.dataset import DataSplits, ECGDataset, RecordDataset, make_dataloader
from toolbox.utils import ECGError

__all__ = ["DATASETS", "DataSplits", "DatasetSpec", "ECGDataset", "RecordDataset", "get_loader", "make_dataloader",
           "raw_dir"]


def _mitbih(raw_dir: Path, cache_dir: Path, *, binary: bool, split_seed: int, protocol: str = "intra",
            saved_manifest: dict | None = None, data_url: str | None = None, progress: bool = True,
            rr_features: bool = False, beat_format: str = "kaggle", median_beat: bool = False) -> DataSplits:
    """MIT-BIH beats: from the Kaggle CSVs when they lie in the folder, else from the raw records."""
    if kaggle.has_mitbih_csv(raw_dir):
        needs = [flag for flag, on in (("--rr-features", rr_features), ("--median-beat", median_beat),
                                       (f"--beat-format {beat_format}", beat_format != "kaggle")) if on]
        if needs:
            raise ECGError(f"{needs[0]} needs the raw MIT-BIH records, but {raw_dir} holds the Kaggle CSVs "
                           f"(beats cut at the R peak, without their times); point ECG_DATA_ROOT or --root-dir "
                           f"at the records")
        return kaggle.build_mitbih(raw_dir, cache_dir, binary=binary, split_seed=split_seed, protocol=protocol,
                                   saved_manifest=saved_manifest)
    return mitdb.build(raw_dir, cache_dir, binary=binary, split_seed=split_seed, protocol=protocol,
                       saved_manifest=saved_manifest, data_url=data_url, progress=progress, rr_features=rr_features,
                       beat_format=beat_format, median_beat=median_beat)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its raw folder, split builder, valid ``--split`` values (first = default) and kind.

    Record datasets (``fs`` set) are multi-label twelve-lead records cut into windows; the builder then also
    takes ``fs`` and ``seq_len``. Beat datasets are single-label examples of fixed length.
    """

    db: str
    build: Callable[..., DataSplits]
    splits: tuple[str, ...]
    fs: int | None = None  # default --fs of a record dataset

    @property
    def multilabel(self) -> bool:
        return self.fs is not None


DATASETS: dict[str, DatasetSpec] = {
    "ecg": DatasetSpec("mitdb", functools.partial(_mitbih, binary=False), ("intra", "inter")),
    "ecg_bin": DatasetSpec("mitdb", functools.partial(_mitbih, binary=True), ("intra", "inter")),
    "ptb": DatasetSpec("ptbdb", kaggle.build_ptb, ("intra",)),
    "cinc2020": DatasetSpec("cinc2020", cinc2020.build, ("records", *(f"source-{s}" for s in cinc2020.SOURCES)),
                            fs=500),
    "ptbxl": DatasetSpec("ptbxl", ptbxl.build, ("folds",), fs=ptbxl.NATIVE_FS),
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
