"""MIT-BIH Arrhythmia Database: heartbeats in the Kaggle "ECG Heartbeat Categorization" format.

Kachuee et al. (2018): lead MLII resampled to 125 Hz, cut into 10-second windows, each window
min-max scaled to [0, 1]; a beat starts at its annotated R peak and spans 1.2 x the median RR
interval of its window, zero-padded or cut to 187 samples. Records 102 and 104 have no MLII lead;
their lead 0 (V5 and V2) is used instead. Record 114 has MLII on lead 1.

Other beat formats (``BEAT_FORMATS``, ``--beat-format``) keep 187 samples at 125 Hz. ``centered`` starts
0.5 s before the R peak and is not cut at 1.2 x RR, so the network sees the P wave and the QRS onset,
which the Kaggle beat (starting at the R peak) leaves out. ``filtered`` is ``centered`` cut from the
record with its baseline wander removed and divided by its median beat amplitude (``beat_inputs``)
instead of min-max scaled per 10-s window, so beats keep their height relative to the patient's own.
``beatgan`` is the beat of BeatGAN (Zhou et al., IJCAI 2019), for comparisons with it: 320 samples at the records'
own 360 Hz (no resampling), 140 before the annotated R peak and 180 from it (the R peak at index 140), both leads
(MLII first where the record has it, then its other lead), and each beat scaled to [-1, 1] by its own minimum and
maximum over both leads: one scale per beat, so the two leads keep their relative size. The beats, their order and
labels are those of the other formats; beats near a record's edge are zero-padded after the scaling.

``--preprocess`` (:mod:`loaders.preprocess`) filters the whole record at the beat rate before beats are cut (bandpass,
baseline removal: part of the extraction parameters, so of the cache key), and normalises each beat on its own
after the format's scaling (z-score or min-max: applied to the cached beats, like the record statistics).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold
from tqdm import tqdm

from loaders.dataset import DataSplits, ECGDataset, cached_arrays, fingerprint, holdout, resample
from loaders.download import PHYSIONET_MITDB, fetch_files, parse_sha256sums, sha256_file
from loaders.preprocess import NO_PREPROCESS, Preprocess, bandpass, beat_normalised, check_run, remove_baseline
from toolbox.utils import ECGError, write_json

log = logging.getLogger(__name__)

RECORDS = [
    "100", "101", "102", "103", "104", "105", "106", "107", "108", "109", "111", "112", "113", "114",
    "115", "116", "117", "118", "119", "121", "122", "123", "124", "200", "201", "202", "203", "205",
    "207", "208", "209", "210", "212", "213", "214", "215", "217", "219", "220", "221", "222", "223",
    "228", "230", "231", "232", "233", "234",
]
# de Chazal et al. (2004): train on DS1, test on DS2; the paced records are left out of both.
DS1 = ["101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201", "203", "205",
       "207", "208", "209", "215", "220", "223", "230"]
DS2 = ["100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212", "213", "214", "219",
       "221", "222", "228", "231", "232", "233", "234"]
PACED = ["102", "104", "107", "217"]
PROTOCOLS = {"intra": "intra-patient", "inter": "inter-patient"}
AAMI_CLASSES = ["N", "S", "V", "F", "Q"]
AAMI_MAP = {**dict.fromkeys("NLRej", 0), **dict.fromkeys("AaJS", 1), **dict.fromkeys("VE", 2),
            "F": 3, **dict.fromkeys("/fQ", 4)}
BINARY_CLASSES = ["N", "abnormal"]
# AAMI class of every beat annotation, for scoring against reference annotations (EC57): the training classes
# (``AAMI_MAP``), and the symbols training leaves out: bundle branch block beat (B) is N, supraventricular
# escape (n) S, R-on-T (r) V and unclassifiable (?) Q
REFERENCE_MAP = {**AAMI_MAP, "B": 0, "n": 1, "r": 2, "?": 4}
# Every beat annotation of the MIT-BIH format (used for RR intervals, labelled or not).
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")
# Bits per sample of the WFDB signal formats PhysioNet uses (MIT-BIH is format 212).
FORMAT_BITS = {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12, "310": 10, "311": 10}
# Bump when the extraction code changes in a way that changes its output (invalidates caches).
# Version 2 added the RR-interval features; version 3 leaves the record-level statistics (the scale of
# ``filtered`` beats, the mean RR) to ``beat_inputs``; the beats and their order are those of version 1.
EXTRACTION_VERSION = 3
# Per-beat RR-interval features; the first three are divided by the record's mean RR interval (de Chazal's
# average RR), the last is the beat's prematurity.
RR_FEATURES = ["pre", "post", "local", "pre/local"]
LOCAL_RR_BEATS = 10  # the local RR is the mean of this many RR intervals ending at the beat


@dataclass(frozen=True)
class BeatParams:
    """Everything the extracted beats depend on; the cache is keyed by it."""

    fs: int = 125
    length: int = 187
    window_s: float = 10.0
    rr_factor: float | None = 1.2  # a beat is zero after this many median RR intervals; None: never cut
    lead: str = "MLII"
    before: int = 0  # samples (at ``fs``) before the R peak where a beat starts
    # "window": min-max per ``window_s``; "record": baseline removed, see ``beat_inputs``; "beat": each beat to
    # [-1, 1] by its own min and max over all its leads
    scale: str = "window"
    bandpass: tuple[float, float] | None = None  # --preprocess bandpass: its edges in Hz, applied at ``fs``
    baseline: bool = False  # --preprocess baseline: the record's baseline wander removed at ``fs``
    leads: int = 1  # signal leads per beat: ``lead`` (else the record's first), then the record's others in order

    def key(self) -> str:
        # the filters enter the key only when set, so the caches made before they existed keep their names
        fields = {k: v for k, v in asdict(self).items() if k not in LATER_FIELDS or v != LATER_FIELDS[k]}
        blob = json.dumps({**fields, "version": EXTRACTION_VERSION, "records": RECORDS}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# BeatParams fields added after version 3, and their defaults
LATER_FIELDS = {"bandpass": None, "baseline": False, "leads": 1}


# --beat-format: name -> extraction parameters (the first is the default, the Kaggle format); the names are
# ``loaders.BEAT_FORMAT_NAMES``, which the flag parser lists without importing this module.
BEAT_FORMATS = {"kaggle": BeatParams(), "centered": BeatParams(rr_factor=None, before=62),
                "filtered": BeatParams(rr_factor=None, before=62, scale="record"),
                "beatgan": BeatParams(fs=360, length=320, rr_factor=None, before=140, scale="beat", leads=2)}


def beat_params(beat_format: str, prep: Preprocess = NO_PREPROCESS, median_beat: bool = False) -> BeatParams:
    """The extraction parameters of ``beat_format`` with the record filters of ``prep`` (bandpass, baseline); an
    ECGError for what the format does not combine with."""
    params = BEAT_FORMATS[beat_format]
    if "baseline" in prep.steps and params.scale == "record":
        raise ECGError(f"--preprocess baseline: --beat-format {beat_format} removes the baseline already; leave "
                       f"baseline out")
    if prep.normaliser is not None and params.scale == "beat":
        raise ECGError(f"--preprocess {prep.normaliser}: --beat-format {beat_format} scales each beat to [-1, 1] "
                       f"already; leave {prep.normaliser} out")
    if median_beat and params.leads > 1:
        raise ECGError(f"--median-beat: --beat-format {beat_format} beats have {params.leads} leads of their own; "
                       f"leave --median-beat out")
    return replace(BEAT_FORMATS[beat_format], bandpass=prep.band if "bandpass" in prep.steps else None,
                   baseline="baseline" in prep.steps)


def missing_files(raw_dir: Path, records: list[str] = RECORDS) -> list[str]:
    """Names of the record files (.hea, .dat, .atr) absent from ``raw_dir``."""
    return [f"{r}{ext}" for r in records for ext in (".hea", ".dat", ".atr") if not (raw_dir / f"{r}{ext}").is_file()]


def known_digests() -> dict[str, str]:
    """PhysioNet's published SHA-256 of every record file (copied from its SHA256SUMS.txt)."""
    return parse_sha256sums(Path(__file__).with_name("mitdb.sha256").read_text())


