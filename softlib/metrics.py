"""Evaluation metrics on predicted probabilities (numpy in, float or dict out).

Conventions: ``probs`` is ``[N, C]`` predicted probabilities (rows sum to 1), ``labels`` is
``[N]`` integer class ids, ``human_probs`` / soft targets are ``[N, C]`` distributions.
Means are over images. Logarithms are natural (nats). Ties in rankings are broken towards the
lower class index (a stable sort), as ``np.argmax`` does.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import rel_entr
from scipy.stats import rankdata

__all__ = [
    "accuracy",
    "check_probability_rows",
    "cross_entropy",
    "cross_entropy_from_logits",
    "nll",
    "second_best_accuracy",
    "confidence_by_correctness",
    "kl_divergence",
    "js_divergence",
    "expected_calibration_error",
    "reliability_diagram_data",
    "brier_score",
    "ood_auroc",
    "max_logit",
    "max_softmax",
    "summarize",
]

_SUM_ATOL = 1e-3  # predicted probabilities are usually float32 softmax outputs


def _to_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor, without importing torch here
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def check_probability_rows(p: np.ndarray, name: str, atol: float, hint: str = "") -> None:
    """Raise ``ValueError`` naming ``name`` and the first offending row of a 2-D float array
    that is not rows of probabilities: NaN/inf, a negative entry, a sum off 1 by more than
    ``atol``. One check for predicted probabilities (here) and training targets
    (:func:`softlib.losses.validate_targets`)."""
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: row {i} contains NaN or inf ({int(bad.sum())} such rows): "
                         f"{p[i].tolist()[:12]}")
    neg = (p < 0).any(axis=1)
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise ValueError(f"{name}: row {i} has a negative entry (min {p[i].min():.6g}); "
                         f"{int(neg.sum())} rows have negative entries")
    sums = p.sum(axis=1)
    off = np.abs(sums - 1.0) > atol
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise ValueError(f"{name}: row {i} sums to {sums[i]:.9g}, expected 1 within "
                         f"atol={atol:g} ({hint}{int(off.sum())} of {len(sums)} rows are off)")


def _probs(probs: Any, name: str = "probs", atol: float = _SUM_ATOL) -> np.ndarray:
    p = _to_numpy(probs).astype(np.float64, copy=False)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"{name}: expected probabilities of shape [N, C] with C >= 2, got shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one row, got shape {p.shape}")
    check_probability_rows(p, name, atol, hint="pass probabilities, not logits; ")
    return p


def _labels(labels: Any, n: int, c: int, name: str = "labels") -> np.ndarray:
    y = _to_numpy(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name}: expected 1-D integer class ids, got dtype {y.dtype} shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{name}: expected {n} entries (one per row of probs), got {y.shape[0]}")
    if y.size and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"{name}: expected ids in [0, {c - 1}], got range [{y.min()}, {y.max()}]")
    return y.astype(np.int64, copy=False)


def _targets(targets_or_labels: Any, n: int, c: int, name: str = "targets") -> np.ndarray:
    """Integer labels [N] -> one-hot; distributions [N, C] -> validated float64."""
    t = _to_numpy(targets_or_labels)
    if t.ndim == 1:
        y = _labels(t, n, c, name)
        out = np.zeros((n, c))
        out[np.arange(n), y] = 1.0
        return out
    t = _probs(t, name, atol=1e-4)
    if t.shape != (n, c):
        raise ValueError(f"{name}: expected shape {(n, c)}, got {t.shape}")
    return t


def _rank(p: np.ndarray) -> np.ndarray:
    """Classes ordered from most to least probable, ties to the lower index."""
    return np.argsort(-p, axis=1, kind="stable")


def accuracy(probs: Any, labels: Any) -> float:
    """Top-1 accuracy: fraction of images whose argmax equals the label."""
    p = _probs(probs)
    y = _labels(labels, *p.shape)
    return float((p.argmax(axis=1) == y).mean())


def cross_entropy(probs: Any, targets_or_labels: Any, eps: float = 1e-12) -> float:
    """Mean cross-entropy ``-sum_c t_c log max(p_c, eps)`` against hard labels [N] or soft targets [N, C]."""
    p = _probs(probs)
    t = _targets(targets_or_labels, *p.shape)
    return float(-(t * np.log(np.maximum(p, eps))).sum(axis=1).mean())


def cross_entropy_from_logits(logits: Any, targets_or_labels: Any) -> float:
    """Mean cross-entropy ``-sum_c t_c log softmax(z)_c`` computed from logits (float64
    log-softmax), against hard labels [N] or soft targets [N, C].

    Unlike :func:`cross_entropy` on stored probabilities, nothing is floored: an attacked image
    whose true class trails by a logit gap of 60 costs about 60 nats, not ``-log(1e-12)`` = 27.6.
    """
    from scipy.special import log_softmax
    z = np.asarray(_to_numpy(logits), dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits: expected shape [N, C], got {z.shape}")
    if not np.isfinite(z).all():
        bad = int(np.argwhere(~np.isfinite(z).all(axis=1))[0, 0])
        raise ValueError(f"logits: row {bad} contains NaN or inf")
    t = _targets(targets_or_labels, *z.shape)
    return float(-(t * log_softmax(z, axis=1)).sum(axis=1).mean())


def nll(probs: Any, labels: Any, eps: float = 1e-12) -> float:
    """Negative log-likelihood of the true class, ``mean(-log p[y])`` (hard labels only)."""
    p = _probs(probs)
    y = _labels(labels, *p.shape)
    return float(-np.log(np.maximum(p[np.arange(len(y)), y], eps)).mean())


def second_best_accuracy(probs: Any, human_probs: Any, ties: str = "any") -> float:
    """Second-best accuracy (SBA, Peterson et al. 2019).

    Only images where humans have a second choice count: the second-highest human probability
    is > 0. On those, the model is right when its second-ranked class equals the humans'
    second-ranked class. Ranks break ties towards the lower class index. Human ties matter
    (with ~50 votes, two runner-up classes often share a count): with ``ties='any'`` (default)
    the model's second class is right if it is any class, other than the humans' first-ranked
    class, whose human probability equals the second-highest value; with ``ties='index'`` only
    the lower-index one counts. Returns NaN when no image has a human second choice.
    """
    if ties not in ("any", "index"):
        raise ValueError(f"ties: expected 'any' or 'index', got {ties!r}")
    p = _probs(probs)
    h = _probs(human_probs, "human_probs", atol=1e-4)
    if h.shape != p.shape:
        raise ValueError(f"human_probs: expected shape {p.shape}, got {h.shape}")
    h_rank = _rank(h)
    rows = np.arange(h.shape[0])
    second_val = h[rows, h_rank[:, 1]]
    eligible = second_val > 0
    if not eligible.any():
        return float("nan")
    model_second = _rank(p)[:, 1]
    if ties == "index":
        hit = model_second == h_rank[:, 1]
    else:
        hit = (h[rows, model_second] == second_val) & (model_second != h_rank[:, 0])
    return float(hit[eligible].mean())


def confidence_by_correctness(probs: Any, labels: Any) -> dict:
    """Mean top-1 probability on correctly and incorrectly classified images (NaN if none)."""
    p = _probs(probs)
    y = _labels(labels, *p.shape)
    conf = p.max(axis=1)
    ok = p.argmax(axis=1) == y
    return {
        "correct": float(conf[ok].mean()) if ok.any() else float("nan"),
        "incorrect": float(conf[~ok].mean()) if (~ok).any() else float("nan"),
        "n_correct": int(ok.sum()),
        "n_incorrect": int((~ok).sum()),
    }


def kl_divergence(p_human: Any, q_model: Any, eps: float = 1e-12) -> float:
    """Mean over images of ``KL(p || q) = sum_c p_c log(p_c / q_c)`` in nats (``0 log 0 = 0``;
    ``q`` floored at ``eps`` so a zero model probability gives a large, finite value)."""
    p = _probs(p_human, "p_human", atol=1e-4)
    q = _probs(q_model, "q_model")
    if p.shape != q.shape:
        raise ValueError(f"q_model: expected shape {p.shape}, got {q.shape}")
    return float(rel_entr(p, np.maximum(q, eps)).sum(axis=1).mean())


def js_divergence(p: Any, q: Any) -> float:
    """Mean over images of the Jensen-Shannon divergence in nats,
    ``0.5 KL(p || m) + 0.5 KL(q || m)`` with ``m = (p + q) / 2`` (the divergence, i.e. the
    square of scipy's ``jensenshannon`` distance). Bounded by ``log 2``."""
    a = _probs(p, "p")
    b = _probs(q, "q")
    if a.shape != b.shape:
        raise ValueError(f"q: expected shape {a.shape}, got {b.shape}")
    m = 0.5 * (a + b)
    js = 0.5 * rel_entr(a, m).sum(axis=1) + 0.5 * rel_entr(b, m).sum(axis=1)
    return float(np.maximum(js, 0.0).mean())


def _bin_edges(n_bins: int) -> np.ndarray:
    """``k/M`` for k = 0..M, each the double nearest to it (``np.linspace`` gives
    0.7000000000000001 for 7/10, which would put a confidence of 0.7 in the bin below)."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins: expected a positive integer, got {n_bins}")
    return np.arange(int(n_bins) + 1) / int(n_bins)


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins ``[k/M, (k+1)/M)``; a confidence of exactly 1.0 goes to the last bin."""
    edges = _bin_edges(n_bins)
    return np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, int(n_bins) - 1)


