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
  (``StackedResult.diverged_epochs``), the others train on, and training stops early only when
  every model has diverged;
* **BatchNorm running statistics**: the stacked buffers are passed to ``vmap`` batched along the
  model dimension; BatchNorm's in-place running-stat update (and ``num_batches_tracked``) then
  writes into each model's own slice of the stacked buffer. Nothing is dropped; the test checks
  running statistics against sequential training.
* **mixed precision**: under bf16 autocast every BatchNorm of the stacked forward computes in
  float32 (its input is cast up, its output back to the input's dtype). Plain training lets
  BatchNorm take a bf16 input with float32 running statistics, but the vmapped BatchNorm's CUDA
  backward requires them to share a dtype ("Expected running_mean to have type BFloat16 but got
  Float"); casting the statistics down would lose them, so the input goes up instead.

Limits: models must not define the engine's training hooks (``training_loss``,
``requires_input_grad``, ``after_optimizer_step``, ``on_epoch_start``); every model takes the
same number of steps per epoch (equal training-set sizes, or ``drop_last=True``, in which case
all models take ``min_k(n_k // batch_size)`` steps); no early stopping. Dropout draws differ
from sequential training (``randomness='different'``), as they would with any other seed.
"""
from __future__ import annotations

import copy
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
from .losses import maybe_mix, mix_probability_from_entropy, smooth_labels, soft_cross_entropy
from .train import (TrainConfig, _as_targets, _auto, _autocast, _make_optimizer, _quiet,
                    _to_float, lr_at, resolve_device, to_device_images)

__all__ = ["StackedModels", "fit_stacked", "StackedResult"]

_HOOKS = ("training_loss", "requires_input_grad", "after_optimizer_step", "on_epoch_start")


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
        for name in _HOOKS:
            if getattr(models[0], name, None):
                raise ValueError(f"StackedModels: the model defines the training hook {name!r}, "
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


@dataclass
class StackedResult:
    models: list[nn.Module]
    history: dict[str, list]      # train_loss: list (per epoch) of K floats; lr; seconds
    seconds: float
    images_per_second: float      # summed over the K models
    steps_per_epoch: int
    diverged_epochs: list = None  # per model: the epoch (1-based) its loss or weights became
    #                               non-finite, else None (see softlib.train.TrainResult)

    def __post_init__(self):
        if self.diverged_epochs is None:
            self.diverged_epochs = [None] * len(self.models)


def fit_stacked(models: Sequence[nn.Module], images: Any, targets: Any,
                indices: Sequence[np.ndarray], config: TrainConfig,
                seeds: Sequence[int] | None = None, device: str | torch.device | None = None,
                progress: bool = True) -> StackedResult:
    """Train ``models[k]`` on ``images[indices[k]]`` with ``targets`` (shared [N, C] or [K, N, C]).

    Model k follows what ``fit(models[k], images[indices[k]], targets[indices[k]],
    config.replace(seed=seeds[k]))`` would do (same batches, augmentation, mixing, optimizer
    updates and BatchNorm statistics), up to floating-point differences of batched kernels.
    ``seeds`` defaults to ``config.seed + k``. Returns the trained models (updated in place).
    """
    k_models = len(models)
    if len(indices) != k_models:
        raise ValueError(f"fit_stacked(indices): {len(indices)} index sets for {k_models} models")
    if config.early_stopping_patience is not None:
        raise ValueError("fit_stacked: early stopping is not supported; use softlib.train.fit")
    seeds = list(seeds) if seeds is not None else [config.seed + k for k in range(k_models)]
    if len(seeds) != k_models:
        raise ValueError(f"fit_stacked(seeds): {len(seeds)} seeds for {k_models} models")
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
    gens = [(torch.Generator().manual_seed(s), torch.Generator(device=device).manual_seed(s + 1))
            for s in seeds]
    mix_probs = [mix_probability_from_entropy(tk) if config.mix_prob == "entropy"
                 else float(config.mix_prob) for tk in t_k]
    history: dict[str, list] = {"epoch": [], "train_loss": [], "lr": [], "seconds": []}
    show = progress and not _quiet()
    t_start, seen = time.perf_counter(), 0
    diverged: list[int | None] = [None] * k_models
    for epoch in range(int(config.epochs)):
        t0 = time.perf_counter()
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
            xs, ts = [], []
            for k in range(k_models):
                pos = perms[k][step * bs:(step + 1) * bs]
                xb = _augment.apply(config.augment, _to_float(x_all[idx_dev[k][pos]]), gens[k][1])
                tb = t_k[k][pos]
                if config.label_smoothing:
                    tb = smooth_labels(tb, config.label_smoothing)
                if config.mix != "none":
                    xb, tb = maybe_mix(xb, tb, config.mix, config.mix_alpha, mix_probs[k], gens[k][0])
                xs.append(xb)
                ts.append(tb)
            xb, tb = torch.stack(xs), torch.stack(ts)
            with _autocast(device, amp):
                out = stacked(xb)
            kk, b = out.shape[:2]
            per = soft_cross_entropy(out.float().reshape(kk * b, -1), tb.reshape(kk * b, -1),
                                     reduction="none").view(kk, b).mean(1)
            opt.zero_grad(set_to_none=True)
            per.sum().backward()
            opt.step()
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
            if not ok and diverged[k] is None:
                diverged[k] = epoch + 1
                warnings.warn(f"softlib.multimodel: stacked model {k} ({config.arch}, lr "
                              f"{config.lr}, seed {seeds[k]}) diverged in epoch {epoch + 1}: "
                              "non-finite loss or weights; recorded as diverged, the others "
                              "train on")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        history["seconds"].append(time.perf_counter() - t0)
        if all(d is not None for d in diverged):
            break
    seconds = time.perf_counter() - t_start
    trained = stacked.unstack()
    return StackedResult(models=trained, history=history, seconds=seconds,
                         images_per_second=seen / max(seconds, 1e-9), steps_per_epoch=steps,
                         diverged_epochs=diverged)
