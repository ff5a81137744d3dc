"""The claims ledger: the three papers' headline claims, each beside what this build measured.

Every section that tests a headline claim has, right after its runs, an "In brief" cell that
computes the claim's number from what the section has just computed (``measure_<section>``:
paired soft-minus-hard differences over folds or seeds, and so on) and :func:`record`\\ s it,
with its uncertainty, the number of folds / seeds / people / images behind it and where it was
computed, in ``<book>/book/sections/claims/<section>.json`` (written atomically, one file per
section, so a section that runs again replaces exactly its own rows). Where the data a claim
needs are absent the section records it as *not measurable here*, naming the missing data. The
ledger page (``notebooks/00_claims.py``, the first page after the introduction, executed after
the sections it reads) turns the records into one table with :func:`ledger` and
:func:`ledger_html`; nothing in it is typed in except the claims themselves (:data:`CLAIMS`).
The papers' numbers are computed from the studies' ``PAPER_*`` / ``PUBLISHED_*`` constants
(:func:`paper_value`).

The verdict rule (:func:`verdict`, shown on the page as :data:`RULE_MARKDOWN`): each claim
predicts the sign of a quantity relative to a null value (0 for a difference, 1 for a ratio).
Its 95% confidence interval is the mean over folds / seeds plus or minus the Student-t quantile
(n - 1 degrees of freedom) times the standard error of the mean, or an interval the section
gives itself (McNemar's paired images: the exact interval from the discordant pairs).
*Beyond noise* means the interval excludes the null; with fewer than two folds or seeds, or
folds or seeds that all gave the same value, there is no noise estimate and nothing is beyond
noise. Then:

* **reproduced**: the paper's direction, beyond noise;
* **same direction, within noise**: the paper's direction, but not beyond noise;
* **no difference**: exactly the null (and not beyond noise);
* **opposite, within noise**: the opposite direction, not beyond noise;
* **contradicted**: the opposite direction, beyond noise;
* **not measurable here**: the data the claim needs are absent (which is said);
* **not measured in this build**: the section did not run (or ran under another profile).

The rule judges the direction only: the size of an effect is shown beside the paper's, and
the ledger's figure plots it relative to the paper's, but it does not enter the verdict.
"""
from __future__ import annotations

import html
import json
import math
import platform
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..intervals import confidence_interval
from ..intervals import is_finite as _finite
from .bundle import describe_runs, same_json

RECORD_FORMAT = 1
LEVEL = 0.95

REPRODUCED = "reproduced"
SAME_WITHIN_NOISE = "same direction, within noise"
NO_DIFFERENCE = "no difference"
OPPOSITE_WITHIN_NOISE = "opposite, within noise"
CONTRADICTED = "contradicted"
NOT_MEASURABLE = "not measurable here"
NOT_MEASURED = "not measured in this build"

#: Every verdict with its rule, in the order of the legend.
VERDICTS: dict[str, str] = {
    REPRODUCED: "the paper's direction, and the 95% interval excludes the null (beyond noise)",
    SAME_WITHIN_NOISE: "the paper's direction, but the 95% interval includes the null (or there "
                       "is no noise estimate: one fold / seed, or all of them equal)",
    NO_DIFFERENCE: "exactly the null (e.g. soft and hard equally accurate): neither direction",
    OPPOSITE_WITHIN_NOISE: "the opposite direction, but the 95% interval includes the null (or "
                           "no noise estimate)",
    CONTRADICTED: "the opposite direction, and the 95% interval excludes the null",
    NOT_MEASURABLE: "the data the claim needs are absent here (the row says which)",
    NOT_MEASURED: "the claim's section was not executed in this build (or under another profile)",
}
VERDICT_COLOURS = {REPRODUCED: "#1a7f37", SAME_WITHIN_NOISE: "#6a9f3a", NO_DIFFERENCE: "#8d6e63",
                   OPPOSITE_WITHIN_NOISE: "#b08800", CONTRADICTED: "#c62828",
                   NOT_MEASURABLE: "#777777", NOT_MEASURED: "#999999"}

RULE_MARKDOWN = (
    "**Verdict rule.** Each claim predicts the *sign* of one quantity relative to a null value "
    "(0 for a difference, 1 for a ratio). This build's 95% confidence interval is the mean over "
    "folds or seeds ± the Student-t quantile (n − 1 degrees of freedom) × its standard error. "
    "For paired images (two classifiers on the same images) it is the exact (Clopper-Pearson) "
    "interval of the difference given the images only one of them got right, which excludes "
    "the null exactly when McNemar's exact test rejects at the 5% level. "
    "*Beyond noise* means that the interval excludes the null; with one fold or seed, or folds "
    "or seeds that all gave the same value, there is no noise estimate, so nothing is beyond "
    "noise. The verdict judges the direction only; the size is shown beside the paper's.\n\n"
    + "\n".join(f"* **{v}**: {d}" for v, d in VERDICTS.items()))


# --------------------------------------------------------------------------------------------
# The claims
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    """One headline claim of a paper and where the book tests it.

    ``quantity`` says what the number is (its orientation and unit); ``expected`` is the sign
    of ``quantity - null`` that the paper's claim predicts; ``heading`` is the heading of the
    section's figure or table that shows it (the ledger links to it); ``paper_source`` says
    where the paper's number comes from (:func:`paper_value` computes it from the studies'
    constants; ``None`` where the paper gives no number for it)."""
    id: str
    study: str
    statement: str
    quantity: str
    section: str
    heading: str
    paper_source: str
    expected: int
    null: float = 0.0
    unit: str = ""


_PET, _LAING, _SHANKAR = "Peterson et al. 2019", "Laing 2024", "Shankar et al. 2020"
_FIG2 = "Accuracy and cross-entropy as the shift grows (paper Figure 2, left and centre)"
_LT1 = "Table 1: hard vs soft labels across model types"

