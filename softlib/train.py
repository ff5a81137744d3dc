"""The training engine: one configuration object, one loop, cached runs and k-fold orchestration.

Design (what makes it fast on a small dataset):

* the whole training set is moved to the device **once** as uint8 NCHW (CIFAR-10H: 30 MB); each
  batch is an index into it, converted to float / 255 and augmented on the device by
  :mod:`softlib.augment` (batched, per-image random parameters), so there is no DataLoader, no
  worker process and no per-image Python;
* bf16 autocast and channels-last memory on CUDA (``'auto'``), optional ``torch.compile``;
* the learning rate is a pure function of the (fractional) epoch, set before every step, so
  warm-up and the schedules are exact and resumable.

Targets are probability vectors ``[N, C]`` throughout (hard labels are one-hot); the loss is the
model's ``training_loss`` hook if it has one, else :func:`softlib.losses.soft_cross_entropy`.
A ``target_sampler(epoch, generator) -> [N, C]`` may replace the targets each epoch (Peterson et
al.'s sampled hard labels, redrawn every epoch).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import platform
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from . import augment as _augment
from .cache import Entry, ResultCache, config_key
from .checkpoint import checkpoints_dir, for_cache_entry, rng_state, set_rng_state
from .losses import maybe_mix, mix_probability_from_entropy, smooth_labels, soft_cross_entropy, \
    validate_targets

__all__ = ["TrainConfig", "TrainResult", "fit", "predict", "train_cached", "run_folds",
           "FoldsResult", "data_fingerprint", "lr_at", "resolve_device", "to_device_images",
           "load_model", "TrainJob", "diverged_epoch", "round_logits", "LOGITS_PRECISIONS"]

_OPTIMIZERS = ("adam", "sgd")
_SCHEDULES = ("constant", "multistep", "cosine")
_MIXES = ("none", "mixup", "cutmix")
#: how stored predictions are kept (:func:`round_logits`)
LOGITS_PRECISIONS = ("float32", "float16")


def _quiet() -> bool:
    from .progress import quiet
    return quiet()


@dataclass
class TrainConfig:
    """Everything that determines a training run (JSON-serialisable; ``to_dict()`` is the cache key).

    ``optimizer='adam'`` is Peterson et al.'s choice; ``'sgd'`` with ``nesterov=True`` and
    momentum 0.9 is the training repository's (Laing's code: ``nesterov=False``).
    ``schedule``: 'constant', 'multistep' (multiply by ``gamma`` at each epoch in
    ``milestones``) or 'cosine' (to 0 at the last epoch, or at ``schedule_epochs`` when set: a
    longer recipe cut short keeps its own curve), each after ``warmup_epochs`` of linear warm-up (per step). ``mix_prob`` is a
    probability or ``'entropy'`` (Laing: the mean entropy of the training targets).
    ``keep_best`` (needs ``val``) trains every epoch and ends with the weights of the epoch with
    the lowest validation loss (Laing's protocol). ``early_stopping_patience`` (epochs, on
    validation loss) needs ``val`` and restores the best
    weights. ``amp``/``channels_last``: 'auto' turns them on for CUDA only; ``compile``: False,
    True, 'auto' (CUDA only) or 'reduce-overhead' (``torch.compile``'s CUDA-graph mode on CUDA;
    like True elsewhere); a compiled model that fails in its first steps at an input shape
    falls back to eager (``_Forward.step``). ``logits_precision``: 'float32', or 'float16' to
    round the stored predictions to float16 (half the bytes in the cache and in a results
    bundle, for profiles whose bundles live in git; at most 2**-11 relative, 3e-8 absolute
    below 6e-5, below a GPU run's own run-to-run variation); training is the same either way.
    """
    arch: str = "resnet_20"
    arch_kwargs: dict = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    batch_size: int = 128
    epochs: int = 10
    schedule: str = "constant"
    milestones: list = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: int = 0
    schedule_epochs: int | None = None
    augment: str = "crop_flip"
    mix: str = "none"
    mix_alpha: float = 1.0
    mix_prob: Any = 1.0
    label_smoothing: float = 0.0
    early_stopping_patience: int | None = None
    keep_best: bool = False
    seed: int = 0
    eval_batch_size: int = 1024
    drop_last: bool = False
    amp: Any = "auto"
    channels_last: Any = "auto"
    compile: Any = False
    logits_precision: str = "float32"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        def bad(name, expected):
            raise ValueError(f"TrainConfig.{name}: expected {expected}, got {getattr(self, name)!r}")
        if self.optimizer not in _OPTIMIZERS:
            bad("optimizer", " or ".join(_OPTIMIZERS))
        if self.schedule not in _SCHEDULES:
            bad("schedule", " | ".join(_SCHEDULES))
        if self.augment not in _augment.AUGMENTATIONS:
            bad("augment", " | ".join(_augment.AUGMENTATIONS))
        if self.mix not in _MIXES:
            bad("mix", " | ".join(_MIXES))
        if not (self.mix_prob == "entropy" or (isinstance(self.mix_prob, (int, float))
                                               and 0 <= self.mix_prob <= 1)):
            bad("mix_prob", "a probability in [0, 1] or 'entropy'")
        if int(self.batch_size) < 1:
            bad("batch_size", "a positive integer")
        if int(self.epochs) < 0:
            bad("epochs", "a non-negative integer")
        if not self.lr > 0:
            bad("lr", "a positive number")
        if self.schedule_epochs is not None and int(self.schedule_epochs) < 1:
            bad("schedule_epochs", "None or a positive integer")
        if not 0 <= self.label_smoothing <= 1:
            bad("label_smoothing", "a value in [0, 1]")
        for name in ("amp", "channels_last"):
            if getattr(self, name) not in (True, False, "auto"):
                bad(name, "True, False or 'auto'")
        if self.compile not in (True, False, "auto", "reduce-overhead"):
            bad("compile", "True, False, 'auto' or 'reduce-overhead'")
        if self.logits_precision not in LOGITS_PRECISIONS:
            bad("logits_precision", " or ".join(map(repr, LOGITS_PRECISIONS)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = [int(m) for m in d["milestones"]]
        for name in ("keep_best", "schedule_epochs"):  # added later: at their defaults they
            if not d[name]:                            # stay out of the cache key, so results
                del d[name]                            # computed before them keep their keys
        if d["logits_precision"] == "float32":  # likewise
            del d["logits_precision"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig.from_dict: unknown field(s) {unknown}; valid: {sorted(names)}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class TrainResult:
    """What :func:`fit` returns: per-epoch history and run facts (the model is trained in place).

    ``diverged``: the training loss (or a weight) became NaN or infinite; training stopped after
    epoch ``diverged_epoch`` (1-based), the last in ``history``. Such a run is a result (its
    cache entry is stored, its logits may be NaN), not an error; see :func:`diverged_epoch`.
    """
    history: dict[str, list]
    epochs_run: int
    best_epoch: int | None
    seconds: float
    images_per_second: float
    device: str
    stopped_early: bool = False
    diverged: bool = False
    diverged_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------

def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else (None, "" or "auto") CUDA when available, else CPU."""
    if device is None or device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _auto(flag: Any, device: torch.device) -> bool:
    return device.type == "cuda" if flag == "auto" else bool(flag)


def compile_mode(flag: Any, device: torch.device) -> str | None:
    """The ``torch.compile`` mode ``TrainConfig.compile`` asks for on ``device`` (None: eager)."""
    if flag == "reduce-overhead":
        return "reduce-overhead"
    return "default" if _auto(flag, device) else None


def to_device_images(images: Any, device: torch.device, name: str = "images") -> torch.Tensor:
    """uint8 NHWC numpy/tensor -> uint8 NCHW tensor on ``device`` (one copy).

    A float NCHW tensor in [0, 1] (e.g. adversarial images) is passed through as float.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"{name}: expected uint8 images [N, H, W, C] (numpy or tensor), "
                         f"got {type(images).__name__} shape {getattr(images, 'shape', None)}")
    if images.dtype == torch.uint8:
        if images.shape[-1] not in (1, 3):
            raise ValueError(f"{name}: uint8 images must be NHWC with 1 or 3 channels, "
                             f"got shape {tuple(images.shape)}")
        return images.to(device).permute(0, 3, 1, 2).contiguous()
    if images.is_floating_point() and images.shape[1] in (1, 3):
        return images.to(device)
    raise ValueError(f"{name}: expected uint8 NHWC or float NCHW in [0, 1], "
                     f"got {images.dtype} shape {tuple(images.shape)}")


def _to_float(xb: torch.Tensor) -> torch.Tensor:
    return xb.float().div_(255) if xb.dtype == torch.uint8 else xb.float()


def _as_targets(targets: Any, n: int, name: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets)
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected float probability targets [N, C], got dtype {t.dtype}")
    validate_targets(t, atol=1e-4, name=name)
    if t.shape[0] != n:
        raise ValueError(f"{name}: {t.shape[0]} target rows for {n} images")
    return t.to(device=device, dtype=torch.float32)


def lr_at(config: TrainConfig, epoch: float, steps_per_epoch: int = 1) -> float:
    """The learning rate at fractional ``epoch`` (0 = start of training) under ``config``.

    Warm-up is linear per step, reaching ``lr`` after ``warmup_epochs`` (its first step uses
    ``lr / (warmup_epochs * steps_per_epoch)``, never 0); then 'constant', 'multistep'
    (x ``gamma`` at each milestone epoch) or 'cosine' (from ``lr`` to 0 at the last epoch, or
    at ``schedule_epochs`` when the run stops before its recipe's end).
    """
    base = config.lr
    w = config.warmup_epochs
    if w > 0 and epoch < w:
        return base * min(1.0, (epoch + 1.0 / max(1, steps_per_epoch)) / w)
    if config.schedule == "constant":
        return base
    if config.schedule == "multistep":
        k = sum(1 for m in config.milestones if epoch >= m)
        return base * (config.gamma ** k)
    span = max(1e-12, (config.schedule_epochs or config.epochs) - w)
    p = min(1.0, max(0.0, (epoch - w) / span))
    return base * 0.5 * (1 + math.cos(math.pi * p))


def _make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay,
                           nesterov=bool(config.nesterov and config.momentum > 0))


class _Forward:
    """Calls the model, compiled in ``mode`` (None: eager; 'default'; 'reduce-overhead', which
    on CUDA replays the forward and backward as CUDA graphs).

    A compiled model's first few steps at each input shape run under a guard (:meth:`step`): a
    failure in their forward or backward (compiling, capturing a graph, a double backward the
    compiler does not support) restores the model's buffers, warns, and redoes that step
    eagerly, as the rest of training then runs. Results are never silently half-compiled: the
    step that failed leaves no trace.
    """

    GUARDED_STEPS = 3  # per input shape: a CUDA graph is recorded after warm-up calls

    def __init__(self, model: torch.nn.Module, mode: str | None):
        self.model = model
        self.fn = model
        self.graphs = False
        self._ok: dict[tuple, int] = {}
        if mode is not None:
            try:
                self.fn = torch.compile(model, mode=None if mode == "default" else mode)
                self.graphs = mode == "reduce-overhead"
            except Exception as e:  # pragma: no cover - depends on the platform
                warnings.warn(f"softlib.train: torch.compile unavailable ({e}); running eagerly")

    @property
    def compiled(self) -> bool:
        return self.fn is not self.model

    def __call__(self, x):
        if not self.compiled:
            return self.model(x)
        mark = getattr(torch.compiler, "cudagraph_mark_step_begin", None)  # torch >= 2.2
        if self.graphs and mark is not None:  # a new training step: the graph may reuse the
            mark()                            # memory of the previous step's outputs
        return self.fn(x)

    def step(self, shape: Sequence[int], forward_backward: Callable[[], Any]) -> Any:
        """``forward_backward()`` (a step's forward, loss and backward, no optimizer step),
        guarded while the compiled model is new to inputs of ``shape``; returns its result."""
        key = tuple(shape)
        if not self.compiled or self._ok.get(key, 0) >= self.GUARDED_STEPS:
            return forward_backward()
        saved = [b.detach().clone() for b in self.model.buffers()]
        try:
            out = forward_backward()
        except Exception as e:
            with torch.no_grad():
                for b, s in zip(self.model.buffers(), saved):
                    b.copy_(s)
            warnings.warn(f"softlib.train: the compiled model failed ({type(e).__name__}: "
                          f"{str(e)[:300]}); this step and the rest of training run eagerly")
            self.fn, self.graphs = self.model, False
            return forward_backward()
        self._ok[key] = self._ok.get(key, 0) + 1
        return out


def _all_finite(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool tensor (on the tensors' device, no sync): every floating tensor is finite."""
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    if not flags:
        return torch.ones((), dtype=torch.bool)
    return torch.stack(flags).all()


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _model_outputs(model, x):
    fn = getattr(model, "inference", None)
    return fn(x) if callable(fn) else model(x)


def _evaluate(model, images_dev: torch.Tensor, batch_size: int, device: torch.device,
              amp: bool, channels_last: bool) -> torch.Tensor:
    """Logits (float32, on device) of the model in eval mode for device-resident images."""
    was_training = model.training
    model.eval()
    needs_grad = bool(getattr(model, "inference_requires_grad", False))
    ctx = torch.enable_grad() if needs_grad else torch.inference_mode()
    outs = []
    try:
        with ctx:
            for s in range(0, images_dev.shape[0], batch_size):
                xb = _to_float(images_dev[s:s + batch_size])
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with _autocast(device, amp):
                    out = _model_outputs(model, xb)
                outs.append(out.detach().float())
    finally:
        model.train(was_training)
    if not outs:
        return torch.zeros(0, 0, device=device)
    return torch.cat(outs)


# ------------------------------------------------------------------------------------------
# fit / predict
# ------------------------------------------------------------------------------------------

def fit(model: torch.nn.Module, images: Any, targets: Any, config: TrainConfig,
        val: tuple[Any, Any] | None = None, device: str | torch.device | None = None,
        target_sampler: Callable[[int, torch.Generator], Any] | None = None,
        progress: bool = True, checkpoint: Any = None) -> TrainResult:
    """Train ``model`` in place on uint8 NHWC ``images`` with probability ``targets`` [N, C].

    ``val=(images, targets)`` adds per-epoch validation loss and accuracy (against the targets'
    argmax) and enables early stopping. ``target_sampler(epoch, generator)`` returns the
    targets for that epoch (called at the start of every epoch, before the batches).
    Seeding: ``config.seed`` drives the global torch RNG (dropout), batch order, augmentation and
    mixing; the same seed and initial weights give the same result on CPU.
    ``checkpoint`` (a :class:`softlib.checkpoint.Checkpoint`): resume from its saved epoch, save
    it as epochs end, stop at the halt deadline (:class:`softlib.checkpoint.TrainingHalted`).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"fit: config must be a TrainConfig, got {type(config).__name__}")
    device = resolve_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its kernels
    amp = _auto(config.amp, device)
    cl = _auto(config.channels_last, device)
    model.to(device)
    if cl:
        model.to(memory_format=torch.channels_last)
    x_all = to_device_images(images, device, "fit(images)")
    n = x_all.shape[0]
    if n == 0:
        raise ValueError("fit(images): no training images")
    t_all = _as_targets(targets, n, "fit(targets)", device)
    if val is not None:
        vx = to_device_images(val[0], device, "fit(val images)")
        vt = _as_targets(val[1], vx.shape[0], "fit(val targets)", device)
    if config.early_stopping_patience is not None and val is None:
        raise ValueError("TrainConfig.early_stopping_patience needs fit(..., val=(images, targets))")
    if config.keep_best and val is None:
        raise ValueError("TrainConfig.keep_best needs fit(..., val=(images, targets))")
    restore_best = config.early_stopping_patience is not None or bool(config.keep_best)

    torch.manual_seed(config.seed)
    gen_cpu = torch.Generator().manual_seed(config.seed)               # batch order, mixing
    gen_dev = torch.Generator(device=device).manual_seed(config.seed + 1)  # augmentation
    gen_targets = torch.Generator().manual_seed(config.seed + 2)      # target sampler
    mix_prob = (mix_probability_from_entropy(t_all) if config.mix_prob == "entropy"
                else float(config.mix_prob))

    opt = _make_optimizer(model, config)
    fwd = _Forward(model, compile_mode(config.compile, device))
    has_loss_hook = callable(getattr(model, "training_loss", None))
    needs_input_grad = bool(getattr(model, "requires_input_grad", False))
    after_step = getattr(model, "after_optimizer_step", None)
    on_epoch_start = getattr(model, "on_epoch_start", None)

    bs = int(config.batch_size)
    steps = n // bs if (config.drop_last and n >= bs) else math.ceil(n / bs)
    history: dict[str, list] = {"epoch": [], "train_loss": [], "lr": [], "seconds": []}
    if val is not None:
        history.update(val_loss=[], val_acc=[])
    best = (math.inf, None, None)  # (val loss, epoch, state)
    bad_epochs, stopped, diverged_at = 0, False, None
    show = progress and not _quiet()
    t_start = time.perf_counter()
    seen = 0
    epoch = -1
    first, before = 0, 0.0  # the epoch to start at, and the seconds trained before it
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:  # resume after the saved epoch, exactly where it stopped
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        for g, st in zip((gen_cpu, gen_dev, gen_targets), saved["generators"]):
            g.set_state(st)
        set_rng_state(saved["rng"], device)
        history = saved["history"]
        best_state = ({k: v.to(device) for k, v in saved["best_state"].items()}
                      if saved["best_state"] is not None else None)
        best = (saved["best_loss"], saved["best_epoch"], best_state)
        bad_epochs, seen, before = saved["bad_epochs"], saved["seen"], saved["seconds"]
        first = int(saved["epoch"])
        epoch = first - 1

    def training_state() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(),
                "generators": [g.get_state() for g in (gen_cpu, gen_dev, gen_targets)],
                "rng": rng_state(device), "history": history, "best_loss": best[0],
                "best_epoch": best[1], "best_state": best[2], "bad_epochs": bad_epochs,
                "seen": seen, "seconds": before + time.perf_counter() - t_start}

    for epoch in range(first, int(config.epochs)):
        t0 = time.perf_counter()
        model.train()
        if callable(on_epoch_start):
            on_epoch_start(epoch)
        if target_sampler is not None:
            t_all = _as_targets(target_sampler(epoch, gen_targets), n, "target_sampler output",
                                device)
        perm = torch.randperm(n, generator=gen_cpu).to(device)
        loss_sum = torch.zeros((), device=device)
        count = 0
        bar = None
        if show:
            from .progress import progress as tqdm
            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
        for step in range(steps):
            idx = perm[step * bs:(step + 1) * bs]
            for g in opt.param_groups:
                g["lr"] = lr_at(config, epoch + step / steps, steps)
            xb = _augment.apply(config.augment, _to_float(x_all[idx]), gen_dev)
            tb = t_all[idx]
            if config.label_smoothing:
                tb = smooth_labels(tb, config.label_smoothing)
            if config.mix != "none":
                xb, tb = maybe_mix(xb, tb, config.mix, config.mix_alpha, mix_prob, gen_cpu)
            if cl:
                xb = xb.contiguous(memory_format=torch.channels_last)
            if needs_input_grad:
                xb.requires_grad_(True)
            def forward_backward():
                with _autocast(device, amp):
                    out = fwd(xb)
                    loss = (model.training_loss(xb, out, tb) if has_loss_hook
                            else soft_cross_entropy(out.float(), tb))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                return loss

            loss = fwd.step(xb.shape, forward_backward)
            opt.step()
            if callable(after_step):
                after_step(xb.detach(), tb)
            loss_sum += loss.detach().float() * idx.numel()
            count += idx.numel()
            if bar is not None:
                bar.update(1)
                if step % 20 == 0 or step == steps - 1:
                    bar.set_postfix(loss=f"{loss_sum.item() / count:.4f}")
        seen += count
        # divergence: a non-finite step loss stays in the sum; one sync per epoch checks both
        finite = torch.isfinite(loss_sum) & _all_finite(
            list(model.parameters()) + list(model.buffers())).to(loss_sum.device)
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(float(loss_sum.item() / max(1, count)))
        history["lr"].append(float(opt.param_groups[0]["lr"]))
        if not bool(finite.item()):
            diverged_at = epoch + 1
            if val is not None:
                history["val_loss"].append(float("nan"))
                history["val_acc"].append(float("nan"))
            history["seconds"].append(time.perf_counter() - t0)
            if bar is not None:
                bar.close()
            warnings.warn(f"softlib.train: {config.arch} (lr {config.lr}, seed {config.seed}) "
                          f"diverged in epoch {diverged_at}: non-finite loss or weights; "
                          "training stopped and the run is recorded as diverged")
            break
        if val is not None:
            logits = _evaluate(model, vx, config.eval_batch_size, device, amp, cl)
            vloss = float(soft_cross_entropy(logits, vt).item())
            vacc = float((logits.argmax(1) == vt.argmax(1)).float().mean().item())
            history["val_loss"].append(vloss)
            history["val_acc"].append(vacc)
            if vloss < best[0]:
                state = ({k: v.detach().clone() for k, v in model.state_dict().items()}
                         if restore_best else None)
                best, bad_epochs = (vloss, epoch + 1, state), 0
            else:
                bad_epochs += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        history["seconds"].append(time.perf_counter() - t0)
        if bar is not None:
            post = {"loss": f"{history['train_loss'][-1]:.4f}"}
            if val is not None:
                post.update(val_loss=f"{history['val_loss'][-1]:.4f}",
                            val_acc=f"{history['val_acc'][-1]:.3f}")
            bar.set_postfix(post)
            bar.close()
        if (config.early_stopping_patience is not None
                and bad_epochs >= int(config.early_stopping_patience)):
            stopped = True
            break
        if checkpoint is not None:
            checkpoint.epoch_end(epoch + 1, int(config.epochs), history["seconds"][-1],
                                 training_state)
    if restore_best and best[2] is not None and diverged_at is None:
        model.load_state_dict(best[2])
    seconds = before + time.perf_counter() - t_start
    return TrainResult(history=history, epochs_run=epoch + 1, best_epoch=best[1],
                       seconds=seconds, images_per_second=seen / max(seconds, 1e-9),
                       device=str(device), stopped_early=stopped,
                       diverged=diverged_at is not None, diverged_epoch=diverged_at)


def predict(model: torch.nn.Module, images: Any, batch_size: int = 1024,
            device: str | torch.device | None = None, amp: Any = False) -> np.ndarray:
    """Logits ``[N, C]`` (float32 numpy) of ``model`` in eval mode.

    ``images``: uint8 NHWC (numpy or tensor) or float NCHW in [0, 1]. Uses ``model.inference``
    when defined; runs under ``torch.inference_mode`` unless the model sets
    ``inference_requires_grad``. ``device`` defaults to the model's. ``amp`` off by default
    (evaluation numbers in float32).
    """
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else resolve_device(None)
    device = torch.device(device)
    model.to(device)
    x = to_device_images(images, device, "predict(images)")
    out = _evaluate(model, x, int(batch_size), device, _auto(amp, device), False)
    return out.cpu().numpy().astype(np.float32)


# ------------------------------------------------------------------------------------------
# cached runs and k-fold
# ------------------------------------------------------------------------------------------

def data_fingerprint(*arrays: Any, provenance: Any = "") -> str:
    """A short hash of arrays (indices, labels, targets) and a provenance id (dataset version)."""
    h = hashlib.sha256(str(provenance).encode())
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:24]


def _images_fingerprint(images: Any) -> str:
    a = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return data_fingerprint(a)


def _default_build(config: TrainConfig) -> torch.nn.Module:
    from .models import build
    return build(config.arch, **config.arch_kwargs)


def load_model(entry: Entry, config: TrainConfig,
               build_model: Callable[[TrainConfig], torch.nn.Module] | None = None) -> torch.nn.Module:
    """Rebuild the model of a cached entry and load its weights (CPU)."""
    if entry.state_dict is None:
        raise ValueError(f"load_model: the cached {config.arch} model (seed {config.seed}) has no "
                         "weights: results bundles leave them out unless exported with "
                         "--with-weights. Compute what needs this model on the machine that "
                         "trained it, or import a bundle exported with its weights")
    model = (build_model or _default_build)(config)
    model.load_state_dict(entry.state_dict)
    return model


def round_logits(logits: np.ndarray, precision: str = "float32") -> np.ndarray:
    """Predictions as stored under ``precision`` (:data:`LOGITS_PRECISIONS`): float32, or
    rounded to the nearest float16 (kept as float32; the cache then stores them in half the
    bytes). A value beyond float16's range (65504) stays as it is rather than become infinite."""
    if precision not in LOGITS_PRECISIONS:
        raise ValueError(f"logits_precision: expected one of {LOGITS_PRECISIONS}, got {precision!r}")
    a = np.asarray(logits, dtype=np.float32)
    if precision == "float32":
        return a
    with np.errstate(over="ignore"):
        r = a.astype(np.float16).astype(np.float32)
    return np.where(np.isinf(r) & ~np.isinf(a), a, r)


def _stored_predictions(model: torch.nn.Module, images: Any, config: TrainConfig) -> np.ndarray:
    """The logits a cache entry keeps of ``model`` on ``images`` (at ``config.logits_precision``)."""
    return round_logits(predict(model, images, config.eval_batch_size), config.logits_precision)


def _trained_entry(model: torch.nn.Module, result: TrainResult, config: TrainConfig,
                   eval_sets: Mapping[str, Any], eval_fps: Mapping[str, str],
                   extra_meta: Mapping[str, Any] | None = None) -> Entry:
    """The cache entry of a trained model: logits on every eval set, run facts, CPU weights.

    A model whose logits are not all finite is recorded as diverged (in its last epoch) even
    when its training loss stayed finite."""
    arrays, timing = {}, {}
    for name, imgs in eval_sets.items():
        t0 = time.perf_counter()
        arrays[f"logits_{name}"] = _stored_predictions(model, imgs, config)
        timing[name] = time.perf_counter() - t0
    if not result.diverged and not all(np.isfinite(a).all() for a in arrays.values()):
        result = dataclasses.replace(result, diverged=True, diverged_epoch=result.epochs_run)
    meta = {"result": result.to_dict(), "eval_seconds": timing, "eval_fingerprints": dict(eval_fps),
            "torch": torch.__version__, "machine": platform.platform(),
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            **dict(extra_meta or {})}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return Entry(arrays=arrays, meta=meta, state_dict=state)


def diverged_epoch(entry: Entry) -> int | None:
    """The epoch (1-based) in which the run of a cache entry diverged, or None if it did not.

    Read from ``meta['result']`` (:class:`TrainResult`'s ``diverged_epoch``); an entry stored
    before divergence was recorded counts as diverged when any of its logits is NaN or infinite
    (epoch: the first with a non-finite training loss, else the last one run)."""
    res = entry.meta.get("result", {}) or {}
    if res.get("diverged"):
        ep = res.get("diverged_epoch")
        return int(ep) if ep is not None else int(res.get("epochs_run") or 0)
    if all(np.isfinite(np.asarray(a)).all() for n, a in entry.arrays.items()
           if n.startswith("logits_")):
        return None
    losses = [float(x) if x is not None else math.nan
              for x in (res.get("history", {}) or {}).get("train_loss", [])]
    bad = [i + 1 for i, x in enumerate(losses) if not math.isfinite(x)]
    return bad[0] if bad else int(res.get("epochs_run") or len(losses))


def train_cached(cache: ResultCache | None, kind: str, config: TrainConfig, data_fingerprint: str,
                 build_model: Callable[[TrainConfig], torch.nn.Module] | None,
                 train_data: tuple[Any, Any], eval_sets: Mapping[str, Any] | None = None,
                 val: tuple[Any, Any] | None = None, target_sampler: Callable | None = None,
                 device: str | torch.device | None = None, progress: bool = True,
                 force: bool = False, checkpoints: Any = None) -> Entry:
    """Train (or load) one model; store weights, logits on every eval set, history and timing.

    The cache key is ``config.to_dict()`` plus ``data_fingerprint``, which must identify the
    training data, the validation data and the target sampler (e.g. :func:`data_fingerprint` of
    the indices and targets plus the dataset's provenance id). ``build_model(config)`` makes the
    untrained model after ``torch.manual_seed(config.seed)`` (default: ``softlib.models.build``).
    Logits are ``entry.arrays['logits_<name>']``. On a hit nothing is trained; an eval set that
    is new (or whose images changed) is predicted from the stored weights and added to the entry.
    While it trains it keeps an epoch checkpoint (:mod:`softlib.checkpoint`) under
    ``checkpoints`` (default ``<cache root>/.checkpoints``), from which an interrupted run resumes.
    """
    cache = cache if cache is not None else ResultCache()
    eval_sets = dict(eval_sets or {})
    key = {"train": config.to_dict(), "data": str(data_fingerprint)}
    builder = build_model or _default_build
    eval_fps = {name: _images_fingerprint(imgs) for name, imgs in eval_sets.items()}

    ckpt = None  # made only on a miss: a cache hit touches no checkpoint

    def compute() -> Entry:
        nonlocal ckpt
        ckpt = for_cache_entry(checkpoints or checkpoints_dir(cache.root), kind,
                               config_key(kind, key), "fit", resolve_device(device),
                               f"{kind} {config.arch} seed {config.seed}")
        torch.manual_seed(config.seed)
        model = builder(config)
        result = fit(model, train_data[0], train_data[1], config, val=val, device=device,
                     target_sampler=target_sampler, progress=progress,
                     checkpoint=None if force else ckpt)
        return _trained_entry(model, result, config, eval_sets, eval_fps)

    entry = cache.get_or_compute(kind, key, compute, force=force)
    if ckpt is not None:  # trained here and stored (a forced run never resumes an older one)
        ckpt.clear()
    stale = [name for name in eval_sets
             if f"logits_{name}" not in entry.arrays
             or entry.meta.get("eval_fingerprints", {}).get(name) != eval_fps[name]]
    if stale:
        model = load_model(entry, config, builder)
        dev = resolve_device(device)
        model.to(dev)
        for name in stale:
            entry.arrays[f"logits_{name}"] = _stored_predictions(model, eval_sets[name], config)
            entry.meta.setdefault("eval_fingerprints", {})[name] = eval_fps[name]
        cache.save(kind, key, entry)
    return entry


# ------------------------------------------------------------------------------------------
# several cached runs at once: same-configuration models trained together (fit_stacked)
# ------------------------------------------------------------------------------------------

@dataclass
class TrainJob:
    """One :func:`train_cached` call, as data (the arguments of the same names).

    ``val_optional``: ``val`` only monitors the run (no early stopping). Kept for callers that
    say so; stacked training (:func:`softlib.multimodel.train_cached_many`) monitors every
    stacked model's own ``val`` and applies early stopping / keep_best per model.
    """
    config: TrainConfig
    data_fingerprint: str
    train_data: tuple[Any, Any]
    eval_sets: Mapping[str, Any] | None = None
    build_model: Callable[[TrainConfig], torch.nn.Module] | None = None
    val: tuple[Any, Any] | None = None
    target_sampler: Callable | None = None
    val_optional: bool = False

    def key(self) -> dict[str, Any]:
        return {"train": self.config.to_dict(), "data": str(self.data_fingerprint)}


@dataclass
class FoldsResult:
    """Per-fold cache entries plus the held-out logits assembled over all N images."""
    entries: list[Entry]
    heldout_logits: np.ndarray     # [N, C]: each image predicted by the model that held it out
    fold_of: np.ndarray            # [N] index of the fold that held each image out


def run_folds(cache: ResultCache | None, kind: str, config: TrainConfig, images: Any,
              targets: Any, folds: Sequence[tuple[np.ndarray, np.ndarray]],
              data_id: str = "", build_model: Callable[[TrainConfig], torch.nn.Module] | None = None,
              eval_sets: Mapping[str, Any] | None = None,
              target_sampler_factory: Callable[[np.ndarray], Callable] | None = None,
              device: str | torch.device | None = None, progress: bool = True) -> FoldsResult:
    """Run ``config`` on each ``(train_idx, test_idx)`` fold (each cached), assemble held-out logits.

    ``images`` [N, H, W, C] uint8 and ``targets`` [N, C] cover all N images; every index must be
    held out by exactly one fold. ``eval_sets`` (name -> images) are predicted by every fold
    model (logits in each entry as ``logits_<name>``). ``target_sampler_factory(train_idx)``
    gives a per-fold target sampler; its identity must be part of ``data_id``.
    """
    images_np = images
    targets_np = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    n = len(targets_np)
    fold_of = np.full(n, -1, dtype=np.int64)
    for k, (tr, te) in enumerate(folds):
        te = np.asarray(te)
        if np.any(fold_of[te] >= 0) or len(np.unique(te)) != len(te):
            raise ValueError(f"run_folds(folds): fold {k} holds out images already held out "
                             "by another fold (or repeats an index)")
        if np.intersect1d(np.asarray(tr), te).size:
            raise ValueError(f"run_folds(folds): fold {k} trains on images it holds out")
        fold_of[te] = k
    if (fold_of < 0).any():
        raise ValueError(f"run_folds(folds): {(fold_of < 0).sum()} of {n} images are held out by "
                         "no fold")
    entries: list[Entry] = []
    heldout = None
    it: Iterable = enumerate(folds)
    if progress and not _quiet():
        from .progress import progress as tqdm
        it = tqdm(list(it), desc=f"{kind} folds")
    for k, (tr, te) in it:
        tr, te = np.asarray(tr), np.asarray(te)
        fp = data_fingerprint(tr, te, targets_np, provenance=f"{data_id}|fold{k}")
        sets = {"heldout": images_np[te], **dict(eval_sets or {})}
        sampler = target_sampler_factory(tr) if target_sampler_factory is not None else None
        entry = train_cached(cache, kind, config, fp, build_model, (images_np[tr], targets_np[tr]),
                             sets, target_sampler=sampler, device=device, progress=progress)
        logits = entry.arrays["logits_heldout"]
        if heldout is None:
            heldout = np.full((n, logits.shape[1]), np.nan, dtype=np.float32)
        heldout[te] = logits
        entries.append(entry)
    return FoldsResult(entries=entries, heldout_logits=heldout, fold_of=fold_of)
