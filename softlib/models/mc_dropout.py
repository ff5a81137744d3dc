"""ResNet-20 with Monte Carlo dropout (Gal & Ghahramani 2016), Laing (2024)'s dropout variant.

Dropout stays active in eval mode. ``forward`` is one stochastic pass (what training uses);
``inference`` averages ``samples`` softmaxes and returns their log, so that a softmax of it is
the predictive distribution. ``placement="head"`` drops the pooled features before the linear
head (the features are then computed once and only the head is sampled, which is cheap);
``placement="blocks"`` drops inside every residual block (T full passes).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .common import MCDropout, Normalize, init_weights
from .resnet import ResNetFeatures


class MCDropoutResNet(nn.Module):
    output_kind = "logits (one dropout sample)"

    def __init__(self, num_classes: int = 10, depth: int = 20, width: int = 16, p: float = 0.1,
                 samples: int = 10, placement: str = "head"):
        super().__init__()
        if placement not in ("head", "blocks"):
            raise ValueError(f"resnet20_dropout: placement={placement!r}, expected 'head' or 'blocks'")
        if samples < 1:
            raise ValueError(f"resnet20_dropout: samples={samples} must be >= 1")
        self.placement, self.samples = placement, int(samples)
        self.normalize = Normalize()
        self.features = ResNetFeatures(depth, width, (lambda: MCDropout(p)) if placement == "blocks" else None)
        self.dropout = MCDropout(p) if placement == "head" else nn.Identity()
        self.head = nn.Linear(self.features.num_features, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(self.normalize(x))))

    def inference(self, x: torch.Tensor, samples: int | None = None) -> torch.Tensor:
        """log(mean_t softmax(logits_t)) over T dropout samples, [B, C]."""
        t = self.samples if samples is None else int(samples)
        if t < 1:
            raise ValueError(f"resnet20_dropout.inference: samples={t} must be >= 1")
        if self.placement == "head":
            h = self.features(self.normalize(x))
            logp = torch.stack([self.head(self.dropout(h)).log_softmax(-1) for _ in range(t)])
        else:
            logp = torch.stack([self(x).log_softmax(-1) for _ in range(t)])
        return torch.logsumexp(logp, dim=0) - math.log(t)
