"""R-peak detectors scored on the 48 MIT-BIH records: QRS sensitivity, positive predictivity and speed.

    python benchmarks/detectors.py [--detectors nk-pantompkins1985 wfdb-gqrs ...]

Each detector (``loaders.detect.DETECTORS``) runs on the record's MLII lead (lead 0 where there is none) at
360 Hz (``wfdb-gqrs`` resamples it to 120 Hz itself). A detection within 150 ms of a reference beat annotation
matches it (``toolbox.ec57``); each beat is used once. Gross Se = matched / reference beats, +P = matched /
detections, pooled over records, on the 44 non-paced records (the EC57 convention) and on all 48, with
ventricular flutter episodes (record 207) left out as EC57 does. Time is the median per record (30 min of one
lead). ``--align`` scores the detections after ``predict.py``'s move to the R peak, and prints how far they lie
from the DS1 annotations.
Needs ``$ECG_DATA_ROOT/mitdb``. Prints Markdown.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import mitdb_folder
from loaders import detect, mitdb
from toolbox import ec57


def score(name: str, raw: Path, align: bool = False) -> dict[str, object]:
    """Per-record matched, reference and detected counts and seconds of one detector on every record."""
    rows = {}
    for record in tqdm(mitdb.RECORDS, desc=name, leave=False):
        rec, ann = mitdb._read_record(raw, record)
        lead = rec.sig_name.index("MLII") if "MLII" in rec.sig_name else 0
        reference = ann.sample[np.isin(ann.symbol, list(mitdb.BEAT_SYMBOLS))]
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the libraries warn about short or flat stretches
            peaks = detect.detect(rec.p_signal[:, lead], rec.fs, name)
            if align:
                peaks = detect.align(rec.p_signal[:, lead], rec.fs, peaks, detect.ALIGN_BEFORE_S, detect.ALIGN_AFTER_S,
                                     detect.ALIGN_SHIFT_S)
        seconds = time.perf_counter() - start
        peaks = detect.outside(peaks, detect.flutter_episodes(ann.sample, ann.symbol, ann.aux_note, rec.sig_len))
        ref, det = ec57.match_beats(reference, peaks, ec57.MATCH_WINDOW_S * rec.fs)
        rows[record] = (len(ref), len(reference), len(peaks), seconds, peaks[det] - reference[ref])
    return rows


def offsets(rows: dict[str, tuple], records: list[str], shift: int) -> str:
    """How far the matched detections of ``records`` lie from their reference annotations, moved by ``shift``
    samples: the median (samples at 360 Hz) and the share on the annotation and within 8 ms (3 samples)."""
    off = np.concatenate([rows[x][4] for x in records]) + shift
    return (f"median {np.median(off):+.0f} samples, {100 * np.mean(off == 0):.1f}% on the annotation, "
            f"{100 * np.mean(np.abs(off) <= 3):.1f}% within 8 ms")


def gross(rows: dict[str, tuple], records: list[str]) -> tuple[float, float]:
    """Pooled QRS Se and +P over ``records``."""
    m, r, d = (sum(rows[x][i] for x in records) for i in range(3))
    return m / r, m / d if d else 0.0


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--detectors", nargs="+", default=list(detect.DETECTORS), choices=list(detect.DETECTORS))
    p.add_argument("--align", action="store_true",
                   help="move each detection to the R peak as predict.py does (detect.align), timed with it")
    return p


def main() -> None:
    p = get_args_parser()
    args = p.parse_args()
    raw = mitdb_folder(p)
    non_paced = [r for r in mitdb.RECORDS if r not in mitdb.PACED]
    print(f"# R-peak detectors on MIT-BIH, {time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} CPUs\n")
    align = " --align" if args.align else ""
    print(f"`python benchmarks/detectors.py --detectors {' '.join(args.detectors)}{align}`\n")
    print("| detector | Se % (44 non-paced) | +P % (44 non-paced) | Se % (48) | +P % (48) | s per record (median) "
          "| most errors: record (missed + extra) |")
    print("|---|---|---|---|---|---|---|")
    notes: list[str] = []
    for name in args.detectors:
        rows = score(name, raw, args.align)
        se, pp = gross(rows, non_paced)
        se48, pp48 = gross(rows, mitdb.RECORDS)
        errors = sorted(rows, key=lambda x: -(rows[x][1] + rows[x][2] - 2 * rows[x][0]))[:3]
        worst = ", ".join(f"{x} ({rows[x][1] - rows[x][0]} + {rows[x][2] - rows[x][0]})" for x in errors)
        median = statistics.median(v[3] for v in rows.values())
        print(f"| `{name}` | {100 * se:.3f} | {100 * pp:.3f} | {100 * se48:.3f} | {100 * pp48:.3f} | {median:.2f} "
              f"| {worst} |", flush=True)
        if args.align:  # the evidence for detect.ALIGN_SHIFT_S, on the DS1 records only
            shift = int(round(detect.ALIGN_SHIFT_S * 360))
            notes.append(f"- `{name}` on DS1, aligned: {offsets(rows, mitdb.DS1, -shift)}; then shifted by {shift:+d} "
                         f"(`ALIGN_SHIFT_S`): {offsets(rows, mitdb.DS1, 0)}")
    beats = sum(int(np.isin(mitdb._read_record(raw, r)[1].symbol, list(mitdb.BEAT_SYMBOLS)).sum()) for r in non_paced)
    print("\n" + "\n".join(notes) if notes else "", end="")
    print(f"\n{beats:,} reference beats in the 44 non-paced records: 0.001% is about {beats / 1e5:.1f} beats.")


if __name__ == "__main__":
    main()
