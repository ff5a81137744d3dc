"""White-box L-inf attacks in pixel space [0, 1] (FGSM, PGD) and Laing's attack decrease.

Every softlib model takes pixels in [0, 1] and normalises inside, so ``eps`` is in pixel units:
Peterson et al. use 4/255, Laing uses 0.005 (applied after de-normalising, i.e. also pixels).

Which output is attacked: the loss is the cross-entropy of ``model(x)`` (``forward``), the
logits the model trains on. A model that sets ``attack_with_inference = True`` (e.g. one whose
``forward`` returns kernel values, like DUQ) is attacked through ``inference(x)`` instead; the
``use_inference`` argument overrides both. Predictions (which images are correct, the returned
probabilities) use ``inference(x)`` when the model defines it, else ``forward`` — the same
predictive distribution the rest of the evaluation uses.

The model is put in eval mode for the attack and its previous mode is restored; gradients are
taken with ``torch.autograd.grad`` with respect to the input only, so parameter ``.grad`` is
never touched.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from .progress import progress

__all__ = ["fgsm", "pgd", "attack_decrease", "evaluate_attack", "attack_logits", "predict_logits"]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; each submodule's previous ``training`` flag restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag


def attack_logits(model: nn.Module, x: torch.Tensor, use_inference: bool | None = None) -> torch.Tensor:
    """The output the attack differentiates: ``forward`` unless told (or flagged) otherwise."""
    if use_inference is None:
        use_inference = bool(getattr(model, "attack_with_inference", False))
    if use_inference:
        if not hasattr(model, "inference"):
            raise ValueError(f"use_inference=True but {type(model).__name__} defines no inference(x)")
        return model.inference(x)
    return model(x)


def predict_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits-like evaluation output: ``inference(x)`` if defined, else ``forward``."""
    return model.inference(x) if hasattr(model, "inference") else model(x)


def _ce_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed CE over the batch (per-image gradients independent of batch size)."""
    if targets.is_floating_point():
        if targets.shape != logits.shape:
            raise ValueError(f"targets: expected probabilities of shape {tuple(logits.shape)}, got {tuple(targets.shape)}")
        return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum()
    return F.cross_entropy(logits, targets.long(), reduction="sum")


def _check(x: torch.Tensor, targets: torch.Tensor, eps: float) -> None:
    if not x.is_floating_point() or x.ndim != 4:
        raise ValueError(f"x: expected float NCHW pixels in [0, 1], got {x.dtype} shape {tuple(x.shape)}")
    if targets.shape[0] != x.shape[0]:
        raise ValueError(f"targets: expected {x.shape[0]} rows (one per image), got shape {tuple(targets.shape)}")
    if eps < 0:
        raise ValueError(f"eps: expected a non-negative pixel-unit bound (e.g. 4/255), got {eps}")


def _input_grad(model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
                use_inference: bool | None) -> tuple[torch.Tensor, float]:
    """Gradient of the summed CE w.r.t. the input, and the mean CE at ``x``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = _ce_sum(attack_logits(model, x, use_inference), targets)
        (g,) = torch.autograd.grad(loss, x)
    return g, float(loss.detach()) / x.shape[0]


def fgsm(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, eps: float,
         use_inference: bool | None = None) -> torch.Tensor:
    """Fast gradient sign method: ``clip(x + eps * sign(grad_x CE), 0, 1)``.

    ``targets``: integer labels [B] or probability vectors [B, C] (CE against them).
    """
    _check(x, targets, eps)
    with _eval_mode(model):
        g, _ = _input_grad(model, x, targets, use_inference)
    return (x.detach() + eps * g.sign()).clamp_(0.0, 1.0)


