"""ResNet-20 with Monte Carlo dropout (Gal & Ghahramani 2016), Laing (2024)'s dropout variant.

Dropout stays active in eval mode. ``forward`` is one stochastic pass (what training uses);
``inference`` combines ``samples`` stochastic passes. Where the dropout sits (``placement``):

* ``"relu"`` (default, Laing's code): dropout with rate ``p`` right after **every** ReLU of the
  network: the stem's, the one inside each residual block and the one after each residual
  addition (19 for ResNet-20). The author's ``DropoutWrapper`` replaces every ``nn.ReLU`` with
  ReLU-then-``F.dropout(p, training=True)`` (element-wise, not channel-wise); the pooled
  features then carry the last block's dropout and the head gets no extra one;
* ``"blocks"``: only after the ReLU inside each residual block;
* ``"head"``: only on the pooled features before the linear head (cheap: the trunk runs once
  and only the head is sampled).

How the samples are combined (``average``): ``"probs"`` returns ``log(mean_t softmax(z_t))``
(the Bayesian predictive distribution; a softmax of it gives the mean probabilities);
``"logits"`` returns ``mean_t z_t``, as the author's evaluation does (it averages the sampled
logits, then takes a softmax; its max-logit OOD score is the max of the mean logits).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .common import (Trunk, MCDropout, Normalize, blocks_per_stage, conv3x3, init_weights,
                     stage_blocks)
from .resnet import ResNetFeatures, _projection

PLACEMENTS = ("relu", "blocks", "head")
AVERAGES = ("probs", "logits")


class ReLUDropoutBlock(nn.Module):
    """Basic block conv-BN-ReLU-drop-conv-BN (+ shortcut) -ReLU-drop, with ReLU modules.

    Same parameters (names and shapes) as :class:`softlib.models.resnet.BasicBlock`.
    """

    def __init__(self, cin: int, cout: int, stride: int, p: float):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.act1, self.drop1 = nn.ReLU(), MCDropout(p)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        proj = _projection(cin, cout, stride)
        self.shortcut = proj if proj is not None else nn.Identity()
        self.act2, self.drop2 = nn.ReLU(), MCDropout(p)

    def forward(self, x):
        out = self.drop1(self.act1(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return self.drop2(self.act2(out + self.shortcut(x)))


class ReLUDropoutFeatures(Trunk):
    """ResNet trunk (as :class:`ResNetFeatures`) with MC dropout after every ReLU."""

    def __init__(self, depth: int = 20, width: int = 16, p: float = 0.1):
        n = blocks_per_stage(depth, 2, 2, "resnet20_dropout")
        stem = nn.Sequential(conv3x3(3, width), nn.BatchNorm2d(width), nn.ReLU(), MCDropout(p))
        layers, cin = [], width
        for stage, stride in stage_blocks(n):
            cout = width * 2**stage
            layers.append(ReLUDropoutBlock(cin, cout, stride, p))
            cin = cout
        super().__init__(stem, layers, cin)


class MCDropoutResNet(nn.Module):
    output_kind = "logits (one dropout sample)"

    def __init__(self, num_classes: int = 10, depth: int = 20, width: int = 16, p: float = 0.1,
                 samples: int = 10, placement: str = "relu", average: str = "probs"):
        super().__init__()
        if placement not in PLACEMENTS:
            raise ValueError(f"resnet20_dropout: placement={placement!r}, expected one of {PLACEMENTS}")
        if average not in AVERAGES:
            raise ValueError(f"resnet20_dropout: average={average!r}, expected one of {AVERAGES}")
        if samples < 1:
            raise ValueError(f"resnet20_dropout: samples={samples} must be >= 1")
        self.placement, self.samples, self.average = placement, int(samples), average
        self.normalize = Normalize()
        if placement == "relu":
            self.features = ReLUDropoutFeatures(depth, width, p)
        else:
            self.features = ResNetFeatures(depth, width,
                                           (lambda: MCDropout(p)) if placement == "blocks" else None)
        self.dropout = MCDropout(p) if placement == "head" else nn.Identity()
        self.head = nn.Linear(self.features.num_features, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(self.normalize(x))))

    def inference(self, x: torch.Tensor, samples: int | None = None) -> torch.Tensor:
        """``samples`` dropout passes combined per ``average``: log mean softmax, or mean logits [B, C]."""
        t = self.samples if samples is None else int(samples)
        if t < 1:
            raise ValueError(f"resnet20_dropout.inference: samples={t} must be >= 1")
        if self.placement == "head":
            h = self.features(self.normalize(x))
            z = [self.head(self.dropout(h)) for _ in range(t)]
        else:
            z = [self(x) for _ in range(t)]
        if self.average == "logits":
            return torch.stack(z).mean(0)
        logp = torch.stack([zi.log_softmax(-1) for zi in z])
        return torch.logsumexp(logp, dim=0) - math.log(t)
