"""Transfer learning: copy a pretrained encoder into a classifier, and freeze it (head-only training, linear probe).

The encoder of a classifier is every parameter and buffer whose name does not start with ``head.``. In a
:class:`models.fusion.FeatureFusion` it is the backbone's encoder (``backbone.*`` but not ``backbone.head.*``);
the fusion's own feature norm and head are new. Checkpoints name encoder tensors as a plain classifier does
(``features.0.weight``), so an encoder moves between plain and fusion models.

Frozen parameters get ``requires_grad`` False and no gradient, and every optimiser of
:mod:`toolbox.optimizers` (SGD with momentum and weight decay, Adam, AdamW) skips a parameter whose ``grad`` is
None, so neither weight decay nor momentum moves it. :meth:`Freezer.freeze` also clears gradients the encoder
already holds, since a zero gradient tensor (``zero_grad(set_to_none=False)``) would not be skipped. Under
DistributedDataParallel, freeze before wrapping the model: DDP registers the parameters that need gradients
when it is built.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from models.fusion import FeatureFusion
from toolbox.utils import ECGError

HEAD = "head."
BACKBONE = "backbone."


@dataclass
class Transfer:
    """What :func:`load_encoder` did: the target tensors it filled and those it left as initialised."""

    loaded: list[str]
    new: list[str]
    source: str = ""  # where the checkpoint was read
    values: int = 0  # numbers in the loaded tensors

    def summary(self) -> str:
        """One line: how many encoder tensors and values came from where, and which tensors are new."""
        return (f"loaded {len(self.loaded)} encoder tensors ({self.values:,} values) from {self.source}; "
                f"new: {', '.join(self.new) or 'none'}")


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a (Distributed)DataParallel wrapper, else ``model``."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def _prefix(model: nn.Module) -> str:
    """Where the classifier's names start inside ``model``: ``backbone.`` in a FeatureFusion, else nothing."""
    classifier = model.backbone if isinstance(model, FeatureFusion) else model
    if not isinstance(getattr(classifier, "head", None), nn.Module):
        raise ECGError(f"{type(classifier).__name__} has no classifier head, so it has no encoder to load or "
                       f"freeze; use one of the classifiers (models.CLASSIFIERS)")
    return BACKBONE if isinstance(model, FeatureFusion) else ""


def _is_encoder(name: str, prefix: str) -> bool:
    """Whether state-dict (or module) name ``name`` belongs to the encoder of a model with classifier ``prefix``."""
    if not name.startswith(prefix):
        return False
    inner = name[len(prefix):]
    return bool(inner) and inner != HEAD[:-1] and not inner.startswith(HEAD)


def encoder_names(model: nn.Module) -> list[str]:
    """State-dict names of the encoder of ``model``, in state-dict order."""
    model = _unwrap(model)
    prefix = _prefix(model)
    return [name for name in model.state_dict() if _is_encoder(name, prefix)]


