"""PTB-XL (Wagner et al. 2020): twelve-lead 10-second records, five diagnostic superclasses, multi-label.

Labels follow the PTB-XL benchmark (Strodthoff et al. 2021): every SCP code of a record that
``scp_statements.csv`` marks diagnostic contributes its ``diagnostic_class``; records with none are left
out. Folds come from ``strat_fold``: 1-8 train, 9 validation, 10 test (patient-disjoint by construction).
"""
from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import wfdb
from tqdm import tqdm

from loaders.cinc2020 import LEADS, resample
from loaders.dataset import DataSplits, RecordDataset, cached_arrays, fingerprint
from toolbox.utils import ECGError

log = logging.getLogger(__name__)

SUPERCLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]
FOLDS = {"train": list(range(1, 9)), "val": [9], "test": [10]}
NATIVE_FS = 100  # records100/ (the low-rate copies); records500/ is used when --fs asks for more than 100 Hz
def files_hint(folder: Path) -> str:
    """What to put where when PTB-XL files are missing."""
    return (f"put PTB-XL in {folder} (ptbxl_database.csv, scp_statements.csv, records100/) "
            f"from physionet.org/content/ptb-xl")
CACHE_VERSION = 1


DATABASE_COLUMNS = ("ecg_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr")
STATEMENT_COLUMNS = ("diagnostic", "diagnostic_class")


def _scp_codes(cell: Any, ecg_id: Any, path: Path) -> dict[str, float]:
    """One ``scp_codes`` cell: the publisher's dict literal of SCP code -> likelihood."""
    try:
        codes = ast.literal_eval(cell) if isinstance(cell, str) else None
    except (ValueError, SyntaxError):
        codes = None
    if not isinstance(codes, dict):
        raise ECGError(f"{path}: ecg_id {ecg_id}: scp_codes {str(cell)[:40]!r} is not a dict of SCP codes; "
                       f"restore the publisher's table")
    return codes


