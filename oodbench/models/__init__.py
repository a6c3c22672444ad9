"""Networks (DenseNet-BC-100, WRN-40-2), input normalization, checkpoint registry and safe loading."""

from .base import OODNet
from .densenet import DenseNet3
from .legacy import read_state_dict
from .normalized import Classifier
from .registry import (
    ARCHS,
    CHECKPOINTS,
    NORMALIZATIONS,
    CheckpointSpec,
    build_arch,
    get_spec,
    load_classifier,
)
from .wrn import WideResNet

__all__ = [
    "ARCHS", "CHECKPOINTS", "NORMALIZATIONS", "CheckpointSpec", "Classifier", "DenseNet3",
    "OODNet", "WideResNet", "build_arch", "get_spec", "load_classifier", "read_state_dict",
]
