"""Train several small models of one architecture at once (``torch.func`` + ``vmap``).

The K models' parameters and buffers are stacked along a new leading dimension
(``torch.func.stack_module_state``) and one ``vmap``-ed ``functional_call`` runs all K forward
passes as batched kernels: on a GPU, K ResNet-20s at batch 128 keep the device far busier than one.

How each part stays exactly per-model:

* **data**: model k has its own training indices and its own batch order, augmentation and
  mixing generators, seeded exactly as :func:`softlib.train.fit` seeds them for seed
  ``seeds[k]``; the per-model batches are prepared by the same code and then stacked
  ``[K, B, C, H, W]``;
* **loss**: the sum over models of each model's mean loss, so each model's gradient is that of
  its own loss;
* **optimizer**: SGD (momentum, Nesterov, weight decay) and Adam are element-wise, so one
  ``torch.optim`` optimizer over the stacked ``[K, ...]`` tensors performs exactly the K
  per-model updates (same learning-rate schedule for all);
* **divergence**: for the same reasons a model whose loss or weights become NaN / infinite
  keeps them in its own slice (the gradient of the summed loss w.r.t. each model's loss is 1,
  whatever the other losses are); it is recorded as diverged in that epoch
  (``StackedResult.diverged_epochs``), the others train on, and the group stops early only when
  every model has diverged or stopped;
* **BatchNorm running statistics**: the stacked buffers are passed to ``vmap`` batched along the
  model dimension; BatchNorm's in-place running-stat update (and ``num_batches_tracked``) then
  writes into each model's own slice of the stacked buffer. Nothing is dropped; the test checks
  running statistics against sequential training.
* **mixed precision**: under bf16 autocast every BatchNorm of the stacked forward computes in
  float32 (its input is cast up, its output back to the input's dtype). Plain training lets
  BatchNorm take a bf16 input with float32 running statistics, but the vmapped BatchNorm's CUDA
  backward requires them to share a dtype ("Expected running_mean to have type BFloat16 but got
  Float"); casting the statistics down would lose them, so the input goes up instead.
* **compilation**: ``config.compile`` compiles the stacked training forward (and so its
  backward) as ``fit`` compiles one model's, eager on any failure; ``'reduce-overhead'`` replays
  them as CUDA graphs, which is what pays for these small models: on an H100 the vmapped step
  of 10 ResNet-20s ran 126,000 img/s graphed against 39,000 eager
  (``benchmarks/nvidia-h100-2026-11-26-stacked.json``). Validation runs eagerly.

* **validation** scores what ``fit`` scores: the model's ``inference`` where it defines one
  (MC dropout's averaged passes, SNGP's mean-field logits, DUQ's log kernel), else its forward.
* **training hooks** run per model: ``on_epoch_start`` on each model itself (its state copied out
  of the stack and back), ``after_optimizer_step`` (DUQ's centroid update) under ``vmap`` like
  the forward, ``requires_input_grad`` on the stacked batch, and ``training_loss`` when the
  model declares ``training_loss_stacks`` (DUQ: its gradient penalty is a double backward
  through the vmapped forward, each model's input gradient in its own slice). Tests check SNGP
  and DUQ against ``fit``.

Limits: a ``training_loss`` hook that does not declare ``training_loss_stacks`` rules stacking
out (:func:`unstackable_hook`); every model takes the same number of steps per epoch (equal
training-set sizes, or ``drop_last=True``, in which case all models take
``min_k(n_k // batch_size)`` steps). Dropout draws differ from sequential
training (``randomness='different'``), as they would with any other seed.

Validation, early stopping and ``keep_best`` are per model: each model's loss on its own
validation set after every epoch decides its own best epoch, its own patience and the weights it
ends with. A model that has stopped keeps being computed inside the group (its slice is
independent of the others) until every model has stopped or diverged, but its history ends at
its stop and it ends with the weights fit would give it (the best epoch's, when restoring), so
stopping models early costs time, never results.
"""
from __future__ import annotations

import copy
import json
import math
import time
import types
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from . import augment as _augment
from .cache import Entry, ResultCache, check_budget, config_key
from .checkpoint import checkpoints_dir, for_cache_entry, rng_state, set_rng_state
from .losses import maybe_mix, mix_probability_from_entropy, smooth_labels, soft_cross_entropy
from .train import (TrainConfig, TrainJob, TrainResult, _as_targets, _auto, _autocast,
                    _default_build, _Forward, _images_fingerprint, _make_optimizer, _quiet,
                    _to_float, _trained_entry, compile_mode, lr_at, resolve_device,
                    to_device_images, train_cached)

__all__ = ["StackedModels", "fit_stacked", "StackedResult", "train_cached_many",
           "stacking_enabled", "stacks_on"]

#: TrainConfig fields that may differ between stacked models (each model applies its own): the
#: seed, the mixing (none, mixup or cutmix: Laing's label conditions), and Laing's mixing
#: probability and smoothing epsilon, which follow each seed's split
PER_MODEL_FIELDS = ("seed", "mix", "mix_prob", "label_smoothing")


