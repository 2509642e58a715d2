"""Command-line flags, their validation, and run naming and versioning."""
from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from loaders import DATASETS
from loaders.mitdb import BEAT_FORMATS
from models import MODELS
from toolbox.augment import AUGMENTATIONS
from toolbox.checkpoint import LAST
from toolbox.losses import BALANCE_POWERS, CRITERIA
from toolbox.metrics import THRESHOLD_OBJECTIVES
from toolbox.optimizers import OPTIMIZERS, SCHEDULERS
from toolbox.utils import ECGError


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except ``None`` (whose meaning the help text spells out), off and empty."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        hidden = action.default is None or action.default is False or action.default == []
        return action.help if hidden else super()._get_help_string(action)


def word_or_number(kind: str):
    """Argument type for ``latest|best|bump`` style words or a positive integer."""
    words = {"version": ("latest", "bump"), "resume": ("best", "latest")}[kind]

    def parse(text: str) -> str:
        if text in words or (text.isdigit() and int(text) > 0):
            return text
        raise argparse.ArgumentTypeError(f"expected {' or '.join(words)} or a positive integer, got '{text}'")

    parse.__name__ = kind
    return parse


def _positive(cast):
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = f"positive {cast.__name__}"
    return parse


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    """The commander's parser, in argument groups; reusable by other scripts."""
    p = OneLineParser(prog="commander.py", description="Train and evaluate deep-learning ECG classifiers.",
                      formatter_class=DefaultsHelpFormatter)

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="ecg", choices=list(DATASETS),
                   help="ecg: MIT-BIH beats, 5 AAMI classes (N S V F Q); ecg_bin: N versus the rest; "
                        "ptb: PTB Diagnostic beats (Kaggle CSVs), normal versus abnormal; cinc2020: "
                        "PhysioNet/CinC Challenge 2020 twelve-lead records, 24 scored classes, multi-label; "
                        "ptbxl: PTB-XL twelve-lead records, 5 diagnostic superclasses, multi-label")
    g.add_argument("--root-dir", default=Path("ecg_data"), type=Path,
                   help="where runs and caches are written; raw databases are read from $ECG_DATA_ROOT/<db> "
                        "when that is set, else from <root-dir>/<db>")
    g.add_argument("--split", default=None, choices=sorted({s for d in DATASETS.values() for s in d.splits}),
                   metavar="SPLIT",
                   help="ecg, ecg_bin: intra (default; stratified random beats, test 20%%, val 10%% of the rest) "
                        "or inter (de Chazal DS1 -> DS2 records, validation = whole DS1 records, paced records "
                        "left out); ptb: intra; cinc2020: records (default; stratified by labels, test 20%%, val "
                        "20%% of the rest) or source-X (test on every record of source X: "
                        f"{', '.join(DATASETS['cinc2020'].splits[1:])}); ptbxl: folds (strat_fold 1-8 / 9 / 10)")
    g.add_argument("--split-seed", default=0, type=int,
                   help="seed of the stratified train/val/test split (fixed so runs share one test set)")
    g.add_argument("--data-url", default=None,
                   help="mirror to download missing raw data from: a base URL holding the MIT-BIH files "
                        "(default: PhysioNet), or for ptb the URL of the Kaggle archive (default: Google Drive)")

    g.add_argument("--fs", default=None, type=_positive(int),
                   help="cinc2020, ptbxl: resample records to this rate in Hz (default: cinc2020 500, ptbxl 100)")
    g.add_argument("--seq-len", default=10.0, type=_positive(float),
                   help="cinc2020, ptbxl: window length in seconds (random crops for training, sliding windows "
                        "averaged for evaluation; shorter records are zero-padded)")
    g.add_argument("--rr-features", action="store_true",
                   help="ecg, ecg_bin: give the network each beat's RR intervals (previous, next, mean of the last 10, "
                        "and previous / mean of the last 10; divided by the record's mean RR) as 4 per-beat features "
                        "joined with the network's output")
    g.add_argument("--beat-format", default="kaggle", choices=list(BEAT_FORMATS),
                   help="ecg, ecg_bin from the raw records: kaggle (a beat starts at its R peak and ends after 1.2 x "
                        "the median RR, min-max scaled per 10-s window: the Kaggle CSVs), centered (starts 0.5 s "
                        "before the R peak: P wave and QRS onset included; same scaling) or filtered (centered, "
                        "baseline wander removed and each record divided by its median beat amplitude); 187 "
                        "samples at 125 Hz")
    g.add_argument("--median-beat", action="store_true",
                   help="ecg, ecg_bin from the raw records: give the network, beside each beat, the median of its "
                        "record's beats that do not come early (RR prematurity >= 0.9; what this patient's beats "
                        "look like, no labels used) as a second signal channel")
    g.add_argument("--augment", default=[], nargs="+", choices=list(AUGMENTATIONS), metavar="KIND",
                   help="augment training batches: scale (amplitude x0.8-1.2), noise (Gaussian, sd up to 5%% of "
                        "the example's), wander (slow sinusoid up to 10%%), shift (up to 5%% of the length); "
                        f"choose from {', '.join(AUGMENTATIONS)}")

    g = p.add_argument_group("model")
    g.add_argument("--model-name", default="resnet1d_10", choices=list(MODELS), help="architecture")
    g.add_argument("--num-classes", default=None, type=_positive(int),
                   help="number of classes; derived from the dataset, an error if it disagrees")
    g.add_argument("--pretrained", default=None, type=Path, metavar="PATH",
                   help="initialise the model with the weights of this checkpoint (fine-tuning; nothing else)")

    g = p.add_argument_group("run")
    g.add_argument("--version", default=None, type=word_or_number("version"), metavar="{latest,bump,N}",
                   help="run version: bump makes a new one, latest reuses the newest, N picks one "
                        "(default: bump when training, latest with --resume or --test)")
    g.add_argument("--resume", default=None, type=word_or_number("resume"), metavar="{best,latest,N}",
                   help="continue from the run's best, last or epoch-N checkpoint (full state)")
    g.add_argument("--test", action="store_true",
                   help="evaluate a trained run on the test split and write pred/ (loads --resume, default best)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", default="adamw", choices=list(OPTIMIZERS))
    g.add_argument("--lr", default=3e-3, type=_positive(float), help="learning rate (peak rate for OneCycleLR)")
    g.add_argument("--momentum", default=0.9, type=float, help="SGD momentum (Nesterov)")
    g.add_argument("--weight-decay", default=1e-4, type=float, help="weight decay, for every optimizer")
    g.add_argument("--batch-size", default=128, type=_positive(int))
    g.add_argument("--epochs", default=10, type=_positive(int), help="train until this many epochs are done")
    g.add_argument("--start-epoch", default=None, type=_non_negative_int,
                   help="epochs already done (default: 0, or the checkpoint's with --resume)")
    g.add_argument("-j", "--workers", default=0, type=_non_negative_int,
                   help="DataLoader worker processes (data is in memory: 0 is usually fastest)")

    g = p.add_argument_group("schedule")
    g.add_argument("--scheduler", default="OneCycleLR", choices=list(SCHEDULERS))
    g.add_argument("--step", default=5, type=_positive(int),
                   help="StepLR step size in epochs; ReduceLROnPlateau patience")
    g.add_argument("--lr-decay", default=0.1, type=_positive(float),
                   help="factor for StepLR, ExponentialLR and ReduceLROnPlateau")

    g = p.add_argument_group("class imbalance")
    g.add_argument("--criterion", default=None, choices=list(CRITERIA),
                   help="loss (default: crossentropy; bce, binary cross-entropy on logits, for multi-label datasets)")
    g.add_argument("--class-balance", default=None, choices=list(BALANCE_POWERS),
                   help="weight the loss per class: equal ~ 1/n_c, importance ~ 1/sqrt(n_c); with bce, positive "
                        "examples of class c are weighted (n_neg/n_pos) ** 1 or ** 0.5")
    g.add_argument("--threshold-metric", default=None, choices=list(THRESHOLD_OBJECTIVES),
                   help="multi-label datasets: per-class decision thresholds are chosen on the validation split "
                        "to maximise this (default: challenge for cinc2020, f1 for ptbxl)")
    g.add_argument("--sampler", default=None, choices=list(BALANCE_POWERS),
                   help="draw training examples per class: equal ~ 1/n_c, importance ~ 1/sqrt(n_c)")
    g.add_argument("--label-smoothing", default=0.0, type=_fraction, metavar="EPS",
                   help="crossentropy: mix each one-hot target with the uniform distribution by EPS (e.g. 0.1)")

    g = p.add_argument_group("misc")
    g.add_argument("--seed", default=0, type=int, help="seed of weights, shuffling and sampling")
    g.add_argument("--short-run", action="store_true", help="stop each train/val/test pass after 10 batches")
    g.add_argument("--disable-cuda", action="store_true", help="run on the CPU even when CUDA is available")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="bfloat16 autocast on CUDA (ignored on the CPU)")
    g.add_argument("--tensorboard", action="store_true", help="write TensorBoard events into the run folder")
    g.add_argument("--verbose", action="store_true", help="print class counts per split and progress details")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate flags; a bad combination exits with one line and code 2."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.sampler and args.class_balance:
        parser.error("--sampler and --class-balance both rebalance classes; use one of them")
    if args.pretrained and args.resume:
        parser.error("--pretrained loads weights only and --resume a whole run; use one of them")
    if args.test and args.pretrained:
        parser.error("--test evaluates a run's own checkpoint; use --resume best|latest|N, not --pretrained")
    args.augment = sorted(set(args.augment), key=list(AUGMENTATIONS).index)
    if args.test and args.resume is None:
        args.resume = "best"
    if args.version is None:
        args.version = "latest" if (args.resume or args.test) else "bump"
    spec = DATASETS[args.dataset]
    for flag, on in (("--rr-features", args.rr_features), ("--beat-format", args.beat_format != "kaggle"),
                     ("--median-beat", args.median_beat)):
        if on and spec.db != "mitdb":
            parser.error(f"{flag} applies to the MIT-BIH beats (ecg, ecg_bin), not to {args.dataset}")
    if args.split is None:
        args.split = spec.splits[0]
    elif args.split not in spec.splits:
        parser.error(f"--split {args.split} is not a split of --dataset {args.dataset}; "
                     f"valid: {', '.join(spec.splits)}")
    if spec.multilabel:
        args.fs = args.fs or spec.fs
        args.criterion = args.criterion or "bce"
        args.threshold_metric = args.threshold_metric or ("challenge" if args.dataset == "cinc2020" else "f1")
        if args.criterion != "bce":
            parser.error(f"--dataset {args.dataset} is multi-label: use --criterion bce, not {args.criterion}")
        if args.sampler:
            parser.error(f"--sampler draws single-label classes; for --dataset {args.dataset} use --class-balance")
        if args.threshold_metric == "challenge" and args.dataset != "cinc2020":
            parser.error("--threshold-metric challenge needs the Challenge 2020 reward table (--dataset cinc2020)")
    else:
        given = [flag for flag, name in (("--fs", "fs"), ("--seq-len", "seq_len"),
                                         ("--threshold-metric", "threshold_metric"))
                 if getattr(args, name) != parser.get_default(name)]
        if given:
            parser.error(f"{given[0]} applies to the record datasets (cinc2020, ptbxl), not to {args.dataset}")
        args.criterion = args.criterion or "crossentropy"
        if args.criterion == "bce":
            parser.error(f"--criterion bce is for multi-label datasets; --dataset {args.dataset} is single-label")
    if args.label_smoothing and args.criterion != "crossentropy":
        parser.error(f"--label-smoothing applies to --criterion crossentropy, not {args.criterion}")
    return args


