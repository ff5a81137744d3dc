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
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from softlib.book import figures as F
from softlib.book import sections as S
from softlib.studies import peterson as P

prm = sec.params
# the same loading and training calls as `python -m softlib.book compute` (softlib.book.sections)
inputs = S.generalisation_inputs(prm, seed=sec.seed)
study, shift, corr, evalsets = inputs.study, inputs.shift, inputs.corr, inputs.evalsets
archs_ = P.parse_archs(prm["archs"])
status = [{"evaluation set": P.SHIFT_SETS["heldout"][0], "images": f"{prm['folds']} x 1,000",
           "status": "present"}]
for key, (title, _, _) in list(P.SHIFT_SETS.items())[1:]:
    if key in shift.images:
        status.append({"evaluation set": shift.titles[key], "images": len(shift.labels[key]),
                       "status": "present"})
    else:
        status.append({"evaluation set": title, "images": 0,
                       "status": "ABSENT: " + shift.unavailable[key]})
n_corr = len(corr.images)
status.append({"evaluation set": "CIFAR-10-C-style corruptions (this book's addition)",
               "images": sum(len(v) for v in corr.labels.values()),
               "status": f"{n_corr} corruption x severity sets present"
                         + (f"; {len(corr.unavailable)} absent: "
                            + next(iter(corr.unavailable.values())) if corr.unavailable else "")})
pd.set_option("display.max_colwidth", 200)
pd.DataFrame(status).set_index("evaluation set")

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
train_seconds = (pd.Series(runs.seconds).groupby(level=[0, 1]).sum()
                 .rename("training seconds (all folds)"))
print(f"{len(runs.logits)} fold models ready in {time.perf_counter() - t0:.0f} s "
      f"(cache hits {sec.cache.hits}, trained {sec.cache.misses})")
train_seconds.to_frame()

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
curves = P.heldout_curves_frame(runs)
if len(curves):
    chosen = df.groupby("arch").lr.first()
    curves = curves[np.isclose(curves.lr, curves.arch.map(chosen))]
if not len(curves):
    print(F.NO_HELDOUT_CURVES)  # nothing to draw: one line instead of an empty figure and table
else:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    F.heldout_curves(ax, curves, ["arch", "condition"])
    F.question_title(ax, "Does the held-out fit to humans still improve at the last epoch?",
                     "paper §5: at most 150 epochs",
                     F.spread_note(curves.fold.nunique(), drawn="bands"))
    F.legend_unique(ax, fontsize=7)
    fig.tight_layout()
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
order = [k for k in P.dataset_order(df.dataset.unique()) if not k.startswith("c10c_")]
short = {"heldout": "held-out\nCIFAR-10H", "cifar10_train": "CIFAR-10\ntrain",
         "cifar10_1_v4": "CIFAR-10.1\nv4", "cifar10_1_v6": "CIFAR-10.1\nv6",
         "cinic10": "CINIC-10\n(ImageNet)", "imagenet_far": "ImageNet-\nFar"}
summary = P.summarise(df, ["accuracy", "ce"], ["arch", "condition", "dataset"])
n_folds = int(summary[("accuracy", "folds")].max())
questions = {"accuracy": ("Do soft labels raise accuracy as the shift grows?", "paper Fig. 2 left"),
             "ce": ("Do soft labels lower cross-entropy as the shift grows?",
                    "paper Fig. 2 centre")}
fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
for ax, metric in zip(axes, ["accuracy", "ce"]):
    for i, arch in enumerate(a.label for a in archs_):
        for j, cond in enumerate(P.CONDITIONS):
            rows = [summary.loc[(arch, cond, k)] if (arch, cond, k) in summary.index else None
                    for k in order]
            y = [r[(metric, "mean")] if r is not None else np.nan for r in rows]
            e = [r[(metric, "std")] if r is not None else np.nan for r in rows]
            x = np.arange(len(order)) + (j - 0.5) * 0.15
            ax.errorbar(x, y, yerr=e, marker="o^"[j], capsize=3, color=f"C{j}",
                        alpha=1 if i == 0 else 0.5,
                        label=f"{cond} labels" + (f" ({arch})" if len(archs_) > 1 else ""))
    for j, cond in enumerate(P.CONDITIONS):  # the paper's values, where this run has the set
        pts = [(order.index(k) + (j - 0.5) * 0.15, P.PAPER_FIG2[(k, metric)][j])
               for k in order if (k, metric) in P.PAPER_FIG2]
        if pts:
            F.paper_marks(ax, *zip(*pts), color=f"C{j}", label=f"paper, {cond} (8-CNN mean)")
    ax.set_xticks(range(len(order)), [short.get(k, k) for k in order], fontsize=8)
    ax.set(xlabel="evaluation set, increasing distance from the training images",
           ylabel="accuracy vs hard labels (fraction)" if metric == "accuracy"
           else "cross-entropy vs hard labels (nats)")
    F.question_title(ax, *questions[metric], F.spread_note(n_folds) + ", mean of the folds")
    F.legend_unique(ax, fontsize=7)
fig.tight_layout()
plt.show()
missing = [title for k, (title, _, _) in P.SHIFT_SETS.items() if k in evalsets.unavailable]
if missing:
    print("not shown (data absent on this machine): " + ", ".join(missing))

# %% [markdown]
# ### Does soft vs hard exceed the fold-to-fold noise?
# The difference soft minus hard is taken **within each fold** (same held-out images, same
# initial weights), then averaged; `t` is the mean over its standard error across folds. With
# only a few folds, |t| must be large (about 4 or more for 3 folds) before a difference means
# much; "folds with same sign" shows how consistent it is.

# %%
paired = pd.concat({m: P.paired_difference(df[~df.dataset.str.startswith("c10c_")], m)
                    for m in ["accuracy", "ce"]}, names=["metric"])
paired.style.format("{:.3f}", subset=["mean diff", "std over folds", "t (mean / s.e.)"])

# %% [markdown]
# ## Second-best accuracy on the held-out folds (paper Figure 2, right)
# Among held-out images where people had a second choice, how often is the model's second most
# probable class the humans' second choice? (Ties among the humans' runner-up classes count as
# hits; see `softlib.metrics.second_best_accuracy`.) The paper reports a gain of about 5 points
# for soft labels (`peterson.PAPER_FIG2_SBA_GAIN`); the hollow diamond puts that gain on top of
# this run's hard-label bar, as the value the soft bar would reach if the paper's gain held here.

# %%
held = df[df.dataset == "heldout"]
fig, ax = plt.subplots(figsize=(4.5 + 1.5 * len(archs_), 3.5))
for i, arch in enumerate(a.label for a in archs_):
    for j, cond in enumerate(P.CONDITIONS):
        v = held[(held.arch == arch) & (held.condition == cond)]["sba"]
        ax.bar(i * 3 + j, v.mean(), yerr=v.std(ddof=1) if len(v) > 1 else 0, color=f"C{j}",
               capsize=4, label=f"{cond} labels" if i == 0 else None)
        ax.plot(np.full(len(v), i * 3 + j), v, "k.", ms=5,
                label="one fold" if i == j == 0 else None)
    hard = held[(held.arch == arch) & (held.condition == "hard")]["sba"].mean()
    F.paper_marks(ax, i * 3 + 1, hard + P.PAPER_FIG2_SBA_GAIN, color="C1",
                  label=f"paper: hard + {P.PAPER_FIG2_SBA_GAIN:.2f} (its soft-label gain)")
ax.set_xticks([i * 3 + 0.5 for i in range(len(archs_))], [a.label for a in archs_])
ax.set(ylabel="second-best accuracy on held-out folds (fraction)")
F.question_title(ax, "Do soft labels make the runner-up class more human?", "paper Fig. 2 right",
                 F.spread_note(held.groupby(["arch", "condition"]).sba.count().max())
                 + "; dots: folds")
