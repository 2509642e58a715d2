"""torchrun with 2 CPU processes (gloo) on real records: one run folder, validation over every example once, exact
resume after a kill, and a refused change of the number of processes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import trainer
from args import parse_args
from commander import build_data
from loaders import get_loader
from loaders.dataset import make_dataloader
from models import from_checkpoint
from tests.conftest import REPO, one_line_error, run_cli
from toolbox import checkpoint
from toolbox.losses import get_criterion
from toolbox.metrics import MultiLabelTask

FLAGS = {"ecg": ["--dataset", "ecg", "--model-name", "cnn1d_3", "--batch-size", "64"],
         "cinc2020": ["--dataset", "cinc2020", "--model-name", "cnn1d_3", "--batch-size", "16"]}
EPOCHS = 3


def torchrun(*args: str) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node 2 commander.py ARGS``."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(REPO / "commander.py"), *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def kill_all(pid: int) -> None:
    """SIGKILL a process and every process below it (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def new_root(tmp_path: Path, name: str, cache_root: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(cache_root / "cache", root / "cache")  # the MIT-BIH beats, extracted once per session
    return root


def the_run(root: Path, dataset: str) -> Path:
    runs = sorted((root / dataset / "runs").iterdir())
    assert len(runs) == 1, runs  # one run folder, written by rank 0 alone
    return runs[0]


def single_process_validation(flags: list[str], run: Path, root: Path, dataset: str) -> tuple[dict, np.ndarray]:
    """The saved last checkpoint scored on the validation split by this one process, as the run did (10 batches)."""
    args = parse_args([*flags, "--root-dir", str(root)])
    data, _ = build_data(args, get_loader(dataset), run)
    state = checkpoint.load(run / checkpoint.LAST)
    model = from_checkpoint(state)
    checkpoint.load_weights(state, run / checkpoint.LAST, model)
    task = MultiLabelTask(args.threshold_metric, data.challenge_weights, data.normal_index) if data.multilabel else None
    criterion = get_criterion(args.criterion, None, 0.0)
    metrics, probs, _ = trainer.validate(model, make_dataloader(data.val, args.batch_size), criterion,
                                         torch.device("cpu"), data.classes, max_batches=10, task=task, progress=False)
    return metrics, probs


@pytest.mark.parametrize("dataset", ["ecg", "cinc2020"])
def test_two_processes_train_one_run_score_every_example_once_and_resume_exactly(dataset: str, tmp_path: Path,
                                                                                 cache_root: Path) -> None:
    flags = [*FLAGS[dataset], "--short-run", "--epochs", str(EPOCHS)]
    straight = new_root(tmp_path, "straight", cache_root)
    proc = finish(torchrun(*flags, "--root-dir", str(straight)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(f"epoch   {EPOCHS}/{EPOCHS}") == 1 and "2 processes" in proc.stdout  # rank 0 prints
    run = the_run(straight, dataset)
    for name in ("config.json", "logger.json", "splits.json", "checkpoint.pth.tar", "model_best.pth.tar",
                 f"res/val_epoch{EPOCHS:03d}.csv"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert [i["world_size"] for i in config["invocations"]] == [2]
    state = checkpoint.load(run / checkpoint.LAST)
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])  # each rank's own

    # the validation scores the two processes logged are those of one process scoring the saved checkpoint
    metrics, probs = single_process_validation(flags, run, straight, dataset)
    logged = json.loads((run / "logger.json").read_text())["val"][-1]
    for key in ("accuracy", "macro_f1", *(("challenge", "macro_auroc") if dataset == "cinc2020" else ())):
        assert logged[key] == pytest.approx(metrics[key], abs=1e-9), key
    assert logged["loss"] == pytest.approx(metrics["loss"], rel=1e-6)
    res = pd.read_csv(run / "res" / f"val_epoch{EPOCHS:03d}.csv")
    assert len(res) == len(probs)  # every example of the 10 batches once
    np.testing.assert_allclose(res[[c for c in res.columns if c.startswith("p_")]].to_numpy(), probs, atol=1e-5)

    # killed after a checkpoint, then resumed by torchrun: the same weights as the uninterrupted run
    killed = new_root(tmp_path, "killed", cache_root)
    proc = torchrun(*flags, "--root-dir", str(killed))
    last = killed / dataset / "runs" / run.name / checkpoint.LAST
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and checkpoint.load(last)["epoch"] >= 1:
            kill_all(proc.pid)
            break
        time.sleep(0.02)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and checkpoint.load(last)["epoch"] < EPOCHS
    alone = run_cli(*flags, "--root-dir", str(killed), "--resume", "latest")
    assert "was trained by 2 processes, this is 1" in one_line_error(alone)
    proc = finish(torchrun(*flags, "--root-dir", str(killed), "--resume", "latest"))
    assert proc.returncode == 0, proc.stderr
    resumed = checkpoint.load(last)
    assert resumed["epoch"] == EPOCHS
    for k, v in state["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    logs = [json.loads((root / dataset / "runs" / run.name / "logger.json").read_text()) for root in (straight, killed)]
    assert [[{k: v for k, v in r.items() if k != "seconds"} for r in log["val"]] for log in logs][0] == \
        [[{k: v for k, v in r.items() if k != "seconds"} for r in log["val"]] for log in logs][1]
