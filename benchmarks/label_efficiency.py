"""Label efficiency: test scores of classifiers trained on a fraction of the labels, from scratch and fine-tuned
from a self-supervised encoder, several seeds each; a Markdown table, a JSON report and a plot.

    python benchmarks/label_efficiency.py {mitbih-inter,ptbxl,cinc2020} [--fractions 0.01 0.05 0.1 0.25 1]
        [--seeds 0 1 2] [--pretext masked] [--pretrain-epochs E] [--epochs E] [--transductive]
        [--root-dir bench_runs] [--short-run] [--out docs/label_efficiency]

Per benchmark, one pretraining run (``--task pretrain``, seed 0) learns the encoder of the classifier from the
unlabelled signal of the training side of the split (training and validation records; with ``--transductive`` a
second pretraining adds the test split's unlabelled signal, and its rows say "transductive"). Before a
pretraining run is used, :func:`check_disjoint` asserts from both runs' ``splits.json`` that it saw none of the
evaluation's test records. Then for every fraction (``--label-fraction F``: a class-stratified subsample of the
training split drawn with the run's ``--seed``, so both arms of a seed see the same examples; validation and test
are whole; every class keeps at least one example, so on small databases the smallest fractions hold more than
F of the records: the tables give the count) and seed, two classifiers are trained and tested exactly as
``benchmarks/quality.py`` does it (``run_seed``): ``scratch`` (random initialisation) and ``pretrained``
(``--pretrained RUN --freeze-epochs 1``: the head alone for one epoch, then everything). Each picks its epoch on
validation only.

Epochs: ``--epochs E`` is the count at fraction 1; a fraction F trains ceil(E / F) epochs, at most
``MAX_EPOCH_FACTOR`` x E, so small subsets still get a comparable number of optimiser steps (both arms alike).
``--short-run`` (10 batches per pass) is a pipeline check: unless given, 2 classifier epochs and 1 pretraining
epoch, not scaled by fraction, and the scores mean nothing.

Benchmarks (``BENCHMARKS``; the score is the first metric, the plot shows each):
- ``mitbih-inter``: MIT-BIH beats, inter-patient split (DS1 -> DS2), ``cnn1d_3`` on filtered beats without RR
  features, so the pretrained encoder is the whole signal network and only the head is new; macro-F1 over the
  five AAMI classes.
- ``ptbxl``: the PTB-XL superdiagnostic label set (5 superclasses, fold 10 tested), ``cnn1d_3`` on 2.5-s windows at
  100 Hz; macro AUROC and macro-F1.
- ``cinc2020``: the Challenge 2020 records (24 scored classes), ``cnn1d_3`` on the same windows; macro AUROC and
  macro-F1.

Cost on 2 CPU cores with the defaults (estimated from the per-run minutes in docs/benchmarks.md, not measured):
mitbih-inter about 60 minutes (a 10-epoch run on all of DS1 takes about 3 minutes), ptbxl and cinc2020 about
10-15 minutes each. Cells are mean +- sd over seeds and, in brackets, the 95% bootstrap interval of that mean
(quality.py's ``seed_interval``: test records resampled, every seed scored on the same draws); the gain is the
mean +- sd over seeds of the paired difference (pretrained - scratch, same seed and subset).

Record ids are compared within one database: pretraining on another database (or a pool) that holds copies of
the evaluation's test records (the Challenge's HR* records are PTB-XL records) cannot be caught by this check.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import commander  # noqa: E402
from benchmarks.quality import cell, run_seed, seed_interval  # noqa: E402
from loaders.dataset import split_records  # noqa: E402
from toolbox.utils import ECGError  # noqa: E402

MAX_EPOCH_FACTOR = 3  # a small fraction trains at most this many times the epochs of fraction 1
FINE_TUNE = ["--freeze-epochs", "1"]  # the pretrained arm: head only for one epoch, then the whole model
ARMS = ("scratch", "pretrained", "transductive")  # the last: fine-tuned from the --transductive pretraining
SHORT_EPOCHS = (2, 1)  # --short-run: classifier and pretraining epochs unless given
METRIC_NAMES = {"macro_f1": "macro-F1", "macro_auroc": "macro AUROC"}


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its commander.py flags (data and model), scores, unit of a labelled example and epochs."""

    flags: list[str]
    metrics: tuple[str, ...]
    unit: str
    epochs: int
    pretrain_epochs: int