F.legend_unique(ax, fontsize=7)
plt.show()
plain = {"ce": "CE vs CIFAR-10 labels", "ce_human": "CE vs human labels",
         "sba": "second-best accuracy", "kl_human": "KL(humans || model)"}
P.summarise(held, ["accuracy", "ce", "ce_human", "sba", "kl_human"], ["arch", "condition"]).rename(
    columns=plain, level=0).style.format(F.sig).set_caption(
    "held-out folds: accuracies (fraction), cross-entropies and KL (nats); mean, std and folds")

# %% [markdown]
# ## Confidence on correct and incorrect predictions (paper Figure 3a)
# Mean top-1 probability on held-out images the model gets right and wrong. Human-label training
# should lower confidence most where the model is wrong.

# %%
conf = held.groupby(["arch", "condition"])[["conf_correct", "conf_incorrect"]].agg(["mean", "std"])
fig, ax = plt.subplots(figsize=(6.5, 4))
labels_ = []
for i, ((arch, cond), r) in enumerate(conf.iterrows()):
    for j, what in enumerate(["conf_correct", "conf_incorrect"]):
        ax.bar(i * 3 + j, r[(what, "mean")], yerr=r[(what, "std")], capsize=3,
               color=["C2", "C3"][j], label=["correct", "incorrect"][j] if i == 0 else None)
    labels_.append(f"{cond}\n{arch}" if len(archs_) > 1 else cond)
ax.set_xticks([i * 3 + 0.5 for i in range(len(labels_))], labels_)
ax.set(xlabel="training labels", ylabel="mean top-1 probability on held-out images (fraction)")
F.question_title(ax, "Do soft labels lower confidence most where the model is wrong?",
                 "paper Fig. 3a",
                 F.spread_note(held.groupby(["arch", "condition"]).fold.nunique().max()))
ax.legend(fontsize=8, title="predictions", title_fontsize=8)
fig.tight_layout()
plt.show()
conf.style.format("{:.3f}").set_caption("mean top-1 probability (fraction) on held-out images; "
                                        "std over folds")

# %% [markdown]
# ## Predicted vs human distributions (paper Figure 3b)
# Held-out images where people disagreed most (highest entropy of the human distribution), with
# the humans' distribution and the predictions of the hard- and soft-label models that held
# each image out (first architecture; the learning rate selected above).

# %%
from softlib import data as sdata

arch0 = archs_[0].label
lr_sel = {c: df[(df.arch == arch0) & (df.condition == c)].lr.iloc[0] for c in P.CONDITIONS}
idx_h, p_hard = P.heldout_probs(runs, arch0, "hard", lr_sel["hard"], len(study.labels))
idx_s, p_soft = P.heldout_probs(runs, arch0, "soft", lr_sel["soft"], len(study.labels))
both_h, both_s = np.isin(idx_h, idx_s), np.isin(idx_s, idx_h)  # folds where neither run diverged
idx_h, p_hard, p_soft = idx_h[both_h], p_hard[both_h], p_soft[both_s]
ent = sdata.views.entropy(study.human[idx_h])
show = np.argsort(-ent)[:6]
fig, axes = plt.subplots(2, len(show), figsize=(2.3 * len(show), 4.6), squeeze=False)
for j, s in enumerate(show):
    i = idx_h[s]
    axes[0, j].imshow(study.images[i])
    axes[0, j].axis("off")
    axes[0, j].set_title(f"#{i}: {P.CLASSES[study.labels[i]]}", fontsize=8)
    w = 0.28
    x = np.arange(10)
    axes[1, j].bar(x - w, study.human[i], w, color="k", label="humans")
    axes[1, j].bar(x, p_hard[s], w, color="C0", label="hard-label model")
    axes[1, j].bar(x + w, p_soft[s], w, color="C1", label="soft-label model")
    axes[1, j].set_xticks(x, [c[:3] for c in P.CLASSES], rotation=90, fontsize=6)
    axes[1, j].set_ylim(0, 1)
