"""Beat extraction from the real MIT-BIH records."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from loaders import mitdb
from tests.conftest import link_mitdb
from toolbox.utils import ECGError

# Beat annotations per AAMI class in the 48 records (PhysioNet's .atr files).
ANNOTATION_TOTALS = {"N": 90_631, "S": 2_781, "V": 7_236, "F": 803, "Q": 8_043}


def test_class_counts_match_annotation_totals(beats: dict) -> None:
    counts = np.bincount(beats["label"], minlength=5)
    for k, c in enumerate(mitdb.AAMI_CLASSES):
        assert abs(counts[k] - ANNOTATION_TOTALS[c]) <= 0.005 * ANNOTATION_TOTALS[c], (c, counts[k])


def test_shapes_range_and_bookkeeping(beats: dict) -> None:
    n = len(beats["label"])
    assert beats["x"].shape == (n, 187) and beats["x"].dtype == np.float32
    assert beats["x"].min() >= 0.0 and beats["x"].max() <= 1.0
    assert sorted(set(beats["record"].tolist())) == sorted(int(r) for r in mitdb.RECORDS)
    key = beats["record"] * 1_000_000 + beats["sample"]
    assert len(np.unique(key)) == n  # (record, annotation sample) identifies a beat


def test_beats_span_about_one_point_two_rr_then_zero_padding(beats: dict) -> None:
    # A beat of 1.2 x RR at 125 Hz: for 60-100 bpm, 90-150 samples; then zeros up to 187.
    nonzero_len = 187 - np.argmax(beats["x"][:, ::-1] != 0, axis=1)
    assert 90 <= np.median(nonzero_len) <= 150
    short = nonzero_len < 187
    assert short.mean() > 0.9
    tail = beats["x"][short][:, -1]
    assert np.all(tail == 0)


def test_record_114_reads_mlii_from_lead_1(data_root: Path) -> None:
    mlii = mitdb.extract_record(data_root / "mitdb", "114")
    lead0 = mitdb.extract_record(data_root / "mitdb", "114", mitdb.BeatParams(lead="no-such-lead"))
    assert len(mlii["label"]) == len(lead0["label"])
    assert not np.allclose(mlii["x"], lead0["x"])


def test_window_scale_maps_each_window_to_unit_range() -> None:
    x = np.concatenate([np.linspace(-3, 5, 10), np.linspace(100, 90, 10), [7.0, 7.0]])
    y = mitdb._window_scale(x, 10)
    for w in range(2):
        part = y[10 * w:10 * w + 10]
        assert part.min() == 0.0 and part.max() == 1.0
    assert np.all(y[20:] == 0.0)  # a flat window does not divide by zero


def test_baseline_removal_and_record_scale_set_the_beats_to_one() -> None:
    fs = 125
    t = np.arange(60 * fs) / fs
    peaks = np.arange(fs // 2, len(t) - fs, fs)  # 60 beats per minute
    spikes = np.zeros_like(t)
    for k, b in enumerate(peaks):  # 40 ms wide QRS spikes; every 10th beat twice as tall
        spikes[b - 2:b + 3] = (2.0 if k % 10 else 4.0) * np.array([0.5, 0.8, 1.0, 0.8, 0.5])
    wander = 1.5 * np.sin(2 * np.pi * 0.2 * t) + 3.0  # breathing and an offset
    y = mitdb.remove_baseline(spikes + wander, fs)
    between = np.ones(len(t), bool)
    for b in peaks:
        between[b - 5:b + 6] = False
    assert np.abs(y[between]).max() < 0.1  # the wander is gone (it was 1.5, 0.75 of a beat's height)
    # beat_inputs divides each record by the median amplitude at its R peaks
    beats = {"x": y[peaks[:, None] + np.arange(-2, 3)].astype(np.float32), "amp": np.abs(y[peaks]),
             "record": np.zeros(len(peaks), np.int64), "rr": np.ones((len(peaks), 4), np.float32)}
    scaled = mitdb.beat_inputs(beats, np.ones(len(peaks), bool), by_record=True)["x"]
    assert np.median(scaled[:, 2]) == pytest.approx(1.0)
    np.testing.assert_allclose(scaled[::10, 2], 2.0, atol=0.05)  # relative sizes are kept
    flat = {**beats, "x": np.zeros_like(beats["x"]), "amp": np.zeros(len(peaks), np.float32)}
    assert np.all(np.isfinite(mitdb.beat_inputs(flat, np.ones(len(peaks), bool), by_record=True)["x"]))  # no 0 / 0


def test_window_median_rr_falls_back_to_record_median() -> None:
    beats = np.array([0, 10, 20, 30, 45, 60, 200])  # window 0: RR 10,10,10; window 1 (100-199): none
    med = mitdb._window_median_rr(beats, 3, 100)
    assert med[0] == 10
    assert med[1] == np.median(np.diff(beats))  # record median where a window has no RR interval


def test_cache_is_reused_without_reading_records(cache_root: Path, data_root: Path, beats: dict,
                                                monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("records were read again although the cache exists")

    monkeypatch.setattr(mitdb, "extract_beats", fail)
    links = link_mitdb(cache_root / "links", data_root)  # other paths, the same files: the same cache
    for folder in (data_root / "mitdb", links):
        again = mitdb.load_beats(folder, cache_root / "cache", progress=False)
        for k in beats:
            np.testing.assert_array_equal(again[k], beats[k])
    assert len(list((cache_root / "cache").glob("mitdb_beats_*.npz"))) == 1


def test_a_changed_record_file_builds_a_new_cache_and_says_so(tmp_path: Path, data_root: Path, beats: dict,
                                                             cache_root: Path, monkeypatch, caplog) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(cache_root / "cache", cache)
    folder = link_mitdb(tmp_path / "data", data_root)
    (folder / "100.atr").unlink()  # a new copy of one file: same content, another modification time
    shutil.copyfile(data_root / "mitdb" / "100.atr", folder / "100.atr")
    os.utime(folder / "100.atr", ns=(1_000_000_000, 1_000_000_000))
    calls = []
    monkeypatch.setattr(mitdb, "extract_beats", lambda *a, **k: calls.append(a) or beats)
    with caplog.at_level(logging.WARNING):
        mitdb.load_beats(folder, cache, progress=False)
    assert len(calls) == 1 and len(list(cache.glob("mitdb_beats_*.npz"))) == 2
    assert "the MIT-BIH records in" in caplog.text and "changed since the cache" in caplog.text
    mitdb.load_beats(folder, cache, progress=False)  # now cached under the new fingerprint
    assert len(calls) == 1


def test_cache_key_depends_on_extraction_parameters() -> None:
    assert mitdb.BeatParams().key() != mitdb.BeatParams(length=200).key()
    assert mitdb.BeatParams().key() == mitdb.BeatParams().key()


CORRUPTIONS = {
    "dat truncated": ("100.dat", lambda b: b[: len(b) // 3], r"100.dat holds \d+ bytes but .*100.hea announces"),
    "dat garbage": ("100.dat", lambda b: b"garbage", r"100.dat holds 7 bytes"),
    "hea garbage": ("100.hea", lambda b: b"\x00\xffnot a header\n", r"100.hea is not a valid WFDB header"),
    "hea wrong sample count": ("100.hea", lambda b: b.replace(b"650000", b"700000"), r"announces 700000 samples"),
    "atr truncated": ("100.atr", lambda b: b[:1000], r"100.atr is truncated or not a WFDB annotation file"),
    "atr garbage": ("100.atr", lambda b: b"garbage" * 50, r"100.atr is truncated or not a WFDB annotation file"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_record_is_one_clear_error(case: str, tmp_path: Path, data_root: Path) -> None:
    for ext in (".hea", ".dat", ".atr"):
        (tmp_path / f"100{ext}").write_bytes((data_root / "mitdb" / f"100{ext}").read_bytes())
    name, damage, message = CORRUPTIONS[case]
    (tmp_path / name).write_bytes(damage((tmp_path / name).read_bytes()))
    with pytest.raises(ECGError, match=message):
        mitdb.extract_record(tmp_path, "100")
