"""Peterson et al. (2019), paper section 7 (book section 4): FGSM and PGD on section 3's fine-tuned
models (Table 2, Figure 4)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ... import metrics
from ...cache import Entry, ResultCache
from ...train import TrainConfig, data_fingerprint, diverged_epoch, load_model
from .common import (Arch, PAPER_TABLE2, StudyData, fine_tuned_archs, parse_archs, select_folds,
                     stratified_subset)
from .alternatives import Pretrained, finetune, finetune_job, method_variants
from .generalisation import _best_candidates


# --------------------------------------------------------------------------------------------
# Section 4: adversarial robustness of the fine-tuned models
# --------------------------------------------------------------------------------------------

ATTACK_METHODS = ("hard", "soft")


def pgd_eps_list(pgd_eps: float | Sequence[float]) -> list[float]:
    """``pgd_eps`` (one L-inf bound in pixel units /255, or several) as a list of floats."""
    vals = [pgd_eps] if np.isscalar(pgd_eps) else list(pgd_eps)
    if not vals or any(not float(v) > 0 for v in vals):
        raise ValueError(f"pgd_eps: expected a positive bound or a list of them, got {pgd_eps!r}")
    return [float(v) for v in vals]


def attack_fold_model(cache: ResultCache, model, key_cfg: Mapping, images: np.ndarray,
                      labels: np.ndarray, eps_list: Sequence[float], pgd_eps: float | Sequence[float],
                      pgd_step: float, pgd_steps: int, pgd_n: int, device=None, seed: int = 0,
                      batch_size: int = 250, logits_precision: str = "float32") -> Entry:
    """FGSM at every eps (pixel units /255) and PGD at every ``pgd_eps`` (one bound or a list:
    the paper explored 4 to 8) on the first ``pgd_n`` images (cached).

    Arrays: ``fgsm_logits_<i>`` [N, C] for ``eps_list[i]``, ``clean_logits``, ``pgd_logits_<j>``
    and ``pgd_history_<j>`` (mean CE after 0..steps iterations) for the j-th PGD bound. CE is
    against the CIFAR-10 labels.
    Logits, not probabilities, so that the cross-entropy of an attacked image is not capped by
    the smallest float32 probability (Table 2's hard-label CE is 4-8 nats on average);
    ``logits_precision``: 'float32' or 'float16' (:func:`softlib.train.round_logits`).
    """
    cfg = attack_config(key_cfg, images, labels, eps_list, pgd_eps, pgd_step,
                        pgd_steps, pgd_n, seed, logits_precision)
    return cache.get_or_compute("peterson_attack", cfg, lambda: _attack_logits(
        model, images, labels, eps_list, cfg["pgd_eps"], pgd_step, pgd_steps, pgd_n, device,
        seed, batch_size, logits_precision))


@dataclass
class AttackJob:
    """One cached attack of :func:`run_adversarial`: the attacked fine-tuned model's cache entry
    (``model_kind``, ``model_config``), the attack's own cache key (``config``) and ``run``,
    which computes the attack's entry from the model's entry. ``provisional``: the learning
    rate could not be chosen yet (section 3's models are not all cached), so the key may change.
    """
    base: dict[str, Any]
    labels: np.ndarray
    config: dict[str, Any]
    model_kind: str
    model_config: dict[str, Any]
    run: Callable[[Entry], Entry]
    provisional: bool = False
    kind: str = "peterson_attack"


def _attack_entry(model_config: TrainConfig, what: str, images: np.ndarray, labels: np.ndarray,
                  eps_list: Sequence[float], pgd_list: Sequence[float], pgd_step: float,
                  pgd_steps: int, pgd_n: int, device, seed: int, entry: Entry) -> Entry:
    """FGSM and PGD logits of the fine-tuned model stored in ``entry`` (see
    :func:`attack_fold_model`), kept at the precision of the model's own predictions."""
    if entry.state_dict is None:
        raise ValueError(f"run_adversarial: the attack on {what} is not cached and that "
                         "model's weights are not in the cache either (a results bundle "
                         "exported without --with-weights adversarial?); compute the section "
                         "where the weights are, or import a bundle with them")
    from ...train import resolve_device
    return _attack_logits(load_model(entry, model_config), images, labels, eps_list, pgd_list,
                          pgd_step, pgd_steps, pgd_n,
                          device if device is not None else resolve_device(None), seed,
                          logits_precision=model_config.logits_precision)


def _attack_logits(model, images, labels, eps_list, pgd_list, pgd_step, pgd_steps, pgd_n,
                   device, seed, batch_size: int = 250, logits_precision: str = "float32"
                   ) -> Entry:
    from ... import attacks
    from ...train import round_logits
    import torch
    dev = torch.device(device) if device else None
    if dev is not None:
        model.to(dev)
    arrays = {"clean_logits": attacks.evaluate_attack(model, images, labels, 0.0, "none",
                                                      250, dev, output="logits")}
    for i, e in enumerate(eps_list):
        arrays[f"fgsm_logits_{i}"] = attacks.evaluate_attack(
            model, images, labels, float(e) / 255, "fgsm", batch_size, dev, output="logits")
    if pgd_n > 0 and pgd_steps > 0:
        for j, pe in enumerate(pgd_list):
            p, h = attacks.evaluate_attack(
                model, images[:pgd_n], labels[:pgd_n], pe / 255, "pgd", batch_size, dev,
                step_size=float(pgd_step) / 255, steps=int(pgd_steps), random_start=True,
                seed=seed, return_history=True, output="logits")
            arrays[f"pgd_logits_{j}"], arrays[f"pgd_history_{j}"] = p, np.asarray(h)
    arrays = {k: round_logits(v, logits_precision) if "_logits" in k else v
              for k, v in arrays.items()}
    return Entry(arrays=arrays, meta={"eps": list(map(float, eps_list)),
                                      "pgd_eps": list(pgd_list)})


def attack_config(model: Mapping, images: np.ndarray, labels: np.ndarray,
                  eps_list: Sequence[float], pgd_eps: float | Sequence[float], pgd_step: float,
                  pgd_steps: int, pgd_n: int, seed: int = 0,
                  logits_precision: str = "float32") -> dict[str, Any]:
    """The cache key of an attack on the model identified by ``model`` (e.g. ``{'finetune':
    <its cache key>}``); ``logits_precision`` joins the key when it is not float32."""
    cfg = dict(model, eps=list(map(float, eps_list)),
               pgd_eps=pgd_eps_list(pgd_eps), pgd_step=float(pgd_step),
               pgd_steps=int(pgd_steps), pgd_n=int(pgd_n),
               images=data_fingerprint(images, labels), seed=int(seed), stored="logits")
    if logits_precision != "float32":
        cfg["logits_precision"] = logits_precision
    return cfg


def _attacked_lr(cache: ResultCache, study: StudyData, pre: Pretrained, arch: Arch, folds,
                 alt_params: Mapping, device, seed: int, progress: bool,
                 train_missing: bool) -> tuple[float, bool]:
    """Table 1's learning rate of ``arch`` (:func:`select_variants`' rule): the one with the best
    mean held-out accuracy over every fine-tuning method (and mixup alpha) and fold together,
    among the rates with the fewest diverged runs, so that the hard and the soft models attacked
    are Table 1's and share a rate. Returns the rate and whether it is final (False: the models
    needed to choose are not cached yet)."""
    lrs = [float(x) for x in alt_params["lr"]]
    if len(lrs) == 1:
        return lrs[0], True
    rows = []
    for method, alpha in method_variants(alt_params):
        for lr in lrs:
            for k, (_, te) in enumerate(folds):
                if train_missing:
                    e = finetune(cache, study, pre, arch, method, lr, k, folds, alt_params,
                                 alpha, None, device, seed, progress)[0]
                else:
                    job = finetune_job(study, pre, arch, method, lr, k, folds, alt_params,
                                       alpha, None, seed)[0]
                    if not cache.has("peterson_finetune", job.key()):
                        return lrs[0], False
                    e = cache.load("peterson_finetune", job.key())
                pred = np.asarray(e.arrays["logits_heldout"]).argmax(1)
                rows.append({"arch": arch.label, "_l": lr,
                             "diverged": diverged_epoch(e) is not None,
                             "accuracy": float(np.mean(pred == study.labels[te]))})
    keep = _best_candidates(pd.DataFrame(rows), ["arch"], ["_l"], "accuracy", True)
    return float(next(iter(keep))[1]), True


def attack_jobs(cache: ResultCache, study: StudyData, pre: Pretrained, alt_params: Mapping,
                adv_params: Mapping, device=None, seed: int = 0, progress: bool = True,
                train_missing: bool = True) -> list[AttackJob]:
    """Every attack of paper §7: one per fine-tuned hard / soft fold model, on the images it
    held out. With ``train_missing`` (what :func:`run_adversarial` does) a fine-tuned model that
    is not cached yet is trained through :func:`finetune`; without it (a job plan) nothing is
    trained and an attack whose learning rate cannot be chosen yet is ``provisional``."""
    folds = select_folds(study.labels, alt_params["folds"], 10, seed)
    per_fold = int(math.ceil(adv_params["attack_subset"] / len(folds)))
    pgd_n = int(math.ceil(adv_params.get("pgd_subset", adv_params["attack_subset"]) / len(folds)))
    eps_list = [float(e) for e in adv_params["eps_sweep"]]
    pgd_list = pgd_eps_list(adv_params["pgd_eps"])
    out = []
    for arch in fine_tuned_archs(parse_archs(alt_params["archs"])):
        lr, final = _attacked_lr(cache, study, pre, arch, folds, alt_params, device, seed,
                                 progress, train_missing)
        for method in ATTACK_METHODS:
            for k, (_, te) in enumerate(folds):
                job, cfg, ft_key = finetune_job(study, pre, arch, method, lr, k, folds,
                                                alt_params, None, None, seed)
                if train_missing:
                    finetune(cache, study, pre, arch, method, lr, k, folds, alt_params, None,
                             None, device, seed, progress)
                pick = te[stratified_subset(study.labels[te], per_fold, seed)]
                x, y = study.images[pick], study.labels[pick]
                n_pgd = min(pgd_n, len(y))
                what = f"{arch.label} fine-tuned on {method} labels, fold {k}"
                run = partial(_attack_entry, cfg, what, x, y, eps_list, pgd_list,
                              float(adv_params["pgd_step_size"]), int(adv_params["pgd_steps"]),
                              n_pgd, device, seed)
                out.append(AttackJob(
                    {"arch": arch.label, "condition": method, "fold": k, "lr": lr}, y,
                    attack_config({"finetune": ft_key}, x, y, eps_list, adv_params["pgd_eps"],
                                  adv_params["pgd_step_size"], adv_params["pgd_steps"], n_pgd,
                                  seed, cfg.logits_precision),
                    "peterson_finetune", job.key(), run, provisional=not final))
    return out


def run_adversarial(cache: ResultCache, study: StudyData, pre: Pretrained, alt_params: Mapping,
                    adv_params: Mapping, device=None, seed: int = 0, progress: bool = True
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Attack every fine-tuned hard / soft fold model on the images it held out.

    The models are the alternatives section's (same :func:`finetune` call, so cached entries are
    reused; missing ones are trained through it). With several learning rates each
    architecture's hard and soft models are attacked at Table 1's one rate
    (:func:`_attacked_lr`). ``attack_subset`` caps the attacked images per fold model
    (stratified). Returns (FGSM table: arch, condition, fold, eps, accuracy, ce;
    PGD table: arch, condition, fold, eps, step, ce, final accuracy).
    """
    eps_list = [float(e) for e in adv_params["eps_sweep"]]
    fg_rows, pgd_rows = [], []
    for job in attack_jobs(cache, study, pre, alt_params, adv_params, device, seed, progress):
        # the model's weights are loaded only if the attack result is not cached (a bundle
        # exported without weights still renders the section from its attack results)
        att = cache.get_or_compute(job.kind, job.config, lambda j=job: j.run(
            cache.load(j.model_kind, j.model_config)))
        y, base = job.labels, job.base
        z = att.arrays["clean_logits"]
        fg_rows.append(dict(base, eps=0, accuracy=float((z.argmax(1) == y).mean()),
                            ce=metrics.cross_entropy_from_logits(z, y), n=len(y)))
        for i, e in enumerate(eps_list):
            z = att.arrays[f"fgsm_logits_{i}"]
            fg_rows.append(dict(base, eps=e, accuracy=float((z.argmax(1) == y).mean()),
                                ce=metrics.cross_entropy_from_logits(z, y), n=len(y)))
        for j, pe in enumerate(att.meta.get("pgd_eps", [])):
            if f"pgd_history_{j}" not in att.arrays:
                continue
            zp = att.arrays[f"pgd_logits_{j}"]
            yp = y[: len(zp)]
            acc = float((zp.argmax(1) == yp).mean())
            for step, ce in enumerate(att.arrays[f"pgd_history_{j}"]):
                pgd_rows.append(dict(base, eps=pe, step=step, ce=float(ce),
                                     final_accuracy=acc, n=len(yp)))
    return pd.DataFrame(fg_rows), pd.DataFrame(pgd_rows)


def table2(fg: pd.DataFrame, eps: float = 4) -> pd.DataFrame:
    """Table 2 of this run at ``eps`` (/255): accuracy and CE for hard / soft, mean and std over
    folds, next to the paper's row for the same architecture family."""
    sub = fg[fg.eps == eps]
    g = sub.groupby(["arch", "condition"])
    s = pd.DataFrame({"accuracy": g.accuracy.mean(), "accuracy std": g.accuracy.std(ddof=1),
                      "ce": g.ce.mean(), "ce std": g.ce.std(ddof=1), "folds": g.fold.nunique()})
    return s.unstack("condition")


def paper_vs_run_table2(fg: pd.DataFrame, archs: Sequence[Arch], eps: float = 4) -> pd.DataFrame:
    rows = []
    sub = fg[fg.eps == eps].groupby(["arch", "condition"])[["accuracy", "ce"]].mean()
    for a in archs:
        ref = PAPER_TABLE2.get(a.family)
        get = lambda c, m: sub[m].get((a.label, c), np.nan)  # noqa: E731
        rows.append({"arch": a.label, "paper row": a.family or "(none)",
                     "paper acc hard": ref[0] if ref else np.nan, "run acc hard": get("hard", "accuracy"),
                     "paper acc soft": ref[1] if ref else np.nan, "run acc soft": get("soft", "accuracy"),
                     "paper CE hard": ref[2] if ref else np.nan, "run CE hard": get("hard", "ce"),
                     "paper CE soft": ref[3] if ref else np.nan, "run CE soft": get("soft", "ce")})
    return pd.DataFrame(rows).set_index("arch")
