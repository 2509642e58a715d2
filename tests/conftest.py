"""Shared fixtures. Integration tests read the real databases under $ECG_DATA_ROOT and fail without them."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """$ECG_DATA_ROOT, which must hold the complete MIT-BIH database (mitdb/)."""
    root = os.environ.get("ECG_DATA_ROOT")
    if not root or not (Path(root) / "mitdb" / "RECORDS").is_file():
        pytest.fail(f"ECG_DATA_ROOT must point at a folder holding mitdb/ (got {root!r})")
    return Path(root)


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A --root-dir whose beat cache is built once for the whole session."""
    from loaders import mitdb

    root = tmp_path_factory.mktemp("root")
    mitdb.load_beats(data_root / "mitdb", root / "cache", progress=False)
    return root


@pytest.fixture(scope="session")
def beats(cache_root: Path, data_root: Path) -> dict:
    from loaders import mitdb

    return mitdb.load_beats(data_root / "mitdb", cache_root / "cache", progress=False)
