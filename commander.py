"""pytorch-ecg commander: train, resume and test ECG classifiers. Run ``python commander.py --help``.

The same script runs under ``torchrun --nproc_per_node N commander.py ...`` (DistributedDataParallel: gloo on
CPUs, NCCL on GPUs): every process trains on its share of each batch, scores are computed over all processes'
examples, and rank 0 alone writes the run folder and prints.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # --help and flag errors answer before the heavy imports below
    from args import parse_args as _check_flags

    _check_flags()

import argparse
import contextlib
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import trainer
from args import (
    EPOCH_SHAPED,
    check_num_classes,
    claim_run,
    naming_flags,
    parse_args,
    reconcile,
    run_name,
    select_run,
)
from loaders import DatasetSpec, get_loader, raw_dir
from loaders.cinc2020 import write_outputs
from loaders.dataset import (
    DataSplits,
    PooledDataset,
    check_standardization,
    label_subset,
    make_dataloader,
    split_records,
    with_record_options,
)
from loaders.preprocess import Preprocess
from models import constructor_args, get_model
from tasks import anomaly as anomaly_task
from tasks import pretrain as pretrain_task
from toolbox import checkpoint, distributed, explain, transfer
from toolbox.augment import Augmenter
from toolbox.distributed import ALONE, Processes
from toolbox.logger import RunLogger, save_multilabel_predictions, save_predictions
from toolbox.losses import class_weights, get_criterion, positive_weights
from toolbox.metrics import (
    BOOTSTRAP_SEED,
    CI_LEVEL,
    MultiLabelTask,
    bootstrap_classification,
    bootstrap_multilabel,
    headline,
    multilabel_table,
    per_class_table,
)
from toolbox.optimizers import PER_BATCH, get_optimizer, get_scheduler, set_hyperparameters, step_epoch
from toolbox.plotter import confusion_matrix_png, multilabel_confusion_png
from toolbox.samplers import get_sampler
from toolbox.utils import (
    ECGError,
    atomic_write,
    ensure_writable,
    environment_info,
    read_json,
    remove_temporaries,
    setup_env,
    write_json,
)

SHORT_RUN_BATCHES = 10
# validation scores kept in logger.json (those a split's metrics hold), and how the selection score is printed
VAL_LOGGED = ("loss", "accuracy", "balanced_accuracy", "macro_f1", "macro_auroc", "macro_auprc", "fmax", "challenge",
              "f_beta", "g_beta", "thresholds", "seconds")
SHORT_NAMES = {"macro_f1": "macro-F1", "macro_auroc": "macro AUROC", "challenge": "Challenge metric"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2; Ctrl-C exits with 130."""
    args = parse_args(argv)
    procs = distributed.launched()
    quiet = contextlib.redirect_stdout(open(os.devnull, "w")) if not procs.main else contextlib.nullcontext()
    try:
        with quiet:  # under torchrun only rank 0 prints
            return run(args, procs)[0]
    except ECGError as exc:
        print(f"commander.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("commander.py: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.stop()


def run(args: argparse.Namespace, procs: Processes = ALONE) -> tuple[int, Path]:
    """Train, resume or test as ``args`` say: (exit code, the run folder it used). User errors raise ECGError.

    ``procs``: this process's place under torchrun (alone by default).
    """
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    spec = get_loader(args.pool[0])
    runs_dir = args.root_dir / args.dataset.replace(",", "+") / "runs"
    run_dir = select_run(runs_dir, run_name(args), args.version, existing=args.resume is not None, args=args)
    if procs.main:
        ensure_writable(args.root_dir, "--root-dir")
    state, path = open_checkpoint(run_dir, args, procs) if args.resume else (None, None)
    pretrained = checkpoint.load(args.pretrained) if args.pretrained is not None and state is None else None
    device = setup_env(args.seed + procs.rank, args.disable_cuda, procs.local_rank)
    distributed.start(procs, device.type == "cuda")

    if args.task == "pretrain":
        return pretrain_run(args, runs_dir, run_dir, state, path, device, procs)
    if procs.local_rank:  # one process per machine builds the caches; the others then read them
        distributed.barrier()
    data, raw = build_data(args, spec, run_dir)
    if not procs.local_rank and procs.several:
        distributed.barrier()
    check_num_classes(args, data.classes)
    if args.task == "anomaly":
        return anomaly_run(args, spec, runs_dir, run_dir, state, path, data, raw, device, procs)
    if state is not None:
        check_standardization(state.get("preprocess") or {}, data.preprocess, path)
    if args.verbose or not args.test:
        print(f"{args.dataset} ({data.manifest['database']}, {data.manifest['protocol']} split): "
              f"examples per class and split\n{data.counts_table()}")

    if args.label_fraction is not None:
        data = label_subset(data, args.label_fraction, args.seed)
    shape = constructor_args(args.model_name, data.in_channels, len(data.classes), data.feature_channels)
    model = get_model(args.model_name, data.in_channels, len(data.classes), data.feature_channels).to(device)
    if state is not None:
        checkpoint.check_compatible(state, path, **shape)
        checkpoint.load_weights(state, path, model)
    elif pretrained is not None:
        load_pretrained(pretrained, args.pretrained, shape, model, procs)
    weight = None
    if args.class_balance and data.multilabel:
        weight = positive_weights(data.train.class_counts(), len(data.train.labels), args.class_balance)
    elif args.class_balance:
        weight = class_weights(data.train.class_counts(), args.class_balance)
    criterion = get_criterion(args.criterion, weight, args.label_smoothing).to(device)
    task = MultiLabelTask(args.threshold_metric, data.challenge_weights, data.normal_index) if data.multilabel else None
    if args.test:
        return test_run(args, run_dir, path, state, model, criterion, data, device, task, procs), run_dir
    return train_run(args, runs_dir, run_dir, state, path, shape, model, criterion, data, device, raw, task, procs)


def load_pretrained(state: dict[str, Any], where: Path, shape: dict[str, Any], model: torch.nn.Module,
                    procs: Processes = ALONE) -> None:
    """--pretrained: every weight of a checkpoint of this very model (same classes), else the encoder of a
    pretraining run or of another classifier (toolbox.transfer), saying what was loaded and what is new."""
    if state.get("task", "classify") != "pretrain" and checkpoint.compatible(state, **shape):
        checkpoint.load_weights(state, where, model)
        if procs.main:
            print(f"loaded every weight of {where} (epoch {state['epoch']})")
        return
    report = transfer.load_encoder(model, shape["model_name"], state, str(where))
    if procs.main:
        print(report.summary())


def launcher(procs: Processes) -> str:
    """How this run was started, for printed hints."""
    return f"torchrun --nproc_per_node {procs.world} commander.py" if procs.several else "python commander.py"


def open_checkpoint(run_dir: Path, args: argparse.Namespace,
                    procs: Processes = ALONE) -> tuple[dict[str, Any], Path]:
    """The checkpoint --resume or --test names, with ``args`` reconciled with the flags it was trained with."""
    path = checkpoint.resolve(run_dir, args.resume)
    state = checkpoint.load(path)
    reconcile(args, state.get("args") or {}, state.get("overrides") or {}, f"{run_dir.name}/{path.name}")
    if args.test or args.generate is not None:  # reads the checkpoint, trains nothing
        return state, path
    args.amp = args.override.get("amp", args.amp)
    if args.start_epoch is not None and args.start_epoch != state["epoch"]:
        raise ECGError(f"--start-epoch {args.start_epoch} disagrees with {path.name}, which has trained "
                       f"{state['epoch']} epochs; drop --start-epoch (a resumed run continues after its checkpoint)")
    trained_for = (state.get("args") or {}).get("epochs")
    if args.scheduler in EPOCH_SHAPED and trained_for is not None and trained_for != args.epochs:
        raise ECGError(f"{args.scheduler} was shaped for --epochs {trained_for} when this run started; "
                       f"resume with --epochs {trained_for}")
    if state["epoch"] >= args.epochs:
        raise ECGError(f"{run_dir.name} has already trained {state['epoch']} epochs; pass --epochs above "
                       f"{state['epoch']} to continue it, or --test to evaluate it")
    checkpoint.check_world(state, path, procs.world, args.allow_world_size_change)
    if procs.main:
        checkpoint.repair(run_dir)  # copies of the last epoch that a kill left out, before the run goes on
    return state, path


def build_data(args: argparse.Namespace, spec: DatasetSpec, run_dir: Path | None,
               manifest: dict[str, Any] | None = None) -> tuple[DataSplits, Path]:
    """The dataset's splits (those of the run's splits.json when it has one, or of ``manifest``) and the raw
    folder they come from."""
    splits_file = run_dir / "splits.json" if run_dir is not None else None
    if splits_file is not None and splits_file.is_file():
        manifest = read_json(splits_file)
    raw = raw_dir(spec.db, args.root_dir)
    extra: dict[str, Any] = {"fs": args.fs, "seq_len": args.seq_len} if spec.multilabel else {}
    if spec.lead_sets:
        extra["leads"] = args.leads
    if spec.label_sets:
        extra["labels"] = args.labels
    if spec.db == "mitdb":  # the beat options (the parser refuses them for the other datasets)
        extra = {"rr_features": args.rr_features, "beat_format": args.beat_format, "median_beat": args.median_beat,
                 "folds": args.folds, "fold": args.fold}
    if spec.multilabel or spec.db == "mitdb":  # the parser refuses --preprocess for the Kaggle CSV beats (ptb)
        extra["preprocess"] = Preprocess(tuple(args.preprocess), tuple(args.bandpass))
    data = spec.build(raw, args.root_dir / "cache", split_seed=args.split_seed, protocol=args.split,
                      saved_manifest=manifest, data_url=args.data_url, **extra)
    if spec.multilabel:  # record datasets: how windows make a record's score, and the training-split standardisation
        data = with_record_options(data, args.aggregate, args.standardize)
    return data, raw


def flags(args: argparse.Namespace) -> dict[str, Any]:
    """``args`` as JSON-friendly values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def record_invocation(run_dir: Path, args: argparse.Namespace, action: str, first: dict[str, Any] | None = None,
                      **details: Any) -> None:
    """Append this invocation (time, command, the flags given, overrides, code version, ``details``) to the run's
    config.json; ``first`` (the run's flags, dataset and model) creates the file when it does not exist yet."""
    env = environment_info()
    invocation = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": action, "command": sys.argv,
                  "given": {k: flags(args)[k] for k in args.given}, "overrides": args.override,
                  "git_commit": env["git_commit"], "git_dirty": env["git_dirty"], **details}
    path = run_dir / "config.json"
    if path.is_file():
        config = read_json(path)
        config.setdefault("invocations", []).append(invocation)
    elif first is not None:
        config = {**first, **env, "invocations": [invocation]}
    else:  # a run folder made without config.json is left as it is
        return
    write_json(path, config)


def test_run(args: argparse.Namespace, run_dir: Path, path: Path, state: dict[str, Any], model: torch.nn.Module,
             criterion: torch.nn.Module, data: DataSplits, device: torch.device, task: MultiLabelTask | None,
             procs: Processes = ALONE) -> int:
    """Evaluate a saved checkpoint on the test split and write pred/ (``_short`` files for --short-run); under
    torchrun every process scores its share and rank 0 writes."""
    loader = make_dataloader(data.test, args.batch_size, workers=args.workers, pin_memory=device.type == "cuda",
                             rank=procs.rank, world=procs.world)
    max_batches = SHORT_RUN_BATCHES if args.short_run else None
    pred_dir, tag = run_dir / "pred", f"test_{args.resume}" + ("_short" if args.short_run else "")
    if args.explain:  # a method the model cannot give (Grad-CAM of a recurrent model) fails before the test
        explain.check_method(args.explain_method, model, data.test[0][0].to(device))
    if task is not None:
        return test_multilabel(args, run_dir, path, state, model, criterion, data, device, task, loader,
                               max_batches, tag, procs)
    metrics, probs, targets = trainer.test(model, loader, criterion, device, data.classes, amp=args.amp,
                                           max_batches=max_batches, progress=procs.main)
    if not procs.main:
        return 0
    groups = data.test.meta["record"][: len(targets)] if data.resample_records else None
    ci = (bootstrap_classification(targets, probs.argmax(axis=1), data.classes, groups, args.bootstrap)
          if args.bootstrap else None)
    save_predictions(pred_dir / f"{tag}_predictions.csv", probs, targets, data.classes, data.test.meta)
    write_json(pred_dir / f"{tag}_metrics.json", {"checkpoint": path.name, "epoch": state["epoch"],
                                                  "examples": len(targets), **metrics, "ci": ci,
                                                  "bootstrap": _bootstrap_note(args, groups is not None)})
    for normalize, suffix in ((False, ""), (True, "_normalized")):
        confusion_matrix_png(metrics["confusion_matrix"], data.classes, pred_dir / f"{tag}_confusion{suffix}.png",
                             normalize=normalize, title=f"{run_dir.name}\n{path.name}, epoch {state['epoch']}")
    print(f"test ({path.name}, epoch {state['epoch']}, {len(targets)} examples): "
          f"{headline(metrics, ('accuracy', 'balanced_accuracy', 'macro_f1', 'loss'), ci)}")
    _print_ci_note(args, "records" if groups is not None else "beats")
    print(per_class_table(metrics, ci))
    print(f"predictions, metrics and confusion matrices: {pred_dir}")
    if args.explain:
        write_explanations(args, pred_dir, tag, path, model, data, probs, targets, device)
    record_invocation(run_dir, args, "test", checkpoint=path.name, checkpoint_epoch=state["epoch"])
    return 0


def write_explanations(args: argparse.Namespace, pred_dir: Path, tag: str, path: Path, model: torch.nn.Module,
                       data: DataSplits, probs: np.ndarray, targets: np.ndarray, device: torch.device,
                       thresholds: list[float] | None = None) -> None:
    """--explain: saliency maps of chosen test examples in pred/explain/ (toolbox.explain)."""
    index = explain.explain_test(pred_dir / "explain", tag, model, data, args.dataset, probs, targets, device,
                                 n=args.explain, method=args.explain_method, checkpoint=path.name,
                                 thresholds=thresholds)
    print(f"saliency maps ({explain.TITLES[args.explain_method]}): {index.parent}, listed in {index.name}")


def _bootstrap_note(args: argparse.Namespace, records: bool) -> dict[str, Any] | None:
    if not args.bootstrap:
        return None
    return {"resamples": args.bootstrap, "unit": "record" if records else "example", "level": CI_LEVEL,
            "seed": BOOTSTRAP_SEED}


def _print_ci_note(args: argparse.Namespace, unit: str) -> None:
    if args.bootstrap:
        print(f"[lo, hi]: {CI_LEVEL:.0%} bootstrap interval, {args.bootstrap} resamples of the test {unit}")


def test_multilabel(args: argparse.Namespace, run_dir: Path, path: Path, state: dict[str, Any],
                    model: torch.nn.Module, criterion: torch.nn.Module, data: DataSplits, device: torch.device,
                    task: MultiLabelTask, loader: torch.utils.data.DataLoader, max_batches: int | None,
                    tag: str, procs: Processes = ALONE) -> int:
    """Test a multi-label checkpoint with its validation thresholds; pred/ also gets Challenge output files."""
    thresholds = state.get("thresholds")
    if not isinstance(thresholds, list) or len(thresholds) != len(data.classes):
        raise ECGError(f"{path} holds no decision thresholds for {len(data.classes)} classes; it was not trained "
                       f"on a multi-label dataset by this version of pytorch-ecg")
    metrics, probs, targets = trainer.test(model, loader, criterion, device, data.classes, amp=args.amp,
                                           max_batches=max_batches, task=task, thresholds=np.array(thresholds),
                                           progress=procs.main)
    if not procs.main:
        return 0
    ci = (bootstrap_multilabel(targets, probs, np.array(thresholds), data.classes, args.bootstrap,
                               weights=task.weights, normal_index=task.normal_index) if args.bootstrap else None)
    records = data.test.meta["record"][: len(targets)]
    pred_dir = run_dir / "pred"
    save_multilabel_predictions(pred_dir / f"{tag}_predictions.csv", probs, targets, data.classes, records,
                                thresholds)
    write_json(pred_dir / f"{tag}_metrics.json", {"checkpoint": path.name, "epoch": state["epoch"],
                                                  "records": len(targets), **metrics, "ci": ci,
                                                  "bootstrap": _bootstrap_note(args, True)})
    multilabel_confusion_png(metrics["multilabel_confusion"], pred_dir / f"{tag}_confusion.png",
                             title=f"{run_dir.name}\n{path.name}, epoch {state['epoch']}")
    challenge_dir = pred_dir / ("challenge" + ("_short" if args.short_run else ""))
    if data.challenge_weights is not None:
        write_outputs(challenge_dir, records, data.classes, probs, thresholds)
    keys = ("macro_auroc", "fmax", "macro_auprc", "accuracy", "macro_f1", "f_beta", "g_beta", "challenge", "loss")
    print(f"test ({path.name}, epoch {state['epoch']}, {len(targets)} records): "
          f"{headline(metrics, keys, ci).replace('accuracy', 'exact-match accuracy', 1)}")
    _print_ci_note(args, "records")
    print(multilabel_table(metrics, data.manifest.get("class_names"), ci))
    print(f"predictions, metrics and confusion counts: {pred_dir}"
          + (f"; Challenge output files: {challenge_dir}" if data.challenge_weights is not None else ""))
    if args.explain:
        write_explanations(args, pred_dir, tag, path, model, data, probs, targets, device, thresholds)
    record_invocation(run_dir, args, "test", checkpoint=path.name, checkpoint_epoch=state["epoch"])
    return 0


def train_run(args: argparse.Namespace, runs_dir: Path, run_dir: Path | None, state: dict[str, Any] | None,
              path: Path | None, shape: dict[str, Any], model: torch.nn.Module, criterion: torch.nn.Module,
              data: DataSplits, device: torch.device, raw: Path, task: MultiLabelTask | None,
              procs: Processes = ALONE) -> tuple[int, Path]:
    """Train (or continue training) until --epochs, validating and checkpointing every epoch.

    Under torchrun the model trains wrapped in DistributedDataParallel (gradients averaged over the processes'
    shares of each batch) and is evaluated unwrapped; rank 0 writes the run folder with every rank's random
    states in each checkpoint.
    """
    max_batches = SHORT_RUN_BATCHES if args.short_run else None
    generator = torch.Generator().manual_seed(args.seed)
    sampler = get_sampler(args.sampler, data.train.labels, generator)
    pin = device.type == "cuda"
    train_loader = make_dataloader(data.train, args.batch_size, shuffle=True, sampler=sampler, workers=args.workers,
                                   generator=generator, pin_memory=pin, rank=procs.rank, world=procs.world)
    val_loader = make_dataloader(data.val, args.batch_size, workers=args.workers, pin_memory=pin, rank=procs.rank,
                                 world=procs.world)
    optimizer = get_optimizer(args.optimizer, model, args.lr, args.momentum, args.weight_decay)
    steps = min(len(train_loader), max_batches or len(train_loader))
    scheduler = get_scheduler(args.scheduler, optimizer, epochs=args.epochs, steps_per_epoch=steps,
                              step=args.step, decay=args.lr_decay, lr=args.lr)
    net = model
    if procs.several:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None,
                                      gradient_as_bucket_view=True)

    start_epoch, best_score, best_epoch, overrides = args.start_epoch or 0, -math.inf, 0, dict(args.override)
    if state is not None:
        checkpoint.restore_training(state, path, optimizer, scheduler, generator, procs.rank)
        set_hyperparameters(optimizer, scheduler, args.override)
        overrides = {**(state.get("overrides") or {}), **args.override}
        start_epoch = state["epoch"]
        best_score, best_epoch = state.get("best_score", -math.inf), state.get("best_epoch", 0)

    if run_dir is None:  # a new version, claimed only now that the run can start (by rank 0, for every rank)
        run_dir = distributed.share(claim_run(runs_dir, run_name(args)) if procs.main else None)
    if procs.main:
        ensure_writable(run_dir, "the run folder")
        remove_temporaries(run_dir)
        record_invocation(run_dir, args, "resume" if state is not None else "train", world_size=procs.world, first={
            "run": run_dir.name, "command": sys.argv, "flags": flags(args),
            "dataset": {"classes": data.classes, "in_channels": data.in_channels, "raw_dir": str(raw.resolve())},
            "model": {**shape, "parameters": sum(p.numel() for p in model.parameters())}})
        if not (run_dir / "splits.json").exists():
            write_json(run_dir / "splits.json", data.manifest)

    logger = RunLogger(run_dir, args.tensorboard, start_epoch) if procs.main else None
    version = run_dir.name.rsplit("_", 1)[1]
    batch_scheduler = scheduler if args.scheduler in PER_BATCH else None
    augment = Augmenter(args.augment, data.signal_channels, len(data.classes)) if args.augment else None
    freezer = frozen_encoder(args, model, procs)
    parameters = sum(p.numel() for p in model.parameters())
    where = f"{device}" + (f", {procs.world} processes" if procs.several else "")
    print(f"run {run_dir}: {args.model_name} ({parameters:,} parameters) on {where}, "
          f"{len(data.train)} train / {len(data.val)} val examples, epochs {start_epoch + 1}-{args.epochs}")
    try:
        for epoch in range(start_epoch + 1, args.epochs + 1):
            if freezer is not None:
                set_frozen(freezer, args, epoch, epoch == start_epoch + 1 and procs.main)
            tr = trainer.train(net, train_loader, criterion, optimizer, device, epoch, data.classes,
                               batch_scheduler=batch_scheduler, amp=args.amp, max_batches=max_batches,
                               multilabel=data.multilabel, augment=augment, progress=procs.main)
            distributed.same_buffers(model)
            val, probs, targets = trainer.validate(model, val_loader, criterion, device, data.classes,
                                                   amp=args.amp, max_batches=max_batches, task=task,
                                                   progress=procs.main)
            score = val[data.selection] if math.isfinite(val[data.selection]) else -math.inf
            step_epoch(scheduler, score)
            is_best = score > best_score or best_epoch == 0
            if is_best:
                best_score, best_epoch = score, epoch
            rng = distributed.gather(checkpoint.rng_state(generator))  # every rank's, so resume is exact
            if procs.main:
                save_epoch(run_dir, logger, epoch, tr, val, probs, targets, data, task, is_best, {
                    "epoch": epoch, **shape, "classes": data.classes, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "best_score": best_score, "best_epoch": best_epoch, "selection": data.selection,
                    "val_macro_f1": val["macro_f1"], "thresholds": val.get("thresholds"),
                    "preprocess": data.preprocess, "args": flags(args), "overrides": overrides, "rng": rng[0],
                    "world_size": procs.world, **({"rng_ranks": rng} if procs.several else {})})
            extra = f" {SHORT_NAMES[data.selection]} {val[data.selection]:.4f}" if data.selection != "macro_f1" else ""
            print(f"epoch {epoch:>3}/{args.epochs}  train loss {tr['loss']:.4f} acc {tr['accuracy']:.4f} "
                  f"f1 {tr['macro_f1']:.4f} | val loss {val['loss']:.4f} acc {val['accuracy']:.4f} "
                  f"f1 {val['macro_f1']:.4f}{extra} | lr {tr['lr']:.2e} | {tr['seconds'] + val['seconds']:.1f} s"
                  f"{'  *best' if is_best else ''}", flush=True)
    except KeyboardInterrupt:
        again = ["--resume", "latest"] if (run_dir / checkpoint.LAST).exists() else []  # no epoch completed yet
        resume = naming_flags(args) + ["--epochs", str(args.epochs), *again, "--version", version]
        if procs.main:
            print(f"commander.py: interrupted; checkpoints of complete epochs are kept; continue with: "
                  f"{launcher(procs)} {' '.join(resume)}", file=sys.stderr)
        return 130, run_dir
    finally:
        if logger is not None:
            logger.close()
    hint = naming_flags(args) + ["--test", "--resume", "best", "--version", version]
    print(f"best validation {SHORT_NAMES[data.selection]} {best_score:.4f} at epoch {best_epoch}; evaluate it on "
          f"the test split with:\n"
          f"  python commander.py {' '.join(hint)}")
    return 0, run_dir


