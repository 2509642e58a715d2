"""PTB-XL (Wagner et al. 2020): twelve-lead 10-second records, multi-label, in the label sets of its benchmark.

Labels follow the PTB-XL benchmark (Strodthoff et al. 2021, ``--labels``): every SCP code of a record counts,
whatever its likelihood, for the class the label set gives it in ``scp_statements.csv``:

- ``superdiagnostic`` (default): the ``diagnostic_class`` of diagnostic codes: NORM, MI, STTC, CD, HYP;
- ``subdiagnostic``: their ``diagnostic_subclass`` (23 in the full database);
- ``diagnostic``, ``form``, ``rhythm``: the codes marked so (44, 19 and 12 statements);
- ``all``: every statement (71).

Classes are those the records hold (superdiagnostic: always the five); records without one are left out and
counted in ``splits.json``. Folds come from ``strat_fold``: 1-8 train, 9 validation, 10 test (patient-disjoint
by construction).

Every record of the database table is cached once at the training rate in a memory-mapped int16 array
(:mod:`loaders.mapped`); labels come from the tables at every load, so neither a changed table nor another
label set needs a new cache.
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

from loaders import PTBXL_LABEL_SETS as LABEL_SETS
from loaders.cinc2020 import LEADS, lead_order, read_header, scale
from loaders.dataset import DataSplits, RecordDataset, cache_key, fingerprint, resampled_length
from loaders.dataset import resample as resample_signal
from loaders.mapped import Plan, RecordStore, cached_records, to_counts, to_mv
from loaders.preprocess import NO_PREPROCESS, Preprocess, cache_name, check_run
from toolbox.utils import ECGError

log = logging.getLogger(__name__)

SUPERCLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]
SUPERCLASS_NAMES = {"NORM": "normal ECG", "MI": "myocardial infarction", "STTC": "ST/T change",
                    "CD": "conduction disturbance", "HYP": "hypertrophy"}
FOLDS = {"train": list(range(1, 9)), "val": [9], "test": [10]}
NATIVE_FS = 100  # records100/ (the low-rate copies); records500/ is used when --fs asks for more than 100 Hz
def files_hint(folder: Path) -> str:
    """What to put where when PTB-XL files are missing."""
    return (f"put PTB-XL in {folder} (ptbxl_database.csv, scp_statements.csv, records100/) "
            f"from physionet.org/content/ptb-xl")


CACHE_VERSION = 2  # 2: every record of the table in one memory-mapped int16 array (loaders.mapped)


DATABASE_COLUMNS = ("ecg_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr")
STATEMENT_COLUMNS = ("description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")


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


def read_tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The database table (indexed by ecg_id, ``scp_codes`` parsed) and the statements table (by SCP code)."""
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
    return db, scp


def label_map(scp: pd.DataFrame, label_set: str) -> dict[str, str]:
    """SCP code -> the class it counts for in ``label_set`` (one of ``LABEL_SETS``)."""
    diagnostic = scp[scp["diagnostic"] == 1]
    if label_set == "superdiagnostic":
        return diagnostic["diagnostic_class"].dropna().to_dict()
    if label_set == "subdiagnostic":
        return diagnostic["diagnostic_subclass"].dropna().to_dict()
    if label_set in ("diagnostic", "form", "rhythm"):
        return {c: c for c in scp.index[scp[label_set] == 1]}
    if label_set == "all":
        return {c: c for c in scp.index}
    raise ECGError(f"unknown PTB-XL label set '{label_set}'; valid: {', '.join(LABEL_SETS)}")


def labels_of(db: pd.DataFrame, scp: pd.DataFrame, label_set: str) -> tuple[list[str], list[str], np.ndarray]:
    """Classes, readable class names and the multi-hot labels of every record of ``db`` in ``label_set``."""
    mapping = label_map(scp, label_set)
    sets = [{mapping[c] for c in codes if c in mapping} for codes in db["scp_codes"]]
    classes = SUPERCLASSES if label_set == "superdiagnostic" else sorted(set().union(*sets))
    index = {c: k for k, c in enumerate(classes)}
    labels = np.zeros((len(db), len(classes)), dtype=np.float32)
    for r, found in enumerate(sets):
        labels[r, [index[c] for c in found]] = 1
    described = scp["description"].dropna().to_dict()
    names = [SUPERCLASS_NAMES.get(c) or described.get(c) or c for c in classes]
    return classes, names, labels


