"""Write the beats extracted from the raw MIT-BIH records as Kaggle-format CSVs.

    python -m loaders.export_csv --out DIR [--root-dir ecg_data] [--split-seed 0] [--records 100,101]

``mitbih_train.csv`` holds the training and validation beats of the intra-patient split and
``mitbih_test.csv`` its test beats; 187 values and the AAMI label (0 N, 1 S, 2 V, 3 F, 4 Q) per row,
no header, as the published files. Put both into a MIT-BIH data folder to train on them.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loaders import raw_dir
from loaders.kaggle import MITBIH_FILES, write_csv
from loaders.mitdb import RECORDS, intra_patient_split, load_beats
from toolbox.utils import ECGError


def export(out: Path, root_dir: Path, split_seed: int, records: Sequence[str] = RECORDS) -> dict[str, int]:
    """Extract (or load cached) beats, split them intra-patient, write the two CSVs; rows per file."""
    unknown = sorted(set(records) - set(RECORDS))
    if unknown:
        raise ECGError(f"unknown MIT-BIH records: {', '.join(unknown)}; valid: {', '.join(RECORDS)}")
    beats = load_beats(raw_dir("mitdb", root_dir), root_dir / "cache")
    keep = np.flatnonzero(np.isin(beats["record"], [int(r) for r in records]))
    split = intra_patient_split(beats["label"][keep], split_seed)
    rows = {}
    for name, part in zip(MITBIH_FILES, (np.concatenate([split["train"], split["val"]]), split["test"]), strict=True):
        idx = keep[np.sort(part)]
        write_csv(out / name, beats["x"][idx], beats["label"][idx])
        rows[name] = len(idx)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaders.export_csv", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write mitbih_train.csv and mitbih_test.csv")
    parser.add_argument("--root-dir", type=Path, default=Path("ecg_data"),
                        help="as commander.py: raw records from $ECG_DATA_ROOT/mitdb or <root-dir>/mitdb, cache here")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the stratified train/test split")
    parser.add_argument("--records", default=",".join(RECORDS), help="comma-separated records (default: all 48)")
    args = parser.parse_args(argv)
    try:
        rows = export(args.out, args.root_dir, args.split_seed, args.records.split(","))
    except ECGError as exc:
        print(f"export_csv: error: {exc}", file=sys.stderr)
        return 2
    for name, n in rows.items():
        print(f"{args.out / name}: {n} beats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
