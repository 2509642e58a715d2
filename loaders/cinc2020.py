"""PhysioNet/CinC Challenge 2020 and 2021 twelve-lead records: Challenge-format headers and signals, scored labels,
outputs.

A record is ``X.hea`` (WFDB header; ``#Dx:`` lists SNOMED CT codes) and ``X.mat`` (``val``: leads x samples,
integers). Amplitudes become mV through each lead's gain and baseline. Labels are the scored classes of
``scoring/weights.csv``; classes the Challenge scores as one (``a|b`` headers of ``weights.csv``, and in the
2020 release also two classes with weight 1 between them and identical rows) are merged into the first one.
Unscored codes are ignored. The scoring tables are read from the data folder, never copied into code.

Records are cached once at the training rate in a memory-mapped int16 array (:mod:`loaders.mapped`); the
labels are applied from the scoring tables at every load, so a new table needs no new cache. ``--leads``
(2021) picks the Challenge 2021 lead subsets from the cached twelve.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.io
from tqdm import tqdm

from loaders.dataset import DataSplits, RecordDataset, fingerprint, multilabel_holdout, resampled_length
from loaders.dataset import resample as resample_signal
from loaders.mapped import Plan, RecordStore, cached_records, to_counts, to_mv
from loaders.preprocess import NO_PREPROCESS, Preprocess, cache_name, check_run
from toolbox.utils import ECGError, atomic_write

log = logging.getLogger(__name__)

LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
# the Challenge 2021 lead subsets (--leads N)
LEAD_SETS = {12: LEADS, 6: ["I", "II", "III", "AVR", "AVL", "AVF"], 4: ["I", "II", "III", "V2"], 3: ["I", "II", "V2"],
             2: ["I", "II"]}
NORMAL_CODE = "426783006"  # sinus rhythm: the class an "always normal" classifier answers
TEST_FRAC, VAL_FRAC = 0.2, 0.2  # of all records; of the rest
# sources with several records of one patient (the headers name no patient, so a records split may put one
# patient's records on both sides): PTB (S, 549 records of 290 patients), PTB-XL (HR, 21,837 of 18,885) and
# St Petersburg INCART (I, 75 records of 32 patients)
SEVERAL_PER_PATIENT = ("S", "HR", "I")


def files_hint(folder: Path) -> str:
    """What to put where when records are missing (nothing is downloaded for this database)."""
    return (f"put Challenge-format records (X.hea + X.mat) in {folder}; they are the PhysioNet/CinC Challenge "
            f"2020-2021 training data at physionet.org/content/challenge-2021")


CACHE_VERSION = 2  # 2: one memory-mapped int16 array of every record (loaders.mapped)


@dataclass(frozen=True)
class Header:
    """What a record's header says: name, sampling rate, samples, per-lead names/gains/baselines, diagnoses."""

    record: str
    fs: float
    samples: int
    leads: list[str]
    gains: np.ndarray
    baselines: np.ndarray
    dx: list[str]


@dataclass(frozen=True)
class Scoring:
    """The Challenge scoring tables: merged class codes (representatives), names, equivalences, rewards."""

    codes: list[str]
    abbreviations: list[str]
    equivalent: dict[str, str]  # every scored code -> its class's representative code
    weights: np.ndarray  # reward matrix in ``codes`` order

    @property
    def normal_index(self) -> int:
        return self.codes.index(NORMAL_CODE)

    def multi_hot(self, dx: list[str]) -> np.ndarray:
        """Multi-hot vector of scored classes; unscored codes are ignored."""
        row = np.zeros(len(self.codes), dtype=np.float32)
        for code in dx:
            if code in self.equivalent:
                row[self.codes.index(self.equivalent[code])] = 1
        return row


def _parse_gain(text: str, adc_zero: int, path: Path) -> tuple[float, float]:
    """Gain (ADC units per mV) and baseline of a WFDB gain field such as ``1000/mV``, ``1000.0(0)/mV``, ``2(5)/uV``."""
    match = re.fullmatch(r"([-+\d.eE]+)(?:\((-?\d+)\))?(?:/(\w+))?", text)
    if not match:
        raise ECGError(f"{path}: cannot read the gain field {text!r}")
    gain = float(match.group(1))
    if gain <= 0 or gain != gain:
        raise ECGError(f"{path}: gain {match.group(1)} in {text!r}; Challenge headers give each lead's ADC units "
                       f"per mV (1000 in the published records); replace the header with the publisher's")
    baseline = float(match.group(2)) if match.group(2) is not None else float(adc_zero)
    unit = (match.group(3) or "mV").lower()
    scale = {"mv": 1.0, "uv": 1000.0, "v": 0.001}.get(unit)
    if scale is None:
        raise ECGError(f"{path}: unknown amplitude unit {match.group(3)!r}")
    return gain * scale, baseline


