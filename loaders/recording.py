"""A user's own recordings, read into leads and sampling rates: WFDB, EDF/EDF+, CSV and NumPy ``.npy``.

WFDB records are read with ``wfdb`` (the PhysioNet library; Challenge records, ``.hea`` + ``.mat``, with the
Challenge reader that training uses), EDF and EDF+ with ``edfio``: pure Python over
NumPy, so it installs wherever NumPy does, it reads EDF+ annotations and signals of different rates, and it
is maintained beside MNE-Python, which uses it to write EDF. CSV files have a header row naming the leads and
one column per lead; ``.npy`` files hold one lead (samples,) or several (samples, leads). Neither stores its
sampling rate, so ``--fs`` gives it.
"""
from __future__ import annotations

import csv
import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loaders.dataset import resample
from toolbox.utils import ECGError, atomic_write

FORMATS = {".hea": "WFDB", ".edf": "EDF", ".csv": "CSV", ".npy": "NumPy"}
NEEDS_FS = {".csv", ".npy"}
# the leads tried, in order, after the model's own, when --lead is not given
FALLBACK_LEADS = ["MLII", "II"]


@dataclass
class Recording:
    """One recording: its leads as 1-D float arrays, each with its rate and name."""

    name: str
    path: Path
    signals: list[np.ndarray]
    fs: list[float]
    leads: list[str]


def list_inputs(inputs: list[str], skip: tuple[str, ...] = ()) -> list[Path]:
    """Input files from paths, folders and glob patterns: a WFDB record counts once (its ``.hea``); files of
    folders and patterns whose names end with one of ``skip`` (outputs of an earlier call) are left out."""
    found: list[Path] = []

    def wanted(p: Path) -> bool:
        return p.suffix.lower() in FORMATS and not p.name.endswith(skip)

    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if wanted(p))
        elif any(ch in text for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(text) if wanted(Path(p)))
        elif path.suffix.lower() not in FORMATS and path.with_name(path.name + ".hea").is_file():
            found.append(path.with_name(path.name + ".hea"))  # a WFDB record named without its extension
        elif path.is_file():
            if path.suffix.lower() not in FORMATS and path.suffix.lower() in (".dat", ".atr", ".mat"):
                path = path.with_suffix(".hea")
            found.append(path)
        else:
            raise ECGError(f"{text}: no such file, folder or WFDB record; give a .hea, .edf, .csv or .npy file, "
                           f"a folder of them, or a glob pattern")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ECGError(f"no recordings (.hea, .edf, .csv, .npy) in {', '.join(inputs)}")
    return unique


