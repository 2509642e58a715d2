"""The ``beatgan`` beat format (360 Hz, both leads, each beat in [-1, 1]) and cross-validation folds of the
intra-patient split, on the real MIT-BIH records."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from args import parse_args, run_name
from loaders import BEAT_FORMAT_FS, BEAT_FORMAT_NAMES, mitdb, recording
from loaders.preprocess import Preprocess
from toolbox.utils import ECGError

BEATGAN = mitdb.BEAT_FORMATS["beatgan"]


@pytest.fixture(scope="module")
def records(data_root: Path) -> dict[str, tuple[dict, dict]]:
    """The beatgan and kaggle beats of records 100 (MLII on lead 0), 114 (MLII on lead 1), 102 (no MLII)."""
    raw = data_root / "mitdb"
    return {r: (mitdb.extract_record(raw, r, BEATGAN), mitdb.extract_record(raw, r, mitdb.BEAT_FORMATS["kaggle"]))
            for r in ("100", "114", "102")}


@pytest.fixture(scope="module")
def fold_data(tmp_path_factory: pytest.TempPathFactory, data_root: Path):
    """All 48 records in the beatgan format, tested on fold 2 of 5 intra-patient folds (one build per module)."""
    cache = tmp_path_factory.mktemp("beatgan_cache")
    return mitdb.build(data_root / "mitdb", cache, binary=False, split_seed=0, beat_format="beatgan", folds=5,
                       fold=2, progress=False), cache


def test_the_format_is_listed_with_its_rate() -> None:
    assert BEAT_FORMAT_NAMES == tuple(mitdb.BEAT_FORMATS) and BEAT_FORMAT_NAMES[-1] == "beatgan"
    assert BEAT_FORMAT_FS == {name: p.fs for name, p in mitdb.BEAT_FORMATS.items()}
    assert (BEATGAN.fs, BEATGAN.length, BEATGAN.before, BEATGAN.leads, BEATGAN.rr_factor) == (360, 320, 140, 2, None)
    keys = [p.key() for p in mitdb.BEAT_FORMATS.values()]
    assert len(set(keys)) == len(keys)  # its own cache
    assert mitdb.LATER_FIELDS["leads"] == mitdb.BeatParams().leads == 1  # the older formats keep their cache keys


def test_beats_are_both_leads_mlii_first_each_scaled_to_minus_one_one(records: dict, data_root: Path) -> None:
    """Every interior beat equals its 320 raw samples of (MLII, other lead) scaled together by their min and max."""
    for r, (gan, kag) in records.items():
        x = gan["x"]
        assert x.dtype == np.float32 and x.shape == (len(kag["label"]), 2, 320)
        np.testing.assert_array_equal(gan["sample"], kag["sample"])
        np.testing.assert_array_equal(gan["label"], kag["label"])
        np.testing.assert_array_equal(x.min(axis=(1, 2)), -1)
        np.testing.assert_array_equal(x.max(axis=(1, 2)), 1)
        rec, _ = mitdb._read_record(data_root / "mitdb", r)
        order = {"100": [0, 1], "114": [1, 0], "102": [0, 1]}[r]  # MLII first; 102 has none (V5, V2)
        assert (rec.sig_name[order[0]] == "MLII") == (r != "102")
        for i in (5, len(x) // 2, len(x) - 5):
            s = int(gan["sample"][i])
            seg = rec.p_signal[s - 140:s + 180, order].T
            expect = 2 * (seg - seg.min()) / (seg.max() - seg.min()) - 1
            np.testing.assert_allclose(x[i], expect, atol=1e-6)
            # one scale for both leads: the lead with the smaller swing does not reach both -1 and 1
            assert min(np.ptp(x[i, 0]), np.ptp(x[i, 1])) < 2


def test_the_r_peak_lies_at_sample_140(records: dict) -> None:
    for r in ("100", "114"):
        gan, _ = records[r]
        mlii = gan["x"][gan["label"] == 0, 0]
        peak = np.abs(mlii - np.median(mlii, axis=1, keepdims=True)).argmax(axis=1)
        assert np.mean(np.abs(peak - 140) <= 10) > 0.95, (r, np.median(peak))


def test_beats_at_a_record_edge_are_zero_padded(records: dict) -> None:
    gan, _ = records["100"]
    s = int(gan["sample"][0])
    assert s < 140  # the first beat of record 100 starts before the record
    pad = gan["x"][0, :, :140 - s]
    np.testing.assert_array_equal(pad, 0)
    inside = gan["x"][0, :, 140 - s:]
    assert inside.min() == -1 and inside.max() == 1


def test_rr_features_follow_the_two_leads_and_filters_run_at_360_hz(records: dict, data_root: Path) -> None:
    gan, _ = records["100"]
    beats = {**gan}
    inputs = mitdb.beat_inputs(beats, np.ones(len(gan["label"]), bool), by_record=False)
    idx = np.arange(10)
    x = mitdb.network_input(inputs, None, True, idx)
    assert x.shape == (10, 6, 320)
    np.testing.assert_array_equal(x[:, :2], gan["x"][idx])
    np.testing.assert_array_equal(x[:, 2:, 0], inputs["rr"][idx])
    filtered = mitdb.extract_record(data_root / "mitdb", "100", mitdb.beat_params("beatgan", Preprocess(("bandpass",))))
    assert filtered["x"].shape == gan["x"].shape and not np.allclose(filtered["x"], gan["x"], atol=0.05)
    np.testing.assert_array_equal(filtered["x"][1:-1].max(axis=(1, 2)), 1)


def test_what_the_format_does_not_combine_with_is_refused(capsys) -> None:
    with pytest.raises(ECGError, match="--median-beat: --beat-format beatgan"):
        mitdb.beat_params("beatgan", median_beat=True)
    with pytest.raises(ECGError, match="--preprocess zscore: --beat-format beatgan scales each beat"):
        mitdb.beat_params("beatgan", Preprocess(("zscore",)))
    assert mitdb.beat_params("centered", median_beat=True) == mitdb.BEAT_FORMATS["centered"]
    for argv, message in ((["--median-beat"], "--median-beat: --beat-format beatgan"),
                          (["--preprocess", "minmax"], "--preprocess minmax: --beat-format beatgan"),
                          (["--preprocess", "bandpass", "--bandpass", "0.5", "200"], "below 180 Hz")):
        with pytest.raises(SystemExit) as exc:
            parse_args(["--beat-format", "beatgan", *argv])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.count("\n") == 1, err
    wide = ["--preprocess", "bandpass", "--bandpass", "0.5", "100"]
    assert parse_args(["--beat-format", "beatgan", *wide, "--rr-features"]).bandpass == [0.5, 100.0]
    with pytest.raises(SystemExit):  # the 125 Hz beats cannot take that band
        parse_args(wide)
    capsys.readouterr()


def test_beats_at_cuts_both_leads_as_training_does(records: dict, data_root: Path) -> None:
    import predict

    gan, _ = records["114"]
    rec, _ = mitdb._read_record(data_root / "mitdb", "114")
    at = mitdb.beats_at(rec.p_signal[:, [1, 0]], rec.fs, gan["sample"], beat_format="beatgan", median_beat=False,
                        rr_features=False)
    np.testing.assert_array_equal(at, gan["x"])
    with pytest.raises(ECGError, match="cuts beats from 2 lead"):
        mitdb.beats_at(rec.p_signal[:, 1], rec.fs, gan["sample"], beat_format="beatgan", median_beat=False,
                       rr_features=False)
    two = recording.Recording("114", Path("114"), [rec.p_signal[:, 0], rec.p_signal[:, 1]], [360.0, 360.0],
                              ["V5", "MLII"])
    np.testing.assert_array_equal(predict.beat_leads(two, 1, 2), rec.p_signal[:, [1, 0]])
    np.testing.assert_array_equal(predict.beat_leads(two, 1, 1), rec.p_signal[:, 1])
    one = recording.Recording("114", Path("114"), [rec.p_signal[:, 1]], [360.0], ["MLII"])
    with pytest.raises(ECGError, match="the model's beats have 2 leads"):
        predict.beat_leads(one, 0, 2)


def test_the_full_build_feeds_two_lead_beats(fold_data) -> None:
    data, cache = fold_data
    assert data.in_channels == 2 and tuple(data.train.x.shape[1:]) == (2, 320)
    assert data.manifest["extraction"]["leads"] == 2 and data.manifest["extraction"]["fs"] == 360
    assert [p.name.startswith(f"mitdb_beats_{BEATGAN.key()}_") for p in cache.glob("*.npz")] == [True]


def test_intra_folds_partition_the_beats_stratified(fold_data, data_root: Path) -> None:
    data, cache = fold_data
    assert data.manifest["cross_validation"] == {"folds": 5, "fold": 2, "unit": "beat"}
    assert data.manifest["protocol"] == "intra-patient" and not data.resample_records
    keys = {name: set((getattr(data, name).meta["record"] * 1_000_000 + getattr(data, name).meta["sample"]).tolist())
            for name in ("train", "val", "test")}
    assert not keys["test"] & (keys["train"] | keys["val"]) and not keys["train"] & keys["val"]
    beats = mitdb.load_beats(data_root / "mitdb", cache, BEATGAN, progress=False)
    labels = beats["label"]
    assert sum(len(k) for k in keys.values()) == len(labels)
    chosen = mitdb.intra_fold_split(labels, 5, 2, seed=0)
    np.testing.assert_array_equal(data.test.meta["sample"], beats["sample"][chosen["test"]])
    np.testing.assert_array_equal(data.train.meta["sample"], beats["sample"][chosen["train"]])
    overall = np.bincount(labels, minlength=5) / len(labels)
    tests = []
    for fold in range(1, 6):
        split = mitdb.intra_fold_split(labels, 5, fold, seed=0)
        assert sorted(np.concatenate(list(split.values())).tolist()) == list(range(len(labels)))
        assert abs(len(split["test"]) - len(labels) / 5) <= 1
        assert abs(len(split["val"]) - 0.1 * (len(labels) - len(split["test"]))) <= 1
        for name in ("train", "val", "test"):
            share = np.bincount(labels[split[name]], minlength=5) / len(split[name])
            np.testing.assert_allclose(share, overall, atol=0.002)
        tests.append(split["test"])
    joined = np.concatenate(tests)
    assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)  # the test folds partition all beats
    assert not np.array_equal(chosen["test"], mitdb.intra_fold_split(labels, 5, 2, seed=1)["test"])
    with pytest.raises(ECGError, match="the smallest class has"):
        mitdb.intra_fold_split(labels, 10 ** 6, 1, seed=0)


def test_a_saved_fold_split_reloads(fold_data, data_root: Path) -> None:
    data, cache = fold_data
    again = mitdb.build(data_root / "mitdb", cache, binary=True, split_seed=7, beat_format="beatgan", folds=5, fold=2,
                        saved_manifest=data.manifest, progress=False)
    np.testing.assert_array_equal(again.test.meta["sample"], data.test.meta["sample"])
    np.testing.assert_array_equal(again.test.meta["record"], data.test.meta["record"])


def test_the_parser_takes_intra_folds(tmp_path: Path, capsys) -> None:
    a = parse_args(["--split", "intra", "--folds", "5", "--fold", "2"])
    assert (a.split, a.folds, a.fold) == ("intra", 5, 2) and "_cv2of5_" in run_name(a)
    assert parse_args(["--folds", "30", "--fold", "30"]).folds == 30  # the DS1 limit is the inter split's
    for argv, message in ((["--split", "intra", "--folds", "5", "--fold", "6"], "--fold 6 is not one of the 5 folds"),
                          (["--split", "inter", "--folds", "30", "--fold", "1"], "--folds 30: DS1 has 22 records")):
        with pytest.raises(SystemExit) as exc:
            parse_args(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.count("\n") == 1, err
    folder = tmp_path / "mitdb"
    folder.mkdir()
    for name in ("mitbih_train.csv", "mitbih_test.csv"):
        (folder / name).write_text("0\n")
    with pytest.raises(ECGError, match="--folds 5 needs the raw MIT-BIH records"):
        mitdb.build_beats(folder, tmp_path / "cache", binary=False, split_seed=0, folds=5, fold=2)


def test_the_inter_fold_entry_keeps_its_form(fold_data) -> None:
    data, _ = fold_data
    beats = {"record": data.test.meta["record"][:50], "sample": data.test.meta["sample"][:50],
             "label": data.test.labels.numpy()[:50]}
    split = {"train": np.arange(20), "val": np.arange(20, 30), "test": np.arange(30, 50)}
    inter = mitdb._manifest(beats, split, 0, BEATGAN, "inter", [["101"], ["106"]], 2)
    assert inter["cross_validation"] == {"folds": [["101"], ["106"]], "fold": 2}
    assert "cross_validation" not in mitdb._manifest(beats, split, 0, BEATGAN)
