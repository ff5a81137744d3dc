"""Tiny models shared by the training tests (fast on one CPU thread)."""
import torch
from torch import nn


class TinyBN(nn.Module):
    """Conv (no bias: a bias before BatchNorm has ~0 gradient, which Adam amplifies into noise),
    BatchNorm, ReLU, global pooling, a linear head (3 classes unless told)."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))
