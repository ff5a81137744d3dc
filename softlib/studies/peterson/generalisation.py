"""Peterson et al. (2019), paper section 5 (book section 2): training from scratch on CIFAR-10H,
evaluated under growing distribution shift."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import softmax

from ... import figures as F
from ... import metrics
from ...cache import Entry, ResultCache
from ...multimodel import train_cached_many
from ...train import TrainJob, data_fingerprint, diverged_epoch, train_cached
from .common import (CLASSES, Arch, EvalSets, PAPER_FIG2, PAPER_FIG2_SBA_GAIN, SHIFT_SETS,
                     StudyData, cap_train, heldout_monitor, parse_archs, scratch_config,
                     select_folds)


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
    out["t (mean / s.e.)"] = out["mean diff"] / paired_se(out)
    pair = df[df[col].isin([a, b])]
    div = pair[_diverged(pair)]
    if len(div):
        n_div = div.groupby(list(by), sort=False)["fold"].nunique()
        out = out.reindex(out.index.append(n_div.index.difference(out.index)))
        out["folds"] = out["folds"].fillna(0).astype(int)
        out["diverged folds"] = n_div.reindex(out.index).fillna(0).astype(int)
    return out


def paired_se(paired):
    """The standard error of :func:`paired_difference`'s mean (a frame, or one of its rows):
    fold-to-fold std / sqrt(folds), NaN where no fold is left."""
    folds = paired["folds"]
    return paired["std over folds"] / np.sqrt(np.where(folds > 0, folds, np.nan))


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


def _corruption_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the corrupted sets, with their ``corruption`` name and ``severity``."""
    c = df[df.dataset.str.startswith("c10c_")].copy()
    if c.empty:
        return c
    parts = c.dataset.str[len("c10c_"):].str.rsplit("_", n=1)
    c["corruption"] = parts.str[0]
    c["severity"] = parts.str[1].astype(int)
    return c


def corruption_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean/std over folds of accuracy and CE per (arch, condition, corruption, severity)."""
    c = _corruption_rows(df)
    if c.empty:
        return c
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


# --------------------------------------------------------------------------------------------
# Section 2's figures and tables (the notebook calls these and shows what they return)
# --------------------------------------------------------------------------------------------

#: Two-line tick labels of the shift sets on paper Figure 2's x axis.
SHIFT_TICKS = {"heldout": "held-out\nCIFAR-10H", "cifar10_train": "CIFAR-10\ntrain",
               "cifar10_1_v4": "CIFAR-10.1\nv4", "cifar10_1_v6": "CIFAR-10.1\nv6",
               "cinic10": "CINIC-10\n(ImageNet)", "imagenet_far": "ImageNet-\nFar"}
#: run markers per condition, in :data:`CONDITIONS` order (colour: C0 hard, C1 soft)
_CONDITION_MARKERS = "o^"
_METRIC_AXIS = {"accuracy": "accuracy vs hard labels (fraction)",
                "ce": "cross-entropy vs hard labels (nats)"}
_SHIFT_QUESTIONS = {"accuracy": ("Do soft labels raise accuracy as the shift grows?",
                                 "paper Fig. 2 left"),
                    "ce": ("Do soft labels lower cross-entropy as the shift grows?",
                           "paper Fig. 2 centre")}
#: the held-out summary's metric columns, in words
_HELDOUT_METRICS = {"accuracy": "accuracy", "ce": "CE vs CIFAR-10 labels",
                    "ce_human": "CE vs human labels", "sba": "second-best accuracy",
                    "kl_human": "KL(humans || model)"}
#: confidence columns of :func:`generalisation_metrics` -> the predictions they average over
_CONFIDENCE = {"conf_correct": "correct", "conf_incorrect": "incorrect"}


def _run_label(cond: str, arch: str, arch_labels: Sequence[str]) -> str:
    """Legend text of one run: the training labels, and the architecture when there are several."""
    return f"{cond} labels" + (f" ({arch})" if len(arch_labels) > 1 else "")


def _arch_alpha(i: int) -> float:
    """The first architecture drawn opaque, the others faded (colour is kept for the labels)."""
    return 1 if i == 0 else 0.5


def evaluation_set_status(folds: int, shift: EvalSets, corr: EvalSets) -> pd.DataFrame:
    """One row per evaluation set of the section (held-out folds, the shift sets in order, the
    corrupted sets): how many images, and present or absent with the reason, so the reader
    knows up front which rows of the figures stay empty."""
    rows = [{"evaluation set": SHIFT_SETS["heldout"][0], "images": f"{folds} x 1,000",
             "status": "present"}]
    for key, (title, _, _) in list(SHIFT_SETS.items())[1:]:
        if key in shift.images:
            rows.append({"evaluation set": shift.titles[key], "images": len(shift.labels[key]),
                         "status": "present"})
        else:
            rows.append({"evaluation set": title, "images": 0,
                         "status": "ABSENT: " + shift.unavailable[key]})
    absent = (f"; {len(corr.unavailable)} absent: " + next(iter(corr.unavailable.values()))
              if corr.unavailable else "")
    rows.append({"evaluation set": "CIFAR-10-C-style corruptions (this book's addition)",
                 "images": sum(len(v) for v in corr.labels.values()),
                 "status": f"{len(corr.images)} corruption x severity sets present" + absent})
    return pd.DataFrame(rows).set_index("evaluation set")


def training_seconds(runs: FoldRuns) -> pd.DataFrame:
    """Training time per (arch, condition), summed over its fold models and learning rates
    (seconds)."""
    return (pd.Series(runs.seconds, dtype=float).groupby(level=[0, 1]).sum()
            .rename_axis(["arch", "condition"])
            .rename("training seconds (all folds and learning rates)").to_frame())


def selected_heldout_curves(runs: FoldRuns, df: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch held-out curves (:func:`heldout_curves_frame`) of the runs at each
    architecture's selected learning rate (``df`` after :func:`select_lr`)."""
    curves = heldout_curves_frame(runs)
    if len(curves):
        chosen = df.groupby("arch").lr.first()
        curves = curves[np.isclose(curves.lr, curves.arch.map(chosen))]
    return curves


