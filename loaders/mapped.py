"""Memory-mapped record caches: every record of a database in one int16 array, with an index beside it.

A cache is a folder ``<cache_dir>/<name>_<inputs>/``:

- ``signal.npy``: (total samples, leads) int16 counts; record r is rows ``offsets[r]:offsets[r + 1]``, at the
  cache rate, leads in a fixed order. Counts times ``scale`` (mV per count, per record and lead) are millivolts.
  Records read at their own rate are stored exactly as their publisher's integers; resampled ones are
  rounded to the same resolution (1 µV for gains of 1000/mV).
- ``index.npz``: ``names``, ``offsets``, ``scale``, ``fs``, ``leads`` and per-record columns (``extra``).

The build converts records one at a time (in worker processes when there are many) and writes each at its
offset with plain file writes, so its memory does not grow with the number of records. It notes its progress
in a ``.partial`` folder; a killed build continues where it stopped, and the folder is renamed into place only
when every record is in, so an incomplete cache is never read.
"""
from __future__ import annotations

import contextlib
import json
import logging
import mmap
import multiprocessing
import os
import shutil
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

try:
    import fcntl
except ImportError:  # not on POSIX
    fcntl = None

from toolbox.utils import ECGError, atomic_write

log = logging.getLogger(__name__)

COUNTS = np.int16
PARALLEL_FROM = 256  # records: smaller databases are converted in this process (no worker start-up cost)
MAX_WORKERS = 8
CHUNK = 16  # records converted and written per task
AHEAD = 4  # chunks per worker converted ahead of the writer
RELEASE_BYTES = 4 << 20  # bytes read from the map since the last release of its pages (about one batch)
PROGRESS_EVERY = 2.0  # seconds between progress notes of a build


def to_mv(counts: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Millivolts (float32) of integer ``counts`` (..., leads) with ``scale`` mV per count per lead: the one
    conversion that cache reads and direct record reads share, so both give the same numbers."""
    return counts.astype(np.float32) * np.asarray(scale, dtype=np.float32)


def to_counts(mv: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """``mv`` (..., leads) rounded to whole counts of ``scale`` mV, clipped to the int16 range; integer ``mv``
    without ``scale`` are counts already, and only clipped."""
    info = np.iinfo(COUNTS)
    if scale is None:
        return np.clip(mv, info.min, info.max).astype(COUNTS)
    counts = np.rint(np.asarray(mv, dtype=np.float64) / np.asarray(scale, dtype=np.float64))
    return np.clip(counts, info.min, info.max).astype(COUNTS)


@dataclass
class Plan:
    """What a cache will hold, known from the headers before any signal is read."""

    names: list[str]
    lengths: np.ndarray  # samples of each record at the cache rate
    scale: np.ndarray  # (records, leads) mV per count
    fs: float
    leads: list[str]
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # per-record columns kept in the index

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])

    def digest(self) -> str:
        """Identifies the plan, so a partial build is only continued by the same plan."""
        from loaders.dataset import cache_key

        return cache_key(self.names, self.lengths.tolist(), self.scale.tobytes(), self.fs, self.leads)


class RecordStore:
    """Records of any length in one (total samples, leads) array, in memory or memory-mapped.

    Reads return float32 millivolts (``counts * scale``). A memory-mapped store hands its pages back to the
    page cache after every ``RELEASE_BYTES`` read, so a process's resident memory stays flat over an epoch
    while DataLoader workers and DDP ranks still share one copy of the file in the page cache.
    """

    def __init__(self, signal: np.ndarray, offsets: np.ndarray, scale: np.ndarray, names: Sequence[str], fs: float,
                 leads: Sequence[str], extra: dict[str, np.ndarray] | None = None) -> None:
        if signal.ndim != 2 or len(offsets) != len(names) + 1 or scale.shape != (len(names), signal.shape[1]):
            raise ValueError(f"inconsistent store: signal {signal.shape}, {len(offsets)} offsets, scale "
                             f"{scale.shape}, {len(names)} names")
        self.signal, self.offsets = signal, np.asarray(offsets, dtype=np.int64)
        self.scale = np.asarray(scale, dtype=np.float32)
        self.names, self.fs, self.leads = np.asarray(names), float(fs), list(leads)
        self.extra = extra or {}
        self._read = 0

    @classmethod
    def from_signals(cls, signals: Sequence[np.ndarray], names: Sequence[str], fs: float,
                     leads: Sequence[str]) -> RecordStore:
        """An in-memory store of float32 ``signals`` (leads, samples) in mV (records to predict, tests)."""
        lengths = [s.shape[1] for s in signals]
        signal = (np.concatenate([np.asarray(s, np.float32).T for s in signals]) if signals
                  else np.zeros((0, len(leads)), np.float32))
        return cls(signal, np.concatenate([[0], np.cumsum(lengths)]), np.ones((len(signals), len(leads)), np.float32),
                   names, fs, leads)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def mapped(self) -> bool:
        return isinstance(self.signal, np.memmap)

    def __len__(self) -> int:
        return len(self.names)

    def record(self, r: int) -> np.ndarray:
        """Record ``r`` whole: (leads, samples) float32 mV."""
        return self.windows([r], [0], int(self.lengths[r]))[0]

    def windows(self, rows: Sequence[int], starts: Sequence[int], window: int,
                leads: Sequence[int] | None = None) -> np.ndarray:
        """(len(rows), leads, window) float32 mV: ``window`` samples of record ``rows[i]`` from ``starts[i]``,
        zero-padded past the record's end; ``leads`` picks and orders columns (default: all)."""
        columns = slice(None) if leads is None else list(leads)
        width = self.signal.shape[1] if leads is None else len(leads)
        out = np.zeros((len(rows), width, window), dtype=np.float32)
        for i, (r, s) in enumerate(zip(rows, starts, strict=True)):
            a = self.offsets[r] + s
            b = min(a + window, self.offsets[r + 1])
            if b > a:
                out[i, :, : b - a] = to_mv(self.signal[a:b, columns], self.scale[r, columns]).T
                self._read += (b - a) * self.signal.shape[1] * self.signal.itemsize
        if self._read > RELEASE_BYTES:
            self.release()
        return out

    def release(self) -> None:
        """Hand the mapped pages read so far back to the page cache (they stay cached, shared, and are read
        again without disk access); resident memory then reflects only what this process allocated."""
        self._read = 0
        handle = getattr(self.signal, "_mmap", None)
        if self.mapped and handle is not None and hasattr(mmap, "MADV_DONTNEED"):
            handle.madvise(mmap.MADV_DONTNEED)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for spawned workers) as the file's path, never as a copy of the data."""
        state = dict(self.__dict__)
        if self.mapped:
            state["signal"] = ("mapped", str(self.signal.filename))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["signal"], tuple):
            state["signal"] = np.load(state["signal"][1], mmap_mode="r")
        self.__dict__.update(state)


