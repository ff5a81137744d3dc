"""What the Compute page shows: the cached benchmark and this build's section timings."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .. import figures as F
from ..cache import Entry, ResultCache

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
# the benchmark measures these: a change to any of them is a different engine
ENGINE_SOURCES = ("train.py", "augment.py", "multimodel.py", "bench.py", "attacks.py",
                  "losses.py", "models/resnet.py", "models/common.py")


def engine_fingerprint() -> str:
    h = hashlib.sha256()
    for rel in ENGINE_SOURCES:
        p = Path(__file__).resolve().parents[1] / rel
        h.update(rel.encode() + (p.read_bytes() if p.exists() else b"missing"))
    return h.hexdigest()[:16]


def cached_benchmark(cache: ResultCache, quick: bool, device: str) -> dict[str, Any]:
    """Run ``softlib.bench`` once per machine, torch version and engine source; then reuse it."""
    import torch

    from .. import bench
    machine = bench.machine_info(torch.device(device))
    config = {"machine": machine, "engine": engine_fingerprint(), "quick": bool(quick)}
    entry = cache.get_or_compute("benchmark", config,
                                 lambda: Entry(meta=bench.run(quick=bool(quick), device=device)))
    return entry.meta


def format_table(result: dict[str, Any]) -> str:
    from ..bench import format_table as fmt
    return fmt(result)


def recorded_benchmarks() -> pd.DataFrame:
    """GPU benchmark results committed under ``benchmarks/*.json`` (one row per measurement)."""
    rows = []
    for path in sorted(BENCHMARKS.glob("*.json")):
        res = json.loads(path.read_text())
        m = res.get("machine", {})
        for r in res.get("rows", []):
            rows.append({"file": path.name, "device": m.get("gpu") or m.get("cpu"),
                         "torch": m.get("torch"), **r})
    return pd.DataFrame(rows)


def section_timings() -> pd.DataFrame:
    """This build's per-section wall time and peak memory (written by the book runner)."""
    path = os.environ.get("SOFTLIB_TIMINGS")
    if not path or not Path(path).exists():
        return pd.DataFrame()
    t = json.loads(Path(path).read_text())
    if not t:
        return pd.DataFrame()
    df = pd.DataFrame(t).T
    df["minutes"] = df["seconds"].astype(float) / 60
    return df[["profile", "seconds", "minutes", "peak_rss_mb"]]


def plot_benchmark(bench: dict[str, Any]):
    """The benchmark's throughputs (rows measured in images/s) as horizontal bars, titled with
    the machine that measured them."""
    import matplotlib.pyplot as plt

    rows = pd.DataFrame(bench["rows"])
    speeds = rows[rows["unit"].str.contains("/s")]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(speeds) + 1))
    ax.barh(speeds["measurement"], speeds["value"], color="C0")
    ax.invert_yaxis()
    m = bench["machine"]
    ax.set(xlabel="throughput (images/s; higher is better)")
    F.question_title(ax, "How fast does softlib train, evaluate and attack on this machine?",
                     f"{m['device']}: {m['cpu'] if m['device'] == 'cpu' else m['gpu']}",
                     f"median of {bench.get('repeats', '?')} repeat(s); the spread is not "
                     "recorded, so no error bars")
    fig.tight_layout()
    return fig


def other_measurements(bench: dict[str, Any]) -> pd.DataFrame:
    """The benchmark's rows that are not throughputs (ratios, seconds)."""
    rows = pd.DataFrame(bench["rows"])
    return rows[~rows["unit"].str.contains("/s")][["measurement", "value", "unit", "note"]]


def plot_section_timings(timings: pd.DataFrame, profile: str):
    """Wall time per section of this build (:func:`section_timings`) as horizontal bars."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.4 * len(timings) + 1))
    ax.barh(timings.index, timings["minutes"], color="C1")
    ax.invert_yaxis()
    ax.set(xlabel="wall time (min)")
    F.question_title(ax, "How long does each section take to rebuild?",
                     f"profile {profile}: {timings['minutes'].sum():.1f} min for the sections "
                     "before this one", "one build, one measurement each: no error bars")
    fig.tight_layout()
    return fig
