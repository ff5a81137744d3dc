"""Peterson et al. (2019), paper section 6 (book section 3): pretraining on CIFAR-10, then fine-
tuning with human labels and their alternatives (Table 1)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from ... import figures as F
from ... import metrics
from ...cache import Entry, ResultCache, config_key
from ...multimodel import train_cached_many
from ...train import TrainConfig, TrainJob, data_fingerprint, diverged_epoch, train_cached
from .common import (Arch, EvalSets, PAPER_TABLE1, PAPER_TABLE1_ENSEMBLE_C10H, StudyData,
                     cap_train, fine_tuned_archs, heldout_monitor, load_shift_sets, parse_archs,
                     pretrain_config, scratch_config, select_folds, stratified_subset)
from .generalisation import (_best_candidates, _diverged, _fold_fingerprint, _run_divergence,
                             heldout_curve, heldout_curves_frame, paired_difference, paired_se,
                             probs_of)


# --------------------------------------------------------------------------------------------
# Section 3: pretraining on CIFAR-10, fine-tuning with alternative targets
# --------------------------------------------------------------------------------------------

#: Fine-tuning methods of Table 1, in the paper's order; mixup methods take an alpha.
METHODS = ("hard", "mixup_hard", "class_level", "distill", "soft", "sampled", "mixup_soft")
#: The targets that carry no per-image human information: the regularisers Peterson et al.
#: set human labels against ("are human distributions just a fancy regulariser?").
REGULARISERS = ("mixup_hard", "class_level", "distill")
METHOD_TITLES = {
    "pretrained": "pretrained on CIFAR-10 (no fine-tuning)",
    "hard": "fine-tune: CIFAR-10 hard labels (control)",
    "mixup_hard": "fine-tune: mixup on hard labels",
    "class_level": "fine-tune: class-level soft targets",
    "distill": "fine-tune: distillation (pretrained ensemble)",
    "soft": "fine-tune: human soft labels (CIFAR-10H)",
    "sampled": "fine-tune: sampled hard labels (redrawn each epoch)",
    "mixup_soft": "fine-tune: mixup on human labels",
}


def pretrain(cache: ResultCache, arch: Arch, params: Mapping, cifar_train, study: StudyData,
             device=None, seed: int = 0, progress: bool = True,
             eval_sets: Mapping[str, np.ndarray] | None = None) -> tuple[Entry, str]:
    """Pretrain ``arch`` on the CIFAR-10 training images with hard labels (cached); its logits on
    the 10,000 CIFAR-10H images are ``logits_cifar10h`` (and ``logits_<key>`` for each extra
    ``eval_sets`` entry, e.g. CIFAR-10.1). Returns the entry and its cache key."""
    job = pretrain_job(arch, params, cifar_train, study, seed, eval_sets)
    entry = train_cached(cache, "peterson_pretrain", job.config, job.data_fingerprint, None,
                         job.train_data, job.eval_sets, device=device, progress=progress)
    return entry, config_key("peterson_pretrain", job.key())


def _pretrain_config_of(arch: Arch, params: Mapping, seed: int) -> TrainConfig:
    """The pretraining configuration of ``arch`` under the section's ``params``."""
    return pretrain_config(arch, arch.param(params, "pretrain_epochs"), params["batch_size"], seed,
                           params.get("amp", "auto"), params.get("logits_precision", "float32"))


def pretrain_job(arch: Arch, params: Mapping, cifar_train, study: StudyData, seed: int = 0,
                 eval_sets: Mapping[str, np.ndarray] | None = None) -> TrainJob:
    """The training job of :func:`pretrain` (configuration, data, cache fingerprint)."""
    from ...data import views
    idx = stratified_subset(cifar_train.labels, params.get("pretrain_subset"), seed)
    cfg = _pretrain_config_of(arch, params, seed)
    y = cifar_train.labels[idx]
    fp = data_fingerprint(idx, y, provenance=f"peterson-pretrain|{cifar_train_id(cifar_train)}")
    return TrainJob(cfg, fp, (cifar_train.images[idx], views.one_hot(y, 10)),
                    {"cifar10h": study.images, **dict(eval_sets or {})})


_TRAIN_IDS: dict[int, str] = {}


def cifar_train_id(cifar_train) -> str:
    """Fingerprint of the CIFAR-10 training set (memoised per object: 150 MB to hash)."""
    key = id(cifar_train.images)
    if key not in _TRAIN_IDS:
        _TRAIN_IDS[key] = data_fingerprint(cifar_train.images[::97], cifar_train.labels,
                                           provenance=len(cifar_train.labels))
    return _TRAIN_IDS[key]


