"""The augmenters on small tensors: shapes, seeds, feature channels, soft targets, their maths, the flags that
refuse them, and that validation and test never see them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import trainer
from args import AUGMENTATIONS, RECORD_AUGMENTATIONS, parse_args
from loaders.dataset import ECGDataset, RecordDataset, make_dataloader
from models import get_model
from toolbox import augment
from toolbox.losses import FocalLoss, get_criterion

LEADS, FEATURES, LENGTH, CLASSES = 3, 2, 200, 5


def _batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Signals (n, 3 leads) of different shapes and amplitudes, 2 feature channels constant along time (the
    one-hot of the label for 2 classes, so that a mixer must blend them as it blends the targets)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, LENGTH)
    signal = torch.sin(2 * torch.pi * (1 + 3 * torch.rand(n, LEADS, 1, generator=g)) * t)
    signal = signal * (0.5 + torch.rand(n, LEADS, 1, generator=g)) + torch.randn(n, LEADS, 1, generator=g)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    features = (y[:, None] == torch.arange(FEATURES)).float()[:, :, None].expand(n, FEATURES, LENGTH)
    return torch.cat([signal, features], dim=1), y


def _run(names: list[str], x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return augment.Augmenter(names, LEADS, CLASSES)(x, y)


def test_the_names_are_the_parsers_and_the_record_only_ones_exist() -> None:
    assert tuple(augment.AUGMENTATIONS) == AUGMENTATIONS
    assert set(RECORD_AUGMENTATIONS) <= set(AUGMENTATIONS) and set(augment.MIXERS) <= set(AUGMENTATIONS)
    # the four of earlier runs keep their order, so that their run names (aug-scale+noise+...) stay the same
    old = [n for n in AUGMENTATIONS if n in ("scale", "noise", "wander", "shift")]
    assert old == ["scale", "noise", "wander", "shift"]


@pytest.mark.parametrize("name", list(augment.AUGMENTATIONS))
def test_each_augmenter_keeps_shapes_repeats_with_its_seed_and_leaves_features_alone(name: str) -> None:
    x, y = _batch()
    out, target = _run([name], x, y, seed=1)
    again, target_again = _run([name], x, y, seed=1)
    other, _ = _run([name], x, y, seed=2)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert torch.equal(out, again) and torch.equal(target, target_again)
    assert not torch.equal(out[:, :LEADS], other[:, :LEADS]) and not torch.equal(out[:, :LEADS], x[:, :LEADS])
    features = out[:, LEADS:]
    if name in augment.MIXERS:  # soft targets, and the features (the one-hot label) blended exactly like them
        assert target.shape == (len(x), CLASSES) and target.dtype == torch.float32
        assert ((target >= 0) & (target <= 1)).all() and torch.allclose(target.sum(dim=1), torch.ones(len(x)))
        assert torch.equal(features, features[:, :, :1].expand_as(features))  # still constant along time
        assert torch.allclose(features[:, :, 0], target[:, :FEATURES], atol=1e-6)
        assert (target.max(dim=1).values < 1).any()  # some examples were mixed
    else:
        assert torch.equal(features, x[:, LEADS:]) and torch.equal(target, y)  # untouched, labels as they came


def test_all_together_and_multi_hot_targets() -> None:
    x, y = _batch(64)
    out, target = _run(list(augment.AUGMENTATIONS), x, y, seed=0)
    assert out.shape == x.shape and target.shape == (64, CLASSES) and torch.isfinite(out).all()
    multi = (torch.rand(64, CLASSES, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    torch.manual_seed(0)
    _, soft = augment.Augmenter(["cutmix", "mixup"], LEADS)(x, multi)  # no class count needed for multi-hot rows
    assert soft.shape == multi.shape and ((soft >= 0) & (soft <= 1)).all() and not torch.equal(soft, multi)
    with pytest.raises(ValueError, match="needs num_classes"):
        augment.Augmenter(["mixup"], LEADS)(x, y)


def test_mixup_blends_each_example_with_a_partner_keeping_at_least_half_of_itself() -> None:
    n = 400
    x = torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, 2, 10)  # example i is the constant i
    torch.manual_seed(0)
    signal, _, target = augment.mixup(x, x[:, :0], augment.soft_targets(torch.arange(n), n))  # class i: example i
    keep = target.diagonal()
    partner = torch.where(target > 0, torch.arange(n), -1).masked_fill(torch.eye(n, dtype=torch.bool), -1).amax(1)
    mixed = partner >= 0  # blended with another example (not drawn as its own partner, weight below 1)
    assert (keep >= 0.5).all() and mixed.sum() > 300 and (keep[mixed] < 0.99).float().mean() > 0.5
    assert torch.allclose(target[mixed, partner[mixed]], 1 - keep[mixed])
    want = keep * torch.arange(n) + (1 - keep) * torch.where(mixed, partner, torch.arange(n))
    assert torch.allclose(signal, want[:, None, None].expand_as(signal), rtol=1e-5)  # the targets' weights


def test_cutmix_pastes_one_segment_of_another_example_in_every_lead() -> None:
    n, length = 64, 100
    x = (torch.arange(n)[:, None, None] * 1000 + torch.arange(length) + torch.tensor([0, 100000])[:, None]).float()
    torch.manual_seed(0)
    signal, _, target = augment.cutmix(x, x[:, :0], augment.soft_targets(torch.arange(n), n))
    changed = signal != x
    assert torch.equal(changed[:, 0], changed[:, 1])  # the same samples in both leads
    for i in range(n):
        where = changed[i, 0].nonzero().flatten()
        if len(where):
            assert (where.diff() == 1).all() and len(where) <= length // 2  # one segment, at most half
            source = (signal[i, 0, where] // 1000).unique()
            assert len(source) == 1 and torch.equal(signal[i, :, where], x[int(source), :, where])  # same place
            assert target[i, i] == pytest.approx(1 - len(where) / length)
            assert target[i, int(source)] == pytest.approx(len(where) / length)
        else:  # nothing pasted (or itself drawn as the partner)
            assert target[i].max() == 1
    assert changed.any(dim=2).float().mean() > 0.8


def test_resample_is_exact_at_factor_one_and_interpolates_linearly() -> None:
    x = torch.randn(8, 3, 50)
    assert torch.equal(augment.resample(x, torch.ones(8, 1, 1)), x)
    ramp = torch.arange(50, dtype=torch.float32).expand(2, 1, 50)
    out = augment.resample(ramp, torch.tensor([2.0, 0.5]).view(2, 1, 1))
    assert torch.allclose(out[0, 0], torch.arange(50) / 2)  # slowed down: sample t is the input at t / 2
    assert torch.allclose(out[1, 0, :25], torch.arange(25) * 2.0) and (out[1, 0, 25:] == 0).all()  # sped up, zeros


def test_stretch_factors_lie_within_ten_percent() -> None:
    ramp = torch.arange(1, 101, dtype=torch.float32).expand(500, 2, 100)  # x[t] = t + 1
    torch.manual_seed(0)
    out = augment.stretch(ramp)
    inside = out[:, 0, 1:80]  # well before the end: out = (t / f) + 1 for t = 1 ... 79
    factor = torch.arange(1, 80) / (inside - 1)
    assert torch.allclose(factor, factor[:, :1].expand_as(factor), rtol=1e-3)  # one factor per example ...
    assert factor.min() >= 0.9 - 1e-4 and factor.max() <= 1.1 + 1e-4 and factor[:, 0].std() > 0.04
    assert torch.equal(out[:, 0], out[:, 1])  # ... and per example, not per lead


def test_renormalize_gives_each_example_its_new_mean_and_sd_keeping_its_shape() -> None:
    x, _ = _batch(500)
    signal = x[:, :LEADS]
    torch.manual_seed(0)
    out = augment.renormalize(signal)
    mean, sd = signal.mean(dim=(1, 2)), signal.std(dim=(1, 2))
    new_mean, new_sd = out.mean(dim=(1, 2)), out.std(dim=(1, 2))
    z = (signal - mean[:, None, None]) / sd[:, None, None]
    assert torch.allclose((out - new_mean[:, None, None]) / new_sd[:, None, None], z, atol=1e-4)
    gain = new_sd / sd
    assert gain.min() >= 1 / 1.5 - 1e-4 and gain.max() <= 1.5 + 1e-4 and gain.log().std() > 0.15
    moved = (new_mean - mean) / sd
    assert moved.abs().max() <= 0.25 + 1e-4 and moved.std() > 0.1


def test_invert_flips_whole_examples_exactly() -> None:
    x = torch.randn(500, 3, 20)
    torch.manual_seed(0)
    out = augment.invert(x)
    flipped = (out == -x).all(dim=(1, 2))
    assert (flipped | (out == x).all(dim=(1, 2))).all()  # every lead of an example, or none
    assert 0.14 < flipped.float().mean() < 0.26


def test_leadwander_is_wander_on_one_lead_and_independent_per_lead() -> None:
    x = torch.randn(64, 1, 187)
    torch.manual_seed(5)
    one = augment.wander(x)
    torch.manual_seed(5)
    assert torch.equal(augment.leadwander(x), one)
    x3, _ = _batch(64)
    x3 = x3[:, :LEADS]
    torch.manual_seed(0)
    common = augment.wander(x3) - x3
    torch.manual_seed(0)
    drift = augment.leadwander(x3) - x3
    assert torch.allclose(common, common[:, :1].expand_as(common), atol=1e-6)  # wander: one drift for all leads
    assert not torch.allclose(drift[:, 0], drift[:, 1], atol=1e-3)
    assert (drift.abs().amax(dim=(1, 2)) <= 0.1 * x3.std(dim=(1, 2)) + 1e-5).all()


def test_mask_zeroes_at_most_three_short_segments_in_every_lead() -> None:
    x = torch.rand(300, 2, 200) + 1  # nowhere zero
    torch.manual_seed(0)
    out = augment.mask(x)
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1]) and torch.equal(out[~zero], x[~zero])
    runs = (zero[:, 0].int().diff(dim=1) == 1).sum(dim=1) + zero[:, 0, 0].int()  # segments starting
    assert runs.max() <= 3 and zero[:, 0].float().mean(dim=1).max() <= 0.15 + 1e-6
    assert zero.float().mean() > 0.03


def test_focal_loss_takes_probability_rows() -> None:
    logits = torch.randn(6, 3)
    target = torch.tensor([0, 2, 1, 1, 0, 2])
    onehot = augment.soft_targets(target, 3)
    weight = torch.tensor([0.5, 2.0, 1.0])
    for w in (None, weight):
        loss = FocalLoss(weight=w)
        assert torch.allclose(loss(logits, onehot), loss(logits, target))
    soft = torch.tensor([[0.7, 0.3, 0.0]]).expand(6, 3)
    per_class = [FocalLoss()(logits, torch.full((6,), c)) for c in range(2)]
    assert torch.allclose(FocalLoss()(logits, soft), 0.7 * per_class[0] + 0.3 * per_class[1])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_of_one_hot_rows_is_that_of_their_indices(smoothing: float) -> None:
    """Also with class weights: a mixer changes the targets, not the scale of the loss."""
    logits = torch.randn(6, 3)
    target = torch.tensor([0, 2, 1, 1, 0, 2])
    onehot = augment.soft_targets(target, 3)
    for w in (None, torch.tensor([0.5, 2.0, 1.0])):
        loss = get_criterion("crossentropy", w, smoothing)
        assert torch.allclose(loss(logits, onehot), loss(logits, target), atol=1e-6)
        assert torch.allclose(loss(logits, target), nn.CrossEntropyLoss(weight=w, label_smoothing=smoothing)(
            logits, target))
    soft = torch.tensor([[0.7, 0.3, 0.0]]).expand(6, 3)
    per_class = [get_criterion("crossentropy")(logits, torch.full((6,), c)) for c in range(2)]
    assert torch.allclose(get_criterion("crossentropy")(logits, soft), 0.7 * per_class[0] + 0.3 * per_class[1])


@pytest.mark.parametrize("dataset", ["ecg", "ecg_bin", "ptb"])
@pytest.mark.parametrize("name", list(RECORD_AUGMENTATIONS))
def test_record_augmenters_are_refused_for_beats_with_one_line(dataset: str, name: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--dataset", dataset, "--augment", "mixup", name])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert f"--augment {name} is for the record datasets (cinc2020, cinc2021, ptbxl), not the beats of" in err
    assert parse_args(["--dataset", "cinc2020", "--augment", name]).augment == [name]
    beats = [n for n in AUGMENTATIONS if n not in RECORD_AUGMENTATIONS]
    assert parse_args(["--dataset", dataset, "--augment", *beats]).augment == beats


class Spy(nn.Module):
    """A model that keeps every input it is given in evaluation mode."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.seen.append(x.clone())
        return self.model(x)


