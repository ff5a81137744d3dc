"""DenseNet-BC for 32x32 inputs (Huang et al. 2017), e.g. DenseNet-BC-100 k=12 (about 0.8M).

Three dense blocks of n layers (BN-ReLU-1x1 to 4k, BN-ReLU-3x3 to k, concatenated), joined by
transitions (BN-ReLU-1x1 compressing channels by ``compression``, 2x2 average pool).
"""
from __future__ import annotations

import torch
from torch import nn

from .common import CifarNet, GlobalPool, conv1x1, conv3x3, init_weights


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bottleneck: bool):
        super().__init__()
        mods = []
        c = cin
        if bottleneck:
            mods += [nn.BatchNorm2d(c), nn.ReLU(), conv1x1(c, 4 * growth)]
            c = 4 * growth
        mods += [nn.BatchNorm2d(c), nn.ReLU(), conv3x3(c, growth)]
        self.body = nn.Sequential(*mods)

    def forward(self, x):
        return torch.cat([x, self.body(x)], dim=1)


class DenseNetFeatures(nn.Module):
    def __init__(self, depth: int, growth: int, bottleneck: bool, compression: float):
        super().__init__()
        per_layer = 2 if bottleneck else 1
        n, rest = divmod(depth - 4, 3 * per_layer)
        if rest or n < 1:
            raise ValueError(
                f"densenet: depth={depth} is not of the form {3 * per_layer}n+4 "
                f"(bottleneck={bottleneck}; e.g. 100 for DenseNet-BC-100)"
            )
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"densenet: compression={compression} must be in (0, 1]")
        c = 2 * growth if bottleneck else 16
        mods = [conv3x3(3, c)]
        for stage in range(3):
            for _ in range(n):
                mods.append(DenseLayer(c, growth, bottleneck))
                c += growth
            if stage < 2:
                cout = int(c * compression)
                mods += [nn.BatchNorm2d(c), nn.ReLU(), conv1x1(c, cout), nn.AvgPool2d(2)]
                c = cout
        mods += [nn.BatchNorm2d(c), nn.ReLU()]
        self.body = nn.Sequential(*mods)
        self.pool = GlobalPool()
        self.num_features = c

    def forward(self, x):
        return self.pool(self.body(x))


def densenet(num_classes: int = 10, depth: int = 100, growth: int = 12, bottleneck: bool = True,
             compression: float = 0.5) -> CifarNet:
    """DenseNet(-BC): depth = 6n+4 with bottleneck layers (3n+4 without), growth rate k."""
    feats = DenseNetFeatures(depth, growth, bottleneck, compression)
    return init_weights(CifarNet(feats, feats.num_features, num_classes))
