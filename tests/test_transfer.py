"""toolbox.transfer: loading a pretrained encoder into a classifier, and freezing it (head-only, linear probe)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import wfdb
from torch import nn

import models
from toolbox import checkpoint
from toolbox.optimizers import get_optimizer
from toolbox.transfer import Freezer, encoder_names, load_encoder, source_encoder
from toolbox.utils import ECGError

LEADS, CLASSES = 2, 5


def perturbed(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor moved off its initial value (batch-norm statistics included)."""
    out = {}
    for name, t in model.state_dict().items():
        out[name] = t + torch.randn_like(t).abs() + 0.5 if t.is_floating_point() else t + 7
    return out


def pretrain_state(name: str, leads: int, seed: int = 1) -> dict:
    """A pretraining checkpoint's state as tasks/pretrain.py stores it: the encoder without the head."""
    torch.manual_seed(seed)
    encoder = {k: v for k, v in perturbed(models.get_model(name, leads, 7)).items() if not k.startswith("head.")}
    return {"task": "pretrain", "model_name": name, "in_channels": leads, "pretext": "contrastive", "encoder": encoder,
            "epoch": 3}


def classifier_state(name: str, leads: int, classes: int, features: int = 0) -> dict:
    """A classifier checkpoint's state as commander.py train_run stores it."""
    model = models.get_model(name, leads + features, classes, features)
    return {"epoch": 1, **models.constructor_args(name, leads + features, classes, features),
            "model": perturbed(model)}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def batch(data_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight 1-second windows of MIT-BIH record 100 (both leads), standardised, with class labels 0..4."""
    record = wfdb.rdrecord(str(data_root / "mitdb" / "100"), sampto=8 * 360)
    x = torch.tensor(record.p_signal.T, dtype=torch.float32).reshape(LEADS, 8, 360).transpose(0, 1).contiguous()
    x = (x - x.mean(dim=2, keepdim=True)) / x.std(dim=2, keepdim=True)
    return x, torch.arange(8) % CLASSES


def test_encoder_names_leave_out_the_head_and_fusion_parts() -> None:
    plain = models.get_model("resnet1d_10", LEADS, CLASSES)
    names = encoder_names(plain)
    assert names == [k for k in plain.state_dict() if not k.startswith("head.")]
    assert "features.0.0.weight" in names and "head.3.weight" not in names
    fused = models.get_model("resnet1d_10", LEADS + 2, CLASSES, feature_channels=2)
    assert encoder_names(fused) == ["backbone." + k for k in names]


def test_pretrain_encoder_fills_the_encoder_and_leaves_the_head() -> None:
    state = pretrain_state("resnet1d_10", LEADS)
    torch.manual_seed(0)
    model = models.get_model("resnet1d_10", LEADS, CLASSES)
    before = snapshot(model)
    transfer = load_encoder(model, "resnet1d_10", state, "/runs/pre/model_best.pth.tar")
    after = model.state_dict()
    assert transfer.loaded == list(state["encoder"]) == encoder_names(model)
    assert transfer.new == ["head.3.weight", "head.3.bias"]
    for name in transfer.loaded:
        assert torch.equal(after[name], state["encoder"][name]), name
        assert not torch.equal(after[name], before[name]), name  # the source really differed from the init
    for name in transfer.new:
        assert torch.equal(after[name], before[name]), name
    values = sum(t.numel() for t in state["encoder"].values())
    assert transfer.summary() == (f"loaded {len(transfer.loaded)} encoder tensors ({values:,} values) from "
                                  f"/runs/pre/model_best.pth.tar; new: head.3.weight, head.3.bias")


def test_classifier_checkpoint_with_other_classes_through_a_file(tmp_path: Path) -> None:
    state = classifier_state("cnn1d_3", LEADS, classes=3)
    checkpoint.save(state, tmp_path, is_best=False)
    path = tmp_path / checkpoint.LAST
    read = checkpoint.load(path)
    name, encoder = source_encoder(read, str(path))
    assert name == "cnn1d_3" and not any(k.startswith("head.") for k in encoder)
    model = models.get_model("cnn1d_3", LEADS, CLASSES)
    head = model.head[3].weight.detach().clone()
    transfer = load_encoder(model, "cnn1d_3", read, str(path))
    assert transfer.new == ["head.3.weight", "head.3.bias"] and model.head[3].weight.shape[0] == CLASSES
    assert torch.equal(model.head[3].weight, head)
    for k in transfer.loaded:
        assert torch.equal(model.state_dict()[k], state["model"][k]), k


@pytest.mark.parametrize("name", models.CLASSIFIERS)
def test_every_classifier_takes_its_own_encoder(name: str) -> None:
    state = classifier_state(name, LEADS, classes=3)
    model = models.get_model(name, LEADS, CLASSES)
    heads = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    transfer = load_encoder(model, name, state, "ckpt")
    assert transfer.new == list(heads) and heads
    assert len(transfer.loaded) + len(transfer.new) == len(model.state_dict())
    after = model.state_dict()
    assert all(torch.equal(after[k], state["model"][k]) for k in transfer.loaded)
    assert all(torch.equal(after[k], v) for k, v in heads.items())


def test_fusion_target_from_a_plain_pretrain_encoder() -> None:
    state = pretrain_state("resnet1d_10", LEADS)
    model = models.get_model("resnet1d_10", LEADS + 2, CLASSES, feature_channels=2)
    before = snapshot(model)
    transfer = load_encoder(model, "resnet1d_10", state, "pre")
    assert transfer.loaded == ["backbone." + k for k in state["encoder"]]
    assert set(transfer.new) == {k for k in before if not k.startswith("backbone.") or k.startswith("backbone.head.")}
    assert any(k.startswith("norm.") for k in transfer.new) and "backbone.head.3.weight" in transfer.new
    for k, v in state["encoder"].items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in transfer.new)


def test_plain_target_from_a_fusion_checkpoint() -> None:
    state = classifier_state("resnet1d_10", LEADS, classes=3, features=2)
    name, encoder = source_encoder(state, "fused")
    assert list(encoder) == [k[len("backbone."):] for k in state["model"]
                             if k.startswith("backbone.") and not k.startswith("backbone.head.")]
    model = models.get_model("resnet1d_10", LEADS, CLASSES)
    transfer = load_encoder(model, "resnet1d_10", state, "fused")
    assert all(torch.equal(model.state_dict()[k], state["model"]["backbone." + k]) for k in transfer.loaded)


@pytest.mark.parametrize("source, leads, target, target_leads, words", [
    ("resnet1d_18", LEADS, "resnet1d_10", LEADS, ["resnet1d_18 encoder for 2 input leads", "resnet1d_10 with 2 leads",
                                                    "--model-name resnet1d_10"]),
    ("resnet1d_10", 12, "resnet1d_10", 1, ["resnet1d_10 encoder for 12 input leads", "resnet1d_10 with 1 lead ",
                                           "features.0.0.weight (32, 12, 7) in the checkpoint vs (32, 1, 7) here",
                                           "on 1 lead"]),
    ("resnet1d_10", LEADS, "resnet1d_10_small", LEADS, ["resnet1d_10_small with 2 leads"]),
    ("lstm_2", LEADS, "lstm_1", LEADS, ["lstm.weight_ih_l1 not in this model"]),
    ("lstm_1", LEADS, "lstm_2", LEADS, ["lstm.weight_ih_l1 missing in the checkpoint"]),
])
def test_incompatible_encoder_is_refused_and_changes_nothing(source: str, leads: int, target: str,
                                                             target_leads: int, words: list[str]) -> None:
    state = pretrain_state(source, leads)
    model = models.get_model(target, target_leads, CLASSES)
    before = snapshot(model)
    with pytest.raises(ECGError) as exc:
        load_encoder(model, target, state, "/runs/pre/model_best.pth.tar")
    text = assert_one_line(exc)
    assert text.startswith("/runs/pre/model_best.pth.tar holds a ") and "first mismatch: " in text
    for w in words:
        assert w in text, text
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_same_tensors_of_another_model_name_are_refused() -> None:
    state = pretrain_state("lstm_1", LEADS)
    state["model_name"] = "cnn1d_3"
    model = models.get_model("lstm_1", LEADS, CLASSES)
    with pytest.raises(ECGError) as exc:
        load_encoder(model, "lstm_1", state, "x")
    assert "cnn1d_3 encoder" in assert_one_line(exc)


@pytest.mark.parametrize("state", [
    {"epoch": 1},
    {"task": "pretrain", "model_name": "resnet1d_10", "epoch": 1},
    {"epoch": 1, "model_name": "beatgan", "model": {"x": torch.zeros(1)}},
    [1, 2],
])
def test_other_checkpoints_are_refused_in_one_line(state: object) -> None:
    with pytest.raises(ECGError) as exc:
        source_encoder(state, "/runs/other/checkpoint.pth.tar")
    assert assert_one_line(exc).startswith("/runs/other/checkpoint.pth.tar ")


def step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """One training step as trainer.py takes it."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
    optimizer.step()


def params(model: nn.Module, encoder: bool) -> dict[str, torch.Tensor]:
    names = set(encoder_names(model))
    return {k: p.detach().clone() for k, p in model.named_parameters() if (k in names) == encoder}


@pytest.mark.parametrize("optimizer, momentum", [("adamw", 0.0), ("sgd", 0.9), ("adam", 0.0)])
def test_frozen_encoder_stays_through_decay_and_momentum(batch, optimizer: str, momentum: float) -> None:
    torch.manual_seed(0)
    model = models.get_model("resnet1d_10_small", LEADS, CLASSES)
    opt = get_optimizer(optimizer, model, lr=0.05, momentum=momentum, weight_decay=0.01)
    step(model, opt, batch)  # the encoder first trains: momentum and Adam moments exist for it
    freezer = Freezer(model)
    frozen = freezer.freeze()
    assert frozen == sum(p.numel() for k, p in model.named_parameters() if not k.startswith("head."))
    assert all(p.grad is None and not p.requires_grad for k, p in model.named_parameters() if not k.startswith("head."))
    enc, head = params(model, True), params(model, False)
    for _ in range(2):
        step(model, opt, batch)
    assert all(torch.equal(p, params(model, True)[k]) for k, p in enc.items())
    assert all(not torch.equal(p, params(model, False)[k]) for k, p in head.items())
    freezer.unfreeze()
    step(model, opt, batch)
    moved = params(model, True)
    assert all(p.requires_grad for p in model.parameters())
    assert sum(not torch.equal(p, moved[k]) for k, p in enc.items()) == len(enc)


def test_freeze_keeps_zeroed_gradients_from_moving_the_encoder(batch) -> None:
    torch.manual_seed(0)
    model = models.get_model("cnn1d_3", LEADS, CLASSES)
    opt = get_optimizer("sgd", model, lr=0.05, momentum=0.9, weight_decay=0.01)
    step(model, opt, batch)
    Freezer(model).freeze()
    enc = params(model, True)
    opt.zero_grad(set_to_none=False)  # a trainer that zeroes gradients in place
    nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
    opt.step()
    assert all(torch.equal(p, params(model, True)[k]) for k, p in enc.items())


def bn_stats(model: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix) and "running_" in k}