def frozen_encoder(args: argparse.Namespace, model: torch.nn.Module,
                   procs: Processes = ALONE) -> transfer.Freezer | None:
    """The encoder's freezer when --freeze-encoder, --freeze-epochs or --linear-probe asks for one."""
    if not (args.freeze_encoder or args.linear_probe or args.freeze_epochs):
        return None
    if procs.several:
        raise ECGError("--freeze-encoder, --freeze-epochs and --linear-probe run in one process; start the run "
                       "with python commander.py")
    return transfer.Freezer(model, eval_mode=args.linear_probe)


def set_frozen(freezer: transfer.Freezer, args: argparse.Namespace, epoch: int, say: bool) -> None:
    """Freeze the encoder for this epoch, or train it again once --freeze-epochs have passed (``say``: print the
    state, as on the first epoch of an invocation)."""
    if args.freeze_encoder or args.linear_probe or epoch <= args.freeze_epochs:
        count = freezer.freeze()
        if say:
            print(f"encoder frozen ({count:,} parameters" + (", in evaluation mode" if args.linear_probe else "")
                  + (f") until epoch {args.freeze_epochs}" if args.freeze_epochs else ") for every epoch"))
        return
    freezer.unfreeze()
    if say or epoch == args.freeze_epochs + 1:
        print(f"epoch {epoch}: the whole model trains (the encoder was frozen until epoch {args.freeze_epochs})")


