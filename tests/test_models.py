"""Every architecture: output shape, any lead/class count, one optimisation step."""
from __future__ import annotations

import pytest
import torch

from models import MODELS, constructor_args, from_checkpoint, get_model
from toolbox.utils import ECGError


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("leads,classes,length", [(1, 5, 187), (12, 27, 1000), (2, 2, 187)])
def test_forward_shape(name: str, leads: int, classes: int, length: int) -> None:
    torch.manual_seed(0)
    model = get_model(name, leads, classes).eval()
    out = model(torch.randn(3, leads, length))
    assert out.shape == (3, classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_one_optimisation_step_changes_weights_and_lowers_loss(name: str) -> None:
    torch.manual_seed(0)
    model = get_model(name, 1, 5)
    x, y = torch.randn(16, 1, 187), torch.arange(16) % 5
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=False))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", list(MODELS))
def test_models_return_logits_not_probabilities(name: str) -> None:
    torch.manual_seed(0)
    out = get_model(name, 1, 5).eval()(torch.randn(8, 1, 187) * 5)
    assert not torch.allclose(out.sum(dim=1), torch.ones(8), atol=1e-3)  # not softmax rows
    assert not ((out >= 0) & (out <= 1)).all()  # not sigmoids either: logits range over the reals


def test_a_checkpoint_rebuilds_its_model_without_flags() -> None:
    torch.manual_seed(0)
    model = get_model("resnet1d_10_small", 5, 5, feature_channels=4).eval()
    state = {**constructor_args("resnet1d_10_small", 5, 5, 4), "model": model.state_dict()}
    again = from_checkpoint(state).eval()
    again.load_state_dict(state["model"])
    x = torch.randn(3, 5, 187)
    assert torch.equal(model(x), again(x))
    assert type(from_checkpoint({**state, "feature_channels": 0})).__name__ == "ResNet1d"


def test_names_build_distinct_architectures() -> None:
    sizes = {name: sum(p.numel() for p in get_model(name, 1, 5).parameters()) for name in MODELS}
    assert sizes["resnet1d_18"] > sizes["resnet1d_10"] > sizes["resnet1d_10_small"]
    assert sizes["resnet1d_10_small"] < 100_000 and sizes["cnn1d_3"] < 100_000  # the small-model benchmark class
    assert sizes["lstm_3"] > sizes["lstm_2"] > sizes["lstm_1"]
    v1 = get_model("resnet1d_10", 1, 5)
    v2 = get_model("resnet1d_v2_10", 1, 5)
    assert type(v1.features[1]).__name__ == "BasicBlock" and type(v2.features[1]).__name__ == "PreActBlock"


def test_lstm_recurs_over_time() -> None:
    model = get_model("lstm_1", 1, 5)
    assert model.lstm.input_size == 32  # features per step are the stem's channels, not 187 samples


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ECGError, match="valid: cnn1d_3, lstm_1"):
        get_model("resnet1d_1000", 1, 5)


@pytest.mark.parametrize("name", ["cnn1d_3", "resnet1d_10", "lstm_1"])
def test_feature_channels_reach_the_logits_directly(name: str) -> None:
    torch.manual_seed(0)
    model = get_model(name, 5, 5, feature_channels=4).eval()
    assert type(model).__name__ == "FeatureFusion"
    assert model.backbone(torch.randn(2, 1, 187)).shape == (2, 64)  # the signal network sees the beat only
    beat = torch.randn(6, 1, 187)
    rr = torch.rand(6, 4, 1).expand(6, 4, 187)
    out = model(torch.cat([beat, rr], dim=1))
    assert out.shape == (6, 5) and torch.isfinite(out).all()
    # other features with the same beat give other logits; the features are read as constants per example
    assert not torch.allclose(out, model(torch.cat([beat, rr * 2], dim=1)))
    assert torch.equal(out, model(torch.cat([beat, rr.clone().index_fill_(2, torch.arange(1, 187), 9.0)], dim=1)))