def read_header(path: Path, need_dx: bool = True) -> Header:
    """Parse a Challenge-format header; tolerates a record line that names the ``.mat`` file (Georgia).

    ``need_dx``: a header without a ``#Dx`` line is an error (training data must be labelled; records to
    predict need no labels).
    """
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ECGError(f"cannot read header {path} ({exc})") from None
    fields = [line.split() for line in lines if line and not line.startswith("#")]
    try:
        record, n_sig, fs, samples = fields[0][0], int(fields[0][1]), float(fields[0][2]), int(fields[0][3])
        record = record.split("/")[0].removesuffix(".mat")
        leads, gains, baselines = [], [], []
        for f in fields[1:1 + n_sig]:
            gain, baseline = _parse_gain(f[2], int(f[4]), path)
            leads.append(f[8].upper())
            gains.append(gain)
            baselines.append(baseline)
    except (IndexError, ValueError):
        raise ECGError(f"{path} is not a WFDB header (record line 'name leads fs samples', one line per lead)") \
            from None
    if len(leads) != n_sig:
        raise ECGError(f"{path} announces {n_sig} leads but describes {len(leads)}")
    dx = next((line.split(":", 1)[1] for line in lines if line.lower().startswith("#dx")), None)
    if dx is None and need_dx:
        raise ECGError(f"{path} has no '#Dx:' line (the record's SNOMED CT codes); training and testing need "
                       f"labelled records")
    dx = dx or ""
    return Header(record, fs, samples, leads, np.array(gains), np.array(baselines),
                  [c.strip() for c in dx.split(",") if c.strip()])


def lead_order(header: Header, folder: Path, leads: list[str] = LEADS) -> list[int]:
    """Where each of ``leads`` sits in the record; a missing lead is an ECGError."""
    missing = [lead for lead in leads if lead not in header.leads]
    if missing:
        need = "twelve leads are needed" if leads == LEADS else f"the model reads {', '.join(leads)}"
        raise ECGError(f"{folder / header.record}.hea lacks lead(s) {', '.join(missing)}; {need}")
    return [header.leads.index(lead) for lead in leads]


def scale(header: Header, order: list[int]) -> np.ndarray:
    """mV per count of the leads ``order``."""
    return (1.0 / header.gains[order]).astype(np.float32)


def read_counts(folder: Path, header: Header, order: list[int]) -> np.ndarray:
    """The record's integer samples (publisher's counts minus each lead's baseline) of leads ``order``:
    (samples, leads) int32."""
    path = folder / f"{header.record}.mat"
    try:
        val = scipy.io.loadmat(path)["val"]
    except Exception as exc:  # scipy raises many types for a damaged file
        raise ECGError(f"cannot read {path} ({type(exc).__name__}: {str(exc)[:80]}); it should hold 'val', "
                       f"leads x samples") from None
    if val.shape != (len(header.leads), header.samples):
        raise ECGError(f"{path} holds {val.shape[0]} x {val.shape[1]} values but its header says "
                       f"{len(header.leads)} leads x {header.samples} samples")
    return (val[order].astype(np.int32) - np.rint(header.baselines[order, None]).astype(np.int32)).T


def read_signal(folder: Path, header: Header, leads: list[str] = LEADS) -> np.ndarray:
    """The record's ``leads`` (default the twelve, in the standard order) in mV, as float32 (leads, samples):
    the same numbers a cache read at the record's own rate gives."""
    order = lead_order(header, folder, leads)
    return to_mv(read_counts(folder, header, order), scale(header, order)).T


