"""Generative models of heartbeats for anomaly detection: trained on normal beats, they score how abnormal a beat is.

Five models share three small parts built by composition: :class:`Encoder1d` (strided convolutions, a linear layer
to the latent code), :class:`Decoder1d` (a linear layer, transposed convolutions, a linear output cropped to
``length``) and :class:`Discriminator1d` (the encoder's convolutions as a feature extractor, a linear logit).

- :class:`AE1d`: a convolutional autoencoder (mean squared reconstruction error).
- :class:`VAE1d`: a variational autoencoder; loss = MSE + beta * KL / (channels * length), the per-sample ELBO
  of a Gaussian decoder when beta is 1.
- :class:`BeatGAN`: Zhou et al. (IJCAI 2019): an autoencoder generator trained with reconstruction plus feature
  matching against a discriminator that tells beats from their reconstructions (binary cross-entropy).
- :class:`VAEGAN`: the beta-VAE-GAN of ECGAN (Lüer et al. 2023): :class:`VAE1d`'s loss plus BeatGAN's feature
  matching and discriminator.
- :class:`DCGAN`: a WGAN-GP (Gulrajani et al. 2017) generator from z ~ N(0, I) and a critic without batch
  normalisation, plus an inverse encoder trained on (G(z), z) pairs; scores include AnoGAN's latent optimisation
  (Schlegl et al. 2017) started from the inverse encoder's code.

Every model has the same interface: ``kind``, ``can_sample``, ``score_names``, ``make_optimizers(lr, weight_decay)``,
``train_step(x, optimizers)`` (one optimisation step, python floats back, key ``loss``), ``scores(x)`` (one score
per beat and name, higher = more abnormal), ``encode(x)`` (the latent code), ``reconstruct(x)`` and
``sample(n, generator)``. Randomness comes from
torch's global generator only, so a checkpoint that saves it resumes exactly.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from toolbox.utils import ECGError

STAGES = 4  # stride-2 stages in the encoder and decoder: lengths shrink by 16
MIN_LENGTH = 64
GAN_BETAS = (0.5, 0.999)  # the DCGAN recipe (Radford et al. 2016), used by BeatGAN
WGAN_BETAS = (0.0, 0.9)  # the WGAN-GP recipe
Optimizers = dict[str, torch.optim.Optimizer]


def _widths(width: int) -> tuple[int, ...]:
    return (width, 2 * width, 2 * width, 2 * width)


def _check_length(length: int) -> None:
    if length < MIN_LENGTH:
        raise ECGError(f"generative models need beats of at least {MIN_LENGTH} samples, not {length}; "
                       "use a longer beat window")


def conv_stack(in_channels: int, widths: tuple[int, ...], norm: str) -> nn.Sequential:
    """Convolutions (kernel 4, stride 2) with LeakyReLU(0.2); ``norm`` "batch" or "layer" after all but the first."""
    layers: list[nn.Module] = []
    prev = in_channels
    for i, w in enumerate(widths):
        layers.append(nn.Conv1d(prev, w, 4, stride=2, padding=1, bias=i == 0))
        if i > 0:
            layers.append(nn.BatchNorm1d(w) if norm == "batch" else nn.GroupNorm(1, w))  # GroupNorm(1): LayerNorm
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        prev = w
    return nn.Sequential(*layers)


def _features_length(length: int) -> int:
    for _ in range(STAGES):
        length //= 2
    return length


class Encoder1d(nn.Module):
    """Beats (batch, channels, length) -> (batch, out_features): :func:`conv_stack`, flatten, linear."""

    def __init__(self, in_channels: int, out_features: int, length: int, width: int, norm: str = "batch") -> None:
        super().__init__()
        _check_length(length)
        widths = _widths(width)
        self.features = conv_stack(in_channels, widths, norm)
        self.head = nn.Linear(widths[-1] * _features_length(length), out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class Decoder1d(nn.Module):
    """Codes (batch, latent) -> beats (batch, channels, length): linear, transposed convolutions, linear output."""

    def __init__(self, latent: int, out_channels: int, length: int, width: int) -> None:
        super().__init__()
        _check_length(length)
        widths = _widths(width)[::-1]
        self.length, self.start = length, math.ceil(length / 2**STAGES)
        self.project = nn.Linear(latent, widths[0] * self.start)
        layers: list[nn.Module] = [nn.BatchNorm1d(widths[0]), nn.ReLU(inplace=True)]
        for cin, cout in zip(widths, widths[1:], strict=False):
            layers += [nn.ConvTranspose1d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm1d(cout),
                       nn.ReLU(inplace=True)]
        layers.append(nn.ConvTranspose1d(widths[-1], out_channels, 4, stride=2, padding=1))  # linear: no tanh
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(z.shape[0], -1, self.start)
        return self.body(h)[..., :self.length]  # start * 16 >= length: crop the end


class Discriminator1d(nn.Module):
    """Beats -> (logit (batch,), features (batch, C, L)): :func:`conv_stack` as feature extractor, linear logit."""

    def __init__(self, in_channels: int, length: int, width: int, norm: str = "batch") -> None:
        super().__init__()
        _check_length(length)
        widths = _widths(width)
        self.features = conv_stack(in_channels, widths, norm)
        self.head = nn.Linear(widths[-1] * _features_length(length), 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.head(f.flatten(1)).squeeze(1), f


def per_beat_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per beat (first dimension): shape (batch,)."""
    return (a - b).pow(2).flatten(1).mean(1)