def read_recording(path: Path, fs: float | None = None) -> Recording:
    """Read one recording; an unreadable or unsupported file is an ECGError naming it and the fix."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ECGError(f"{path}: unsupported file type {path.suffix or '(none)'}; give a WFDB record (.hea), "
                       f"EDF (.edf), CSV (.csv) or NumPy (.npy) file")
    if suffix in NEEDS_FS and fs is None:
        raise ECGError(f"{path}: a {FORMATS[suffix]} file does not store its sampling rate; give it with --fs HZ")
    try:
        if suffix == ".hea":
            rec = _read_wfdb(path)
        elif suffix == ".edf":
            rec = _read_edf(path)
        elif suffix == ".csv":
            rec = _read_csv(path, fs)
        else:
            rec = _read_npy(path, fs)
    except ECGError:
        raise
    except Exception as exc:  # the readers raise many types for damaged files
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise ECGError(f"{path}: cannot read it as {FORMATS[suffix]} ({type(exc).__name__}: {detail}); "
                       f"check the file") from None
    for lead, signal in zip(rec.leads, rec.signals, strict=True):
        if signal.ndim != 1 or len(signal) == 0:
            raise ECGError(f"{path}: lead {lead} holds no samples")
    return rec


def _read_wfdb(path: Path) -> Recording:
    import wfdb

    if path.with_suffix(".mat").is_file() and _is_challenge_header(path):  # the reader training uses
        from loaders import cinc2020

        header = cinc2020.read_header(path, need_dx=False)
        signal = cinc2020.read_signal(path.parent, header)
        return Recording(path.stem, path, [row.astype(np.float64) for row in signal], [float(header.fs)] * len(signal),
                         list(cinc2020.LEADS))
    rec = wfdb.rdrecord(str(path.with_suffix("")))
    if rec.p_signal is None:
        raise ECGError(f"{path}: the record holds no signal")
    return Recording(path.stem, path, [rec.p_signal[:, i].astype(np.float64) for i in range(rec.n_sig)],
                     [float(rec.fs)] * rec.n_sig, list(rec.sig_name))


def _is_challenge_header(path: Path) -> bool:
    """A PhysioNet/CinC Challenge header: twelve signals in a MATLAB file of the same name."""
    first = path.read_text(errors="replace").split("\n", 1)[0].split()
    return len(first) >= 2 and first[1] == "12" and first[0].removesuffix(".mat") == path.stem


def _read_edf(path: Path) -> Recording:
    import edfio

    edf = edfio.read_edf(path)
    signals = [s for s in edf.signals if s.label != "EDF Annotations"]
    if not signals:
        raise ECGError(f"{path}: the EDF file holds no signal (only annotations)")
    return Recording(path.stem, path, [np.asarray(s.data, dtype=np.float64) for s in signals],
                     [float(s.sampling_frequency) for s in signals], [s.label.strip() for s in signals])


def _read_csv(path: Path, fs: float) -> Recording:
    with path.open(encoding="utf-8-sig") as fh:  # a byte-order mark (Excel) is not part of the first name
        header = fh.readline().strip()
    names = [n.strip().strip('"') for n in re.split(r"[,;\t]", header)]
    if not header or all(_is_number(n) for n in names):
        raise ECGError(f"{path}: the first row must name the leads (e.g. MLII,V5), one column per lead")
    delimiter = next((d for d in (",", ";", "\t") if d in header), ",")
    values = np.loadtxt(path, delimiter=delimiter, skiprows=1, ndmin=2, dtype=np.float64, encoding="utf-8-sig")
    if values.shape[1] != len(names):
        raise ECGError(f"{path}: the header names {len(names)} leads but the rows hold {values.shape[1]} values")
    return Recording(path.stem, path, [values[:, i] for i in range(len(names))], [float(fs)] * len(names), names)


def _read_npy(path: Path, fs: float) -> Recording:
    values = np.load(path, allow_pickle=False)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
        raise ECGError(f"{path}: expected numbers of shape (samples,) or (samples, leads), got {values.dtype} "
                       f"{values.shape}")
    values = values.astype(np.float64)
    return Recording(path.stem, path, [values[:, i] for i in range(values.shape[1])], [float(fs)] * values.shape[1],
                     [f"lead{i}" for i in range(values.shape[1])])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _norm(name: str) -> str:
    """A lead name compared without case, spaces, dashes or an 'ECG' prefix: 'ECG MLII' == 'mlii'."""
    text = re.sub(r"[\s_\-]", "", name.upper())
    return text[3:] if text.startswith("ECG") and len(text) > 3 else text


def choose_lead(rec: Recording, wanted: str | None, trained: str) -> tuple[int, str]:
    """The lead to use and why: ``wanted`` (a name or index) when given, else the model's training lead, then
    MLII, then II, then the first lead. A ``wanted`` lead the recording lacks is an ECGError."""
    names = [_norm(n) for n in rec.leads]
    if wanted is not None:  # an exact name, then an index, then a name compared loosely
        if wanted in rec.leads:
            return rec.leads.index(wanted), "--lead"
        if wanted.isdigit() and int(wanted) < len(rec.leads):
            return int(wanted), "--lead"
        if _norm(wanted) in names:
            return names.index(_norm(wanted)), "--lead"
        raise ECGError(f"{rec.path}: no lead {wanted!r}; it holds {', '.join(rec.leads)} (give one of these "
                       f"names, or an index from 0, to --lead)")
    for i, candidate in enumerate(dict.fromkeys([trained, *FALLBACK_LEADS])):
        if _norm(candidate) in names:
            return names.index(_norm(candidate)), "the model's lead" if i == 0 else "the closest to the model's lead"
    return 0, "the first lead: none matches the model's"


def reference_file(path: Path, ext: str) -> Path:
    """The reference annotation file ``<record>.<ext>`` beside ``path``; an ECGError when it is absent or cut short."""
    file = path.with_suffix(f".{ext}")
    if not file.is_file():
        raise ECGError(f"{path}: no reference annotations {file.name}; give --reference the extension of its "
                       f"annotation file (e.g. atr), or leave --reference out")
    raw = file.read_bytes()
    if len(raw) < 2 or raw[-2:] != b"\x00\x00":
        raise ECGError(f"{file} is truncated or not a WFDB annotation file (no end marker); check the file")
    return file


def read_reference(path: Path, ext: str, fs: float, length: int) -> dict[str, Any]:
    """Reference beat annotations ``<record>.<ext>`` beside ``path``: beat samples and symbols (at ``fs``: an
    annotation file that stores another rate is rescaled), and the ventricular flutter episodes EC57 leaves out."""
    import wfdb

    from loaders.detect import flutter_episodes
    from loaders.mitdb import BEAT_SYMBOLS

    file = reference_file(path, ext)
    try:
        ann = wfdb.rdann(str(path.with_suffix("")), ext)
    except Exception as exc:
        raise ECGError(f"{file}: not a readable WFDB annotation file ({type(exc).__name__}); check the file") from None
    samples = np.asarray(ann.sample, dtype=np.float64)
    if ann.fs and float(ann.fs) != fs:
        samples = samples * fs / float(ann.fs)
    samples = np.round(samples).astype(np.int64)
    symbols = np.asarray(ann.symbol)
    beats = np.isin(symbols, list(BEAT_SYMBOLS))
    notes = list(ann.aux_note) if ann.aux_note is not None else [""] * len(symbols)
    return {"samples": samples[beats], "symbols": symbols[beats].tolist(),
            "flutter": flutter_episodes(samples, list(symbols), notes, length)}


def twelve_leads(rec: Recording, leads: list[str], fs: int) -> np.ndarray:
    """The recording's leads in the model's order (``leads``), resampled to ``fs``: (leads, samples) float32 in the
    recording's units (the record models were trained in mV)."""
    names = [_norm(n) for n in rec.leads]
    missing = [lead for lead in leads if _norm(lead) not in names]
    if missing:
        raise ECGError(f"{rec.path}: the model needs leads {', '.join(leads)}; missing {', '.join(missing)} "
                       f"(the recording holds {', '.join(rec.leads)})")
    rows = [resample(rec.signals[names.index(_norm(lead))], rec.fs[names.index(_norm(lead))], fs) for lead in leads]
    n = min(len(r) for r in rows)
    signal = np.stack([r[:n] for r in rows]).astype(np.float32)
    if not np.isfinite(signal).all():
        raise ECGError(f"{rec.path}: missing (NaN) or infinite samples; fill or cut them out first")
    return signal


