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
from IPython.display import Markdown, display

from softlib import figures as F
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
F.sig_table(P.table2(fg, eps0), f"FGSM eps {eps0}/255: accuracy (fraction), "
            "cross-entropy vs CIFAR-10 labels (nats); std over folds")

# %% [markdown]
# ## FGSM sweep over eps (4..8 / 255)
# Points are means over the fold models, error bars the fold-to-fold standard deviation. Hollow
# markers (one shape per architecture family) are the paper's Table 2 row for the same family at
# eps = 4/255 (`peterson.PAPER_TABLE2`; all 10,000 test images, models fine-tuned for 150
# epochs).

# %%
P.plot_fgsm_sweep(fg, archs_)
plt.show()
F.sig_table(P.fgsm_sweep_table(fg), "eps in pixel units /255; accuracy (fraction), "
            "cross-entropy vs CIFAR-10 labels (nats); mean and std over fold models")

# %% [markdown]
# ### Soft minus hard within each fold
# The same fold model fine-tuned both ways is attacked on the same images, so the difference is
# paired: each point is the mean over fold models with ±2 standard errors, beside the paper's
# Table 2 difference for the same family at eps = 4/255.

# %%
P.plot_fgsm_differences(fg, archs_)
plt.show()
F.sig_table(P.fgsm_paired_differences(fg), "soft minus hard: accuracy in fraction, "
            "ce in nats; eps in pixel units /255")

# %% [markdown]
# ## PGD: cross-entropy vs iteration (paper Figure 4)

# %%
if pg.empty:
    print("PGD was switched off (pgd_steps or pgd_subset is 0).")
else:
    display(Markdown(P.pgd_settings_text(pg, prm["pgd_step_size"], prm["pgd_steps"])))
    P.plot_pgd_curves(pg, archs_)
    plt.show()
    display(F.sig_table(P.pgd_final_table(pg), "after the last PGD iteration, mean "
                        "over fold models: cross-entropy vs CIFAR-10 labels (nats), "
                        "accuracy (fraction)"))

# %% [markdown]
# ## This run vs the paper
# Table 2's row for the same architecture family (all 10,000 test images, eps = 4/255), and the
# paper's PGD accuracies.

# %%
display(F.sig_table(P.paper_vs_run_table2(fg, archs_, eps0),
                    "accuracy (fraction), cross-entropy (nats)"))
if not pg.empty:
    display(F.sig_table(P.pgd_accuracy_vs_paper(pg), "accuracy (fraction)"))

# %%
display(Markdown(P.fgsm_measured_text(fg, archs_, eps0)))

# %% [markdown]
# **Why this run differs from the paper.** Written from this run's parameters, section 3's and
# the data.

# %%
from softlib import data as sdata

attacked = dict(alt, archs=[a for a in alt["archs"] if not only_archs or a[0] in only_archs])
display(Markdown(P.adversarial_budget(sec.profile, prm, attacked) + "\n" + P.data_notes(
    "adversarial", sdata.provenance("cifar10", root=sec.data_root))))
