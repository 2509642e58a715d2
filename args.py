"""Command-line flags, their validation, and run naming and versioning.

This module imports nothing heavy (no torch, scipy, pandas or scikit-learn), so ``commander.py --help``
answers at once.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from loaders import (
    BANDPASS,
    BEAT_FORMAT_FS,
    BEAT_FORMAT_NAMES,
    DATASETS,
    LEAD_SETS,
    PREPROCESS_STEPS,
    PTBXL_LABEL_SETS,
    preprocess_tag,
)
from models import CLASSIFIERS, GENERATIVE, MODELS
from toolbox.utils import ECGError

# The names the selector flags accept. The selectors (toolbox.optimizers, toolbox.losses, toolbox.augment,
# toolbox.metrics) import torch or scikit-learn; tests/test_args.py checks that they offer exactly these names.
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("StepLR", "ExponentialLR", "ReduceLROnPlateau", "CosineAnnealingLR", "OneCycleLR", "none")
CRITERIA = ("crossentropy", "focal", "bce")
BALANCE = ("equal", "importance")
AUGMENTATIONS = ("cutmix", "mixup", "stretch", "renormalize", "invert", "scale", "noise", "wander", "leadwander",
                 "shift", "mask")
# augmentations that only records make sense of, refused for the beat datasets (the reasons)
RECORD_AUGMENTATIONS = {"cutmix": "a beat is one heartbeat whose class lies in its shape, not in a share of its "
                                  "samples; use mixup",
                        "leadwander": "a beat has one lead (and its median beat is drawn from it); use wander"}
THRESHOLD_OBJECTIVES = ("f1", "challenge")
TASKS = ("classify", "anomaly", "pretrain")  # what a run learns (tasks/: anomaly.py, pretrain.py; classification is
# commander + trainer)
PRETEXTS = ("masked", "contrastive", "flip")  # tasks.pretrain.PRETEXTS (tests/test_args.py checks they agree)
# flags --config does not replay: they say what to do with a run, not what the run is
RUN_CONTROL = ("config", "recipe", "version", "resume", "test", "override", "allow_world_size_change", "start_epoch",
               "explain", "explain_method", "generate", "bootstrap")
# flags that only a classifier reads (refused with --task anomaly), and only the anomaly task reads
CLASSIFY_ONLY = ("criterion", "class_balance", "sampler", "threshold_metric", "label_smoothing", "augment",
                 "rr_features", "median_beat", "explain", "optimizer", "momentum", "scheduler", "step", "lr_decay",
                 "pretrained", "amp", "override", "freeze_encoder", "freeze_epochs", "linear_probe", "label_fraction")
ANOMALY_ONLY = ("normal_classes", "generate")
PRETRAIN_ONLY = ("pretext", "transductive")
PRETRAIN_LR = 1e-3  # the pretext tasks' AdamW learning rate unless --lr is given
EXPLAIN_METHODS = ("ig", "gradcam")  # toolbox.explain.METHODS: integrated gradients, Grad-CAM
AGGREGATES = ("mean", "max")  # record score from its windows (loaders.dataset.RecordDataset.aggregate)
STANDARDIZE = ("global", "lead")  # loaders.dataset.fit_standardizer
USES_STEP = ("StepLR", "ReduceLROnPlateau")  # schedulers that read --step
USES_DECAY = ("StepLR", "ExponentialLR", "ReduceLROnPlateau")  # schedulers that read --lr-decay
EPOCH_SHAPED = ("OneCycleLR", "CosineAnnealingLR")  # their shape is fixed by --lr and --epochs at the start
# --override on --resume: the training settings a run may change deliberately (name -> destination)
OVERRIDABLE = {"lr": "lr", "weight-decay": "weight_decay", "momentum": "momentum", "lr-decay": "lr_decay",
               "step": "step", "amp": "amp"}
# Flags outside the run name that change what is trained: on --resume they are taken from the checkpoint,
# and one given on the command line must agree with it (on --test: the seed only).
RECORDED = ("seed", "short_run", "amp")
DS1_RECORDS = 22  # de Chazal's DS1, the records --folds deals out on --split inter (loaders.mitdb.DS1)
MIN_WINDOW = 16  # samples in a record window (--fs x --seq-len); every model accepts this many
# --recipe NAME: a published configuration as one flag. It expands to these flags, written before the
# command line's own (which win where they repeat one); config.json records the name and every flag.
RECIPES: dict[str, list[str]] = {
    # chosen by cross-validation inside DS1 (benchmarks/quality.py --select; docs/benchmarks.md)
    "mitbih-inter": ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3", "--rr-features",
                     "--beat-format", "filtered", "--median-beat"],
    # Strodthoff et al. 2021 (helme/ecg_ptbxl_benchmarking): 100 Hz, 2.5-s crops, windows half a crop apart
    # aggregated by max, standardised on the training folds, one-cycle lr 1e-2, weight decay 1e-2, 50 epochs of 128
    "ptbxl-benchmark": ["--dataset", "ptbxl", "--model-name", "xresnet1d101", "--fs", "100", "--seq-len", "2.5",
                        "--aggregate", "max", "--standardize", "global", "--optimizer", "adamw", "--lr", "0.01",
                        "--weight-decay", "0.01", "--scheduler", "OneCycleLR", "--epochs", "50",
                        "--batch-size", "128"],
}


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


def number(cast, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = True, what: str = ""):
    """Argument type: a ``cast`` number within [low, high) (or the bounds ``low_open``/``high_open`` say)."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if cast is int else 'a number'}, "
                                             f"got '{text}'") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high or value != value:  # value != value: NaN
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = f"{cast.__name__} ({what})"
    return parse


POSITIVE_INT = number(int, low=0, low_open=True, what="positive")
POSITIVE = number(float, low=0, low_open=True, high=float("inf"), what="positive")
NON_NEGATIVE_INT = number(int, low=0, what="0 or more")
NON_NEGATIVE = number(float, low=0, high=float("inf"), what="0 or more")
SEED = number(int, low=0, high=2**32, what="an integer from 0 to 2**32 - 1")
FRACTION = number(float, low=0, high=1, what="at least 0 and below 1")
FACTOR = number(float, low=0, high=1, low_open=True, high_open=False, what="above 0 and at most 1")


def dataset_names(text: str) -> str:
    """Argument type of ``--dataset``: one name of ``DATASETS``, or several joined by commas (pooled pretraining)."""
    names = text.split(",")
    for name in names:
        if name not in DATASETS:
            raise argparse.ArgumentTypeError(f"invalid choice: '{name}' (choose from {', '.join(DATASETS)})")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"'{text}' names a dataset twice")
    return text


