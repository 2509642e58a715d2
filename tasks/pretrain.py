"""Self-supervised pretraining (``--task pretrain``): a classifier's encoder (the classifier with ``head`` replaced by
``nn.Identity``) learns a pretext task from unlabelled batches (batch, leads, samples).

- ``masked``: a few contiguous segments (all leads together, about 15% of the samples) are zeroed; a light decoder
  (a 1x1 convolution of the feature map, unfolded over time and interpolated to the input length) reconstructs
  them; the loss is the MSE on the masked samples only.
- ``contrastive``: SimCLR (Chen et al. 2020): NT-Xent between two augmented views of each example, through a
  projection head (pool over time, Linear, ReLU, Linear to 64).
- ``flip``: transformation recognition (as the negation and temporal-inversion tasks of Sarkar & Etemad 2020): each
  lead's sign is flipped and time reversed, each with probability 0.5 on its own; a pooled linear head predicts the
  leads + 1 bits. (antonior92/physionet-12ecg-classification's pretrain.py, once named as its source, pretrains by
  masked reconstruction with a transformer or k-steps-ahead prediction with an RNN instead.)

:class:`Pretext` has the interface of the generative models (``make_optimizers``, ``train_step``), so
``trainer.train_generative`` trains it unchanged, and ``evaluate`` for validation. Every random draw (masks, views,
flips) comes from torch's global generator of the batch's device, which the checkpoint saves and validation seeds.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from toolbox.augment import Augmenter
from toolbox.utils import ECGError

PRETEXTS: dict[str, str] = {
    "masked": "reconstruct zeroed segments (about 15% of the samples, all leads together) from the rest",
    "contrastive": "SimCLR: tell each example's second augmented view from the batch's other views (NT-Xent)",
    "flip": "predict which leads were sign-flipped and whether time was reversed",
}
MASK_SEGMENTS = 3  # masked: segments zeroed per example ...
MASK_WIDTH = 0.05  # ... each this fraction of the length (about 15% in all; segments may overlap)
TEMPERATURE = 0.1  # contrastive: NT-Xent temperature
PROJECTION = 64  # contrastive: width of the projection the loss compares
# contrastive views: every one scales by the example's own statistics and by fractions of its length, so they suit
# a 187-sample beat and a 10-s record alike; none moves the beat out of its window (shift and stretch by 5-10% only,
# no crop), none changes what the signal means (no polarity inversion, which is the flip task's, and no mixers,
# which would make another example's view a positive)
VIEW_AUGMENTATIONS = ("stretch", "scale", "noise", "leadwander", "shift", "mask")
FLIP_P = 0.5  # flip: probability of each lead's sign flip and of time reversal


def _pool(h: torch.Tensor) -> torch.Tensor:
    """A feature map (batch, C, T) pooled over time, mean and max side by side (batch, 2C); a vector (batch, F) as
    it is. The max keeps the polarity of peaks, which a mean of rectified features blurs."""
    return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1) if h.dim() == 3 else h


def _output_shape(encoder: nn.Module, in_channels: int, length: int) -> tuple[int, ...]:
    """The shape of the encoder's output for one example, without its batch axis (from a forward in eval mode)."""
    was_training = encoder.training
    encoder.eval()
    try:
        parameter = next(encoder.parameters())
        with torch.no_grad():
            out = encoder(torch.zeros(2, in_channels, length, device=parameter.device, dtype=parameter.dtype))
    finally:
        encoder.train(was_training)
    return tuple(out.shape[1:])


def segment_mask(n: int, length: int, like: torch.Tensor) -> torch.Tensor:
    """Where ``MASK_SEGMENTS`` random segments of ``MASK_WIDTH`` of the length lie in each example: (n, 1, length)."""
    width = max(1, round(MASK_WIDTH * length))
    start = torch.randint(0, length - width + 1, (n, MASK_SEGMENTS, 1), device=like.device)
    t = torch.arange(length, device=like.device)
    return ((t >= start) & (t < start + width)).any(dim=1, keepdim=True)


