"""RR-interval features, training augmentation and label smoothing: maths on small tensors, runs on real records."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import commander
from args import parse_args, run_name
from loaders import kaggle, mitdb
from tests.conftest import one_line_error, run_cli
from toolbox import augment
from toolbox.losses import get_criterion
from toolbox.utils import ECGError

# --- RR-interval features -------------------------------------------------------------------------------------


def test_rr_intervals_by_hand() -> None:
    peaks = np.array([0, 100, 200, 250, 450])  # RR 100, 100, 50, 200
    rr = mitdb.rr_intervals(peaks, peaks[[0, 3, 4]], local=10)
    assert mitdb.RR_FEATURES == ["pre", "post", "local", "pre/local"]
    np.testing.assert_allclose(rr[0], [100, 100, 100, 1.0])  # the first beat borrows its one interval
    np.testing.assert_allclose(rr[1], [50, 200, 250 / 3, 50 / (250 / 3)], rtol=1e-6)
    np.testing.assert_allclose(rr[2], [200, 200, 112.5, 200 / 112.5], rtol=1e-6)  # last: post = pre
    # the local mean covers only the last ``local`` intervals
    np.testing.assert_allclose(mitdb.rr_intervals(peaks, peaks[[4]], local=2)[0, 2], 125, rtol=1e-6)


def test_rr_features_are_divided_by_the_mean_rr_of_the_statistics_beats() -> None:
    beats = {"x": np.zeros((4, 3), np.float32), "amp": np.ones(4, np.float32), "record": np.array([1, 1, 1, 2]),
             "rr": np.array([[100, 200, 150, 0.5], [300, 100, 150, 2.0], [200, 200, 200, 1.0], [80, 80, 80, 1.0]],
                            np.float32)}
    out = mitdb.beat_inputs(beats, np.array([True, True, False, True]), by_record=False)["rr"]
    # record 1: mean pre RR of its first two beats (the third is not a statistics beat) = 200
    np.testing.assert_allclose(out[:3, :3], beats["rr"][:3, :3] / 200)
    np.testing.assert_allclose(out[3], [1, 1, 1, 1])
    np.testing.assert_array_equal(out[:, 3], beats["rr"][:, 3])  # the prematurity is a ratio already


def test_rr_features_of_the_real_records_separate_premature_beats(beats: dict) -> None:
    rr_all = mitdb.beat_inputs(beats, np.ones(len(beats["label"]), bool), by_record=False)["rr"]
    rr = {c: np.median(rr_all[beats["label"] == k], axis=0) for k, c in enumerate(mitdb.AAMI_CLASSES)}
    assert rr_all.shape == (len(beats["label"]), 4) and np.isfinite(rr_all).all()
    assert 0.97 < rr["N"][3] < 1.03  # normal beats come on time
    assert rr["S"][3] < 0.85 and rr["V"][3] < 0.85  # supraventricular and ventricular ectopics come early
    assert rr["V"][1] > 1.15  # and a ventricular ectopic is followed by a compensatory pause


@pytest.fixture(scope="module")
def inter_rr(cache_root: Path, data_root: Path):
    return mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0, protocol="inter",
                       progress=False, rr_features=True)


def test_rr_features_are_constant_channels_after_the_beat(inter_rr, cache_root: Path, data_root: Path,
                                                          beats: dict) -> None:
    plain = mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0, protocol="inter",
                        progress=False)
    assert (inter_rr.in_channels, inter_rr.feature_channels, inter_rr.signal_channels) == (5, 4, 1)
    assert plain.in_channels == 1 and plain.feature_channels == 0
    assert inter_rr.manifest["rr_features"] == mitdb.RR_FEATURES and plain.manifest["rr_features"] == []
    for name in ("train", "test"):
        with_rr, without = getattr(inter_rr, name), getattr(plain, name)
        assert torch.equal(with_rr.x[:, :1], without.x) and torch.equal(with_rr.labels, without.labels)
        features = with_rr.x[:, 1:]
        assert torch.equal(features, features[:, :, :1].expand_as(features))  # constant along the beat
        key = beats["record"] * 1_000_000 + beats["sample"]
        order = np.argsort(key)
        want = order[np.searchsorted(key[order], with_rr.meta["record"] * 1_000_000 + with_rr.meta["sample"])]
        whole_records = mitdb.beat_inputs(beats, np.ones(len(beats["label"]), bool), by_record=False)["rr"]
        np.testing.assert_array_equal(features[:, :, 0].numpy(), whole_records[want])  # inter: whole-record RR


# --- beat formats -----------------------------------------------------------------------------------------------


def test_centered_and_filtered_beats_add_the_samples_before_the_r_peak(data_root: Path) -> None:
    before = mitdb.BEAT_FORMATS["centered"].before
    kaggle_beats = mitdb.extract_record(data_root / "mitdb", "208", mitdb.BEAT_FORMATS["kaggle"])
    centered = mitdb.extract_record(data_root / "mitdb", "208", mitdb.BEAT_FORMATS["centered"])
    for key in ("label", "sample", "rr"):  # the same beats, in the same order
        np.testing.assert_array_equal(kaggle_beats[key], centered[key])
    k, c = kaggle_beats["x"][:, : 187 - before], centered["x"][:, before:]
    inside = k != 0  # the Kaggle beat is zero after 1.2 x RR; where it has signal, it is the centered beat shifted
    assert inside.mean() > 0.5 and np.array_equal(k[inside], c[inside])
    assert abs(np.median(centered["x"].argmax(axis=1)) - before) <= 2  # the R peak sits at sample ``before``
    assert (centered["x"][1:-1, :before] != 0).any(axis=1).all()  # signal before the peak, not zero padding
    assert (centered["x"][1:-1] == 0).mean() < 0.01  # and no cut at 1.2 x RR

    filtered = mitdb.extract_record(data_root / "mitdb", "208", mitdb.BEAT_FORMATS["filtered"])
    np.testing.assert_array_equal(filtered["label"], centered["label"])
    inner = slice(1, -1)  # the first and last beats may lie at the record's edge
    np.testing.assert_allclose(filtered["amp"][inner], np.abs(filtered["x"][inner, before]), rtol=1e-6)
    scaled = mitdb.beat_inputs({**filtered, "record": np.zeros(len(filtered["label"]), np.int64)},
                               np.ones(len(filtered["label"]), bool), by_record=True)["x"]
    assert np.median(np.abs(scaled[:, before])) == pytest.approx(1.0, abs=0.02)  # beats scaled to the record's
    assert abs(np.median(scaled)) < 0.05 < abs(np.median(centered["x"]))  # baseline near 0, not min-max


def test_splits_json_of_another_beat_format_is_refused_and_older_ones_load(cache_root: Path, data_root: Path,
                                                                           beats: dict, tmp_path: Path) -> None:
    split = mitdb.intra_patient_split(beats["label"], 0)
    kaggle_manifest = mitdb._manifest(beats, split, 0, mitdb.BEAT_FORMATS["kaggle"])
    with pytest.raises(ECGError, match="other extraction parameters"):  # its own cache: the shared one holds one file
        mitdb.build(data_root / "mitdb", tmp_path / "cache", binary=False, split_seed=0,
                    saved_manifest=kaggle_manifest, progress=False, beat_format="centered")
    for key in ("before", "scale"):  # as written before --beat-format existed
        del kaggle_manifest["extraction"][key]
    old = mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0,
                      saved_manifest=kaggle_manifest, progress=False)
    assert len(old.test) == len(split["test"])
    kaggle_manifest["extraction"]["version"] = 2  # made before record statistics left out test beats
    with pytest.raises(ECGError, match="extraction version 2.*train it again"):
        mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0,
                    saved_manifest=kaggle_manifest, progress=False, rr_features=True)
    assert len(mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0,
                           saved_manifest=kaggle_manifest, progress=False).test) == len(split["test"])
    with pytest.raises(ECGError, match="unknown beat format 'wide'; valid: kaggle, centered, filtered"):
        mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0, beat_format="wide")


@pytest.mark.parametrize("flags", [["--rr-features"], ["--beat-format", "centered"], ["--median-beat"]])
def test_beat_options_need_the_raw_mitbih_records(flags: list[str], tmp_path: Path, beats: dict) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "ptb", *flags])
    folder = tmp_path / "data" / "mitdb"
    for name in ("mitbih_train.csv", "mitbih_test.csv"):
        kaggle.write_csv(folder / name, beats["x"][:50], beats["label"][:50])
    proc = run_cli("--dataset", "ecg", *flags, "--short-run", "--root-dir", str(tmp_path / "root"),
                   env={"ECG_DATA_ROOT": str(tmp_path / "data")})
    assert f"{' '.join(flags)} needs the raw MIT-BIH records" in one_line_error(proc)


# --- median beat of the record ----------------------------------------------------------------------------------


def test_record_templates_by_hand() -> None:
    n = mitdb.MIN_TEMPLATE_BEATS
    x = np.concatenate([np.full((n, 2), 1.0), np.full((n - 1, 2), 5.0), [[0, 1], [2, 3], [10, 10]]]).astype(np.float32)
    records = np.array([1] * (2 * n - 1) + [2] * 3)
    prematurity = np.array([1.0] * (n - 2) + [1.8, 0.9] + [0.7] * (n - 1) + [1.0, 1.0, 0.6])
    # record 1: the beats that are not early (on time or late) only, although the early ones are nearly half;
    # record 2 has too few of them, so all its beats count (and the median ignores the outlier)
    np.testing.assert_array_equal(mitdb.record_templates(x, records, prematurity),
                                  [[1, 1]] * (2 * n - 1) + [[2, 3]] * 3)
    # only the statistics beats count: without the outlier's neighbours, record 2 keeps [0, 1] and [10, 10]
    stats = np.ones(len(x), bool)
    stats[-2] = False
    np.testing.assert_array_equal(mitdb.record_templates(x, records, prematurity, stats)[-3:], [[5, 5.5]] * 3)


def test_no_test_beat_shapes_a_training_input_on_the_intra_patient_split(cache_root: Path, data_root: Path,
                                                                        tmp_path: Path, monkeypatch) -> None:
    """Changing every test beat of a record (its signal, amplitude and RR intervals) leaves the inputs of that
    record's training and validation beats as they were: template, scale and mean RR use training-side beats."""
    options = {"binary": False, "split_seed": 0, "progress": False, "rr_features": True, "median_beat": True,
               "beat_format": "filtered"}
    before = mitdb.build(data_root / "mitdb", cache_root / "cache", **options)
    real = mitdb.load_beats

    def changed(*args, **kwargs):
        beats = {k: v.copy() for k, v in real(*args, **kwargs).items()}
        test = np.zeros(len(beats["label"]), bool)
        test[mitdb.intra_patient_split(beats["label"], 0)["test"]] = True
        mine = test & (beats["record"] == 208)
        beats["x"][mine] = 7.0 * np.sign(beats["x"][mine]) + 3.0
        beats["amp"][mine] *= 9.0
        beats["rr"][mine, :3] *= 0.25
        return beats

    monkeypatch.setattr(mitdb, "load_beats", changed)
    after = mitdb.build(data_root / "mitdb", cache_root / "cache", **options)
    for name in ("train", "val"):
        old, new = getattr(before, name), getattr(after, name)
        assert (old.meta["record"] == 208).sum() > 200
        assert torch.equal(old.x, new.x), name  # every record, 208 included: signal, template and RR channels
    moved = after.test.meta["record"] == 208
    assert not torch.equal(before.test.x[moved], after.test.x[moved])  # the change reached the test beats
    # on the inter-patient split a DS2 record's statistics use the whole record, unlabelled (as a Holter would)
    assert before.manifest["statistics"] == "training-side beats"


