"""--task anomaly end to end on the real MIT-BIH records: normal-only training, validation-only choices, exact
resume of a GAN, --test outputs, --generate, --config reruns, and one-line errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import commander
import trainer
from args import parse_args
from loaders.dataset import make_dataloader
from models import from_checkpoint
from tasks import anomaly as anomaly_task
from tests.conftest import one_line_error, run_cli, write_ptb_csvs
from toolbox import anomaly

SHORT = ["--dataset", "ecg", "--task", "anomaly", "--short-run"]


@pytest.fixture()
def root(tmp_path: Path, cache_root: Path) -> Path:
    shutil.copytree(cache_root / "cache", tmp_path / "cache")
    return tmp_path


def cli(root: Path, *flags: str) -> int:
    return commander.main([*SHORT, "--root-dir", str(root), *flags])


def only_run(root: Path, dataset: str = "ecg") -> Path:
    runs = sorted((root / dataset / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_training_sees_normal_beats_only_and_choices_come_from_validation(root: Path, beats: dict, capsys) -> None:
    assert cli(root, "--model-name", "ae1d", "--epochs", "2") == 0
    out = capsys.readouterr().out
    assert "normal training beats (N)" in out and "val AUROC" in out
    run = only_run(root)
    splits = json.loads((run / "splits.json").read_text())
    # every training beat named in splits.json is an N beat of the reference annotations
    label = {(int(r), int(s)): int(y) for r, s, y in zip(beats["record"], beats["sample"], beats["label"], strict=True)}
    train = [(int(r), s) for r, samples in splits["beats"]["train"].items() for s in samples]
    assert len(train) > 60_000 and {label[b] for b in train} == {0}
    assert splits["anomaly"]["normal_classes"] == ["N"] and splits["counts"]["train"]["V"] == 0
    assert splits["anomaly"]["left_out_of_training"]["V"] > 1000
    val_classes = {label[(int(r), s)] for r, samples in splits["beats"]["val"].items() for s in samples}
    assert {0, 1, 2} <= val_classes  # validation keeps the abnormal beats

    # the checkpoint's combination and threshold are those fitted on the validation scores of its own model
    state = torch.load(run / "model_best.pth.tar", weights_only=True)
    model = from_checkpoint(state)
    model.load_state_dict(state["model"])
    data, _ = commander.build_data(parse_args([*SHORT, "--model-name", "ae1d", "--root-dir", str(root)]),
                                   commander.get_loader("ecg"), run)
    loader = make_dataloader(data.val, 128)
    latent = anomaly_task.fit_latent(model, data.train, torch.device("cpu"))
    assert all(torch.equal(latent[k], state["latent"][k]) for k in ("mean", "precision"))
    scores, labels = trainer.anomaly_scores(model, loader, torch.device("cpu"), max_batches=10, progress=False,
                                            score=lambda x: anomaly_task.beat_scores(model, x, latent))
    assert {"reconstruction", "latent", "mahalanobis", "error_lead1_part3"} <= set(scores)
    _, combiner, threshold = anomaly_task.fit_validation(scores, labels, [0], seed=0)
    assert combiner.to_dict() == state["combination"] and threshold == state["threshold"]
    log = json.loads((run / "logger.json").read_text())
    assert {"auroc", "auprc", "f1", "auroc_reconstruction", "auroc_latent", "auroc_mahalanobis"} <= set(log["val"][0])
    best = max(log["val"], key=lambda r: r["auroc"])["epoch"]
    assert state["best_epoch"] == best == state["epoch"]


@pytest.mark.parametrize("model,parts", [("dcgan", {"generator", "discriminator", "inverse"}),
                                         ("vaegan", {"generator", "discriminator"})])
def test_gan_resume_is_exact(root: Path, model: str, parts: set[str]) -> None:
    """dcgan draws z and vaegan its reparameterisation noise from torch's generator; dcgan counts critic steps."""
    straight = root / "straight"
    shutil.copytree(root / "cache", straight / "cache")
    assert cli(straight, "--model-name", model, "--epochs", "2") == 0
    assert cli(root, "--model-name", model, "--epochs", "1") == 0
    assert cli(root, "--model-name", model, "--epochs", "2", "--resume", "latest") == 0
    resumed = torch.load(only_run(root) / "checkpoint.pth.tar", weights_only=True)
    reference = torch.load(only_run(straight) / "checkpoint.pth.tar", weights_only=True)
    assert resumed["epoch"] == 2 and set(resumed["optimizers"]) == parts
    for k, v in reference["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    for part in parts:
        assert resumed["optimizers"][part]["state"].keys() == reference["optimizers"][part]["state"].keys()
        for i, st in reference["optimizers"][part]["state"].items():
            assert torch.equal(st["exp_avg"], resumed["optimizers"][part]["state"][i]["exp_avg"])
    assert resumed["combination"] == reference["combination"]
    assert torch.equal(resumed["rng"]["torch"], reference["rng"]["torch"])


def test_test_writes_pred_at_the_validation_threshold(root: Path, capsys) -> None:
    assert cli(root, "--model-name", "beatgan", "--epochs", "1") == 0

    capsys.readouterr()
    assert cli(root, "--model-name", "beatgan", "--test") == 0
    out = capsys.readouterr().out
    assert "AUROC" in out and "at the validation threshold" in out and "V vs N" in out
    pred = only_run(root) / "pred"
    metrics = json.loads((pred / "test_best_short_metrics.json").read_text())
    assert {"auroc", "auprc", "f1", "mcc", "threshold", "per_class", "per_score", "ci"} <= set(metrics)
    best = torch.load(only_run(root) / "model_best.pth.tar", weights_only=True)
    assert metrics["threshold"] == best["threshold"]
    assert metrics["ci"]["auroc"][0] <= metrics["auroc"] <= metrics["ci"]["auroc"][1]
    table = pd.read_csv(pred / "test_best_short_scores.csv")
    assert len(table) == metrics["beats"] == 1280
    assert {"record", "sample", "class", "abnormal", "score_reconstruction", "score_discriminator", "score"} <= set(
        table.columns)
    assert (table["abnormal"] == (table["class"] != "N")).all()
    assert anomaly.auroc(table["score"].to_numpy(), table["abnormal"].to_numpy() == 1) == pytest.approx(
        metrics["auroc"], abs=1e-6)
    for name in ("roc", "pr", "histogram"):
        assert (pred / f"test_best_short_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generate_writes_samples_mmd_and_tstr(root: Path, capsys) -> None:
    assert cli(root, "--model-name", "vae1d", "--epochs", "1") == 0
    assert cli(root, "--model-name", "vae1d", "--resume", "best", "--generate", "64") == 0
    out = capsys.readouterr().out
    assert "MMD^2" in out and "train on synthetic, test on real" in out
    generated = only_run(root) / "generated"
    with np.load(generated / "samples.npz") as f:
        assert f["x"].shape == (64, 1, 187) and np.isfinite(f["x"]).all()
    report = json.loads((generated / "generation.json").read_text())
    assert report["samples"] == 64 and report["tstr"]["normal_beats"] == 64
    assert set(report["tstr"]["synthetic"]["per_class_f1"]) == {"N", "S", "V", "F", "Q"}
    assert report["mmd2"]["synthetic_vs_test_normal"] > report["mmd2"]["train_normal_vs_test_normal"]
    assert (generated / "samples.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("flags", [
    ["--dataset", "ecg", "--model-name", "cnn1d_3", "--short-run", "--scheduler", "StepLR", "--lr", "0.002",
     "--rr-features", "--epochs", "1", "--no-amp"],
    ["--dataset", "ecg", "--task", "anomaly", "--model-name", "ae1d", "--short-run", "--epochs", "1",
     "--normal-classes", "N", "Q"],
])
def test_config_reruns_the_same_experiment_into_a_new_version(root: Path, flags: list[str]) -> None:
    assert commander.main([*flags, "--root-dir", str(root)]) == 0
    first = only_run(root)
    assert commander.main(["--config", str(first / "config.json")]) == 0
    runs = sorted((root / "ecg" / "runs").iterdir())
    assert [r.name for r in runs] == [first.name, first.name[:-1] + "2"]
    a, b = (json.loads((r / "config.json").read_text())["flags"] for r in runs)
    assert {k: v for k, v in a.items() if k not in ("config", "given")} == {
        k: v for k, v in b.items() if k not in ("config", "given")}
    assert b["config"] == str(first / "config.json")
    # a flag given beside --config wins; so does another model, with its own defaults (not the first run's)
    assert commander.main(["--config", str(first), "--seed", "3"]) == 0
    third = json.loads((runs[0].parent / (first.name[:-1] + "3") / "config.json").read_text())["flags"]
    assert third["seed"] == 3 and third["model_name"] == a["model_name"]
    other = "resnet1d_10_small" if a["task"] == "classify" else "beatgan"
    assert commander.main(["--config", str(first), "--model-name", other]) == 0
    fourth = json.loads(next((root / "ecg" / "runs").glob(f"{other}_*/config.json")).read_text())["flags"]
    assert fourth["lr"] == a["lr"] if a["task"] == "classify" else fourth["lr"] == 2e-4
    assert fourth["amp"] == a["amp"] and fourth["epochs"] == 1


@pytest.mark.parametrize("flags,message", [
    (["--model-name", "ae1d"], "ae1d is a generative model"),
    (["--task", "anomaly", "--model-name", "cnn1d_3"], "cnn1d_3 is a classifier"),
    (["--task", "anomaly", "--model-name", "beatgan", "--class-balance", "equal"],
     "--class-balance is a classification flag"),
    (["--task", "anomaly", "--model-name", "vae1d", "--dataset", "ptbxl"], "not the records of ptbxl"),
    (["--model-name", "cnn1d_3", "--normal-classes", "N"], "--normal-classes is for --task anomaly"),
    (["--task", "anomaly", "--model-name", "vae1d", "--generate", "10"], "--generate draws from a trained run"),
    (["--config", "/nonexistent/config.json"], "--config /nonexistent/config.json: cannot read it"),
])
def test_task_flag_errors_are_one_line(flags: list[str], message: str, tmp_path: Path) -> None:
    assert message in one_line_error(run_cli(*flags, "--root-dir", str(tmp_path)))


def test_unknown_normal_class_and_sampling_an_autoencoder_are_one_line(root: Path) -> None:
    proc = run_cli(*SHORT, "--root-dir", str(root), "--model-name", "ae1d", "--normal-classes", "X")
    assert "--normal-classes X: not a class of this dataset; its classes are N, S, V, F, Q" in one_line_error(proc)
    assert cli(root, "--model-name", "ae1d", "--epochs", "1") == 0
    proc = run_cli(*SHORT, "--root-dir", str(root), "--model-name", "ae1d", "--resume", "best", "--generate", "8")
    assert "ae1d has no prior to sample from" in one_line_error(proc)
    assert not (only_run(root) / "generated").exists()


def test_ptb_csv_layout_trains_on_its_normal_rows_only(tmp_path: Path, beats: dict) -> None:
    """The PTB database is not among the test data: real MIT-BIH beats written in its Kaggle CSV layout
    (ptbdb_normal.csv, ptbdb_abnormal.csv) exercise the ptb path of the anomaly task."""
    write_ptb_csvs(tmp_path / "data" / "ptbdb", beats, 1500, 1500)
    root = tmp_path / "root"
    env = {"ECG_DATA_ROOT": str(tmp_path / "data")}
    proc = run_cli("--dataset", "ptb", "--task", "anomaly", "--model-name", "ae1d", "--epochs", "1", "--short-run",
                   "--root-dir", str(root), env=env)
    assert proc.returncode == 0, proc.stderr
    run = only_run(root, "ptb")
    splits = json.loads((run / "splits.json").read_text())
    assert splits["counts"]["train"] == {"normal": len(splits["rows"]["train"]), "abnormal": 0}
    assert max(splits["rows"]["train"]) < 1500  # the rows of ptbdb_normal.csv come first
    assert splits["anomaly"]["normal_classes"] == ["normal"]
    proc = run_cli("--dataset", "ptb", "--task", "anomaly", "--model-name", "ae1d", "--short-run", "--test",
                   "--root-dir", str(root), env=env)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(run / "pred" / "test_best_short_scores.csv")
    assert {"row", "class", "score"} <= set(table.columns) and set(table["class"]) == {"normal", "abnormal"}
