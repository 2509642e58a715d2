"""Train and test named configurations through commander.py, several seeds each, and print Markdown tables.

    python benchmarks/quality.py CONFIG [CONFIG ...] [--seeds 0 1 2] [--root-dir bench_runs] [--ensemble]
    python benchmarks/quality.py --select CANDIDATE [CANDIDATE ...] [--folds 4] [--seeds 0 1 2]
    python benchmarks/quality.py --list

Each seed is a new version of the run (``--seed S``); the exact folder it trained is then tested with
``--test --resume best --version N`` (model selection sees validation data only). Rows give mean +- sd over
seeds and, in brackets, the 95% bootstrap interval of that mean (test records resampled where records are
the unit, beats on the intra-patient split). ``--ensemble`` adds a row per single-label configuration for
the mean of its seeds' test probabilities (soft voting; each member is still chosen on validation only);
an ``ENSEMBLES`` name does the same over every seed of several configurations.

``--select`` chooses among inter-patient MIT-BIH candidates without the test split: each candidate is
trained and tested in record-level K-fold cross-validation inside DS1 (``--folds K --fold I``), for every
seed; its score is the mean over seeds of (S F1 + V F1) / 2 on the pooled out-of-fold predictions (an
ensemble candidate: of its members' averaged probabilities). Only the winner is then trained on DS1 and
tested once on DS2. Needs the data under ``$ECG_DATA_ROOT`` (or ``<root-dir>/<db>``).
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import commander
from toolbox.anomaly import bootstrap_anomaly
from toolbox.metrics import bootstrap_classification, bootstrap_multilabel, classification_metrics
from toolbox.utils import ECGError

# epochs of each generative model's configurations: each trains in under 15 minutes on 2 CPU cores
ANOMALY_EPOCHS = {"ae1d": 10, "vae1d": 10, "beatgan": 8, "vaegan": 8, "dcgan": 10}
# name -> flags of commander.py (the configurations we measure)
CONFIGS: dict[str, list[str]] = {
    "intra-cnn1d_3": ["--dataset", "ecg", "--model-name", "cnn1d_3"],
    "intra-cnn1d_3-rr": ["--dataset", "ecg", "--model-name", "cnn1d_3", "--rr-features"],
    "intra-resnet1d_10_small-rr": ["--dataset", "ecg", "--model-name", "resnet1d_10_small", "--rr-features"],
    "intra-resnet1d_10_small-rr-filtered-med": ["--dataset", "ecg", "--model-name", "resnet1d_10_small",
                                               "--rr-features", "--beat-format", "filtered", "--median-beat"],
    "inter-cnn1d_3-rr": ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3", "--rr-features"],
    "inter-cnn1d_3-rr-centered": ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3", "--rr-features",
                                 "--beat-format", "centered"],
    "inter-cnn1d_3-rr-filtered": ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3", "--rr-features",
                                 "--beat-format", "filtered"],
    "inter-cnn1d_3-rr-filtered-med": ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3",
                                     "--rr-features", "--beat-format", "filtered", "--median-beat"],
    "inter-cnn1d_3-rr-filtered-balanced": ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3",
                                          "--rr-features", "--beat-format", "filtered", "--class-balance",
                                          "importance"],
    "inter-resnet1d_10_small-rr-filtered": ["--dataset", "ecg", "--split", "inter", "--model-name",
                                           "resnet1d_10_small", "--rr-features", "--beat-format", "filtered"],
    "ptbxl-cnn1d_3": ["--dataset", "ptbxl", "--model-name", "cnn1d_3", "--batch-size", "32", "--epochs", "30"],
    "ptbxl-ribeiro_resnet_small": ["--dataset", "ptbxl", "--model-name", "ribeiro_resnet_small", "--batch-size", "32",
                                   "--epochs", "30"],
    # the PTB-XL benchmark's recipe (args.RECIPES; Strodthoff et al. 2021) on the local records: a pipeline check
    "ptbxl-benchmark-xresnet1d101": ["--recipe", "ptbxl-benchmark"],
    "ptbxl-benchmark-cnn1d_3": ["--recipe", "ptbxl-benchmark", "--model-name", "cnn1d_3"],
    "cinc2020-cnn1d_3": ["--dataset", "cinc2020", "--model-name", "cnn1d_3", "--batch-size", "16", "--epochs", "30"],
    "cinc2020-ribeiro_resnet_small": ["--dataset", "cinc2020", "--model-name", "ribeiro_resnet_small", "--batch-size",
                                      "16", "--epochs", "30"],
    # anomaly detection (--task anomaly): generative models of the N beats in BeatGAN's beat format; docs/anomaly.md
    **{f"anomaly-{split}-{model}": ["--dataset", "ecg", "--split", split, "--task", "anomaly", "--model-name", model,
                                    "--beat-format", "beatgan", "--epochs", str(epochs)]
       for split in ("intra", "inter") for model, epochs in ANOMALY_EPOCHS.items()},
}

# name -> configurations whose runs (every seed of each) are scored as one model: mean test probabilities
ENSEMBLES: dict[str, list[str]] = {
    "inter-cnn1d_3-rr-filtered-and-med": ["inter-cnn1d_3-rr-filtered", "inter-cnn1d_3-rr-filtered-med"],
}
SEED_ENSEMBLE = "+seeds"  # suffix of a candidate that is a configuration's seeds averaged, e.g. CONFIG+seeds


def run_seed(flags: list[str], seed: int, root: Path) -> dict[str, Any]:
    """Train one seed, then test the very folder it trained; the test metrics plus size, epochs and minutes."""
    common = [*flags, "--root-dir", str(root)]
    try:
        code, run = commander.run(commander.parse_args([*common, "--seed", str(seed), "--version", "bump"]))
        if code != 0:
            raise SystemExit(f"training stopped ({code}): {shlex.join(common)} --seed {seed}")
        version = run.name.rsplit("_", 1)[1]
        commander.run(commander.parse_args([*common, "--test", "--resume", "best", "--version", version]))
    except ECGError as exc:
        raise SystemExit(f"quality.py: {shlex.join(common)} --seed {seed}: {exc}") from None
    tag = "test_best_short" if "--short-run" in flags else "test_best"  # as commander names them
    metrics = json.loads((run / "pred" / f"{tag}_metrics.json").read_text())
    kind = "scores" if is_anomaly(flags) else "predictions"
    log = json.loads((run / "logger.json").read_text())
    config = json.loads((run / "config.json").read_text())
    minutes = sum(r["seconds"] for r in log["train"]) / 60 + sum(r["seconds"] for r in log["val"]) / 60
    return {"metrics": metrics, "params": config["model"]["parameters"], "epochs": len(log["train"]),
            "minutes": minutes, "run": run.name, "dir": run, "predictions": run / "pred" / f"{tag}_{kind}.csv"}


def is_anomaly(flags: list[str]) -> bool:
    """Whether a configuration trains a generative model of normal beats (--task anomaly)."""
    return "--task" in flags and flags[flags.index("--task") + 1] == "anomaly"


def anomaly_interval(results: list[dict[str, Any]], inter: bool, resamples: int = 1000) -> dict[str, Any]:
    """95% bootstrap interval of the mean over the runs of AUROC, AUPRC, F1, MCC and per-class AUROC (each run at
    its own validation threshold; test records resampled on the inter-patient split, beats otherwise)."""
    tables = [pd.read_csv(r["predictions"]) for r in results]
    same = ["record", "sample", "class"] if "record" in tables[0] else ["row", "class"]
    if any(not t[same].equals(tables[0][same]) for t in tables[1:]):
        raise SystemExit(f"the runs {', '.join(r['run'] for r in results)} were tested on different beats")
    splits = json.loads((results[0]["dir"] / "splits.json").read_text())
    names = json.loads((results[0]["dir"] / "config.json").read_text())["dataset"]["classes"]
    classes = tables[0]["class"].map(names.index).to_numpy()
    groups = tables[0]["record"].to_numpy() if inter and "record" in tables[0] else None
    return bootstrap_anomaly([t["score"].to_numpy() for t in tables], classes, names,
                             splits["anomaly"]["normal_classes"], [r["metrics"]["threshold"] for r in results],
                             resamples, groups=groups)


def predictions(results: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[np.ndarray], list[str]]:
    """The runs' test predictions: the shared columns (index, record, sample, target), each run's
    probabilities, and the classes; the runs must have been tested on the same examples."""
    tables = [pd.read_csv(r["predictions"]) for r in results]
    same = [c for c in tables[0].columns if c != "pred" and not c.startswith("p_")]  # index, record, sample, target
    if any(not t[same].equals(tables[0][same]) for t in tables[1:]):
        raise SystemExit(f"the runs {', '.join(r['run'] for r in results)} were tested on different examples")
    classes = [c.removeprefix("p_") for c in tables[0].columns if c.startswith("p_")]
    return tables[0][same], [t[[f"p_{c}" for c in classes]].to_numpy() for t in tables], classes


def _unit_groups(results: list[dict[str, Any]], shared: pd.DataFrame) -> np.ndarray | None:
    """The test records when the runs' bootstrap resampled records, else None (examples)."""
    note = results[0]["metrics"].get("bootstrap") or {}
    return shared["record"].to_numpy() if note.get("unit") == "record" else None