def finetune_targets(method: str, study: StudyData, train_idx: np.ndarray,
                     teacher_probs: np.ndarray | None = None) -> np.ndarray:
    """Fixed targets [N, 10] of a fine-tuning method (rows outside ``train_idx`` are unused).

    class_level: the human distributions summed within each CIFAR-10 class **of the training
    fold** and renormalised; distill: the pretrained ensemble's mean probabilities; sampled:
    the human distributions (the per-epoch draw is :func:`sampled_target_factory`)."""
    from ...data import views
    if method in ("hard", "mixup_hard"):
        return study.hard
    if method in ("soft", "mixup_soft", "sampled"):
        return study.human
    if method == "class_level":
        tr = np.asarray(train_idx)
        table = views.class_level_targets(study.human[tr], study.labels[tr])
        per_class = np.zeros((10, 10), np.float32)
        per_class[study.labels[tr]] = table
        out = per_class[study.labels]
        missing = np.setdiff1d(np.arange(10), study.labels[tr])
        if missing.size:  # a class absent from the fold (tiny smoke folds only): its one-hot
            out[np.isin(study.labels, missing)] = study.hard[np.isin(study.labels, missing)]
        return out
    if method == "distill":
        if teacher_probs is None:
            raise ValueError("finetune_targets('distill'): needs teacher_probs (the ensemble)")
        t = np.asarray(teacher_probs, dtype=np.float64)
        return (t / t.sum(1, keepdims=True)).astype(np.float32)
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")


def sampled_target_factory(human_train: np.ndarray) -> Callable:
    """A ``target_sampler(epoch, generator)`` drawing one hard label per image per epoch."""
    import torch
    from ...data import views

    def sampler(epoch: int, generator: "torch.Generator") -> np.ndarray:
        s = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator).item())
        return views.sample_hard_labels(human_train, np.random.default_rng(s))
    return sampler


@dataclass
class Pretrained:
    """The pretrained models of a profile: entries, configs and their (ensemble) predictions."""
    entries: dict[str, Entry]
    configs: dict[str, TrainConfig]
    ids: dict[str, str]

    def probs(self, label: str, key: str = "cifar10h") -> np.ndarray:
        return probs_of(self.entries[label].arrays[f"logits_{key}"])

    def ensemble_probs(self, key: str = "cifar10h") -> np.ndarray:
        return np.mean([self.probs(a, key) for a in self.entries], axis=0)


def run_pretraining(cache: ResultCache, study: StudyData, params: Mapping, cifar_train,
                    device=None, seed: int = 0, progress: bool = True,
                    extra: EvalSets | None = None) -> Pretrained:
    """Pretrain (or load) every architecture of the profile (``extra``: CIFAR-10.1 sets)."""
    entries, cfgs, ids = {}, {}, {}
    for arch in parse_archs(params["archs"]):
        entries[arch.label], ids[arch.label] = pretrain(
            cache, arch, params, cifar_train, study, device, seed, progress,
            extra.images if extra is not None else None)
        cfgs[arch.label] = _pretrain_config_of(arch, params, seed)
    return Pretrained(entries, cfgs, ids)


def finetune(cache: ResultCache, study: StudyData, pre: Pretrained, arch: Arch, method: str,
             lr: float, fold: int, folds: Sequence[tuple[np.ndarray, np.ndarray]], params: Mapping,
             alpha: float | None = None, eval_sets: Mapping[str, np.ndarray] | None = None,
             device=None, seed: int = 0, progress: bool = True) -> tuple[Entry, TrainConfig, str]:
    """One fine-tuned fold model of paper §6 (cached); section 4 calls this again to reload it.
    Returns the entry, its training configuration and its cache key.

    Starts from ``arch``'s pretrained weights; the cache key includes the pretrained model's
    identity, the method, the fold and (for mixup) ``alpha``. Distillation uses the ensemble of
    all pretrained models of ``pre``.
    """
    job, cfg, key = finetune_job(study, pre, arch, method, lr, fold, folds, params, alpha,
                                 eval_sets, seed)
    entry = train_cached(cache, "peterson_finetune", cfg, job.data_fingerprint, job.build_model,
                         job.train_data, job.eval_sets, val=job.val,
                         target_sampler=job.target_sampler, device=device, progress=progress)
    return entry, cfg, key


