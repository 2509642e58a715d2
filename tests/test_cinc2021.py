"""The Challenge 2021 dataset: its scoring tables and metric, the lead subsets, and runs through commander.py."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch

import commander
from args import parse_args, run_name
from loaders import cinc2020
from tests.conftest import REPO
from toolbox.metrics import challenge_metric

CINC21 = ["--dataset", "cinc2021", "--model-name", "cnn1d_3", "--batch-size", "16"]


@pytest.fixture(scope="module")
def folder(data_root: Path) -> Path:
    return data_root / "cinc2021"


def official_metric(weights_csv: Path, dx: list[list[str]], outputs: np.ndarray) -> float:
    """The 2021 scorer's rules, written out from its description: classes are the ``a|b`` sets of the table's
    header, a record carries a class when one of its codes is in the set, and each record spreads one unit
    over |labels OR outputs|; normalised between always-normal (426783006) and the true labels."""
    with weights_csv.open() as f:
        table = list(csv.reader(f))
    classes = [set(c.strip().split("|")) for c in table[0][1:]]
    weights = np.array([[float(v) for v in row[1:]] for row in table[1:]])
    labels = np.array([[bool(set(codes) & c) for c in classes] for codes in dx])

    def score(out: np.ndarray) -> float:
        a = np.zeros((len(classes), len(classes)))
        for i in range(len(labels)):
            union = max(int(np.sum(labels[i] | out[i])), 1)
            for j in np.flatnonzero(labels[i]):
                for k in np.flatnonzero(out[i]):
                    a[j, k] += 1.0 / union
        return float(np.nansum(weights * a))

    normal = np.zeros_like(labels)
    normal[:, classes.index({"426783006"})] = True
    observed, correct, inactive = score(outputs), score(labels), score(normal)
    return 0.0 if correct == inactive else (observed - inactive) / (correct - inactive)


def test_the_2021_tables_give_26_classes_with_their_pairs(folder: Path) -> None:
    scoring = cinc2020.read_scoring(folder / "scoring", 2021)
    assert len(scoring.codes) == 26 and scoring.weights.shape == (26, 26)
    for a, b in (("733534002", "164909002"), ("713427006", "59118001"), ("284470004", "63593006"),
                 ("427172004", "17338001")):
        assert scoring.equivalent[b] == a and np.array_equal(scoring.multi_hot([a]), scoring.multi_hot([b]))
    assert scoring.codes[scoring.normal_index] == "426783006"
    assert np.array_equal(scoring.weights, pd.read_csv(folder / "scoring" / "weights.csv", index_col=0).to_numpy())


def test_the_2021_metric_equals_the_scorers_rules_on_the_real_records(folder: Path) -> None:
    scoring = cinc2020.read_scoring(folder / "scoring", 2021)
    dx = [cinc2020.read_header(p).dx for p in sorted((folder / "records").glob("*.hea"))]
    labels = np.stack([scoring.multi_hot(d) for d in dx]).astype(bool)
    rng = np.random.default_rng(0)
    cases = [labels, rng.random(labels.shape) < 0.1, rng.random(labels.shape) < 0.5, np.zeros_like(labels),
             labels ^ (rng.random(labels.shape) < 0.05)]
    for outputs in cases:
        ours = challenge_metric(scoring.weights, labels, outputs, scoring.normal_index)
        assert abs(ours - official_metric(folder / "scoring" / "weights.csv", dx, outputs)) < 1e-9
    assert challenge_metric(scoring.weights, labels, labels, scoring.normal_index) == 1.0


def test_the_2021_metric_on_hand_made_cases(tmp_path: Path) -> None:
    codes = ["1|2", "426783006", "3"]
    pd.DataFrame([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 1.0]], index=codes, columns=codes).to_csv(
        tmp_path / "weights.csv")
    pd.DataFrame({"Dx": ["a", "b", "c", "d"], "SNOMEDCTCode": ["1", "2", "426783006", "3"],
                  "Abbreviation": ["A", "B", "SNR", "C"]}).to_csv(tmp_path / "dx_mapping_scored.csv", index=False)
    scoring = cinc2020.read_scoring(tmp_path, 2021)
    assert scoring.codes == ["1", "426783006", "3"] and scoring.abbreviations[0] == "A|B"
    dx = [["2"], ["3"], ["426783006"]]  # record 1 is labelled "2", scored as the class "1|2"
    labels = np.stack([scoring.multi_hot(d) for d in dx]).astype(bool)
    assert labels.tolist() == [[True, False, False], [False, False, True], [False, True, False]]
    normal = np.zeros_like(labels)
    normal[:, scoring.normal_index] = True
    assert challenge_metric(scoring.weights, labels, labels, scoring.normal_index) == 1.0
    assert challenge_metric(scoring.weights, labels, normal, scoring.normal_index) == 0.0
    # record 1 answered "3": its unit spreads over {1|2, 3}, so it earns 1/2 x reward 0.5; the others are right.
    # Always normal earns 1 (record 3), the true labels 3: (0.25 + 1 + 1 - 1) / (3 - 1)
    swapped = np.array([[0, 0, 1], [0, 0, 1], [0, 1, 0]], dtype=bool)
    assert challenge_metric(scoring.weights, labels, swapped, scoring.normal_index) == pytest.approx(0.625)
    assert official_metric(tmp_path / "weights.csv", dx, swapped) == pytest.approx(0.625)


@pytest.mark.parametrize("leads", [6, 4, 3, 2])
def test_a_lead_subset_is_those_rows_of_the_twelve(leads: int, folder: Path, tmp_path: Path) -> None:
    twelve = cinc2020.build(folder, tmp_path, split_seed=0, release=2021, progress=False)
    subset = cinc2020.build(folder, tmp_path, split_seed=0, release=2021, leads=leads, progress=False)
    names = cinc2020.LEAD_SETS[leads]
    assert subset.in_channels == len(names) and twelve.in_channels == 12 and subset.preprocess["leads"] == names
    rows = [cinc2020.LEADS.index(n) for n in names]
    x12, _ = twelve.val.__getitems__(list(range(8)))
    x, _ = subset.val.__getitems__(list(range(8)))
    assert torch.equal(x, x12[:, rows])
    assert subset.manifest["val"] == twelve.manifest["val"]  # the same split for every subset


def test_the_split_says_whether_one_patient_can_sit_on_both_sides(folder: Path, tmp_path: Path) -> None:
    data = cinc2020.build(folder, tmp_path, split_seed=0, release=2021, progress=False)
    held = [s for s in ("S", "HR", "I") if s in data.manifest["sources"]["test"]]
    assert ("may be in training and test" in data.manifest["patients"]) == bool(held)
    alone = cinc2020.build(folder, tmp_path, split_seed=0, release=2021, protocol="source-HR", progress=False)
    assert "patient-disjoint" in alone.manifest["patients"]


def _six_lead_record(src: Path, dest: Path, name: str) -> None:
    """A Challenge record holding only the six limb leads (as the 2021 six-lead test data does)."""
    header = cinc2020.read_header(src / f"{name}.hea")
    val = scipy.io.loadmat(src / f"{name}.mat")["val"]
    keep = [header.leads.index(lead) for lead in cinc2020.LEAD_SETS[6]]
    lines = (src / f"{name}.hea").read_text().splitlines()
    first = lines[0].split()
    first[1] = "6"
    signal_lines = [lines[1 + i] for i in keep]
    comments = [line for line in lines if line.startswith("#")]
    (dest / f"{name}.hea").write_text("\n".join([" ".join(first), *signal_lines, *comments]) + "\n")
    scipy.io.savemat(dest / f"{name}.mat", {"val": val[keep]})


def test_a_six_lead_run_trains_tests_and_drives_six_lead_records(folder: Path, tmp_path: Path) -> None:
    flags = [*CINC21, "--leads", "6", "--root-dir", str(tmp_path), "--short-run"]
    assert commander.main([*flags, "--epochs", "1"]) == 0
    run = tmp_path / "cinc2021" / "runs" / f"{run_name(parse_args(flags))}_1"
    assert run.name.endswith("_leads6_1")
    state = torch.load(run / "checkpoint.pth.tar", weights_only=True)
    assert state["in_channels"] == 6 and state["num_classes"] == 26 and state["preprocess"]["leads"] == \
        cinc2020.LEAD_SETS[6]
    assert commander.main([*flags, "--test", "--resume", "latest", "--bootstrap", "20"]) == 0
    metrics = json.loads((run / "pred" / "test_latest_short_metrics.json").read_text())
    assert isinstance(metrics["challenge"], float) and len(metrics["per_class"]) == 26
    inputs, out = tmp_path / "six", tmp_path / "out"
    inputs.mkdir()
    names = json.loads((run / "splits.json").read_text())["test"][:3]
    for name in names:
        _six_lead_record(folder / "records", inputs, name)
    proc = subprocess.run([sys.executable, str(REPO / "driver.py"), str(inputs), str(out), "--run", str(run),
                           "--checkpoint", "latest"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in names:
        record, codes, labels, probs = cinc2020.read_output(out / f"{name}.csv")
        assert record == name and codes == state["classes"] and len(probs) == 26
    # the same records with twelve leads give the same outputs: only the six are read
    twelve, out12 = tmp_path / "twelve", tmp_path / "out12"
    twelve.mkdir()
    for name in names:
        for ext in (".hea", ".mat"):
            (twelve / f"{name}{ext}").symlink_to(folder / "records" / f"{name}{ext}")
    proc = subprocess.run([sys.executable, str(REPO / "driver.py"), str(twelve), str(out12), "--run", str(run),
                           "--checkpoint", "latest"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in names:
        assert (out / f"{name}.csv").read_text() == (out12 / f"{name}.csv").read_text()