def ensemble(results: list[dict[str, Any]], resamples: int = 1000) -> dict[str, Any]:
    """The runs as one model: their test probabilities averaged, scored like a run with its bootstrap interval
    (single-label only)."""
    shared, probs, classes = predictions(results)
    mean = np.mean(probs, axis=0)
    targets = shared["target"].to_numpy()
    metrics = classification_metrics(targets, mean.argmax(axis=1), classes)
    metrics["ci"] = bootstrap_classification(targets, mean.argmax(axis=1), classes, _unit_groups(results, shared),
                                             resamples)
    return {"metrics": metrics, "params": sum(r["params"] for r in results), "epochs": results[0]["epochs"],
            "minutes": sum(r["minutes"] for r in results), "run": "+".join(r["run"] for r in results)}


def seed_interval(results: list[dict[str, Any]], resamples: int = 1000) -> dict[str, Any]:
    """95% bootstrap interval of the mean over the runs (each run scored on the same resampled test units)."""
    if "macro_auroc" in results[0]["metrics"]:
        tables = [pd.read_csv(r["predictions"]) for r in results]
        codes = [c.removeprefix("y_") for c in tables[0].columns if c.startswith("y_")]
        targets = tables[0][[f"y_{c}" for c in codes]].to_numpy()
        probs = [t[[f"p_{c}" for c in codes]].to_numpy() for t in tables]
        thresholds = [np.array([r["metrics"]["per_class"][c]["threshold"] for c in codes]) for r in results]
        weights = None
        if "challenge" in results[0]["metrics"]:  # the run's own scoring tables, read as commander reads them
            from loaders import cinc2020, raw_dir
            scoring = cinc2020.read_scoring(raw_dir("cinc2020", results[0]["dir"].parents[2]) / "scoring")
            weights, normal = scoring.weights, scoring.normal_index
        return bootstrap_multilabel(targets, probs, thresholds, codes, resamples, weights=weights,
                                    normal_index=normal if weights is not None else None)
    shared, probs, classes = predictions(results)
    return bootstrap_classification(shared["target"].to_numpy(), [p.argmax(axis=1) for p in probs], classes,
                                    _unit_groups(results, shared), resamples)