CLAIMS: tuple[Claim, ...] = (
    Claim("peterson.heldout_ce_human", _PET,
          "Fine-tuning on human soft labels lowers held-out cross-entropy against the human labels",
          "soft − hard fine-tuned, c10H cross-entropy on the held-out folds", "alternatives",
          "Table 1 of this run", "Table 1, ResNet-110: FT soft − FT hard (c10H)", -1, unit="nats"),
    Claim("peterson.shift_ce_cifar10", _PET,
          "Soft labels generalise better under shift: lower cross-entropy on CIFAR-10's "
          "training images", "soft − hard, cross-entropy on CIFAR-10 train images",
          "generalisation", _FIG2, "Figure 2 (centre), mean of 8 CNNs: soft − hard", -1,
          unit="nats"),
    Claim("peterson.shift_ce_far", _PET,
          "… and far from the training distribution (ImageNet-Far), where the gap is largest",
          "soft − hard, cross-entropy on ImageNet-Far", "generalisation", _FIG2,
          "Figure 2 (centre), mean of 8 CNNs: soft − hard", -1, unit="nats"),
    Claim("peterson.shift_acc_cifar10", _PET,
          "Soft labels slightly raise accuracy on CIFAR-10's training images",
          "soft − hard, accuracy on CIFAR-10 train images", "generalisation", _FIG2,
          "Figure 2 (left), mean of 8 CNNs: soft − hard", +1),
    Claim("peterson.shift_acc_far", _PET,
          "… and on ImageNet-Far", "soft − hard, accuracy on ImageNet-Far", "generalisation",
          _FIG2, "Figure 2 (left), mean of 8 CNNs: soft − hard", +1),
    Claim("peterson.sba_gain", _PET,
          "Soft-label models pick the humans' second choice more often (second-best accuracy)",
          "soft − hard, second-best accuracy on the held-out folds", "generalisation",
          "Second-best accuracy on the held-out folds (paper Figure 2, right)",
          "Figure 2 (right): 'about +5 points'", +1),
    Claim("peterson.fgsm_ce_halved", _PET,
          "Under FGSM (eps 4/255) soft-label models have a lower cross-entropy (the paper: "
          "about half)",
          "soft / hard, cross-entropy under FGSM at eps 4/255 (ratio)", "adversarial",
          "FGSM at eps = 4/255 (paper Table 2)", "Table 2: mean over its 8 rows of CE soft / CE hard",
          -1, null=1.0, unit="ratio"),
    Claim("peterson.fgsm_acc", _PET,
          "Under FGSM (eps 4/255) soft-label models are about as accurate or slightly more",
          "soft − hard, accuracy under FGSM at eps 4/255", "adversarial",
          "FGSM at eps = 4/255 (paper Table 2)", "Table 2: mean over its 8 rows of soft − hard",
          +1),
    Claim("peterson.pgd_ce", _PET,
          "Under PGD the cross-entropy of soft-label models rises more slowly (lower at the end)",
          "soft − hard, cross-entropy after the last PGD iteration (smallest bound)",
          "adversarial", "PGD: cross-entropy vs iteration (paper Figure 4)",
          "Figure 4 (curves only, no number)", -1, unit="nats"),
    Claim("laing.accuracy", _LAING,
          "Soft labels raise the accuracy of ResNet-20", "soft − hard, test accuracy (basic ResNet-20)",
          "calibration_ood", _LT1, "Table 1, basic: soft − hard", +1, unit="points"),
    Claim("laing.ood_auroc", _LAING,
          "Soft labels improve OOD detection (AUROC against SVHN)",
          "soft − hard, OOD AUROC vs SVHN (basic ResNet-20, max logit)", "calibration_ood", _LT1,
          "Table 1, basic: soft − hard", +1),
    Claim("laing.ood_auroc_sngp", _LAING,
          "… also for SNGP, the best OOD detector", "soft − hard, OOD AUROC vs SVHN (SNGP)",
          "calibration_ood", _LT1, "Table 1, SNGP: soft − hard", +1),
    Claim("laing.ece", _LAING,
          "Soft labels raise the expected calibration error (against hard test labels)",
          "soft − hard, ECE (basic ResNet-20, 10 bins)", "calibration_ood",
          "Figure 1: reliability and proportion diagrams, hard vs soft",
          "Table 1, basic: soft − hard", +1),
    Claim("laing.attack", _LAING,
          "Soft labels make ResNet-20 more robust to FGSM (smaller attack decrease)",
          "soft − hard, FGSM attack decrease (basic ResNet-20)", "calibration_ood", _LT1,
          "Table 1, basic: soft − hard", -1),
    Claim("laing.dropout_defender", _LAING,
          "MC dropout is the best adversarial defender",
          "attack decrease of MC dropout (augmentation) minus that of the best of basic / SNGP / "
          "DUQ (lowest mean decrease), soft labels", "calibration_ood", _LT1,
          "Table 1, soft: dropout − min(basic, SNGP, DUQ)", -1),
    Claim("shankar.human_v2_drop", _SHANKAR,
          "People lose less accuracy than models from ImageNet to ImageNetV2",
          "mean drop of the people − median drop of the models (val − V2, multi-label accuracy)",
          "imagenet_humans", "2. Val vs V2 (Figure 1)",
          "Table 1: mean of Humans A-E − median of its 3 models", -1, unit="points"),
    Claim("shankar.models_v2_drop", _SHANKAR,
          "Models lose accuracy from ImageNet to ImageNetV2",
          "V2 − val accuracy, mean over models (here: top-1 of the timm zoo, per architecture)",
          "imagenet_humans",
          "5. The model zoo: ReaL labels and ImageNetV2 (runs without the human release)",
          "Table 1: mean of its 3 models (multi-label accuracy)", -1, unit="points"),
    Claim("shankar.human_beats_fixres_v2", _SHANKAR,
          "On ImageNetV2 a trained person (Human B) is more accurate than the best model "
          "(FixResNeXt, fixed in advance)",
          "Human B − FixResNeXt, multi-label accuracy on the V2 images both labelled",
          "imagenet_humans", "3. Subsets, the class bootstrap and McNemar's test (Table 2)",
          "Table 1: Human B − FixRes on V2 (McNemar p = 2e-4)", +1, unit="points"),
)

CLAIMS_BY_ID: dict[str, Claim] = {c.id: c for c in CLAIMS}


def claims_of(section: str) -> list[Claim]:
    return [c for c in CLAIMS if c.section == section]


def paper_value(claim_id: str) -> float | None:
    """The paper's number for a claim, computed from the studies' published constants (None
    where the paper gives the direction only)."""
    return _paper_values().get(claim_id)


_PAPER_CACHE: dict[str, float | None] = {}