def kl_per_beat(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per beat, summed over the latent dimensions: shape (batch,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def _adamw(params: Iterable[nn.Parameter], lr: float, weight_decay: float,
           betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    return torch.optim.AdamW(list(params), lr=lr, betas=betas, weight_decay=weight_decay)


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _no_prior(name: str) -> ECGError:
    return ECGError(f"{name} has no prior to sample from; use vae1d, vaegan or dcgan")


def _prior(n: int, latent: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    z = torch.randn(n, latent, generator=generator, device=generator.device if generator is not None else "cpu")
    return z.to(device=like.device, dtype=like.dtype)


def _posterior(encoder: Encoder1d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, logvar = encoder(x).chunk(2, dim=1)
    return mu, logvar


def _reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def _gan_steps(discriminator: Discriminator1d, x: torch.Tensor, fake: torch.Tensor, optimizers: Optimizers,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """BeatGAN's discriminator step (BCE, beats real, reconstructions fake), then the feature-matching loss."""
    real_logit, _ = discriminator(x)
    fake_logit, _ = discriminator(fake.detach())
    d_loss = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
              + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
    _step(optimizers["discriminator"], d_loss)
    _, fake_features = discriminator(fake)
    with torch.no_grad():
        _, real_features = discriminator(x)
    return d_loss.detach(), F.mse_loss(fake_features, real_features)


def _feature_error(discriminator: Discriminator1d, x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
    return per_beat_mse(discriminator(x)[1], discriminator(rec)[1])


def _floats(**parts: torch.Tensor) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in parts.items()}


class AE1d(nn.Module):
    """Convolutional autoencoder; scores: reconstruction MSE and GANomaly's latent error."""

    kind = "ae"
    can_sample = False
    score_names = ("reconstruction", "latent")

    def __init__(self, in_channels: int, num_classes: int, *, length: int, latent: int = 32, width: int = 32) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = Encoder1d(in_channels, latent, length, width)
        self.decoder = Decoder1d(latent, in_channels, length, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code of ``x`` (E(x)): (batch, latent)."""
        return self.encoder(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """D(E(x)), the shape of ``x``."""
        return self(x)

    def make_optimizers(self, lr: float, weight_decay: float) -> Optimizers:
        """One AdamW over every parameter."""
        return {"model": _adamw(self.parameters(), lr, weight_decay)}

    def train_step(self, x: torch.Tensor, optimizers: Optimizers) -> dict[str, float]:
        """One step on the mean squared reconstruction error."""
        loss = F.mse_loss(self(x), x)
        _step(optimizers["model"], loss)
        return _floats(loss=loss)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per beat: reconstruction MSE; ||E(x) - E(D(E(x)))||² / latent."""
        z = self.encoder(x)
        rec = self.decoder(z)
        return {"reconstruction": per_beat_mse(x, rec), "latent": per_beat_mse(z, self.encoder(rec))}

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Refused: an autoencoder has no prior."""
        raise _no_prior("ae1d")


class VAE1d(nn.Module):
    """Variational autoencoder; loss = MSE + beta * KL / (channels * length); scores: reconstruction of the
    posterior mean and the posterior's KL divergence from the prior."""

    kind = "vae"
    can_sample = True
    score_names = ("reconstruction", "latent")

    def __init__(self, in_channels: int, num_classes: int, *, length: int, latent: int = 32, width: int = 32,
                 beta: float = 1.0) -> None:
        super().__init__()
        self.latent, self.beta = latent, beta
        self.encoder = Encoder1d(in_channels, 2 * latent, length, width)
        self.decoder = Decoder1d(latent, in_channels, length, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(_posterior(self.encoder, x)[0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code of ``x`` (the posterior mean): (batch, latent)."""
        return _posterior(self.encoder, x)[0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """D(posterior mean), the shape of ``x``."""
        return self(x)

    def make_optimizers(self, lr: float, weight_decay: float) -> Optimizers:
        """One AdamW over every parameter."""
        return {"model": _adamw(self.parameters(), lr, weight_decay)}

    def train_step(self, x: torch.Tensor, optimizers: Optimizers) -> dict[str, float]:
        """One step on MSE + beta * KL / (channels * length); ``loss`` is the MSE, ``kl`` the KL per beat."""
        mu, logvar = _posterior(self.encoder, x)
        rec = F.mse_loss(self.decoder(_reparameterise(mu, logvar)), x)
        kl = kl_per_beat(mu, logvar).mean()
        total = rec + self.beta * kl / x[0].numel()
        _step(optimizers["model"], total)
        return _floats(loss=rec, kl=kl, total=total)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per beat: MSE of D(mu); KL(q(z|x) || N(0, I))."""
        mu, logvar = _posterior(self.encoder, x)
        return {"reconstruction": per_beat_mse(x, self.decoder(mu)), "latent": kl_per_beat(mu, logvar)}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` beats decoded from z ~ N(0, I) drawn with ``generator`` (call in eval mode)."""
        return self.decoder(_prior(n, self.latent, self.decoder.project.weight, generator))


class BeatGAN(nn.Module):
    """BeatGAN: autoencoder generator (reconstruction + ``adv_weight`` * feature matching) and a discriminator."""

    kind = "beatgan"
    can_sample = False
    score_names = ("reconstruction", "discriminator", "latent")

    def __init__(self, in_channels: int, num_classes: int, *, length: int, latent: int = 32, width: int = 32,
                 adv_weight: float = 1.0) -> None:
        super().__init__()
        self.latent, self.adv_weight = latent, adv_weight
        self.encoder = Encoder1d(in_channels, latent, length, width)
        self.decoder = Decoder1d(latent, in_channels, length, width)
        self.discriminator = Discriminator1d(in_channels, length, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code of ``x`` (E(x)): (batch, latent)."""
        return self.encoder(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """G(x) = D(E(x)), the shape of ``x``."""
        return self(x)

    def make_optimizers(self, lr: float, weight_decay: float) -> Optimizers:
        """AdamW (betas 0.5, 0.999) for the generator (encoder and decoder) and for the discriminator."""
        return {"generator": _adamw([*self.encoder.parameters(), *self.decoder.parameters()], lr, weight_decay,
                                    GAN_BETAS),
                "discriminator": _adamw(self.discriminator.parameters(), lr, weight_decay, GAN_BETAS)}

    def train_step(self, x: torch.Tensor, optimizers: Optimizers) -> dict[str, float]:
        """A discriminator step (BCE), then a generator step on MSE + adv_weight * feature matching."""
        fake = self(x)
        d_loss, g_adv = _gan_steps(self.discriminator, x, fake, optimizers)
        rec = F.mse_loss(fake, x)
        _step(optimizers["generator"], rec + self.adv_weight * g_adv)
        return _floats(loss=rec, g_adv=g_adv, d_loss=d_loss)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per beat: reconstruction MSE; discriminator feature error of x and G(x); latent error as AE1d."""
        z = self.encoder(x)
        rec = self.decoder(z)
        return {"reconstruction": per_beat_mse(x, rec), "discriminator": _feature_error(self.discriminator, x, rec),
                "latent": per_beat_mse(z, self.encoder(rec))}

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Refused: BeatGAN's generator is an autoencoder without a prior."""
        raise _no_prior("beatgan")


class VAEGAN(nn.Module):
    """beta-VAE-GAN (ECGAN): MSE + beta * KL / (channels * length) + ``adv_weight`` * feature matching, and
    BeatGAN's discriminator on beats and their reconstructions."""

    kind = "vaegan"
    can_sample = True
    score_names = ("reconstruction", "discriminator", "latent")

    def __init__(self, in_channels: int, num_classes: int, *, length: int, latent: int = 32, width: int = 32,
                 beta: float = 1.0, adv_weight: float = 1.0) -> None:
        super().__init__()
        self.latent, self.beta, self.adv_weight = latent, beta, adv_weight
        self.encoder = Encoder1d(in_channels, 2 * latent, length, width)
        self.decoder = Decoder1d(latent, in_channels, length, width)
        self.discriminator = Discriminator1d(in_channels, length, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(_posterior(self.encoder, x)[0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code of ``x`` (the posterior mean): (batch, latent)."""
        return _posterior(self.encoder, x)[0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """D(posterior mean), the shape of ``x``."""
        return self(x)

    def make_optimizers(self, lr: float, weight_decay: float) -> Optimizers:
        """AdamW (betas 0.5, 0.999) for the generator (encoder and decoder) and for the discriminator."""
        return {"generator": _adamw([*self.encoder.parameters(), *self.decoder.parameters()], lr, weight_decay,
                                    GAN_BETAS),
                "discriminator": _adamw(self.discriminator.parameters(), lr, weight_decay, GAN_BETAS)}

    def train_step(self, x: torch.Tensor, optimizers: Optimizers) -> dict[str, float]:
        """A discriminator step (BCE), then a VAE step on MSE + beta * KL / (channels * length) + feature matching."""
        mu, logvar = _posterior(self.encoder, x)
        fake = self.decoder(_reparameterise(mu, logvar))
        d_loss, g_adv = _gan_steps(self.discriminator, x, fake, optimizers)
        rec = F.mse_loss(fake, x)
        kl = kl_per_beat(mu, logvar).mean()
        _step(optimizers["generator"], rec + self.beta * kl / x[0].numel() + self.adv_weight * g_adv)
        return _floats(loss=rec, kl=kl, g_adv=g_adv, d_loss=d_loss)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per beat: MSE of D(mu); discriminator feature error of x and D(mu); KL(q(z|x) || N(0, I))."""
        mu, logvar = _posterior(self.encoder, x)
        rec = self.decoder(mu)
        return {"reconstruction": per_beat_mse(x, rec), "discriminator": _feature_error(self.discriminator, x, rec),
                "latent": kl_per_beat(mu, logvar)}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` beats decoded from z ~ N(0, I) drawn with ``generator`` (call in eval mode)."""
        return self.decoder(_prior(n, self.latent, self.decoder.project.weight, generator))


class DCGAN(nn.Module):
    """WGAN-GP: generator from z ~ N(0, I), critic without batch norm (one generator step every ``n_critic``
    calls, counted in the buffer ``steps``), and an inverse encoder trained on (G(z), z) pairs."""

    kind = "wgan"
    can_sample = True
    score_names = ("reconstruction", "discriminator", "latent", "anogan")

    def __init__(self, in_channels: int, num_classes: int, *, length: int, latent: int = 32, width: int = 32,
                 n_critic: int = 5, gp_weight: float = 10.0, anogan_steps: int = 10, anogan_lr: float = 0.05,
                 anogan_lambda: float = 0.1) -> None:
        super().__init__()
        self.latent, self.n_critic, self.gp_weight = latent, n_critic, gp_weight
        self.anogan_steps, self.anogan_lr, self.anogan_lambda = anogan_steps, anogan_lr, anogan_lambda
        self.generator = Decoder1d(latent, in_channels, length, width)
        self.critic = Discriminator1d(in_channels, length, width, norm="layer")
        self.inverse = Encoder1d(in_channels, latent, length, width)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # train_step calls: n_critic's counter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(self.inverse(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code of ``x`` (the inverse encoder's code): (batch, latent)."""
        return self.inverse(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """G(E(x)), the shape of ``x``."""
        return self(x)

    def make_optimizers(self, lr: float, weight_decay: float) -> Optimizers:
        """AdamW (betas 0, 0.9) for generator and critic ("discriminator"), AdamW for the inverse encoder."""
        return {"generator": _adamw(self.generator.parameters(), lr, weight_decay, WGAN_BETAS),
                "discriminator": _adamw(self.critic.parameters(), lr, weight_decay, WGAN_BETAS),
                "inverse": _adamw(self.inverse.parameters(), lr, weight_decay)}

    def _gradient_penalty(self, x: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        eps = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype)
        mixed = (eps * x + (1 - eps) * fake).requires_grad_(True)
        grad, = torch.autograd.grad(self.critic(mixed)[0].sum(), mixed, create_graph=True)
        return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()

    def train_step(self, x: torch.Tensor, optimizers: Optimizers) -> dict[str, float]:
        """A critic step (Wasserstein loss + gp_weight * GP), a generator step on every ``n_critic``-th call
        (the first included), an inverse-encoder step on MSE(E(G(z)), z). ``loss`` = -critic(G(z)).mean()."""
        z = torch.randn(x.shape[0], self.latent, device=x.device, dtype=x.dtype)
        with torch.no_grad():
            fake = self.generator(z)
        real_score, fake_score = self.critic(x)[0].mean(), self.critic(fake)[0].mean()
        gp = self._gradient_penalty(x, fake)
        d_loss = fake_score - real_score + self.gp_weight * gp
        _step(optimizers["discriminator"], d_loss)
        if int(self.steps) % self.n_critic == 0:
            g_loss = -self.critic(self.generator(torch.randn_like(z)))[0].mean()
            _step(optimizers["generator"], g_loss)
        inverse = F.mse_loss(self.inverse(fake), z)
        _step(optimizers["inverse"], inverse)
        self.steps += 1
        return _floats(loss=-fake_score, d_loss=d_loss,
                       wasserstein=real_score - fake_score, gp=gp, inverse=inverse)

    def _anogan(self, x: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        """AnoGAN: ``anogan_steps`` Adam steps on z from z0 minimising (1-lam)*|x-G(z)| + lam*|f(x)-f(G(z))|
        (means per beat); the final loss per beat."""
        lam = self.anogan_lambda
        with torch.enable_grad():
            real_features = self.critic(x)[1].detach()
            z = z0.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=self.anogan_lr)

            def loss_per_beat() -> torch.Tensor:
                rec = self.generator(z)
                residual = (x - rec).abs().flatten(1).mean(1)
                return (1 - lam) * residual + lam * (real_features - self.critic(rec)[1]).abs().flatten(1).mean(1)

            for _ in range(self.anogan_steps):
                z.grad, = torch.autograd.grad(loss_per_beat().sum(), z)  # gradients w.r.t. z only
                opt.step()
            with torch.no_grad():
                return loss_per_beat()

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per beat: MSE of G(E(x)); critic feature error of x and G(E(x)); | ||E(x)||² / latent - 1 |; AnoGAN."""
        z = self.inverse(x)
        rec = self.generator(z)
        return {"reconstruction": per_beat_mse(x, rec), "discriminator": _feature_error(self.critic, x, rec),
                "latent": (z.pow(2).mean(1) - 1).abs(), "anogan": self._anogan(x, z)}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` beats G(z), z ~ N(0, I) drawn with ``generator`` (call in eval mode)."""
        return self.generator(_prior(n, self.latent, self.generator.project.weight, generator))
