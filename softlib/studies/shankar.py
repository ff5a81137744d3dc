"""Section 6: humans vs machines on ImageNet (Shankar et al. 2020), orchestration and plots.

Three parts:

* the human study, which needs the authors' release ``human_accuracy.pickle``
  (``softlib.data.load_imagenet_human``): Table 1 (multi-label accuracy of humans and models
  with 95% Clopper-Pearson intervals), Table 2 (subsets, class bootstrap, McNemar), the images
  everyone misses, Figure 1 (val vs V2) and Figure 4 (multi-label vs top-1);
* the model zoo, which needs only ``imagenet_real``: timm's top-1 on ImageNet val, on the ReaL
  multi-labels and on ImageNetV2 for many models. No people are measured there; the paper's
  published human accuracies (multi-label, on 2,000 other images, no intervals) are not
  comparable with those top-1 numbers and are left off that plot unless asked for, with a
  label that says so;
* and ReaL's own people (optional files of ``imagenet_real``): how often one crowd rater agrees
  with the experts on its golden questions, and how often raters split (:func:`rater_study`,
  analysis in :mod:`softlib.raters`).

:func:`takeaways` writes the section's conclusions from what was computed in the run, so that
a run without the human release does not claim anything about people.

Analysis lives in :mod:`softlib.multilabel` and :mod:`softlib.raters`; this module loads,
assembles DataFrames and plots.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import figures as F
from .. import multilabel as ml

# Shankar et al. 2020, Table 1: multi-label accuracy (%) on the 2,000 human-labelled images,
# ImageNet val / ImageNetV2 (values as listed in /work/shared/reference/protocols.md).
PUBLISHED_TABLE1 = pd.DataFrame(
    [("Human A", "human", 91.9, 91.1), ("Human B", "human", 94.7, 93.9),
     ("Human C", "human", 96.2, 96.7), ("Human D", "human", 95.7, 94.8),
     ("Human E", "human", 97.3, 96.5),
     ("ResNet50", "model", 84.2, 75.7), ("AdvProp", "model", 93.6, 88.3),
     ("FixRes", "model", 95.5, 89.6)],
    columns=["who", "kind", "paper_val", "paper_v2"])

# Other published facts of the paper (Table 2, Section 4, and the authors' notebook).
PUBLISHED_FACTS: dict[str, Any] = {
    "fast images (val)": 756, "fast images (V2)": 714,
    "missed by all humans": 10, "missed by all models": 27, "missed by both": 2,
    "McNemar FixResNeXt (fixed in advance) vs Human E, val (p)": 0.037,
    "McNemar FixResNeXt (fixed in advance) vs Human B, V2 (p)": 2e-4,
    "models' V2-on-val slope (authors' notebook)": 1.056,
    "models' V2-on-val intercept (authors' notebook)": -12.53,
    "val images with >1 correct label (%)": 18.2,
}

# Release user names for the paper's rows. The humans are fixed by the schema; the model names
# other than FixRes are our reading of the authors' naming and are matched case-insensitively,
# first exactly, then by keyword (the chosen release user is shown in the table).
PAPER_USERS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "Human A": (("human_a",), None), "Human B": (("human_b",), None),
    "Human C": (("human_c",), None), "Human D": (("human_d",), None),
    "Human E": (("human_e",), None),
    "ResNet50": (("resnet50", "resnet-50", "resnet_50"), None),
    "AdvProp": (("efficientnet-b8-advprop-autoaug", "efficientnet-b7-advprop-autoaug"), "advprop"),
    "FixRes": (("fixresnext101_32x48d_v2", "fixresnext101_32x48d"), "fixres"),
}


# --------------------------------------------------------------------------- loading
def _if_present(load, root) -> dict | None:
    """``load(root=root)``, or ``None`` when its data are not on this machine (a part of the
    section then says so instead of failing)."""
    from .. import data
    try:
        return load(root=root)
    except data.DataMissingError:
        return None


def load_release(root=None) -> dict | None:
    """The human-study release as a dict, or ``None`` when it is not on this machine."""
    from .. import data
    return _if_present(data.load_imagenet_human, root)


def load_real(root=None) -> dict:
    """ReaL labels and timm's result tables (``softlib.data.load_imagenet_real``)."""
    from .. import data
    return data.load_imagenet_real(root=root)


def load_votes(root=None) -> dict | None:
    """ReaL's crowd votes on every question it asked (``softlib.data.load_real_votes``), or
    ``None`` when this optional file is not on this machine."""
    from .. import data
    return _if_present(data.load_real_votes, root)


def load_golden(root=None) -> dict | None:
    """ReaL's golden questions (``softlib.data.load_real_golden``), or ``None`` when these
    optional files are not on this machine."""
    from .. import data
    return _if_present(data.load_real_golden, root)


