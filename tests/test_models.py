"""Every classifier architecture: output shape, any lead/class count, one optimisation step (generative models:
tests/test_generative_models.py)."""
from __future__ import annotations

import pytest
import torch

from models import CLASSIFIERS, constructor_args, from_checkpoint, get_model
from toolbox.utils import ECGError


@pytest.mark.parametrize("name", list(CLASSIFIERS))
@pytest.mark.parametrize("leads,classes,length", [(1, 5, 187), (12, 27, 1000), (2, 2, 187)])
def test_forward_shape(name: str, leads: int, classes: int, length: int) -> None:
    torch.manual_seed(0)
    model = get_model(name, leads, classes).eval()
    out = model(torch.randn(3, leads, length))
    assert out.shape == (3, classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(CLASSIFIERS))
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


@pytest.mark.parametrize("name", list(CLASSIFIERS))
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
    sizes = {name: sum(p.numel() for p in get_model(name, 1, 5).parameters()) for name in CLASSIFIERS}
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


# Parameters for 12 leads and 71 classes (PTB-XL's "all" statements), counted on a replica of the reference,
# helme/ecg_ptbxl_benchmarking code/models/xresnet1d.py, inception1d.py, resnet1d.py (resnet1d_wang),
# basic_conv1d.py (fcn_wang, create_head1d) and rnn1d.py (RNN1d), each built as code/models/fastai_model.py builds
# fastai_<name> for the configs of code/configs/fastai_configs.py: kernel_size 5 (inception 8 * 5 = 40),
# lin_ftrs_head [128], ps_head 0.5, concat pooling, batch-normed head.
BENCHMARK_PARAMETERS = {"xresnet1d50": 962_503, "xresnet1d101": 1_880_775, "inception1d": 516_167,
                        "resnet1d_wang": 481_863, "fcn_wang": 318_279, "lstm_bidir": 2_339_143}
# No reference in that repository (its ResBlock's SE option calls a SEModule that xresnet1d.py lacks): ours is
# xresnet1d50 plus a 256 -> 16 -> 256 gate with biases in each of its 16 blocks, 16 * 8_464 parameters.
OUR_PARAMETERS = {"se_xresnet1d50": 962_503 + 16 * 8_464}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected", [*BENCHMARK_PARAMETERS.items(), *OUR_PARAMETERS.items()])
def test_benchmark_models_have_the_reference_parameter_count(name: str, expected: int) -> None:
    assert _count(get_model(name, 12, 71)) == expected


def test_xresnet_uses_kernel_5_and_the_benchmark_stage_layout() -> None:
    model = get_model("xresnet1d101", 12, 71)
    wide = {conv.kernel_size[0] for conv in model.modules() if isinstance(conv, torch.nn.Conv1d)} - {1}
    assert wide == {5}
    blocks = [m for m in model.features if type(m).__name__ == "Bottleneck"]
    assert len(blocks) == 3 + 4 + 23 + 3
    assert {b.branch[-1][0].out_channels for b in blocks} == {256}  # 64 x 4 in every stage, as the benchmark has
    assert sum(b.branch[1][0].stride[0] == 2 for b in blocks) == 3
    se = [m for m in get_model("se_xresnet1d50", 12, 71).modules() if type(m).__name__ == "SqueezeExcite"]
    assert len(se) == 16 and not any(type(m).__name__ == "SqueezeExcite" for m in model.modules())


def test_benchmark_head_pools_max_and_mean_then_two_layers() -> None:
    head = get_model("resnet1d_wang", 12, 71).head
    x = torch.randn(2, 128, 50)
    assert torch.equal(head[0](x), torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1))
    layers = [(type(m).__name__, getattr(m, "p", getattr(m, "out_features", getattr(m, "num_features", None))))
              for m in head[1]]
    assert layers == [("BatchNorm1d", 256), ("Dropout", 0.25), ("Linear", 128), ("ReLU", None),
                      ("BatchNorm1d", 128), ("Dropout", 0.5), ("Linear", 71)]


def test_inception_convolves_39_19_and_9_samples() -> None:
    block = get_model("inception1d", 12, 71).blocks[0]
    assert [conv.kernel_size[0] for conv in block.convs] == [39, 19, 9]


def test_lstm_bidir_reads_raw_samples_both_ways_and_pools_each_direction_final_state() -> None:
    torch.manual_seed(0)
    model = get_model("lstm_bidir", 12, 71).eval()
    lstm = model.lstm
    assert (lstm.bidirectional, lstm.num_layers, lstm.hidden_size, lstm.input_size) == (True, 2, 256, 12)
    x = torch.randn(2, 12, 40)
    seq, _ = lstm(x.transpose(1, 2))
    final = torch.cat([seq[:, -1, :256], seq[:, 0, 256:]], dim=1)  # forward at the end, backward at the start
    assert torch.allclose(model(x), model.head(torch.cat([seq.mean(dim=1), seq.amax(dim=1), final], dim=1)))
