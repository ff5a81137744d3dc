"""Shankar et al.'s multi-label analysis on a tiny hand-written release with hand-checked values.

The release below follows the schema of ``human_accuracy.pickle``: 6 val images (one
problematic), 4 ImageNetV2 images, five humans, three models, majority users.
Every expected number in these tests was counted by hand from the tables in the comments.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, chi2
from statsmodels.stats.contingency_tables import mcnemar

from softlib import multilabel as ml

DOG_A, DOG_B, ORG, OBJ_A, OBJ_B = "n02085620", "n02085782", "n01440764", "n02690373", "n02701002"
V = [f"ILSVRC2012_val_{i:08d}" for i in range(1, 7)]  # V[5] is problematic
W = ["v2_a", "v2_b", "v2_c", "v2_d"]

#            image  class   correct labels
IMAGES = {V[0]: (DOG_A, [DOG_A, DOG_B]),
          V[1]: (ORG, [ORG]),
          V[2]: (OBJ_A, [OBJ_A, OBJ_B]),
          V[3]: (OBJ_B, [OBJ_B]),
          V[4]: (DOG_B, [DOG_B]),
          V[5]: (OBJ_A, [OBJ_A]),          # problematic: everyone is wrong on it
          W[0]: (DOG_A, [DOG_A]),
          W[1]: (OBJ_A, [OBJ_A]),
          W[2]: (ORG, [ORG, DOG_A]),
          W[3]: (OBJ_B, [OBJ_B])}

# predictions; None = the user did not label the image
HUMAN_A = [DOG_B, ORG, OBJ_B, OBJ_A, DOG_B, OBJ_B, DOG_A, OBJ_A, DOG_A, OBJ_A]
TRUE = [IMAGES[i][0] for i in V + W]
HUMAN_B = [ORG] + TRUE[1:5] + [OBJ_B] + TRUE[6:9] + [OBJ_A]
HUMAN_CDE = TRUE[:5] + [OBJ_B] + TRUE[6:9] + [OBJ_A]
M1 = [DOG_A, OBJ_A, OBJ_A, OBJ_A, DOG_B, OBJ_B, DOG_A, OBJ_A, ORG, OBJ_A]
M2 = [DOG_A, OBJ_B, ORG, ORG, ORG, OBJ_B, DOG_A, OBJ_B, DOG_A, None]
M3 = list(HUMAN_A)

# labelling seconds per image (humans a..e); medians: 30, 60, 10, 100, 59, -, 5, 120, 120, 120
SECONDS = [[10, 20, 30, 70, 80], [59, 59, 60, 61, 100], [10] * 5, [100] * 5, [59, 59, 59, 200, 300],
           [1] * 5, [5] * 5, [120] * 5, [120] * 5, [120] * 5]
FAST = {V[0], V[2], V[4], W[0]}


def _times(k: int, secs: int):
    """Alternate date formats across images, including one that crosses midnight."""
    if k % 3 == 0:
        start = pd.Timestamp("2019-11-07 23:59:50")
        end = start + pd.Timedelta(seconds=secs)
        return str(start), str(end)
    if k % 3 == 1:
        start = pd.Timestamp("2019-11-07 13:31:00")
        fmt = "%a %b %d %Y %H:%M:%S GMT-0800 (Pacific Standard Time)"
        return start.strftime(fmt), (start + pd.Timedelta(seconds=secs)).strftime(fmt)
    start = pd.Timestamp("2019-11-07T21:31:44.250Z")
    return start.isoformat(), (start + pd.Timedelta(seconds=secs)).isoformat()


def make_release() -> dict:
    ids = V + W
    annot: dict = {}
    humans = {"human_a": HUMAN_A, "human_b": HUMAN_B, "human_c": HUMAN_CDE,
              "human_d": HUMAN_CDE, "human_e": HUMAN_CDE}
    for h_i, (h, preds) in enumerate(humans.items()):
        annot[h] = {}
        for k, (i, p) in enumerate(zip(ids, preds)):
            s, e = _times(k, SECONDS[k][h_i])
            annot[h][i] = {"label": p, "extra_info": {"start_time": s, "end_time": e}}
    for m, preds in (("m1", M1), ("m2", M2), ("m3", M3)):
        annot[m] = {i: {"label": p} for i, p in zip(ids, preds) if p is not None}
    annot["human_majority"] = {i: {"label": p} for i, p in zip(ids, HUMAN_CDE)}
    annot["model_majority"] = {i: {"label": p} for i, p in zip(ids, M1)}
    return {
        "labeled_images": list(ids),
        "image_map": {i: {"id": i, "problematic": i == V[5]} for i in ids},
        "image_labels": {i: {"correct": list(c), "wrong": []} for i, (_, c) in IMAGES.items()},
        "wnid_map": {i: w for i, (w, _) in IMAGES.items()},
        "annot_data": annot,
        "split_wnids": {("organism",): {DOG_A, DOG_B, ORG}, ("organism", "dog"): {DOG_A, DOG_B},
                        ("object",): {OBJ_A, OBJ_B}},
        "all_candidates": set(W),
        "initial_annots": {},
    }


@pytest.fixture(scope="module")
def release():
    return make_release()


@pytest.fixture(scope="module")
def frame(release):
    return ml.prediction_frame(release)


@pytest.fixture(scope="module")
def acc(frame):
    return ml.accuracy_table(frame).set_index(["user", "dataset"])


def test_dataset_and_groups(release, frame):
    assert ml.dataset_of(V[0]) == "val" and ml.dataset_of("v2_a") == "v2"
    assert ml.class_group(DOG_A, release["split_wnids"]) == "dog"
    assert ml.class_group(ORG, release["split_wnids"]) == "organism"
    assert ml.class_group(OBJ_B, release["split_wnids"]) == "object"
    assert ml.model_users(release) == ["m1", "m2", "m3"]
    assert ml.human_images(release) == set(V[:5] + W)


def test_problematic_excluded(frame):
    assert V[5] not in set(frame["image"])
    # 5 humans x 9 + m1 9 + m2 8 + m3 9 + 2 majorities x 9
    assert len(frame) == 45 + 9 + 8 + 9 + 18


@pytest.mark.parametrize("user,ds,n,ml_k,top1_k", [
    ("human_a", "val", 5, 4, 2), ("human_a", "v2", 4, 3, 2),
    ("human_b", "val", 5, 4, 4), ("human_b", "v2", 4, 3, 3),
    ("human_c", "val", 5, 5, 5), ("human_e", "v2", 4, 3, 3),
    ("m1", "val", 5, 3, 3), ("m1", "v2", 4, 3, 3),
    ("m2", "val", 5, 1, 1), ("m2", "v2", 3, 2, 1),   # m2 did not label v2_d
    ("m3", "val", 5, 4, 2),
])
def test_hand_checked_accuracy(acc, user, ds, n, ml_k, top1_k):
    row = acc.loc[(user, ds)]
    assert row["n"] == n
    assert row["multilabel_correct"] == ml_k and row["top1_correct"] == top1_k
    assert row["multilabel"] == pytest.approx(100 * ml_k / n)
    assert row["top1"] == pytest.approx(100 * top1_k / n)
    assert row["multilabel_lo"] <= row["multilabel"] <= row["multilabel_hi"]


def test_majority_kinds(acc):
    assert acc.loc[("human_majority", "val"), "kind"] == "human_majority"
    assert acc.loc[("model_majority", "val"), "kind"] == "model_majority"
    assert acc.loc[("m1", "val"), "kind"] == "model"


def test_clopper_pearson_matches_scipy():
    for k, n in [(4, 5), (0, 7), (7, 7), (913, 1000), (1, 2000)]:
        lo, hi = ml.clopper_pearson(k, n)
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert float(lo) == pytest.approx(ci.low, abs=1e-10)
        assert float(hi) == pytest.approx(ci.high, abs=1e-10)


def test_ci_in_table(acc):
    ci = binomtest(4, 5).proportion_ci(method="exact")
    assert acc.loc[("human_a", "val"), "multilabel_lo"] == pytest.approx(100 * ci.low)
    assert acc.loc[("human_a", "val"), "multilabel_hi"] == pytest.approx(100 * ci.high)


def test_labelling_times_and_fast_rule(release):
    t = ml.labelling_times(release)
    assert len(t) == 45  # problematic image dropped
    a = t[(t.user == "human_a")].set_index("image")["seconds"]
    assert a[V[0]] == pytest.approx(10)   # crosses midnight
    assert a[V[1]] == pytest.approx(59)   # JavaScript date string
    assert a[V[2]] == pytest.approx(10)   # ISO with milliseconds
    # V[1] has median exactly 60 s: not fast under the strict '< 60' rule
    assert ml.fast_images(release) == FAST
    assert V[1] in ml.fast_images(release, threshold=60.5)


def test_parse_time_errors():
    with pytest.raises(ValueError, match="cannot parse"):
        ml.parse_time("not a date at all")
    assert ml.parse_time(1_573_162_304) == ml.parse_time(1_573_162_304_000)
    with pytest.raises(ValueError, match="'garbage'"):
        ml.parse_times(["2019-11-07 10:00:00", "garbage"])
    t = ml.parse_times(["2019-11-07 10:00:00", "Thu Nov 07 2019 10:00:30 GMT+0000 (UTC)"])
    assert (t[1] - t[0]).total_seconds() == 30


def test_subset_masks(frame, release):
    ha = frame[(frame.user == "human_a") & (frame.dataset == "val")]
    assert set(ha[ml.subset_mask(ha, "without dogs")]["image"]) == {V[1], V[2], V[3]}
    assert set(ha[ml.subset_mask(ha, "objects only")]["image"]) == {V[2], V[3]}
    assert set(ha[ml.subset_mask(ha, "fast", release)]["image"]) == {V[0], V[2], V[4]}
    with pytest.raises(ValueError, match="subset"):
        ml.subset_mask(ha, "cats")


def test_subset_table(frame, release):
    t = ml.subset_table(frame, release, users=["human_a", "m2"], trials=200, seed=1)
    t = t.set_index(["user", "dataset", "subset"]).sort_index()
    r = t.loc[("human_a", "val")]
    # human_a on val: all 4/5, no dogs 2/3, objects 1/2, fast 3/3
    assert r.loc["all", "accuracy"] == pytest.approx(80)
    assert r.loc["without dogs", "accuracy"] == pytest.approx(200 / 3)
    assert r.loc["without dogs", "change"] == pytest.approx(200 / 3 - 80)
    assert r.loc["without dogs", "n_classes"] == 3
    assert r.loc["objects only", "accuracy"] == pytest.approx(50)
    assert r.loc["fast", "accuracy"] == pytest.approx(100) and r.loc["fast", "n"] == 3
    # bootstrap over 3 of 5 one-image classes, objB the only miss: change is -13.3 or +20
    assert r.loc["without dogs", "boot_min"] == pytest.approx(200 / 3 - 80)
    assert r.loc["without dogs", "boot_max"] == pytest.approx(20)
    assert not r.loc["without dogs", "outside"]
    assert pd.isna(r.loc["fast", "boot_min"])
    # m2 on v2 labelled only 3 images; fast: only v2_a (correct)
    assert t.loc[("m2", "v2", "fast"), "accuracy"] == pytest.approx(100)


def test_class_bootstrap_hand_checked_and_deterministic():
    correct = np.array([1, 1, 1, 0, 1, 0, 0], bool)
    classes = np.array(["a", "b", "c", "d", "e", "e", "e"])
    full = ml.class_bootstrap(correct, classes, k=5, trials=10, seed=0)
    assert np.allclose(full, 100 * 4 / 7)          # all classes drawn: overall accuracy
    one = ml.class_bootstrap(correct, classes, k=1, trials=500, seed=3)
    assert set(np.round(one, 6)) <= {100.0, 0.0, round(100 / 3, 6)}
    b1 = ml.class_bootstrap(correct, classes, k=3, trials=300, seed=7)
    b2 = ml.class_bootstrap(correct, classes, k=3, trials=300, seed=7)
    b3 = ml.class_bootstrap(correct, classes, k=3, trials=300, seed=8)
    assert np.array_equal(b1, b2) and not np.array_equal(b1, b3)
    with pytest.raises(ValueError, match="k must be"):
        ml.class_bootstrap(correct, classes, k=6)


def test_subset_table_deterministic(frame, release):
    a = ml.subset_table(frame, release, trials=100, seed=5)
    b = ml.subset_table(frame, release, trials=100, seed=5)
    pd.testing.assert_frame_equal(a, b)


def test_mcnemar_against_statsmodels_and_scipy():
    rng = np.random.default_rng(0)
    # small discordance -> exact binomial
    a = np.array([1, 1, 1, 0, 1, 1, 0, 1], bool)
    b = np.array([1, 0, 0, 0, 1, 0, 1, 1], bool)
    r = ml.mcnemar_test(a, b)
    assert (r["a_only"], r["b_only"], r["both"], r["neither"]) == (3, 1, 3, 1) and r["exact"]
    assert r["pvalue"] == pytest.approx(binomtest(1, 4, 0.5).pvalue)
    assert r["pvalue"] == pytest.approx(mcnemar([[3, 3], [1, 1]], exact=True).pvalue)
    # many discordant pairs -> chi-square with continuity correction
    a = rng.random(400) < 0.8
    b = rng.random(400) < 0.6
    r = ml.mcnemar_test(a, b)
    bb, cc = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert not r["exact"]
    stat = (abs(bb - cc) - 1) ** 2 / (bb + cc)
    assert r["statistic"] == pytest.approx(stat)
    assert r["pvalue"] == pytest.approx(chi2.sf(stat, 1))


def test_outside_bootstrap_is_the_full_range_rule():
    """The paper: significant only when the change exceeds ALL trials, not the central 95%."""
    boot = np.linspace(-5.0, 5.0, 1000)          # 2.5/97.5 percentiles about -4.75 / +4.75
    lo95, hi95 = np.percentile(boot, [2.5, 97.5])
    inside_range_outside_95 = 4.9
    assert inside_range_outside_95 > hi95 and not ml.outside_bootstrap(inside_range_outside_95, boot)
    assert not ml.outside_bootstrap(-4.9, boot) and -4.9 < lo95
    assert not ml.outside_bootstrap(5.0, boot)    # equal to the max: not beyond every trial
    assert ml.outside_bootstrap(5.01, boot) and ml.outside_bootstrap(-5.2, boot)
    with pytest.raises(ValueError, match="trial"):
        ml.outside_bootstrap(1.0, np.array([]))


def test_subset_table_flags_only_changes_beyond_every_trial():
    """Constructed: dropping one class moves accuracy beyond the 95% band but inside the range."""
    # 20 one-image classes, one of them wrong; 'without dogs' drops the single dog class
    rows = []
    for k in range(20):
        rows.append({"user": "u", "kind": "model", "image": f"i{k}", "dataset": "val",
                     "wnid": f"c{k:02d}", "group": "dog" if k == 0 else "object",
                     "pred": "x", "multilabel": k != 5, "top1": k != 5})
    f = pd.DataFrame(rows)
    t = ml.subset_table(f, users=["u"], trials=400, seed=0).set_index("subset")
    r = t.loc["without dogs"]
    # all 95%, without the dog 18/19: change = 94.74 - 95 = -0.26; random 19-class draws give
    # -0.26 (the miss is kept) or +5 (it is dropped), so -0.26 is the minimum of the trials
    assert r["change"] == pytest.approx(100 * 18 / 19 - 95)
    assert r["boot_min"] == pytest.approx(r["change"])
    assert r["boot_max"] == pytest.approx(5.0)
    assert not r["outside"]


def test_best_model_post_hoc_and_mcnemar_table(frame, acc):
    assert ml.best_model_post_hoc(acc.reset_index()) == "m3"  # 7/9 pooled vs m1 6/9, m2 3/8
    assert not hasattr(ml, "best_model")  # no ambiguous name left for the data-driven pick
    t = ml.mcnemar_table(frame, "m3").set_index(["dataset", "other"])
    r = t.loc[("val", "human_c")]
    # m3 right on 4 of 5, human_c on all 5: one discordant pair
    assert (r["both"], r["a_only"], r["b_only"]) == (4, 0, 1)
    assert r["pvalue"] == pytest.approx(1.0)
    assert len(t) == 10


def test_mcnemar_uses_the_preregistered_model_even_if_another_scores_higher(release):
    r = copy.deepcopy(release)
    # the paper's FixResNeXt as m2's predictions (the weakest model, 3/8); m3 scores higher
    r["annot_data"][ml.PAPER_MCNEMAR_MODEL] = r["annot_data"]["m2"]
    f = ml.prediction_frame(r)
    a = ml.accuracy_table(f)
    assert ml.best_model_post_hoc(a) == "m3"
    t = ml.mcnemar_table(f)  # default: the pre-registered model
    assert set(t["model"]) == {ml.PAPER_MCNEMAR_MODEL}
    assert ml.PAPER_MCNEMAR_MODEL == "FixResNeXt101_32x48d_v2"
    # case-insensitive match of the release's spelling (the authors compare lower-cased)
    r["annot_data"]["fixresnext101_32x48d_v2"] = r["annot_data"].pop(ml.PAPER_MCNEMAR_MODEL)
    t2 = ml.mcnemar_table(ml.prediction_frame(r))
    assert set(t2["model"]) == {"fixresnext101_32x48d_v2"}
    assert t2["pvalue"].tolist() == pytest.approx(t["pvalue"].tolist())


def test_mcnemar_model_absent_is_a_clear_error(frame, release):
    with pytest.raises(ValueError, match="FixResNeXt101_32x48d_v2.*not among.*m1"):
        ml.mcnemar_table(frame)
    from softlib.studies import shankar
    with pytest.raises(ValueError, match="fixed in advance"):
        shankar.run_human_study(release, trials=10, seed=0)


def test_missed_table(frame):
    t = ml.missed_table(frame).set_index("missed by")
    # all humans miss only v2_d (object); all models miss val_4 and v2_d (m2 lacks v2_d)
    assert t.loc["all humans", "total"] == 1 and t.loc["all humans", "object"] == 1
    assert t.loc["all models", "total"] == 2 and t.loc["all models", "object"] == 2
    assert t.loc["humans and models", "total"] == 1
    assert t.loc["all models", "dog"] == 0
    imgs = ml.missed_by_all(frame, ["m1", "m2", "m3"], require_all=True)
    assert set(imgs["image"]) == {V[3]}   # v2_d needs all three models to count here


def test_trends_and_figure4(acc):
    a = acc.reset_index()
    fit = ml.model_trend(a)
    pts = ml.wide_val_v2(a[a.kind == "model"]).set_index("user")
    slope, icpt = np.polyfit(pts["val"], pts["v2"], 1)
    assert fit["slope"] == pytest.approx(slope) and fit["intercept"] == pytest.approx(icpt)
    assert fit["n"] == 3
    f4 = ml.figure4_table(a).set_index(["user", "dataset"])
    assert f4.loc[("m3", "val"), "multilabel_minus_top1"] == pytest.approx(40)
    assert "top5" not in f4


def test_linear_fit_exact():
    x = np.array([1.0, 2, 3, 4, np.nan])
    f = ml.linear_fit(x, 2 * x + 1)
    assert f["slope"] == pytest.approx(2) and f["intercept"] == pytest.approx(1)
    assert f["r2"] == pytest.approx(1) and f["n"] == 4
    with pytest.raises(ValueError, match="at least 3"):
        ml.linear_fit([1, 2], [1, 2])


def test_top5_when_present(release):
    assert not ml.has_top5(release)
    r = copy.deepcopy(release)
    for i, e in r["annot_data"]["m1"].items():
        e["top5"] = [e["label"], r["wnid_map"][i]]
    assert ml.has_top5(r)
    a = ml.accuracy_table(ml.prediction_frame(r)).set_index(["user", "dataset"])
    assert a.loc[("m1", "val"), "top5"] == pytest.approx(100)
    assert a.loc[("m1", "val"), "n"] == 5


def test_check_release_errors(release):
    with pytest.raises(ValueError, match="missing top-level keys"):
        ml.prediction_frame({"annot_data": {}})
    bad = copy.deepcopy(release)
    del bad["image_labels"][W[0]]
    with pytest.raises(ValueError, match="image_labels"):
        ml.prediction_frame(bad)


def test_timm_table():
    val = pd.DataFrame({"model": ["a", "b", "c", "c"], "img_size": [224, 224, 224, 288],
                        "top1": [80.0, 70.0, 60.0, 62.0], "top5": [95.0, 90.0, 85.0, 86.0],
                        "param_count": ["25.5", "1,013.01", "5", "5"]})
    real = val.assign(top1=[86.0, 77.0, 68.0, 70.0], top1_diff=["+6", "+7", "+8", "+8"])
    v2 = val.assign(top1=[69.0, 58.0, 47.0, 49.2])
    t = ml.timm_table(val, real, v2).set_index(["model", "img_size"])
    assert t.loc[("b", 224), "param_count"] == pytest.approx(1013.01)
    assert t.loc[("c", 288), "real_minus_val"] == pytest.approx(8)
    assert t.loc[("a", 224), "v2_minus_val"] == pytest.approx(-11)
    s = ml.timm_summary(t.reset_index()).set_index("relation")
    v2row = s.loc["ImageNetV2 top-1 vs ImageNet top-1"]
    assert v2row["slope"] == pytest.approx(1.1) and v2row["intercept"] == pytest.approx(-19)
    with pytest.raises(ValueError, match="missing columns"):
        ml.timm_table(val.drop(columns="top5"), real, v2)


def test_probit_fit_recovers_a_probit_line_that_a_straight_line_misses():
    from scipy.stats import norm
    x = np.linspace(40, 90, 60)
    y = 100 * norm.cdf(0.9 * norm.ppf(x / 100) + 0.3)  # curved in percent
    f = ml.probit_fit(x, y)
    assert f["slope"] == pytest.approx(0.9) and f["intercept"] == pytest.approx(0.3)
    assert f["rmse"] == pytest.approx(0, abs=1e-9) and f["n"] == 60
    np.testing.assert_allclose(ml.probit_curve(f, x), y, atol=1e-9)
    t = pd.DataFrame({"top1_val": x, "top1_real": y, "top1_v2": y - 5})
    s = ml.timm_summary(t).set_index("relation").loc["ReaL top-1 vs ImageNet top-1"]
    assert s["probit_rmse"] < 1e-9 < s["rmse"]  # the straight line leaves residuals
    with pytest.raises(ValueError, match="strictly between 0 and 100"):
        ml.probit_fit([50, 60, 100], [40, 50, 60])
    # a zoo with a perfect score still gets its linear fits; the probit ones are n/a
    s = ml.timm_summary(t.assign(top1_real=np.r_[100.0, y[1:]])).set_index("relation")
    assert np.isnan(s.loc["ReaL top-1 vs ImageNet top-1", "probit_slope"])
    assert np.isfinite(s.loc["ReaL top-1 vs ImageNet top-1", "slope"])


def test_gap_by_band_and_per_architecture():
    b = ml.gap_by_band([1, 2, 3, 4, 5, 6], [10, 20, 30, 40, 50, 60], bands=3)
    assert list(b["lo"]) == [1, 3, 5] and list(b["hi"]) == [2, 4, 6]
    assert list(b["mean_gap"]) == [15, 35, 55] and list(b["n"]) == [2, 2, 2]
    with pytest.raises(ValueError, match="at least 3 points"):
        ml.gap_by_band([1, 2], [1, 2])
    assert ml.timm_architecture("resnet50.a1_in1k") == "resnet50"
    assert ml.timm_architecture("vgg16") == "vgg16"
    t = pd.DataFrame({"model": ["r50.a", "r50.b", "vit.x", "eff.y"],
                      "gap": [-8.0, -10.0, -6.0, np.nan]})
    assert ml.per_architecture(t, "gap").to_dict() == {"r50": -9.0, "vit": -6.0}
    with pytest.raises(ValueError, match="need columns"):
        ml.per_architecture(t, "top1")


# --------------------------------------------------------------------------- the study module
def test_human_study_tables_and_plots(release):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from softlib.studies import shankar

    st = shankar.run_human_study(release, trials=50, seed=0, mcnemar_model="m1")
    assert st.mcnemar_model == "m1" and st.best_model_post_hoc == "m3"
    assert set(st.mcnemar["model"]) == {"m1"}
    assert {"m1", "m3"} <= set(st.subsets["user"])
    assert any("m3" in n and "pre-registered" in n for n in st.notes)
    assert st.fast_counts == {"val": 3, "v2": 1}
    assert not st.top5_available and st.notes
    assert st.label_counts["val"]["multi_pct"] == pytest.approx(40)  # 2 of 5 usable val images
    vp = shankar.vs_paper(st).set_index("who")
    assert vp.loc["Human A", "release user"] == "human_a"
    assert vp.loc["Human A", "this val"] == pytest.approx(80)
    assert vp.loc["Human A", "val diff"] == pytest.approx(80 - 91.9)
    assert vp.loc["FixRes", "release user"] == "(not in release)"
    facts = shankar.facts_vs_paper(st).set_index("fact")["this run"]
    assert facts["missed by all humans"] == 1 and facts["fast images (val)"] == 3
    fig = shankar.plot_figure1(st)
    left, right = fig.axes
    assert "paper Fig. 1, all classes" in left.get_title()
    assert "paper Fig. 1, objects only" in right.get_title()
    labels = [t.get_text() for t in left.get_legend().get_texts()]
    # the paper's Table 1 people and models and its fit: on the left panel only
    assert "paper Table 1: humans A-E" in labels and "paper: models' fit (authors' notebook)" \
        in labels
    assert not any(t.get_text().startswith("paper") for t in right.get_legend().get_texts())
    plt.close(fig)
    fig = shankar.plot_figure4(st)
    assert "paper Fig. 4" in fig.axes[0].get_title()
    plt.close(fig)
    text = " ".join(shankar.takeaways(study=st))
    assert "not measured" not in text and "McNemar" in text and "m1 (fixed in advance)" in text
    assert "people lose" in text


def _zoo_results():
    """Three models' top-1 on ImageNet, ReaL and ImageNetV2, as the timm results tables."""
    rows = {"a": (80.0, 86.0, 69.0), "b": (70.0, 77.0, 58.0), "c": (60.0, 68.0, 47.0)}
    return {key: pd.DataFrame({"model": list(rows), "img_size": 224,
                               "top1": [v[col] for v in rows.values()], "top5": 95.0,
                               "param_count": 1013.01})
            for key, col in (("imagenet", 0), ("imagenet-real", 1),
                             ("imagenetv2-matched-frequency", 2))}