def plot_scratch_heldout_curves(curves: pd.DataFrame):
    """Mean held-out CE vs humans per epoch, a line per (arch, condition) with a band of ±1 s.d.
    over folds and a triangle at its best epoch (``curves``: :func:`selected_heldout_curves`)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    F.heldout_curves(ax, curves, ["arch", "condition"])
    F.question_title(ax, "Does the held-out fit to humans still improve at the last epoch?",
                     "paper §5: at most 150 epochs",
                     F.spread_note(curves.fold.nunique(), drawn="bands"))
    F.legend_unique(ax, fontsize=7)
    fig.tight_layout()
    return fig


def plot_shift_curves(df: pd.DataFrame, arch_labels: Sequence[str]):
    """Paper Figure 2, left and centre: accuracy and CE vs the hard labels on each evaluation set
    present, in order of growing shift (corrupted sets left out); mean over folds with ±1 s.d.
    bars, a point per (architecture, condition), hard and soft side by side; the paper's 8-CNN
    means (:data:`PAPER_FIG2`) as hollow diamonds on the sets this run has."""
    import matplotlib.pyplot as plt

    order = [k for k in dataset_order(df.dataset.unique()) if not k.startswith("c10c_")]
    summary = summarise(df, ["accuracy", "ce"], ["arch", "condition", "dataset"])
    n_folds = int(summary[("accuracy", "folds")].max())
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, metric in zip(axes, ["accuracy", "ce"]):
        for i, arch in enumerate(arch_labels):
            for j, cond in enumerate(CONDITIONS):
                rows = [summary.loc[(arch, cond, k)] if (arch, cond, k) in summary.index
                        else None for k in order]
                y = [r[(metric, "mean")] if r is not None else np.nan for r in rows]
                e = [r[(metric, "std")] if r is not None else np.nan for r in rows]
                x = np.arange(len(order)) + (j - 0.5) * 0.15
                ax.errorbar(x, y, yerr=e, marker=_CONDITION_MARKERS[j], capsize=3,
                            color=f"C{j}", alpha=_arch_alpha(i),
                            label=_run_label(cond, arch, arch_labels))
        for j, cond in enumerate(CONDITIONS):  # the paper's values, where this run has the set
            pts = [(order.index(k) + (j - 0.5) * 0.15, PAPER_FIG2[(k, metric)][j])
                   for k in order if (k, metric) in PAPER_FIG2]
            if pts:
                F.paper_marks(ax, *zip(*pts), color=f"C{j}", label=f"paper, {cond} (8-CNN mean)")
        ax.set_xticks(range(len(order)), [SHIFT_TICKS.get(k, k) for k in order], fontsize=8)
        ax.set(xlabel="evaluation set, increasing distance from the training images",
               ylabel=_METRIC_AXIS[metric])
        F.question_title(ax, *_SHIFT_QUESTIONS[metric],
                         F.spread_note(n_folds) + ", mean of the folds")
        F.legend_unique(ax, fontsize=7)
    fig.tight_layout()
    return fig


def plot_shift_differences(paired: pd.DataFrame, arch_labels: Sequence[str]):
    """Soft minus hard within each fold (:func:`shift_paired_differences`) on each evaluation
    set, in order of growing shift: a point per architecture with ±2 s.e. over folds, and the
    paper's Figure 2 soft - hard (8-CNN means, :data:`PAPER_FIG2`) as hollow diamonds. The
    paper's claim reads off directly: the CE gap below 0 and widening to the right."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    n_folds = 0
    for ax, metric in zip(axes, ["accuracy", "ce"]):
        sub = paired.loc[metric] if metric in paired.index.get_level_values(0) else None
        order = [] if sub is None else dataset_order(sub.index.get_level_values("dataset"))
        ax.axhline(0, color="k", lw=0.8)
        for i, arch in enumerate(arch_labels):
            if sub is None or arch not in sub.index.get_level_values("arch"):
                continue
            r = sub.loc[arch].reindex(order)
            se = paired_se(r)
            n_folds = max(n_folds, int(r["folds"].max()))
            ax.errorbar(np.arange(len(order)) + (i - (len(arch_labels) - 1) / 2) * 0.12,
                        r["mean diff"], yerr=2 * se.fillna(0), fmt="os^D"[i % 4], capsize=3,
                        color="C1", alpha=1 if i == 0 else 0.55, label=f"this run ({arch})")
        pts = [(order.index(k), PAPER_FIG2[(k, metric)][1] - PAPER_FIG2[(k, metric)][0])
               for k in order if (k, metric) in PAPER_FIG2]
        if pts:
            F.paper_marks(ax, *zip(*pts), color="k", label="paper (8-CNN mean)")
        ax.set_xticks(range(len(order)), [SHIFT_TICKS.get(k, k) for k in order], fontsize=8)
        better = "above 0: soft better" if metric == "accuracy" else "below 0: soft better"
        ax.set(xlabel="evaluation set, increasing distance from the training images",
               ylabel=f"soft − hard, {_METRIC_AXIS[metric]}")
        F.question_title(ax, "Does the soft-label advantage grow with the shift?",
                         f"paper Fig. 2, {'left' if metric == 'accuracy' else 'centre'}",
                         f"{better}; " + F.spread_note(n_folds, what="±2 s.e."))
        F.legend_unique(ax, fontsize=7)
    fig.tight_layout()
    return fig


