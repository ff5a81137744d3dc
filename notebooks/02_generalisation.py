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
# # 2. Generalisation under distribution shift
#
# Peterson et al. (2019, section 5) trained CNNs **from scratch on the 10,000 CIFAR-10H images**
# (the CIFAR-10 test set) with 10-fold cross-validation (9,000 training / 1,000 held-out images per
# fold), once with the human label distributions as targets and once with the CIFAR-10 hard
# labels. They then tested both on data sets of increasing distance from the training images:
# the held-out folds, CIFAR-10's 50,000 training images, CIFAR-10.1 (v4, v6), CINIC-10's ImageNet
# images and ImageNet-Far. Their finding: human labels give slightly better accuracy and much
# lower cross-entropy, and the gap widens with the shift.
#
# This section repeats the experiment under the profile named in the box below, and adds one
# shift the paper did not test: CIFAR-10-C-style corruptions of CIFAR-10 training images.

# %% tags=["parameters"]
profile = "cpu"
data_root = ""
output_dir = ""
seed = 0
device = "auto"
archs = None
folds = None
epochs = None
lr = None
batch_size = None
amp = None
stack_models = None
schedule = None
heldout_per_epoch = None
train_subset = None
eval_subset = None
corruption_subset = None
corruption_severities = None
corruptions = None

# %%
from softlib.book.header import show_header