def cell(values: list[float | None], ci: list[float] | None, scale: float = 1.0, digits: int = 3) -> str:
    """'mean ± sd [lo, hi]' of per-seed values and the bootstrap interval of their mean."""
    kept = [v * scale for v in values if v is not None]
    if not kept:
        return "-"
    sd = statistics.stdev(kept) if len(kept) > 1 else 0.0
    text = f"{statistics.mean(kept):.{digits}f} ± {sd:.{digits}f}"
    return text + (f" [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]" if ci else "")


def row(config: str, results: list[dict[str, Any]], ci: dict[str, Any], inter: bool,
        seeds: int | None = None) -> tuple[str, str]:
    """(header, row) of the Markdown table for one configuration (``seeds``: shown instead of len(results))."""
    m = [r["metrics"] for r in results]
    head = ["config", "seeds", "params", "epochs", "train+val min"]
    cells = [f"`{config}`", str(seeds or len(results)), f"{results[0]['params'] / 1e3:.0f} k",
             str(results[0]["epochs"]), cell([r["minutes"] for r in results], None, digits=1)]
    if "mcc" in m[0]:  # anomaly detection: scores of every beat, decisions at the validation threshold
        head += ["AUROC", "AUPRC", "F1", "MCC"]
        cells += [cell([x[k] for x in m], ci.get(k)) for k in ("auroc", "auprc", "f1", "mcc")]
        for c in m[0]["per_class"]:
            head.append(f"AUROC {c}")
            cells.append(cell([x["per_class"][c]["auroc"] for x in m], (ci.get("per_class") or {}).get(c, {}).get(
                "auroc")))
        return "| " + " | ".join(head) + " |", "| " + " | ".join(cells) + " |"
    if "macro_auroc" in m[0]:  # multi-label
        keys = ["macro_auroc", "fmax", "accuracy", "macro_f1", "f_beta", "g_beta"] + (["challenge"] if "challenge" in
                                                                                     m[0] else [])
        head += ["macro AUROC", "Fmax", "exact match", "macro-F1", "F2", "G2"] + (["Challenge"] if "challenge" in m[0]
                                                                                  else [])
        cells += [cell([x[k] for x in m], ci.get(k)) for k in keys]
        return "| " + " | ".join(head) + " |", "| " + " | ".join(cells) + " |"
    per_class = ci.get("per_class", {})
    head += ["accuracy %", "macro-F1"]
    cells += [cell([x["accuracy"] for x in m], ci.get("accuracy"), 100, 2), cell([x["macro_f1"] for x in m],
                                                                                 ci.get("macro_f1"))]
    shown = ("S", "V") if inter else list(m[0]["per_class"])
    head += [f"F1 {c}" for c in shown]
    cells += [cell([x["per_class"][c]["f1"] for x in m], per_class.get(c, {}).get("f1")) for c in shown]
    if inter:
        for c in ("S", "V"):
            head += [f"{c} Se", f"{c} +P"]
            cells += [cell([x["per_class"][c][k] for x in m], per_class.get(c, {}).get(k))
                      for k in ("recall", "precision")]
    return "| " + " | ".join(head) + " |", "| " + " | ".join(cells) + " |"


