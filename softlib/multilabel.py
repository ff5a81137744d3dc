"""Shankar et al. (2020)'s multi-label analysis of ImageNet: humans vs models.

Every function here takes the human-study release as a plain ``dict`` with the schema of
``human_accuracy.pickle`` (``labeled_images``, ``image_map``, ``image_labels``, ``wnid_map``,
``annot_data``, ``split_wnids``; see ``softlib.data.load_imagenet_human``), or tables derived
from it, so that the analysis is testable on a small hand-written release.

The central object is the *prediction frame* (:func:`prediction_frame`): one row per
(user, image) with the prediction and whether it is correct under multi-label accuracy (the
prediction is in the image's reviewed ``correct`` labels) and under top-1 accuracy (it equals
the original ImageNet label ``wnid_map[id]``). Problematic images are dropped there, once, so
that no accuracy ever counts them. Every accuracy is reported in percent with a 95%
Clopper-Pearson interval.

Rules taken from the authors' public analysis code, stated so a reader can check them:

* an id starting with ``ILSVRC2012_val_`` is an ImageNet validation image, any other id an
  ImageNetV2 image;
* a *fast* image has a median labelling time over the five humans below 60 seconds (the paper
  says "at most 60 seconds"; the code uses ``< 60``, and so do we). Times are ``end - start``
  of the ``extra_info`` date strings, in total seconds (the code uses ``timedelta.seconds``,
  which agrees for any duration under a day);
* the class-subset bootstrap draws as many classes as the subset has, without replacement,
  from all classes present, 1,000 times; a subset's change in accuracy counts as significant
  only when it lies outside the *whole* range of those trials (beyond every one of them, as
  the paper states), not merely outside their central 95%;
* McNemar's test compares the humans with one model fixed in advance, the paper's
  FixResNeXt-101 32x48d v2 (release user ``FixResNeXt101_32x48d_v2``, as named in the
  authors' notebook), not with whichever model scores best on these images.
"""
from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

VAL_PREFIX = "ILSVRC2012_val_"
HUMANS: tuple[str, ...] = ("human_a", "human_b", "human_c", "human_d", "human_e")
HUMAN_MAJORITY = "human_majority"
MODEL_MAJORITY = "model_majority"
ORGANISM_KEY = ("organism",)
DOG_KEY = ("organism", "dog")
OBJECT_KEY = ("object",)
DATASETS: tuple[str, ...] = ("val", "v2")
FAST_SECONDS = 60.0
#: The model McNemar's test uses, fixed before looking at the data: the paper's "FixResNeXt"
#: (Shankar et al. 2020, Section 4), under its user name in the release (the authors'
#: notebook lists ``'FixResNeXt101_32x48d_v2'``; their plotting code compares it lower-cased).
PAPER_MCNEMAR_MODEL = "FixResNeXt101_32x48d_v2"

_REQUIRED_KEYS = ("labeled_images", "image_map", "image_labels", "wnid_map", "annot_data",
                  "split_wnids")


