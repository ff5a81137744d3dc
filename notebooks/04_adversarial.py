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
# # 4. Adversarial robustness (Table 2, Figure 4)
#
# Peterson et al. (2019, section 7) attacked the fine-tuned networks of section 6 with FGSM and
# PGD (L-inf bounds of 4 to 8 on the 0-255 pixel scale) over the CIFAR-10 test images. Both
# kinds of model end up fooled by PGD, but after fine-tuning on human labels the cross-entropy
# under attack is much lower and rises more slowly with PGD iterations: the models are less
# confidently wrong.
#
# The models attacked here are **the hard-label and human-label fine-tuned models of section 3**,
# loaded from the results cache (same configuration, so nothing is retrained when section 3 has
# run). Each CIFAR-10 test image is attacked on the fold model that held it out.

# %% tags=["parameters"]
profile = "cpu"
data_root = ""
output_dir = ""
seed = 0
device = "auto"
eps_sweep = None
pgd_eps = None
pgd_steps = None
pgd_step_size = None
attack_subset = None
pgd_subset = None
# attack the models of these architectures only (a book rendered from the ones computed so far)
only_archs = None

# %%
from softlib.book.header import show_header

sec = show_header(profile, "adversarial", datasets=["cifar10h", "cifar10"], params=locals())

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
# the models of section 3, with the parameters it last ran with (its overrides included)
alt = S.adversarial_alt_params(profile, sec.cache, sec.seed)
recorded = S.recorded_section_params(sec.cache, profile, "alternatives") is not None
print("section 3's parameters: " + ("as recorded by its last run" if recorded else
                                    "the profile's (section 3 has not run with this cache yet)"))
archs_ = [a for a in P.parse_archs(alt["archs"]) if not only_archs or a.label in only_archs]
n_folds = alt["folds"]
print(f"models: section 3's fine-tuned 'hard' and 'soft' models, {len(archs_)} architecture(s) "
      f"x {n_folds} fold(s); attacked images: up to {prm['attack_subset']:,} held-out CIFAR-10 "
      f"test images in all ({int(np.ceil(prm['attack_subset'] / n_folds)):,} per fold model, "
      f"at most the 1,000 it held out); PGD on up to {prm['pgd_subset']:,} of them")

# %%
t0 = time.perf_counter()
misses0 = sec.cache.misses
# the same calls as `python -m softlib.book compute` (softlib.book.sections)
study, alt, fg, pg = S.adversarial_runs(sec.cache, profile, prm, device=sec.device, seed=sec.seed,
                                        only_archs=only_archs)
print(f"attacks done in {time.perf_counter() - t0:.0f} s; cache hits {sec.cache.hits}, "
      f"new results {sec.cache.misses - misses0} (attack results, plus any model section 3 had "
      "not trained yet)")

# %% [markdown]
# ## In brief: the paper's claims tested here
# This section's numbers for the paper's headline claims, computed from the runs above by the
# rule of the [claims ledger](00_claims.ipynb) (which gathers every section's); the figures and
# tables below show where each comes from. A claim whose data are absent here is recorded as
# not measurable, with the reason.

# %%
from softlib.book import claims

claims.styled(claims.record(sec, claims.measure_adversarial(fg, pg, eps=4)))

# %% [markdown]
# ## FGSM at eps = 4/255 (paper Table 2)
# Accuracy and cross-entropy (against the CIFAR-10 labels) on the attacked held-out images;
# mean over fold models with the fold-to-fold standard deviation.

# %%
eps0 = prm["eps_sweep"][0]
P.table2(fg, eps0).style.format("{:.3f}").set_caption(
    f"FGSM eps {eps0}/255: accuracy (fraction), cross-entropy vs CIFAR-10 labels (nats); "
    "std over folds")

