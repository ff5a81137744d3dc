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

from softlib import figures as F
from softlib.book import compute_page as compute

bench = compute.cached_benchmark(sec.cache, quick=sec.params["quick"], device=sec.device)
print(compute.format_table(bench))

# %%
fig = compute.plot_benchmark(bench)
plt.show()
compute.other_measurements(bench)

# %% [markdown]
# ## GPU results recorded in the repository
# Benchmarks run on lent GPUs are stored in `benchmarks/` with the machine named
# (`benchmarks/README.md` says how each was run). First the training engine's targets on one
# H100 / H200, each against the best measurement recorded for it; then how fast each of the
# studies' architectures trains, one model at a time and several at once (what
# `python -m softlib.book plan` costs a profile with).

# %%
compute.gpu_targets().style.set_caption(
    "the engine's targets on one GPU: the best recorded measurement of each, per GPU")

# %%
speeds = compute.training_speeds()
if speeds.empty:
    print("No per-architecture training speed has been recorded in benchmarks/ yet.")
else:
    fig = compute.plot_training_speeds(speeds)
    plt.show()

# %% [markdown]
# Every recorded measurement, file by file (the output is folded: click to open it).

# %% tags=["hide-output"]
recorded = compute.recorded_benchmarks()
if recorded.empty:
    print("No GPU benchmark has been recorded in benchmarks/ yet.")
recorded.style.format({"value": F.sig}).hide(axis="index") if not recorded.empty else recorded

# %% [markdown]
# ## Time and memory per section in this build
# Wall time of each section as executed by the book runner (including kernel start-up and, on
# a rebuild, cache hits instead of training), and the kernel's peak resident memory.

# %%
timings = compute.section_timings()
if timings.empty:
    print("No section timings: this notebook was run outside the book runner.")
else:
    fig = compute.plot_section_timings(timings, profile)
    plt.show()
timings.style.format({"seconds": "{:.0f}", "minutes": "{:.1f}", "peak_rss_mb": "{:.0f}"},
                     na_rep="n/a") \
    if not timings.empty else timings