def url(text: str) -> str:
    """Argument type: an http(s):// or file:// URL."""
    if not re.match(r"(https?|file)://\S+$", text):
        raise argparse.ArgumentTypeError(f"expected an http://, https:// or file:// URL, got '{text}'")
    return text


def override(text: str) -> tuple[str, str]:
    """Argument type of ``--override``: ``NAME=VALUE`` with NAME one of ``OVERRIDABLE``."""
    name, sep, value = text.partition("=")
    if not sep or name not in OVERRIDABLE:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {', '.join(OVERRIDABLE)}, "
                                         f"got '{text}'")
    return name, value


def get_args_parser() -> argparse.ArgumentParser:
    """The commander's parser, in argument groups; reusable by other scripts."""
    p = OneLineParser(prog="commander.py", description="Train and evaluate deep-learning ECG classifiers.",
                      formatter_class=DefaultsHelpFormatter)
    sources = ", ".join(s.removeprefix("source-") for s in DATASETS["cinc2020"].splits[1:])

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="ecg", type=dataset_names, metavar="{" + ",".join(DATASETS) + "}",
                   help="ecg: MIT-BIH beats, 5 AAMI classes (N S V F Q); ecg_bin: N versus the rest; "
                        "ptb: PTB Diagnostic beats (Kaggle CSVs), normal versus abnormal; cinc2020: "
                        "PhysioNet/CinC Challenge 2020 twelve-lead records, 24 scored classes, multi-label; "
                        "cinc2021: the same records scored as in the 2021 Challenge (26 classes, its reward table); "
                        "ptbxl: PTB-XL twelve-lead records in the label sets of its benchmark (--labels), multi-label; "
                        "--task pretrain pools record datasets given with commas, e.g. cinc2020,ptbxl")
    g.add_argument("--root-dir", default=Path("ecg_data"), type=Path,
                   help="where runs and caches are written; raw databases are read from $ECG_DATA_ROOT/<db> "
                        "when that is set, else from <root-dir>/<db>")
    g.add_argument("--split", default=None, choices=sorted({s for d in DATASETS.values() for s in d.splits}),
                   metavar="SPLIT",
                   help="ecg, ecg_bin: intra (default; stratified random beats, test 20%%, val 10%% of the rest) "
                        "or inter (de Chazal DS1 -> DS2 records, validation = whole DS1 records, paced records "
                        "left out); ptb: intra; cinc2020: records (default; stratified by labels, test 20%%, val "
                        f"20%% of the rest) or source-X (test on every record of source X: {sources}); "
                        "ptbxl: folds (strat_fold 1-8 / 9 / 10)")
    g.add_argument("--split-seed", default=0, type=SEED,
                   help="seed of the train/val/test split and of --folds (fixed so runs share one test set)")
    g.add_argument("--folds", default=None, type=number(int, low=2, what="2 or more"), metavar="K",
                   help="ecg, ecg_bin: cross-validation in K folds; with --fold I the run tests on fold I and trains "
                        "on the other folds. --split inter: K folds of whole DS1 records (each holding S and V "
                        "beats; at most 22), validation records drawn from the training folds, DS2 not used; "
                        "--split intra: K stratified folds of all beats (seeded), validation a stratified 10%% of "
                        "the training folds' beats")
    g.add_argument("--fold", default=None, type=POSITIVE_INT, metavar="I", help="which fold of --folds to test on")
    g.add_argument("--data-url", default=None, type=url,
                   help="mirror to download missing raw data from: a base URL holding the MIT-BIH files "
                        "(default: PhysioNet), or for ptb the URL of the Kaggle archive (default: Google Drive)")

    g.add_argument("--fs", default=None, type=POSITIVE_INT,
                   help="cinc2020, cinc2021, ptbxl: resample records to this rate in Hz (default: cinc2020, "
                        "cinc2021 500, ptbxl 100)")
    g.add_argument("--leads", default=12, type=int, choices=list(LEAD_SETS),
                   help="cinc2020, cinc2021: the Challenge 2021 lead subsets: 12, 6 (I, II, III, aVR, aVL, aVF), "
                        "4 (I, II, III, V2), 3 (I, II, V2) or 2 (I, II); the model's input channels follow")
    g.add_argument("--labels", default=PTBXL_LABEL_SETS[0], choices=list(PTBXL_LABEL_SETS),
                   help="ptbxl: the PTB-XL benchmark's label set: superdiagnostic (5 classes), subdiagnostic (their "
                        "subclasses), diagnostic, form, rhythm (those statements) or all (every statement); records "
                        "without a label of the set are left out")
    g.add_argument("--seq-len", default=10.0, type=POSITIVE,
                   help="cinc2020, cinc2021, ptbxl: window length in seconds (random crops for training, sliding "
                        "windows aggregated for evaluation, --aggregate; shorter records are zero-padded)")
    g.add_argument("--aggregate", default="mean", choices=list(AGGREGATES),
                   help="cinc2020, cinc2021, ptbxl: how a record's score per class comes from its sliding windows "
                        "(half a window apart) at validation, test and predict.py: their mean, or their max (the "
                        "PTB-XL benchmark's)")
    g.add_argument("--standardize", default=None, choices=list(STANDARDIZE),
                   help="cinc2020, cinc2021, ptbxl: subtract a mean and divide by a standard deviation fitted on "
                        "the training records only (never validation or test): one for all leads (global, the "
                        "PTB-XL benchmark's) or one per lead; kept in the checkpoint, so predict.py applies the same")
    g.add_argument("--rr-features", action="store_true",
                   help="ecg, ecg_bin: give the network each beat's RR intervals (previous, next, mean of the last 10, "
                        "and previous / mean of the last 10; divided by the record's mean RR) as 4 per-beat features "
                        "joined with the network's output")
    g.add_argument("--beat-format", default="kaggle", choices=list(BEAT_FORMAT_NAMES),
                   help="ecg, ecg_bin from the raw records: kaggle (a beat starts at its R peak and ends after 1.2 x "
                        "the median RR, min-max scaled per 10-s window: the Kaggle CSVs), centered (starts 0.5 s "
                        "before the R peak: P wave and QRS onset included; same scaling), filtered (centered, "
                        "baseline wander removed and each record divided by its median beat amplitude): 187 "
                        "samples at 125 Hz; or beatgan (BeatGAN's beats: 320 samples at 360 Hz from 140 before the "
                        "R peak, both leads, MLII first, each beat scaled to [-1, 1] by its min and max over both "
                        "leads; not with --median-beat or a --preprocess normalisation)")
    g.add_argument("--median-beat", action="store_true",
                   help="ecg, ecg_bin from the raw records: give the network, beside each beat, the median of its "
                        "record's beats that do not come early (RR prematurity >= 0.9; what this patient's beats "
                        "look like, no labels used) as a second signal channel")
    g.add_argument("--preprocess", default=[], nargs="+", choices=list(PREPROCESS_STEPS), metavar="STEP",
                   help="applied once, when the cache is built, in this order whatever the order given: bandpass "
                        "(zero-phase Butterworth, --bandpass), baseline (wander removed: median filters of 200 ms "
                        "then 600 ms), then zscore (mean 0, sd 1) or minmax ([0, 1]) per record and lead; record "
                        "datasets: at --fs (resampling comes first), stored in the cache's name and every "
                        "checkpoint, so predict.py and driver.py apply the same; ecg, ecg_bin from the raw records: "
                        "bandpass and baseline on each record at the beat rate before beats are cut, zscore or "
                        f"minmax per beat; choose from {', '.join(PREPROCESS_STEPS)}")
    g.add_argument("--bandpass", default=list(BANDPASS), nargs=2, type=POSITIVE, metavar="HZ",
                   help="--preprocess bandpass: its low and high edges in Hz (order 4, run forwards and backwards); "
                        "the high edge must lie below half the rate (--fs; for beats 125 Hz, beatgan 360 Hz)")
    g.add_argument("--augment", default=[], nargs="+", choices=list(AUGMENTATIONS), metavar="KIND",
                   help="augment training batches (never validation or test), in this order: cutmix (paste up to "
                        "half the window of another record into each, targets blended by the share of samples), "
                        "mixup (blend each example with another, weight Beta(0.4, 0.4) folded to at least 0.5, "
                        "targets and RR features alike), stretch (time x0.9-1.1), renormalize (z-score, then the "
                        "example's own sd x1/1.5-1.5 and mean moved up to 0.25 sd), invert (the polarity of 20%% of "
                        "the examples), scale (amplitude x0.8-1.2), noise (Gaussian, sd up to 5%% of the example's), "
                        "wander (a slow sinusoid up to 10%%, the same in every lead), leadwander (wander drawn per "
                        "lead), shift (up to 5%% of the length), mask (zero 3 segments of up to 5%% each); cutmix and "
                        "leadwander are for the record datasets")

    g = p.add_argument_group("model")
    g.add_argument("--model-name", default="resnet1d_10", choices=list(MODELS), help="architecture")
    g.add_argument("--num-classes", default=None, type=POSITIVE_INT,
                   help="number of classes; derived from the dataset, an error if it disagrees")
    g.add_argument("--pretrained", default=None, type=Path, metavar="PATH",
                   help="initialise the model from this checkpoint or run folder (its model_best.pth.tar): all "
                        "weights of a run of the same model and classes, else the encoder (every tensor but the "
                        "head) of a --task pretrain run or another classifier, reporting what was loaded and what "
                        "is new; the run's name ends in _ft, and --resume or --test of it take the same flag")
    g.add_argument("--freeze-encoder", action="store_true",
                   help="with --pretrained: train the head only; the encoder's weights stay as loaded")
    g.add_argument("--freeze-epochs", default=None, type=POSITIVE_INT, metavar="N",
                   help="with --pretrained: train the head only for the first N epochs, then everything")
    g.add_argument("--linear-probe", action="store_true",
                   help="with --pretrained: --freeze-encoder with the encoder also in evaluation mode (batch-norm "
                        "statistics fixed, no dropout): the head learns on fixed features")

    g = p.add_argument_group("task")
    g.add_argument("--task", default="classify", choices=list(TASKS),
                   help="classify: a classifier learns the labels; anomaly: a generative model "
                        f"({', '.join(GENERATIVE)}) learns the normal beats of a beat dataset (training sees them "
                        "only) and scores how abnormal each beat is (docs/anomaly.md); pretrain: a classifier's "
                        "encoder learns a pretext task (--pretext) from unlabelled signal, for --pretrained "
                        "(docs/pretraining.md)")
    g.add_argument("--label-fraction", default=None, type=FACTOR, metavar="F",
                   help="--task classify: train on this fraction of the training split, drawn per class (multi-label: "
                        "per rarest label) with --seed; validation and test are unchanged (label-efficiency studies)")
    g.add_argument("--pretext", default="masked", choices=list(PRETEXTS),
                   help="--task pretrain: masked (reconstruct masked segments), contrastive (two augmented views of "
                        "each example, NT-Xent) or flip (which leads were sign-flipped and whether time was "
                        "reversed: transformation recognition, the baseline); docs/pretraining.md")
    g.add_argument("--transductive", action="store_true",
                   help="--task pretrain: also learn from the test split's signal (unlabelled); splits.json marks "
                        "the run, and results that use it must say so")
    g.add_argument("--normal-classes", default=None, nargs="+", metavar="CLASS",
                   help="--task anomaly: the classes counted normal (default: the first class, N for ecg and "
                        "ecg_bin, normal for ptb)")
    g.add_argument("--generate", default=None, type=POSITIVE_INT, metavar="N",
                   help="with --resume: draw N beats from a trained generative run (vae1d, vaegan, dcgan) into "
                        "generated/, with a PNG grid, MMD^2 against real normal test beats and train-on-synthetic/"
                        "test-on-real scores")
    g.add_argument("--config", default=None, type=Path, metavar="RUN_DIR/config.json",
                   help="run the experiment a run's config.json records again, into a new version; flags given "
                        "beside it win")

    g = p.add_argument_group("run")
    g.add_argument("--recipe", default=None, choices=list(RECIPES),
                   help="a published configuration in one flag; flags given beside it win: " + "; ".join(
                       f"{name} = {' '.join(flags)}" for name, flags in RECIPES.items()))
    g.add_argument("--version", default=None, type=word_or_number("version"), metavar="{latest,bump,N}",
                   help="run version: bump makes a new one, latest reuses the newest, N picks one "
                        "(default: bump when training, latest with --resume or --test)")
    g.add_argument("--resume", default=None, type=word_or_number("resume"), metavar="{best,latest,N}",
                   help="continue from the run's best, last or epoch-N checkpoint (full state); flags outside the "
                        "run name (--seed, --short-run, --amp, --epochs) are taken from the checkpoint unless given")
    g.add_argument("--override", default=[], nargs="+", type=override, metavar="NAME=VALUE",
                   help="with --resume: change a training setting of the run deliberately, e.g. lr=1e-4 to extend "
                        f"it at a lower rate ({', '.join(OVERRIDABLE)}); recorded in config.json and the checkpoints")
    g.add_argument("--allow-world-size-change", action="store_true",
                   help="with --resume under torchrun: continue a run with another number of processes than it was "
                        "trained with (the order of examples then differs from an uninterrupted run)")
    g.add_argument("--test", action="store_true",
                   help="evaluate a trained run on the test split and write pred/ (loads --resume, default best)")
    g.add_argument("--bootstrap", default=1000, type=NON_NEGATIVE_INT, metavar="N",
                   help="--test: resamples for the 95%% bootstrap confidence intervals (whole records where records "
                        "are the unit; seeded, so reproducible); 0 for none")
    g.add_argument("--explain", default=None, type=POSITIVE_INT, metavar="N",
                   help="--test: draw saliency maps (PNG, one row per named lead) of N test examples into "
                        "pred/explain/, chosen round by round: the most confident correct decision of each class, "
                        "then the most confident wrong one (docs/training.md, Saliency maps); records show the window "
                        "with the highest score of the explained class")
    g.add_argument("--explain-method", default="ig", choices=list(EXPLAIN_METHODS),
                   help="--explain: ig (integrated gradients: signed, per lead and sample, any model) or gradcam "
                        "(Grad-CAM of the feature map the head pools: convolutional models, one map for all leads)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", default="adamw", choices=list(OPTIMIZERS))
    g.add_argument("--lr", default=3e-3, type=POSITIVE, help="learning rate (peak rate for OneCycleLR)")
    g.add_argument("--momentum", default=0.9, type=FRACTION, help="SGD momentum (Nesterov); sgd only")
    g.add_argument("--weight-decay", default=1e-4, type=NON_NEGATIVE, help="weight decay, for every optimizer")
    g.add_argument("--batch-size", default=128, type=POSITIVE_INT)
    g.add_argument("--epochs", default=10, type=POSITIVE_INT,
                   help="train until this many epochs are done (with --resume: the run's own unless given)")
    g.add_argument("--start-epoch", default=None, type=NON_NEGATIVE_INT,
                   help="with --resume only: must equal the checkpoint's epoch (a check, nothing more)")
    g.add_argument("-j", "--workers", default=0, type=NON_NEGATIVE_INT,
                   help="DataLoader worker processes (results do not depend on it; data is in memory: 0 is "
                        "usually fastest)")

    g = p.add_argument_group("schedule")
    g.add_argument("--scheduler", default="OneCycleLR", choices=list(SCHEDULERS))
    g.add_argument("--step", default=5, type=POSITIVE_INT,
                   help="StepLR step size in epochs; ReduceLROnPlateau patience")
    g.add_argument("--lr-decay", default=0.1, type=FACTOR,
                   help="factor for StepLR, ExponentialLR and ReduceLROnPlateau (below 1 for the latter)")

    g = p.add_argument_group("class imbalance")
    g.add_argument("--criterion", default=None, choices=list(CRITERIA),
                   help="loss (default: crossentropy; bce, binary cross-entropy on logits, for multi-label datasets)")
    g.add_argument("--class-balance", default=None, choices=list(BALANCE),
                   help="weight the loss per class: equal ~ 1/n_c, importance ~ 1/sqrt(n_c); with bce, positive "
                        "examples of class c are weighted (n_neg/n_pos) ** 1 or ** 0.5")
    g.add_argument("--threshold-metric", default=None, choices=list(THRESHOLD_OBJECTIVES),
                   help="multi-label datasets: per-class decision thresholds are chosen on the validation split "
                        "to maximise this (default: challenge for cinc2020, f1 for ptbxl)")
    g.add_argument("--sampler", default=None, choices=list(BALANCE),
                   help="draw training examples per class: equal ~ 1/n_c, importance ~ 1/sqrt(n_c)")
    g.add_argument("--label-smoothing", default=0.0, type=FRACTION, metavar="EPS",
                   help="crossentropy: mix each one-hot target with the uniform distribution by EPS (e.g. 0.1)")

    g = p.add_argument_group("misc")
    g.add_argument("--seed", default=0, type=SEED, help="seed of weights, shuffling and sampling")
    g.add_argument("--short-run", action="store_true",
                   help="stop each train/val/test pass after 10 batches (test outputs get their own names)")
    g.add_argument("--disable-cuda", action="store_true", help="run on the CPU even when CUDA is available")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="bfloat16 autocast on CUDA (ignored on the CPU)")
    g.add_argument("--tensorboard", action="store_true", help="write TensorBoard events into the run folder")
    g.add_argument("--verbose", action="store_true", help="print class counts per split and progress details")
    return p


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """Destinations of the flags written on the command line (a default does not count)."""
    quiet = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS, "nargs": action.nargs}
            if isinstance(action, argparse.BooleanOptionalAction | argparse._StoreTrueAction):
                quiet.add_argument(*action.option_strings, action=type(action), dest=action.dest,
                                   default=argparse.SUPPRESS)
                continue
            quiet.add_argument(*action.option_strings, **kwargs)
    return sorted(vars(quiet.parse_known_args(argv)[0]))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate flags; a bad value or combination exits with one line and code 2.

    ``args.given`` lists the flags written on the command line; ``args.override`` becomes a dict.
    """
    parser = get_args_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.config is not None:  # the saved run's flags first, so that the command line's own win
        if args.resume or args.test or args.recipe:
            parser.error("--config starts a new run of a saved experiment; leave out --resume, --test and --recipe")
        argv = [*config_flags(parser, args.config), *argv]
        args = parser.parse_args(argv)
    if args.recipe is not None:  # its flags first, so that the command line's own win
        argv = [*RECIPES[args.recipe], *argv]
        args = parser.parse_args(argv)
    args.given = given_flags(parser, argv)
    given = set(args.given)
    args.pool = args.dataset.split(",")
    spec = DATASETS[args.pool[0]]
    _check_pool(parser, args, given)
    _check_task(parser, args, given)
    if args.sampler and args.class_balance:
        parser.error("--sampler and --class-balance both rebalance classes; use one of them")
    args.augment = sorted(set(args.augment), key=list(AUGMENTATIONS).index)
    for name in args.augment:
        if name in RECORD_AUGMENTATIONS and not spec.multilabel:
            records = ", ".join(n for n, d in DATASETS.items() if d.multilabel)
            parser.error(f"--augment {name} is for the record datasets ({records}), not the beats of "
                         f"{args.dataset}: {RECORD_AUGMENTATIONS[name]}")
    if args.test and args.resume is None:
        args.resume = "best"
    if args.version is None:
        args.version = "latest" if (args.resume or args.test) else "bump"
    if args.version == "bump" and args.resume:
        parser.error("--version bump makes a new run; --resume and --test need latest or a number")
    if args.pretrained is not None and args.pretrained.is_dir():  # a run folder: its best checkpoint
        args.pretrained = args.pretrained / "model_best.pth.tar"
    if args.pretrained is not None and not args.resume and not args.pretrained.is_file():
        parser.error(f"--pretrained {args.pretrained}: no such file")
    frozen = [f for f, on in (("--freeze-encoder", args.freeze_encoder), ("--linear-probe", args.linear_probe),
                              ("--freeze-epochs", args.freeze_epochs is not None)) if on]
    if len(frozen) > 1:
        parser.error(f"{frozen[0]} and {frozen[1]} both say how long the encoder stays frozen; use one of them")
    if frozen and args.pretrained is None:
        parser.error(f"{frozen[0]} freezes a pretrained encoder: add --pretrained RUN_DIR (a --task pretrain run)")
    for flag, on in (("--rr-features", args.rr_features), ("--beat-format", args.beat_format != "kaggle"),
                     ("--median-beat", args.median_beat), ("--folds", args.folds is not None)):
        if on and spec.db != "mitdb":
            parser.error(f"{flag} applies to the MIT-BIH beats (ecg, ecg_bin), not to {args.dataset}")
    if args.median_beat and args.beat_format == "beatgan":
        parser.error("--median-beat: --beat-format beatgan beats have 2 leads of their own; leave --median-beat out")
    if args.split is None:
        args.split = spec.splits[0]
    elif args.split not in spec.splits:
        parser.error(f"--split {args.split} is not a split of --dataset {args.dataset}; "
                     f"valid: {', '.join(spec.splits)}")
    if len(args.pool) > 1:  # each pooled dataset keeps its own default split
        args.split = "pooled"
    if "labels" in given and not spec.label_sets:
        parser.error(f"--labels picks a PTB-XL label set (--dataset ptbxl), not labels of {args.dataset}")
    if "leads" in given and not spec.lead_sets:
        parser.error(f"--leads picks Challenge 2021 lead subsets (cinc2020, cinc2021), not leads of {args.dataset}")
    _check_folds(parser, args)
    _check_optimisation(parser, args, given)
    if spec.multilabel:
        args.fs = args.fs or spec.fs
        args.criterion = args.criterion or "bce"
        args.threshold_metric = args.threshold_metric or default_threshold_metric(args.dataset)
        if args.criterion != "bce" and args.task != "pretrain":
            parser.error(f"--dataset {args.dataset} is multi-label: use --criterion bce, not {args.criterion}")
        if args.sampler:
            parser.error(f"--sampler draws single-label classes; for --dataset {args.dataset} use --class-balance")
        if args.threshold_metric == "challenge" and not spec.lead_sets:
            parser.error("--threshold-metric challenge needs a Challenge reward table (--dataset cinc2020 or cinc2021)")
        if args.data_url:
            parser.error(f"--data-url is for the databases that download themselves (MIT-BIH, ptb), not "
                         f"{args.dataset}")
        if round(args.fs * args.seq_len) < MIN_WINDOW:
            parser.error(f"--fs {args.fs} x --seq-len {args.seq_len:g} gives windows of "
                         f"{round(args.fs * args.seq_len)} samples; the models need at least {MIN_WINDOW}")
    else:
        wrong = [flag for flag, name in (("--fs", "fs"), ("--seq-len", "seq_len"), ("--aggregate", "aggregate"),
                                         ("--standardize", "standardize"),
                                         ("--threshold-metric", "threshold_metric")) if name in given]
        if wrong:
            parser.error(f"{wrong[0]} applies to the record datasets (cinc2020, cinc2021, ptbxl), not to "
                         f"{args.dataset}")
        args.criterion = args.criterion or "crossentropy"
        if args.criterion == "bce":
            parser.error(f"--criterion bce is for multi-label datasets; --dataset {args.dataset} is single-label")
    if args.label_smoothing and args.criterion != "crossentropy":
        parser.error(f"--label-smoothing applies to --criterion crossentropy, not {args.criterion}")
    _check_preprocess(parser, args, given)
    if args.explain is not None and not args.test:
        parser.error("--explain draws saliency maps of test examples; use it with --test")
    if "explain_method" in given and args.explain is None:
        parser.error("--explain-method chooses how --explain N draws its maps; add --explain N")
    if "bootstrap" in given and not args.test:
        parser.error("--bootstrap sets the confidence intervals of --test")
    args.override = _check_overrides(parser, args)
    return args


def config_flags(parser: argparse.ArgumentParser, path: Path) -> list[str]:
    """The command-line flags a run's config.json records its first invocation was given (``recipe`` expanded, and
    those of a ``--config`` it came from), except those that say what to do with a run (``RUN_CONTROL``)."""
    if path.is_dir():
        path = path / "config.json"
    try:
        config = json.loads(path.read_text())
        given = config["invocations"][0]["given"]
        if not isinstance(given, dict):
            raise TypeError("the first invocation's flags are not a mapping")
    except OSError as exc:
        parser.error(f"--config {path}: cannot read it ({exc.strerror or exc}); give a run folder's config.json")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        parser.error(f"--config {path}: not a pytorch-ecg config.json ({type(exc).__name__}: {exc})")
    argv: list[str] = []
    for action in parser._actions:
        dest = action.dest
        if not action.option_strings or dest in RUN_CONTROL or dest not in given:
            continue
        value = given[dest]
        flag = next(o for o in action.option_strings if o.startswith("--") and not o.startswith("--no-"))
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        elif value is not None:
            argv += [flag, f"{value!r}" if isinstance(value, float) else str(value)]
    return argv


def _check_pool(parser: argparse.ArgumentParser, args: argparse.Namespace, given: set[str]) -> None:
    """Several datasets (comma-separated) are pooled for --task pretrain only, and only records with records."""
    if len(args.pool) == 1:
        return
    if "split" in given:
        parser.error(f"--dataset {args.dataset}: pooled datasets each keep their own default split (the test "
                     f"records they leave out are listed in splits.json); leave out --split")
    if args.task != "pretrain":
        parser.error(f"--dataset {args.dataset}: several datasets are pooled for --task pretrain only (labels of "
                     f"different databases do not mix); train a classifier on one of them")
    if not all(DATASETS[n].multilabel for n in args.pool):
        records = ", ".join(n for n, d in DATASETS.items() if d.multilabel)
        parser.error(f"--dataset {args.dataset}: only the record datasets ({records}) pool (their windows share "
                     f"--fs, --seq-len and the twelve leads); pretrain on beats one dataset at a time")
    dbs = [DATASETS[n].db for n in args.pool]
    if len(set(dbs)) != len(dbs):
        parser.error(f"--dataset {args.dataset}: cinc2020 and cinc2021 are the same records; pool one of them")


def _check_task(parser: argparse.ArgumentParser, args: argparse.Namespace, given: set[str]) -> None:
    """A generative model goes with --task anomaly and a beat dataset; flags the task would not read are refused."""
    spec = DATASETS[args.pool[0]]
    generative = args.model_name in GENERATIVE
    if args.task == "pretrain":
        if generative:
            parser.error(f"--task pretrain trains the encoder of a classifier ({', '.join(CLASSIFIERS[:4])}, ...); "
                         f"{args.model_name} is a generative model (--task anomaly)")
        wrong = [name for name in (*CLASSIFY_ONLY, *ANOMALY_ONLY) if name in given]
        if wrong:
            parser.error(f"--{wrong[0].replace('_', '-')} is not read by --task pretrain (it ignores labels and "
                         f"trains the encoder and its pretext head with AdamW at --lr and --weight-decay)")
        if args.test:
            parser.error("--task pretrain has no test step; use the run with --pretrained RUN_DIR to fine-tune a "
                         "classifier, and test that")
        args.optimizer, args.scheduler, args.criterion = "adamw", "none", "none"
        if "lr" not in given:
            args.lr = PRETRAIN_LR
        return
    wrong = [name for name in PRETRAIN_ONLY if name in given]
    if wrong:
        parser.error(f"--{wrong[0].replace('_', '-')} is for --task pretrain")
    if args.task == "anomaly":
        if spec.multilabel:
            beats = ", ".join(n for n, d in DATASETS.items() if not d.multilabel)
            parser.error(f"--task anomaly scores beats ({beats}), not the records of {args.dataset}")
        if not generative:
            parser.error(f"--task anomaly trains a generative model ({', '.join(GENERATIVE)}); {args.model_name} is "
                         f"a classifier")
        wrong = [name for name in CLASSIFY_ONLY if name in given]
        if wrong:
            parser.error(f"--{wrong[0].replace('_', '-')} is a classification flag; --task anomaly does not read it "
                         f"(generative models train in float32 with their own AdamW optimisers at --lr and "
                         f"--weight-decay)")
        args.optimizer, args.scheduler, args.criterion = "adam", "none", "none"
        if "lr" not in given:
            args.lr = GENERATIVE[args.model_name]
        if args.generate is not None and args.test:
            parser.error("--generate and --test are two steps: run them one after the other")
        if args.generate is not None and not args.resume:
            parser.error("--generate draws from a trained run: add --resume best (or latest, or N)")
        return
    if generative:
        parser.error(f"{args.model_name} is a generative model: it learns normal beats with --task anomaly; for "
                     f"classification choose one of {', '.join(CLASSIFIERS[:4])}, ...")
    wrong = [name for name in ANOMALY_ONLY if name in given]
    if wrong:
        parser.error(f"--{wrong[0].replace('_', '-')} is for --task anomaly")


def default_threshold_metric(dataset: str) -> str:
    return "challenge" if DATASETS[dataset.split(",")[0]].lead_sets else "f1"


def _check_folds(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.folds is None) != (args.fold is None):
        parser.error("--folds K and --fold I go together (test on fold I of K)")
    if args.folds is not None:
        if args.fold > args.folds:
            parser.error(f"--fold {args.fold} is not one of the {args.folds} folds (1-{args.folds})")
        if args.split == "inter" and args.folds > DS1_RECORDS:
            parser.error(f"--folds {args.folds}: DS1 has {DS1_RECORDS} records; use 2 to {DS1_RECORDS} folds")


def _check_preprocess(parser: argparse.ArgumentParser, args: argparse.Namespace, given: set[str]) -> None:
    """``--preprocess`` steps put in the order they are applied, and refused where they do not apply."""
    spec = DATASETS[args.pool[0]]
    args.preprocess = [s for s in PREPROCESS_STEPS if s in args.preprocess]
    if "bandpass" in given and "bandpass" not in args.preprocess:
        parser.error("--bandpass sets the edges of --preprocess bandpass; add bandpass to --preprocess")
    if not args.preprocess:
        return
    if not spec.multilabel and spec.db != "mitdb":
        parser.error(f"--preprocess applies to the record datasets (cinc2020, cinc2021, ptbxl) and the MIT-BIH "
                     f"beats (ecg, ecg_bin), not to {args.dataset}: its Kaggle CSV beats come preprocessed by their "
                     f"publisher")
    if "zscore" in args.preprocess and "minmax" in args.preprocess:
        parser.error("--preprocess zscore and minmax both normalise; choose one of them")
    if "baseline" in args.preprocess and args.beat_format == "filtered":
        parser.error("--preprocess baseline: --beat-format filtered removes the baseline already; leave baseline out")
    normaliser = next((s for s in args.preprocess if s in ("zscore", "minmax")), None)
    if normaliser and args.beat_format == "beatgan" and not spec.multilabel:
        parser.error(f"--preprocess {normaliser}: --beat-format beatgan scales each beat to [-1, 1] already; leave "
                     f"{normaliser} out")
    fs = args.fs if spec.multilabel else BEAT_FORMAT_FS[args.beat_format]
    low, high = args.bandpass
    if "bandpass" in args.preprocess and not low < high < fs / 2:
        parser.error(f"--bandpass {low:g} {high:g}: the low edge must lie below the high one, and the high one below "
                     f"{fs / 2:g} Hz (half the rate of {f'--fs {fs}' if spec.multilabel else f'the beats, {fs} Hz'})")


def _check_optimisation(parser: argparse.ArgumentParser, args: argparse.Namespace, given: set[str]) -> None:
    """Flags that the chosen optimizer or scheduler would ignore are refused, not dropped."""
    if "momentum" in given and args.optimizer != "sgd":
        parser.error(f"--momentum applies to --optimizer sgd, not {args.optimizer}")
    if "step" in given and args.scheduler not in USES_STEP:
        parser.error(f"--step applies to {' and '.join(USES_STEP)}, not {args.scheduler}")
    if "lr_decay" in given and args.scheduler not in USES_DECAY:
        parser.error(f"--lr-decay applies to {', '.join(USES_DECAY)}, not {args.scheduler}")
    if args.scheduler == "ReduceLROnPlateau" and args.lr_decay >= 1:
        parser.error("--lr-decay must be below 1 for ReduceLROnPlateau")
    if args.allow_world_size_change and not args.resume:
        parser.error("--allow-world-size-change continues a run (with --resume)")
    if args.start_epoch is not None and not args.resume:
        parser.error("--start-epoch confirms where a resumed run continues (with --resume); a new run starts at "
                     "epoch 0")


def _check_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """``--override`` pairs as {destination: typed value}, refused where they cannot apply."""
    if args.override and (not args.resume or args.test):
        parser.error("--override changes a run being continued; use it with --resume (and without --test)")
    types = {a.dest: a for a in parser._actions}
    out: dict[str, Any] = {}
    for name, text in args.override:
        dest = OVERRIDABLE[name]
        if dest == "amp":
            if text.lower() not in ("true", "false", "1", "0"):
                parser.error(f"--override amp={text}: expected true or false")
            value: Any = text.lower() in ("true", "1")
        else:
            try:
                value = types[dest].type(text)
            except argparse.ArgumentTypeError as exc:
                parser.error(f"--override {name}={text}: {exc}")
        if dest == "lr" and args.scheduler in EPOCH_SHAPED:
            parser.error(f"--override lr: {args.scheduler} fixed its rates when the run started; it cannot change")
        if dest == "momentum" and args.optimizer != "sgd":
            parser.error(f"--override momentum applies to --optimizer sgd, not {args.optimizer}")
        if (dest == "step" and args.scheduler not in USES_STEP) or (dest == "lr_decay" and
                                                                   args.scheduler not in USES_DECAY):
            parser.error(f"--override {name} does not apply to --scheduler {args.scheduler}")
        if dest == "lr_decay" and args.scheduler == "ReduceLROnPlateau" and value >= 1:
            parser.error("--override lr-decay must be below 1 for ReduceLROnPlateau")
        out[dest] = value  # a --{name} beside it names the run being continued; the override is the new value
    return out


# ---- run names ----

def _defaults() -> argparse.Namespace:
    return get_args_parser().parse_args([])


def name_parts(args: argparse.Namespace) -> list[str]:
    """The parts of the run name: every flag that changes what is trained and is not at its default
    (the epoch count is left out, so a run can be continued; seeds are versions of one name)."""
    d = _defaults()
    parts = [args.model_name, args.split]
    if args.folds is not None:
        parts.append(f"cv{args.fold}of{args.folds}")
    if args.split_seed != d.split_seed:
        parts.append(f"ss{args.split_seed}")
    if args.task == "anomaly":
        return parts + _anomaly_parts(args, d)
    if args.task == "pretrain":
        return parts + _pretrain_parts(args, d)
    parts += [args.optimizer, f"lr{args.lr:g}"]
    if args.optimizer == "sgd" and args.momentum != d.momentum:
        parts.append(f"mom{args.momentum:g}")
    if args.weight_decay != d.weight_decay:
        parts.append(f"wd{args.weight_decay:g}")
    parts += [f"bs{args.batch_size}", args.scheduler]
    if args.scheduler in USES_STEP and args.step != d.step:
        parts.append(f"step{args.step}")
    if args.scheduler in USES_DECAY and args.lr_decay != d.lr_decay:
        parts.append(f"decay{args.lr_decay:g}")
    parts.append(args.criterion)
    if args.fs is not None:  # record datasets: what a window is
        parts.append(f"{args.fs}hz-{args.seq_len:g}s")
    if args.standardize is not None:
        parts.append(f"std-{args.standardize}")
    if args.aggregate != d.aggregate:
        parts.append(f"agg-{args.aggregate}")
    if args.leads != d.leads:
        parts.append(f"leads{args.leads}")
    if args.labels != d.labels:
        parts.append(f"labels-{args.labels}")
    if args.preprocess:
        parts.append(f"pre-{preprocess_tag(args.preprocess, args.bandpass)}")
    if args.threshold_metric is not None and args.threshold_metric != default_threshold_metric(args.dataset):
        parts.append(f"thr-{args.threshold_metric}")
    if args.class_balance:
        parts.append(f"cb-{args.class_balance}")
    if args.sampler:
        parts.append(f"sampler-{args.sampler}")
    if args.beat_format != d.beat_format:
        parts.append(f"beats-{args.beat_format}")
    if args.median_beat:
        parts.append("med")
    if args.rr_features:
        parts.append("rr")
    if args.augment:
        parts.append("aug-" + "+".join(args.augment))
    if args.label_smoothing:
        parts.append(f"ls{args.label_smoothing:g}")
    if args.label_fraction is not None:
        parts.append(f"labels{args.label_fraction:g}")
    if args.pretrained is not None:
        parts.append("ft")
    if args.linear_probe:
        parts.append("probe")
    elif args.freeze_encoder:
        parts.append("frozen")
    elif args.freeze_epochs is not None:
        parts.append(f"frozen{args.freeze_epochs}")
    return parts


def _pretrain_parts(args: argparse.Namespace, d: argparse.Namespace) -> list[str]:
    """The run-name parts of a pretraining run after model, split and folds."""
    parts = ["pretrain", args.pretext, f"lr{args.lr:g}"]
    if args.weight_decay != d.weight_decay:
        parts.append(f"wd{args.weight_decay:g}")
    parts.append(f"bs{args.batch_size}")
    if args.fs is not None:
        parts.append(f"{args.fs}hz-{args.seq_len:g}s")
    if args.standardize is not None:
        parts.append(f"std-{args.standardize}")
    if args.leads != d.leads:
        parts.append(f"leads{args.leads}")
    if args.beat_format != d.beat_format:
        parts.append(f"beats-{args.beat_format}")
    if args.preprocess:
        parts.append(f"pre-{preprocess_tag(args.preprocess, args.bandpass)}")
    if args.transductive:
        parts.append("transductive")
    return parts


def _anomaly_parts(args: argparse.Namespace, d: argparse.Namespace) -> list[str]:
    """The run-name parts of a generative run after model, split and folds (its optimisers are the model's)."""
    parts = ["anomaly", f"lr{args.lr:g}"]
    if args.weight_decay != d.weight_decay:
        parts.append(f"wd{args.weight_decay:g}")
    parts.append(f"bs{args.batch_size}")
    if args.normal_classes:
        parts.append("normal-" + "+".join(args.normal_classes))
    if args.beat_format != d.beat_format:
        parts.append(f"beats-{args.beat_format}")
    if args.preprocess:
        parts.append(f"pre-{preprocess_tag(args.preprocess, args.bandpass)}")
    return parts


def run_name(args: argparse.Namespace) -> str:
    """Run name from the flags that change what is trained (see :func:`name_parts`)."""
    return "_".join(name_parts(args))


# flags a user repeats to find a run again (--root-dir and the flags of name_parts)
NAMING = ("root_dir", "task", "model_name", "split", "folds", "fold", "split_seed", "fs", "seq_len", "standardize",
          "aggregate", "leads", "labels",
          "optimizer", "lr", "momentum", "weight_decay", "batch_size", "scheduler", "step", "lr_decay", "criterion",
          "class_balance", "sampler", "threshold_metric", "label_smoothing", "beat_format", "pretrained",
          "label_fraction", "freeze_epochs", "pretext")
SWITCHES = ("median_beat", "rr_features", "freeze_encoder", "linear_probe", "transductive")


def naming_flags(args: argparse.Namespace) -> list[str]:
    """The command-line flags that name this run (those not at their dataset's or recipe's defaults), for
    printed hints."""
    defaults = parse_args(["--dataset", args.pool[0], *(["--recipe", args.recipe] if args.recipe else [])])
    flags = ["--recipe", args.recipe] if args.recipe else []
    if args.dataset != defaults.dataset or ("dataset" in args.given and not args.recipe):
        flags += ["--dataset", args.dataset]
    for name in NAMING:
        value = getattr(args, name)
        if args.task in ("anomaly", "pretrain") and name in CLASSIFY_ONLY:  # set by the task
            continue
        if value is not None and value != getattr(defaults, name):
            flags += [f"--{name.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    flags += [f"--{name.replace('_', '-')}" for name in SWITCHES if getattr(args, name) and
              not getattr(defaults, name)]
    if args.augment and args.augment != defaults.augment:
        flags += ["--augment", *args.augment]
    if args.normal_classes:
        flags += ["--normal-classes", *args.normal_classes]
    if args.preprocess and args.preprocess != defaults.preprocess:
        flags += ["--preprocess", *args.preprocess]
        if "bandpass" in args.preprocess and args.bandpass != defaults.bandpass:
            flags += ["--bandpass", *(f"{v:g}" for v in args.bandpass)]
    return flags


# ---- run folders and versions ----

def existing_versions(runs_dir: Path, name: str) -> list[int]:
    """Version numbers of the runs ``<name>_<N>`` in ``runs_dir``, ascending."""
    if not runs_dir.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(name)}_(\d+)")
    return sorted(int(m.group(1)) for d in runs_dir.iterdir() if d.is_dir() and (m := pattern.fullmatch(d.name)))