def _paper_values() -> dict[str, float | None]:
    if _PAPER_CACHE:
        return _PAPER_CACHE
    from ..studies import laing as L
    from ..studies import peterson as P
    from ..studies import shankar as S
    t1 = P.PAPER_TABLE1
    t2 = np.array(list(P.PAPER_TABLE2.values()), dtype=float)  # acc hard, acc soft, CE hard, CE soft
    fig2 = P.PAPER_FIG2
    lt = {(r["model_type"], r["condition"]): r for r in L.PAPER_TABLE1}
    pub = S.PUBLISHED_TABLE1.set_index("who")
    drop = pub["paper_val"] - pub["paper_v2"]
    humans = pub.index[pub["kind"] == "human"]
    models = pub.index[pub["kind"] == "model"]
    _PAPER_CACHE.update({
        "peterson.heldout_ce_human": t1[("ResNet", "soft")][0] - t1[("ResNet", "hard")][0],
        "peterson.shift_ce_cifar10": fig2[("cifar10_train", "ce")][1] - fig2[("cifar10_train", "ce")][0],
        "peterson.shift_ce_far": fig2[("imagenet_far", "ce")][1] - fig2[("imagenet_far", "ce")][0],
        "peterson.shift_acc_cifar10": (fig2[("cifar10_train", "accuracy")][1]
                                       - fig2[("cifar10_train", "accuracy")][0]),
        "peterson.shift_acc_far": fig2[("imagenet_far", "accuracy")][1] - fig2[("imagenet_far", "accuracy")][0],
        "peterson.sba_gain": P.PAPER_FIG2_SBA_GAIN,
        "peterson.fgsm_ce_halved": float(np.mean(t2[:, 3] / t2[:, 2])),
        "peterson.fgsm_acc": float(np.mean(t2[:, 1] - t2[:, 0])),
        "peterson.pgd_ce": None,
        "laing.accuracy": lt[("basic", "soft")]["accuracy"] - lt[("basic", "hard")]["accuracy"],
        "laing.ood_auroc": lt[("basic", "soft")]["ood_auroc_svhn"] - lt[("basic", "hard")]["ood_auroc_svhn"],
        "laing.ood_auroc_sngp": lt[("sngp", "soft")]["ood_auroc_svhn"] - lt[("sngp", "hard")]["ood_auroc_svhn"],
        "laing.ece": lt[("basic", "soft")]["ece"] - lt[("basic", "hard")]["ece"],
        "laing.attack": lt[("basic", "soft")]["attack_decrease"] - lt[("basic", "hard")]["attack_decrease"],
        "laing.dropout_defender": (lt[("dropout_aug", "soft")]["attack_decrease"]
                                   - min(lt[(m, "soft")]["attack_decrease"]
                                         for m in ("basic", "sngp", "duq"))),
        "shankar.human_v2_drop": float(drop[humans].mean() - drop[models].median()),
        "shankar.models_v2_drop": float(-drop[models].mean()),
        "shankar.human_beats_fixres_v2": float(pub.loc["Human B", "paper_v2"] - pub.loc["FixRes", "paper_v2"]),
    })
    missing = set(CLAIMS_BY_ID) - set(_PAPER_CACHE)
    assert not missing, f"claims without a paper value entry: {sorted(missing)}"
    return _PAPER_CACHE


# --------------------------------------------------------------------------------------------
# The verdict rule
# --------------------------------------------------------------------------------------------

def verdict(estimate: float | None, expected: int, se: float | None = None, n: int | None = None,
            interval: Sequence[float] | None = None, null: float = 0.0, level: float = LEVEL,
            df: int | None = None) -> str:
    """The verdict of one claim (see :data:`VERDICTS`).

    ``estimate`` is this build's value of the claim's quantity (None or NaN: not measurable),
    ``expected`` the sign (+1 / -1) of ``estimate - null`` that the paper predicts. Noise is
    ``interval`` when given, else the Student-t interval of :func:`confidence_interval` from
    ``se`` and ``n`` folds / seeds. Beyond noise = the interval excludes ``null``; without an
    interval nothing is beyond noise. Same direction = ``sign(estimate - null) == expected``;
    an estimate exactly at the null (and not beyond noise) is *no difference*.
    """
    if expected not in (1, -1):
        raise ValueError(f"verdict: expected must be +1 or -1, got {expected!r}")
    if not _finite(estimate):
        return NOT_MEASURABLE
    est = float(estimate)
    if interval is not None:
        lo, hi = (float(v) for v in interval)
        if not (_finite(lo) and _finite(hi)) or lo > hi:
            raise ValueError(f"verdict: interval must be finite (lo, hi) with lo <= hi, got {interval!r}")
        ci: tuple[float, float] | None = (lo, hi)
    else:
        ci = confidence_interval(est, se, n, level, df)
    beyond = ci is not None and (ci[0] > null or ci[1] < null)
    if est == null and not beyond:
        return NO_DIFFERENCE
    same = np.sign(est - null) == expected
    if same:
        return REPRODUCED if beyond else SAME_WITHIN_NOISE
    return CONTRADICTED if beyond else OPPOSITE_WITHIN_NOISE


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

@dataclass
class Measurement:
    """This build's number for one claim: the estimate, its standard error over ``n`` units
    (``n_what``: folds, seeds, people, images), or an explicit ``interval``; ``reason`` says
    why a claim is not measurable (estimate None); ``note`` qualifies the number."""
    claim: str
    estimate: float | None
    se: float | None = None
    n: int | None = None
    n_what: str = "folds"
    interval: tuple[float, float] | None = None
    df: int | None = None
    reason: str = ""
    note: str = ""

    def ci(self) -> tuple[float, float] | None:
        if not _finite(self.estimate):
            return None
        if self.interval is not None:
            return (float(self.interval[0]), float(self.interval[1]))
        return confidence_interval(self.estimate, self.se, self.n, LEVEL, self.df)

    def verdict(self) -> str:
        c = CLAIMS_BY_ID[self.claim]
        return verdict(self.estimate, c.expected, self.se, self.n, self.interval, c.null, LEVEL,
                       self.df)


def not_measurable(claim: str, reason: str, note: str = "") -> Measurement:
    return Measurement(claim, None, reason=reason, note=note)


def from_units(claim: str, values: pd.Series | Sequence[float], n_what: str = "folds",
               note: str = "", reason: str = "no paired runs to compare") -> Measurement:
    """Mean and standard error of per-unit values (one per fold / seed); none: not measurable."""
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return not_measurable(claim, reason, note)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return Measurement(claim, float(v.mean()), se, int(len(v)), n_what, note=note)


def paired_by_unit(df: pd.DataFrame, value: str, col: str, a: str, b: str, unit: str = "fold",
                   within: Sequence[str] = (), how: str = "difference") -> pd.Series:
    """Per ``unit`` (fold or seed): ``value[a] - value[b]`` (or ``a / b`` with ``how='ratio'``)
    of rows with ``col == a`` and ``col == b`` matched on ``unit`` and ``within`` (e.g. the
    architecture), then averaged over ``within``. A unit that lacks either side for a
    ``within`` level that has both in other units is dropped whole, so that every unit averages
    over the same architectures (a fold with one missing would mix another population in)."""
    if df is None or df.empty or value not in df.columns:
        return pd.Series(dtype=float)
    keys = [unit, *within]
    wide = df.pivot_table(index=keys, columns=col, values=value, aggfunc="mean")
    if a not in wide.columns or b not in wide.columns:
        return pd.Series(dtype=float)
    if how == "difference":
        d = wide[a] - wide[b]
    elif how == "ratio":
        d = wide[a] / wide[b].where(wide[b] != 0)
    else:
        raise ValueError(f"how: expected 'difference' or 'ratio', got {how!r}")
    if len(keys) == 1:
        return d.replace([np.inf, -np.inf], np.nan).dropna()
    per_unit = d.replace([np.inf, -np.inf], np.nan).unstack(list(within))
    return per_unit.dropna(axis=1, how="all").dropna().mean(axis=1)


