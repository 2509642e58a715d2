"""Cache-time preprocessors: bandpass, baseline removal, z-score and min-max, their order, storage, names and flags."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb
from scipy.signal import butter, sosfilt

import commander
from args import parse_args, run_name
from loaders import PREPROCESS_STEPS, cinc2020, mitdb, ptbxl
from loaders.mapped import to_mv
from loaders.preprocess import (
    COUNT_SCALE,
    NO_PREPROCESS,
    PREPROCESSORS,
    Preprocess,
    bandpass,
    cache_name,
    minmax,
    remove_baseline,
    zscore,
)
from tests.test_multilabel import _ptbxl_copy
from toolbox.utils import ECGError


def _rms(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sqrt(np.mean(np.square(x), axis=axis))


# ---- the functions ----

@pytest.mark.parametrize("fs", [100, 500])
def test_bandpass_removes_a_slow_sinusoid_and_keeps_a_10_hz_one(fs: int) -> None:
    t = np.arange(60 * fs) / fs
    x = np.stack([np.sin(2 * np.pi * 0.1 * t), np.sin(2 * np.pi * 10 * t)])  # (leads, samples)
    y = bandpass(x, fs, 0.5, 40)
    inner = slice(10 * fs, 50 * fs)  # away from the edges' transients
    ratio = _rms(y[:, inner]) / _rms(x[:, inner])
    assert ratio[0] < 1e-3 and abs(ratio[1] - 1) < 0.01, ratio
    assert _rms(y[0]) / _rms(x[0]) < 0.01  # edges included
    np.testing.assert_allclose(bandpass(x.T, fs, 0.5, 40, axis=0), y.T, atol=1e-12)  # (samples, leads) alike


def test_bandpass_is_zero_phase_a_symmetric_pulse_stays_centred() -> None:
    fs, centre = 500, 2500
    t = (np.arange(2 * centre + 1) - centre) / fs
    pulse = np.exp(-0.5 * (t / 0.02) ** 2)  # a QRS-wide Gaussian
    y = bandpass(pulse, fs, 0.5, 40)
    assert int(np.argmax(y)) == centre  # not delayed
    np.testing.assert_allclose(y[centre - 400:centre], y[centre + 400:centre:-1], atol=1e-5)  # its mirror image
    causal = sosfilt(butter(4, [0.5, 40], btype="bandpass", fs=fs, output="sos"), pulse)
    assert int(np.argmax(causal)) >= centre + 3  # one pass forwards delays it
    assert y[centre] > 0.5  # the pulse is kept, only smoothed


def test_bandpass_refuses_edges_at_or_above_half_the_rate() -> None:
    with pytest.raises(ECGError, match=r"needs 0 < low < high < 50 Hz"):
        bandpass(np.zeros(1000), 100, 0.5, 50)
    assert bandpass(np.ones(10), 100, 0.5, 40).shape == (10,)  # shorter than the filter's padding


def test_baseline_removal_removes_a_slow_drift_and_keeps_a_qrs_like_spike() -> None:
    fs = 360
    t = np.arange(20 * fs) / fs
    drift = 2 * np.sin(2 * np.pi * 0.2 * t) + 0.5 * t / 20
    spikes = np.zeros_like(t)
    peaks = np.arange(fs // 2, len(t) - fs // 2, fs)
    for p in peaks:  # 80-ms triangles of height 1.5
        spikes[p - 14:p + 15] = 1.5 * (1 - np.abs(np.arange(-14, 15)) / 15)
    x = np.stack([spikes + drift, 0.5 * spikes - drift])
    y = remove_baseline(x, fs)
    between = np.ones(len(t), bool)
    for p in peaks:
        between[p - 40:p + 40] = False
    assert np.abs(y[:, between]).max() < 0.1  # the drift is gone (it was up to 2.5)
    assert np.all(y[:, peaks] > [[0.7 * 1.5], [0.7 * 0.75]])  # the spikes stay (the drift was 3 times taller)
    np.testing.assert_array_equal(remove_baseline(x.T, fs, axis=0), y.T)  # each lane on its own, either layout
    np.testing.assert_array_equal(remove_baseline(x[1], fs), y[1])
    assert mitdb.remove_baseline is remove_baseline  # the beats' baseline removal is this one


def test_zscore_and_minmax_per_lead() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 800)) * np.array([[0.1], [2.0], [0.0]]) + np.array([[5.0], [-1.0], [3.0]])
    z = zscore(x)
    np.testing.assert_allclose(z[:2].mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(z[:2].std(axis=1), 1, atol=1e-12)
    m = minmax(x)
    np.testing.assert_allclose([m[:2].min(axis=1), m[:2].max(axis=1)], [[0, 0], [1, 1]], atol=1e-12)
    assert not z[2].any() and not m[2].any()  # a flat lead (a missing one) becomes 0, not NaN
    np.testing.assert_allclose(zscore(x.T, axis=0), z.T, atol=1e-12)
    np.testing.assert_allclose(minmax(x.T, axis=0), m.T, atol=1e-12)


# ---- the steps together: order, names, storage ----

def test_steps_apply_in_one_order_whatever_order_is_given() -> None:
    assert tuple(PREPROCESSORS) == PREPROCESS_STEPS
    prep = Preprocess(("zscore", "baseline", "bandpass"), (1, 30))
    assert prep.steps == ("bandpass", "baseline", "zscore") and prep.band == (1.0, 30.0)
    x = np.random.default_rng(1).normal(size=(2, 3000))
    np.testing.assert_array_equal(prep.apply(x, 250), zscore(remove_baseline(bandpass(x, 250, 1, 30), 250)))
    np.testing.assert_array_equal(prep.apply(x.T, 250, axis=0), prep.apply(x, 250).T)
    assert NO_PREPROCESS.apply(x, 250) is x
    with pytest.raises(ECGError, match="choose one of them"):
        Preprocess(("zscore", "minmax"))
    assert Preprocess(("zscore",), (1, 30)) == Preprocess(("zscore",))  # edges count only with a bandpass
    assert Preprocess.from_dict(prep.describe()) == prep and Preprocess.from_dict(None) == NO_PREPROCESS
    assert prep.units == "z-score" and Preprocess(("minmax",)).units == "min-max" and NO_PREPROCESS.units == "mV"


def test_the_cache_name_follows_the_steps_and_their_parameters() -> None:
    assert cache_name("ptbxl_100hz", NO_PREPROCESS, 2) == "ptbxl_100hz_v2"  # existing caches keep their names
    preps = [Preprocess(s, b) for s, b in ((("bandpass",), (0.5, 40)), (("bandpass",), (1, 40)),
                                           (("bandpass", "zscore"), (0.5, 40)), (("zscore",), (0.5, 40)),
                                           (("minmax",), (0.5, 40)), (("baseline",), (0.5, 40)),
                                           (("baseline", "minmax"), (0.5, 40)))]
    names = [cache_name("ptbxl_100hz", p, 2) for p in [NO_PREPROCESS, *preps]]
    assert len(set(names)) == len(names) and names[3] == "ptbxl_100hz_bandpass0.5-40+zscore_v2"
    for a in names:  # ``cached_records`` takes <name>_* for older inputs of the same cache: no name may look so
        assert not any(b.startswith(f"{a}_") for b in names), a


def test_normalised_records_are_stored_at_a_fixed_resolution_and_read_back_alike(caplog) -> None:
    rng = np.random.default_rng(2)
    mv = np.asfortranarray(rng.normal(size=(4000, 3)) * [0.2, 1.0, 0.05], np.float32)  # (samples, leads) as read
    own = np.full(3, 0.001, np.float32)
    for how in ("zscore", "minmax"):
        prep = Preprocess(("bandpass", how))
        counts = prep.counts(mv, 500, own, "r")
        scale = prep.scale(own)
        assert counts.dtype == np.int16 and np.all(scale == COUNT_SCALE[how])
        stored = to_mv(counts, scale)
        assert np.abs(stored - prep.apply(mv, 500, axis=0)).max() <= COUNT_SCALE[how] / 2 + 1e-9
        # a recording to predict, (leads, samples), gets exactly the numbers its cache read gives
        np.testing.assert_array_equal(prep.recording(np.ascontiguousarray(mv.T), 500), stored.T)
    mv_prep = Preprocess(("bandpass",))
    assert np.array_equal(mv_prep.scale(own), own)  # filters alone keep mV at the record's own resolution
    spike = np.zeros((5000, 1))
    spike[2500] = 1.0  # one sample in a flat lead: z = sqrt(4999), beyond +-32
    with caplog.at_level(logging.WARNING):
        counts = Preprocess(("zscore",)).counts(spike, 500, np.ones(1), "record X")
    assert "record X: 1 samples lie outside the int16 range" in caplog.text and counts.max() == 32767


# ---- the record datasets ----

def _few_ptbxl(tmp_path: Path, data_root: Path) -> Path:
    """A PTB-XL folder of 30 real records, three of each fold."""
    return _ptbxl_copy(tmp_path, data_root, lambda t: t.groupby("strat_fold").head(3))


def test_a_ptbxl_cache_holds_the_preprocessed_records(tmp_path: Path, data_root: Path, caplog) -> None:
    folder = _few_ptbxl(tmp_path, data_root)
    prep = Preprocess(("bandpass", "zscore"))
    data = ptbxl.build(folder, tmp_path / "cache", split_seed=0, progress=False, preprocess=prep)
    assert data.preprocess["steps"] == ["bandpass", "zscore"] and data.preprocess["bandpass"] == [0.5, 40.0]
    assert data.preprocess["units"] == "z-score" and data.manifest["preprocess"] == data.preprocess
    caches = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert len(caches) == 1 and caches[0].startswith("ptbxl_100hz_bandpass0.5-40+zscore_v2_")
    store = data.test.store
    table = ptbxl.read_tables(folder)[0]
    for r in (0, 13, 29):  # the stored record is the preprocessed signal, by an independent read
        rec = wfdb.rdrecord(str(folder / table["filename_lr"].iloc[r]))
        order = [[n.upper() for n in rec.sig_name].index(lead) for lead in cinc2020.LEADS]
        want = zscore(bandpass(rec.p_signal[:, order].T, 100, 0.5, 40))
        assert np.abs(store.record(r) - want).max() <= 2 ** -11 + 1e-6
        np.testing.assert_allclose(store.record(r).mean(axis=1), 0, atol=1e-3)
        np.testing.assert_allclose(store.record(r).std(axis=1), 1, atol=1e-3)
    x, _ = data.test[0]  # the windows training and evaluation see come from that store
    np.testing.assert_array_equal(x.numpy(), store.windows([data.test.rows[0]], [0], 1000)[0])
    with caplog.at_level(logging.WARNING):  # the default cache is another one, and no stale warning
        plain = ptbxl.build(folder, tmp_path / "cache", split_seed=0, progress=False)
    assert "changed since the cache" not in caplog.text and plain.preprocess["units"] == "mV"
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2
    assert np.abs(plain.test.store.record(0)).max() > 0.3  # millivolts, not z-scores
    with pytest.raises(ECGError, match="made with preprocessing bandpass0.5-40\\+zscore, not none"):
        ptbxl.build(folder, tmp_path / "cache", split_seed=0, progress=False, saved_manifest=data.manifest)


# ---- the beats ----

def test_beat_filters_key_the_cache_and_act_before_the_beats_are_cut() -> None:
    keys = {"kaggle": "e722dbb7c30f", "centered": "01cc79866ef3", "filtered": "cd41be0024a2",  # before preprocessing
            "beatgan": "b1694a573e26"}
    assert {name: p.key() for name, p in mitdb.BEAT_FORMATS.items()} == keys
    assert mitdb.beat_params("kaggle") == mitdb.BEAT_FORMATS["kaggle"]
    filtered = mitdb.beat_params("centered", Preprocess(("bandpass", "zscore")))
    assert filtered.bandpass == (0.5, 40.0) and not filtered.baseline and filtered.key() not in keys.values()
    with pytest.raises(ECGError, match="removes the baseline already"):
        mitdb.beat_params("filtered", Preprocess(("baseline",)))
    fs = 360
    t = np.arange(60 * fs) / fs
    peaks = np.arange(fs, len(t) - fs, fs)
    signal = 3 * np.sin(2 * np.pi * 0.15 * t)  # a large slow wander
    for p in peaks:
        signal[p - 10:p + 11] += 1 - np.abs(np.arange(-10, 11)) / 11
    onsets = {}
    for name, params in (("plain", mitdb.BEAT_FORMATS["centered"]), ("bandpass", filtered),
                         ("baseline", mitdb.beat_params("centered", Preprocess(("baseline",))))):
        beats = mitdb.cut_beats(signal, fs, peaks, peaks, params)["x"]
        onsets[name] = beats[:, 10].std()  # the level before the P wave, beat to beat
    assert onsets["bandpass"] < onsets["plain"] / 5 and onsets["baseline"] < onsets["plain"] / 5, onsets


def test_beats_are_normalised_one_by_one() -> None:
    rng = np.random.default_rng(3)
    beats = {"x": (rng.normal(size=(6, 187)) * 3 + 2).astype(np.float32), "rr": np.ones((6, 4), np.float32),
             "record": np.zeros(6, np.int64), "amp": np.ones(6, np.float32)}
    stats = np.ones(6, bool)
    z = mitdb.beat_inputs(beats, stats, by_record=False, normalise="zscore")["x"]
    m = mitdb.beat_inputs(beats, stats, by_record=False, normalise="minmax")["x"]
    assert z.dtype == np.float32 and z.shape == (6, 187)
    np.testing.assert_allclose(z.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose([m.min(axis=1), m.max(axis=1)], [np.zeros(6), np.ones(6)], atol=1e-6)
    np.testing.assert_array_equal(mitdb.beat_inputs(beats, stats, by_record=False)["x"], beats["x"])


def test_preprocessed_beats_train_and_predict_alike(data_root: Path, tmp_path: Path) -> None:
    """The MIT-BIH beats of a preprocessed run, and predict.py's beats of a record at its reference peaks, agree."""
    prep = Preprocess(("bandpass", "zscore"))
    data = mitdb.build(data_root / "mitdb", tmp_path, binary=False, split_seed=0, protocol="inter",
                       beat_format="centered", preprocess=prep, progress=False)
    assert list(data.manifest["extraction"]["bandpass"]) == [0.5, 40.0]
    assert data.preprocess["steps"] == data.manifest["preprocess"]["steps"] == ["bandpass", "zscore"]
    x = data.train.x[:, 0].numpy()
    np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=1), 1, atol=1e-4)
    rec, _ = mitdb._read_record(data_root / "mitdb", "100")
    mine = data.test.meta["record"] == 100
    at = mitdb.beats_at(rec.p_signal[:, 0], rec.fs, data.test.meta["sample"][mine], beat_format="centered",
                        median_beat=False, rr_features=False, preprocess=prep)
    np.testing.assert_array_equal(at, data.test.x[torch.as_tensor(mine)].numpy())