def test_median_beat_is_a_second_signal_channel(inter_rr, cache_root: Path, data_root: Path, beats: dict) -> None:
    data = mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0, protocol="inter",
                       progress=False, rr_features=True, median_beat=True)
    assert (data.in_channels, data.signal_channels, data.feature_channels) == (6, 2, 4)
    assert data.manifest["median_beat"] is True and inter_rr.manifest["median_beat"] is False
    assert torch.equal(data.test.x[:, [0, 2, 3, 4, 5]], inter_rr.test.x) and torch.equal(data.test.labels,
                                                                                          inter_rr.test.labels)
    for record in (214, 232):  # DS2 records: the template is their own, from their beats that are not early
        mine = data.test.meta["record"] == record
        not_early = (beats["record"] == record) & (beats["rr"][:, 3] >= mitdb.NOT_EARLY)
        want = np.median(beats["x"][not_early], axis=0)
        np.testing.assert_allclose(data.test.x[mine, 1].numpy(), np.broadcast_to(want, (mine.sum(), 187)))


def test_centered_median_beat_run_records_its_inputs_and_tests(tmp_path: Path, capsys) -> None:
    flags = ["--dataset", "ecg", "--model-name", "cnn1d_3", "--short-run", "--beat-format", "centered",
             "--median-beat", "--root-dir", str(tmp_path), "--epochs", "1"]
    assert run_name(parse_args(flags)).endswith("_crossentropy_beats-centered_med")
    assert commander.main(flags) == 0
    assert "--beat-format centered --median-beat --test --resume best" in capsys.readouterr().out  # the hint
    run = tmp_path / "ecg" / "runs" / f"{run_name(parse_args(flags))}_1"
    extraction = json.loads((run / "splits.json").read_text())["extraction"]
    assert extraction["before"] == mitdb.BEAT_FORMATS["centered"].before and extraction["rr_factor"] is None
    assert json.loads((run / "config.json").read_text())["dataset"]["in_channels"] == 2
    assert commander.main([*flags, "--test"]) == 0
    assert "test (model_best.pth.tar, epoch" in capsys.readouterr().out