# --------------------------------------------------------------------------- ReaL's raters
@dataclass
class RaterStudy:
    """Agreement of ReaL's raters with its experts (:mod:`softlib.raters`): ``table`` from
    ``golden_agreement``, ``unanimity`` from ``expert_unanimity``, per question the raters'
    ``yes_share`` and the experts' majority ``reference``, and how many val ``images`` the
    questions are about; with ReaL's votes on all its questions, ``votes`` (``vote_counts``)
    and their ``vote_summary``."""
    table: pd.DataFrame
    unanimity: dict
    yes_share: np.ndarray
    reference: np.ndarray
    images: int
    votes: pd.DataFrame | None = None
    vote_summary: dict | None = None


def rater_study(golden: dict, votes: dict | None = None) -> RaterStudy:
    """Everything part 6 of the section shows, from :func:`load_golden`'s dict and, where
    present, :func:`load_votes`'."""
    from .. import raters as R
    counts = summary = None
    if votes is not None:
        counts = R.vote_counts(votes["raters"])
        summary = R.vote_summary(counts, np.asarray(votes["info"])[:, 0])
    return RaterStudy(R.golden_agreement(golden), R.expert_unanimity(golden["experts"]),
                      R.yes_share(golden["raters"]), R.majority(golden["experts"]),
                      int(len(set(np.asarray(golden["info"])[:, 0]))), counts, summary)


def rater_table(rs: RaterStudy, kinds=("expert", "raters' majority")) -> pd.DataFrame:
    """The agreement table for readers: per person (of ``kinds``), the questions scored, the
    agreement in % with its 95% interval, the share of 'maybe' answers, and the agreement on
    the questions answered yes or no."""
    t = rs.table[rs.table["kind"].isin(kinds)]

    def ci(rate, lo, hi):
        return [f"{100 * r:.1f} [{100 * a:.1f}, {100 * b:.1f}]" if np.isfinite(r) else "n/a"
                for r, a, b in zip(t[rate], t[lo], t[hi])]

    return pd.DataFrame({"questions": t["n"].to_numpy(),
                         "agreement % [95% CI]": ci("rate", "lo", "hi"),
                         "'maybe' %": (100 * t["maybe"]).round(1).to_numpy(),
                         "answered yes or no": t["decided_n"].to_numpy(),
                         "agreement on those % [95% CI]": ci("decided_rate", "decided_lo",
                                                             "decided_hi")},
                        index=t["who"].to_numpy())


def plot_raters(rs: RaterStudy):
    """Left: each rater's agreement with the experts' majority, sorted, with 95% intervals,
    beside each expert's agreement with the other experts and the raters' majority vote.
    Right: per question, the share of raters who said the class fits, split by what the
    experts' majority answered: the crowd's soft label against the experts' verdict."""
    import matplotlib.pyplot as plt

    from .. import raters as R
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    t = rs.table
    rat = t[t["kind"] == "rater"].sort_values("rate").reset_index(drop=True)
    x = np.arange(len(rat))
    ax.errorbar(x, 100 * rat["rate"], yerr=[100 * (rat["rate"] - rat["lo"]),
                                            100 * (rat["hi"] - rat["rate"])],
                fmt="o", ms=3, color="tab:blue", elinewidth=0.8, label="one rater (95% CI)")
    ex = t[t["kind"] == "expert"]
    ax.axhspan(100 * ex["lo"].min(), 100 * ex["hi"].max(), color="tab:red", alpha=0.15,
               label=f"experts, each vs the other {len(ex) - 1} (95% CIs)")
    for r in ex["rate"]:
        ax.axhline(100 * r, color="tab:red", lw=0.8)
    maj = t[t["kind"] == "raters' majority"]
    if len(maj):
        ax.axhline(100 * maj["rate"].iloc[0], color="tab:green", ls="--", lw=1.4,
                   label=f"{maj['who'].iloc[0]}")
    ax.set(xlabel="raters, sorted by agreement", ylabel="agreement with the experts (%)",
           ylim=(max(0, 100 * np.nanmin(rat["lo"]) - 5), 100))
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[1]
    bins = np.linspace(0, 1, 11)
    for ans, name, c in ((R.NO, "no", "tab:gray"), (R.YES, "yes", "tab:orange")):
        v = rs.yes_share[(rs.reference == ans) & np.isfinite(rs.yes_share)]
        ax.hist(v, bins=bins, alpha=0.6, color=c, weights=np.full(len(v), 100 / max(len(v), 1)),
                label=f"experts' majority: {name} ({len(v)} questions)")
    ax.set(xlabel="share of raters who said the class fits",
           ylabel="questions (% of those with this expert answer)")
    ax.legend(fontsize=8)
    F.question_title(axes[0], "How often does one rater agree with the experts?",
                     "ReaL golden questions", "95% Clopper-Pearson intervals")
    F.question_title(axes[1], "How do raters vote, given the experts' answer?",
                     "ReaL golden questions", "one count per question; no intervals")
    fig.tight_layout()
    return fig