def has_trained(run_dir: Path) -> bool:
    """Whether a run folder holds a checkpoint (a new training must not write into it)."""
    return run_dir.is_dir() and any(run_dir.glob("*.pth.tar"))


def claim_run(runs_dir: Path, name: str) -> Path:
    """Create and return the folder of a new version of run ``name``, atomically.

    ``mkdir`` fails when the folder exists, so two jobs started together get two versions.
    """
    runs_dir.mkdir(parents=True, exist_ok=True)
    versions = existing_versions(runs_dir, name)
    version = (versions[-1] if versions else 0) + 1
    while True:
        folder = runs_dir / f"{name}_{version}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            version += 1


def select_run(runs_dir: Path, name: str, version: str, *, existing: bool,
               args: argparse.Namespace | None = None) -> Path | None:
    """The run folder for ``version`` (``latest`` or N); ``existing`` runs (--resume, --test) must exist.

    ``bump`` gives None: the new version is claimed (:func:`claim_run`) when the run starts writing.
    A new training never reuses a run that already holds a checkpoint. ``args`` lets a missing run's
    error name the flags that differ from the runs that do exist.
    """
    if version == "bump":
        if existing:
            raise ECGError("--version bump makes a new run; --resume and --test need latest or a number")
        return None
    versions = existing_versions(runs_dir, name)
    if version == "latest":
        if not versions:
            if existing:
                near = nearest_runs(runs_dir, args) if args is not None else ""
                raise ECGError(f"no run named {name}_<N> in {runs_dir}; {near or 'train one first'} (the name "
                               f"comes from the flags that change what is trained: see commander.py --help)")
            return None
        run_dir = runs_dir / f"{name}_{versions[-1]}"
    else:
        if int(version) not in versions:
            raise ECGError(f"run {name}_{version} does not exist in {runs_dir}; existing versions: "
                           f"{', '.join(map(str, versions)) or 'none'}")
        run_dir = runs_dir / f"{name}_{version}"
    if not existing and has_trained(run_dir):
        raise ECGError(f"{run_dir} already holds a trained run; continue it with --resume latest "
                       f"or start a new one with --version bump")
    return run_dir


