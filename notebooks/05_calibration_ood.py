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
from IPython.display import Markdown, display

from softlib import figures as F
from softlib.book import profiles
from softlib.book import sections as S
from softlib.studies import laing as study

data = S.calibration_inputs(sec.data_root)  # the calls of `python -m softlib.book compute`
split0 = study.make_split(data.labels, P["seeds"][0], P["train_subset"])
study.data_facts(data, split0).style  # a Styler: long notes shown whole

# %% [markdown]
# ## What this profile shrinks
# The `paper` profile is Laing's protocol: full-width ResNet-20 (16 channels in the first
# stage), 230 epochs ending with the weights of the epoch of lowest validation loss, 5 seeds.
# Smaller profiles keep the design (every model type and label condition, the same split and
# metrics) and shrink the budget, some with early stopping instead; the learning-rate schedule
# (warm-up, then x0.5 at Laing's milestones) is scaled to the number of epochs.

# %%
paper = profiles.resolve("paper", "calibration_ood")
study.parameter_table(P, paper).style  # a Styler: long lists shown whole

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
study.timing_table(runs).style.set_caption("mean over each model type's runs")

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
study.format_table(summary, digits=study.TABLE1_DIGITS).style.set_caption(
    "accuracy in %; OOD AUROC, ECE and attack decrease as fractions; Brier score (unitless); "
    "log loss in nats")

# %% [markdown]
# ## Soft minus hard, paired by seed
# Each seed fixes the split and initial weights for both label conditions, so the difference is
# paired. `ses_from_zero` is |difference| / its standard error: effects of about 2 or more
# exceed seed noise. With one seed there is no standard error, and no difference can be told
# apart from noise. The figure shows each difference with ±2 standard errors (where a bar
# crosses 0 the seeds cannot tell the conditions apart) and Laing's soft minus hard as a hollow
# diamond; the table below gives the numbers.

# %%
diffs = study.paired_differences(runs)
study.plot_differences(diffs, P["model_types"])
plt.show()
study.differences_table(diffs).style.set_caption(
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
study.plot_reliability(grid.runs, mts)
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
display(ts.style.format(F.sig).set_caption(
    "mean over seeds: ECE (fraction, 10 bins), log loss (nll, nats), temperature T (unitless); "
    "_ts: after temperature scaling"))
study.plot_temperature_scaling(runs, mts)
plt.show()
display(Markdown(study.temperature_markdown(runs)))

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
study.styled_direction_check(study.paper_direction_check(diffs))

# %%
display(Markdown(study.soft_minus_hard_markdown(diffs, mts)))

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