# --- augmentation -----------------------------------------------------------------------------------------------


def _batch(n: int = 64, features: int = 0) -> torch.Tensor:
    t = torch.linspace(0, 6.28, 187)
    signal = (torch.sin(t) + 1.5)[None, None] * torch.linspace(0.5, 2, n)[:, None, None]
    return torch.cat([signal, torch.rand(n, features, 1).expand(n, features, 187)], dim=1)


def test_scale_multiplies_each_example_by_a_bounded_factor() -> None:
    x = _batch()
    ratio = augment.scale(x) / x
    per_example = ratio[:, 0, 10]
    assert torch.allclose(ratio, per_example[:, None, None].expand_as(ratio), atol=1e-5)
    assert per_example.min() >= 0.8 - 1e-6 and per_example.max() <= 1.2 + 1e-6 and per_example.std() > 0.05


def test_noise_and_wander_stay_within_their_share_of_the_signal() -> None:
    x = _batch()
    sd = x.std(dim=(1, 2))
    residual = augment.noise(x) - x
    assert (residual.std(dim=(1, 2)) <= 0.05 * sd * 1.2).all() and residual.abs().sum() > 0
    residual = augment.wander(x) - x
    assert (residual.abs().amax(dim=(1, 2)) <= 0.1 * sd + 1e-6).all() and residual.abs().sum() > 0
    # at most one cycle over 187 samples: the drift is smooth
    assert residual.diff(dim=2).abs().max() <= 0.1 * sd.max() * 2 * np.pi / 187 * 1.01


