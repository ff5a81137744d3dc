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
# # 5. Calibration, OOD detection and robustness of uncertainty models (Laing 2024)
#
# Laing (2024) asks whether training on CIFAR-10H's human label distributions helps the models
# built to know what they do not know. A ResNet-20 trunk is trained in five *model types*
# (plain with augmentation; Monte Carlo dropout without and with augmentation; SNGP; DUQ), each
# under six *label conditions*: hard (one-hot CIFAR-10) or soft (CIFAR-10H) labels, plain or
# with mixup or CutMix fired with probability equal to the mean entropy of the soft labels.
# The 10,000 CIFAR-10H images are split 8,000 / 500 / 1,500 (train / validation / test); every
# model is tested on the hard labels for accuracy, calibration (ECE, Brier, log loss),
# out-of-distribution detection (AUROC with the max logit) and an FGSM attack.
#
# Two additions go beyond the paper: **label smoothing**, matched so that the smoothed one-hot
# puts as much mass on the CIFAR-10 class as the human labels do on average (a soft-label
# imitator with no image-specific information), and **temperature scaling** fitted on the
# validation split, which asks whether the calibration cost of soft labels survives a
# one-parameter fix.

# %% tags=["parameters"]
profile = "cpu"
data_root = ""
output_dir = ""
seed = 0
device = "auto"
model_types = None
label_conditions = None
extra_conditions = None
seeds = None
epochs = None
width = None
batch_size = None
fgsm_eps = None
train_subset = None
split_sizes = None
lr = None
mix_alpha = None
early_stopping_patience = None
stack_models = None
dropout_p = None
keep_best_checkpoint = None
mc_samples = None
mc_average = None

# %%
from softlib.book.header import show_header

sec = show_header(profile, "calibration_ood",
                  datasets=["cifar10", "cifar10h", "svhn", "fashion_mnist"],
                  params=locals())
P = sec.params

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from softlib.book import figures as F
from softlib.book import profiles
from softlib.book import sections as S
from softlib.losses import mix_probability_from_entropy
from softlib.studies import laing as study

data = S.calibration_inputs(sec.data_root)  # the calls of `python -m softlib.book compute`
split0 = study.make_split(data.labels, P["seeds"][0], P["train_subset"])
facts = {
    "images (CIFAR-10H)": len(data.labels),
    "train / val / test (first seed)":
        f"{len(split0.train)} / {len(split0.val)} / {len(split0.test)}",
    "mixing probability (mean entropy of the training soft labels, nats)":
        round(mix_probability_from_entropy(data.probs[split0.train]), 4),
    "matched label-smoothing eps": round(study.matched_smoothing_eps(
        data.probs[split0.train], data.labels[split0.train]), 4),
}
for name, imgs in data.ood.items():
    facts[f"OOD set {name}"] = ("ABSENT on this machine: its AUROC is reported as n/a"
                                if imgs is None else f"{len(imgs)} images available; "
                                f"{min(len(imgs), len(split0.test))} used per model")
pd.Series(facts, name="value").to_frame()

# %% [markdown]
# ## What this profile shrinks
# The `paper` profile is Laing's protocol: full-width ResNet-20 (16 channels in the first
# stage), 230 epochs ending with the weights of the epoch of lowest validation loss, 5 seeds.
# Smaller profiles keep the design (every model type and label condition, the same split and
# metrics) and shrink the budget, some with early stopping instead; the learning-rate schedule
# (warm-up, then x0.5 at Laing's milestones) is scaled to the number of epochs.

# %%
paper = profiles.resolve("paper", "calibration_ood")
pd.DataFrame([{"parameter": k, "this run": repr(P[k]), "paper profile": repr(paper[k]),
               "shrunk": "yes" if P[k] != paper[k] else ""}
              for k in P]).set_index("parameter").style  # a Styler: long lists shown whole

