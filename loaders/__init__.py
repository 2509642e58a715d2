"""Dataset selectors: ``get_loader(name)`` returns the function that builds a dataset's splits."""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

from loaders import kaggle, mitdb
from loaders.dataset import DataSplits, ECGDataset, make_dataloader
from toolbox.utils import ECGError

__all__ = ["DATASETS", "DataSplits", "ECGDataset", "get_loader", "make_dataloader", "raw_dir"]


def _mitbih(raw_dir: Path, cache_dir: Path, *, binary: bool, split_seed: int, protocol: str = "intra",
            saved_manifest: dict | None = None, data_url: str | None = None, progress: bool = True) -> DataSplits:
    """MIT-BIH beats: from the Kaggle CSVs when they lie in the folder, else from the raw records."""
    if kaggle.has_mitbih_csv(raw_dir):
        return kaggle.build_mitbih(raw_dir, cache_dir, binary=binary, split_seed=split_seed, protocol=protocol,
                                   saved_manifest=saved_manifest)
    return mitdb.build(raw_dir, cache_dir, binary=binary, split_seed=split_seed, protocol=protocol,
                       saved_manifest=saved_manifest, data_url=data_url, progress=progress)


# name -> (raw database folder, builder(raw_dir, cache_dir, *, split_seed, protocol, saved_manifest, data_url, ...))
DATASETS: dict[str, tuple[str, Callable[..., DataSplits]]] = {
    "ecg": ("mitdb", functools.partial(_mitbih, binary=False)),
    "ecg_bin": ("mitdb", functools.partial(_mitbih, binary=True)),
    "ptb": ("ptbdb", kaggle.build_ptb),
}


def get_loader(name: str) -> tuple[str, Callable[..., DataSplits]]:
    """The raw database folder name and the split builder of dataset ``name``."""
    if name not in DATASETS:
        raise ECGError(f"unknown dataset '{name}'; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def raw_dir(db: str, root_dir: Path) -> Path:
    """Where raw database ``db`` is read from: ``$ECG_DATA_ROOT/<db>`` if that is set, else ``<root-dir>/<db>``."""
    env = os.environ.get("ECG_DATA_ROOT")
    return (Path(env) if env else Path(root_dir)) / db
