"""Crash safety, exact resume, safe checkpoints and one-line errors, through commander.py on real records."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

import commander
from args import parse_args, run_name
from tests.conftest import REPO, closed_port, link_mitdb, one_line_error, run_cli, start_cli
from toolbox import checkpoint
from toolbox.checkpoint import LAST

MODEL = ["--dataset", "ecg", "--model-name", "cnn1d_3", "--short-run"]
RUN = run_name(parse_args(MODEL))


def start(root: Path, *flags: str, env: dict | None = None) -> subprocess.Popen:
    return start_cli(*MODEL, "--root-dir", str(root), *flags, env=env)


def run(root: Path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(*MODEL, "--root-dir", str(root), *flags, env=env)


def fresh_root(tmp_path: Path, cache_root: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(cache_root / "cache", root / "cache")
    return root


def final_state(root: Path) -> tuple[dict, list]:
    run = root / "ecg" / "runs" / f"{RUN}_1"
    state = torch.load(run / "checkpoint.pth.tar", weights_only=True)
    log = json.loads((run / "logger.json").read_text())
    metrics = [{k: v for k, v in r.items() if k != "seconds"} for split in ("train", "val") for r in log[split]]
    return state, metrics


def assert_same_run(root: Path, reference: Path) -> None:
    state, metrics = final_state(root)
    ref_state, ref_metrics = final_state(reference)
    assert state["epoch"] == ref_state["epoch"] == 6
    for k, v in ref_state["model"].items():
        assert torch.equal(v, state["model"][k]), k
    assert metrics == ref_metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, cache_root: Path) -> tuple[Path, float]:
    """An uninterrupted 6-epoch run, and how many seconds it took."""
    root = fresh_root(tmp_path_factory.mktemp("reference"), cache_root, "root")
    t0 = time.perf_counter()
    proc = run(root, "--epochs", "6")
    assert proc.returncode == 0, proc.stderr
    return root, time.perf_counter() - t0


def resume_or_restart(root: Path) -> None:
    """What a user does after a crash: resume when a checkpoint exists, else start the run again."""
    last = root / "ecg" / "runs" / f"{RUN}_1" / "checkpoint.pth.tar"
    if last.exists() and torch.load(last, weights_only=True)["epoch"] == 6:
        return  # killed after its last checkpoint: the run is complete
    flags = ["--resume", "latest"] if last.exists() else ["--version", "latest"]
    proc = run(root, "--epochs", "6", *flags)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_moment_then_resume_equals_uninterrupted(seed: int, tmp_path: Path, cache_root: Path,
                                                                   reference: tuple[Path, float]) -> None:
    root = fresh_root(tmp_path, cache_root, "root")
    last = root / "ecg" / "runs" / f"{RUN}_1" / "checkpoint.pth.tar"
    draw = random.Random(seed)
    target = draw.randint(1, 4)  # the kill comes during epoch target + 1, at a random moment of it
    proc = start(root, "--epochs", "6")
    deadline, seen, marks = time.time() + 120, None, []
    while len(marks) < target + 1 and time.time() < deadline:  # each epoch replaces checkpoint.pth.tar
        stamp = last.stat().st_ino if last.exists() else None
        if stamp is not None and stamp != seen:
            seen = stamp
            marks.append(time.perf_counter())
        time.sleep(0.002)
    epoch_s = (marks[-1] - marks[0]) / max(len(marks) - 1, 1)
    time.sleep(draw.uniform(0.0, 0.6) * epoch_s)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    assert 1 <= torch.load(last, weights_only=True)["epoch"] < 6  # so the run below really resumes
    resume_or_restart(root)
    assert_same_run(root, reference[0])
    assert not list((root / "ecg" / "runs").rglob(".*.tmp"))


class Killed(BaseException):
    """Stands for SIGKILL inside the process: nothing after it runs, no handler catches it."""


def test_a_kill_between_checkpoint_writes_never_leaves_a_stale_best(tmp_path: Path, cache_root: Path,
                                                                   reference: tuple[Path, float],
                                                                   monkeypatch) -> None:
    root = fresh_root(tmp_path, cache_root, "root")
    real = checkpoint.atomic_write

    def dies_before_best(path, write):  # epoch 1 is complete (checkpoint.pth.tar) when the process dies
        if path.name == "model_best.pth.tar":
            raise Killed
        real(path, write)

    monkeypatch.setattr(checkpoint, "atomic_write", dies_before_best)
    with pytest.raises(Killed):
        commander.main([*MODEL, "--root-dir", str(root), "--epochs", "6", "--scheduler", "StepLR"])
    run = root / "ecg" / "runs" / f"{run_name(parse_args([*MODEL, '--scheduler', 'StepLR']))}_1"
    last = torch.load(run / "checkpoint.pth.tar", weights_only=True)
    assert last["epoch"] == last["best_epoch"] == 1 and not (run / "model_best.pth.tar").exists()
    monkeypatch.setattr(checkpoint, "atomic_write", real)
    assert commander.main([*MODEL, "--root-dir", str(root), "--epochs", "6", "--scheduler", "StepLR",
                           "--resume", "latest"]) == 0
    final = torch.load(run / "checkpoint.pth.tar", weights_only=True)
    best = torch.load(run / "model_best.pth.tar", weights_only=True)
    assert best["epoch"] == final["best_epoch"] and best["best_score"] == final["best_score"]


SCHEDULES = {  # each changes the learning rate within a 4-epoch run
    "ReduceLROnPlateau": ["--scheduler", "ReduceLROnPlateau", "--step", "1", "--lr-decay", "0.5"],
    "CosineAnnealingLR": ["--scheduler", "CosineAnnealingLR"],
    "StepLR": ["--scheduler", "StepLR", "--step", "1"],
    "OneCycleLR": ["--scheduler", "OneCycleLR"],
}


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_resume_is_bit_identical_for_every_schedule_and_worker_count(schedule: str, workers: str, tmp_path: Path,
                                                                     cache_root: Path) -> None:
    flags = [*MODEL, *SCHEDULES[schedule], "-j", workers]
    for root in ("straight", "resumed"):
        shutil.copytree(cache_root / "cache", tmp_path / root / "cache")
    epochs = ["--epochs", "4"]
    assert commander.main([*flags, "--root-dir", str(tmp_path / "straight"), *epochs]) == 0
    if schedule in ("OneCycleLR", "CosineAnnealingLR"):  # shaped by --epochs: stop it by interrupting epoch 2
        stop_after_first_epoch(tmp_path / "resumed", flags, epochs)
    else:
        assert commander.main([*flags, "--root-dir", str(tmp_path / "resumed"), "--epochs", "1"]) == 0
    assert commander.main([*flags, "--root-dir", str(tmp_path / "resumed"), *epochs, "--resume", "latest"]) == 0
    name = run_name(parse_args(flags))
    straight, resumed = (torch.load(tmp_path / root / "ecg" / "runs" / f"{name}_1" / LAST, weights_only=True)
                         for root in ("straight", "resumed"))
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    log = json.loads((tmp_path / "straight" / "ecg" / "runs" / f"{name}_1" / "logger.json").read_text())
    rates = {round(r["lr"], 12) for r in log["train"]} | {round(straight["optimizer"]["param_groups"][0]["lr"], 12)}
    assert len(rates) > 1  # the rate changed within the run
    if workers == "2":  # and the worker count changes nothing: the -j 0 run learns the same weights
        zero = [*MODEL, *SCHEDULES[schedule], "-j", "0"]
        assert commander.main([*zero, "--root-dir", str(tmp_path / "zero"), *epochs]) == 0
        plain = torch.load(tmp_path / "zero" / "ecg" / "runs" / f"{name}_1" / "checkpoint.pth.tar", weights_only=True)
        assert all(torch.equal(v, plain["model"][k]) for k, v in straight["model"].items())


def stop_after_first_epoch(root: Path, flags: list[str], epochs: list[str]) -> None:
    """Run ``flags`` under ``root`` and interrupt it (as Ctrl-C would) once epoch 1 is checkpointed."""
    real = checkpoint.save

    def save_then_stop(state, run_dir, *, is_best):
        real(state, run_dir, is_best=is_best)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    checkpoint.save = save_then_stop
    try:
        assert commander.main([*flags, "--root-dir", str(root), *epochs]) == 130
    finally:
        checkpoint.save = real


def test_sigkill_during_epoch_4_then_resume_equals_uninterrupted(tmp_path: Path, cache_root: Path,
                                                                 reference: tuple[Path, float]) -> None:
    root = fresh_root(tmp_path, cache_root, "root")
    last = root / "ecg" / "runs" / f"{RUN}_1" / "checkpoint.pth.tar"
    proc = start(root, "--epochs", "6")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=True)["epoch"] == 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(last, weights_only=True)["epoch"] == 3
    resume_or_restart(root)
    assert_same_run(root, reference[0])


def test_sigint_keeps_the_last_epoch_and_says_how_to_resume(tmp_path: Path, cache_root: Path) -> None:
    root = fresh_root(tmp_path, cache_root, "root")
    last = root / "ecg" / "runs" / f"{RUN}_1" / "checkpoint.pth.tar"
    proc = start(root, "--epochs", "50")
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert "interrupted" in err and "--resume latest --version 1" in err and "--epochs 50" in err
    state = torch.load(last, weights_only=True)
    log = json.loads(last.with_name("logger.json").read_text())
    assert state["epoch"] in [r["epoch"] for r in log["val"]]
    resumed = run(root, "--epochs", str(state["epoch"] + 1), "--scheduler", "OneCycleLR", "--resume", "latest")
    assert resumed.returncode == 2 and "shaped for --epochs 50" in resumed.stderr  # OneCycle needs the same epochs


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path: Path, cache_root: Path, monkeypatch,
                                                              capsys) -> None:
    root = fresh_root(tmp_path, cache_root, "root")
    real_save = torch.save

    def save(state, f, *args, **kwargs):
        if isinstance(state, dict) and state.get("epoch") == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(state, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    assert commander.main([*MODEL, "--root-dir", str(root), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "the previous one is intact" in err
    run = root / "ecg" / "runs" / f"{RUN}_1"
    assert torch.load(run / "checkpoint.pth.tar", weights_only=True)["epoch"] == 1
    assert not list(run.rglob(".*.tmp"))


def test_non_finite_loss_stops_and_keeps_checkpoints(tmp_path: Path, cache_root: Path, monkeypatch, capsys) -> None:
    root = fresh_root(tmp_path, cache_root, "root")
    assert commander.main([*MODEL, "--root-dir", str(root), "--epochs", "2", "--scheduler", "StepLR"]) == 0
    run = root / "ecg" / "runs" / f"{run_name(parse_args([*MODEL, '--scheduler', 'StepLR']))}_1"
    before = snapshot(run)
    spec = commander.get_loader("ecg")

    def poisoned(*args, **kwargs):
        data = spec.build(*args, **kwargs)
        data.train.x[:] = float("nan")  # as if the inputs or the weights had blown up
        return data

    monkeypatch.setattr(commander, "get_loader", lambda name: dataclasses.replace(spec, build=poisoned))
    code = commander.main([*MODEL, "--root-dir", str(root), "--epochs", "3", "--scheduler", "StepLR",
                           "--resume", "latest"])
    assert code == 2
    assert "loss became nan at epoch 3, batch 1" in capsys.readouterr().err
    after = snapshot(run)
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        assert after[name] == before[name]


def damaged_data(tmp: Path, data_root: Path, name: str | None, damage=None, keep: int = 48) -> Path:
    """A data root whose mitdb/ links to the real files, with ``name`` damaged and only ``keep`` records."""
    records = (data_root / "mitdb" / "RECORDS").read_text().split()[:keep]
    target = link_mitdb(tmp / "data", data_root, records) if keep else (tmp / "data" / "mitdb")
    target.mkdir(parents=True, exist_ok=True)
    if name:
        (target / name).unlink()
        (target / name).write_bytes(damage((data_root / "mitdb" / name).read_bytes()))
    return tmp / "data"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, cache_root: Path) -> Path:
    """A root holding a finished 2-epoch run and a checkpoint of another architecture."""
    root = fresh_root(tmp_path_factory.mktemp("finished"), cache_root, "root")
    proc = run(root, "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    from models import get_model

    other = {"epoch": 1, "model_name": "resnet1d_10", "in_channels": 1, "num_classes": 5,
             "model": get_model("resnet1d_10", 1, 5).state_dict()}
    torch.save(other, root / "resnet.pth.tar")
    return root


BAD_INPUTS = {
    "unknown dataset": (["--dataset", "mnist"], "invalid choice: 'mnist'"),
    "unknown model": (["--model-name", "vgg16"], "invalid choice: 'vgg16'"),
    "unknown optimizer": (["--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
    "unknown scheduler": (["--scheduler", "cyclic"], "invalid choice: 'cyclic'"),
    "unknown criterion": (["--criterion", "hinge"], "invalid choice: 'hinge'"),
    "unknown sampler": (["--sampler", "smote"], "invalid choice: 'smote'"),
    "sampler with class balance": (["--sampler", "equal", "--class-balance", "equal"], "use one of them"),
    "zero batch size": (["--batch-size", "0"], "--batch-size: must be positive"),
    "zero epochs": (["--epochs", "0"], "--epochs: must be positive"),
    "negative learning rate": (["--lr", "-0.1"], "--lr: must be positive"),
    "resume without a run": (["--resume", "latest", "--lr", "0.5"], "no run named"),
    "test without a run": (["--test", "--lr", "0.5"], "no run named"),
    "version that does not exist": (["--test", "--version", "7"], "existing versions: 1"),
    "new training into a finished run": (["--version", "latest"], "already holds a trained run"),
    "resume a finished run without more epochs": (["--resume", "latest", "--epochs", "2"], "already trained 2 epochs"),
    "epoch checkpoint that was not kept": (["--test", "--resume", "5"], "checkpoint_epoch5.pth.tar"),
    "num classes disagreeing": (["--num-classes", "3"], "--num-classes 3 disagrees"),
    "checkpoint of another architecture": (["--pretrained", "{root}/resnet.pth.tar"],
                                           "holds a resnet1d_10 encoder"),
    "pretrained file missing": (["--pretrained", "{root}/nothing.pth.tar"], "nothing.pth.tar: no such file"),
    "pretrained file damaged": (["--pretrained", f"{{root}}/ecg/runs/{RUN}_1/logger.json"],
                                "logger.json is not a readable checkpoint"),
    "start epoch on resume": (["--resume", "latest", "--start-epoch", "0", "--epochs", "4"],
                              "--start-epoch 0 disagrees with checkpoint.pth.tar, which has trained 2 epochs"),
    "root dir not writable": (["--root-dir", "{root}/resnet.pth.tar/sub"], "cannot be written"),
    "missing data folder": (["--version", "bump"], "cannot download the MIT-BIH"),
    "partial data folder": (["--version", "bump"], "cannot download the MIT-BIH"),
    "corrupt .hea": (["--version", "bump"], "100.hea is not a valid WFDB header"),
    "truncated .dat": (["--version", "bump"], "100.dat holds 1000 bytes"),
    "wrong sample count in .hea": (["--version", "bump"], "100.hea announces 700000 samples"),
    "garbage .atr": (["--version", "bump"], "100.atr is truncated or not a WFDB annotation file"),
    "truncated checkpoint": (["--test", "--resume", "latest"], "checkpoint.pth.tar is not a readable checkpoint"),
    "garbage checkpoint": (["--resume", "latest", "--epochs", "3"], "checkpoint.pth.tar is not a readable checkpoint"),
}
DATA_DAMAGE = {
    "missing data folder": (None, None, 0),
    "partial data folder": (None, None, 30),
    "corrupt .hea": ("100.hea", lambda b: b"\x00 this is not a header\n", 48),
    "truncated .dat": ("100.dat", lambda b: b[:1000], 48),
    "wrong sample count in .hea": ("100.hea", lambda b: b.replace(b"650000", b"700000"), 48),
    "garbage .atr": ("100.atr", lambda b: os.urandom(3000), 48),
}
CHECKPOINT_DAMAGE = {
    "truncated checkpoint": lambda b: b[: len(b) // 2],
    "garbage checkpoint": lambda b: b"PK\x03\x04" + os.urandom(4000),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case: str, tmp_path: Path, finished: Path,
                                                          data_root: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(finished, root)
    run_dir = root / "ecg" / "runs" / f"{RUN}_1"
    env = {}
    if case in DATA_DAMAGE:
        name, damage, keep = DATA_DAMAGE[case]
        shutil.rmtree(root / "cache")  # the raw records must be read again
        env = {"ECG_DATA_ROOT": str(damaged_data(tmp_path, data_root, name, damage, keep))}
    if case in CHECKPOINT_DAMAGE:
        last = run_dir / "checkpoint.pth.tar"
        last.write_bytes(CHECKPOINT_DAMAGE[case](last.read_bytes()))
    flags, message = BAD_INPUTS[case]
    flags = [f.format(root=root) for f in flags]
    before = snapshot(root)
    proc = run(root, *flags, "--data-url", f"http://127.0.0.1:{closed_port()}/mitdb/", env=env)
    assert message in one_line_error(proc)
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not (root / "ecg" / "runs" / f"{RUN}_2").exists()


def test_no_torch_load_without_weights_only() -> None:
    offenders = []
    for path in REPO.rglob("*.py"):
        if ".venv" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(REPO)}:{number}")
    assert offenders == []
