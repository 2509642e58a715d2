"""pytorch-ecg commander: train, resume and test ECG classifiers. Run ``python commander.py --help``."""
from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import trainer
from args import check_num_classes, get_args_parser, parse_args, run_name, select_run
from loaders import DataSplits, get_loader, make_dataloader, raw_dir
from loaders.cinc2020 import write_outputs
from models import get_model
from toolbox import checkpoint
from toolbox.augment import Augmenter
from toolbox.logger import RunLogger, save_multilabel_predictions, save_predictions
from toolbox.losses import class_weights, get_criterion, positive_weights
from toolbox.metrics import MultiLabelTask, multilabel_table, per_class_table
from toolbox.optimizers import EPOCH_SHAPED, PER_BATCH, get_optimizer, get_scheduler, step_epoch
from toolbox.plotter import confusion_matrix_png, multilabel_confusion_png
from toolbox.samplers import get_sampler
from toolbox.utils import (
    ECGError,
    ensure_writable,
    environment_info,
    read_json,
    remove_temporaries,
    setup_env,
    write_json,
)

SHORT_RUN_BATCHES = 10
# validation scores kept in logger.json (those a split's metrics hold), and how the selection score is printed
VAL_LOGGED = ("loss", "accuracy", "balanced_accuracy", "macro_f1", "macro_auroc", "macro_auprc", "challenge",
              "thresholds", "seconds")
