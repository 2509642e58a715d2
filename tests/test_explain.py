"""Saliency maps (toolbox.explain): shapes, completeness, determinism, the selection, the pictures, and
--explain through commander.py --test and predict.py on real records."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import commander
import predict
from args import EXPLAIN_METHODS, parse_args, run_name
from loaders import recording
from models import get_model
from tests.conftest import one_line_error, run_cli
from toolbox import explain
from toolbox.utils import ECGError

PTBXL = ["--dataset", "ptbxl", "--model-name", "cnn1d_3", "--batch-size", "8", "--short-run"]


def _model(name: str, leads: int, classes: int = 3, features: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model(name, leads + features, classes, features)


def test_the_parser_offers_the_methods_of_the_selector() -> None:
    assert EXPLAIN_METHODS == tuple(explain.METHODS)


@pytest.mark.parametrize("name,method", [("cnn1d_3", "ig"), ("cnn1d_3", "gradcam"), ("lstm_1", "ig"),
                                         ("resnet1d_10", "gradcam")])
def test_saliency_maps_with_the_inputs_shape(name: str, method: str) -> None:
    model = _model(name, 3)
    model.train()
    x = torch.randn(2, 3, 150)
    s = explain.saliency(method, model, x, [0, 2])
    assert s.shape == x.shape and s.dtype == torch.float32 and torch.isfinite(s).all() and s.abs().sum() > 0
    assert model.training and all(p.grad is None for p in model.parameters())  # mode back, no gradients kept
    if method == "gradcam":  # one map over time, the same on every lead, never negative
        assert (s >= 0).all() and torch.equal(s[:, 0], s[:, 2])
    else:
        assert not torch.equal(s[:, 0], s[:, 1])


def test_per_example_features_get_no_map_over_time() -> None:
    """A model with RR features (FeatureFusion): Grad-CAM leaves the feature channels at zero; integrated
    gradients credit each feature at sample 0, where the model reads it, and nowhere else."""
    model = _model("cnn1d_3", 1, features=4)
    x = torch.rand(2, 5, 187)
    x[:, 1:] = torch.rand(2, 4, 1)
    cam = explain.grad_cam(model, x, 1)
    assert cam.shape == x.shape and cam[:, 1:].abs().sum() == 0 and cam[:, 0].abs().sum() > 0
    ig = explain.integrated_gradients(model, x, 1)
    assert ig[:, 1:, 1:].abs().sum() == 0 and ig[:, 1:, 0].abs().sum() > 0


@pytest.mark.parametrize("name", ["cnn1d_3", "lstm_1"])
def test_integrated_gradients_are_complete(name: str) -> None:
    """The attributions of an example sum to logit(x) - logit(baseline) of its target class."""
    model = _model(name, 2, classes=4).eval()
    x, baseline = torch.randn(3, 2, 120) * 3, torch.randn(1, 2, 120)
    targets = [0, 3, 1]
    for base in (None, baseline):
        s = explain.integrated_gradients(model, x, targets, steps=32, baseline=base)
        with torch.no_grad():
            gain = model(x) - model(torch.zeros_like(x) if base is None else base.expand_as(x))
        want = gain[torch.arange(3), targets]
        np.testing.assert_allclose(s.sum(dim=(1, 2)).numpy(), want.numpy(), rtol=0.02, atol=1e-4)
        assert want.abs().min() > 1e-3  # a real difference to account for


def test_explanations_are_deterministic() -> None:
    model = _model("cnn1d_3", 2)
    x = torch.randn(2, 2, 100)
    for method in EXPLAIN_METHODS:
        assert torch.equal(explain.saliency(method, model, x, 1), explain.saliency(method, model, x, 1))
    steps_in_chunks = explain.integrated_gradients(model, x, 1, steps=8, batch_size=3)
    assert torch.allclose(steps_in_chunks, explain.integrated_gradients(model, x, 1, steps=8), rtol=1e-5, atol=1e-7)


def test_grad_cam_refuses_a_recurrent_model_and_unknown_methods() -> None:
    with pytest.raises(ECGError, match="use --explain-method ig"):
        explain.check_method("gradcam", _model("lstm_1", 1), torch.zeros(1, 187))
    with pytest.raises(ECGError, match="unknown explanation method 'shap'; valid: ig, gradcam"):
        explain.saliency("shap", _model("cnn1d_3", 1), torch.zeros(1, 1, 50), 0)


def test_selection_by_hand() -> None:
    # single-label: class 0 right for examples 0 and 1, class 1 right for 2, example 3 wrongly class 1
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.95, 0.05]])
    targets = np.array([0, 0, 1, 0, 1])
    chosen = explain.select(probs, 10, targets=targets)
    # round 1: the best true positive of class 0 (example 0), of class 1 (2), the most confident error (4: 0.95)
    # round 2: class 0's next (1), then the next error (3)
    assert chosen == [(0, 0, "true positive"), (2, 1, "true positive"), (4, 0, "error"), (1, 0, "true positive"),
                      (3, 1, "error")]
    assert explain.select(probs, 2, targets=targets) == chosen[:2]
    assert [c for _, c, _ in explain.select(probs, 5)] == [0, 1, 0, 1, 0]  # no truth: predicted classes in turn
    # multi-label: decisions at the thresholds; a predicted label the record lacks is a false positive
    probs = np.array([[0.6, 0.9], [0.2, 0.7], [0.8, 0.1]])
    targets = np.array([[1, 0], [0, 1], [1, 0]])
    chosen = explain.select(probs, 9, targets=targets, thresholds=[0.5, 0.5])
    assert chosen == [(2, 0, "true positive"), (1, 1, "true positive"), (0, 1, "false positive"),
                      (0, 0, "true positive")]
    assert explain.top_labels(np.array([0.3, 0.6, 0.9]), [0.5, 0.5, 0.5], 1) == [2]
    assert explain.top_labels(np.array([0.3, 0.6, 0.9]), [0.5, 0.5, 0.95], 3) == [1]
    assert explain.top_labels(np.array([0.3, 0.4, 0.2]), [0.5, 0.5, 0.5], 2) == [1]  # none predicted: the top one


def _is_picture(path: Path, min_bytes: int = 20_000) -> tuple[int, int]:
    """A valid PNG of some size whose pixels are not all alike; its (width, height)."""
    assert path.is_file() and path.stat().st_size > min_bytes, path
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("RGB"))
    colours = np.unique(pixels[..., 0].astype(np.int64) << 16 | pixels[..., 1].astype(np.int64) << 8 | pixels[..., 2])
    assert pixels.std() > 10 and len(colours) > 50
    return pixels.shape[1], pixels.shape[0]


def test_pictures_name_their_leads_and_the_index_lists_them(tmp_path: Path) -> None:
    model = _model("cnn1d_3", 3, classes=2)
    leads = ["I", "AVR", "V1"]
    shown = explain.Explainer(model, "ig", torch.device("cpu"), ["a", "b|c"], leads, 100.0, tmp_path / "out")
    t = torch.arange(400) / 100
    x = torch.stack([torch.sin(2 * np.pi * t * (k + 1) / 4) for k in range(3)])
    entry = shown.explain(x, 1, "rec1", "rec1: true b|c")
    assert entry["file"] == "rec1_b_c.png" and entry["class"] == "b|c"
    assert entry["attribution_sum"] == pytest.approx(entry["logit_minus_baseline"], rel=0.02, abs=1e-4)
    _is_picture(tmp_path / "out" / entry["file"])
    assert explain.display_leads(leads) == ["I", "aVR", "V1"]
    shown.write_index(tmp_path / "out" / "index.json", checkpoint="x")
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["leads"] == leads and [e["file"] for e in index["examples"]] == ["rec1_b_c.png"]
    explain.clear_previous(tmp_path / "out" / "index.json")  # an index takes its pictures with it
    assert not any((tmp_path / "out").iterdir())


def test_the_band_shows_the_saliency_where_it_is(tmp_path: Path) -> None:
    """Red where the saliency raises the class, blue where it lowers it (Grad-CAM: shades of red only), on the
    samples it belongs to."""
    from toolbox.plotter import saliency_png

    t = np.arange(500) / 100
    signal = np.stack([np.sin(2 * np.pi * t), np.cos(2 * np.pi * t)])
    sal = np.zeros_like(signal)
    sal[0, :250], sal[0, 250:] = 2e-4, -2e-4  # lead 0: for the class in the first half, against it in the second
    for signed in (True, False):
        path = tmp_path / f"band_{signed}.png"
        saliency_png(signal, sal if signed else np.abs(sal), ["I", "II"], path, fs=100.0, title="t", signed=signed,
                     label="s")
        with Image.open(path) as im:
            px = np.asarray(im.convert("RGB")).astype(int)
        red = (px[..., 0] - px[..., 1] > 50) & (px[..., 0] > px[..., 2])
        blue = (px[..., 2] - px[..., 0] > 50) & (px[..., 2] > px[..., 1])
        middle, plot = px.shape[1] // 2, int(0.88 * px.shape[1])  # (the colour bar lies right of the plot)
        assert red[:, :middle].sum() > 5000, "the first half of lead 0 is red"
        if signed:
            assert blue[:, middle:plot].sum() > 5000, "the second half of lead 0 is blue"
            assert red[:, middle:plot].sum() < 200
        else:
            assert blue.sum() < 200 and red[:, middle:plot].sum() > 5000
        lower = slice(int(0.6 * px.shape[0]), None)  # lead 1's row stays uncoloured
        assert red[lower, :plot].sum() + blue[lower, :plot].sum() < 200


def test_explain_belongs_to_test(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    proc = run_cli("--dataset", "ptbxl", "--explain", "3", "--root-dir", str(tmp_path))
    assert "--explain draws saliency maps of test examples; use it with --test" in one_line_error(proc)
    with pytest.raises(SystemExit) as exc:
        parse_args(["--test", "--explain-method", "gradcam"])
    assert exc.value.code == 2 and "add --explain N" in capsys.readouterr().err
    assert parse_args(["--test", "--explain", "2"]).explain_method == "ig"


# ---- on real records ----

@pytest.fixture(scope="module")
def ptbxl_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A PTB-XL run of one short epoch, tested with --explain 2."""
    root = tmp_path_factory.mktemp("explain")
    assert commander.main([*PTBXL, "--epochs", "1", "--root-dir", str(root)]) == 0
    assert commander.main([*PTBXL, "--root-dir", str(root), "--test", "--bootstrap", "0", "--explain", "2"]) == 0
    return root / "ptbxl" / "runs" / f"{run_name(parse_args(PTBXL))}_1"