BENCHMARKS: dict[str, Benchmark] = {
    "mitbih-inter": Benchmark(["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3", "--beat-format",
                               "filtered"], ("macro_f1",), "beats", 10, 10),
    "ptbxl": Benchmark(["--dataset", "ptbxl", "--labels", "superdiagnostic", "--model-name", "cnn1d_3", "--fs", "100",
                        "--seq-len", "2.5", "--batch-size", "32"], ("macro_auroc", "macro_f1"), "records", 30, 30),
    "cinc2020": Benchmark(["--dataset", "cinc2020", "--model-name", "cnn1d_3", "--fs", "100", "--seq-len", "2.5",
                           "--batch-size", "16"], ("macro_auroc", "macro_f1"), "records", 30, 30),
}


def held_out_records(splits: dict[str, Any]) -> set[str]:
    """The test record ids of an evaluation run's splits.json, as strings."""
    return set(split_records(splits, "test"))


def check_disjoint(pretrain_splits: dict[str, Any], eval_splits: dict[str, Any]) -> None:
    """Raise ECGError when a non-transductive pretraining run used a test record of the evaluation run (same
    database); the splits are the two runs' splits.json contents."""
    note = pretrain_splits.get("pretrain")
    if not isinstance(note, dict) or not isinstance(note.get("records"), dict):
        raise ECGError("the pretraining run's splits.json has no 'pretrain' records; pass a run of --task pretrain")
    if note.get("transductive"):
        return
    held = held_out_records(eval_splits)
    database = eval_splits.get("database")
    for name, used in note["records"].items():
        pooled = (pretrain_splits.get("pool") or {}).get(name, {})
        if pooled.get("database", database) != database:
            continue  # another database: its record ids say nothing about these
        shared = sorted(held & {str(r) for r in used})
        if shared:
            raise ECGError(f"the pretraining run learnt from {len(shared)} test record(s) of the evaluation "
                           f"({name}: {', '.join(shared[:5])}{', ...' if len(shared) > 5 else ''}) without being "
                           f"marked transductive; pretrain on the training split only (leave out --transductive)")


def read_splits(run: Path) -> dict[str, Any]:
    """A run folder's splits.json."""
    return json.loads((run / "splits.json").read_text())


def fraction_epochs(epochs: int, fraction: float, short_run: bool = False) -> int:
    """Epochs of a run on ``fraction`` of the labels: ceil(epochs / fraction), at most MAX_EPOCH_FACTOR x epochs
    (``short_run``: ``epochs`` unchanged)."""
    if short_run:
        return epochs
    return min(math.ceil(epochs / fraction - 1e-9), MAX_EPOCH_FACTOR * epochs)


def pretrain(bench: Benchmark, pretext: str, epochs: int, root: Path, transductive: bool = False,
             short_run: bool = False) -> Path:
    """Pretrain the benchmark's encoder once (seed 0; ``transductive``: with the test split's signal); its run
    folder."""
    flags = [*bench.flags, "--task", "pretrain", "--pretext", pretext, "--epochs", str(epochs), "--root-dir",
             str(root), "--seed", "0", "--version", "bump", *(["--transductive"] if transductive else []),
             *(["--short-run"] if short_run else [])]
    try:
        code, run = commander.run(commander.parse_args(flags))
    except ECGError as exc:
        raise SystemExit(f"label_efficiency.py: {shlex.join(flags)}: {exc}") from None
    if code != 0:
        raise SystemExit(f"pretraining stopped ({code}): python commander.py {shlex.join(flags)}")
    return run