def _convert(task: tuple[str, Header, int, Preprocess]) -> np.ndarray:
    """One record for the cache: its twelve leads as int16 counts (samples, 12) at the cache rate ``fs`` (the
    publisher's integers when the rates agree; resampled mV rounded to the same resolution otherwise), preprocessed
    by ``task[3]`` after resampling (normalised units at their fixed resolution)."""
    folder, header, fs, prep = Path(task[0]), task[1], task[2], task[3]
    order = lead_order(header, folder)
    counts, per_count = read_counts(folder, header, order), scale(header, order)
    if header.fs == fs and not prep.steps:
        return to_counts(counts)
    mv = resample_signal(to_mv(counts, per_count), header.fs, fs, axis=0)
    return prep.counts(mv, fs, per_count, str(folder / header.record))


def resample(signal: np.ndarray, fs: float, target: int) -> np.ndarray:
    """Polyphase resampling of (leads, samples) from ``fs`` to ``target`` Hz, as float32."""
    return resample_signal(signal, fs, target, axis=1).astype(np.float32, copy=False)


def read_scoring(folder: Path, release: int = 2020) -> Scoring:
    """Scored classes and reward matrix from ``dx_mapping_scored.csv`` and ``weights.csv`` in ``folder``.

    Classes joined by ``a|b`` in ``weights.csv`` are one class. The 2020 release lists three such pairs as two
    classes each, joined by weight 1 and identical rows; for ``release`` 2020 those are merged too (as its
    scorer does), while the 2021 tables need no such rule.
    """
    mapping, weights_file = folder / "dx_mapping_scored.csv", folder / "weights.csv"
    for f in (mapping, weights_file):
        if not f.is_file():
            raise ECGError(f"{f} is missing; put the Challenge {release} scoring tables (dx_mapping_scored.csv, "
                           f"weights.csv) in {folder}")
    try:
        scored = pd.read_csv(mapping, dtype=str)
        code_column = next((c for c in ("SNOMED CT Code", "SNOMEDCTCode") if c in scored.columns), "SNOMED CT Code")
        abbreviation = dict(zip(scored[code_column].str.strip(), scored["Abbreviation"].str.strip(), strict=True))
        table = pd.read_csv(weights_file, index_col=0, dtype=str)
        values = table.to_numpy(dtype=np.float64)
        columns = [[c.strip() for c in str(col).split("|")] for col in table.columns]
    except (KeyError, ValueError, pd.errors.ParserError) as exc:
        raise ECGError(f"cannot read the scoring tables in {folder} ({exc})") from None
    if values.shape != (len(columns), len(columns)):
        raise ECGError(f"{weights_file} is not a square reward matrix ({values.shape[0]} x {len(columns)})")
    groups = [list(c) for c in columns]
    keep = list(range(len(columns)))
    for i in range(len(columns) if release == 2020 else 0):
        for j in range(i + 1, len(columns)):
            if i in keep and j in keep and values[i, j] == 1 and np.array_equal(values[i], values[j]):
                groups[i] += groups[j]
                keep.remove(j)
    codes = [groups[i][0] for i in keep]
    equivalent = {code: groups[i][0] for i in keep for code in groups[i]}
    unknown = [c for c in equivalent if c not in abbreviation]
    if unknown or NORMAL_CODE not in codes:
        raise ECGError(f"{weights_file} and {mapping} disagree (codes {', '.join(unknown) or NORMAL_CODE}); "
                       f"use the tables of one Challenge release")
    names = ["|".join(abbreviation[c] for c in groups[i]) for i in keep]
    return Scoring(codes, names, equivalent, values[np.ix_(keep, keep)])


def source(record: str) -> str:
    """The source database prefix of a Challenge record name (A, E, HR, JS, ...)."""
    match = re.match(r"[A-Za-z]+", record)
    return match.group(0).upper() if match else ""


def list_records(folder: Path) -> list[str]:
    """Names of the records in ``folder`` (headers ``X.hea``, each with its signal ``X.mat``), sorted."""
    if not folder.is_dir():
        raise ECGError(f"no Challenge records: {folder} does not exist; {files_hint(folder)}")
    headers = sorted(folder.glob("*.hea"))
    if not headers:
        raise ECGError(f"no Challenge records (X.hea with X.mat) in {folder}; {files_hint(folder)}")
    alone = [p.name for p in headers if not p.with_suffix(".mat").is_file()]
    if alone:
        raise ECGError(f"{folder / alone[0]} has no signal file {Path(alone[0]).stem}.mat beside it"
                       f"{f' (nor have {len(alone) - 1} more headers)' if len(alone) > 1 else ''}; add the "
                       f"signals or remove the headers")
    return [p.stem for p in headers]


