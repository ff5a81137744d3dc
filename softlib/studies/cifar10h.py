"""Section 1: what the CIFAR-10H human labels look like (Peterson et al. 2019, sec. 3).

Pure functions of the vote counts ``[N, 10]`` and the CIFAR-10 labels ``[N]``, so they are
testable on tiny inputs; the notebook only loads data and plots.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.views import entropy as _entropy

CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck"]


def vote_summary(counts: np.ndarray) -> dict[str, float]:
    """Votes per image: mean, min, max and the total number of judgments."""
    votes = np.asarray(counts).sum(axis=1)
    return {"images": int(len(votes)), "judgments": int(votes.sum()),
            "mean_votes": float(votes.mean()), "min_votes": int(votes.min()),
            "max_votes": int(votes.max())}


def human_accuracy_per_image(counts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fraction of each image's votes that agree with its CIFAR-10 label."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts[np.arange(len(labels)), labels] / counts.sum(axis=1)


def entropy_concentration(probs: np.ndarray, shares=(0.5, 0.8, 0.9)) -> pd.DataFrame:
    """How few images hold how much of the total label entropy.

    Images are sorted by decreasing entropy; for each share s the table gives the smallest
    fraction of images whose entropies sum to at least s of the total.
    """
    h = np.sort(_entropy(probs))[::-1]
    cum = np.cumsum(h) / h.sum()
    rows = []
    for s in shares:
        k = int(np.searchsorted(cum, s) + 1)
        rows.append({"share of total entropy": s, "images needed": k,
                     "fraction of images": k / len(h)})
    return pd.DataFrame(rows)


def entropy_share_of_most_uncertain(probs: np.ndarray, fraction: float = 0.3) -> float:
    """The share of the total label entropy held by the ``fraction`` most uncertain images
    (Peterson et al.: uncertainty is concentrated in roughly 30% of the images)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}")
    h = np.sort(_entropy(probs))[::-1]
    k = max(1, int(round(fraction * len(h))))
    return float(h[:k].sum() / h.sum())


#: Peterson et al. (2019) on the collection: participants, exclusions, images per participant.
PAPER_PARTICIPANTS = {"participants": 2571, "excluded by attention checks": 14,
                      "images per participant": 200}


def participant_facts(raw: pd.DataFrame) -> pd.DataFrame:
    """Participants and images per participant in the raw annotator table (attention-check
    trials already removed by the loader), beside the paper's numbers. The released table holds
    only the participants who passed, so exclusions are read as paper minus table."""
    per = raw.groupby("annotator_id")["cifar10_test_test_idx"].nunique()
    n = int(per.size)
    rows = [
        {"fact": "participants in the table", "this data": n,
         "paper": PAPER_PARTICIPANTS["participants"] - PAPER_PARTICIPANTS["excluded by attention checks"],
         "note": "paper: 2,571 took part, 14 were removed by attention checks"},
        {"fact": "images per participant (median)", "this data": float(per.median()),
         "paper": PAPER_PARTICIPANTS["images per participant"], "note": "20 per class"},
        {"fact": "judgments (non-attention trials)", "this data": int(len(raw)),
         "paper": 511400, "note": ""},
    ]
    return pd.DataFrame(rows).set_index("fact")


def entropy_lorenz(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fraction of images, fraction of total entropy) sorted by decreasing entropy."""
    h = np.sort(_entropy(probs))[::-1]
    x = np.arange(1, len(h) + 1) / len(h)
    return np.concatenate([[0.0], x]), np.concatenate([[0.0], np.cumsum(h) / h.sum()])


def human_confusion(counts: np.ndarray, labels: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Row-normalised matrix: share of votes for class j on images whose CIFAR-10 label is i."""
    counts = np.asarray(counts, dtype=np.float64)
    m = np.zeros((num_classes, num_classes))
    np.add.at(m, np.asarray(labels), counts)
    return m / m.sum(axis=1, keepdims=True)


def top_confusions(confusion: np.ndarray, k: int = 8) -> pd.DataFrame:
    """The k largest off-diagonal entries of a row-normalised confusion matrix."""
    off = confusion.copy()
    np.fill_diagonal(off, -1)
    flat = np.argsort(off, axis=None)[::-1][:k]
    rows = [{"true class": CLASSES[i], "humans said": CLASSES[j], "share of votes": off[i, j]}
            for i, j in zip(*np.unravel_index(flat, off.shape))]
    return pd.DataFrame(rows)


def gallery_indices(counts: np.ndarray, labels: np.ndarray, per_group: int = 6,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Image indices for the gallery (the paper's Figure 1 idea).

    * ``certain``: every vote agrees with the CIFAR-10 label (a random draw among them);
    * ``split``: the highest label entropy;
    * ``confused``: the human majority disagrees with the CIFAR-10 label, most votes first.
    """
    counts = np.asarray(counts, dtype=np.float64)
    probs = counts / counts.sum(axis=1, keepdims=True)
    h = _entropy(probs)
    rng = np.random.default_rng(seed)
    certain = np.flatnonzero(probs[np.arange(len(labels)), labels] == 1.0)
    certain = rng.choice(certain, size=min(per_group, len(certain)), replace=False)
    split = np.argsort(h)[::-1][:per_group]
    majority = probs.argmax(axis=1)
    wrong = np.flatnonzero(majority != labels)
    confused = wrong[np.argsort(probs[wrong].max(axis=1))[::-1]][:per_group]
    return {"certain": np.sort(certain), "split": split, "confused": confused}


def per_class_table(counts: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Per CIFAR-10 class: mean human accuracy and mean label entropy."""
    counts = np.asarray(counts, dtype=np.float64)
    probs = counts / counts.sum(axis=1, keepdims=True)
    acc = human_accuracy_per_image(counts, labels)
    h = _entropy(probs)
    df = pd.DataFrame({"class": [CLASSES[i] for i in labels], "human accuracy": acc,
                       "entropy (nats)": h})
    return df.groupby("class", sort=False).mean().reindex(CLASSES)
