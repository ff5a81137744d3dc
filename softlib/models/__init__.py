"""CIFAR (32x32) architectures by name, Laing (2024)'s uncertainty variants, and ``describe``.

Every model takes float NCHW pixels in [0, 1] and normalises them itself (first layer).
Hooks the training engine calls when present: ``inference(x)``, ``training_loss(x, output,
targets)``, ``requires_input_grad``, ``after_optimizer_step(x, targets)``, ``on_epoch_start(epoch)``.
"""
from .common import CIFAR10_MEAN, CIFAR10_STD, INPUT_CONTRACT, Normalize
from .registry import (
    FAMILIES,
    LAING_MODELS,
    PETERSON_MODELS,
    PRESETS,
    build,
    count_parameters,
    describe,
    inference,
    knobs_of,
    list_models,
)

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "INPUT_CONTRACT", "Normalize", "FAMILIES", "PRESETS",
    "PETERSON_MODELS", "LAING_MODELS", "build", "count_parameters", "describe", "inference",
    "knobs_of", "list_models",
]
