"""End to end through commander.py on the real MIT-BIH records: train, resume, test, run folders, errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import commander
from args import parse_args, run_name
from loaders import mitdb
from tests.conftest import REPO, closed_port, one_line_error, run_cli, start_cli

BASE = ["--dataset", "ecg", "--model-name", "cnn1d_3", "--scheduler", "StepLR", "--short-run"]
RUN = run_name(parse_args(BASE))


@pytest.fixture()
def root(tmp_path: Path, cache_root: Path) -> Path:
    """A fresh --root-dir that already holds the session's beat cache (so no test re-extracts)."""
    shutil.copytree(cache_root / "cache", tmp_path / "cache")
    return tmp_path


def cli(root: Path, *flags: str) -> int:
    return commander.main([*BASE, "--root-dir", str(root), *flags])


def test_train_writes_the_whole_run_folder(root: Path, capsys) -> None:
    assert cli(root, "--epochs", "5", "--tensorboard", "--verbose") == 0
    out = capsys.readouterr().out
    assert "examples per class and split" in out and out.count("epoch ") >= 5
    run = root / "ecg" / "runs" / f"{RUN}_1"
    for name in ("config.json", "logger.json", "splits.json", "checkpoint.pth.tar", "model_best.pth.tar",
                 "checkpoint_epoch5.pth.tar"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "res").iterdir()) == [f"val_epoch00{i}.csv" for i in range(1, 6)]
    assert any((run / "tensorboard").iterdir())
    config = json.loads((run / "config.json").read_text())
    assert config["flags"]["model_name"] == "cnn1d_3" and "torch" in config["libraries"]
    assert "git_commit" in config
    log = json.loads((run / "logger.json").read_text())
    assert [r["epoch"] for r in log["train"]] == [1, 2, 3, 4, 5] == [r["epoch"] for r in log["val"]]
    assert {"loss", "accuracy", "macro_f1", "lr"} <= set(log["train"][0])
    splits = json.loads((run / "splits.json").read_text())
    assert set(splits["beats"]) == {"train", "val", "test"}
    header = (run / "res" / "val_epoch001.csv").read_text().splitlines()[0]
    assert header == "index,record,sample,target,pred,p_N,p_S,p_V,p_F,p_Q"