SHORT_NAMES = {"macro_f1": "macro-F1", "macro_auroc": "macro AUROC", "challenge": "Challenge metric"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2; Ctrl-C exits with 130."""
    args = parse_args(argv)
    try:
        return run(args)
    except ECGError as exc:
        print(f"commander.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("commander.py: interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    spec = get_loader(args.dataset)
    run_dir = select_run(args.root_dir / args.dataset / "runs", run_name(args), args.version,
                         existing=args.resume is not None)
    ensure_writable(args.root_dir, "--root-dir")
    device = setup_env(args.seed, args.disable_cuda)

    splits_file = run_dir / "splits.json"
    manifest = read_json(splits_file) if splits_file.is_file() else None
    raw = raw_dir(spec.db, args.root_dir)
    extra = {"fs": args.fs, "seq_len": args.seq_len} if spec.multilabel else {}
    if spec.db == "mitdb":  # the beat options (the parser refuses them for the other datasets)
        extra = {"rr_features": args.rr_features, "beat_format": args.beat_format, "median_beat": args.median_beat}
    data = spec.build(raw, args.root_dir / "cache", split_seed=args.split_seed, protocol=args.split,
                      saved_manifest=manifest, data_url=args.data_url, **extra)
    check_num_classes(args, data.classes)
    if args.verbose or not args.test:
        print(f"{args.dataset} ({data.manifest['database']}, {data.manifest['protocol']} split): "
              f"examples per class and split\n{data.counts_table()}")

    model = get_model(args.model_name, data.in_channels, len(data.classes), data.feature_channels).to(device)
    weight = None
    if args.class_balance and data.multilabel:
        weight = positive_weights(data.train.class_counts(), len(data.train.labels), args.class_balance)
    elif args.class_balance:
        weight = class_weights(data.train.class_counts(), args.class_balance)
    criterion = get_criterion(args.criterion, weight, args.label_smoothing).to(device)
    task = MultiLabelTask(args.threshold_metric, data.challenge_weights, data.normal_index) if data.multilabel else None
    if args.test:
        return test_run(args, run_dir, model, criterion, data, device, task)
    return train_run(args, run_dir, model, criterion, data, device, raw, task)


def load_checkpoint(path: Path, model: torch.nn.Module, args: argparse.Namespace, data: DataSplits) -> dict[str, Any]:
    """Read a checkpoint, check it fits this model and dataset, and load its weights."""
    state = checkpoint.load(path)
    checkpoint.check_compatible(state, path, model_name=args.model_name, in_channels=data.in_channels,
                                num_classes=len(data.classes))
    checkpoint.load_weights(state, path, model)
    return state


def test_run(args: argparse.Namespace, run_dir: Path, model: torch.nn.Module, criterion: torch.nn.Module,
             data: DataSplits, device: torch.device, task: MultiLabelTask | None) -> int:
    """Evaluate a saved checkpoint on the test split and write pred/."""
    path = checkpoint.resolve(run_dir, args.resume)
    state = load_checkpoint(path, model, args, data)
    loader = make_dataloader(data.test, args.batch_size, workers=args.workers, pin_memory=device.type == "cuda")
    max_batches = SHORT_RUN_BATCHES if args.short_run else None
    if task is not None:
        return test_multilabel(args, run_dir, path, state, model, criterion, data, device, task, loader, max_batches)
    metrics, probs, targets = trainer.test(model, loader, criterion, device, data.classes, amp=args.amp,
                                           max_batches=max_batches)
    pred_dir, tag = run_dir / "pred", f"test_{args.resume}"
    save_predictions(pred_dir / f"{tag}_predictions.csv", probs, targets, data.classes, data.test.meta)
    write_json(pred_dir / f"{tag}_metrics.json", {"checkpoint": path.name, "epoch": state["epoch"],
                                                  "examples": len(targets), **metrics})
    for normalize, suffix in ((False, ""), (True, "_normalized")):
        confusion_matrix_png(metrics["confusion_matrix"], data.classes, pred_dir / f"{tag}_confusion{suffix}.png",
                             normalize=normalize, title=f"{run_dir.name}\n{path.name}, epoch {state['epoch']}")
    print(f"test ({path.name}, epoch {state['epoch']}, {len(targets)} examples): "
          f"accuracy {metrics['accuracy']:.4f}  balanced accuracy {metrics['balanced_accuracy']:.4f}  "
          f"macro-F1 {metrics['macro_f1']:.4f}  loss {metrics['loss']:.4f}")
    print(per_class_table(metrics))
    print(f"predictions, metrics and confusion matrices: {pred_dir}")
    return 0


def test_multilabel(args: argparse.Namespace, run_dir: Path, path: Path, state: dict[str, Any],
                    model: torch.nn.Module, criterion: torch.nn.Module, data: DataSplits, device: torch.device,
                    task: MultiLabelTask, loader: torch.utils.data.DataLoader, max_batches: int | None) -> int:
    """Test a multi-label checkpoint with its validation thresholds; pred/ also gets Challenge output files."""
    thresholds = state.get("thresholds")
    if not isinstance(thresholds, list) or len(thresholds) != len(data.classes):
        raise ECGError(f"{path} holds no decision thresholds for {len(data.classes)} classes; it was not trained "
                       f"on a multi-label dataset by this version of pytorch-ecg")
    metrics, probs, targets = trainer.test(model, loader, criterion, device, data.classes, amp=args.amp,
                                           max_batches=max_batches, task=task, thresholds=np.array(thresholds))
    records = data.test.meta["record"][: len(targets)]
    pred_dir, tag = run_dir / "pred", f"test_{args.resume}"
    save_multilabel_predictions(pred_dir / f"{tag}_predictions.csv", probs, targets, data.classes, records,
                                thresholds)
    write_json(pred_dir / f"{tag}_metrics.json", {"checkpoint": path.name, "epoch": state["epoch"],
                                                  "records": len(targets), **metrics})
    multilabel_confusion_png(metrics["multilabel_confusion"], pred_dir / f"{tag}_confusion.png",
                             title=f"{run_dir.name}\n{path.name}, epoch {state['epoch']}")
    challenge = ""
    if data.challenge_weights is not None:
        write_outputs(pred_dir / "challenge", records, data.classes, probs, thresholds)
        challenge = f"  Challenge metric {metrics['challenge']:.4f}"
    print(f"test ({path.name}, epoch {state['epoch']}, {len(targets)} records): "
          f"macro AUROC {metrics['macro_auroc']:.4f}  macro AUPRC {metrics['macro_auprc']:.4f}  "
          f"exact-match accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}{challenge}  "
          f"loss {metrics['loss']:.4f}")
    print(multilabel_table(metrics, data.manifest.get("class_names")))
    print(f"predictions, metrics and confusion counts: {pred_dir}"
          + (f"; Challenge output files: {pred_dir / 'challenge'}" if challenge else ""))
    return 0


def train_run(args: argparse.Namespace, run_dir: Path, model: torch.nn.Module, criterion: torch.nn.Module,
              data: DataSplits, device: torch.device, raw: Path, task: MultiLabelTask | None) -> int:
    """Train (or continue training) until --epochs, validating and checkpointing every epoch."""
    max_batches = SHORT_RUN_BATCHES if args.short_run else None
    generator = torch.Generator().manual_seed(args.seed)
    sampler = get_sampler(args.sampler, data.train.labels, generator)
    pin = device.type == "cuda"
    train_loader = make_dataloader(data.train, args.batch_size, shuffle=True, sampler=sampler,
                                   workers=args.workers, generator=generator, pin_memory=pin)
    val_loader = make_dataloader(data.val, args.batch_size, workers=args.workers, pin_memory=pin)
    optimizer = get_optimizer(args.optimizer, model, args.lr, args.momentum, args.weight_decay)
    steps = min(len(train_loader), max_batches or len(train_loader))
    scheduler = get_scheduler(args.scheduler, optimizer, epochs=args.epochs, steps_per_epoch=steps,
                              step=args.step, decay=args.lr_decay, lr=args.lr)

    start_epoch, best_score, best_epoch = 0, -math.inf, 0
    if args.pretrained:
        load_checkpoint(args.pretrained, model, args, data)
    if args.resume:
        path = checkpoint.resolve(run_dir, args.resume)
        state = load_checkpoint(path, model, args, data)
        trained_for = state.get("args", {}).get("epochs")
        if args.scheduler in EPOCH_SHAPED and trained_for != args.epochs:
            raise ECGError(f"{args.scheduler} was shaped for --epochs {trained_for} when this run started; "
                           f"resume with --epochs {trained_for}")
        checkpoint.restore_training(state, path, optimizer, scheduler, generator)
        start_epoch = state["epoch"]
        best_score, best_epoch = state.get("best_score", -math.inf), state.get("best_epoch", 0)
    if args.start_epoch is not None:
        start_epoch = args.start_epoch
    if start_epoch >= args.epochs:
        raise ECGError(f"{run_dir.name} has already trained {start_epoch} epochs; pass --epochs above "
                       f"{start_epoch} to continue it, or --test to evaluate it")

    ensure_writable(run_dir, "the run folder")
    remove_temporaries(run_dir)
    config = {"run": run_dir.name, "command": sys.argv, "flags": {k: str(v) if isinstance(v, Path) else v
                                                                  for k, v in vars(args).items()},
              "dataset": {"classes": data.classes, "in_channels": data.in_channels,
                          "raw_dir": str(raw.resolve())},
              "model": {"parameters": sum(p.numel() for p in model.parameters())}, **environment_info()}
    if not (run_dir / "config.json").exists():
        write_json(run_dir / "config.json", config)
    if not (run_dir / "splits.json").exists():
        write_json(run_dir / "splits.json", data.manifest)

    logger = RunLogger(run_dir, args.tensorboard, start_epoch)
    version = run_dir.name.rsplit("_", 1)[1]
    batch_scheduler = scheduler if args.scheduler in PER_BATCH else None
    augment = Augmenter(args.augment, data.signal_channels) if args.augment else None
    print(f"run {run_dir}: {args.model_name} ({config['model']['parameters']:,} parameters) on {device}, "
          f"{len(data.train)} train / {len(data.val)} val examples, epochs {start_epoch + 1}-{args.epochs}")
    try:
        for epoch in range(start_epoch + 1, args.epochs + 1):
            tr = trainer.train(model, train_loader, criterion, optimizer, device, epoch, data.classes,
                               batch_scheduler=batch_scheduler, amp=args.amp, max_batches=max_batches,
                               multilabel=data.multilabel, augment=augment)
            val, probs, targets = trainer.validate(model, val_loader, criterion, device, data.classes,
                                                   amp=args.amp, max_batches=max_batches, task=task)
            score = val[data.selection] if math.isfinite(val[data.selection]) else -math.inf
            step_epoch(scheduler, score)
            is_best = score > best_score or best_epoch == 0
            if is_best:
                best_score, best_epoch = score, epoch
            res = run_dir / "res" / f"val_epoch{epoch:03d}.csv"
            if task is not None:
                save_multilabel_predictions(res, probs, targets, data.classes, data.val.meta["record"],
                                            val["thresholds"])
            else:
                save_predictions(res, probs, targets, data.classes, data.val.meta)
            logger.log_epoch(epoch, "train", tr)
            logger.log_epoch(epoch, "val", {
                **{k: val[k] for k in VAL_LOGGED if k in val}, "f1_per_class": {c: m["f1"] for c, m in
                                                                                 val["per_class"].items()}})
            # the checkpoint is written last: it marks the epoch as complete
            checkpoint.save({
                "epoch": epoch, "model_name": args.model_name, "in_channels": data.in_channels,
                "num_classes": len(data.classes), "classes": data.classes, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "best_score": best_score, "best_epoch": best_epoch, "selection": data.selection,
                "val_macro_f1": val["macro_f1"], "thresholds": val.get("thresholds"), "preprocess": data.preprocess,
                "args": config["flags"], "rng": checkpoint.rng_state(generator),
            }, run_dir, is_best=is_best)
            extra = f" {SHORT_NAMES[data.selection]} {val[data.selection]:.4f}" if data.selection != "macro_f1" else ""
            print(f"epoch {epoch:>3}/{args.epochs}  train loss {tr['loss']:.4f} acc {tr['accuracy']:.4f} "
                  f"f1 {tr['macro_f1']:.4f} | val loss {val['loss']:.4f} acc {val['accuracy']:.4f} "
                  f"f1 {val['macro_f1']:.4f}{extra} | lr {tr['lr']:.2e} | {tr['seconds'] + val['seconds']:.1f} s"
                  f"{'  *best' if is_best else ''}", flush=True)
    except KeyboardInterrupt:
        resume = naming_flags(args) + ["--epochs", str(args.epochs), "--resume", "latest", "--version", version]
        print(f"commander.py: interrupted; checkpoints of complete epochs are kept; continue with: "
              f"python commander.py {' '.join(resume)}", file=sys.stderr)
        return 130
    finally:
        logger.close()
    hint = naming_flags(args) + ["--test", "--resume", "best", "--version", version]
    print(f"best validation {SHORT_NAMES[data.selection]} {best_score:.4f} at epoch {best_epoch}; evaluate it on "
          f"the test split with:\n"
          f"  python commander.py {' '.join(hint)}")
    return 0


def naming_flags(args: argparse.Namespace) -> list[str]:
    """The flags that name this run (those not at their dataset's defaults), for the hints printed by training."""
    defaults = parse_args(["--dataset", args.dataset])
    flags = [] if args.dataset == get_args_parser().get_default("dataset") else ["--dataset", args.dataset]
    for name in ("root_dir", "model_name", "split", "fs", "seq_len", "optimizer", "lr", "batch_size", "scheduler",
                 "criterion", "class_balance", "sampler", "threshold_metric", "label_smoothing", "beat_format"):
        value = getattr(args, name)
        if value != getattr(defaults, name):
            flags += [f"--{name.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    flags += [flag for flag, on in (("--median-beat", args.median_beat), ("--rr-features", args.rr_features)) if on]
    if args.augment:
        flags += ["--augment", *args.augment]
    return flags

if __name__ == "__main__":
    sys.exit(main())