def absent_shift_note(unavailable: Mapping[str, str]) -> str:
    """'not shown (data absent on this machine): ...' naming the absent shift sets, or ''."""
    missing = [title for k, (title, _, _) in SHIFT_SETS.items() if k in unavailable]
    return "not shown (data absent on this machine): " + ", ".join(missing) if missing else ""


def shift_paired_differences(df: pd.DataFrame) -> pd.DataFrame:
    """Soft minus hard within each fold (:func:`paired_difference`) of accuracy and CE on every
    uncorrupted evaluation set, indexed (metric, arch, dataset)."""
    plain = df[~df.dataset.str.startswith("c10c_")]
    return pd.concat({m: paired_difference(plain, m) for m in ["accuracy", "ce"]},
                     names=["metric"])


def shift_gap_lines(paired: pd.DataFrame) -> list[str]:
    """One sentence per (metric, arch) on the held-out folds, CIFAR-10 train, CINIC-10 and
    ImageNet-Far: soft minus hard, its fold-to-fold std, and how many folds agree in sign
    (``paired``: :func:`shift_paired_differences`)."""
    lines = []
    for metric in ["accuracy", "ce"]:
        for (arch, ds), r in paired.loc[metric].iterrows():
            if ds in ("heldout", "cifar10_train", "imagenet_far", "cinic10"):
                if not r["folds"] > 0 or not np.isfinite(r["mean diff"]):
                    lines.append(f"- {metric} on {SHIFT_SETS[ds][0]} ({arch}): no fold with "
                                 "both conditions finite (diverged runs are left out)")
                    continue
                lines.append(f"- {metric} on {SHIFT_SETS[ds][0]} ({arch}): soft minus hard "
                             f"{r['mean diff']:+.3f} (fold-to-fold std "
                             f"{F.sig(r['std over folds'])}, {int(r['folds with same sign'])} "
                             f"of {int(r['folds'])} folds agree in sign)")
    return lines


