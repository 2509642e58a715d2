"""End to end through commander.py on the real MIT-BIH records: train, resume, test, run folders, errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import commander
from args import parse_args, run_name
from tests.conftest import REPO, closed_port, one_line_error, run_cli

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
    assert cli(root, "--test", "--resume", "best", "--version", "latest") == 0
    out = capsys.readouterr().out
    assert "test (model_best.pth.tar" in out and "macro-F1" in out and "accuracy" in out
    metrics = json.loads((run / "pred" / "test_best_metrics.json").read_text())
    assert {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix"} <= set(metrics)
    assert set(metrics["per_class"]) == {"N", "S", "V", "F", "Q"}
    for name in ("test_best_predictions.csv", "test_best_confusion.png", "test_best_confusion_normalized.png"):
        assert (run / "pred" / name).stat().st_size > 0


def test_bump_makes_a_new_version_and_a_finished_run_is_kept(root: Path, capsys) -> None:
    assert cli(root, "--epochs", "1") == 0
    run1 = root / "ecg" / "runs" / f"{RUN}_1"
    before = (run1 / "checkpoint.pth.tar").read_bytes()
    assert cli(root, "--epochs", "1", "--version", "latest") == 2
    assert "already holds a trained run" in capsys.readouterr().err
    assert (run1 / "checkpoint.pth.tar").read_bytes() == before
    assert cli(root, "--epochs", "1", "--version", "bump") == 0
    assert (root / "ecg" / "runs" / f"{RUN}_2" / "checkpoint.pth.tar").is_file()


def test_pretrained_loads_weights_into_a_new_run(root: Path) -> None:
    assert cli(root, "--epochs", "1", "--dataset", "ecg") == 0
    best = root / "ecg" / "runs" / f"{RUN}_1" / "model_best.pth.tar"
    assert cli(root, "--epochs", "1", "--pretrained", str(best)) == 0
    assert (root / "ecg" / "runs" / f"{RUN}_2" / "checkpoint.pth.tar").is_file()
    # the binary dataset has 2 classes: the 5-class weights do not fit
    assert commander.main(["--dataset", "ecg_bin", "--model-name", "cnn1d_3", "--short-run", "--epochs", "1",
                           "--root-dir", str(root), "--pretrained", str(best)]) == 2


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
    assert namespace["metric_files"][0].name == "test_best_metrics.json"
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
    assert "test_best_metrics.json: accuracy" in text and "1280 test beats" in text  # --short-run: 10 batches of 128
    assert images >= 4  # class bars, example beats, curves, confusion matrices


def test_inter_patient_run_reports_per_class_scores(root: Path, capsys) -> None:
    assert cli(root, "--split", "inter", "--epochs", "1") == 0
    out = capsys.readouterr().out
    assert "inter-patient split" in out
    run = root / "ecg" / "runs" / f"{run_name(parse_args([*BASE, '--split', 'inter']))}_1"
    assert "_inter_" in run.name
    splits = json.loads((run / "splits.json").read_text())
    assert splits["protocol"] == "inter-patient" and "100" in splits["records"]["test"]
    assert set(splits["records"]["val"]) <= set(splits["records"]["train"]) | set(splits["records"]["val"])
    assert not set(splits["records"]["test"]) & (set(splits["records"]["train"]) | set(splits["records"]["val"]))
    assert json.loads((run / "config.json").read_text())["flags"]["split"] == "inter"
    assert cli(root, "--split", "inter", "--test") == 0
    out = capsys.readouterr().out
    assert "Se" in out and "+P" in out and "macro-F1" in out
    metrics = json.loads((run / "pred" / "test_best_metrics.json").read_text())
    assert {"precision", "recall", "f1", "support"} == set(metrics["per_class"]["S"])
