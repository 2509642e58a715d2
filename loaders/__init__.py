"""Dataset selectors: ``get_loader(name)`` returns the function that builds a dataset's splits."""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

from loaders import mitdb
from loaders.dataset import DataSplits, ECGDataset, make_dataloader
from toolbox.utils import ECGError

__all__ = ["DATASETS", "DataSplits", "ECGDataset", "get_loader", "make_dataloader", "raw_dir"]

# name -> (raw database folder, builder(raw_dir, cache_dir, *, split_seed, saved_manifest, data_url, progress))
DATASETS: dict[str, tuple[str, Callable[..., DataSplits]]] = {
    "ecg": ("mitdb", functools.partial(mitdb.build, binary=False)),
    "ecg_bin": ("mitdb", functools.partial(mitdb.build, binary=True)),
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