def test_linear_probe_fixes_encoder_batch_norm_in_train_mode(batch) -> None:
    torch.manual_seed(0)
    model = models.get_model("resnet1d_10_small", LEADS + 1, CLASSES, feature_channels=1)
    x = torch.cat([batch[0], torch.randn(len(batch[0]), 1, 1).expand(-1, 1, batch[0].shape[2])], dim=1)
    freezer = Freezer(model, eval_mode=True)
    freezer.freeze()
    enc_bn, fusion_bn = bn_stats(model, "backbone.features."), bn_stats(model, "norm.")
    assert enc_bn and fusion_bn
    model.train()
    out = model(x)
    assert out.shape == (len(x), CLASSES) and model.training and model.backbone.head.training
    assert all(torch.equal(v, bn_stats(model, "backbone.features.")[k]) for k, v in enc_bn.items())
    assert all(not torch.equal(v, bn_stats(model, "norm.")[k]) for k, v in fusion_bn.items())  # new parts train
    assert not model.backbone.features[0].training
    freezer.unfreeze()
    model.train()
    model(x)
    assert all(m.training for m in model.modules())
    assert all(not torch.equal(v, bn_stats(model, "backbone.features.")[k]) for k, v in enc_bn.items())


def test_freeze_without_eval_mode_lets_batch_norm_adapt(batch) -> None:
    model = models.get_model("resnet1d_10_small", LEADS, CLASSES)
    Freezer(model).freeze()
    enc_bn = bn_stats(model, "features.")
    model.train()
    model(batch[0])
    assert all(not torch.equal(v, bn_stats(model, "features.")[k]) for k, v in enc_bn.items())


def test_freezer_refuses_a_model_without_a_head() -> None:
    with pytest.raises(ECGError) as exc:
        Freezer(nn.Sequential(nn.Conv1d(1, 2, 3))).freeze()
    assert "no classifier head" in assert_one_line(exc)
