"""Peterson et al. (2019), sections 5-7 of the paper: training on CIFAR-10H's human labels.

Sections 2-4 of the book call this module; the notebooks only orchestrate and plot.

* **Generalisation** (paper §5): train each architecture from scratch on the 10,000 CIFAR-10H
  images with k-fold cross-validation, once on human soft labels and once on the CIFAR-10 hard
  labels; evaluate on the held-out folds and on data sets of increasing distribution shift.
* **Alternatives** (paper §6, Table 1): pretrain on the 50,000 CIFAR-10 training images, then
  fine-tune on the same folds with hard labels, mixup, class-level targets, a distillation
  ensemble, human soft labels, sampled hard labels and mixup on human labels.
* **Adversarial** (paper §7, Table 2, Figure 4): FGSM and PGD on the fine-tuned hard- and
  soft-label models of the alternatives section, reloaded from the same cache entries.

Every training run goes through :func:`softlib.train.train_cached` (the fold models of one
configuration through :func:`softlib.train.train_cached_many`, which trains them together on a
GPU and stores the same entries), keyed by the full training configuration and a fingerprint of
the data, folds and targets, so a rerun (or the next section) loads the weights instead of
retraining. The paper's published numbers are typed in
below (``PAPER_*``), each citing the table or figure it comes from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import softmax

from .. import metrics
from ..cache import Entry, ResultCache, config_key
from ..train import (TrainConfig, TrainJob, data_fingerprint, diverged_epoch, load_model,
                     train_cached, train_cached_many)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")

# --------------------------------------------------------------------------------------------
# The paper's numbers (reference constants; protocols.md transcribes them from the paper)
# --------------------------------------------------------------------------------------------

#: Figure 2 (left, centre), averaged over the eight CNNs: (hard-label value, soft-label value).
PAPER_FIG2 = {
    ("cifar10_train", "accuracy"): (0.835, 0.845),
    ("imagenet_far", "accuracy"): (0.494, 0.514),
    ("cifar10_train", "ce"): (0.7, 0.5),
    ("imagenet_far", "ce"): (2.9, 1.8),
}
#: Figure 2 (right): second-best accuracy on the held-out folds rises by about 5 points with soft labels.
PAPER_FIG2_SBA_GAIN = 0.05

#: Table 1: cross-entropy (c10H, c10, v4, v6) of fine-tuned models; only the rows transcribed in
#: protocols.md (ResNet = ResNet-110 basic, DenseNet = DenseNet-BC-100-12).
PAPER_TABLE1 = {
    ("ResNet", "pretrained"): (0.82, 0.25, 0.84, 0.82),
    ("ResNet", "hard"): (0.57, 0.19, 0.60, 0.58),
    ("ResNet", "mixup_hard"): (0.36, 0.18, 0.48, 0.46),
    ("ResNet", "soft"): (0.35, 0.19, 0.50, 0.49),
    ("ResNet", "sampled"): (0.35, 0.19, 0.48, 0.46),
    ("ResNet", "class_level"): (0.42, 0.13, 0.53, 0.40),
    ("DenseNet", "soft"): (0.32, 0.17, 0.40, 0.40),
}
#: Table 1 cells typed in so far: the rows quoted in shared/reference/protocols.md and issue
#: #14 (the paper's other 8 x 8 cells are not in this repository's reference notes yet; the
#: comparison table shows them as n/a rather than guessing).
#: Table 1: the distillation ensemble of the eight pretrained models, c10H cross-entropy.
PAPER_TABLE1_ENSEMBLE_C10H = 0.41
TABLE1_COLUMNS = ("c10H", "c10", "v4", "v6")

#: Table 2: FGSM at eps = 4/255 on all 10,000 CIFAR-10 test images after fine-tuning:
#: (accuracy hard, accuracy soft, cross-entropy hard, cross-entropy soft).
PAPER_TABLE2 = {
    "VGG": (0.07, 0.08, 7.9, 4.1),
    "DenseNet": (0.17, 0.19, 6.9, 3.0),
    "PyramidNet": (0.22, 0.19, 5.7, 2.8),
    "ResNet": (0.15, 0.23, 6.1, 3.1),
    "ResNeXt": (0.25, 0.24, 4.2, 2.7),
    "WRN": (0.24, 0.35, 4.1, 2.2),
    "PreAct-ResNet": (0.17, 0.29, 6.3, 2.6),
    "Shake-Shake": (0.39, 0.39, 4.0, 2.1),
}
#: Section 7: PGD drives accuracy to about 0% (hard) and 1% (soft).
PAPER_PGD_ACCURACY = (0.00, 0.01)

_FAMILY_PREFIXES = (("resnet_preact", "PreAct-ResNet"), ("preact_resnet", "PreAct-ResNet"),
                    ("resnext", "ResNeXt"), ("resnet", "ResNet"), ("vgg", "VGG"),
                    ("wrn", "WRN"), ("densenet", "DenseNet"), ("pyramidnet", "PyramidNet"),
                    ("shake_shake", "Shake-Shake"))


def paper_family(build_name: str) -> str | None:
    """The paper's row name for a softlib build name (``resnet_20`` -> 'ResNet'), else None."""
    for prefix, fam in _FAMILY_PREFIXES:
        if build_name.startswith(prefix):
            return fam
    return None