def pgd(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, eps: float, step_size: float, steps: int,
        random_start: bool = True, generator: torch.Generator | None = None, return_history: bool = True,
        use_inference: bool | None = None):
    """Projected gradient descent (Madry et al.) in the L-inf ball of radius ``eps`` around ``x``.

    Start at ``x`` (or, with ``random_start``, ``x`` plus uniform noise in [-eps, eps] drawn from
    ``generator``, clipped to [0, 1]); then ``steps`` times: step ``step_size * sign(grad)``,
    project onto the eps-ball, clip to [0, 1]. Returns ``(x_adv, history)`` where ``history`` is
    a float64 numpy array of length ``steps + 1``: the mean CE at the start and after each step
    (the PGD curve). With ``return_history=False`` returns ``x_adv`` only (one forward fewer).
    """
    _check(x, targets, eps)
    if steps < 0 or int(steps) != steps:
        raise ValueError(f"steps: expected a non-negative integer, got {steps}")
    x0 = x.detach()
    adv = x0.clone()
    if random_start:
        dev = generator.device if generator is not None else x0.device
        noise = torch.rand(x0.shape, generator=generator, device=dev, dtype=x0.dtype).to(x0.device)
        adv = (x0 + (2.0 * noise - 1.0) * eps).clamp_(0.0, 1.0)
    history: list[float] = []
    with _eval_mode(model):
        for _ in range(int(steps)):
            g, loss = _input_grad(model, adv, targets, use_inference)
            history.append(loss)
            adv = adv + step_size * g.sign()
            adv = torch.min(torch.max(adv, x0 - eps), x0 + eps).clamp_(0.0, 1.0)
        if not return_history:
            return adv
        with torch.no_grad():
            history.append(float(_ce_sum(attack_logits(model, adv, use_inference), targets)) / x0.shape[0])
    return adv, np.asarray(history, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Batched evaluation
# --------------------------------------------------------------------------------------------

def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _to_pixels(images: Any) -> torch.Tensor:
    """uint8 NHWC (the project's storage format) -> float NCHW in [0, 1]; float input must
    already be NCHW in [0, 1]. Returns a CPU or device tensor (not copied if already float)."""
    t = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
    if t.ndim != 4:
        raise ValueError(f"images: expected 4-D (uint8 NHWC or float NCHW), got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.permute(0, 3, 1, 2)  # converted to float per batch
    if not t.is_floating_point():
        raise ValueError(f"images: expected uint8 NHWC or float NCHW in [0, 1], got dtype {t.dtype}")
    if t.shape[1] not in (1, 3):
        raise ValueError(f"images: float input must be NCHW with 1 or 3 channels, got shape {tuple(t.shape)}")
    return t


def _batch_float(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    b = t.to(device, non_blocking=True)
    return b.float().div_(255.0) if b.dtype == torch.uint8 else b.float()


def _as_targets(labels: Any, n: int) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels)) if not isinstance(labels, torch.Tensor) else labels
    if y.shape[0] != n:
        raise ValueError(f"labels: expected {n} entries (one per image), got shape {tuple(y.shape)}")
    if not y.is_floating_point() and y.ndim != 1:
        raise ValueError(f"labels: expected int ids [N] or probabilities [N, C], got shape {tuple(y.shape)}")
    return y


def evaluate_attack(model: nn.Module, images: Any, labels: Any, eps: float, kind: str = "fgsm",
                    batch_size: int = 500, device: str | torch.device | None = None, *,
                    step_size: float | None = None, steps: int = 10, random_start: bool = True,
                    seed: int = 0, return_history: bool = False, use_inference: bool | None = None,
                    output: str = "probs"):
    """Attack every image in batches; return the predictive probabilities on the adversarial images.

    ``images``: uint8 NHWC (the project's format) or float NCHW in [0, 1]; ``labels``: int ids [N]
    or probability targets [N, C] (what the attack's CE is taken against). ``kind``: 'fgsm',
    'pgd' (``step_size`` defaults to ``eps / 4``, ``steps``, ``random_start`` seeded by
    ``seed``) or 'none' (clean predictions). Returns ``probs`` [N, C] float32 numpy — softmax of
    ``inference`` if the model defines it, else of ``forward`` — or, with ``output='logits'``,
    those logits (what a cross-entropy beyond float32's smallest probability needs) — and, with
    ``return_history`` (PGD only), also the image-weighted mean CE per PGD iterate.
    """
    if output not in ("probs", "logits"):
        raise ValueError(f"output: expected 'probs' or 'logits', got {output!r}")
    if kind not in ("fgsm", "pgd", "none"):
        raise ValueError(f"kind: expected 'fgsm', 'pgd' or 'none', got {kind!r}")
    if return_history and kind != "pgd":
        raise ValueError("return_history: only PGD has a loss history")
    device = torch.device(device) if device is not None else _model_device(model)
    x_all = _to_pixels(images)
    n = x_all.shape[0]
    y_all = _as_targets(labels, n)
    gen = None
    if kind == "pgd" and random_start:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
    out, hist_sum = [], None
    with _eval_mode(model):
        for s in progress(range(0, n, batch_size), desc=f"{kind} eps={eps:.4g}", leave=False):
            x = _batch_float(x_all[s:s + batch_size], device)
            y = y_all[s:s + batch_size].to(device)
            if kind == "fgsm":
                x = fgsm(model, x, y, eps, use_inference=use_inference)
            elif kind == "pgd":
                x, h = pgd(model, x, y, eps, step_size if step_size is not None else eps / 4, steps,
                           random_start=random_start, generator=gen, return_history=True,
                           use_inference=use_inference)
                hist_sum = h * x.shape[0] if hist_sum is None else hist_sum + h * x.shape[0]
            with torch.no_grad():
                z = predict_logits(model, x).float()
                out.append((z if output == "logits" else F.softmax(z, dim=1)).cpu())
    probs = torch.cat(out).numpy()
    if return_history:
        return probs, hist_sum / n
    return probs


def attack_decrease(model: nn.Module, x: Any, labels: Any, eps: float = 0.005, batch_size: int = 500,
                    device: str | torch.device | None = None, use_inference: bool | None = None) -> dict:
    """Laing's FGSM metric: among images the model classifies correctly, the fraction that
    FGSM (``eps`` in pixel units, CE against the int labels) turns wrong.

    Returns ``dict(acc_clean, acc_adv_on_correct, decrease, n, n_correct)`` where
    ``acc_adv_on_correct`` is the accuracy after the attack on the initially correct images and
    ``decrease = 1 - acc_adv_on_correct`` (NaN if no image was correct).
    """
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels: expected 1-D integer class ids, got dtype {y.dtype} shape {y.shape}")
    clean = evaluate_attack(model, x, y, eps, "none", batch_size, device)
    correct = clean.argmax(axis=1) == y
    n_ok = int(correct.sum())
    if n_ok == 0:
        return {"acc_clean": 0.0, "acc_adv_on_correct": float("nan"), "decrease": float("nan"),
                "n": int(y.size), "n_correct": 0}
    idx = np.flatnonzero(correct)
    x_sel = x[torch.as_tensor(idx)] if isinstance(x, torch.Tensor) else np.asarray(x)[idx]
    adv = evaluate_attack(model, x_sel, y[idx], eps, "fgsm", batch_size, device, use_inference=use_inference)
    acc_adv = float((adv.argmax(axis=1) == y[idx]).mean())
    return {"acc_clean": float(correct.mean()), "acc_adv_on_correct": acc_adv, "decrease": 1.0 - acc_adv,
            "n": int(y.size), "n_correct": n_ok}
