"""Twelve-lead multi-label datasets: Challenge 2020 records and scoring, PTB-XL folds, thresholds, driver outputs."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import wfdb

import commander
from args import parse_args, run_name
from loaders import cinc2020, ptbxl
from loaders.dataset import RecordDataset, multilabel_holdout
from tests.conftest import REPO, one_line_error, run_cli
from toolbox import checkpoint
from toolbox.losses import positive_weights
from toolbox.metrics import (
    THRESHOLD_GRID,
    auroc_per_class,
    beta_measures,
    bootstrap_multilabel,
    challenge_metric,
    multilabel_metrics,
    select_thresholds,
)
from toolbox.utils import ECGError

CINC = ["--dataset", "cinc2020", "--model-name", "cnn1d_3", "--batch-size", "16"]
CINC_RUN = [*CINC, "--preprocess", "bandpass", "zscore"]  # the shared run: cache-time preprocessing included
PTBXL = ["--dataset", "ptbxl", "--model-name", "cnn1d_3", "--batch-size", "32"]


@pytest.fixture(scope="session")
def cinc_dir(data_root: Path) -> Path:
    folder = data_root / "cinc2020"
    if not (folder / "scoring" / "weights.csv").is_file():
        pytest.fail(f"{folder} must hold records/ and scoring/ (the Challenge 2020 data): "
                    f"python -m loaders.fetch_test_data")
    return folder


@pytest.fixture(scope="session")
def scoring(cinc_dir: Path) -> cinc2020.Scoring:
    return cinc2020.read_scoring(cinc_dir / "scoring")


# ---- the Challenge metric on hand-made cases ----

def test_challenge_metric_hand_computed_case() -> None:
    # classes 0 and 1 are partly confusable (reward 0.5), class 2 is "normal"
    weights = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = np.array([[1, 0, 0], [0, 1, 0]], dtype=bool)
    outputs = np.array([[0, 1, 0], [0, 1, 0]], dtype=bool)
    # record 1: union {0, 1} -> A[0, 1] += 1/2 (reward 0.25); record 2: A[1, 1] += 1 (reward 1)
    # true labels score 2, always-normal scores 0, so the metric is 1.25 / 2
    assert challenge_metric(weights, labels, outputs, normal_index=2) == pytest.approx(0.625)
    assert challenge_metric(weights, labels, labels, normal_index=2) == pytest.approx(1.0)
    normal = np.zeros_like(labels)
    normal[:, 2] = True
    assert challenge_metric(weights, labels, normal, normal_index=2) == pytest.approx(0.0)
    # answering everything spreads each record's unit over three classes: (1/3 * 1.5) * 2 records / 2
    assert challenge_metric(weights, labels, np.ones_like(labels), normal_index=2) == pytest.approx(0.5)


def test_challenge_metric_on_the_real_table(scoring: cinc2020.Scoring, cinc_dir: Path) -> None:
    dx = [cinc2020.read_header(p).dx for p in sorted((cinc_dir / "records").glob("*.hea"))]
    labels = np.stack([scoring.multi_hot(d) for d in dx]).astype(bool)
    normal = np.zeros_like(labels)
    normal[:, scoring.normal_index] = True
    assert challenge_metric(scoring.weights, labels, labels, scoring.normal_index) == pytest.approx(1.0)
    assert challenge_metric(scoring.weights, labels, normal, scoring.normal_index) == pytest.approx(0.0)
    nothing = challenge_metric(scoring.weights, labels, np.zeros_like(labels), scoring.normal_index)
    assert nothing < 0  # answering nothing is worse than always answering normal


def test_challenge_metric_is_zero_where_the_true_labels_score_no_better_than_normal() -> None:
    """The official scorer returns 0.0 when correct_score == inactive_score (here: every record is normal)."""
    weights = np.array([[1.0, 0.5], [0.5, 1.0]])
    labels = np.array([[0, 1], [0, 1]], dtype=bool)  # class 1 is the normal class
    for outputs in (labels, np.ones_like(labels), np.zeros_like(labels)):
        assert challenge_metric(weights, labels, outputs, normal_index=1) == 0.0
    assert challenge_metric(weights, np.zeros((0, 2), bool), np.zeros((0, 2), bool), normal_index=1) == 0.0


def test_f_beta_and_g_beta_follow_the_challenge_scorer_by_hand() -> None:
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=bool)
    outputs = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=bool)
    # contributions divided by each record's label count (2, 1, max(0, 1)):
    # class 0: TP 1/2, FN 1; class 1: FN 1/2; class 2: FP 1; beta = 2
    f = [(5 * 0.5) / (5 * 0.5 + 4 * 1), 0.0, 0.0]
    g = [0.5 / (0.5 + 2 * 1), 0.0, 0.0]
    assert beta_measures(labels, outputs) == (pytest.approx(np.mean(f)), pytest.approx(np.mean(g)))
    # with class 0 alone, record 0 has one label: TP 1, FN 1
    assert beta_measures(labels[:, :1], outputs[:, :1]) == (pytest.approx(5 / 9), pytest.approx(1 / 3))
    # a class with nothing to count (no labels, no outputs) is left out, as the scorer's nanmean does
    assert beta_measures(labels[:, 2:] & False, outputs[:, 2:] & False) == (0.0, 0.0)


def test_rank_auroc_equals_scikit_learn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    targets = rng.random((80, 4)) < 0.3
    probs = np.round(rng.random((80, 4)), 1)  # many ties
    targets[:, 3] = False  # no positives: undefined
    auc = auroc_per_class(targets, probs)
    for c in range(3):
        assert auc[c] == pytest.approx(roc_auc_score(targets[:, c], probs[:, c]))
    assert np.isnan(auc[3])


# ---- scoring tables and labels ----

def test_scored_classes_merge_equivalents_and_ignore_unscored(scoring: cinc2020.Scoring, cinc_dir: Path) -> None:
    assert len(scoring.codes) == 24 and scoring.weights.shape == (24, 24)  # 27 scored codes, 3 pairs merged
    for a, b in (("713427006", "59118001"), ("284470004", "63593006"), ("427172004", "17338001")):
        assert np.array_equal(scoring.multi_hot([a]), scoring.multi_hot([b])) and scoring.multi_hot([a]).sum() == 1
        assert scoring.equivalent[b] == a and b not in scoring.codes
    unscored = pd.read_csv(cinc_dir / "scoring" / "dx_mapping_unscored.csv", dtype=str)["SNOMED CT Code"]
    assert scoring.multi_hot(list(unscored)).sum() == 0
    assert scoring.abbreviations[scoring.codes.index("713427006")] == "CRBBB|RBBB"


def test_pipe_headers_of_the_2021_tables_are_merged(tmp_path: Path, cinc_dir: Path) -> None:
    shutil.copy(cinc_dir / "scoring" / "dx_mapping_scored.csv", tmp_path)
    codes = ["713427006|59118001", "426783006", "164889003"]
    table = pd.DataFrame([[1.0, 0.3, 0.4], [0.3, 1.0, 0.2], [0.4, 0.2, 1.0]], index=codes, columns=codes)
    table.to_csv(tmp_path / "weights.csv")
    scoring = cinc2020.read_scoring(tmp_path)
    assert scoring.codes == ["713427006", "426783006", "164889003"]
    assert np.array_equal(scoring.multi_hot(["59118001"]), [1, 0, 0])
    assert scoring.normal_index == 1


def test_every_record_reads_with_the_georgia_quirk(cinc_dir: Path, scoring: cinc2020.Scoring) -> None:
    folder = cinc_dir / "records"
    names = cinc2020.list_records(folder)
    assert len(names) == 156
    signals, headers = cinc2020.read_folder(folder, names, 500, progress=False)
    georgia = [h for h in headers if h.record.startswith("E")]
    assert len(georgia) == 60 and all(not h.record.endswith(".mat") for h in georgia)
    for name, signal, header in zip(names, signals, headers, strict=True):
        assert header.record == name and signal.shape == (12, header.samples)  # all records are at 500 Hz
        assert np.isfinite(signal).all() and np.median(np.abs(signal)) < 5  # millivolts, not ADC units
    # against wfdb's own reader (which accepts the non-Georgia headers): same millivolts, same lead order
    for name in ("A0689", "HR03961", "JS01048"):
        rec = wfdb.rdrecord(str(folder / name))
        order = [[n.upper() for n in rec.sig_name].index(lead) for lead in cinc2020.LEADS]
        np.testing.assert_allclose(signals[names.index(name)], rec.p_signal[:, order].T, atol=1e-6)
    labelled = sum(scoring.multi_hot(h.dx).any() for h in headers)
    assert labelled == 151  # PROVENANCE.md: 151 of the 156 records carry a scored class


def test_a_damaged_record_is_one_clear_error(tmp_path: Path, cinc_dir: Path) -> None:
    for ext in (".hea", ".mat"):
        (tmp_path / f"A0689{ext}").write_bytes((cinc_dir / "records" / f"A0689{ext}").read_bytes())
    header = cinc2020.read_header(tmp_path / "A0689.hea")
    whole = (tmp_path / "A0689.mat").read_bytes()
    for damaged in (b"MATLAB 5.0 garbage", whole[: len(whole) // 2]):
        (tmp_path / "A0689.mat").write_bytes(damaged)
        with pytest.raises(ECGError, match="cannot read .*A0689.mat"):
            cinc2020.read_signal(tmp_path, header)
    with pytest.raises(ECGError, match="no Challenge records"):
        cinc2020.list_records(tmp_path / "empty")


def test_resampling_keeps_duration_and_shape() -> None:
    t = np.arange(5000) / 500
    x = np.stack([np.sin(2 * np.pi * 1.0 * t)] * 12).astype(np.float32)
    y = cinc2020.resample(x, 500, 257)  # an awkward ratio
    assert y.shape == (12, 2570)
    np.testing.assert_allclose(y[0, 100:-100], np.sin(2 * np.pi * np.arange(2570) / 257)[100:-100], atol=0.01)


# ---- windows, splits ----

def test_windows_pad_short_records_and_cover_long_ones() -> None:
    signals = [np.ones((12, 300), np.float32), np.arange(12 * 2500, dtype=np.float32).reshape(12, 2500)]
    labels = np.array([[1, 0], [0, 1]], np.float32)
    ds = RecordDataset.from_signals(signals, labels, ["a", "b"], 1000, random_crop=False, stride=500)
    assert ds.groups.tolist() == [0, 1, 1, 1, 1] and ds.starts.tolist() == [0, 0, 500, 1000, 1500]
    x, y = ds.__getitems__([0, 4])
    assert x.shape == (2, 12, 1000) and x[0, :, 300:].abs().sum() == 0 and x[0, :, :300].sum() == 12 * 300
    assert x[1, 0, -1] == 2499 and y.tolist() == [[1, 0], [0, 1]]
    train = RecordDataset.from_signals(signals, labels, ["a", "b"], 1000, random_crop=True)
    torch.manual_seed(0)
    starts = {int(train[1][0][0, 0]) for _ in range(20)}
    assert len(train) == 2 and len(starts) > 1 and max(starts) <= 1500  # random crops inside the record


def test_multilabel_holdout_is_a_stratified_partition(cinc_dir: Path, scoring: cinc2020.Scoring) -> None:
    dx = [cinc2020.read_header(p).dx for p in sorted((cinc_dir / "records").glob("*.hea"))]
    labels = np.stack([scoring.multi_hot(d) for d in dx])
    kept, held = multilabel_holdout(labels, 0.2, seed=0)
    assert sorted([*kept, *held]) == list(range(len(labels))) and abs(len(held) - 0.2 * len(labels)) <= 2
    for c in np.flatnonzero(labels.sum(0) >= 5):
        assert abs(labels[held, c].sum() / labels[:, c].sum() - 0.2) <= 0.15, scoring.abbreviations[c]
    again, _ = multilabel_holdout(labels, 0.2, seed=0)
    other, _ = multilabel_holdout(labels, 0.2, seed=1)
    assert np.array_equal(kept, again) and not np.array_equal(kept, other)


def test_source_split_tests_on_a_whole_database(cinc_dir: Path) -> None:
    records = np.array(cinc2020.list_records(cinc_dir / "records"))
    labels = np.zeros((len(records), 2), np.float32)
    labels[::3, 0] = labels[1::3, 1] = 1
    split = cinc2020.record_split(labels, records, "source-E", seed=0)
    assert all(r.startswith("E") for r in records[split["test"]]) and len(split["test"]) == 60
    assert not any(r.startswith("E") for r in records[np.r_[split["train"], split["val"]]])
    with pytest.raises(ECGError, match="sources A, E, HR, JS"):
        cinc2020.record_split(labels, records, "source-Q", seed=0)


def test_ptbxl_folds_and_superclasses(data_root: Path, tmp_path: Path) -> None:
    folder = data_root / "ptbxl"
    data = ptbxl.build(folder, tmp_path, split_seed=0, progress=False)
    table = pd.read_csv(folder / "ptbxl_database.csv", index_col="ecg_id")
    scp = pd.read_csv(folder / "scp_statements.csv", index_col=0)
    for name, folds in (("train", range(1, 9)), ("val", [9]), ("test", [10])):
        ids = data.manifest[name]
        assert set(table.loc[ids, "strat_fold"]) <= set(folds) and len(ids) > 0
    everything = data.manifest["train"] + data.manifest["val"] + data.manifest["test"]
    assert len(set(everything)) == len(everything)
    # labels by hand: the diagnostic_class of every diagnostic SCP code of the record
    for ds, name in ((data.train, "train"), (data.test, "test")):
        for ecg_id, row in zip(data.manifest[name][:50], ds.labels.numpy()[:50], strict=True):
            codes = eval(table.loc[ecg_id, "scp_codes"])  # noqa: S307 (the publisher's dict literal)
            want = {scp.loc[c, "diagnostic_class"] for c in codes if c in scp.index and scp.loc[c, "diagnostic"] == 1}
            assert {ptbxl.SUPERCLASSES[k] for k in np.flatnonzero(row)} == want
    unlabelled = len(table) - len(everything)
    assert unlabelled == data.manifest["dropped_without_label"] > 0
    assert data.train.in_channels == 12 and data.test[0][0].shape == (12, 1000)


# ---- thresholds, class weights ----

def test_thresholds_follow_the_validation_data_only() -> None:
    rng = np.random.default_rng(0)
    targets = rng.random((200, 3)) < 0.3
    probs = np.clip(targets * 0.35 + rng.random((200, 3)) * 0.5, 0, 1)  # positives sit 0.35 higher
    th = select_thresholds(targets, probs, "f1")
    assert np.all((th >= 0.3) & (th <= 0.6))
    shifted = select_thresholds(targets, np.clip(probs + 0.3, 0, 1), "f1")
    assert np.all(shifted > th)  # the same data shifted moves the thresholds: they are learnt, not fixed
    from sklearn.metrics import f1_score

    for c in range(3):  # each is a grid value of highest F1, by scikit-learn
        best = max(f1_score(targets[:, c], probs[:, c] >= t) for t in THRESHOLD_GRID)
        assert f1_score(targets[:, c], probs[:, c] >= th[c]) == pytest.approx(best)
    none = select_thresholds(np.zeros((10, 2), bool), rng.random((10, 2)), "f1")
    assert none.tolist() == [0.5, 0.5]


def test_challenge_thresholds_do_not_lower_the_challenge_metric(scoring: cinc2020.Scoring) -> None:
    rng = np.random.default_rng(1)
    targets = rng.random((60, 24)) < 0.1
    probs = np.clip(targets * 0.3 + rng.random((60, 24)) * 0.6, 0, 1)
    f1 = select_thresholds(targets, probs, "f1")
    ch = select_thresholds(targets, probs, "challenge", weights=scoring.weights, normal_index=scoring.normal_index)

    def score(th: np.ndarray) -> float:
        return challenge_metric(scoring.weights, targets, probs >= th, scoring.normal_index)

    assert score(ch) >= score(f1)


def test_multilabel_metrics_on_a_known_case() -> None:
    targets = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], bool)
    probs = np.array([[0.9, 0.2], [0.8, 0.7], [0.3, 0.6], [0.1, 0.4]])
    m = multilabel_metrics(targets, probs, np.array([0.5, 0.5]), ["a", "b"])
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and m["macro_auroc"] == 1.0
    m = multilabel_metrics(targets, probs, np.array([0.5, 0.65]), ["a", "b"])
    assert m["accuracy"] == 0.75 and m["per_class"]["b"]["recall"] == 0.5
    assert m["multilabel_confusion"]["b"] == {"tp": 1, "fp": 0, "fn": 1, "tn": 2}


def test_positive_weights() -> None:
    w = positive_weights(np.array([10, 50, 0]), 100, "equal")
    np.testing.assert_allclose(w.numpy(), [9.0, 1.0, 1.0])
    np.testing.assert_allclose(positive_weights(np.array([10]), 100, "importance").numpy(), [3.0])


# ---- through commander.py and driver.py ----

@pytest.fixture(scope="module")
def cinc_run(tmp_path_factory: pytest.TempPathFactory, cinc_dir: Path) -> Path:
    """A cinc2020 run of bandpassed, z-scored records, trained for 3 epochs and tested: driver.py and predict.py
    must preprocess new records as the cache did to reproduce its test predictions."""
    root = tmp_path_factory.mktemp("cinc")
    proc = run_cli(*CINC_RUN, "--epochs", "3", "--root-dir", str(root), "--tensorboard")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(*CINC_RUN, "--epochs", "3", "--root-dir", str(root), "--test")
    assert proc.returncode == 0, proc.stderr
    assert "Challenge metric" in proc.stdout and "macro AUROC" in proc.stdout
    return root / "cinc2020" / "runs" / f"{run_name(parse_args(CINC_RUN))}_1"


def test_cinc_run_folder_layout(cinc_run: Path) -> None:
    for name in ("config.json", "logger.json", "splits.json", "checkpoint.pth.tar", "model_best.pth.tar",
                 "res/val_epoch001.csv", "res/val_epoch003.csv", "pred/test_best_predictions.csv",
                 "pred/test_best_metrics.json", "pred/test_best_confusion.png"):
        assert (cinc_run / name).is_file(), name
    assert any((cinc_run / "tensorboard").iterdir())
    splits = json.loads((cinc_run / "splits.json").read_text())
    assert not set(splits["test"]) & (set(splits["train"]) | set(splits["val"]))
    assert len(splits["train"]) + len(splits["val"]) + len(splits["test"]) == 156
    log = json.loads((cinc_run / "logger.json").read_text())
    assert [r["epoch"] for r in log["val"]] == [1, 2, 3] and "challenge" in log["val"][0]
    metrics = json.loads((cinc_run / "pred" / "test_best_metrics.json").read_text())
    assert metrics["records"] == len(splits["test"])
    for key in ("macro_auroc", "macro_auprc", "accuracy", "macro_f1", "challenge", "f_beta", "g_beta"):
        assert isinstance(metrics[key], float)
        if key in metrics["ci"]:
            assert metrics["ci"][key][0] <= metrics[key] + 1e-9 and metrics[key] - 1e-9 <= metrics["ci"][key][1]
    assert set(metrics["ci"]) >= {"macro_auroc", "accuracy", "macro_f1", "challenge", "per_class"}


def test_thresholds_come_from_the_best_validation_epoch(cinc_run: Path, scoring: cinc2020.Scoring) -> None:
    state = torch.load(cinc_run / "model_best.pth.tar", weights_only=True)
    res = pd.read_csv(cinc_run / "res" / f"val_epoch{state['best_epoch']:03d}.csv")
    codes = scoring.codes
    targets = res[[f"y_{c}" for c in codes]].to_numpy().astype(bool)
    probs = res[[f"p_{c}" for c in codes]].to_numpy()
    saved = np.array(state["thresholds"])
    # the decisions written for that validation epoch are those of the saved thresholds
    np.testing.assert_array_equal(res[[f"pred_{c}" for c in codes]].to_numpy(), (probs >= saved).astype(int))

    def score(th: np.ndarray) -> float:
        return challenge_metric(scoring.weights, targets, probs >= th, scoring.normal_index)

    # they score at least as well on validation as a fixed 0.5 and as each class's own best-F1 threshold
    per_class_f1 = np.array([max(THRESHOLD_GRID, key=lambda t, c=c: (2 * (targets[:, c] & (probs[:, c] >= t)).sum())
                                 / max(targets[:, c].sum() + (probs[:, c] >= t).sum(), 1)) for c in range(len(codes))])
    assert score(saved) >= score(np.full(len(codes), 0.5)) and score(saved) >= score(per_class_f1) - 1e-12
    metrics = json.loads((cinc_run / "pred" / "test_best_metrics.json").read_text())
    assert metrics["thresholds"] == state["thresholds"]
    val_records = set(json.loads((cinc_run / "splits.json").read_text())["val"])
    assert set(res["record"]) == val_records  # chosen on validation records, none from the test split


def test_driver_outputs_parse_back_to_the_test_predictions(cinc_run: Path, cinc_dir: Path, tmp_path: Path) -> None:
    pred = pd.read_csv(cinc_run / "pred" / "test_best_predictions.csv")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for record in pred["record"]:
        for ext in (".hea", ".mat"):
            (inputs / f"{record}{ext}").symlink_to(cinc_dir / "records" / f"{record}{ext}")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "driver.py"), str(inputs), str(out), "--run", str(cinc_run)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    state = torch.load(cinc_run / "model_best.pth.tar", weights_only=True)
    for _, row in pred.iterrows():
        record, codes, labels, probs = cinc2020.read_output(out / f"{row['record']}.csv")
        assert record == row["record"] and codes == state["classes"]
        np.testing.assert_allclose(probs, [row[f"p_{c}"] for c in codes], atol=2e-6)
        assert labels.tolist() == [int(row[f"pred_{c}"]) for c in codes]
        assert labels.tolist() == (probs >= np.array(state["thresholds"])).astype(int).tolist()
        assert (out / f"{record}.csv").read_text() == (cinc_run / "pred" / "challenge" / f"{record}.csv").read_text()
    again = subprocess.run([sys.executable, str(REPO / "driver.py"), str(inputs), str(out), "--run", str(cinc_run)],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "already holds" in one_line_error(again)


def test_ptbxl_trains_and_tests_through_commander(tmp_path: Path) -> None:
    assert run_cli(*PTBXL, "--epochs", "2", "--root-dir", str(tmp_path)).returncode == 0
    proc = run_cli(*PTBXL, "--epochs", "2", "--root-dir", str(tmp_path), "--test")
    assert proc.returncode == 0, proc.stderr
    assert "macro AUROC" in proc.stdout and "Challenge" not in proc.stdout
    run = tmp_path / "ptbxl" / "runs" / f"{run_name(parse_args(PTBXL))}_1"
    metrics = json.loads((run / "pred" / "test_best_metrics.json").read_text())
    assert list(metrics["per_class"]) == ptbxl.SUPERCLASSES and metrics["records"] == len(
        json.loads((run / "splits.json").read_text())["test"])
    state = torch.load(run / "model_best.pth.tar", weights_only=True)
    assert state["in_channels"] == 12 and state["preprocess"]["fs"] == 100 and len(state["thresholds"]) == 5
    driver = subprocess.run([sys.executable, str(REPO / "driver.py"), str(tmp_path), str(tmp_path / "out"), "--run",
                             str(run)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "was trained on --dataset ptbxl" in one_line_error(driver) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("schedule", [["--scheduler", "ReduceLROnPlateau", "--step", "1", "--lr-decay", "0.5"],
                                      ["--scheduler", "CosineAnnealingLR"]])
def test_multilabel_resume_is_exact_for_any_worker_count(schedule: list[str], tmp_path: Path) -> None:
    """Random crops draw from seeds the main process hands each batch: -j 0 and -j 2, straight or resumed,
    learn the same weights."""
    runs = {}
    for name, workers, stop in (("straight", "0", None), ("resumed", "2", 1), ("workers", "2", None)):
        flags = [*CINC, *schedule, "--root-dir", str(tmp_path / name), "-j", workers, "--epochs", "3"]
        if stop:  # interrupted after epoch 1 as Ctrl-C would, then resumed
            real = checkpoint.save

            def save_then_stop(state, run_dir, *, is_best, real=real):
                real(state, run_dir, is_best=is_best)
                if state["epoch"] == 1:
                    raise KeyboardInterrupt

            checkpoint.save = save_then_stop
            try:
                assert commander.main(flags) == 130
            finally:
                checkpoint.save = real
            flags += ["--resume", "latest"]
        assert commander.main(flags) == 0
        run = tmp_path / name / "cinc2020" / "runs" / f"{run_name(parse_args(flags))}_1"
        runs[name] = torch.load(run / "checkpoint.pth.tar", weights_only=True)
    for name in ("resumed", "workers"):
        assert all(torch.equal(runs["straight"]["model"][k], runs[name]["model"][k]) for k in runs["straight"]["model"])
        assert runs[name]["thresholds"] == runs["straight"]["thresholds"]


def test_record_windows_rate_and_source_split_run_end_to_end(tmp_path: Path) -> None:
    flags = [*CINC, "--fs", "250", "--seq-len", "4", "--split", "source-E", "--root-dir", str(tmp_path)]
    assert commander.main([*flags, "--epochs", "1"]) == 0
    run = tmp_path / "cinc2020" / "runs" / f"{run_name(parse_args(flags))}_1"
    assert "_source-E_" in run.name and "_250hz-4s_" in run.name
    state = torch.load(run / "checkpoint.pth.tar", weights_only=True)
    assert state["preprocess"]["fs"] == 250 and state["preprocess"]["window"] == 1000
    splits = json.loads((run / "splits.json").read_text())
    assert splits["sources"]["test"] == ["E"] and "E" not in splits["sources"]["train"] + splits["sources"]["val"]
    assert commander.main([*flags, "--test", "--bootstrap", "50"]) == 0
    metrics = json.loads((run / "pred" / "test_best_metrics.json").read_text())
    assert metrics["records"] == 60 and metrics["bootstrap"]["resamples"] == 50


def test_multilabel_bootstrap_holds_the_estimate_and_repeats(scoring: cinc2020.Scoring) -> None:
    rng = np.random.default_rng(2)
    targets = rng.random((40, 24)) < 0.15
    probs = np.clip(targets * 0.4 + rng.random((40, 24)) * 0.6, 0, 1)
    th = np.full(24, 0.5)
    m = multilabel_metrics(targets, probs, th, scoring.codes, weights=scoring.weights,
                           normal_index=scoring.normal_index)
    ci = bootstrap_multilabel(targets, probs, th, scoring.codes, 300, weights=scoring.weights,
                              normal_index=scoring.normal_index)
    for key in ("macro_auroc", "macro_f1", "challenge", "f_beta", "g_beta", "accuracy"):
        assert ci[key][0] <= m[key] <= ci[key][1], key
    assert ci == bootstrap_multilabel(targets, probs, th, scoring.codes, 300, weights=scoring.weights,
                                      normal_index=scoring.normal_index)
    # one run given as a list of one (as benchmarks pass a single seed) is the same run
    assert ci == bootstrap_multilabel(targets, [probs], [list(th)], scoring.codes, 300, weights=scoring.weights,
                                      normal_index=scoring.normal_index)


# ---- malformed inputs and changed tables ----

def _ptbxl_copy(tmp_path: Path, data_root: Path, edit=None) -> Path:
    """A PTB-XL folder whose tables are copies (``edit`` returns a changed database table) and records links."""
    folder = tmp_path / "ptbxl"
    folder.mkdir()
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        shutil.copy(data_root / "ptbxl" / name, folder / name)
    (folder / "records100").symlink_to(data_root / "ptbxl" / "records100")
    if edit is not None:
        edit(pd.read_csv(folder / "ptbxl_database.csv")).to_csv(folder / "ptbxl_database.csv", index=False)
    return folder


@pytest.mark.parametrize("case,edit,message", [
    ("missing record file", lambda t: t.assign(filename_lr=t["filename_lr"].str.replace("00001_lr", "00001_xx")),
     "records100/00000/00001_xx.hea is missing"),
    ("broken scp_codes cell", lambda t: t.assign(scp_codes=t["scp_codes"].where(t.index != 3, "{'NORM': ")),
     "ecg_id 4: scp_codes \"{'NORM': \" is not a dict of SCP codes"),
    ("no strat_fold column", lambda t: t.drop(columns=["strat_fold"]),
     "ptbxl_database.csv lacks the column(s) strat_fold"),
    ("fold out of range", lambda t: t.assign(strat_fold=t["strat_fold"].where(t.index != 0, 11)),
     "ecg_id 1: strat_fold 11 is not a fold 1-10"),
])
def test_malformed_ptbxl_tables_are_one_clear_error(case: str, edit, message: str, tmp_path: Path,
                                                   data_root: Path) -> None:
    folder = _ptbxl_copy(tmp_path, data_root, edit)
    with pytest.raises(ECGError, match=re.escape(message) if "\\" not in message else message):
        ptbxl.build(folder, tmp_path / "cache", split_seed=0, progress=False)


def test_ptbxl_labels_follow_the_statements_table_and_the_cache_follows_the_records(tmp_path: Path, data_root: Path,
                                                                                     caplog) -> None:
    """Labels come from the tables at every load (the signal cache stays); a changed record file makes a new cache."""
    folder = _ptbxl_copy(tmp_path, data_root)
    before = ptbxl.build(folder, tmp_path / "cache", split_seed=0, progress=False)
    scp = pd.read_csv(folder / "scp_statements.csv", index_col=0)
    scp.loc[scp["diagnostic_class"] == "NORM", "diagnostic_class"] = "MI"  # every NORM code now means MI
    scp.to_csv(folder / "scp_statements.csv")
    with caplog.at_level(logging.WARNING):
        after = ptbxl.build(folder, tmp_path / "cache", split_seed=0, progress=False)
    counts = before.train.class_counts(), after.train.class_counts()
    assert counts[1][0] == 0 and counts[1][1] > counts[0][1]  # no NORM left, more MI: the labels were rebuilt
    assert "changed since the cache" not in caplog.text and len(list((tmp_path / "cache").glob("ptbxl_*"))) == 1
    (folder / "records100").unlink()  # a copy of the records instead of the link, so one can change
    shutil.copytree(data_root / "ptbxl" / "records100", folder / "records100")
    record = sorted((folder / "records100").rglob("*.dat"))[0]
    os.utime(record, ns=(1_000_000_000, 1_000_000_000))
    with caplog.at_level(logging.WARNING):
        ptbxl.build(folder, tmp_path / "cache", split_seed=0, progress=False)
    assert "changed since the cache" in caplog.text and len(list((tmp_path / "cache").glob("ptbxl_*"))) == 2


def _cinc_copy(tmp_path: Path, cinc_dir: Path, names: list[str]) -> Path:
    folder = tmp_path / "cinc2020"
    (folder / "records").mkdir(parents=True)
    shutil.copytree(cinc_dir / "scoring", folder / "scoring")
    for name in names:
        for ext in (".hea", ".mat"):
            shutil.copy(cinc_dir / "records" / f"{name}{ext}", folder / "records" / f"{name}{ext}")
    return folder


@pytest.mark.parametrize("case,damage,message", [
    ("missing #Dx", lambda h: "\n".join(line for line in h.splitlines() if not line.startswith("#Dx")) + "\n",
     "A0689.hea has no '#Dx:' line"),
    ("wrong lead count", lambda h: h.replace(h.split()[1], "13", 1), "announces 13 leads but describes 12"),
    ("a gain of 0", lambda h: h.replace("1000/mV", "0/mV", 1), "gain 0 in '0/mV'"),
    ("a lead missing", lambda h: h.replace(" V6", " V7"), "lacks lead(s) V6"),
])
def test_malformed_challenge_headers_are_one_clear_error(case: str, damage, message: str, tmp_path: Path,
                                                         cinc_dir: Path) -> None:
    folder = _cinc_copy(tmp_path, cinc_dir, ["A0689", "E00001"] if (cinc_dir / "records" / "E00001.hea").exists()
                        else ["A0689"])
    header = folder / "records" / "A0689.hea"
    header.write_text(damage(header.read_text()))
    with pytest.raises(ECGError, match=re.escape(message)):
        cinc2020.build(folder, tmp_path / "cache", split_seed=0, progress=False)


def test_cinc_labels_follow_the_scoring_tables_and_the_cache_follows_the_records(tmp_path: Path, cinc_dir: Path,
                                                                                 caplog) -> None:
    folder = _cinc_copy(tmp_path, cinc_dir, cinc2020.list_records(cinc_dir / "records")[:40])
    before = cinc2020.build(folder, tmp_path / "cache", split_seed=0, progress=False)
    table = pd.read_csv(folder / "scoring" / "weights.csv", index_col=0)
    pd.DataFrame(table.to_numpy(), index=table.index, columns=table.columns).to_csv(folder / "scoring" / "weights.csv")
    os.utime(folder / "scoring" / "weights.csv", ns=(1_000_000_000, 1_000_000_000))
    with caplog.at_level(logging.WARNING):
        cinc2020.build(folder, tmp_path / "cache", split_seed=0, progress=False)
    assert "changed since the cache" not in caplog.text and len(list((tmp_path / "cache").glob("cinc2020_*"))) == 1
    af = before.classes.index("164889003")
    name = next(r for r, y in zip(before.train.meta["record"], before.train.labels, strict=True) if not y[af])
    header = folder / "records" / f"{name}.hea"
    header.write_text(header.read_text().replace("#Dx:", "#Dx: 164889003,", 1))  # now also atrial fibrillation
    with caplog.at_level(logging.WARNING):
        after = cinc2020.build(folder, tmp_path / "cache", split_seed=0, progress=False)
    assert "changed since the cache" in caplog.text and len(list((tmp_path / "cache").glob("cinc2020_*"))) == 2
    found = {r: y for part in (after.train, after.val, after.test) for r, y in zip(part.meta["record"], part.labels,
                                                                                   strict=True)}
    assert found[name][af] == 1 and len(found) == 40


def _driver(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "driver.py"), *argv], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_driver_bad_inputs_are_one_line_errors(cinc_run: Path, cinc_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no Challenge records (X.hea with X.mat) in" in one_line_error(
        _driver(str(empty), str(tmp_path / "out"), "--run", str(cinc_run)))
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(cinc_dir / "records" / "A0689.hea", alone / "A0689.hea")
    assert "A0689.hea has no signal file A0689.mat beside it" in one_line_error(
        _driver(str(alone), str(tmp_path / "out"), "--run", str(cinc_run)))
    for size in ("0", "-3", "many"):
        assert "--batch-size" in one_line_error(_driver(str(alone), str(tmp_path / "out"), "--run", str(cinc_run),
                                                        "--batch-size", size))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags,message", [
    (["--dataset", "ecg", "--split", "source-E"], "not a split of --dataset ecg; valid: intra, inter"),
    (["--dataset", "ptbxl", "--criterion", "crossentropy"], "multi-label: use --criterion bce"),
    (["--dataset", "ecg", "--criterion", "bce"], "--dataset ecg is single-label"),
    (["--dataset", "ecg", "--fs", "250"], "--fs applies to the record datasets"),
    (["--dataset", "ptbxl", "--threshold-metric", "challenge"], "needs a Challenge reward table"),
    (["--dataset", "cinc2020", "--sampler", "equal"], "use --class-balance"),
    (["--dataset", "cinc2020", "--split", "source-Q"], "holding out Q leaves no test records"),
])
def test_bad_multilabel_flags_are_one_line_errors(flags: list[str], message: str, tmp_path: Path) -> None:
    proc = run_cli(*flags, "--model-name", "cnn1d_3", "--root-dir", str(tmp_path))
    assert message in one_line_error(proc)
    assert not (tmp_path / "cinc2020" / "runs").exists() or not any((tmp_path / "cinc2020" / "runs").iterdir())


def test_predict_scores_challenge_records_as_the_test_split(cinc_run: Path, cinc_dir: Path, tmp_path: Path) -> None:
    """predict.py with a record model: the test records read as plain WFDB files give the test predictions."""
    import predict

    pred = pd.read_csv(cinc_run / "pred" / "test_best_predictions.csv")
    inputs = [str(cinc_dir / "records" / f"{r}.hea") for r in pred["record"]]
    out = tmp_path / "out"
    assert predict.main([*inputs, "--out", str(out), "--run", str(cinc_run)]) == 0
    got = pd.read_csv(out / "predictions.csv")
    state = torch.load(cinc_run / "model_best.pth.tar", weights_only=True)
    splits = json.loads((cinc_run / "splits.json").read_text())
    names = splits["class_names"]
    for prep in (state["preprocess"], splits["preprocess"]):  # the steps the records were cached with
        assert (prep["steps"], prep["bandpass"], prep["units"]) == (["bandpass", "zscore"], [0.5, 40.0], "z-score")
    assert "_pre-bandpass0.5-40+zscore" in cinc_run.name
    assert got["record"].tolist() == pred["record"].tolist()
    for code, name, threshold in zip(state["classes"], names, state["thresholds"], strict=True):
        title = f"{name} ({code})" if name != code else code
        np.testing.assert_allclose(got[f"p {title}"], pred[f"p_{code}"], atol=1e-4)
        assert got[f"label {title}"].tolist() == (got[f"p {title}"] >= threshold).astype(int).tolist()


@pytest.mark.parametrize("label_set", ["subdiagnostic", "diagnostic", "form", "rhythm", "all"])
def test_ptbxl_label_sets_follow_the_statements_table(label_set: str, data_root: Path, tmp_path: Path) -> None:
    folder = data_root / "ptbxl"
    data = ptbxl.build(folder, tmp_path, split_seed=0, progress=False, labels=label_set)
    table = pd.read_csv(folder / "ptbxl_database.csv", index_col="ecg_id")
    scp = pd.read_csv(folder / "scp_statements.csv", index_col=0)
    column = {"subdiagnostic": "diagnostic_subclass"}.get(label_set)
    marked = scp.index if label_set == "all" else scp.index[scp["diagnostic" if column else label_set] == 1]

    def want(codes: dict) -> set[str]:  # by hand from the benchmark's definitions
        return {scp.loc[c, column] if column else c for c in codes if c in marked}

    kept = {ecg_id for name in ("train", "val", "test") for ecg_id in data.manifest[name]}
    wanted = {i: want(eval(c)) for i, c in table["scp_codes"].items()}  # noqa: S307 (the publisher's dict literal)
    assert kept == {i for i, w in wanted.items() if w}
    assert data.manifest["dropped_without_label"] == len(table) - len(kept)
    assert data.classes == sorted(set().union(*wanted.values())) and data.manifest["label_set"] == label_set
    for ds, name in ((data.train, "train"), (data.val, "val")):
        for ecg_id, row in zip(data.manifest[name][:40], ds.labels.numpy()[:40], strict=True):
            assert {data.classes[k] for k in np.flatnonzero(row)} == wanted[ecg_id]
    names = dict(zip(data.classes, data.manifest["class_names"], strict=True))
    if label_set != "subdiagnostic":
        assert all(names[c] == scp.loc[c, "description"] for c in data.classes)  # readable names
    sizes = {"form": 19, "rhythm": 12, "diagnostic": 44, "all": 71, "subdiagnostic": 23}
    assert len(data.classes) <= sizes[label_set]


def test_a_ptbxl_label_set_names_the_run_and_trains(tmp_path: Path) -> None:
    flags = [*PTBXL, "--labels", "rhythm", "--root-dir", str(tmp_path), "--short-run"]
    assert commander.main([*flags, "--epochs", "1"]) == 0
    run = tmp_path / "ptbxl" / "runs" / f"{run_name(parse_args(flags))}_1"
    assert "_labels-rhythm_" in run.name + "_"
    assert commander.main([*flags, "--test", "--resume", "latest", "--bootstrap", "20"]) == 0
    metrics = json.loads((run / "pred" / "test_latest_short_metrics.json").read_text())
    splits = json.loads((run / "splits.json").read_text())
    assert list(metrics["per_class"]) == splits["classes"] and "sinus rhythm" in splits["class_names"]
    assert "--labels picks a PTB-XL label set" in one_line_error(run_cli("--dataset", "ecg", "--labels", "form",
                                                                         "--root-dir", str(tmp_path)))