def plot_sba(held: pd.DataFrame, arch_labels: Sequence[str]):
    """Paper Figure 2, right: second-best accuracy on the held-out folds, a bar per (arch,
    condition) at the mean over folds (±1 s.d.), a dot per fold, and the paper's soft-label gain
    (:data:`PAPER_FIG2_SBA_GAIN`) as a hollow diamond on top of this run's hard-label mean.
    ``held``: the held-out rows of :func:`generalisation_metrics`. The legend sits beside the
    axes so that it hides no bar."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5 + 1.5 * len(arch_labels), 3.6))
    for i, arch in enumerate(arch_labels):
        for j, cond in enumerate(CONDITIONS):
            v = held[(held.arch == arch) & (held.condition == cond)]["sba"]
            ax.bar(i * 3 + j, v.mean(), yerr=v.std(ddof=1) if len(v) > 1 else 0,
                   color=f"C{j}", capsize=4, label=f"{cond} labels" if i == 0 else None)
            ax.plot(np.full(len(v), i * 3 + j), v, "k.", ms=5,
                    label="one fold" if i == j == 0 else None)
        hard = held[(held.arch == arch) & (held.condition == "hard")]["sba"].mean()
        F.paper_marks(ax, i * 3 + 1, hard + PAPER_FIG2_SBA_GAIN, color="C1",
                      label=f"paper: hard + {PAPER_FIG2_SBA_GAIN:.2f} (its soft-label gain)")
    ax.set_xticks([i * 3 + 0.5 for i in range(len(arch_labels))], list(arch_labels))
    ax.set(ylabel="second-best accuracy on held-out folds (fraction)")
    F.question_title(ax, "Do soft labels make the runner-up class more human?",
                     "paper Fig. 2 right",
                     F.spread_note(held.groupby(["arch", "condition"]).sba.count().max())
                     + "; dots: folds")
    F.legend_unique(ax, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def heldout_summary(held: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and folds of every held-out metric per (arch, condition), the metrics named in
    words (``held``: the held-out rows of :func:`generalisation_metrics`)."""
    return summarise(held, list(_HELDOUT_METRICS), ["arch", "condition"]).rename(
        columns=_HELDOUT_METRICS, level=0)


def confidence_summary(held: pd.DataFrame) -> pd.DataFrame:
    """Mean top-1 probability on the held-out predictions that are correct and incorrect:
    mean and std over folds per (arch, condition); columns ('correct' | 'incorrect',
    'mean' | 'std')."""
    conf = held.groupby(["arch", "condition"])[list(_CONFIDENCE)].agg(["mean", "std"])
    return conf.rename(columns=_CONFIDENCE, level=0)