def run_name(args: argparse.Namespace) -> str:
    """Run name from the main hyper-parameters (not the epoch count, so a run can be continued)."""
    parts = [args.model_name, args.split, args.optimizer, f"lr{args.lr:g}", f"bs{args.batch_size}",
             args.scheduler, args.criterion]
    if args.fs is not None:  # record datasets: what a window is
        parts.append(f"{args.fs}hz-{args.seq_len:g}s")
    if args.class_balance:
        parts.append(f"cb-{args.class_balance}")
    if args.sampler:
        parts.append(f"sampler-{args.sampler}")
    if args.beat_format != "kaggle":
        parts.append(f"beats-{args.beat_format}")
    if args.median_beat:
        parts.append("med")
    if args.rr_features:
        parts.append("rr")
    if args.augment:
        parts.append("aug-" + "+".join(args.augment))
    if args.label_smoothing:
        parts.append(f"ls{args.label_smoothing:g}")
    return "_".join(parts)


def existing_versions(runs_dir: Path, name: str) -> list[int]:
    """Version numbers of the runs ``<name>_<N>`` in ``runs_dir``, ascending."""
    if not runs_dir.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(name)}_(\d+)")
    return sorted(int(m.group(1)) for d in runs_dir.iterdir() if d.is_dir() and (m := pattern.fullmatch(d.name)))


