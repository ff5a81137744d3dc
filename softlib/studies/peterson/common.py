"""Peterson et al. (2019): what the three sections share: the paper's numbers, architectures,
training configurations, CIFAR-10H and the evaluation sets."""
from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ...train import TrainConfig, data_fingerprint

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


#: the architectures whose models this run fine-tunes and attacks (None: all); see only_archs
_FINE_TUNED: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "softlib_peterson_fine_tuned_archs", default=None)


@contextlib.contextmanager
def only_archs(labels: Iterable[str] | None):
    """Within the block, fine-tune and attack (sections 3 and 4) only the architectures labelled
    ``labels`` (None: all). Pretraining still covers every architecture: the distillation
    teacher is the ensemble of all pretrained models, so its targets, and the keys of every
    model fine-tuned on them, stay those of the full run. What lets sections 3-4 be computed
    architecture by architecture on machines that hold each only briefly."""
    token = _FINE_TUNED.set(None if labels is None else frozenset(labels))
    try:
        yield
    finally:
        _FINE_TUNED.reset(token)


def fine_tuned_archs(archs: Sequence[Arch]) -> list[Arch]:
    """``archs`` less those :func:`only_archs` leaves out."""
    keep = _FINE_TUNED.get()
    return [a for a in archs if keep is None or a.label in keep]