def fold_split(folds: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices of train (folds 1-8), val (9) and test (10)."""
    return {k: np.flatnonzero(np.isin(folds, v)) for k, v in FOLDS.items()}


def _convert(task: tuple[str, object, int, Preprocess]) -> np.ndarray:
    """One record for the cache: its twelve leads as int16 counts (samples, 12) at the cache rate ``fs``,
    preprocessed by ``task[3]`` (after resampling)."""
    path, header, fs, prep = Path(task[0]), task[1], task[2], task[3]
    try:
        rec = wfdb.rdrecord(str(path), physical=False)
    except Exception as exc:  # wfdb raises many types for damaged files
        raise ECGError(f"cannot read PTB-XL record {path} ({type(exc).__name__}: {str(exc)[:80]})") from None
    order = lead_order(header, path.parent)
    if rec.d_signal is None or rec.d_signal.shape != (header.samples, len(header.leads)):
        raise ECGError(f"PTB-XL record {path}: its signal file does not match its header")
    counts = rec.d_signal[:, order].astype(np.int32) - np.rint(header.baselines[order]).astype(np.int32)
    if header.fs == fs and not prep.steps:
        return to_counts(counts)
    per_count = scale(header, order)
    return prep.counts(resample_signal(to_mv(counts, per_count), header.fs, fs, axis=0), fs, per_count, str(path))


def load_records(folder: Path, cache_dir: Path, fs: int, progress: bool = True, workers: int | None = None,
                 prep: Preprocess = NO_PREPROCESS) -> tuple[pd.DataFrame, pd.DataFrame, RecordStore]:
    """The tables and every record of the database table at ``fs`` Hz, memory-mapped (store row i is table row i),
    preprocessed by ``prep``.

    Read from ``records100/`` up to 100 Hz, else from ``records500/``. The cache is named by the sampling rate and
    the preprocessing, and keyed by the sizes and times of every record file and the table's order of records.
    """
    db, scp = read_tables(folder)
    column = "filename_lr" if fs <= NATIVE_FS else "filename_hr"
    files = [folder / f"{rel}{ext}" for rel in db[column] for ext in (".hea", ".dat")]
    missing = next((f for f in files if not f.is_file()), None)
    if missing is not None:
        raise ECGError(f"PTB-XL record file {missing} is missing; {files_hint(folder)}")

    def plan() -> tuple[Plan, list]:
        headers = [read_header(folder / f"{rel}.hea", need_dx=False)
                   for rel in tqdm(db[column], desc="reading PTB-XL headers", unit="record", leave=False,
                                   disable=None if progress else True)]
        orders = [lead_order(h, folder / rel) for h, rel in zip(headers, db[column], strict=True)]
        return Plan([str(i) for i in db.index], np.array([resampled_length(h.samples, h.fs, fs) for h in headers]),
                    prep.scale(np.stack([scale(h, o) for h, o in zip(headers, orders, strict=True)])), fs, LEADS), \
            [(str(folder / rel), h, fs, prep) for rel, h in zip(db[column], headers, strict=True)]

    inputs = cache_key(fingerprint(files), list(db.index))  # store row i is table row i: the order counts too
    store = cached_records(cache_dir, cache_name(f"ptbxl_{fs}hz", prep, CACHE_VERSION), inputs, plan, _convert,
                           what=f"the PTB-XL records in {folder}", workers=workers, progress=progress)
    return db, scp, store


def build(raw_dir: Path, cache_dir: Path, *, split_seed: int, protocol: str = "folds", fs: int = NATIVE_FS,
          seq_len: float = 10.0, saved_manifest: dict[str, Any] | None = None, data_url: str | None = None,
          progress: bool = True, labels: str = "superdiagnostic", preprocess: Preprocess = NO_PREPROCESS) -> DataSplits:
    """Train/val/test datasets of PTB-XL in label set ``labels`` on its recommended folds, the records preprocessed
    by ``preprocess`` when they are cached."""
    if data_url:
        raise ECGError(f"--data-url is for MIT-BIH and ptb; for ptbxl {files_hint(raw_dir)}")
    if saved_manifest is not None:
        check_run(saved_manifest.get("preprocess"), preprocess)
    db, scp, store = load_records(raw_dir, cache_dir, fs, progress, prep=preprocess)
    classes, names, multi_hot = labels_of(db, scp, labels)
    keep = np.flatnonzero(multi_hot.any(axis=1))
    if not len(keep):
        raise ECGError(f"no record of {raw_dir / 'ptbxl_database.csv'} has a label of the set {labels}")
    ecg_id, folds = db.index.to_numpy(), db["strat_fold"].to_numpy()
    split = {k: keep[v] for k, v in fold_split(folds[keep]).items()}
    if saved_manifest is not None:
        saved = {k: saved_manifest.get(k) for k in FOLDS}
        same_classes = saved_manifest.get("classes", SUPERCLASSES) == classes
        if saved != {k: ecg_id[v].tolist() for k, v in split.items()} or not same_classes:
            raise ECGError("the run's splits.json lists other PTB-XL records or classes than the data folder gives "
                           "now; restore the data or start a new run with --version bump")
    window = int(round(seq_len * fs))
    prep = {"fs": fs, "window": window, "stride": window // 2, "leads": LEADS, "units": preprocess.units,
            **preprocess.describe()}
    manifest = saved_manifest or {
        "database": "PTB-XL", "protocol": protocol, "split_seed": split_seed, "preprocess": prep,
        "label_set": labels, "classes": classes, "class_names": names, "folds": FOLDS,
        "dropped_without_label": int(len(db) - len(keep)), **{k: ecg_id[v].tolist() for k, v in split.items()}}

    def subset(idx: np.ndarray, train: bool) -> RecordDataset:
        return RecordDataset(store, idx, multi_hot[idx], classes, window, random_crop=train,
                             stride=prep["stride"], meta={"record": ecg_id[idx]})

    return DataSplits(subset(split["train"], True), subset(split["val"], False), subset(split["test"], False),
                      manifest, multilabel=True, selection="macro_auroc", preprocess=prep)