def select_run(runs_dir: Path, name: str, version: str, *, existing: bool) -> Path:
    """The run folder for ``version`` (``bump``, ``latest`` or N); ``existing`` runs must already exist.

    A new training never reuses a run that already holds a checkpoint.
    """
    versions = existing_versions(runs_dir, name)
    if version == "bump":
        if existing:
            raise ECGError("--version bump makes a new run; --resume and --test need latest or a number")
        return runs_dir / f"{name}_{(versions[-1] if versions else 0) + 1}"
    if version == "latest":
        if not versions:
            if existing:
                raise ECGError(f"no run named {name}_<N> in {runs_dir}; train one first "
                               f"(the name comes from --model-name, --split, --optimizer, --lr, "
                               f"--batch-size, --scheduler, --criterion, balancing flags, --fs, --seq-len and "
                               f"input flags: --beat-format, --median-beat, --rr-features, --augment, "
                               f"--label-smoothing)")
            return runs_dir / f"{name}_1"
        run_dir = runs_dir / f"{name}_{versions[-1]}"
    else:
        if int(version) not in versions:
            raise ECGError(f"run {name}_{version} does not exist in {runs_dir}; existing versions: "
                           f"{', '.join(map(str, versions)) or 'none'}")
        run_dir = runs_dir / f"{name}_{version}"
    if not existing and (run_dir / LAST).exists():
        raise ECGError(f"{run_dir} already holds a trained run; continue it with --resume latest "
                       f"or start a new one with --version bump")
    return run_dir


def check_num_classes(args: argparse.Namespace, classes: Sequence[str]) -> None:
    """``--num-classes`` may only repeat what the dataset says."""
    if args.num_classes is not None and args.num_classes != len(classes):
        raise ECGError(f"--num-classes {args.num_classes} disagrees with --dataset {args.dataset}, "
                       f"which has {len(classes)} classes ({', '.join(classes)}); drop the flag")

