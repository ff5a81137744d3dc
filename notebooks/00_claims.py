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
# The three papers' headline claims, each beside what this build measured, with a verdict
# computed by the rule at the end of this page. Nothing here is typed in except the claims:
# each section records its claims' numbers as it computes them, with the profile and the
# device that produced them, and this page (executed after the sections) only reads those
# records. Every row links to the figure or table its number comes from. The code of this
# page is folded away: "Show code cell source" opens it.

# %% tags=["parameters"]
profile = "cpu"
data_root = ""
output_dir = ""
seed = 0
device = "auto"

# %%
from softlib.book.header import show_header

sec = show_header(profile, "claims", params=locals())

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from softlib.book import claims
from softlib import figures as F

table = claims.ledger(sec.profile)
display(Markdown(claims.summary_markdown(table, sec.profile)))
fig = claims.plot_verdicts(table)
F.question_title(fig.axes[0], "How many of each paper's claims does this build reproduce?")
plt.show()

# %% [markdown]
# ## The effects next to the papers'
# Each claim's effect in this build divided by the paper's (1, dotted: the paper's size; 0: no
# effect; below 0: the opposite direction), with its 95% interval. The verdict asks only about
# the direction; this figure shows how large the effect is. Claims without a number in the
# paper, or without a measurement here, are listed without a point.

# %% tags=["hide-input", "full-width"]
fig = claims.plot_ledger(table)
F.question_title(fig.axes[0], "Does this build reproduce each claim, and how large is its effect?",
                 "paper's effect = 1, dotted line",
                 "points: this build's effect / the paper's; bars: 95% interval")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Claim by claim
# Each row: the claim and the quantity that tests it, the paper's number and where it comes
# from, this build's number with its 95% interval, how many folds, seeds, people or images are
# behind it, the verdict, and a link to the section's figure or table that shows it.

# %% tags=["hide-input", "full-width"]
display(HTML(claims.ledger_html(table)))

# %% tags=["remove-input"]
display(Markdown(claims.RULE_MARKDOWN))
