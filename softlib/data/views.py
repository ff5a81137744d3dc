"""Label views of CIFAR-10H: the different training targets the studies compare.

All return float32 probability vectors [N, C] (hard labels are one-hot) except
:func:`majority_labels` (int64 ids) and :func:`entropy` (float64 nats per image).
"""
from __future__ import annotations

import numpy as np


def _probs(p: np.ndarray, name: str = "probs") -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"{name} must be [N, C], got shape {p.shape}")
    if (p < 0).any() or np.abs(p.sum(1) - 1).max(initial=0) > 1e-6:
        raise ValueError(f"{name} must be non-negative with rows summing to 1 within 1e-6")
    return p


def human_soft_labels(h) -> np.ndarray:
    """The CIFAR-10H probabilities as float32 targets (``h``: HumanLabels or an array)."""
    p = _probs(getattr(h, "probs", h))
    return p.astype(np.float32)


def majority_labels(counts: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per-image majority vote of ``counts`` [N, C].

    Ties are broken by one seeded draw per image among the tied classes
    (``np.random.default_rng(seed)``), so the result is deterministic in ``seed`` and does not
    favour low class ids, unlike a plain argmax.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"counts must be [N, C], got shape {c.shape}")
    top = c == c.max(axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    u = rng.random(c.shape)
    return np.argmax(np.where(top, u, -1.0), axis=1).astype(np.int64)


def one_hot(labels: np.ndarray, C: int = 10) -> np.ndarray:
    """float32 one-hot [N, C] of integer ``labels``; other dtypes or ids outside 0..C-1 raise ValueError."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels: expected a 1-D integer array, got {arr.dtype} shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= C):
        raise ValueError(f"labels: expected values in [0, {C - 1}], got [{arr.min()}, {arr.max()}]")
    out = np.zeros((len(arr), C), np.float32)
    out[np.arange(len(arr)), arr] = 1.0
    return out


def class_level_targets(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Peterson et al.'s class-level targets: human probabilities summed within each CIFAR-10
    class and renormalised (one vector per class); each image gets its class's vector."""
    p = _probs(probs)
    labels = np.asarray(labels)
    C = p.shape[1]
    if labels.shape != (len(p),):
        raise ValueError(f"class_level_targets: labels must have shape ({len(p)},)")
    table = np.zeros((C, C))
    np.add.at(table, labels, p)
    sums = table.sum(1, keepdims=True)
    table = np.divide(table, sums, out=np.full_like(table, 1.0 / C), where=sums > 0)
    return table[labels].astype(np.float32)


def sample_hard_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per image from its human distribution, as one-hot float32 (redraw each epoch)."""
    p = _probs(probs)
    cdf = np.cumsum(p, axis=1)
    u = rng.random((len(p), 1)) * cdf[:, -1:]
    idx = np.minimum((u >= cdf).sum(axis=1), p.shape[1] - 1)
    return one_hot(idx, p.shape[1])


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats of each row (0 log 0 = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * np.log(p), 0.0)
    return -t.sum(axis=-1)
