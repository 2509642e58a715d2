"""Memory-mapped record caches on the real Challenge and PTB-XL records: exact reads, kills, parallel builds."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb

from loaders import cinc2020, mapped, ptbxl
from loaders.dataset import RecordDataset, SeededBatch, SeededBatches, fingerprint
from tests.conftest import REPO


@pytest.fixture(scope="module")
def records(data_root: Path) -> Path:
    return data_root / "cinc2020" / "records"


def test_crops_read_from_the_map_equal_the_records_values(records: Path, tmp_path: Path) -> None:
    store = cinc2020.load_records(records, tmp_path, 500, progress=False)
    assert store.mapped and store.signal.dtype == np.int16 and store.signal.shape[1] == 12
    rng = np.random.default_rng(0)
    for r in rng.choice(len(store), 12, replace=False):
        header = cinc2020.read_header(records / f"{store.names[r]}.hea")
        whole = cinc2020.read_signal(records, header)  # the publisher's integers through the header's gains
        assert np.array_equal(store.record(r), whole)
        start = int(rng.integers(0, whole.shape[1] - 700))
        np.testing.assert_array_equal(store.windows([r], [start], 700)[0], whole[:, start:start + 700])
        # a window past the end is the record's tail, then zeros; a lead subset is those rows
        tail = store.windows([r], [whole.shape[1] - 100], 300, leads=[1, 7])[0]
        assert np.array_equal(tail[:, :100], whole[[1, 7], -100:]) and not tail[:, 100:].any()
    # the same crops through the dataset a run trains on
    ds = RecordDataset(store, np.arange(len(store)), np.zeros((len(store), 1), np.float32), ["x"], 5000,
                       random_crop=False, stride=2500)
    x, _ = ds.__getitems__([0, 1])
    first = cinc2020.read_signal(records, cinc2020.read_header(records / f"{store.names[0]}.hea"))
    assert torch.equal(x[0], torch.from_numpy(first[:, :5000]))


def test_resampled_records_keep_their_shape_within_a_count(records: Path, tmp_path: Path) -> None:
    store = cinc2020.load_records(records, tmp_path, 257, progress=False)
    header = cinc2020.read_header(records / f"{store.names[5]}.hea")
    direct = cinc2020.resample(cinc2020.read_signal(records, header), 500, 257)
    assert store.lengths[5] == direct.shape[1] == round(header.samples * 257 / 500)
    assert np.abs(store.record(5) - direct).max() <= 0.5 / header.gains[0] + 1e-6  # rounded to whole counts


def test_ptbxl_records_read_from_the_map_equal_wfdb(data_root: Path, tmp_path: Path) -> None:
    db, _, store = ptbxl.load_records(data_root / "ptbxl", tmp_path, 100, progress=False)
    assert len(store) == len(db) and store.names[0] == str(db.index[0])
    for r in (0, 123, len(db) - 1):
        rec = wfdb.rdrecord(str(data_root / "ptbxl" / db["filename_lr"].iloc[r]))
        order = [[n.upper() for n in rec.sig_name].index(lead) for lead in cinc2020.LEADS]
        np.testing.assert_allclose(store.record(r), rec.p_signal[:, order].T, atol=1e-6)


SLOW_BUILD = """
import sys, time
from pathlib import Path
from loaders import cinc2020, mapped
mapped.PROGRESS_EVERY = 0.05
convert = cinc2020._convert
def slow(task):
    time.sleep(0.03)
    return convert(task)