# --------------------------------------------------------------------------------------------
# Architectures, folds, configurations
# --------------------------------------------------------------------------------------------

#: Section parameters an architecture may set for itself (a fast network can afford more epochs
#: than a slow one inside the same time budget).
ARCH_OVERRIDABLE = ("epochs", "pretrain_epochs", "finetune_epochs")


@dataclass(frozen=True)
class Arch:
    """One architecture of a profile: display label, ``softlib.models.build`` name and knobs,
    and optional per-architecture values of :data:`ARCH_OVERRIDABLE` parameters."""
    label: str
    name: str
    knobs: tuple = ()
    overrides: tuple = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.knobs)

    @property
    def family(self) -> str | None:
        return paper_family(self.name)

    def param(self, params: Mapping[str, Any], name: str) -> Any:
        """``params[name]``, unless this architecture overrides it."""
        over = dict(self.overrides)
        return over[name] if name in over else params.get(name)


def parse_archs(archs: Iterable[Any], param: str = "archs") -> list[Arch]:
    """``[[label, build name, {knobs}(, {overrides})], ...]`` (the profiles' format) -> list of
    :class:`Arch`; overrides may only set :data:`ARCH_OVERRIDABLE` parameters."""
    out = []
    for i, a in enumerate(archs):
        if not (isinstance(a, (list, tuple)) and len(a) in (3, 4)
                and all(isinstance(m, Mapping) for m in a[2:])):
            raise ValueError(f"{param}[{i}]: expected [label, build name, {{knobs}}] or "
                             f"[label, build name, {{knobs}}, {{overrides}}], got {a!r}")
        over = dict(a[3]) if len(a) == 4 else {}
        bad = sorted(set(over) - set(ARCH_OVERRIDABLE))
        if bad:
            raise ValueError(f"{param}[{i}]: cannot override {', '.join(bad)} per architecture; "
                             f"allowed: {', '.join(ARCH_OVERRIDABLE)}")
        out.append(Arch(str(a[0]), str(a[1]), tuple(sorted(dict(a[2]).items())),
                        tuple(sorted(over.items()))))
    if not out:
        raise ValueError(f"{param}: expected at least one architecture")
    return out


