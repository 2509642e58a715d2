"""predict.py on real MIT-BIH recordings: each input format, the outputs, EC57, bad input, the shipped model."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import predict
from loaders import DETECTOR_NAMES, detect, mitdb, recording
from toolbox import beat_report, checkpoint, ec57

EXCERPT_S = 300  # five minutes of record 208 (N, S, V and F beats)
CARD_RECORDS = ["100", "213"]  # DS2 records whose counts the test compares with the card's


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def user_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """predict.main's one-line error (exit code 2, no traceback)."""
    assert predict.main(argv) == 2
    err = lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("predict.py: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict[str, Path]:
    """The first five minutes of record 208 written by loaders.recording as WFDB (360 Hz, with its reference
    annotations cut to match), CSV (128 Hz), EDF (250 Hz) and .npy (360 Hz, MLII only)."""
    import wfdb

    folder = tmp_path_factory.mktemp("excerpt")
    rec = recording.read_recording(data_root / "mitdb" / "208.hea")
    n = int(EXCERPT_S * rec.fs[0])
    short = recording.Recording("208", rec.path, [s[:n] for s in rec.signals], rec.fs, rec.leads)
    paths = {"wfdb": recording.write_recording(short, folder / "wfdb" / "208.hea"),
             "csv": recording.write_recording(short, folder / "csv" / "208.csv", fs=128),
             "edf": recording.write_recording(short, folder / "edf" / "208.edf", fs=250)}
    mlii = recording.Recording("208", rec.path, [short.signals[0]], [rec.fs[0]], ["MLII"])
    paths["npy"] = recording.write_recording(mlii, folder / "npy" / "208.npy")
    ann = wfdb.rdann(str(data_root / "mitdb" / "208"), "atr")
    keep = ann.sample < n
    wfdb.wrann("208", "atr", ann.sample[keep], symbol=list(np.asarray(ann.symbol)[keep]),
               aux_note=list(np.asarray(ann.aux_note)[keep]), write_dir=str(folder / "wfdb"))
    return paths


@pytest.fixture(scope="module")
def annotated(excerpt: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """predict.py with the shipped model on each format of the excerpt: format -> output folder."""
    outs = {}
    for fmt, path in excerpt.items():
        out = tmp_path_factory.mktemp(f"out-{fmt}")
        fs = {"csv": ["--fs", "128"], "npy": ["--fs", "360"]}.get(fmt, [])
        reference = ["--reference", "atr"] if fmt == "wfdb" else []
        assert predict.main([str(path), "--out", str(out), *fs, *reference]) == 0
        outs[fmt] = out
    return outs


def read_beats(out: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Times (s), samples and classes of ``<record>_beats.csv``."""
    with (out / "208_beats.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return (np.array([float(r["time_s"]) for r in rows]), np.array([int(r["sample"]) for r in rows]),
            [r["class"] for r in rows])


def test_each_format_gives_the_four_files_and_the_same_beats(annotated: dict[str, Path]) -> None:
    for out in annotated.values():
        assert sorted(p.name for p in out.iterdir() if p.name != "ec57.json") == sorted(
            beat_report.output_names("208", predict.ANNOTATION_EXT))
    times, _, labels = read_beats(annotated["wfdb"])
    assert len(times) > 500 and {"N", "V"} <= set(labels)  # 208: about 560 beats in 5 minutes, many of them V
    for fmt in ("csv", "edf", "npy"):
        other_times, _, other_labels = read_beats(annotated[fmt])
        r, d = ec57.match_beats(times, other_times, 0.150)
        # resampling moves a few beats across the detector's and the model's decisions; benchmarks/formats.py on
        # 5-minute excerpts of 8 records: 100% of beats matched, 98.7% (128 Hz) to 99.7% (500 Hz) of them in the
        # same class
        assert len(r) >= 0.99 * len(times) and len(d) >= 0.99 * len(other_times), fmt
        same = np.mean([labels[i] == other_labels[j] for i, j in zip(r, d, strict=True)])
        assert same >= 0.97, (fmt, same)
        assert np.median(np.abs(times[r] - other_times[d])) <= 0.008, fmt  # one sample at 125 Hz
    # the .npy lead is named lead0: neither MLII nor II is there, so the first lead is used, and the summary says so
    assert json.loads((annotated["npy"] / "208_summary.json").read_text())["lead_choice"].startswith("the first lead")


def test_annotations_round_trip_through_wfdb_rdann(annotated: dict[str, Path]) -> None:
    import wfdb

    for fmt in ("wfdb", "csv"):
        _, samples, labels = read_beats(annotated[fmt])
        ann = wfdb.rdann(str(annotated[fmt] / "208"), predict.ANNOTATION_EXT)
        assert ann.sample.tolist() == samples.tolist()
        assert ann.symbol == labels  # AAMI classes are their own WFDB symbols
        assert ann.fs == (360 if fmt == "wfdb" else 128)


def test_summary_counts_rates_and_runs_match_the_beats(annotated: dict[str, Path]) -> None:
    out = annotated["wfdb"]
    times, _, labels = read_beats(out)
    summary = json.loads((out / "208_summary.json").read_text())
    assert summary["beats"] == len(labels)
    assert summary["beats_per_class"] == {c: labels.count(c) for c in mitdb.AAMI_CLASSES}
    assert summary["heart_rate"]["mean_bpm"] == round(60 / float(np.diff(times).mean()), 1)
    assert summary["heart_rate"]["min_bpm"] <= summary["heart_rate"]["mean_bpm"] <= summary["heart_rate"]["max_bpm"]
    assert summary["ectopic_burden_percent"]["not_N"] == round(100 * (1 - labels.count("N") / len(labels)), 2)
    v = np.array([lab == "V" for lab in labels])
    runs = beat_report.runs_of(v.astype(int), 1)
    assert summary["v_runs"]["count"] == len(runs)
    assert summary["model"]["name"].startswith("shipped:") and summary["detector"]["name"] == "wfdb-gqrs"
    assert summary["detector"]["settings"] == "the library's defaults, run at 120 Hz" and summary["fs"] == 360
    assert (out / "208_strip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ec57_json_scores_the_excerpt_against_its_reference(annotated: dict[str, Path]) -> None:
    result = json.loads((annotated["wfdb"] / "ec57.json").read_text())
    gross = result["scores"]["gross"]
    assert gross == result["scores"]["208"]
    counts = {k: np.array(v) for k, v in result["counts"]["208"].items()}
    assert gross["qrs"]["reference"] == counts["confusion"].sum() + counts["missed"].sum()
    _, samples, _ = read_beats(annotated["wfdb"])
    assert gross["qrs"]["detected"] == len(samples)
    assert gross["qrs"]["se"] > 0.99 and gross["qrs"]["+p"] > 0.99
    assert gross["classes"]["V"]["f1"] > 0.8  # 208 holds many V beats; the shipped model finds them


def test_beats_at_reference_peaks_equal_the_training_inputs(data_root: Path, cache_root: Path) -> None:
    """No second implementation: beats_at on a record's reference R peaks gives the inter-patient test inputs."""
    data = mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0, protocol="inter",
                       rr_features=True, beat_format="filtered", median_beat=True)
    rec, ann = mitdb._read_record(data_root / "mitdb", "100")  # record 100 holds only beats of AAMI_MAP symbols
    assert set(np.asarray(ann.symbol)[np.isin(ann.symbol, list(mitdb.BEAT_SYMBOLS))]) <= set(mitdb.AAMI_MAP)
    mine = data.test.meta["record"] == 100
    x = mitdb.beats_at(rec.p_signal[:, 0], rec.fs, data.test.meta["sample"][mine], beat_format="filtered",
                       median_beat=True, rr_features=True)
    np.testing.assert_array_equal(x, data.test.x[torch.as_tensor(mine)].numpy())


def test_align_moves_detections_to_the_largest_deflection() -> None:
    fs = 360.0
    signal = np.zeros(3600)
    signal[[1000, 2000, 3000]] = [1.0, -2.0, 1.5]  # a negative R peak counts by its size
    # looked for from 50 ms (18 samples) before each detection to 100 ms (36) after it
    peaks = detect.align(signal, fs, np.array([988, 2015, 2990, 3005]), 0.05, 0.10)
    assert peaks.tolist() == [1000, 2000, 3000]  # the two detections of one beat merge
    # then moved by the shift (rounded to samples at the signal's rate), and kept inside the signal
    shifted = detect.align(signal, fs, np.array([988, 2015, 2990]), 0.05, 0.10, detect.ALIGN_SHIFT_S)
    assert shifted.tolist() == [999, 1999, 2999]
    assert detect.align(signal, fs, np.array([1000]), 0.05, 0.10, -2000 / fs).tolist() == [0]


def test_the_shipped_model_loads_safely_and_reproduces_its_card(data_root: Path, cache_root: Path,
                                                                 tmp_path: Path) -> None:
    state = checkpoint.load(predict.SHIPPED)  # torch.load(..., weights_only=True)
    assert predict.SHIPPED.stat().st_size < 1_000_000
    assert state["args"]["dataset"] == "ecg" and state["args"]["split"] == "inter"
    card = json.loads(predict.SHIPPED.with_name("ds2_counts.json").read_text())
    assert predict.main([*(str(data_root / "mitdb" / r) for r in CARD_RECORDS), "--out", str(tmp_path),
                         "--reference", "atr"]) == 0
    counts = json.loads((tmp_path / "ec57.json").read_text())["counts"]
    for r in CARD_RECORDS:
        assert counts[r] == card["end_to_end"][r], r
    data = mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0, protocol="inter",
                       rr_features=True, beat_format="filtered", median_beat=True)
    model = predict.from_checkpoint(state)
    checkpoint.load_weights(state, predict.SHIPPED, model)
    model.eval()
    for r in CARD_RECORDS:
        mine = data.test.meta["record"] == int(r)
        with torch.inference_mode():
            labels = model(data.test.x[torch.as_tensor(mine)]).argmax(dim=1).numpy()
        truth = data.test.labels.numpy()[mine]
        confusion = np.zeros((5, 5), np.int64)
        np.add.at(confusion, (truth, labels), 1)
        assert confusion.tolist() == card["reference_peaks"][r]["confusion"], r


def test_bad_input_is_one_line_and_nothing_is_overwritten(excerpt: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    csv_file = str(excerpt["csv"])
    assert "--fs" in user_error([csv_file, "--out", str(out)], capsys)
    assert "no lead 'V9'" in user_error([csv_file, "--out", str(out), "--fs", "128", "--lead", "V9"], capsys)
    (tmp_path / "notes.txt").write_text("hello")
    assert "unsupported file type" in user_error([str(tmp_path / "notes.txt"), "--out", str(out)], capsys)
    (tmp_path / "broken.edf").write_bytes(b"0       not an edf header")
    assert "cannot read it as EDF" in user_error([str(tmp_path / "broken.edf"), "--out", str(out)], capsys)
    np.save(tmp_path / "short.npy", np.zeros(360))
    assert "too short" in user_error([str(tmp_path / "short.npy"), "--out", str(out), "--fs", "360"], capsys)
    np.save(tmp_path / "flat.npy", np.zeros(3600))
    assert "found no beats" in user_error([str(tmp_path / "flat.npy"), "--out", str(out), "--fs", "360"], capsys)
    assert "no such file" in user_error([str(tmp_path / "absent.edf"), "--out", str(out)], capsys)
    noise = np.random.default_rng(0).normal(size=500)
    np.save(tmp_path / "slow.npy", noise)  # 10 s at 50 Hz: below what gqrs handles
    assert "wfdb-gqrs failed at 50 Hz" in user_error([str(tmp_path / "slow.npy"), "--out", str(out), "--fs", "50"],
                                                     capsys)
    cut = tmp_path / "cut"
    cut.mkdir()
    for ext in (".hea", ".dat"):
        (cut / f"208{ext}").write_bytes(excerpt["wfdb"].with_suffix(ext).read_bytes())
    (cut / "208.atr").write_bytes(excerpt["wfdb"].with_suffix(".atr").read_bytes()[:100])
    assert "truncated" in user_error([str(cut / "208"), "--out", str(out), "--reference", "atr"], capsys)
    assert "no reference annotations" in user_error([csv_file, "--out", str(out), "--fs", "128",
                                                     "--reference", "atr"], capsys)
    # a run of another dataset family (the Kaggle PTB beats): refused before anything is read
    state = checkpoint.load(predict.SHIPPED)
    state["args"] = {**state["args"], "dataset": "ptb"}
    run = tmp_path / "ptb_run"
    run.mkdir()
    torch.save(state, run / checkpoint.BEST)
    assert "--dataset ptb" in user_error([csv_file, "--out", str(out), "--fs", "128", "--run", str(run)], capsys)
    # outputs already there are kept unless --overwrite
    out.mkdir(exist_ok=True)
    (out / "208_beats.csv").write_text("mine")
    assert "--overwrite" in user_error([csv_file, "--out", str(out), "--fs", "128"], capsys)
    assert (out / "208_beats.csv").read_text() == "mine" and not (out / "208_summary.json").exists()
    assert predict.main([csv_file, "--out", str(out), "--fs", "128", "--overwrite"]) == 0
    assert (out / "208_beats.csv").read_text().startswith("sample,time_s,class")


def test_detector_names_match_the_registry() -> None:
    assert tuple(detect.DETECTORS) == DETECTOR_NAMES


def test_summary_by_hand() -> None:
    fs = 100.0
    samples = np.arange(0, 2000, 100)  # 20 beats, one a second: 60 bpm
    labels = np.array([0] * 5 + [2] * 3 + [0] * 4 + [2] * 2 + [1] + [0] * 5)
    s = beat_report.summary(samples, fs, labels, mitdb.AAMI_CLASSES, 20.0)
    assert s["heart_rate"]["mean_bpm"] == 60.0 and s["heart_rate"]["max_bpm"] == 60.0
    assert s["beats_per_class"]["V"] == 5 and s["ectopic_burden_percent"]["not_N"] == 30.0
    assert s["v_runs"]["count"] == 1 and s["v_runs"]["runs"] == [{"start_s": 5.0, "beats": 3}]
    assert beat_report.strip_windows(samples, labels, 0, fs, 2000, n=1, window_s=10.0) == [0]


def test_a_binary_run_of_ours_annotates_with_its_own_classes(excerpt: dict[str, Path], tmp_path: Path) -> None:
    """--run RUN_DIR: a 2-class ecg_bin run (centered beats, no RR features) writes N and Q (abnormal) beats."""
    import wfdb

    import commander

    root = tmp_path / "root"
    flags = ["--dataset", "ecg_bin", "--split", "inter", "--model-name", "cnn1d_3", "--beat-format", "centered",
             "--short-run", "--epochs", "1", "--root-dir", str(root)]
    assert commander.main(flags) == 0
    run = next((root / "ecg_bin" / "runs").iterdir())
    out = tmp_path / "out"
    assert predict.main([str(excerpt["wfdb"]), "--out", str(out), "--run", str(run), "--reference", "atr"]) == 0
    with (out / "208_beats.csv").open() as fh:
        header = fh.readline().strip().split(",")
    assert header == ["sample", "time_s", "class", "p_N", "p_abnormal"]
    assert set(wfdb.rdann(str(out / "208"), predict.ANNOTATION_EXT).symbol) <= {"N", "Q"}
    summary = json.loads((out / "208_summary.json").read_text())
    assert summary["model"]["name"] == f"{run.name}/model_best.pth.tar"
    assert summary["model"]["beat_format"] == "centered"
    gross = json.loads((out / "ec57.json").read_text())["scores"]["gross"]
    assert set(gross["classes"]) == {"N", "abnormal"}  # 208's V and F beats are the reference's abnormal ones
    assert gross["classes"]["abnormal"]["reference"] > 150


def test_names_wfdb_refuses_are_made_safe_and_earlier_outputs_are_not_read_as_inputs(excerpt: dict[str, Path],
                                                                                        tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "my rec.2024.csv").write_bytes(excerpt["csv"].read_bytes())
    assert predict.main([str(folder), "--out", str(folder), "--fs", "128"]) == 0
    assert (folder / "my_rec_2024.pred").is_file() and (folder / "my_rec_2024_beats.csv").is_file()
    # the folder now holds my_rec_2024_beats.csv too: a second call annotates the recording only
    assert predict.main([str(folder), "--out", str(folder), "--fs", "128", "--overwrite"]) == 0
