"""How often one person's label agrees with experts': ReaL's golden questions (Beyer et al. 2020).

Each golden question asks whether a proposed class fits an ImageNet val image; five experts and
78 crowd raters answered every question with no, maybe or yes (codes 0, 1, 2; -1 where a rater
was not asked; :func:`softlib.data.load_real_golden`). The experts' majority is the reference.
An expert is compared with the majority of the *other* experts, so that no one is scored
against a reference that includes their own answer. Intervals are Clopper-Pearson.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .multilabel import clopper_pearson

NO, MAYBE, YES = 0, 1, 2


def _check(codes: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(codes)
    if a.ndim != 2:
        raise ValueError(f"{what}: expected answers [raters, questions], got shape "
                         f"{list(a.shape)}")
    if not np.isin(a, (-1, NO, MAYBE, YES)).all():
        raise ValueError(f"{what}: answers must be -1 (not asked), 0 no, 1 maybe or 2 yes")
    return a


def majority(codes: np.ndarray) -> np.ndarray:
    """Per question, the answer most raters gave (-1 where nobody answered or the top answers
    tie: no majority to score against)."""
    a = _check(codes, "majority")
    counts = np.stack([(a == k).sum(0) for k in (NO, MAYBE, YES)], axis=1)
    top = counts.max(1)
    out = counts.argmax(1).astype(np.int8)
    out[(top == 0) | ((counts == top[:, None]).sum(1) > 1)] = -1
    return out


def agreement(codes: np.ndarray, reference: np.ndarray, alpha: float = 0.05) -> pd.DataFrame:
    """Per rater (row of ``codes``): ``n`` questions both answered and the reference decided,
    ``agree`` of them with the same answer, ``rate`` and its Clopper-Pearson ``lo``/``hi``, and
    ``maybe``: the share of the rater's answers that were 'maybe'."""
    a = _check(codes, "agreement")
    ref = np.asarray(reference)
    if ref.shape != (a.shape[1],):
        raise ValueError(f"agreement: reference must have one answer per question "
                         f"({a.shape[1]}), got shape {list(ref.shape)}")
    asked = (a >= 0) & (ref >= 0)[None, :]
    n = asked.sum(1)
    agree = ((a == ref[None, :]) & asked).sum(1)
    lo, hi = clopper_pearson(agree, np.maximum(n, 1), alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n > 0, agree / np.maximum(n, 1), np.nan)
        maybe = (a == MAYBE).sum(1) / np.maximum((a >= 0).sum(1), 1)
    return pd.DataFrame({"n": n, "agree": agree, "rate": rate,
                         "lo": np.where(n > 0, lo, np.nan), "hi": np.where(n > 0, hi, np.nan),
                         "maybe": maybe})


def _scored(codes: np.ndarray, reference: np.ndarray, alpha: float) -> pd.DataFrame:
    """:func:`agreement`, plus the same on the questions each rater answered yes or no
    (``decided_n``, ``decided_rate``, ``decided_lo``, ``decided_hi``): a rater's 'maybe'
    counts as a disagreement in ``rate`` (ReaL's experts gave none) but not here."""
    a = agreement(codes, reference, alpha)
    d = agreement(np.where(np.asarray(codes) == MAYBE, -1, codes), reference, alpha)
    return a.assign(decided_n=d["n"].to_numpy(), decided_rate=d["rate"].to_numpy(),
                    decided_lo=d["lo"].to_numpy(), decided_hi=d["hi"].to_numpy())