def read_folder(folder: Path, names: list[str], fs: int, progress: bool = True, need_dx: bool = True,
                leads: list[str] = LEADS) -> tuple[list[np.ndarray], list[Header]]:
    """Signals (leads, samples at ``fs``, mV) and headers of records ``names`` in ``folder`` (records to predict)."""
    signals, headers = [], []
    for name in tqdm(names, desc="reading records", unit="record", leave=False, disable=None if progress else True):
        header = read_header(folder / f"{name}.hea", need_dx)
        signals.append(resample(read_signal(folder, header, leads), header.fs, fs))
        headers.append(header)
    return signals, headers


def load_records(folder: Path, cache_dir: Path, fs: int, progress: bool = True, workers: int | None = None,
                 prep: Preprocess = NO_PREPROCESS) -> RecordStore:
    """Every record of ``folder`` at ``fs`` Hz, preprocessed by ``prep``, memory-mapped: twelve leads, with
    ``extra['dx']`` per record.

    The cache is named after the database folder (``cinc2020``, ``cinc2021``), the rate and the preprocessing, and
    keyed by the names, sizes and times of every header and signal file.
    """
    names = list_records(folder)
    inputs = fingerprint([folder / f"{n}{e}" for n in names for e in (".hea", ".mat")])

    def plan() -> tuple[Plan, list]:
        headers = [read_header(folder / f"{n}.hea") for n in tqdm(names, desc="reading headers", unit="record",
                                                                   leave=False, disable=None if progress else True)]
        orders = [lead_order(h, folder) for h in headers]
        return Plan(names, np.array([resampled_length(h.samples, h.fs, fs) for h in headers], dtype=np.int64),
                    prep.scale(np.stack([scale(h, o) for h, o in zip(headers, orders, strict=True)])), fs, LEADS,
                    {"dx": np.array([",".join(h.dx) for h in headers])}), [(str(folder), h, fs, prep) for h in headers]

    return cached_records(cache_dir, cache_name(f"{folder.parent.name}_{fs}hz", prep, CACHE_VERSION), inputs, plan,
                          _convert, what=f"the Challenge records in {folder}", workers=workers, progress=progress)


def record_split(labels: np.ndarray, records: np.ndarray, protocol: str, seed: int) -> dict[str, np.ndarray]:
    """Record indices of train/val/test: ``records`` stratified (multi-label), or ``source-X`` tests on source X."""
    every = np.arange(len(records))
    if protocol == "records":
        rest, test = multilabel_holdout(labels, TEST_FRAC, seed)
    else:
        prefix = protocol.removeprefix("source-")
        held = np.array([source(r) == prefix for r in records])
        if not held.any() or held.all():
            found = sorted({source(r) for r in records})
            raise ECGError(f"--split {protocol}: the records hold sources {', '.join(found)}; holding out "
                           f"{prefix} leaves {'no test' if not held.any() else 'no training'} records")
        rest, test = every[~held], every[held]
    kept, val = multilabel_holdout(labels[rest], VAL_FRAC, seed)
    return {"train": rest[kept], "val": rest[val], "test": test}