def _zoo():
    from softlib.studies import shankar
    return shankar.zoo_study({"real": [], "results": _zoo_results()})


def test_zoo_plot_has_no_human_points_unless_asked_and_then_says_not_comparable():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from softlib.studies import shankar

    t, s = _zoo()
    fig = shankar.plot_zoo(t, s)
    assert len(fig.axes) == 4 and "ImageNetV2" in fig.axes[3].get_xlabel()
    assert "3 timm models" in fig.axes[0].get_title()
    assert "spread over models" in fig.axes[1].get_title()
    labels = [h.get_label() for h in fig.axes[2].collections]
    assert not any("human" in lab.lower() for lab in labels)
    plt.close(fig)
    fig = shankar.plot_zoo(t, s, published_humans=True)
    labels = [h.get_label() for h in fig.axes[2].collections]
    assert any("NOT COMPARABLE" in lab for lab in labels)
    plt.close(fig)


def test_takeaways_follow_what_was_computed():
    from softlib.studies import shankar

    t, s = _zoo()
    lines = shankar.takeaways(t, s, None, {"multi_pct_of_labelled": 20.0, "mean_labels_if_multi": 2.2})
    text = " ".join(lines)
    assert "3 of 3 timm models score higher" in text and "+7.0 points" in text
    assert "3 of 3 models lose top-1" in text and "-12.0 points" in text
    # how the gain changes is read off the models' thirds, not off one straight-line slope
    assert ("most accurate third of the models (top-1 80.0-80.0%) the gain is smaller, "
            "+6.0 points, than for the least accurate third (60.0-60.0%, +8.0 points)") in text
    assert "not measured in this run" in text
    assert "hardly do, on multi-label" in text and "people, measured the same way" not in text
    # a zoo where V2 is higher: the text must follow the numbers, not a fixed claim
    t2 = t.assign(top1_v2=t["top1_val"] + 1.0)
    assert "0 of 3 models lose" in " ".join(shankar.takeaways(t2, None, None))