def ensure_records(raw_dir: Path, data_url: str | None = None, progress: bool = True) -> None:
    """Download missing MIT-BIH files, verified against PhysioNet's digests, or raise a one-line ECGError."""
    missing = missing_files(raw_dir)
    if missing:
        fetch_files(data_url or PHYSIONET_MITDB, missing, raw_dir, what="the MIT-BIH Arrhythmia Database (mitdb)",
                    sha256=known_digests(), progress=progress)


def check_integrity(raw_dir: Path, cache_dir: Path) -> None:
    """Check the record files against ``raw_dir/SHA256SUMS.txt`` when it is there; remember a pass.

    The result is remembered in ``cache_dir`` (never in the raw folder) with each file's size and
    modification time, so unchanged files are not hashed again.
    """
    sums_file = raw_dir / "SHA256SUMS.txt"
    if not sums_file.is_file():
        return
    names = {f"{r}{ext}" for r in RECORDS for ext in (".hea", ".dat", ".atr")}
    sums = {n: d for n, d in parse_sha256sums(sums_file.read_text()).items() if n in names}
    stats = {n: (raw_dir / n).stat() for n in sorted(sums) if (raw_dir / n).is_file()}
    stamp = {n: [st.st_size, st.st_mtime_ns] for n, st in stats.items()}
    memo = cache_dir / "mitdb_integrity.json"
    record = {"raw_dir": str(raw_dir.resolve()), "files": stamp}
    if memo.is_file():
        try:
            if json.loads(memo.read_text()) == record:
                return
        except (OSError, ValueError):
            pass
    bad = [f"{n} (missing)" if n not in stamp else f"{n} (SHA-256 mismatch)"
           for n in sorted(sums) if n not in stamp or sha256_file(raw_dir / n) != sums[n]]
    if bad:
        more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
        raise ECGError(f"{raw_dir} fails its check against SHA256SUMS.txt: {', '.join(bad[:8])}{more}; "
                       f"replace these files with PhysioNet's")
    write_json(memo, record)


def _window_scale(x: np.ndarray, win: int) -> np.ndarray:
    """Min-max scale ``x`` to [0, 1] separately in each window of ``win`` samples."""
    starts = np.arange(0, len(x), win)
    lo = np.minimum.reduceat(x, starts)
    span = np.maximum.reduceat(x, starts) - lo
    span[span == 0] = 1.0
    wid = np.arange(len(x)) // win
    return (x - lo[wid]) / span[wid]


