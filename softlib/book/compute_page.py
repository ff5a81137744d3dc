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
from .bundle import short_device_name

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


def _records() -> list[tuple[str, dict[str, Any]]]:
    """(file name, content) of every benchmark record committed under ``benchmarks/*.json``."""
    return [(path.name, json.loads(path.read_text()))
            for path in sorted(BENCHMARKS.glob("*.json"))]


def _gpu(res: dict[str, Any]) -> str | None:
    """The GPU a record was measured on (None for a CPU's)."""
    return (res.get("machine") or {}).get("gpu") or res.get("gpu")


def _device(res: dict[str, Any]) -> str | None:
    return _gpu(res) or (res.get("machine") or {}).get("cpu")


def _steady_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """A graph-reuse record (``benchmarks/graph_reuse.py``: call after call with new models) as
    one row per mode: its steady-state aggregate speed."""
    modes = {"False": "eager", "reduce-overhead": "CUDA graphs (compile='reduce-overhead')"}
    return [{"measurement": f"{res.get('k')} models at once, batch {res.get('batch')}, new models "
                            f"every call, steady state, {modes.get(mode, mode)}",
             "value": float(v["img_per_s"]), "unit": "img/s", "models": res.get("k"),
             "batch": res.get("batch"), "mode": modes.get(mode, mode)}
            for mode, v in (res.get("steady_state") or {}).items()]


def recorded_benchmarks() -> pd.DataFrame:
    """GPU benchmark results committed under ``benchmarks/*.json``, one row per measurement
    (file, device, torch, measurement, value, unit, note); a graph-reuse record's calls are
    summed up as their steady state, one row per mode."""
    rows = []
    for name, res in _records():
        m = res.get("machine") or {}
        own = [r for r in res.get("rows", []) if isinstance(r, dict) and "measurement" in r]
        for r in own + _steady_rows(res):
            rows.append({"file": name, "device": _device(res), "torch": m.get("torch"),
                         "measurement": r["measurement"], "value": r.get("value"),
                         "unit": r.get("unit", ""), "note": r.get("note", "")})
    return pd.DataFrame(rows, columns=["file", "device", "torch", "measurement", "value", "unit",
                                       "note"])


#: The training engine's targets on one H100 / H200 (issue 13): (what, threshold, unit)
GPU_TARGETS = (
    ("engine / bare loop, one ResNet-20 (the engine's overhead)", 0.90, "ratio"),
    ("fold grid: 10 ResNet-20s at once, images/s in all", 100_000.0, "img/s"),
    ("fold grid / the 8-worker DataLoader training one model", 3.0, "x"),
)


def _target_of(r: dict[str, Any]) -> tuple[int, str] | None:
    """Which of :data:`GPU_TARGETS` a recorded row measures, and how (eager, CUDA graphs)."""
    m = str(r.get("measurement", ""))
    if m == "engine / bare":
        return 0, "eager"
    if m == "10 models at once (vmap)":
        return 1, "eager (softlib.bench)"
    if r.get("models") == 10 and r.get("batch") == 128 and "mode" in r:
        return 1, f"{r['mode']}, new models every call (graph_reuse.py)"
    if m == "10 models at once / DataLoader, 8 workers":
        return 2, "eager"
    return None


