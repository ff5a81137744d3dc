"""Pieces every CIFAR model shares: in-model normalisation, the normalise->features->head shell,
weight initialisation and depth checks.

Every model takes float NCHW pixels in [0, 1] (see CONTRIBUTING.md); the CIFAR-10 per-channel
mean/std live in the model as buffers so that attacks, augmentation and OOD inputs all work in
pixel space and a saved model carries its own preprocessing.
"""
from __future__ import annotations

import torch
from torch import nn

#: CIFAR-10 training-set per-channel mean and standard deviation (pixel scale [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

INPUT_CONTRACT = (
    "float NCHW pixels in [0, 1], shape [B, 3, 32, 32]; CIFAR-10 mean/std normalisation is "
    "the model's first layer; channels_last works"
)


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean/std as buffers (they move with the model)."""

    def __init__(self, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise TypeError(
                f"model input: expected float pixels in [0, 1], got dtype {x.dtype} "
                "(convert uint8 images with x.float() / 255)"
            )
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"model input: expected NCHW with {self.mean.shape[1]} channels, got shape "
                f"{tuple(x.shape)}"
            )
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class CifarNet(nn.Module):
    """``head(features(normalize(x)))``: the shell of every plain classifier here.

    ``features`` maps normalised images to a pooled vector ``[B, num_features]``; ``head`` is
    one linear layer. ``forward`` returns logits.
    """

    output_kind = "logits"

    def __init__(self, features: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.normalize = Normalize()
        self.features = features
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def init_weights(model: nn.Module) -> nn.Module:
    """He-normal (fan_out) convolutions, BN weight 1 / bias 0, zero linear biases.

    Skipped on the meta device (shape-only builds for parameter counts), where random
    initialisation is meaningless and slow.
    """
    if any(p.is_meta for p in model.parameters()):
        return model
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return model


def blocks_per_stage(depth: int, per_block: int, extra: int, arch: str) -> int:
    """n such that depth == per_block * 3 * n + extra, else a ValueError naming the rule."""
    n, rest = divmod(depth - extra, 3 * per_block)
    if rest or n < 1:
        raise ValueError(
            f"{arch}: depth={depth} is not of the form {3 * per_block}n+{extra} with n >= 1 "
            f"(e.g. {3 * per_block + extra}, {6 * per_block + extra})"
        )
    return n


def stage_blocks(n: int, stages: int = 3):
    """(stage, stride) of every block of a CIFAR ResNet-style trunk in build order: ``n`` blocks
    per stage, the first block of each stage after the first halving the resolution."""
    for stage in range(stages):
        for i in range(n):
            yield stage, 2 if (stage > 0 and i == 0) else 1


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class MCDropout(nn.Module):
    """Dropout that stays active in eval mode (Monte Carlo dropout)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"MC dropout: p={p} must be in [0, 1)")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(x, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GlobalPool(nn.Module):
    """Global average pool to ``[B, C]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Trunk(nn.Module):
    """The feature extractor of the CIFAR ResNet family: stem -> blocks -> post -> global pool
    to ``[B, num_features]``. Subclasses build their stem and blocks (in that order: the order
    decides the seeded initial weights) and hand them over."""

    def __init__(self, stem: nn.Module, blocks, num_features: int, post: nn.Module | None = None):
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.post = post if post is not None else nn.Identity()
        self.pool = GlobalPool()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.post(self.blocks(self.stem(x))))