def save_epoch(run_dir: Path, logger: RunLogger, epoch: int, tr: dict[str, Any], val: dict[str, Any],
               probs: np.ndarray, targets: np.ndarray, data: DataSplits, task: MultiLabelTask | None, is_best: bool,
               state: dict[str, Any]) -> None:
    """What an epoch leaves in the run folder: res/ predictions, logger.json, then the checkpoint, written last
    because it marks the epoch as complete."""
    res = run_dir / "res" / f"val_epoch{epoch:03d}.csv"
    if task is not None:
        save_multilabel_predictions(res, probs, targets, data.classes, data.val.meta["record"], val["thresholds"])
    else:
        save_predictions(res, probs, targets, data.classes, data.val.meta)
    logger.log_epoch(epoch, "train", tr)
    logger.log_epoch(epoch, "val", {**{k: val[k] for k in VAL_LOGGED if k in val},
                                    "f1_per_class": {c: m["f1"] for c, m in val["per_class"].items()}})
    checkpoint.save(state, run_dir, is_best=is_best)


# ---- --task anomaly: generative models of normal beats (tasks/anomaly.py) ----

def anomaly_run(args: argparse.Namespace, spec: DatasetSpec, runs_dir: Path, run_dir: Path | None,
                state: dict[str, Any] | None, path: Path | None, data: DataSplits, raw: Path, device: torch.device,
                procs: Processes = ALONE) -> tuple[int, Path]:
    """Train, resume, test or sample a generative run: training sees the normal beats only."""
    if procs.several:
        raise ECGError("--task anomaly runs in one process; start it with python commander.py")
    normal = anomaly_task.normal_indices(data.classes, args.normal_classes)
    data = anomaly_task.normal_only(data, args.normal_classes)
    length = int(data.train.x.shape[2])
    shape = constructor_args(args.model_name, data.in_channels, len(data.classes), 0, length)
    model = get_model(args.model_name, data.in_channels, len(data.classes), 0, length).to(device)
    if state is not None:
        checkpoint.check_compatible(state, path, **shape)
        checkpoint.load_weights(state, path, model)
    if args.generate is not None:
        return generate_run(args, spec, run_dir, path, state, model, data, normal, device), run_dir
    if args.test:
        return test_anomaly(args, run_dir, path, state, model, data, normal, device), run_dir
    return train_anomaly(args, runs_dir, run_dir, state, path, shape, model, data, normal, device, raw)


