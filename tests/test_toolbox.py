"""Selectors, class weights, metrics and checkpoints (small tensors)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from models import get_model
from toolbox import checkpoint
from toolbox.losses import FocalLoss, class_weights, get_criterion
from toolbox.metrics import classification_metrics
from toolbox.optimizers import OPTIMIZERS, SCHEDULERS, get_optimizer, get_scheduler, step_epoch
from toolbox.samplers import get_sampler
from toolbox.utils import ECGError


def test_equal_class_weights_give_every_class_the_same_total() -> None:
    counts = np.array([900, 90, 10])
    w = class_weights(counts, "equal").numpy()
    totals = w * counts
    np.testing.assert_allclose(totals, totals[0], rtol=1e-6)
    assert np.isclose((w * counts).sum(), counts.sum())  # mean example weight 1


def test_importance_weights_lie_between_none_and_equal() -> None:
    counts = np.array([900, 90, 10])
    eq, imp = class_weights(counts, "equal").numpy(), class_weights(counts, "importance").numpy()
    assert imp[2] / imp[0] == pytest.approx(np.sqrt(900 / 10), rel=1e-5)
    assert 1 < imp[2] / imp[0] < eq[2] / eq[0]


def test_focal_loss_with_gamma_zero_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(32, 5), torch.randint(0, 5, (32,))
    w = torch.rand(5) + 0.5
    assert FocalLoss(w, gamma=0.0)(logits, y).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, y, weight=w).item(), rel=1e-5)
    assert FocalLoss(None, gamma=2.0)(logits, y) < torch.nn.functional.cross_entropy(logits, y)


def test_equal_sampler_draws_classes_equally() -> None:
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    sampler = get_sampler("equal", labels, torch.Generator().manual_seed(0))
    drawn = labels[torch.tensor(list(iter(sampler)))]
    share = np.bincount(drawn.numpy(), minlength=3) / len(drawn)
    np.testing.assert_allclose(share, 1 / 3, atol=0.05)
    assert get_sampler(None, labels, torch.Generator()) is None


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_honours_weight_decay(name: str) -> None:
    opt = get_optimizer(name, torch.nn.Linear(3, 2), lr=0.1, momentum=0.9, weight_decay=0.05)
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_builds_and_steps(name: str) -> None:
    opt = get_optimizer("sgd", torch.nn.Linear(3, 2), lr=0.1, momentum=0.9, weight_decay=0.0)
    sched = get_scheduler(name, opt, epochs=4, steps_per_epoch=3, step=1, decay=0.5, lr=0.1)
    if name == "OneCycleLR":
        for _ in range(3):
            opt.step()
            sched.step()
    else:
        opt.step()
        step_epoch(sched, 0.5)
    lr = opt.param_groups[0]["lr"]
    assert (sched is None and lr == 0.1) or (sched is not None and lr != 0.1) or name == "ReduceLROnPlateau"


def test_unknown_selector_names_list_the_valid_ones() -> None:
    with pytest.raises(ECGError, match="valid: sgd, adam, adamw"):
        get_optimizer("lbfgs", torch.nn.Linear(1, 1), 0.1, 0.9, 0.0)
    with pytest.raises(ECGError, match="valid: crossentropy, focal"):
        get_criterion("hinge")


def test_metrics_on_a_hand_made_case() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    m = classification_metrics(y, p, ["N", "S", "V"])
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["per_class"]["V"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)


def _state(model: torch.nn.Module, epoch: int) -> dict:
    return {"epoch": epoch, "model_name": "cnn1d_3", "in_channels": 1, "num_classes": 5,
            "model": model.state_dict(), "rng": checkpoint.rng_state(torch.Generator().manual_seed(1))}


def test_checkpoint_round_trip_and_retention(tmp_path: Path) -> None:
    model = get_model("cnn1d_3", 1, 5)
    for epoch in range(1, 6):
        checkpoint.save(_state(model, epoch), tmp_path, is_best=epoch == 2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint.pth.tar", "checkpoint_epoch5.pth.tar", "model_best.pth.tar"]
    assert checkpoint.load(tmp_path / "model_best.pth.tar")["epoch"] == 2
    assert checkpoint.load(checkpoint.resolve(tmp_path, "latest"))["epoch"] == 5
    assert checkpoint.load(checkpoint.resolve(tmp_path, "5"))["epoch"] == 5
    with pytest.raises(ECGError, match="checkpoint_epoch3.pth.tar"):
        checkpoint.resolve(tmp_path, "3")


def test_rng_state_restores_every_generator() -> None:
    gen = torch.Generator().manual_seed(5)
    state = checkpoint.rng_state(gen)
    first = (np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item(), __import__("random").random())
    checkpoint.set_rng_state(state, gen)
    again = (np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item(), __import__("random").random())
    assert first == again


def test_checkpoint_mismatch_and_garbage_are_clear_errors(tmp_path: Path) -> None:
    checkpoint.save(_state(get_model("cnn1d_3", 1, 5), 1), tmp_path, is_best=False)
    state = checkpoint.load(tmp_path / "checkpoint.pth.tar")
    with pytest.raises(ECGError, match="model_name='cnn1d_3' but this run needs model_name='resnet1d_10'"):
        checkpoint.check_compatible(state, tmp_path, model_name="resnet1d_10", in_channels=1, num_classes=5)
    with pytest.raises(ECGError, match="num_classes=5 but this run needs num_classes=2"):
        checkpoint.check_compatible(state, tmp_path, model_name="cnn1d_3", in_channels=1, num_classes=2)
    with pytest.raises(ECGError, match="in_channels=1 but this run needs in_channels=12"):
        checkpoint.check_compatible(state, tmp_path, model_name="cnn1d_3", in_channels=12, num_classes=5)
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ECGError, match="garbage.pth.tar is not a readable checkpoint"):
        checkpoint.load(garbage)
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes((tmp_path / "checkpoint.pth.tar").read_bytes()[:2000])
    with pytest.raises(ECGError, match="truncated.pth.tar is not a readable checkpoint"):
        checkpoint.load(truncated)