def _shared_config(config: TrainConfig) -> dict[str, Any]:
    """What stacked models' configurations must share: all but :data:`PER_MODEL_FIELDS`."""
    d = config.to_dict()
    for name in PER_MODEL_FIELDS:
        d.pop(name)
    return d


def unstackable_hook(model: nn.Module) -> str | None:
    """The training hook of ``model`` that stacked training cannot run, or None.

    ``on_epoch_start`` runs on each model (:meth:`StackedModels.epoch_start`),
    ``after_optimizer_step`` per model under ``vmap`` and ``requires_input_grad`` on the stacked
    batch. ``training_loss`` stacks only when the model sets ``training_loss_stacks = True``: it
    then also takes stacked ``[K, B, ...]`` inputs, outputs and targets and returns the K models'
    losses, reading only attributes every model shares (constants, not weights or buffers)."""
    if callable(getattr(model, "training_loss", None)) and not getattr(
            model, "training_loss_stacks", False):
        return "training_loss"
    return None


class _Dispatch(nn.Module):
    """Calls one method of the wrapped model (``functional_call`` only ever calls forward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, method: str):
        return getattr(self.model, method)(*args)


def _float32_batchnorm_forward(self, x: torch.Tensor) -> torch.Tensor:
    """A BatchNorm forward that runs in float32 under autocast (see the module docstring)."""
    if x.dtype == torch.float32 or not torch.is_autocast_enabled(x.device.type):
        return type(self).forward(self, x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return type(self).forward(self, x.float()).to(x.dtype)


def _batchnorm_in_float32(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.forward = types.MethodType(_float32_batchnorm_forward, m)
    return module


class StackedModels(nn.Module):
    """K models of one architecture as stacked parameters/buffers and one vmapped forward."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if len(models) < 1:
            raise ValueError("StackedModels: need at least one model")
        hook = unstackable_hook(models[0])
        if hook is not None:
            raise ValueError(f"StackedModels: the model defines the training hook {hook!r}, "
                             "which stacked training does not support; train it with "
                             "softlib.train.fit instead")
        self.models = list(models)
        self.k = len(models)
        params, buffers = stack_module_state(self.models)
        self.params = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v)
                                        for k, v in params.items()})
        self._pnames = list(params)
        self._bnames = list(buffers)
        for name, b in buffers.items():
            self.register_buffer("b__" + name.replace(".", "__"), b)
        # list: not a submodule; its BatchNorms run in float32 under autocast
        self.base = [_batchnorm_in_float32(copy.deepcopy(self.models[0]).to("meta"))]
        self._dispatch = [_Dispatch(self.base[0])]  # the base's other methods (see call)

    def _stacked(self):
        p = {n: self.params[n.replace(".", "__")] for n in self._pnames}
        b = {n: getattr(self, "b__" + n.replace(".", "__")) for n in self._bnames}
        return p, b

    def train(self, mode: bool = True):
        super().train(mode)
        self.base[0].train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [K, B, ...] -> outputs [K, B, ...] (model k sees x[k])."""
        base = self.base[0]

        def one(p, b, xi):
            return functional_call(base, (p, b), (xi,))

        p, b = self._stacked()
        return vmap(one, randomness="different")(p, b, x)

    def call(self, method: str, *args: torch.Tensor) -> torch.Tensor:
        """Model k's ``method(*[a[k] for a in args])`` for every k, as one vmapped call (each
        model's buffers updated in its own slice, as in :meth:`forward`). A method that returns
        nothing gives an empty tensor per model."""
        dispatch = self._dispatch[0]

        def one(p, b, *a):
            out = functional_call(dispatch, (p, b), a, {"method": method})
            return out if isinstance(out, torch.Tensor) else a[0].new_zeros(0)

        p, b = self._stacked()
        p = {"model." + n: t for n, t in p.items()}
        b = {"model." + n: t for n, t in b.items()}
        return vmap(one, randomness="different")(p, b, *args)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """What :func:`softlib.train.fit`'s validation scores per model: ``inference`` where the
        model defines it (MC dropout's averaged passes, SNGP's mean-field logits), else the
        forward."""
        if callable(getattr(self.base[0], "inference", None)):
            return self.call("inference", x)
        return self(x)

    @torch.no_grad()
    def epoch_start(self, epoch: int) -> None:
        """Each model's ``on_epoch_start(epoch)`` hook, run on the model itself (its state is
        copied out of the stack and back), so any state-only hook behaves as in ``fit``."""
        models = self.unstack()
        for m in models:
            m.on_epoch_start(epoch)
        p, b = self._stacked()
        for k, m in enumerate(models):
            for name, t in m.named_parameters():
                p[name][k].copy_(t)
            for name, t in m.named_buffers():
                b[name][k].copy_(t)

    @torch.no_grad()
    def unstack(self) -> list[nn.Module]:
        """Copy the stacked parameters and buffers back into the K original modules."""
        p, b = self._stacked()
        for k, m in enumerate(self.models):
            m.to(next(iter(p.values())).device)
            for name, t in m.named_parameters():
                t.copy_(p[name][k])
            for name, t in m.named_buffers():
                t.copy_(b[name][k])
        return self.models


class _StackedMonitor:
    """Each model's loss and accuracy on its own validation set, evaluated by the stacked
    forward in eval mode (a set shorter than the longest is padded by repeating its last image;
    the padding is not scored)."""

    def __init__(self, vals: Sequence[tuple[Any, Any]], device, batch_size: int):
        self.x = [to_device_images(v[0], device, f"fit_stacked(vals[{k}] images)")
                  for k, v in enumerate(vals)]
        self.t = [_as_targets(v[1], x.shape[0], f"fit_stacked(vals[{k}] targets)", device)
                  for k, (v, x) in enumerate(zip(vals, self.x))]
        self.n = [x.shape[0] for x in self.x]
        if min(self.n) == 0:
            raise ValueError("fit_stacked(vals): a validation set is empty")
        self.bs = max(1, int(batch_size))

    def __call__(self, stacked: "StackedModels", amp: bool) -> tuple[list, list]:
        was_training = stacked.training
        stacked.eval()
        n_max = max(self.n)
        logits = []
        needs_grad = bool(getattr(stacked.base[0], "inference_requires_grad", False))
        with torch.enable_grad() if needs_grad else torch.no_grad():
            for start in range(0, n_max, self.bs):
                rows = [torch.arange(start, min(start + self.bs, n_max), device=x.device).clamp(
                    max=n - 1) for x, n in zip(self.x, self.n)]
                xb = torch.stack([_to_float(x[r]) for x, r in zip(self.x, rows)])
                with _autocast(xb.device, amp):
                    logits.append(stacked.outputs(xb).detach().float())
        stacked.train(was_training)
        z = torch.cat(logits, 1)
        losses, accs = [], []
        for k, (t, n) in enumerate(zip(self.t, self.n)):
            zk = z[k, :n]
            losses.append(float(soft_cross_entropy(zk, t).item()))
            accs.append(float((zk.argmax(1) == t.argmax(1)).float().mean().item()))
        return losses, accs


@dataclass
class StackedResult:
    models: list[nn.Module]
    history: dict[str, list]      # train_loss: list (per epoch) of K floats; lr; seconds
    seconds: float
    images_per_second: float      # summed over the K models
    steps_per_epoch: int
    diverged_epochs: list = None  # per model: the epoch (1-based) its loss or weights became
    #                               non-finite, else None (see softlib.train.TrainResult)
    stopped_epochs: list = None   # per model: the epoch early stopping ended it at, else None
    best_epochs: list = None      # per model: the epoch of its lowest validation loss (with vals)

    def __post_init__(self):
        for name in ("diverged_epochs", "stopped_epochs", "best_epochs"):
            if getattr(self, name) is None:
                setattr(self, name, [None] * len(self.models))

    def epochs_run(self, k: int) -> int:
        """How many epochs model k's own run lasted (to its divergence or early stop)."""
        return self.diverged_epochs[k] or self.stopped_epochs[k] or len(self.history["epoch"])