def test_anomaly(args: argparse.Namespace, run_dir: Path, path: Path, state: dict[str, Any], model: torch.nn.Module,
                 data: DataSplits, normal: list[int], device: torch.device) -> int:
    """Score the test split with the checkpoint's validation combination and threshold; write pred/."""
    from toolbox.anomaly import ScoreCombiner

    if state.get("combination") is None or state.get("threshold") is None:
        raise ECGError(f"{path} holds no score combination fitted on validation (its validation split had no "
                       f"abnormal beat, as in a --short-run); test a checkpoint of a full run")
    combiner = ScoreCombiner.from_dict(state["combination"])
    loader = make_dataloader(data.test, args.batch_size, workers=args.workers)
    max_batches = SHORT_RUN_BATCHES if args.short_run else None
    latent = state.get("latent")
    scores, labels = trainer.anomaly_scores(model, loader, device, desc="test", max_batches=max_batches,
                                            score=lambda x: anomaly_task.beat_scores(model, x, latent))
    tag = f"test_{args.resume}" + ("_short" if args.short_run else "")
    groups = data.test.meta["record"][: len(labels)] if data.resample_records else None
    metrics = anomaly_task.test_outputs(run_dir / "pred", tag, scores, labels, data, normal, combiner,
                                        float(state["threshold"]), args.bootstrap,
                                        f"{run_dir.name}\n{path.name}, epoch {state['epoch']}", groups)
    ci = metrics.get("ci") or {}
    shown = "  ".join(f"{k.upper() if k != 'f1' else 'F1'} "
                      + (f"{metrics[k]:.4f}" if metrics[k] is not None else "- (one kind of beat only)")
                      + (f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if ci.get(k) else "")
                      for k in ("auroc", "auprc", "f1", "mcc"))
    print(f"test ({path.name}, epoch {state['epoch']}, {len(labels)} beats, {metrics['abnormal_beats']} abnormal): "
          f"{shown} at the validation threshold {metrics['threshold']:.4g}")
    _print_ci_note(args, "records" if groups is not None else "beats")
    print(anomaly_task.metrics_table(metrics))
    print("each score alone: " + ", ".join(f"{k} AUROC {v['auroc']:.4f}" for k, v in metrics["per_score"].items()
                                             if v["auroc"] is not None))
    print(f"per-beat scores, metrics, ROC, PR and histograms: {run_dir / 'pred'}")
    record_invocation(run_dir, args, "test", checkpoint=path.name, checkpoint_epoch=state["epoch"])
    return 0


