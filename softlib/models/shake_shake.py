"""Shake-Shake regularised ResNet for 32x32 inputs (Gastaldi 2017), e.g. 26 2x64d S-S-I.

Each residual block has two branches (ReLU-conv-BN-ReLU-conv-BN). In training the branches are
mixed with a random weight alpha per image in the forward pass and an independent random beta
per image in the backward pass ("Shake-Shake-Image"); in eval both weigh 0.5. The published
S-S-I result also uses cutout 16 (an augmentation, see ``recommended_augment``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import (CifarNet, Trunk, blocks_per_stage, conv1x1, conv3x3, init_weights,
                     stage_blocks)


def shake(a: torch.Tensor, b: torch.Tensor, training: bool) -> torch.Tensor:
    """alpha*a + (1-alpha)*b forward, beta/(1-beta) gradients backward (per image)."""
    if not training:
        return 0.5 * (a + b)
    shape = (a.shape[0],) + (1,) * (a.dim() - 1)
    alpha = torch.rand(shape, device=a.device, dtype=a.dtype)
    beta = torch.rand(shape, device=a.device, dtype=a.dtype)
    # Value: beta*a + (1-beta)*b + (alpha-beta)*(a-b) = alpha*a + (1-alpha)*b.
    # Gradient: only the first two terms carry it, so d/da = beta and d/db = 1-beta.
    return beta * a + (1 - beta) * b + ((alpha - beta) * (a - b)).detach()


def _branch(cin, cout, stride):
    return nn.Sequential(
        nn.ReLU(), conv3x3(cin, cout, stride), nn.BatchNorm2d(cout),
        nn.ReLU(), conv3x3(cout, cout), nn.BatchNorm2d(cout),
    )


class ShakeShortcut(nn.Module):
    """Downsampling shortcut: ReLU, two strided 1x1 paths (the second shifted by one pixel),
    each to half the channels, concatenated, BN."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1 = conv1x1(cin, cout // 2)
        self.conv2 = conv1x1(cin, cout - cout // 2)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = x.relu()
        p1 = F.avg_pool2d(x, 1, self.stride)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        p2 = F.avg_pool2d(shifted, 1, self.stride)
        return self.bn(torch.cat([self.conv1(p1), self.conv2(p2)], dim=1))


class ShakeBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.branch1 = _branch(cin, cout, stride)
        self.branch2 = _branch(cin, cout, stride)
        self.shortcut = ShakeShortcut(cin, cout, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        return shake(self.branch1(x), self.branch2(x), self.training) + self.shortcut(x)


class ShakeFeatures(Trunk):
    def __init__(self, depth: int, width: int):
        n = blocks_per_stage(depth, 2, 2, "shake_shake")
        stem = nn.Sequential(conv3x3(3, 16), nn.BatchNorm2d(16))
        layers, cin = [], 16
        for stage, stride in stage_blocks(n):
            cout = width * 2**stage
            layers.append(ShakeBlock(cin, cout, stride))
            cin = cout
        super().__init__(stem, layers, cin, post=nn.ReLU())


def shake_shake(num_classes: int = 10, depth: int = 26, width: int = 64) -> CifarNet:
    """Shake-Shake-depth 2x{width}d (S-S-I): depth = 6n+2, stage widths w, 2w, 4w."""
    feats = ShakeFeatures(depth, width)
    model = init_weights(CifarNet(feats, feats.num_features, num_classes))
    model.recommended_augment = {"crop_flip": True, "cutout": 16}
    return model