def _n_archs(df: pd.DataFrame) -> str:
    archs = list(dict.fromkeys(df["arch"])) if "arch" in df else []
    if len(archs) == 1:
        return f"architecture: {archs[0]}"
    return f"per fold, mean over {len(archs)} architectures ({', '.join(archs)})"


def measure_generalisation(df: pd.DataFrame, unavailable: Mapping[str, str] | None = None
                           ) -> list[Measurement]:
    """Section 2's claims from its long table (``peterson.generalisation_metrics`` after
    ``select_lr``); ``unavailable``: evaluation set -> why it is absent."""
    unavailable = dict(unavailable or {})
    note = _n_archs(df)
    out = []
    for cid, ds, metric in (("peterson.shift_ce_cifar10", "cifar10_train", "ce"),
                            ("peterson.shift_ce_far", "imagenet_far", "ce"),
                            ("peterson.shift_acc_cifar10", "cifar10_train", "accuracy"),
                            ("peterson.shift_acc_far", "imagenet_far", "accuracy"),
                            ("peterson.sba_gain", "heldout", "sba")):
        sub = df[df["dataset"] == ds]
        if sub.empty:
            why = unavailable.get(ds, "this evaluation set was not evaluated")
            out.append(not_measurable(cid, f"{_SET_NAMES.get(ds, ds)} absent: {why}"))
            continue
        out.append(from_units(cid, paired_by_unit(sub, metric, "condition", "soft", "hard",
                                                  "fold", ("arch",)), "folds", note))
    return out


_SET_NAMES = {"cifar10_train": "CIFAR-10 (train images)", "imagenet_far": "ImageNet-Far",
              "heldout": "CIFAR-10H held-out folds"}


def measure_alternatives(df: pd.DataFrame) -> list[Measurement]:
    """Section 3's claim from ``peterson.alternatives_metrics``: the grid point with the lowest
    held-out c10H per (arch, method), as Table 1 selects, then soft - hard per fold."""
    from ..studies import peterson as P
    ft = df[df["method"] != "pretrained"]
    sel = P.select_variants(ft) if not ft.empty else ft
    note = _n_archs(sel) + "; paper: ResNet-110 after 150 epochs of fine-tuning"
    return [from_units("peterson.heldout_ce_human",
                       paired_by_unit(sel, "c10H", "method", "soft", "hard", "fold", ("arch",)),
                       "folds", note)]


def measure_adversarial(fg: pd.DataFrame, pg: pd.DataFrame | None, eps: float = 4
                        ) -> list[Measurement]:
    """Section 4's claims from the FGSM table (at ``eps``/255, the paper's Table 2) and the PGD
    table (cross-entropy after the last iteration, at the smallest PGD bound)."""
    out = []
    sub = fg[fg["eps"] == eps] if fg is not None and len(fg) else pd.DataFrame()
    if sub.empty:
        why = f"FGSM was not run at eps {eps:g}/255 (the profile's eps_sweep)"
        out += [not_measurable("peterson.fgsm_ce_halved", why),
                not_measurable("peterson.fgsm_acc", why)]
    else:
        note = _n_archs(sub)
        out.append(from_units("peterson.fgsm_ce_halved", paired_by_unit(
            sub, "ce", "condition", "soft", "hard", "fold", ("arch",), how="ratio"), "folds", note))
        out.append(from_units("peterson.fgsm_acc", paired_by_unit(
            sub, "accuracy", "condition", "soft", "hard", "fold", ("arch",)), "folds", note))
    if pg is None or pg.empty:
        out.append(not_measurable("peterson.pgd_ce", "PGD was switched off (pgd_steps or "
                                                     "pgd_subset is 0 in this profile)"))
    else:
        last = pg[pg["step"] == pg["step"].max()]
        note = _n_archs(last)
        if "eps" in last.columns:
            e0 = float(last["eps"].min())
            last = last[last["eps"] == e0]
            note += f"; PGD bound {e0:g}/255"
        out.append(from_units("peterson.pgd_ce", paired_by_unit(
            last, "ce", "condition", "soft", "hard", "fold", ("arch",)), "folds", note))
    return out


def _seed_pair(runs: pd.DataFrame, model_type: str, metric: str) -> pd.Series:
    sub = runs[runs["model_type"] == model_type] if "model_type" in runs else runs.iloc[:0]
    return paired_by_unit(sub, metric, "condition", "soft", "hard", "seed")


def measure_calibration(runs: pd.DataFrame, ood: Mapping[str, Any] | None = None
                        ) -> list[Measurement]:
    """Section 5's claims from the grid's long table (one row per model type x condition x
    seed); ``ood``: OOD set name -> images or None where absent."""
    ood = dict(ood or {})
    types = set(runs["model_type"]) if "model_type" in runs else set()
    out = []

    def pair(cid, mt, metric, note=""):
        if mt not in types:
            return not_measurable(cid, f"model type {mt!r} is not among the model types this "
                                       "build computed (parameter model_types)")
        return from_units(cid, _seed_pair(runs, mt, metric), "seeds", note)

    out.append(pair("laing.accuracy", "basic", "accuracy"))
    for cid, mt in (("laing.ood_auroc", "basic"), ("laing.ood_auroc_sngp", "sngp")):
        col = "ood_auroc_svhn"
        if ood.get("svhn", True) is None or col not in runs or runs[col].isna().all():
            alt = ""
            if mt in types and "ood_auroc_fashion_mnist" in runs:
                d = _seed_pair(runs, mt, "ood_auroc_fashion_mnist")
                if len(d):
                    alt = (f"Fashion-MNIST (a farther OOD set, not the paper's) instead: soft − "
                           f"hard {d.mean():+.3f} over {len(d)} seed(s)")
            out.append(not_measurable(cid, "SVHN (dataset 'svhn', the paper's OOD set) is "
                                           "absent on this machine", alt))
        else:
            out.append(pair(cid, mt, col))
    out.append(pair("laing.ece", "basic", "ece"))
    out.append(pair("laing.attack", "basic", "attack_decrease"))
    others = [m for m in ("basic", "sngp", "duq") if m in types]
    if "dropout_aug" not in types or not others:
        out.append(not_measurable("laing.dropout_defender",
                                  "MC dropout (augmentation) or every other model type is not "
                                  "among the model types this build computed (parameter "
                                  "model_types)"))
    else:
        soft = runs[runs["condition"] == "soft"].pivot_table(
            index="seed", columns="model_type", values="attack_decrease", aggfunc="mean")
        cols = [m for m in others if m in soft.columns and soft[m].notna().any()]
        if "dropout_aug" in soft and cols:
            # as the paper's number: the other type with the lowest mean decrease, then paired
            # per seed (the lowest per seed would be biased low, against the claim)
            best = min(cols, key=lambda m: float(soft[m].mean()))
            d = soft["dropout_aug"] - soft[best]
            note = (f"soft labels; compared per seed with {best}, the lowest mean decrease of "
                    f"{', '.join(cols)}")
        else:
            d, note = pd.Series(dtype=float), "soft labels"
        out.append(from_units("laing.dropout_defender", d, "seeds", note))
    return out