def test_shift_moves_a_spike_by_at_most_five_percent_and_fills_with_zeros() -> None:
    x = torch.zeros(200, 1, 100)
    x[:, 0, 50] = 1.0
    moved = augment.shift(x)
    assert torch.equal(moved.sum(dim=2), torch.ones(200, 1))  # the spike survives, nothing else appears
    where = moved[:, 0].argmax(dim=1) - 50
    assert where.abs().max() <= 5 and len(where.unique()) > 5
    edge = torch.ones(50, 1, 100)
    filled = augment.shift(edge)
    assert ((filled == 0) | (filled == 1)).all() and (filled == 0).any()


def test_augmenter_leaves_feature_channels_alone_and_repeats_with_the_seed() -> None:
    x, y = _batch(features=4), torch.zeros(64, dtype=torch.long)
    aug = augment.Augmenter(["shift", "scale", "noise", "wander"], signal_channels=1)
    torch.manual_seed(3)
    first, labels = aug(x, y)
    torch.manual_seed(3)
    again, _ = aug(x, y)
    assert torch.equal(first, again) and first.shape == x.shape and labels is y
    assert torch.equal(first[:, 1:], x[:, 1:]) and not torch.equal(first[:, :1], x[:, :1])
    with pytest.raises(ECGError, match="unknown augmentation 'flip'"):
        augment.Augmenter(["flip"], 1)


# --- label smoothing --------------------------------------------------------------------------------------------


def test_label_smoothing_penalises_overconfidence_and_only_for_crossentropy() -> None:
    logits, target = torch.tensor([[20.0, 0, 0, 0, 0]]), torch.tensor([0])
    assert get_criterion("crossentropy")(logits, target) < 1e-6
    smoothed = get_criterion("crossentropy", None, 0.1)(logits, target)
    assert smoothed == pytest.approx(0.1 * 4 / 5 * 20, rel=1e-3)  # eps (K-1)/K times the logit gap
    with pytest.raises(ECGError, match="label smoothing applies to --criterion crossentropy"):
        get_criterion("focal", None, 0.1)


