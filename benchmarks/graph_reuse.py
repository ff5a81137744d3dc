"""Does a new group of models reuse the compiled CUDA graphs, and how fast is the engine then?
``python benchmarks/graph_reuse.py [--device cuda]``

The studies call ``fit_stacked`` once per group (fold models, Laing's seeds), each time with new
models. This times successive calls with fresh models, eager and with
``compile='reduce-overhead'``: one warm-up call (cuDNN's autotuning, compiling), then ``--calls``
calls at each of ``--epochs`` (e.g. ``1 3``). Each call is printed as it ends, with
torch.compile's counters, so that a per-call recompile shows up even in a run cut short, and the
JSON is rewritten after each. Two epoch counts split a call's time into its setup (stacking,
the guarded first steps, re-recording the graphs for new parameters, unstacking) and the
steady-state rate of the steps, which is what a study's calls of many epochs see:
``k * n * (e2 - e1) / (t(e2) - t(e1))``, from the median times.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

from softlib._io import save_json
from softlib.bench import machine_info
from softlib.models import build
from softlib.multimodel import fit_stacked
from softlib.train import TrainConfig, resolve_device


def _counters() -> dict:
    from torch._dynamo.utils import counters
    return {k: dict(v) for k, v in counters.items() if v}


def steady_state(rows: list[dict], k: int, n: int) -> dict:
    """Per mode with two or more epoch counts: the steps' rate and the per-call setup seconds,
    from the median call times at the smallest and the largest epoch count."""
    out = {}
    for mode in dict.fromkeys(r["compile"] for r in rows):
        med = {}
        for r in rows:
            if r["compile"] == mode and not r["warmup"]:
                med.setdefault(r["epochs"], []).append(r["seconds"])
        if len(med) < 2:
            continue
        e1, e2 = min(med), max(med)
        t1, t2 = statistics.median(med[e1]), statistics.median(med[e2])
        per_epoch = (t2 - t1) / (e2 - e1)
        out[str(mode)] = {"img_per_s": k * n / per_epoch if per_epoch > 0 else float("nan"),
                          "setup_seconds": t1 - e1 * per_epoch}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--calls", type=int, default=2, help="timed calls per epoch count")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 3],
                   help="epochs per call; two or more counts give the steady-state rate")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if any(e < 1 for e in a.epochs):
        p.error("--epochs: positive integers")
    dev = resolve_device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (a.n, 32, 32, 3), dtype=np.uint8)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, a.n)]
    cfg = TrainConfig(arch="resnet_20", optimizer="sgd", lr=0.01, momentum=0.9,
                      batch_size=a.batch, epochs=1, augment="crop_flip", amp=dev.type == "cuda")
    res = {"machine": machine_info(dev), "k": a.k, "batch": a.batch, "n": a.n, "rows": [],
           "steady_state": {}}
    for mode in (False, "reduce-overhead"):
        plan = [(min(a.epochs), True)] + [(e, False) for e in a.epochs for _ in range(a.calls)]
        for call, (epochs, warmup) in enumerate(plan):
            models = [build("resnet_20") for _ in range(a.k)]
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            fit_stacked(models, x, t, [np.arange(a.n)] * a.k,
                        cfg.replace(compile=mode, epochs=epochs), device=dev, progress=False)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            s = time.perf_counter() - t0
            rate = a.k * a.n * epochs / s
            counters = _counters()
            res["rows"].append({"compile": mode, "call": call, "epochs": epochs,
                                "warmup": warmup, "seconds": s, "img_per_s": rate,
                                "counters": counters})
            print(f"compile={mode!s:16} call {call} ({epochs} epoch{'s' * (epochs > 1)}"
                  f"{', warm-up' if warmup else ''}): {s:7.2f} s  {rate:9,.0f} img/s  "
                  f"{json.dumps(counters.get('stats', {}))}", file=sys.stderr, flush=True)
            res["steady_state"] = steady_state(res["rows"], a.k, a.n)
            if a.json:  # atomically: a run cut by a time limit keeps the calls done, intact
                save_json(a.json, res)
    for mode, ss in res["steady_state"].items():
        print(f"compile={mode}: steady state {ss['img_per_s']:,.0f} img/s, "
              f"{ss['setup_seconds']:.2f} s setup per call", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