def read_tables(folder: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """The database table (indexed by ecg_id) and the map from diagnostic SCP code to superclass."""
    db_file, scp_file = folder / "ptbxl_database.csv", folder / "scp_statements.csv"
    for f in (db_file, scp_file):
        if not f.is_file():
            raise ECGError(f"{f} is missing; {files_hint(folder)}")
    try:
        db = pd.read_csv(db_file)
        scp = pd.read_csv(scp_file, index_col=0)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ECGError(f"cannot read the PTB-XL tables in {folder} ({type(exc).__name__}: {exc})") from None
    for path, table, columns in ((db_file, db, DATABASE_COLUMNS), (scp_file, scp, STATEMENT_COLUMNS)):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ECGError(f"{path} lacks the column(s) {', '.join(missing)}; restore the publisher's table")
    db = db.set_index("ecg_id")
    folds = pd.to_numeric(db["strat_fold"], errors="coerce")
    if folds.isna().any() or not folds.between(1, 10).all():
        bad = db.index[folds.isna() | ~folds.between(1, 10)][0]
        raise ECGError(f"{db_file}: ecg_id {bad}: strat_fold {db.loc[bad, 'strat_fold']} is not a fold 1-10")
    db["strat_fold"] = folds.astype(int)
    db["scp_codes"] = [_scp_codes(cell, i, db_file) for i, cell in zip(db.index, db["scp_codes"], strict=True)]
    diagnostic = scp[scp["diagnostic"] == 1]["diagnostic_class"].dropna().to_dict()
    return db, diagnostic


def superclass_labels(scp_codes: dict[str, float], diagnostic: dict[str, str]) -> np.ndarray:
    """Multi-hot vector over ``SUPERCLASSES`` of one record's SCP codes (any likelihood counts)."""
    row = np.zeros(len(SUPERCLASSES), dtype=np.float32)
    for code in scp_codes:
        if code in diagnostic:
            row[SUPERCLASSES.index(diagnostic[code])] = 1
    return row


def fold_split(folds: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices of train (folds 1-8), val (9) and test (10)."""
    return {k: np.flatnonzero(np.isin(folds, v)) for k, v in FOLDS.items()}


def _read_record(folder: Path, rel: str) -> np.ndarray:
    """One record's twelve leads in the standard order, in mV, float32 (12, samples)."""
    path = folder / rel
    if not path.with_suffix(".hea").is_file():
        raise ECGError(f"PTB-XL record {path}.hea is missing; {files_hint(folder)}")
    try:
        rec = wfdb.rdrecord(str(path))
    except Exception as exc:  # wfdb raises many types for damaged files
        raise ECGError(f"cannot read PTB-XL record {path} ({type(exc).__name__}: {str(exc)[:80]})") from None
    names = [n.upper() for n in rec.sig_name]
    if sorted(names) != sorted(LEADS):
        raise ECGError(f"PTB-XL record {path} has leads {', '.join(rec.sig_name)}, not the standard twelve")
    return rec.p_signal[:, [names.index(lead) for lead in LEADS]].T.astype(np.float32)


def load_records(folder: Path, cache_dir: Path, fs: int, progress: bool = True) -> dict[str, np.ndarray]:
    """Every labelled record at ``fs`` Hz: ``signal`` (n, 12, samples), ``ecg_id``, ``labels``, ``fold``.

    Cached as ``.npz``, keyed by the sampling rate and the sizes and times of the database and statements
    tables and of every record file.
    """
    db, diagnostic = read_tables(folder)
    labels = np.stack([superclass_labels(c, diagnostic) for c in db["scp_codes"]])
    keep = labels.any(axis=1)
    if not keep.any():
        raise ECGError(f"no record of {folder / 'ptbxl_database.csv'} has a diagnostic superclass")
    column = "filename_lr" if fs <= NATIVE_FS else "filename_hr"
    native = NATIVE_FS if column == "filename_lr" else 500
    files = [folder / f"{rel}{ext}" for rel in db[keep][column] for ext in (".hea", ".dat")]
    missing = next((f for f in files if not f.is_file()), None)
    if missing is not None:
        raise ECGError(f"PTB-XL record file {missing} is missing; {files_hint(folder)}")
    inputs = fingerprint([folder / "ptbxl_database.csv", folder / "scp_statements.csv", *files])

    def build() -> dict[str, np.ndarray]:
        rows = db[keep]
        signals = [resample(_read_record(folder, rel), native, fs)
                   for rel in tqdm(rows[column], desc="reading PTB-XL", unit="record", leave=False,
                                   disable=None if progress else True)]
        return {"signal": np.stack(signals), "ecg_id": rows.index.to_numpy(), "labels": labels[keep],
                "fold": rows["strat_fold"].to_numpy(), "dropped": np.array(int((~keep).sum()))}

    return cached_arrays(cache_dir, f"ptbxl_{fs}hz_v{CACHE_VERSION}", inputs, build,
                         what=f"the PTB-XL tables or records in {folder}")


def build(raw_dir: Path, cache_dir: Path, *, split_seed: int, protocol: str = "folds", fs: int = NATIVE_FS,
          seq_len: float = 10.0, saved_manifest: dict[str, Any] | None = None, data_url: str | None = None,
          progress: bool = True) -> DataSplits:
    """Train/val/test datasets of PTB-XL's five diagnostic superclasses on its recommended folds."""
    if data_url:
        raise ECGError(f"--data-url is for MIT-BIH and ptb; for ptbxl {files_hint(raw_dir)}")
    data = load_records(raw_dir, cache_dir, fs, progress)
    split = fold_split(data["fold"])
    if saved_manifest is not None:
        saved = {k: saved_manifest.get(k) for k in FOLDS}
        if saved != {k: data["ecg_id"][v].tolist() for k, v in split.items()}:
            raise ECGError("the run's splits.json lists other PTB-XL records than the data folder holds now; "
                           "restore the data or start a new run with --version bump")
    window = int(round(seq_len * fs))
    preprocess = {"fs": fs, "window": window, "stride": window // 2, "leads": LEADS, "units": "mV"}
    manifest = saved_manifest or {
        "database": "PTB-XL", "protocol": protocol, "split_seed": split_seed, "preprocess": preprocess,
        "classes": SUPERCLASSES, "folds": FOLDS, "dropped_without_superclass": int(data["dropped"]),
        **{k: data["ecg_id"][v].tolist() for k, v in split.items()}}

    def subset(idx: np.ndarray, train: bool) -> RecordDataset:
        return RecordDataset(list(data["signal"][idx]), data["labels"][idx], SUPERCLASSES, window,
                             random_crop=train, stride=preprocess["stride"], meta={"record": data["ecg_id"][idx]})

    return DataSplits(subset(split["train"], True), subset(split["val"], False), subset(split["test"], False),
                      manifest, multilabel=True, selection="macro_auroc", preprocess=preprocess)