def _mean_minus_median_se(people: pd.Series, models: pd.Series) -> tuple[float, int | None]:
    """Standard error and Welch-Satterthwaite degrees of freedom of ``mean(people) -
    median(models)``: the median's s.e. is the large-sample ``1.2533 s / sqrt(n)``. NaN (no
    noise estimate) unless both sides have at least two values."""
    nh, nm = len(people), len(models)
    if nh < 2 or nm < 2:
        return float("nan"), None
    var_h = float(people.var(ddof=1)) / nh
    var_m = 1.2533 ** 2 * float(models.var(ddof=1)) / nm
    if var_h + var_m <= 0:
        return 0.0, None
    dof = (var_h + var_m) ** 2 / (var_h ** 2 / (nh - 1) + var_m ** 2 / (nm - 1))
    return math.sqrt(var_h + var_m), max(1, int(math.floor(dof)))


def paired_difference_interval(a_only: int, b_only: int, n: int, level: float = LEVEL
                               ) -> tuple[float, tuple[float, float]]:
    """Accuracy of b minus that of a on ``n`` shared images, in points, with its exact interval.

    Given the ``a_only + b_only`` images only one of them got right, ``b_only`` is binomial
    with probability pi, and the difference is ``(a_only + b_only) (2 pi - 1) / n``; the
    Clopper-Pearson interval of pi makes an interval that excludes 0 exactly when McNemar's
    exact test rejects (a Wald interval rejects more often with few discordant images)."""
    from ..multilabel import clopper_pearson
    m = a_only + b_only
    est = 100.0 * (b_only - a_only) / n
    if m == 0:
        return est, (0.0, 0.0)
    lo, hi = clopper_pearson(b_only, m, alpha=1 - level)
    return est, (100.0 * m * (2 * float(lo) - 1) / n, 100.0 * m * (2 * float(hi) - 1) / n)


_RELEASE_ABSENT = ("the human-study release (dataset 'imagenet_human', human_accuracy.pickle) "
                   "is absent on this machine")


def _zoo_v2_drop(zoo: pd.DataFrame) -> Measurement:
    """Claim 17 over the timm zoo, one unit per architecture: the weights of one network (e.g.
    a dozen ``resnet50.*`` recipes) are not independent draws, and counting each would shrink
    the interval as the zoo grows more variants."""
    from ..multilabel import per_architecture
    d = zoo["v2_minus_val"].dropna()
    named = "model" in zoo.columns
    per_arch = per_architecture(zoo, "v2_minus_val") if named else d
    unit = "architectures" if named else "models"
    return from_units("shankar.models_v2_drop", per_arch, unit,
                      f"top-1 of today's timm models on ImageNetV2 (matched frequency) vs ImageNet "
                      f"val: {int((d < 0).sum())} of {len(d)} models lose accuracy (range "
                      f"{d.min():+.1f} to {d.max():+.1f}); mean and interval over {len(per_arch)} "
                      f"{unit}, each the mean of its weights; the paper: multi-label accuracy of "
                      "its models")


def measure_imagenet(study: Any | None, zoo: pd.DataFrame | None) -> list[Measurement]:
    """Section 6's claims from the human study (``shankar.HumanStudy``, None without the
    release) and the timm zoo table (``shankar.zoo_study``'s first value, None without ReaL)."""
    out = []
    if study is None:
        out.append(not_measurable("shankar.human_v2_drop", _RELEASE_ABSENT))
    else:
        t1 = study.table1.dropna(subset=["val", "v2"])
        dh = (t1["val"] - t1["v2"])[t1["kind"] == "human"].astype(float)
        dm = (t1["val"] - t1["v2"])[t1["kind"] == "model"].astype(float)
        if len(dh) < 1 or len(dm) < 1:
            out.append(not_measurable("shankar.human_v2_drop",
                                      "the release lacks people or models with val and V2 images"))
        else:
            se, dof = _mean_minus_median_se(dh, dm)
            out.append(Measurement(
                "shankar.human_v2_drop", float(dh.mean() - dm.median()), se, int(len(dh)),
                "people", df=dof,
                note=f"{len(dh)} people vs the median of {len(dm)} models on the human-labelled "
                     "images; s.e. combines the people's spread and the models' median (the "
                     "large-sample 1.2533 s / √n, rough for few models), Welch's degrees of "
                     "freedom"))
    if zoo is None or "v2_minus_val" not in zoo or zoo["v2_minus_val"].dropna().empty:
        out.append(not_measurable("shankar.models_v2_drop",
                                  "the timm results with ImageNetV2 (dataset 'imagenet_real') are "
                                  "absent on this machine"))
    else:
        out.append(_zoo_v2_drop(zoo))
    if study is None:
        out.append(not_measurable("shankar.human_beats_fixres_v2", _RELEASE_ABSENT))
    else:
        mc = study.mcnemar
        row = mc[(mc["dataset"] == "v2") & (mc["other"] == "human_b")] if not mc.empty else mc
        if row.empty or int(row.iloc[0]["n"]) == 0:
            out.append(not_measurable("shankar.human_beats_fixres_v2",
                                      "the release has no V2 images labelled by both Human B and "
                                      "the fixed model"))
        else:
            r = row.iloc[0]
            n, a, b = int(r["n"]), int(r["a_only"]), int(r["b_only"])
            est, interval = paired_difference_interval(a, b, n)
            out.append(Measurement(
                "shankar.human_beats_fixres_v2", est, None, n, "paired images",
                interval=interval,
                note=f"{r['model']} (fixed in advance); {a + b} images only one of them got "
                     f"right; McNemar p = {float(r['pvalue']):.2g}"))
    return out


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------

def records_dir() -> Path:
    """Where the sections' claim records live: ``<book>/book/sections/claims`` (the book
    directory is ``$SOFTLIB_BOOK_DIR`` when set, see :func:`softlib.book.book_root`)."""
    from .toc import sections_dir
    return sections_dir() / "claims"


