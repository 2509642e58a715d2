"""--task pretrain end to end through commander.py on the real records, then fine-tuning from it: saved record ids
that exclude the test split, pooled record datasets, encoder loading, freezing, label fractions and refusals."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import commander
from tests.conftest import one_line_error, run_cli

PRETRAIN = ["--dataset", "ecg", "--split", "inter", "--task", "pretrain", "--model-name", "cnn1d_3", "--short-run",
            "--epochs", "2"]
FINETUNE = ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3", "--short-run", "--epochs", "2"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, cache_root: Path) -> Path:
    """A masked-reconstruction pretraining run of cnn1d_3 on the MIT-BIH DS1 beats (2 short epochs)."""
    root = tmp_path_factory.mktemp("pretrain")
    shutil.copytree(cache_root / "cache", root / "cache")
    code, run = commander.run(commander.parse_args([*PRETRAIN, "--root-dir", str(root)]))
    assert code == 0
    return run


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_pretraining_writes_a_run_folder_whose_records_exclude_the_test_split(pretrained: Path) -> None:
    for name in ("config.json", "logger.json", "splits.json", "checkpoint.pth.tar", "model_best.pth.tar"):
        assert (pretrained / name).is_file(), name
    log = json.loads((pretrained / "logger.json").read_text())
    assert len(log["train"]) == 2 and all(np.isfinite(r["loss"]) for r in log["train"] + log["val"])
    splits = json.loads((pretrained / "splits.json").read_text())
    used, test = set(splits["pretrain"]["records"]["ecg"]), set(splits["pretrain"]["test_records"]["ecg"])
    assert not splits["pretrain"]["transductive"] and used and test
    assert not used & test  # the inter-patient test records (DS2) never reach pretraining
    ds1 = set(splits["pool"]["ecg"]["records"]["train"]) | set(splits["pool"]["ecg"]["records"]["val"])
    assert used == {str(r) for r in ds1}
    state = _load(pretrained / "model_best.pth.tar")
    assert state["task"] == "pretrain" and state["pretext"] == "masked"
    assert state["encoder"] and not any(k.startswith("head.") for k in state["encoder"])


def test_transductive_pretraining_says_so_and_uses_the_test_records(tmp_path: Path, cache_root: Path) -> None:
    shutil.copytree(cache_root / "cache", tmp_path / "cache")
    code, run = commander.run(commander.parse_args([*PRETRAIN, "--epochs", "1", "--transductive",
                                                    "--root-dir", str(tmp_path)]))
    assert code == 0 and run.name.endswith("_transductive_1")
    note = json.loads((run / "splits.json").read_text())["pretrain"]
    assert note["transductive"] and set(note["test_records"]["ecg"]) <= set(note["records"]["ecg"])


def test_linear_probe_keeps_the_loaded_encoder_exactly(pretrained: Path, tmp_path: Path, cache_root: Path,
                                                       capsys) -> None:
    shutil.copytree(cache_root / "cache", tmp_path / "cache")
    code, run = commander.run(commander.parse_args([*FINETUNE, "--pretrained", str(pretrained), "--linear-probe",
                                                    "--root-dir", str(tmp_path)]))
    out = capsys.readouterr().out
    assert code == 0 and "loaded" in out and "new:" in out and "encoder frozen" in out
    source = _load(pretrained / "model_best.pth.tar")["encoder"]
    tuned = _load(run / "checkpoint.pth.tar")["model"]
    # two epochs later, every encoder tensor (weights and batch-norm statistics) is the pretrained one ...
    assert all(torch.equal(tuned[name], value) for name, value in source.items())
    # ... and the head, which was new, has trained
    fresh = commander.get_model("cnn1d_3", 1, 5).state_dict()
    assert not torch.equal(tuned["head.3.weight"], fresh["head.3.weight"])


def test_freeze_epochs_then_the_encoder_trains(pretrained: Path, tmp_path: Path, cache_root: Path, capsys) -> None:
    shutil.copytree(cache_root / "cache", tmp_path / "cache")
    flags = [*FINETUNE, "--pretrained", str(pretrained), "--freeze-epochs", "1", "--root-dir", str(tmp_path),
             "--scheduler", "StepLR"]
    code, run = commander.run(commander.parse_args([*flags, "--epochs", "1"]))
    assert code == 0 and "encoder frozen" in capsys.readouterr().out
    source = _load(pretrained / "model_best.pth.tar")["encoder"]
    weights = [n for n in source if n.endswith("weight")]
    epoch1 = _load(run / "checkpoint.pth.tar")
    assert epoch1["epoch"] == 1  # epoch 1 (frozen) left the encoder's weights as loaded
    assert all(torch.equal(epoch1["model"][n], source[n]) for n in weights)
    version = run.name.rsplit("_", 1)[1]
    code, again = commander.run(commander.parse_args([*flags, "--epochs", "2", "--resume", "latest",
                                                      "--version", version]))
    assert code == 0 and again == run and "the whole model trains" in capsys.readouterr().out
    last = _load(run / "checkpoint.pth.tar")
    assert last["epoch"] == 2 and any(not torch.equal(last["model"][n], source[n]) for n in weights)


def test_label_fraction_draws_each_class_and_records_it(tmp_path: Path, cache_root: Path) -> None:
    shutil.copytree(cache_root / "cache", tmp_path / "cache")
    code, run = commander.run(commander.parse_args([*FINETUNE, "--epochs", "1", "--label-fraction", "0.1",
                                                    "--root-dir", str(tmp_path)]))
    assert code == 0 and "labels0.1" in run.name
    splits = json.loads((run / "splits.json").read_text())
    note = splits["label_fraction"]
    assert note["fraction"] == 0.1 and note["seed"] == 0
    assert abs(note["examples"] - 0.1 * note["of"]) < 10  # rounding per class, at least one of each
    data, _ = commander.build_data(commander.parse_args(FINETUNE), commander.get_loader("ecg"), None)
    again = commander.label_subset(data, 0.1, 0)
    counts, full = again.train.class_counts(), data.train.class_counts()
    assert len(again.train) == note["examples"]
    assert all((c >= 1) == (f >= 1) and abs(c - 0.1 * f) <= 1 for c, f in zip(counts, full, strict=True))
    other = commander.label_subset(data, 0.1, 1)
    assert not torch.equal(other.train.x[:50], again.train.x[:50])  # another seed, another draw


def test_pooled_record_datasets_pretrain_and_list_their_records(tmp_path: Path) -> None:
    code, run = commander.run(commander.parse_args(["--dataset", "cinc2020,ptbxl", "--task", "pretrain",
                                                    "--pretext", "flip", "--model-name", "cnn1d_3", "--fs", "100",
                                                    "--seq-len", "2.5", "--short-run", "--epochs", "1",
                                                    "--root-dir", str(tmp_path)]))
    assert code == 0 and run.parent.parent.name == "cinc2020+ptbxl"
    splits = json.loads((run / "splits.json").read_text())
    for name in ("cinc2020", "ptbxl"):
        used, test = set(splits["pretrain"]["records"][name]), set(splits["pretrain"]["test_records"][name])
        assert used and test and not used & test
        assert used == {str(r) for r in splits["pool"][name]["train"] + splits["pool"][name]["val"]}


def test_an_encoder_of_another_architecture_is_refused(pretrained: Path, tmp_path: Path) -> None:
    proc = run_cli(*FINETUNE, "--model-name", "resnet1d_10", "--pretrained", str(pretrained),
                   "--root-dir", str(tmp_path))
    line = one_line_error(proc)
    assert "cnn1d_3" in line and "resnet1d_10" in line
    assert not (tmp_path / "ecg" / "runs").exists() or not any((tmp_path / "ecg" / "runs").iterdir())


@pytest.mark.parametrize("flags,message", [
    (["--task", "pretrain", "--rr-features"], "not read by --task pretrain"),
    (["--task", "pretrain", "--test"], "no test step"),
    (["--dataset", "cinc2020,ptbxl"], "pooled for --task pretrain only"),
    (["--dataset", "ecg,ptbxl", "--task", "pretrain"], "only the record datasets"),
    (["--freeze-encoder"], "add --pretrained"),
    (["--pretext", "flip"], "is for --task pretrain"),
])
def test_bad_pretraining_flags_are_one_line(flags: list[str], message: str) -> None:
    assert message in one_line_error(run_cli(*flags))
