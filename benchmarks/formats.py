"""One recording in four formats and rates gives the same beats: predict.py on MIT-BIH excerpts written as WFDB
(360 Hz), CSV (128 Hz), EDF (250 Hz) and CSV (500 Hz).

    python benchmarks/formats.py [--records 100 105 ...] [--minutes 5] [--run RUN_DIR]

Each excerpt (the first ``--minutes`` of both leads) is written by ``loaders.recording.write_recording``, which
resamples it; ``predict.py`` then annotates each format's folder in one call (it resamples back to the model's
rate). Every format's beats are matched to the WFDB beats within 150 ms (``toolbox.ec57``, each beat used once):
the share matched, the median absolute time shift of matched beats (times as written, to 1 ms), and the share
of matched beats in the same class, pooled over records, and the record where the classes agree least. Needs
``$ECG_DATA_ROOT/mitdb``. Prints Markdown.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import predict
from benchmarks import mitdb_folder
from loaders import recording
from toolbox import ec57

# (name, suffix, rate; None keeps the record's 360 Hz)
FORMATS = (("WFDB 360 Hz", ".hea", None), ("CSV 128 Hz", ".csv", 128.0), ("EDF 250 Hz", ".edf", 250.0),
           ("CSV 500 Hz", ".csv", 500.0))
# a spread of rhythms: clean (100), noisy (105), S-rich (209, 232), V-rich (119, 200, 208), fusion beats (213)
RECORDS = ("100", "105", "119", "200", "208", "209", "213", "232")


def beats(path: Path) -> tuple[np.ndarray, list[str]]:
    """Times (s) and classes of a ``<record>_beats.csv``."""
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    return np.array([float(r["time_s"]) for r in rows]), [r["class"] for r in rows]


def annotate(raw: Path, records: list[str], minutes: float, work: Path, run: Path | None) -> dict[str, Path]:
    """Write every excerpt in every format and run predict.py on each format's folder: format -> output folder."""
    outs = {}
    for name, suffix, rate in FORMATS:
        folder = work / name.replace(" ", "_")
        for r in records:
            rec = recording.read_recording(raw / f"{r}.hea")
            n = int(minutes * 60 * rec.fs[0])
            short = recording.Recording(r, rec.path, [s[:n] for s in rec.signals], rec.fs, rec.leads)
            recording.write_recording(short, folder / "in" / f"{r}{suffix}", fs=rate)
        argv = [str(folder / "in"), "--out", str(folder / "out")]
        argv += ["--fs", f"{rate:g}"] if suffix == ".csv" else []
        argv += ["--run", str(run)] if run is not None else []
        code = predict.main(argv)
        if code:
            raise SystemExit(code)
        outs[name] = folder / "out"
    return outs


def compare(outs: dict[str, Path], records: list[str]) -> list[str]:
    """One Markdown row per format against the WFDB beats."""
    base = FORMATS[0][0]
    rows = []
    for name, _, _ in FORMATS[1:]:
        n_ref = n_other = n_matched = n_same = 0
        shifts: list[np.ndarray] = []
        worst = (2.0, "")
        for r in records:
            t0, c0 = beats(outs[base] / f"{r}_beats.csv")
            t1, c1 = beats(outs[name] / f"{r}_beats.csv")
            i, j = ec57.match_beats(t0, t1, ec57.MATCH_WINDOW_S)
            same = sum(c0[a] == c1[b] for a, b in zip(i, j, strict=True))
            n_ref, n_other, n_matched, n_same = n_ref + len(t0), n_other + len(t1), n_matched + len(i), n_same + same
            shifts.append(np.abs(t1[j] - t0[i]))
            worst = min(worst, (same / len(i) if len(i) else 0.0, r))
        if not n_matched:
            rows.append(f"| {name} | {n_other:,} | 0.00 | 0.00 | - | - | - |")
            continue
        shift_ms = 1000 * float(np.median(np.concatenate(shifts)))
        rows.append(f"| {name} | {n_other:,} | {100 * n_matched / n_ref:.2f} | {100 * n_matched / n_other:.2f} "
                    f"| {shift_ms:.1f} | {100 * n_same / n_matched:.2f} | {worst[1]} ({100 * worst[0]:.1f}) |")
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", nargs="+", default=list(RECORDS), help="MIT-BIH records")
    p.add_argument("--minutes", type=float, default=5.0, help="length of each excerpt")
    p.add_argument("--run", type=Path, default=None, help="run folder (default: the shipped model)")
    return p


def main() -> None:
    p = get_args_parser()
    args = p.parse_args()
    raw = mitdb_folder(p)
    name = predict.load_model(args.run, "best")[2]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        outs = annotate(raw, args.records, args.minutes, Path(work), args.run)
        base = sum(len(beats(outs[FORMATS[0][0]] / f"{r}_beats.csv")[0]) for r in args.records)
        rows = compare(outs, args.records)
    seconds = time.perf_counter() - start
    print(f"\n# One recording, four formats, {name}, {time.strftime('%Y-%m-%d')}, {platform.machine()} "
          f"{os.cpu_count()} CPUs\n")
    run = f" --run {args.run}" if args.run else ""
    print(f"`python benchmarks/formats.py --records {' '.join(args.records)} --minutes {args.minutes:g}{run}` "
          f"({seconds:.0f} s: writing, reading and annotating)\n")
    print(f"{base:,} beats found in the WFDB excerpts ({len(args.records)} x {args.minutes:g} min); each format's "
          "beats against them:\n")
    print("| format | beats | matched % of WFDB beats | matched % of its beats | median shift ms "
          "| same class % | least agreement: record (same class %) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