def test_test_explain_writes_labelled_maps_of_chosen_records(ptbxl_run: Path) -> None:
    folder = ptbxl_run / "pred" / "explain"
    index = json.loads((folder / "test_best_short_index.json").read_text())
    pred = pd.read_csv(ptbxl_run / "pred" / "test_best_short_predictions.csv", dtype={"record": str})
    assert index["method"] == "ig" and index["checkpoint"] == "model_best.pth.tar" and len(index["examples"]) == 2
    assert index["leads"] == ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(e["file"] for e in index["examples"])
    for e in index["examples"]:
        row = pred.iloc[e["example"]]
        assert str(row["record"]) == e["record"]
        assert e["file"].startswith(f"test_best_short_example{e['example']}_{e['record']}_")
        assert e["probability"] == pytest.approx(row[f"p_{e['class']}"], abs=1e-5)
        assert row[f"pred_{e['class']}"] == 1  # an explained label is a predicted one
        assert e["kind"] == ("true positive" if row[f"y_{e['class']}"] else "false positive")
        assert e["attribution_sum"] == pytest.approx(e["logit_minus_baseline"], rel=0.05, abs=1e-3)
    width, height = _is_picture(folder / index["examples"][0]["file"])
    assert height > 900 and width >= 1000  # twelve rows, one per lead


