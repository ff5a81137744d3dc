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
# # Compute: how fast the book rebuilds
#
# Training speed decides whether a reader can rebuild this book, so it is measured, not
# guessed. This page shows the benchmark of softlib's training engine on the machine that built
# this book, and how long each section took in this build.

# %% tags=["parameters"]
profile = "cpu"
data_root = ""
output_dir = ""
seed = 0
device = "auto"
quick = None

# %%
from softlib.book.header import show_header

sec = show_header(profile, "compute", datasets=["cifar10"], params=locals())

# %% [markdown]
# ## The benchmark
# `python -m softlib.bench` measures, in one run on one machine (each timing repeated, the
# median reported): the engine's training epoch against a bare forward/backward/step loop over
# pre-made tensors (the model-only limit), the engine against a conventional `DataLoader` with
# per-image PIL transforms, several small models trained at once against one after another, and
# evaluation and attack throughput. The result is cached for this machine, torch version and
# engine source; a change to any of them measures again.

# %%
import matplotlib.pyplot as plt
import pandas as pd

from softlib.book import compute_page as compute
from softlib.book import figures as F

bench = compute.cached_benchmark(sec.cache, quick=sec.params["quick"], device=sec.device)
print(compute.format_table(bench))

# %%
rows = pd.DataFrame(bench["rows"])
speeds = rows[rows["unit"].str.contains("/s")]
fig, ax = plt.subplots(figsize=(7, 0.45 * len(speeds) + 1))
ax.barh(speeds["measurement"], speeds["value"], color="C0")
ax.invert_yaxis()
machine = (bench["machine"]["cpu"] if bench["machine"]["device"] == "cpu"
           else bench["machine"]["gpu"])
ax.set(xlabel="throughput (images/s; higher is better)")
F.question_title(ax, "How fast does softlib train, evaluate and attack on this machine?",
                 f"{bench['machine']['device']}: {machine}",
                 f"median of {bench.get('repeats', '?')} repeat(s); the spread is not recorded, "
                 "so no error bars")
fig.tight_layout()
plt.show()
rows[~rows["unit"].str.contains("/s")][["measurement", "value", "unit", "note"]]

# %% [markdown]
# ## GPU results recorded in the repository
# Benchmarks run on a GPU are stored in `benchmarks/` with the machine named.

# %%
recorded = compute.recorded_benchmarks()
if recorded.empty:
    print("No GPU benchmark has been recorded in benchmarks/ yet.")
recorded

# %% [markdown]
# ## Time and memory per section in this build
# Wall time of each section as executed by the book runner (including kernel start-up and, on
# a rebuild, cache hits instead of training), and the kernel's peak resident memory.

# %%
timings = compute.section_timings()
if timings.empty:
    print("No section timings: this notebook was run outside the book runner.")
else:
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(timings) + 1))
    ax.barh(timings.index, timings["minutes"], color="C1")
    ax.invert_yaxis()
    ax.set(xlabel="wall time (min)")
    F.question_title(ax, "How long does each section take to rebuild?",
                     f"profile {profile}: {timings['minutes'].sum():.1f} min for the sections "
                     "before this one", "one build, one measurement each: no error bars")
    fig.tight_layout()
    plt.show()
timings.style.format({"seconds": "{:.0f}", "minutes": "{:.1f}", "peak_rss_mb": "{:.0f}"},
                     na_rep="n/a") \
    if not timings.empty else timings
