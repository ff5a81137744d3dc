"""PyramidNet with basic blocks for 32x32 inputs (Han et al. 2017), e.g. depth 110, alpha 270
(about 28.3M parameters).

Channels grow linearly by alpha / (3n) per block instead of doubling per stage. Blocks are
BN-conv-BN-ReLU-conv-BN; the shortcut average-pools when the block downsamples and zero-pads
the missing channels, so it has no parameters.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .common import CifarNet, Trunk, blocks_per_stage, conv3x3, init_weights, stage_blocks


class PyramidBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(),
            conv3x3(cout, cout), nn.BatchNorm2d(cout),
        )
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        skip = F.avg_pool2d(x, 2) if self.stride == 2 else x
        if self.extra:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra))  # zero channels at the end
        return self.body(x) + skip


class PyramidFeatures(Trunk):
    def __init__(self, depth: int, alpha: float, width: int):
        n = blocks_per_stage(depth, 2, 2, "pyramidnet")
        step = alpha / (3 * n)
        stem = nn.Sequential(conv3x3(3, width), nn.BatchNorm2d(width))
        layers, cin, c = [], width, float(width)
        for _, stride in stage_blocks(n):
            c += step
            layers.append(PyramidBlock(cin, int(round(c)), stride))
            cin = int(round(c))
        super().__init__(stem, layers, cin, post=nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU()))


def pyramidnet(num_classes: int = 10, depth: int = 110, alpha: float = 270, width: int = 16) -> CifarNet:
    """PyramidNet (basic blocks): depth = 6n+2, start width ``width``, final width width+alpha."""
    feats = PyramidFeatures(depth, alpha, width)
    return init_weights(CifarNet(feats, feats.num_features, num_classes))
