"""R-peak detectors on real MIT-BIH signal, and the flutter episodes that EC57 leaves out of QRS scores."""
from pathlib import Path

import numpy as np
import pytest

from loaders import detect, mitdb
from toolbox import ec57
from toolbox.utils import ECGError


@pytest.fixture(scope="module")
def record_100(data_root: Path) -> tuple[np.ndarray, np.ndarray, float]:
    rec, ann = mitdb._read_record(data_root / "mitdb", "100")
    five_min = int(300 * rec.fs)
    reference = ann.sample[np.isin(ann.symbol, list(mitdb.BEAT_SYMBOLS)) & (ann.sample < five_min)]
    return rec.p_signal[:five_min, rec.sig_name.index("MLII")], reference, rec.fs


@pytest.mark.parametrize("name", list(detect.DETECTORS))
def test_every_detector_finds_the_beats_of_a_clean_record(name: str, record_100) -> None:
    signal, reference, fs = record_100
    peaks = detect.detect(signal, fs, name)
    assert np.all(np.diff(peaks) > 0) and peaks.min() >= 0 and peaks.max() < len(signal)
    matched = len(ec57.match_beats(reference, peaks, ec57.MATCH_WINDOW_S * fs)[0])
    assert matched / len(reference) > 0.97 and matched / len(peaks) > 0.97, (matched, len(reference), len(peaks))


@pytest.mark.parametrize("fs", [360.0, 250.0, 100.0])
def test_gqrs_runs_at_its_rate_and_answers_in_the_leads_samples(fs: float, record_100, monkeypatch) -> None:
    from wfdb import processing

    from loaders.dataset import resample

    signal = resample(record_100[0], record_100[2], fs)
    seen = []

    def fake(sig: np.ndarray, fs: float) -> np.ndarray:  # records what gqrs is given; a beat each second, one last
        seen.append((len(sig), fs))
        return np.r_[np.arange(0, len(sig), int(fs)), len(sig) - 1]

    monkeypatch.setattr(processing, "gqrs_detect", fake)
    peaks = detect.detect(signal, fs, "wfdb-gqrs")
    rate = min(fs, 120.0)
    assert detect.gqrs_rate(fs) == rate and seen == [(len(resample(signal, fs, rate)), rate)]
    # each fake detection k at the low rate comes back as the lead's sample round(k * fs / rate), kept inside it
    last = seen[0][0] - 1
    assert peaks[1] == round(int(rate) * fs / rate) and peaks[-1] == min(round(last * fs / rate), len(signal) - 1)
    assert np.abs(np.diff(peaks[:-1]) - fs).max() <= 1
    if fs == 250.0:  # 113 samples are 55 at 120 Hz; the last, 54, maps to 54 x 25/12, rounded 113: past the end
        assert detect.detect(signal[:113], fs, "wfdb-gqrs")[-1] == 112


def test_gqrs_at_120_hz_finds_what_it_finds_at_360_hz(record_100) -> None:
    from wfdb import processing

    signal, reference, fs = record_100
    native = np.asarray(processing.gqrs_detect(sig=signal, fs=fs))  # what detect() no longer does, for speed
    peaks = detect.detect(signal, fs, "wfdb-gqrs")
    assert len(peaks) == len(native) and np.abs(peaks - native).max() <= 0.02 * fs  # within 20 ms before align


def test_bad_detector_input_is_a_clear_error() -> None:
    with pytest.raises(ECGError, match="unknown R-peak detector 'nope'; choose one of nk-neurokit"):
        detect.detect(np.zeros(1000), 360, "nope")
    with pytest.raises(ECGError, match="one lead of finite values"):
        detect.detect(np.array([0.0, np.nan, 1.0]), 360, "wfdb-gqrs")
    with pytest.raises(ECGError, match="one lead"):
        detect.detect(np.zeros((2, 1000)), 360, "wfdb-gqrs")


def test_flutter_episodes_by_hand_and_on_record_207(data_root: Path) -> None:
    samples = np.array([0, 100, 500, 900])
    episodes = detect.flutter_episodes(samples, ["+", "+", "N", "+"], ["(N", "(VFL", "", "(N"], 2000)
    assert episodes == [(100, 900)]
    assert detect.outside(np.array([50, 100, 899, 900]), episodes).tolist() == [50, 900]
    rec, ann = mitdb._read_record(data_root / "mitdb", "207")
    episodes = detect.flutter_episodes(ann.sample, ann.symbol, ann.aux_note, rec.sig_len)
    assert len(episodes) > 0 and sum(b - a for a, b in episodes) > 60 * rec.fs  # minutes of flutter in 207
    beats = ann.sample[np.isin(ann.symbol, list(mitdb.BEAT_SYMBOLS))]
    assert len(detect.outside(beats, episodes)) == len(beats)  # no reference beat inside an episode
