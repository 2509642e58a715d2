"""Train and test named configurations through commander.py, several seeds each, and print a Markdown table.

    python benchmarks/quality.py CONFIG [CONFIG ...] [--seeds 0 1 2] [--root-dir bench_runs] [--ensemble]
    python benchmarks/quality.py --list

Each seed is a new version of the run (``--seed S --version bump``), tested with ``--test --resume best``
on the split's test set (model selection sees validation data only). Rows give mean +- sd over seeds.
``--ensemble`` adds a row per single-label configuration for the mean of the seeds' test probabilities
(soft voting; each member is still chosen on validation only); an ``ENSEMBLES`` name does the same over
every seed of several configurations. Needs the data under ``$ECG_DATA_ROOT``
(or ``<root-dir>/<db>``).
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import commander  # noqa: E402
from args import existing_versions, parse_args, run_name  # noqa: E402
from toolbox.metrics import classification_metrics  # noqa: E402

# name -> flags of commander.py (the published configurations)
CONFIGS: dict[str, list[str]] = {
    "intra-cnn1d_3": ["--dataset", "ecg", "--model-name", "cnn1d_3"],
    "intra-resnet1d_10": ["--dataset", "ecg", "--model-name", "resnet1d_10"],
    "intra-cnn1d_3-rr": ["--dataset", "ecg", "--model-name", "cnn1d_3", "--rr-features"],
    "intra-resnet1d_10-rr": ["--dataset", "ecg", "--model-name", "resnet1d_10", "--rr-features"],
    "intra-resnet1d_10_small-rr": ["--dataset", "ecg", "--model-name", "resnet1d_10_small", "--rr-features"],
    "intra-resnet1d_10_small-rr-30": ["--dataset", "ecg", "--model-name", "resnet1d_10_small", "--rr-features",
                                     "--epochs", "30"],
    "intra-resnet1d_10_small-rr-centered": ["--dataset", "ecg", "--model-name", "resnet1d_10_small", "--rr-features",
                                           "--beat-format", "centered"],
    "intra-resnet1d_10_small-rr-filtered": ["--dataset", "ecg", "--model-name", "resnet1d_10_small", "--rr-features",
                                           "--beat-format", "filtered"],
    "intra-resnet1d_10_small-rr-filtered-med": ["--dataset", "ecg", "--model-name", "resnet1d_10_small",
                                               "--rr-features", "--beat-format", "filtered", "--median-beat"],
    "inter-cnn1d_3-rr": ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3", "--rr-features"],
    "inter-resnet1d_10-rr": ["--dataset", "ecg", "--split", "inter", "--model-name", "resnet1d_10", "--rr-features"],
    "inter-cnn1d_3-rr-balanced": ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3", "--rr-features",
                                 "--class-balance", "importance"],
    "inter-cnn1d_3-rr-augment": ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3", "--rr-features",
                                "--augment", "scale", "noise", "wander", "shift"],
    "inter-cnn1d_3-rr-centered": ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3", "--rr-features",
                                 "--beat-format", "centered"],
    "inter-cnn1d_3-rr-filtered-med": ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3",
                                     "--rr-features", "--beat-format", "filtered", "--median-beat"],
    "inter-cnn1d_3-rr-filtered": ["--dataset", "ecg", "--split", "inter", "--model-name", "cnn1d_3", "--rr-features",
                                 "--beat-format", "filtered"],
    "inter-resnet1d_10": ["--dataset", "ecg", "--split", "inter", "--model-name", "resnet1d_10"],
    "inter-resnet1d_10-sampler": ["--dataset", "ecg", "--split", "inter", "--model-name", "resnet1d_10", "--sampler",
                                 "importance"],
    "ptbxl-cnn1d_3": ["--dataset", "ptbxl", "--model-name", "cnn1d_3", "--batch-size", "32", "--epochs", "30"],
    "cinc2020-cnn1d_3": ["--dataset", "cinc2020", "--model-name", "cnn1d_3", "--batch-size", "16", "--epochs", "30"],
}

# name -> configurations whose runs (every seed of each) are scored as one model: mean test probabilities
ENSEMBLES: dict[str, list[str]] = {
    "inter-cnn1d_3-rr-filtered-and-med": ["inter-cnn1d_3-rr-filtered", "inter-cnn1d_3-rr-filtered-med"],
}


def run_seed(flags: list[str], seed: int, root: Path) -> dict:
    """Train and test one seed; the test metrics plus parameters, epochs and training minutes."""
    common = [*flags, "--root-dir", str(root)]
    if commander.main([*common, "--seed", str(seed), "--version", "bump"]) != 0:
        raise SystemExit(f"training failed: {shlex.join(common)} --seed {seed}")
    args = parse_args(common)
    name = run_name(args)
    run = root / args.dataset / "runs" / f"{name}_{existing_versions(root / args.dataset / 'runs', name)[-1]}"
    if commander.main([*common, "--test", "--version", run.name.rsplit("_", 1)[1]]) != 0:
        raise SystemExit(f"testing failed: {run}")
    metrics = json.loads((run / "pred" / "test_best_metrics.json").read_text())
    log = json.loads((run / "logger.json").read_text())
    config = json.loads((run / "config.json").read_text())
    minutes = sum(r["seconds"] for r in log["train"]) / 60 + sum(r["seconds"] for r in log["val"]) / 60
    return {"metrics": metrics, "params": config["model"]["parameters"], "epochs": len(log["train"]),
            "minutes": minutes, "run": run.name, "dir": run}


def ensemble(results: list[dict]) -> dict:
    """The seeds' runs as one model: their test probabilities averaged, scored like a run (single-label only)."""
    tables = [pd.read_csv(r["dir"] / "pred" / "test_best_predictions.csv") for r in results]
    same = [c for c in tables[0].columns if c != "pred" and not c.startswith("p_")]  # index, record, sample, target
    if any(not t[same].equals(tables[0][same]) for t in tables[1:]):
        raise SystemExit(f"the runs {', '.join(r['run'] for r in results)} were tested on different examples")
    classes = [c.removeprefix("p_") for c in tables[0].columns if c.startswith("p_")]
    probs = np.mean([t[[f"p_{c}" for c in classes]].to_numpy() for t in tables], axis=0)
    metrics = classification_metrics(tables[0]["target"].to_numpy(), probs.argmax(axis=1), classes)
    return {"metrics": metrics, "params": sum(r["params"] for r in results), "epochs": results[0]["epochs"],
            "minutes": sum(r["minutes"] for r in results), "run": "+".join(r["run"] for r in results)}


