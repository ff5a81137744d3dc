"""Peterson et al. (2019), paper section 5 (book section 2): training from scratch on CIFAR-10H,
evaluated under growing distribution shift."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import softmax

from ... import metrics
from ...cache import Entry, ResultCache
from ...multimodel import train_cached_many
from ...train import TrainJob, data_fingerprint, diverged_epoch, train_cached
from .common import (Arch, EvalSets, PAPER_FIG2, PAPER_FIG2_SBA_GAIN, SHIFT_SETS, StudyData,
                     cap_train, heldout_monitor, parse_archs, scratch_config, select_folds)


# --------------------------------------------------------------------------------------------
# Section 2: training from scratch on CIFAR-10H
# --------------------------------------------------------------------------------------------

CONDITIONS = ("hard", "soft")


def _fold_fingerprint(train_idx, test_idx, targets, tag: str) -> str:
    return data_fingerprint(np.asarray(train_idx), np.asarray(test_idx), targets, provenance=tag)


def train_scratch(cache: ResultCache, study: StudyData, arch: Arch, condition: str, lr: float,
                  fold: int, folds: Sequence[tuple[np.ndarray, np.ndarray]], params: Mapping,
                  eval_sets: Mapping[str, np.ndarray] | None = None, device=None, seed: int = 0,
                  progress: bool = True) -> Entry:
    """One fold model of paper §5 (cached): ``condition`` 'hard' (CIFAR-10 labels) or 'soft'
    (CIFAR-10H distributions). Logits on the held-out fold are ``logits_heldout``."""
    job = scratch_job(study, arch, condition, lr, fold, folds, params, eval_sets, seed)
    return train_cached(cache, "peterson_scratch", job.config, job.data_fingerprint, None,
                        job.train_data, job.eval_sets, val=job.val, device=device,
                        progress=progress)


def scratch_job(study: StudyData, arch: Arch, condition: str, lr: float, fold: int,
                folds: Sequence[tuple[np.ndarray, np.ndarray]], params: Mapping,
                eval_sets: Mapping[str, np.ndarray] | None = None, seed: int = 0) -> TrainJob:
    """The training job (configuration, data, cache fingerprint) of :func:`train_scratch`."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition: expected one of {CONDITIONS}, got {condition!r}")
    tr, te = folds[fold]
    tr = cap_train(tr, params.get("train_subset"), study.labels, seed + fold)
    targets = study.hard if condition == "hard" else study.human
    cfg = scratch_config(arch, lr, arch.param(params, "epochs"), params["batch_size"], seed,
                         amp=params.get("amp", "auto"), schedule=params.get("schedule", "cosine"),
                         logits_precision=params.get("logits_precision", "float32"))
    fp = _fold_fingerprint(tr, te, targets, f"peterson-scratch|{condition}|{study.data_id}|fold{fold}")
    sets = {"heldout": study.images[te], **dict(eval_sets or {})}
    return TrainJob(cfg, fp, (study.images[tr], targets[tr]), sets,
                    val=heldout_monitor(study, te, params))


@dataclass
class FoldRuns:
    """Held-out and shift-set logits of every (arch, condition, lr, fold) run; ``diverged``:
    the runs whose loss or weights became NaN / inf -> the epoch it happened (their logits may
    be NaN; they are results, shown as diverged, never scored)."""
    folds: list[tuple[np.ndarray, np.ndarray]]
    logits: dict[tuple[str, str, float, int], dict[str, np.ndarray]]
    seconds: dict[tuple[str, str, float, int], float]
    diverged: dict[tuple[str, str, float, int], int | None] = field(default_factory=dict)
    #: held-out CE vs the human labels after every epoch, where the run monitored it
    #: (``heldout_per_epoch``); runs cached without it are absent
    heldout_curves: dict[tuple[str, str, float, int], list[float]] = field(default_factory=dict)


def run_key_names(runs) -> list[str]:
    """The fields of a run's key: (arch, condition, lr, fold) for a :class:`FoldRuns`,
    (arch, method, alpha, lr, fold) for section 3's ``FinetuneRuns``."""
    return (["arch", "condition", "lr", "fold"] if isinstance(runs, FoldRuns)
            else ["arch", "method", "alpha", "lr", "fold"])


