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


def test_gqrs_runs_resampled_and_answers_in_the_leads_samples(record_100) -> None:
    signal, reference, fs = record_100
    from wfdb import processing

    native = np.asarray(processing.gqrs_detect(sig=signal, fs=fs))  # at 360 Hz, what detect() avoids for speed
    for rate, lead in ((fs, signal), (fs / 3, signal[::3])):  # the 120-Hz lead itself is not resampled again
        peaks = detect.detect(lead, rate, "wfdb-gqrs")
        assert detect.GQRS_FS == 120 and len(peaks) == len(native), (rate, len(peaks), len(native))
        # in the lead's own samples: within a few ms of the native detections (gqrs marks the QRS onset side)
        assert np.abs(peaks * (fs / rate) - native).max() <= 0.02 * fs, rate


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
