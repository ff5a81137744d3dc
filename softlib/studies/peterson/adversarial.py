"""Peterson et al. (2019), paper section 7 (book section 4): FGSM and PGD on section 3's fine-tuned
models (Table 2, Figure 4)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ... import figures as F
from ... import metrics
from ...cache import Entry, ResultCache
from ...train import TrainConfig, data_fingerprint, diverged_epoch, load_model
from .common import (Arch, PAPER_PGD_ACCURACY, PAPER_TABLE2, StudyData, fine_tuned_archs,
                     parse_archs, select_folds, stratified_subset)
from .alternatives import Pretrained, finetune, finetune_job, method_variants
from .generalisation import _best_candidates, paired_difference, paired_se


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
    """Per architecture: the paper's Table 2 row for its family (NaN where the paper has none)
    beside this run's mean accuracy and CE at FGSM ``eps`` (/255)."""
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


# --------------------------------------------------------------------------------------------
# Section 4's figures and tables (the notebook calls these and shows what they return)
# --------------------------------------------------------------------------------------------

#: run markers per attacked label type, in :data:`ATTACK_METHODS` order (colour: C0, C1)
_ATTACK_MARKERS = "o^"
_FGSM_QUESTIONS = {"accuracy": "Do human labels keep more accuracy under FGSM?",
                   "ce": "Are human-label models less confidently wrong under FGSM?"}
_AXIS_LABELS = {"accuracy": "accuracy vs CIFAR-10 labels (fraction)",
                "ce": "cross-entropy vs CIFAR-10 labels (nats)"}


def _arch_linestyles(archs: Sequence[Arch]) -> dict[str, str]:
    """Line style per architecture label (colour is kept for the label type)."""
    return dict(zip([a.label for a in archs], ["-", "--", ":", "-."] * 4))


def _run_label(prefix: str, arch: str, archs: Sequence[Arch]) -> str:
    """Legend text of one run line; names the architecture only when there are several."""
    return prefix + (f" ({arch})" if len(archs) > 1 else "")


def plot_fgsm_sweep(fg: pd.DataFrame, archs: Sequence[Arch], paper_eps: float = 4):
    """Accuracy (left) and cross-entropy (right) against the FGSM bound: a line per
    architecture and label type (mean over fold models, bars ±1 s.d.), and the paper's Table 2
    value for the architecture's family at ``paper_eps`` as hollow markers (none for a family
    the paper did not attack). ``fg``: :func:`run_adversarial`'s FGSM table. One legend under
    both panels, so that it hides no point."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    n_fold_models = int(fg.groupby(["arch", "condition", "eps"]).size().max())
    styles = _arch_linestyles(archs)
    paper_marker = dict(zip(dict.fromkeys(a.family for a in archs), "DsPX" * 4))
    for ax, metric in zip(axes, ["accuracy", "ce"]):
        for (arch, cond), g in fg.groupby(["arch", "condition"]):
            s = g.groupby("eps")[metric].agg(["mean", "std"])
            j = ATTACK_METHODS.index(cond)
            ax.errorbar(s.index, s["mean"], yerr=s["std"], marker=_ATTACK_MARKERS[j], capsize=3,
                        color=f"C{j}", linestyle=styles.get(arch, "-"),
                        label=_run_label(f"fine-tuned on {cond} labels", arch, archs))
        for a in archs:  # Table 2: (accuracy hard, accuracy soft, CE hard, CE soft)
            ref = PAPER_TABLE2.get(a.family)
            if ref is None:
                continue
            for j, cond in enumerate(ATTACK_METHODS):
                F.paper_marks(ax, paper_eps, ref[j if metric == "accuracy" else 2 + j],
                              color=f"C{j}", marker=paper_marker[a.family],
                              label=f"paper Table 2, {cond} ({a.family})")
        ax.set(xlabel="FGSM eps (pixel units /255; 0 = clean)", ylabel=_AXIS_LABELS[metric])
        F.question_title(ax, _FGSM_QUESTIONS[metric], "paper Table 2",
                         F.spread_note(n_fold_models, "fold models"))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))),
               fontsize=8, frameon=False)
    n_rows = int(np.ceil(len(labels) / 4))
    fig.tight_layout(rect=(0, 0.045 * n_rows + 0.01, 1, 1))
    return fig


def fgsm_sweep_table(fg: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over fold models of accuracy and cross-entropy, one row per architecture
    and FGSM bound (eps 0 = clean), the label types side by side."""
    return fg.groupby(["arch", "condition", "eps"])[["accuracy", "ce"]].agg(
        ["mean", "std"]).unstack("condition").rename(columns={"ce": "cross-entropy"}, level=0)