def heldout_curve(entry: Entry) -> list[float] | None:
    """The per-epoch held-out CE vs humans a run recorded (its ``val_loss``), or None."""
    curve = ((entry.meta.get("result") or {}).get("history") or {}).get("val_loss")
    return [float(v) for v in curve] if curve else None


def heldout_epochs_table(runs) -> pd.DataFrame:
    """Final epoch vs best epoch on the held-out fold, per configuration (all key fields but the
    fold): mean held-out CE vs humans at the last epoch and at each run's best epoch, the mean
    best epoch, and how many folds recorded a curve. The best epoch is chosen on the held-out
    images themselves, so its CE is an optimistic bound (what early stopping on a separate
    validation split could at most gain), never a result to compare with the paper's."""
    names = run_key_names(runs)[:-1]
    rows = []
    for key, curve in runs.heldout_curves.items():
        c = np.asarray(curve, dtype=float)
        if not len(c) or not np.isfinite(c).any() or key in (runs.diverged or {}):
            continue
        best = int(np.nanargmin(c))
        rows.append(dict(zip(names, key[:-1]), fold=key[-1], epochs=len(c), final_ce=c[-1],
                         best_ce=c[best], best_epoch=best + 1))
    cols = names + ["epochs", "final c10H CE", "best-epoch c10H CE", "best epoch", "folds"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    g = df.groupby(names, dropna=False, sort=False)
    out = pd.DataFrame({"epochs": g.epochs.max(), "final c10H CE": g.final_ce.mean(),
                        "best-epoch c10H CE": g.best_ce.mean(), "best epoch": g.best_epoch.mean(),
                        "folds": g.fold.nunique()}).reset_index()
    return out[cols]


def heldout_curves_frame(runs) -> pd.DataFrame:
    """Long table of the recorded curves (one row per run and epoch) for plotting."""
    names = run_key_names(runs)
    rows = [dict(zip(names, key), epoch=i + 1, ce=float(v))
            for key, curve in runs.heldout_curves.items() if key not in (runs.diverged or {})
            for i, v in enumerate(curve)]
    return pd.DataFrame(rows, columns=names + ["epoch", "ce"])


def run_generalisation(cache: ResultCache, study: StudyData, params: Mapping, shift: EvalSets,
                       device=None, seed: int = 0, progress: bool = True) -> FoldRuns:
    """Train (or load) every arch x condition x lr x fold of paper §5 and collect logits.

    The fold models of one (arch, lr), both conditions, train together on a GPU
    (``params['stack_models']``: 'auto', True or False; see :func:`softlib.multimodel.train_cached_many`)."""
    folds = select_folds(study.labels, params["folds"], 10, seed)
    logits, seconds, diverged, curves = {}, {}, {}, {}
    for group in generalisation_jobs(study, params, shift, seed):
        entries = train_cached_many(cache, "peterson_scratch", [make() for _, make in group],
                                    device, progress, stack=params.get("stack_models", "auto"))
        for (key, _), e in zip(group, entries):
            logits[key] = {n[len("logits_"):]: v for n, v in e.arrays.items()
                           if n.startswith("logits_")}
            seconds[key] = float(e.meta["result"]["seconds"])
            if (dv := diverged_epoch(e)) is not None:
                diverged[key] = dv
            if (curve := heldout_curve(e)) is not None:
                curves[key] = curve
    return FoldRuns(folds, logits, seconds, diverged, curves)


def generalisation_jobs(study: StudyData, params: Mapping, shift: EvalSets, seed: int = 0
                        ) -> Iterator[list[tuple[tuple[str, str, float, int],
                                                 Callable[[], TrainJob]]]]:
    """Every training job of paper §5, in groups of one (arch, lr): the fold models of both
    conditions, which train together on a GPU (hard and soft labels are only their targets; on
    an H200 20 stacked ResNet-20s ran 59,000 img/s against 47,800 for 10). Each job is keyed
    (arch label, condition, lr, fold) and made when called (its training images are a copy: a
    whole grid of them would not fit memory)."""
    folds = select_folds(study.labels, params["folds"], 10, seed)
    for arch in parse_archs(params["archs"]):
        for lr in params["lr"]:
            yield [((arch.label, cond, float(lr), k),
                    partial(scratch_job, study, arch, cond, lr, k, folds, params,
                            shift.images, seed))
                   for cond in CONDITIONS for k in range(len(folds))]


def probs_of(logits: np.ndarray) -> np.ndarray:
    """Softmax in float64 (rows sum to 1 within metrics' tolerance)."""
    return softmax(np.asarray(logits, dtype=np.float64), axis=1)


def _run_divergence(runs, key, arrays: Iterable[np.ndarray]) -> tuple[bool, float]:
    """(diverged?, its epoch or NaN) of one run: recorded in ``runs.diverged``, or any of its
    logits NaN / infinite (then the epoch is unknown here)."""
    recorded = getattr(runs, "diverged", {}) or {}
    if key in recorded:
        ep = recorded[key]
        return True, float(ep) if ep is not None else np.nan
    if not all(np.isfinite(np.asarray(a)).all() for a in arrays):
        return True, np.nan
    return False, np.nan


def diverged_table(runs) -> pd.DataFrame:
    """The diverged runs of a :class:`FoldRuns` or :class:`FinetuneRuns` (one row each, with
    the epoch in which the loss or weights became NaN / inf); empty when none diverged."""
    names = run_key_names(runs)
    rows = []
    for key, lg in runs.logits.items():
        arrays = lg.values() if isinstance(lg, Mapping) else [lg]
        dv, ep = _run_divergence(runs, key, arrays)
        if dv:
            rows.append(dict(zip(names, key), diverged_epoch=ep))
    return pd.DataFrame(rows, columns=names + ["diverged_epoch"])


def generalisation_metrics(runs: FoldRuns, study: StudyData, shift: EvalSets) -> pd.DataFrame:
    """Long table: one row per (arch, condition, lr, fold, dataset) with accuracy and CE
    against the hard labels; held-out rows add CE against humans, SBA and confidences.

    A diverged run (``runs.diverged``, or NaN / inf logits) gives rows with ``diverged`` True,
    its ``diverged_epoch`` and NaN metrics instead of an error."""
    rows = []
    nan_held = dict.fromkeys(("ce_human", "sba", "kl_human", "conf_correct", "conf_incorrect"),
                             np.nan)
    for (arch, cond, lr, k), sets in runs.logits.items():
        te = runs.folds[k][1]
        dv, ep = _run_divergence(runs, (arch, cond, lr, k), sets.values())
        for key, lg in sets.items():
            if key == "heldout":
                y, h = study.labels[te], study.human[te]
            elif key in shift.labels:
                y, h = shift.labels[key], None
            else:
                continue
            row = {"arch": arch, "condition": cond, "lr": lr, "fold": k, "dataset": key,
                   "n": len(y)}
            if dv:
                row.update(accuracy=np.nan, ce=np.nan, **(nan_held if h is not None else {}))
            else:
                p = probs_of(lg)
                row.update(accuracy=metrics.accuracy(p, y),
                           ce=metrics.cross_entropy_from_logits(lg, y))
                if h is not None:
                    conf = metrics.confidence_by_correctness(p, y)
                    row.update(ce_human=metrics.cross_entropy_from_logits(lg, h),
                               sba=metrics.second_best_accuracy(p, h),
                               kl_human=metrics.kl_divergence(h, p),
                               conf_correct=conf["correct"], conf_incorrect=conf["incorrect"])
            rows.append(dict(row, diverged=dv, diverged_epoch=ep))
    df = pd.DataFrame(rows)
    # the diverged columns last (a held-out row comes first, so the metrics' order is kept)
    return df[[c for c in df.columns if not c.startswith("diverged")]
              + [c for c in ("diverged", "diverged_epoch") if c in df.columns]]


def _diverged(df: pd.DataFrame) -> pd.Series:
    """The ``diverged`` column as booleans (all False for a table without one)."""
    if "diverged" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["diverged"].eq(True)


def _best_candidates(scored: pd.DataFrame, group: Sequence[str], cand: Sequence[str], by: str,
                     higher: bool) -> set[tuple]:
    """Per ``group``, the ``cand`` value with the best mean ``by`` over its runs that did not
    diverge, among the candidates with the fewest diverged runs (a grid point that diverged on
    some folds loses to one that never did); where every run of every candidate diverged, all
    candidates are kept (their rows say 'diverged'). Returns the (group + cand) tuples kept."""
    group, cand = list(group), list(cand)
    d = scored[group + cand].copy()
    d["_div"] = _diverged(scored).to_numpy()
    d["_v"] = scored[by].where(~d["_div"])
    agg = d.groupby(group + cand)[["_v", "_div"]].mean().reset_index()
    keep: set[tuple] = set()
    for _, g in agg.groupby(group, sort=False):
        ok = g[np.isfinite(g["_v"].astype(float))]
        if ok.empty:
            keep |= set(map(tuple, g[group + cand].values.tolist()))
            continue
        ok = ok.sort_values(["_div", "_v"], ascending=[True, not higher], kind="stable")
        keep.add(tuple(ok[group + cand].values.tolist()[0]))
    return keep


def select_lr(df: pd.DataFrame, by: str = "accuracy") -> pd.DataFrame:
    """Keep, per architecture, ONE learning rate for both conditions: the one with the best
    mean held-out ``by`` (default: accuracy against the CIFAR-10 labels) over the soft and the
    hard runs together, so the soft-vs-hard comparison is paired at the same rate and the rule
    favours neither condition.

    As in the paper, the grid is searched on the held-out folds themselves (optimistic; with one
    learning rate in the grid nothing is selected). Diverged runs take no part: a learning rate
    with fewer diverged folds wins, then the best mean over the folds that did not diverge; if
    every learning rate diverged on every fold, all their (diverged) rows are kept."""
    held = df[df.dataset == "heldout"]
    keep = _best_candidates(held, ["arch"], ["lr"], by, by in ("accuracy", "sba"))
    return df[[(a, l) in keep for a, l in zip(df.arch, df.lr)]].copy()


def summarise(df: pd.DataFrame, metrics_: Sequence[str], by: Sequence[str]) -> pd.DataFrame:
    """Mean, standard deviation and number of folds of each metric, grouped by ``by``.

    Diverged runs (NaN metrics) are left out of every statistic; when any row diverged, a
    ``('diverged', 'folds')`` column counts them per group."""
    g = df.groupby(list(by), sort=False)[list(metrics_)]
    mean, std, n = g.mean(), g.std(ddof=1), g.count()
    parts = {}
    for m in metrics_:
        parts[(m, "mean")] = mean[m]
        parts[(m, "std")] = std[m]
        parts[(m, "folds")] = n[m]
    div = _diverged(df)
    if div.any():
        parts[("diverged", "folds")] = div.groupby([df[c] for c in by], sort=False).sum()
    return pd.DataFrame(parts)


def paired_difference(df: pd.DataFrame, metric: str, a: str = "soft", b: str = "hard",
                      by: Sequence[str] = ("arch", "dataset"), col: str = "condition") -> pd.DataFrame:
    """Per-fold difference ``metric[a] - metric[b]`` (same fold, same arch, same dataset):
    its mean, its fold-to-fold standard deviation, and how many folds have the same sign.

    A fold where either run diverged is left out; when there is one, a ``diverged folds``
    column counts them per group."""
    keys = list(by) + ["fold"]
    wide = df.pivot_table(index=keys, columns=col, values=metric, aggfunc="mean")
    if a not in wide or b not in wide:
        return pd.DataFrame()
    d = (wide[a] - wide[b]).dropna().rename("diff").reset_index()
    g = d.groupby(list(by), sort=False)["diff"]
    out = pd.DataFrame({"mean diff": g.mean(), "std over folds": g.std(ddof=1),
                        "folds": g.count(),
                        "folds with same sign": g.apply(lambda s: int(max((s > 0).sum(), (s < 0).sum())))})
    out["t (mean / s.e.)"] = out["mean diff"] / (out["std over folds"] / np.sqrt(out["folds"]))
    pair = df[df[col].isin([a, b])]
    div = pair[_diverged(pair)]
    if len(div):
        n_div = div.groupby(list(by), sort=False)["fold"].nunique()
        out = out.reindex(out.index.append(n_div.index.difference(out.index)))
        out["folds"] = out["folds"].fillna(0).astype(int)
        out["diverged folds"] = n_div.reindex(out.index).fillna(0).astype(int)
    return out


def dataset_order(keys: Iterable[str]) -> list[str]:
    """``keys`` in order of increasing shift (held-out, CIFAR-10, v4, v6, CINIC, ImageNet-Far)."""
    order = list(SHIFT_SETS)
    keys = list(dict.fromkeys(keys))
    return [k for k in order if k in keys] + [k for k in keys if k not in order]


def heldout_probs(runs: FoldRuns, arch: str, condition: str, lr: float, n: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Held-out predictions over the images of the folds that ran and did not diverge:
    (indices, probs)."""
    idx, ps = [], []
    for k, (_, te) in enumerate(runs.folds):
        key = (arch, condition, float(lr), k)
        if key in runs.logits and not _run_divergence(runs, key, runs.logits[key].values())[0]:
            idx.append(te)
            ps.append(probs_of(runs.logits[key]["heldout"]))
    if not idx:
        raise KeyError(f"no held-out logits for {arch}/{condition}/lr={lr} (none ran, or all "
                       "diverged)")
    return np.concatenate(idx), np.concatenate(ps)


def corruption_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean/std over folds of accuracy and CE per (arch, condition, corruption, severity)."""
    c = df[df.dataset.str.startswith("c10c_")].copy()
    if c.empty:
        return c
    parts = c.dataset.str[len("c10c_"):].str.rsplit("_", n=1)
    c["corruption"] = parts.str[0]
    c["severity"] = parts.str[1].astype(int)
    # average over corruptions within a fold first, then spread over folds
    per_fold = c.groupby(["arch", "condition", "severity", "fold"])[["accuracy", "ce"]].mean()
    return summarise(per_fold.reset_index(), ["accuracy", "ce"], ["arch", "condition", "severity"])


#: Shift sets whose paper value is not a like-for-like reference for this run (one line each).
NOT_COMPARABLE = {
    "imagenet_far": "not comparable: this book's own 29-class ImageNet-Far list (Peterson et "
                    "al.'s class list is unpublished), so different images from the paper's",
}


def paper_vs_run_generalisation(df: pd.DataFrame, shift: EvalSets) -> pd.DataFrame:
    """This run's arch-averaged CIFAR-10 / ImageNet-Far accuracy and CE (and the held-out SBA
    gain) next to Figure 2's values; sets that are absent here say so."""
    rows = []
    for (key, metric), (hard, soft) in PAPER_FIG2.items():
        sub = df[df.dataset == key]
        differs = NOT_COMPARABLE.get(key, "")
        if sub.empty:
            why = shift.unavailable.get(key, "not evaluated")
            rows.append({"quantity": f"{metric} on {SHIFT_SETS[key][0]}", "paper hard": hard,
                         "paper soft": soft, "run hard": np.nan, "run soft": np.nan,
                         "defined differently": differs, "note": why})
            continue
        m = sub.groupby(["condition", "arch"])[metric].mean().groupby("condition").mean()
        rows.append({"quantity": f"{metric} on {SHIFT_SETS[key][0]}", "paper hard": hard,
                     "paper soft": soft, "run hard": m.get("hard", np.nan),
                     "run soft": m.get("soft", np.nan), "defined differently": differs,
                     "note": ""})
    held = df[df.dataset == "heldout"]
    if not held.empty:
        m = held.groupby(["condition", "arch"])["sba"].mean().groupby("condition").mean()
        rows.append({"quantity": "SBA gain on held-out folds (soft - hard)", "paper hard": 0.0,
                     "paper soft": PAPER_FIG2_SBA_GAIN, "run hard": 0.0,
                     "run soft": m.get("soft", np.nan) - m.get("hard", np.nan),
                     "defined differently": "", "note": "paper: 'about +5 points'"})
    return pd.DataFrame(rows).set_index("quantity")