cinc2020._convert = slow
cinc2020.load_records(Path(sys.argv[1]), Path(sys.argv[2]), 500, progress=False, workers=1)
"""


def test_a_killed_build_is_never_used_and_continues_where_it_stopped(records: Path, tmp_path: Path,
                                                                      caplog) -> None:
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(records), str(cache)], cwd=REPO)
    deadline, done = time.time() + 120, 0
    while time.time() < deadline and proc.poll() is None and done < 30:
        notes = list(cache.glob(".*.partial/progress.json"))
        done = json.loads(notes[0].read_text())["records"] if notes else 0
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and 30 <= done < 156
    assert not [p for p in cache.iterdir() if not p.name.startswith(".")]  # nothing a reader would open
    with caplog.at_level(logging.WARNING):
        resumed = cinc2020.load_records(records, cache, 500, progress=False, workers=1)
    assert "continuing the interrupted build" in caplog.text
    start = int(caplog.text.split("at record ")[1].split()[0])
    assert start >= 30
    fresh = cinc2020.load_records(records, tmp_path / "fresh", 500, progress=False, workers=1)
    assert np.array_equal(resumed.signal, fresh.signal) and np.array_equal(resumed.offsets, fresh.offsets)
    assert resumed.extra["dx"].tolist() == fresh.extra["dx"].tolist() and not list(cache.glob(".*.partial"))


def test_a_parallel_build_equals_one_process(records: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(mapped, "PARALLEL_FROM", 0)
    parallel = cinc2020.load_records(records, tmp_path / "two", 500, progress=False, workers=2)
    monkeypatch.setattr(mapped, "PARALLEL_FROM", 10**9)
    single = cinc2020.load_records(records, tmp_path / "one", 500, progress=False, workers=2)
    assert np.array_equal(parallel.signal, single.signal) and np.array_equal(parallel.scale, single.scale)


def test_a_damaged_cache_is_built_again(records: Path, tmp_path: Path, caplog) -> None:
    cinc2020.load_records(records, tmp_path, 500, progress=False)
    folder = next(tmp_path.glob("cinc2020_*"))
    (folder / "index.npz").write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING):
        store = cinc2020.load_records(records, tmp_path, 500, progress=False)
    assert "unreadable cache" in caplog.text and len(store) == 156
    assert folder.name.endswith(fingerprint([records / f"{n}{e}" for n in store.names for e in (".hea", ".mat")]))


def test_a_pickled_store_reopens_the_map_instead_of_copying(records: Path, tmp_path: Path) -> None:
    import pickle

    store = cinc2020.load_records(records, tmp_path, 500, progress=False)
    blob = pickle.dumps(store)
    assert len(blob) < store.signal.nbytes / 100  # the path, not the data
    again = pickle.loads(blob)
    assert again.mapped and np.array_equal(again.record(3), store.record(3))


def test_processes_share_every_batch_and_draw_what_one_process_draws() -> None:
    """Two DDP ranks: disjoint, equal shares of the same padded batches; each example's crop draw is the one
    it gets in a single process."""
    from loaders.dataset import draws

    order = torch.randperm(37, generator=torch.Generator().manual_seed(3)).tolist()

    def batches(rank: int, world: int) -> list[SeededBatch]:
        return list(SeededBatches(order, 8, torch.Generator().manual_seed(1), rank, world))

    single, first, second = batches(0, 1), batches(0, 2), batches(1, 2)
    padded = order + order[:1]  # 37 examples padded to a multiple of 2
    assert len(first) == len(second) == len(single) == 5
    for k, (whole, a, b) in enumerate(zip(single, first, second, strict=True)):
        assert len(a) == len(b) and a.seed == b.seed == whole.seed
        assert a.positions == list(range(0, len(a) + len(b), 2)) and b.positions == list(range(1, len(a) + len(b), 2))
        shared = [None] * (len(a) + len(b))
        for share in (a, b):
            for place, i, u in zip(share.positions, share, draws(share).tolist(), strict=True):
                shared[place] = (i, u)
        assert [i for i, _ in shared] == padded[8 * k: 8 * k + 8]
        # every example of the single-process batch draws the same crop under two processes
        assert [(i, u) for i, u in shared[: len(whole)]] == list(zip(whole, draws(whole).tolist(), strict=True))
    with pytest.raises(Exception, match="does not divide among 3 processes"):
        SeededBatches(order, 8, torch.Generator(), 0, 3)


@pytest.mark.parametrize("n,world,sizes", [(17, 1, [8, 8]), (18, 1, [8, 8, 2]), (1, 1, [1]), (18, 2, [4, 4]),
                                           (20, 2, [4, 4, 2])])
def test_a_last_batch_of_one_example_per_process_is_left_out(n: int, world: int, sizes: list[int]) -> None:
    """Batch norm cannot train on one example (the benchmark heads pool to one vector per example)."""
    got = list(SeededBatches(list(range(n)), 8, torch.Generator().manual_seed(0), 0, world))
    assert [len(b) for b in got] == sizes
    assert len(SeededBatches(list(range(n)), 8, torch.Generator(), 0, world)) == len(sizes)


def test_two_builds_of_one_cache_at_once_give_one_complete_cache(records: Path, tmp_path: Path) -> None:
    """Two runs started together on one machine: the second waits for the first's build and reads it."""
    cache = tmp_path / "cache"
    build = ("import sys; from pathlib import Path; from loaders import cinc2020; "
             "cinc2020.load_records(Path(sys.argv[1]), Path(sys.argv[2]), 500, progress=False, workers=1)")
    procs = [subprocess.Popen([sys.executable, "-c", build, str(records), str(cache)], cwd=REPO) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1 and not list(cache.glob(".*.partial"))
    both = cinc2020.load_records(records, cache, 500, progress=False)
    fresh = cinc2020.load_records(records, tmp_path / "fresh", 500, progress=False)
    assert np.array_equal(both.signal, fresh.signal)
