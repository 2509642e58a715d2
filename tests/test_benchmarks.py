"""benchmarks/quality.py: ensembles, intervals over seeds and the cross-validation score (small tables, by hand)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import quality
from toolbox.logger import save_predictions

CLASSES = ["N", "S", "V"]


def _run(root: Path, name: str, probs: list[list[float]], targets: list[int], records=(100, 100, 200, 200)) -> dict:
    path = root / "ecg" / "runs" / name / "pred" / "test_best_predictions.csv"
    path.parent.mkdir(parents=True)
    meta = {"record": np.array(records), "sample": np.arange(len(targets)) * 10}
    save_predictions(path, np.array(probs), np.array(targets), CLASSES, meta)
    return {"run": name, "dir": path.parent.parent, "predictions": path, "params": 1000, "epochs": 10,
            "minutes": 2.0, "metrics": {"bootstrap": {"unit": "record"}}}


def test_ensemble_averages_the_seeds_probabilities(tmp_path: Path) -> None:
    targets = [0, 1, 2, 2]
    a = _run(tmp_path, "a_1", [[0.9, 0.1, 0], [0.6, 0.4, 0], [0.1, 0, 0.9], [0.5, 0, 0.5 - 1e-3]], targets)
    b = _run(tmp_path, "a_2", [[0.2, 0.8, 0], [0.1, 0.9, 0], [0.2, 0, 0.8], [0.3, 0, 0.7]], targets)
    # a alone gets 2 of 4 right (examples 1 and 3 go to N), b alone 3 of 4 (example 0 goes to S)
    out = quality.ensemble([a, b], resamples=200)
    # means: [0.55 0.45 0] -> N (right), [0.35 0.65 0] -> S, [0.15 0 0.85] -> V, [0.4 0 0.6] -> V: all right
    assert out["metrics"]["accuracy"] == 1.0 and out["metrics"]["macro_f1"] == 1.0
    assert out["metrics"]["ci"]["accuracy"] == [1.0, 1.0]
    assert (out["params"], out["minutes"], out["run"]) == (2000, 4.0, "a_1+a_2")


def test_ensemble_refuses_runs_tested_on_other_examples(tmp_path: Path) -> None:
    a = _run(tmp_path, "a_1", [[1, 0, 0]] * 4, [0, 1, 2, 2])
    b = _run(tmp_path, "a_2", [[1, 0, 0]] * 4, [0, 1, 2, 0])
    with pytest.raises(SystemExit, match="tested on different examples"):
        quality.ensemble([a, b])


def test_seed_interval_is_that_of_the_mean_over_seeds_on_shared_record_draws(tmp_path: Path) -> None:
    # record 100: both beats right for a, wrong for b; record 200: the other way round. Every draw of records
    # gives a and b accuracies that sum to 1, so the mean over the two seeds is 1/2 whatever is drawn
    targets = [0, 0, 0, 0]
    a = _run(tmp_path, "a_1", [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]], targets)
    b = _run(tmp_path, "a_2", [[0, 1, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0]], targets)
    assert quality.seed_interval([a, b], resamples=300)["accuracy"] == [0.5, 0.5]
    alone = quality.seed_interval([a], resamples=300)["accuracy"]
    assert alone == [0.0, 1.0]  # one seed alone: whole records in or out


def test_cross_validation_score_pools_the_folds(tmp_path: Path) -> None:
    # two folds, two seeds; fold 1 holds an S and a V beat, fold 2 an N and a V beat
    f1 = [_run(tmp_path, f"f1_{s}", p, [1, 2], records=(101, 101))
          for s, p in ((1, [[0, 1, 0], [0, 0, 1]]), (2, [[1, 0, 0], [0, 0, 1]]))]
    f2 = [_run(tmp_path, f"f2_{s}", p, [0, 2], records=(203, 203))
          for s, p in ((1, [[1, 0, 0], [0, 0, 1]]), (2, [[1, 0, 0], [0, 1, 0]]))]
    targets, probs, classes = quality.out_of_fold([f1, f2])
    assert targets.tolist() == [1, 2, 0, 2] and len(probs) == 2 and classes == CLASSES
    first = quality.cv_scores(targets, probs[0], classes)  # all right
    second = quality.cv_scores(targets, probs[1], classes)  # S missed, one V taken for S
    assert first == {"score": 1.0, "S F1": 1.0, "V F1": 1.0, "macro-F1": 1.0, "accuracy": 1.0}
    assert second["S F1"] == 0.0 and second["V F1"] == pytest.approx(2 / 3) and second["score"] == pytest.approx(1 / 3)
    assert quality.members_of("inter-cnn1d_3-rr+seeds") == (["inter-cnn1d_3-rr"], True)
    assert quality.members_of("inter-cnn1d_3-rr-filtered-and-med")[1] is True
    assert quality.members_of("inter-cnn1d_3-rr") == (["inter-cnn1d_3-rr"], False)


def test_anomaly_rows_over_seeds_and_over_intra_folds(tmp_path: Path, cache_root: Path, monkeypatch,
                                                      capsys) -> None:
    """Real MIT-BIH beats, short runs of ae1d: seeds give a row with the interval of the seed mean, --cv a row
    over folds x seeds; both tested on their own split (the folds' test beats differ)."""
    import shutil

    shutil.copytree(cache_root / "cache", tmp_path / "cache")
    tiny = ["--dataset", "ecg", "--task", "anomaly", "--model-name", "ae1d", "--short-run", "--epochs", "1"]
    monkeypatch.setitem(quality.CONFIGS, "tiny-anomaly", tiny)
    quality.measure(["tiny-anomaly"], [0, 1], tmp_path, False, "cmd")
    out = capsys.readouterr().out
    assert "| AUROC | AUPRC | F1 | MCC | AUROC S | AUROC V | AUROC F | AUROC Q |" in out
    line = next(row for row in out.splitlines() if row.startswith("| `tiny-anomaly`"))
    assert line.count("[") >= 4  # AUROC, AUPRC, F1, MCC with the interval of the seed mean
    quality.measure(["tiny-anomaly"], [0], tmp_path, False, "cmd", cv=2)
    out = capsys.readouterr().out
    assert "`tiny-anomaly (2 folds x 1 seeds)`" in out and "--folds 2 --fold I" in out
    folds = sorted(p.name for p in (tmp_path / "ecg" / "runs").iterdir() if "_cv" in p.name)
    assert [f.split("_")[2] for f in folds] == ["cv1of2", "cv2of2"]


def test_formats_compares_each_format_with_the_wfdb_beats(tmp_path: Path) -> None:
    from benchmarks import formats
    from toolbox.beat_report import write_beats_csv

    # record 100, WFDB (360 Hz): beats at 1, 2, 3, 4 s, classes N N V N. At 128 Hz the first three are found
    # 4 samples (31 ms) late, the third is labelled N, and a beat is added at 6 s; the other formats agree exactly.
    # Record 101: the same beats, found alike in every format.
    wfdb = (np.array([360, 720, 1080, 1440]), 360.0, [0, 0, 2, 0])
    beats = {"100": {"WFDB 360 Hz": wfdb, "CSV 128 Hz": (np.array([132, 260, 388, 512, 768]), 128.0, [0] * 5),
                     "EDF 250 Hz": (np.array([250, 500, 750, 1000]), 250.0, [0, 0, 2, 0]),
                     "CSV 500 Hz": (np.array([500, 1000, 1500, 2000]), 500.0, [0, 0, 2, 0])},
             "101": {name: (np.arange(1, 5) * int(rate or 360), rate or 360.0, [0, 0, 2, 0])
                     for name, _, rate in formats.FORMATS}}
    outs = {name: tmp_path / name.replace(" ", "_") for name, _, _ in formats.FORMATS}
    for record, by_format in beats.items():
        for name, (samples, fs, labels) in by_format.items():
            outs[name].mkdir(exist_ok=True)
            write_beats_csv(outs[name] / f"{record}_beats.csv", samples, fs, np.array(labels), np.eye(3)[labels],
                            CLASSES)
    cells = [r.strip("| ").split(" | ") for r in formats.compare(outs, ["101", "100"])]
    # 128 Hz: 9 beats; all 8 WFDB beats matched, 8 of its 9 (88.89%); shifts 0 x 5 and 31 ms x 3: median 0;
    # 7 of 8 in the same class; record 100 agrees least (3 of 4). A tie goes to the first record by name
    assert cells[0] == ["CSV 128 Hz", "9", "100.00", "88.89", "0.0", "87.50", "100 (75.0)"]
    assert cells[1] == ["EDF 250 Hz", "8", "100.00", "100.00", "0.0", "100.00", "100 (100.0)"]
    assert [c[0] for c in cells] == ["CSV 128 Hz", "EDF 250 Hz", "CSV 500 Hz"]