def generate_run(args: argparse.Namespace, spec: DatasetSpec, run_dir: Path, path: Path, state: dict[str, Any],
                 model: torch.nn.Module, data: DataSplits, normal: list[int], device: torch.device) -> int:
    """--generate N: samples of the run's prior into generated/, MMD^2 to real normal test beats, and TSTR."""
    from toolbox.anomaly import beat_grid_png, mmd2

    if not getattr(model, "can_sample", False):
        raise ECGError(f"{args.model_name} has no prior to sample from; --generate works with vae1d, vaegan and dcgan")
    full, _ = build_data(args, spec, None)  # the same split again, with the abnormal training beats TSTR needs
    if anomaly_task.split_lists(anomaly_task.normal_only(full, args.normal_classes).manifest) != \
            anomaly_task.split_lists(data.manifest):
        raise ECGError(f"the split rebuilt from --split-seed {args.split_seed} differs from {run_dir}/splits.json "
                       f"(records changed?); --generate needs the run's own split")
    synthetic = anomaly_task.generate(model, args.generate, args.seed, device)
    test_normal = data.test.x.numpy()[np.isin(data.test.labels.numpy(), normal)]
    train_normal = data.train.x.numpy()
    max_batches = SHORT_RUN_BATCHES if args.short_run else None
    print(f"drew {len(synthetic)} beats from {path.name} (epoch {state['epoch']}); training the TSTR classifiers "
          f"({anomaly_task.TSTR_MODEL}, {anomaly_task.TSTR_EPOCHS} epochs each)")
    report = {"checkpoint": path.name, "epoch": state["epoch"], "samples": len(synthetic), "seed": args.seed,
              "mmd2": {"synthetic_vs_test_normal": mmd2(synthetic, test_normal, seed=args.seed),
                       "train_normal_vs_test_normal": mmd2(train_normal, test_normal, seed=args.seed)},
              "tstr": anomaly_task.tstr(synthetic, full.train, data.test, normal, args.seed, device,
                                        max_batches=max_batches)}
    out = run_dir / "generated"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "samples.npz", lambda tmp: _write_npz(tmp, x=synthetic))
    write_json(out / "generation.json", report)
    fs = 360.0 if data.train.x.shape[2] == 320 else 125.0
    beat_grid_png(synthetic[:16], out / "samples.png", f"{run_dir.name}: {len(synthetic)} generated beats", fs)
    beat_grid_png(test_normal[:16], out / "real_normal_test_beats.png", "real normal test beats", fs)
    t = report["tstr"]
    print(f"MMD^2 to real normal test beats: generated {report['mmd2']['synthetic_vs_test_normal']:.5f}, real "
          f"training beats {report['mmd2']['train_normal_vs_test_normal']:.5f}\n"
          f"train on synthetic, test on real: macro-F1 {t['synthetic']['macro_f1']:.4f}; on real beats "
          f"{t['real']['macro_f1']:.4f} (gap {t['macro_f1_gap']:+.4f})\nsamples, grid and report: {out}")
    record_invocation(run_dir, args, "generate", checkpoint=path.name, samples=len(synthetic))
    return 0


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add .npz to the temporary file's name
        np.savez_compressed(f, **arrays)