def golden_agreement(golden: dict, alpha: float = 0.05) -> pd.DataFrame:
    """Agreement with the experts on the golden questions, one row per person plus one for the
    raters' majority vote: ``who``, ``kind`` ('expert', 'rater', 'raters' majority'), the
    columns of :func:`agreement`, and the ``decided_*`` ones of the questions answered yes or
    no. Experts are scored leave-one-out (see the module)."""
    ex, ra = _check(golden["experts"], "experts"), _check(golden["raters"], "raters")
    if ex.shape[1] != ra.shape[1]:
        raise ValueError(f"golden_agreement: experts answered {ex.shape[1]} questions, raters "
                         f"{ra.shape[1]}; they must answer the same questions")
    if len(ex) < 3:
        raise ValueError("golden_agreement: need at least 3 experts (one left out, a majority "
                         "of the rest)")
    ref = majority(ex)
    rows = []
    expert_ids = golden.get("expert_ids", range(len(ex)))
    for i in range(len(ex)):
        others = majority(np.delete(ex, i, axis=0))
        rows.append(_scored(ex[i:i + 1], others, alpha).assign(
            who=f"expert {expert_ids[i]}", kind="expert"))
    ids = golden.get("rater_ids", range(len(ra)))
    rows.append(_scored(ra, ref, alpha).assign(who=[f"rater {r}" for r in ids], kind="rater"))
    rows.append(_scored(majority(ra)[None, :], ref, alpha).assign(
        who=f"majority of the {len(ra)} raters", kind="raters' majority"))
    out = pd.concat(rows, ignore_index=True)
    return out[["who", "kind", "n", "agree", "rate", "lo", "hi", "maybe", "decided_n",
                "decided_rate", "decided_lo", "decided_hi"]]


def expert_unanimity(experts: np.ndarray, alpha: float = 0.05) -> dict:
    """How often all experts gave the same answer: ``n`` questions, ``unanimous``, ``rate``,
    ``lo``, ``hi``; and ``yes``: the share whose experts' majority is 'yes'."""
    ex = _check(experts, "experts")
    answered = (ex >= 0).all(0)
    same = answered & (ex == ex[:1]).all(0)
    n, k = int(answered.sum()), int(same.sum())
    lo, hi = clopper_pearson(k, max(n, 1), alpha)
    ref = majority(ex)
    return {"n": n, "unanimous": k, "rate": k / n if n else float("nan"), "lo": float(lo),
            "hi": float(hi), "yes": float((ref == YES).sum() / max((ref >= 0).sum(), 1))}


def yes_share(raters: np.ndarray) -> np.ndarray:
    """Per question, the share of the raters who answered it that said 'yes': the crowd's soft
    label for "this class fits this image" (NaN where nobody answered)."""
    a = _check(raters, "raters")
    asked = (a >= 0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(asked > 0, (a == YES).sum(0) / np.maximum(asked, 1), np.nan)


def vote_counts(codes: np.ndarray) -> pd.DataFrame:
    """Per question: how many raters were ``asked`` and how many said ``no``, ``maybe``,
    ``yes``; ``unanimous`` when everyone asked gave the same answer."""
    a = _check(codes, "vote_counts")
    out = pd.DataFrame({"asked": (a >= 0).sum(0), "no": (a == NO).sum(0),
                        "maybe": (a == MAYBE).sum(0), "yes": (a == YES).sum(0)})
    top = out[["no", "maybe", "yes"]].max(axis=1)
    out["unanimous"] = (top == out["asked"]) & (out["asked"] > 0)
    return out


def vote_summary(votes: pd.DataFrame, images) -> dict:
    """ReaL's crowd votes at a glance, from :func:`vote_counts` and each question's image:
    ``questions``, ``images``, the median raters per question, the shares of questions all
    answered yes, all no and not unanimous (``split``), and the share of images with at least
    one split question."""
    asked = votes["asked"] > 0
    v, img = votes[asked], np.asarray(images)[asked.to_numpy()]
    split = ~v["unanimous"].to_numpy()
    per_image = pd.Series(split).groupby(img).any()
    return {"questions": int(len(v)), "images": int(per_image.size),
            "raters_per_question": float(v["asked"].median()),
            "all_yes": float((v["yes"] == v["asked"]).mean()),
            "all_no": float((v["no"] == v["asked"]).mean()),
            "split": float(split.mean()), "images_with_split": float(per_image.mean())}
