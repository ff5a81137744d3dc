"""Does a new group of models reuse the compiled CUDA graphs? ``python benchmarks/graph_reuse.py``

The studies call ``fit_stacked`` once per group (fold models, Laing's seeds), each time with new
models. This times successive calls with fresh models, eager and with
``compile='reduce-overhead'``, printing each call as it ends with torch.compile's counters, so
that a per-call recompile or re-recording shows up even in a run cut short.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from softlib.bench import machine_info
from softlib.models import build
from softlib.multimodel import fit_stacked
from softlib.train import TrainConfig, resolve_device


def _counters() -> dict:
    from torch._dynamo.utils import counters
    return {k: dict(v) for k, v in counters.items() if v}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1, help="per call (more: less per-call setup)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    dev = resolve_device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (a.n, 32, 32, 3), dtype=np.uint8)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, a.n)]
    cfg = TrainConfig(arch="resnet_20", optimizer="sgd", lr=0.01, momentum=0.9,
                      batch_size=a.batch, epochs=a.epochs, augment="crop_flip", amp=dev.type == "cuda")
    rows = []
    for mode in (False, "reduce-overhead"):
        for call in range(a.calls):
            models = [build("resnet_20") for _ in range(a.k)]
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            fit_stacked(models, x, t, [np.arange(a.n)] * a.k, cfg.replace(compile=mode),
                        device=dev, progress=False)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            s = time.perf_counter() - t0
            rows.append({"compile": mode, "call": call, "seconds": s,
                         "img_per_s": a.k * a.n * a.epochs / s, "counters": _counters()})
            print(f"compile={mode!s:16} call {call}: {s:7.2f} s  {a.k * a.n * a.epochs / s:9,.0f} img/s  "
                  f"{json.dumps(_counters().get('stats', {}))}", file=sys.stderr, flush=True)
            if a.json:
                with open(a.json, "w") as f:
                    json.dump({"machine": machine_info(dev), "k": a.k, "batch": a.batch, "n": a.n, "epochs": a.epochs, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
