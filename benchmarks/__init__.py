"""Benchmark scripts: each prints a Markdown table for docs/benchmarks.md."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def mitdb_folder(parser: argparse.ArgumentParser) -> Path:
    """``$ECG_DATA_ROOT/mitdb`` (default ``ecg_data/mitdb``); a parser error when records are missing."""
    from loaders import mitdb

    raw = Path(os.environ.get("ECG_DATA_ROOT", "ecg_data")) / "mitdb"
    if mitdb.missing_files(raw):
        parser.error(f"{raw} lacks MIT-BIH record files; set ECG_DATA_ROOT to the folder that holds mitdb/")
    return raw
