"""Tests for softlib.metrics, cross-checked against scikit-learn, scipy and torchmetrics."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr, softmax
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from torchmetrics.classification import MulticlassCalibrationError

from softlib import metrics as M


def _data(n=300, c=10, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(size=(n, c)) * scale, axis=1)
    labels = rng.integers(0, c, size=n)
    # make the model better than chance so both correct and wrong images exist
    labels[: n // 2] = probs[: n // 2].argmax(1)
    human = softmax(rng.normal(size=(n, c)) * 3, axis=1)
    return probs, labels, human


def test_accuracy_and_nll_vs_sklearn():
    p, y, _ = _data()
    assert M.accuracy(p, y) == pytest.approx(np.mean(p.argmax(1) == y))
    assert M.nll(p, y) == pytest.approx(log_loss(y, p, labels=list(range(10))), rel=1e-9)
    assert M.cross_entropy(p, y) == pytest.approx(M.nll(p, y), rel=1e-12)


def test_cross_entropy_soft_targets():
    p, y, h = _data()
    expect = -(h * np.log(p)).sum(1).mean()
    assert M.cross_entropy(p, h) == pytest.approx(expect, rel=1e-12)
    # CE(h, p) = H(h) + KL(h || p)
    ent = -(h * np.log(h)).sum(1).mean()
    assert M.cross_entropy(p, h) == pytest.approx(ent + M.kl_divergence(h, p), rel=1e-9)
    # zero probabilities are floored, not inf
    q = np.array([[1.0, 0.0]])
    assert math.isfinite(M.cross_entropy(q, np.array([1])))


def test_kl_and_js_vs_scipy():
    p, _, h = _data(seed=1)
    assert M.kl_divergence(h, p) == pytest.approx(rel_entr(h, p).sum(1).mean(), rel=1e-12)
    js_ref = np.mean(jensenshannon(h, p, axis=1) ** 2)
    assert M.js_divergence(h, p) == pytest.approx(js_ref, rel=1e-9)
    assert M.js_divergence(p, h) == pytest.approx(M.js_divergence(h, p), rel=1e-12)
    assert M.js_divergence(h, h) == pytest.approx(0.0, abs=1e-12)
    assert M.kl_divergence(h, h) == pytest.approx(0.0, abs=1e-12)
    one_hot = np.eye(2)
    assert M.js_divergence(one_hot, one_hot[::-1]) == pytest.approx(math.log(2))


def test_brier_vs_sklearn_one_vs_rest():
    p, y, _ = _data(seed=2)
    ref = sum(brier_score_loss((y == c).astype(int), p[:, c]) for c in range(10))
    assert M.brier_score(p, y) == pytest.approx(ref, rel=1e-12)
    assert M.brier_score(np.eye(3), np.arange(3)) == 0.0
    assert M.brier_score(np.eye(3), np.array([1, 2, 0])) == 2.0


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_ece_vs_torchmetrics(n_bins):
    p, y, _ = _data(n=500, seed=3, scale=1.5)
    tm = MulticlassCalibrationError(num_classes=10, n_bins=n_bins, norm="l1")
    ref = float(tm(torch.tensor(p), torch.tensor(y)))
    assert M.expected_calibration_error(p, y, n_bins) == pytest.approx(ref, abs=1e-6)


def test_ece_uses_top1_confidence_and_last_bin_includes_one():
    # top-1 confidence 0.7 on both, one right one wrong: accuracy 0.5, ECE 0.2
    p = np.array([[0.7, 0.3], [0.3, 0.7]])
    y = np.array([0, 0])
    assert M.expected_calibration_error(p, y) == pytest.approx(0.2)
    d = M.reliability_diagram_data(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]), n_bins=10)
    assert d["count"][-1] == 2 and d["count"].sum() == 2
    assert d["accuracy"][-1] == 0.5 and d["confidence"][-1] == 1.0


def test_a_confidence_on_a_bin_edge_opens_that_bin():
    # k/10 belongs to [k/10, (k+1)/10) for every k, 0.7 included (np.linspace's edge 7 is
    # 0.7000000000000001, which put it in [0.6, 0.7))
    conf = np.arange(10) / 10
    assert M._bin_index(conf, 10).tolist() == list(range(10))
    # top-1 confidences 0.5, 0.6, ..., 1.0 (1.0 joins the last bin)
    d = M.reliability_diagram_data(np.array([[c, 1 - c] if c >= 0.5 else [1 - c, c]
                                             for c in np.arange(5, 11) / 10]), np.zeros(6, int))
    assert d["count"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 2]


def test_reliability_diagram_data_consistent():
    p, y, _ = _data(seed=4)
    d = M.reliability_diagram_data(p, y, n_bins=10)
    assert d["count"].sum() == len(y)
    assert d["proportion"].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(d["bin_lower"], np.arange(10) / 10)
    np.testing.assert_allclose(d["bin_upper"], np.arange(1, 11) / 10)
    ok = d["count"] > 0
    assert np.all(d["confidence"][ok] >= d["bin_lower"][ok]) and np.all(d["confidence"][ok] <= d["bin_upper"][ok])
    assert np.isnan(d["accuracy"][~ok]).all()
    conf = p.max(1)
    correct = p.argmax(1) == y
    # recompute one bin by hand
    b = int(np.argmax(d["count"]))
    m = (conf >= b / 10) & (conf < (b + 1) / 10)
    assert d["accuracy"][b] == pytest.approx(correct[m].mean())


def test_ood_auroc_vs_sklearn_with_ties():
    rng = np.random.default_rng(5)
    a = rng.normal(1.0, 1.0, 200)
    b = rng.normal(0.0, 1.0, 150)
    ref = roc_auc_score(np.r_[np.ones(200), np.zeros(150)], np.r_[a, b])
    assert M.ood_auroc(a, b) == pytest.approx(ref, rel=1e-12)
    a, b = np.round(a), np.round(b)  # many ties
    ref = roc_auc_score(np.r_[np.ones(200), np.zeros(150)], np.r_[a, b])
    assert M.ood_auroc(a, b) == pytest.approx(ref, rel=1e-12)
    assert M.ood_auroc([2, 3], [0, 1]) == 1.0 and M.ood_auroc([0], [1]) == 0.0


def test_max_logit_and_softmax():
    z = np.array([[1.0, 3.0], [-2.0, -1.0]])
    np.testing.assert_array_equal(M.max_logit(z), [3.0, -1.0])
    np.testing.assert_allclose(M.max_softmax(softmax(z, axis=1)), softmax(z, axis=1).max(1))


def test_confidence_by_correctness():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    d = M.confidence_by_correctness(p, np.array([0, 1, 1]))
    assert d["correct"] == pytest.approx(0.85) and d["incorrect"] == pytest.approx(0.6)
    assert d["n_correct"] == 2 and d["n_incorrect"] == 1
    assert math.isnan(M.confidence_by_correctness(p[:1], np.array([0]))["incorrect"])


def test_second_best_accuracy():
    h = np.array([
        [0.6, 0.3, 0.1, 0.0],  # humans' second: 1
        [1.0, 0.0, 0.0, 0.0],  # no second choice -> excluded
        [0.5, 0.2, 0.2, 0.1],  # tie for second between 1 and 2
        [0.4, 0.4, 0.2, 0.0],  # tie for first: ranks 0 then 1
    ])
    model = np.array([
        [0.7, 0.2, 0.1, 0.0],  # second 1 -> right
        [0.1, 0.2, 0.7, 0.0],  # ignored
        [0.5, 0.1, 0.3, 0.1],  # second 2 -> right under 'any', wrong under 'index'
        [0.1, 0.6, 0.3, 0.0],  # second 2 -> wrong (humans' second is 1)
    ])
    assert M.second_best_accuracy(model, h) == pytest.approx(2 / 3)
    assert M.second_best_accuracy(model, h, ties="index") == pytest.approx(1 / 3)
    assert math.isnan(M.second_best_accuracy(model[1:2], h[1:2]))
    # a model equal to the humans gets everything right
    assert M.second_best_accuracy(h, h) == 1.0


def test_second_best_accuracy_random_vs_loop():
    p, _, h = _data(n=100, seed=6)
    h[::3] = np.eye(10)[np.arange(len(h[::3])) % 10]  # some images without a second choice
    hits = []
    for pi, hi in zip(p, h):
        order = np.argsort(-hi, kind="stable")
        if hi[order[1]] > 0:
            hits.append(np.argsort(-pi, kind="stable")[1] == order[1])
    assert M.second_best_accuracy(p, h) == pytest.approx(np.mean(hits))


def test_input_errors():
    p, y, h = _data(n=5)
    with pytest.raises(ValueError, match="probs: row 0 sums"):
        M.accuracy(p * 2, y)
    with pytest.raises(ValueError, match="labels: expected 5 entries"):
        M.accuracy(p, y[:4])
    with pytest.raises(ValueError, match=r"labels: expected ids in \[0, 9\]"):
        M.nll(p, y + 10)
    with pytest.raises(ValueError, match="shape"):
        M.cross_entropy(p, h[:, :5] / h[:, :5].sum(1, keepdims=True))
    with pytest.raises(ValueError, match="NaN"):
        M.accuracy(np.full((2, 2), np.nan), np.array([0, 1]))


def test_summarize():
    p, y, h = _data(seed=7)
    s = M.summarize(p, y)
    assert set(s) == {"accuracy", "ce_hard", "ece", "brier", "nll"}
    s = M.summarize(p, y, h)
    assert s["ce_soft"] == pytest.approx(M.cross_entropy(p, h))
    assert s["sba"] == pytest.approx(M.second_best_accuracy(p, h))
    assert s["accuracy"] == pytest.approx(M.accuracy(p, y))
    assert {"kl", "js"} <= set(s)
    # torch tensors are accepted too
    assert M.accuracy(torch.tensor(p), torch.tensor(y)) == s["accuracy"]


def test_cross_entropy_from_logits_is_not_capped_like_stored_probabilities():
    import numpy as np
    import pytest
    from softlib import metrics
    z = np.zeros((2, 10))
    z[:, 3] = 60.0                     # the model is sure of class 3 ...
    y = np.array([0, 3])                # ... and wrong on the first image by a logit gap of 60
    ce = metrics.cross_entropy_from_logits(z, y)
    assert ce == pytest.approx((60.0 + np.log1p(9 * np.exp(-60.0)) + 9 * 0) / 2 + 0.0, abs=1e-6)
    # the same through float32 probabilities is floored at -log(1e-12) = 27.6 nats per image
    from scipy.special import softmax
    p = softmax(z, axis=1).astype(np.float32)
    assert metrics.cross_entropy(p / p.sum(1, keepdims=True), y) < 14.0
    soft = np.full((2, 10), 0.1)
    assert metrics.cross_entropy_from_logits(np.zeros((2, 10)), soft) == pytest.approx(np.log(10))
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.cross_entropy_from_logits(np.full((1, 10), np.nan), [0])