def own_optimizers(args: argparse.Namespace, model: torch.nn.Module, train: Any, val: Any,
                   state: dict[str, Any] | None, path: Path | None) -> tuple[Any, Any, dict[str, Any],
                                                                         torch.Generator, int, float, int]:
    """The loaders and the model's own optimisers (generative and pretext models), restored from ``state`` on
    resume: (train loader, val loader, optimisers, generator, start epoch, best score, best epoch)."""
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = make_dataloader(train, args.batch_size, shuffle=True, workers=args.workers, generator=generator)
    val_loader = make_dataloader(val, args.batch_size, workers=args.workers)
    optimizers = model.make_optimizers(args.lr, args.weight_decay)
    if state is None:
        return train_loader, val_loader, optimizers, generator, 0, -math.inf, 0
    checkpoint.restore_optimizers(state, path, optimizers, generator)
    return (train_loader, val_loader, optimizers, generator, state["epoch"], state.get("best_score", -math.inf),
            state.get("best_epoch", 0))


def interrupted(args: argparse.Namespace, run_dir: Path, version: str) -> tuple[int, Path]:
    """Ctrl-C in a one-process run: say how to continue it; exit code 130."""
    again = ["--resume", "latest"] if (run_dir / checkpoint.LAST).exists() else []
    resume = naming_flags(args) + ["--epochs", str(args.epochs), *again, "--version", version]
    print(f"commander.py: interrupted; checkpoints of complete epochs are kept; continue with: "
          f"python commander.py {' '.join(resume)}", file=sys.stderr)
    return 130, run_dir


