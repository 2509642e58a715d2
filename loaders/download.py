"""Verified downloads: temporary name, progress bar, resume, SHA-256 check, then rename; safe archive extraction."""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from toolbox.utils import ECGError

log = logging.getLogger(__name__)

PHYSIONET_MITDB = "https://physionet.org/files/mitdb/1.0.0/"
# The Kaggle "ECG Heartbeat Categorization" CSVs as the original pytorch-ecg shared them on Google Drive.
KAGGLE_GDRIVE_ID = "17Rd4YpGwssSpk4xZAT5AyYskjvs95dAY"
# SHA-256 of that archive. Not pinned yet: it can only be recorded on a machine that reaches Google
# Drive; until then the CSVs are checked by content after extraction (see loaders/kaggle.py).
KAGGLE_ARCHIVE_SHA256: str | None = None
TIMEOUT_S = 20
CHUNK = 1 << 16


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def parse_sha256sums(text: str) -> dict[str, str]:
    """``{file name: hex digest}`` from the lines of a ``sha256sum`` listing (PhysioNet's SHA256SUMS.txt)."""
    sums = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def fetch(url: str, dest: Path, *, sha256: str | None = None, progress: bool = True) -> None:
    """Download ``url`` to ``dest``; only a complete file whose SHA-256 matches is moved into place.

    Bytes arrive in ``dest.part``. A ``.part`` left by an interrupted download is resumed with an HTTP
    Range request (or restarted when the server ignores it). A checksum mismatch deletes the ``.part``.
    Raises ECGError for a mismatch and OSError/URLError/HTTPException for transfer failures.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:  # 416: the .part is already whole (or bigger): start again
            raise
        part.unlink()
        return fetch(url, dest, sha256=sha256, progress=progress)
    with response:
        if offset and response.status != 206:
            offset = 0  # the server sent the whole file: restart
        length = response.headers.get("Content-Length")
        total = int(length) + offset if length is not None else None
        with open(part, "ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, leave=False,
                disable=None if progress else True) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise OSError(f"transfer cut short ({size} of {total} bytes)")
    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256.lower():
            part.unlink()
            raise ECGError(f"{url} does not match its known SHA-256 (expected {sha256[:16]}..., got {got[:16]}...); "
                           f"nothing was saved: check the mirror (--data-url) or try again")
    os.replace(part, dest)


def _transfer_error(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return "transfer cut short"
    return str(getattr(exc, "reason", None) or exc)


def fetch_files(base_url: str, names: Iterable[str], folder: Path, *, what: str,
                sha256: dict[str, str] | None = None, progress: bool = True) -> None:
    """Download each of ``names`` from ``base_url`` into ``folder`` (verified when ``sha256`` names it)."""
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
            fetch(base_url + name, folder / name, sha256=(sha256 or {}).get(name), progress=progress)
        except urllib.error.HTTPError as exc:
            raise ECGError(f"cannot download {what}: {base_url + name} answered HTTP {exc.code}; fill {folder} "
                           f"with the files from {base_url} (or point ECG_DATA_ROOT at a folder that holds "
                           f"{folder.name}/)") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise ECGError(f"cannot download {what} ({base_url + name}: {_transfer_error(exc)}); offline? "
                           f"fill {folder} with the files from {base_url} (or point ECG_DATA_ROOT at a folder "
                           f"that holds {folder.name}/); an interrupted file resumes on the next run") from None


def fetch_archive(source: str, dest: Path, *, digest: str | None, progress: bool = True) -> None:
    """Download an archive from a URL, or from Google Drive (gdown) when ``source`` is a Drive file id."""
    try:
        if source.startswith(("http://", "https://", "file://")):
            fetch(source, dest, sha256=digest, progress=progress)
        else:
            import gdown

            part = dest.with_name(dest.name + ".part")
            if gdown.download(id=source, output=str(part), quiet=not progress, resume=True) is None:
                raise OSError(f"Google Drive file {source} could not be downloaded")
            if digest is not None and sha256_file(part) != digest:
                part.unlink()
                raise ECGError(f"Google Drive file {source} does not match its known SHA-256; nothing was saved")
            os.replace(part, dest)
    except ECGError:
        raise
    except Exception as exc:  # gdown and urllib raise many types when offline
        raise ECGError(f"cannot download {source} ({type(exc).__name__}: {_transfer_error(exc)}); offline? "
                       f"put the files it holds into {dest.parent} by hand") from None
    if digest is None:
        log.info("%s has no pinned SHA-256 yet; its content is checked after extraction (%s: %s)",
                    source, dest.name, sha256_file(dest))


def _member_problem(name: str, link: str | None, target: Path) -> str | None:
    """Why an archive member must not be extracted into ``target``, or None."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in path.parts:
        return "a '..' component"
    if link is not None:
        resolved = (target / path.parent / link).resolve()
        if PurePosixPath(link).is_absolute() or not resolved.is_relative_to(target.resolve()):
            return f"a link to {link}, outside the target folder"
    return None


def _open_archive(archive: Path):
    """(handle, [(name, link target or None, is a regular file)], open_member) of a zip or tar archive."""
    if zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)
        entries = []
        for info in zf.infolist():
            is_link = stat.S_ISLNK(info.external_attr >> 16)
            entries.append((info.filename, zf.read(info).decode() if is_link else None,
                            not is_link and not info.is_dir()))
        return zf, entries, zf.open
    if tarfile.is_tarfile(archive):
        tf = tarfile.open(archive)
        entries = [(m.name, m.linkname if (m.issym() or m.islnk()) else None, m.isfile()) for m in tf.getmembers()]
        return tf, entries, tf.extractfile
    raise ECGError(f"{archive} is neither a zip nor a tar archive")


def safe_extract(archive: Path, target: Path, members: Iterable[str] | None = None) -> list[Path]:
    """Extract a .zip or .tar(.gz) into ``target``, refusing absolute paths, '..' and links leading outside.

    With ``members``, only files of those base names are extracted (flattened into ``target``).
    Every member is checked before anything is written.
    """
    wanted = set(members) if members is not None else None
    target.mkdir(parents=True, exist_ok=True)
    handle, entries, open_member = _open_archive(archive)
    with handle:
        for name, link, _ in entries:
            problem = _member_problem(name, link, target)
            if problem:
                raise ECGError(f"{archive} holds {name!r}, {problem}; refusing to extract it")
        out = []
        for name, _, is_file in entries:
            if not is_file or (wanted is not None and Path(name).name not in wanted):
                continue
            dest = target / (Path(name).name if wanted is not None else name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open_member(name) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            out.append(dest)
        return out