def _split_from_manifest(records: np.ndarray, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    index = {r: i for i, r in enumerate(records)}
    try:
        split = {k: np.array([index[r] for r in manifest[k]], dtype=np.int64) for k in ("train", "val", "test")}
    except KeyError as exc:
        raise ECGError(f"the run's splits.json names record {exc} that is not in the data folder; restore the "
                       f"records or start a new run with --version bump") from None
    except TypeError:
        raise ECGError("the run's splits.json does not list records per split; restore it or start a new run "
                       "with --version bump") from None
    return split


def build(raw_dir: Path, cache_dir: Path, *, split_seed: int, protocol: str = "records", fs: int = 500,
          seq_len: float = 10.0, saved_manifest: dict | None = None, data_url: str | None = None,
          progress: bool = True, release: int = 2020, leads: int = 12,
          preprocess: Preprocess = NO_PREPROCESS) -> DataSplits:
    """Train/val/test record datasets of the Challenge ``release``'s scored classes (equivalent classes merged),
    on the lead subset ``leads`` (12, or a 2021 subset), the records preprocessed by ``preprocess`` when cached."""
    dataset = f"cinc{release}"
    if data_url:
        raise ECGError(f"--data-url is for MIT-BIH and ptb; for {dataset} {files_hint(raw_dir / 'records')}")
    scoring = read_scoring(raw_dir / "scoring", release)
    if saved_manifest is not None:
        check_run(saved_manifest.get("preprocess"), preprocess)
    store = load_records(raw_dir / "records", cache_dir, fs, progress, prep=preprocess)
    records = store.names
    labels = np.stack([scoring.multi_hot(str(d).split(",")) for d in store.extra["dx"]])
    lead_names = LEAD_SETS[leads]
    if saved_manifest is not None:
        saved = saved_manifest.get("preprocess", {})
        same = saved.get("fs") == fs and saved.get("leads", LEADS) == lead_names
        if saved_manifest.get("protocol") != protocol or not same:
            raise ECGError(f"the run's splits.json holds a {saved_manifest.get('protocol')} split at {saved.get('fs')} "
                           f"Hz with leads {','.join(saved.get('leads', LEADS))}; check --split, --fs and --leads")
        split = _split_from_manifest(records, saved_manifest)
    else:
        split = record_split(labels, records, protocol, split_seed)
    window = int(round(seq_len * fs))
    prep = {"fs": fs, "window": window, "stride": window // 2, "leads": lead_names, "units": preprocess.units,
            **preprocess.describe()}
    sources = {k: sorted({source(r) for r in records[v]}) for k, v in split.items()}
    manifest = saved_manifest or {
        "database": f"PhysioNet/CinC Challenge {release}", "protocol": protocol, "split_seed": split_seed,
        "preprocess": prep, "classes": scoring.codes, "class_names": scoring.abbreviations, "sources": sources,
        "patients": patient_note(sources), **{k: records[v].tolist() for k, v in split.items()}}
    columns = [LEADS.index(lead) for lead in lead_names]

    def subset(idx: np.ndarray, train: bool) -> RecordDataset:
        return RecordDataset(store, idx, labels[idx], scoring.codes, window, random_crop=train,
                             stride=prep["stride"], leads=columns, meta={"record": records[idx]})

    return DataSplits(subset(split["train"], True), subset(split["val"], False), subset(split["test"], False),
                      manifest, multilabel=True, selection="challenge", preprocess=prep,
                      challenge_weights=scoring.weights, normal_index=scoring.normal_index)


def patient_note(sources: dict[str, list[str]]) -> str:
    """Whether one patient can sit on both sides of the split: the sources with several records per patient
    that both the test split and the training side (train or val) hold."""
    both = [s for s in SEVERAL_PER_PATIENT if s in sources["test"] and s in sources["train"] + sources["val"]]
    if not both:
        return ("patient-disjoint as far as the sources tell: no source with several records per patient is on "
                "both sides")
    return (f"sources {', '.join(both)} hold several records per patient and sit on both sides; the headers name no "
            f"patient, so one patient may be in training and test (use --split source-X to hold a source out whole)")


def write_output(path: Path, record: str, codes: list[str], labels: np.ndarray, probs: np.ndarray) -> None:
    """One Challenge output file: ``#record``, the class codes, binary labels and probabilities, comma-separated."""
    text = "\n".join([f"#{record}", ",".join(codes), ",".join(str(int(v)) for v in labels),
                      ",".join(f"{float(p):.6f}" for p in probs)]) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_outputs(folder: Path, records: Sequence[str], codes: list[str], probs: np.ndarray,
                  thresholds: Sequence[float]) -> None:
    """``folder/<record>.csv`` for every record: labels are the probabilities at or above ``thresholds``."""
    labels = probs >= np.asarray(thresholds)[None, :]
    for record, row, p in zip(records, labels, probs, strict=True):
        write_output(folder / f"{record}.csv", str(record), codes, row, p)


def read_output(path: Path) -> tuple[str, list[str], np.ndarray, np.ndarray]:
    """Parse a Challenge output file back into (record, codes, labels, probabilities)."""
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(lines) != 4 or not lines[0].startswith("#"):
        raise ECGError(f"{path} is not a Challenge output file (#record, classes, labels, probabilities)")
    codes = [c.strip() for c in lines[1].split(",")]
    labels = np.array([int(v) for v in lines[2].split(",")])
    probs = np.array([float(v) for v in lines[3].split(",")])
    return lines[0][1:].strip(), codes, labels, probs