def write_record_predictions(path: Path, records: list[str], classes: list[str], names: list[str] | None,
                             probs: np.ndarray, thresholds: list[float]) -> None:
    """One row per recording: each class's probability and its label (probability at or above the class's
    validation threshold); the header gives the class names where the run has them (``name (code)``)."""
    titles = [f"{n} ({c})" if n and n != c else c for c, n in zip(classes, names or classes, strict=True)]
    labels = probs >= np.asarray(thresholds)[None, :]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["record", *(f"p {t}" for t in titles), *(f"label {t}" for t in titles)])
            for r, p, lab in zip(records, probs, labels, strict=True):
                out.writerow([r, *(f"{v:.4f}" for v in p), *(int(v) for v in lab)])

    atomic_write(path, write)


def write_recording(rec: Recording, path: Path, fs: float | None = None) -> Path:
    """Write ``rec``'s leads (which must share one rate) as WFDB (.hea + .dat, 16-bit), EDF+ (.edf, 16-bit,
    whole seconds), CSV (.csv) or NumPy (.npy) by ``path``'s suffix, resampled to ``fs`` when given; the values
    are in the recording's units (mV for MIT-BIH). Returns the path written."""
    if len(set(rec.fs)) != 1:
        raise ECGError(f"{rec.path}: its leads have different rates ({sorted(set(rec.fs))}); write them one by one")
    rate = rec.fs[0] if fs is None else fs
    values = np.stack([resample(s, rec.fs[0], rate) for s in rec.signals], axis=1)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), values))
    elif suffix == ".csv":
        atomic_write(path, lambda tmp: np.savetxt(tmp, values, fmt="%.5f", delimiter=",", header=",".join(rec.leads),
                                                  comments=""))
    elif suffix == ".edf":
        import edfio

        whole = int(len(values) // rate * rate) if float(rate).is_integer() else len(values)
        signals = [edfio.EdfSignal(values[:whole, i], rate, label=lead, physical_dimension="mV")
                   for i, lead in enumerate(rec.leads)]
        atomic_write(path, lambda tmp: edfio.Edf(signals).write(tmp))
    elif suffix == ".hea":
        import wfdb

        if not float(rate).is_integer():
            raise ECGError(f"{path}: WFDB records here are written at whole-number rates, not {rate} Hz")
        wfdb.wrsamp(path.stem, fs=rate, units=["mV"] * len(rec.leads), sig_name=list(rec.leads), p_signal=values,
                    fmt=["16"] * len(rec.leads), adc_gain=[200.0] * len(rec.leads), baseline=[0] * len(rec.leads),
                    write_dir=str(path.parent))
    else:
        raise ECGError(f"{path}: cannot write {path.suffix or 'files without a suffix'}; use .hea, .edf, .csv or .npy")
    return path
