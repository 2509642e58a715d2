"""benchmarks/label_efficiency.py: the disjointness check, the epoch scaling, and one short end-to-end run on the real
MIT-BIH records (pretraining, both arms at two label fractions, table, JSON and plot)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import label_efficiency as le
from toolbox.utils import ECGError


def _pretrain_splits(used: list[str], transductive: bool = False, database: str = "mitdb") -> dict:
    """A pretraining run's splits.json as commander writes it (one dataset, ecg)."""
    return {"database": database, "pool": {"ecg": {"database": database}},
            "pretrain": {"records": {"ecg": used}, "test_records": {"ecg": ["200", "201"]},
                         "transductive": transductive}}


def _beat_splits(test: list[str]) -> dict:
    """An evaluation run's splits.json on MIT-BIH (records listed per split under "records")."""
    return {"database": "mitdb", "records": {"train": ["101", "106"], "val": ["109"], "test": test}}


def test_check_disjoint_passes_on_disjoint_records_and_refuses_an_overlap() -> None:
    le.check_disjoint(_pretrain_splits(["101", "106", "109"]), _beat_splits(["200", "201"]))
    with pytest.raises(ECGError, match=r"1 test record\(s\).*ecg: 201") as info:
        le.check_disjoint(_pretrain_splits(["101", "201"]), _beat_splits(["200", "201"]))
    assert "\n" not in str(info.value)
    # a transductive pretraining used the test signal on purpose: its rows are marked, not refused
    le.check_disjoint(_pretrain_splits(["101", "200", "201"], transductive=True), _beat_splits(["200", "201"]))
    # record datasets list their ids (ints in PTB-XL) at the top level; they are compared as strings
    ptbxl = {"database": "PTB-XL", "train": [1, 2], "val": [3], "test": [4, 5]}
    with pytest.raises(ECGError, match="ecg: 5"):
        le.check_disjoint(_pretrain_splits(["1", "5"], database="PTB-XL"), ptbxl)
    # ids of another database say nothing about these records
    le.check_disjoint(_pretrain_splits(["4", "5"], database="mitdb"), ptbxl)
    with pytest.raises(ECGError, match="--task pretrain"):
        le.check_disjoint({"database": "mitdb", "records": {}}, _beat_splits(["200"]))


def test_fraction_epochs_keeps_the_steps_up_to_the_cap() -> None:
    assert le.fraction_epochs(10, 1.0) == 10
    assert le.fraction_epochs(10, 0.5) == 20
    assert le.fraction_epochs(10, 0.4) == 25
    assert le.fraction_epochs(10, 0.01) == le.MAX_EPOCH_FACTOR * 10
    assert le.fraction_epochs(10, 0.01, short_run=True) == 10


def test_short_run_of_the_mitbih_inter_benchmark(tmp_path: Path, data_root: Path, capsys) -> None:
    """Real MIT-BIH records: one pretraining on DS1, scratch and fine-tuned classifiers at two fractions, 1 seed."""
    out = tmp_path / "out"
    code = le.main(["mitbih-inter", "--fractions", "0.05", "1", "--seeds", "0", "--short-run", "--root-dir",
                    str(tmp_path / "root"), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("[label_efficiency] mitbih-inter fraction") == 4  # a progress line per run
    report = json.loads((out / "mitbih-inter.json").read_text())
    assert [f["fraction"] for f in report["fractions"]] == [0.05, 1.0]
    pretrain_run = Path(report["pretraining"]["pretrained"]["run"])
    assert report["pretraining"]["pretrained"]["transductive"] is False
    note = json.loads((pretrain_run / "splits.json").read_text())["pretrain"]
    assert not set(note["records"]["ecg"]) & set(note["test_records"]["ecg"])  # DS1 only
    labelled = []
    for row in report["fractions"]:
        assert set(row["arms"]) == {"scratch", "pretrained"}
        for arm in ("scratch", "pretrained"):
            values = row["arms"][arm]["scores"]["macro_f1"]["per_seed"]
            assert len(values) == 1 and 0 <= values[0] <= 1
            assert row["arms"][arm]["scores"]["macro_f1"]["ci"] is not None
            run = Path(row["arms"][arm]["runs"][0])
            flags = json.loads((run / "config.json").read_text())["flags"]
            assert flags["label_fraction"] == row["fraction"]
            assert (flags["pretrained"] is not None) == (arm == "pretrained")
            if arm == "pretrained":
                assert Path(flags["pretrained"]).parent == pretrain_run and flags["freeze_epochs"] == 1
        assert row["arms"]["scratch"]["labelled"] == row["arms"]["pretrained"]["labelled"]  # same subset
        gain = row["gains"]["pretrained"]["macro_f1"]["mean"]
        scratch, tuned = (row["arms"][a]["scores"]["macro_f1"]["mean"] for a in ("scratch", "pretrained"))
        assert math.isclose(gain, tuned - scratch, abs_tol=1e-12)
        labelled.append(row["arms"]["scratch"]["labelled"][0])
    assert labelled[0] < labelled[1] and abs(labelled[0] / labelled[1] - 0.05) < 0.01
    table = (out / "mitbih-inter.md").read_text()
    assert "| fraction | labelled beats | epochs | scratch macro-F1 | pretrained (fine-tuned) | gain |" in table
    assert "| 0.05 | " in table and "| 1 | " in table and table in printed
    png = (out / "mitbih-inter.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
