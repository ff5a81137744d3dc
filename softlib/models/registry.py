"""Build CIFAR models by name: architecture families with knobs, and the named presets used by
Peterson et al. (2019) (identifiers of the training repository hysts/pytorch_image_classification)
and Laing (2024).

``build("resnet", depth=20, width=16)``, ``build("resnet_20")``, ``build("wrn", depth=16,
widen=2)``; a preset's knobs can be overridden (``build("wrn_28_10", widen=2)``), which is how
the ``cpu`` profile trains small versions of the paper's architectures.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from .common import INPUT_CONTRACT
from .densenet import densenet
from .duq import DUQResNet
from .mc_dropout import MCDropoutResNet
from .pyramidnet import pyramidnet
from .resnet import preact_resnet, resnet, wrn
from .resnext import resnext
from .shake_shake import shake_shake
from .sngp import SNGPResNet
from .vgg import vgg

FAMILIES: dict[str, Callable[..., nn.Module]] = {
    "resnet": resnet,
    "preact_resnet": preact_resnet,
    "wrn": wrn,
    "vgg": vgg,
    "resnext": resnext,
    "densenet": densenet,
    "pyramidnet": pyramidnet,
    "shake_shake": shake_shake,
    "resnet20_dropout": MCDropoutResNet,
    "resnet20_sngp": SNGPResNet,
    "resnet20_duq": DUQResNet,
}

#: name -> (family, knobs). The paper architectures at full size.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet_20": ("resnet", {"depth": 20, "width": 16}),
    "resnet_basic_110": ("resnet", {"depth": 110, "width": 16}),
    "resnet_preact_bottleneck_164": ("preact_resnet", {"depth": 164, "width": 16, "block": "bottleneck"}),
    "wrn_28_10": ("wrn", {"depth": 28, "widen": 10}),
    "vgg_15_BN_64": ("vgg", {"width": 64, "bn": True}),
    "resnext_29_8x64d": ("resnext", {"depth": 29, "cardinality": 8, "base_width": 64}),
    "densenet_BC_100_12": ("densenet", {"depth": 100, "growth": 12, "bottleneck": True}),
    "pyramidnet_basic_110_270": ("pyramidnet", {"depth": 110, "alpha": 270}),
    "shake_shake_26_2x64d_SSI": ("shake_shake", {"depth": 26, "width": 64}),
    "shake_shake_26_2x64d_SSI_cutout16": ("shake_shake", {"depth": 26, "width": 64}),
}

#: The eight architectures of Peterson et al. (2019), Section 5, in their order.
PETERSON_MODELS = (
    "vgg_15_BN_64", "resnet_basic_110", "wrn_28_10", "resnet_preact_bottleneck_164",
    "resnext_29_8x64d", "densenet_BC_100_12", "pyramidnet_basic_110_270", "shake_shake_26_2x64d_SSI",
)
#: Laing (2024)'s four ResNet-20 variants.
LAING_MODELS = ("resnet_20", "resnet20_dropout", "resnet20_sngp", "resnet20_duq")


def list_models(kind: str = "all") -> list[str]:
    """Names ``build`` accepts: ``kind`` = "all", "families" or "presets"."""
    if kind == "families":
        return sorted(FAMILIES)
    if kind == "presets":
        return sorted(PRESETS)
    if kind == "all":
        return sorted(set(FAMILIES) | set(PRESETS))
    raise ValueError(f"list_models: kind={kind!r}, expected 'all', 'families' or 'presets'")


def knobs_of(name: str) -> dict[str, Any]:
    """The knobs (keyword arguments) of a model name with their defaults for that name."""
    family, preset = _resolve(name)
    sig = inspect.signature(FAMILIES[family])
    knobs = {k: p.default for k, p in sig.parameters.items() if k != "num_classes"}
    knobs.update(preset)
    return knobs


def _resolve(name: str) -> tuple[str, dict[str, Any]]:
    if name in PRESETS:
        family, knobs = PRESETS[name]
        return family, dict(knobs)
    if name in FAMILIES:
        return name, {}
    raise KeyError(f"softlib.models.build: unknown model {name!r}; known: {', '.join(list_models())}")


def build(name: str, num_classes: int = 10, **knobs: Any) -> nn.Module:
    """Build model ``name`` (a family or a preset) with ``num_classes`` outputs.

    Keyword knobs override the preset's; unknown knobs raise a TypeError listing the valid ones.
    The model gets ``arch_name``, ``knobs`` and ``recommended_augment`` attributes.
    """
    family, merged = _resolve(name)
    valid = knobs_of(name)
    unknown = sorted(set(knobs) - set(valid))
    if unknown:
        raise TypeError(
            f"softlib.models.build({name!r}): unknown knob(s) {unknown}; valid knobs: {sorted(valid)}"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"softlib.models.build({name!r}): num_classes={num_classes!r} must be a positive int")
    merged.update(knobs)
    model = FAMILIES[family](num_classes=num_classes, **merged)
    model.arch_name = name
    model.knobs = {**valid, **merged}
    model.num_classes = num_classes
    if not hasattr(model, "recommended_augment"):
        model.recommended_augment = {"crop_flip": True}
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _fixed_random_features(model: nn.Module) -> int:
    gp = getattr(model, "gp", None)
    if gp is None or not hasattr(gp, "rff_weight"):
        return 0
    return gp.rff_weight.numel() + gp.rff_bias.numel()


def describe(model: nn.Module) -> str:
    """One paragraph: name, knobs, parameter count, input contract, output and hooks."""
    name = getattr(model, "arch_name", type(model).__name__)
    knobs = getattr(model, "knobs", None)
    n = count_parameters(model)
    lines = [f"{name} ({type(model).__name__}): {n:,} parameters"]
    fixed = _fixed_random_features(model)
    if fixed:
        lines[0] += f" + {fixed:,} fixed random-feature weights (buffers) = {n + fixed:,}"
    if knobs:
        lines.append("knobs: " + ", ".join(f"{k}={v}" for k, v in knobs.items()))
    lines.append(f"input: {INPUT_CONTRACT}")
    lines.append(f"forward output: {getattr(model, 'output_kind', 'logits')} [B, {getattr(model, 'num_classes', '?')}]")
    hooks = [h for h in ("inference", "training_loss", "after_optimizer_step", "on_epoch_start")
             if callable(getattr(model, h, None))]
    if getattr(model, "requires_input_grad", False):
        hooks.append("requires_input_grad")
    if hooks:
        lines.append("hooks: " + ", ".join(hooks))
    aug = getattr(model, "recommended_augment", None)
    if aug:
        lines.append(f"recommended augmentation: {aug}")
    return "\n".join(lines)


def inference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model.inference(x)`` when the model defines it, else ``model(x)`` (logits-like [B, C])."""
    fn = getattr(model, "inference", None)
    return fn(x) if callable(fn) else model(x)