# %% [markdown]
# ## FGSM sweep over eps (4..8 / 255)
# Points are means over the fold models, error bars the fold-to-fold standard deviation. Hollow
# diamonds are the paper's Table 2 row for the same architecture family at eps = 4/255
# (`peterson.PAPER_TABLE2`; all 10,000 test images, models fine-tuned for 150 epochs).

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
n_fold_models = int(fg.groupby(["arch", "condition", "eps"]).size().max())
# colour: the labels; line style (and the paper's marker): the architecture
arch_style = dict(zip([a.label for a in archs_], ["-", "--", ":", "-."] * 4))
paper_marker = dict(zip(dict.fromkeys(a.family for a in archs_), "DsPX" * 4))
questions = {"accuracy": "Do human labels keep more accuracy under FGSM?",
             "ce": "Are human-label models less confidently wrong under FGSM?"}
for ax, metric in zip(axes, ["accuracy", "ce"]):
    for (arch, cond), g in fg.groupby(["arch", "condition"]):
        s = g.groupby("eps")[metric].agg(["mean", "std"])
        j = P.ATTACK_METHODS.index(cond)
        ax.errorbar(s.index, s["mean"], yerr=s["std"], marker="o^"[j], capsize=3, color=f"C{j}",
                    linestyle=arch_style.get(arch, "-"),
                    label=f"fine-tuned on {cond} labels"
                    + (f" ({arch})" if len(archs_) > 1 else ""))
    for a in archs_:  # Table 2: (accuracy hard, accuracy soft, CE hard, CE soft) at eps 4/255
        ref = P.PAPER_TABLE2.get(a.family)
        if ref is None:
            continue
        for j, cond in enumerate(P.ATTACK_METHODS):
            F.paper_marks(ax, 4, ref[j if metric == "accuracy" else 2 + j], color=f"C{j}",
                          marker=paper_marker[a.family],
                          label=f"paper Table 2, {cond} ({a.family})")
    ax.set(xlabel="FGSM eps (pixel units /255; 0 = clean)",
           ylabel="accuracy vs CIFAR-10 labels (fraction)" if metric == "accuracy"
           else "cross-entropy vs CIFAR-10 labels (nats)")
    F.question_title(ax, questions[metric], "paper Table 2",
                     F.spread_note(n_fold_models, "fold models"))
    ax.legend(fontsize=7)
fig.tight_layout()
plt.show()
fg.groupby(["arch", "condition", "eps"])[["accuracy", "ce"]].agg(["mean", "std"]).unstack(
    "condition").rename(columns={"ce": "cross-entropy"}, level=0).style.format(
    "{:.3f}").format_index("{:g}", axis=0, level="eps").set_caption(
    "eps in pixel units /255; accuracy (fraction), cross-entropy vs CIFAR-10 labels (nats); mean "
    "and std over fold models")

# %% [markdown]
# ### Soft minus hard within each fold

# %%
pd.concat({m: P.paired_difference(fg.rename(columns={"condition": "cond"}), m, by=("arch", "eps"),
                                  col="cond") for m in ["accuracy", "ce"]},
          names=["metric"]).style.format(
    "{:.3f}", subset=["mean diff", "std over folds", "t (mean / s.e.)"]).set_caption(
    "soft minus hard: accuracy in fraction, ce in nats; eps in pixel units /255")

# %% [markdown]
# ## PGD: cross-entropy vs iteration (paper Figure 4)

# %%
if pg.empty:
    print("PGD was switched off (pgd_steps or pgd_subset is 0).")