def _strip_head(tensors: dict[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """The encoder tensors of a classifier state dict whose classifier names start with ``prefix``, unprefixed."""
    return {name[len(prefix):]: t for name, t in tensors.items() if _is_encoder(name, prefix)}


def source_encoder(state: dict, where: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(model name, encoder tensors under classifier names) of a pretraining or classifier checkpoint."""
    if not isinstance(state, dict):
        raise ECGError(f"{where} is not a pytorch-ecg checkpoint; pass a --task pretrain or classifier run")
    name = state.get("model_name")
    if state.get("task") == "pretrain":
        encoder = state.get("encoder")
        if not isinstance(encoder, dict) or not encoder or not isinstance(name, str):
            raise ECGError(f"{where} is a pretraining checkpoint without an encoder or model name; pass the "
                           f"checkpoint of a complete --task pretrain run")
        return name, _strip_head(encoder)
    model = state.get("model")
    if not isinstance(model, dict) or not isinstance(name, str):
        raise ECGError(f"{where} holds neither a pretrained encoder nor a classifier's weights; pass a --task "
                       f"pretrain run or a classifier run")
    from models import CLASSIFIERS

    if name not in CLASSIFIERS:
        raise ECGError(f"{where} holds a {name} model, not a classifier; pass a --task pretrain run or a run of "
                       f"one of: {', '.join(CLASSIFIERS)}")
    prefix = BACKBONE if state.get("feature_channels", 0) else ""
    encoder = _strip_head(model, prefix)
    if not encoder or not any(k.startswith(prefix + HEAD) for k in model):
        raise ECGError(f"{where} holds {name} weights without the encoder and head a classifier has; pass a "
                       f"--task pretrain run or a classifier run")
    return name, encoder


def _leads(tensors: dict[str, torch.Tensor]) -> int | None:
    """Input leads of an encoder: the second size of its first weight matrix or kernel (None when it has none)."""
    first = next((t for t in tensors.values() if t.ndim >= 2), None)
    return None if first is None else int(first.shape[1])


def _plural(n: int | None, kind: str = "") -> str:
    """``1 lead``, ``12 input leads``."""
    return f"{'?' if n is None else n} {kind}lead{'' if n == 1 else 's'}"


def _first_mismatch(want: dict[str, torch.Tensor], have: dict[str, torch.Tensor]) -> str | None:
    """The first tensor that keeps ``have`` from filling ``want`` (both under classifier names), or None."""
    for name, target in want.items():
        if name not in have:
            return f"{name} missing in the checkpoint"
        if tuple(have[name].shape) != tuple(target.shape):
            return f"{name} {tuple(have[name].shape)} in the checkpoint vs {tuple(target.shape)} here"
    extra = next((name for name in have if name not in want), None)
    return None if extra is None else f"{extra} not in this model"


def load_encoder(model: nn.Module, model_name: str, state: dict, where: str) -> Transfer:
    """Copy every encoder tensor of ``model`` (built as ``model_name``) from checkpoint ``state`` read from
    ``where``; an architecture that does not match is a one-line ECGError and leaves ``model`` unchanged."""
    source_name, source = source_encoder(state, where)
    model = _unwrap(model)
    prefix = _prefix(model)
    target = model.state_dict()  # detached tensors sharing the model's storage
    names = [name for name in target if _is_encoder(name, prefix)]
    want = {name[len(prefix):]: target[name] for name in names}
    mismatch = _first_mismatch(want, source)
    if mismatch is None and source_name != model_name:
        mismatch = "same tensors, other architecture"
    if mismatch is not None:
        have_leads, want_leads = _leads(source), _leads(want)
        raise ECGError(f"{where} holds a {source_name} encoder for {_plural(have_leads, 'input ')}; {model_name} with "
                       f"{_plural(want_leads)} cannot take it (first mismatch: {mismatch}); pretrain with "
                       f"--model-name {model_name} on {_plural(want_leads)}, or train with --model-name "
                       f"{source_name} on {_plural(have_leads)}")
    with torch.no_grad():
        for name in names:
            target[name].copy_(source[name[len(prefix):]])
    loaded = set(names)
    return Transfer(loaded=names, new=[name for name in target if name not in loaded], source=where,
                    values=sum(target[name].numel() for name in names))


class Freezer:
    """Freezes the encoder: requires_grad False on its parameters; with eval_mode (linear probe) its modules also run in
    eval mode during training (batch-norm statistics fixed, dropout off), through forward pre-hooks that set
    ``module.training = False``, so trainer code that calls model.train() needs no change."""

    def __init__(self, model: nn.Module, eval_mode: bool = False) -> None:
        self.model = _unwrap(model)
        self.eval_mode = eval_mode
        self._frozen: list[nn.Parameter] = []
        self._hooks: list[RemovableHandle] = []

    def _modules(self) -> list[nn.Module]:
        """The encoder's modules (not the model itself, nor any module that holds the head)."""
        prefix = _prefix(self.model)
        return [m for name, m in self.model.named_modules() if _is_encoder(name, prefix)]

    def freeze(self) -> int:
        """Freeze the encoder's trainable parameters (their gradients cleared); the number of values frozen."""
        if self._frozen or self._hooks:
            self.unfreeze()
        prefix = _prefix(self.model)
        for name, p in self.model.named_parameters():
            if _is_encoder(name, prefix) and p.requires_grad:
                p.requires_grad_(False)
                p.grad = None
                self._frozen.append(p)
        if self.eval_mode:
            self._hooks = [m.register_forward_pre_hook(_eval_hook) for m in self._modules()]
        return sum(p.numel() for p in self._frozen)

    def unfreeze(self) -> None:
        """Make the parameters :meth:`freeze` froze trainable again, remove its hooks, restore the train mode."""
        for p in self._frozen:
            p.requires_grad_(True)
        for hook in self._hooks:
            hook.remove()
        if self._hooks:
            for m in self._modules():
                m.training = self.model.training
        self._frozen, self._hooks = [], []


def _eval_hook(module: nn.Module, args: Any) -> None:
    """Forward pre-hook: run ``module`` in evaluation mode whatever model.train() set."""
    module.training = False
