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
from toolbox.metrics import bootstrap_classification, classification_metrics
from toolbox.optimizers import (
    OPTIMIZERS,
    SCHEDULERS,
    get_optimizer,
    get_scheduler,
    set_hyperparameters,
    step_epoch,
)
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


def test_plateau_schedule_waits_while_the_validation_score_rises() -> None:
    """ReduceLROnPlateau maximises the selection score (macro-F1): rising scores keep the rate, flat ones cut it."""
    opt = get_optimizer("adamw", torch.nn.Linear(3, 2), lr=0.1, momentum=0.9, weight_decay=0.0)
    sched = get_scheduler("ReduceLROnPlateau", opt, epochs=20, steps_per_epoch=1, step=2, decay=0.5, lr=0.1)
    for score in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):  # a loss-like 'min' schedule would cut the rate here
        step_epoch(sched, score)
    assert opt.param_groups[0]["lr"] == 0.1
    for _ in range(3):  # no gain for patience + 1 epochs
        step_epoch(sched, 0.6)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_overrides_change_a_restored_optimizer_and_schedule() -> None:
    model = torch.nn.Linear(3, 2)
    opt = get_optimizer("sgd", model, lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = get_scheduler("StepLR", opt, epochs=10, steps_per_epoch=1, step=5, decay=0.1, lr=0.1)
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    again = get_optimizer("sgd", model, lr=0.1, momentum=0.9, weight_decay=0.3)
    resched = get_scheduler("StepLR", again, epochs=10, steps_per_epoch=1, step=5, decay=0.1, lr=0.1)
    again.load_state_dict(state["optimizer"])
    resched.load_state_dict(state["scheduler"])
    assert again.param_groups[0]["weight_decay"] == 1e-4  # restoring brings back the old setting
    set_hyperparameters(again, resched, {"lr": 0.01, "weight_decay": 0.3, "momentum": 0.5, "lr_decay": 0.5,
                                         "step": 1})
    group = again.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["momentum"]) == (0.01, 0.3, 0.5)
    again.step()
    resched.step()
    assert group["lr"] == pytest.approx(0.005)  # step 1, decay 0.5


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


def test_a_predicted_class_without_examples_counts_in_the_macro_scores() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 0, 4, 1, 1, 2, 4])  # Q (4) predicted twice, never present
    m = classification_metrics(y, p, ["N", "S", "V", "F", "Q"])
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro")) == pytest.approx(0.6309523809)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 + 1 / 2 + 0) / 4)  # Q's recall counts as 0
    assert m["per_class"]["Q"]["f1"] == 0.0 and m["per_class"]["F"]["f1"] is None  # F: neither present nor predicted


def test_bootstrap_intervals_hold_the_estimate_and_repeat_with_their_seed() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    p = np.where(rng.random(600) < 0.8, y, rng.integers(0, 3, 600))
    m = classification_metrics(y, p, ["N", "S", "V"])
    ci = bootstrap_classification(y, p, ["N", "S", "V"], None, 500)
    for key in ("accuracy", "macro_f1", "balanced_accuracy"):
        assert ci[key][0] <= m[key] <= ci[key][1] and ci[key][1] - ci[key][0] < 0.15
    for c in ("N", "S", "V"):
        assert ci["per_class"][c]["f1"][0] <= m["per_class"][c]["f1"] <= ci["per_class"][c]["f1"][1]
    assert bootstrap_classification(y, p, ["N", "S", "V"], None, 500) == ci
    assert bootstrap_classification(y, p, ["N", "S", "V"], None, 500, seed=1) != ci


def test_record_bootstrap_resamples_whole_records() -> None:
    # record 1: all right (100 beats); record 2: all wrong (100 beats). A resample holds each record 0, 1 or 2
    # times, so its accuracy is one of 0, 1/2, 1; resampling beats would give values in between
    y = np.zeros(200, np.int64)
    p = np.r_[np.zeros(100, np.int64), np.ones(100, np.int64)]
    records = np.r_[np.full(100, 1), np.full(100, 2)]
    ci = bootstrap_classification(y, p, ["N", "S"], records, 400)
    assert ci["accuracy"][0] == 0.0 and ci["accuracy"][1] == 1.0
    beats = bootstrap_classification(y, p, ["N", "S"], None, 400)["accuracy"]
    assert 0.4 < beats[0] < 0.5 < beats[1] < 0.6
    # several runs on the same draws: the interval of their mean score
    both = bootstrap_classification(y, [p, np.zeros(200, np.int64)], ["N", "S"], records, 400)["accuracy"]
    assert both[0] == 0.5 and both[1] == 1.0


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


def test_checkpoint_is_written_first_and_repair_restores_the_copies_a_kill_left_out(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    model = get_model("cnn1d_3", 1, 5)
    written = []
    real = checkpoint.atomic_write
    monkeypatch.setattr(checkpoint, "atomic_write", lambda path, write: written.append(path.name) or real(path, write))
    checkpoint.save({**_state(model, 5), "best_epoch": 5}, tmp_path, is_best=True)
    assert written == ["checkpoint.pth.tar", "model_best.pth.tar", "checkpoint_epoch5.pth.tar"]
    # a kill after checkpoint.pth.tar of epoch 6 (best) but before model_best: model_best still holds epoch 5
    monkeypatch.setattr(checkpoint, "atomic_write", real)
    state6 = {**_state(model, 6), "best_epoch": 6}
    real(tmp_path / "checkpoint.pth.tar", lambda tmp: torch.save(state6, tmp))
    assert checkpoint.resolve(tmp_path, "best").name == "checkpoint.pth.tar"  # --test reads epoch 6, writes nothing
    assert checkpoint.load(tmp_path / "model_best.pth.tar")["epoch"] == 5
    checkpoint.repair(tmp_path)  # --resume writes the copy
    assert checkpoint.load(tmp_path / "model_best.pth.tar")["epoch"] == 6
    assert checkpoint.resolve(tmp_path, "best").name == "model_best.pth.tar"
    # an epoch that was not best leaves model_best alone
    real(tmp_path / "checkpoint.pth.tar", lambda tmp: torch.save({**_state(model, 7), "best_epoch": 6}, tmp))
    before = (tmp_path / "model_best.pth.tar").read_bytes()
    checkpoint.repair(tmp_path)
    assert (tmp_path / "model_best.pth.tar").read_bytes() == before


def test_training_batches_do_not_depend_on_the_worker_count() -> None:
    """Whole epochs whose size divides into batches: every draw happens in the main process, before the first
    batch, so -j 0 and -j 2 see the same order and batch seeds in every epoch (and leave the same state)."""
    import itertools

    from loaders.dataset import ECGDataset, make_dataloader

    data = ECGDataset(np.arange(64, dtype=np.float32).reshape(64, 1, 1), np.zeros(64, np.int64), ["N"])
    seen = {}
    for workers in (0, 2):
        generator = torch.Generator().manual_seed(0)
        loader = make_dataloader(data, 16, shuffle=True, workers=workers, generator=generator)
        epochs = [[x[:, 0, 0].tolist() for x, _ in itertools.islice(loader, len(loader))] for _ in range(3)]
        sampler_seeds = [b.seed for b in loader.batch_sampler]
        seen[workers] = (epochs, sampler_seeds, generator.get_state())
    assert seen[0][0] == seen[2][0] and seen[0][1] == seen[2][1] and torch.equal(seen[0][2], seen[2][2])
    assert seen[0][0][0] != seen[0][0][1]  # a new order each epoch
