"""Tests of softlib.studies.peterson (sections 2-4): helpers on hand-made inputs, and the whole
pipeline once on synthetic fixture data with a tiny network (fast, no mirror, no network)."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from softlib.cache import ResultCache
from softlib.data import fixtures
from softlib.studies import peterson as P


# ------------------------------------------------------------------------------ small helpers

def test_parse_archs_and_family():
    a = P.parse_archs([["ResNet-8", "resnet", {"width": 4, "depth": 8}]])
    assert a[0].kwargs == {"depth": 8, "width": 4} and a[0].family == "ResNet"
    assert P.paper_family("resnet_preact_bottleneck_164") == "PreAct-ResNet"
    assert P.paper_family("resnext_29_8x64d") == "ResNeXt"
    assert P.paper_family("densenet_BC_100_12") == "DenseNet"
    assert P.paper_family("mlp") is None
    with pytest.raises(ValueError, match=r"archs\[0\].*label, build name"):
        P.parse_archs([["ResNet", "resnet"]])
    with pytest.raises(ValueError, match="at least one"):
        P.parse_archs([])


def test_an_architecture_can_set_its_own_schedule_length():
    fast, slow = P.parse_archs([["VGG", "vgg", {"width": 8}, {"epochs": 20}],
                                ["ResNet", "resnet_20", {}]])
    params = {"epochs": 6, "batch_size": 32, "lr": [0.01]}
    assert fast.param(params, "epochs") == 20 and slow.param(params, "epochs") == 6
    assert P.scratch_config(fast, 0.01, fast.param(params, "epochs"), 32).epochs == 20
    with pytest.raises(ValueError, match="cannot override batch_size per architecture"):
        P.parse_archs([["VGG", "vgg", {}, {"batch_size": 64}]])


def test_select_folds_are_petersons_9000_1000_split():
    labels = np.repeat(np.arange(10), 1000)
    folds = P.select_folds(labels, 3, k=10, seed=0)
    assert len(folds) == 3
    held = np.concatenate([te for _, te in folds])
    assert len(np.unique(held)) == 3000
    for tr, te in folds:
        assert len(tr) == 9000 and len(te) == 1000
        assert np.intersect1d(tr, te).size == 0
        assert np.all(np.bincount(labels[te]) == 100)  # stratified
    with pytest.raises(ValueError, match="folds"):
        P.select_folds(labels, 11)


def test_stratified_subset_balanced_and_deterministic():
    labels = np.repeat(np.arange(10), 50)
    a = P.stratified_subset(labels, 40, seed=1)
    assert np.array_equal(a, P.stratified_subset(labels, 40, seed=1))
    assert np.all(np.diff(a) > 0)
    assert np.all(np.bincount(labels[a], minlength=10) == 4)
    assert len(P.stratified_subset(labels, None)) == 500
    capped = P.cap_train(np.arange(500), 30, labels, seed=0)
    assert len(capped) == 30 and np.bincount(labels[capped], minlength=10).min() == 3


def _study(n=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10), n // 10)
    counts = rng.integers(0, 5, size=(n, 10)).astype(float)
    counts[np.arange(n), labels] += 40
    human = (counts / counts.sum(1, keepdims=True)).astype(np.float32)
    human = human / human.sum(1, keepdims=True, dtype=np.float64)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return P.StudyData(images, labels, human.astype(np.float32), "test")


def test_class_level_targets_use_the_training_fold_only():
    s = _study()
    tr = np.arange(20)
    t = P.finetune_targets("class_level", s, tr)
    for c in range(10):
        rows = tr[s.labels[tr] == c]
        expect = s.human[rows].sum(0) / s.human[rows].sum()
        np.testing.assert_allclose(t[s.labels == c], np.tile(expect, ((s.labels == c).sum(), 1)),
                                   atol=1e-6)
    np.testing.assert_allclose(t.sum(1), 1, atol=1e-6)
    assert len(np.unique(t.round(6), axis=0)) == 10  # one vector per class


def test_targets_hard_soft_distill_and_errors():
    s = _study()
    np.testing.assert_array_equal(P.finetune_targets("hard", s, np.arange(10)).argmax(1), s.labels)
    np.testing.assert_array_equal(P.finetune_targets("mixup_soft", s, np.arange(10)), s.human)
    teacher = np.full((40, 10), 2.0)
    np.testing.assert_allclose(P.finetune_targets("distill", s, np.arange(10), teacher), 0.1)
    with pytest.raises(ValueError, match="teacher_probs"):
        P.finetune_targets("distill", s, np.arange(10))
    with pytest.raises(ValueError, match="method"):
        P.finetune_targets("bogus", s, np.arange(10))


def test_sampled_targets_are_one_hot_draws_from_the_humans():
    human = np.array([[0.7, 0.3, 0, 0, 0, 0, 0, 0, 0, 0]] * 2000, dtype=np.float64)
    sampler = P.sampled_target_factory(human)
    g = torch.Generator().manual_seed(0)
    a = sampler(0, g)
    b = sampler(1, g)
    assert a.shape == (2000, 10) and set(np.unique(a)) <= {0.0, 1.0}
    np.testing.assert_allclose(a.sum(1), 1)
    assert abs(a[:, 0].mean() - 0.7) < 0.04 and a[:, 2:].sum() == 0
    assert not np.array_equal(a, b)  # redrawn each epoch
    np.testing.assert_array_equal(P.sampled_target_factory(human)(0, torch.Generator().manual_seed(0)), a)


def test_paired_difference_and_summary():
    df = pd.DataFrame({
        "arch": ["A"] * 6, "dataset": ["d"] * 6, "fold": [0, 1, 2] * 2,
        "condition": ["hard"] * 3 + ["soft"] * 3,
        "ce": [1.0, 2.0, 3.0, 0.5, 1.4, 2.6]})
    d = P.paired_difference(df, "ce").loc[("A", "d")]
    np.testing.assert_allclose(d["mean diff"], np.mean([-0.5, -0.6, -0.4]))
    np.testing.assert_allclose(d["std over folds"], np.std([-0.5, -0.6, -0.4], ddof=1))
    assert d["folds"] == 3 and d["folds with same sign"] == 3
    s = P.summarise(df, ["ce"], ["condition"])
    np.testing.assert_allclose(s.loc["hard", ("ce", "mean")], 2.0)
    np.testing.assert_allclose(s.loc["soft", ("ce", "std")], np.std([0.5, 1.4, 2.6], ddof=1))


def test_selection_of_lr_and_mixup_alpha():
    df = pd.DataFrame({"arch": "A", "condition": "hard", "dataset": "heldout",
                       "lr": [0.1, 0.1, 0.01, 0.01], "fold": [0, 1, 0, 1],
                       "accuracy": [0.5, 0.6, 0.7, 0.8]})
    assert set(P.select_lr(df).lr) == {0.01}
    # one rate per architecture, shared by both conditions: soft alone would pick 0.1, hard
    # alone 0.01; pooled, 0.01 wins and both conditions keep it
    both = pd.DataFrame({"arch": "A", "dataset": "heldout", "fold": 0,
                         "condition": ["soft", "soft", "hard", "hard"], "lr": [0.1, 0.01, 0.1, 0.01],
                         "accuracy": [0.72, 0.70, 0.50, 0.69]})
    sel_lr = P.select_lr(both)
    assert set(sel_lr.lr) == {0.01} and set(sel_lr.condition) == {"soft", "hard"}
    alt = pd.DataFrame({"arch": "A", "method": ["mixup_hard"] * 4 + ["hard"] * 2,
                        "alpha": [0.1, 0.1, 0.5, 0.5, np.nan, np.nan], "lr": 0.1,
                        "fold": [0, 1, 0, 1, 0, 1], "c10H": [0.9, 0.8, 0.4, 0.5, 1.0, 1.1],
                        "accuracy": 0.5})
    sel = P.select_variants(alt)
    assert set(sel[sel.method == "mixup_hard"].alpha) == {0.5}
    assert len(sel[sel.method == "hard"]) == 2
    # fine-tuning: one rate per architecture for every method (by held-out accuracy), even
    # where a method's own c10H would prefer another
    two = pd.DataFrame({"arch": "A", "method": ["hard", "hard", "soft", "soft"], "alpha": np.nan,
                        "lr": [0.1, 0.01, 0.1, 0.01], "fold": 0,
                        "c10H": [0.5, 0.9, 0.9, 0.5], "accuracy": [0.80, 0.60, 0.70, 0.75]})
    sel2 = P.select_variants(two)
    assert set(sel2.lr) == {0.1} and set(sel2.method) == {"hard", "soft"}


def test_dataset_order_and_method_variants():
    assert P.dataset_order(["imagenet_far", "heldout", "c10c_fog_1", "cifar10_train"]) == \
        ["heldout", "cifar10_train", "imagenet_far", "c10c_fog_1"]
    v = P.method_variants({"mixup_alpha": [0.1, 0.2]})
    assert ("mixup_hard", 0.2) in v and ("soft", None) in v and len(v) == 9


def test_pretrain_config_uses_repository_schedule_when_epochs_is_none():
    cfg = P.pretrain_config(P.Arch("WRN", "wrn_28_10"), None, 128)
    assert (cfg.epochs, cfg.milestones, cfg.gamma, cfg.weight_decay) == (200, [60, 120, 160], 0.2, 5e-4)
    with pytest.raises(ValueError, match="pretrain_epochs"):
        P.pretrain_config(P.Arch("tiny", "resnet"), None, 128)
    assert P.pretrain_config(P.Arch("tiny", "resnet"), 3, 64).schedule == "cosine"
    # the repository's batch size and augmentation come with its schedule, as for fine-tuning
    dense = P.pretrain_config(P.Arch("DenseNet", "densenet_BC_100_12"), None, 128)
    shake = P.pretrain_config(P.Arch("Shake", "shake_shake_26_2x64d_SSI"), None, 128)
    assert (dense.batch_size, dense.augment) == (64, "crop_flip")
    assert (shake.batch_size, shake.augment) == (128, "crop_flip_cutout16")
    assert P.pretrain_config(P.Arch("DenseNet", "densenet_BC_100_12"), 3, 128).batch_size == 128


# ------------------------------------------------------------------------------ whole pipeline

@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("peterson_data")
    fixtures.write_fixture_root(root, n_train=200, n_test=500, cifar10_c=False)
    shutil.rmtree(root / "cinic10")          # an absent shift set must be reported, not faked
    return root


TINY = [["tiny", "resnet", {"depth": 8, "width": 2}]]


def test_shift_sets_report_absent_data(fixture_root):
    s = P.load_shift_sets(16, root=fixture_root)
    assert "cinic10" in s.unavailable and "cinic10" in s.unavailable["cinic10"]
    assert "cinic10" not in s.images
    assert len(s.labels["cifar10_train"]) == 16 and "16 of 200" in s.titles["cifar10_train"]
    c = P.load_corruption_sets(20, ["contrast"], [1, 5], root=fixture_root, generate=False)
    assert set(c.unavailable) == {"c10c_contrast_1", "c10c_contrast_5"} and not c.images
    c = P.load_corruption_sets(20, ["contrast"], [2], root=fixture_root)  # generated from train
    assert len(c.labels["c10c_contrast_2"]) == 20
    assert np.all(np.bincount(c.labels["c10c_contrast_2"], minlength=10) == 2)


def test_cinic10_uses_every_split_and_imagenet_far_is_flagged(tmp_path):
    root = fixtures.write_fixture_root(tmp_path / "d", n_train=50, n_test=50, n_small=30,
                                       cifar10_c=False)
    s = P.load_shift_sets(None, root=root)
    assert len(s.labels["cinic10"]) == 3 * 30           # train + valid + test, as the paper
    (root / "cinic10" / "train.npz").unlink()
    s2 = P.load_shift_sets(None, root=root)
    assert len(s2.labels["cinic10"]) == 2 * 30            # a missing split is said, not hidden
    assert "only valid+test" in s2.titles["cinic10"]
    rows = []
    for key in ("heldout", "cifar10_train", "imagenet_far"):
        for cond in ("hard", "soft"):
            rows.append({"arch": "a", "condition": cond, "dataset": key, "accuracy": 0.5,
                         "ce": 1.0, "sba": 0.3, "fold": 0})
    cmp = P.paper_vs_run_generalisation(pd.DataFrame(rows), s)
    far = cmp[cmp.index.str.contains("ImageNet-Far")]
    assert len(far) and far["defined differently"].str.contains("not comparable").all()
    assert (cmp[cmp.index.str.contains("CIFAR-10 \\(train", regex=True)]["defined differently"] == "").all()


def test_pipeline_trains_once_and_sections_reuse_the_cache(fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    cache = ResultCache(tmp_path / "cache")
    study = P.load_study_data(fixture_root)
    gen = {"archs": TINY, "folds": 2, "epochs": 1, "lr": [0.01], "batch_size": 16,
           "train_subset": 40}
    shift = P.load_shift_sets(16, root=fixture_root)
    runs = P.run_generalisation(cache, study, gen, shift, device="cpu", progress=False)
    assert cache.misses == 4
    df = P.generalisation_metrics(runs, study, shift)
    assert set(df.condition) == {"hard", "soft"} and set(df.fold) == {0, 1}
    held = df[df.dataset == "heldout"]
    assert (held.n == 50).all() and held.sba.between(0, 1).all()
    assert {"cifar10_train", "imagenet_far"} <= set(df.dataset) and "cinic10" not in set(df.dataset)
    P.run_generalisation(cache, study, gen, shift, device="cpu", progress=False)
    assert cache.misses == 4  # nothing retrained
    cmp = P.paper_vs_run_generalisation(df, shift)
    assert np.isfinite(cmp.loc["accuracy on CIFAR-10 (train images)", "run soft"])

    from softlib import data
    alt = {"archs": TINY, "folds": 2, "pretrain_epochs": 1, "finetune_epochs": 1, "lr": [0.01],
           "mixup_alpha": [0.2], "batch_size": 16, "pretrain_subset": 40, "train_subset": 40}
    c101 = P.load_cifar10_1_sets(fixture_root)
    pre = P.run_pretraining(cache, study, alt, data.load("cifar10", "train", fixture_root),
                            device="cpu", progress=False, extra=c101)
    methods = [("hard", None), ("soft", None), ("sampled", None), ("distill", None),
               ("class_level", None), ("mixup_soft", 0.2)]
    before = cache.misses
    runs3 = P.run_alternatives(cache, study, pre, alt, device="cpu", progress=False,
                               methods=methods, extra=c101)
    assert cache.misses == before + 12
    d3 = P.alternatives_metrics(runs3, pre, study)
    t1 = P.table1(d3)
    assert ("tiny", "pretrained") in t1.index and ("tiny", "mixup_soft") in t1.index
    assert np.isfinite(t1["v4"]).all()  # fixture data has CIFAR-10.1 images
    # distinct methods really trained distinct models
    assert not np.allclose(runs3.logits[("tiny", "hard", None, 0.01, 0)],
                           runs3.logits[("tiny", "soft", None, 0.01, 0)])
    # pretrained entries imported from a bundle carry no weights: a fine-tuned model that is
    # not cached cannot start from them, and says so
    from softlib.cache import Entry
    bare = P.Pretrained({k: Entry(e.arrays, e.meta, None) for k, e in pre.entries.items()},
                        pre.configs, pre.ids)
    with pytest.raises(ValueError, match="needs the pretrained model's weights"):
        P.run_alternatives(cache, study, bare, alt, device="cpu", progress=False,
                           methods=[("class_level", None), ("mixup_hard", 0.2)], extra=c101)

    adv = {"eps_sweep": [4, 8], "pgd_eps": [4, 8], "pgd_steps": 2, "pgd_step_size": 1.0,
           "attack_subset": 16, "pgd_subset": 8}
    before = cache.misses
    fg, pg = P.run_adversarial(cache, study, pre, alt, adv, device="cpu", progress=False)
    assert cache.misses == before + 4  # only the attack results are new: 2 methods x 2 folds
    assert set(fg.eps) == {0, 4, 8} and (fg.n == 8).all()
    ce = fg.groupby("eps").ce.mean()
    assert ce[8] > ce[0]                    # FGSM raises the loss it follows
    assert set(pg.step) == {0, 1, 2} and set(pg.eps) == {4.0, 8.0}  # PGD swept like FGSM
    last = pg[pg.step == 2].groupby("eps").ce.mean()
    assert last[8.0] >= last[4.0] - 1e-6     # a larger ball cannot lower the loss PGD reaches
    t2 = P.table2(fg, 4)
    assert ("accuracy", "hard") in t2.columns and ("ce", "soft") in t2.columns
    P.run_adversarial(cache, study, pre, alt, adv, device="cpu", progress=False)
    assert cache.misses == before + 4


def test_heldout_epochs_table_reports_the_final_and_the_best_epoch():
    curves = {("R", "hard", 0.1, 0): [1.0, 0.8, 0.9], ("R", "hard", 0.1, 1): [1.2, 0.7, 0.75],
              ("R", "soft", 0.1, 0): [0.9, 0.6, 0.5], ("R", "soft", 0.1, 1): [np.nan, np.nan],
              ("R", "soft", 0.1, 2): [0.8, 0.7, 0.4]}
    runs = P.FoldRuns(folds=[], logits={}, seconds={}, diverged={("R", "soft", 0.1, 1): 1},
                      heldout_curves=curves)
    t = P.heldout_epochs_table(runs).set_index("condition")
    assert t.loc["hard", "final c10H CE"] == pytest.approx((0.9 + 0.75) / 2)
    assert t.loc["hard", "best-epoch c10H CE"] == pytest.approx((0.8 + 0.7) / 2)
    assert t.loc["hard", "best epoch"] == 2 and t.loc["hard", "folds"] == 2
    # a diverged run is left out; the soft runs are best at their last epoch
    assert t.loc["soft", "folds"] == 2 and t.loc["soft", "best epoch"] == 3
    assert t.loc["soft", "final c10H CE"] == t.loc["soft", "best-epoch c10H CE"]
    frame = P.heldout_curves_frame(runs)
    assert len(frame) == 3 * 4 and set(frame.columns) >= {"arch", "condition", "epoch", "ce"}
    empty = P.FoldRuns(folds=[], logits={}, seconds={})
    assert P.heldout_epochs_table(empty).empty and P.heldout_curves_frame(empty).empty


def test_a_monitored_fold_model_records_held_out_ce_vs_humans_every_epoch(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    human = rng.dirichlet(np.ones(10), n).astype(np.float32)
    study = P.StudyData(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                        human.argmax(1), human, "test")
    folds = [(np.arange(20), np.arange(20, 40))]
    arch = P.parse_archs([["ResNet-8", "resnet", {"depth": 8, "width": 4}]])[0]
    params = {"epochs": 2, "batch_size": 10, "amp": False, "heldout_per_epoch": True}
    job = P.scratch_job(study, arch, "hard", 0.01, 0, folds, params)
    assert job.val[0].shape == (20, 32, 32, 3) and np.allclose(job.val[1], human[20:])
    from softlib.cache import ResultCache
    entry = P.train_scratch(ResultCache(tmp_path), study, arch, "hard", 0.01, 0, folds, params,
                            device="cpu", progress=False)
    curve = P.heldout_curve(entry)
    assert curve is not None and len(curve) == 2
    # the last point is the final model's held-out CE against the human labels
    from softlib import metrics
    final = metrics.cross_entropy_from_logits(entry.arrays["logits_heldout"], human[20:])
    assert curve[-1] == pytest.approx(final, rel=1e-4)
    assert P.scratch_job(study, arch, "hard", 0.01, 0, folds,
                         dict(params, heldout_per_epoch=False)).val is None


def test_figure1_picks_agreeing_top_class_with_the_most_different_other_choices():
    h = np.array([[0.7, 0.3, 0.0, 0.0],    # agree on 0; humans' 2nd is 1, model's is 2: TV 1
                  [0.7, 0.3, 0.0, 0.0],    # agree on 0, same other choices: TV 0
                  [0.2, 0.8, 0.0, 0.0],    # disagree on the top class: out
                  [0.95, 0.05, 0.0, 0.0],  # humans nearly certain: out
                  [0.6, 0.2, 0.2, 0.0]])   # agree; other choices half different: TV 0.5
    m = np.array([[0.9, 0.0, 0.1, 0.0], [0.8, 0.2, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0],
                  [0.5, 0.0, 0.5, 0.0], [0.9, 0.1, 0.0, 0.0]])
    out = P.figure1_examples(h, m, n=3)
    assert out["index"].tolist() == [0, 4, 1]
    assert out["other-choice TV"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert out.loc[0, "human 2nd"] == 1 and out.loc[0, "model 2nd"] == 2
    with pytest.raises(ValueError, match="same"):
        P.figure1_examples(h, m[:, :3])


def _is_half(a):
    a = np.asarray(a)
    return a.dtype == np.float32 and np.array_equal(a.astype(np.float16).astype(np.float32), a)


def test_logits_precision_float16_rounds_every_stored_prediction_of_sections_2_to_4(
        fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    study = P.load_study_data(fixture_root)
    shift = P.load_shift_sets(16, root=fixture_root)
    gen = {"archs": TINY, "folds": 2, "epochs": 1, "lr": [0.01], "batch_size": 16,
           "train_subset": 40}
    full = P.run_generalisation(ResultCache(tmp_path / "a"), study, gen, shift, device="cpu",
                                progress=False)
    half = P.run_generalisation(ResultCache(tmp_path / "b"), study,
                                dict(gen, logits_precision="float16"), shift, device="cpu",
                                progress=False)
    assert full.logits.keys() == half.logits.keys()
    for key, sets in half.logits.items():
        for name, z in sets.items():  # the same models, their predictions rounded
            assert _is_half(z) and not _is_half(full.logits[key][name])
            np.testing.assert_allclose(z, full.logits[key][name], rtol=2.0 ** -11, atol=1e-7)
    d16 = P.generalisation_metrics(half, study, shift)
    d32 = P.generalisation_metrics(full, study, shift)
    np.testing.assert_allclose(d16.ce.to_numpy(), d32.ce.to_numpy(), rtol=1e-3)

    from softlib import data
    from softlib.studies.peterson import adversarial as A
    cache = ResultCache(tmp_path / "c")
    alt = {"archs": TINY, "folds": 2, "pretrain_epochs": 1, "finetune_epochs": 1, "lr": [0.01],
           "mixup_alpha": [0.2], "batch_size": 16, "pretrain_subset": 40, "train_subset": 40,
           "logits_precision": "float16"}
    pre = P.run_pretraining(cache, study, alt, data.load("cifar10", "train", fixture_root),
                            device="cpu", progress=False)
    assert all(_is_half(z) for e in pre.entries.values() for z in e.arrays.values())
    adv = {"eps_sweep": [4], "pgd_eps": [4], "pgd_steps": 2, "pgd_step_size": 1.0,
           "attack_subset": 8, "pgd_subset": 4}
    jobs = A.attack_jobs(cache, study, pre, alt, adv, "cpu", progress=False)
    assert jobs and all(j.config["logits_precision"] == "float16" for j in jobs)
    ft = cache.load(jobs[0].model_kind, jobs[0].model_config)
    assert _is_half(ft.arrays["logits_heldout"])
    att = jobs[0].run(ft)
    logits = {k: v for k, v in att.arrays.items() if "_logits" in k}
    assert set(logits) == {"clean_logits", "fgsm_logits_0", "pgd_logits_0"}
    assert all(_is_half(v) for v in logits.values())
    assert att.arrays["pgd_history_0"].dtype == np.float64  # CE means: not predictions
    # at float32 the attack's key is what it was before the option
    j32 = A.attack_jobs(ResultCache(tmp_path / "d"), study, pre, dict(alt, logits_precision="float32"),
                        adv, "cpu", progress=False, train_missing=False)
    assert "logits_precision" not in j32[0].config


def test_the_discussion_of_sections_2_to_4_is_written_from_the_profile():
    """Each profile's pages describe its own budget: the gpu book's architectures, epochs and
    folds, and no under-training caveat where a run has the paper's budget."""
    from softlib.book import profiles
    gen = {p: P.generalisation_budget(p, profiles.resolve(p, "generalisation"))
           for p in ("cpu", "gpu", "paper")}
    assert "VGG-15-BN-64 (30 epochs), ResNet-110 (20 epochs)" in gen["gpu"]
    assert "all 10 folds, as in the paper" in gen["gpu"] and "under-fitted" in gen["gpu"]
    assert "the first 3 of the 10 folds, so the error bars" in gen["cpu"]
    assert "ResNet-20 (8 epochs)" in gen["cpu"] and "this run uses 0.002" in gen["cpu"]
    assert "This is the paper's budget." in gen["paper"] and "under-fitted" not in gen["paper"]
    assert "this run searches the same grid" in gen["paper"]
    alt = {p: profiles.resolve(p, "alternatives") for p in ("cpu", "gpu", "paper")}
    text = P.alternatives_budget("gpu", alt["gpu"])
    assert "pretrains VGG-15-BN-64 (30 epochs), ResNet-110 (15 epochs)" in text
    assert "fine-tunes VGG-15-BN-64 (10 epochs), ResNet-110 (4 epochs)" in text
    assert "averages the 2 pretrained models of this run, not the paper's 8" in text
    assert "so mixup is not tuned here" in text
    text = P.alternatives_budget("gpu", alt["gpu"], only_archs=["ResNet-110"])
    assert "pretrains VGG-15-BN-64 (30 epochs), ResNet-110 (15 epochs) and fine-tunes " \
        "ResNet-110 (4 epochs) on" in text  # every architecture is pretrained (the teacher)
    text = P.alternatives_budget("cpu", alt["cpu"])
    assert "ResNet-20 (1 epoch)," in text  # singular
    # the paper's hard-vs-soft c10H gap, from its Table 1 constants, not a prediction for this run
    assert "(0.57 vs 0.35 nats for ResNet)" in text and "not the absolute numbers" in text
    text = P.alternatives_budget("paper", alt["paper"])
    assert "(the repository schedule)" in text and "This is the paper's budget." in text
    assert "as in the paper" in text and "not tuned" not in text
    adv = P.adversarial_budget("gpu", profiles.resolve("gpu", "adversarial"), alt["gpu"])
    assert "VGG-15-BN-64 (10 epochs), ResNet-110 (4 epochs) of fine-tuning" in adv
    assert "PGD up to 2,000" in adv and "40 iterations" in adv and "span 2.1-7.9 nats" in adv
    adv = P.adversarial_budget("paper", profiles.resolve("paper", "adversarial"), alt["paper"])
    assert "These are the paper's models." in adv