def plot_votes(rs: RaterStudy):
    """How many of the raters asked about one (image, class) question said the class fits,
    over every question ReaL asked (needs ``rs.votes``): the crowd's soft labels at scale."""
    import matplotlib.pyplot as plt

    if rs.votes is None:
        raise ValueError("plot_votes: this RaterStudy has no votes (raters.npz was absent)")
    v = rs.votes[rs.votes["asked"] > 0]
    k = int(v["asked"].max())
    share = 100 * v["yes"].value_counts(normalize=True).reindex(range(k + 1), fill_value=0)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(share.index, share.to_numpy(), color="tab:purple", alpha=0.8)
    ax.set(xticks=range(k + 1), ylabel="questions (%)",
           xlabel=f"raters who said the class fits (of {v['asked'].median():.0f} asked per "
                  "question, median)")
    F.question_title(ax, "How often do raters split on one question?",
                     f"all {len(rs.votes):,} ReaL questions", "one count per question")
    fig.tight_layout()
    return fig


def rater_takeaways(rs: RaterStudy) -> list[str]:
    """The part's conclusions, written from its numbers."""
    from .. import raters as R
    t = rs.table
    rat, ex = t[t["kind"] == "rater"], t[t["kind"] == "expert"]
    u = rs.unanimity
    sent = (f"ReaL's {len(ex)} experts gave the same answer on {u['unanimous']:,} of {u['n']:,} "
            f"golden questions ({100 * u['rate']:.1f}%, 95% CI {100 * u['lo']:.1f}-"
            f"{100 * u['hi']:.1f}%; the questions concern {rs.images} val images)")
    if u["unanimous"] < u["n"]:
        sent += (": even experts disagree on whether a class fits an image about one time in "
                 f"{1 / (1 - u['rate']):.0f}")
    out = [sent + "."]
    below = int((rat["hi"] < ex["rate"].min()).sum())
    r = 100 * rat["rate"]
    sent = (f"One rater agrees with the experts' majority on a median {r.median():.1f}% of the "
            f"questions (range {r.min():.1f}-{r.max():.1f}%), "
            f"against {100 * ex['rate'].min():.1f}-{100 * ex['rate'].max():.1f}% for an expert "
            f"scored against the other experts; for {below} of {len(rat)} raters the whole 95% "
            f"interval lies below the least consistent expert")
    maj = t[t["kind"] == "raters' majority"]
    if len(maj):
        m = maj.iloc[0]
        sent += (f", and the majority of all {len(rat)} raters reaches {100 * m['rate']:.1f}% "
                 f"({100 * m['lo']:.1f}-{100 * m['hi']:.1f}%)")
    out.append(sent + ".")
    if rat["maybe"].max() > 0:
        below_decided = int((rat["decided_hi"] < ex["decided_rate"].min()).sum())
        d, dr = 100 * rat["decided_rate"].median(), r.median()
        out.append(f"Raters answered 'maybe' {100 * rat['maybe'].mean():.1f}% of the time, the "
                   f"experts {100 * ex['maybe'].mean():.1f}%, and a 'maybe' counts as a "
                   f"disagreement above. Leaving each rater's 'maybe' answers out, the median "
                   f"agreement {'rises to' if d > dr else 'is'} {d:.1f}%, and for "
                   f"{below_decided} of {len(rat)} raters the interval still lies below every "
                   "expert.")
    yes = rs.yes_share[(rs.reference == R.YES) & np.isfinite(rs.yes_share)]
    no = rs.yes_share[(rs.reference == R.NO) & np.isfinite(rs.yes_share)]
    if len(yes) and len(no):
        out.append(f"Where the experts' majority said a class fits, {100 * np.mean(yes):.0f}% of "
                   f"the raters said so on average; where it said no, {100 * np.mean(no):.0f}%: "
                   "the crowd's answers are a soft label, much as CIFAR-10H's are.")
    if rs.vote_summary is not None:
        v = rs.vote_summary
        out.append(f"Across all {v['questions']:,} (image, class) questions ReaL put to its "
                   f"raters ({v['raters_per_question']:.0f} raters each, median; "
                   f"{v['images']:,} val images), everyone said yes to "
                   f"{100 * v['all_yes']:.1f}%, everyone said no to {100 * v['all_no']:.1f}%, "
                   f"and the raters split on {100 * v['split']:.1f}%; "
                   f"{100 * v['images_with_split']:.1f}% of these images had at least one "
                   "question the raters split on.")
    return out


