"""Tests of section 5's study module (Laing 2024): data shaping, configuration, temperature
scaling, the summary tables, and one tiny end-to-end grid through the cache."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import log_softmax, softmax

from softlib import losses
from softlib.studies import laing as L


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ data

def test_to_cifar_format_pads_grey_images_to_the_centre_and_repeats_channels():
    x = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28, 1).astype(np.uint8)
    out = L.to_cifar_format(x)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, 2:30, 2:30, 0], x[..., 0])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert out[:, :2].max() == 0 and out[:, :, 30:].max() == 0
    rgb = np.zeros((1, 32, 32, 3), np.uint8)
    assert L.to_cifar_format(rgb).shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="larger than 32x32"):
        L.to_cifar_format(np.zeros((1, 40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        L.to_cifar_format(np.zeros((1, 32, 32, 3), np.float32))


def test_make_split_sizes_disjoint_and_subset_is_part_of_the_training_split():
    labels = np.repeat(np.arange(10), 10)
    full = L.make_split(labels, seed=3, sizes=(60, 20, 20))
    assert (len(full.train), len(full.val), len(full.test)) == (60, 20, 20)
    assert len(np.union1d(np.union1d(full.train, full.val), full.test)) == 100
    sub = L.make_split(labels, seed=3, train_subset=25, sizes=(60, 20, 20))
    assert len(sub.train) == 25 and np.isin(sub.train, full.train).all()
    np.testing.assert_array_equal(sub.test, full.test)
    np.testing.assert_array_equal(sub.train, L.make_split(labels, 3, 25, (60, 20, 20)).train)
    assert not np.array_equal(full.test, L.make_split(labels, 4, None, (60, 20, 20)).test)
    small = L.make_split(labels, seed=3, sizes=(30, 20, 10))  # fewer than all images
    assert (len(small.train), len(small.val), len(small.test)) == (30, 20, 10)
    assert len(np.union1d(np.union1d(small.train, small.val), small.test)) == 60
    with pytest.raises(ValueError, match="split_sizes"):
        L.make_split(labels, seed=0, sizes=(90, 20, 20))


def test_matched_smoothing_gives_the_human_mean_probability_on_the_label():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10) * 0.3, size=200)
    labels = probs.argmax(1)
    eps = L.matched_smoothing_eps(probs, labels)
    smoothed = losses.smooth_labels(losses.one_hot(labels, 10), eps)
    assert smoothed[np.arange(200), labels].mean() == pytest.approx(
        probs[np.arange(200), labels].mean(), abs=1e-6)
    assert L.matched_smoothing_eps(np.eye(10)[labels], labels) == 0.0


def test_targets_for_each_condition():
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    labels = np.array([1, 1])
    np.testing.assert_array_equal(L.targets_for("hard", probs, labels), [[0, 1], [0, 1]])
    np.testing.assert_array_equal(L.targets_for("label_smoothing", probs, labels), [[0, 1], [0, 1]])
    np.testing.assert_allclose(L.targets_for("soft_cutmix", probs, labels), probs, atol=1e-7)
    with pytest.raises(ValueError, match="valid: hard, soft"):
        L.targets_for("softer", probs, labels)


# ------------------------------------------------------------------------------ configuration

def test_schedule_is_laings_at_230_epochs_and_scaled_below():
    assert L.schedule_for(230) == (5, [50, 100, 150, 190, 210, 230])
    warm, ms = L.schedule_for(23)
    assert warm == 1 and ms == sorted(ms) and ms[0] == 5 and ms[-1] == 23
    assert L.schedule_for(2)[0] == 0
    with pytest.raises(ValueError, match="epochs"):
        L.schedule_for(0)


PARAMS = {"epochs": 10, "width": 4, "lr": 0.05, "batch_size": 16, "mix_alpha": 0.2,
          "early_stopping_patience": 3}


def test_train_config_sets_mixing_and_smoothing_only_where_the_condition_asks():
    hard = L.train_config(PARAMS, "basic", "hard", 1, mix_prob=0.3, smoothing_eps=0.1)
    assert (hard.mix, hard.mix_prob, hard.label_smoothing) == ("none", 1.0, 0.0)
    assert hard.arch == "resnet_20" and hard.augment == "laing"
    assert hard.momentum == 0.9 and not hard.nesterov  # the author's torch.optim.SGD call
    assert hard.gamma == 0.5 and hard.seed == 1 and hard.arch_kwargs == {"width": 4}
    mix = L.train_config(PARAMS, "dropout_noaug", "soft_cutmix", 0, 0.3, 0.1)
    assert (mix.mix, mix.mix_prob, mix.mix_alpha, mix.augment) == ("cutmix", 0.3, 0.2, "none")
    ls = L.train_config(PARAMS, "duq", "label_smoothing", 0, 0.3, 0.1)
    assert ls.label_smoothing == 0.1 and ls.mix == "none" and ls.arch == "resnet20_duq"
    with pytest.raises(ValueError, match="model type 'resnet'"):
        L.train_config(PARAMS, "resnet", "hard", 0, 0.3, 0.1)


# ------------------------------------------------------------------------------ temperature

def test_fit_temperature_recovers_the_generating_temperature_and_matches_a_grid_search():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, size=(4000, 10))
    t0 = 2.5
    p = softmax(z / t0, axis=1)
    y = np.array([rng.choice(10, p=row) for row in p])
    t = L.fit_temperature(z, y)
    assert t == pytest.approx(t0, rel=0.1)
    grid = np.exp(np.linspace(np.log(0.5), np.log(10), 2001))
    nll = [-log_softmax(z / g, axis=1)[np.arange(len(y)), y].mean() for g in grid]
    assert t == pytest.approx(grid[int(np.argmin(nll))], rel=2e-3)


def test_evaluate_logits_metrics_ood_and_temperature_scaling():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 300)
    z = rng.normal(0, 1, (300, 10))
    z[np.arange(300), y] += 6.0
    y = np.where(rng.random(300) < 0.3, rng.integers(0, 10, 300), y)  # 30% noise: overconfident
    zo = rng.normal(0, 1, (300, 10))  # OOD: low max logit
    out = L.evaluate_logits(z, y, z, y, {"svhn": None, "fashion_mnist": zo})
    p = softmax(z, axis=1)
    assert out["accuracy"] == pytest.approx(100 * (p.argmax(1) == y).mean())
    assert math.isnan(out["ood_auroc_svhn"])
    assert out["ood_auroc_fashion_mnist"] > 0.99
    assert out["temperature"] > 1.0
    assert out["nll_ts"] <= out["nll"] + 1e-9  # fitted on the same data: NLL cannot rise
    assert set(out) >= {"ece", "brier", "nll", "ece_ts", "brier_ts"}


# ------------------------------------------------------------------------------ tables

def _runs():
    rows = []
    for seed, (h, s) in enumerate([(80.0, 82.0), (81.0, 84.0), (79.0, 83.0)]):
        rows.append({"model_type": "basic", "condition": "hard", "seed": seed, "accuracy": h,
                     "ece": 0.05, "ood_auroc_svhn": np.nan})
        rows.append({"model_type": "basic", "condition": "soft", "seed": seed, "accuracy": s,
                     "ece": 0.09 + 0.01 * seed, "ood_auroc_svhn": np.nan})
    rows.append({"model_type": "duq", "condition": "hard", "seed": 0, "accuracy": 70.0,
                 "ece": 0.2, "ood_auroc_svhn": np.nan})
    return pd.DataFrame(rows)


def test_summary_table_mean_se_and_count():
    s = L.summary_table(_runs())
    acc = s.loc[("basic", "soft"), ("accuracy", "mean")]
    assert acc == pytest.approx(83.0)
    assert s.loc[("basic", "soft"), ("accuracy", "se")] == pytest.approx(
        np.std([82, 84, 83], ddof=1) / math.sqrt(3))
    assert s.loc[("basic", "hard"), ("accuracy", "n")] == 3
    assert math.isnan(s.loc[("duq", "hard"), ("accuracy", "se")])
    assert list(s.index) == [("basic", "hard"), ("basic", "soft"), ("duq", "hard")]


def test_best_per_model_type_respects_direction_and_format_marks_it():
    s = L.summary_table(_runs())
    best = L.best_per_model_type(s)
    assert best.loc[("basic", "soft"), "accuracy"] and not best.loc[("basic", "hard"), "accuracy"]
    assert best.loc[("basic", "hard"), "ece"] and not best.loc[("basic", "soft"), "ece"]
    assert not best["ood_auroc_svhn"].any()
    f = L.format_table(s)
    assert f.loc[("basic", "soft"), "accuracy (%)"].endswith(" *")
    assert "±" in f.loc[("basic", "soft"), "accuracy (%)"]
    assert f.loc[("duq", "hard"), "accuracy (%)"] == "70.00 *"  # one seed: no ± part
    assert f.loc[("basic", "hard"), "OOD AUROC (SVHN)"] == "n/a"


def test_paired_differences_match_on_seed():
    d = L.paired_differences(_runs(), pairs=[("soft", "hard")], metrics=["accuracy"])
    row = d[(d.model_type == "basic")].iloc[0]
    diffs = np.array([2.0, 3.0, 4.0])
    assert row.difference == pytest.approx(3.0)
    assert row.se == pytest.approx(diffs.std(ddof=1) / math.sqrt(3))
    assert row.n_seeds == 3 and row.ses_from_zero == pytest.approx(3.0 / row.se)
    assert (d.model_type == "duq").sum() == 0  # no soft run to pair with


def test_paper_comparison_fills_known_cells_and_leaves_the_rest_nan():
    s = L.summary_table(_runs())
    c = L.paper_comparison(s)
    assert c.loc[("basic", "soft"), "accuracy (paper)"] == pytest.approx(82.917)
    assert c.loc[("basic", "soft"), "accuracy (this run)"] == pytest.approx(83.0)
    assert c.loc[("duq", "hard"), "ece (paper)"] != c.loc[("duq", "hard"), "ece (paper)"]  # NaN
    # what a reader compares: only the rows the paper reports, each note said once below
    only = L.paper_comparison(s, paper_rows_only=True)
    paper_rows = {(r["model_type"], r["condition"]) for r in L.PAPER_TABLE1}
    assert set(only.index) == set(c.index) & paper_rows and len(only) < len(c)
    assert only["accuracy (paper)"].notna().all()
    notes = L.comparison_notes(only).splitlines()
    assert all(n.startswith("- **") for n in notes)
    assert sum("true-class probability" in n for n in notes) == 1  # not once per row
    # every row the paper reports: each difference once, with the model types it concerns
    idx = pd.MultiIndex.from_tuples([(r["model_type"], r["condition"]) for r in L.PAPER_TABLE1],
                                    names=["model_type", "condition"])
    every = L.paper_comparison(pd.DataFrame({("accuracy", "mean"): 80.0}, index=idx),
                               paper_rows_only=True)
    notes = L.comparison_notes(every).splitlines()
    assert len(every) == len(L.PAPER_TABLE1)
    assert [n for n in notes if "true-class probability" in n] == [
        "- **basic, sngp, dropout_aug**: " + L.DEFINITION_DIFFERENCES["ece"]]
    assert sum(n.startswith("- **duq**:") for n in notes) == 2
    assert any(n.startswith("- **duq, soft**: ECE 0.693") for n in notes)
    empty = L.paper_comparison(s.iloc[:0], paper_rows_only=True)
    assert empty.empty and "accuracy (paper)" in empty.columns and L.comparison_notes(empty) == ""


# ------------------------------------------------------------------------------ end to end

def _tiny_data(n=60, with_svhn=False):
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(10), n // 10)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(10) * 0.2, size=n)
    probs = 0.6 * np.eye(10)[labels] + 0.4 * probs
    fm = L.to_cifar_format(rng.integers(0, 256, (30, 28, 28, 1), dtype=np.uint8))
    ood = {"svhn": fm[:12] if with_svhn else None, "fashion_mnist": fm}
    return L.LaingData(images, labels, probs, ood, provenance="synthetic test data")


def test_tiny_grid_end_to_end_and_cached(tmp_path, monkeypatch):
    from softlib.cache import ResultCache
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    params = {**PARAMS, "epochs": 1, "batch_size": 20, "width": 2, "fgsm_eps": 0.005,
              "train_subset": None, "split_sizes": (40, 10, 10), "seeds": [0],
              "model_types": ["dropout_noaug"], "label_conditions": ["hard", "soft_mixup"],
              "extra_conditions": ["label_smoothing"]}
    cache = ResultCache(tmp_path)
    data = _tiny_data()
    import softlib.attacks as attacks
    real_attack, attacked_through = attacks.attack_decrease, []

    def recording_attack(model, *a, use_inference=None, **k):
        attacked_through.append(use_inference)
        return real_attack(model, *a, use_inference=use_inference, **k)

    monkeypatch.setattr(attacks, "attack_decrease", recording_attack)
    g = L.run_grid(data, params, cache, device="cpu", progress=False)
    # MC dropout is attacked through its averaged passes (what its accuracy counts)
    assert attacked_through == [True] * 3
    assert L.eval_job(data, "dropout_noaug", "hard", 0, params)[0].config["attack"] == "inference"
    assert "attack" not in L.eval_job(data, "basic", "hard", 0, params)[0].config
    assert [L.attacks_inference(t) for t in L.MODEL_TYPES] == [
        t in ("dropout_noaug", "dropout_aug", "duq") for t in L.MODEL_TYPES]
    assert len(g.table) == 3
    assert set(L.METRICS) <= set(g.table.columns)
    assert g.table["ood_auroc_svhn"].isna().all()          # absent: NaN, never faked
    assert g.table["ood_auroc_fashion_mnist"].between(0, 1).all()
    assert g.table["attack_decrease"].dropna().between(0, 1).all()
    assert (g.table["n_train"] == 40).all()
    r = g.runs[0]
    assert r.test_probs.shape == (10, 10) and np.allclose(r.test_probs.sum(1), 1, atol=1e-5)
    rel = L.pooled_reliability(g.runs, "dropout_noaug", "hard")
    assert rel["count"].sum() == 10
    misses = cache.misses
    g2 = L.run_grid(data, params, cache, device="cpu", progress=False)
    assert cache.misses == misses  # nothing retrained or re-evaluated
    pd.testing.assert_frame_equal(g.table, g2.table, check_like=True)
    # an evaluation stores its metrics, not the test probabilities again: they are the softmax
    # of the run's stored test logits, the same values an earlier evaluation kept
    from scipy.special import softmax
    evals = [p for p in (tmp_path / "laing_eval").iterdir() if p.is_dir()]
    assert len(evals) == 3 and not any((p / "arrays.npz").exists() for p in evals)
    ev = L.eval_job(data, "dropout_noaug", "hard", 0, params)[0]
    tr = cache.load("laing_train", ev.train_job.key())
    want = softmax(tr.arrays["logits_test"].astype(np.float64), axis=1).astype(np.float32)
    np.testing.assert_array_equal(g2.runs[0].test_probs, want)
    from softlib.cache import Entry
    kept = Entry(arrays={"test_probs": want + 0})
    assert L.probs_on_test(tr, kept) is kept.arrays["test_probs"]


def test_run_one_reports_svhn_when_present(tmp_path, monkeypatch):
    from softlib.cache import ResultCache
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    params = {**PARAMS, "epochs": 1, "batch_size": 20, "width": 2, "fgsm_eps": 0.005,
              "train_subset": 20, "split_sizes": (40, 10, 10)}
    r = L.run_one(_tiny_data(with_svhn=True), "sngp", "soft", 0, params, ResultCache(tmp_path),
                  device="cpu", progress=False)
    assert 0 <= r.metrics["ood_auroc_svhn"] <= 1
    assert r.info["n_train"] == 20
    assert 0 < r.info["mix_prob"] <= 1


def test_paper_direction_check_compares_signs():
    runs = _runs()
    d = L.paired_differences(runs, pairs=[("soft", "hard")], metrics=["accuracy", "ece"])
    chk = L.paper_direction_check(d).set_index(["model_type", "metric"])
    assert chk.loc[("basic", "accuracy"), "paper soft - hard"] == pytest.approx(82.917 - 81.367)
    assert chk.loc[("basic", "accuracy"), "same sign"] == "yes"    # both soft better
    assert chk.loc[("basic", "ece"), "same sign"] == "yes"         # both soft worse ECE
    assert pd.isna(chk.loc[("sngp", "accuracy"), "same sign"])       # not run here
    assert pd.isna(chk.loc[("basic", "ood_auroc_svhn"), "same sign"])
    # a tie is neither sign (the ledger's 'no difference'); the opposite sign is 'no'
    tie = d.copy()
    tie.loc[(tie.model_type == "basic") & (tie.metric == "accuracy"), "difference"] = 0.0
    tie.loc[(tie.model_type == "basic") & (tie.metric == "ece"), "difference"] *= -1
    chk = L.paper_direction_check(tie).set_index(["model_type", "metric"])
    assert chk.loc[("basic", "accuracy"), "same sign"] == "no difference"
    assert chk.loc[("basic", "ece"), "same sign"] == "no"


def test_load_inputs_reports_an_absent_ood_set_as_none(tmp_path):
    from softlib.data import fixtures
    root = fixtures.write_fixture_root(tmp_path, n_small=20, cifar10_c=False)
    import shutil
    shutil.rmtree(root / "svhn")
    d = L.load_inputs(root)
    assert d.images.shape == (10000, 32, 32, 3) and d.probs.shape == (10000, 10)
    assert d.ood["svhn"] is None
    assert d.ood["fashion_mnist"].shape == (20, 32, 32, 3)


def test_hard_labels_are_the_human_majority_and_cifar10_labels_are_kept(tmp_path):
    from softlib import data
    from softlib.data import fixtures
    from softlib.data.views import majority_labels
    root = fixtures.write_fixture_root(tmp_path, n_small=20, cifar10_c=False)
    d = L.load_inputs(root)
    human = data.load_cifar10h(root=root)
    np.testing.assert_array_equal(d.labels, majority_labels(human.counts))
    np.testing.assert_array_equal(d.cifar10_labels, data.load("cifar10", "test", root=root).labels)
    hard = L.targets_for("hard", d.probs, d.labels)
    np.testing.assert_array_equal(hard.argmax(1), d.labels)


def test_mc_dropout_rate_and_logit_averaging_reach_the_model():
    params = {"epochs": 10, "width": 8, "lr": 0.05, "batch_size": 32, "mix_alpha": 0.2,
              "dropout_p": 0.07}
    cfg = L.train_config(params, "dropout_aug", "soft", 0, 0.3, 0.0)
    assert cfg.arch_kwargs == {"width": 8, "p": 0.07, "average": "logits"}
    assert L.train_config(params, "basic", "soft", 0, 0.3, 0.0).arch_kwargs == {"width": 8}
    # DUQ's centroids from eval-mode embeddings, as the original (and in the cache key)
    duq = L.train_config(params, "duq", "soft", 0, 0.3, 0.0)
    assert duq.arch_kwargs == {"width": 8, "centroid_update": "eval"}
    from softlib.train import _default_build
    from softlib.models.mc_dropout import MCDropout
    m = _default_build(cfg)
    drops = [x for x in m.modules() if isinstance(x, MCDropout)]
    assert len(drops) == 19 and all(x.p == 0.07 for x in drops)  # after every ReLU
    assert m.average == "logits" and m.samples == 10
    fewer = L.train_config(dict(params, mc_samples=4), "dropout_aug", "soft", 0, 0.3, 0.0)
    assert _default_build(fewer).samples == 4


def test_duq_ece_is_also_measured_on_the_authors_output_and_compared_with_the_paper():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 400)
    z = np.log(rng.dirichlet(np.ones(10), 400)) + 4.0 * np.eye(10)[y]  # log kernels, ~accurate
    mets = L.evaluate_logits(z, y, model_type="duq")
    # the author's output caps confidence at 0.155, so its ECE is about accuracy - 0.15
    assert mets["ece_author_output"] == pytest.approx(mets["accuracy"] / 100 - 0.13, abs=0.04)
    assert "ece_author_output" not in L.evaluate_logits(z, y)
    runs = _runs()
    runs["ece_author_output"] = 0.69
    summary = L.summary_table(runs)  # the default summary, as section 5 makes it
    c = L.paper_comparison(summary)
    duq = c.xs("duq", level="model_type")
    assert (duq["ece (this run)"] == 0.69).all()
    assert "true-class probability" in c.loc[("basic", "soft"), "defined differently"]
    assert "K_max" in duq["defined differently"].iloc[0]
    # ... but Table 1 of the section keeps Table 1's columns
    assert "ECE (author's DUQ output)" not in L.format_table(summary).columns


def test_the_discussion_is_written_from_the_run_not_from_one_profile():
    from softlib.book import profiles
    runs = _runs()
    gpu = profiles.resolve("gpu", "calibration_ood")
    text = L.run_discussion("gpu", gpu, runs, svhn_present=False,
                            cifar10_provenance="# CIFAR-10 (JPEG re-encoding), test set ...")
    bullets = text.splitlines()
    assert [b.split("**")[1] for b in bullets] == ["Budget.", "OOD data.",
                                                   "Choices the paper leaves open.", "Data."]
    budget = bullets[0]
    assert f"`gpu` profile every model trains for {gpu['epochs']} epochs (Laing: 230" in budget
    assert f"over {len(gpu['seeds'])} seeds (Laing: 5)" in budget
    assert f"{runs['accuracy'].mean():.1f}%" in budget and "standard errors over" in budget
    for mt, acc in runs.groupby("model_type")["accuracy"].mean().items():
        assert f"{mt} {acc:.1f}%" in budget
    assert "not available on this machine" in bullets[1]
    assert f"p = {gpu['dropout_p']}" in bullets[2] and "after every ReLU" in bullets[2]
    assert "JPEG re-encoding" in bullets[3]
    # Laing's own budget, with SVHN and the canonical pixels: nothing about under-training
    paper = profiles.resolve("paper", "calibration_ood")
    text = L.run_discussion("paper", paper, runs, svhn_present=True,
                            cifar10_provenance="canonical cifar-10-batches-py converted")
    assert "follows Laing's budget (230 epochs, width 16, 5 seeds)" in text
    assert "under-trained" not in text and "SVHN, is present" in text
    assert "JPEG" not in text and "synthetic" not in text
    one = L.run_discussion("smoke", dict(gpu, seeds=[0]), runs, False, "SYNTHETIC FIXTURE")
    assert "With one seed" in one and "synthetic fixture, not CIFAR-10" in one


def test_temperature_answers_say_whether_one_temperature_removes_the_ece_cost():
    idx = pd.MultiIndex.from_tuples(
        [("basic", "hard"), ("basic", "soft"), ("sngp", "hard"), ("sngp", "soft"),
         ("duq", "hard"), ("duq", "soft"), ("dropout_aug", "soft")],
        names=["model_type", "condition"])
    ts = pd.DataFrame({"ece": [0.03, 0.05, 0.04, 0.08, 0.05, 0.04, 0.1],
                       "ece_ts": [0.02, 0.021, 0.03, 0.07, 0.03, 0.03, 0.05]}, index=idx)
    lines = L.temperature_answers(ts, 1)
    assert len(lines) == 3  # dropout_aug has no hard run
    basic, sngp, duq = lines
    assert basic.startswith("basic: soft - hard ECE +0.0200 before temperature scaling, +0.0010 after")
    assert "removes most" in basic and basic.endswith("(means over 1 seed).")
    assert "does not remove most" in sngp and "no ECE cost here" in duq