def print_tables(title: str, command: str, tables: dict[str, list[str]], notes: list[str],
                 before: list[str] = ()) -> None:
    """A Markdown report: title with date and machine, the command, ``before``, the tables, then ``notes``."""
    print(f"\n# {title}, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {platform.node()}\n")
    print(f"`{command}`\n")
    if before:
        print("\n".join(before) + "\n")
    for head, lines in tables.items():
        print(head)
        print("|" + "---|" * head.count(" | ") + "---|")
        print("\n".join(lines) + "\n")
    print("\n".join(notes))


def measure(configs: list[str], seeds: list[int], root: Path, with_ensembles: bool, command: str,
            cv: int | None = None) -> None:
    """Train, test and tabulate ``configs`` (and ``ENSEMBLES`` names) over ``seeds`` (and with ``cv``, over the
    ``cv`` folds of the intra-patient split)."""
    tables: dict[str, list[str]] = {}
    notes = []
    done: dict[str, list[dict]] = {}  # configuration -> its seeds' results, each trained once per invocation
    for name in configs:
        members = ENSEMBLES.get(name, [name])
        for config in members:
            if config in done:
                continue
            inter = "inter" in CONFIGS[config]
            if cv:  # every fold of the intra-patient split, each seed: a row over folds x seeds (no interval)
                results = done[config] = [run_seed([*CONFIGS[config], "--folds", str(cv), "--fold", str(i)], seed,
                                                   root) for i in range(1, cv + 1) for seed in seeds]
                head, line = row(f"{config} ({cv} folds x {len(seeds)} seeds)", results, {}, inter)
                tables.setdefault(head, []).append(line)
                notes.append(f"python commander.py {shlex.join(CONFIGS[config])} --folds {cv} --fold I --seed S  # "
                             f"then --test; mean ± sd over {cv} folds x {len(seeds)} seeds; runs "
                             f"{', '.join(r['run'] for r in results)}")
                continue
            results = done[config] = [run_seed(CONFIGS[config], seed, root) for seed in seeds]
            interval = (anomaly_interval(results, inter) if is_anomaly(CONFIGS[config]) else
                        seed_interval(results))
            head, line = row(config, results, interval, inter)
            tables.setdefault(head, []).append(line)
            if with_ensembles and "macro_auroc" not in results[0]["metrics"] and not is_anomaly(CONFIGS[config]):
                whole = ensemble(results)
                head, line = row(f"{config}{SEED_ENSEMBLE}", [whole], whole["metrics"]["ci"], inter,
                                 seeds=len(results))
                tables[head].append(line)
            notes.append(f"python commander.py {shlex.join(CONFIGS[config])} --seed S  # then --test; "
                         f"runs {', '.join(r['run'] for r in results)}")
        if name in ENSEMBLES:
            whole = ensemble([r for config in members for r in done[config]])
            head, line = row(name, [whole], whole["metrics"]["ci"], True, seeds=len(members) * len(seeds))
            tables.setdefault(head, []).append(line)
    print_tables("Quality", command, tables, notes)