# --------------------------------------------------------------------------- human study
@dataclass
class HumanStudy:
    """Every table of the human study, as DataFrames (accuracies in percent)."""
    frame: pd.DataFrame                 # one row per (user, image) with correctness
    accuracy_all: pd.DataFrame          # per user and dataset over every image it labelled
    accuracy_humans: pd.DataFrame       # per user and dataset over the human-labelled images
    accuracy_objects: pd.DataFrame      # same, object classes only
    table1: pd.DataFrame                # wide: val / V2 multi-label with CIs, human images
    subsets: pd.DataFrame               # Table 2 with class bootstrap (full-range rule)
    mcnemar: pd.DataFrame               # the pre-registered model vs each human, per dataset
    missed: pd.DataFrame                # images missed by all humans / models / both
    fits: pd.DataFrame                  # linear V2-on-val fits of the models
    figure4: pd.DataFrame               # multi-label vs top-1 (and top-5) per model
    mcnemar_model: str                  # fixed in advance (the paper's FixResNeXt)
    best_model_post_hoc: str            # highest pooled accuracy here: display only
    fast_counts: dict
    top5_available: bool
    label_counts: dict                  # share of images with several correct labels
    notes: list[str] = field(default_factory=list)


def run_human_study(release: dict, trials: int = 1000, seed: int = 0,
                    mcnemar_model: str = ml.PAPER_MCNEMAR_MODEL) -> HumanStudy:
    """Compute every table of the human study from the release dict.

    ``mcnemar_model`` is the model compared with each person by McNemar's test and shown in
    Table 2, fixed in advance (default: the paper's FixResNeXt, ``ml.PAPER_MCNEMAR_MODEL``);
    a ``ValueError`` says so when the release lacks it. The model that happens to score best
    here is reported as ``best_model_post_hoc`` (and added to Table 2 when it differs), never
    used for a test.
    """
    ml.check_release(release)
    frame = ml.prediction_frame(release)
    fixed = ml.preregistered_model(release["annot_data"], mcnemar_model)
    himg = ml.human_images(release)
    hframe = frame[frame["image"].isin(himg)]
    acc_all = ml.accuracy_table(frame)
    acc_h = ml.accuracy_table(hframe)
    acc_obj = ml.accuracy_table(hframe[hframe["group"] == "object"])
    fast = ml.fast_images(release)
    notes = []
    best = ml.best_model_post_hoc(acc_h)
    if best != fixed:
        notes.append(f"The model with the highest accuracy on these images is {best}, not the "
                     f"pre-registered {fixed}; McNemar's test uses {fixed}, as the paper does.")
    fits = []
    for scope, acc in (("human-labelled images", acc_h), ("human-labelled, objects only", acc_obj),
                       ("all images", acc_all)):
        for metric in ("multilabel", "top1"):
            try:
                f = ml.model_trend(acc, metric)
            except ValueError as e:  # fewer than 3 models: say so instead of failing
                notes.append(f"fit {scope} / {metric}: {e}")
                continue
            fits.append({"images": scope, "metric": metric, **f})
    users = list(ml.HUMANS) + [ml.HUMAN_MAJORITY, fixed] + ([best] if best != fixed else [])
    users = [u for u in users if u in set(hframe["user"])]
    subsets = ml.subset_table(hframe, users=users, fast=fast, trials=trials, seed=seed)
    fc = {ds: sum(1 for i in fast & himg if ml.dataset_of(i) == ds) for ds in ml.DATASETS}
    top5 = ml.has_top5(release)
    if not top5:
        notes.append("The release has no top-5 predictions (each entry holds one 'label'), so "
                     "Figure 4's top-5 panel cannot be drawn from it.")
    return HumanStudy(
        frame=frame, accuracy_all=acc_all, accuracy_humans=acc_h, accuracy_objects=acc_obj,
        table1=ml.wide_val_v2(acc_h), subsets=subsets,
        mcnemar=ml.mcnemar_table(hframe, fixed),
        missed=ml.missed_table(frame, images=himg), fits=pd.DataFrame(fits),
        figure4=ml.figure4_table(acc_all), mcnemar_model=fixed, best_model_post_hoc=best,
        fast_counts=fc, top5_available=top5, label_counts=multi_label_share(release), notes=notes)


def _match_user(candidates: tuple[str, ...], keyword: str | None, table1: pd.DataFrame) -> str | None:
    users = {u.lower(): u for u in table1["user"]}
    for c in candidates:
        if c.lower() in users:
            return users[c.lower()]
    if keyword:
        hits = table1[table1["user"].str.lower().str.contains(keyword) & (table1["kind"] == "model")]
        if not hits.empty:
            return str(hits.sort_values("val", ascending=False)["user"].iloc[0])
    return None


def vs_paper(study: HumanStudy) -> pd.DataFrame:
    """Table 1 of the paper next to this run's numbers on the same (human-labelled) images."""
    rows = []
    for _, p in PUBLISHED_TABLE1.iterrows():
        cands, kw = PAPER_USERS[p["who"]]
        user = _match_user(cands, kw, study.table1)
        row = {"who": p["who"], "release user": user or "(not in release)",
               "paper val": p["paper_val"], "paper V2": p["paper_v2"]}
        if user is not None:
            r = study.table1.set_index("user").loc[user]
            row.update({"this val": r.get("val"), "val CI": _ci(r, "val"),
                        "this V2": r.get("v2"), "V2 CI": _ci(r, "v2")})
            row["val diff"] = row["this val"] - p["paper_val"]
            row["V2 diff"] = row["this V2"] - p["paper_v2"]
        rows.append(row)
    return pd.DataFrame(rows)


