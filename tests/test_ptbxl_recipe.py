"""The PTB-XL benchmark recipe: Fmax, window aggregation, standardisation fitted on the training folds only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import commander
from args import RECIPES, parse_args, run_name
from loaders import ptbxl
from loaders.dataset import RecordDataset, Standardizer, check_standardization, fit_standardizer, with_record_options
from tests.conftest import one_line_error, run_cli
from toolbox.metrics import bootstrap_multilabel, fmax, multilabel_metrics
from toolbox.utils import ECGError
from trainer import aggregate_windows


def test_fmax_on_a_hand_made_case() -> None:
    targets = np.array([[1, 0], [0, 1], [1, 1]], dtype=bool)
    probs = np.array([[0.9, 0.2], [0.6, 0.7], [0.8, 0.3]])
    # t in (0.3, 0.6]: every record's outputs are true (precision 1), the last record finds 1 of 2 labels
    # (recall 5/6): F = 2 * 5/6 / (1 + 5/6) = 10/11; no threshold does better (t <= 0.2: precision 2/3, recall 1)
    assert fmax(targets, probs) == pytest.approx(10 / 11)
    assert fmax(targets, targets.astype(float)) == 1.0
    # the same scores ranked in reverse cannot reach it
    assert fmax(targets, 1 - probs) < 10 / 11


def test_fmax_ignores_records_without_outputs_in_precision_only() -> None:
    targets = np.array([[1, 0], [0, 1]], dtype=bool)
    probs = np.array([[0.9, 0.0], [0.0, 0.05]])
    # t = 0.1: the second record has no output, so precision is the first record's (1); recall (1 + 0) / 2
    assert fmax(targets, probs, grid=np.array([0.1])) == pytest.approx(2 / 3)
    assert fmax(targets, probs, grid=np.array([0.05])) == 1.0  # scores >= t count as outputs
    assert fmax(targets, probs, grid=np.array([0.0])) == pytest.approx(2 / 3)  # precision 1/2, recall 1
    assert fmax(targets, probs) == 1.0


def test_records_without_labels_have_no_recall_to_count() -> None:
    targets = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], dtype=bool)  # Challenge records may carry no scored class
    assert fmax(targets, targets.astype(float)) == 1.0
    assert np.isnan(fmax(np.zeros((3, 2), dtype=bool), np.zeros((3, 2))))


def test_a_refit_standardisation_must_be_the_checkpoints(tmp_path: Path) -> None:
    saved = {"how": "global", "mean": [0.01], "sd": [0.2]}
    same = {"standardize": {"how": "global", "mean": [0.01 + 1e-9], "sd": [0.2]}}
    check_standardization({"standardize": saved}, same, tmp_path / "model_best.pth.tar")
    check_standardization({}, same, tmp_path / "old.pth.tar")  # a checkpoint from before --standardize
    moved = {"standardize": {"how": "global", "mean": [0.02], "sd": [0.2]}}
    with pytest.raises(ECGError, match="the training records changed"):
        check_standardization({"standardize": saved}, moved, tmp_path / "model_best.pth.tar")


def test_fmax_is_a_test_metric_with_its_interval() -> None:
    rng = np.random.default_rng(0)
    targets = rng.random((60, 4)) < 0.3
    targets[np.arange(60), rng.integers(0, 4, 60)] = True
    probs = np.clip(targets * 0.5 + rng.random((60, 4)) * 0.6, 0, 1)
    metrics = multilabel_metrics(targets, probs, np.full(4, 0.5), list("abcd"))
    ci = bootstrap_multilabel(targets, probs, np.full(4, 0.5), list("abcd"), 50)
    assert metrics["fmax"] == fmax(targets, probs)
    assert ci["fmax"][0] <= metrics["fmax"] <= ci["fmax"][1] and ci["fmax"][0] < ci["fmax"][1]


def test_windows_aggregate_by_mean_or_max() -> None:
    probs = np.array([[0.1, 0.9], [0.5, 0.1], [0.2, 0.2], [0.3, 0.4]], dtype=np.float32)
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    groups = np.array([0, 0, 1, 1])
    mean, t = aggregate_windows(probs, targets, groups, "mean")
    np.testing.assert_allclose(mean, [[0.3, 0.5], [0.25, 0.3]], rtol=1e-6)
    top, _ = aggregate_windows(probs, targets, groups, "max")
    np.testing.assert_allclose(top, [[0.5, 0.9], [0.3, 0.4]])
    assert t.tolist() == [[1, 0], [0, 1]]


def _records(lengths: list[int], leads: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(leads, n)) * (1 + np.arange(leads))[:, None] + 2).astype(np.float32) for n in lengths]


def test_standardisation_fits_recorded_samples_and_keeps_padding_zero() -> None:
    signals = _records([300, 500, 120])
    data = RecordDataset.from_signals(signals, np.ones((3, 1), np.float32), ["x"], 200)
    every = np.concatenate(signals, axis=1).astype(np.float64)
    scaler = fit_standardizer(data, "global")
    assert scaler.mean == pytest.approx((every.mean(),), rel=1e-6) and scaler.sd == pytest.approx((every.std(),),
                                                                                                   rel=1e-6)
    per_lead = fit_standardizer(data, "lead")
    np.testing.assert_allclose(per_lead.mean, every.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(per_lead.sd, every.std(axis=1), rtol=1e-6)
    data.standardize = per_lead
    windows = torch.stack([data[i][0] for i in range(len(data))]).numpy()
    assert (windows[-1, :, 120:] == 0).all()  # the short record's padding stays zero
    recorded = np.concatenate([w for w in windows[:-1]], axis=1)
    assert np.abs(recorded.mean(axis=1)).max() < 0.2 and np.abs(recorded.std(axis=1) - 1).max() < 0.2
    assert Standardizer.from_dict(per_lead.to_dict()) == per_lead and Standardizer.from_dict(None) is None


def test_standardisation_comes_from_the_training_split_only(data_root: Path, tmp_path: Path) -> None:
    data = ptbxl.build(data_root / "ptbxl", tmp_path, split_seed=0, progress=False, seq_len=2.5)
    fitted = with_record_options(data, "max", "global")
    train = np.concatenate([data.train.store.record(int(r)) for r in data.train.rows], axis=1).astype(np.float64)
    test = np.concatenate([data.test.store.record(int(r)) for r in data.test.rows], axis=1).astype(np.float64)
    both = np.concatenate([train, test], axis=1)
    scaler = fitted.preprocess["standardize"]
    assert scaler["mean"][0] == pytest.approx(train.mean(), rel=1e-6, abs=1e-9)
    assert scaler["sd"][0] == pytest.approx(train.std(), rel=1e-6)
    assert abs(scaler["sd"][0] - both.std()) > 1e-6  # a fit that included the test fold would differ
    assert fitted.preprocess["aggregate"] == "max" and fitted.test.aggregate == "max"
    assert fitted.val.standardize == fitted.test.standardize == fitted.train.standardize
    assert "standardize" not in data.preprocess  # the loader's own splits are left as they were


def test_the_benchmark_recipe_trains_tests_and_predicts_the_same(tmp_path: Path, data_root: Path) -> None:
    import predict

    flags = ["--recipe", "ptbxl-benchmark", "--model-name", "cnn1d_3", "--epochs", "1", "--batch-size", "64",
             "--preprocess", "bandpass", "--root-dir", str(tmp_path)]
    args = parse_args(flags)
    assert (args.fs, args.seq_len, args.aggregate, args.standardize, args.scheduler) == (100, 2.5, "max", "global",
                                                                                         "OneCycleLR")
    assert "_std-global_agg-max" in run_name(args) and RECIPES["ptbxl-benchmark"][3] == "xresnet1d101"
    assert commander.main(flags) == 0
    assert commander.main([*flags, "--test", "--resume", "best", "--bootstrap", "20"]) == 0
    run = tmp_path / "ptbxl" / "runs" / f"{run_name(args)}_1"
    state = torch.load(run / "model_best.pth.tar", weights_only=True)
    prep = state["preprocess"]
    assert prep["window"] == 250 and prep["stride"] == 125 and prep["aggregate"] == "max"
    assert prep["standardize"]["how"] == "global" and len(prep["standardize"]["mean"]) == 1
    assert prep["steps"] == ["bandpass"]  # predict.py filters, then standardises, then windows, as the cache did
    metrics = json.loads((run / "pred" / "test_best_metrics.json").read_text())
    assert 0 < metrics["fmax"] <= 1 and metrics["ci"]["fmax"][0] <= metrics["fmax"] <= metrics["ci"]["fmax"][1]
    pred = pd.read_csv(run / "pred" / "test_best_predictions.csv")
    table = pd.read_csv(data_root / "ptbxl" / "ptbxl_database.csv", index_col="ecg_id")
    some = pred.head(8)
    inputs = [str(data_root / "ptbxl" / f"{table.loc[int(r), 'filename_lr']}.hea") for r in some["record"]]
    out = tmp_path / "out"
    assert predict.main([*inputs, "--out", str(out), "--run", str(run)]) == 0
    got = pd.read_csv(out / "predictions.csv")
    for code, threshold in zip(state["classes"], state["thresholds"], strict=True):
        column = [c for c in got.columns if c.startswith("p ") and c.endswith(f"({code})")]
        np.testing.assert_allclose(got[column[0]], some[f"p_{code}"], atol=1e-4, err_msg=code)
        label = column[0].replace("p ", "label ", 1)
        assert got[label].tolist() == (got[column[0]] >= threshold).astype(int).tolist()  # validation thresholds


def test_record_options_are_refused_for_beats(tmp_path: Path) -> None:
    for flag, value in (("--aggregate", "max"), ("--standardize", "lead")):
        proc = run_cli("--dataset", "ecg", flag, value, "--root-dir", str(tmp_path))
        assert f"{flag} applies to the record datasets" in one_line_error(proc)
