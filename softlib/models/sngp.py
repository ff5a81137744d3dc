"""SNGP on a ResNet-20 trunk (Liu et al. 2020), Laing (2024)'s SNGP variant.

Trunk: the basic ResNet with every conv/linear weight spectrally normalised to a bound
(default 3, one power iteration per training step). Output: a random-Fourier-feature Gaussian
process: ``phi(h) = sqrt(2/D) cos(W h / sqrt(kernel_scale) + b)`` with D = 1024 orthogonal
random features (fixed buffers), then a trainable linear layer. The Laplace precision matrix
``ridge * I + sum phi^T phi`` is accumulated (no gradient) in every training-mode forward and
reset by ``on_epoch_start``. ``inference`` returns mean-field logits
``logits / sqrt(1 + pi/8 * var)`` with ``var = diag(phi ridge P^-1 phi^T)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .common import Normalize, init_weights
from .resnet import ResNetFeatures
from .spectral import apply_spectral_norm


def orthogonal_random_features(num_features: int, dim: int) -> torch.Tensor:
    """[num_features, dim] rows: blocks of a random orthogonal matrix, each row rescaled by an
    independent chi(dim) norm so rows are marginally standard normal (Yu et al. 2016)."""
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        q, _ = torch.linalg.qr(torch.randn(dim, dim))
        blocks.append(q.t())
    w = torch.cat(blocks)[:num_features]
    return w * torch.randn(num_features, dim).norm(dim=1, keepdim=True)


class RandomFeatureGP(nn.Module):
    """Random-feature GP output layer with a Laplace precision matrix (Gaussian likelihood)."""

    def __init__(self, in_features: int, num_classes: int, num_features: int = 1024,
                 kernel_scale: float = 1.0, ridge_penalty: float = 1.0):
        super().__init__()
        if kernel_scale <= 0 or ridge_penalty <= 0:
            raise ValueError(
                f"SNGP: kernel_scale={kernel_scale} and ridge_penalty={ridge_penalty} must be > 0"
            )
        self.ridge_penalty, self.num_features = float(ridge_penalty), int(num_features)
        scale = 1.0 / math.sqrt(kernel_scale)
        self.register_buffer("rff_weight", orthogonal_random_features(num_features, in_features) * scale)
        self.register_buffer("rff_bias", torch.rand(num_features) * 2 * math.pi)
        self.register_buffer("precision", torch.eye(num_features) * ridge_penalty)
        self.output = nn.Linear(num_features, num_classes)
        self._cov_cache = None  # (key, covariance); not state, rebuilt on demand

    def random_features(self, h: torch.Tensor) -> torch.Tensor:
        z = nn.functional.linear(h, self.rff_weight.to(h.dtype), self.rff_bias.to(h.dtype))
        return math.sqrt(2.0 / self.num_features) * torch.cos(z)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        phi = self.random_features(h)
        if self.training:
            with torch.no_grad():
                p = phi.detach().float()
                self.precision.add_(p.t() @ p)
        return self.output(phi)

    def reset_precision(self) -> None:
        with torch.no_grad():
            self.precision.copy_(torch.eye(self.num_features, device=self.precision.device)
                                 * self.ridge_penalty)

    def covariance(self) -> torch.Tensor:
        """ridge * P^-1, cached until the precision buffer changes."""
        try:
            key = (self.precision._version, self.precision.device, self.precision.data_ptr())
        except RuntimeError:  # a tensor without storage: the stacked models' slice under vmap
            key = None
        if key is None or self._cov_cache is None or self._cov_cache[0] != key:
            with torch.no_grad():
                p = self.precision.double()
                chol = torch.linalg.cholesky(p)
                cov = torch.cholesky_inverse(chol) * self.ridge_penalty
            if key is None:
                return cov.float()
            self._cov_cache = (key, cov.float())
        return self._cov_cache[1]

    def variance(self, phi: torch.Tensor) -> torch.Tensor:
        """Posterior predictive variance per input, [B] (float32 even under autocast)."""
        with torch.autocast(device_type=phi.device.type, enabled=False):
            phi = phi.float()
            return ((phi @ self.covariance()) * phi).sum(-1)


class SNGPResNet(nn.Module):
    output_kind = "logits (GP posterior mean)"

    def __init__(self, num_classes: int = 10, depth: int = 20, width: int = 16,
                 spec_norm_bound: float = 3.0, n_power_iterations: int = 1,
                 num_random_features: int = 1024, kernel_scale: float = 1.0,
                 ridge_penalty: float = 1.0, mean_field_factor: float = math.pi / 8):
        super().__init__()
        self.mean_field_factor = float(mean_field_factor)
        self.normalize = Normalize()
        self.features = init_weights(ResNetFeatures(depth, width))
        apply_spectral_norm(self.features, spec_norm_bound, n_power_iterations)
        self.gp = RandomFeatureGP(self.features.num_features, num_classes, num_random_features,
                                  kernel_scale, ridge_penalty)
        nn.init.zeros_(self.gp.output.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gp(self.features(self.normalize(x)))

    def on_epoch_start(self, epoch: int) -> None:
        """Start a fresh precision matrix (exact accumulation over each epoch)."""
        self.gp.reset_precision()

    def inference(self, x: torch.Tensor) -> torch.Tensor:
        """Mean-field logits logits / sqrt(1 + pi/8 * var), [B, C] (no precision update)."""
        phi = self.gp.random_features(self.features(self.normalize(x)))
        logits = self.gp.output(phi).float()
        var = self.gp.variance(phi)
        return logits / torch.sqrt(1.0 + self.mean_field_factor * var).unsqueeze(-1)