def nt_xent(z: torch.Tensor, temperature: float = TEMPERATURE) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent of projections ``z`` (2n, d) whose row i and row i + n are views of one example, and the fraction of
    rows whose most similar other row is their partner (top-1)."""
    n = len(z) // 2
    z = F.normalize(z, dim=1)
    similarity = (z @ z.T / temperature).fill_diagonal_(-math.inf)
    partner = torch.arange(len(z), device=z.device).roll(n)
    loss = F.cross_entropy(similarity, partner)
    return loss, (similarity.argmax(dim=1) == partner).float().mean()


class Pretext(nn.Module):
    """encoder (classifier with head = Identity) + one pretext head; the whole thing trains on unlabelled batches."""

    def __init__(self, encoder: nn.Module, kind: str, in_channels: int, length: int) -> None:
        super().__init__()
        if kind not in PRETEXTS:
            raise ECGError(f"unknown pretext '{kind}'; valid: {', '.join(PRETEXTS)}")
        shape = _output_shape(encoder, in_channels, length)  # (C, T') of a feature map, (F,) of a vector
        if kind == "masked" and len(shape) != 2:
            raise ECGError(f"--pretext masked reconstructs the signal from features over time, which "
                           f"{type(encoder).__name__} does not give (one vector per example); use --pretext "
                           f"contrastive or flip with it, or a convolutional model")
        self.encoder = encoder
        self.kind = kind
        self.in_channels = in_channels
        self.length = length
        pooled = 2 * shape[0] if len(shape) == 2 else shape[0]  # the width of _pool's output
        if kind == "masked":
            self.unfold = math.ceil(length / shape[1])  # decoded samples per feature-map step
            self.head = nn.Conv1d(shape[0], in_channels * self.unfold, 1)
        elif kind == "contrastive":
            self.views = Augmenter(VIEW_AUGMENTATIONS, in_channels)
            self.head = nn.Sequential(nn.Linear(pooled, pooled), nn.ReLU(inplace=True), nn.Linear(pooled, PROJECTION))
        else:
            self.head = nn.Linear(pooled, in_channels + 1)

    def make_optimizers(self, lr: float, weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        """One AdamW over the encoder and the pretext head."""
        return {"model": torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)}

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """masked: the decoder's signal (batch, leads, length) from the encoder's features of ``x``."""
        h = self.head(self.encoder(x))  # (n, leads * unfold, T')
        n, steps = len(h), h.shape[-1]
        h = h.view(n, self.in_channels, self.unfold, steps).transpose(2, 3).reshape(n, self.in_channels, -1)
        return F.interpolate(h, size=x.shape[-1], mode="linear", align_corners=False)

    def _masked(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        masked = segment_mask(len(x), x.shape[-1], x)
        rec = self.reconstruct(x.masked_fill(masked, 0))
        error = (rec - x).square()
        loss = (error * masked).sum() / (masked.sum() * x.shape[1]).clamp_min(1)
        return loss, {"mse_all": error.mean()}

    def _contrastive(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            views = torch.cat([self.views(x, x)[0], self.views(x, x)[0]])  # no mixer: the targets are unused
        loss, top1 = nt_xent(self.head(_pool(self.encoder(views))))
        return loss, {"top1": top1}

    def _flip(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n, leads, _ = x.shape
        bits = torch.empty(n, leads + 1, device=x.device, dtype=x.dtype).bernoulli_(FLIP_P)
        flipped = x * (1 - 2 * bits[:, :leads, None])
        flipped = torch.where(bits[:, leads, None, None].bool(), flipped.flip(-1), flipped)
        logits = self.head(_pool(self.encoder(flipped)))
        loss = F.binary_cross_entropy_with_logits(logits, bits)
        return loss, {"accuracy": ((logits > 0) == bits.bool()).float().mean()}

    def losses(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The pretext loss on batch ``x`` and the task's metrics (tensors)."""
        return {"masked": self._masked, "contrastive": self._contrastive, "flip": self._flip}[self.kind](x)

    def train_step(self, x: torch.Tensor, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        """One AdamW step on the pretext loss; "loss" first, then the task's metric(s)."""
        loss, metrics = self.losses(x)
        optimizer = optimizers["model"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in metrics.items()}}

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        """The keys of ``train_step`` on batch ``x``, without an update (the caller sets eval mode and the seed)."""
        loss, metrics = self.losses(x)
        return {"loss": float(loss), **{k: float(v.detach()) for k, v in metrics.items()}}


def build_pretext(model_name: str, in_channels: int, length: int, kind: str) -> Pretext:
    """The encoder of classifier ``model_name`` (its ``head`` replaced by ``nn.Identity``) with a ``kind`` head."""
    from models import GENERATIVE, get_model

    if model_name in GENERATIVE:
        raise ECGError(f"{model_name} is a generative model; --task pretrain trains the encoder of a classifier "
                       f"(cnn1d_3, resnet1d_10, xresnet1d50, ...)")
    encoder = get_model(model_name, in_channels, 2)
    encoder.head = nn.Identity()
    return Pretext(encoder, kind, in_channels, length)


def encoder_state(model: Pretext) -> dict[str, torch.Tensor]:
    """The encoder's state dict: the classifier's names, without its head."""
    return model.encoder.state_dict()
