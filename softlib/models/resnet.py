"""ResNets for 32x32 inputs: the original basic ResNet (He et al. 2016; ResNet-20 / -110),
the pre-activation ResNet (bottleneck, e.g. preact-164) and Wide ResNet (Zagoruyko & Komodakis).

Basic ResNet uses 1x1-conv + BN projection shortcuts where the shape changes; with 10 classes
ResNet-20 then has 272,474 parameters, the count Laing (2024) reports.
"""
from __future__ import annotations

from torch import nn

from .common import (CifarNet, Trunk, blocks_per_stage, conv1x1, conv3x3, init_weights,
                     stage_blocks)


def _projection(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-[dropout]-conv-BN, plus shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dropout: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.dropout = dropout if dropout is not None else nn.Identity()
        proj = _projection(cin, cout, stride)
        self.shortcut = proj if proj is not None else nn.Identity()

    def forward(self, x):
        out = self.dropout(self.bn1(self.conv1(x)).relu())
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class ResNetFeatures(Trunk):
    """Stem conv (width) then three stages of n basic blocks (width, 2w, 4w), global pool.

    ``block_dropout`` (a module factory or None) puts dropout inside every block.
    """

    def __init__(self, depth: int = 20, width: int = 16, block_dropout=None):
        n = blocks_per_stage(depth, 2, 2, "resnet")
        stem = nn.Sequential(conv3x3(3, width), nn.BatchNorm2d(width), nn.ReLU())
        layers, cin = [], width
        for stage, stride in stage_blocks(n):
            cout = width * 2**stage
            drop = block_dropout() if block_dropout is not None else None
            layers.append(BasicBlock(cin, cout, stride, drop))
            cin = cout
        super().__init__(stem, layers, cin)


def resnet(num_classes: int = 10, depth: int = 20, width: int = 16) -> CifarNet:
    """Basic-block ResNet, depth = 6n+2 (20, 32, 44, 56, 110), stage widths w, 2w, 4w."""
    feats = ResNetFeatures(depth, width)
    return init_weights(CifarNet(feats, feats.num_features, num_classes))


class PreactBasic(nn.Module):
    """BN-ReLU-conv-BN-ReLU-[dropout]-conv; the shortcut projects the pre-activated input."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        cout = planes
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), conv3x3(cout, cout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = conv1x1(cin, cout, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        pre = self.bn1(x).relu()
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.bn2(out).relu()))
        return out + skip


class PreactBottleneck(nn.Module):
    """BN-ReLU-1x1 (planes), BN-ReLU-3x3 (planes, stride), BN-ReLU-1x1 (4 planes)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        cout = planes * self.expansion
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv1x1(cin, planes)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), conv3x3(planes, planes, stride)
        self.bn3, self.conv3 = nn.BatchNorm2d(planes), conv1x1(planes, cout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = conv1x1(cin, cout, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        pre = self.bn1(x).relu()
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.bn2(out).relu())
        out = self.conv3(self.dropout(self.bn3(out).relu()))
        return out + skip


class PreactFeatures(Trunk):
    """Stem conv (16), three stages of pre-activation blocks, final BN-ReLU and global pool."""

    def __init__(self, block, n: int, stage_planes, stem: int = 16, dropout: float = 0.0):
        first = conv3x3(3, stem)
        layers, cin = [], stem
        for stage, stride in stage_blocks(n, len(stage_planes)):
            planes = stage_planes[stage]
            layers.append(block(cin, planes, stride, dropout))
            cin = planes * block.expansion
        super().__init__(first, layers, cin, post=nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU()))


def preact_resnet(num_classes: int = 10, depth: int = 164, width: int = 16,
                  block: str = "bottleneck") -> CifarNet:
    """Pre-activation ResNet: bottleneck depth = 9n+2 (164), basic depth = 6n+2 (110)."""
    if block == "bottleneck":
        cls, n = PreactBottleneck, blocks_per_stage(depth, 3, 2, "preact_resnet (bottleneck)")
    elif block == "basic":
        cls, n = PreactBasic, blocks_per_stage(depth, 2, 2, "preact_resnet (basic)")
    else:
        raise ValueError(f"preact_resnet: block={block!r}, expected 'bottleneck' or 'basic'")
    feats = PreactFeatures(cls, n, [width, 2 * width, 4 * width], stem=16)
    return init_weights(CifarNet(feats, feats.num_features, num_classes))


def wrn(num_classes: int = 10, depth: int = 28, widen: int = 10, dropout: float = 0.0) -> CifarNet:
    """Wide ResNet WRN-depth-widen: depth = 6n+4, stage widths 16k, 32k, 64k, preact blocks."""
    n = blocks_per_stage(depth, 2, 4, "wrn")
    feats = PreactFeatures(PreactBasic, n, [16 * widen, 32 * widen, 64 * widen], 16, dropout)
    return init_weights(CifarNet(feats, feats.num_features, num_classes))