def select_folds(labels: np.ndarray, folds_run: int, k: int = 10, seed: int = 0
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``folds_run`` of Peterson et al.'s ``k`` stratified folds (9,000 / 1,000 at k=10)."""
    from ...data import splits
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


#: The repository's batch size where it is not 128 (protocols.md).
REPO_BATCH_SIZES = {"densenet_BC_100_12": 64}
#: The repository's augmentation where it is not crop + flip: the paper's Shake-Shake is
#: ``shake_shake_26_2x64d_SSI_cutout16``.
REPO_AUGMENT = {"shake_shake_26_2x64d_SSI": "crop_flip_cutout16"}
#: How sections 2 and 3 schedule training: 'cosine' (Adam, cosine decay to 0 over the run,
#: weight decay 1e-4, the profile's batch size: the small profiles) or 'repo' (the paper: Adam
#: at the chosen rate with everything else the training repository's recipe for the
#: architecture, cut at the run's epochs).
SCHEDULES = ("cosine", "repo")


def scratch_config(arch: Arch, lr: float, epochs: int, batch_size: int, seed: int = 0,
                   mix: str = "none", mix_alpha: float = 1.0, amp: Any = "auto",
                   schedule: str = "cosine", logits_precision: str = "float32") -> TrainConfig:
    """Training from scratch or fine-tuning (paper §5/§6) with Adam at ``lr``.

    ``schedule='cosine'``: cosine decay to 0 over ``epochs``, crop + flip, weight decay 1e-4,
    ``batch_size``. ``schedule='repo'``: "the default hyperparameters in the repository except
    for the learning rate", for at most ``epochs`` (the paper's 150): the architecture's weight
    decay, batch size, augmentation and learning-rate milestones (those past ``epochs`` never
    come; Shake-Shake's cosine keeps its 1,800-epoch horizon). ``amp``: bf16 autocast for
    training (True / False / 'auto' = CUDA only). ``logits_precision``: how the model's stored
    predictions are kept (:attr:`softlib.train.TrainConfig.logits_precision`)."""
    common = dict(arch=arch.name, arch_kwargs=arch.kwargs, optimizer="adam", lr=float(lr),
                  epochs=int(epochs), mix=mix, mix_alpha=float(mix_alpha), seed=int(seed), amp=amp,
                  logits_precision=logits_precision)
    if schedule == "cosine":
        return TrainConfig(weight_decay=SCRATCH_WEIGHT_DECAY, batch_size=int(batch_size),
                           schedule="cosine", augment="crop_flip", **common)
    if schedule != "repo":
        raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
    if arch.name not in REPO_SCHEDULES:
        raise ValueError(f"schedule='repo' needs the repository recipe of {arch.name!r}; known: "
                         f"{', '.join(REPO_SCHEDULES)} (or use schedule='cosine')")
    _, wd, repo_epochs, milestones, gamma = REPO_SCHEDULES[arch.name]
    if gamma == "cosine":
        sched = dict(schedule="cosine", schedule_epochs=int(repo_epochs))
    else:
        kept = [int(m) for m in milestones if m < int(epochs)]
        sched = (dict(schedule="multistep", milestones=kept, gamma=float(gamma)) if kept
                 else dict(schedule="constant"))
    return TrainConfig(weight_decay=float(wd),
                       batch_size=REPO_BATCH_SIZES.get(arch.name, int(batch_size)),
                       augment=REPO_AUGMENT.get(arch.name, "crop_flip"), **sched, **common)


def heldout_monitor(study: "StudyData", heldout: np.ndarray, params: Mapping[str, Any]
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """The held-out fold with its human labels as a per-epoch monitor (``val``) when
    ``params['heldout_per_epoch']``: the run then records held-out CE vs humans after every
    epoch, so tables report both the final epoch and the best one. It only watches: training,
    and the final weights, are the same with or without it."""
    if not params.get("heldout_per_epoch"):
        return None
    return study.images[heldout], study.human[heldout]


def pretrain_config(arch: Arch, epochs: int | None, batch_size: int, seed: int = 0,
                    amp: Any = "auto", logits_precision: str = "float32") -> TrainConfig:
    """Pretraining on CIFAR-10 (paper §6): SGD + Nesterov. When ``epochs`` is None (needs a
    known preset) the repository's whole recipe for the architecture, "the best
    hyperparameters": its schedule, weight decay, batch size (DenseNet 64) and augmentation
    (Shake-Shake's cutout 16); else ``epochs`` of cosine decay from 0.1 at ``batch_size``."""
    if epochs is None:
        if arch.name not in REPO_SCHEDULES:
            raise ValueError(f"pretrain_epochs=None needs the repository schedule of {arch.name!r}; "
                             f"known: {', '.join(REPO_SCHEDULES)} (or give pretrain_epochs)")
        lr, wd, ep, ms, gamma = REPO_SCHEDULES[arch.name]
        sched = dict(schedule="cosine") if gamma == "cosine" else dict(
            schedule="multistep", milestones=ms, gamma=gamma)
        return TrainConfig(arch=arch.name, arch_kwargs=arch.kwargs, optimizer="sgd", lr=lr,
                           weight_decay=wd, nesterov=True, momentum=0.9,
                           batch_size=REPO_BATCH_SIZES.get(arch.name, int(batch_size)), epochs=ep,
                           augment=REPO_AUGMENT.get(arch.name, "crop_flip"),
                           seed=int(seed), amp=amp, logits_precision=logits_precision, **sched)
    return TrainConfig(arch=arch.name, arch_kwargs=arch.kwargs, optimizer="sgd", lr=0.1,
                       weight_decay=5e-4, nesterov=True, momentum=0.9, batch_size=int(batch_size),
                       epochs=int(epochs), schedule="cosine", warmup_epochs=0,
                       augment="crop_flip", seed=int(seed), amp=amp,
                       logits_precision=logits_precision)


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
        from ...data import views
        return views.one_hot(self.labels, 10)


def load_study_data(root=None) -> StudyData:
    """CIFAR-10 test images + labels and CIFAR-10H probabilities (same order)."""
    from ... import data
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
    from ... import data
    from ...paths import data_root
    where = data_root(root) / name
    if name == "cifar10_1" and (where / f"cifar10.1_{split}_labels.npy").exists():
        return (f"only the CIFAR-10.1 {split} labels are under {where}; the images could not be "
                "brought to this machine (fetch them with `python -m softlib.data fetch cifar10_1`)")
    how = data.get_spec(name).how
    return f"not under {where} (to get it: {how})"


def load_shift_sets(eval_subset: int | None, root=None, seed: int = 0) -> EvalSets:
    """The shift sets other than the held-out folds, each cut to ``eval_subset`` images
    (stratified, seeded); absent sets are listed with the reason, never replaced."""
    from ... import data
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
    from ... import data
    from ...data import corruptions as corr
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
            ok = (data.available("cifar10_c", split, root)
                  and corr.is_current(data.dataset_dir("cifar10_c", root) / f"{split}.npz"))
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
