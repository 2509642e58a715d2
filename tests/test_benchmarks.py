"""benchmarks/quality.py's ensemble row: the seeds' test probabilities averaged (small tables, by hand)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from toolbox.logger import save_predictions

spec = importlib.util.spec_from_file_location("quality", REPO / "benchmarks" / "quality.py")
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)

CLASSES = ["N", "S", "V"]


def _run(root: Path, name: str, probs: list[list[float]], targets: list[int]) -> dict:
    path = root / "ecg" / "runs" / name / "pred" / "test_best_predictions.csv"
    path.parent.mkdir(parents=True)
    meta = {"record": np.array([100, 100, 200, 200]), "sample": np.array([10, 20, 10, 20])}
    save_predictions(path, np.array(probs), np.array(targets), CLASSES, meta)
    return {"run": name, "dir": path.parent.parent, "params": 1000, "epochs": 10, "minutes": 2.0}


def test_ensemble_averages_the_seeds_probabilities(tmp_path: Path) -> None:
    targets = [0, 1, 2, 2]
    a = _run(tmp_path, "a_1", [[0.9, 0.1, 0], [0.6, 0.4, 0], [0.1, 0, 0.9], [0.5, 0, 0.5 - 1e-3]], targets)
    b = _run(tmp_path, "a_2", [[0.2, 0.8, 0], [0.1, 0.9, 0], [0.2, 0, 0.8], [0.3, 0, 0.7]], targets)
    # a alone gets 2 of 4 right (examples 1 and 3 go to N), b alone 3 of 4 (example 0 goes to S)
    out = quality.ensemble([a, b])
    # means: [0.55 0.45 0] -> N (right), [0.35 0.65 0] -> S, [0.15 0 0.85] -> V, [0.4 0 0.6] -> V: all right
    assert out["metrics"]["accuracy"] == 1.0 and out["metrics"]["macro_f1"] == 1.0
    assert (out["params"], out["minutes"], out["run"]) == (2000, 4.0, "a_1+a_2")


def test_ensemble_refuses_runs_tested_on_other_examples(tmp_path: Path) -> None:
    a = _run(tmp_path, "a_1", [[1, 0, 0]] * 4, [0, 1, 2, 2])
    b = _run(tmp_path, "a_2", [[1, 0, 0]] * 4, [0, 1, 2, 0])
    with pytest.raises(SystemExit, match="tested on different examples"):
        quality.ensemble([a, b])
