"""VGG with batch norm for 32x32 inputs (the training repository's ``vgg_15_BN_64``).

Five stages of 3x3 conv(-BN)-ReLU layers, each stage ending in 2x2 max pooling, so a 32x32
image leaves the last stage as 1x1 and a single linear layer classifies it. Default layout as
in the repository's configuration: stage widths 64, 128, 256, 512, 512 with 2, 2, 3, 3, 3 conv
layers (13 conv + 1 linear weight layers, about 14.7M parameters).
"""
from __future__ import annotations

from torch import nn

from .common import CifarNet, init_weights


class VGGFeatures(nn.Module):
    def __init__(self, widths, layers, bn: bool = True):
        super().__init__()
        if len(widths) != len(layers) or len(widths) != 5:
            raise ValueError(
                f"vgg: expected 5 stage widths and 5 layer counts, got widths={list(widths)} "
                f"layers={list(layers)}"
            )
        mods, cin = [], 3
        for cout, n in zip(widths, layers):
            for _ in range(n):
                mods.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not bn))
                if bn:
                    mods.append(nn.BatchNorm2d(cout))
                mods.append(nn.ReLU())
                cin = cout
            mods.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*mods)
        self.num_features = cin

    def forward(self, x):
        return self.body(x).flatten(1)


def vgg(num_classes: int = 10, width: int = 64, layers=(2, 2, 3, 3, 3), bn: bool = True) -> CifarNet:
    """VGG with stage widths w, 2w, 4w, 8w, 8w (w = ``width``)."""
    widths = [width, 2 * width, 4 * width, 8 * width, 8 * width]
    feats = VGGFeatures(widths, layers, bn)
    return init_weights(CifarNet(feats, feats.num_features, num_classes))