else:
    pgd_bounds = sorted(pg["eps"].unique())
    display(Markdown(
        f"PGD with L-inf bounds **{', '.join(f'{e:g}' for e in pgd_bounds)} (/255)**, step size "
        f"**{prm['pgd_step_size']}/255**, **{prm['pgd_steps']} iterations**, uniform random start "
        "in the eps-ball; cross-entropy against the CIFAR-10 labels, averaged over the attacked "
        "images (iteration 0 = the random start). The curve is drawn at the smallest bound, "
        "the table gives every bound."))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (arch, cond), g in pg[pg["eps"] == pgd_bounds[0]].groupby(["arch", "condition"]):
        s = g.groupby("step")["ce"].agg(["mean", "std"])
        j = P.ATTACK_METHODS.index(cond)
        ax.plot(s.index, s["mean"], color=f"C{j}", marker="o^"[j], ms=3,
                linestyle=arch_style.get(arch, "-"),
                label=f"{cond} labels" + (f" ({arch})" if len(archs_) > 1 else ""))
        ax.fill_between(s.index, s["mean"] - s["std"], s["mean"] + s["std"], color=f"C{j}",
                        alpha=0.2)
    ax.set(xlabel="PGD iteration (0 = random start)",
           ylabel="cross-entropy vs CIFAR-10 labels (nats)")
    F.question_title(ax, "Does the human-label models' loss rise more slowly under PGD?",
                     f"paper Fig. 4; eps {pgd_bounds[0]:g}/255",
                     F.spread_note(
                         int(pg.groupby(["arch", "condition", "eps", "step"]).size().max()),
                         "fold models", drawn="band"))
    ax.legend(fontsize=8)
    plt.show()
    last = pg[pg["step"] == pg["step"].max()]
    after = last.groupby(["arch", "condition", "eps"]).agg(
        **{"cross-entropy (nats)": ("ce", "mean"), "accuracy": ("final_accuracy", "mean")}
    ).unstack("eps")
    after.columns = pd.MultiIndex.from_tuples([(m, f"eps {e:g}/255") for m, e in after.columns])
    display(after.style.format("{:.3f}").set_caption(
        "after the last PGD iteration, mean over fold models: cross-entropy vs CIFAR-10 labels "
        "(nats), accuracy (fraction)"))

# %% [markdown]
# ## This run vs the paper
# Table 2's row for the same architecture family (all 10,000 test images, eps = 4/255), and the
# paper's PGD accuracies.

# %%
cmp = P.paper_vs_run_table2(fg, archs_, eps0)
display(cmp.style.format("{:.3f}", subset=[c for c in cmp.columns if c != "paper row"],
                         na_rep="n/a")
        .set_caption("accuracy (fraction), cross-entropy (nats)"))
if not pg.empty:
    acc = pg[pg["eps"] == pg["eps"].min()].groupby("condition")["final_accuracy"].mean()
    display(pd.DataFrame({"paper": P.PAPER_PGD_ACCURACY,
                          "this run": [acc.get("hard", np.nan), acc.get("soft", np.nan)]},
                         index=["accuracy after PGD, hard", "accuracy after PGD, soft"])
            .style.format("{:.3f}")
            .set_caption("accuracy (fraction)"))

# %%
t2 = fg[fg.eps == eps0].groupby(["arch", "condition"])[["accuracy", "ce"]].mean()
lines = []
for a in archs_:
    if (a.label, "hard") in t2.index and (a.label, "soft") in t2.index:
        h, s = t2.loc[(a.label, "hard")], t2.loc[(a.label, "soft")]
        lines.append(f"- {a.label}, FGSM eps {eps0}/255: accuracy hard {h.accuracy:.3f} vs soft "
                     f"{s.accuracy:.3f}; cross-entropy hard {h.ce:.2f} vs soft {s.ce:.2f}.")
display(Markdown("**What this run measured:**\n\n" + "\n".join(lines)))

# %% [markdown]
# **Why this run differs from the paper.** Written from this run's parameters, section 3's and
# the data.

# %%
from softlib import data as sdata

attacked = dict(alt, archs=[a for a in alt["archs"] if not only_archs or a[0] in only_archs])
display(Markdown(P.adversarial_budget(sec.profile, prm, attacked) + "\n" + P.data_notes(
    "adversarial", sdata.provenance("cifar10", root=sec.data_root))))
