# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. The data: CIFAR-10H
#
# CIFAR-10H (Peterson et al. 2019) asked people to label every image of the CIFAR-10 *test*
# set: about 51 judgments per image, 511,400 in all. Instead of one label per image, each image
# now has a distribution over the ten classes. This section looks at that distribution: how many
# votes, how often people agree with the CIFAR-10 label, where the uncertainty sits, and which
# classes people confuse.

# %% tags=["parameters"]
profile = "cpu"
data_root = ""
output_dir = ""
seed = 0
device = "auto"
gallery_per_group = None

# %%
from softlib.book.header import show_header

sec = show_header(profile, "cifar10h_data", datasets=["cifar10h", "cifar10"], params=locals())

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import display

from softlib import data
from softlib.book import figures as F
from softlib.studies import cifar10h as study

human = data.load_cifar10h()
test = data.load("cifar10", "test")
counts, probs, labels = human.counts, human.probs, test.labels
pd.DataFrame([study.vote_summary(counts)]).style.format({"mean_votes": "{:.1f}"}).set_caption(
    "votes (human judgments) per image: counts")

# %% [markdown]
# ## How often do people agree with the CIFAR-10 label?
# Each image's *human accuracy* is the share of its votes that name its CIFAR-10 label.

# %%
acc = study.human_accuracy_per_image(counts, labels)
entropy = data.views.entropy(probs)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].hist(acc, bins=50, color="C0")
axes[0].axvline(acc.mean(), color="k", ls=":", lw=1, label=f"mean {acc.mean():.3f}")
axes[0].set(xlabel="share of an image's votes naming its CIFAR-10 label (fraction)",
            ylabel="images (count)")
F.question_title(axes[0], "How often do people agree with the CIFAR-10 label?",
                 note=f"all {len(acc):,} images; no error bars: the histogram is the spread")
axes[1].hist(entropy, bins=50, color="C1")
axes[1].axvline(entropy.mean(), color="k", ls=":", lw=1, label=f"mean {entropy.mean():.3f} nats")
axes[1].set(xlabel="entropy of the human label distribution (nats)", ylabel="images (count)")
F.question_title(axes[1], "How uncertain are people about each image?",
                 note=f"all {len(entropy):,} images; no error bars: the histogram is the spread")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
print(f"images where every vote agrees with the CIFAR-10 label: {(acc == 1).mean():.1%}")
print(f"images where the human majority disagrees with it: "
      f"{(probs.argmax(1) != labels).mean():.2%}")

# %% [markdown]
# ## Per-annotator accuracy
# The raw annotator table (`cifar10h-raw.zip`, with reaction times) is optional in the data
# layer. Where it is present, this cell shows each annotator's accuracy.

# %%
try:
    raw = data.load_cifar10h_raw()
except data.DataMissingError:
    print("The raw annotator table (cifar10h-raw.zip) is not present under "
          f"{sec.data_root / 'cifar10h'}; per-annotator accuracy is not shown in this build.")
else:
    display(study.participant_facts(raw))
    per_annotator = raw.groupby("annotator_id")["correct_guess"].mean()
    ax = per_annotator.plot.hist(bins=40)
    ax.set(xlabel="annotator accuracy: share of their answers matching CIFAR-10 (fraction)",
           ylabel="annotators (count)")
    F.question_title(ax, "How accurate is each annotator?",
                     note=f"{len(per_annotator)} annotators (attention checks excluded); "
                          "the histogram is the spread")
    plt.show()

# %% [markdown]
# ## Where does the uncertainty sit?
# Peterson et al. note that most of the uncertainty is concentrated in a minority of the images
# (roughly 30%). Sorting images by entropy shows how few hold how much of it.

# %%
top_fraction = 0.3  # the paper's "roughly 30% of the images"
top30 = study.entropy_share_of_most_uncertain(probs, top_fraction)
x, y = study.entropy_lorenz(probs)
fig, ax = plt.subplots(figsize=(5.5, 4.5))
ax.plot(x, y, label="this data: cumulative share of entropy")
ax.plot([0, 1], [0, 1], "k:", lw=1, label="uncertainty spread evenly")
F.paper_line(ax, x=top_fraction, label="paper: concentrated in roughly 30% of images")
ax.plot(top_fraction, top30, "o", color="C0", label=f"30% most uncertain hold {top30:.0%}")
ax.set(xlabel="fraction of images, most uncertain first (fraction)",
       ylabel="fraction of total label entropy (fraction)")
