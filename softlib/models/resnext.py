"""ResNeXt for 32x32 inputs (Xie et al. 2017), e.g. ResNeXt-29 8x64d (about 34.4M parameters).

Bottleneck blocks with a grouped 3x3 convolution: cardinality C groups of d channels
(inner width C*d, doubled each stage); stage outputs 256, 512, 1024 by default.
"""
from __future__ import annotations

from torch import nn

from .common import (CifarNet, Trunk, blocks_per_stage, conv1x1, conv3x3, init_weights,
                     stage_blocks)


class ResNeXtBlock(nn.Module):
    """1x1 (inner) - grouped 3x3 (inner, stride) - 1x1 (out), BN after each; projection shortcut."""

    def __init__(self, cin: int, inner: int, cout: int, cardinality: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            conv1x1(cin, inner), nn.BatchNorm2d(inner), nn.ReLU(),
            conv3x3(inner, inner, stride, groups=cardinality), nn.BatchNorm2d(inner), nn.ReLU(),
            conv1x1(inner, cout), nn.BatchNorm2d(cout),
        )
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        return (self.body(x) + self.shortcut(x)).relu()


class ResNeXtFeatures(Trunk):
    def __init__(self, depth: int, cardinality: int, base_width: int, width: int):
        n = blocks_per_stage(depth, 3, 2, "resnext")
        c0 = width // 4
        stem = nn.Sequential(conv3x3(3, c0), nn.BatchNorm2d(c0), nn.ReLU())
        layers, cin = [], c0
        for stage, stride in stage_blocks(n):
            inner = cardinality * base_width * 2**stage
            cout = width * 2**stage
            layers.append(ResNeXtBlock(cin, inner, cout, cardinality, stride))
            cin = cout
        super().__init__(stem, layers, cin)


def resnext(num_classes: int = 10, depth: int = 29, cardinality: int = 8, base_width: int = 64,
            width: int = 256) -> CifarNet:
    """ResNeXt-depth CxDd: depth = 9n+2; ``width`` = first-stage output channels (stem = width/4)."""
    if width % 4:
        raise ValueError(f"resnext: width={width} must be divisible by 4")
    feats = ResNeXtFeatures(depth, cardinality, base_width, width)
    return init_weights(CifarNet(feats, feats.num_features, num_classes))