def fgsm_paired_differences(fg: pd.DataFrame) -> pd.DataFrame:
    """Soft minus hard within each fold, per architecture and FGSM bound, for accuracy and
    cross-entropy (:func:`paired_difference`; rows keyed by metric, arch, eps)."""
    frame = fg.rename(columns={"condition": "cond"})
    return pd.concat({m: paired_difference(frame, m, by=("arch", "eps"), col="cond")
                      for m in ["accuracy", "ce"]}, names=["metric"])


def plot_fgsm_differences(fg: pd.DataFrame, archs: Sequence[Arch], paper_eps: float = 4):
    """Soft minus hard within each fold under FGSM (:func:`fgsm_paired_differences`) against
    eps, accuracy and cross-entropy: a line per architecture with ±2 s.e. over fold models,
    and the paper's Table 2 soft - hard for the architecture's family at ``paper_eps`` as a
    hollow marker (none for a family the paper did not attack)."""
    import matplotlib.pyplot as plt

    paired = fgsm_paired_differences(fg)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    n_folds = 0
    for k, (ax, metric) in enumerate(zip(axes, ["accuracy", "ce"])):
        ax.axhline(0, color="k", lw=0.8)
        for i, a in enumerate(archs):
            if (metric, a.label) not in paired.index.droplevel("eps"):
                continue
            r = paired.loc[(metric, a.label)].sort_index()
            se = paired_se(r)
            n_folds = max(n_folds, int(r["folds"].max()))
            ax.errorbar(r.index, r["mean diff"], yerr=2 * se.fillna(0), marker="os^D"[i % 4],
                        capsize=3, color="C1", alpha=1 if i == 0 else 0.55,
                        ls="-" if i == 0 else "--", label=f"this run ({a.label})")
            ref = PAPER_TABLE2.get(a.family)
            if ref is not None:
                hard, soft = (ref[0], ref[1]) if metric == "accuracy" else (ref[2], ref[3])
                F.paper_marks(ax, [paper_eps], [soft - hard], color="k",
                              marker="DsPX"[i % 4], label=f"paper Table 2 ({a.family})")
        better = "above 0: soft better" if metric == "accuracy" else "below 0: soft better"
        ax.set(xlabel="FGSM eps (pixel units /255; 0 = clean)",
               ylabel="soft − hard, " + ("accuracy (fraction)" if k == 0
                                          else "cross-entropy (nats)"))
        F.question_title(ax, "Do human labels keep their edge as the attack grows?",
                         "paper Table 2", f"{better}; "
                         + F.spread_note(n_folds, "fold models", what="±2 s.e."))
        F.legend_unique(ax, fontsize=7)
    fig.tight_layout()
    return fig


def pgd_settings_text(pg: pd.DataFrame, step_size: float, steps: int) -> str:
    """Markdown describing the PGD attack of ``pg`` (its bounds, step size and iterations) and
    which bound the curve shows."""
    bounds = ", ".join(f"{e:g}" for e in sorted(pg["eps"].unique()))
    return (f"PGD with L-inf bounds **{bounds} (/255)**, step size **{step_size}/255**, "
            f"**{steps} iterations**, uniform random start in the eps-ball; cross-entropy "
            "against the CIFAR-10 labels, averaged over the attacked images (iteration 0 = the "
            "random start). The curve is drawn at the smallest bound, the table gives every "
            "bound.")


