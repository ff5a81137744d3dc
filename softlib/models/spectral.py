"""Spectral normalisation with a bound: ``W / max(1, sigma(W) / bound)`` (Liu et al. 2020, SNGP).

``torch.nn.utils.parametrizations.spectral_norm`` rescales every weight to sigma = 1. SNGP
instead only shrinks weights whose largest singular value exceeds a bound (3 in Laing 2024), so
this module implements the same power iteration (weight reshaped to ``[out, -1]``, one step per
training forward, persistent ``u``/``v`` buffers) with the bounded scaling, as a
``torch.nn.utils.parametrize`` parametrization. The tests cross-check it against torch's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class BoundedSpectralNorm(nn.Module):
    """Parametrization ``W -> W * min(1, bound / sigma)`` with sigma by power iteration."""

    def __init__(self, weight: torch.Tensor, bound: float = 3.0, n_power_iterations: int = 1,
                 eps: float = 1e-12):
        super().__init__()
        if bound <= 0:
            raise ValueError(f"spectral norm: bound={bound} must be positive")
        if n_power_iterations < 1:
            raise ValueError(f"spectral norm: n_power_iterations={n_power_iterations} must be >= 1")
        self.bound, self.n_power_iterations, self.eps = float(bound), int(n_power_iterations), eps
        mat = weight.detach().reshape(weight.shape[0], -1)
        h, w = mat.shape
        self.register_buffer("_u", F.normalize(mat.new_empty(h).normal_(), dim=0, eps=eps))
        self.register_buffer("_v", F.normalize(mat.new_empty(w).normal_(), dim=0, eps=eps))
        self._power_method(mat, 15)  # start from a good estimate, as torch does

    @torch.no_grad()
    def _power_method(self, mat: torch.Tensor, n: int) -> None:
        for _ in range(n):
            self._u.copy_(F.normalize(torch.mv(mat, self._v), dim=0, eps=self.eps))
            self._v.copy_(F.normalize(torch.mv(mat.t(), self._u), dim=0, eps=self.eps))

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """Current estimate of the largest singular value of the reshaped weight."""
        mat = weight.reshape(weight.shape[0], -1)
        # Clones: the buffers are updated in place by later forwards; autograd must not see that.
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        return torch.dot(u, torch.mv(mat, v))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._power_method(weight.detach().reshape(weight.shape[0], -1), self.n_power_iterations)
        factor = torch.clamp(self.bound / self.sigma(weight), max=1.0)
        return weight * factor

    def extra_repr(self) -> str:
        return f"bound={self.bound}, n_power_iterations={self.n_power_iterations}"


def apply_spectral_norm(module: nn.Module, bound: float = 3.0, n_power_iterations: int = 1) -> nn.Module:
    """Parametrize the weight of every Conv2d and Linear inside ``module`` (in place)."""
    targets = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not targets:
        raise ValueError("apply_spectral_norm: the module has no Conv2d or Linear layers")
    for m in targets:
        parametrize.register_parametrization(
            m, "weight", BoundedSpectralNorm(m.weight, bound, n_power_iterations)
        )
    return module