# --------------------------------------------------------------------------- basic views
def check_release(release: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming what is missing if ``release`` lacks the keys used here."""
    if not isinstance(release, Mapping):
        raise ValueError(f"release: expected a dict (human_accuracy.pickle), got {type(release)!r}")
    missing = [k for k in _REQUIRED_KEYS if k not in release]
    if missing:
        raise ValueError(f"release: missing top-level keys {missing}; expected {_REQUIRED_KEYS}")
    for key in (DOG_KEY, OBJECT_KEY):
        if key not in release["split_wnids"]:
            raise ValueError(f"release['split_wnids']: missing key {key!r}")


def dataset_of(image_id: str) -> str:
    """``'val'`` for an ImageNet validation id (``ILSVRC2012_val_...``), else ``'v2'``."""
    return "val" if str(image_id).startswith(VAL_PREFIX) else "v2"


def user_kind(user: str) -> str:
    """``'human'`` (A-E), ``'human_majority'``, ``'model_majority'`` or ``'model'``."""
    if user in HUMANS:
        return "human"
    if user in (HUMAN_MAJORITY, MODEL_MAJORITY):
        return user
    return "model"


def model_users(release: Mapping[str, Any]) -> list[str]:
    """The individual models among ``annot_data``'s users (majority votes excluded), sorted."""
    return sorted(u for u in release["annot_data"] if user_kind(u) == "model")


def class_group(wnid: str, split_wnids: Mapping[tuple, Iterable[str]]) -> str:
    """``'dog'``, ``'organism'`` (non-dog), ``'object'`` or ``'other'`` for a class wnid."""
    if wnid in set(split_wnids[DOG_KEY]):
        return "dog"
    if ORGANISM_KEY in split_wnids and wnid in set(split_wnids[ORGANISM_KEY]):
        return "organism"
    if wnid in set(split_wnids[OBJECT_KEY]):
        return "object"
    return "other"


def usable_images(release: Mapping[str, Any]) -> list[str]:
    """Labelled images that are not marked problematic (sorted if the release holds a set)."""
    images = release["labeled_images"]
    if isinstance(images, (set, frozenset)):
        images = sorted(images)
    out = []
    for image in images:
        info = release["image_map"].get(image)
        if info is None:
            raise ValueError(f"release['image_map']: no entry for labelled image {image!r}")
        if not bool(info.get("problematic", False)):
            out.append(image)
    return out


def human_images(release: Mapping[str, Any]) -> set[str]:
    """Usable images that at least one of the five humans labelled (the paper's 2,000)."""
    usable = set(usable_images(release))
    labelled: set[str] = set()
    for h in HUMANS:
        labelled.update(release["annot_data"].get(h, {}).keys())
    return usable & labelled


def has_top5(release: Mapping[str, Any]) -> bool:
    """Whether any model entry carries top-5 predictions (the known schema has only ``label``)."""
    for user in model_users(release):
        for entry in release["annot_data"][user].values():
            return isinstance(entry, Mapping) and entry.get("top5") is not None
    return False


def prediction_frame(release: Mapping[str, Any], users: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (user, image) over usable images: prediction and its correctness.

    Columns: ``user``, ``kind`` (:func:`user_kind`), ``image``, ``dataset`` (val / v2),
    ``wnid`` (original label), ``group`` (dog / organism / object / other), ``pred``,
    ``multilabel`` (bool), ``top1`` (bool) and, where the release has top-5 predictions,
    ``top5`` (1.0 if the original label is among them, NaN where a user has none). Entries for
    images that are not labelled or are problematic are dropped.
    """
    check_release(release)
    usable = usable_images(release)
    index = {img: k for k, img in enumerate(usable)}
    labels, wnids, split = release["image_labels"], release["wnid_map"], release["split_wnids"]
    correct_sets, true = [], []
    for image in usable:
        try:
            correct_sets.append(frozenset(labels[image]["correct"]))
            true.append(wnids[image])
        except (KeyError, TypeError) as e:
            raise ValueError(f"release: image {image!r} lacks image_labels[...]['correct'] or a "
                             f"wnid_map entry ({e!r})") from None
    users = list(release["annot_data"]) if users is None else list(users)
    u_col, i_col, p_col, ml_col, t1_col, t5_col = [], [], [], [], [], []
    any_top5 = False
    for user in users:
        if user not in release["annot_data"]:
            raise ValueError(f"release['annot_data']: no user {user!r}")
        for image, entry in release["annot_data"][user].items():
            k = index.get(image)
            if k is None:
                continue
            try:
                pred = entry["label"]
            except (KeyError, TypeError):
                raise ValueError(f"release['annot_data'][{user!r}][{image!r}]: expected a dict "
                                 f"with 'label', got {entry!r}") from None
            top5 = entry.get("top5")
            u_col.append(user)
            i_col.append(k)
            p_col.append(pred)
            ml_col.append(pred in correct_sets[k])
            t1_col.append(pred == true[k])
            if top5 is None:
                t5_col.append(np.nan)
            else:
                any_top5 = True
                t5_col.append(float(true[k] in top5))
    idx = np.asarray(i_col, dtype=np.int64)
    img_arr = np.asarray(usable, dtype=object)
    true_arr = np.asarray(true, dtype=object)
    ds_arr = np.asarray([dataset_of(i) for i in usable], dtype=object)
    groups = {w: class_group(w, split) for w in set(true)}
    grp_arr = np.asarray([groups[w] for w in true], dtype=object)
    kinds = {u: user_kind(u) for u in users}
    df = pd.DataFrame({
        "user": u_col, "kind": [kinds[u] for u in u_col], "image": img_arr[idx],
        "dataset": ds_arr[idx], "wnid": true_arr[idx], "group": grp_arr[idx], "pred": p_col,
        "multilabel": np.asarray(ml_col, dtype=bool), "top1": np.asarray(t1_col, dtype=bool)})
    if any_top5:
        df["top5"] = np.asarray(t5_col, dtype=float)
    return df


# --------------------------------------------------------------------------- accuracy + CIs
def clopper_pearson(successes, n, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) binomial interval as fractions, via statsmodels' ``beta`` method."""
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(np.asarray(successes), np.asarray(n), alpha=alpha, method="beta")
    return np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)


def accuracy_table(frame: pd.DataFrame, by: Sequence[str] = ("user", "dataset"),
                   alpha: float = 0.05) -> pd.DataFrame:
    """Accuracy in percent with Clopper-Pearson intervals, per group of ``by``.

    For each metric column present (``multilabel``, ``top1``, ``top5``) the table has
    ``<m>`` (percent), ``<m>_lo``, ``<m>_hi`` and ``<m>_correct``; ``n`` counts images.
    """
    metrics = [m for m in ("multilabel", "top1", "top5") if m in frame]
    g = frame.groupby(list(by), observed=True, sort=True)
    out = g.size().rename("n").to_frame()
    for m in metrics:
        k = g[m].sum()
        nm = g[m].count()  # top5 may be missing for some rows
        lo, hi = np.full(len(k), np.nan), np.full(len(k), np.nan)
        has = nm.to_numpy() > 0
        if has.any():
            lo[has], hi[has] = clopper_pearson(k.to_numpy()[has], nm.to_numpy()[has], alpha)
        out[f"{m}_correct"] = k.astype(int)
        out[m] = 100.0 * k / nm.where(nm > 0)
        out[f"{m}_lo"] = 100.0 * lo
        out[f"{m}_hi"] = 100.0 * hi
    out = out.reset_index()
    if "user" in out:
        out.insert(1, "kind", out["user"].map(user_kind))
    return out


def wide_val_v2(acc: pd.DataFrame, metric: str = "multilabel") -> pd.DataFrame:
    """Per user: ``val``, ``v2`` accuracy of ``metric`` and their CI bounds, side by side."""
    cols = [metric, f"{metric}_lo", f"{metric}_hi", "n"]
    w = acc.pivot(index="user", columns="dataset", values=cols)
    w.columns = [f"{d}" if c == metric else f"{d}_{c.replace(metric + '_', '')}"
                 for c, d in w.columns]
    w = w.reset_index()
    w.insert(1, "kind", w["user"].map(user_kind))
    return w


# --------------------------------------------------------------------------- fast images
_PAREN_TZ = re.compile(r"\s*\([^)]*\)\s*$")


def parse_time(value: Any) -> pd.Timestamp:
    """Parse one ``extra_info`` time (date string, datetime or epoch number) to a UTC timestamp.

    Strings go through ``pandas.to_datetime``; a trailing parenthesised zone name as written by
    JavaScript (``"... GMT-0800 (Pacific Standard Time)"``) is dropped first. Numbers are epoch
    seconds, or milliseconds when above 1e11.
    """
    if isinstance(value, (_dt.datetime, pd.Timestamp)):
        ts = pd.Timestamp(value)
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        v = float(value)
        ts = pd.Timestamp(v / 1000.0 if v > 1e11 else v, unit="s")
    elif isinstance(value, str):
        s = _PAREN_TZ.sub("", value.strip())
        try:
            ts = pd.to_datetime(s)
        except (ValueError, TypeError) as e:
            raise ValueError(f"cannot parse labelling time {value!r}: {e}") from None
    else:
        raise ValueError(f"labelling time: expected a date string, datetime or number, got {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def parse_times(values: Sequence[Any]) -> pd.DatetimeIndex:
    """Parse many labelling times at once (UTC); same rules as :func:`parse_time`.

    Strings are parsed together by ``pandas.to_datetime`` (one inferred format, else
    ``format="mixed"``); anything else, or a string pandas rejects, goes through
    :func:`parse_time`, whose error names the offending value.
    """
    vals = list(values)
    if vals and all(isinstance(v, str) for v in vals):
        stripped = [_PAREN_TZ.sub("", v.strip()) for v in vals]
        for fmt in (None, "mixed"):
            try:
                return pd.DatetimeIndex(pd.to_datetime(stripped, utc=True, format=fmt))
            except (ValueError, TypeError):
                continue
    return pd.DatetimeIndex([parse_time(v) for v in vals])


def labelling_times(release: Mapping[str, Any], humans: Sequence[str] = HUMANS) -> pd.DataFrame:
    """Seconds each human spent per usable image: columns ``user``, ``image``, ``seconds``."""
    usable = set(usable_images(release))
    users, images, starts, ends = [], [], [], []
    for h in humans:
        for image, entry in release["annot_data"].get(h, {}).items():
            if image not in usable:
                continue
            info = entry.get("extra_info") if isinstance(entry, Mapping) else None
            if not isinstance(info, Mapping) or "start_time" not in info or "end_time" not in info:
                raise ValueError(f"release['annot_data'][{h!r}][{image!r}]: expected extra_info "
                                 "with start_time and end_time")
            users.append(h)
            images.append(image)
            starts.append(info["start_time"])
            ends.append(info["end_time"])
    secs = (parse_times(ends) - parse_times(starts)).total_seconds() if users else []
    return pd.DataFrame({"user": users, "image": images, "seconds": np.asarray(secs, dtype=float)})


def fast_images(release: Mapping[str, Any], threshold: float = FAST_SECONDS,
                times: pd.DataFrame | None = None) -> set[str]:
    """Images whose median labelling time over the humans is strictly below ``threshold`` s."""
    times = labelling_times(release) if times is None else times
    med = times.groupby("image")["seconds"].median()
    return set(med.index[med < threshold])


# --------------------------------------------------------------------------- subsets
def subset_mask(frame: pd.DataFrame, subset: str, release: Mapping[str, Any] | None = None,
                fast: set[str] | None = None) -> pd.Series:
    """Boolean row mask of ``frame`` for ``'all'``, ``'without dogs'``, ``'objects only'``, ``'fast'``."""
    if subset == "all":
        return pd.Series(True, index=frame.index)
    if subset == "without dogs":
        return frame["group"] != "dog"
    if subset == "objects only":
        return frame["group"] == "object"
    if subset == "fast":
        if fast is None:
            if release is None:
                raise ValueError("subset 'fast' needs the release or a precomputed fast set")
            fast = fast_images(release)
        return frame["image"].isin(fast)
    raise ValueError(f"subset: expected one of 'all', 'without dogs', 'objects only', 'fast'; got {subset!r}")


def class_bootstrap(correct: np.ndarray, classes: np.ndarray, k: int, trials: int = 1000,
                    seed: int = 0) -> np.ndarray:
    """Accuracy (percent) on ``trials`` random sets of ``k`` classes drawn without replacement.

    ``correct`` (bool per image) and ``classes`` (label per image) describe one user on one
    dataset. Each trial draws ``k`` of the distinct classes and computes accuracy over the
    images of those classes: the spread expected from removing classes at random, against which
    a named subset (no dogs, objects only) is judged.
    """
    correct = np.asarray(correct, dtype=float)
    classes = np.asarray(classes)
    if correct.shape != classes.shape:
        raise ValueError(f"class_bootstrap: correct {correct.shape} and classes {classes.shape} differ")
    uniq, inv = np.unique(classes, return_inverse=True)
    c = len(uniq)
    if not 1 <= k <= c:
        raise ValueError(f"class_bootstrap: k must be in 1..{c} (distinct classes), got {k}")
    n_c = np.bincount(inv, minlength=c).astype(float)
    k_c = np.bincount(inv, weights=correct, minlength=c)
    rng = np.random.default_rng(seed)
    draws = np.argsort(rng.random((trials, c)), axis=1)[:, :k]
    return 100.0 * k_c[draws].sum(axis=1) / n_c[draws].sum(axis=1)


def outside_bootstrap(change: float, boot: np.ndarray) -> bool:
    """Whether ``change`` lies strictly beyond every bootstrap change (the paper's rule).

    Shankar et al. call a subset's change significant when it exceeds all 1,000 random class
    subsets, i.e. when it is below their minimum or above their maximum; a change inside the
    full range is not significant even if it falls outside the central 95%.
    """
    boot = np.asarray(boot, dtype=float)
    if boot.size == 0 or not np.isfinite(change):
        raise ValueError(f"outside_bootstrap: need a finite change and >= 1 trial, got "
                         f"change={change!r} and {boot.size} trials")
    return bool(change < boot.min() or change > boot.max())


def subset_table(frame: pd.DataFrame, release: Mapping[str, Any] | None = None,
                 users: Sequence[str] | None = None, fast: set[str] | None = None,
                 metric: str = "multilabel", trials: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> pd.DataFrame:
    """Table 2: accuracy per user and dataset on all images and on each subset.

    ``change`` is subset minus all (percentage points). For the class subsets (without dogs,
    objects only) ``boot_min``/``boot_max`` are the smallest and largest change over the
    ``trials`` draws of :func:`class_bootstrap` with as many classes as the subset has, and
    ``outside`` says whether the observed change lies beyond that whole range
    (:func:`outside_bootstrap`, the paper's rule).
    """
    if fast is None and release is not None:
        fast = fast_images(release)
    users = sorted(frame["user"].unique()) if users is None else list(users)
    rows = []
    for ui, user in enumerate(users):
        for di, ds in enumerate(DATASETS):
            sub = frame[(frame["user"] == user) & (frame["dataset"] == ds)]
            if sub.empty:
                continue
            base = 100.0 * int(sub[metric].sum()) / len(sub)
            for subset in ("all", "without dogs", "objects only", "fast"):
                if subset == "fast" and fast is None:
                    continue
                part = sub[subset_mask(sub, subset, fast=fast)]
                n, k = len(part), int(part[metric].sum())
                row = {"user": user, "kind": user_kind(user), "dataset": ds, "subset": subset,
                       "n": n, "n_classes": part["wnid"].nunique(), "accuracy": np.nan,
                       "lo": np.nan, "hi": np.nan, "change": np.nan,
                       "boot_min": np.nan, "boot_max": np.nan, "outside": pd.NA}
                if n:
                    lo, hi = clopper_pearson(k, n, alpha)
                    row.update(accuracy=100.0 * k / n, lo=100.0 * float(lo), hi=100.0 * float(hi),
                               change=100.0 * k / n - base)
                if subset in ("without dogs", "objects only") and n:
                    # one stream per (user, dataset, subset) so results do not depend on order
                    s = np.random.SeedSequence([seed, ui, di, 0 if subset == "without dogs" else 1])
                    boot = class_bootstrap(sub[metric].to_numpy(), sub["wnid"].to_numpy(),
                                           row["n_classes"], trials,
                                           int(s.generate_state(1)[0])) - base
                    row.update(boot_min=float(boot.min()), boot_max=float(boot.max()),
                               outside=outside_bootstrap(row["change"], boot))
                rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- paired tests
def mcnemar_test(a_correct: np.ndarray, b_correct: np.ndarray, exact_below: int = 25) -> dict:
    """McNemar's paired test on two users' correctness over the same images.

    Uses statsmodels' exact binomial version when the discordant pairs number fewer than
    ``exact_below``, else the chi-square version with continuity correction.
    Returns counts ``a_only`` (a right, b wrong), ``b_only``, ``both``, ``neither``, ``n``,
    the ``statistic``, ``pvalue`` and whether ``exact`` was used.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar_test: paired arrays differ in shape {a.shape} vs {b.shape}")
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    disc = int(table[0, 1] + table[1, 0])
    exact = disc < exact_below
    res = mcnemar(table, exact=exact, correction=True)
    return {"n": int(a.size), "both": int(table[0, 0]), "a_only": int(table[0, 1]),
            "b_only": int(table[1, 0]), "neither": int(table[1, 1]),
            "statistic": float(res.statistic), "pvalue": float(res.pvalue), "exact": exact}


def best_model_post_hoc(acc: pd.DataFrame, metric: str = "multilabel") -> str:
    """The model with the highest accuracy pooled over the rows of ``acc`` (both datasets).

    Chosen *after* seeing the data, so only for display: McNemar's test uses the model fixed
    in advance (:data:`PAPER_MCNEMAR_MODEL`, via :func:`preregistered_model`).
    """
    m = acc[acc["kind"] == "model"]
    if m.empty:
        raise ValueError("best_model_post_hoc: no model users in the accuracy table")
    pooled = m.groupby("user")[[f"{metric}_correct", "n"]].sum()
    return str((pooled[f"{metric}_correct"] / pooled["n"]).idxmax())


def preregistered_model(users: Iterable[str], model: str = PAPER_MCNEMAR_MODEL) -> str:
    """The release user name of the model fixed in advance for McNemar's test.

    ``users`` are the release's (or a prediction frame's) user names. An exact match wins;
    otherwise a unique case-insensitive match (the authors compare names lower-cased). Raises
    ``ValueError`` naming the model and the model users present when it is absent: the test is
    then not run rather than run on a model picked from the data.
    """
    users = list(dict.fromkeys(users))
    if model in users:
        return model
    hits = [u for u in users if u.lower() == model.lower()]
    if len(hits) == 1:
        return hits[0]
    models = sorted(u for u in users if user_kind(u) == "model")
    if len(hits) > 1:
        raise ValueError(f"McNemar model {model!r}: ambiguous, several users match ignoring case: {hits}")
    raise ValueError(f"McNemar model {model!r} (fixed in advance; the paper's FixResNeXt) is not "
                     f"among the release's models: {models[:20]}{' ...' if len(models) > 20 else ''}. "
                     "Pass the release's name for it explicitly; the test is not run on a model "
                     "chosen from the data.")


def mcnemar_table(frame: pd.DataFrame, model: str = PAPER_MCNEMAR_MODEL,
                  others: Sequence[str] = HUMANS, metric: str = "multilabel") -> pd.DataFrame:
    """McNemar between ``model`` and each of ``others`` on each dataset, over shared images.

    ``model`` is fixed in advance (default: the paper's FixResNeXt, :data:`PAPER_MCNEMAR_MODEL`)
    and resolved with :func:`preregistered_model`, which raises if the frame lacks it.
    """
    model = preregistered_model(frame["user"].unique(), model)
    rows = []
    for ds in DATASETS:
        sub = frame[frame["dataset"] == ds]
        piv = sub.pivot(index="image", columns="user", values=metric)
        for other in others:
            if model not in piv or other not in piv:
                continue
            pair = piv[[model, other]].dropna()
            if pair.empty:
                continue
            r = mcnemar_test(pair[model].to_numpy(bool), pair[other].to_numpy(bool))
            rows.append({"dataset": ds, "model": model, "other": other,
                         "model_acc": 100.0 * pair[model].mean(),
                         "other_acc": 100.0 * pair[other].mean(), **r})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- hard images
def missed_by_all(frame: pd.DataFrame, users: Sequence[str], metric: str = "multilabel",
                  require_all: bool = True) -> pd.DataFrame:
    """Images that every one of ``users`` got wrong (one row per image with dataset/wnid/group).

    With ``require_all`` only images labelled by every listed user count; otherwise an image
    counts when every listed user who labelled it was wrong.
    """
    sub = frame[frame["user"].isin(users)]
    g = sub.groupby("image")
    stats = pd.DataFrame({"labellers": g["user"].nunique(), "right": g[metric].sum()})
    keep = stats["right"] == 0
    if require_all:
        keep &= stats["labellers"] == len(set(users))
    images = stats.index[keep]
    meta = sub.drop_duplicates("image").set_index("image")[["dataset", "wnid", "group"]]
    return meta.loc[images].reset_index()


def missed_table(frame: pd.DataFrame, humans: Sequence[str] = HUMANS,
                 models: Sequence[str] | None = None, images: set[str] | None = None,
                 metric: str = "multilabel") -> pd.DataFrame:
    """Counts of images missed by all humans, by all models, and by both, per class group.

    Restricted to ``images`` when given (the paper counts over its 2,000 human-labelled images).
    Models need not have labelled every image: an image is missed by all models when each model
    that labelled it was wrong.
    """
    f = frame if images is None else frame[frame["image"].isin(images)]
    models = sorted(f.loc[f["kind"] == "model", "user"].unique()) if models is None else list(models)
    h = missed_by_all(f, humans, metric, require_all=True)
    m = missed_by_all(f, models, metric, require_all=False)
    both = h[h["image"].isin(set(m["image"]))]
    rows = []
    for name, d in (("all humans", h), ("all models", m), ("humans and models", both)):
        counts = d["group"].value_counts()
        rows.append({"missed by": name, **{g: int(counts.get(g, 0))
                     for g in ("organism", "dog", "object", "other")}, "total": len(d)})
    out = pd.DataFrame(rows)
    if not out["other"].any():
        out = out.drop(columns="other")
    return out


# --------------------------------------------------------------------------- trends
def linear_fit(x, y) -> dict:
    """Least-squares line ``y = slope * x + intercept`` with ``r``, ``r2``, ``n`` (scipy linregress)."""
    from scipy.stats import linregress

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        raise ValueError(f"linear_fit: need at least 3 finite points, got {int(ok.sum())}")
    r = linregress(x[ok], y[ok])
    return {"slope": float(r.slope), "intercept": float(r.intercept), "r": float(r.rvalue),
            "r2": float(r.rvalue ** 2), "stderr": float(r.stderr), "n": int(ok.sum())}


def probit_fit(x_pct, y_pct) -> dict:
    """Least-squares line between probit-scaled accuracies, ``Φ⁻¹(y) = slope · Φ⁻¹(x) +
    intercept`` (accuracies in %, strictly between 0 and 100): the scale on which Recht et al.
    (2019) found ImageNet-to-ImageNetV2 accuracies of models to lie on a line. Also ``rmse``,
    the root-mean-square residual back in percentage points, to compare with a linear fit."""
    from scipy.stats import norm

    x = np.asarray(x_pct, dtype=float)
    y = np.asarray(y_pct, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ((x[ok] <= 0) | (x[ok] >= 100) | (y[ok] <= 0) | (y[ok] >= 100)).any():
        raise ValueError("probit_fit: accuracies must lie strictly between 0 and 100 (%)")
    f = linear_fit(norm.ppf(x[ok] / 100), norm.ppf(y[ok] / 100))
    resid = y[ok] - probit_curve(f, x[ok])
    return {**f, "rmse": float(np.sqrt(np.mean(resid ** 2)))}


def probit_curve(fit: dict, x_pct) -> np.ndarray:
    """The accuracies (%) a :func:`probit_fit` predicts at ``x_pct``."""
    from scipy.stats import norm

    z = norm.ppf(np.asarray(x_pct, dtype=float) / 100)
    return 100 * norm.cdf(fit["slope"] * z + fit["intercept"])


def gap_by_band(x, gap, bands: int = 3) -> pd.DataFrame:
    """Mean ``gap`` within equal-count bands of ``x`` (lowest first): ``lo``, ``hi`` (the band's
    range of ``x``), ``mean_gap``, ``n``. A model-free view of how a gap changes along ``x``
    that a single straight-line slope hides when the relation is curved."""
    d = pd.DataFrame({"x": np.asarray(x, dtype=float), "gap": np.asarray(gap, dtype=float)}).dropna()
    if len(d) < bands:
        raise ValueError(f"gap_by_band: need at least {bands} points, got {len(d)}")
    d["band"] = pd.qcut(d["x"].rank(method="first"), bands, labels=False)
    g = d.groupby("band")
    return pd.DataFrame({"lo": g["x"].min(), "hi": g["x"].max(), "mean_gap": g["gap"].mean(),
                         "n": g.size()}).reset_index(drop=True)


def model_trend(acc: pd.DataFrame, metric: str = "multilabel") -> dict:
    """Linear fit of the models' V2 accuracy on their val accuracy (Figure 1's line)."""
    w = wide_val_v2(acc[acc["kind"] == "model"], metric).dropna(subset=["val", "v2"])
    return linear_fit(w["val"], w["v2"])


def figure4_table(acc: pd.DataFrame) -> pd.DataFrame:
    """Per model and dataset: multi-label vs top-1 (and top-5 if present) accuracy (Figure 4)."""
    cols = ["user", "dataset", "n", "multilabel", "top1"] + (["top5"] if "top5" in acc else [])
    t = acc.loc[acc["kind"] == "model", cols].copy()
    t["multilabel_minus_top1"] = t["multilabel"] - t["top1"]
    return t.reset_index(drop=True)


# --------------------------------------------------------------------------- timm model zoo
def _to_float(col: pd.Series) -> pd.Series:
    return pd.to_numeric(col.astype(str).str.replace(",", "", regex=False).str.replace("+", "", regex=False),
                         errors="coerce")


def timm_table(imagenet: pd.DataFrame, real: pd.DataFrame, v2: pd.DataFrame) -> pd.DataFrame:
    """Merge timm's per-model results on ImageNet val, ReaL and ImageNetV2 (matched frequency).

    Rows are matched on (``model``, ``img_size``). Columns: ``model``, ``img_size``,
    ``param_count`` (millions), ``top1_val``, ``top5_val``, ``top1_real``, ``top5_real``,
    ``top1_v2``, ``top5_v2``, ``real_minus_val`` and ``v2_minus_val`` (percentage points).
    """
    need = {"model", "img_size", "top1", "top5"}
    parts = []
    for name, df in (("val", imagenet), ("real", real), ("v2", v2)):
        miss = need - set(df.columns)
        if miss:
            raise ValueError(f"timm results for {name}: missing columns {sorted(miss)}")
        d = df[["model", "img_size", "top1", "top5"] + (["param_count"] if name == "val" else [])].copy()
        d["top1"], d["top5"] = _to_float(d["top1"]), _to_float(d["top5"])
        if name == "val":
            d["param_count"] = _to_float(d["param_count"]) if "param_count" in d else np.nan
        d = d.rename(columns={"top1": f"top1_{name}", "top5": f"top5_{name}"})
        if d.duplicated(["model", "img_size"]).any():
            raise ValueError(f"timm results for {name}: duplicate (model, img_size) rows")
        parts.append(d)
    t = parts[0].merge(parts[1], on=["model", "img_size"]).merge(parts[2], on=["model", "img_size"])
    t["real_minus_val"] = t["top1_real"] - t["top1_val"]
    t["v2_minus_val"] = t["top1_v2"] - t["top1_val"]
    return t.sort_values("top1_val", ascending=False).reset_index(drop=True)


def timm_architecture(model: str) -> str:
    """The architecture of a timm model name: the part before its pretrained tag
    (``resnet50.a1_in1k`` -> ``resnet50``), so that weights of one network count once."""
    return str(model).split(".", 1)[0]


def per_architecture(t: pd.DataFrame, column: str) -> pd.Series:
    """Mean of ``column`` over the rows of each timm architecture (:func:`timm_architecture`),
    NaNs left out: models sharing a network and recipe are not independent samples."""
    if "model" not in t.columns or column not in t.columns:
        raise ValueError(f"per_architecture: need columns 'model' and {column!r}")
    v = t[["model", column]].dropna()
    return v.groupby(v["model"].map(timm_architecture), sort=False)[column].mean()


def timm_summary(t: pd.DataFrame) -> pd.DataFrame:
    """Fits of ReaL-on-val and V2-on-val top-1 across the zoo, linear (``slope``, ``intercept``,
    ``r2``, ``rmse``) and on a probit scale (``probit_*``, :func:`probit_fit`), plus the gaps."""
    rows = []
    for y, label in (("top1_real", "ReaL top-1 vs ImageNet top-1"),
                     ("top1_v2", "ImageNetV2 top-1 vs ImageNet top-1")):
        f = linear_fit(t["top1_val"], t[y])
        ok = t[["top1_val", y]].dropna()
        f["rmse"] = float(np.sqrt(np.mean(
            (ok[y] - (f["slope"] * ok["top1_val"] + f["intercept"])) ** 2)))
        try:
            p = probit_fit(t["top1_val"], t[y])
        except ValueError:  # an accuracy of 0 or 100%: no probit scale; the table says n/a
            p = dict.fromkeys(("slope", "intercept", "r2", "rmse"), float("nan"))
        gap = t[y] - t["top1_val"]
        rows.append({"relation": label, **f,
                     **{f"probit_{k}": p[k] for k in ("slope", "intercept", "r2", "rmse")},
                     "mean_gap": float(gap.mean()),
                     "median_gap": float(gap.median()), "min_gap": float(gap.min()),
                     "max_gap": float(gap.max())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- ReaL labels
def real_label_stats(labels: Sequence[Sequence[int]]) -> dict:
    """Summary of the ReaL multi-labels (``real.json``: one list of class ids per val image).

    Counts images with no label (excluded by ReaL), with one label, with several, and the mean
    number of labels among the multi-label images: the ReaL counterpart of Shankar et al.'s
    "18.2% of val images have more than one correct label (2.3 on average)".
    """
    sizes = np.array([len(x) for x in labels], dtype=int)
    if sizes.size == 0:
        raise ValueError("real_label_stats: no images")
    multi = sizes > 1
    kept = sizes > 0
    return {"images": int(sizes.size), "empty": int((sizes == 0).sum()),
            "single": int((sizes == 1).sum()), "multi": int(multi.sum()),
            "multi_pct_of_labelled": float(100.0 * multi.sum() / max(kept.sum(), 1)),
            "mean_labels_if_multi": float(sizes[multi].mean()) if multi.any() else float("nan"),
            "labels": int(sizes.sum())}