def plot_pgd_curves(pg: pd.DataFrame, archs: Sequence[Arch]):
    """Paper Figure 4: cross-entropy against PGD iteration at the smallest bound of ``pg``
    (:func:`run_adversarial`'s PGD table), a line per architecture and label type, mean over
    fold models with a band of ±1 s.d.; iterations on whole-number ticks."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    bound = min(pg["eps"].unique())
    styles = _arch_linestyles(archs)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (arch, cond), g in pg[pg["eps"] == bound].groupby(["arch", "condition"]):
        s = g.groupby("step")["ce"].agg(["mean", "std"])
        j = ATTACK_METHODS.index(cond)
        ax.plot(s.index, s["mean"], color=f"C{j}", marker=_ATTACK_MARKERS[j], ms=3,
                linestyle=styles.get(arch, "-"),
                label=_run_label(f"{cond} labels", arch, archs))
        ax.fill_between(s.index, s["mean"] - s["std"], s["mean"] + s["std"], color=f"C{j}",
                        alpha=0.2)
    ax.set(xlabel="PGD iteration (0 = random start)", ylabel=_AXIS_LABELS["ce"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    n = int(pg.groupby(["arch", "condition", "eps", "step"]).size().max())
    F.question_title(ax, "Does the human-label models' loss rise more slowly under PGD?",
                     f"paper Fig. 4; eps {bound:g}/255",
                     F.spread_note(n, "fold models", drawn="band"))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pgd_final_table(pg: pd.DataFrame) -> pd.DataFrame:
    """After the last PGD iteration, mean over fold models: cross-entropy and accuracy per
    architecture and label type, a column per bound ('eps 4/255', ...)."""
    last = pg[pg["step"] == pg["step"].max()]
    after = last.groupby(["arch", "condition", "eps"]).agg(
        **{"cross-entropy (nats)": ("ce", "mean"), "accuracy": ("final_accuracy", "mean")}
    ).unstack("eps")
    after.columns = pd.MultiIndex.from_tuples([(m, f"eps {e:g}/255") for m, e in after.columns])
    return after


def pgd_accuracy_vs_paper(pg: pd.DataFrame) -> pd.DataFrame:
    """Accuracy after PGD at the smallest bound, mean over fold models, beside the paper's
    (:data:`PAPER_PGD_ACCURACY`); NaN for a label type this run did not attack."""
    acc = pg[pg["eps"] == pg["eps"].min()].groupby("condition")["final_accuracy"].mean()
    return pd.DataFrame({"paper": PAPER_PGD_ACCURACY,
                         "this run": [acc.get(c, np.nan) for c in ATTACK_METHODS]},
                        index=[f"accuracy after PGD, {c}" for c in ATTACK_METHODS])


def fgsm_measured_text(fg: pd.DataFrame, archs: Sequence[Arch], eps: float) -> str:
    """Markdown: per architecture with both label types attacked, the mean accuracy and
    cross-entropy of the hard- and soft-label models at FGSM ``eps`` (/255)."""
    t2 = fg[fg.eps == eps].groupby(["arch", "condition"])[["accuracy", "ce"]].mean()
    lines = []
    for a in archs:
        if (a.label, "hard") in t2.index and (a.label, "soft") in t2.index:
            h, s = t2.loc[(a.label, "hard")], t2.loc[(a.label, "soft")]
            lines.append(f"- {a.label}, FGSM eps {eps}/255: accuracy hard {h.accuracy:.3f} vs "
                         f"soft {s.accuracy:.3f}; cross-entropy hard {h.ce:.2f} vs soft "
                         f"{s.ce:.2f}.")
    return "**What this run measured:**\n\n" + "\n".join(lines)