def open_store(folder: Path, in_memory: bool = False) -> RecordStore:
    """The cache in ``folder``, memory-mapped (or read into memory with ``in_memory``)."""
    with np.load(folder / "index.npz", allow_pickle=False) as z:
        index = {k: z[k] for k in z.files}
    signal = np.load(folder / "signal.npy", mmap_mode=None if in_memory else "r")
    extra = {k.removeprefix("extra_"): v for k, v in index.items() if k.startswith("extra_")}
    return RecordStore(signal, index["offsets"], index["scale"], index["names"].tolist(), float(index["fs"]),
                       index["leads"].tolist(), extra)


def default_workers() -> int:
    """Processes for a build: the CPUs this process may run on, at most ``MAX_WORKERS``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def cached_records(cache_dir: Path, name: str, inputs: str, plan: Callable[[], tuple[Plan, list[Any]]],
                   convert: Callable[[Any], np.ndarray], *, what: str, workers: int | None = None,
                   progress: bool = True) -> RecordStore:
    """The record cache ``cache_dir/<name>_<inputs>/``, built first when it does not exist.

    ``name`` covers the processing parameters and ``inputs`` the fingerprint of every record file, so new or
    changed records build a new cache (with a warning when one of the same parameters exists). ``plan()``
    gives the :class:`Plan` and one picklable task per record; ``convert(task)`` returns that record's
    (samples, leads) int16 counts, exactly ``plan.lengths[r]`` long. ``workers`` processes convert records
    when there are many (default: :func:`default_workers`).
    """
    folder = cache_dir / f"{name}_{inputs}"
    if (folder / "index.npz").is_file():
        try:
            return open_store(folder)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable cache %s (%s); building it again", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    elif cache_dir.is_dir():
        stale = sorted(p.name for p in cache_dir.glob(f"{name}_*") if p.is_dir() and p != folder)
        if stale:
            log.warning("%s changed since the cache %s was made; building a new cache", what, stale[-1])
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(cache_dir / f".{folder.name}.lock"):  # one build of a cache at a time on this machine
            if not (folder / "index.npz").is_file():  # another process may have built it while we waited
                build_store(folder, *plan(), convert, workers=workers, progress=progress)
    except OSError as exc:
        raise ECGError(f"cannot write the cache {folder} ({exc.strerror}); choose a writable --root-dir with "
                       f"room for it") from None
    return open_store(folder)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX ``flock``; no lock where there is none)."""
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build_store(folder: Path, plan: Plan, tasks: Sequence[Any], convert: Callable[[Any], np.ndarray], *,
                workers: int | None = None, progress: bool = True) -> None:
    """Convert every record of ``plan`` into the cache ``folder`` (see the module docstring).

    Work goes to ``.<folder>.<host>.partial/`` first: ``signal.npy`` is allocated at its final size, records are
    written at their offsets in chunks, and ``progress.json`` notes (after an fsync) how many leading records are
    in. A later call with the same plan continues from there; the finished folder is renamed into place.
    """
    if len(tasks) != len(plan.names):
        raise ValueError(f"{len(tasks)} tasks for {len(plan.names)} records")
    partial = folder.with_name(f".{folder.name}.{socket.gethostname()}.partial")  # per machine, on shared disks
    offsets = plan.offsets()
    shape = (int(offsets[-1]), len(plan.leads))
    done = _resume_point(partial, plan)
    if done == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        np.lib.format.open_memmap(partial / "signal.npy", mode="w+", dtype=COUNTS, shape=shape).flush()
        _note_progress(partial, plan, 0)
    else:
        log.warning("continuing the interrupted build of %s at record %d of %d", folder.name, done, len(plan.names))
    start = _data_offset(partial / "signal.npy")
    row = len(plan.leads) * np.dtype(COUNTS).itemsize
    items = [(tasks[r], start + int(offsets[r]) * row, (int(plan.lengths[r]), len(plan.leads)), plan.names[r])
             for r in range(done, len(plan.names))]
    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    bar = tqdm(total=len(plan.names), initial=done, desc="caching records", unit="record", leave=False,
               disable=None if progress else True)
    noted, n_workers = time.monotonic(), workers if workers is not None else default_workers()
    with open(partial / "signal.npy", "r+b") as f:
        for n in _written(convert, partial / "signal.npy", chunks, n_workers):
            done += n
            bar.update(n)
            if time.monotonic() - noted > PROGRESS_EVERY:
                _sync(f)  # flushes what every process wrote into the file
                _note_progress(partial, plan, done)
                noted = time.monotonic()
        _sync(f)
    bar.close()
    index = {"names": np.array(plan.names), "offsets": offsets, "scale": plan.scale.astype(np.float32),
             "fs": np.array(plan.fs), "leads": np.array(plan.leads),
             **{f"extra_{k}": np.asarray(v) for k, v in plan.extra.items()}}
    atomic_write(partial / "index.npz", lambda tmp: np.savez(open(tmp, "wb"), **index))
    (partial / "progress.json").unlink()
    try:
        os.replace(partial, folder)
    except OSError:  # another process finished the same cache first
        if not (folder / "index.npz").is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)