# --- through commander.py ---------------------------------------------------------------------------------------

# every augmenter the beats take (mixup makes soft targets, here with label smoothing), given out of order
BEAT_AUGMENTERS = ["wander", "scale", "mixup", "noise", "shift", "mask", "invert", "renormalize", "stretch"]
FLAGS = ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3", "--short-run", "--rr-features",
         "--augment", *BEAT_AUGMENTERS, "--label-smoothing", "0.1"]
IN_ORDER = "mixup+stretch+renormalize+invert+scale+noise+wander+shift+mask"


def test_run_name_and_flags() -> None:
    name = run_name(parse_args(FLAGS))
    assert name.endswith(f"_rr_aug-{IN_ORDER}_ls0.1")
    assert run_name(parse_args(FLAGS[:7])) == name.removesuffix(f"_rr_aug-{IN_ORDER}_ls0.1")
    old = ["--dataset", "ecg", "--augment", "wander", "scale", "noise", "shift"]  # a run named before there were more
    assert run_name(parse_args(old)).endswith("_aug-scale+noise+wander+shift")


@pytest.fixture()
def root(tmp_path: Path, cache_root: Path) -> Path:
    shutil.copytree(cache_root / "cache", tmp_path / "cache")
    return tmp_path


class CountingAugmenter(augment.Augmenter):
    calls = 0  # over every instance: each run builds its own

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        CountingAugmenter.calls += 1
        return super().__call__(x, y)


def test_rr_augmented_run_trains_resumes_exactly_and_tests(root: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(commander, "Augmenter", CountingAugmenter)
    monkeypatch.setattr(CountingAugmenter, "calls", 0)
    straight = root / "straight"
    shutil.copytree(root / "cache", straight / "cache")
    assert commander.main([*FLAGS, "--epochs", "2", "--scheduler", "StepLR", "--root-dir", str(straight)]) == 0
    assert commander.main([*FLAGS, "--epochs", "1", "--scheduler", "StepLR", "--root-dir", str(root)]) == 0
    assert commander.main([*FLAGS, "--epochs", "2", "--scheduler", "StepLR", "--root-dir", str(root),
                           "--resume", "latest"]) == 0
    name = run_name(parse_args([*FLAGS, "--scheduler", "StepLR"]))
    run = root / "ecg" / "runs" / f"{name}_1"
    resumed = torch.load(run / "checkpoint.pth.tar", weights_only=True)
    reference = torch.load(straight / "ecg" / "runs" / f"{name}_1" / "checkpoint.pth.tar", weights_only=True)
    assert resumed["in_channels"] == 5
    for k, v in reference["model"].items():  # augmentation draws are part of the saved random state
        assert torch.equal(v, resumed["model"][k]), k
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"]["in_channels"] == 5 and config["flags"]["augment"] == IN_ORDER.split("+")
    # 4 epochs of 10 training batches were trained (2 straight, 1 + 1 resumed); 10 validation batches each were not
    assert CountingAugmenter.calls == 40
    assert json.loads((run / "splits.json").read_text())["rr_features"] == mitdb.RR_FEATURES
    capsys.readouterr()
    assert commander.main([*FLAGS, "--scheduler", "StepLR", "--root-dir", str(root), "--test"]) == 0
    assert "test (model_best.pth.tar, epoch" in capsys.readouterr().out

    # the same run without augmentation learns other weights (the augmentation is applied)
    plain = [f for f in FLAGS if f not in ("--augment", *BEAT_AUGMENTERS)]
    assert commander.main([*plain, "--epochs", "2", "--scheduler", "StepLR", "--root-dir", str(straight)]) == 0
    plain_run = straight / "ecg" / "runs" / f"{run_name(parse_args([*plain, '--scheduler', 'StepLR']))}_1"
    other = torch.load(plain_run / "checkpoint.pth.tar", weights_only=True)
    assert not torch.equal(other["model"]["head.3.weight"], reference["model"]["head.3.weight"])

    # a model trained on beats with RR channels gives plain beats its signal network's encoder only
    proc = run_cli("--dataset", "ecg", "--model-name", "cnn1d_3", "--short-run", "--root-dir", str(root),
                   "--pretrained", str(run / "model_best.pth.tar"))
    assert proc.returncode == 0 and "encoder tensors" in proc.stdout and "new: head.3.weight" in proc.stdout