# %% [markdown]
# ## Training the grid
# Every run is cached under the configuration that produced it: rerunning the section only
# trains what is missing. On a GPU all runs of one model type (every label condition and seed)
# train at once (`stack_models`), each with its own targets, mixing, validation loss, early
# stopping and best epoch; SNGP's and DUQ's training hooks (precision reset, gradient penalty,
# centroid update) then run for each model inside the group, as they would alone.

# %%
import time

t0 = time.perf_counter()
grid = S.calibration_grid(data, P, sec.cache, device=sec.device)
runs = grid.table
print(f"{len(runs)} runs ready in {time.perf_counter() - t0:.0f} s "
      f"(cache hits {sec.cache.hits}, misses {sec.cache.misses})")
timing = runs.groupby("model_type", sort=False)[["train_seconds", "images_per_second", "epochs_run",
                                                 "n_parameters"]].mean()
timing.round(1)

# %% [markdown]
# ## In brief: the paper's claims tested here
# This section's numbers for the paper's headline claims, computed from the runs above by the
# rule of the [claims ledger](00_claims.ipynb) (which gathers every section's); the figures and
# tables below show where each comes from. A claim whose data are absent here is recorded as
# not measurable, with the reason.

# %%
from softlib.book import claims

claims.styled(claims.record(sec, claims.measure_calibration(runs, data.ood)))

# %% [markdown]
# ## Table 1: hard vs soft labels across model types
# Mean ± standard error over seeds (no ± with a single seed). Accuracy in %; OOD AUROC uses the
# max logit (max log-probability for MC dropout, max log-kernel for DUQ) with as many OOD images
# as test images; ECE bins the top-1 confidence in 10 bins; the attack decrease is the share of
# correctly classified test images that FGSM (eps = `fgsm_eps` on the 0-1 pixel scale:
# Laing's 0.005 is about 1.3/255, a third of section 4's smallest bound) makes wrong.
# Higher is better for accuracy and AUROC (0.5 is chance; below 0.5 the score finds the test
# images more unusual than the OOD ones), lower for ECE and the attack decrease.
# `*` marks the best label condition within each model type.

# %%
summary = study.summary_table(runs)
study.format_table(summary, digits={"accuracy": 1, "ood_auroc_svhn": 3,
                                    "ood_auroc_fashion_mnist": 3,
                                    "brier": 3, "nll": 3, "attack_decrease": 3}).style.set_caption(
    "accuracy in %; OOD AUROC, ECE and attack decrease as fractions; Brier score (unitless); "
    "log loss in nats")

# %% [markdown]
# ## Soft minus hard, paired by seed
# Each seed fixes the split and initial weights for both label conditions, so the difference is
# paired. `ses_from_zero` is |difference| / its standard error: effects of about 2 or more
# exceed seed noise. With one seed there is no standard error, and no difference can be told
# apart from noise.

# %%
diffs = study.paired_differences(runs)
wide = diffs.assign(value=[f"{d:+.3g}" + (f" ± {s:.2g}" if np.isfinite(s) else "")
                           for d, s in zip(diffs.difference, diffs.se)])
wide.pivot_table(index=["model_type", "comparison"], columns="metric", values="value",
                 aggfunc="first", sort=False).reindex(
    columns=[m for m in study.METRICS if m in set(diffs.metric)]).style.set_caption(
    "difference ± s.e. over seeds: accuracy in percentage points; AUROC, ECE, attack decrease "
    "as fractions; Brier unitless; log loss (nll) in nats")

# %% [markdown]
# ## Figure 1: reliability and proportion diagrams, hard vs soft
# Top row per model type: accuracy against confidence in each of 10 bins (the diagonal is
# perfect calibration). Bottom row: the share of test images in each bin. Test predictions of
# all seeds are pooled; error bars are ±1 binomial standard error of each bin's accuracy (from
# the number of pooled images in the bin). The legend gives the paper's ECE (Laing, Table 1)
# where the repository has it typed in (`laing.PAPER_TABLE1`); a reliability curve is not
# published, so there is nothing else of the paper's to draw.