def gpu_targets(records: list[tuple[str, dict[str, Any]]] | None = None) -> pd.DataFrame:
    """Each target of :data:`GPU_TARGETS` against the best measurement recorded for it on each
    GPU (its value, how it was run, the record file, met or missed); the targets no GPU record
    measures are listed with "not measured yet"."""
    records = _records() if records is None else records
    best: dict[tuple[int, str], dict[str, Any]] = {}
    for name, res in records:
        device = _gpu(res)
        if not device:  # a CPU's record: the targets are a GPU's
            continue
        rows = [r for r in res.get("rows", []) if isinstance(r, dict)] + _steady_rows(res)
        for r in rows:
            got = _target_of(r)
            if got is None or r.get("value") is None:
                continue
            i, how = got
            key = (i, device)
            if key not in best or float(r["value"]) > best[key]["value"]:
                best[key] = {"value": float(r["value"]), "how": how, "file": name}
    out = []
    for i, (what, threshold, unit) in enumerate(GPU_TARGETS):
        devices = sorted(d for j, d in best if j == i)
        for d in devices or [None]:
            b = best.get((i, d)) if d else None
            out.append({
                "target": what, "required": f">= {F.sig(threshold)} {unit}",
                "GPU": short_device_name(d) if d else "n/a",
                "best recorded": f"{F.sig(b['value'])} {unit}" if b else "not measured yet",
                "how": b["how"] if b else "", "record": b["file"] if b else "",
                "verdict": ("met" if b["value"] >= threshold else "missed") if b else "n/a"})
    return pd.DataFrame(out).set_index(["target", "required", "GPU"])


def training_speeds(records: list[tuple[str, dict[str, Any]]] | None = None) -> pd.DataFrame:
    """The studies' training speeds recorded per architecture (rows with an ``arch``): one model
    at a time (role ``train``) and several stacked (``train_stacked``, aggregate), per GPU."""
    records = _records() if records is None else records
    rows = []
    for name, res in records:
        for r in res.get("rows", []):
            if not isinstance(r, dict) or not r.get("arch") or r.get("unit") != "img/s":
                continue
            role = r.get("role", "train")
            if role not in ("train", "train_stacked"):
                continue
            # the short GPU name (H100, H200); one model's row names the architecture in words
            gpu = short_device_name(str(_device(res))).split(" ")[0]
            alone = role == "train"
            label = str(r.get("measurement", "")).removeprefix("train ") if alone else None
            rows.append({"arch": r["arch"], "label": label or None, "GPU": gpu,
                         "models": int(r.get("models") or 1) if not alone else 1,
                         "img/s": float(r["value"]), "record": name})
    df = pd.DataFrame(rows, columns=["arch", "label", "GPU", "models", "img/s", "record"])
    names = df.dropna(subset=["label"]).drop_duplicates("arch").set_index("arch")["label"]
    df["label"] = df["arch"].map(names).fillna(df["arch"])
    return df


def plot_training_speeds(speeds: pd.DataFrame):
    """:func:`training_speeds` as horizontal bars, an architecture per row: one model at a time
    beside the largest stacked group recorded (aggregate images/s), labelled with the GPU."""
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(speeds.sort_values("img/s", ascending=False)["arch"]))
    labels = dict(zip(speeds["arch"], speeds["label"]))
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(archs) + 1.4))
    h = 0.38
    for i, arch in enumerate(archs):
        rows = speeds[speeds["arch"] == arch]
        alone = rows[rows["models"] == 1]
        stacked = rows[rows["models"] > 1].sort_values("models")
        for off, part, colour in ((-h / 2, alone, "C0"), (h / 2, stacked, "C1")):
            if part.empty:
                continue
            r = part.iloc[-1]
            ax.barh(i + off, r["img/s"], height=h, color=colour)
            how = f"{int(r['models'])} at once, " if r["models"] > 1 else ""
            ax.text(r["img/s"] * 1.05, i + off, f"{r['img/s']:,.0f} ({how}{r['GPU']})",
                    va="center", fontsize=7)
    ax.set_yticks(range(len(archs)), [labels[a] for a in archs])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=ax.get_xlim()[1] * 4)  # room for the labels
    ax.set(xlabel="training images per second (log scale; stacked: all the group's models)")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color="C0"),
                       plt.Rectangle((0, 0), 1, 1, color="C1")],
              labels=["one model at a time", "several trained at once (stacked)"],
              loc="lower right", fontsize=8)
    F.question_title(ax, "How fast do the studies' models train on one GPU?",
                     "recorded under benchmarks/ on lent GPUs",
                     "one run each: no error bars")
    fig.tight_layout()
    return fig


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