def arm_flags(bench: Benchmark, fraction: float, epochs: int, pretrained: Path | None,
              short_run: bool = False) -> list[str]:
    """commander.py flags of one arm at one fraction (without --seed and --root-dir)."""
    flags = [*bench.flags, "--label-fraction", f"{fraction:g}", "--epochs", str(epochs)]
    if pretrained is not None:
        flags += ["--pretrained", str(pretrained), *FINE_TUNE]
    return flags + (["--short-run"] if short_run else [])


def summarise(results: list[dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, Any]:
    """One arm at one fraction: runs, labelled examples and per metric the seeds' values, mean, sd and the 95%
    bootstrap interval of the mean."""
    interval = seed_interval(results)
    scores = {}
    for m in metrics:
        values = [r["metrics"].get(m) for r in results]
        kept = [v for v in values if v is not None]
        scores[m] = {"per_seed": values, "mean": statistics.mean(kept) if kept else None,
                     "sd": statistics.stdev(kept) if len(kept) > 1 else (0.0 if kept else None),
                     "ci": interval.get(m)}
    labelled = sorted({read_splits(r["dir"])["label_fraction"]["examples"] for r in results})
    return {"runs": [str(r["dir"]) for r in results], "labelled": labelled, "epochs": results[0]["epochs"],
            "scores": scores}


def paired_gain(base: dict[str, Any], other: dict[str, Any], metric: str) -> dict[str, Any]:
    """Mean and sd over seeds of ``other`` minus ``base`` (same seeds, same labelled subsets)."""
    pairs = [o - b for b, o in zip(base["scores"][metric]["per_seed"], other["scores"][metric]["per_seed"],
                                    strict=True) if b is not None and o is not None]
    return {"per_seed": pairs, "mean": statistics.mean(pairs) if pairs else None,
            "sd": statistics.stdev(pairs) if len(pairs) > 1 else (0.0 if pairs else None)}


def table(report: dict[str, Any], metric: str) -> list[str]:
    """Markdown lines of the table of ``metric``: one row per fraction."""
    arms = [a for a in ARMS if a in report["fractions"][0]["arms"]]
    head = ["fraction", f"labelled {report['unit']}", "epochs"]
    for arm in arms:
        head.append(f"{arm} {METRIC_NAMES.get(metric, metric)}" if arm == "scratch" else
                    f"{arm} (fine-tuned)")
        if arm != "scratch":
            head.append(f"gain ({arm})" if arm == "transductive" else "gain")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in report["fractions"]:
        labelled = f["arms"]["scratch"]["labelled"]  # the same for every seed, or its range
        count = str(labelled[0]) if len(labelled) == 1 else f"{labelled[0]}-{labelled[-1]}"
        cells = [f"{f['fraction']:g}", count, str(f["arms"]["scratch"]["epochs"])]
        for arm in arms:
            s = f["arms"][arm]["scores"][metric]
            cells.append(cell(s["per_seed"], s["ci"]))
            if arm != "scratch":
                g = f["gains"][arm][metric]
                cells.append("-" if g["mean"] is None else f"{g['mean']:+.3f} ± {g['sd']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    """Score against label fraction (log x) per metric: each arm's seed mean with its bootstrap interval as bars."""
    metrics = report["metrics"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), squeeze=False)
    fractions = [f["fraction"] for f in report["fractions"]]
    for ax, metric in zip(axes[0], metrics, strict=True):
        for k, arm in enumerate(a for a in ARMS if a in report["fractions"][0]["arms"]):
            scores = [f["arms"][arm]["scores"][metric] for f in report["fractions"]]
            mean = [math.nan if s["mean"] is None else s["mean"] for s in scores]
            low = [m - s["ci"][0] if s["ci"] else 0.0 for m, s in zip(mean, scores, strict=True)]
            high = [s["ci"][1] - m if s["ci"] else 0.0 for m, s in zip(mean, scores, strict=True)]
            shift = [x * (1 + 0.04 * (k - 1)) for x in fractions]  # keep the bars of the arms apart
            ax.errorbar(shift, mean, yerr=[low, high], marker="o", capsize=3, label=arm)
        ax.set_xscale("log")
        ax.set_xticks(fractions, [f"{x:g}" for x in fractions])
        ax.set_xlabel("label fraction (of the training split)")
        ax.set_ylabel(f"test {METRIC_NAMES.get(metric, metric)}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{report['benchmark']}" + (" (short run)" if report["short_run"] else "") +
                 f"\n{report['pretext']} pretraining, {len(report['seeds'])} seed(s), bars: 95% bootstrap interval "
                 "of the seed mean", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def progress(name: str, fraction: float, arm: str, result: dict[str, Any], metrics: tuple[str, ...]) -> None:
    """One progress line per trained and tested run."""
    values = {m: result["metrics"].get(m) for m in metrics}
    scores = ", ".join(f"{METRIC_NAMES.get(m, m)} " + ("-" if v is None else f"{v:.3f}") for m, v in values.items())
    print(f"[label_efficiency] {name} fraction {fraction:g} {arm}: {scores} ({result['dir']})", flush=True)


def measure(name: str, fractions: list[float], seeds: list[int], pretext: str, root: Path, *,
            pretrain_epochs: int | None = None, epochs: int | None = None, transductive: bool = False,
            short_run: bool = False) -> dict[str, Any]:
    """Pretrain, then train and test both arms (and the transductive one) at every fraction and seed; the
    report that :func:`write_report` writes."""
    bench = BENCHMARKS[name]
    epochs = epochs or (SHORT_EPOCHS[0] if short_run else bench.epochs)
    pretrain_epochs = pretrain_epochs or (SHORT_EPOCHS[1] if short_run else bench.pretrain_epochs)
    encoders = {"pretrained": pretrain(bench, pretext, pretrain_epochs, root, short_run=short_run)}
    if transductive:
        encoders["transductive"] = pretrain(bench, pretext, pretrain_epochs, root, True, short_run)
    notes = {arm: read_splits(run)["pretrain"] for arm, run in encoders.items()}
    for arm, note in notes.items():
        if note["transductive"] != (arm == "transductive"):
            raise SystemExit(f"label_efficiency.py: {encoders[arm]}/splits.json says transductive "
                             f"{note['transductive']}, but it was pretrained as the {arm} arm")
    rows = []
    for fraction in sorted(fractions):
        n_epochs = fraction_epochs(epochs, fraction, short_run)
        arms: dict[str, dict[str, Any]] = {}
        scratch = []
        for seed in seeds:
            scratch.append(run_seed(arm_flags(bench, fraction, n_epochs, None, short_run), seed, root))
            progress(name, fraction, f"scratch seed {seed}", scratch[-1], bench.metrics)
        arms["scratch"] = summarise(scratch, bench.metrics)
        for arm, encoder in encoders.items():
            pretrain_splits = read_splits(encoder)
            check_disjoint(pretrain_splits, read_splits(scratch[0]["dir"]))  # before the encoder is used
            results = []
            for seed in seeds:
                results.append(run_seed(arm_flags(bench, fraction, n_epochs, encoder, short_run), seed, root))
                check_disjoint(pretrain_splits, read_splits(results[-1]["dir"]))
                progress(name, fraction, f"{arm} seed {seed}", results[-1], bench.metrics)
            arms[arm] = summarise(results, bench.metrics)
        gains = {arm: {m: paired_gain(arms["scratch"], arms[arm], m) for m in bench.metrics}
                 for arm in arms if arm != "scratch"}
        rows.append({"fraction": fraction, "arms": arms, "gains": gains})
    return {"benchmark": name, "flags": bench.flags, "metrics": list(bench.metrics), "unit": bench.unit,
            "pretext": pretext, "seeds": seeds, "epochs_at_fraction_1": epochs, "max_epoch_factor": MAX_EPOCH_FACTOR,
            "fine_tune": FINE_TUNE, "short_run": short_run,
            "pretraining": {arm: {"run": str(run), "transductive": notes[arm]["transductive"],
                                  "records": {db: len(ids) for db, ids in notes[arm]["records"].items()}}
                            for arm, run in encoders.items()},
            "fractions": rows}


def markdown(report: dict[str, Any], command: str) -> str:
    """The report as Markdown: command, pretraining runs, one table per metric and how to read them."""
    lines = [f"# Label efficiency: {report['benchmark']}" + (" (short run: a pipeline check)"
                                                               if report["short_run"] else ""), "",
             f"`{command}`", "",
             f"Classifier flags: `{shlex.join(report['flags'])}`; fine-tuning: `--pretrained RUN "
             f"{' '.join(report['fine_tune'])}`; {len(report['seeds'])} seed(s) {report['seeds']}.", ""]
    for arm, p in report["pretraining"].items():
        kind = ("**transductive**: it also learnt from the test split's unlabelled signal" if p["transductive"]
                else "training side only; checked disjoint from the test records")
        lines.append(f"- {arm}: {report['pretext']} pretraining `{p['run']}` on "
                     f"{', '.join(f'{n} {db} records' for db, n in p['records'].items())} ({kind})")
    lines.append("")
    for metric in report["metrics"]:
        lines += [f"## Test {METRIC_NAMES.get(metric, metric)}", "", *table(report, metric), ""]
    lines.append("Cells: mean ± sd over seeds [95% bootstrap interval of the mean, test records resampled]. Gain: "
                 "mean ± sd over seeds of the paired difference from scratch (same seed, same labelled subset). "
                 "Every run chose its epoch on validation only.")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path, command: str) -> dict[str, Path]:
    """Write ``<out>/<benchmark>.md``, ``.json`` and ``.png``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / f"{report['benchmark']}.{kind}" for kind in ("md", "json", "png")}
    paths["md"].write_text(markdown(report, command))
    paths["json"].write_text(json.dumps({**report, "command": command}, indent=1) + "\n")
    plot(report, paths["png"])
    return paths


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("benchmark", choices=list(BENCHMARKS))
    p.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.05, 0.1, 0.25, 1.0],
                   help="label fractions of the training split (above 0, at most 1)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--pretext", default="masked", choices=["masked", "contrastive", "flip"])
    p.add_argument("--pretrain-epochs", type=int, default=None, help="default: the benchmark's (BENCHMARKS)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"classifier epochs at fraction 1 (smaller fractions: E / F, at most {MAX_EPOCH_FACTOR} x E); "
                        "default: the benchmark's")
    p.add_argument("--transductive", action="store_true",
                   help="also fine-tune from a second pretraining that saw the test split's unlabelled signal "
                        "(rows marked transductive)")
    p.add_argument("--root-dir", type=Path, default=Path("bench_runs"))
    p.add_argument("--short-run", action="store_true",
                   help="10 batches per pass, 2 classifier and 1 pretraining epochs unless given: a pipeline check")
    p.add_argument("--out", type=Path, default=Path("docs/label_efficiency"))
    return p


def main(argv: list[str] | None = None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)
    if any(not 0 < f <= 1 for f in args.fractions) or len(set(args.fractions)) != len(args.fractions):
        p.error("--fractions: distinct label fractions above 0 and at most 1, e.g. 0.01 0.1 1")
    for flag, value in (("--epochs", args.epochs), ("--pretrain-epochs", args.pretrain_epochs)):
        if value is not None and value < 1:
            p.error(f"{flag} must be at least 1")
    command = shlex.join(["python", "benchmarks/label_efficiency.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        report = measure(args.benchmark, args.fractions, args.seeds, args.pretext, args.root_dir,
                         pretrain_epochs=args.pretrain_epochs, epochs=args.epochs, transductive=args.transductive,
                         short_run=args.short_run)
    except ECGError as exc:
        print(f"label_efficiency.py: {exc}", file=sys.stderr)
        return 2
    paths = write_report(report, args.out, command)
    print("\n" + markdown(report, command))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