def _beat_scale(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each beat of ``x`` (n, ...) to [-1, 1] by the min and max of its ``valid`` samples over all its leads (a flat
    beat becomes 0); the other samples are set later."""
    axes = tuple(range(1, x.ndim))
    lo = np.where(valid, x, np.inf).min(axis=axes, keepdims=True)
    span = np.where(valid, x, -np.inf).max(axis=axes, keepdims=True) - lo
    return np.where(span > 0, 2 * (x - lo) / np.where(span > 0, span, 1.0) - 1, 0.0)


def _window_median_rr(beats: np.ndarray, n_windows: int, win: int) -> np.ndarray:
    """Median RR interval (samples) of each window; the record's median where a window has < 2 beats."""
    rr = np.diff(beats)
    rr_win = beats[1:] // win
    same = (beats[:-1] // win) == rr_win
    overall = float(np.median(rr)) if len(rr) else float(win)
    med = np.full(n_windows, overall)
    for w in np.unique(rr_win[same]):
        med[w] = np.median(rr[same & (rr_win == w)])
    return med


def _read_record(raw_dir: Path, record: str):
    """Read a record and its reference annotations, checking file sizes and annotation sanity first."""
    import wfdb  # imported here: reading records is the only place that needs it

    path = raw_dir / record
    try:
        header = wfdb.rdheader(str(path))
    except Exception as exc:  # wfdb raises many types for a damaged header
        raise ECGError(f"{path}.hea is not a valid WFDB header ({type(exc).__name__}: {exc}); "
                       f"replace it with PhysioNet's") from None
    for fname in sorted(set(header.file_name)):
        n_sig = header.file_name.count(fname)
        fmt = header.fmt[header.file_name.index(fname)]
        need = -(-header.sig_len * n_sig * FORMAT_BITS.get(str(fmt), 16) // 8)
        have = (raw_dir / fname).stat().st_size if (raw_dir / fname).is_file() else 0
        if have < need:
            raise ECGError(f"{raw_dir / fname} holds {have} bytes but {path}.hea announces {header.sig_len} samples "
                           f"x {n_sig} signals ({need} bytes); replace the record's files with PhysioNet's")
    atr = path.with_suffix(".atr")
    raw_atr = atr.read_bytes()
    if len(raw_atr) < 2 or raw_atr[-2:] != b"\x00\x00":
        raise ECGError(f"{atr} is truncated or not a WFDB annotation file (no end marker); replace it with PhysioNet's")
    try:
        rec = wfdb.rdrecord(str(path))
        ann = wfdb.rdann(str(path), "atr")
    except Exception as exc:
        raise ECGError(f"cannot read MIT-BIH record {path} ({type(exc).__name__}: {exc}); "
                       f"replace its .hea/.dat/.atr files with PhysioNet's") from None
    beats = np.isin(ann.symbol, list(BEAT_SYMBOLS))
    if not beats.any() or ann.sample.min() < 0 or ann.sample.max() >= rec.sig_len or np.any(np.diff(ann.sample) < 0):
        raise ECGError(f"{atr} holds no beats or annotations outside the {rec.sig_len} samples of the record; "
                       f"replace it with PhysioNet's")
    return rec, ann


def rr_intervals(beat_samples: np.ndarray, at: np.ndarray, local: int = LOCAL_RR_BEATS) -> np.ndarray:
    """RR intervals of the beats ``at`` from all beat positions ``beat_samples`` of a record: (n, 4) float32.

    ``pre``/``post``: the RR interval before/after the beat; ``local``: the mean of the ``local`` RR intervals
    ending at the beat (all three in samples); then ``pre/local``, the beat's prematurity. The first and
    last beats of a record borrow the one interval they have. :func:`beat_inputs` divides the first three
    by the record's mean RR.
    """
    rr = np.diff(beat_samples).astype(np.float64)
    if len(rr) == 0:
        return np.ones((len(at), len(RR_FEATURES)), dtype=np.float32)
    k = np.searchsorted(beat_samples, at)  # ``at`` are beat positions: beat_samples[k] == at
    pre = rr[np.clip(k - 1, 0, len(rr) - 1)]
    post = rr[np.clip(k, 0, len(rr) - 1)]
    csum = np.concatenate([[0.0], np.cumsum(rr)])
    end = np.clip(k, 1, len(rr))  # the intervals rr[start:end] end at the beat
    start = np.maximum(end - local, 0)
    local_rr = (csum[end] - csum[start]) / (end - start)
    return np.stack([pre, post, local_rr, pre / local_rr], axis=1).astype(np.float32)


def beat_inputs(beats: dict[str, np.ndarray], stats: np.ndarray, by_record: bool,
                normalise: str | None = None) -> dict[str, np.ndarray]:
    """The network's inputs from the cached beats: ``x`` and the RR features ``rr``.

    Record-level statistics come only from the beats ``stats`` marks (on the intra-patient split: those
    outside the test split, so no test beat shapes a training input; on the inter-patient split: every
    beat of the record, unlabelled, as a Holter analysis would use the whole recording). They are the
    record's mean RR interval, which divides the RR features (the mean, not the median: in records where
    most beats are ectopic, 232, the median RR is an ectopic one, while long pauses after them keep the
    mean near the underlying rhythm), and with ``by_record`` (``filtered`` beats) the median absolute
    amplitude at the R peaks, which divides the beats so that they keep their height relative to the
    patient's own. ``normalise`` (zscore or minmax, ``--preprocess``) then scales each beat on its own, its
    zero padding included.
    """
    x, rr = beats["x"], beats["rr"].copy()
    if by_record:
        x = x.copy()
    for r in np.unique(beats["record"]):
        mine = beats["record"] == r
        chosen = mine & stats
        if not chosen.any():
            raise ECGError(f"record {r} has no beats to compute its statistics from")
        rr[mine, :3] /= float(rr[chosen, 0].mean())
        if by_record:
            amplitude = float(np.median(beats["amp"][chosen]))
            x[mine] /= amplitude if amplitude > 0 else 1.0
    return {"x": beat_normalised(x, normalise), "rr": rr}


NOT_EARLY = 0.9  # a beat is not early when its RR prematurity (pre/local) is at least this
MIN_TEMPLATE_BEATS = 10  # below this many such beats, a record's template is the median of all its beats


def record_templates(x: np.ndarray, records: np.ndarray, prematurity: np.ndarray,
                     stats: np.ndarray | None = None) -> np.ndarray:
    """Each beat's record template: the sample-wise median of the record's beats that do not come early.

    No label is used: ectopic beats mostly come early (``prematurity`` = pre/local RR below 0.9), so the
    other beats show the patient's own dominant beat, even in record 232 where most beats are early S
    beats and the normal ones follow long pauses. Only the beats ``stats`` marks (default: all) are used.
    """
    stats = np.ones(len(x), dtype=bool) if stats is None else stats
    out = np.empty_like(x)
    for r in np.unique(records):
        mine = records == r
        pool = mine & stats
        chosen = pool & (prematurity >= NOT_EARLY)
        out[mine] = np.median(x[chosen if chosen.sum() >= MIN_TEMPLATE_BEATS else pool], axis=0)
    return out


def network_input(inputs: dict[str, np.ndarray], templates: np.ndarray | None, rr_features: bool,
                  idx: np.ndarray) -> np.ndarray:
    """The model's input (n, channels, length) for the beats ``idx``: the beat, then its record template
    (``--median-beat``), then its RR features as constant channels (``--rr-features``). Beats of several leads
    (``beatgan``) keep theirs as the first channels."""
    x = inputs["x"][idx] if inputs["x"].ndim == 3 else inputs["x"][idx, None, :]
    if templates is not None:
        x = np.concatenate([x, templates[idx, None, :]], axis=1)
    if rr_features:
        x = np.concatenate([x, np.repeat(inputs["rr"][idx, :, None], x.shape[2], axis=2)], axis=1)
    return x


def cut_beats(signal: np.ndarray, fs_in: float, beat_samples: np.ndarray, at: np.ndarray,
              params: BeatParams = BeatParams()) -> dict[str, np.ndarray]:
    """Beats of one lead (``signal`` (samples,) at ``fs_in`` Hz), or with ``params.leads`` > 1 of several
    (``signal`` (samples, leads)), at the R peaks ``at``: ``x`` (n, length) or (n, leads, length) float32, ``rr``
    (:func:`rr_intervals`) and ``amp``, the absolute amplitude of the first lead at each R peak (record-scaled
    formats).

    ``beat_samples`` are every beat of the recording (sorted samples at ``fs_in``; ``at`` is a subset): the RR
    intervals and the window median RR come from them. Training cuts at the reference annotations
    (:func:`extract_record`), ``predict.py`` at detected R peaks, with this one function.
    ``filtered`` beats (``scale="record"``) are cut from the signal with its baseline removed; their division
    by the record's amplitude is left to :func:`beat_inputs`, which knows the split. ``beatgan`` beats
    (``scale="beat"``) are scaled one by one over their samples inside the record, then zero-padded. The record
    filters of ``params`` (``bandpass``, ``baseline``) act on the whole resampled signal before the format's scaling.
    """
    x = resample(signal, fs_in, params.fs, axis=0)
    if params.bandpass is not None:
        x = bandpass(x, params.fs, *params.bandpass, axis=0)
    if params.baseline:
        x = remove_baseline(x, params.fs, axis=0)
    win = int(round(params.window_s * params.fs))
    pos_all = np.clip(np.round(beat_samples * params.fs / fs_in).astype(np.int64), 0, len(x) - 1)
    pos = np.clip(np.round(at * params.fs / fs_in).astype(np.int64), 0, len(x) - 1)
    if params.scale == "window":
        x = _window_scale(x, win)
    elif params.scale == "record":
        x = remove_baseline(x, params.fs)

    starts = pos - params.before
    offsets = np.arange(params.length)
    idx = starts[:, None] + offsets[None, :]
    valid = (idx >= 0) & (idx < len(x))
    if params.rr_factor is not None:
        med_rr = _window_median_rr(pos_all, -(-len(x) // win), win)
        spans = np.round(params.rr_factor * med_rr[pos // win]).astype(np.int64) + params.before
        valid &= offsets[None, :] < spans[:, None]
    seg = x[np.clip(idx, 0, len(x) - 1)]  # (n, length) or (n, length, leads)
    if seg.ndim == 3:
        seg, valid = seg.transpose(0, 2, 1), valid[:, None, :]
    if params.scale == "beat":
        seg = _beat_scale(seg, valid)
    beats = np.where(valid, seg, 0.0).astype(np.float32)
    amp = np.abs(x[pos] if x.ndim == 1 else x[pos, 0]).astype(np.float32)
    return {"x": beats, "rr": rr_intervals(beat_samples, at), "amp": amp}


def extract_record(raw_dir: Path, record: str, params: BeatParams = BeatParams()) -> dict[str, np.ndarray]:
    """Beats of one record at its reference annotations (:func:`cut_beats`), with ``label`` (AAMI index),
    ``sample`` (at 360 Hz) and ``record``. The lead is ``params.lead`` (MLII) where the record has it, else its
    first; with ``params.leads`` > 1 the record's other leads follow in their order."""
    rec, ann = _read_record(raw_dir, record)
    lead = rec.sig_name.index(params.lead) if params.lead in rec.sig_name else 0
    order = [lead, *(i for i in range(rec.n_sig) if i != lead)][:params.leads]
    if len(order) < params.leads:
        raise ECGError(f"record {record} has {rec.n_sig} leads, but these beats need {params.leads}; replace its "
                       f"files with PhysioNet's")
    symbols = np.asarray(ann.symbol)
    is_beat = np.isin(symbols, list(BEAT_SYMBOLS))
    keep = np.isin(symbols, list(AAMI_MAP))
    signal = rec.p_signal[:, lead] if params.leads == 1 else rec.p_signal[:, order]
    beats = cut_beats(signal, rec.fs, ann.sample[is_beat], ann.sample[keep], params)
    labels = np.array([AAMI_MAP[s] for s in symbols[keep]], dtype=np.int64)
    return {"x": beats["x"], "label": labels, "sample": ann.sample[keep].astype(np.int64),
            "record": np.full(len(labels), int(record), dtype=np.int64), "rr": beats["rr"], "amp": beats["amp"]}


def beats_at(signal: np.ndarray, fs: float, peaks: np.ndarray, *, beat_format: str, median_beat: bool,
             rr_features: bool, preprocess: Preprocess = NO_PREPROCESS) -> np.ndarray:
    """The model's input (n, channels, length) for a recording's detected R ``peaks`` (samples at ``fs``), made by
    the training code (:func:`cut_beats`, :func:`beat_inputs`, :func:`record_templates`, :func:`network_input`)
    with record statistics from the whole recording, as on the inter-patient protocol, and the run's
    ``preprocess``. ``signal`` is one lead (samples,), or (samples, leads) for a format of several leads
    (``beatgan``: MLII first)."""
    params = beat_params(beat_format, preprocess, median_beat)
    signal = np.asarray(signal)
    given = 1 if signal.ndim == 1 else signal.shape[1]
    if signal.ndim > 2 or given != params.leads:
        raise ECGError(f"--beat-format {beat_format} cuts beats from {params.leads} lead(s), but {given} came; "
                       f"{'give the recording as (samples, leads), MLII first' if params.leads > 1 else 'give one'}")
    peaks = np.asarray(peaks, dtype=np.int64)
    beats = {**cut_beats(signal, fs, peaks, peaks, params), "record": np.zeros(len(peaks), np.int64)}
    stats = np.ones(len(peaks), dtype=bool)
    inputs = beat_inputs(beats, stats, by_record=params.scale == "record", normalise=preprocess.normaliser)
    templates = (record_templates(inputs["x"], beats["record"], beats["rr"][:, RR_FEATURES.index("pre/local")], stats)
                 if median_beat else None)
    return network_input(inputs, templates, rr_features, np.arange(len(peaks)))


def extract_beats(raw_dir: Path, params: BeatParams = BeatParams(), progress: bool = True) -> dict[str, np.ndarray]:
    """Beats of all 48 records, concatenated in record order."""
    parts = [extract_record(raw_dir, r, params) for r in tqdm(RECORDS, desc="extract MIT-BIH beats",
                                                                unit="record", disable=None if progress else True)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_beats(raw_dir: Path, cache_dir: Path, params: BeatParams = BeatParams(), *, data_url: str | None = None,
               progress: bool = True) -> dict[str, np.ndarray]:
    """Extracted beats, from the cache under ``cache_dir`` when present, else extracted and cached.

    The cache is keyed by the extraction parameters and the size and time of every record file, so new or
    replaced records are extracted again. Missing records are downloaded first.
    """
    ensure_records(raw_dir, data_url, progress)

    def extract() -> dict[str, np.ndarray]:
        check_integrity(raw_dir, cache_dir)
        t0 = time.perf_counter()
        beats = extract_beats(raw_dir, params, progress)
        log.info("extracted %d beats in %.1f s", len(beats["label"]), time.perf_counter() - t0)
        return beats

    inputs = fingerprint(raw_dir / f"{r}{ext}" for r in RECORDS for ext in (".hea", ".dat", ".atr"))
    return cached_arrays(cache_dir, f"mitdb_beats_{params.key()}", inputs, extract,
                         what=f"the MIT-BIH records in {raw_dir}")


def intra_patient_split(labels: np.ndarray, seed: int, test_frac: float = 0.2,
                        val_frac: float = 0.1) -> dict[str, np.ndarray]:
    """Stratified random split of beat indices: ``test_frac`` for test, then ``val_frac`` of the rest for val."""
    rest, test = holdout(np.arange(len(labels)), labels, test_frac, seed)
    train, val = holdout(rest, labels[rest], val_frac, seed)
    return {"train": train, "val": val, "test": test}


def intra_fold_split(labels: np.ndarray, k: int, fold: int, seed: int,
                     val_frac: float = 0.1) -> dict[str, np.ndarray]:
    """Cross-validation over beats: stratified ``k`` folds of all beats (shuffled, seeded), test = fold ``fold``
    (1-based), validation = a stratified ``val_frac`` of the other folds' beats, training the rest."""
    smallest = int(np.bincount(labels)[np.unique(labels)].min())
    if not 2 <= k <= smallest:
        raise ECGError(f"--folds {k}: the smallest class has {smallest} beats, so every fold holds one of each "
                       f"class only with 2 to {smallest} folds")
    if not 1 <= fold <= k:
        raise ECGError(f"--fold {fold} is not one of the {k} folds (1-{k})")
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    rest, test = next(f for i, f in enumerate(folds) if i == fold - 1)
    train, val = holdout(rest, labels[rest], val_frac, seed)
    return {"train": train, "val": val, "test": np.sort(test)}


def _validation_records(pool: list[str], records: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                        val_frac: float, min_val_beats: int, max_val_share: float) -> list[str] | None:
    """Whole records of ``pool`` drawn in a random order until they hold ``val_frac`` of its beats; a draw is
    kept only if N, S and V each have ``min_val_beats`` beats and none of N, S, V, F loses more than
    ``max_val_share`` of its beats to validation. None when 1000 draws find no such set."""
    per_record = {r: np.bincount(labels[records == int(r)], minlength=len(AAMI_CLASSES)) for r in pool}
    total = sum(per_record.values())
    for _ in range(1000):
        chosen, counts = [], np.zeros(len(AAMI_CLASSES), dtype=np.int64)
        for r in rng.permutation(pool):
            if counts.sum() >= val_frac * total.sum():
                break
            chosen.append(str(r))
            counts += per_record[r]
        if np.all(counts[:3] >= min_val_beats) and np.all(counts[:4] <= max_val_share * total[:4]):
            return chosen
    return None


def inter_patient_split(records: np.ndarray, labels: np.ndarray, seed: int, val_frac: float = 0.1,
                        min_val_beats: int = 20, max_val_share: float = 0.35) -> dict[str, np.ndarray]:
    """de Chazal's DS1 -> DS2 split of beat indices; validation = whole DS1 records (seeded choice).

    Validation records are drawn in a seeded random order until they hold ``val_frac`` of the DS1 beats;
    a draw is kept only if N, S and V each have ``min_val_beats`` beats in validation, and validation takes
    at most ``max_val_share`` of the DS1 beats of each of N, S, V and F (training keeps most of each).
    """
    chosen = _validation_records(DS1, records, labels, np.random.default_rng(seed), val_frac, min_val_beats,
                                 max_val_share)
    if chosen is None:
        raise ECGError(f"no set of DS1 records gives a validation split with N, S and V beats (seed {seed})")
    idx = np.arange(len(records))
    val = np.isin(records, [int(r) for r in chosen])
    return {"train": idx[np.isin(records, [int(r) for r in DS1]) & ~val], "val": idx[val],
            "test": idx[np.isin(records, [int(r) for r in DS2])]}


def ds1_folds(records: np.ndarray, labels: np.ndarray, k: int, seed: int) -> list[list[str]]:
    """DS1's records in ``k`` folds for cross-validation, each holding S and V beats (seeded).

    Records are placed one at a time, those with most S beats first (then most V beats; ties in a seeded
    order), each into the fold whose share of the DS1 N, S and V beats and of its records is smallest so far.
    """
    if not 2 <= k <= len(DS1):
        raise ECGError(f"--folds {k}: DS1 has {len(DS1)} records; use 2 to {len(DS1)} folds")
    rng = np.random.default_rng(seed)
    counts = {r: np.append(np.bincount(labels[records == int(r)], minlength=len(AAMI_CLASSES))[:3], 1) for r in DS1}
    total = np.maximum(sum(counts.values()), 1)  # N, S and V beats, and records
    order = sorted((str(r) for r in rng.permutation(DS1)), key=lambda r: (-counts[r][1], -counts[r][2]))
    folds: list[list[str]] = [[] for _ in range(k)]
    load = np.zeros((k, 4))
    for r in order:
        share = ((load + counts[r]) / total).sum(axis=1) + rng.random(k) * 1e-9  # seeded tie-break
        f = int(np.argmin(share))
        folds[f].append(r)
        load[f] += counts[r]
    empty = [i + 1 for i in range(k) if load[i, 1] == 0 or load[i, 2] == 0]
    if empty:
        raise ECGError(f"--folds {k}: fold {empty[0]} gets no S or no V beats; use fewer folds")
    return [sorted(f) for f in folds]


def fold_split(records: np.ndarray, labels: np.ndarray, k: int, fold: int, seed: int, val_frac: float = 0.1,
               min_val_beats: int = 20, max_val_share: float = 0.35) -> tuple[dict[str, np.ndarray],
                                                                             list[list[str]]]:
    """Cross-validation inside DS1: test on the records of fold ``fold`` (1-based) of :func:`ds1_folds`, train
    on the other folds' records, validation = whole records among those (as :func:`inter_patient_split`).
    DS2 is not touched. Returns the split and the folds."""
    folds = ds1_folds(records, labels, k, seed)
    pool = [r for i, f in enumerate(folds) for r in f if i != fold - 1]
    chosen = None
    for share in (max_val_share, 0.5):  # with few records left, allow validation up to half of a class
        chosen = _validation_records(pool, records, labels, np.random.default_rng(seed), val_frac, min_val_beats,
                                     share)
        if chosen is not None:
            break
    if chosen is None:
        raise ECGError(f"--folds {k} --fold {fold}: the training folds have no set of records that gives a "
                       f"validation split with N, S and V beats; use fewer folds")
    idx = np.arange(len(records))
    val = np.isin(records, [int(r) for r in chosen])
    return ({"train": idx[np.isin(records, [int(r) for r in pool]) & ~val], "val": idx[val],
             "test": idx[np.isin(records, [int(r) for r in folds[fold - 1]])]}, folds)


def _manifest(beats: dict[str, np.ndarray], split: dict[str, np.ndarray], seed: int, params: BeatParams,
              protocol: str = "intra", folds: list[list[str]] | int | None = None,
              fold: int | None = None) -> dict[str, Any]:
    """splits.json content: for each split, the records and the annotation samples of its beats by record
    (and for cross-validation, which fold is tested: inside DS1 ``folds`` lists every fold's records; over the
    beats of the intra-patient split it is their number, and the entry says ``"unit": "beat"``)."""
    out: dict[str, Any] = {"database": "mitdb", "protocol": PROTOCOLS[protocol], "split_seed": seed,
                           "extraction": {**asdict(params), "version": EXTRACTION_VERSION},
                           "records": {name: sorted(str(r) for r in np.unique(beats["record"][idx]))
                                       for name, idx in split.items()},
                           "counts": {}, "beats": {}}
    for name, idx in split.items():
        out["counts"][name] = {c: int(n) for c, n in zip(AAMI_CLASSES, np.bincount(beats["label"][idx],
                                                                                   minlength=5), strict=False)}
        rec, smp = beats["record"][idx], beats["sample"][idx]
        out["beats"][name] = {str(r): smp[rec == r].tolist() for r in np.unique(rec)}
    if isinstance(folds, list):
        out["cross_validation"] = {"folds": folds, "fold": fold}
    elif folds is not None:
        out["cross_validation"] = {"folds": folds, "fold": fold, "unit": "beat"}
    return out


def _split_from_manifest(beats: dict[str, np.ndarray], manifest: dict[str, Any],
                         params: BeatParams) -> dict[str, np.ndarray]:
    """Indices of the beats a saved splits.json names; an error if they do not match the extraction."""
    # the beats (record, sample) are checked one by one below, so a later EXTRACTION_VERSION is accepted;
    # parameters added since (``before``, ``scale``) take their defaults, which older extractions used
    saved = {k: v for k, v in (manifest.get("extraction") or {}).items() if k != "version"}
    if _as_json({**asdict(BeatParams()), **saved}) != _as_json(asdict(params)):
        raise ECGError("the run's splits.json was made with other extraction parameters; start a new run "
                       "with --version bump")
    key = beats["record"] * 1_000_000 + beats["sample"]
    order = np.argsort(key)
    split = {}
    for name in ("train", "val", "test"):
        wanted = np.concatenate([int(r) * 1_000_000 + np.asarray(s, dtype=np.int64)
                                 for r, s in manifest["beats"][name].items()] or [np.zeros(0, np.int64)])
        pos = np.searchsorted(key[order], wanted)
        pos = np.minimum(pos, len(key) - 1)
        if not np.array_equal(key[order][pos], wanted):
            raise ECGError(f"the run's splits.json names {name} beats that the extraction lacks; "
                           f"start a new run with --version bump")
        split[name] = np.sort(order[pos])
    return split


def _as_json(value: Any) -> Any:
    """``value`` as splits.json holds it (tuples become lists), for comparison with a saved one."""
    return json.loads(json.dumps(value))


def build(raw_dir: Path, cache_dir: Path, *, binary: bool, split_seed: int, protocol: str = "intra",
          saved_manifest: dict | None = None, data_url: str | None = None, progress: bool = True,
          rr_features: bool = False, beat_format: str = "kaggle", median_beat: bool = False,
          folds: int | None = None, fold: int | None = None, preprocess: Preprocess = NO_PREPROCESS) -> DataSplits:
    """The MIT-BIH train/val/test datasets (5 AAMI classes, or N versus the rest when ``binary``).

    ``protocol`` ``intra``: stratified random beats, or with ``folds`` and ``fold``, stratified folds of the beats
    (:func:`intra_fold_split`); ``inter``: DS1 records for training, DS2 for testing, or with ``folds`` and
    ``fold``, cross-validation inside DS1 (:func:`fold_split`).
    ``rr_features``: each beat also gets its ``RR_FEATURES`` as constant input channels after the signal.
    ``beat_format``: how a beat is cut and scaled (``BEAT_FORMATS``).
    ``median_beat``: a second signal channel holds the median of the beat's record's beats that do not come
    early (``record_templates``).
    ``preprocess``: bandpass and baseline removal of each record before beats are cut (:func:`beat_params`),
    then z-score or min-max normalisation of each beat (:func:`beat_inputs`).
    Record-level statistics (template, scale, mean RR) never use a test beat of a record that training sees
    (:func:`beat_inputs`).
    """
    if protocol not in PROTOCOLS:
        raise ECGError(f"unknown split '{protocol}'; valid: {', '.join(PROTOCOLS)}")
    if beat_format not in BEAT_FORMATS:
        raise ECGError(f"unknown beat format '{beat_format}'; valid: {', '.join(BEAT_FORMATS)}")
    if (folds is None) != (fold is None):
        raise ECGError("--folds K and --fold I go together (test on fold I of K)")
    params = beat_params(beat_format, preprocess, median_beat)
    if saved_manifest is not None:
        check_run(saved_manifest.get("preprocess"), preprocess)
    beats = load_beats(raw_dir, cache_dir, params, data_url=data_url, progress=progress)
    if saved_manifest is not None and saved_manifest.get("protocol") != PROTOCOLS[protocol]:
        raise ECGError(f"the run's splits.json holds a {saved_manifest.get('protocol')} split, not "
                       f"{PROTOCOLS[protocol]}; check --split")
    if saved_manifest is not None:
        version = (saved_manifest.get("extraction") or {}).get("version", 0)
        if version < 3 and (rr_features or median_beat or params.scale == "record"):
            raise ECGError("the run was made before record statistics came from training-side beats (extraction "
                           f"version {version}); its RR features, templates or scales would differ now: train it "
                           "again (--version bump)")
        try:
            split = _split_from_manifest(beats, saved_manifest, params)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ECGError(f"the run's splits.json does not describe a MIT-BIH split ({type(exc).__name__}: "
                           f"{exc}); restore it or start a new run with --version bump") from None
        manifest = saved_manifest
    else:
        fold_records: list[list[str]] | int | None = None
        if protocol == "intra" and folds is not None:
            split, fold_records = intra_fold_split(beats["label"], folds, fold, split_seed), folds
        elif protocol == "intra":
            split = intra_patient_split(beats["label"], split_seed)
        elif folds is not None:
            split, fold_records = fold_split(beats["record"], beats["label"], folds, fold, split_seed)
        else:
            split = inter_patient_split(beats["record"], beats["label"], split_seed)
        manifest = _manifest(beats, split, split_seed, params, protocol, fold_records, fold)
    labels = (beats["label"] > 0).astype(np.int64) if binary else beats["label"]
    classes = BINARY_CLASSES if binary else AAMI_CLASSES

    stats = np.ones(len(labels), dtype=bool)
    if protocol == "intra":  # records sit on both sides: their statistics come from training-side beats
        stats[split["test"]] = False
    inputs = beat_inputs(beats, stats, by_record=params.scale == "record", normalise=preprocess.normaliser)
    templates = (record_templates(inputs["x"], beats["record"], beats["rr"][:, RR_FEATURES.index("pre/local")], stats)
                 if median_beat else None)

    def subset(idx: np.ndarray) -> ECGDataset:
        return ECGDataset(network_input(inputs, templates, rr_features, idx), labels[idx], classes,
                          meta={"record": beats["record"][idx], "sample": beats["sample"][idx]})

    return DataSplits(subset(split["train"]), subset(split["val"]), subset(split["test"]),
                      {**manifest, "rr_features": RR_FEATURES if rr_features else [], "median_beat": median_beat,
                       "statistics": "training-side beats" if protocol == "intra" else "whole records",
                       "preprocess": preprocess.describe()},
                      feature_channels=len(RR_FEATURES) if rr_features else 0,
                      resample_records=protocol == "inter",
                      preprocess=preprocess.describe() if preprocess.steps else {})


def build_beats(raw_dir: Path, cache_dir: Path, *, binary: bool, split_seed: int, protocol: str = "intra",
                saved_manifest: dict | None = None, data_url: str | None = None, progress: bool = True,
                rr_features: bool = False, beat_format: str = "kaggle", median_beat: bool = False,
                folds: int | None = None, fold: int | None = None,
                preprocess: Preprocess = NO_PREPROCESS) -> DataSplits:
    """MIT-BIH beats: from the Kaggle CSVs when they lie in the folder, else from the raw records (:func:`build`)."""
    from loaders import kaggle  # kaggle imports this module

    if kaggle.has_mitbih_csv(raw_dir):
        needs = [flag for flag, on in (("--rr-features", rr_features), ("--median-beat", median_beat),
                                       (f"--beat-format {beat_format}", beat_format != "kaggle"),
                                       (f"--folds {folds}", folds is not None),
                                       (f"--preprocess {' '.join(preprocess.steps)}", bool(preprocess.steps))) if on]
        if needs:
            raise ECGError(f"{needs[0]} needs the raw MIT-BIH records, but {raw_dir} holds the Kaggle CSVs "
                           f"(beats cut at the R peak, without their times); point ECG_DATA_ROOT or --root-dir "
                           f"at the records")
        return kaggle.build_mitbih(raw_dir, cache_dir, binary=binary, split_seed=split_seed, protocol=protocol,
                                   saved_manifest=saved_manifest)
    return build(raw_dir, cache_dir, binary=binary, split_seed=split_seed, protocol=protocol,
                 saved_manifest=saved_manifest, data_url=data_url, progress=progress, rr_features=rr_features,
                 beat_format=beat_format, median_beat=median_beat, folds=folds, fold=fold, preprocess=preprocess)