def test_zoo_study_from_tables():
    from softlib.studies import shankar

    res = _zoo_results()
    t, s = shankar.zoo_study({"real": [], "results": res})
    assert list(t["model"]) == ["a", "b", "c"]
    assert t["param_count"].tolist() == [1013.01] * 3
    assert t["real_minus_val"].tolist() == pytest.approx([6, 7, 8])
    s = s.set_index("relation")
    assert s.loc["ImageNetV2 top-1 vs ImageNet top-1", "slope"] == pytest.approx(1.1)
    with pytest.raises(ValueError, match="load_imagenet_real"):
        shankar.zoo_study({"results": {"imagenet": res["imagenet"]}})


def test_study_on_data_layer_fixture(tmp_path):
    """The data layer's synthetic pickle loads, validates and runs through the whole study."""
    from softlib import data
    from softlib.data import fixtures
    from softlib.studies import shankar

    fixtures.write_fixture_root(tmp_path, n_train=20, n_test=20, n_small=10, cifar10_c=False)
    release = shankar.load_release(tmp_path)
    assert release is not None
    st = shankar.run_human_study(release, trials=20, seed=0)
    n_usable = len(ml.usable_images(release))
    assert st.frame.groupby("user").size().max() == n_usable
    assert set(st.table1["user"]) >= set(ml.HUMANS)
    t, s = shankar.zoo_study(shankar.load_real(tmp_path))
    assert len(t) > 0 and len(s) == 2
    assert shankar.load_release(tmp_path / "nowhere") is None
    with pytest.raises(data.DataMissingError):
        shankar.load_real(tmp_path / "nowhere")