def _resume_point(partial: Path, plan: Plan) -> int:
    """How many records an interrupted build of the same plan left in ``partial`` (0: start afresh)."""
    try:
        note = json.loads((partial / "progress.json").read_text())
    except (OSError, ValueError):
        return 0
    if note.get("plan") != plan.digest() or not (partial / "signal.npy").is_file():
        return 0
    return int(note.get("records", 0))


def _note_progress(partial: Path, plan: Plan, records: int) -> None:
    text = json.dumps({"plan": plan.digest(), "records": records})
    atomic_write(partial / "progress.json", lambda tmp: tmp.write_text(text))


def _data_offset(path: Path) -> int:
    """Where the array data starts in a ``.npy`` file."""
    return int(np.load(path, mmap_mode="r").offset)


def _sync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def _write_chunk(convert: Callable[[Any], np.ndarray], path: Path, chunk: list[tuple[Any, int, tuple, str]]) -> int:
    """Convert each record of ``chunk`` and write it at its byte offset of ``path``; how many were written."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for task, offset, shape, name in chunk:
            counts = convert(task)
            if counts.shape != shape or counts.dtype != COUNTS:
                raise ValueError(f"record {name}: converted to {counts.shape} {counts.dtype}, planned {shape} int16")
            os.pwrite(fd, np.ascontiguousarray(counts).tobytes(), offset)
    finally:
        os.close(fd)
    return len(chunk)


def _written(convert: Callable[[Any], np.ndarray], path: Path, chunks: list[list], workers: int) -> Iterator[int]:
    """Write ``chunks`` of records (:func:`_write_chunk`), yielding how many records each finished chunk held,
    in order. Large builds run in ``workers`` processes, each writing its records into the file itself (only
    counts come back), at most a few chunks ahead. Workers that fail to start or die leave the rest to this
    process, with a warning."""
    if workers <= 1 or sum(map(len, chunks)) < PARALLEL_FROM:
        for chunk in chunks:
            yield _write_chunk(convert, path, chunk)
        return
    # Linux: fork, so the workers start at once with the modules this process has imported (a spawned worker
    # spends seconds importing torch and scipy before its first record); they touch no torch, so threads that
    # torch may have started here do not matter. Elsewhere: spawn (fork is unsafe on macOS).
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    finished = 0
    pool = ProcessPoolExecutor(workers, mp_context=context)
    try:
        pending: deque = deque(pool.submit(_write_chunk, convert, path, c) for c in chunks[: AHEAD * workers])
        following = iter(chunks[AHEAD * workers:])
        while pending:
            n = pending.popleft().result()
            nxt = next(following, None)
            if nxt is not None:
                pending.append(pool.submit(_write_chunk, convert, path, nxt))
            finished += 1
            yield n
    except BrokenProcessPool as exc:
        log.warning("worker processes failed (%s); converting the remaining records in this process", exc)
        for chunk in chunks[finished:]:
            yield _write_chunk(convert, path, chunk)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