def test_resume_continues_exactly_and_test_writes_pred(root: Path, capsys) -> None:
    straight = root / "straight"
    shutil.copytree(root / "cache", straight / "cache")
    assert cli(straight, "--epochs", "3") == 0
    assert cli(root, "--epochs", "2") == 0
    assert cli(root, "--epochs", "3", "--resume", "latest") == 0
    run = root / "ecg" / "runs" / f"{RUN}_1"
    assert not (root / "ecg" / "runs" / f"{RUN}_2").exists()  # resume reused version 1
    resumed = torch.load(run / "checkpoint.pth.tar", weights_only=True)
    reference = torch.load(straight / "ecg" / "runs" / f"{RUN}_1" / "checkpoint.pth.tar", weights_only=True)
    assert resumed["epoch"] == 3
    for k, v in reference["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    log = json.loads((run / "logger.json").read_text())
    assert [r["epoch"] for r in log["val"]] == [1, 2, 3]

    capsys.readouterr()
    assert cli(root, "--test", "--resume", "best", "--version", "latest") == 0  # --short-run: its own files
    out = capsys.readouterr().out
    assert "test (model_best.pth.tar" in out and "macro-F1" in out and "accuracy" in out
    assert "95% bootstrap interval, 1000 resamples of the test beats" in out
    metrics = json.loads((run / "pred" / "test_best_short_metrics.json").read_text())
    assert {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix", "ci"} <= set(metrics)
    assert set(metrics["per_class"]) == {"N", "S", "V", "F", "Q"} and metrics["examples"] == 1280
    assert metrics["ci"]["accuracy"][0] <= metrics["accuracy"] <= metrics["ci"]["accuracy"][1]
    assert metrics["bootstrap"] == {"resamples": 1000, "unit": "example", "level": 0.95, "seed": 0}
    for name in ("predictions.csv", "confusion.png", "confusion_normalized.png"):
        assert (run / "pred" / f"test_best_short_{name}").stat().st_size > 0
    # the whole test split, then a short test again: the short one leaves the real files alone
    assert commander.main([*BASE[:-1], "--root-dir", str(root), "--test", "--bootstrap", "200"]) == 0
    full = (run / "pred" / "test_best_metrics.json").read_bytes()
    assert json.loads(full)["examples"] == 21899 and json.loads(full)["bootstrap"]["resamples"] == 200
    assert cli(root, "--test") == 0
    assert (run / "pred" / "test_best_metrics.json").read_bytes() == full
    config = json.loads((run / "config.json").read_text())
    assert [i["action"] for i in config["invocations"]] == ["train", "resume", "test", "test", "test"]
    assert config["invocations"][1]["given"]["resume"] == "latest" and config["flags"]["epochs"] == 2


def test_bump_makes_a_new_version_and_a_finished_run_is_kept(root: Path, capsys) -> None:
    assert cli(root, "--epochs", "1") == 0
    run1 = root / "ecg" / "runs" / f"{RUN}_1"
    before = (run1 / "checkpoint.pth.tar").read_bytes()
    assert cli(root, "--epochs", "1", "--version", "latest") == 2
    assert "already holds a trained run" in capsys.readouterr().err
    assert (run1 / "checkpoint.pth.tar").read_bytes() == before
    assert cli(root, "--epochs", "1", "--version", "bump") == 0
    assert (root / "ecg" / "runs" / f"{RUN}_2" / "checkpoint.pth.tar").is_file()


def test_pretrained_loads_weights_into_a_new_run(root: Path, capsys) -> None:
    assert cli(root, "--epochs", "1", "--dataset", "ecg") == 0
    best = root / "ecg" / "runs" / f"{RUN}_1" / "model_best.pth.tar"
    assert cli(root, "--epochs", "1", "--pretrained", str(best)) == 0
    tuned = root / "ecg" / "runs" / f"{RUN}_ft_1"  # a fine-tuned run is named apart from a run from scratch
    assert (tuned / "checkpoint.pth.tar").is_file() and not (root / "ecg" / "runs" / f"{RUN}_2").exists()
    assert cli(root, "--pretrained", str(best), "--test") == 0 and (tuned / "pred").is_dir()
    assert cli(root, "--pretrained", str(root / "other.pth.tar"), "--test") == 2  # recorded: another file
    # the binary dataset has 2 classes: the 5-class head does not fit, so only the encoder is loaded
    assert commander.main(["--dataset", "ecg_bin", "--model-name", "cnn1d_3", "--short-run", "--epochs", "1",
                           "--root-dir", str(root), "--pretrained", str(best)]) == 0
    out = capsys.readouterr().out
    assert "encoder tensors" in out and "new: head.3.weight, head.3.bias" in out


@pytest.mark.parametrize("flags,message", [
    (["--model-name", "resnet1d_1000"], "invalid choice: 'resnet1d_1000'"),
    (["--num-classes", "3"], "--num-classes 3 disagrees with --dataset ecg, which has 5 classes"),
    (["--test"], "no run named"),
    (["--sampler", "equal", "--class-balance", "importance"], "use one of them"),
])
def test_bad_input_is_one_line_exit_2(root: Path, flags: list[str], message: str) -> None:
    proc = run_cli("--root-dir", str(root), "--short-run", *flags)
    assert message in one_line_error(proc)
    assert not (root / "ecg" / "runs").exists()


def test_offline_names_the_folder_to_fill(tmp_path: Path) -> None:
    proc = run_cli("--root-dir", str(tmp_path / "root"), "--short-run", "--data-url",
                   f"http://127.0.0.1:{closed_port()}/mitdb/", env={"ECG_DATA_ROOT": str(tmp_path / "empty")})
    line = one_line_error(proc)
    assert "cannot download the MIT-BIH" in line and str(tmp_path / "empty" / "mitdb") in line


def test_missing_records_are_downloaded_from_a_server(tmp_path: Path, data_root: Path, http_server) -> None:
    url = http_server(data_root) + "mitdb/"
    target = tmp_path / "raw"
    (target / "mitdb").mkdir(parents=True)
    shutil.copy(data_root / "mitdb" / "100.hea", target / "mitdb" / "100.hea")  # a partly filled folder
    proc = run_cli("--root-dir", str(tmp_path / "root"), "--short-run", "--epochs", "1", "--model-name",
                   "cnn1d_3", "--data-url", url, env={"ECG_DATA_ROOT": str(target)})
    assert proc.returncode == 0, proc.stderr
    for name in ("100.dat", "234.atr", "234.dat"):
        assert (target / "mitdb" / name).read_bytes() == (data_root / "mitdb" / name).read_bytes()
    assert not list((target / "mitdb").glob("*.part"))


def test_notebook_runs_on_a_real_run_folder(root: Path, monkeypatch) -> None:
    assert cli(root, "--epochs", "2") == 0
    assert cli(root, "--test", "--version", "latest") == 0
    run = root / "ecg" / "runs" / f"{RUN}_1"
    monkeypatch.setenv("RUN_DIR", str(run))
    notebook = json.loads((REPO / "notebooks" / "inspect_run.ipynb").read_text())
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "inspect_run.ipynb", "exec"), namespace)
    assert list(namespace["val"]["epoch"]) == [1, 2]
    assert namespace["metric_files"][0].name == "test_best_short_metrics.json"
    assert int(namespace["counts"].loc["N", "test"]) == 18126