def open_run(runs_dir: Path, run_dir: Path | None, args: argparse.Namespace) -> Path:
    """The run folder (a new version claimed now when there is none), writable and without temporary files."""
    if run_dir is None:
        run_dir = claim_run(runs_dir, run_name(args))
    ensure_writable(run_dir, "the run folder")
    remove_temporaries(run_dir)
    return run_dir


def train_anomaly(args: argparse.Namespace, runs_dir: Path, run_dir: Path | None, state: dict[str, Any] | None,
                  path: Path | None, shape: dict[str, Any], model: torch.nn.Module, data: DataSplits,
                  normal: list[int], device: torch.device, raw: Path) -> tuple[int, Path]:
    """Train a generative model on normal beats; every epoch fit the score combination and threshold on
    validation and keep the epoch of the best cross-validated validation AUROC."""
    max_batches = SHORT_RUN_BATCHES if args.short_run else None
    train_loader, val_loader, optimizers, generator, start_epoch, best_score, best_epoch = own_optimizers(
        args, model, data.train, data.val, state, path)
    run_dir = open_run(runs_dir, run_dir, args)
    record_invocation(run_dir, args, "resume" if state is not None else "train", world_size=1, first={
        "run": run_dir.name, "command": sys.argv, "flags": flags(args),
        "dataset": {"classes": data.classes, "in_channels": data.in_channels, "raw_dir": str(raw.resolve()),
                    "normal_classes": [data.classes[k] for k in normal]},
        "model": {**shape, "parameters": sum(p.numel() for p in model.parameters())}})
    if not (run_dir / "splits.json").exists():
        write_json(run_dir / "splits.json", data.manifest)
    logger = RunLogger(run_dir, args.tensorboard, start_epoch)
    version = run_dir.name.rsplit("_", 1)[1]
    parameters = sum(p.numel() for p in model.parameters())
    print(f"run {run_dir}: {args.model_name} ({parameters:,} parameters) on {device}, {len(data.train)} normal "
          f"training beats ({', '.join(data.classes[k] for k in normal)}), {len(data.val)} validation beats, epochs "
          f"{start_epoch + 1}-{args.epochs}")
    try:
        for epoch in range(start_epoch + 1, args.epochs + 1):
            tr = trainer.train_generative(model, train_loader, optimizers, device, epoch, max_batches=max_batches)
            t0 = time.perf_counter()
            latent = anomaly_task.fit_latent(model, data.train, device)
            scores, labels = trainer.anomaly_scores(model, val_loader, device, desc="val", max_batches=max_batches,
                                                    score=lambda x, latent=latent: anomaly_task.beat_scores(model, x,
                                                                                                            latent))
            groups = data.val.meta["record"][: len(labels)] if data.resample_records else None
            val, combiner, threshold = anomaly_task.fit_validation(scores, labels, normal, seed=args.seed,
                                                                   groups=groups)
            val["seconds"] = time.perf_counter() - t0
            score = val["auroc"] if math.isfinite(val["auroc"]) else -math.inf
            is_best = score > best_score or best_epoch == 0
            if is_best:
                best_score, best_epoch = score, epoch
            if combiner is not None:
                table = anomaly_task.scores_table(scores, combiner.combine(scores), labels, data.classes, normal,
                                                  data.val.meta, threshold)
                atomic_write(run_dir / "res" / f"val_epoch{epoch:03d}_scores.csv",
                             lambda tmp, table=table: table.to_csv(tmp, index=False))
            logger.log_epoch(epoch, "train", tr)
            logger.log_epoch(epoch, "val", val)
            checkpoint.save({"epoch": epoch, **shape, "classes": data.classes, "model": model.state_dict(),
                             "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                             "best_score": best_score, "best_epoch": best_epoch, "selection": anomaly_task.SELECTION,
                             "combination": combiner.to_dict() if combiner is not None else None, "latent": latent,
                             "threshold": threshold, "normal_classes": [data.classes[k] for k in normal],
                             "preprocess": data.preprocess, "args": flags(args), "overrides": {},
                             "rng": checkpoint.rng_state(generator), "world_size": 1}, run_dir, is_best=is_best)
            parts = " ".join(f"{k} {v:.4f}" for k, v in tr.items() if k not in ("lr", "seconds"))
            singles = " ".join(f"{k} {val[f'auroc_{k}']:.3f}" for k in (*model.score_names, "mahalanobis", "knn")
                               if val.get(f"auroc_{k}") is not None)
            print(f"epoch {epoch:>3}/{args.epochs}  train {parts} | val AUROC {val['auroc']:.4f} (cross-validated "
                  f"combination; {singles}) F1 {val['f1']:.4f} | {tr['seconds'] + val['seconds']:.1f} s"
                  f"{'  *best' if is_best else ''}", flush=True)
    except KeyboardInterrupt:
        return interrupted(args, run_dir, version)
    finally:
        logger.close()
    hint = naming_flags(args) + ["--test", "--resume", "best", "--version", version]
    print(f"best validation AUROC {best_score:.4f} at epoch {best_epoch}; evaluate it on the test split with:\n"
          f"  python commander.py {' '.join(hint)}")
    return 0, run_dir


# ---- --task pretrain: a classifier's encoder learns a pretext task from unlabelled signal (tasks/pretrain.py) ----