# %%
mts = P["model_types"]
# the paper's ECE per (model type, condition); DUQ's is of the author's output, not comparable
paper_ece = {(r["model_type"], r["condition"]): r["ece"] for r in study.PAPER_TABLE1
             if "ece_author_output" not in r["note"]}
fig, axes = plt.subplots(2, len(mts), figsize=(3.3 * len(mts), 6.2), squeeze=False,
                         gridspec_kw={"height_ratios": [2, 1]})
for j, mt in enumerate(mts):
    ax, axp = axes[0, j], axes[1, j]
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    for k, (cond, color) in enumerate([("hard", "C0"), ("soft", "C3")]):
        rel = study.pooled_reliability(grid.runs, mt, cond)
        if rel is None:
            continue
        centres = (rel["bin_lower"] + rel["bin_upper"]) / 2
        ok = rel["count"] > 0
        pe = paper_ece.get((mt, cond))
        ax.errorbar(rel["confidence"][ok], rel["accuracy"][ok],
                    yerr=F.binomial_se(rel["accuracy"], rel["count"])[ok], fmt="o-", color=color,
                    ms=3, capsize=2,
                    label=cond + (f" (paper ECE {pe:.3g})" if pe is not None else ""))
        axp.bar(centres + (k - 0.5) * 0.04, rel["proportion"], width=0.04, color=color, label=cond)
    ax.set(title=study.MODEL_TYPES[mt].label, xlim=(0, 1), ylim=(0, 1),
           xlabel="confidence: top-1 probability (fraction)")
    axp.set(xlim=(0, 1), xlabel="confidence (fraction)")
    ax.legend(loc="upper left", fontsize=7)
    if j == 0:
        ax.set_ylabel("accuracy in the bin (fraction)")
        axp.set_ylabel("share of test images (fraction)")