sec = show_header(profile, "generalisation",
                  datasets=["cifar10h", "cifar10", "cifar10_1", "cinic10", "imagenet_far",
                            "cifar10_c"],
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
inputs = S.generalisation_inputs(prm, seed=sec.seed)
study, shift, corr, evalsets = inputs.study, inputs.shift, inputs.corr, inputs.evalsets
arch_labels = [a.label for a in P.parse_archs(prm["archs"])]
P.evaluation_set_status(prm["folds"], shift, corr).style.format(F.sig).set_caption(
    "the evaluation sets: images used (count) and whether they are on this machine")

# %% [markdown]
# Absent data sets are **not** replaced by anything: their rows stay empty below. The `paper`
# profile, run on a machine where they have been fetched, fills them in.
#
# ## Training
# Each architecture is trained on each fold twice, with the same initialisation, augmentation
# and Adam schedule; only the targets differ. The schedule is the profile's `schedule` (box
# above): `repo` (the `paper` profile) is "the default hyperparameters in the repository except
# for the learning rate": each architecture's weight decay, batch size, augmentation (cutout for
# Shake-Shake) and learning-rate milestones, cut at the profile's epochs (150); `cosine` (the
# smaller profiles) decays the rate to zero over their short runs. Trained models are cached by
# their full configuration, so rebuilding the book does not retrain them. Where the profile
# has several learning rates, **one rate per architecture serves both conditions**: the one with
# the best mean held-out accuracy over the soft and the hard runs together (a paired comparison
# at the same rate, by a criterion that favours neither; the paper found 0.1 best everywhere).

# %%
t0 = time.perf_counter()
runs = S.generalisation_runs(sec.cache, inputs, prm, device=sec.device, seed=sec.seed)
df = P.generalisation_metrics(runs, study, evalsets)
if runs.diverged:  # NaN / inf training loss: a result, left out of lr selection and of every mean
    display(Markdown("**Diverged runs** (not in the lr selection or the means):"),
            P.diverged_table(runs))
df = P.select_lr(df)
print(f"{len(runs.logits)} fold models ready in {time.perf_counter() - t0:.0f} s "
      f"(cache hits {sec.cache.hits}, trained {sec.cache.misses})")
P.training_seconds(runs).style.format("{:,.0f}")

# %% [markdown]
# ## In brief: the paper's claims tested here
# This section's numbers for the paper's headline claims, computed from the runs above by the
# rule of the [claims ledger](00_claims.ipynb) (which gathers every section's); the figures and
# tables below show where each comes from. A claim whose data are absent here is recorded as
# not measurable, with the reason.

# %%
from softlib.book import claims

claims.styled(claims.record(sec, claims.measure_generalisation(df, evalsets.unavailable)))

# %% [markdown]
# ## Held-out loss per epoch: the final epoch and the best one
# The paper trains "a maximum of 150 epochs". Where the profile records the held-out
# cross-entropy against the human labels after every epoch (`heldout_per_epoch`), this shows
# how it evolves at the chosen learning rate (mean over folds, band ±1 s.d.; triangle: best
# epoch) and, in the table, the final epoch next to the best one. Every other number in this
# section uses the **final** weights; the best epoch is picked on the held-out images
# themselves, so its value is an optimistic bound on what early stopping could gain.

# %%
curves = P.selected_heldout_curves(runs, df)
if not len(curves):
    print(F.NO_HELDOUT_CURVES)  # nothing to draw: one line instead of an empty figure and table
else:
    fig = P.plot_scratch_heldout_curves(curves)
    plt.show()
    display(P.heldout_epochs_table(runs).style.format(F.sig).hide(axis="index").set_caption(
        "held-out CE vs human labels (nats), mean over folds; best epoch: mean over folds"))

# %% [markdown]
# ## Accuracy and cross-entropy as the shift grows (paper Figure 2, left and centre)
# Both measured against the hard labels of each set. Points are means over the folds that ran;
# error bars are the fold-to-fold standard deviation. Hollow diamonds are the paper's Figure 2
# values (mean over its eight CNNs) where the repository has them typed in
# (`peterson.PAPER_FIG2`: CIFAR-10 train and ImageNet-Far); they are drawn only where this run
# has the data set. Our ImageNet-Far is our own list of classes (Peterson's is unpublished), so
# its paper marks show the paper's direction, not a value this run should match.

# %%
fig = P.plot_shift_curves(df, arch_labels)
plt.show()
if note := P.absent_shift_note(evalsets.unavailable):
    print(note)

# %% [markdown]
# ### Does soft vs hard exceed the fold-to-fold noise?
# The difference soft minus hard is taken **within each fold** (same held-out images, same
# initial weights), then averaged; `t` is the mean over its standard error across folds. With
# only a few folds, |t| must be large (about 4 or more for 3 folds) before a difference means
# much; "folds with same sign" shows how consistent it is. The figure draws each difference
# with ±2 standard errors over folds beside the paper's (hollow diamonds): the paper's claim is
# a cross-entropy gap below 0 that widens to the right.

# %%
paired = P.shift_paired_differences(df)
fig = P.plot_shift_differences(paired, arch_labels)
plt.show()
paired.style.format("{:.3f}", na_rep="n/a",
                    subset=["mean diff", "std over folds", "t (mean / s.e.)"])

# %% [markdown]
# ## Second-best accuracy on the held-out folds (paper Figure 2, right)
# Among held-out images where people had a second choice, how often is the model's second most
# probable class the humans' second choice? (Ties among the humans' runner-up classes count as
# hits; see `softlib.metrics.second_best_accuracy`.) The paper reports a gain of about 5 points
# for soft labels (`peterson.PAPER_FIG2_SBA_GAIN`); the hollow diamond puts that gain on top of
# this run's hard-label bar, as the value the soft bar would reach if the paper's gain held here.

# %%
held = df[df.dataset == "heldout"]
fig = P.plot_sba(held, arch_labels)
plt.show()
P.heldout_summary(held).style.format(F.sig).set_caption(
    "held-out folds: accuracies (fraction), cross-entropies and KL (nats); mean, std and folds")

# %% [markdown]
# ## Confidence on correct and incorrect predictions (paper Figure 3a)
# Mean top-1 probability on held-out images the model gets right and wrong. Human-label training
# should lower confidence most where the model is wrong.

# %%
fig = P.plot_confidence(held, arch_labels)
plt.show()
P.confidence_summary(held).style.format("{:.3f}").set_caption(
    "mean top-1 probability (fraction) on correct and incorrect held-out predictions; "
    "std over folds")

# %% [markdown]
# ## Predicted vs human distributions (paper Figure 3b)
# Held-out images where people disagreed most (highest entropy of the human distribution), with
# the humans' distribution and the predictions of the hard- and soft-label models that held
# each image out (first architecture; the learning rate selected above).

# %%
idx, p_hard, p_soft = P.paired_heldout_predictions(runs, df, arch_labels[0],
                                                 len(study.labels))
fig = P.plot_divisive_gallery(study, idx, p_hard, p_soft)
plt.show()
P.heldout_divergence_table(study.human[idx], p_hard, p_soft).style.format(F.sig).set_caption(
    "held-out images; KL and JS divergences and entropies in nats "
    "(n/a: a divergence of the humans from themselves)")

# %% [markdown]
# ## Beyond the paper: corrupted CIFAR-10 images (CIFAR-10-C style)
# CIFAR-10 *training* images (never seen by these models, which trained on the test set) with
# Hendrycks & Dietterich's corruptions, generated locally by `softlib.data.corruptions`
# (approximations listed in that module). Each point averages the corruptions of the profile,
# then the folds; error bars are the fold-to-fold standard deviation. The paper has no such
# sets, so no paper values are drawn; dotted lines are this run's uncorrupted CIFAR-10 train.

# %%
cs = P.corruption_summary(df)
if cs.empty:
    print("No corrupted images were available: "
          + "; ".join(sorted(set(corr.unavailable.values()))))
else:
    fig = P.plot_corruption(df, arch_labels)
    plt.show()
    display(cs.style.format(F.sig).set_caption(
        "mean over corruptions, then folds: accuracy (fraction), ce (nats); std over folds"))

# %% [markdown]
# ## This run vs the paper
# Figure 2's values are averages over the paper's eight architectures after up to 150 epochs on
# each of 10 folds; this run's are averages over the architectures and folds of the profile.

# %%
P.paper_vs_run_generalisation(df, evalsets).style.format(F.sig).set_caption(
    "accuracy and SBA as fractions, ce in nats; n/a: not measured here (see note)")

# %%
display(Markdown("**What this run measured** (computed from the tables above):\n\n"
                 + "\n".join(P.shift_gap_lines(paired))))

# %% [markdown]
# **Why this run differs from the paper.** Written from this run's parameters and data.

# %%
from softlib import data as sdata

display(Markdown(P.generalisation_budget(sec.profile, prm) + "\n" + P.data_notes(
    "generalisation", sdata.provenance("cifar10", root=sec.data_root), evalsets.unavailable)))