def mean_sd(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    values = [v * scale for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def row(config: str, flags: list[str], results: list[dict], seeds: int | None = None) -> tuple[str, str]:
    """(header, row) of the Markdown table for one configuration (``seeds``: shown instead of len(results))."""
    m = [r["metrics"] for r in results]
    head = ["config", "seeds", "params", "epochs", "train+val min"]
    cells = [f"`{config}`", str(seeds or len(results)), f"{results[0]['params'] / 1e3:.0f} k",
             str(results[0]["epochs"]),
             mean_sd([r["minutes"] for r in results], digits=1)]
    if "macro_auroc" in m[0]:  # multi-label
        keys = ["macro_auroc", "macro_auprc", "accuracy", "macro_f1"] + (["challenge"] if "challenge" in m[0] else [])
        head += keys
        cells += [mean_sd([x[k] for x in m]) for k in keys]
    else:
        head += ["accuracy %", "macro-F1"] + [f"F1 {c}" for c in m[0]["per_class"]]
        cells += [mean_sd([x["accuracy"] for x in m], 100, 2), mean_sd([x["macro_f1"] for x in m])]
        cells += [mean_sd([x["per_class"][c]["f1"] for x in m]) for c in m[0]["per_class"]]
        if "inter" in flags:
            for c in ("S", "V"):
                head += [f"{c} Se", f"{c} +P"]
                cells += [mean_sd([x["per_class"][c]["recall"] for x in m]),
                          mean_sd([x["per_class"][c]["precision"] for x in m])]
    return "| " + " | ".join(head) + " |", "| " + " | ".join(cells) + " |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="*", help=f"from: {', '.join(CONFIGS)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--root-dir", type=Path, default=Path("bench_runs"))
    p.add_argument("--ensemble", action="store_true",
                   help="also score each single-label configuration's seeds as one model (mean probabilities)")
    p.add_argument("--list", action="store_true", help="print the configurations and their flags")
    args = p.parse_args()
    if args.list or not args.configs:
        for name, flags in CONFIGS.items():
            print(f"{name}: python commander.py {shlex.join(flags)}")
        for name, members in ENSEMBLES.items():
            print(f"{name}: mean test probabilities of every seed of {' and '.join(members)}")
        return
    unknown = [c for c in args.configs if c not in CONFIGS and c not in ENSEMBLES]
    if unknown:
        p.error(f"unknown configuration(s) {', '.join(unknown)}; --list shows them")
    tables: dict[str, list[str]] = {}
    commands = []
    done: dict[str, list[dict]] = {}  # configuration -> its seeds' results, each trained once per invocation
    for name in args.configs:
        members = ENSEMBLES.get(name, [name])
        for config in members:
            if config in done:
                continue
            results = done[config] = [run_seed(CONFIGS[config], seed, args.root_dir) for seed in args.seeds]
            head, line = row(config, CONFIGS[config], results)
            tables.setdefault(head, []).append(line)
            if args.ensemble and "macro_auroc" not in results[0]["metrics"]:
                head, line = row(f"{config} ensemble", CONFIGS[config], [ensemble(results)], seeds=len(results))
                tables[head].append(line)
            commands.append(f"python commander.py {shlex.join(CONFIGS[config])} --seed S  # then --test; "
                            f"runs {', '.join(r['run'] for r in results)}")
        if name in ENSEMBLES:
            pooled = [r for config in members for r in done[config]]
            head, line = row(name, CONFIGS[members[0]], [ensemble(pooled)], seeds=len(pooled))
            tables.setdefault(head, []).append(line)
    print(f"\n# Quality, {time.strftime('%Y-%m-%d')}, {platform.machine()}, seeds {args.seeds}\n")
    print(f"`python benchmarks/quality.py {' '.join(args.configs)} --seeds {' '.join(map(str, args.seeds))}"
          f"{' --ensemble' if args.ensemble else ''}`\n")
    for head, lines in tables.items():
        print(head)
        print("|" + "---|" * head.count(" | ") + "---|")
        print("\n".join(lines) + "\n")
    print("\n".join(commands))


if __name__ == "__main__":
    main()
