"""Shared fixtures. Integration tests read the real databases under $ECG_DATA_ROOT and fail without them."""
from __future__ import annotations

import functools
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """Start ``python commander.py ARGS`` as a user would, with ``env`` added to the environment."""
    return subprocess.Popen([sys.executable, str(REPO / "commander.py"), *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python commander.py ARGS`` to the end."""
    proc = start_cli(*args, env=env)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line of a run that failed as a user error should: exit 2, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    return lines[0]


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (the server is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """$ECG_DATA_ROOT, which must hold the test data: mitdb/, cinc2020/, cinc2021/ and ptbxl/."""
    root = os.environ.get("ECG_DATA_ROOT")
    need = ("mitdb/RECORDS", "cinc2020/scoring/weights.csv", "cinc2021/scoring/weights.csv", "ptbxl/ptbxl_database.csv")
    missing = [n for n in need if not root or not (Path(root) / n).is_file()]
    if missing:
        pytest.fail(f"ECG_DATA_ROOT={root!r} lacks {missing[0]}: set ECG_DATA_ROOT to a folder and fill it with "
                    f"python -m loaders.fetch_test_data")
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


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; ``cut`` > 0 makes it stop after that many bytes of a body."""

    cut = 0

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: self.cut] if self.cut else body)


@pytest.fixture()
def http_server():
    """Start HTTP servers on 127.0.0.1: ``http_server(folder, cut=0) -> base URL``; all stop after the test."""
    servers = []

    def start(folder: Path, cut: int = 0) -> str:
        handler = type("Handler", (RangeHandler,), {"cut": cut})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def link_mitdb(target: Path, data_root: Path, records: list[str] | None = None) -> Path:
    """A mitdb/ folder of symbolic links to the real record files (optionally only some records)."""
    folder = target / "mitdb"
    folder.mkdir(parents=True)
    names = (data_root / "mitdb" / "RECORDS").read_text().split() if records is None else records
    for rec in names:
        for ext in (".hea", ".dat", ".atr"):
            (folder / f"{rec}{ext}").symlink_to(data_root / "mitdb" / f"{rec}{ext}")
    return folder


def write_ptb_csvs(folder: Path, beats: dict, normal: int, abnormal: int) -> None:
    """ptbdb_normal.csv and ptbdb_abnormal.csv in ``folder`` (the Kaggle PTB layout), filled with ``normal`` real
    MIT-BIH N beats and ``abnormal`` beats of the other classes, drawn with a fixed seed."""
    import numpy as np

    from loaders import kaggle

    rng = np.random.default_rng(0)
    rows = {"normal": rng.choice(np.flatnonzero(beats["label"] == 0), normal, replace=False),
            "abnormal": rng.choice(np.flatnonzero(beats["label"] > 0), abnormal, replace=False)}
    for label, (name, idx) in enumerate(rows.items()):
        kaggle.write_csv(folder / f"ptbdb_{name}.csv", beats["x"][idx], np.full(len(idx), label, np.int64))
