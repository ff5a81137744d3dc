"""What the Compute page shows: the cached benchmark and this build's section timings."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

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