def test_data_exploration_notebook_executes_on_a_short_run(root: Path, cache_root: Path, monkeypatch) -> None:
    import nbclient
    import nbformat

    assert cli(root, "--epochs", "2") == 0
    assert cli(root, "--test", "--version", "latest") == 0
    monkeypatch.setenv("RUN_DIR", str(root / "ecg" / "runs" / f"{RUN}_1"))
    monkeypatch.setenv("CACHE_DIR", str(cache_root / "cache"))
    notebook = nbformat.read(REPO / "notebooks" / "data_exploration.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    images = sum("image/png" in o.get("data", {}) for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "N  90631" in text and "F    803" in text  # class counts of the real extraction
    assert "test_best_short_metrics.json: accuracy" in text and "1280 test beats" in text  # 10 batches of 128
    assert images >= 4  # class bars, example beats, curves, confusion matrices


def test_inter_patient_run_reports_per_class_scores(root: Path, capsys) -> None:
    assert cli(root, "--split", "inter", "--epochs", "1") == 0
    out = capsys.readouterr().out
    assert "inter-patient split" in out
    run = root / "ecg" / "runs" / f"{run_name(parse_args([*BASE, '--split', 'inter']))}_1"
    assert "_inter_" in run.name
    splits = json.loads((run / "splits.json").read_text())
    assert splits["protocol"] == "inter-patient" and "100" in splits["records"]["test"]
    train, val, test = (set(splits["records"][k]) for k in ("train", "val", "test"))
    assert not train & val and not test & (train | val)  # whole records on one side each
    assert val and val <= set(mitdb.DS1) and test == set(mitdb.DS2)
    assert json.loads((run / "config.json").read_text())["flags"]["split"] == "inter"
    assert cli(root, "--split", "inter", "--test") == 0
    out = capsys.readouterr().out
    assert "Se" in out and "+P" in out and "macro-F1" in out and "resamples of the test records" in out
    metrics = json.loads((run / "pred" / "test_best_short_metrics.json").read_text())
    assert {"precision", "recall", "f1", "support"} == set(metrics["per_class"]["S"])
    assert metrics["bootstrap"]["unit"] == "record"


def test_cross_validation_fold_trains_and_tests_inside_ds1(root: Path) -> None:
    fold = ["--split", "inter", "--folds", "4", "--fold", "3"]
    assert cli(root, *fold, "--epochs", "1") == 0
    run = root / "ecg" / "runs" / f"{run_name(parse_args([*BASE, *fold]))}_1"
    splits = json.loads((run / "splits.json").read_text())
    folds = splits["cross_validation"]["folds"]
    assert splits["cross_validation"]["fold"] == 3 and set(splits["records"]["test"]) == set(folds[2])
    assert not (set(splits["records"]["train"]) | set(splits["records"]["val"])) & set(mitdb.DS2)  # DS2 untouched
    assert cli(root, "--split", "inter", "--folds", "4", "--fold", "3", "--test") == 0


def test_resume_refuses_a_changed_setting_and_applies_an_override(root: Path, capsys) -> None:
    flags = ["--scheduler", "StepLR"]
    assert cli(root, *flags, "--epochs", "1") == 0
    run = root / "ecg" / "runs" / f"{run_name(parse_args([*BASE, *flags]))}_1"
    capsys.readouterr()
    assert cli(root, *flags, "--epochs", "2", "--resume", "latest", "--weight-decay", "0.1") == 2
    err = capsys.readouterr().err
    assert "has --weight-decay 0.0001 (you gave 0.1)" in err and "--override NAME=VALUE" in err
    assert cli(root, *flags, "--epochs", "2", "--resume", "latest", "--seed", "5") == 2
    assert "--seed 5 differs from the run's --seed 0" in capsys.readouterr().err
    assert cli(root, *flags, "--resume", "latest", "--start-epoch", "0", "--epochs", "2") == 2
    assert "--start-epoch 0 disagrees with checkpoint.pth.tar, which has trained 1 epochs" in capsys.readouterr().err
    assert cli(root, *flags, "--epochs", "3", "--resume", "latest", "--override", "weight-decay=0.1", "lr=0.01") == 0
    state = torch.load(run / "checkpoint.pth.tar", weights_only=True)
    group = state["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 0.1 and state["overrides"] == {"weight_decay": 0.1, "lr": 0.01}
    assert group["lr"] == pytest.approx(0.01)  # StepLR with step 5 has not decayed it yet
    config = json.loads((run / "config.json").read_text())
    assert config["invocations"][-1]["overrides"] == {"weight_decay": 0.1, "lr": 0.01}
    assert config["flags"]["weight_decay"] == 1e-4  # the run keeps its name and first flags; the history says more


@pytest.mark.parametrize("flags", [
    ["--class-balance", "equal"], ["--sampler", "importance"], ["--criterion", "focal"],
    ["--optimizer", "sgd", "--momentum", "0.8", "--scheduler", "ExponentialLR", "--lr-decay", "0.5"],
])
def test_balancing_losses_and_optimisers_train_end_to_end(root: Path, flags: list[str]) -> None:
    assert cli(root, *flags, "--epochs", "2") == 0
    run = root / "ecg" / "runs" / f"{run_name(parse_args([*BASE, *flags]))}_1"
    state = torch.load(run / "checkpoint.pth.tar", weights_only=True)
    assert state["epoch"] == 2 and state["args"]["criterion"] == ("focal" if "focal" in flags else "crossentropy")
    if "sgd" in flags:
        assert state["optimizer"]["param_groups"][0]["momentum"] == 0.8
    assert cli(root, *flags, "--test") == 0


def test_two_jobs_started_together_train_into_two_versions(root: Path) -> None:
    jobs = [start_cli(*BASE, "--root-dir", str(root), "--epochs", "1") for _ in range(2)]
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err
    runs = sorted(p.name for p in (root / "ecg" / "runs").iterdir())
    assert runs == [f"{RUN}_1", f"{RUN}_2"]
    for run in runs:  # each holds one complete run of its own
        config = json.loads((root / "ecg" / "runs" / run / "config.json").read_text())
        assert config["run"] == run and [i["action"] for i in config["invocations"]] == ["train"]