def _part_of(recorded: Any, params: Mapping[str, Any]) -> str | None:
    """The list parameter in which ``params`` (a section rendered from some of its parts, a
    `gpu` book's model types computed so far) keeps fewer items than the ``recorded`` run's,
    every other parameter the same; None where they are not such a part."""
    if not isinstance(recorded, Mapping) or set(recorded) != set(params):
        return None
    differ = [k for k in params if not same_json(recorded[k], params[k])]
    if len(differ) != 1:
        return None
    key = differ[0]
    whole, sub = recorded[key], params[key]
    if not (isinstance(whole, list) and isinstance(sub, list) and sub and len(sub) < len(whole)):
        return None
    if not all(any(same_json(x, w) for w in whole) for x in sub):
        return None
    return key


def provenance(sec: Any) -> dict[str, Any]:
    """Profile, device and machine behind a section's numbers, from its header object ``sec``.

    The numbers were computed here unless the profile's results manifest (written by
    ``python -m softlib.book compute``, or imported with a results bundle) records this section
    complete with the same parameters and the notebook trained nothing itself: then they come
    from the machine the manifest names (a GPU bundle, say)."""
    from . import bundle
    here = bundle.provenance(sec.device)
    rendered = {"device": here.get("device_name", sec.device), "machine": platform.node()}
    computed, source = dict(rendered), "executed here"
    try:
        man = bundle.load_manifest(sec.profile)
    except (OSError, ValueError):
        man = None
    rec = (man or {}).get("sections", {}).get(sec.name)
    misses = getattr(getattr(sec, "cache", None), "misses", 0)
    # a section rendered from the complete part of a run the manifest records (a `gpu` book's
    # model types computed so far) came from that run's machine as much as the whole would have
    part_of_run = _part_of(rec.get("params"), sec.params) if rec else None
    only = getattr(sec, "only_archs", None)  # sections 3-4 by architecture (compute --archs)
    run_had = set((rec or {}).get("only_archs") or [])
    if rec and not misses and (part_of_run or (
            same_json(rec.get("params"), sec.params)
            and (rec.get("complete") or (only and set(only) <= run_had)))):
        # the runs that computed the results, not the last one that only read them; a record
        # that lists none (it trained nothing itself): the machine it names
        runs = bundle.computed_by(rec) or [bundle.machine_of(rec.get("provenance", {}))]
        computed = {"device": " + ".join(dict.fromkeys(r["device_name"] for r in runs)),
                    "machine": ", ".join(dict.fromkeys(r["machine"] for r in runs))}
        if len({(r["device_name"], r["machine"]) for r in runs}) > 1:
            computed["runs"] = runs  # in slices on several machines: each is named
        if rec.get("imported"):
            source = "imported results bundle"
        elif computed["machine"] != rendered["machine"]:
            source = "results cache, computed on another machine"
    from . import profiles
    try:  # fewer items than the profile's in one list parameter: the ledger says partial
        part = _part_of(profiles.resolve(sec.profile, sec.name), sec.params)
    except profiles.ProfileError:  # a section or profile the profiles do not know (tests)
        part = None
    part = part or ("archs" if only else None)
    return {"profile": sec.profile, "synthetic": bool(getattr(sec, "synthetic", False)),
            "commit": here.get("git_commit"), "date": here.get("date"),
            "computed_on": computed, "rendered_on": rendered, "source": source,
            **({"partial": part} if part else {})}


