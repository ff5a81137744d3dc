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
# # 3. Alternatives to human labels (Table 1)
#
# Are human distributions just a fancy regulariser? Peterson et al. (2019, section 6) tested this
# by **pretraining** each network on the 50,000 CIFAR-10 training images and then
# **fine-tuning** it on the CIFAR-10H folds with different targets: the hard labels (the
# control), mixup on hard labels, *class-level* soft targets (one human-derived vector per
# class), knowledge *distillation* from an ensemble of the pretrained networks, the human
# distributions, hard labels *sampled* from the human distributions (redrawn every epoch), and
# mixup on the human distributions. Table 1 of the paper reports cross-entropy on the held-out
# folds against the human labels (c10H) and against the CIFAR-10 labels (c10), and on CIFAR-10.1.

# %% tags=["parameters"]
profile = "cpu"
data_root = ""
output_dir = ""
seed = 0
device = "auto"
archs = None
folds = None
pretrain_epochs = None
finetune_epochs = None
lr = None
mixup_alpha = None
batch_size = None
amp = None
stack_models = None
schedule = None
heldout_per_epoch = None
pretrain_subset = None
train_subset = None
# fine-tuned models of these architectures only (a book rendered from the ones computed so far)
only_archs = None

# %%
from softlib.book.header import show_header

sec = show_header(profile, "alternatives", datasets=["cifar10h", "cifar10", "cifar10_1"],
                  params=locals())

# %%
import time

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from softlib import figures as F
from softlib.book import sections as S
from softlib.studies import peterson as P

prm = sec.params
# the same loading and training calls as `python -m softlib.book compute` (softlib.book.sections)
inputs = S.alternatives_inputs()
study, cifar_train, c101 = inputs.study, inputs.cifar_train, inputs.c101
archs_ = P.parse_archs(prm["archs"])
for key, title in c101.titles.items():
    print(f"{title}: present ({len(c101.labels[key]):,} images)")
for key, why in c101.unavailable.items():
    print(f"{P.SHIFT_SETS[key][0]}: n/a in this build, {why}")
if len(archs_) == 1:
    display(Markdown(
        f"**Note:** this profile has one architecture ({archs_[0].label}), so the "
        "'distillation ensemble' is a single pretrained model distilled into a copy of itself "
        "(self-distillation), not the paper's ensemble of eight different networks."))

# %% [markdown]
# ## Pretraining on CIFAR-10
# Hard labels, SGD with Nesterov momentum; the `paper` profile uses the training repository's
# per-architecture schedule, the smaller profiles a short cosine schedule (box above). The
# pretrained models also predict all 10,000 CIFAR-10H images: that is the distillation teacher
# and the "pretrained" row of Table 1.

# %%
t0 = time.perf_counter()
pre = S.alternatives_pretraining(sec.cache, inputs, prm, device=sec.device, seed=sec.seed)
print(f"pretrained models ready in {time.perf_counter() - t0:.0f} s")
P.alternatives_pretrained_table(pre, archs_, study, prm["pretrain_subset"],
                                len(cifar_train.labels)).style.format(F.sig)

# %% [markdown]
# ### Humans and the pretrained CNN on the same images (paper Figure 1)
# The paper opens with CIFAR-10 images on which people and a CNN trained on hard labels agree
# on the most likely class yet disagree on the rest: the network is over- or under-confident,
# or its second guess is not the people's. Here the pretrained model of this section (the
# first architecture) is set against the human distributions on the images where both agree
# on the top class, humans give the other classes at least 20% of their mass, and the two
# distributions over the other nine classes differ most (`peterson.figure1_examples`).

# %%
from softlib.data import CIFAR10_CLASSES

fig1_arch = archs_[0].label
model_p = pre.probs(fig1_arch)
fig1 = P.figure1_examples(study.human, model_p, n=4)
P.plot_alternatives_figure1(study.images, study.human, model_p, fig1, fig1_arch, CIFAR10_CLASSES)
plt.show()
P.figure1_table(fig1, CIFAR10_CLASSES).style.format(F.sig).hide(axis="index")

# %% [markdown]
# ## Fine-tuning with each kind of target
# Every method starts from the same pretrained weights, uses the same folds, Adam schedule and
# augmentation (the profile's `schedule`, as in section 2: the repository's recipe per
# architecture in `paper`, cut at 150 epochs); only the targets (and, for mixup, the input
# mixing) change.

# %%
t0 = time.perf_counter()
runs = S.alternatives_runs(sec.cache, inputs, pre, prm, device=sec.device, seed=sec.seed,
                           profile=profile,  # records these parameters for section 4
                           only_archs=only_archs)
ft_archs = [a for a in archs_ if not only_archs or a.label in only_archs]
df = P.alternatives_metrics(runs, pre, study)
if runs.diverged:  # NaN / inf training loss: a result, left out of the selection and the means
    display(Markdown("**Diverged runs** (Table 1 marks them in `status`):"),
            P.diverged_table(runs))
print(f"{len(runs.logits)} fine-tuned fold models ready in {time.perf_counter() - t0:.0f} s "
      f"(cache hits {sec.cache.hits}, trained {sec.cache.misses}); "
      f"fine-tuning time summed over models: {sum(runs.seconds.values()):.0f} s")

