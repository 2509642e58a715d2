"""Model selector: instance names map to constructors ``(in_channels, num_classes) -> nn.Module`` (logits)."""
from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from models.cnn import CNN1d
from models.fusion import FeatureFusion
from models.lstm import LSTMClassifier
from models.resnet import ResNet1d
from models.ribeiro import RibeiroResNet
from toolbox.utils import ECGError

MODELS: dict[str, Callable[..., nn.Module]] = {
    "cnn1d_3": functools.partial(CNN1d, widths=(32, 64, 128)),
    "lstm_1": functools.partial(LSTMClassifier, num_layers=1),
    "lstm_2": functools.partial(LSTMClassifier, num_layers=2),
    "lstm_3": functools.partial(LSTMClassifier, num_layers=3),
    "resnet1d_10": functools.partial(ResNet1d, blocks=(1, 1, 1, 1)),
    "resnet1d_18": functools.partial(ResNet1d, blocks=(2, 2, 2, 2)),
    "resnet1d_10_small": functools.partial(ResNet1d, blocks=(1, 1, 1, 1), widths=(24, 32, 48, 64)),  # < 100 k
    "resnet1d_v2_10": functools.partial(ResNet1d, blocks=(1, 1, 1, 1), preact=True),
    "resnet1d_v2_18": functools.partial(ResNet1d, blocks=(2, 2, 2, 2), preact=True),
    "ribeiro_resnet": RibeiroResNet,  # twelve-lead records (Ribeiro et al. 2020)
    "ribeiro_resnet_small": functools.partial(RibeiroResNet, widths=(32, 48, 64, 96, 128)),  # for 2-core CPUs
}


FUSION_HIDDEN = 64  # outputs of the signal network when per-example features are joined to it


def get_model(name: str, in_channels: int, num_classes: int, feature_channels: int = 0) -> nn.Module:
    """Build model ``name`` for inputs of ``in_channels`` channels and ``num_classes`` outputs (logits).

    With ``feature_channels``, the last channels hold per-example features: see :class:`FeatureFusion`.
    """
    if name not in MODELS:
        raise ECGError(f"unknown model '{name}'; valid: {', '.join(MODELS)}")
    if feature_channels:
        backbone = MODELS[name](in_channels - feature_channels, FUSION_HIDDEN)
        return FeatureFusion(backbone, FUSION_HIDDEN, feature_channels, num_classes)
    return MODELS[name](in_channels, num_classes)
