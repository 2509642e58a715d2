"""Fetch raw database files over HTTP(S) with a progress bar; a file appears only once complete."""
from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from toolbox.utils import ECGError

log = logging.getLogger(__name__)

PHYSIONET_MITDB = "https://physionet.org/files/mitdb/1.0.0/"
TIMEOUT_S = 20


def fetch(url: str, dest: Path, *, progress: bool = True) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``; raises OSError/URLError on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(part, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                                           leave=False, disable=None if progress else True) as bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        part.unlink(missing_ok=True)
        raise OSError(f"{url}: transfer cut short ({part.stat().st_size} of {total} bytes)")
    os.replace(part, dest)


def fetch_files(base_url: str, names: Iterable[str], folder: Path, *, what: str, progress: bool = True) -> None:
    """Download each of ``names`` from ``base_url`` into ``folder``, or raise one clear ECGError."""
    names = list(names)
    if not base_url.endswith("/"):
        base_url += "/"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ECGError(f"{what} is missing from {folder} and that folder cannot be created ({exc.strerror}); "
                       f"set ECG_DATA_ROOT to a folder that holds it") from None
    log.info("downloading %d files of %s from %s into %s", len(names), what, base_url, folder)
    for name in tqdm(names, desc=f"download {what}", unit="file", leave=False, disable=None if progress else True):
        try:
            fetch(base_url + name, folder / name, progress=progress)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ECGError(f"cannot download {what} ({base_url + name}: {reason}); offline? "
                           f"fill {folder} with the files from {base_url} (or point ECG_DATA_ROOT at a folder "
                           f"that holds {folder.name}/)") from None