F.question_title(ax, "Is human uncertainty concentrated in a minority of images?",
                 "Peterson et al. §3", "all images; exact shares, no sampling error shown")
ax.legend(fontsize=7, loc="lower right")
plt.show()
print(f"The 30% most uncertain images hold {top30:.0%} of the total label entropy "
      f"(the paper: uncertainty is concentrated in roughly 30% of the images).")
study.entropy_concentration(probs).style.format(
    {"share of total entropy": "{:.0%}", "fraction of images": "{:.1%}"}).set_caption(
    "how many of the most uncertain images hold a given share of the total entropy")

# %% [markdown]
# ## Which classes do people confuse?
# Rows are the CIFAR-10 label, columns the share of human votes.

# %%
conf = study.human_confusion(counts, labels)
fig, ax = plt.subplots(figsize=(6.5, 5.5))
sns.heatmap(conf, annot=True, fmt=".2f", cmap="Blues", xticklabels=study.CLASSES,
            yticklabels=study.CLASSES, ax=ax, cbar=False, annot_kws={"size": 7})
ax.set(xlabel="class people voted for (cells: share of the row's votes, rows sum to 1)",
       ylabel="CIFAR-10 label")
F.question_title(ax, "Which classes do people confuse?",
                 note="all votes pooled; exact shares, no error bars")
plt.show()
display(study.top_confusions(conf).style.format({"share of votes": "{:.3f}"}).set_caption(
    "largest off-diagonal cells: share of the true class's votes (fraction)"))
study.per_class_table(counts, labels).style.format("{:.3f}").set_caption(
    "per CIFAR-10 class, mean over its images: human accuracy (fraction of votes) "
    "and entropy (nats)")

# %% [markdown]
# ## A gallery: certain, split and systematically confused images
# Each image with its human label distribution: images where everyone agrees, images where
# people are most divided, and images where the human majority disagrees with CIFAR-10.

# %%
groups = study.gallery_indices(counts, labels, per_group=sec.params["gallery_per_group"],
                               seed=sec.seed)
n = sec.params["gallery_per_group"]
fig, axes = plt.subplots(2 * len(groups), n, figsize=(1.9 * n, 2.2 * 2 * len(groups)),
                         squeeze=False)
for g, (name, idx) in enumerate(groups.items()):
    for j in range(n):
        ax_img, ax_bar = axes[2 * g, j], axes[2 * g + 1, j]
        ax_img.axis("off")
        ax_bar.set_xticks([]), ax_bar.set_yticks([])
        if j >= len(idx):
            ax_bar.axis("off")
            continue
        i = idx[j]
        ax_img.imshow(test.images[i])
        ax_img.set_title(f"{name}\n#{i}: {study.CLASSES[labels[i]]}", fontsize=8)
        ax_bar.bar(range(10), probs[i], color=["C3" if c == labels[i] else "C0" for c in range(10)])
        ax_bar.set_ylim(0, 1)
        ax_bar.set_xticks(range(10), [c[:3] for c in study.CLASSES], rotation=90, fontsize=6)
        if j == 0:
            ax_bar.set_yticks([0, 1])
            ax_bar.set_ylabel("share of\nvotes", fontsize=7)
fig.suptitle("What do certain, split and confused images look like?\n"
             "bars: share of human votes per class (red: the CIFAR-10 label)",
             fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## This run vs the paper
# The paper's description of the dataset (Peterson et al. 2019, section 3) against what this
# build computed from the data above.

# %%
summary = study.vote_summary(counts)
pd.DataFrame([
    {"quantity": "images", "paper": 10000, "this run": summary["images"]},
    {"quantity": "judgments", "paper": 511400, "this run": summary["judgments"]},
    {"quantity": "votes per image (mean)", "paper": "about 51",
     "this run": round(summary["mean_votes"], 1)},
    {"quantity": "votes per image (range)", "paper": "47-63",
     "this run": f"{summary['min_votes']}-{summary['max_votes']}"},
]).set_index("quantity")

# %% [markdown]
# Under the `smoke` profile these numbers come from synthetic fixtures and will not match. Under
# `cpu` and `paper` they are computed from the canonical CIFAR-10H files (checksums in the box
# at the top).