axes[1, 0].set_ylabel("probability", fontsize=8)
axes[1, 0].legend(fontsize=6)
fig.suptitle("Do soft-label models predict the humans' distribution on divisive images? "
             "(paper Fig. 3b)\none image per panel, one held-out prediction each: no error bars",
             fontsize=10)
fig.tight_layout()
plt.show()
from softlib import metrics as M
pd.DataFrame({c: {"KL(human || model), held-out": M.kl_divergence(study.human[idx_h], p),
                  "JS(human, model), held-out": M.js_divergence(study.human[idx_h], p),
                  "mean entropy of predictions (nats)": float(sdata.views.entropy(p).mean())}
              for c, p in [("hard", p_hard), ("soft", p_soft)]}).assign(
    humans=[np.nan, np.nan, float(sdata.views.entropy(study.human[idx_h]).mean())]).style.format(
    "{:.3f}", na_rep="").set_caption("held-out images; KL and JS divergences in nats")

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
    clean = (df[df.dataset == "cifar10_train"].groupby(["arch", "condition"])[["accuracy", "ce"]]
             .mean())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    n_c = len(prm['corruptions']) if prm['corruptions'] != 'all' else 15
    for ax, metric in zip(axes, ["accuracy", "ce"]):
        for (arch, cond), g in cs.groupby(level=[0, 1]):
            sev = g.index.get_level_values("severity")
            j = P.CONDITIONS.index(cond)
            ax.errorbar(sev, g[(metric, "mean")], yerr=g[(metric, "std")], marker="o^"[j],
                        capsize=3, color=f"C{j}", label=f"{cond} labels"
                        + (f" ({arch})" if len(archs_) > 1 else ""))
            if (arch, cond) in clean.index:
                ax.axhline(clean.loc[(arch, cond), metric], color=f"C{j}", ls=":", lw=1)
        ax.set(xlabel="corruption severity (1-5; dotted: uncorrupted CIFAR-10 train)",
               ylabel="accuracy vs hard labels (fraction)" if metric == "accuracy"
               else "cross-entropy vs hard labels (nats)")
        what = "keep their accuracy" if metric == "accuracy" else "keep a lower cross-entropy"
        ax.set_xticks(sorted(cs.index.get_level_values("severity").unique()))
        F.question_title(ax, f"Do soft-label models {what} under corruption?",
                         note=f"beyond the paper; mean of {n_c} corruptions\n"
                              + F.spread_note(n_folds) + ", of the corruption mean")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    display(cs.style.format("{:.3f}").set_caption(
        "mean over corruptions, then folds: accuracy (fraction), ce (nats); std over folds"))

# %% [markdown]
# ## This run vs the paper
# Figure 2's values are averages over the paper's eight architectures after up to 150 epochs on
# each of 10 folds; this run's are averages over the architectures and folds of the profile.

# %%
cmp = P.paper_vs_run_generalisation(df, evalsets)
cmp.style.format({c: "{:.3f}" for c in ["paper hard", "paper soft", "run hard", "run soft"]}
                 ).set_caption("accuracy and SBA as fractions, ce in nats")

# %%
lines = []
for metric in ["accuracy", "ce"]:
    for (arch, ds), r in paired.loc[metric].iterrows():
        if ds in ("heldout", "cifar10_train", "imagenet_far", "cinic10"):
            lines.append(f"- {metric} on {P.SHIFT_SETS[ds][0]} ({arch}): soft minus hard "
                         f"{r['mean diff']:+.3f} (fold-to-fold std {r['std over folds']:.3f}, "
                         f"{int(r['folds with same sign'])} of {int(r['folds'])} folds "
                         "agree in sign)")
display(Markdown("**What this run measured** (computed from the tables above):\n\n"
                 + "\n".join(lines)))

# %% [markdown]
# **Why this run differs from the paper.** Written from this run's parameters and data.

# %%
from softlib import data as sdata

display(Markdown(P.generalisation_budget(sec.profile, prm) + "\n" + P.data_notes(
    "generalisation", sdata.provenance("cifar10", root=sec.data_root), evalsets.unavailable)))
