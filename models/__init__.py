"""Model selector: names map to constructors ``(in_channels, num_classes, **kwargs) -> nn.Module`` (logits).

``MODELS`` names the class (``module.Class`` under ``models/``) and its keyword arguments; the module is
imported only when a model is built, so the flag parser can list the names without importing torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from toolbox.utils import ECGError

if TYPE_CHECKING:
    from torch import nn

MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "cnn1d_3": ("cnn.CNN1d", {"widths": (32, 64, 128)}),
    "lstm_1": ("lstm.LSTMClassifier", {"num_layers": 1}),
    "lstm_2": ("lstm.LSTMClassifier", {"num_layers": 2}),
    "lstm_3": ("lstm.LSTMClassifier", {"num_layers": 3}),
    "resnet1d_10": ("resnet.ResNet1d", {"blocks": (1, 1, 1, 1)}),
    "resnet1d_18": ("resnet.ResNet1d", {"blocks": (2, 2, 2, 2)}),
    "resnet1d_10_small": ("resnet.ResNet1d", {"blocks": (1, 1, 1, 1), "widths": (24, 32, 48, 64)}),  # < 100 k
    "resnet1d_v2_10": ("resnet.ResNet1d", {"blocks": (1, 1, 1, 1), "preact": True}),
    "resnet1d_v2_18": ("resnet.ResNet1d", {"blocks": (2, 2, 2, 2), "preact": True}),
    "ribeiro_resnet": ("ribeiro.RibeiroResNet", {}),  # twelve-lead records (Ribeiro et al. 2020)
    "ribeiro_resnet_small": ("ribeiro.RibeiroResNet", {"widths": (32, 48, 64, 96, 128)}),  # for 2-core CPUs
    # the PTB-XL benchmark's models (Strodthoff et al. 2021), with its head: docs/models.md
    "xresnet1d50": ("xresnet.XResNet1d", {"blocks": (3, 4, 6, 3)}),
    "xresnet1d101": ("xresnet.XResNet1d", {"blocks": (3, 4, 23, 3)}),
    "se_xresnet1d50": ("xresnet.XResNet1d", {"blocks": (3, 4, 6, 3), "se_reduction": 16}),
    "inception1d": ("inception.Inception1d", {}),
    "resnet1d_wang": ("wang.ResNet1dWang", {}),
    "fcn_wang": ("wang.FCNWang", {}),
    "lstm_bidir": ("lstm.BidirectionalLSTM", {}),
    # generative models of normal beats (--task anomaly): models/generative.py, docs/anomaly.md
    "ae1d": ("generative.AE1d", {}),
    "vae1d": ("generative.VAE1d", {}),
    "beatgan": ("generative.BeatGAN", {}),
    "vaegan": ("generative.VAEGAN", {}),
    "dcgan": ("generative.DCGAN", {}),
}
# the generative models and their default learning rate (their optimisers are their own: AdamW per part)
GENERATIVE: dict[str, float] = {"ae1d": 1e-3, "vae1d": 1e-3, "beatgan": 2e-4, "vaegan": 2e-4, "dcgan": 1e-4}
CLASSIFIERS = tuple(name for name in MODELS if name not in GENERATIVE)  # models that return logits

FUSION_HIDDEN = 64  # outputs of the signal network when per-example features are joined to it
# what a checkpoint must hold to rebuild its model without the flags of the run that trained it
CONSTRUCTOR_KEYS = ("model_name", "in_channels", "num_classes", "feature_channels")


def _constructor(name: str, length: int | None = None) -> Any:
    if name not in MODELS:
        raise ECGError(f"unknown model '{name}'; valid: {', '.join(MODELS)}")
    path, kwargs = MODELS[name]
    module, cls = path.rsplit(".", 1)
    constructor = getattr(importlib.import_module(f"models.{module}"), cls)
    if name in GENERATIVE:  # a generator makes beats of a fixed length
        if length is None:
            raise ECGError(f"{name} is a generative model: it needs the beat length (--task anomaly)")
        kwargs = {**kwargs, "length": length}
    return lambda in_channels, num_classes: constructor(in_channels, num_classes, **kwargs)


def get_model(name: str, in_channels: int, num_classes: int, feature_channels: int = 0,
              length: int | None = None) -> nn.Module:
    """Build model ``name`` for inputs of ``in_channels`` channels and ``num_classes`` outputs (logits).

    With ``feature_channels``, the last channels hold per-example features: see :class:`FeatureFusion`.
    Generative models (``GENERATIVE``) take the ``length`` of the beats they reconstruct or generate.
    """
    build = _constructor(name, length)
    if feature_channels:
        from models.fusion import FeatureFusion

        return FeatureFusion(build(in_channels - feature_channels, FUSION_HIDDEN), FUSION_HIDDEN, feature_channels,
                             num_classes)
    return build(in_channels, num_classes)


def constructor_args(name: str, in_channels: int, num_classes: int, feature_channels: int = 0,
                     length: int | None = None) -> dict[str, Any]:
    """Every argument :func:`get_model` needs, as a checkpoint stores them (``length``: generative models only)."""
    shape = {"model_name": name, "in_channels": in_channels, "num_classes": num_classes,
             "feature_channels": feature_channels}
    return {**shape, "length": length} if name in GENERATIVE else shape


def from_checkpoint(state: dict[str, Any]) -> nn.Module:
    """The model a checkpoint describes (its constructor arguments), without weights; older checkpoints of
    models without per-example features lack ``feature_channels``, which is then 0."""
    return get_model(state["model_name"], state["in_channels"], state["num_classes"],
                     state.get("feature_channels", 0), state.get("length"))
