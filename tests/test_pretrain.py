"""tasks/pretrain.py: each pretext task learns on real MIT-BIH beats and PTB-XL windows, the encoder's state keeps
the classifier's names, refusals, and an evaluation that changes nothing and repeats under a seed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb
from torch.utils.data import DataLoader, TensorDataset

import trainer
from models import get_model
from tasks.pretrain import PRETEXTS, Pretext, build_pretext, encoder_state, nt_xent, segment_mask
from toolbox.utils import ECGError

MODEL = "cnn1d_3"
STEPS = 30
METRICS = {"masked": ["loss", "mse_all"], "contrastive": ["loss", "top1"], "flip": ["loss", "accuracy"]}
BEAT_RECORDS = ("100", "105", "119", "208")  # 16 beats of each: 64 beats of four patients


@pytest.fixture(scope="module")
def mitdb_beats(data_root: Path) -> torch.Tensor:
    """64 real MIT-BIH beats (MLII, 90 samples before the R peak, 96 after), min-max scaled as the kaggle beats."""
    beats = []
    for record in BEAT_RECORDS:
        signal = wfdb.rdrecord(str(data_root / "mitdb" / record), channels=[0], sampto=20000).p_signal[:, 0]
        ann = wfdb.rdann(str(data_root / "mitdb" / record), "atr", sampto=20000)
        peaks = [s for s, sym in zip(ann.sample, ann.symbol, strict=True)
                 if sym in "NLRAaJSVFejE/fQ" and 90 <= s <= len(signal) - 97][:16]
        beats += [signal[p - 90:p + 97] for p in peaks]
    b = np.stack(beats)
    b = (b - b.min(axis=1, keepdims=True)) / np.ptp(b, axis=1, keepdims=True)
    return torch.tensor(b, dtype=torch.float32)[:, None]


@pytest.fixture(scope="module")
def ptbxl_windows(data_root: Path) -> torch.Tensor:
    """The first 2.5 s (100 Hz) of 16 real PTB-XL records, twelve leads in mV: (16, 12, 250)."""
    heads = sorted((data_root / "ptbxl" / "records100" / "00000").glob("*_lr.hea"))[:16]
    windows = [wfdb.rdrecord(str(h.with_suffix(""))).p_signal[:250].T for h in heads]
    return torch.tensor(np.stack(windows), dtype=torch.float32)


@pytest.fixture(params=["beats", "ptbxl"])
def batch(request: pytest.FixtureRequest) -> torch.Tensor:
    return request.getfixturevalue("mitdb_beats" if request.param == "beats" else "ptbxl_windows")


@pytest.mark.parametrize("kind", list(PRETEXTS))
def test_each_pretext_learns_on_real_records(kind: str, batch: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = build_pretext(MODEL, batch.shape[1], batch.shape[2], kind).train()
    optimizers = model.make_optimizers(1e-3, 1e-2)
    steps = [model.train_step(batch, optimizers) for _ in range(STEPS)]
    assert all(list(s) == METRICS[kind] for s in steps)
    assert all(np.isfinite(v) for s in steps for v in s.values())
    first, last = steps[0], steps[-5:]
    assert np.mean([s["loss"] for s in last]) < 0.8 * first["loss"]
    metric = METRICS[kind][1]
    if kind == "masked":  # the whole signal too, not only the masked samples
        assert np.mean([s[metric] for s in last]) < 0.8 * first[metric]
    else:  # the partner found more often, the flip bits predicted better
        assert np.mean([s[metric] for s in last]) > first[metric] + 0.05


def test_train_generative_drives_a_pretext_unchanged(mitdb_beats: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = build_pretext(MODEL, 1, mitdb_beats.shape[2], "flip")
    loader = DataLoader(TensorDataset(mitdb_beats, torch.zeros(len(mitdb_beats))), batch_size=16)
    optimizers = model.make_optimizers(1e-3, 0.0)
    before = [p.detach().clone() for p in model.parameters()]
    out = trainer.train_generative(model, loader, optimizers, torch.device("cpu"), 1, max_batches=2, progress=False)
    assert list(out)[:2] == ["loss", "accuracy"] and np.isfinite(out["loss"]) and 0 <= out["accuracy"] <= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", [MODEL, "resnet1d_10_small", "lstm_1"])
def test_encoder_state_has_the_classifier_names_without_the_head(name: str) -> None:
    model = build_pretext(name, 12, 250, "flip" if name == "lstm_1" else "masked")
    state = encoder_state(model)
    classifier = get_model(name, 12, 5).state_dict()
    body = {k for k in classifier if not k.startswith("head.")}
    assert set(state) == body and len(body) < len(classifier)
    assert not any(k.startswith("head.") for k in state)
    assert all(torch.equal(state[k], model.state_dict()[f"encoder.{k}"]) for k in state)
    fresh = get_model(name, 12, 5)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert not unexpected and missing and all(k.startswith("head.") for k in missing)


def test_refusals_are_one_line_errors() -> None:
    with pytest.raises(ECGError, match="contrastive or flip") as err:
        build_pretext("lstm_1", 1, 187, "masked")
    assert "\n" not in str(err.value)
    assert isinstance(build_pretext("lstm_1", 1, 187, "contrastive"), Pretext)
    for generative in ("ae1d", "beatgan"):
        with pytest.raises(ECGError, match=f"{generative} is a generative model") as err:
            build_pretext(generative, 1, 187, "flip")
        assert "\n" not in str(err.value)
    with pytest.raises(ECGError, match="unknown pretext 'rotate'; valid: masked, contrastive, flip"):
        build_pretext(MODEL, 1, 187, "rotate")


@pytest.mark.parametrize("kind", list(PRETEXTS))
def test_evaluate_changes_nothing_and_repeats_under_a_seed(kind: str, ptbxl_windows: torch.Tensor) -> None:
    torch.manual_seed(1)
    model = build_pretext(MODEL, 12, 250, kind)
    optimizers = model.make_optimizers(1e-3, 1e-2)
    for _ in range(2):  # running statistics and weights away from their initial values
        model.train_step(ptbxl_windows, optimizers)
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    first = model.evaluate(ptbxl_windows)
    torch.manual_seed(7)
    again = model.evaluate(ptbxl_windows)
    assert first == again and list(first) == METRICS[kind]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert first != model.evaluate(ptbxl_windows)  # other draws: the task's randomness is in evaluate too


def test_segment_mask_covers_about_fifteen_percent_in_contiguous_segments() -> None:
    torch.manual_seed(0)
    mask = segment_mask(2000, 1000, torch.zeros(1))
    assert mask.shape == (2000, 1, 1000) and mask.dtype == torch.bool
    share = mask.float().mean(dim=(1, 2))
    assert 0.05 <= share.min() and share.max() <= 0.15 and 0.13 < share.mean() < 0.15
    starts = (mask[:, 0, 1:] & ~mask[:, 0, :-1]).sum(dim=1) + mask[:, 0, 0]
    assert starts.max() <= 3  # at most three runs of masked samples


def test_nt_xent_rewards_matching_views() -> None:
    torch.manual_seed(0)
    z = torch.randn(8, 16)
    matched_loss, matched_top1 = nt_xent(torch.cat([z, z + 0.01 * torch.randn(8, 16)]))
    random_loss, _ = nt_xent(torch.randn(16, 16))
    assert matched_top1 == 1 and matched_loss < 0.1 < random_loss
    shuffled_loss, shuffled_top1 = nt_xent(torch.cat([z, z.roll(1, dims=0)]))
    assert shuffled_top1 == 0 and shuffled_loss > random_loss


def test_masked_loss_counts_the_masked_samples_only(ptbxl_windows: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = build_pretext(MODEL, 12, 250, "masked")
    model.reconstruct = lambda masked_input: masked_input  # exact outside the segments, zeros inside them
    out = model.evaluate(ptbxl_windows)
    # the whole error lies in the masked ~15% of the samples: over all samples it is about 0.15 of the loss
    assert out["loss"] > 0 and 0.03 * out["loss"] < out["mse_all"] < 0.16 * out["loss"]