def test_predict_explains_records_and_beats(ptbxl_run: Path, data_root: Path, tmp_path: Path) -> None:
    """predict.py --explain: a record model draws each recording's top label; the shipped beat model (RR
    features, median beat) draws beats of several predicted classes with the recording's lead name."""
    records = sorted((data_root / "ptbxl" / "records100").glob("*/*.hea"))[:1]
    out = tmp_path / "records"
    assert predict.main([*map(str, records), "--out", str(out), "--run", str(ptbxl_run), "--explain", "1"]) == 0
    index = json.loads((out / "explain" / "index.json").read_text())
    assert [e["recording"] for e in index["examples"]] == [predict.output_name(p) for p in records]
    got = pd.read_csv(out / "predictions.csv")
    for e, (_, row) in zip(index["examples"], got.iterrows(), strict=True):
        p = row[[c for c in got.columns if c.startswith("p ")]].to_numpy(dtype=float)
        positive = row[[c for c in got.columns if c.startswith("label ")]].to_numpy(dtype=int) == 1
        top = p[positive].max() if positive.any() else p.max()  # its most probable predicted label
        assert e["probability"] == pytest.approx(top, abs=1e-4)  # (predictions.csv has 4 decimals)
        _is_picture(out / "explain" / e["file"])

    rec = recording.read_recording(data_root / "mitdb" / "208.hea")
    n = int(20 * rec.fs[0])
    short = recording.Recording("208", rec.path, [s[:n] for s in rec.signals], rec.fs, rec.leads)
    path = recording.write_recording(short, tmp_path / "in" / "208.hea")
    beats = tmp_path / "beats"
    assert predict.main([str(path), "--out", str(beats), "--explain", "2", "--explain-method", "gradcam"]) == 0
    index = json.loads((beats / "explain" / "index.json").read_text())
    table = pd.read_csv(beats / "208_beats.csv")
    assert index["method"] == "gradcam" and len(index["examples"]) == 2
    assert len({e["class"] for e in index["examples"]}) == 2  # two predicted classes, in turn
    for e in index["examples"]:
        assert e["lead"] == "MLII" and table.loc[e["beat"], "class"] == e["class"]
        assert e["file"] == f"208_beat{e['beat']}_{e['class']}.png"
        _is_picture(beats / "explain" / e["file"], min_bytes=10_000)


def test_the_traces_say_what_they_are_in() -> None:
    assert explain.trace_units({"units": "mV"}) == "mV"
    scaled = explain.trace_units({"units": "mV", "standardize": {"how": "global", "mean": [0.01], "sd": [0.2]}})
    assert scaled.startswith("mV, standardised") and "sd 0.2 " in scaled
    assert explain.trace_units({}) == ""