# ---- selection by cross-validation inside DS1 ----

def members_of(candidate: str) -> tuple[list[str], bool]:
    """The configurations a candidate is made of, and whether their runs are averaged into one model."""
    if candidate in ENSEMBLES:
        return ENSEMBLES[candidate], True
    if candidate.endswith(SEED_ENSEMBLE):
        return [candidate.removesuffix(SEED_ENSEMBLE)], True
    return [candidate], False


def out_of_fold(results: list[dict[str, Any]]) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """Targets and each seed's probabilities over every fold's test records (folds concatenated)."""
    by_seed: dict[int, list] = {}
    targets, classes = [], None
    for fold_results in results:  # one list per fold: the seeds' results
        shared, probs, classes = predictions(fold_results)
        targets.append(shared["target"].to_numpy())
        for s, p in enumerate(probs):
            by_seed.setdefault(s, []).append(p)
    return np.concatenate(targets), [np.concatenate(by_seed[s]) for s in sorted(by_seed)], classes


def cv_scores(targets: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float]:
    m = classification_metrics(targets, probs.argmax(axis=1), classes)
    s_f1, v_f1 = m["per_class"]["S"]["f1"] or 0.0, m["per_class"]["V"]["f1"] or 0.0
    return {"score": (s_f1 + v_f1) / 2, "S F1": s_f1, "V F1": v_f1, "macro-F1": m["macro_f1"],
            "accuracy": m["accuracy"]}


