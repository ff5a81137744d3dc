"""Train/validation/test splits of the 10,000 CIFAR-10H images.

* :func:`kfold_splits`: Peterson et al.'s 10-fold cross-validation, stratified by the CIFAR-10
  label (sklearn ``StratifiedKFold`` with shuffling, seeded).
* :func:`laing_split`: Laing's 8,000 / 500 / 1,500 train / validation / test split, stratified,
  drawn afresh for each seed (Laing's seed drives the split too).
"""
from __future__ import annotations

import numpy as np


def kfold_splits(labels: np.ndarray, k: int = 10, seed: int = 0
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train_idx, test_idx) pairs; every index is in exactly one test fold."""
    from sklearn.model_selection import StratifiedKFold
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"kfold_splits: labels must be 1-D, got shape {labels.shape}")
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64))
            for tr, te in skf.split(np.zeros(len(labels)), labels)]


def laing_split(labels_or_n: np.ndarray | int, seed: int = 0, sizes: tuple[int, int, int] =
                (8000, 500, 1500)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) index arrays of ``sizes`` (default 8000/500/1500), disjoint.

    Given labels, the split is stratified by label; given a count, it is a plain random split.
    Deterministic in ``seed``.
    """
    from sklearn.model_selection import train_test_split
    if np.ndim(labels_or_n) == 0:
        n = int(labels_or_n)
        strat = None
    else:
        labels = np.asarray(labels_or_n)
        n, strat = len(labels), labels
    n_tr, n_va, n_te = sizes
    if n_tr + n_va + n_te != n:
        raise ValueError(f"laing_split: sizes ({n_tr}, {n_va}, {n_te}) add up to "
                         f"{n_tr + n_va + n_te}, but there are {n} images")
    idx = np.arange(n)
    rest, test = train_test_split(idx, test_size=n_te, random_state=seed, stratify=strat)
    train, val = train_test_split(rest, test_size=n_va, random_state=seed + 1,
                                  stratify=None if strat is None else strat[rest])
    return np.sort(train), np.sort(val), np.sort(test)