def _ci(r: pd.Series, ds: str) -> str:
    lo, hi = r.get(f"{ds}_lo"), r.get(f"{ds}_hi")
    return "" if lo is None or pd.isna(lo) else f"[{lo:.1f}, {hi:.1f}]"


def facts_vs_paper(study: HumanStudy) -> pd.DataFrame:
    """The paper's other published facts next to this run's values."""
    m = study.missed.set_index("missed by")["total"]
    mc = study.mcnemar.set_index(["dataset", "other"])["pvalue"] if not study.mcnemar.empty else {}
    fit = study.fits.set_index(["images", "metric"]) if not study.fits.empty else None

    def fitv(col):
        try:
            return fit.loc[("human-labelled images", "multilabel"), col]
        except (KeyError, AttributeError):
            return np.nan

    ours = {
        "fast images (val)": study.fast_counts.get("val"),
        "fast images (V2)": study.fast_counts.get("v2"),
        "missed by all humans": m.get("all humans"), "missed by all models": m.get("all models"),
        "missed by both": m.get("humans and models"),
        "McNemar FixResNeXt (fixed in advance) vs Human E, val (p)": mc.get(("val", "human_e"), np.nan),
        "McNemar FixResNeXt (fixed in advance) vs Human B, V2 (p)": mc.get(("v2", "human_b"), np.nan),
        "models' V2-on-val slope (authors' notebook)": fitv("slope"),
        "models' V2-on-val intercept (authors' notebook)": fitv("intercept"),
        "val images with >1 correct label (%)": study.label_counts.get("val", {}).get("multi_pct"),
    }
    rows = [{"fact": k, "paper": v, "this run": ours.get(k)} for k, v in PUBLISHED_FACTS.items()]
    return pd.DataFrame(rows, dtype=object)  # mixed counts and p-values: keep each as written


def multi_label_share(release: dict) -> dict:
    """Share of usable images with more than one correct label, and the mean count among them."""
    out = {}
    for ds in ml.DATASETS:
        sizes = np.array([len(release["image_labels"][i].get("correct", []))
                          for i in ml.usable_images(release) if ml.dataset_of(i) == ds])
        multi = sizes > 1
        out[ds] = {"images": int(sizes.size),
                   "multi_pct": float(100 * multi.mean()) if sizes.size else float("nan"),
                   "mean_if_multi": float(sizes[multi].mean()) if multi.any() else float("nan")}
    return out


# --------------------------------------------------------------------------- model zoo
TIMM_KEYS = {"val": "imagenet", "real": "imagenet-real", "v2": "imagenetv2-matched-frequency"}