def reliability_diagram_data(probs: Any, labels: Any, n_bins: int = 10) -> dict:
    """Per-bin data for reliability and proportion diagrams, binning the top-1 confidence.

    Returns arrays of length ``n_bins``: ``bin_lower``, ``bin_upper``, ``accuracy`` and
    ``confidence`` (mean within the bin, NaN if empty), ``proportion`` (share of images) and
    ``count``.
    """
    p = _probs(probs)
    y = _labels(labels, *p.shape)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx = _bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
    edges = _bin_edges(n_bins)
    return {
        "bin_lower": edges[:-1],
        "bin_upper": edges[1:],
        "accuracy": np.where(count > 0, acc, np.nan),
        "confidence": np.where(count > 0, mean_conf, np.nan),
        "proportion": count / float(len(y)),
        "count": count,
    }


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 10) -> float:
    """ECE = ``sum_b (n_b / N) |acc_b - conf_b|`` over ``n_bins`` equal-width bins of the top-1
    confidence (the paper's definition; not the true-class probability Laing's code bins)."""
    d = reliability_diagram_data(probs, labels, n_bins)
    ok = d["count"] > 0
    return float((d["proportion"][ok] * np.abs(d["accuracy"][ok] - d["confidence"][ok])).sum())


def brier_score(probs: Any, labels: Any) -> float:
    """Multiclass Brier score: mean over images of ``sum_c (p_c - t_c)^2`` where ``t`` is the
    one-hot label (or a soft target [N, C]). Ranges over [0, 2]; equals the sum over classes of
    the one-vs-rest binary Brier scores."""
    p = _probs(probs)
    t = _targets(labels, *p.shape, name="labels")
    return float(((p - t) ** 2).sum(axis=1).mean())


