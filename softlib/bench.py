"""The performance benchmark: ``python -m softlib.bench [--quick] [--json out.json] [--device cpu|cuda]``.

Measures, on the same machine and in the same run (each timing repeated, median reported):

1. the engine's training epoch (uint8 on device, batched augmentation, soft CE) in images/s vs a
   bare forward+backward+step loop over pre-made float device tensors (no augmentation, no
   indexing): the ratio is the engine's overhead (target >= 0.90);
2. the engine vs a conventional ``torch.utils.data.DataLoader`` over an in-memory dataset of PIL
   images with per-image torchvision transforms (RandomCrop(32, padding=4),
   RandomHorizontalFlip, ToTensor), once with ``num_workers=0`` and once as a user would write
   it for speed (``num_workers=min(8, cores)``, pinned memory, persistent workers): the speed-up;
3. the fold grid: K models trained at once (:mod:`softlib.multimodel`, vmap; K=10 on CUDA,
   the 10 folds of one configuration) vs one model and vs the same K one after the other,
   images/s summed over models, and against the multi-worker DataLoader; on CUDA also in
   float32 and with K=20 (both conditions of a fold grid);
4. evaluation images/s (:func:`softlib.train.predict`) and FGSM / PGD-step images/s
   (:mod:`softlib.attacks`).

Images are the real CIFAR-10 test images when ``softlib.data`` finds them under
``$SOFTLIB_DATA``, else random uint8 images (the output says which; speed does not depend on it).
``--quick`` uses tiny sizes and one repeat: it checks that everything runs, not speed.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .train import TrainConfig, fit, predict, resolve_device

__all__ = ["run", "format_table", "main", "machine_info"]


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device), "gpu": None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """n uint8 NHWC images and labels: real CIFAR-10 test images if available, else random."""
    from . import data
    if data.available("cifar10", "test"):
        s = data.load("cifar10", "test")
        if len(s.images) >= n:
            return s.images[:n], np.asarray(s.labels[:n]), "CIFAR-10 test images (softlib.data)"
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n),
            "random uint8 images (CIFAR-10 not found under $SOFTLIB_DATA)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _bare_epoch(model: nn.Module, x: torch.Tensor, t: torch.Tensor, cfg: TrainConfig,
                device: torch.device) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=True)
    model.train()
    amp = device.type == "cuda"
    for s in range(0, x.shape[0], cfg.batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x[s:s + cfg.batch_size])
            loss = torch.nn.functional.cross_entropy(out.float(), t[s:s + cfg.batch_size])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


class _PILDataset(torch.utils.data.Dataset):
    """CIFAR10-like dataset over in-memory PIL images with per-image transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        from PIL import Image
        import torchvision.transforms as T
        self.images = [Image.fromarray(im) for im in images]
        self.labels = [int(v) for v in labels]
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                                    T.ToTensor()])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def _dataloader_epoch(model: nn.Module, loader, cfg: TrainConfig, device: torch.device) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=True)
    model.train()
    amp = device.type == "cuda"
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def run(quick: bool = False, device: str | None = None, arch: str = "resnet_20",
        model_factory: Callable[[], nn.Module] | None = None, n_train: int | None = None,
        batch_size: int = 128, repeats: int | None = None, k_models: int | None = None,
        n_eval: int | None = None, pgd_steps: int = 3, progress: bool = True) -> dict[str, Any]:
    """Run every measurement and return a JSON-able dict (see the module docstring)."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the engine does on CUDA
    k_models = k_models or (10 if dev.type == "cuda" else 3)
    n_train = n_train or (32 if quick else (10000 if dev.type == "cuda" else 1536))
    n_eval = n_eval or (32 if quick else (10000 if dev.type == "cuda" else 2048))
    if quick:
        k_models, pgd_steps = min(k_models, 2), 1
    repeats = repeats or (1 if quick else 3)
    if quick:
        batch_size = min(batch_size, 16)
    if model_factory is None:
        from .models import build

        def model_factory():
            return build(arch)
    images, labels, source = _images(max(n_train, n_eval))
    x_tr, y_tr = images[:n_train], labels[:n_train]
    targets = np.eye(10, dtype=np.float32)[y_tr]
    cfg = TrainConfig(arch=arch, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                      batch_size=batch_size, epochs=1, augment="crop_flip", seed=0)
    torch.manual_seed(0)
    model0 = model_factory().to(dev)
    res: dict[str, Any] = {"machine": machine_info(dev), "images": source, "quick": quick,
                           "arch": arch, "n_train": n_train, "n_eval": n_eval,
                           "batch_size": batch_size, "repeats": repeats, "rows": []}

    def row(name, value, unit, note=""):
        res["rows"].append({"measurement": name, "value": value, "unit": unit, "note": note})
        if progress:
            print(f"  {name}: {value:.4g} {unit} {note}", file=sys.stderr, flush=True)

    # 1. engine vs bare loop --------------------------------------------------------------
    def engine_epoch_seconds():
        m = copy.deepcopy(model0)
        r = fit(m, x_tr, targets, cfg, device=dev, progress=False)
        return r.history["seconds"][0]

    x_dev = torch.from_numpy(x_tr).to(dev).permute(0, 3, 1, 2).float().div(255).contiguous()
    if dev.type == "cuda":
        x_dev = x_dev.contiguous(memory_format=torch.channels_last)
    y_dev = torch.from_numpy(np.asarray(y_tr, dtype=np.int64)).to(dev)
    bare_model = copy.deepcopy(model0)
    if dev.type == "cuda":
        bare_model = bare_model.to(memory_format=torch.channels_last)
    dataset = _PILDataset(x_tr, y_tr)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         num_workers=0, pin_memory=dev.type == "cuda")
    workers = 1 if quick else min(8, os.cpu_count() or 1)
    loader_w = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                           num_workers=workers, pin_memory=dev.type == "cuda",
                                           persistent_workers=True)
    dl_model = copy.deepcopy(model0)
    dlw_model = copy.deepcopy(model0)
    if dev.type == "cuda":
        dlw_model = dlw_model.to(memory_format=torch.channels_last)
    _dataloader_epoch(dlw_model, loader_w, cfg, dev)  # starts the workers
    engine_epoch_seconds()  # warm-ups (allocator, kernels)
    _bare_epoch(bare_model, x_dev, y_dev, cfg, dev)
    # interleaved repeats, so that a change in machine load hits all three alike
    t_eng, t_bare, t_dl, t_dlw = [], [], [], []
    for _ in range(repeats):
        t_eng.append(engine_epoch_seconds())
        t_bare.append(_median_time(lambda: _bare_epoch(bare_model, x_dev, y_dev, cfg, dev), 1, dev))
        t_dl.append(_median_time(lambda: _dataloader_epoch(dl_model, loader, cfg, dev), 1, dev))
        t_dlw.append(_median_time(lambda: _dataloader_epoch(dlw_model, loader_w, cfg, dev), 1, dev))
    eng, bare, dl, dlw = (statistics.median(v) for v in (t_eng, t_bare, t_dl, t_dlw))
    row("engine epoch", n_train / eng, "img/s", "(crop+flip on device, soft CE)")
    row("bare fwd+bwd+step", n_train / bare, "img/s", "(pre-made float tensors)")
    row("engine / bare", bare / eng, "ratio", "(target >= 0.90)")

    row("DataLoader + PIL transforms", n_train / dl, "img/s", "(num_workers=0)")
    row("engine speed-up over DataLoader", dl / eng, "x")
    row(f"DataLoader, {workers} workers", n_train / dlw, "img/s",
        "(pinned, persistent: what a user would write)")
    row(f"engine speed-up over DataLoader, {workers} workers", dlw / eng, "x")
    loader_w = None  # its workers stop with it

    # 3. the fold grid: K models at once vs one model and vs sequential ------------------------
    from .multimodel import fit_stacked
    n_k = n_train if dev.type == "cuda" else max(batch_size, n_train // k_models)
    scfg = cfg.replace(augment="crop_flip")

    def stacked(k: int, amp: Any = "auto", compile: Any = False):
        ms = [copy.deepcopy(model0) for _ in range(k)]
        return fit_stacked(ms, x_tr, targets, [np.arange(n_k)] * k,
                           scfg.replace(amp=amp, compile=compile), device=dev, progress=False)

    def sequential():
        for k in range(k_models):
            fit(copy.deepcopy(model0), x_tr[:n_k], targets[:n_k], scfg.replace(seed=k),
                device=dev, progress=False)

    try:
        stacked(k_models)  # warm-up
        ts, tq = [], []
        for _ in range(repeats):  # interleaved, as above
            ts.append(_median_time(lambda: stacked(k_models), 1, dev))
            tq.append(_median_time(sequential, 1, dev))
        st, sq = statistics.median(ts), statistics.median(tq)
        grid = k_models * n_k / st
        row(f"{k_models} models at once (vmap)", grid, "img/s",
            "(fold grid, summed over models" + (", target >= 100,000)" if dev.type == "cuda" else ")"))
        row(f"{k_models} models one after another", k_models * n_k / sq, "img/s")
        row("vmap speed-up", sq / st, "x")
        row(f"{k_models} models at once / one model", grid / (n_train / eng), "x")
        row(f"{k_models} models at once / DataLoader, {workers} workers", grid / (n_train / dlw),
            "x", "(target >= 3)")
        if dev.type == "cuda" and not quick:  # what precision and a larger stack give
            stacked(k_models, amp=False)
            t32 = _median_time(lambda: stacked(k_models, amp=False), repeats, dev)
            row(f"{k_models} models at once, float32", k_models * n_k / t32, "img/s")
            stacked(2 * k_models)
            t2 = _median_time(lambda: stacked(2 * k_models), repeats, dev)
            row(f"{2 * k_models} models at once (vmap)", 2 * k_models * n_k / t2, "img/s")
            t0 = time.perf_counter()  # the first call compiles and captures the graphs
            stacked(k_models, compile="reduce-overhead")
            row(f"{k_models} models at once, CUDA graphs: first epoch (compiling)",
                time.perf_counter() - t0, "s")
            tg = _median_time(lambda: stacked(k_models, compile="reduce-overhead"), repeats, dev)
            row(f"{k_models} models at once, CUDA graphs", k_models * n_k / tg, "img/s",
                "(compile='reduce-overhead', fold grid, target >= 100,000)")
    except ValueError as e:  # a model whose loss hook does not stack (unstackable_hook)
        row("vmap", float("nan"), "", f"(skipped: {e})")

    # 4. evaluation and attacks --------------------------------------------------------------
    model0.eval()
    x_ev = images[:n_eval]
    predict(model0, x_ev[:min(n_eval, 256)], device=dev)
    ev = _median_time(lambda: predict(model0, x_ev, batch_size=1024, device=dev), repeats, dev)
    row("evaluation", n_eval / ev, "img/s", "(predict, float32)")
    try:
        from . import attacks
    except ImportError:
        attacks = None
    if attacks is not None:
        n_att = min(n_eval, 32 if quick else 512)
        xa = torch.from_numpy(x_ev[:n_att]).to(dev).permute(0, 3, 1, 2).float().div(255)
        ya = torch.from_numpy(np.asarray(labels[:n_att], dtype=np.int64)).to(dev)

        def fgsm_all():
            for s in range(0, n_att, 256):
                attacks.fgsm(model0, xa[s:s + 256], ya[s:s + 256], 4 / 255)

        def pgd_all():
            for s in range(0, n_att, 256):
                attacks.pgd(model0, xa[s:s + 256], ya[s:s + 256], 4 / 255, 1 / 255, pgd_steps,
                            generator=None, return_history=False)

        fg = _median_time(fgsm_all, repeats, dev)
        pg = _median_time(pgd_all, repeats, dev)
        row("FGSM", n_att / fg, "img/s")
        row("PGD step", n_att * pgd_steps / pg, "img-steps/s", f"({pgd_steps} steps)")
    else:
        row("attacks", float("nan"), "", "(skipped: softlib.attacks not importable)")
    return res


def format_table(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"softlib benchmark ({'quick: checks it runs, not speed' if res['quick'] else 'full'})",
             f"machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
             f"device {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}, torch {m['torch']}",
             f"data: {res['images']}; {res['arch']}, {res['n_train']} training images, batch "
             f"{res['batch_size']}, median of {res['repeats']}",
             "", f"{'measurement':<36} {'value':>12}  unit", "-" * 64]
    for r in res["rows"]:
        v = r["value"]
        vs = "n/a" if v != v else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}")
        lines.append(f"{r['measurement']:<36} {vs:>12}  {r['unit']} {r['note']}".rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m softlib.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (CI)")
    p.add_argument("--json", help="write the results as JSON to this path")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--arch", default="resnet_20")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-eval", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--k-models", type=int, default=None,
                   help="models trained at once (default: 10 on CUDA, 3 on CPU)")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    res = run(quick=a.quick, device=a.device, arch=a.arch, n_train=a.n_train, n_eval=a.n_eval,
              repeats=a.repeats, batch_size=a.batch_size, k_models=a.k_models)
    print(format_table(res))
    if a.json:
        from ._io import save_json
        save_json(a.json, res)
    return 0


if __name__ == "__main__":
    from ._io import exit_with
    exit_with(main)