def record(sec: Any, measurements: Sequence[Measurement], directory: str | Path | None = None
           ) -> pd.DataFrame:
    """Write the claims of section ``sec.name`` (every registered claim of the section, once)
    to ``<records_dir>/<section>.json`` atomically, replacing the section's earlier records;
    return them as a table for the section to show."""
    from .._io import save_json
    section = sec.name
    want = {c.id for c in claims_of(section)}
    got = [m.claim for m in measurements]
    unknown = sorted(set(got) - want)
    if unknown:
        raise ValueError(f"record: claim(s) {unknown} do not belong to section {section!r}; "
                         f"its claims: {sorted(want)}")
    dup = sorted({c for c in got if got.count(c) > 1})
    missing = sorted(want - set(got))
    if dup or missing:
        raise ValueError(f"record: section {section!r} must record each of its claims once; "
                         f"duplicated {dup}, missing {missing}")
    prov = provenance(sec)
    rows = {}
    for m in measurements:
        ci = m.ci()
        rows[m.claim] = {**{k: v for k, v in asdict(m).items()},
                         "estimate": float(m.estimate) if _finite(m.estimate) else None,
                         "se": float(m.se) if _finite(m.se) else None,
                         "ci": list(ci) if ci else None, "verdict": m.verdict()}
    doc = {"format": RECORD_FORMAT, "section": section, "profile": sec.profile,
           "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "provenance": prov, "claims": rows}
    path = Path(directory) if directory is not None else records_dir()
    save_json(path / f"{section}.json", doc)
    return pd.DataFrame([{"claim": CLAIMS_BY_ID[c].statement, "paper": _fmt_paper(CLAIMS_BY_ID[c]),
                          "this build": _fmt_value(r, CLAIMS_BY_ID[c]), "n": _fmt_n(r),
                          "verdict": r["verdict"], "note": r["reason"] or r["note"]}
                         for c, r in rows.items()]).set_index("claim")


#: the HTML class of an "In brief" table (book/_static/softlib.css gives its claim column room)
IN_BRIEF_CLASS = "softlib-in-brief"


def styled(recorded: pd.DataFrame):
    """A section's recorded claims (:func:`record`'s table) with each verdict in its ledger
    colour, for the section's "In brief" near its top."""
    sty = recorded.style.set_table_attributes(f'class="{IN_BRIEF_CLASS}"')
    colour = getattr(sty, "map", None) or sty.applymap  # Styler.map from pandas 2.1
    return colour(lambda v: f"color:{VERDICT_COLOURS.get(v, '#333')};font-weight:bold",
                  subset=["verdict"])


def load_records(directory: str | Path | None = None) -> dict[str, dict]:
    """Section -> its record document, for every readable record file."""
    d = Path(directory) if directory is not None else records_dir()
    out = {}
    for p in sorted(d.glob("*.json")) if d.exists() else []:
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("format") == RECORD_FORMAT and "section" in doc:
            out[doc["section"]] = doc
    return out


# --------------------------------------------------------------------------------------------
# The ledger
# --------------------------------------------------------------------------------------------

def _num(x: float, unit: str = "") -> str:
    if not _finite(x):
        return "n/a"
    ax = abs(float(x))
    digits = 2 if unit == "points" or ax >= 10 else 3
    s = f"{float(x):.{digits}f}" if ax >= 0.01 or ax == 0 else f"{float(x):.2g}"
    return s.replace("-", "−")


def _signed(x: float, unit: str = "") -> str:
    s = _num(x, unit)
    return s if s.startswith("−") or s == "n/a" or unit == "ratio" else "+" + s


def _unit(claim: Claim) -> str:
    return f" {claim.unit}" if claim.unit and claim.unit != "ratio" else ""


def _fmt_value(r: Mapping[str, Any], claim: Claim) -> str:
    if r.get("estimate") is None:
        return "n/a"
    s = _signed(r["estimate"], claim.unit) + _unit(claim)
    if r.get("ci"):
        s += f" [{_signed(r['ci'][0], claim.unit)}, {_signed(r['ci'][1], claim.unit)}]"
    else:
        s += f" ({_no_interval_why(r)})"
    return s


def _no_interval_why(r: Mapping[str, Any]) -> str:
    """Why a recorded measurement has no interval, in the words of its units."""
    what = str(r.get("n_what") or "units")
    if r.get("n") == 1:
        return f"no interval: one {_singular(what)}"
    if r.get("se") == 0:
        return f"no interval: all {r['n']} {what} gave the same value"
    return "no interval"


def _fmt_n(r: Mapping[str, Any]) -> str:
    if not r.get("n"):
        return "–"
    what = str(r.get("n_what") or "")
    return f"{r['n']} {_singular(what) if r['n'] == 1 else what}".strip()


def _singular(what: str) -> str:
    """'folds' -> 'fold', 'paired images' -> 'paired image', 'people' -> 'person'."""
    return "person" if what == "people" else what[:-1] if what.endswith("s") else what


def _fmt_paper(claim: Claim) -> str:
    v = paper_value(claim.id)
    if v is None:
        return "direction only"
    return _signed(v, claim.unit) + _unit(claim)


def section_pages() -> dict[str, tuple[str, str]]:
    """Section -> (page stem, page title) from the notebooks (their first '# ' heading)."""
    from .toc import NOTEBOOKS, SECTIONS
    out = {}
    for s, f in SECTIONS.items():
        title = s
        try:
            for line in (NOTEBOOKS / f).read_text().splitlines():
                if line.startswith("# # "):
                    title = line[4:].strip()
                    break
        except OSError:
            pass
        out[s] = (Path(f).stem, title)
    return out


def anchor(heading: str) -> str:
    """The HTML id Sphinx gives a section titled ``heading`` (docutils ``make_id``)."""
    try:
        from docutils.nodes import make_id
        return make_id(heading)
    except ImportError:  # the same rule, for environments without docutils
        s = re.sub(r"[^a-z0-9]+", "-", " ".join(heading.lower().split()))
        return re.sub(r"^[-0-9]+|-+$", "", s)


def ledger(profile: str, records: Mapping[str, dict] | None = None) -> pd.DataFrame:
    """One row per registered claim: the paper's number, this build's (with its interval), n,
    the verdict, where it was computed, and the link to the section's figure. Claims whose
    section has no record under ``profile`` are 'not measured in this build'."""
    records = load_records() if records is None else records
    pages = section_pages()
    rows = []
    for i, c in enumerate(CLAIMS, 1):
        doc = records.get(c.section)
        stem, title = pages.get(c.section, (c.section, c.section))
        base = {"#": i, "id": c.id, "study": c.study, "claim": c.statement, "quantity": c.quantity,
                "paper": _fmt_paper(c), "paper value": paper_value(c.id),
                "paper source": c.paper_source, "section": title,
                "link": f"{stem}.html#{anchor(c.heading)}", "figure": c.heading}
        r = (doc or {}).get("claims", {}).get(c.id)
        if doc is None or doc.get("profile") != profile or r is None:
            why = ("its section was not executed in this build" if doc is None else
                   f"its section's last record is from profile '{doc.get('profile')}' "
                   f"({doc.get('written', '?')}), not '{profile}'" if doc.get("profile") != profile
                   else "its section recorded no value for it")
            rows.append({**base, "this build": "–", "estimate": None, "ci": None, "n": "–",
                         "verdict": NOT_MEASURED, "note": why, "profile / device": "–"})
            continue
        prov = doc.get("provenance", {})
        comp, rend = prov.get("computed_on", {}), prov.get("rendered_on", {})
        who = (describe_runs(comp["runs"]) if comp.get("runs") else
               f"{comp.get('device', '?')} ({comp.get('machine', '?')})")
        where = (f"{prov.get('profile', profile)} · {who} · recorded "
                 f"{str(doc.get('written', '?'))[:10]}")
        if comp != rend:
            where += f"; rendered on {rend.get('device', '?')} ({rend.get('machine', '?')})"
        if prov.get("source") and prov["source"] != "executed here":
            where += f"; from {prov['source']}"
        if prov.get("partial"):
            where += (f"; partial section: fewer {prov['partial'].replace('_', ' ')} than "
                      "the profile's")
        v = verdict(r.get("estimate"), c.expected, r.get("se"), r.get("n"), r.get("interval"),
                    c.null, LEVEL, r.get("df"))
        rows.append({**base, "this build": _fmt_value(r, c), "estimate": r.get("estimate"),
                     "ci": r.get("ci"), "n": _fmt_n(r), "verdict": v,
                     "note": "; ".join(x for x in (r.get("reason"), r.get("note")) if x),
                     "profile / device": where})
    return pd.DataFrame(rows)


def shared_provenance(table: pd.DataFrame) -> str | None:
    """The one "profile / device" every measured row shares, or None if they differ (a book
    rendered from bundles computed on several machines) or nothing was measured."""
    where = {w for w in table["profile / device"] if w != "–"}
    return where.pop() if len(where) == 1 else None


def ledger_html(table: pd.DataFrame) -> str:
    """The ledger as an HTML table: the claims under one heading row per study, one ``<tr
    data-claim=...>`` per claim, verdicts coloured, each row linking to the section's figure.
    Where every measured row comes from the same profile and machine, that is said once above
    the table instead of in a column."""
    e = html.escape
    shared = shared_provenance(table)
    head = ["#", "claim", "paper", "this build (95% interval)", "n", "verdict"]
    head += ([] if shared else ["profile / device"]) + ["where"]
    th = "<th style='text-align:left;border-bottom:1px solid #888;padding:2px 4px'>"
    out = [f"<p style='font-size:0.85em'>Every measured row: {e(shared)}.</p>" if shared else "",
           '<table class="softlib-claims" style="font-size:0.85em;border-collapse:collapse">',
           "<thead><tr>" + "".join(f"{th}{h}</th>" for h in head) + "</tr></thead><tbody>"]
    td = "<td style='vertical-align:top;border-bottom:1px solid #ddd;padding:2px 4px'>"
    study = None
    for _, r in table.iterrows():
        if r["study"] != study:
            study = r["study"]
            out.append(f"<tr class='softlib-study'><th colspan='{len(head)}' style='text-align:"
                       "left;padding:8px 4px 2px;border-bottom:1px solid #888'>"
                       f"{e(study)}</th></tr>")
        col = VERDICT_COLOURS.get(r["verdict"], "#333")
        note = f"<br><small style='color:#555'>{e(str(r['note']))}</small>" if r["note"] else ""
        where = "" if shared else f"{td}<small>{e(r['profile / device'])}</small></td>"
        out.append(
            f"<tr data-claim='{e(r['id'])}'>{td}{r['#']}</td>"
            f"{td}{e(r['claim'])}<br><small style='color:#555'>{e(r['quantity'])}</small></td>"
            f"{td}{e(r['paper'])}<br><small style='color:#555'>{e(r['paper source'])}</small></td>"
            f"{td}{e(r['this build'])}{note}</td>{td}{e(str(r['n']))}</td>"
            f"<td class='verdict' data-verdict='{e(r['verdict'])}' style='vertical-align:top;"
            f"border-bottom:1px solid #ddd;padding:2px 4px;color:{col};font-weight:bold'>"
            f"{e(r['verdict'])}</td>{where}"
            f"{td}<a href='{e(r['link'])}'>{e(r['section'])}</a><br><small>"
            f"<a href='{e(r['link'])}'>{e(r['figure'])}</a></small></td></tr>")
    out.append("</tbody></table>")
    return "\n".join(x for x in out if x)


def _count(n: int, what: str) -> str:
    return f"{'none' if n == 0 else n} {what}"


def summary_markdown(table: pd.DataFrame, profile: str) -> str:
    """The ledger's answer in a few sentences, computed from the table: how many claims this
    build measured and how many got each verdict, per study; what a reader sees first."""
    counts = verdict_counts(table)
    v = counts.sum()  # over the studies: verdict -> claims
    n = len(table)
    measured = n - int(v.get(NOT_MEASURABLE, 0)) - int(v.get(NOT_MEASURED, 0))
    noisy = [f"{int(v[k])} {what}" for k, what in (
        (SAME_WITHIN_NOISE, "in the same direction but within noise"),
        (OPPOSITE_WITHIN_NOISE, "in the opposite direction but within noise"),
        (NO_DIFFERENCE, "with no difference at all")) if v.get(k, 0)]
    lines = [f"**In brief.** This `{profile}` build measured **{measured} of the papers' {n} "
             f"headline claims**: **{_count(int(v.get(REPRODUCED, 0)), 'reproduced')}** (the "
             "paper's direction, beyond noise); " + "".join(f"{x}; " for x in noisy)
             + f"{_count(int(v.get(CONTRADICTED, 0)), 'contradicted')} (the opposite direction, "
             "beyond noise)."]
    missing = [(NOT_MEASURABLE, "could not be measured: the data they need are absent on the "
                                "machine that built this book (their rows say which)"),
               (NOT_MEASURED, "were not measured: their sections were not executed in this "
                              "build, or under another profile")]
    lines += [f"{int(v[k])} {why}." for k, why in missing if v.get(k, 0)]
    per = [f"* {study}: " + "; ".join(f"{int(c[k])} {k}" for k in VERDICTS if c[k])
           for study, c in counts.iterrows()]
    return " ".join(lines) + "\n\n" + "\n".join(per)


def verdict_counts(table: pd.DataFrame) -> pd.DataFrame:
    """How many claims got each verdict, per study (every verdict listed, zeros included; the
    studies in the ledger's order)."""
    t = pd.crosstab(table["study"], pd.Categorical(table["verdict"], categories=list(VERDICTS)),
                    dropna=False)
    t.columns.name = "verdict"
    return t.reindex(list(dict.fromkeys(table["study"])))


def plot_verdicts(table: pd.DataFrame):
    """The verdicts at a glance: one bar per study, its claims counted by verdict, in the
    verdicts' colours."""
    import matplotlib.pyplot as plt
    counts = verdict_counts(table)
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(counts) + 1.2))
    left = np.zeros(len(counts))
    for v in VERDICTS:
        k = counts[v].to_numpy(dtype=float)
        ax.barh(range(len(counts)), k, left=left, color=VERDICT_COLOURS[v], label=v,
                edgecolor="white")
        for y, (x0, w) in enumerate(zip(left, k)):
            if w:
                ax.text(x0 + w / 2, y, str(int(w)), ha="center", va="center", color="white",
                        fontsize=9, fontweight="bold")
        left += k
    ax.set_yticks(range(len(counts)), counts.index)
    ax.set_ylim(len(counts) - 0.5, -0.5)
    ax.set_xlabel("claims")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="verdict",
              title_fontsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def _two_lines(text: str, width: int = 52) -> str:
    """``text`` wrapped to at most two lines of ``width`` characters (an ellipsis ends what
    does not fit), so a claim's label stays readable beside its row."""
    import textwrap
    lines = textwrap.wrap(text, width)
    if len(lines) <= 2:
        return "\n".join(lines)
    return lines[0] + "\n" + textwrap.shorten(" ".join(lines[1:]), width, placeholder=" …")