def test_the_data_notes_of_sections_2_to_4_are_written_from_the_data_root():
    """A user's canonical download does not read the offline mirror's caveats; absent shift sets
    are named from the run's own list, and the far end of the shift axis only where it is absent."""
    jpeg, fixture = "# CIFAR-10 (JPEG re-encoding), test set", "SYNTHETIC FIXTURE - not real data"
    absent = {"cifar10_1_v4": "labels only", "cifar10_1_v6": "labels only",
              "cinic10": "not under /d", "imagenet_far": "not under /d"}
    text = P.data_notes("generalisation", jpeg, absent)
    pixels, shift = text.splitlines()
    assert "JPEG re-encoding" in pixels and "CIFAR-10's test set" in pixels
    assert ("CIFAR-10.1 v4, CIFAR-10.1 v6, CINIC-10 (ImageNet part), ImageNet-Far are not "
            "available under" in shift)
    assert "far end of the shift axis" in shift and "corruption sets stand in" in shift
    text = P.data_notes("generalisation", "canonical batches", {"cifar10_1_v6": "x",
                                                                "c10c_fog_3": "y"})
    assert "JPEG" not in text and "not re-encoded" in text
    assert "CIFAR-10.1 v6 is not available under" in text and "far end" not in text
    assert "1 corruption set(s) are absent" in text
    assert "Every shift set of the paper is present" in P.data_notes("generalisation", "x", {})
    text = P.data_notes("alternatives", fixture, {"cifar10_1_v4": "x"})
    assert "synthetic fixture, not CIFAR-10" in text
    assert "CIFAR-10.1 v4 is not available under" in text
    assert "its column is n/a" in text
    only_pixels = P.data_notes("alternatives", jpeg, {}).splitlines()
    assert len(only_pixels) == 1 and "the pretraining images" in only_pixels[0]
    assert "attacked images" in P.data_notes("adversarial", jpeg)
    with pytest.raises(ValueError, match="unknown section 'laing'"):
        P.data_notes("laing", jpeg)