def select(candidates: list[str], folds: int, seeds: list[int], root: Path, command: str) -> None:
    """Rank ``candidates`` by DS1 cross-validation, then train the winner on DS1 and test it once on DS2."""
    for c in candidates:
        for config in members_of(c)[0]:
            if config not in CONFIGS or "inter" not in CONFIGS[config]:
                raise SystemExit(f"quality.py --select: {config} is not an inter-patient MIT-BIH configuration")
    cv: dict[str, list[list[dict]]] = {}  # configuration -> per fold, the seeds' results
    ranking = []
    for candidate in candidates:
        configs, averaged = members_of(candidate)
        for config in configs:
            if config not in cv:
                cv[config] = [[run_seed([*CONFIGS[config], "--folds", str(folds), "--fold", str(i)], s, root)
                               for s in seeds] for i in range(1, folds + 1)]
        pooled = [out_of_fold(cv[config]) for config in configs]
        targets, classes = pooled[0][0], pooled[0][2]
        if averaged:  # one model: every member run's probabilities averaged
            scores = [cv_scores(targets, np.mean([p for _, runs, _ in pooled for p in runs], axis=0), classes)]
        else:
            scores = [cv_scores(targets, p, classes) for p in pooled[0][1]]
        minutes = sum(r["minutes"] for config in configs for fold in cv[config] for r in fold)
        ranking.append((statistics.mean(s["score"] for s in scores), candidate, scores, minutes))
    ranking.sort(key=lambda item: -item[0])
    lines = ["| rank | candidate | CV score (S F1 + V F1) / 2 | S F1 | V F1 | macro-F1 | accuracy % | train min |",
             "|---|---|---|---|---|---|---|---|"]
    for rank, (_, candidate, scores, minutes) in enumerate(ranking, 1):
        values = {k: [s[k] for s in scores] for k in scores[0]}
        lines.append(f"| {rank} | `{candidate}` | {cell(values['score'], None)} | {cell(values['S F1'], None)} | "
                     f"{cell(values['V F1'], None)} | {cell(values['macro-F1'], None)} | "
                     f"{cell(values['accuracy'], None, 100, 2)} | {minutes:.0f} |")
    winner = ranking[0][1]
    configs, averaged = members_of(winner)
    final = {config: [run_seed(CONFIGS[config], s, root) for s in seeds] for config in configs}
    tables: dict[str, list[str]] = {}
    everything = [r for config in configs for r in final[config]]
    if averaged:
        whole = ensemble(everything)
        head, line = row(f"{winner} (the winner)", [whole], whole["metrics"]["ci"], True, seeds=len(everything))
        tables.setdefault(head, []).append(line)
    for config in configs:
        label = f"{config} ({'member of the winner' if averaged else 'the winner'})"
        head, line = row(label, final[config], seed_interval(final[config]), True)
        tables.setdefault(head, []).append(line)
    fold_lists = json.loads((cv[configs[0]][0][0]["dir"] / "splits.json").read_text())["cross_validation"]["folds"]
    before = [f"Cross-validation inside DS1 in {folds} folds of whole records {fold_lists}, seeds {seeds}; "
              f"each candidate's score is computed on its pooled out-of-fold predictions (DS2 unused):", "",
              *lines, "", f"The winner, `{winner}`, trained on DS1 (DS1 validation records choose its epoch) and "
              f"tested once on DS2 (mean ± sd over seeds [95% bootstrap interval, DS2 records resampled]):"]
    notes = [f"runs of {config}: {', '.join(r['run'] for r in final[config])}" for config in configs]
    print_tables("Selection by cross-validation inside DS1", command, tables, notes, before)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="*", help=f"from: {', '.join([*CONFIGS, *ENSEMBLES])}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--root-dir", type=Path, default=Path("bench_runs"))
    p.add_argument("--ensemble", action="store_true",
                   help="also score each single-label configuration's seeds as one model (mean probabilities)")
    p.add_argument("--select", action="store_true",
                   help="rank the given inter-patient candidates (configurations, CONFIG+seeds, ensembles) by "
                        "cross-validation inside DS1, then train the winner on DS1 and test it on DS2")
    p.add_argument("--folds", type=int, default=4, help="--select: record-level folds of DS1")
    p.add_argument("--cv", type=int, default=None, metavar="K",
                   help="train and test every intra-patient configuration on each of K folds of the beats "
                        "(--folds K --fold I), every seed; rows give mean ± sd over folds and seeds")
    p.add_argument("--list", action="store_true", help="print the configurations and their flags")
    return p


def main() -> None:
    p = get_args_parser()
    args = p.parse_args()
    if args.list or not args.configs:
        for name, flags in CONFIGS.items():
            print(f"{name}: python commander.py {shlex.join(flags)}")
        for name, members in ENSEMBLES.items():
            print(f"{name}: mean test probabilities of every seed of {' and '.join(members)}")
        print(f"CONFIG{SEED_ENSEMBLE}: with --select, the mean probabilities of a configuration's seeds")
        return
    unknown = [c for c in args.configs if members_of(c)[0][0] not in CONFIGS and c not in ENSEMBLES]
    if unknown:
        p.error(f"unknown configuration(s) {', '.join(unknown)}; --list shows them")
    if not args.select and any(c.endswith(SEED_ENSEMBLE) for c in args.configs):
        p.error(f"CONFIG{SEED_ENSEMBLE} is a --select candidate; without --select, --ensemble adds those rows")
    beats = ("ecg", "ecg_bin")
    if args.cv is not None and (args.select or args.ensemble or args.cv < 2 or any(
            "inter" in CONFIGS.get(c, ["inter"]) or commander.parse_args(CONFIGS[c]).dataset not in beats
            for c in args.configs)):
        p.error("--cv K (2 or more) folds the beats of intra-patient MIT-BIH configurations (ecg, ecg_bin); "
                "without --select or --ensemble")
    command = (f"python benchmarks/quality.py {' '.join(args.configs)} --seeds {' '.join(map(str, args.seeds))}"
               + (" --ensemble" if args.ensemble else "") + (f" --select --folds {args.folds}" if args.select else "")
               + (f" --cv {args.cv}" if args.cv else ""))
    if args.select:
        select(args.configs, args.folds, args.seeds, args.root_dir, command)
    else:
        measure(args.configs, args.seeds, args.root_dir, args.ensemble, command, args.cv)


if __name__ == "__main__":
    main()