def plot_confidence(held: pd.DataFrame, arch_labels: Sequence[str]):
    """Paper Figure 3a: per (arch, condition) a bar for the mean top-1 probability on correct and
    one on incorrect held-out predictions (±1 s.d. over folds); the architecture is named under
    the bars only when there are several. The legend sits beside the axes."""
    import matplotlib.pyplot as plt

    conf = confidence_summary(held)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ticks = []
    for i, ((arch, cond), r) in enumerate(conf.iterrows()):
        for j, what in enumerate(_CONFIDENCE.values()):
            ax.bar(i * 3 + j, r[(what, "mean")], yerr=r[(what, "std")], capsize=3,
                   color=["C2", "C3"][j], label=what if i == 0 else None)
        ticks.append(f"{cond}\n{arch}" if len(arch_labels) > 1 else cond)
    ax.set_xticks([i * 3 + 0.5 for i in range(len(ticks))], ticks)
    ax.set(xlabel="training labels", ylabel="mean top-1 probability on held-out images (fraction)")
    F.question_title(ax, "Do soft labels lower confidence most where the model is wrong?",
                     "paper Fig. 3a",
                     F.spread_note(held.groupby(["arch", "condition"]).fold.nunique().max()))
    ax.legend(fontsize=8, title="predictions", title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def paired_heldout_predictions(runs: FoldRuns, df: pd.DataFrame, arch: str, n_images: int
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out predictions of ``arch``'s hard- and soft-label models at its selected learning
    rate (``df`` after :func:`select_lr`), on the folds where neither run diverged:
    (image indices, hard-label probs, soft-label probs), rows aligned."""
    lr = {c: df[(df.arch == arch) & (df.condition == c)].lr.iloc[0] for c in CONDITIONS}
    idx_h, p_hard = heldout_probs(runs, arch, "hard", lr["hard"], n_images)
    idx_s, p_soft = heldout_probs(runs, arch, "soft", lr["soft"], n_images)
    both_h, both_s = np.isin(idx_h, idx_s), np.isin(idx_s, idx_h)
    return idx_h[both_h], p_hard[both_h], p_soft[both_s]


def plot_divisive_gallery(study: StudyData, idx: np.ndarray, p_hard: np.ndarray,
                          p_soft: np.ndarray, n: int = 6):
    """Paper Figure 3b: the ``n`` held-out images (of ``idx``) whose human distribution has the
    highest entropy, each above its humans', hard-label and soft-label model's class
    probabilities (``p_hard``, ``p_soft``: rows aligned with ``idx``)."""
    import matplotlib.pyplot as plt

    from ...data import views
    show = np.argsort(-views.entropy(study.human[idx]))[:n]
    fig, axes = plt.subplots(2, len(show), figsize=(2.3 * len(show), 4.6), squeeze=False)
    w, x = 0.28, np.arange(len(CLASSES))
    for j, s in enumerate(show):
        i = idx[s]
        axes[0, j].imshow(study.images[i])
        axes[0, j].axis("off")
        axes[0, j].set_title(f"#{i}: {CLASSES[study.labels[i]]}", fontsize=8)
        axes[1, j].bar(x - w, study.human[i], w, color="k", label="humans")
        axes[1, j].bar(x, p_hard[s], w, color="C0", label="hard-label model")
        axes[1, j].bar(x + w, p_soft[s], w, color="C1", label="soft-label model")
        axes[1, j].set_xticks(x, [c[:3] for c in CLASSES], rotation=90, fontsize=7)
        axes[1, j].set_ylim(0, 1)
    axes[1, 0].set_ylabel("probability", fontsize=8)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle("Do soft-label models predict the humans' distribution on divisive images? "
                 "(paper Fig. 3b)\none image per panel, one held-out prediction each: "
                 "no error bars", fontsize=10)
    fig.tight_layout()
    return fig


def heldout_divergence_table(human: np.ndarray, p_hard: np.ndarray, p_soft: np.ndarray
                             ) -> pd.DataFrame:
    """KL(human || model) and JS(human, model) of the hard- and soft-label models over the
    held-out images, and the mean entropy of their predictions beside the humans' (NaN where
    a divergence of the humans from themselves would be meaningless)."""
    from ...data import views
    out = pd.DataFrame({c: {"KL(human || model), held-out": metrics.kl_divergence(human, p),
                            "JS(human, model), held-out": metrics.js_divergence(human, p),
                            "mean entropy of predictions (nats)": float(views.entropy(p).mean())}
                        for c, p in [("hard", p_hard), ("soft", p_soft)]})
    return out.assign(humans=[np.nan, np.nan, float(views.entropy(human).mean())])


def plot_corruption(df: pd.DataFrame, arch_labels: Sequence[str]):
    """Accuracy (left) and CE (right) on the CIFAR-10-C-style sets against the severity: a line
    per (arch, condition), each point the mean over corruptions then folds (±1 s.d. over folds;
    hard and soft slightly apart so their bars do not hide each other), and this run's
    uncorrupted CIFAR-10 train value as a dotted line. The paper has no such sets, so no paper
    marks. Needs corrupted rows in ``df`` (see :func:`corruption_summary`)."""
    import matplotlib.pyplot as plt

    cs = corruption_summary(df)
    if cs.empty:
        raise ValueError("plot_corruption: no corrupted evaluation sets in this table")
    n_corruptions = _corruption_rows(df).corruption.nunique()
    n_folds = int(cs[("accuracy", "folds")].max())
    clean = (df[df.dataset == "cifar10_train"].groupby(["arch", "condition"])[["accuracy", "ce"]]
             .mean())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ["accuracy", "ce"]):
        for (arch, cond), g in cs.groupby(level=[0, 1]):
            j = CONDITIONS.index(cond)
            i = list(arch_labels).index(arch) if arch in arch_labels else len(arch_labels)
            sev = g.index.get_level_values("severity") + (j - 0.5) * 0.08
            ax.errorbar(sev, g[(metric, "mean")], yerr=g[(metric, "std")],
                        marker=_CONDITION_MARKERS[j], capsize=3, color=f"C{j}",
                        alpha=_arch_alpha(i), label=_run_label(cond, arch, arch_labels))
            if (arch, cond) in clean.index:
                ax.axhline(clean.loc[(arch, cond), metric], color=f"C{j}", ls=":", lw=1,
                           alpha=_arch_alpha(i))
        ax.set(xlabel="corruption severity (1-5; dotted: uncorrupted CIFAR-10 train)",
               ylabel=_METRIC_AXIS[metric])
        what = "keep their accuracy" if metric == "accuracy" else "keep a lower cross-entropy"
        ax.set_xticks(sorted(cs.index.get_level_values("severity").unique()))
        F.question_title(ax, f"Do soft-label models {what} under corruption?",
                         note=f"beyond the paper; mean of {n_corruptions} corruptions\n"
                              + F.spread_note(n_folds) + ", of the corruption mean")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
