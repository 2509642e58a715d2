"""The Kaggle "ECG Heartbeat Categorization" CSVs (Kachuee et al. 2018): 187 values and a label per row.

``mitbih_train.csv`` / ``mitbih_test.csv`` (5 classes) are used by ``--dataset ecg`` / ``ecg_bin`` when
they lie in the MIT-BIH data folder; ``ptbdb_normal.csv`` / ``ptbdb_abnormal.csv`` (0 normal, 1
abnormal) make ``--dataset ptb``.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loaders.dataset import DataSplits, ECGDataset, cached_arrays, fingerprint, holdout
from loaders.download import KAGGLE_ARCHIVE_SHA256, KAGGLE_GDRIVE_ID, fetch_archive, safe_extract, sha256_file
from loaders.mitdb import AAMI_CLASSES, BINARY_CLASSES, intra_patient_split
from toolbox.utils import ECGError, atomic_write

BEAT_LENGTH = 187
MITBIH_FILES = ("mitbih_train.csv", "mitbih_test.csv")
PTB_FILES = ("ptbdb_normal.csv", "ptbdb_abnormal.csv")
PTB_CLASSES = ["normal", "abnormal"]
# Rows of the published PTB files: a content check for a download whose archive digest is not pinned.
KNOWN_ROWS = {"ptbdb_normal.csv": 4_046, "ptbdb_abnormal.csv": 10_506}


def _diagnose(path: Path, n_classes: int) -> str:
    """The first problem of a malformed CSV, as '<file>: row R ...' (slow: only called after a failure)."""
    with open(path, newline="") as f:
        for r, row in enumerate(csv.reader(f), 1):
            if len(row) != BEAT_LENGTH + 1:
                return f"{path}: row {r} has {len(row)} columns, expected {BEAT_LENGTH + 1} (187 values and a label)"
            for c, cell in enumerate(row, 1):
                try:
                    value = float(cell)
                except ValueError:
                    return f"{path}: row {r}, column {c}: {cell.strip()[:20]!r} is not a number"
                if not math.isfinite(value):
                    return f"{path}: row {r}, column {c} is {cell.strip()} (values must be finite)"
            label = float(row[-1])
            if label != int(label) or not 0 <= label < n_classes:
                return f"{path}: row {r}: label {row[-1].strip()} is not one of 0..{n_classes - 1}"
    return f"{path}: unreadable as a CSV of 188 numbers per row"


def read_csv(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Beats (n, 187) float32 and labels (n,) int64 of a Kaggle-format CSV; a malformed one is an ECGError."""
    if not path.is_file() or path.stat().st_size == 0:
        raise ECGError(f"{path} is {'empty' if path.is_file() else 'missing'}; it needs rows of 187 values "
                       f"and a label")
    try:
        table = pd.read_csv(path, header=None, dtype=np.float64, engine="c").to_numpy()
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        raise ECGError(_diagnose(path, n_classes)) from None
    labels = table[:, -1] if table.ndim == 2 and table.shape[1] else np.zeros(0)
    if (table.shape[1] != BEAT_LENGTH + 1 or not np.isfinite(table).all()
            or np.any(labels != np.round(labels)) or np.any((labels < 0) | (labels >= n_classes))):
        raise ECGError(_diagnose(path, n_classes))
    return table[:, :-1].astype(np.float32), labels.astype(np.int64)