def test_kaggle_csv_beats_refuse_preprocessing(tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "data" / "mitdb"
    folder.mkdir(parents=True)
    for name in ("mitbih_train.csv", "mitbih_test.csv"):
        (folder / name).write_text("0\n")
    monkeypatch.setenv("ECG_DATA_ROOT", str(tmp_path / "data"))
    assert commander.main(["--preprocess", "bandpass", "--root-dir", str(tmp_path / "root"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--preprocess bandpass needs the raw MIT-BIH records" in err and err.count("\n") == 1


# ---- flags ----

def test_the_steps_name_the_run() -> None:
    base = ["--dataset", "ptbxl", "--model-name", "cnn1d_3"]
    plain = run_name(parse_args(base))
    a = parse_args([*base, "--preprocess", "zscore", "bandpass"])
    assert a.preprocess == ["bandpass", "zscore"] and "pre-" not in plain
    assert run_name(a).endswith("_100hz-10s_pre-bandpass0.5-40+zscore")
    b = run_name(parse_args([*base, "--preprocess", "bandpass", "zscore", "--bandpass", "1", "30"]))
    assert b != run_name(a) and "_pre-bandpass1-30+zscore" in b
    assert "_pre-minmax" in run_name(parse_args(["--preprocess", "minmax"]))  # beats too


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "ptb", "--preprocess", "zscore"], "--preprocess applies to the record datasets"),
    (["--preprocess", "zscore", "minmax"], "zscore and minmax both normalise"),
    (["--dataset", "ptbxl", "--bandpass", "1", "30"], "--bandpass sets the edges of --preprocess bandpass"),
    (["--dataset", "ptbxl", "--preprocess", "bandpass", "--bandpass", "1", "50"], "below 50 Hz (half the rate of "
                                                                                  "--fs 100)"),
    (["--preprocess", "bandpass", "--bandpass", "30", "1"], "the low edge must lie below the high one"),
    (["--preprocess", "bandpass", "--bandpass", "0.5", "70"], "62.5 Hz (half the rate of the beats"),
    (["--beat-format", "filtered", "--preprocess", "baseline"], "--beat-format filtered removes the baseline"),
    (["--preprocess", "notch"], "invalid choice: 'notch'"),
    (["--dataset", "cinc2020", "--bandpass", "0", "40", "--preprocess", "bandpass"], "must be positive"),
])
def test_wrong_combinations_are_one_line_and_exit_2(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and err.count("\n") == 1, err
