"""Download exactly the files the test suite reads into ``$ECG_DATA_ROOT``, each checked against its SHA-256.

    python -m loaders.fetch_test_data [--root DIR] [--data-url MIRROR] [--only PREFIX ...]

The files are listed with their digests in ``loaders/test_data.sha256`` (1,781 files, about 145 MB): the
complete MIT-BIH Arrhythmia Database, 156 PhysioNet/CinC Challenge records (in ``cinc2020/records`` and again
in ``cinc2021/records``) with the 2020 and 2021 scoring tables, and 500 PTB-XL records at 100 Hz with
``scp_statements.csv`` and ``ptbxl_database.csv`` cut to those 500 rows. Files already present with the right
digest are kept; interrupted downloads resume. ``--data-url`` names a mirror laid out like the data root
(``MIRROR/mitdb/100.hea``, ...). Without it, each file comes from its publisher: PhysioNet (``mitdb`` 1.0.0,
``ptb-xl`` 1.0.3, ``challenge-2021`` 1.0.3, found through its ``RECORDS`` index) and the Challenge evaluation
repositories on GitHub for the scoring tables; the PTB-XL database table is downloaded whole and cut.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

MANIFEST = Path(__file__).with_name("test_data.sha256")
PHYSIONET = "https://physionet.org/files/"
SOURCES = {  # data-root folder -> the publisher's base URL
    "mitdb/": PHYSIONET + "mitdb/1.0.0/",
    "ptbxl/": PHYSIONET + "ptb-xl/1.0.3/",
    "cinc2020/scoring/": "https://raw.githubusercontent.com/physionetchallenges/evaluation-2020/master/",
    "cinc2021/scoring/": "https://raw.githubusercontent.com/physionetchallenges/evaluation-2021/main/",
}
CHALLENGE = PHYSIONET + "challenge-2021/1.0.3/"
CUT_TABLE = "ptbxl/ptbxl_database.csv"


def manifest() -> dict[str, str]:
    """Relative path -> SHA-256 of every file the suite reads."""
    from loaders.download import parse_sha256sums

    return parse_sha256sums(MANIFEST.read_text())


def cut_rows(full: str, ids: set[str]) -> str:
    """The header line of a CSV and the lines whose first field is one of ``ids``, unchanged."""
    lines = full.splitlines(keepends=True)
    return "".join([lines[0], *(line for line in lines[1:] if line.split(",", 1)[0] in ids)])


def challenge_paths(folder: Path) -> dict[str, str]:
    """Record file name -> its path in the Challenge 2021 training set, from PhysioNet's RECORDS index."""
    from loaders.download import fetch

    index = folder / "challenge-2021-RECORDS"
    fetch(CHALLENGE + "RECORDS", index)
    paths = {}
    for line in index.read_text().split():
        name = line.rsplit("/", 1)[-1]
        paths[f"{name}.hea"] = f"{line}.hea"
        paths[f"{name}.mat"] = f"{line}.mat"
    return paths


def publisher_url(rel: str, challenge: dict[str, str]) -> str:
    """Where the publisher serves ``rel`` (a path under the data root)."""
    for prefix, base in SOURCES.items():
        if rel.startswith(prefix):
            return base + rel[len(prefix):]
    name = rel.rsplit("/", 1)[-1]
    if name not in challenge:
        raise KeyError(rel)
    return CHALLENGE + challenge[name]


def fetch_test_data(root: Path, mirror: str | None = None, only: list[str] | None = None,
                    progress: bool = True) -> list[str]:
    """Fetch the missing or damaged files of the manifest under ``root``; returns the paths it downloaded."""
    from tqdm import tqdm

    from loaders.download import fetch, sha256_file
    from toolbox.utils import ECGError

    wanted = {rel: digest for rel, digest in manifest().items() if not only or any(rel.startswith(p) for p in only)}
    if not wanted:
        raise ECGError(f"--only {' '.join(only or [])} matches no file of {MANIFEST.name}")
    todo = [rel for rel, digest in wanted.items()
            if not (root / rel).is_file() or sha256_file(root / rel) != digest]
    with tempfile.TemporaryDirectory() as scratch:
        challenge: dict[str, str] = {}
        if mirror is None and any(r.startswith(("cinc2020/records/", "cinc2021/records/")) for r in todo):
            challenge = challenge_paths(Path(scratch))
        for rel in tqdm(todo, desc="fetch test data", unit="file", disable=None if progress else True):
            base = mirror.rstrip("/") + "/" if mirror else None
            if rel == CUT_TABLE and base is None:  # PTB-XL's table, whole, cut to the 500 records
                full = Path(scratch) / "ptbxl_database.csv"
                fetch(publisher_url(rel, challenge), full, progress=progress)
                ids = {str(int(r.rsplit("/", 1)[-1].split("_")[0])) for r in manifest()
                       if r.startswith("ptbxl/records100/")}
                part = root / (rel + ".cut")
                part.parent.mkdir(parents=True, exist_ok=True)
                part.write_text(cut_rows(full.read_text(), ids))
                if sha256_file(part) != wanted[rel]:
                    part.unlink()
                    raise ECGError(f"{rel} cut from PTB-XL's table does not match its known SHA-256; another PTB-XL "
                                   f"version? nothing was saved")
                os.replace(part, root / rel)
                continue
            fetch(base + rel if base else publisher_url(rel, challenge), root / rel, sha256=wanted[rel],
                  progress=False)
    return todo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loaders.fetch_test_data",
                                description="Download the records the test suite reads, verified by SHA-256.")
    p.add_argument("--root", type=Path, default=None, help="data root to fill (default: $ECG_DATA_ROOT)")
    p.add_argument("--data-url", default=None, metavar="MIRROR",
                   help="a mirror laid out like the data root (default: each file's publisher)")
    p.add_argument("--only", nargs="+", default=None, metavar="PREFIX", help="only the files under these paths")
    args = p.parse_args(argv)
    root = args.root or (Path(os.environ["ECG_DATA_ROOT"]) if os.environ.get("ECG_DATA_ROOT") else None)
    if root is None:
        p.error("set ECG_DATA_ROOT (or give --root) to the folder the tests read")
    import http.client
    import urllib.error

    from loaders.download import _transfer_error
    from toolbox.utils import ECGError

    try:
        done = fetch_test_data(root, args.data_url, args.only)
    except ECGError as exc:
        print(f"fetch_test_data: error: {exc}", file=sys.stderr)
        return 2
    except urllib.error.HTTPError as exc:
        print(f"fetch_test_data: error: {exc.url} answered HTTP {exc.code}; try a mirror with --data-url",
              file=sys.stderr)
        return 2
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        print(f"fetch_test_data: error: cannot download ({_transfer_error(exc)}); offline? run it again to resume, "
              f"or give a mirror with --data-url", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"fetch_test_data: error: {exc.args[0]} is not in the Challenge 2021 RECORDS index; try a mirror with "
              f"--data-url", file=sys.stderr)
        return 2
    print(f"{len(done)} file(s) downloaded into {root}; all {len(manifest())} test files are in place"
          if not args.only else f"{len(done)} file(s) downloaded into {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
