"""How a run of sections 2-4 differs from Peterson et al. (2019)'s budget, written from the run's
own parameters: a profile's page never reads another profile's description (the `gpu` book's
VGG-15-BN-64 and ResNet-110 are not "a ResNet-20 and a narrow VGG", nor is `paper` short)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .common import PAPER_TABLE1, PAPER_TABLE2, SHIFT_SETS, parse_archs

__all__ = ["PAPER_N_ARCHS", "PAPER_EPOCHS", "PAPER_FOLDS", "PAPER_LRS", "PAPER_MIXUP_ALPHAS",
           "generalisation_budget", "alternatives_budget", "adversarial_budget", "data_notes"]

#: the paper's budget: eight networks, up to 150 epochs (training from scratch, and fine-tuning),
#: 10 folds, Adam over these learning rates (§5), fine-tuning over these (§6), 10 mixup alphas
#: (0.1 ... 1.0)
PAPER_N_ARCHS, PAPER_EPOCHS, PAPER_FOLDS = 8, 150, 10
PAPER_LRS = {"generalisation": (0.2, 0.1, 0.01, 0.001), "alternatives": (0.1, 0.01, 0.001)}
PAPER_MIXUP_ALPHAS = 10

_UNDERFIT = ("Short training leaves every model under-fitted, so absolute accuracies are "
             "below the paper's and the hard-label models have not yet become over-confident, "
             "which is where most of the paper's cross-entropy gap comes from: the *direction* "
             "of the soft-vs-hard difference is the comparable quantity, its size is not. An "
             "under-fitted network can even favour the hard labels consistently over folds "
             "(one-hot targets give a stronger gradient early on).")


def _archs(params: Mapping[str, Any], epochs_param: str) -> tuple[str, int, int | None]:
    """``"VGG-15-BN-64 (30 epochs), ResNet-110 (20 epochs)"``, the number of architectures and the
    most epochs any of them trains (None: the repository's schedules)."""
    archs = parse_archs(params["archs"])
    epochs = [a.param(params, epochs_param) for a in archs]
    text = ", ".join(f"{a.label} ({'the repository schedule' if e is None else f'{e} epoch'}"
                     f"{'s' if e is not None and int(e) != 1 else ''})"
                     for a, e in zip(archs, epochs))
    known = [int(e) for e in epochs if e is not None]
    return text, len(archs), (max(known) if len(known) == len(epochs) else None)


def _folds(n: int, why: bool = False) -> str:
    """``all 10 folds, as in the paper`` or ``the first 3 of the 10 folds`` (``why``: and what
    that does to the error bars)."""
    return (f"all {PAPER_FOLDS} folds, as in the paper" if n >= PAPER_FOLDS else
            f"the first {n} of the {PAPER_FOLDS} folds" + (
                ", so the error bars rest on few points and the paired table says whether a "
                "difference exceeds the fold-to-fold spread" if why else ""))


def generalisation_budget(profile: str, params: Mapping[str, Any]) -> str:
    """Section 2's training budget against the paper's, as Markdown bullets."""
    text, n, most = _archs(params, "epochs")
    short = n < PAPER_N_ARCHS or (most is not None and most < PAPER_EPOCHS)
    lrs = tuple(float(x) for x in params["lr"])
    paper_lrs = PAPER_LRS["generalisation"]
    return "\n".join([
        f"* *Training budget and architectures.* Under the `{profile}` profile: {text}; the "
        f"paper trained {PAPER_N_ARCHS} networks for up to {PAPER_EPOCHS} epochs. "
        + (_UNDERFIT + " Where the paired table shows a small |t| or folds disagreeing in "
           "sign, this run cannot tell the two label types apart: the expected outcome of a "
           "short budget, not evidence against the paper, which compares networks trained to "
           "convergence (only the `paper` profile reaches it)." if short
           else "This is the paper's budget."),
        f"* *Folds.* This run uses {_folds(int(params['folds']), why=True)}.",
        f"* *Learning rate.* The paper searched {{{', '.join(map(str, paper_lrs))}}} with Adam "
        "and found 0.1 best; "
        + ("this run searches the same grid." if set(lrs) == set(paper_lrs) else
           f"this run uses {', '.join(map(str, lrs))}, suited to its schedule "
           f"({params.get('schedule', '?')})."),
    ])


def alternatives_budget(profile: str, params: Mapping[str, Any],
                        only_archs: Sequence[str] | None = None) -> str:
    """Section 3's pretraining, fine-tuning and grids against the paper's, as Markdown bullets
    (``only_archs``: the labels fine-tuned in this run, where not all are; all are pretrained)."""
    pre, n, pre_most = _archs(params, "pretrain_epochs")
    fine, _, fine_most = _archs(dict(params, archs=[
        a for a in params["archs"] if not only_archs or a[0] in only_archs]), "finetune_epochs")
    short = (n < PAPER_N_ARCHS or pre_most is not None
             or (fine_most is not None and fine_most < PAPER_EPOCHS))
    n_lr, n_alpha = len(params["lr"]), len(params["mixup_alpha"])
    return "\n".join([
        f"* *Budget.* The `{profile}` profile pretrains {pre} and fine-tunes {fine} on "
        f"{_folds(int(params['folds']))}; the paper pretrained with the repository's 160-300 "
        f"epoch schedules and fine-tuned for {PAPER_EPOCHS} epochs. "
        + ("Shorter pretraining gives weaker models than the paper's (the pretraining table "
           "above gives their accuracy), and short fine-tuning has less time to over-fit the "
           "hard labels, which in the paper left the hard-label control far behind the soft "
           f"run on c10H ({PAPER_TABLE1[('ResNet', 'hard')][0]:.2f} vs "
           f"{PAPER_TABLE1[('ResNet', 'soft')][0]:.2f} nats for ResNet): compare the "
           "soft-minus-hard gaps with the paper's, not the absolute numbers." if short
           else "This is the paper's budget."),
        f"* *Architectures and the ensemble.* The distillation teacher averages the {n} "
        f"pretrained model{'s' if n != 1 else ''} of this run"
        + (f", not the paper's {PAPER_N_ARCHS}." if n < PAPER_N_ARCHS else ", as in the paper."),
        f"* *Grids.* The paper searched {len(PAPER_LRS['alternatives'])} learning rates and "
        f"{PAPER_MIXUP_ALPHAS} mixup alphas per method and reported the best; this run searches "
        f"{n_lr} learning rate{'s' if n_lr != 1 else ''} and {n_alpha} alpha"
        f"{'s' if n_alpha != 1 else ''}"
        + (", so mixup is not tuned here." if n_alpha == 1 else "."),
    ])


def adversarial_budget(profile: str, params: Mapping[str, Any],
                       alternatives_params: Mapping[str, Any]) -> str:
    """Section 4's attacked models, images and PGD iterations against the paper's, as Markdown
    bullets (``alternatives_params``: section 3's, whose fine-tuned models are attacked)."""
    fine, n, most = _archs(alternatives_params, "finetune_epochs")
    weak = n < PAPER_N_ARCHS or (most is not None and most < PAPER_EPOCHS)
    attacked_ce = [v for row in PAPER_TABLE2.values() for v in row[2:]]  # CE hard, CE soft
    return "\n".join([
        f"* *Models.* The attacked models are section 3's under the `{profile}` profile: {fine} "
        f"of fine-tuning, against the paper's {PAPER_N_ARCHS} networks after {PAPER_EPOCHS} "
        "epochs. "
        + ("Shorter training gives weaker models than the paper's, whose attacked "
           f"cross-entropies span {min(attacked_ce):.1f}-{max(attacked_ce):.1f} nats "
           "(Table 2): the "
           "soft-vs-hard comparison below is the like-for-like test, the absolute numbers are "
           "not." if weak else "These are the paper's models."),
        f"* *Images.* FGSM attacks up to {int(params['attack_subset']):,} held-out CIFAR-10 test "
        f"images and PGD up to {int(params['pgd_subset']):,} of them (the paper: all 10,000).",
        f"* *PGD.* {int(params['pgd_steps'])} iterations at each bound "
        "(the box above); the paper does not state its step size or restarts, so the values "
        "here are this book's choice and are given above the figure.",
    ])


#: which CIFAR-10 images each section reads, for its pixels note
_IMAGES_READ = {
    "generalisation": "both the training images (CIFAR-10's test set, which CIFAR-10H labels) and "
                      "the CIFAR-10 evaluation images (its train set)",
    "alternatives": "both the pretraining images (CIFAR-10's train set) and the fine-tuning "
                    "images (its test set)",
    "adversarial": "the attacked images (held-out CIFAR-10 test images)",
}
#: the shift sets at the far end of the paper's shift axis, where its gap is largest
_FAR_SETS = ("cinic10", "imagenet_far")


def data_notes(section: str, cifar10_provenance: str,
               unavailable: Mapping[str, str] | None = None) -> str:
    """What this run's data do to a section's numbers, as Markdown bullets: its CIFAR-10 pixels
    (``cifar10_provenance``: the dataset's provenance text) and the evaluation sets it lacks
    (``unavailable``: key -> why, as in ``EvalSets.unavailable``). Written from the data root,
    so a user's canonical download never reads the offline mirror's caveats."""
    from ...data import pixel_origin
    if section not in _IMAGES_READ:
        raise ValueError(f"data_notes: unknown section {section!r}; known: "
                         f"{', '.join(_IMAGES_READ)}")
    origin = pixel_origin(cifar10_provenance)
    pixels = {
        "jpeg": f"The CIFAR-10 images on this machine are a JPEG re-encoding of the canonical "
                f"release (see the provenance page): {_IMAGES_READ[section]} carry the "
                "re-encoding's compression artefacts, which shifts every number slightly but "
                "not the comparison between label types.",
        "synthetic": "**The images are a synthetic fixture, not CIFAR-10**: no number on this "
                     "page is a result.",
        "canonical": "The CIFAR-10 pixels are those the provenance page names (not re-encoded).",
    }[origin]
    notes = [f"* *Pixels.* {pixels}"]
    unavailable = dict(unavailable or {})
    missing = [title for key, (title, _, _) in SHIFT_SETS.items() if key in unavailable]
    corruptions = [k for k in unavailable if k not in SHIFT_SETS]
    if section == "generalisation":
        if missing:
            far = any(k in unavailable for k in _FAR_SETS)
            notes.append(
                f"* *Missing shift sets.* {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not available under this data root "
                "(the data box above says why and how to get them), so "
                + ("the far end of the shift axis, where the paper's gap is largest, is missing "
                   "here." if far else "those columns are n/a here.")
                + (f" {len(corruptions)} corruption set(s) are absent too." if corruptions else
                   " The corruption sets stand in as an additional, different kind of shift."))
        else:
            notes.append("* *Shift sets.* Every shift set of the paper is present"
                         + (f"; {len(corruptions)} corruption set(s) are absent." if corruptions
                            else ", and the corruption sets add a different kind of shift."))
    elif section == "alternatives" and missing:
        notes.append(f"* *CIFAR-10.1.* {', '.join(missing)} "
                     f"{'is' if len(missing) == 1 else 'are'} not available under this data "
                     f"root, so {'its column is' if len(missing) == 1 else 'their columns are'} "
                     "n/a.")
    return "\n".join(notes)