# %% [markdown]
# ### Held-out loss per epoch: the final epoch and the best one
# With `heldout_per_epoch` each fine-tuning run records its held-out cross-entropy against the
# human labels after every epoch. Lines: the mean over folds for the variant Table 1 shows
# (band ±1 s.d., triangle: best epoch). Table 1 uses the **final** weights, as does the rest
# of the book; the best epoch is chosen on the held-out images, so its value bounds what early
# stopping could gain.

# %%
curves = P.table1_heldout_curves(runs, df)
if not len(curves):
    print(F.NO_HELDOUT_CURVES)  # nothing to draw: one line instead of an empty figure and table
else:
    P.plot_alternatives_heldout_curves(curves)
    plt.show()
    display(P.heldout_epochs_table(runs).style.format(F.sig).hide(axis="index").set_caption(
        "held-out CE vs human labels (nats), mean over folds; best epoch: mean over folds"))

# %% [markdown]
# ## In brief: the paper's claims tested here
# This section's numbers for the paper's headline claims, computed from the runs above by the
# rule of the [claims ledger](00_claims.ipynb) (which gathers every section's); the figures and
# tables below show where each comes from. A claim whose data are absent here is recorded as
# not measurable, with the reason.

# %%
from softlib.book import claims

claims.styled(claims.record(sec, claims.measure_alternatives(df)))

# %% [markdown]
# ## Table 1 of this run
# Cross-entropy on the held-out folds against the human labels (**c10H**) and against the
# CIFAR-10 labels (**c10**), and accuracy; mean over folds with the fold-to-fold standard
# deviation; v4 / v6 are cross-entropy on CIFAR-10.1 (n/a where its images are absent). Where
# the profile has several learning rates, one fine-tuning rate per architecture serves every
# method: the best mean held-out accuracy over all methods together (so the hard control is not
# tuned differently from the soft run it is compared with). For mixup the row then shows the
# alpha with the lowest c10H at that rate, as the paper selected alpha.
#
# In the figure below, bars are this run (grey: the pretrained model before fine-tuning; orange:
# targets from each image's own human labels, i.e. soft, sampled and mixup on human labels;
# blue: every other target, i.e. the CIFAR-10 labels, mixup on them, the class-level averages of
# the human labels and the distillation teacher) and hollow diamonds are the
# paper's Table 1 cells typed into the repository (`peterson.PAPER_TABLE1`, for the architecture
# of the same family, and the eight-network distillation teacher's c10H,
# `PAPER_TABLE1_ENSEMBLE_C10H`); rows without a diamond have no transcribed paper cell.

# %%
t1 = P.table1(df)
P.table1_styled(t1)

# %%
P.plot_table1_bars(t1, archs_)
plt.show()

# %% [markdown]
# ### Each target against the hard labels, fold by fold
# Every fine-tuning method minus the hard-label control on the same fold (same pretrained
# weights, same held-out images): the mean with ±2 standard errors over folds, beside the
# paper's Table 1 difference for the same family where both of its cells are typed in. A bar
# that crosses 0 cannot tell the method from the control at this budget. The table below gives
# the numbers (mean, spread, sign consistency), then mixup's alpha grid.

# %%
paired = P.paired_vs_hard_table(df)
P.plot_methods_vs_hard(paired, archs_)
plt.show()
display(paired.style.format(F.sig).set_caption(
    "method minus hard, same fold: c10H, c10 in nats, accuracy in fraction; t is unitless"))
P.mixup_grid_table(df).style.format("{:.3f}", na_rep="n/a").format_index(F.sig).set_caption(
    "mixup's alpha grid, held-out folds: c10H, c10 cross-entropy (nats), accuracy (fraction)")

# %% [markdown]
# ## This run vs the paper
# The paper's Table 1 cells transcribed in this book (ResNet = ResNet-110, DenseNet-BC-100) next to
# this run's value for the architecture of the same family. The paper's v4 / v6 columns have no
# counterpart here when CIFAR-10.1 images are absent.

# %%
cmp = P.paper_vs_run_table1(t1, ft_archs)
cmp.style.format("{:.3f}", subset=[c for c in cmp.columns if c.startswith(("paper ", "run "))],
                 na_rep="n/a").hide(axis="index").set_caption("cross-entropy (nats)")

# %%
lines = P.table1_c10h_ranking(t1, ft_archs)
display(Markdown("**What this run measured:**\n\n" + "\n".join(f"- {s}" for s in lines)))
answers = P.regulariser_answers(P.select_variants(df[df.method != "pretrained"]))
display(Markdown("**Are human distributions just a fancy regulariser?** Soft labels against the "
                 "best of mixup, class-level targets and distillation, fold by fold:\n\n"
                 + ("\n".join(f"- {a}" for a in answers) or "- not measured in this run")))

# %% [markdown]
# **Why this run differs from the paper.** Written from this run's parameters and data; the
# last point holds for every run.

# %%
from softlib import data as sdata

display(Markdown(P.alternatives_budget(sec.profile, prm, only_archs) + "\n" + P.data_notes(
    "alternatives", sdata.provenance("cifar10", root=sec.data_root), c101.unavailable)))

# %% [markdown]
# * The selection of the best grid point on the held-out folds (as in the paper) is slightly
#   optimistic for methods with larger grids (mixup under the `paper` profile).