def test_section_4_attacks_table_1s_models_at_one_rate_per_architecture(monkeypatch):
    """With several fine-tuning rates, the attacked hard and soft models share Table 1's rate:
    the best mean held-out accuracy over every method and fold (not each method's own best CE)."""
    from types import SimpleNamespace

    from softlib.cache import Entry
    from softlib.studies.peterson import adversarial as A
    labels = np.repeat(np.arange(10), 4)
    folds = [(np.arange(20, 40), np.arange(20)), (np.arange(20), np.arange(20, 40))]
    study = SimpleNamespace(labels=labels)
    # rate 0.1: most methods right on every image; 0.01: only the 'soft' runs right (they would
    # have won for 'soft' alone); one 0.1 run diverged on fold 1 for a third method
    params = {"lr": [0.1, 0.01], "mixup_alpha": [0.2]}

    def fake_finetune(cache, study_, pre, arch, method, lr, k, folds_, p, alpha, ev, dev, seed,
                      progress):
        te = folds_[k][1]
        right = (lr == 0.1) != (method == "soft")
        pred = labels[te] if right else (labels[te] + 1) % 10
        meta = {"result": {"diverged": lr == 0.1 and method == "class_level" and k == 1}}
        return Entry(arrays={"logits_heldout": np.eye(10)[pred]}, meta=meta), None, None

    monkeypatch.setattr(A, "finetune", fake_finetune)
    arch = P.Arch("ResNet-20", "resnet_20")
    lr, final = A._attacked_lr(None, study, None, arch, folds, params, None, 0, False, True)
    assert final and lr == 0.01  # 0.1 has a diverged run: the rate with fewer loses none

    def no_divergence(*a):
        e = fake_finetune(*a)[0]
        e.meta["result"]["diverged"] = False
        return e, None, None

    monkeypatch.setattr(A, "finetune", no_divergence)
    assert A._attacked_lr(None, study, None, arch, folds, params, None, 0, False, True) == (0.1, True)
    assert A._attacked_lr(None, study, None, arch, folds, {"lr": [0.5]}, None, 0, False,
                          True) == (0.5, True)