def select_folds(labels: np.ndarray, folds_run: int, k: int = 10, seed: int = 0
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``folds_run`` of Peterson et al.'s ``k`` stratified folds (9,000 / 1,000 at k=10)."""
    from ..data import splits
    if not 1 <= int(folds_run) <= k:
        raise ValueError(f"folds: expected 1..{k} folds to run, got {folds_run}")
    return splits.kfold_splits(labels, k, seed)[: int(folds_run)]


def cap_train(train_idx: np.ndarray, cap: int | None, labels: np.ndarray, seed: int) -> np.ndarray:
    """``train_idx`` or a seeded, class-stratified subset of ``cap`` of them (smoke runs)."""
    train_idx = np.asarray(train_idx)
    if cap is None or cap >= len(train_idx):
        return train_idx
    rng = np.random.default_rng(seed)
    perm = train_idx[rng.permutation(len(train_idx))]
    lab = labels[perm]
    per = int(math.ceil(cap / len(np.unique(lab))))
    keep = np.concatenate([perm[lab == c][:per] for c in np.unique(lab)])
    return np.sort(keep[:cap] if len(keep) > cap else keep)


#: Paper §5: Adam; the paper's other hyperparameters are the training repository's defaults.
SCRATCH_WEIGHT_DECAY = 1e-4
#: The training repository's per-architecture CIFAR-10 schedules (protocols.md), used to pretrain
#: when ``pretrain_epochs`` is None: (lr, weight decay, epochs, milestones, gamma or 'cosine').
REPO_SCHEDULES = {
    "vgg_15_BN_64": (0.1, 1e-4, 160, [80, 120], 0.1),
    "resnet_basic_110": (0.1, 1e-4, 160, [80, 120], 0.1),
    "resnet_preact_bottleneck_164": (0.1, 1e-4, 160, [80, 120], 0.1),
    "wrn_28_10": (0.1, 5e-4, 200, [60, 120, 160], 0.2),
    "resnext_29_8x64d": (0.1, 5e-4, 300, [150, 225], 0.1),
    "densenet_BC_100_12": (0.1, 1e-4, 300, [150, 225], 0.1),
    "pyramidnet_basic_110_270": (0.1, 1e-4, 300, [150, 225], 0.1),
    "shake_shake_26_2x64d_SSI": (0.2, 1e-4, 1800, [], "cosine"),
}


def scratch_config(arch: Arch, lr: float, epochs: int, batch_size: int, seed: int = 0,
                   mix: str = "none", mix_alpha: float = 1.0, amp: Any = "auto") -> TrainConfig:
    """Training from scratch or fine-tuning (paper §5/§6): Adam, cosine decay, crop+flip.
    ``amp``: bf16 autocast for training (True / False / 'auto' = CUDA only)."""
    return TrainConfig(arch=arch.name, arch_kwargs=arch.kwargs, optimizer="adam", lr=float(lr),
                       weight_decay=SCRATCH_WEIGHT_DECAY, batch_size=int(batch_size),
                       epochs=int(epochs), schedule="cosine", augment="crop_flip", mix=mix,
                       mix_alpha=float(mix_alpha), seed=int(seed), amp=amp)


def pretrain_config(arch: Arch, epochs: int | None, batch_size: int, seed: int = 0,
                    amp: Any = "auto") -> TrainConfig:
    """Pretraining on CIFAR-10 (paper §6): SGD + Nesterov, the repository's schedule when
    ``epochs`` is None (needs a known preset), else ``epochs`` of cosine decay from 0.1."""
    if epochs is None:
        if arch.name not in REPO_SCHEDULES:
            raise ValueError(f"pretrain_epochs=None needs the repository schedule of {arch.name!r}; "
                             f"known: {', '.join(REPO_SCHEDULES)} (or give pretrain_epochs)")
        lr, wd, ep, ms, gamma = REPO_SCHEDULES[arch.name]
        sched = dict(schedule="cosine") if gamma == "cosine" else dict(
            schedule="multistep", milestones=ms, gamma=gamma)
        return TrainConfig(arch=arch.name, arch_kwargs=arch.kwargs, optimizer="sgd", lr=lr,
                           weight_decay=wd, nesterov=True, momentum=0.9,
                           batch_size=int(batch_size), epochs=ep, augment="crop_flip",
                           seed=int(seed), amp=amp, **sched)
    return TrainConfig(arch=arch.name, arch_kwargs=arch.kwargs, optimizer="sgd", lr=0.1,
                       weight_decay=5e-4, nesterov=True, momentum=0.9, batch_size=int(batch_size),
                       epochs=int(epochs), schedule="cosine", warmup_epochs=0,
                       augment="crop_flip", seed=int(seed), amp=amp)


# --------------------------------------------------------------------------------------------
# Data: CIFAR-10H and the evaluation sets ordered by shift
# --------------------------------------------------------------------------------------------

@dataclass
class StudyData:
    """CIFAR-10H as a training set: CIFAR-10 test images, their labels, human distributions."""
    images: np.ndarray          # uint8 [10000, 32, 32, 3]
    labels: np.ndarray          # int64 [10000] (the CIFAR-10 labels)
    human: np.ndarray           # float32 [10000, 10] (CIFAR-10H probabilities)
    data_id: str                # fingerprint of images, labels and human labels

    @property
    def hard(self) -> np.ndarray:
        from ..data import views
        return views.one_hot(self.labels, 10)


def load_study_data(root=None) -> StudyData:
    """CIFAR-10 test images + labels and CIFAR-10H probabilities (same order)."""
    from .. import data
    test = data.load("cifar10", "test", root)
    h = data.load_cifar10h(root, n_images=len(test.labels))
    human = data.views.human_soft_labels(h)
    return StudyData(test.images, test.labels.astype(np.int64), human,
                     data_fingerprint(test.images, test.labels, human, provenance="cifar10h"))


#: Evaluation sets in order of increasing distribution shift (paper Figure 2):
#: key -> (title, dataset, split).
SHIFT_SETS = {
    "heldout": ("CIFAR-10H held-out folds", None, None),
    "cifar10_train": ("CIFAR-10 (train images)", "cifar10", "train"),
    "cifar10_1_v4": ("CIFAR-10.1 v4", "cifar10_1", "v4"),
    "cifar10_1_v6": ("CIFAR-10.1 v6", "cifar10_1", "v6"),
    # the paper evaluates on all 210,000 ImageNet-derived images of CINIC-10 (every split)
    "cinic10": ("CINIC-10 (ImageNet part)", "cinic10", ("train", "valid", "test")),
    "imagenet_far": ("ImageNet-Far", "imagenet_far", "test"),
}


def stratified_subset(labels: np.ndarray, n: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded subset of ``n`` images with classes as balanced as possible."""
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    # rank of each image within its class in the random order; take the lowest ranks first
    rank = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        pos = perm[labels[perm] == c]
        rank[pos] = np.arange(len(pos))
    order = np.lexsort((rng.random(len(labels)), rank))
    return np.sort(order[:n])


@dataclass
class EvalSets:
    """Evaluation images by key, with labels; absent sets with the reason."""
    images: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, title: str, images: np.ndarray, labels: np.ndarray) -> None:
        self.images[key], self.labels[key], self.titles[key] = images, labels, title


def _absent_reason(name: str, split: str, root) -> str:
    from .. import data
    from ..paths import data_root
    where = data_root(root) / name
    if name == "cifar10_1" and (where / f"cifar10.1_{split}_labels.npy").exists():
        return (f"only the CIFAR-10.1 {split} labels are under {where}; the images could not be "
                "brought to this machine (fetch them with `python -m softlib.data fetch cifar10_1`)")
    how = data.get_spec(name).how
    return f"not under {where} (to get it: {how})"


def load_shift_sets(eval_subset: int | None, root=None, seed: int = 0) -> EvalSets:
    """The shift sets other than the held-out folds, each cut to ``eval_subset`` images
    (stratified, seeded); absent sets are listed with the reason, never replaced."""
    from .. import data
    out = EvalSets()
    for key, (title, name, split) in SHIFT_SETS.items():
        if name is None:
            continue
        splits = (split,) if isinstance(split, str) else tuple(split)
        present = [sp for sp in splits if data.available(name, sp, root)]
        if not present:
            out.unavailable[key] = _absent_reason(name, splits[-1], root)
            continue
        parts = [data.load(name, sp, root) for sp in present]
        images = np.concatenate([p_.images for p_ in parts])
        labels = np.concatenate([np.asarray(p_.labels) for p_ in parts]).astype(np.int64)
        if len(present) < len(splits):
            title = f"{title}, only {'+'.join(present)} of {'+'.join(splits)}"
        idx = stratified_subset(labels, eval_subset, seed)
        sub = f" ({len(idx):,} of {len(labels):,})" if len(idx) < len(labels) else ""
        out.add(key, title + sub, images[idx], labels[idx])
    return out


def corruption_key(corruption: str, severity: int) -> str:
    return f"c10c_{corruption}_{severity}"


def load_corruption_sets(subset: int, corruptions: Sequence[str] | str, severities: Sequence[int],
                         root=None, generate: bool = True) -> EvalSets:
    """CIFAR-10-C-style corrupted CIFAR-10 training images, ``subset`` per (corruption, severity).

    Uses the files under ``<root>/cifar10_c`` (written by :mod:`softlib.data.corruptions`); with
    ``generate`` a missing or too small file is generated from the first ``subset / 10``
    training images of each class. ``corruptions='all'`` means the 15 benchmark corruptions.
    """
    from .. import data
    from ..data import corruptions as corr
    names = list(data.CORRUPTIONS) if corruptions == "all" else list(corruptions)
    unknown = [c for c in names if c not in data.CORRUPTIONS]
    if unknown:
        raise ValueError(f"corruptions: unknown {unknown}; known: {', '.join(data.CORRUPTIONS)}")
    per_class = int(math.ceil(int(subset) / 10))
    out = EvalSets()
    need = []
    for c in names:
        for s in severities:
            split = f"{c}_{s}"
            ok = data.available("cifar10_c", split, root)
            if ok:
                lab = data.load("cifar10_c", split, root).labels
                ok = np.bincount(lab, minlength=10).min() >= per_class
            if not ok:
                need.append((c, s))
    if need and generate and data.available("cifar10", "train", root):
        train_labels = data.load("cifar10", "train", root).labels
        idx = corr.first_per_class(train_labels, per_class)
        for c, s in need:
            corr.generate(indices=idx, corruptions=[c], severities=[s], root=root, overwrite=True)
    for c in names:
        for s in severities:
            key, split = corruption_key(c, s), f"{c}_{s}"
            if not data.available("cifar10_c", split, root):
                out.unavailable[key] = ("no corrupted images: " + _absent_reason("cifar10_c", split, root)
                                        + ("" if generate else "; generation was switched off"))
                continue
            ims = data.load("cifar10_c", split, root)
            pick = corr.first_per_class(ims.labels, per_class)
            out.add(key, f"{c} (severity {s})", ims.images[pick], ims.labels[pick].astype(np.int64))
    return out


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
                        job.train_data, job.eval_sets, device=device, progress=progress)


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
                         amp=params.get("amp", "auto"))
    fp = _fold_fingerprint(tr, te, targets, f"peterson-scratch|{condition}|{study.data_id}|fold{fold}")
    sets = {"heldout": study.images[te], **dict(eval_sets or {})}
    return TrainJob(cfg, fp, (study.images[tr], targets[tr]), sets)


@dataclass
class FoldRuns:
    """Held-out and shift-set logits of every (arch, condition, lr, fold) run; ``diverged``:
    the runs whose loss or weights became NaN / inf -> the epoch it happened (their logits may
    be NaN; they are results, shown as diverged, never scored)."""
    folds: list[tuple[np.ndarray, np.ndarray]]
    logits: dict[tuple[str, str, float, int], dict[str, np.ndarray]]
    seconds: dict[tuple[str, str, float, int], float]
    diverged: dict[tuple[str, str, float, int], int | None] = field(default_factory=dict)


def run_generalisation(cache: ResultCache, study: StudyData, params: Mapping, shift: EvalSets,
                       device=None, seed: int = 0, progress: bool = True) -> FoldRuns:
    """Train (or load) every arch x condition x lr x fold of paper §5 and collect logits.

    The fold models of one (arch, condition, lr) train together on a GPU
    (``params['stack_models']``: 'auto', True or False; see :func:`softlib.train.train_cached_many`)."""
    folds = select_folds(study.labels, params["folds"], 10, seed)
    logits, seconds, diverged = {}, {}, {}
    for group in generalisation_jobs(study, params, shift, seed):
        entries = train_cached_many(cache, "peterson_scratch", [make() for _, make in group],
                                    device, progress, stack=params.get("stack_models", "auto"))
        for (key, _), e in zip(group, entries):
            logits[key] = {n[len("logits_"):]: v for n, v in e.arrays.items()
                           if n.startswith("logits_")}
            seconds[key] = float(e.meta["result"]["seconds"])
            if (dv := diverged_epoch(e)) is not None:
                diverged[key] = dv
    return FoldRuns(folds, logits, seconds, diverged)


def generalisation_jobs(study: StudyData, params: Mapping, shift: EvalSets, seed: int = 0
                        ) -> Iterator[list[tuple[tuple[str, str, float, int],
                                                 Callable[[], TrainJob]]]]:
    """Every training job of paper §5, in groups of one (arch, condition, lr): the fold models
    that train together on a GPU. Each job is keyed (arch label, condition, lr, fold) and made
    when called (its training images are a copy: a whole grid of them would not fit memory)."""
    folds = select_folds(study.labels, params["folds"], 10, seed)
    for arch in parse_archs(params["archs"]):
        for cond in CONDITIONS:
            for lr in params["lr"]:
                yield [((arch.label, cond, float(lr), k),
                        partial(scratch_job, study, arch, cond, lr, k, folds, params,
                                shift.images, seed))
                       for k in range(len(folds))]


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
    names = (["arch", "condition", "lr", "fold"] if isinstance(runs, FoldRuns)
             else ["arch", "method", "alpha", "lr", "fold"])
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
                row.update(accuracy=metrics.accuracy(p, y), ce=metrics.cross_entropy(p, y))
                if h is not None:
                    conf = metrics.confidence_by_correctness(p, y)
                    row.update(ce_human=metrics.cross_entropy(p, h),
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


# --------------------------------------------------------------------------------------------
# Section 3: pretraining on CIFAR-10, fine-tuning with alternative targets
# --------------------------------------------------------------------------------------------

#: Fine-tuning methods of Table 1, in the paper's order; mixup methods take an alpha.
METHODS = ("hard", "mixup_hard", "class_level", "distill", "soft", "sampled", "mixup_soft")
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


def pretrain_job(arch: Arch, params: Mapping, cifar_train, study: StudyData, seed: int = 0,
                 eval_sets: Mapping[str, np.ndarray] | None = None) -> TrainJob:
    """The training job of :func:`pretrain` (configuration, data, cache fingerprint)."""
    from ..data import views
    idx = stratified_subset(cifar_train.labels, params.get("pretrain_subset"), seed)
    cfg = pretrain_config(arch, arch.param(params, "pretrain_epochs"), params["batch_size"], seed,
                          params.get("amp", "auto"))
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
    from ..data import views
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
    from ..data import views

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
        cfgs[arch.label] = pretrain_config(arch, arch.param(params, "pretrain_epochs"), params["batch_size"],
                                           seed, params.get("amp", "auto"))
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
                         job.train_data, job.eval_sets, target_sampler=job.target_sampler,
                         device=device, progress=progress)
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
                         amp=params.get("amp", "auto"))
    teacher_tag = "+".join(sorted(pre.ids.values())) if method == "distill" else ""
    tag = (f"peterson-finetune|{method}|from={pre.ids[arch.label]}|teacher={teacher_tag}|"
           f"{study.data_id}|fold{fold}")
    fp = _fold_fingerprint(tr, te, targets, tag)
    state = pre.entries[arch.label].state_dict

    def build_pretrained(config: TrainConfig):
        from ..models import build
        model = build(config.arch, **config.arch_kwargs)
        model.load_state_dict(state)
        return model

    sampler = sampled_target_factory(study.human[tr]) if method == "sampled" else None
    sets = {"heldout": study.images[te], **dict(eval_sets or {})}
    job = TrainJob(cfg, fp, (study.images[tr], targets[tr]), sets, build_pretrained,
                   target_sampler=sampler)
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
    (``params['stack_models']``), except 'sampled' (its targets are redrawn every epoch)."""
    folds = select_folds(study.labels, params["folds"], 10, seed)
    extra = extra or EvalSets()
    logits, seconds, more, diverged = {}, {}, {}, {}
    for group in alternatives_jobs(study, pre, params, seed, methods, extra):
        entries = train_cached_many(cache, "peterson_finetune", [make() for _, make in group],
                                    device, progress, stack=params.get("stack_models", "auto"))
        for (key, _), e in zip(group, entries):
            logits[key] = e.arrays["logits_heldout"]
            seconds[key] = float(e.meta["result"]["seconds"])
            more[key] = {n: e.arrays[f"logits_{n}"] for n in extra.images}
            if (dv := diverged_epoch(e)) is not None:
                diverged[key] = dv
    return FinetuneRuns(folds, logits, seconds, more, dict(extra.labels), diverged)


def alternatives_jobs(study: StudyData, pre: Pretrained, params: Mapping, seed: int = 0,
                      methods: Sequence[tuple[str, float | None]] | None = None,
                      extra: EvalSets | None = None
                      ) -> Iterator[list[tuple[tuple, Callable[[], TrainJob]]]]:
    """Every fine-tuning job of paper §6, in groups of one (arch, method, alpha, lr) (the fold
    models that train together on a GPU), each keyed (arch label, method, alpha, lr, fold) and
    made when called."""
    folds = select_folds(study.labels, params["folds"], 10, seed)
    extra = extra or EvalSets()
    for arch in parse_archs(params["archs"]):
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

    def score(arch, method, alpha, lr, k, p, extra_probs, dv=(False, np.nan)):
        te = runs.folds[k][1]
        y, h = study.labels[te], study.human[te]
        row = {"arch": arch, "method": method, "alpha": alpha, "lr": lr, "fold": k}
        if dv[0] or not all(np.isfinite(q).all() for q in [p, *extra_probs.values()]):
            row.update(dict.fromkeys(("c10H", "c10", "accuracy", "sba", "v4", "v6"), np.nan),
                       diverged=True, diverged_epoch=dv[1])
            return row
        row.update({"c10H": metrics.cross_entropy(p, h), "c10": metrics.cross_entropy(p, y),
                    "accuracy": metrics.accuracy(p, y), "sba": metrics.second_best_accuracy(p, h)})
        for key, col in (("cifar10_1_v4", "v4"), ("cifar10_1_v6", "v6")):
            q = extra_probs.get(key)
            row[col] = metrics.cross_entropy(q, runs.extra_labels[key]) if q is not None else np.nan
        row.update(diverged=False, diverged_epoch=np.nan)
        return row

    for key, lg in runs.logits.items():
        dv = _run_divergence(runs, key, [lg, *runs.extra.get(key, {}).values()])
        if dv[0]:
            rows.append(score(*key, None, {}, dv))
            continue
        ex = {n: probs_of(v) for n, v in runs.extra.get(key, {}).items()}
        rows.append(score(*key, probs_of(lg), ex))
    present = list(runs.extra_labels)
    for k, (_, te) in enumerate(runs.folds):
        for arch in pre.entries:
            ex = {n: pre.probs(arch, n) for n in present}
            rows.append(score(arch, "pretrained", np.nan, np.nan, k, pre.probs(arch)[te], ex))
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
    ens = (ENSEMBLE, f"ensemble of {len(archs)} pretrained models") if (ENSEMBLE, "pretrained") in t1.index \
        else (archs[0].label, f"single pretrained model ({archs[0].label}); paper: ensemble of 8")
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
                      batch_size: int = 250) -> Entry:
    """FGSM at every eps (pixel units /255) and PGD at every ``pgd_eps`` (one bound or a list:
    the paper explored 4 to 8) on the first ``pgd_n`` images (cached).

    Arrays: ``fgsm_logits_<i>`` [N, C] for ``eps_list[i]``, ``clean_logits``, ``pgd_logits_<j>``
    and ``pgd_history_<j>`` (mean CE after 0..steps iterations) for the j-th PGD bound. CE is
    against the CIFAR-10 labels.
    Logits, not probabilities, so that the cross-entropy of an attacked image is not capped by
    the smallest float32 probability (Table 2's hard-label CE is 4-8 nats on average).
    """
    cfg = attack_config(key_cfg, images, labels, eps_list, pgd_eps, pgd_step,
                        pgd_steps, pgd_n, seed)
    return cache.get_or_compute("peterson_attack", cfg, lambda: _attack_logits(
        model, images, labels, eps_list, cfg["pgd_eps"], pgd_step, pgd_steps, pgd_n, device,
        seed, batch_size))


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
    :func:`attack_fold_model`)."""
    if entry.state_dict is None:
        raise ValueError(f"run_adversarial: the attack on {what} is not cached and that "
                         "model's weights are not in the cache either (a results bundle "
                         "exported without --with-weights adversarial?); compute the section "
                         "where the weights are, or import a bundle with them")
    from ..train import resolve_device
    return _attack_logits(load_model(entry, model_config), images, labels, eps_list, pgd_list,
                          pgd_step, pgd_steps, pgd_n,
                          device if device is not None else resolve_device(None), seed)


def _attack_logits(model, images, labels, eps_list, pgd_list, pgd_step, pgd_steps, pgd_n,
                   device, seed, batch_size: int = 250) -> Entry:
    from .. import attacks
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
    return Entry(arrays=arrays, meta={"eps": list(map(float, eps_list)),
                                      "pgd_eps": list(pgd_list)})


def attack_config(model: Mapping, images: np.ndarray, labels: np.ndarray,
                  eps_list: Sequence[float], pgd_eps: float | Sequence[float], pgd_step: float,
                  pgd_steps: int, pgd_n: int, seed: int = 0) -> dict[str, Any]:
    """The cache key of an attack on the model identified by ``model`` (e.g. ``{'finetune':
    <its cache key>}``)."""
    return dict(model, eps=list(map(float, eps_list)),
                pgd_eps=pgd_eps_list(pgd_eps), pgd_step=float(pgd_step),
                pgd_steps=int(pgd_steps), pgd_n=int(pgd_n),
                images=data_fingerprint(images, labels), seed=int(seed), stored="logits")


def _attacked_lr(cache: ResultCache, study: StudyData, pre: Pretrained, arch: Arch, method: str,
                 folds, alt_params: Mapping, device, seed: int, progress: bool,
                 train_missing: bool) -> tuple[float, bool]:
    """Table 1's learning rate of (arch, method): the lowest mean held-out c10H. Returns the
    rate and whether it is final (False: the models needed to choose are not cached yet)."""
    lrs = [float(x) for x in alt_params["lr"]]
    if len(lrs) == 1:
        return lrs[0], True
    best_lr, best = lrs[0], math.inf
    for lr in lrs:
        ces = []
        for k in range(len(folds)):
            if train_missing:
                e = finetune(cache, study, pre, arch, method, lr, k, folds, alt_params, None,
                             None, device, seed, progress)[0]
            else:
                job = finetune_job(study, pre, arch, method, lr, k, folds, alt_params, None,
                                   None, seed)[0]
                if not cache.has("peterson_finetune", job.key()):
                    return lrs[0], False
                e = cache.load("peterson_finetune", job.key())
            ces.append(metrics.cross_entropy(probs_of(e.arrays["logits_heldout"]),
                                             study.human[folds[k][1]]))
        if np.mean(ces) < best:
            best_lr, best = lr, float(np.mean(ces))
    return best_lr, True


def attack_jobs(cache: ResultCache, study: StudyData, pre: Pretrained, alt_params: Mapping,
                adv_params: Mapping, device=None, seed: int = 0, progress: bool = True,
                train_missing: bool = True) -> list[AttackJob]:
    """Every attack of paper §7: one per fine-tuned hard / soft fold model, on the images it
    held out. With ``train_missing`` (what :func:`run_adversarial` does) a fine-tuned model that
    is not cached yet is trained through :func:`finetune`; without it (a job plan) nothing is
    trained and an attack whose learning rate cannot be chosen yet is ``provisional``."""
    folds = select_folds(study.labels, alt_params["folds"], 10, seed)
    per_fold = int(math.ceil(adv_params["attack_subset"] / len(folds)))
    pgd_n = int(math.ceil(adv_params.get("pgd_subset", per_fold) / len(folds)))
    eps_list = [float(e) for e in adv_params["eps_sweep"]]
    pgd_list = pgd_eps_list(adv_params["pgd_eps"])
    out = []
    for arch in parse_archs(alt_params["archs"]):
        for method in ATTACK_METHODS:
            lr, final = _attacked_lr(cache, study, pre, arch, method, folds, alt_params, device,
                                     seed, progress, train_missing)
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
                                  seed),
                    "peterson_finetune", job.key(), run, provisional=not final))
    return out


def run_adversarial(cache: ResultCache, study: StudyData, pre: Pretrained, alt_params: Mapping,
                    adv_params: Mapping, device=None, seed: int = 0, progress: bool = True
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Attack every fine-tuned hard / soft fold model on the images it held out.

    The models are the alternatives section's (same :func:`finetune` call, so cached entries are
    reused; missing ones are trained through it). With several learning rates the one with the
    best held-out c10H is used, as in Table 1. ``attack_subset`` caps the attacked images per
    fold model (stratified). Returns (FGSM table: arch, condition, fold, eps, accuracy, ce;
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
