"""The generative anomaly models of models.generative: shapes, scores, training steps, sampling, exact resume.

Unit tests on small synthetic tensors (random noise for shapes, smooth synthetic beats for learning); the real
MIT-BIH beats are exercised by the anomaly task's integration tests.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from models import generative
from toolbox.utils import ECGError

MODELS = {"ae1d": generative.AE1d, "vae1d": generative.VAE1d, "beatgan": generative.BeatGAN,
          "vaegan": generative.VAEGAN, "dcgan": generative.DCGAN}
SHAPES = [(1, 187), (2, 320)]


def build(name: str, channels: int = 1, length: int = 187, **kwargs) -> torch.nn.Module:
    """Model ``name`` as models.get_model would call it (num_classes ignored)."""
    return MODELS[name](channels, 2, length=length, **kwargs)


def smooth_beats(n: int, channels: int, length: int, seed: int = 0) -> torch.Tensor:
    """Synthetic beats: a P wave, a QRS spike and a T wave (Gaussian bumps) with random timing and amplitude."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, length)

    def bump(centre: torch.Tensor, width: float, height: torch.Tensor) -> torch.Tensor:
        return height[:, :, None] * torch.exp(-0.5 * ((t - centre[:, :, None]) / width) ** 2)

    def draw(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, channels, generator=g)

    return (bump(draw(0.15, 0.25), 0.03, draw(0.05, 0.15)) + bump(draw(0.45, 0.55), 0.015, draw(0.6, 0.9))
            + bump(draw(0.7, 0.8), 0.05, draw(0.1, 0.3)))


def params_of(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p.detach().clone() for group in optimizer.param_groups for p in group["params"]]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("channels,length", SHAPES)
def test_forward_and_scores_shapes(name: str, channels: int, length: int) -> None:
    torch.manual_seed(0)
    model = build(name, channels, length).eval()
    x = torch.randn(5, channels, length)
    assert model(x).shape == x.shape and model.reconstruct(x).shape == x.shape
    with torch.no_grad():  # the caller may score under no_grad: AnoGAN must still optimise its codes
        scores = model.scores(x)
    assert tuple(scores) == model.score_names
    assert set(model.score_names) <= {"reconstruction", "discriminator", "latent", "anogan"}
    for key, value in scores.items():
        assert value.shape == (5,), key
        assert torch.isfinite(value).all(), key
        assert (value >= 0).all(), key  # errors and divergences: higher = more abnormal
    assert all(p.grad is None for p in model.parameters())  # scoring leaves no gradients behind


@pytest.mark.parametrize("name", list(MODELS))
def test_scores_are_per_beat_not_per_batch(name: str) -> None:
    torch.manual_seed(0)
    model = build(name).eval()
    x = torch.randn(6, 1, 187)
    whole, part = model.scores(x), model.scores(x[:2])
    for key in model.score_names:
        torch.testing.assert_close(whole[key][:2], part[key], rtol=1e-4, atol=1e-6)


def test_reconstruction_score_is_the_mean_squared_error_of_reconstruct() -> None:
    torch.manual_seed(0)
    for name in MODELS:
        model = build(name).eval()
        x = torch.randn(4, 1, 187)
        expected = (x - model.reconstruct(x)).pow(2).mean(dim=(1, 2))
        torch.testing.assert_close(model.scores(x)["reconstruction"], expected.detach(), msg=name)


def test_class_attributes() -> None:
    kinds = {name: cls.kind for name, cls in MODELS.items()}
    assert kinds == {"ae1d": "ae", "vae1d": "vae", "beatgan": "beatgan", "vaegan": "vaegan", "dcgan": "wgan"}
    assert {name for name, cls in MODELS.items() if cls.can_sample} == {"vae1d", "vaegan", "dcgan"}
    assert all(cls.__bases__ == (torch.nn.Module,) for cls in MODELS.values())  # shallow: one level below Module


