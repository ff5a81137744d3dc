"""Training losses and target manipulations for soft (probability-vector) labels.

Every target here is a probability vector per image, ``[B, C]``: hard labels are one-hot,
CIFAR-10H labels are the human distributions, class-level and distillation targets are other
distributions. One cross-entropy (:func:`soft_cross_entropy`) serves them all.

Mixing (:func:`mixup`, :func:`cutmix`) mixes images *and* targets with one lambda per batch
(lambda ~ Beta(alpha, alpha)); CutMix's lambda is corrected to the pasted box's actual area.
Randomness comes only from the ``torch.Generator`` passed in, so a seeded generator gives the
same mix on every run and device.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import check_probability_rows

__all__ = [
    "soft_cross_entropy",
    "validate_targets",
    "one_hot",
    "smooth_labels",
    "mixup",
    "cutmix",
    "maybe_mix",
    "mix_probability_from_entropy",
    "duq_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_item: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_item.mean()
    if reduction == "sum":
        return per_item.sum()
    if reduction == "none":
        return per_item
    raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy ``-sum_c t_c log softmax(z)_c`` per image, against any target distribution.

    ``targets`` is ``[B, C]`` probabilities (one-hot, human, class-level, distillation) or, for
    convenience, integer class ids ``[B]`` (treated as one-hot). Values are not re-validated here
    (that would force a device sync per batch); call :func:`validate_targets` once on the dataset.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits: expected shape [B, C], got {tuple(logits.shape)}")
    if not targets.is_floating_point():
        if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
            raise ValueError(
                f"targets: integer labels must have shape [{logits.shape[0]}], got {tuple(targets.shape)}"
            )
        return F.cross_entropy(logits, targets, reduction=reduction)
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets: expected the logits' shape {tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    per_item = -(targets.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(dim=1)
    return _reduce(per_item, reduction)


def validate_targets(t: Any, atol: float = 1e-6, name: str = "targets", num_classes: int | None = None) -> Any:
    """Check that ``t`` is a ``[N, C]`` array of probability rows; return it unchanged.

    Raises ``ValueError`` naming ``name`` and the first offending row for: wrong ndim, wrong
    number of classes, NaN/inf, negative entries, rows whose sum differs from 1 by more than ``atol``.
    Accepts numpy arrays and torch tensors.
    """
    arr = t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [N, C] of probabilities, got shape {arr.shape}")
    if num_classes is not None and arr.shape[1] != num_classes:
        raise ValueError(f"{name}: expected {num_classes} classes (columns), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one class column, got shape {arr.shape}")
    check_probability_rows(arr, name, atol)
    return t


def one_hot(labels: Any, num_classes: int = 10) -> Any:
    """Integer labels ``[N]`` -> float32 one-hot targets ``[N, C]`` (torch in -> torch out, else numpy)."""
    if isinstance(labels, torch.Tensor):
        if labels.is_floating_point() or labels.ndim != 1:
            raise ValueError(f"labels: expected a 1-D integer tensor, got {labels.dtype} shape {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"labels: expected values in [0, {num_classes - 1}], got [{int(labels.min())}, {int(labels.max())}]")
        return F.one_hot(labels.long(), num_classes).to(torch.float32)
    from .data.views import one_hot as numpy_one_hot
    return numpy_one_hot(labels, num_classes)


def smooth_labels(targets: Any, eps: float) -> Any:
    """Label smoothing: ``(1 - eps) * t + eps / C`` (moves every row towards the uniform distribution)."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps: expected a value in [0, 1], got {eps}")
    c = targets.shape[-1]
    return (1.0 - eps) * targets + eps / c


# --------------------------------------------------------------------------------------------
# Mixing
# --------------------------------------------------------------------------------------------

def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A numpy generator seeded from ``generator`` (torch has no seeded Beta sampler)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)


def _perm(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=generator).to(device)


def _check_mix_inputs(x: torch.Tensor, targets: torch.Tensor, alpha: float, what: str) -> None:
    if alpha <= 0 or not math.isfinite(alpha):
        raise ValueError(f"{what}: alpha must be a positive number, got {alpha}")
    if x.ndim != 4:
        raise ValueError(f"{what}: x must be NCHW [B, C, H, W], got shape {tuple(x.shape)}")
    if targets.ndim != 2 or targets.shape[0] != x.shape[0] or not targets.is_floating_point():
        raise ValueError(
            f"{what}: targets must be float probabilities [B={x.shape[0]}, C], got {targets.dtype} {tuple(targets.shape)}"
        )