def load_csv(path: Path, cache_dir: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_csv` through a cache keyed by the file's size and modification time."""
    arrays = cached_arrays(cache_dir, f"csv_{path.stem}_{n_classes}", fingerprint([path]),
                           lambda: dict(zip(("x", "label"), read_csv(path, n_classes), strict=True)), what=str(path))
    return arrays["x"], arrays["label"]


def write_csv(path: Path, x: np.ndarray, labels: np.ndarray) -> None:
    """Write beats and labels in the Kaggle format (no header, '%.18e' like the published files)."""
    table = np.concatenate([x.astype(np.float64), labels[:, None].astype(np.float64)], axis=1)
    atomic_write(path, lambda tmp: np.savetxt(tmp, table, fmt="%.18e", delimiter=","))


def has_mitbih_csv(folder: Path) -> bool:
    return all((folder / name).is_file() for name in MITBIH_FILES)


def _file_info(path: Path) -> dict[str, Any]:
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _manifest(source: str, files: dict[str, Path], split: dict[str, np.ndarray], labels: dict[str, np.ndarray],
              classes: list[str], seed: int) -> dict[str, Any]:
    """splits.json for CSV data: the files (with digests) and the row numbers (0-based) of every split."""
    return {"database": source, "protocol": "kaggle-csv", "split_seed": seed,
            "files": {k: _file_info(p) for k, p in files.items()},
            "counts": {k: dict(zip(classes, np.bincount(labels[k], minlength=len(classes)).tolist(), strict=True))
                       for k in split},
            "rows": {k: v.tolist() for k, v in split.items()}}


def _check_saved(saved: dict[str, Any], files: dict[str, Path]) -> dict[str, np.ndarray]:
    try:
        for key, path in files.items():
            if saved["files"][key]["sha256"] != sha256_file(path):
                raise ECGError(f"{path} changed since this run was made (SHA-256 differs from its splits.json); "
                               f"start a new run with --version bump")
        return {k: np.asarray(saved["rows"][k], dtype=np.int64) for k in ("train", "val", "test")}
    except (KeyError, TypeError, ValueError) as exc:
        raise ECGError(f"the run's splits.json does not describe a CSV split ({type(exc).__name__}: {exc}); "
                       f"start a new run with --version bump") from None


def build_mitbih(folder: Path, cache_dir: Path, *, binary: bool, split_seed: int, protocol: str = "intra",
                 saved_manifest: dict | None = None) -> DataSplits:
    """MIT-BIH beats from the Kaggle CSVs: their own train and test files, validation 10% of train."""
    if protocol != "intra":
        raise ECGError(f"--split {protocol} needs the raw MIT-BIH records: the Kaggle CSVs in {folder} carry no "
                       f"record ids (move mitbih_train.csv and mitbih_test.csv away to use the records)")
    files = {"train": folder / MITBIH_FILES[0], "test": folder / MITBIH_FILES[1]}
    (x_tr, y_tr), (x_te, y_te) = (load_csv(files[k], cache_dir, len(AAMI_CLASSES)) for k in ("train", "test"))
    if saved_manifest is not None:
        split = _check_saved(saved_manifest, files)
    else:
        train, val = holdout(np.arange(len(y_tr)), y_tr, 0.1, split_seed)
        split = {"train": train, "val": val, "test": np.arange(len(y_te))}
    classes = BINARY_CLASSES if binary else AAMI_CLASSES
    relabel = (lambda y: (y > 0).astype(np.int64)) if binary else (lambda y: y)
    pools = {"train": (x_tr, y_tr), "val": (x_tr, y_tr), "test": (x_te, y_te)}
    sets = {k: ECGDataset(pools[k][0][idx, None, :], relabel(pools[k][1][idx]), classes, meta={"row": idx})
            for k, idx in split.items()}
    manifest = saved_manifest or _manifest("mitbih-kaggle-csv", files, split,
                                           {k: pools[k][1][split[k]] for k in split}, AAMI_CLASSES, split_seed)
    return DataSplits(sets["train"], sets["val"], sets["test"], manifest)


def ensure_ptb(folder: Path, data_url: str | None, progress: bool = True) -> None:
    """Fetch the Kaggle archive (Google Drive, or ``data_url``) and extract the PTB CSVs when they are missing."""
    if all((folder / name).is_file() for name in PTB_FILES):
        return
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "kaggle_heartbeat_archive.zip"
    fetch_archive(data_url or KAGGLE_GDRIVE_ID, archive, digest=KAGGLE_ARCHIVE_SHA256, progress=progress)
    try:
        extracted = safe_extract(archive, folder, members=PTB_FILES)
        missing = set(PTB_FILES) - {p.name for p in extracted}
        if missing:
            raise ECGError(f"{archive} lacks {', '.join(sorted(missing))}; fill {folder} with the PTB CSVs by hand")
        for path in extracted:
            rows = sum(1 for _ in open(path, "rb"))
            if rows != KNOWN_ROWS[path.name]:
                path.unlink()
                raise ECGError(f"{path.name} from {archive.name} holds {rows} rows, not the published "
                               f"{KNOWN_ROWS[path.name]}; the download is damaged, run again")
    finally:
        archive.unlink(missing_ok=True)


def build_ptb(folder: Path, cache_dir: Path, *, split_seed: int, protocol: str = "intra",
              saved_manifest: dict | None = None, data_url: str | None = None, progress: bool = True) -> DataSplits:
    """PTB Diagnostic ECG beats from ptbdb_normal.csv (0) and ptbdb_abnormal.csv (1): stratified 20% test."""
    if protocol != "intra":
        raise ECGError(f"--split {protocol} is for MIT-BIH records; --dataset ptb has one random stratified split")
    ensure_ptb(folder, data_url, progress)
    files = {"normal": folder / PTB_FILES[0], "abnormal": folder / PTB_FILES[1]}
    parts = [load_csv(files[k], cache_dir, len(PTB_CLASSES)) for k in ("normal", "abnormal")]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    split = _check_saved(saved_manifest, files) if saved_manifest is not None else intra_patient_split(y, split_seed)
    sets = {k: ECGDataset(x[idx, None, :], y[idx], PTB_CLASSES, meta={"row": idx}) for k, idx in split.items()}
    manifest = saved_manifest or _manifest("ptbdb-kaggle-csv", files, split, {k: y[v] for k, v in split.items()},
                                           PTB_CLASSES, split_seed)
    return DataSplits(sets["train"], sets["val"], sets["test"], manifest)