@pytest.mark.parametrize("name", list(MODELS))
def test_one_train_step_changes_every_optimised_part(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, 2, 320).train()
    optimizers = model.make_optimizers(1e-3, 1e-4)
    expected = {"ae1d": ["model"], "vae1d": ["model"], "dcgan": ["generator", "discriminator", "inverse"]}
    assert list(optimizers) == expected.get(name, ["generator", "discriminator"])
    owned = {id(p) for p in model.parameters()}
    grouped = [id(p) for opt in optimizers.values() for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(owned)  # every parameter in exactly one optimizer
    before = {part: params_of(opt) for part, opt in optimizers.items()}
    out = model.train_step(smooth_beats(8, 2, 320), optimizers)
    assert "loss" in out and len(out) >= 1
    assert all(type(v) is float and math.isfinite(v) for v in out.values()), out
    for part, opt in optimizers.items():
        assert any(not torch.equal(b, a) for b, a in zip(before[part], params_of(opt), strict=True)), part


@pytest.mark.parametrize("name", ["ae1d", "vae1d", "beatgan", "vaegan"])
def test_training_lowers_the_reconstruction_score(name: str) -> None:
    torch.manual_seed(0)
    model = build(name)
    x = smooth_beats(16, 1, 187)
    optimizers = model.make_optimizers(2e-3, 0.0)
    before = model.eval().scores(x)["reconstruction"].mean()
    model.train()
    for _ in range(30):
        model.train_step(x, optimizers)
    after = model.eval().scores(x)["reconstruction"].mean()
    assert after < 0.5 * before, (float(before), float(after))


def test_dcgan_inverse_loss_falls_and_the_generator_steps_every_n_critic_calls() -> None:
    torch.manual_seed(0)
    model = build("dcgan", n_critic=5).train()
    optimizers = model.make_optimizers(2e-3, 0.0)
    x = smooth_beats(16, 1, 187)
    inverse, generator_changed = [], []
    for _ in range(30):
        before = params_of(optimizers["generator"])
        out = model.train_step(x, optimizers)
        inverse.append(out["inverse"])
        generator_changed.append(any(not torch.equal(b, a) for b, a in
                                     zip(before, params_of(optimizers["generator"]), strict=True)))
        assert {"loss", "d_loss", "gp", "inverse"} <= set(out)
    assert generator_changed == [i % 5 == 0 for i in range(30)]
    assert int(model.steps) == 30
    assert sum(inverse[-5:]) < 0.7 * sum(inverse[:5]), inverse


def test_anogan_latent_optimisation_lowers_its_loss() -> None:
    torch.manual_seed(0)
    model = build("dcgan").eval()
    x = smooth_beats(8, 1, 187)
    optimised = model.scores(x)["anogan"]
    model.anogan_steps = 0  # the loss at z0 = E(x)
    start = model.scores(x)["anogan"]
    assert optimised.mean() < start.mean()
    assert (optimised <= start + 1e-6).float().mean() >= 0.75  # for (nearly) every beat, not just on average


@pytest.mark.parametrize("name", ["vae1d", "vaegan", "dcgan"])
@pytest.mark.parametrize("channels,length", SHAPES)
def test_sample_shapes_and_seeds(name: str, channels: int, length: int) -> None:
    torch.manual_seed(0)
    model = build(name, channels, length).eval()
    a = model.sample(4, torch.Generator().manual_seed(7))
    b = model.sample(4, torch.Generator().manual_seed(7))
    c = model.sample(4, torch.Generator().manual_seed(8))
    assert a.shape == (4, channels, length) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.sample(3).shape == (3, channels, length)


@pytest.mark.parametrize("name", ["ae1d", "beatgan"])
def test_models_without_a_prior_refuse_to_sample(name: str) -> None:
    with pytest.raises(ECGError, match=f"{name} has no prior to sample from; use vae1d, vaegan or dcgan"):
        build(name).sample(4)


def test_too_short_beats_are_a_user_error() -> None:
    with pytest.raises(ECGError, match="at least 64 samples"):
        build("ae1d", 1, 40)


def test_outputs_are_linear_not_squashed() -> None:
    torch.manual_seed(0)
    model = build("ae1d")
    x = 3 * smooth_beats(16, 1, 187)  # peaks near 2.7: out of reach of a tanh or a sigmoid
    optimizers = model.make_optimizers(5e-3, 0.0)
    for _ in range(40):
        model.train_step(x, optimizers)
    assert model.eval().reconstruct(x).max() > 1.5


def _steps(model: torch.nn.Module, optimizers: dict, x: torch.Tensor, n: int) -> None:
    for _ in range(n):
        model.train_step(x, optimizers)


@pytest.mark.parametrize("name", list(MODELS))
def test_same_seed_same_training(name: str) -> None:
    x = smooth_beats(8, 2, 320)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build(name, 2, 320).train()
        _steps(model, model.make_optimizers(1e-3, 1e-4), x, 2)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.parametrize("name", list(MODELS))
def test_checkpoint_round_trip_resumes_exactly(name: str, tmp_path: Path) -> None:
    x = smooth_beats(8, 1, 187)
    torch.manual_seed(1)
    model = build(name).train()
    optimizers = model.make_optimizers(1e-3, 1e-4)
    _steps(model, optimizers, x, 1)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "rng": torch.get_rng_state()}, path)
    _steps(model, optimizers, x, 2)  # continuing (for dcgan: steps 1 and 2, critic only)
    torch.manual_seed(99)  # a different initialisation and RNG state, all replaced by the checkpoint
    resumed = build(name).train()
    resumed_optimizers = resumed.make_optimizers(1e-3, 1e-4)
    state = torch.load(path, weights_only=True)
    resumed.load_state_dict(state["model"])
    for key, opt in resumed_optimizers.items():
        opt.load_state_dict(copy.deepcopy(state["optimizers"][key]))
    torch.set_rng_state(state["rng"])
    _steps(resumed, resumed_optimizers, x, 2)
    expected, got = model.state_dict(), resumed.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
