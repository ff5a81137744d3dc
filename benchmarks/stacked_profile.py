"""Where the time of stacked training goes: ``python benchmarks/stacked_profile.py [--device cuda]``.

The fold grid (K ResNet-20s at once, ``softlib.multimodel.fit_stacked``) reached 47,800 img/s on
an H200, short of issue #13's 100,000. This script splits the gap, in one run on one machine:

1. ``fit_stacked``: the engine (K models' batches gathered and augmented on the device, the
   vmapped forward/backward, the optimizer step), images/s summed over the K models;
2. the same vmapped forward/backward/step on pre-made float tensors (no indexing, no
   augmentation, no loss bookkeeping): the engine's own overhead is 1 / 2;
3. one model at batch K x B (a dense batch as large as the stack): the ceiling if vmap's
   batched kernels (grouped convolutions, per-model BatchNorm) were as fast as a plain batch;
4. one model at batch B, the studies' single-model speed;

then profiles one ``fit_stacked`` epoch (``torch.profiler``) and lists the operators that take
the most device time (CPU time on a CPU), so that the next change targets what dominates.
``--compile`` adds 1 and 2 compiled with ``mode='reduce-overhead'`` (CUDA graphs; the engine
through ``TrainConfig(compile='reduce-overhead')``), each with its compile time. On an H100 the
graphed step ran 3.2x the eager one (126,000 against 39,000 img/s for 10 ResNet-20s;
``benchmarks/nvidia-h100-2026-11-26-stacked.json``), where plain ``torch.compile`` of the
engine gave 1.3x. Writes everything as JSON with ``--json``.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import numpy as np
import torch

from softlib.bench import machine_info
from softlib.models import build
from softlib.multimodel import StackedModels, fit_stacked
from softlib.train import TrainConfig, _autocast, _make_optimizer, resolve_device


def _images(n: int):
    from softlib import data
    if data.available("cifar10", "test") and len(data.load("cifar10", "test").images) >= n:
        s = data.load("cifar10", "test")
        return s.images[:n], np.eye(10, dtype=np.float32)[np.asarray(s.labels[:n])], "CIFAR-10 test"
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)], "random uint8")


def _timed(fn, repeats: int, dev: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _bare_stacked_epoch(stacked: StackedModels, xs: torch.Tensor, ts: torch.Tensor, opt,
                        amp: bool) -> None:
    """Forward/backward/step of the stacked models over pre-made [steps, K, B, ...] batches."""
    for xb, tb in zip(xs, ts):
        with _autocast(xb.device, amp):
            out = stacked(xb)
        loss = torch.nn.functional.cross_entropy(out.float().flatten(0, 1), tb.flatten(0, 1),
                                                 reduction="none").view(out.shape[:2]).mean(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()


def _dense_epoch(model, x: torch.Tensor, y: torch.Tensor, batch: int, opt, amp: bool) -> None:
    for s in range(0, x.shape[0], batch):
        with _autocast(x.device, amp):
            out = model(x[s:s + batch])
        loss = torch.nn.functional.cross_entropy(out.float(), y[s:s + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def run(device: str | None, k: int, batch: int, n: int, repeats: int, arch: str,
        top: int, compile_too: bool = False, save=None) -> dict:
    """The measurements as a dict; ``save(result)`` is also called once the timings are in,
    before the (slow) profiler run, so a run cut short by a time limit keeps them."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = dev.type == "cuda"
    x, t, source = _images(n)
    cfg = TrainConfig(arch=arch, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                      batch_size=batch, epochs=1, augment="crop_flip", amp=amp)
    torch.manual_seed(0)
    model0 = build(arch)
    res = {"machine": machine_info(dev), "images": source, "arch": arch, "k_models": k,
           "batch_size": batch, "n_per_model": n, "repeats": repeats, "rows": [], "top_ops": []}

    def row(name, value, unit, note=""):
        res["rows"].append({"measurement": name, "value": float(value), "unit": unit, "note": note})
        print(f"  {name}: {value:,.4g} {unit} {note}", file=sys.stderr, flush=True)

    def engine(config=cfg):
        return fit_stacked([copy.deepcopy(model0) for _ in range(k)], x, t, [np.arange(n)] * k,
                           config, device=dev, progress=False)

    steps = n // batch
    xf = torch.from_numpy(x[:steps * batch]).to(dev).permute(0, 3, 1, 2).float().div(255)
    yl = torch.from_numpy(t[:steps * batch].argmax(1)).to(dev)
    xs = xf.view(steps, 1, batch, *xf.shape[1:]).expand(steps, k, batch, *xf.shape[1:]).contiguous()
    ys = yl.view(steps, 1, batch).expand(steps, k, batch).contiguous()
    stacked = StackedModels([copy.deepcopy(model0) for _ in range(k)]).to(dev).train()
    s_opt = _make_optimizer(stacked, cfg)
    dense = copy.deepcopy(model0).to(dev).train()
    d_opt = _make_optimizer(dense, cfg)
    xd = xf.repeat(k, 1, 1, 1)
    yd = yl.repeat(k)
    single = copy.deepcopy(model0).to(dev).train()
    one_opt = _make_optimizer(single, cfg)

    parts = {
        f"{k} models at once: fit_stacked (engine)": (engine, k * n),
        f"{k} models at once: vmapped step on pre-made tensors": (
            lambda: _bare_stacked_epoch(stacked, xs, ys, s_opt, amp), k * steps * batch),
        f"one model at batch {k * batch} (dense ceiling)": (
            lambda: _dense_epoch(dense, xd, yd, k * batch, d_opt, amp), k * steps * batch),
        f"one model at batch {batch}": (
            lambda: _dense_epoch(single, xf, yl, batch, one_opt, amp), steps * batch),
    }
    if compile_too:
        c_stacked = StackedModels([copy.deepcopy(model0) for _ in range(k)]).to(dev).train()
        c_opt = _make_optimizer(c_stacked, cfg)
        graphed = torch.compile(c_stacked, mode="reduce-overhead")
        parts[f"{k} models at once: fit_stacked, compile='reduce-overhead' (CUDA graphs)"] = (
            lambda: engine(cfg.replace(compile="reduce-overhead")), k * n)
        parts[f"{k} models at once: vmapped step, compiled reduce-overhead (CUDA graphs)"] = (
            lambda: _bare_stacked_epoch(graphed, xs, ys, c_opt, amp), k * steps * batch)
    for name, (fn, _) in parts.items():  # warm-up: allocator, cuDNN's kernel choice, compiling
        t0 = time.perf_counter()
        fn()
        if "compile" in name:
            row(f"first epoch (compiling): {name}", time.perf_counter() - t0, "s")
    times = {name: [] for name in parts}
    for _ in range(repeats):  # interleaved, so a change in load hits all alike
        for name, (fn, _) in parts.items():
            times[name].append(_timed(fn, 1, dev))
    rate = {name: parts[name][1] / statistics.median(v) for name, v in times.items()}
    for name, r in rate.items():
        row(name, r, "img/s")
    names = list(parts)
    row("engine / vmapped step", rate[names[0]] / rate[names[1]], "ratio",
        "(the engine's data preparation and bookkeeping)")
    row("vmapped step / dense ceiling", rate[names[1]] / rate[names[2]], "ratio",
        "(what vmap's batched kernels cost against one plain batch)")
    if save is not None:
        save(res)

    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        engine()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    attr = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    for e in events[:top]:
        res["top_ops"].append({"op": e.key, "calls": int(e.count),
                               "ms": getattr(e, attr) / 1e3, "share": getattr(e, attr) / total})
    print(f"  top {top} operators by {'device' if dev.type == 'cuda' else 'CPU'} time in one "
          f"fit_stacked epoch:", file=sys.stderr)
    for r in res["top_ops"]:
        print(f"    {r['share']:6.1%} {r['ms']:9.1f} ms {r['calls']:6d} calls  {r['op'][:90]}",
              file=sys.stderr)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--k", type=int, default=10, help="models at once (default 10: the folds)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--n", type=int, default=None,
                   help="training images per model (default 5,000 on CUDA, 256 on CPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--arch", default="resnet_20")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--compile", action="store_true",
                   help="also measure the compiled stacked paths (a minute or more of compiling; "
                        "on an H100 this run did not finish in 240 s: graph_reuse.py times the "
                        "engine with graphs call by call)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    dev = resolve_device(a.device)
    n = a.n or (5000 if dev.type == "cuda" else 256)
    from softlib._io import save_json

    def save(res):
        if a.json:
            save_json(a.json, res)
    save(run(a.device, a.k, a.batch, n, a.repeats, a.arch, a.top, compile_too=a.compile,
             save=save))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