def ood_auroc(scores_in: Any, scores_out: Any) -> float:
    """AUROC for telling in-distribution (positive class) from out-of-distribution images, where
    a higher score means 'more in-distribution' (e.g. max logit). Computed as the Mann-Whitney
    statistic with average ranks for ties (a tie counts one half)."""
    a = _to_numpy(scores_in).astype(np.float64).ravel()
    b = _to_numpy(scores_out).astype(np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError(f"ood_auroc: need scores on both sides, got {a.size} in and {b.size} out")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("ood_auroc: scores contain NaN or inf")
    ranks = rankdata(np.concatenate([a, b]))
    u = ranks[: a.size].sum() - a.size * (a.size + 1) / 2.0
    return float(u / (a.size * b.size))


def max_logit(logits: Any) -> np.ndarray:
    """Per-image maximum logit (Laing's OOD score)."""
    z = _to_numpy(logits)
    if z.ndim != 2:
        raise ValueError(f"logits: expected shape [N, C], got {z.shape}")
    return z.max(axis=1)


def max_softmax(probs: Any) -> np.ndarray:
    """Per-image maximum predicted probability (the baseline OOD score)."""
    return _probs(probs).max(axis=1)


def summarize(probs: Any, labels: Any, human_probs: Any | None = None, n_bins: int = 10) -> dict:
    """The standard metrics in one call: accuracy, ce_hard (= nll), ece, brier, nll and, given
    ``human_probs``, ce_soft (CE against the human distributions), sba, kl and js."""
    out = {
        "accuracy": accuracy(probs, labels),
        "ce_hard": cross_entropy(probs, labels),
        "ece": expected_calibration_error(probs, labels, n_bins),
        "brier": brier_score(probs, labels),
        "nll": nll(probs, labels),
    }
    if human_probs is not None:
        out["ce_soft"] = cross_entropy(probs, human_probs)
        out["sba"] = second_best_accuracy(probs, human_probs)
        out["kl"] = kl_divergence(human_probs, probs)
        out["js"] = js_divergence(human_probs, probs)
    return out