class Counting(augment.Augmenter):
    calls = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        return super().__call__(x, y)


def test_validation_and_test_see_the_data_as_it_is() -> None:
    """Training with every augmenter, then validate and test: the model sees the evaluation examples unchanged,
    the augmenter ran once per training batch, and train accuracy and F1 are scored on the labels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1 + FEATURES, 64, generator=g)
    data = ECGDataset(x.numpy(), torch.randint(0, 3, (96,), generator=g).numpy(), ["a", "b", "c"])
    torch.manual_seed(0)
    model = Spy(get_model("cnn1d_3", 1 + FEATURES, 3, FEATURES))
    aug = Counting(list(AUGMENTATIONS), 1, 3)
    loader = make_dataloader(data, 16, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters())
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    tr = trainer.train(model, loader, criterion, opt, torch.device("cpu"), 1, data.classes, progress=False,
                       augment=aug)
    assert aug.calls == len(loader) == 6 and np.isfinite(tr["loss"]) and 0 <= tr["accuracy"] <= 1
    evaluation = make_dataloader(data, 16)
    val, probs, targets = trainer.validate(model, evaluation, criterion, torch.device("cpu"), data.classes,
                                           progress=False)
    test, test_probs, _ = trainer.test(model, evaluation, criterion, torch.device("cpu"), data.classes,
                                       progress=False)
    assert aug.calls == 6  # not one call more
    assert torch.equal(torch.cat(model.seen), torch.cat([data.x, data.x]))  # validation, then test: as stored
    np.testing.assert_array_equal(targets, data.labels.numpy())
    np.testing.assert_array_equal(probs, test_probs)


def test_multilabel_training_mixes_records_and_scores_the_labels() -> None:
    rng = np.random.default_rng(0)
    signals = [rng.standard_normal((12, 300)).astype(np.float32) for _ in range(24)]
    labels = (rng.random((24, 4)) < 0.4).astype(np.float32)
    data = RecordDataset.from_signals(signals, labels, ["a", "b", "c", "d"], 250, random_crop=True)
    torch.manual_seed(0)
    model = get_model("cnn1d_3", 12, 4)
    seen = []

    class Criterion(nn.BCEWithLogitsLoss):
        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            seen.append(target)
            return super().forward(logits, target)

    loader = make_dataloader(data, 8, shuffle=True, generator=torch.Generator().manual_seed(0))
    tr = trainer.train(model, loader, Criterion(), torch.optim.AdamW(model.parameters()), torch.device("cpu"), 1,
                       data.classes, multilabel=True, progress=False,
                       augment=augment.Augmenter(["cutmix", "mixup", "leadwander", "mask"], 12))
    soft = torch.cat(seen)
    assert np.isfinite(tr["loss"]) and ((soft > 0) & (soft < 1)).any()  # the loss saw blended targets
    assert 0 <= tr["accuracy"] <= 1 and 0 <= tr["macro_f1"] <= 1