def pretrain_data(args: argparse.Namespace, run_dir: Path | None) -> tuple[PooledDataset, PooledDataset,
                                                                           dict[str, Any], dict[str, str]]:
    """The pooled training and validation examples of every --dataset (the test split's too with --transductive),
    the manifest for splits.json (each dataset's own, and the records pretraining used) and the raw folders."""
    saved = read_json(run_dir / "splits.json") if run_dir is not None and (run_dir / "splits.json").is_file() else {}
    train, val, manifests, raws = [], [], {}, {}
    used: dict[str, list[str]] = {}
    held: dict[str, list[str]] = {}
    for name in args.pool:
        spec = get_loader(name)
        own = argparse.Namespace(**{**vars(args), "split": spec.splits[0] if len(args.pool) > 1 else args.split})
        data, raw = build_data(own, spec, None, (saved.get("pool") or {}).get(name))
        train += [data.train, data.test] if args.transductive else [data.train]
        val.append(data.val)
        manifests[name], raws[name] = data.manifest, str(raw.resolve())
        parts = ("train", "val", "test") if args.transductive else ("train", "val")
        used[name] = sorted({r for part in parts for r in split_records(data.manifest, part)})
        held[name] = split_records(data.manifest, "test")
    manifest = {"database": "+".join(m["database"] for m in manifests.values()), "protocol": args.split,
                "pool": manifests, "pretrain": {
                    "records": used, "test_records": held, "transductive": args.transductive,
                    "note": ("the test split's signal (not its labels) was used: results built on this run are "
                             "transductive" if args.transductive else
                             "training and validation examples only; no example of a test split")}}
    names = [f"{n}/{part}" for n in args.pool for part in (("train", "test") if args.transductive else ("train",))]
    return PooledDataset(train, names), PooledDataset(val, list(args.pool)), manifest, raws


def pretrain_run(args: argparse.Namespace, runs_dir: Path, run_dir: Path | None, state: dict[str, Any] | None,
                 path: Path | None, device: torch.device, procs: Processes = ALONE) -> tuple[int, Path]:
    """Pretrain the encoder of --model-name on --pretext; keep the epoch of the lowest validation pretext loss."""
    if procs.several:
        raise ECGError("--task pretrain runs in one process; start it with python commander.py")
    train, val, manifest, raws = pretrain_data(args, run_dir)
    shape = {"model_name": args.model_name, "in_channels": train.in_channels, "length": train.length,
             "pretext": args.pretext}
    model = pretrain_task.build_pretext(args.model_name, train.in_channels, train.length, args.pretext).to(device)
    if state is not None:
        checkpoint.check_compatible(state, path, **shape)
        checkpoint.load_weights(state, path, model)
    max_batches = SHORT_RUN_BATCHES if args.short_run else None
    train_loader, val_loader, optimizers, generator, start_epoch, best_score, best_epoch = own_optimizers(
        args, model, train, val, state, path)
    run_dir = open_run(runs_dir, run_dir, args)
    parameters = sum(p.numel() for p in model.parameters())
    record_invocation(run_dir, args, "resume" if state is not None else "train", world_size=1, first={
        "run": run_dir.name, "command": sys.argv, "flags": flags(args),
        "dataset": {"datasets": args.pool, "in_channels": train.in_channels, "length": train.length,
                    "raw_dir": raws},
        "model": {**shape, "parameters": parameters}})
    if not (run_dir / "splits.json").exists():
        write_json(run_dir / "splits.json", manifest)
    logger = RunLogger(run_dir, args.tensorboard, start_epoch)
    version = run_dir.name.rsplit("_", 1)[1]
    sources = ", ".join(f"{n} {len(p)}" for n, p in zip(train.names, train.parts, strict=True))
    print(f"run {run_dir}: {args.pretext} pretraining of the {args.model_name} encoder ({parameters:,} parameters "
          f"with the pretext head) on {device}, {len(train)} unlabelled training examples of {train.in_channels} "
          f"leads x {train.length} samples ({sources}), {len(val)} validation examples, epochs "
          f"{start_epoch + 1}-{args.epochs}")
    try:
        for epoch in range(start_epoch + 1, args.epochs + 1):
            tr = trainer.train_generative(model, train_loader, optimizers, device, epoch, max_batches=max_batches)
            val_scores = trainer.evaluate_pretext(model, val_loader, device, seed=args.seed, max_batches=max_batches)
            score = -val_scores["loss"] if math.isfinite(val_scores["loss"]) else -math.inf
            is_best = score > best_score or best_epoch == 0
            if is_best:
                best_score, best_epoch = score, epoch
            logger.log_epoch(epoch, "train", tr)
            logger.log_epoch(epoch, "val", val_scores)
            checkpoint.save({"epoch": epoch, "task": "pretrain", **shape, "model": model.state_dict(),
                             "encoder": pretrain_task.encoder_state(model),
                             "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                             "best_score": best_score, "best_epoch": best_epoch, "selection": "-val loss",
                             "args": flags(args), "overrides": {}, "rng": checkpoint.rng_state(generator),
                             "world_size": 1}, run_dir, is_best=is_best)
            parts = " ".join(f"{k} {v:.4f}" for k, v in tr.items() if k not in ("lr", "seconds"))
            shown = " ".join(f"{k} {v:.4f}" for k, v in val_scores.items() if k != "seconds")
            print(f"epoch {epoch:>3}/{args.epochs}  train {parts} | val {shown} | "
                  f"{tr['seconds'] + val_scores['seconds']:.1f} s{'  *best' if is_best else ''}", flush=True)
    except KeyboardInterrupt:
        return interrupted(args, run_dir, version)
    finally:
        logger.close()
    print(f"best validation {args.pretext} loss {-best_score:.4f} at epoch {best_epoch}; fine-tune a classifier "
          f"from it with:\n  python commander.py --dataset {args.pool[0]}"
          + ("" if len(args.pool) > 1 else f" --split {args.split}")
          + f" --model-name {args.model_name} --pretrained {run_dir}")
    return 0, run_dir


if __name__ == "__main__":
    sys.exit(main())