def finetune_job(study: StudyData, pre: Pretrained, arch: Arch, method: str, lr: float, fold: int,
                 folds: Sequence[tuple[np.ndarray, np.ndarray]], params: Mapping,
                 alpha: float | None = None, eval_sets: Mapping[str, np.ndarray] | None = None,
                 seed: int = 0) -> tuple[TrainJob, TrainConfig, str]:
    """The training job of :func:`finetune`, its configuration and its cache key."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    mixing = method.startswith("mixup")
    if mixing and alpha is None:
        raise ValueError(f"method {method!r} needs a mixup alpha")
    tr, te = folds[fold]
    tr = cap_train(tr, params.get("train_subset"), study.labels, seed + fold)
    teacher = pre.ensemble_probs() if method == "distill" else None
    targets = finetune_targets(method, study, tr, teacher)
    cfg = scratch_config(arch, lr, arch.param(params, "finetune_epochs"), params["batch_size"], seed,
                         mix="mixup" if mixing else "none", mix_alpha=alpha if mixing else 1.0,
                         amp=params.get("amp", "auto"), schedule=params.get("schedule", "cosine"),
                         logits_precision=params.get("logits_precision", "float32"))
    teacher_tag = "+".join(sorted(pre.ids.values())) if method == "distill" else ""
    tag = (f"peterson-finetune|{method}|from={pre.ids[arch.label]}|teacher={teacher_tag}|"
           f"{study.data_id}|fold{fold}")
    fp = _fold_fingerprint(tr, te, targets, tag)
    state = pre.entries[arch.label].state_dict

    def build_pretrained(config: TrainConfig):
        from ...models import build
        if state is None:  # only asked for when a fine-tuned model is not cached
            raise ValueError(
                f"alternatives: fine-tuning {arch.label} ({method}, fold {fold}) needs the "
                "pretrained model's weights, and its cache entry has none (imported from a "
                "results bundle, which leaves weights out unless exported with --with-weights "
                "alternatives). Run the section's pretraining and fine-tuning on one machine, "
                "or import a bundle with the pretrained weights (`export --pretrained-weights "
                f"'{arch.label}'` where it was pretrained)")
        model = build(config.arch, **config.arch_kwargs)
        model.load_state_dict(state)
        return model

    sampler = sampled_target_factory(study.human[tr]) if method == "sampled" else None
    sets = {"heldout": study.images[te], **dict(eval_sets or {})}
    job = TrainJob(cfg, fp, (study.images[tr], targets[tr]), sets, build_pretrained,
                   val=heldout_monitor(study, te, params), target_sampler=sampler)
    return job, cfg, config_key("peterson_finetune", {"train": cfg.to_dict(), "data": fp})


def method_variants(params: Mapping) -> list[tuple[str, float | None]]:
    """(method, alpha) pairs of a profile: every mixup method once per alpha of the grid."""
    out = []
    for m in METHODS:
        if m.startswith("mixup"):
            out += [(m, float(a)) for a in params["mixup_alpha"]]
        else:
            out.append((m, None))
    return out


@dataclass
class FinetuneRuns:
    folds: list[tuple[np.ndarray, np.ndarray]]
    logits: dict[tuple, np.ndarray]          # (arch, method, alpha, lr, fold) -> held-out logits
    seconds: dict[tuple, float]
    extra: dict[tuple, dict[str, np.ndarray]] = field(default_factory=dict)  # CIFAR-10.1 logits
    extra_labels: dict[str, np.ndarray] = field(default_factory=dict)
    diverged: dict[tuple, int | None] = field(default_factory=dict)  # key -> epoch (NaN / inf)
    heldout_curves: dict[tuple, list[float]] = field(default_factory=dict)  # see FoldRuns


def load_cifar10_1_sets(root=None) -> EvalSets:
    """CIFAR-10.1 v4 / v6 (Table 1's last columns) where present, else the reason."""
    full = load_shift_sets(None, root)
    out = EvalSets()
    for key in ("cifar10_1_v4", "cifar10_1_v6"):
        if key in full.images:
            out.add(key, full.titles[key], full.images[key], full.labels[key])
        else:
            out.unavailable[key] = full.unavailable[key]
    return out


def run_alternatives(cache: ResultCache, study: StudyData, pre: Pretrained, params: Mapping,
                     device=None, seed: int = 0, progress: bool = True,
                     methods: Sequence[tuple[str, float | None]] | None = None,
                     extra: EvalSets | None = None) -> FinetuneRuns:
    """Fine-tune (or load) every arch x method (x alpha) x lr x fold of paper §6; ``extra``
    (CIFAR-10.1) is predicted by every fold model.

    The fold models of one (arch, method, alpha, lr) train together on a GPU
    (``params['stack_models']``); 'sampled' fold models each redraw their own targets every
    epoch, as they would alone."""
    folds = select_folds(study.labels, params["folds"], 10, seed)
    extra = extra or EvalSets()
    logits, seconds, more, diverged, curves = {}, {}, {}, {}, {}
    for group in alternatives_jobs(study, pre, params, seed, methods, extra):
        entries = train_cached_many(cache, "peterson_finetune", [make() for _, make in group],
                                    device, progress, stack=params.get("stack_models", "auto"))
        for (key, _), e in zip(group, entries):
            logits[key] = e.arrays["logits_heldout"]
            seconds[key] = float(e.meta["result"]["seconds"])
            more[key] = {n: e.arrays[f"logits_{n}"] for n in extra.images}
            if (dv := diverged_epoch(e)) is not None:
                diverged[key] = dv
            if (curve := heldout_curve(e)) is not None:
                curves[key] = curve
    return FinetuneRuns(folds, logits, seconds, more, dict(extra.labels), diverged, curves)


def alternatives_jobs(study: StudyData, pre: Pretrained, params: Mapping, seed: int = 0,
                      methods: Sequence[tuple[str, float | None]] | None = None,
                      extra: EvalSets | None = None
                      ) -> Iterator[list[tuple[tuple, Callable[[], TrainJob]]]]:
    """Every fine-tuning job of paper §6, in groups of one (arch, method, alpha, lr) (the fold
    models that train together on a GPU), each keyed (arch label, method, alpha, lr, fold) and
    made when called."""
    folds = select_folds(study.labels, params["folds"], 10, seed)
    extra = extra or EvalSets()
    for arch in fine_tuned_archs(parse_archs(params["archs"])):
        for method, alpha in (methods or method_variants(params)):
            for lr in params["lr"]:
                yield [((arch.label, method, alpha, float(lr), k),
                        partial(_finetune_train_job, study, pre, arch, method, lr, k, folds,
                                params, alpha, extra.images, seed))
                       for k in range(len(folds))]


def _finetune_train_job(*args) -> TrainJob:
    return finetune_job(*args)[0]


ENSEMBLE = "ensemble of pretrained"


def alternatives_metrics(runs: FinetuneRuns, pre: Pretrained, study: StudyData) -> pd.DataFrame:
    """Long table per (arch, method, alpha, lr, fold): CE against humans (c10H) and the CIFAR-10
    labels (c10), accuracy and SBA on the held-out fold; the pretrained model and the
    pretrained ensemble (with more than one architecture) are scored on the same folds (lr and
    alpha NaN). A diverged run (``runs.diverged``, or NaN / inf predictions) gives a row with
    ``diverged`` True, its ``diverged_epoch`` and NaN metrics."""
    rows = []

    def ce(p, logits, t):
        # from logits where the model has them (nothing floored); an ensemble has only
        # its mean probabilities
        return (metrics.cross_entropy_from_logits(logits, t) if logits is not None
                else metrics.cross_entropy(p, t))

    def score(arch, method, alpha, lr, k, p, extra_probs, dv=(False, np.nan), logits=None,
              extra_logits=None):
        te = runs.folds[k][1]
        extra_logits = extra_logits or {}
        y, h = study.labels[te], study.human[te]
        row = {"arch": arch, "method": method, "alpha": alpha, "lr": lr, "fold": k}
        if dv[0] or not all(np.isfinite(q).all() for q in [p, *extra_probs.values()]):
            row.update(dict.fromkeys(("c10H", "c10", "accuracy", "sba", "v4", "v6"), np.nan),
                       diverged=True, diverged_epoch=dv[1])
            return row
        row.update({"c10H": ce(p, logits, h), "c10": ce(p, logits, y),
                    "accuracy": metrics.accuracy(p, y), "sba": metrics.second_best_accuracy(p, h)})
        for key, col in (("cifar10_1_v4", "v4"), ("cifar10_1_v6", "v6")):
            q = extra_probs.get(key)
            row[col] = (ce(q, extra_logits.get(key), runs.extra_labels[key]) if q is not None
                        else np.nan)
        row.update(diverged=False, diverged_epoch=np.nan)
        return row

    for key, lg in runs.logits.items():
        dv = _run_divergence(runs, key, [lg, *runs.extra.get(key, {}).values()])
        if dv[0]:
            rows.append(score(*key, None, {}, dv))
            continue
        exl = runs.extra.get(key, {})
        rows.append(score(*key, probs_of(lg), {n: probs_of(v) for n, v in exl.items()},
                          logits=lg, extra_logits=exl))
    present = list(runs.extra_labels)
    for k, (_, te) in enumerate(runs.folds):
        for arch in pre.entries:
            ex = {n: pre.probs(arch, n) for n in present}
            exl = {n: pre.entries[arch].arrays[f"logits_{n}"] for n in present}
            rows.append(score(arch, "pretrained", np.nan, np.nan, k, pre.probs(arch)[te], ex,
                              logits=pre.entries[arch].arrays["logits_cifar10h"][te],
                              extra_logits=exl))
        if len(pre.entries) > 1:
            ex = {n: pre.ensemble_probs(n) for n in present}
            rows.append(score(ENSEMBLE, "pretrained", np.nan, np.nan, k,
                              pre.ensemble_probs()[te], ex))
    return pd.DataFrame(rows)


def select_variants(df: pd.DataFrame, by: str = "c10H", lr_by: str = "accuracy") -> pd.DataFrame:
    """Per architecture ONE fine-tuning learning rate shared by every method: the one with the
    best mean held-out ``lr_by`` (default: accuracy against the CIFAR-10 labels) over all
    methods together, so no method's comparison rests on a rate tuned for it; then per (arch,
    method) the mixup alpha with the lowest mean held-out ``by`` at that rate (the paper
    searched alpha the same way; optimistic, and nothing is selected for one-point grids).
    Diverged runs take no part, as in :func:`select_lr`."""
    d = df.copy()
    d["_a"] = d["alpha"].fillna(-1.0)
    d["_l"] = d["lr"].fillna(-1.0)
    tuned = d[d["lr"].notna()]
    keep_lr = _best_candidates(tuned, ["arch"], ["_l"], lr_by, lr_by in ("accuracy", "sba"))
    d = d[[(a, l) in keep_lr or l == -1.0 for a, l in zip(d.arch, d._l)]]
    keep = _best_candidates(d, ["arch", "method"], ["_a", "_l"], by, False)
    mask = [(a, m, x, l) in keep for a, m, x, l in zip(d.arch, d.method, d._a, d._l)]
    return d[mask].drop(columns=["_a", "_l"])


def table1(df: pd.DataFrame) -> pd.DataFrame:
    """Table 1 of this run: mean (and std over folds) per (arch, method) of c10H, c10, v4, v6
    (CE on CIFAR-10.1; NaN where its images are absent) and accuracy.

    ``folds`` counts the folds with results; when a run diverged, ``diverged folds`` counts the
    others and ``status`` says 'diverged' (every fold: metrics NaN) or 'k of n folds diverged'."""
    sel = select_variants(df)
    sel = sel.assign(_ok=~_diverged(sel))
    order = {m: i for i, m in enumerate(("pretrained",) + METHODS)}
    g = sel.groupby(["arch", "method"])
    out = pd.DataFrame({
        "c10H": g["c10H"].mean(), "c10H std": g["c10H"].std(ddof=1),
        "c10": g["c10"].mean(), "c10 std": g["c10"].std(ddof=1),
        "accuracy": g["accuracy"].mean(), "accuracy std": g["accuracy"].std(ddof=1),
        "v4": g["v4"].mean(), "v6": g["v6"].mean(),
        "alpha": g["alpha"].first(), "lr": g["lr"].first(),
        "folds": sel[sel._ok].groupby(["arch", "method"])["fold"].nunique()})
    out["folds"] = out["folds"].fillna(0).astype(int)
    n_div = sel[~sel._ok].groupby(["arch", "method"])["fold"].nunique()
    if len(n_div):
        out["diverged folds"] = n_div.reindex(out.index).fillna(0).astype(int)
        out["status"] = [("ok" if d == 0 else "diverged" if f == 0
                          else f"{d} of {d + f} folds diverged")
                         for d, f in zip(out["diverged folds"], out["folds"])]
    out = out.reset_index()
    out["_o"] = out["method"].map(order)
    return out.sort_values(["arch", "_o"]).drop(columns="_o").set_index(["arch", "method"])


def paper_vs_run_table1(t1: pd.DataFrame, archs: Sequence[Arch]) -> pd.DataFrame:
    """Each transcribed paper Table 1 cell next to this run's value for the same family."""
    rows = []
    fam_of = {a.label: a.family for a in archs}
    teacher = distill_teacher_row(t1, archs)[0]
    ens = (teacher, f"ensemble of {len(archs)} pretrained models" if teacher == ENSEMBLE
           else f"single pretrained model ({archs[0].label}); paper: ensemble of 8")
    for (arch, method), r in t1.iterrows():
        fam = fam_of.get(arch)
        ref = PAPER_TABLE1.get((fam, method))
        if (arch, method) == (ens[0], "pretrained"):
            rows.append({"arch": ens[1], "method": "distillation teacher (c10H only)",
                         "paper c10H": PAPER_TABLE1_ENSEMBLE_C10H, "run c10H": r["c10H"],
                         "paper c10": np.nan, "run c10": r["c10"]})
        if arch == ENSEMBLE:
            continue
        if ref is None:
            continue
        rows.append({"arch": f"{arch} (paper: {fam})", "method": method,
                     "paper c10H": ref[0], "run c10H": r["c10H"], "paper c10": ref[1],
                     "run c10": r["c10"], "paper v4": ref[2], "run v4": r["v4"],
                     "paper v6": ref[3], "run v6": r["v6"]})
    return pd.DataFrame(rows)


def figure1_examples(human: np.ndarray, model: np.ndarray, n: int = 6,
                     min_human_doubt: float = 0.2) -> pd.DataFrame:
    """Paper Figure 1: images on which humans and a CNN trained on hard labels agree on the top
    class but differ over the other choices.

    Among images where both put their highest probability on the same class and humans give
    the other classes at least ``min_human_doubt`` of their mass, the ``n`` whose distributions
    over the other nine classes (each renormalised) differ most in total variation. Returns one
    row per image: index, shared top class, human / model second choice, the two distances."""
    human, model = np.asarray(human, dtype=np.float64), np.asarray(model, dtype=np.float64)
    if human.shape != model.shape or human.ndim != 2:
        raise ValueError(f"figure1_examples: human {human.shape} and model {model.shape} must be "
                         "the same [N, C] shape")
    top = human.argmax(1)
    rows = np.arange(len(human))
    doubt = 1.0 - human[rows, top]
    keep = (model.argmax(1) == top) & (doubt >= min_human_doubt)
    rest_h, rest_m = human.copy(), model.copy()
    rest_h[rows, top] = rest_m[rows, top] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        rest_h /= rest_h.sum(1, keepdims=True)
        rest_m /= rest_m.sum(1, keepdims=True)
    tv = 0.5 * np.abs(rest_h - rest_m).sum(1)
    keep &= np.isfinite(tv)
    idx = rows[keep][np.argsort(-tv[keep], kind="stable")][: int(n)]
    return pd.DataFrame({"index": idx, "top class": top[idx],
                         "human 2nd": rest_h[idx].argmax(1), "model 2nd": rest_m[idx].argmax(1),
                         "human mass off top": doubt[idx], "model mass off top":
                         1.0 - model[idx, top[idx]], "other-choice TV": tv[idx]})


def regulariser_answers(selected: pd.DataFrame, level: float = 0.95) -> list[str]:
    """Section 3's question, answered per architecture from ``selected`` (one variant per
    method, :func:`select_variants`): is soft-label fine-tuning better on c10H than the best of
    the :data:`REGULARISERS`, paired by fold? "Better" when the Student-t interval of the
    per-fold difference excludes 0 (:func:`softlib.intervals.confidence_interval`, the claims
    ledger's rule); one sentence per architecture."""
    from ...intervals import confidence_interval
    out = []
    for arch, sub in selected.groupby("arch", sort=False):
        means = sub.groupby("method")["c10H"].mean()
        regs = [m for m in REGULARISERS if m in means.index and np.isfinite(means[m])]
        if "soft" not in means.index or not regs:
            continue
        best = min(regs, key=lambda m: means[m])
        d = paired_difference(sub, "c10H", a="soft", b=best, by=("arch",), col="method")
        if d.empty or not d["folds"].iloc[0]:
            continue
        mean, sd, n = (float(d[c].iloc[0]) for c in ("mean diff", "std over folds", "folds"))
        n = int(n)
        head = (f"{arch}: soft labels reach c10H {means['soft']:.3f} nats, the best target "
                f"without per-image human labels ({best}) {means[best]:.3f}; soft - {best} = "
                f"{mean:+.3f} nats per fold")
        ci = confidence_interval(mean, sd / np.sqrt(n), n, level)
        if ci is None:  # one fold, or every fold the same: no noise estimate
            out.append(head + f" ({n} fold{'s' if n != 1 else ''}, no noise estimate): this run "
                       "cannot tell.")
            continue
        lo, hi = ci
        verdict = ("more than a regulariser here: soft labels fit the humans better, beyond "
                   "fold-to-fold noise" if hi < 0 else
                   "here the regulariser fits the humans better, beyond fold-to-fold noise"
                   if lo > 0 else "not told apart from the regulariser at this budget")
        out.append(head + f" (95% interval {lo:+.3f} to {hi:+.3f}, {n} folds): {verdict}.")
    return out


# --------------------------------------------------------------------------------------------
# Section 3's tables and figures (the notebook calls these and shows what they return)
# --------------------------------------------------------------------------------------------

#: Fine-tuning targets built from each image's own human labels (orange in the Table 1 figure).
HUMAN_TARGET_METHODS = ("soft", "sampled", "mixup_soft")


def alternatives_pretrained_table(pre: Pretrained, archs: Sequence[Arch], study: StudyData,
                                  pretrain_subset: int | None, n_train: int) -> pd.DataFrame:
    """One row per pretrained architecture: how many CIFAR-10 training images it saw (the whole
    ``n_train`` when ``pretrain_subset`` is None), its epochs and training time, and its accuracy
    on the 10,000 CIFAR-10H images (the "pretrained" row of Table 1, before fine-tuning)."""
    n_images = n_train if pretrain_subset is None else min(int(pretrain_subset), int(n_train))
    rows = []
    for a in archs:
        result = pre.entries[a.label].meta["result"]
        rows.append({"arch": a.label, "pretraining images": n_images,
                     "epochs": int(result["epochs_run"]),
                     "training seconds": int(round(result["seconds"])),
                     "accuracy on the 10,000 CIFAR-10H images":
                         float((pre.probs(a.label).argmax(1) == study.labels).mean())})
    return pd.DataFrame(rows).set_index("arch")


def figure1_table(examples: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """:func:`figure1_examples` for reading: the class ids (top class, second choices) as names
    and the image index as an ``image`` label, written as in the figure ("6148", not "6,148")."""
    named = examples.assign(**{c: examples[c].map(lambda k: classes[int(k)])
                               for c in ("top class", "human 2nd", "model 2nd")})
    named["index"] = named["index"].astype(int).astype(str)
    return named.rename(columns={"index": "image"})


def plot_alternatives_figure1(images: np.ndarray, human: np.ndarray, model_probs: np.ndarray,
                              examples: pd.DataFrame, model_label: str,
                              classes: Sequence[str]):
    """Paper Figure 1 redrawn: one row per image of :func:`figure1_examples`, the image beside
    paired bars of the human distribution and the pretrained model's prediction over
    ``classes``, so the reader sees where the two part beyond their shared top class."""
    import matplotlib.pyplot as plt

    n = len(examples)
    fig, axes = plt.subplots(max(1, n), 2, figsize=(9, 1.9 * max(1, n)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 4]})
    title_ax = axes[0, 1]
    if not n:
        axes[0, 0].set_axis_off()
        title_ax.text(0.5, 0.5, "no image where humans and the model agree on the top class\n"
                      "and humans leave enough mass on the others", ha="center", va="center",
                      transform=title_ax.transAxes, fontsize=9)
        title_ax.set_axis_off()
    x = np.arange(len(classes))
    for j, (row, i) in enumerate(zip(axes, examples["index"].astype(int))):
        row[0].imshow(images[i])
        row[0].set_axis_off()
        row[0].set_title(f"image {i}", fontsize=8)
        row[1].bar(x - 0.2, human[i], 0.4, label="humans (CIFAR-10H)", color="C1")
        row[1].bar(x + 0.2, model_probs[i], 0.4,
                   label=f"{model_label}, pretrained (hard labels)", color="C7")
        row[1].set_xticks(x, list(classes) if j == n - 1 else [""] * len(classes), fontsize=7)
        row[1].set_ylabel("probability", fontsize=8)
    if n:
        title_ax.legend(fontsize=7)
    F.question_title(title_ax, "Do people and the CNN agree beyond the top guess?",
                     "paper Fig. 1")
    fig.tight_layout()
    return fig


def table1_heldout_curves(runs: FinetuneRuns, df: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch held-out curves (:func:`heldout_curves_frame`) of the variants Table 1
    shows: per (arch, method) the learning rate and mixup alpha :func:`table1` selected.
    Empty when the runs recorded no curve."""
    curves = heldout_curves_frame(runs)
    if not len(curves):
        return curves
    shown = table1(df)[["alpha", "lr"]].reset_index()
    curves = curves.merge(shown, on=["arch", "method", "lr"], suffixes=("", "_t1"))
    a, b = curves.alpha.astype(float), curves.alpha_t1.astype(float)
    return curves[(a.isna() & b.isna()) | np.isclose(a, b)]


def plot_alternatives_heldout_curves(curves: pd.DataFrame):
    """Mean held-out CE vs humans per epoch, a line per (arch, method) with a ±1 s.d. band over
    folds and a triangle at the best epoch (:func:`softlib.figures.heldout_curves`); epochs
    are ticked as whole numbers."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 3.8))
    F.heldout_curves(ax, curves, ["arch", "method"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    F.question_title(ax, "Does fine-tuning still improve the held-out fit at the last epoch?",
                     "paper §6: 150 epochs", F.spread_note(curves.fold.nunique(), drawn="bands"))
    F.legend_unique(ax, fontsize=7)
    fig.tight_layout()
    return fig


def table1_styled(t1: pd.DataFrame):
    """Table 1 of this run (:func:`table1`) for reading: one row per (arch, method title),
    "mean ± std" over folds with three decimals as in the paper for c10H, c10 and accuracy,
    v4 / v6, and the selected alpha and lr with three significant digits; n/a for missing."""
    def pm(col: str) -> list[str]:
        return [("n/a" if not np.isfinite(m) else f"{m:.3f}" if not np.isfinite(sd)
                 else f"{m:.3f} ± {sd:.3f}") for m, sd in zip(t1[col], t1[f"{col} std"])]

    arch = t1.index.get_level_values("arch")
    method = [METHOD_TITLES.get(m, m) for m in t1.index.get_level_values("method")]
    out = pd.DataFrame({"c10H": pm("c10H"), "c10": pm("c10"), "accuracy": pm("accuracy"),
                        **{c: t1[c].to_numpy() for c in ("v4", "v6", "alpha", "lr", "folds")
                           if c in t1}},
                       index=pd.MultiIndex.from_arrays([arch, method], names=["arch", "method"]))
    fmt = {c: "{:.3f}" for c in ("v4", "v6") if c in out}
    fmt.update({c: F.sig for c in ("alpha", "lr", "folds") if c in out})
    return out.style.format(fmt, na_rep="n/a").set_caption(
        "held-out folds: c10H, c10, v4, v6 cross-entropy (nats), accuracy (fraction); "
        "mean ± std over folds")


def distill_teacher_row(t1: pd.DataFrame, archs: Sequence[Arch]) -> tuple[str, str]:
    """Table 1's row of the distillation teacher: the pretrained ensemble where there is one
    (several architectures), else the first architecture's pretrained model."""
    return (ENSEMBLE if (ENSEMBLE, "pretrained") in t1.index else archs[0].label, "pretrained")


def plot_table1_bars(t1: pd.DataFrame, archs: Sequence[Arch]):
    """Table 1 as two bar panels (c10H, c10), one bar per (arch, method) with ±1 s.d. over folds:
    grey the pretrained model, orange targets from each image's human labels, blue the others;
    hollow diamonds the paper's cells for the same family (squares: its distillation teacher).
    One legend below both panels, so it covers no bar."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 2, figsize=(11, 0.55 * len(t1) + 2.2), sharey=True)
    y = np.arange(len(t1))
    fam_of = {a.label: a.family for a in archs}
    teacher = distill_teacher_row(t1, archs)
    colours = ["C7" if m == "pretrained" else "C1" if m in HUMAN_TARGET_METHODS else "C0"
               for _, m in t1.index]
    handles: dict[str, object] = {}
    for k, (ax, col) in enumerate(zip(axes, ["c10H", "c10"])):
        ax.barh(y, t1[col], xerr=t1[f"{col} std"].fillna(0), capsize=3, color=colours)
        ref = [PAPER_TABLE1.get((fam_of.get(a), m), (np.nan,) * 4)[k] for a, m in t1.index]
        F.paper_marks(ax, ref, y,
                      label="paper Table 1 (same family: ResNet-110 / DenseNet-BC-100)")
        if col == "c10H" and teacher in t1.index:
            F.paper_marks(ax, PAPER_TABLE1_ENSEMBLE_C10H, y[t1.index.get_loc(teacher)],
                          marker="s", label="paper: distillation teacher, ensemble of 8 "
                                            "pretrained CNNs")
        ax.set(xlabel=f"{col}: CE vs {'human' if col == 'c10H' else 'CIFAR-10'} labels "
                      "(nats, lower is better)")
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    for colour, lab in (("C7", "pretrained, not fine-tuned"),
                        ("C1", "each image's human labels"), ("C0", "other targets")):
        handles[lab] = Patch(color=colour, label=lab)
    spread = F.spread_note(int(t1["folds"].max()) if len(t1) else 0)
    F.question_title(axes[0], "Do human labels beat the other targets on human-label loss?",
                     note="paper Table 1, c10H; " + spread)
    F.question_title(axes[1], "... and do they cost anything on the CIFAR-10 labels?",
                     note="paper Table 1, c10; " + spread)
    axes[0].set_yticks(y, [f"{m} ({a})" if len(archs) > 1 else m for a, m in t1.index])
    axes[0].invert_yaxis()
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=3, fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    return fig


def mixup_grid_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every mixup grid point (arch, method, alpha, lr): mean and std over folds of the held-out
    c10H, c10 and accuracy."""
    mix = df[df.method.str.startswith("mixup")]
    return mix.groupby(["arch", "method", "alpha", "lr"])[["c10H", "c10", "accuracy"]].agg(
        ["mean", "std"])


def paired_vs_hard_table(df: pd.DataFrame) -> pd.DataFrame:
    """Each fine-tuning method minus the hard-label control on the same fold, for c10H, c10 and
    accuracy, on the variants :func:`select_variants` picks (:func:`paired_difference`)."""
    sel = select_variants(df[df.method != "pretrained"])
    return pd.concat({(m, meth): paired_difference(sel, m, a=meth, b="hard", by=("arch",),
                                                   col="method")
                      for m in ["c10H", "c10", "accuracy"] for meth in METHODS if meth != "hard"},
                     names=["metric", "method minus hard"])


def plot_methods_vs_hard(paired: pd.DataFrame, archs: Sequence[Arch]):
    """Each fine-tuning method minus the hard-label control on the same fold
    (:func:`paired_vs_hard_table`): a panel per metric (c10H, c10, accuracy), a row per
    method (orange: targets from each image's human labels), a point per architecture with
    ±2 s.e. over folds, and the paper's Table 1 difference for the same family as a hollow
    diamond where both of its cells are typed in."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    methods = [m for m in METHODS if m != "hard"]
    y = np.arange(len(methods))
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.45 * len(methods) + 2.2), sharey=True)
    n_folds = 0
    for k, (ax, metric) in enumerate(zip(axes, ["c10H", "c10", "accuracy"])):
        ax.axvline(0, color="k", lw=0.8)
        for i, a in enumerate(archs):
            vals, errs = [], []
            for meth in methods:
                key = (metric, meth, a.label)
                r = paired.loc[key] if key in paired.index else None
                vals.append(np.nan if r is None else r["mean diff"])
                se = np.nan if r is None else paired_se(r)
                errs.append(2 * se if np.isfinite(se) else 0)
                if r is not None:
                    n_folds = max(n_folds, int(r["folds"]))
            off = y + (i - (len(archs) - 1) / 2) * 0.2
            for j, meth in enumerate(methods):
                colour = "C1" if meth in HUMAN_TARGET_METHODS else "C0"
                ax.errorbar(vals[j], off[j], xerr=errs[j], fmt="os^D"[i % 4], capsize=2,
                            color=colour, alpha=1 if i == 0 else 0.55)
            if k < 2:  # the paper's Table 1 has cross-entropies only
                ref = [PAPER_TABLE1[(a.family, m)][k] - PAPER_TABLE1[(a.family, "hard")][k]
                       if (a.family, m) in PAPER_TABLE1 and (a.family, "hard") in PAPER_TABLE1
                       else np.nan for m in methods]
                F.paper_marks(ax, ref, off, color="k",
                              label=f"paper Table 1 ({a.family}: same family)")
        better = "left of 0" if metric != "accuracy" else "right of 0"
        unit = "nats" if metric != "accuracy" else "fraction"
        ax.set(xlabel=f"method − hard, {metric} ({unit})")
        ax.set_title(f"{metric}: better than hard {better}", fontsize=9)
    axes[0].set_yticks(y, [METHOD_TITLES.get(m, m).replace("fine-tune: ", "") for m in methods],
                       fontsize=8)
    axes[0].set_ylim(len(methods) - 0.5, -0.5)
    handles = [Line2D([], [], marker="os^D"[i % 4], color="0.3", ls="none",
                      alpha=1 if i == 0 else 0.55, label=f"this run ({a.label})")
               for i, a in enumerate(archs)]
    handles += [Patch(color="C1", label="targets from each image's human labels"),
                Patch(color="C0", label="other targets")]
    handles += [h for h, lab in zip(*axes[0].get_legend_handles_labels())
                if lab.startswith("paper")][:1]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False)
    fig.suptitle("Which fine-tuning targets beat the hard labels, fold by fold? (paper Table 1)"
                 "\n" + F.spread_note(n_folds, what="±2 s.e."), fontsize=10)
    fig.tight_layout(rect=(0, 0.45 / fig.get_figheight(), 1, 1))
    return fig


def table1_c10h_ranking(t1: pd.DataFrame, archs: Sequence[Arch]) -> list[str]:
    """One sentence per architecture with a hard-label control: its Table 1 rows ranked by c10H
    (lowest first) and the control's value."""
    lines = []
    for a in archs:
        if (a.label, "hard") not in t1.index:
            continue
        base = t1.loc[(a.label, "hard"), "c10H"]
        ranked = t1.loc[a.label]["c10H"].sort_values()
        lines.append(f"{a.label}: c10H ranking (lowest first): "
                     + ", ".join(f"{m} {v:.3f}" for m, v in ranked.items())
                     + f"; the hard-label control is at {base:.3f}.")
    return lines