def fit_stacked(models: Sequence[nn.Module], images: Any, targets: Any,
                indices: Sequence[np.ndarray], config: TrainConfig,
                seeds: Sequence[int] | None = None, device: str | torch.device | None = None,
                progress: bool = True, vals: Sequence[tuple[Any, Any]] | None = None,
                target_samplers: Sequence[Any] | None = None,
                configs: Sequence[TrainConfig] | None = None,
                checkpoint: Any = None) -> StackedResult:
    """Train ``models[k]`` on ``images[indices[k]]`` with ``targets`` (shared [N, C] or [K, N, C]).

    Model k follows what ``fit(models[k], images[indices[k]], targets[indices[k]],
    config.replace(seed=seeds[k]), val=vals[k])`` would do (same batches, augmentation, mixing,
    optimizer updates and BatchNorm statistics), up to floating-point differences of batched
    kernels. ``seeds`` defaults to ``config.seed + k``. ``vals`` (one ``(images, targets)`` per
    model) adds each model's validation loss and accuracy after every epoch, as ``fit`` records
    them; ``config.early_stopping_patience`` and ``config.keep_best`` (which need ``vals``) then
    act on each model by its own validation loss, as in ``fit``. ``target_samplers`` (one per
    model, or None) redraw model k's targets at the start of every epoch as ``fit``'s
    ``target_sampler`` does (Peterson's sampled hard labels), from the same generator.
    ``configs`` (one per model) may differ from ``config`` in :data:`PER_MODEL_FIELDS` only:
    model k then follows ``configs[k]`` (its seed, mixing, mixing probability and label
    smoothing) as ``fit`` would. ``checkpoint`` (a :class:`softlib.checkpoint.Checkpoint`):
    resume from its saved epoch, save it as epochs end, stop at the halt deadline.
    Returns the trained models (updated in place).
    """
    k_models = len(models)
    if len(indices) != k_models:
        raise ValueError(f"fit_stacked(indices): {len(indices)} index sets for {k_models} models")
    patience = config.early_stopping_patience
    restore_best = patience is not None or bool(config.keep_best)
    if restore_best and vals is None:
        raise ValueError("fit_stacked: TrainConfig.early_stopping_patience / keep_best need "
                         "vals (one validation set per model)")
    if vals is not None and len(vals) != k_models:
        raise ValueError(f"fit_stacked(vals): {len(vals)} validation sets for {k_models} models")
    if configs is not None:
        configs = list(configs)
        if len(configs) != k_models:
            raise ValueError(f"fit_stacked(configs): {len(configs)} configurations for "
                             f"{k_models} models")
        shared = _shared_config(config)
        for k, c in enumerate(configs):
            if _shared_config(c) != shared:
                diff = sorted(n for n, v in _shared_config(c).items() if shared.get(n) != v)
                raise ValueError(f"fit_stacked(configs): configs[{k}] differs from config in "
                                 f"{', '.join(diff)}; stacked models may differ only in "
                                 f"{', '.join(PER_MODEL_FIELDS)}")
        if seeds is None:
            seeds = [c.seed for c in configs]
        elif list(seeds) != [c.seed for c in configs]:
            raise ValueError(f"fit_stacked: seeds {list(seeds)} differ from the configs' seeds "
                             f"{[c.seed for c in configs]}; give one or the other")
    seeds = list(seeds) if seeds is not None else [config.seed + k for k in range(k_models)]
    if len(seeds) != k_models:
        raise ValueError(f"fit_stacked(seeds): {len(seeds)} seeds for {k_models} models")
    if configs is None:
        configs = [config.replace(seed=s) for s in seeds]
    samplers = list(target_samplers) if target_samplers is not None else [None] * k_models
    if len(samplers) != k_models:
        raise ValueError(f"fit_stacked(target_samplers): {len(samplers)} samplers for "
                         f"{k_models} models")
    device = resolve_device(device)
    amp = _auto(config.amp, device)
    x_all = to_device_images(images, device, "fit_stacked(images)")
    n_all = x_all.shape[0]
    t = targets.detach().cpu() if isinstance(targets, torch.Tensor) else torch.as_tensor(np.asarray(targets))
    per_model_t = t.dim() == 3
    idx_dev, t_k = [], []
    for k, ix in enumerate(indices):
        ix = torch.as_tensor(np.asarray(ix), dtype=torch.long)
        if ix.numel() == 0 or int(ix.min()) < 0 or int(ix.max()) >= n_all:
            raise ValueError(f"fit_stacked(indices[{k}]): indices must be in [0, {n_all})")
        tk = t[k] if per_model_t else t
        t_k.append(_as_targets(tk[ix], len(ix), f"fit_stacked(targets) for model {k}", device))
        idx_dev.append(ix.to(device))
    sizes = [len(ix) for ix in idx_dev]
    # model k's training indices and targets as rows of [K, max size] / [K, max size, C] (padding
    # never selected: model k draws positions below its own size), so one gather serves all K
    idx_mat = torch.stack([torch.cat([ix, ix.new_zeros(max(sizes) - len(ix))]) for ix in idx_dev])
    t_mat = torch.stack([torch.cat([tk, tk.new_zeros(max(sizes) - len(tk), tk.shape[1])])
                         for tk in t_k])
    bs = int(config.batch_size)
    if config.drop_last:
        steps = min(s // bs for s in sizes)
        if steps == 0:
            raise ValueError(f"fit_stacked: batch_size {bs} exceeds the smallest training set "
                             f"({min(sizes)}) with drop_last")
    else:
        if len(set(sizes)) != 1:
            raise ValueError(f"fit_stacked(indices): training-set sizes differ ({sorted(set(sizes))}); "
                             "stacked models need equal batches: use equal sizes or "
                             "TrainConfig(drop_last=True)")
        steps = math.ceil(sizes[0] / bs)

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for m in models:
        m.to(device)
    stacked = StackedModels(models).to(device)
    stacked.train()
    opt = _make_optimizer(stacked, config)
    fwd = _Forward(stacked, compile_mode(config.compile, device))  # training; eager monitoring
    gens = [(torch.Generator().manual_seed(s), torch.Generator(device=device).manual_seed(s + 1))
            for s in seeds]
    gens_targets = [torch.Generator().manual_seed(s + 2) for s in seeds]  # as fit seeds them
    mix_probs = [mix_probability_from_entropy(tk) if c.mix_prob == "entropy"
                 else float(c.mix_prob) for tk, c in zip(t_k, configs)]
    smoothing = [float(c.label_smoothing) for c in configs]
    history: dict[str, list] = {"epoch": [], "train_loss": [], "lr": [], "seconds": []}
    monitor = None if vals is None else _StackedMonitor(vals, device, config.eval_batch_size)
    if monitor is not None:
        history.update(val_loss=[], val_acc=[])
    show = progress and not _quiet()
    t_start, seen = time.perf_counter(), 0
    diverged: list[int | None] = [None] * k_models
    tracker = _BestTracker(k_models, patience, restore_best)
    hooks = models[0]
    loss_hook = callable(getattr(hooks, "training_loss", None))
    needs_input_grad = bool(getattr(hooks, "requires_input_grad", False))
    after_step = callable(getattr(hooks, "after_optimizer_step", None))
    epoch_hook = callable(getattr(hooks, "on_epoch_start", None))
    first, before = 0, 0.0  # the epoch to start at, and the seconds trained before it
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:  # resume after the saved epoch, exactly where it stopped
        stacked.load_state_dict(saved["models"])
        opt.load_state_dict(saved["optimizer"])
        for (g_cpu, g_dev), (s_cpu, s_dev) in zip(gens, saved["generators"]):
            g_cpu.set_state(s_cpu)
            g_dev.set_state(s_dev)
        for g, st in zip(gens_targets, saved["target_generators"]):
            g.set_state(st)
        set_rng_state(saved["rng"], device)
        history = saved["history"]
        diverged = list(saved["diverged"])
        tracker.load_state(saved["tracker"], device)
        seen, before, first = saved["seen"], saved["seconds"], int(saved["epoch"])

    def training_state() -> dict[str, Any]:
        return {"models": stacked.state_dict(), "optimizer": opt.state_dict(),
                "generators": [(a.get_state(), b.get_state()) for a, b in gens],
                "target_generators": [g.get_state() for g in gens_targets],
                "rng": rng_state(device), "history": history, "diverged": diverged,
                "tracker": tracker.state(), "seen": seen,
                "seconds": before + time.perf_counter() - t_start}

    for epoch in range(first, int(config.epochs)):
        t0 = time.perf_counter()
        if epoch_hook:
            stacked.epoch_start(epoch)
        for k, sampler in enumerate(samplers):  # this epoch's targets of model k, as fit draws
            if sampler is not None:
                t_mat[k, :sizes[k]] = _as_targets(sampler(epoch, gens_targets[k]), sizes[k],
                                                  f"target_samplers[{k}] output", device)
        perms = [torch.randperm(sizes[k], generator=gens[k][0]).to(device)
                 for k in range(k_models)]  # positions within model k's training set
        loss_sum = torch.zeros(k_models, device=device)
        count = 0
        bar = None
        if show:
            from .progress import progress as tqdm
            bar = tqdm(total=steps, desc=f"{k_models} models, epoch {epoch + 1}/{config.epochs}",
                       leave=False)
        for step in range(steps):
            lr = lr_at(config, epoch + step / steps, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            # every model's batch in one gather and one augmentation (random draws per model,
            # from its own generator, as fit makes them); mixing draws per model too
            pos = torch.stack([perms[k][step * bs:(step + 1) * bs] for k in range(k_models)])
            rows = idx_mat.gather(1, pos).view(-1)
            xb = _augment.apply_grouped(config.augment, _to_float(x_all[rows]),
                                        [g[1] for g in gens])
            xb = xb.view(k_models, -1, *xb.shape[1:])
            tb = t_mat[torch.arange(k_models, device=device).unsqueeze(1), pos]
            if len(set(smoothing)) == 1 and smoothing[0]:
                tb = smooth_labels(tb, smoothing[0])
            elif any(smoothing):  # each model its own epsilon (0: its targets as they are)
                tb = torch.stack([smooth_labels(tb[k], e) if e else tb[k]
                                  for k, e in enumerate(smoothing)])
            if any(c.mix != "none" for c in configs):  # each model its own mixing, if any
                mixed = [maybe_mix(xb[k], tb[k], c.mix, config.mix_alpha, mix_probs[k],
                                   gens[k][0]) for k, c in enumerate(configs)]
                xb = torch.stack([m[0] for m in mixed])
                tb = torch.stack([m[1] for m in mixed])
            if needs_input_grad:
                xb.requires_grad_(True)

            def forward_backward():
                with _autocast(device, amp):
                    out = fwd(xb)
                    if loss_hook:  # the model's own loss, one per model (training_loss_stacks)
                        per = hooks.training_loss(xb, out, tb)
                        if per.shape != (k_models,):
                            raise ValueError(
                                f"fit_stacked: {type(hooks).__name__}.training_loss returned "
                                f"shape {tuple(per.shape)} for {k_models} stacked models; with "
                                "training_loss_stacks it must return one loss per model")
                if not loss_hook:
                    kk, b = out.shape[:2]
                    per = soft_cross_entropy(out.float().reshape(kk * b, -1),
                                             tb.reshape(kk * b, -1),
                                             reduction="none").view(kk, b).mean(1)
                opt.zero_grad(set_to_none=True)
                per.sum().backward()
                return per

            per = fwd.step(xb.shape, forward_backward)
            b = xb.shape[1]
            opt.step()
            if after_step:
                with torch.no_grad():
                    stacked.call("after_optimizer_step", xb.detach(), tb)
            loss_sum += per.detach() * b
            count += b
            if bar is not None:
                bar.update(1)
        seen += count * k_models
        if bar is not None:
            bar.close()
        history["epoch"].append(epoch + 1)
        history["train_loss"].append((loss_sum / max(1, count)).tolist())
        history["lr"].append(float(opt.param_groups[0]["lr"]))
        finite = torch.isfinite(loss_sum)
        for tns in list(stacked.parameters()) + list(stacked.buffers()):
            if tns.is_floating_point():
                finite &= torch.isfinite(tns).reshape(k_models, -1).all(1)
        for k, ok in enumerate(finite.tolist()):
            if not ok and diverged[k] is None and tracker.stopped[k] is None:
                diverged[k] = epoch + 1
                warnings.warn(f"softlib.multimodel: stacked model {k} ({config.arch}, lr "
                              f"{config.lr}, seed {seeds[k]}) diverged in epoch {epoch + 1}: "
                              "non-finite loss or weights; recorded as diverged, the others "
                              "train on")
        if monitor is not None:
            vloss, vacc = monitor(stacked, amp)
            for k in range(k_models):
                if diverged[k] == epoch + 1:  # as fit records a diverged epoch
                    vloss[k] = vacc[k] = float("nan")
            history["val_loss"].append(vloss)
            history["val_acc"].append(vacc)
            tracker.update(epoch + 1, vloss, diverged, stacked)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        history["seconds"].append(time.perf_counter() - t0)
        if all(d is not None or s is not None for d, s in zip(diverged, tracker.stopped)):
            break
        if checkpoint is not None:
            checkpoint.epoch_end(epoch + 1, int(config.epochs), history["seconds"][-1],
                                 training_state)
    seconds = before + time.perf_counter() - t_start
    tracker.restore(stacked, diverged)
    trained = stacked.unstack()
    return StackedResult(models=trained, history=history, seconds=seconds,
                         images_per_second=seen / max(seconds, 1e-9), steps_per_epoch=steps,
                         diverged_epochs=diverged, stopped_epochs=list(tracker.stopped),
                         best_epochs=list(tracker.best_epoch))


class _BestTracker:
    """Per model, what ``fit`` tracks on validation loss: the best epoch (strictly lower loss),
    the epochs without improvement, the early stop, and (when restoring) a copy of the best
    epoch's weights in a stacked snapshot, of which only that model's slice is written."""

    def __init__(self, k_models: int, patience: int | None, restore: bool):
        self.patience = None if patience is None else int(patience)
        self.restore_best = restore
        self.best_loss = [math.inf] * k_models
        self.best_epoch: list[int | None] = [None] * k_models
        self.bad = [0] * k_models
        self.stopped: list[int | None] = [None] * k_models
        self.snapshot: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, epoch: int, vloss: Sequence[float], diverged: Sequence[int | None],
               stacked: StackedModels) -> None:
        for k, v in enumerate(vloss):
            if diverged[k] is not None or self.stopped[k] is not None:
                continue  # that model's run has ended
            if v < self.best_loss[k]:
                self.best_loss[k], self.best_epoch[k], self.bad[k] = v, epoch, 0
                if self.restore_best:
                    self._save(k, stacked)
            else:
                self.bad[k] += 1
            if self.patience is not None and self.bad[k] >= self.patience:
                self.stopped[k] = epoch

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the tracker (:meth:`load_state` restores it)."""
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "bad": self.bad,
                "stopped": self.stopped, "snapshot": self.snapshot}

    def load_state(self, state: dict[str, Any], device) -> None:
        self.best_loss, self.best_epoch = list(state["best_loss"]), list(state["best_epoch"])
        self.bad, self.stopped = list(state["bad"]), list(state["stopped"])
        snap = state["snapshot"]
        self.snapshot = None if snap is None else {n: t.to(device) for n, t in snap.items()}

    def _save(self, k: int, stacked: StackedModels) -> None:
        p, b = stacked._stacked()
        state = {**p, **b}
        if self.snapshot is None:
            self.snapshot = {n: t.detach().clone() for n, t in state.items()}
        else:
            for n, t in state.items():
                self.snapshot[n][k].copy_(t[k])

    @torch.no_grad()
    def restore(self, stacked: StackedModels, diverged: Sequence[int | None]) -> None:
        """Write each non-diverged model's best weights back into its slice (as ``fit`` does)."""
        if not self.restore_best or self.snapshot is None:
            return
        p, b = stacked._stacked()
        for n, t in {**p, **b}.items():
            for k in range(len(self.bad)):
                if self.best_epoch[k] is not None and diverged[k] is None:
                    t[k].copy_(self.snapshot[n][k])


# ------------------------------------------------------------------------------------------
# several cached runs at once: same-configuration models trained together (fit_stacked)
# ------------------------------------------------------------------------------------------

def stacks_on(stack: Any, cuda: bool) -> bool:
    """Whether a ``stack`` setting ('auto' or None: on CUDA only; True; False) stacks on a
    machine that has (``cuda``) or lacks a CUDA device: the one reading of the setting that
    training, the Ray stages and the cost plan share."""
    if stack is None or stack == "auto":
        return bool(cuda)
    if stack is True or stack is False:
        return stack
    raise ValueError(f"stack: expected 'auto', True or False, got {stack!r}")


def stacking_enabled(stack: Any, device: str | torch.device | None = None) -> bool:
    """``stack`` ('auto' or None: only when ``device`` resolves to CUDA; True; False) -> bool."""
    if stack is True or stack is False:
        return stack
    return stacks_on(stack, resolve_device(device).type == "cuda")


def _stack_signature(job: TrainJob) -> tuple | None:
    """What must be equal for jobs to train together (None: the job cannot be stacked)."""
    c = job.config
    needs_val = c.early_stopping_patience is not None or c.keep_best
    if needs_val and job.val is None:
        return None  # train_cached says what is wrong with a missing validation set
    return (json.dumps(_shared_config(c), sort_keys=True, default=str), len(job.train_data[0]),
            job.target_sampler is not None)


def _model_signature(model: torch.nn.Module) -> tuple | None:
    """Architecture identity of a built model (None when it has a training hook that stacked
    training cannot run)."""
    if unstackable_hook(model) is not None:
        return None
    return (type(model),
            tuple((n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in model.named_parameters()),
            tuple((n, tuple(b.shape), b.dtype) for n, b in model.named_buffers()))


def _concat(parts: Sequence[Any]) -> np.ndarray:
    return np.concatenate([p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else np.asarray(p)
                           for p in parts])


class _GroupTooLarge(RuntimeError):
    """The stacked group ran out of device memory before anything was stored."""


def _train_group(cache: ResultCache, kind: str, jobs: Sequence[TrainJob],
                 models: Sequence[torch.nn.Module], device, progress: bool,
                 force: bool = False, checkpoints: Any = None) -> list[Entry]:
    """Train ``models`` (built for ``jobs``, one configuration) together; store each entry.
    The group keeps a checkpoint of its own (keyed by its entries) while it trains."""
    k_models = len(jobs)
    config = jobs[0].config
    check_budget(f"{kind}: {k_models} stacked models")
    dev = resolve_device(device)
    group_key = config_key("stacked_group",
                           {"entries": [config_key(kind, j.key()) for j in jobs]})
    ckpt = for_cache_entry(checkpoints or checkpoints_dir(cache.root), kind, group_key,
                           "fit_stacked", dev,
                           f"{k_models} stacked {kind} models ({config.arch})")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    images = _concat([j.train_data[0] for j in jobs])
    targets = _concat([j.train_data[1] for j in jobs])
    starts = np.cumsum([0] + [len(j.train_data[0]) for j in jobs])
    indices = [np.arange(starts[k], starts[k + 1]) for k in range(k_models)]
    res, oom = None, ""
    try:
        vals = [j.val for j in jobs] if all(j.val is not None for j in jobs) else None
        samplers = [j.target_sampler for j in jobs]
        res = fit_stacked(list(models), images, targets, indices, config,
                          device=dev, progress=progress, vals=vals,
                          target_samplers=samplers if any(samplers) else None,
                          configs=[j.config for j in jobs],
                          checkpoint=None if force else ckpt)
    except torch.cuda.OutOfMemoryError as e:
        oom = str(e)  # raised below, once this exception (and the frames it holds) is gone
    del images, targets
    if res is None:
        raise _GroupTooLarge(oom)  # nothing of the group is stored yet
    entries = []
    for k, (job, model) in enumerate(zip(jobs, res.models)):
        h = res.history
        div = res.diverged_epochs[k]
        last = res.epochs_run(k)  # a diverged or stopped model's history ends there
        history = {"epoch": list(h["epoch"][:last]),
                   "train_loss": [float(row[k]) for row in h["train_loss"][:last]],
                   "lr": list(h["lr"][:last]),
                   "seconds": [s / k_models for s in h["seconds"][:last]]}
        if "val_loss" in h:
            history["val_loss"] = [float(row[k]) for row in h["val_loss"][:last]]
            history["val_acc"] = [float(row[k]) for row in h["val_acc"][:last]]
        # the group's time shared equally; images per second of one model in its share
        result = TrainResult(history=history, epochs_run=last, best_epoch=res.best_epochs[k],
                             seconds=res.seconds / k_models,
                             images_per_second=res.images_per_second, device=str(dev),
                             stopped_early=res.stopped_epochs[k] is not None,
                             diverged=div is not None, diverged_epoch=div)
        sets = dict(job.eval_sets or {})
        fps = {name: _images_fingerprint(imgs) for name, imgs in sets.items()}
        extra = {"stacked": k_models}
        if job.val is not None and vals is None:
            extra["val_dropped"] = True  # some of the group had no validation set
        entry = _trained_entry(model, result, job.config, sets, fps, extra)
        cache.misses += 1
        cache.save(kind, job.key(), entry)
        entries.append(entry)
    ckpt.clear()  # every entry of the group is stored
    return entries


def _build(job: TrainJob) -> torch.nn.Module:
    torch.manual_seed(job.config.seed)  # as train_cached does
    return (job.build_model or _default_build)(job.config)


def _train_or_split(cache: ResultCache, kind: str, jobs: Sequence[TrainJob], idx: list[int],
                    models: list[torch.nn.Module] | None, device, progress: bool,
                    done: dict[int, Entry], force: bool = False,
                    checkpoints: Any = None) -> None:
    """Train ``jobs[idx]`` stacked; out of device memory, halve the group and try again (groups
    of one are left to :func:`train_cached`)."""
    if len(idx) < 2:
        return
    models = models if models is not None else [_build(jobs[i]) for i in idx]
    oom = None
    try:
        done.update(zip(idx, _train_group(cache, kind, [jobs[i] for i in idx], models, device,
                                          progress, force, checkpoints)))
    except _GroupTooLarge as e:
        oom = (str(e).splitlines() or [""])[0][:120]
    if oom is None:
        return
    for m in models:  # the caller may still hold them: give their device memory back
        m.to("cpu")
    del models
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = len(idx) // 2
    warnings.warn(f"softlib.train: {len(idx)} stacked models ran out of device memory ({oom}); "
                  f"trying groups of {half} and {len(idx) - half}")
    for part in (idx[:half], idx[half:]):
        _train_or_split(cache, kind, jobs, part, None, device, progress, done, force,
                        checkpoints)


def train_cached_many(cache: ResultCache | None, kind: str, jobs: Sequence[TrainJob],
                      device: str | torch.device | None = None, progress: bool = True,
                      stack: Any = "auto", force: bool = False,
                      max_group_params: float | None = None,
                      checkpoints: Any = None) -> list[Entry]:
    """:func:`train_cached` for each job (same keys, same entries), training the cache misses
    that share a configuration together with :func:`softlib.multimodel.fit_stacked`.

    Misses are grouped by their :class:`TrainConfig` apart from :data:`PER_MODEL_FIELDS` (seed,
    mixing, mixing probability, label smoothing) and their training-set size; a group trains
    together when it has two or more jobs whose models (each built after
    ``torch.manual_seed(config.seed)``, as :func:`train_cached` does) have the same architecture
    and no training hook stacking cannot run (:func:`unstackable_hook`); jobs with a target
    sampler group only with each other, each redrawing its own targets (each stacked model
    records its own per-epoch validation loss and follows its own early stopping /
    ``keep_best``, as :func:`train_cached` would). Everything else goes through
    :func:`train_cached`. A stacked model's entry has ``meta['stacked'] = K`` and its ``result['seconds']`` is the
    group's time divided by K. ``stack``: 'auto' stacks on CUDA only, True always, False never.
    A group whose models have more than ``max_group_params`` parameters in all is split into
    near-equal groups under it (None: no limit); a group that runs out of device memory is
    halved and retried. Each group first calls :func:`softlib.cache.check_budget`, and keeps an
    epoch checkpoint under ``checkpoints`` while it trains (as :func:`train_cached`). Returns
    the entries in job order.
    """
    cache = cache if cache is not None else ResultCache()
    jobs = [j if isinstance(j, TrainJob) else TrainJob(**j) for j in jobs]
    done: dict[int, Entry] = {}
    if stacking_enabled(stack, device) and len(jobs) > 1:
        groups: dict[tuple, list[int]] = {}
        seen_keys: set[str] = set()
        for i, job in enumerate(jobs):
            sig = _stack_signature(job)
            key = json.dumps(job.key(), sort_keys=True, default=str)
            if sig is None or key in seen_keys or (not force and cache.has(kind, job.key())):
                continue
            seen_keys.add(key)
            groups.setdefault(sig, []).append(i)
        for members in groups.values():
            if len(members) < 2:
                continue
            by_arch: dict[tuple, list[tuple[int, torch.nn.Module]]] = {}
            for i in members:
                model = _build(jobs[i])
                msig = _model_signature(model)
                if msig is not None:
                    by_arch.setdefault(msig, []).append((i, model))
            for sub in by_arch.values():
                n_params = sum(p.numel() for p in sub[0][1].parameters())
                per_group = (len(sub) if max_group_params is None
                             else max(1, int(max_group_params // max(1, n_params))))
                for part in np.array_split(np.arange(len(sub)), math.ceil(len(sub) / per_group)):
                    _train_or_split(cache, kind, jobs, [sub[p][0] for p in part],
                                    [sub[p][1] for p in part], device, progress, done, force,
                                    checkpoints)
    out = []
    for i, job in enumerate(jobs):
        if i in done:
            out.append(done[i])
            continue
        out.append(train_cached(cache, kind, job.config, job.data_fingerprint, job.build_model,
                                job.train_data, job.eval_sets, val=job.val,
                                target_sampler=job.target_sampler, device=device,
                                progress=progress, force=force, checkpoints=checkpoints))
    return out