def plot_ledger(table: pd.DataFrame):
    """Each claim's effect in this build relative to the paper's (1 = the paper's size, 0 = no
    effect, < 0 = the opposite direction), with its 95% interval, coloured by verdict. Claims
    without a paper number or a measurement are listed without a point."""
    import matplotlib.pyplot as plt
    n = len(table)
    fig, ax = plt.subplots(figsize=(11, 0.55 * n + 1.6))
    lim = 3.0
    labels = []
    for y, (_, r) in enumerate(table.iterrows()):
        c = CLAIMS_BY_ID[r["id"]]
        pv = r["paper value"]
        labels.append(_two_lines(f"{r['#']}. {c.statement}"))
        col = VERDICT_COLOURS.get(r["verdict"], "#333")
        if not _finite(r["estimate"]) or not _finite(pv) or pv == c.null:
            why = "no number in the paper" if _finite(r["estimate"]) else r["verdict"]
            ax.text(0, y, why, ha="center", va="center", fontsize=8, color=col, style="italic")
            continue
        scale = float(pv) - c.null
        x = (float(r["estimate"]) - c.null) / scale
        if r["ci"]:
            lo, hi = sorted(((float(v) - c.null) / scale for v in r["ci"]))
            ax.plot([max(lo, -lim), min(hi, lim)], [y, y], color=col, lw=2, alpha=0.7)
        ax.plot(np.clip(x, -lim, lim), y, "o" if abs(x) <= lim else ">" if x > 0 else "<",
                color=col, ms=6)
    ax.axvline(0, color="k", lw=0.8)
    ax.axvline(1, color="grey", lw=0.8, ls=":")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("this build's effect / the paper's (0: none; 1, dotted: the paper's size; "
                  "< 0: opposite); bars: 95% interval")
    for v, colr in VERDICT_COLOURS.items():
        ax.plot([], [], "o", color=colr, label=v)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="verdict",
              title_fontsize=7)
    ax.set_title("Claims ledger: effect relative to the paper's, coloured by verdict", fontsize=10)
    fig.tight_layout()
    return fig