def mixup(x: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator | None = None,
          return_info: bool = False):
    """Mixup: ``lam * x + (1 - lam) * x[perm]`` and the same convex mix of the targets.

    One ``lam ~ Beta(alpha, alpha)`` per batch; ``perm`` a random permutation. Returns
    ``(x_mixed, targets_mixed)``, plus ``dict(lam, perm)`` when ``return_info``.
    """
    _check_mix_inputs(x, targets, alpha, "mixup")
    lam = float(_numpy_rng(generator).beta(alpha, alpha))
    perm = _perm(x.shape[0], generator, x.device)
    xm = lam * x + (1.0 - lam) * x[perm]
    tm = lam * targets + (1.0 - lam) * targets[perm]
    if return_info:
        return xm, tm, {"lam": lam, "perm": perm}
    return xm, tm


def cutmix(x: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator | None = None,
           return_info: bool = False):
    """CutMix: paste a box from ``x[perm]`` into ``x``; mix targets by the box's actual area.

    ``lam ~ Beta(alpha, alpha)``; the box has side ratio ``sqrt(1 - lam)``, a uniformly drawn
    centre, and is clipped at the image border, so the targets use the corrected
    ``lam = 1 - box_area / (H * W)``. Returns ``(x_mixed, targets_mixed)`` plus
    ``dict(lam, perm, box=(y0, y1, x0, x1))`` when ``return_info``. ``x`` is not modified.
    """
    _check_mix_inputs(x, targets, alpha, "cutmix")
    rng = _numpy_rng(generator)
    lam0 = float(rng.beta(alpha, alpha))
    h, w = x.shape[-2], x.shape[-1]
    ratio = math.sqrt(1.0 - lam0)
    ch, cw = int(h * ratio), int(w * ratio)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    perm = _perm(x.shape[0], generator, x.device)
    xm = x.clone()
    if y1 > y0 and x1 > x0:
        xm[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
    tm = lam * targets + (1.0 - lam) * targets[perm]
    if return_info:
        return xm, tm, {"lam": lam, "perm": perm, "box": (y0, y1, x0, x1)}
    return xm, tm


def maybe_mix(x: torch.Tensor, targets: torch.Tensor, kind: str | None, alpha: float, prob: float = 1.0,
              generator: torch.Generator | None = None):
    """Apply ``kind`` ('mixup', 'cutmix', or None/'none') to the batch with probability ``prob``.

    One uniform draw from ``generator`` decides per batch (as Laing's training loop does);
    when it does not fire, ``(x, targets)`` are returned unchanged.
    """
    if kind in (None, "none", ""):
        return x, targets
    if kind not in ("mixup", "cutmix"):
        raise ValueError(f"kind: expected 'mixup', 'cutmix' or None, got {kind!r}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob: expected a probability in [0, 1], got {prob}")
    u = float(torch.rand((), generator=generator))
    if u >= prob:
        return x, targets
    return (mixup if kind == "mixup" else cutmix)(x, targets, alpha, generator)


def mix_probability_from_entropy(probs: Any) -> float:
    """Laing's mixing probability: the mean Shannon entropy (natural log, nats) of the rows of
    ``probs`` (the CIFAR-10H distributions of the training images), clipped to [0, 1].

    Not normalised by log(C): CIFAR-10H's mean entropy is well below 1 nat, so the clip only
    guards against unusually uncertain label sets. ``0 log 0`` counts as 0.
    """
    p = probs.detach().cpu().double().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, dtype=np.float64)
    validate_targets(p, atol=1e-4, name="probs")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return float(np.clip(terms.sum(axis=1).mean(), 0.0, 1.0))


def duq_loss(kernel: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """DUQ loss: binary cross-entropy between per-class RBF kernel values ``[B, C]`` in [0, 1] and
    the targets ``[B, C]`` (one-hot or soft), averaged over batch and classes (van Amersfoort et al.).

    ``reduction='none'`` gives the per-image sum over classes. The gradient penalty is the model's
    job (``training_loss`` hook), not this function's.
    """
    if kernel.shape != targets.shape:
        if not targets.is_floating_point() and targets.ndim == 1:
            targets = F.one_hot(targets.long(), kernel.shape[1]).to(kernel.dtype)
        else:
            raise ValueError(f"targets: expected shape {tuple(kernel.shape)}, got {tuple(targets.shape)}")
    targets = targets.to(kernel.dtype)
    if reduction == "none":
        return F.binary_cross_entropy(kernel, targets, reduction="none").sum(dim=1)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
    return F.binary_cross_entropy(kernel, targets, reduction=reduction)
