"""Training-time augmentation of batches (batch, leads, samples) on their device, drawn from torch's global generator.

Every draw comes from torch's generator of the batch's device (the CPU's, or CUDA's for CUDA tensors), whose state
the checkpoint saves, so a resumed run draws what an uninterrupted one would. Every transform works on the whole
batch at once (no loop over examples, nothing copied between host and device, no waiting for the device) and
scales its strength by each example's own statistics, so the same settings suit min-max scaled beats, beats
divided by their record's beat amplitude and records in mV. Only the first ``signal_channels`` channels are
changed: channels after them (such as RR-interval features) are per-example numbers, not signal; the two mixers
(``cutmix``, ``mixup``) blend them, and the targets, with the weights they give the signal.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from toolbox.utils import ECGError

MAX_SCALE = 0.2  # amplitude factor drawn from [1 - MAX_SCALE, 1 + MAX_SCALE]
MAX_NOISE = 0.05  # Gaussian noise sd up to this fraction of the example's sd
MAX_WANDER = 0.1  # sinusoid amplitude up to this fraction of the example's sd ...
WANDER_CYCLES = (0.1, 1.0)  # ... with this many cycles over the example (slow baseline drift)
MAX_SHIFT = 0.05  # delay or advance by up to this fraction of the length, zero-filled
MIXUP_ALPHA = 0.4  # mixup weight ~ Beta(alpha, alpha), folded so that each example keeps the larger share
CUTMIX_MOST = 0.5  # cutmix pastes a segment of up to this fraction of the length from another example
MAX_STRETCH = 0.1  # time factor drawn from [1 - MAX_STRETCH, 1 + MAX_STRETCH]
RENORMALIZE_GAIN = 1.5  # renormalize: sd multiplied by a factor from [1 / GAIN, GAIN] (log-uniform) ...
RENORMALIZE_OFFSET = 0.25  # ... and mean moved by up to this many of the example's sds
INVERT_P = 0.2  # probability that an example's polarity is inverted (all its leads together)
MASK_SEGMENTS = 3  # segments zeroed per example ...
MASK_MOST = 0.05  # ... each of up to this fraction of the length

Transform = Callable[[torch.Tensor], torch.Tensor]  # signal -> signal
Mixer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor, leads: int = 1) -> torch.Tensor:
    """Draws from U(lo, hi), shaped (n, leads, 1) to broadcast over (leads and) samples."""
    return torch.empty(n, leads, 1, device=like.device, dtype=like.dtype).uniform_(lo, hi)


def _mean_sd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each example's mean and standard deviation (all its leads together; the sd at least 1e-6), as (n, 1, 1).

    Two passes (the mean, then the norm of the deviations): on the CPU many times faster than ``torch.std``."""
    mean = x.mean(dim=(1, 2), keepdim=True)
    norm = torch.linalg.vector_norm(x - mean, dim=(1, 2), keepdim=True)
    return mean, norm.mul_(1 / math.sqrt(x.shape[1] * x.shape[2])).clamp_min_(1e-6)


def _sd(x: torch.Tensor) -> torch.Tensor:
    """Each example's unbiased sd (as ``torch.std``, by which ``noise`` and ``wander`` have always scaled), (n, 1, 1).

    Two passes, as :func:`_mean_sd`."""
    n = x.shape[1] * x.shape[2]
    mean = x.mean(dim=(1, 2), keepdim=True)
    norm = torch.linalg.vector_norm(x - mean, dim=(1, 2), keepdim=True)
    return norm.mul_(1 / math.sqrt(max(n - 1, 1))).clamp_min_(1e-6)


