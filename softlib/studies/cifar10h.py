"""Section 1: what the CIFAR-10H human labels look like (Peterson et al. 2019, sec. 3).

Pure functions of the vote counts ``[N, 10]`` and the CIFAR-10 labels ``[N]``, so they are
testable on tiny inputs; the notebook only loads data and plots.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import figures as F
from ..data.views import entropy as _entropy

CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck"]


def vote_summary(counts: np.ndarray) -> dict[str, float]:
    """Votes per image: mean, min, max and the total number of judgments."""
    votes = np.asarray(counts).sum(axis=1)
    return {"images": int(len(votes)), "judgments": int(votes.sum()),
            "mean_votes": float(votes.mean()), "min_votes": int(votes.min()),
            "max_votes": int(votes.max())}


def vote_shares(counts: np.ndarray) -> np.ndarray:
    """Each image's votes as shares of its total: the human label distribution."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts / counts.sum(axis=1, keepdims=True)


def human_accuracy_per_image(counts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fraction of each image's votes that agree with its CIFAR-10 label."""
    return vote_shares(counts)[np.arange(len(labels)), labels]


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


#: Peterson et al. (2019), section 3, on the collection: what the "this data vs the paper"
#: tables compare against.
PAPER_COLLECTION = {"images": 10000, "judgments": 511400, "participants": 2571,
                    "excluded by attention checks": 14, "images per participant": 200,
                    "mean votes (about)": 51, "votes per image": (47, 63)}


def _judgment_note(judgments: int) -> str:
    """Why a judgment count may differ from the paper's: the paper's total is the participants
    who passed the attention checks times their 200 images."""
    pc = PAPER_COLLECTION
    kept = pc["participants"] - pc["excluded by attention checks"]
    per = pc["images per participant"]
    note = (f"the paper's {pc['judgments']:,} = ({pc['participants']:,} − "
            f"{pc['excluded by attention checks']}) participants × {per} images")
    gap = pc["judgments"] - judgments
    if gap > 0 and gap % per == 0 and kept * per == pc["judgments"]:
        note += (f"; these files hold {gap:,} fewer, {gap // per} participant"
                 f"{'s' if gap // per > 1 else ''}' worth")
    return note


def paper_comparison(counts: np.ndarray) -> pd.DataFrame:
    """The paper's description of the collection beside what these vote counts hold, with
    whether each agrees and, where one does not, the arithmetic that may explain it."""
    s = vote_summary(counts)
    pc = PAPER_COLLECTION
    lo, hi = pc["votes per image"]
    rows = [
        ("images", f"{pc['images']:,}", f"{s['images']:,}", s["images"] == pc["images"], ""),
        ("judgments", f"{pc['judgments']:,}", f"{s['judgments']:,}",
         s["judgments"] == pc["judgments"],
         "" if s["judgments"] == pc["judgments"] else _judgment_note(s["judgments"])),
        ("votes per image (mean)", f"about {pc['mean votes (about)']}", f"{s['mean_votes']:.1f}",
         round(s["mean_votes"]) == pc["mean votes (about)"], ""),
        ("votes per image (range)", f"{lo}-{hi}", f"{s['min_votes']}-{s['max_votes']}",
         (s["min_votes"], s["max_votes"]) == (lo, hi), ""),
    ]
    return pd.DataFrame(rows, columns=["quantity", "paper", "this data", "agrees", "note"])


def participant_facts(raw: pd.DataFrame) -> pd.DataFrame:
    """Participants and images per participant in the raw annotator table (attention-check
    trials already removed by the loader), beside the paper's numbers. The released table holds
    only the participants who passed, so exclusions are read as paper minus table."""
    per = raw.groupby("annotator_id")["cifar10_test_test_idx"].nunique()
    n = int(per.size)
    rows = [
        {"fact": "participants in the table", "this data": n,
         "paper": PAPER_COLLECTION["participants"]
         - PAPER_COLLECTION["excluded by attention checks"],
         "note": f"paper: {PAPER_COLLECTION['participants']:,} took part, "
                 f"{PAPER_COLLECTION['excluded by attention checks']} were removed by "
                 "attention checks"},
        {"fact": "images per participant (median)", "this data": float(per.median()),
         "paper": PAPER_COLLECTION["images per participant"], "note": "20 per class"},
        {"fact": "judgments (non-attention trials)", "this data": int(len(raw)),
         "paper": PAPER_COLLECTION["judgments"], "note": ""},
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
    with np.errstate(invalid="ignore"):  # a class without images gets a row of NaN
        return m / m.sum(axis=1, keepdims=True)


def top_confusions(confusion: np.ndarray, k: int = 8) -> pd.DataFrame:
    """The k largest off-diagonal entries of a row-normalised confusion matrix."""
    off = confusion.copy()
    np.fill_diagonal(off, -1)
    flat = np.argsort(off, axis=None)[::-1][:k]
    rows = [{"true class": CLASSES[i], "humans said": CLASSES[j], "share of votes": off[i, j]}
            for i, j in zip(*np.unravel_index(flat, off.shape))]
    return pd.DataFrame(rows)


#: The gallery's groups, as :func:`gallery_indices` picks them.
GALLERY_GROUPS = {"certain": "every vote names\nthe CIFAR-10 label",
                  "split": "the most divided\nimages",
                  "confused": "the majority names\nanother class"}


def gallery_indices(counts: np.ndarray, labels: np.ndarray, per_group: int = 6,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Image indices for the gallery (the paper's Figure 1 idea).

    * ``certain``: every vote agrees with the CIFAR-10 label (a random draw among them);
    * ``split``: the highest label entropy;
    * ``confused``: the human majority disagrees with the CIFAR-10 label, most votes first.
    """
    probs = vote_shares(counts)
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
    probs = vote_shares(counts)
    acc = human_accuracy_per_image(counts, labels)
    h = _entropy(probs)
    df = pd.DataFrame({"class": [CLASSES[i] for i in labels], "human accuracy": acc,
                       "entropy (nats)": h})
    return df.groupby("class", sort=False).mean().reindex(CLASSES)


def takeaways(counts: np.ndarray, labels: np.ndarray, top_fraction: float = 0.3) -> list[str]:
    """The section's conclusions, written from the vote counts."""
    counts = np.asarray(counts, dtype=np.float64)
    probs = vote_shares(counts)
    n = len(labels)
    acc = human_accuracy_per_image(counts, labels)
    wrong = int((probs.argmax(axis=1) != labels).sum())
    out = [f"On average {acc.mean():.1%} of an image's votes name its CIFAR-10 label; every "
           f"vote does on {(acc == 1).mean():.0%} of the {n:,} images, and the majority names "
           f"another class on {wrong} images ({wrong / n:.2%})."]
    share = entropy_share_of_most_uncertain(probs, top_fraction)
    half = entropy_concentration(probs, shares=(0.5,))["fraction of images"].iloc[0]
    where = ("The uncertainty sits in a minority of images" if share >= 2 * top_fraction else
             "The uncertainty is spread over many images")
    out.append(f"{where}: the {top_fraction:.0%} most uncertain hold {share:.0%} of the total "
               f"label entropy (an even spread would give {top_fraction:.0%}), and half of it "
               f"sits in {half:.0%} of the images (the paper: concentrated in roughly "
               f"{top_fraction:.0%}).")
    conf = human_confusion(counts, labels, num_classes=counts.shape[1])
    top = top_confusions(conf, k=3)
    pairs = ", ".join(f"{r['true class']} called {r['humans said']} ({r['share of votes']:.1%} "
                      "of its votes)" for _, r in top.iterrows())
    per = per_class_table(counts, labels)["human accuracy"]
    out.append(f"The largest confusions: {pairs}. People are least sure of "
               f"{per.idxmin()} ({per.min():.1%} of votes on the label) and surest of "
               f"{per.idxmax()} ({per.max():.1%}).")
    cmp = paper_comparison(counts)
    off = cmp[~cmp["agrees"]]
    if len(off):
        out.append("Against the paper's description: " + "; ".join(
            f"{r['quantity']} {r['this data']} here vs {r['paper']} in the paper"
            + (f" ({r['note']})" if r["note"] else "") for _, r in off.iterrows()) + ".")
    return out


def plot_confusion(counts: np.ndarray, labels: np.ndarray):
    """Left: where the votes that miss the CIFAR-10 label go, coloured on their own scale
    (the diagonal, 90% and more, would otherwise wash every confusion out). Right: per class,
    the mean share of votes on the label."""
    import matplotlib.pyplot as plt

    conf = human_confusion(counts, labels, num_classes=len(CLASSES))
    off = 100 * conf
    np.fill_diagonal(off, np.nan)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), width_ratios=[1.6, 1])
    ax = axes[0]
    im = ax.imshow(off, cmap="Reds", vmin=0)
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            if i == j:
                ax.text(j, i, "-", ha="center", va="center", color="0.6", fontsize=7)
            elif off[i, j] >= 0.5:
                ax.text(j, i, f"{off[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if off[i, j] > 0.6 * np.nanmax(off) else "black")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=8)
    ax.set(xlabel="class people voted for", ylabel="CIFAR-10 label")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the row's votes (%)")
    ax.set_title("Where do the votes that miss the label go?\n(cells under 0.5% left blank)",
                 fontsize=10)
    ax = axes[1]
    per = 100 * per_class_table(counts, labels)["human accuracy"].dropna().sort_values()
    ax.barh(per.index, per.to_numpy(), color="C0")
    for y, v in enumerate(per.to_numpy()):
        ax.text(v - 0.3, y, f"{v:.1f}", ha="right", va="center", color="white", fontsize=7)
    ax.set(xlim=(max(0, per.min() - 8), 100),
           xlabel="mean share of an image's votes on its label (%)")
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title("How sure are people, class by class?", fontsize=10)
    fig.tight_layout()
    return fig


def plot_gallery(images: np.ndarray, counts: np.ndarray, labels: np.ndarray,
                 groups: dict[str, np.ndarray]):
    """One row per gallery group: each image with its CIFAR-10 label above, and below it a bar
    split by the share of votes each class got (colours in the legend) and the top two
    classes in words."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    probs = vote_shares(counts)
    n = max(1, max(len(idx) for idx in groups.values()))
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(len(groups), n, figsize=(1.45 * n + 1.2, 2.55 * len(groups)),
                             squeeze=False)
    for g, (name, idx) in enumerate(groups.items()):
        for j in range(n):
            ax = axes[g, j]
            ax.set_xticks([]), ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j == 0:
                ax.set_ylabel(f"{name}\n{GALLERY_GROUPS.get(name, '')}", fontsize=8)
            if j >= len(idx):
                continue
            i = int(idx[j])
            ax.imshow(images[i])
            ax.set_title(f"#{i}: {CLASSES[labels[i]]}", fontsize=8)
            bar = ax.inset_axes([0, -0.2, 1, 0.13])
            left = 0.0
            for c in range(len(CLASSES)):
                bar.barh(0, probs[i, c], left=left, color=colours[c], height=1,
                         edgecolor="white" if probs[i, c] > 0.02 else "none", linewidth=0.5)
                left += probs[i, c]
            bar.set(xlim=(0, 1), ylim=(-0.5, 0.5))
            bar.axis("off")
            top = np.argsort(probs[i])[::-1][:2]
            words = " / ".join(f"{CLASSES[c][:5]} {probs[i, c]:.0%}" for c in top
                               if probs[i, c] > 0)
            bar.text(0.5, -1.1, words, transform=bar.transAxes, ha="center", va="top",
                     fontsize=7)
    fig.legend(handles=[Patch(color=colours[c], label=CLASSES[c]) for c in range(len(CLASSES))],
               loc="lower center", ncol=len(CLASSES) // 2, fontsize=8, frameon=False,
               title="bars: share of the image's human votes per class", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1), h_pad=2.6)
    return fig


def plot_agreement(counts: np.ndarray, labels: np.ndarray):
    """Two histograms over the images: the share of each image's votes that name its CIFAR-10
    label, and the entropy of its human label distribution, each with its mean."""
    import matplotlib.pyplot as plt

    acc = human_accuracy_per_image(counts, labels)
    h = _entropy(vote_shares(counts))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    panels = ((acc, "C0", f"mean {acc.mean():.3f}",
               "share of an image's votes naming its CIFAR-10 label (fraction)",
               "How often do people agree with the CIFAR-10 label?"),
              (h, "C1", f"mean {h.mean():.3f} nats",
               "entropy of the human label distribution (nats)",
               "How uncertain are people about each image?"))
    for ax, (v, colour, mean, xlabel, question) in zip(axes, panels):
        ax.hist(v, bins=50, color=colour)
        ax.axvline(v.mean(), color="k", ls=":", lw=1, label=mean)
        ax.set(xlabel=xlabel, ylabel="images (count)")
        F.question_title(ax, question,
                         note=f"all {len(v):,} images; no error bars: the histogram is the spread")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_entropy_concentration(probs: np.ndarray, top_fraction: float = 0.3):
    """The cumulative share of the total label entropy against the fraction of images, most
    uncertain first, with the paper's "roughly 30%" and the share that fraction holds here."""
    import matplotlib.pyplot as plt

    top = entropy_share_of_most_uncertain(probs, top_fraction)
    x, y = entropy_lorenz(probs)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(x, y, label="this data: cumulative share of entropy")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="uncertainty spread evenly")
    F.paper_line(ax, x=top_fraction,
                 label=f"paper: concentrated in roughly {top_fraction:.0%} of images")
    ax.plot(top_fraction, top, "o", color="C0",
            label=f"{top_fraction:.0%} most uncertain hold {top:.0%}")
    ax.set(xlabel="fraction of images, most uncertain first (fraction)",
           ylabel="fraction of total label entropy (fraction)")
    F.question_title(ax, "Is human uncertainty concentrated in a minority of images?",
                     "Peterson et al. §3", "all images; exact shares, no sampling error shown")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_annotators(raw: pd.DataFrame):
    """Histogram of each annotator's accuracy (share of their answers matching CIFAR-10) in
    the raw annotator table."""
    import matplotlib.pyplot as plt

    per = raw.groupby("annotator_id")["correct_guess"].mean()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(per, bins=40, color="C0")
    ax.set(xlabel="annotator accuracy: share of their answers matching CIFAR-10 (fraction)",
           ylabel="annotators (count)")
    F.question_title(ax, "How accurate is each annotator?",
                     note=f"{len(per)} annotators (attention checks excluded); "
                          "the histogram is the spread")
    fig.tight_layout()
    return fig
