"""Divergence is a result, not a crash (issue #12 item 4): a run whose loss or weights become
NaN / infinite is recorded as diverged with its epoch, cached, excluded from learning-rate
selection, shown as diverged in the tables, and the study goes on."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from softlib import multimodel, train
from softlib.cache import ResultCache
from softlib.multimodel import fit_stacked
from softlib.train import TrainConfig, TrainJob

pytestmark = pytest.mark.usefixtures("one_thread")


from tiny_models import TinyBN  # noqa: E402  (tests/tiny_models.py)


class NaNAfter(TinyBN):
    """Returns NaN logits in training from its ``n``-th forward call on (a 'loss spike')."""

    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.n:
                out = out * float("nan")
        return out


def data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6, 6, 3)).astype(np.uint8)
    t = rng.dirichlet(np.ones(3), n).astype(np.float32)
    return x, t / t.sum(1, keepdims=True)


CFG = TrainConfig(arch="tiny", optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                  batch_size=8, epochs=4, augment="none")


def _quiet_fit(*a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train.fit(*a, **k)


# ------------------------------------------------------------------------------ fit

def test_an_absurd_learning_rate_diverges_without_an_exception():
    x, t = data()
    torch.manual_seed(0)
    m = TinyBN()
    with pytest.warns(UserWarning, match="diverged in epoch"):
        r = train.fit(m, x, t, CFG.replace(lr=1e30, epochs=5), progress=False)
    assert r.diverged and r.diverged_epoch is not None and 1 <= r.diverged_epoch <= 5
    assert r.epochs_run == r.diverged_epoch == len(r.history["train_loss"])  # stopped there
    assert not np.isfinite(r.history["train_loss"][-1]) or not all(
        torch.isfinite(p).all() for p in m.parameters())
    ok = _quiet_fit(TinyBN(), x, t, CFG, progress=False)
    assert not ok.diverged and ok.diverged_epoch is None and ok.epochs_run == 4


def test_the_divergence_epoch_is_the_epoch_of_the_first_nan_step():
    x, t = data()
    # 5 steps per epoch: the 12th training forward is in epoch 3
    r = _quiet_fit(NaNAfter(12), x, t, CFG.replace(epochs=6), val=(x[:8], t[:8]),
                   progress=False)
    assert r.diverged_epoch == 3 and r.epochs_run == 3
    assert np.isfinite(r.history["train_loss"][:2]).all()
    assert len(r.history["val_loss"]) == 3 and np.isnan(r.history["val_loss"][-1])


def test_early_stopping_run_that_diverges_is_still_a_result():
    x, t = data()
    r = _quiet_fit(NaNAfter(7), x, t, CFG.replace(epochs=6, early_stopping_patience=3),
                   val=(x[:8], t[:8]), progress=False)
    assert r.diverged and r.diverged_epoch == 2 and not r.stopped_early


def test_train_cached_stores_a_diverged_run_and_a_second_call_hits(tmp_path):
    x, t = data()
    cache = ResultCache(tmp_path)
    cfg = CFG.replace(lr=1e30, epochs=3)
    build = lambda c: TinyBN()  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = train.train_cached(cache, "t", cfg, "fp", build, (x, t), {"all": x}, progress=False)
    assert cache.misses == 1
    assert e.meta["result"]["diverged"] and train.diverged_epoch(e) == e.meta["result"]["diverged_epoch"]
    again = train.train_cached(cache, "t", cfg, "fp", build, (x, t), {"all": x}, progress=False)
    assert cache.misses == 1 and cache.hits == 1
    assert train.diverged_epoch(again) == train.diverged_epoch(e)
    fine = train.train_cached(cache, "t", CFG.replace(epochs=1), "fp", build, (x, t), {"all": x},
                              progress=False)
    assert train.diverged_epoch(fine) is None


def test_an_old_entry_with_nan_logits_counts_as_diverged():
    from softlib.cache import Entry
    res = {"history": {"train_loss": [1.0, float("nan"), float("nan")]}, "epochs_run": 3}
    e = Entry(arrays={"logits_heldout": np.full((2, 3), np.nan, np.float32)}, meta={"result": res})
    assert train.diverged_epoch(e) == 2
    e = Entry(arrays={"logits_heldout": np.zeros((2, 3), np.float32)}, meta={"result": res})
    assert train.diverged_epoch(e) is None


# ------------------------------------------------------------------------------ stacked

def _poisoned(seed):
    torch.manual_seed(seed)
    m = TinyBN()
    with torch.no_grad():
        m.fc.weight.fill_(float("nan"))
    return m


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_diverging_stacked_model_leaves_the_others_as_they_would_be_without_it(optimizer):
    x, t = data(60)
    idx = [np.arange(0, 30), np.arange(30, 60), np.arange(15, 45)]
    cfg = CFG.replace(optimizer=optimizer, lr=0.01, epochs=2, augment="crop_flip")
    good = []
    for s in (1, 2):
        torch.manual_seed(s)
        good.append(TinyBN())
    with_bad = [copy.deepcopy(good[0]), _poisoned(9), copy.deepcopy(good[1])]
    with pytest.warns(UserWarning, match="stacked model 1 .* diverged in epoch 1"):
        res = fit_stacked(with_bad, x, t, idx, cfg, seeds=[1, 9, 2], progress=False)
    ref = fit_stacked([copy.deepcopy(m) for m in good], x, t, [idx[0], idx[2]], cfg, seeds=[1, 2],
                      progress=False)
    assert res.diverged_epochs == [None, 1, None] and ref.diverged_epochs == [None, None]
    for a, b in zip([res.models[0], res.models[2]], ref.models):
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.isfinite(pa.float()).all(), name
            torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-5)
    losses = np.asarray(res.history["train_loss"])
    assert np.isnan(losses[:, 1]).all() and np.isfinite(losses[:, [0, 2]]).all()


def test_a_diverging_stacked_model_under_keep_best_is_not_restored_and_others_are():
    x, t = data(60)
    idx = [np.arange(0, 30), np.arange(30, 60), np.arange(15, 45)]
    vals = [(x[k * 10:k * 10 + 20], t[k * 10:k * 10 + 20]) for k in range(3)]
    cfg = CFG.replace(optimizer="adam", lr=0.02, epochs=5, keep_best=True)
    good = []
    for s in (1, 2):
        torch.manual_seed(s)
        good.append(TinyBN())
    with pytest.warns(UserWarning, match="stacked model 1 .* diverged in epoch 1"):
        res = fit_stacked([copy.deepcopy(good[0]), _poisoned(9), copy.deepcopy(good[1])], x, t,
                          idx, cfg, seeds=[1, 9, 2], progress=False, vals=vals)
    ref = fit_stacked([copy.deepcopy(m) for m in good], x, t, [idx[0], idx[2]], cfg, seeds=[1, 2],
                      progress=False, vals=[vals[0], vals[2]])
    assert res.diverged_epochs == [None, 1, None] and res.best_epochs[1] is None
    assert [res.best_epochs[0], res.best_epochs[2]] == ref.best_epochs
    assert np.isnan(res.history["val_loss"][0][1])  # the diverged epoch is recorded as NaN
    assert not torch.isfinite(res.models[1].fc.weight).all()  # kept as it diverged
    for a, b in zip([res.models[0], res.models[2]], ref.models):
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-5)


def test_train_cached_many_records_the_diverged_member_of_a_group(tmp_path):
    x, t = data(60)
    cfg = CFG.replace(epochs=2)
    jobs = [TrainJob(cfg.replace(seed=s), f"fold{k}", (x[k * 20:(k + 1) * 20], t[k * 20:(k + 1) * 20]),
                     {"all": x}, build_model=(lambda c: _poisoned(c.seed)) if k == 1 else
                     (lambda c: TinyBN()))
            for k, s in enumerate((0, 1, 2))]
    cache = ResultCache(tmp_path)
    with pytest.warns(UserWarning, match="diverged"):
        out = multimodel.train_cached_many(cache, "t", jobs, device="cpu", progress=False, stack=True)
    assert [e.meta.get("stacked") for e in out] == [3, 3, 3]
    assert [train.diverged_epoch(e) for e in out] == [None, 1, None]
    r = out[1].meta["result"]
    assert r["epochs_run"] == 1 and len(r["history"]["train_loss"]) == 1
    assert out[0].meta["result"]["epochs_run"] == 2
    assert np.isnan(out[1].arrays["logits_all"]).all()
    multimodel.train_cached_many(cache, "t", jobs, device="cpu", progress=False, stack=True)
    assert cache.misses == 3  # the diverged entry is stored, never retried


# ------------------------------------------------------------------------------ Peterson

from softlib.studies import peterson as P  # noqa: E402


def _study(n=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10), n // 10)
    human = rng.dirichlet(np.ones(10) * 0.3, n) * 0.5 + 0.5 * np.eye(10)[labels]
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return P.StudyData(images, labels, human.astype(np.float64), "test")


def _logits(n, seed, good=True):
    z = np.random.default_rng(seed).normal(0, 1, (n, 10)).astype(np.float32)
    return z if good else np.full_like(z, np.nan)


def _fold_runs(study, bad):
    """2 conditions x lrs (0.1, 0.01) x 2 folds of 20 images; ``bad``: keys that diverged.
    At lr 0.1 the logits are the true labels' one-hot x 5 (accurate): only divergence can make
    lr 0.01 win."""
    folds = [(np.arange(20, 40), np.arange(20)), (np.arange(20), np.arange(20, 40))]
    logits, diverged = {}, {}
    for cond in P.CONDITIONS:
        for lr in (0.1, 0.01):
            for k, (_, te) in enumerate(folds):
                key = ("A", cond, lr, k)
                z = (5 * np.eye(10)[study.labels[te]] if lr == 0.1 else _logits(20, k)).astype(np.float32)
                if key in bad:
                    z, diverged[key] = np.full_like(z, np.nan), 2
                logits[key] = {"heldout": z, "far": z[:5]}
    return P.FoldRuns(folds, logits, {k: 1.0 for k in logits}, diverged)


def test_generalisation_rows_of_a_diverged_run_say_so_and_lr_selection_skips_it():
    study = _study()
    shift = P.EvalSets()
    shift.add("far", "far", study.images[:5], study.labels[:5])
    runs = _fold_runs(study, bad={("A", "hard", 0.1, 0)})
    df = P.generalisation_metrics(runs, study, shift)  # no "row 0 contains NaN"
    bad = df[df.diverged]
    assert len(bad) == 2 and set(bad.dataset) == {"heldout", "far"}
    assert (bad.diverged_epoch == 2).all() and bad[["accuracy", "ce", "sba", "ce_human"]].isna().all().all()
    assert df[~df.diverged][["accuracy", "ce"]].notna().all().all()
    sel = P.select_lr(df)
    # 0.1 is better but diverged once: the one rate both conditions share is 0.01
    assert set(sel[sel.condition == "hard"].lr) == {0.01}
    assert set(sel[sel.condition == "soft"].lr) == {0.01}
    assert not sel.diverged.any()
    # an old-style FoldRuns without the record: NaN logits alone mark the run
    runs.diverged.clear()
    df2 = P.generalisation_metrics(runs, study, shift)
    assert df2.diverged.sum() == 2 and df2[df2.diverged].diverged_epoch.isna().all()
    t = P.diverged_table(_fold_runs(study, bad={("A", "hard", 0.1, 0)}))
    assert t.to_dict("records") == [{"arch": "A", "condition": "hard", "lr": 0.1, "fold": 0,
                                     "diverged_epoch": 2.0}]


def test_when_every_lr_diverged_the_rows_say_diverged_and_summaries_count_them():
    study = _study()
    every = {("A", "hard", lr, k) for lr in (0.1, 0.01) for k in (0, 1)}
    runs = _fold_runs(study, bad=every | {("A", "soft", 0.1, 1)})
    df = P.generalisation_metrics(runs, study, P.EvalSets())
    sel = P.select_lr(df)
    hard = sel[sel.condition == "hard"]
    # the shared rate is the one with the fewest diverged runs over both conditions (0.01);
    # hard diverged there too: its rows are kept, and marked
    assert len(hard) == 2 and hard.diverged.all() and set(hard.lr) == {0.01}
    assert set(sel[sel.condition == "soft"].lr) == {0.01}  # 0.1 diverged on fold 1
    s = P.summarise(sel, ["accuracy", "ce"], ["arch", "condition"])
    assert s.loc[("A", "hard"), ("diverged", "folds")] == 2
    assert s.loc[("A", "hard"), ("accuracy", "folds")] == 0
    assert np.isnan(s.loc[("A", "hard"), ("accuracy", "mean")])
    assert s.loc[("A", "soft"), ("accuracy", "folds")] == 2
    assert s.loc[("A", "soft"), ("diverged", "folds")] == 0
    # without divergence the summary keeps its old columns
    clean = P.summarise(sel[sel.condition == "soft"], ["accuracy"], ["condition"])
    assert list(clean.columns) == [("accuracy", "mean"), ("accuracy", "std"), ("accuracy", "folds")]
    # a paired difference leaves the diverged folds out and says how many
    runs = _fold_runs(study, bad={("A", "hard", 0.01, 0)})
    df = P.generalisation_metrics(runs, study, P.EvalSets())
    d = P.paired_difference(df[df.lr == 0.01], "accuracy", by=("arch", "dataset"))
    row = d.loc[("A", "heldout")]
    assert row["folds"] == 1 and row["diverged folds"] == 1
    assert "diverged folds" not in P.paired_difference(df[df.lr == 0.1], "accuracy").columns
    idx, p = P.heldout_probs(runs, "A", "hard", 0.01, 40)
    np.testing.assert_array_equal(idx, runs.folds[1][1])   # the diverged fold is skipped
    assert np.isfinite(p).all()


def test_alternatives_table1_marks_diverged_methods_and_selects_around_them():
    from softlib.cache import Entry
    study = _study()
    folds = [(np.arange(20, 40), np.arange(20)), (np.arange(20), np.arange(20, 40))]
    pre = P.Pretrained({"A": Entry(arrays={"logits_cifar10h": _logits(40, 7)}, meta={})},
                       {}, {"A": "pre"})
    logits, diverged = {}, {}
    for method in ("hard", "soft"):
        for lr in (0.1, 0.01):
            for k, (_, te) in enumerate(folds):
                key = ("A", method, None, lr, k)
                good = 5 * np.eye(10, dtype=np.float32)[study.labels[te]] if lr == 0.1 else _logits(20, k)
                if method == "soft" or (lr == 0.1 and k == 1):
                    good, diverged[key] = np.full_like(good, np.inf), 1
                logits[key] = good
    runs = P.FinetuneRuns(folds, logits, {k: 1.0 for k in logits}, diverged=diverged)
    df = P.alternatives_metrics(runs, pre, study)
    assert df.diverged.sum() == 5 and df[df.diverged].c10H.isna().all()
    assert not df[df.method == "pretrained"].diverged.any()
    t1 = P.table1(df)
    assert t1.loc[("A", "hard"), "lr"] == 0.01 and t1.loc[("A", "hard"), "status"] == "ok"
    assert t1.loc[("A", "hard"), "folds"] == 2
    soft = t1.loc[("A", "soft")]
    assert soft["status"] == "diverged" and soft["folds"] == 0 and soft["diverged folds"] == 2
    assert np.isnan(soft["c10H"])
    assert set(P.diverged_table(runs).method) == {"hard", "soft"}
    assert "status" not in P.table1(df[~df.diverged]).columns


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    from softlib.data import fixtures
    root = tmp_path_factory.mktemp("divergence_data")
    fixtures.write_fixture_root(root, n_train=200, n_test=500, cifar10_c=False)
    return root


def test_a_grid_with_an_absurd_learning_rate_gives_diverged_rows_not_an_exception(
        fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    cache = ResultCache(tmp_path / "cache")
    study = P.load_study_data(fixture_root)
    gen = {"archs": [["tiny", "resnet", {"depth": 8, "width": 2}]], "folds": 2, "epochs": 1,
           "lr": [1e30, 0.01], "batch_size": 16, "train_subset": 40, "stack_models": False}
    shift = P.load_shift_sets(16, root=fixture_root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = P.run_generalisation(cache, study, gen, shift, device="cpu", progress=False)
    assert cache.misses == 8
    assert set(runs.diverged) == {("tiny", c, 1e30, k) for c in P.CONDITIONS for k in (0, 1)}
    assert set(runs.diverged.values()) == {1}
    df = P.generalisation_metrics(runs, study, shift)
    assert df[df.lr == 1e30].diverged.all() and not df[df.lr == 0.01].diverged.any()
    sel = P.select_lr(df)
    assert set(sel.lr) == {0.01}
    assert "diverged" not in P.summarise(sel, ["accuracy"], ["arch", "condition"]).columns
    again = P.run_generalisation(cache, study, gen, shift, device="cpu", progress=False)
    assert cache.misses == 8 and again.diverged == runs.diverged  # stored, not retried


# ------------------------------------------------------------------------------ Laing

def test_laing_grid_with_an_absurd_learning_rate_records_diverged_runs(tmp_path, monkeypatch):
    from softlib.studies import laing as L
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(10), 6)
    probs = 0.6 * np.eye(10)[labels] + 0.4 * rng.dirichlet(np.ones(10) * 0.2, size=60)
    fm = L.to_cifar_format(rng.integers(0, 256, (30, 28, 28, 1), dtype=np.uint8))
    data = L.LaingData(rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), labels, probs,
                       {"svhn": None, "fashion_mnist": fm}, provenance="synthetic")
    params = {"epochs": 1, "width": 2, "lr": 1e30, "batch_size": 20, "mix_alpha": 0.2,
              "early_stopping_patience": None, "fgsm_eps": 0.005, "train_subset": None,
              "split_sizes": (40, 10, 10), "seeds": [0, 1], "model_types": ["basic"],
              "label_conditions": ["hard", "soft"], "stack_models": False}
    cache = ResultCache(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = L.run_grid(data, params, cache, device="cpu", progress=False)
    assert len(g.table) == 4 and g.table.diverged.all() and (g.table.diverged_epoch == 1).all()
    assert g.table[list(L.METRICS)].isna().all().all()
    assert cache.misses == 4  # trained and stored; not evaluated (no FGSM on a NaN model)
    assert all(r.diverged for r in g.runs)
    assert L.pooled_reliability(g.runs, "basic", "hard") is None
    s = L.summary_table(g.table)
    assert (s[("diverged", "n")] == 2).all() and (s[("accuracy", "n")] == 0).all()
    f = L.format_table(s)
    assert (f["accuracy (%)"] == "diverged").all() and (f["diverged runs"] == "2 of 2").all()
    assert L.paired_differences(g.table).empty
    g2 = L.run_grid(data, params, cache, device="cpu", progress=False)
    assert cache.misses == 4
    pd.testing.assert_frame_equal(g.table, g2.table)
    # one diverged seed among good ones: the others are evaluated, the summary counts it
    mixed = pd.concat([g.table.iloc[:1], g.table.iloc[1:].assign(diverged=False, accuracy=80.0)])
    s = L.summary_table(mixed)
    assert s.loc[("basic", "hard"), ("accuracy", "n")] == 1
    f = L.format_table(s)
    assert f.loc[("basic", "hard"), "diverged runs"] == "1 of 2"
    assert f.loc[("basic", "soft"), "diverged runs"] == ""
    assert f.loc[("basic", "hard"), "accuracy (%)"].startswith("80.00")