def zoo_study(real: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The merged timm table (val, ReaL, V2 per model) and its linear fits.

    ``real`` is what :func:`load_real` returns: ``{'results': {name: DataFrame}, ...}``.
    """
    try:
        r = real["results"]
        frames = [r[TIMM_KEYS[k]] for k in ("val", "real", "v2")]
    except (KeyError, TypeError) as e:
        raise ValueError(f"zoo_study: expected {{'results': {{{', '.join(TIMM_KEYS.values())}}}}} "
                         f"as returned by softlib.data.load_imagenet_real; missing {e}") from None
    t = ml.timm_table(*frames)
    return t, ml.timm_summary(t)


# --------------------------------------------------------------------------- plots
def _line(ax, fit: dict, xs, **kw):
    x = np.linspace(min(xs), max(xs), 50)
    ax.plot(x, fit["slope"] * x + fit["intercept"], **kw)


def _diag(ax, lo, hi):
    ax.plot([lo, hi], [lo, hi], ls=":", color="grey", lw=1, label="y = x")


def plot_figure1(study: HumanStudy):
    """Figure 1: V2 vs val multi-label accuracy (models, their fit, humans with 95% CIs).

    Left: all classes; right: objects only; both over the human-labelled images. The left
    panel also carries the paper's Table 1 points for the same people and models (hollow) and
    the models' fit in the authors' notebook (dashed): same metric, same images.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax, acc, title in ((axes[0], study.accuracy_humans, "all classes"),
                           (axes[1], study.accuracy_objects, "objects only")):
        w = ml.wide_val_v2(acc).dropna(subset=["val", "v2"])
        mods = w[w["kind"] == "model"]
        hums = w[w["kind"].isin(["human", "human_majority"])]
        ax.scatter(mods["val"], mods["v2"], s=18, color="tab:blue", alpha=0.7, label="models")
        if len(mods) >= 3:
            f = ml.linear_fit(mods["val"], mods["v2"])
            _line(ax, f, w["val"], color="tab:blue", lw=1.2,
                  label=f"models' fit: y = {f['slope']:.2f}x {f['intercept']:+.1f}")
        for _, h in hums.iterrows():
            ax.errorbar(h["val"], h["v2"], xerr=[[h["val"] - h["val_lo"]], [h["val_hi"] - h["val"]]],
                        yerr=[[h["v2"] - h["v2_lo"]], [h["v2_hi"] - h["v2"]]], fmt="*", ms=11,
                        color="tab:red" if h["kind"] == "human" else "darkred", capsize=2)
            ax.annotate(h["user"].replace("human_", "").upper() if h["kind"] == "human" else "maj.",
                        (h["val"], h["v2"]), textcoords="offset points", xytext=(5, -10), fontsize=8)
        ax.plot([], [], "*", color="tab:red", ms=11, label="humans (95% CI)")
        lo = np.nanmin(np.r_[w["val"], w["v2"]]) - 2
        _diag(ax, lo, 100)
        ax.set_xlim(lo, 101)
        ax.set_ylim(lo, 101)
        ax.set(xlabel="ImageNet val multi-label accuracy (%)",
               ylabel="ImageNetV2 multi-label accuracy (%)")
        F.question_title(ax, "Do people keep their ImageNetV2 accuracy, unlike models?",
                         f"paper Fig. 1, {title}", "people: 95% Clopper-Pearson intervals; "
                         "models: one point each, no intervals")
    ax0 = axes[0]
    for kind, marker, color in (("human", "*", "tab:red"), ("model", "o", "tab:blue")):
        rows = PUBLISHED_TABLE1[PUBLISHED_TABLE1["kind"] == kind]
        F.paper_marks(ax0, rows["paper_val"], rows["paper_v2"], marker=marker, color=color,
                      markersize=12 if marker == "*" else 8,
                      label="paper Table 1: "
                      f"{'humans A-E' if kind == 'human' else ', '.join(rows['who'])}")
    F.paper_fit(ax0, PUBLISHED_FACTS["models' V2-on-val slope (authors' notebook)"],
                PUBLISHED_FACTS["models' V2-on-val intercept (authors' notebook)"],
                ax0.get_xlim(), color="tab:blue", label="paper: models' fit (authors' notebook)")
    for ax in axes:
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def plot_figure4(study: HumanStudy):
    """Figure 4: each model's multi-label vs top-1 (and top-5 when the release has it)."""
    import matplotlib.pyplot as plt

    metrics = ["top1"] + (["top5"] if study.top5_available else [])
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 5), squeeze=False)
    f4 = study.figure4
    for ax, m in zip(axes[0], metrics):
        for ds, c in (("val", "tab:blue"), ("v2", "tab:orange")):
            d = f4[f4["dataset"] == ds]
            ax.scatter(d[m], d["multilabel"], s=16, color=c, alpha=0.7,
                       label="ImageNet val" if ds == "val" else "ImageNetV2")
        vals = np.r_[f4[m], f4["multilabel"]]
        _diag(ax, np.nanmin(vals) - 2, 100)
        ax.set(xlabel=f"{'top-1' if m == 'top1' else 'top-5'} accuracy (%)",
               ylabel="multi-label accuracy (%)")
        F.question_title(ax, "How much does the single label under-count each model?",
                         "paper Fig. 4", "one point per model and test set, no intervals; "
                         "no paper values (top-1 not typed in)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _zoo_fits(ax, f: pd.Series, xs, color: str) -> None:
    """A zoo panel's straight-line fit and, where it exists, its probit-scale fit (curved
    here), each labelled with its residual in points so the closer one is visible."""
    _line(ax, f, xs, color=color, lw=1,
          label=f"linear fit: y = {f['slope']:.3f}x {f['intercept']:+.2f} "
                f"(rms residual {f['rmse']:.2f})")
    if np.isfinite(f["probit_slope"]):
        x = np.linspace(min(xs), max(xs), 100)
        ax.plot(x, ml.probit_curve({"slope": f["probit_slope"], "intercept": f["probit_intercept"]},
                                   x), color=color, ls="--", lw=1.4,
                label=f"probit-scale fit (rms residual {f['probit_rmse']:.2f})")


def _gap_hist(ax, gap: pd.Series, color: str, xlabel: str, question: str,
              source: str | None = None) -> None:
    """A zoo panel: the histogram of one gap over the models, its range stretched to show 0."""
    gap = gap.dropna()
    ax.hist(gap, bins=40, range=(min(gap.min(), 0) - 0.5, max(gap.max(), 0) + 0.5), color=color,
            alpha=0.8)
    ax.axvline(0, color="grey", ls=":")
    ax.set(xlabel=xlabel, ylabel="models (count)")
    F.question_title(ax, question, source,
                     "the histogram is the spread over models; timm gives no intervals")


def plot_zoo(table: pd.DataFrame, summary: pd.DataFrame, published_humans: bool = False):
    """The model zoo, two rows: ReaL vs ImageNet top-1 and its gap per model; ImageNetV2 vs
    ImageNet top-1 and its gap per model (axes in that order).

    No people are measured here. With ``published_humans`` the paper's *published* Table 1
    points for humans A-E are drawn on the V2 panel as hollow grey markers labelled as not
    comparable: they are multi-label accuracies on the 2,000 human-labelled images, without
    intervals, while the models' points are top-1 on the full test sets. The comparable figure
    (same metric, same images, 95% intervals) is :func:`plot_figure1`, which needs the release.
    """
    import matplotlib.pyplot as plt

    s = summary.set_index("relation")
    fig, axes = plt.subplots(2, 2, figsize=(12, 9.5))
    axes = axes.ravel()
    ax = axes[0]
    ax.scatter(table["top1_val"], table["top1_real"], s=6, alpha=0.4, color="tab:green")
    _zoo_fits(ax, s.loc["ReaL top-1 vs ImageNet top-1"], table["top1_val"], "darkgreen")
    _diag(ax, table["top1_val"].min(), 100)
    ax.set(xlabel="ImageNet val top-1 (%)", ylabel="ReaL top-1 (%)")
    F.question_title(ax, "Do ReaL multi-labels score models higher than the single label?",
                     f"{len(table)} timm models", "one point per model; timm gives no intervals")
    ax.legend(fontsize=8)

    _gap_hist(axes[1], table["real_minus_val"], "tab:green",
              "ReaL top-1 minus ImageNet top-1 (percentage points)",
              "How much does the single label under-count?")

    ax = axes[2]
    ax.scatter(table["top1_val"], table["top1_v2"], s=6, alpha=0.4, color="tab:blue",
               label="timm models (top-1)")
    _zoo_fits(ax, s.loc["ImageNetV2 top-1 vs ImageNet top-1"], table["top1_val"], "navy")
    lo = table["top1_val"].min()
    if published_humans:
        hum = PUBLISHED_TABLE1[PUBLISHED_TABLE1["kind"] == "human"]
        ax.scatter(hum["paper_val"], hum["paper_v2"], marker="*", s=140, facecolors="none",
                   edgecolors="grey",
                   label="NOT COMPARABLE: humans A-E as published (Table 1),\n"
                         "multi-label acc. on 2,000 other images, no CIs")
    _diag(ax, lo, 100)
    ax.set(xlabel="ImageNet val top-1 (%)", ylabel="ImageNetV2 top-1 (%)")
    F.question_title(ax, "Do models lose accuracy from ImageNet to ImageNetV2?", "models only",
                     "one point per model; timm gives no intervals")
    ax.legend(fontsize=8, loc="upper left")

    _gap_hist(axes[3], table["v2_minus_val"], "tab:blue",
              "ImageNetV2 top-1 minus ImageNet top-1 (percentage points)",
              "How much accuracy do models lose on ImageNetV2?", "models only")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- conclusions
def _pts(x: float) -> str:
    return f"{x:+.1f} points"


def takeaways(zoo: pd.DataFrame | None = None, zoo_fits: pd.DataFrame | None = None,
              study: HumanStudy | None = None, real_stats: dict | None = None,
              raters: RaterStudy | None = None) -> list[str]:
    """The section's conclusions, one sentence each, written from what this run computed.

    ``zoo``/``zoo_fits`` come from :func:`zoo_study`, ``study`` from :func:`run_human_study`
    (``None`` when the release is absent), ``real_stats`` from ``ml.real_label_stats``,
    ``raters`` from :func:`rater_study` (``None`` without ReaL's golden questions). No
    sentence states a result that was not computed: without the human study the statement
    about people says that this run did not measure them.
    """
    out: list[str] = []
    if real_stats:
        out.append(f"{real_stats['multi_pct_of_labelled']:.1f}% of the ReaL-labelled val images "
                   f"have more than one correct label ({real_stats['mean_labels_if_multi']:.2f} "
                   "on average among them); Shankar et al. report 18.2% (2.3) on their 20,000.")
    if zoo is not None and len(zoo):
        from scipy.stats import spearmanr

        gain = zoo["real_minus_val"].dropna()
        n, up = len(gain), int((gain > 0).sum())
        rho = float(spearmanr(zoo["top1_val"], zoo["top1_real"]).statistic)
        sent = (f"Under ReaL's multi-labels {up} of {n} timm models score higher than under the "
                f"single label (mean {_pts(gain.mean())}, range {gain.min():+.1f} to "
                f"{gain.max():+.1f}); the rank correlation of the two top-1 scores is {rho:.3f}.")
        if n >= 3:
            b = ml.gap_by_band(zoo["top1_val"], zoo["real_minus_val"], 3)
            lo, hi = b.iloc[0], b.iloc[-1]
            trend = ("about the same" if abs(hi["mean_gap"] - lo["mean_gap"]) < 0.1
                     else "smaller" if hi["mean_gap"] < lo["mean_gap"] else "larger")
            sent += (f" For the most accurate third of the models (top-1 {hi['lo']:.1f}-"
                     f"{hi['hi']:.1f}%) the gain is {trend}, {_pts(hi['mean_gap'])}, than for the "
                     f"least accurate third ({lo['lo']:.1f}-{lo['hi']:.1f}%, "
                     f"{_pts(lo['mean_gap'])}).")
        out.append(sent)
        d = (zoo["top1_v2"] - zoo["top1_val"]).dropna()
        sent = (f"On ImageNetV2 {int((d < 0).sum())} of {len(d)} models lose top-1 accuracy "
                f"(mean {_pts(d.mean())}, range {d.min():+.1f} to {d.max():+.1f})")
        if zoo_fits is not None:
            f = zoo_fits.set_index("relation").loc["ImageNetV2 top-1 vs ImageNet top-1"]
            sent += (f", along V2 = {f['slope']:.3f} val {f['intercept']:+.2f} "
                     f"(R² {f['r2']:.3f})")
            if f["probit_rmse"] < f["rmse"]:  # False where the probit fit is n/a (NaN)
                sent += (f"; a line on the probit scale of both accuracies, as Recht et al. "
                         f"(2019) found, fits closer (rms residual {f['probit_rmse']:.2f} vs "
                         f"{f['rmse']:.2f} points)")
        out.append(sent + ".")
    if raters is not None:
        out.extend(rater_takeaways(raters))
    if study is None:
        out.append("People: not measured in this run (the human-study release is absent), so "
                   "it cannot say whether people lose accuracy on ImageNetV2. The paper reports "
                   "that they hardly do, on multi-label accuracy over its 2,000 human-labelled "
                   "images; those published numbers are not comparable with the models' top-1 "
                   "above and are not plotted with them.")
        return out
    out.extend(_human_takeaways(study))
    return out


def _human_takeaways(study: HumanStudy) -> list[str]:
    out = []
    t1 = study.table1.dropna(subset=["val", "v2"])
    hum = t1[t1["kind"] == "human"]
    mod = t1[t1["kind"] == "model"]
    if not hum.empty and not mod.empty:
        dh = (hum["val"] - hum["v2"])
        dm = (mod["val"] - mod["v2"])
        if dh.max() < dm.min():
            cmp_ = "less than every model"
        elif dh.mean() < dm.median():
            cmp_ = "less than the median model, but not less than every model"
        else:
            cmp_ = "as much as the median model or more"
        sent = (f"On the {study.frame[study.frame['kind'] == 'human']['image'].nunique():,} "
                f"human-labelled images (multi-label accuracy, val minus V2), the "
                f"{len(dh)} people drop {dh.mean():.1f} points on average (from {dh.min():.1f} "
                f"to {dh.max():.1f}) and the {len(dm)} models a median of {dm.median():.1f} "
                f"(from {dm.min():.1f} to {dm.max():.1f}): people lose {cmp_}.")
        fixed = mod.set_index("user")
        if study.mcnemar_model in fixed.index:
            r = fixed.loc[study.mcnemar_model]
            sent += (f" The pre-registered {study.mcnemar_model} scores {r['val']:.1f} on val and "
                     f"{r['v2']:.1f} on V2 (drop {r['val'] - r['v2']:.1f}).")
        out.append(sent)
    mc = study.mcnemar
    if not mc.empty:
        parts = []
        for ds, name in (("val", "ImageNet val"), ("v2", "ImageNetV2")):
            d = mc[mc["dataset"] == ds]
            if d.empty:
                continue
            sig = d[d["pvalue"] < 0.05]
            better = int((sig["other_acc"] > sig["model_acc"]).sum())
            parts.append(f"on {name} it differs from {len(sig)} of {len(d)} people at p < 0.05 "
                         f"({better} of them more accurate than the model; smallest p "
                         f"{d['pvalue'].min():.2g})")
        out.append(f"McNemar's test, {study.mcnemar_model} (fixed in advance) against each "
                   f"person: " + "; ".join(parts) + ".")
    sub = study.subsets
    cls = sub[sub["subset"].isin(["without dogs", "objects only"]) & sub["outside"].notna()]
    if not cls.empty:
        hits = cls[cls["outside"].astype(bool)]
        desc = ", ".join(f"{r.user} {r.dataset} {r.subset} ({r.change:+.1f})"
                         for r in hits.itertuples()) or "none"
        out.append("Class subsets whose change in accuracy lies beyond every bootstrap trial "
                   f"(the paper's significance rule): {desc}.")
    return out