def test_regulariser_answers_pair_soft_with_the_best_regulariser_by_fold():
    """Section 3's question ('just a fancy regulariser?') answered from the numbers: soft vs
    the best target without per-image human labels, paired by fold, t-interval as the ledger."""
    def frame(soft_shift, noise, folds=5):
        rows = []
        for f in range(folds):
            wiggle = noise * (-1) ** f
            for m, v in (("hard", 0.95), ("mixup_hard", 0.90), ("class_level", 0.85),
                         ("distill", 0.88), ("soft", 0.85 + soft_shift)):
                rows.append(dict(arch="A", method=m, fold=f,
                                 c10H=v + (wiggle if m == "soft" else 0.0)))
        return pd.DataFrame(rows)
    better = P.regulariser_answers(frame(-0.05, 0.001))
    assert len(better) == 1 and "(class_level)" in better[0]
    assert "soft - class_level = -0.050" in better[0] and "more than a regulariser" in better[0]
    worse = P.regulariser_answers(frame(+0.05, 0.001))
    assert "(class_level)" in worse[0] and "the regulariser fits the humans better" in worse[0]
    tie = P.regulariser_answers(frame(0.0, 0.02))
    assert "not told apart" in tie[0]
    one = P.regulariser_answers(frame(-0.05, 0.0, folds=1))
    assert "no noise estimate" in one[0] and "cannot tell" in one[0]
    no_soft = frame(-0.05, 0.001)
    assert P.regulariser_answers(no_soft[no_soft.method != "soft"]) == []