fig.suptitle("Are soft-label models worse calibrated than hard-label ones? (Laing 2024, Fig. 1)\n"
             f"dotted: perfect calibration; bars: ±1 binomial s.e. per bin; "
             f"test predictions of {len(P['seeds'])} seed(s) pooled", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Beyond the paper: label smoothing and temperature scaling
# If soft labels only "hurt ECE" because they make a model less confident than it should be on
# hard test labels, a single temperature fitted on the 500 validation images should undo most
# of it. The table gives ECE and log loss before and after temperature scaling (mean over
# seeds), with the fitted temperature (T < 1 sharpens, T > 1 softens). In the figure, error bars
# are ±1 standard error over seeds (none with one seed) and hollow diamonds the paper's ECE before
# temperature scaling (Laing, Table 1, where typed in; the paper has no temperature scaling and
# no log loss).

# %%
ts = study.temperature_table(runs)
display(ts.style.format("{:.3g}").set_caption(
    "mean over seeds: ECE (fraction, 10 bins), log loss (nll, nats), temperature T (unitless); "
    "_ts: after temperature scaling"))
conds = [c for c in ("hard", "soft", "label_smoothing") if c in set(runs.condition)]
se = runs.groupby(["model_type", "condition"], sort=False)[
    [c for c in ("ece", "ece_ts", "nll", "nll_ts") if c in runs.columns]].sem()
n_seeds = int(runs.groupby(["model_type", "condition"]).size().max())
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
x = np.arange(len(mts))
for k, cond in enumerate(conds):
    sub, sub_se = (ts.xs(cond, level="condition").reindex(mts),
                   se.xs(cond, level="condition").reindex(mts))
    for ax, m in zip(axes, ("ece", "nll")):
        ax.bar(x + (k - 1) * 0.27, sub[m], width=0.25, color=f"C{k}", alpha=0.35,
               yerr=sub_se[m].fillna(0) if n_seeds > 1 else None, ecolor=f"C{k}", capsize=2)
        ax.bar(x + (k - 1) * 0.27, sub[f"{m}_ts"], width=0.12, color=f"C{k}", label=cond,
               yerr=sub_se[f"{m}_ts"].fillna(0) if n_seeds > 1 else None, capsize=2)
    F.paper_marks(axes[0], x + (k - 1) * 0.27, [paper_ece.get((mt, cond), np.nan) for mt in mts],
                  color=f"C{k}", label=f"paper ECE, {cond} (Laing Table 1, no TS)")
for ax, m, unit, q in zip(axes, ("ECE", "log loss"), ("fraction, 10 bins", "nats"),
                          ("Does temperature scaling remove soft labels' ECE cost?",
                           "... and their log-loss cost?")):
    ax.set_xticks(x, mts, rotation=20, fontsize=8)
    ax.set(ylabel=f"{m} on the test split ({unit})", xlabel="model type")
    F.question_title(ax, q, "beyond the paper", "pale: before TS, narrow: after; "
                     + F.spread_note(n_seeds, "seeds", "±1 s.e.").replace(
                         " (no spread to show)", ""))
    ax.legend(fontsize=7)
fig.tight_layout()
plt.show()
display(Markdown("**Does temperature scaling undo soft labels' ECE cost?**\n\n" + (
    "\n".join(f"- {a}" for a in study.temperature_answers(ts, n_seeds))
    or "- no model type has both hard and soft runs here")))

# %% [markdown]
# ## This run vs Laing (2024), Table 1
# Laing's values (mean over 5 seeds) for the rows we have on record, beside this run's (the
# other rows are in Table 1 above); a cell the paper does not give is n/a.
# SVHN is the paper's OOD set: where it is absent on this machine, this run's SVHN column is
# n/a and the Fashion-MNIST AUROC (a farther OOD set, not in the paper) is in Table 1 above.
# Below the table: where a number is not measured exactly as the author's code measures it.

# %%
cmp_ = study.paper_comparison(summary, paper_rows_only=True)
display(cmp_.drop(columns=["note", "defined differently"]).style.format(
    F.sig, na_rep="n/a").set_caption(
    "3 significant digits; accuracy in %; AUROC, ECE and attack decrease as fractions"))
display(Markdown(study.comparison_notes(cmp_)))
check = study.paper_direction_check(diffs)
check.style.format({"paper soft - hard": "{:+.3g}", "this run soft - hard": "{:+.3g}",
                    "ses_from_zero": "{:.1f}"}, na_rep="n/a").set_caption(
    "accuracy differences in percentage points, the others as fractions; ses_from_zero: "
    "|difference| / s.e. (unitless)")

# %%
def _summary_lines():
    lines = []
    for mt in mts:
        for m in ("accuracy", "ece", "ood_auroc_fashion_mnist", "attack_decrease"):
            row = diffs[(diffs.model_type == mt) & (diffs.comparison == "soft - hard")
                        & (diffs.metric == m)]
            if not len(row):
                continue
            r = row.iloc[0]
            noise = ("exceeds 2 s.e." if np.isfinite(r.ses_from_zero) and r.ses_from_zero >= 2
                     else "within seed noise" if np.isfinite(r.ses_from_zero)
                     else "one seed: not separable from noise")
            lines.append(f"- {mt}, {study.METRIC_LABELS[m]}: "
                         f"soft - hard = {r.difference:+.4f} ({noise})")
    return "\n".join(lines)


display(Markdown("**Soft minus hard in this run**\n\n" + _summary_lines()))

# %% [markdown]
# ## Discussion: where and why this run differs from Laing
# The first four points are written from this run's parameters, results and data.

# %%
from softlib import data as datasets

display(Markdown(study.run_discussion(
    sec.profile, P, runs, svhn_present=data.ood.get("svhn") is not None,
    cifar10_provenance=datasets.provenance("cifar10", root=sec.data_root))))

# %% [markdown]
# * **Temperature scaling and label smoothing** are not in the paper. If soft labels lose their
#   ECE disadvantage after temperature scaling, the disadvantage is a global over- or
#   under-confidence rather than a worse ranking of the test images; label smoothing tells
#   whether the human labels' *per-image* information matters beyond their average softness.