def nearest_runs(runs_dir: Path, args: argparse.Namespace) -> str:
    """For a run that does not exist: the runs of ``runs_dir`` that differ in the fewest naming flags, as
    '<run> has --flag VALUE (you gave OTHER)'; empty when there are none."""
    if not runs_dir.is_dir():
        return ""
    best: list[tuple[int, str]] = []
    for folder in sorted(runs_dir.iterdir()):
        try:
            flags = json.loads((folder / "config.json").read_text())["flags"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        named = NAMING + SWITCHES + ("augment", "preprocess", "bandpass", "dataset")
        differ = [n for n in named if n != "root_dir" and n in flags
                  and _same_type(flags[n], getattr(args, n)) != flags[n]]
        if differ:
            shown = ", ".join(f"--{n.replace('_', '-')} {flags[n]} (you gave {getattr(args, n)})" for n in differ[:3])
            best.append((len(differ), f"{folder.name} has {shown}"))
    if not best:
        return ""
    fewest = min(n for n, _ in best)
    near = [text for n, text in best if n == fewest][:2]
    return "; ".join(near) + ("; to change a setting of a run deliberately, resume it with its own flags and "
                              "--override NAME=VALUE" if fewest == 1 else "")


def _same_type(recorded: Any, value: Any) -> Any:
    """``value`` as config.json stores it (paths as strings), for comparison with a recorded flag."""
    return str(value) if isinstance(value, Path) else value


def check_num_classes(args: argparse.Namespace, classes: Sequence[str]) -> None:
    """``--num-classes`` may only repeat what the dataset says."""
    if args.num_classes is not None and args.num_classes != len(classes):
        raise ECGError(f"--num-classes {args.num_classes} disagrees with --dataset {args.dataset}, "
                       f"which has {len(classes)} classes ({', '.join(classes)}); drop the flag")


def reconcile(args: argparse.Namespace, recorded: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    """Bring ``args`` in line with a run's checkpoint on --resume or --test.

    ``recorded``: the flags the checkpoint was trained with; ``overrides``: settings changed since by
    ``--override``. On --resume a ``RECORDED`` flag given on the command line must agree with the run, and
    one not given is taken from it, as is ``--epochs``. On --test only the seed must agree, and ``--amp``
    is the run's unless given. A difference is an ECGError naming the flag and both values.
    """
    for name in RECORDED:
        if name not in recorded:
            continue
        theirs = overrides.get(name, recorded[name])
        if args.test and name != "seed":  # a test may be short or choose its autocast; --amp is the run's if not given
            if name == "amp" and name not in args.given:
                args.amp = theirs
            continue
        if name in args.given and getattr(args, name) != theirs:
            flag = f"--{name.replace('_', '-')}"
            mine = getattr(args, name)
            fix = ("pick the version trained with it (--version N)" if name == "seed"
                   else f"to change it deliberately use --override {name}={mine}" if name in OVERRIDABLE.values()
                   else "drop the flag")
            raise ECGError(f"{flag} {mine} differs from the run's {flag} {theirs} ({where}); {fix}")
        if not args.test:
            setattr(args, name, theirs)
    if not args.test and "epochs" not in args.given and isinstance(recorded.get("epochs"), int):
        args.epochs = recorded["epochs"]
    if args.pretrained is not None and str(args.pretrained) != str(recorded.get("pretrained")):
        raise ECGError(f"--pretrained {args.pretrained} differs from the run's --pretrained "
                       f"{recorded.get('pretrained')} ({where})")
