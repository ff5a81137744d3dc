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
# # Claims ledger: what this build reproduced
#
# One row per headline claim of the three papers: the paper's number, this build's number with
# its 95% interval and the number of folds, seeds, people or images behind it, and a verdict
# computed by the rule stated below. Nothing on this page is typed in except the claims: each
# section computes its claims' numbers from what it has just computed and records them, with
# the profile and the device that produced them; this page only reads those records (it is
# executed after the sections). A claim whose data are absent on the machine that built the
# book says so and which data it lacks; a claim whose section was not executed in this build
# says that instead. Each row links to the section and the figure or table the number comes from.

# %% tags=["parameters"]
profile = "cpu"
data_root = ""
output_dir = ""
seed = 0
device = "auto"

# %%
from softlib.book.header import show_header

sec = show_header(profile, "claims", params=locals())

# %%
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from softlib.book import claims
from softlib.book import figures as F

table = claims.ledger(sec.profile)
display(HTML(claims.ledger_html(table)))

# %%
display(Markdown(claims.RULE_MARKDOWN))

# %% [markdown]
# ## The effects next to the papers'
# Each claim's effect in this build divided by the paper's (1, dotted: the paper's size; 0: no
# effect; below 0: the opposite direction), with its 95% interval. The verdict asks only about
# the direction; this figure shows how large the effect is. Claims without a number in the
# paper, or without a measurement here, are listed without a point.

# %%
fig = claims.plot_ledger(table)
F.question_title(fig.axes[0], "Does this build reproduce each claim, and how large is its effect?",
                 "paper's effect = 1, dotted line",
                 "points: this build's effect / the paper's; bars: 95% interval")
fig.tight_layout()
plt.show()
claims.verdict_counts(table)
