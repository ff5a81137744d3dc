"""softlib.data.splits and softlib.data.views."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from softlib.data import splits, views

LABELS = np.repeat(np.arange(10), 100)[np.random.default_rng(0).permutation(1000)]


def test_kfold_disjoint_cover_stratified_deterministic():
    folds = splits.kfold_splits(LABELS, k=10, seed=3)
    assert len(folds) == 10
    all_test = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(all_test), np.arange(1000))          # each index tested once
    for tr, te in folds:
        assert not set(tr) & set(te) and len(tr) + len(te) == 1000
        assert np.all(np.bincount(LABELS[te], minlength=10) == 10)      # stratified
    again = splits.kfold_splits(LABELS, k=10, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = splits.kfold_splits(LABELS, k=10, seed=4)
    assert not np.array_equal(folds[0][1], other[0][1])


def test_laing_split():
    labels = np.repeat(np.arange(10), 1000)
    tr, va, te = splits.laing_split(labels, seed=1)
    assert (len(tr), len(va), len(te)) == (8000, 500, 1500)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert np.all(np.bincount(labels[te], minlength=10) == 150)
    assert np.all(np.bincount(labels[va], minlength=10) == 50)
    tr2, _, te2 = splits.laing_split(labels, seed=1)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert not np.array_equal(te, splits.laing_split(labels, seed=2)[2])
    tr3, va3, te3 = splits.laing_split(10000, seed=0)
    assert len(np.unique(np.concatenate([tr3, va3, te3]))) == 10000
    with pytest.raises(ValueError, match="add up"):
        splits.laing_split(9999, seed=0)


def test_one_hot_and_soft():
    oh = views.one_hot(np.array([0, 3, 9]))
    assert oh.dtype == np.float32 and oh.shape == (3, 10) and np.all(oh.argmax(1) == [0, 3, 9])
    with pytest.raises(ValueError):
        views.one_hot(np.array([10]))
    p = np.full((2, 10), 0.1)
    assert views.human_soft_labels(p).dtype == np.float32
    with pytest.raises(ValueError):
        views.human_soft_labels(p * 2)


def test_majority_ties_seeded():
    counts = np.array([[5, 5, 0], [1, 7, 2]] * 200)
    a, b = views.majority_labels(counts, seed=0), views.majority_labels(counts, seed=0)
    assert np.array_equal(a, b)
    assert set(a[::2]) == {0, 1}                    # ties broken both ways, not always class 0
    assert np.all(a[1::2] == 1)                     # no tie: the argmax
    assert not np.array_equal(a, views.majority_labels(counts, seed=1))


def test_class_level_targets():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 5)
    p = rng.dirichlet(np.ones(10), size=50)
    t = views.class_level_targets(p, labels)
    assert len(np.unique(t.round(6), axis=0)) == 10
    np.testing.assert_allclose(t.sum(1), 1, atol=1e-6)
    expect = p[labels == 3].sum(0) / p[labels == 3].sum()
    np.testing.assert_allclose(t[labels == 3][0], expect, rtol=1e-5)


def test_sample_hard_labels_follows_distribution():
    p = np.tile(np.array([0.7, 0.2, 0.1] + [0.0] * 7), (20000, 1))
    s = views.sample_hard_labels(p, np.random.default_rng(0))
    assert s.dtype == np.float32 and np.all(s.sum(1) == 1)
    freq = s.mean(0)
    np.testing.assert_allclose(freq[:3], [0.7, 0.2, 0.1], atol=0.015)
    assert freq[3:].sum() == 0
    s2 = views.sample_hard_labels(p, np.random.default_rng(1))
    assert not np.array_equal(s, s2)


def test_entropy_matches_scipy():
    p = np.random.default_rng(0).dirichlet(np.ones(10), size=20)
    p[0] = np.eye(10)[2]
    np.testing.assert_allclose(views.entropy(p), scipy_entropy(p, axis=1), atol=1e-12)
    assert views.entropy(p)[0] == 0
