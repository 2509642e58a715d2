"""A beat model end to end on the DS2 records (EC57 style): detected R peaks against the same model at the
reference R peaks, so the cost of detection is visible.

    python benchmarks/ec57.py [--run RUN_DIR] [--detector wfdb-gqrs] [--save FILE]

End to end: ``predict.py`` on each DS2 record (read, detect, align, cut, classify, write its four files), its
beats matched to the reference annotations within 150 ms (``toolbox.ec57``). At reference peaks: the model on
the beats the inter-patient test split cuts at the reference annotations (what ``commander.py --test`` scores).
Classes are scored on matched beats; intervals are 95% bootstrap percentiles over records (1000 draws). The
model is ``--run``'s best checkpoint, or the shipped model. Needs ``$ECG_DATA_ROOT/mitdb``. Prints Markdown.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import predict
import trainer
from benchmarks import mitdb_folder
from loaders import DETECTOR_NAMES, detect, mitdb
from loaders.dataset import make_dataloader
from models import from_checkpoint
from toolbox import checkpoint, ec57
from toolbox.utils import write_json

SCORED = ("N", "S", "V", "F")


def at_reference_peaks(state: dict, path: Path, raw: Path, cache: Path) -> dict[str, dict]:
    """EC57 counts per DS2 record of the model at the reference R peaks (the inter-patient test split)."""
    flags = state["args"]
    data = mitdb.build(raw, cache, binary=flags["dataset"] == "ecg_bin", split_seed=flags.get("split_seed", 0),
                       protocol="inter", rr_features=bool(flags.get("rr_features")),
                       beat_format=flags.get("beat_format") or "kaggle", median_beat=bool(flags.get("median_beat")))
    model = from_checkpoint(state)
    checkpoint.load_weights(state, path, model)
    with torch.inference_mode():
        probs = trainer.predict(model, make_dataloader(data.test, 1024), torch.device("cpu"), multilabel=False)
    labels, truth = probs.argmax(axis=1), data.test.labels.numpy()
    records, samples = data.test.meta["record"], data.test.meta["sample"]
    return {str(r): ec57.compare(samples[records == r], truth[records == r], samples[records == r],
                                 labels[records == r], 360.0, len(state["classes"]))
            for r in np.unique(records)}


def scored_classes(classes: list[str]) -> tuple[str, ...]:
    """N, S, V and F for a 5-class model; a binary model's own classes (N, abnormal)."""
    return SCORED if all(c in classes for c in SCORED) else tuple(classes)


def row(name: str, counts: list[dict], classes: list[str]) -> str:
    scored = scored_classes(classes)
    s = ec57.scores(ec57.pool(counts), classes, scored)
    ci = ec57.bootstrap(counts, classes, scored)

    def cell(key: str, value: float | None) -> str:
        return "-" if value is None else f"{value:.3f} [{ci[key][0]:.3f}, {ci[key][1]:.3f}]"

    q = s["qrs"]
    cells = [name, f"{q['reference']:,}", f"{100 * q['se']:.2f}", f"{100 * q['+p']:.2f}"]
    cells += [cell(f"{c} {m}", s["classes"][c][m]) if c in scored else "-" for c in ("S", "V")
              for m in ("se", "+p", "f1")]
    cells += [cell(f"{c} f1", s["classes"][c]["f1"]) if c in scored else "-" for c in ("N", "F")]
    return "| " + " | ".join(cells) + " |"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=None, help="run folder (default: the shipped model)")
    p.add_argument("--detector", default="wfdb-gqrs", choices=list(DETECTOR_NAMES))
    p.add_argument("--root-dir", type=Path, default=Path("bench_runs"), help="where the beat cache is kept")
    p.add_argument("--save", type=Path, default=None, help="also write the per-record counts to this JSON file")
    return p


def main() -> None:
    p = get_args_parser()
    args = p.parse_args()
    raw = mitdb_folder(p)
    state, path, name = predict.load_model(args.run, "best")
    if state["args"]["dataset"] not in predict.BEAT_DATASETS:
        p.error(f"{path} is not a beat model (--dataset ecg or ecg_bin)")
    classes = state["classes"]
    reference = at_reference_peaks(state, path, raw, args.root_dir / "cache")
    with tempfile.TemporaryDirectory() as out:
        argv = [str(raw / r) for r in mitdb.DS2] + ["--out", out, "--reference", "atr", "--detector", args.detector]
        if args.run is not None:
            argv += ["--run", str(args.run)]
        code = predict.main(argv)
        if code:
            raise SystemExit(code)
        e2e = json.loads((Path(out) / "ec57.json").read_text())["counts"]
        seconds = {r: json.loads((Path(out) / f"{r}_summary.json").read_text())["seconds"] for r in mitdb.DS2}
    e2e = {r: {k: np.asarray(v) for k, v in c.items()} for r, c in e2e.items()}
    print(f"\n# EC57 on DS2, {name}, {time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} CPUs\n")
    print(f"`python benchmarks/ec57.py{' --run ' + str(args.run) if args.run else ''} --detector {args.detector}`\n")
    print("| scored at | reference beats | QRS Se % | QRS +P % | S Se | S +P | S F1 | V Se | V +P | V F1 | N F1 "
          "| F F1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(row(f"detected peaks (`{args.detector}`, end to end)", [e2e[r] for r in mitdb.DS2], classes))
    print(row("reference R peaks (`--test`)", [reference[r] for r in mitdb.DS2], classes))
    scored = scored_classes(classes)
    a = ec57.scores(ec57.pool([e2e[r] for r in mitdb.DS2]), classes, scored)["classes"]
    b = ec57.scores(ec57.pool([reference[r] for r in mitdb.DS2]), classes, scored)["classes"]
    diff = ", ".join(f"{c} F1 {a[c]['f1'] - b[c]['f1']:+.3f}" for c in scored if c != "N"
                     if a[c]["f1"] is not None and b[c]["f1"] is not None)
    print(f"\nEnd to end minus reference peaks: {diff}.")
    values = sorted(seconds.values())
    median = statistics.median(values)
    print(f"Seconds per 30-min two-lead record (read, detect, classify, write the four files): median "
          f"{median:.2f}, max {values[-1]:.2f} ({1805.6 / median:.0f}x real time).")
    print("\nEnd to end, per record:\n")
    rows = {r: ec57.scores(e2e[r], classes, scored) for r in mitdb.DS2}
    rows["gross"] = ec57.scores(ec57.pool(list(e2e.values())), classes, scored)
    print(ec57.table(rows, scored))
    if args.save:
        rate = detect.gqrs_rate(360.0) if args.detector == "wfdb-gqrs" else 360.0
        write_json(args.save, {"model": name, "detector": args.detector, "detector_runs_at_hz": rate,
                               "classes": classes,
                               "end_to_end": {r: {k: v.tolist() for k, v in c.items()} for r, c in e2e.items()},
                               "reference_peaks": {r: {k: np.asarray(v).tolist() for k, v in c.items()}
                                                   for r, c in reference.items()},
                               "seconds": seconds})


if __name__ == "__main__":
    main()