def _blend(t: torch.Tensor, keep: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """``keep`` (n,) of each example of ``t`` and ``1 - keep`` of its partner's (exactly itself where keep is 1)."""
    return torch.lerp(t[partner], t, keep.view(-1, *([1] * (t.dim() - 1))).to(t.dtype))


def scale(x: torch.Tensor) -> torch.Tensor:
    """Multiply each example by a factor from [0.8, 1.2]."""
    return x * _uniform(len(x), 1 - MAX_SCALE, 1 + MAX_SCALE, x)


def noise(x: torch.Tensor) -> torch.Tensor:
    """Add white Gaussian noise with an sd of up to 5% of the example's sd."""
    return torch.addcmul(x, torch.randn_like(x), _uniform(len(x), 0, MAX_NOISE, x) * _sd(x))


def _wander(x: torch.Tensor, leads: int) -> torch.Tensor:
    """Add slow sinusoids, one per example (``leads`` 1) or one per lead, of up to 10% of the example's sd."""
    n, length = len(x), x.shape[-1]
    t = torch.arange(length, device=x.device, dtype=x.dtype) / length
    angular = _uniform(n, 2 * math.pi * WANDER_CYCLES[0], 2 * math.pi * WANDER_CYCLES[1], x, leads)
    phase = _uniform(n, 0, 2 * math.pi, x, leads)
    amplitude = _uniform(n, 0, MAX_WANDER, x, leads) * _sd(x)
    return torch.addcmul(x, amplitude, torch.addcmul(phase, angular, t).sin_())


def wander(x: torch.Tensor) -> torch.Tensor:
    """Add a slow sinusoid (0.1 to 1 cycle over the example, random phase) of up to 10% of the example's sd,
    the same in every lead."""
    return _wander(x, 1)


def leadwander(x: torch.Tensor) -> torch.Tensor:
    """``wander`` drawn for each lead on its own: independent drifts (on one lead, exactly ``wander``)."""
    return _wander(x, x.shape[1])


def shift(x: torch.Tensor) -> torch.Tensor:
    """Delay or advance each example by up to 5% of its length, filling with zeros."""
    n, leads, length = x.shape
    most = max(1, int(MAX_SHIFT * length))
    offset = torch.randint(-most, most + 1, (n, 1, 1), device=x.device)
    src = (torch.arange(length, device=x.device) + most) - offset  # in x padded by ``most`` zeros on each side
    return F.pad(x, (most, most)).gather(2, src.expand(n, leads, length))


def resample(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Each example slowed down by ``factor`` (n, 1, 1) about its first sample, by linear interpolation: output
    sample t is input position t / factor; past the input's end, zeros (factor 1: ``x`` exactly)."""
    n, leads, length = x.shape
    position = torch.arange(length, device=x.device, dtype=x.dtype) / factor  # (n, 1, length), at least 0
    left = position.long()  # floor
    weight = position - left
    padded = F.pad(x, (0, 1))  # sample ``length`` is 0: what lies past the end
    before = padded.gather(2, left.clamp_(max=length).expand(n, leads, length))
    after = padded.gather(2, left.add_(1).clamp_(max=length).expand(n, leads, length))
    return torch.lerp(before, after, weight)


def stretch(x: torch.Tensor) -> torch.Tensor:
    """Stretch or compress each example in time by a factor from [0.9, 1.1] about its first sample: a stretched
    example loses its end, a compressed one ends in zeros."""
    return resample(x, _uniform(len(x), 1 - MAX_STRETCH, 1 + MAX_STRETCH, x))


def renormalize(x: torch.Tensor) -> torch.Tensor:
    """Z-score each example (all leads together), then give it a random sd (its own x 1/1.5 to 1.5, log-uniform)
    and mean (its own, moved by up to 0.25 of its sd either way)."""
    mean, sd = _mean_sd(x)
    most = math.log(RENORMALIZE_GAIN)
    gain = _uniform(len(x), -most, most, x).exp_()
    target_mean = torch.addcmul(mean, _uniform(len(x), -RENORMALIZE_OFFSET, RENORMALIZE_OFFSET, x), sd)
    return torch.addcmul(target_mean, x - mean, gain)


def invert(x: torch.Tensor) -> torch.Tensor:
    """Invert the polarity (x -> -x) of 20% of the examples, all leads of an example together."""
    flipped = torch.empty(len(x), 1, 1, device=x.device, dtype=x.dtype).bernoulli_(INVERT_P)
    return x * flipped.mul_(-2).add_(1)


def mask(x: torch.Tensor) -> torch.Tensor:
    """Zero 3 segments of up to 5% of the length each, at random places inside the example, in all its leads."""
    n, length = len(x), x.shape[-1]
    most = MASK_MOST * length / 2  # half the widest segment
    half = _uniform(n, 0, most, x, MASK_SEGMENTS)  # (n, segments, 1)
    centre = _uniform(n, most, length - most, x, MASK_SEGMENTS)
    t = torch.arange(length, device=x.device, dtype=x.dtype)
    outside = ((t - centre).abs_() - half).amin(dim=1, keepdim=True) >= 0  # (n, 1, length): in no segment
    return x * outside


def mixup(signal: torch.Tensor, features: torch.Tensor,
          target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blend each example with a random partner of the batch (Zhang et al. 2018): a weight lam ~ Beta(0.4, 0.4),
    folded to [0.5, 1], on itself and 1 - lam on the partner, for signal, features and soft targets alike."""
    n = len(signal)
    partner = torch.randperm(n, device=signal.device)
    alpha = torch.full((n,), MIXUP_ALPHA, device=signal.device, dtype=signal.dtype)
    lam = torch.distributions.Beta(alpha, alpha, validate_args=False).sample()
    keep = torch.maximum(lam, 1 - lam)
    return _blend(signal, keep, partner), _blend(features, keep, partner), _blend(target, keep, partner)


def cutmix(signal: torch.Tensor, features: torch.Tensor,
           target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste into each example a segment (up to half its length, at a random place, in every lead) of a random
    partner of the batch (Yun et al. 2019); features and soft targets blend by the share of samples kept."""
    n, length = len(signal), signal.shape[-1]
    partner = torch.randperm(n, device=signal.device)
    width = _uniform(n, 0, math.floor(CUTMIX_MOST * length) + 1, signal).floor_()  # whole samples, 0 to half
    start = (_uniform(n, 0, 1, signal) * (length - width + 1)).floor_()
    t = torch.arange(length, device=signal.device, dtype=signal.dtype)
    pasted = (t >= start) & (t < start + width)  # (n, 1, length)
    keep = 1 - width.view(-1) / length
    return (torch.where(pasted, signal[partner], signal), _blend(features, keep, partner),
            _blend(target, keep, partner))


# in the order they are applied: the mixers first (the rest then treats a mixed example as any other), masking last
AUGMENTATIONS: dict[str, Transform | Mixer] = {
    "cutmix": cutmix, "mixup": mixup, "stretch": stretch, "renormalize": renormalize, "invert": invert,
    "scale": scale, "noise": noise, "wander": wander, "leadwander": leadwander, "shift": shift, "mask": mask,
}
MIXERS = ("cutmix", "mixup")  # (signal, features, soft targets) -> the same; the others: signal -> signal


def soft_targets(y: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """Targets as float rows: class indices become one-hot rows; multi-hot rows stay (as floats)."""
    if y.dtype.is_floating_point:
        return y.float()
    if num_classes is None:
        raise ValueError("mixing class indices needs num_classes")
    return (y[:, None] == torch.arange(num_classes, device=y.device)).float()  # F.one_hot would wait for the device


class Augmenter:
    """Apply the named augmentations, in ``AUGMENTATIONS`` order, to a training batch: ``(x, y) -> (x, y)``.

    Only the first ``signal_channels`` channels are transformed. With a mixer (``cutmix``, ``mixup``) the targets
    come back as float rows (class indices of ``num_classes`` classes as probability rows, multi-hot rows
    softened) and the feature channels are blended with the same weights; without one, ``y`` comes back as it was.
    """

    def __init__(self, names: Sequence[str], signal_channels: int, num_classes: int | None = None) -> None:
        unknown = sorted(set(names) - set(AUGMENTATIONS))
        if unknown:
            raise ECGError(f"unknown augmentation '{unknown[0]}'; valid: {', '.join(AUGMENTATIONS)}")
        self.steps = [(name in MIXERS, f) for name, f in AUGMENTATIONS.items() if name in names]
        self.mixes = any(mixes for mixes, _ in self.steps)
        self.signal_channels = signal_channels
        self.num_classes = num_classes

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        signal, features = x[:, : self.signal_channels], x[:, self.signal_channels:]
        if self.mixes:
            y = soft_targets(y, self.num_classes)
        for mixes, f in self.steps:
            if mixes:
                signal, features, y = f(signal, features, y)
            else:
                signal = f(signal)
        return (torch.cat([signal, features], dim=1) if features.shape[1] else signal), y
