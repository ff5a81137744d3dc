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
# set: about 51 judgments per image, 511,400 in all by the paper's count. Instead of one label
# per image, each image now has a distribution over the ten classes. This section looks at that
# distribution: how many votes, how often people agree with the CIFAR-10 label, where the
# uncertainty sits, and which classes people confuse.

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
from IPython.display import Markdown, display

from softlib import data
from softlib.studies import cifar10h as study

human = data.load_cifar10h()
test = data.load("cifar10", "test")
counts, probs, labels = human.counts, human.probs, test.labels
display(pd.DataFrame([study.vote_summary(counts)]).style.format({"mean_votes": "{:.1f}"})
        .hide(axis="index").set_caption("votes (human judgments) per image: counts"))

# %% [markdown]
# ## In brief
# What the figures below show, written from the vote counts of this build's data.

# %%
display(Markdown("\n".join(f"- {line}" for line in study.takeaways(counts, labels))))

# %% [markdown]
# ## How often do people agree with the CIFAR-10 label?
# Each image's *human accuracy* is the share of its votes that name its CIFAR-10 label.

# %%
fig = study.plot_agreement(counts, labels)
plt.show()
acc = study.human_accuracy_per_image(counts, labels)
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
    fig = study.plot_annotators(raw)
    plt.show()

# %% [markdown]
# ## Where does the uncertainty sit?
# Peterson et al. note that most of the uncertainty is concentrated in a minority of the images
# (roughly 30%). Sorting images by entropy shows how few hold how much of it.

# %%
top_fraction = 0.3  # the paper's "roughly 30% of the images"
fig = study.plot_entropy_concentration(probs, top_fraction)
plt.show()
top30 = study.entropy_share_of_most_uncertain(probs, top_fraction)
print(f"The 30% most uncertain images hold {top30:.0%} of the total label entropy "
      f"(the paper: uncertainty is concentrated in roughly 30% of the images).")
study.entropy_concentration(probs).style.format(
    {"share of total entropy": "{:.0%}", "fraction of images": "{:.1%}"}).hide(
    axis="index").set_caption(
    "how many of the most uncertain images hold a given share of the total entropy")

# %% [markdown]
# ## Which classes do people confuse?
# Rows are the CIFAR-10 label, columns the class people voted for. About 95% of the votes
# land on the label itself, so the left panel leaves that diagonal out and colours only the
# votes that go elsewhere; the right panel gives the diagonal, class by class.

# %%
fig = study.plot_confusion(counts, labels)
plt.show()
display(study.top_confusions(study.human_confusion(counts, labels)).style
        .format({"share of votes": "{:.3f}"}).hide(axis="index")
        .set_caption("largest off-diagonal cells: share of the true class's votes (fraction)"))

# %% [markdown]
# ## A gallery: certain, split and systematically confused images
# Each image with its human label distribution: images where everyone agrees, images where
# people are most divided, and images where the human majority disagrees with CIFAR-10. The
# bar under each image splits its votes by class, in the legend's colours.

# %%
groups = study.gallery_indices(counts, labels, per_group=sec.params["gallery_per_group"],
                               seed=sec.seed)
fig = study.plot_gallery(test.images, counts, labels, groups)
fig.suptitle("What do certain, split and confused images look like?", fontsize=10, y=1.0)
plt.show()

# %% [markdown]
# ## This run vs the paper
# The paper's description of the dataset (Peterson et al. 2019, section 3) against what this
# build computed from the data above.

# %%
study.paper_comparison(counts).style.hide(axis="index").set_caption(
    "the collection: the paper's description vs this build's files")

# %% [markdown]
# Under the `smoke` profile these numbers come from synthetic fixtures and will not match. Under
# `cpu` and `paper` they are computed from the canonical CIFAR-10H files (checksums in the box
# at the top).
