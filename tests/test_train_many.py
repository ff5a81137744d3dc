"""softlib.multimodel.train_cached_many: grouped (stacked) training gives train_cached's entries."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from softlib import cache as cache_mod
from softlib import multimodel, train
from softlib.cache import ResultCache
from softlib.train import TrainConfig, TrainJob

pytestmark = pytest.mark.usefixtures("one_thread")


from tiny_models import TinyBN  # noqa: E402  (tests/tiny_models.py)


class Hooked(TinyBN):
    """A loss hook that does not declare it takes stacked inputs: never trained stacked."""

    def training_loss(self, x, out, t):
        from softlib.losses import soft_cross_entropy
        return soft_cross_entropy(out.float(), t)


def build(config):
    return TinyBN()


def build_hooked(config):
    return Hooked()


def data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6, 6, 3)).astype(np.uint8)
    t = rng.dirichlet(np.ones(3), n).astype(np.float32)
    return x, t / t.sum(1, keepdims=True)


CFG = TrainConfig(arch="tiny", optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
                  weight_decay=5e-4, batch_size=8, epochs=2, augment="crop_flip",
                  schedule="multistep", milestones=[1], warmup_epochs=1)


def laing_data(seed: int):
    """60 synthetic 32x32 images with CIFAR-10H-like soft labels, no OOD sets (Laing's grid)."""
    from softlib.studies import laing as L
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10), 6)
    probs = 0.6 * np.eye(10)[labels] + 0.4 * rng.dirichlet(np.ones(10) * 0.2, size=60)
    return L.LaingData(rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), labels, probs,
                       {"svhn": None, "fashion_mnist": None}, provenance="synthetic")


def fold_jobs(x, t, sizes=(30, 30, 30), seeds=(0, 0, 1), builder=build):
    """One job per fold: fold k trains on ``sizes[k]`` images and holds out 10 others."""
    jobs = []
    for k, (n, s) in enumerate(zip(sizes, seeds)):
        tr = np.arange(5 * k, 5 * k + n)
        te = np.setdiff1d(np.arange(len(x)), tr)[:10]
        fp = train.data_fingerprint(tr, te, t, provenance=f"fold{k}")
        jobs.append(TrainJob(CFG.replace(seed=s), fp, (x[tr], t[tr]),
                             {"heldout": x[te], "all": x}, builder))
    return jobs


def sequential(cache, jobs):
    return [train.train_cached(cache, "t", j.config, j.data_fingerprint, j.build_model,
                               j.train_data, j.eval_sets, val=j.val, progress=False)
            for j in jobs]


def entry_dirs(cache):
    return sorted(p.name for p in (cache.root / "t").iterdir() if not p.name.startswith("."))


def assert_same_entries(a, b, atol=1e-4):
    assert len(a) == len(b)
    for ea, eb in zip(a, b):
        assert set(ea.arrays) == set(eb.arrays)
        for name in ea.arrays:
            np.testing.assert_allclose(ea.arrays[name], eb.arrays[name], atol=atol, rtol=1e-4)
        ra, rb = ea.meta["result"], eb.meta["result"]
        assert set(ra) == set(rb)
        assert set(ra["history"]) == set(rb["history"])
        assert len(ra["history"]["train_loss"]) == len(rb["history"]["train_loss"])
        np.testing.assert_allclose(ra["history"]["train_loss"], rb["history"]["train_loss"],
                                   atol=1e-4, rtol=1e-4)
        assert ra["history"]["lr"] == rb["history"]["lr"]
        assert ra["epochs_run"] == rb["epochs_run"]
        assert set(ea.meta) - {"stacked"} == set(eb.meta) - {"stacked"}
        assert ea.meta["eval_fingerprints"] == eb.meta["eval_fingerprints"]
        assert ea.meta["n_parameters"] == eb.meta["n_parameters"]
        for name in ea.state_dict:
            torch.testing.assert_close(ea.state_dict[name], eb.state_dict[name], atol=1e-4,
                                       rtol=1e-4)


def test_grouped_equals_sequential_and_second_call_hits(tmp_path):
    x, t = data()
    jobs = fold_jobs(x, t)
    seq_cache, many_cache = ResultCache(tmp_path / "seq"), ResultCache(tmp_path / "many")
    seq = sequential(seq_cache, jobs)
    many = multimodel.train_cached_many(many_cache, "t", jobs, device="cpu", progress=False, stack=True)
    assert entry_dirs(many_cache) == entry_dirs(seq_cache) and len(entry_dirs(many_cache)) == 3
    assert many_cache.misses == 3 and many_cache.hits == 0
    assert [e.meta["stacked"] for e in many] == [3, 3, 3]
    assert all("stacked" not in e.meta for e in seq)
    assert_same_entries(many, seq)
    r = many[0].meta["result"]
    assert r["best_epoch"] is None and r["stopped_early"] is False
    assert r["seconds"] > 0 and len(r["history"]["seconds"]) == 2
    # what was written is what was returned, and a second call trains nothing
    again = multimodel.train_cached_many(many_cache, "t", jobs, device="cpu", progress=False, stack=True)
    assert many_cache.misses == 3 and many_cache.hits == 3
    assert_same_entries(again, many, atol=0)
    assert [e.meta["stacked"] for e in again] == [3, 3, 3]
    # train_cached itself finds the grouped entries
    one = train.train_cached(many_cache, "t", jobs[1].config, jobs[1].data_fingerprint, build,
                             jobs[1].train_data, jobs[1].eval_sets, progress=False)
    assert many_cache.misses == 3
    np.testing.assert_array_equal(one.arrays["logits_all"], many[1].arrays["logits_all"])


def test_only_misses_are_trained_and_a_new_eval_set_is_added(tmp_path):
    x, t = data()
    jobs = fold_jobs(x, t)
    cache = ResultCache(tmp_path)
    sequential(cache, jobs[:1])
    assert cache.misses == 1
    out = multimodel.train_cached_many(cache, "t", jobs, device="cpu", progress=False, stack=True)
    assert cache.misses == 3 and cache.hits == 1
    assert "stacked" not in out[0].meta and [e.meta["stacked"] for e in out[1:]] == [2, 2]
    # an eval set that is new to the cached entries is predicted from their weights
    for j in jobs:
        j.eval_sets = {**j.eval_sets, "first": x[:4]}
    out2 = multimodel.train_cached_many(cache, "t", jobs, device="cpu", progress=False, stack=True)
    assert cache.misses == 3
    for e in out2:
        np.testing.assert_allclose(e.arrays["logits_first"], e.arrays["logits_all"][:4], atol=1e-5)


def test_unstackable_jobs_fall_back_to_train_cached(tmp_path):
    x, t = data()
    # fold 2 trains on fewer images; jobs 3-4 have a training hook stacking cannot run; job 5
    # (early stopping) is alone in its configuration
    jobs = fold_jobs(x, t, sizes=(30, 30, 25), seeds=(0, 1, 2))
    jobs += fold_jobs(x, t, sizes=(30, 30), seeds=(3, 4), builder=build_hooked)
    jobs[3].data_fingerprint += "h"
    jobs[4].data_fingerprint += "h"
    val_job = fold_jobs(x, t, sizes=(30,), seeds=(5,))[0]
    val_job.val = (x[40:50], t[40:50])
    val_job.config = val_job.config.replace(early_stopping_patience=2)
    val_job.data_fingerprint += "v"
    jobs.append(val_job)
    many_cache, seq_cache = ResultCache(tmp_path / "many"), ResultCache(tmp_path / "seq")
    many = multimodel.train_cached_many(many_cache, "t", jobs, device="cpu", progress=False, stack=True)
    seq = sequential(seq_cache, jobs)
    assert entry_dirs(many_cache) == entry_dirs(seq_cache) and many_cache.misses == 6
    assert [e.meta.get("stacked") for e in many] == [2, 2, None, None, None, None]
    assert_same_entries(many, seq)
    assert "val_loss" in many[5].meta["result"]["history"]


def test_stacked_models_monitor_their_own_validation_sets(tmp_path):
    x, t = data()
    jobs = fold_jobs(x, t, sizes=(30, 30), seeds=(0, 1))
    jobs[0].val = (x[40:50], t[40:50])
    jobs[1].val = (x[45:52], t[45:52])  # unequal sizes: the stacked monitor pads and drops
    cache = ResultCache(tmp_path)
    out = multimodel.train_cached_many(cache, "t", jobs, device="cpu", progress=False, stack=True)
    assert [e.meta["stacked"] for e in out] == [2, 2]
    assert not any(e.meta.get("val_dropped") for e in out)
    seq = sequential(ResultCache(tmp_path / "seq"), jobs)  # one at a time through fit
    for a, b in zip(out, seq):
        ha, hb = a.meta["result"]["history"], b.meta["result"]["history"]
        np.testing.assert_allclose(ha["val_loss"], hb["val_loss"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ha["val_acc"], hb["val_acc"])
        assert a.meta["result"]["best_epoch"] == b.meta["result"]["best_epoch"] is not None
        np.testing.assert_allclose(a.arrays["logits_all"], b.arrays["logits_all"], atol=1e-4)


@pytest.mark.parametrize("kw", [dict(early_stopping_patience=1), dict(keep_best=True)])
def test_early_stopping_and_keep_best_jobs_stack_with_their_own_results(tmp_path, kw):
    x, t = data()
    jobs = fold_jobs(x, t, sizes=(30, 30, 30), seeds=(0, 1, 2))
    for k, job in enumerate(jobs):
        job.config = job.config.replace(epochs=8, optimizer="adam", lr=0.01, schedule="constant",
                                        warmup_epochs=0, milestones=[], **kw)
        job.val = (x[40 + 5 * k:55], t[40 + 5 * k:55])
    cache = ResultCache(tmp_path / "many")
    many = multimodel.train_cached_many(cache, "t", jobs, device="cpu", progress=False, stack=True)
    seq = sequential(ResultCache(tmp_path / "seq"), jobs)
    assert [e.meta["stacked"] for e in many] == [3, 3, 3]
    assert_same_entries(many, seq)
    for a, b in zip(many, seq):
        ra, rb = a.meta["result"], b.meta["result"]
        for field in ("best_epoch", "stopped_early", "epochs_run", "diverged"):
            assert ra[field] == rb[field], field
        np.testing.assert_allclose(ra["history"]["val_loss"], rb["history"]["val_loss"],
                                   rtol=1e-4, atol=1e-5)
    # the three runs end differently, and one ends on weights older than its last epoch
    runs = [(e.meta["result"]["best_epoch"], e.meta["result"]["epochs_run"]) for e in seq]
    assert len(set(runs)) > 1 and any(best < last for best, last in runs)
    # a job that needs a validation set and has none is left to train_cached, which says so
    bare = fold_jobs(x, t, sizes=(30, 30), seeds=(7, 8))
    for job in bare:
        job.config = job.config.replace(**kw)
    with pytest.raises(ValueError, match="needs fit"):
        multimodel.train_cached_many(ResultCache(tmp_path / "bare"), "t", bare, device="cpu",
                                     progress=False, stack=True)


def test_auto_does_not_stack_on_cpu_and_false_never_stacks(tmp_path):
    x, t = data()
    jobs = fold_jobs(x, t)
    assert multimodel.stacking_enabled("auto", "cpu") is False
    assert multimodel.stacking_enabled(True, "cpu") and not multimodel.stacking_enabled(False, "cuda")
    with pytest.raises(ValueError, match="stack"):
        multimodel.stacking_enabled("yes", "cpu")
    # the reading the Ray stages and the cost plan share
    assert [multimodel.stacks_on(s, cuda) for s in ("auto", None, True, False)
            for cuda in (True, False)] == [True, False, True, False, True, True, False, False]
    with pytest.raises(ValueError, match="stack"):
        multimodel.stacks_on("yes", True)
    for stack in ("auto", False):
        cache = ResultCache(tmp_path / str(stack))
        out = multimodel.train_cached_many(cache, "t", jobs, device="cpu", progress=False, stack=stack)
        assert cache.misses == 3 and all("stacked" not in e.meta for e in out)


def test_a_spent_budget_stops_before_a_group(tmp_path):
    x, t = data()
    jobs = fold_jobs(x, t)
    cache = ResultCache(tmp_path)
    cache_mod.set_deadline(0)
    try:
        with pytest.raises(cache_mod.BudgetExhausted):
            multimodel.train_cached_many(cache, "t", jobs, device="cpu", progress=False, stack=True)
    finally:
        cache_mod.set_deadline(None)
    assert cache.misses == 0 and not (tmp_path / "t").exists()


# ------------------------------------------------------------------------------ the studies

@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    from softlib.data import fixtures
    root = tmp_path_factory.mktemp("many_data")
    fixtures.write_fixture_root(root, n_train=200, n_test=500, cifar10_c=False)
    return root


def test_peterson_smoke_profile_trains_fold_models_together(fixture_root, tmp_path, monkeypatch):
    from softlib import data
    from softlib.book import profiles
    from softlib.studies import peterson as P
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    study = P.load_study_data(fixture_root)
    shift = P.load_shift_sets(16, root=fixture_root)
    gen = profiles.resolve("smoke", "generalisation")
    assert gen["stack_models"] is True
    cache = ResultCache(tmp_path / "stacked")
    runs = P.run_generalisation(cache, study, gen, shift, device="cpu", progress=False)
    assert cache.misses == 4
    metas = [cache.load("peterson_scratch", json.loads(k)) for k in _keys(cache, "peterson_scratch")]
    assert sorted(m.meta["stacked"] for m in metas) == [4, 4, 4, 4]  # both conditions' folds
    # the same numbers as one model at a time
    seq_cache = ResultCache(tmp_path / "seq")
    seq = P.run_generalisation(seq_cache, study, dict(gen, stack_models=False), shift,
                               device="cpu", progress=False)
    assert _keys(seq_cache, "peterson_scratch") == _keys(cache, "peterson_scratch")
    assert runs.logits.keys() == seq.logits.keys()
    for key in runs.logits:
        for name, lg in runs.logits[key].items():
            np.testing.assert_allclose(lg, seq.logits[key][name], atol=5e-3, rtol=1e-3)

    alt = profiles.resolve("smoke", "alternatives")
    assert alt["stack_models"] is True
    pre = P.run_pretraining(cache, study, alt, data.load("cifar10", "train", fixture_root),
                            device="cpu", progress=False)
    before = cache.misses
    ft = P.run_alternatives(cache, study, pre, alt, device="cpu", progress=False,
                            methods=[("soft", None), ("sampled", None)])
    assert cache.misses == before + 4 and len(ft.logits) == 4
    stacked = {}
    for k in _keys(cache, "peterson_finetune"):
        e = cache.load("peterson_finetune", json.loads(k))
        stacked.setdefault(e.meta.get("stacked"), 0)
        stacked[e.meta.get("stacked")] += 1
    assert stacked == {2: 4}  # 'sampled' too: each fold model redraws its own targets
    # ... and the sampled fold models are those trained one at a time
    seq_ft = P.run_alternatives(ResultCache(tmp_path / "seq"), study, pre,
                                dict(alt, stack_models=False), device="cpu", progress=False,
                                methods=[("sampled", None)])
    for key, lg in seq_ft.logits.items():
        np.testing.assert_allclose(ft.logits[key], lg, atol=5e-3, rtol=1e-3)
    # section 4 reloads the stacked fine-tuned models through finetune()
    folds = P.select_folds(study.labels, alt["folds"], 10, 0)
    e, _, _ = P.finetune(cache, study, pre, P.parse_archs(alt["archs"])[0], "soft",
                         alt["lr"][0], 1, folds, alt, progress=False)
    assert cache.misses == before + 4 and e.meta["stacked"] == 2
    np.testing.assert_array_equal(e.arrays["logits_heldout"],
                                  ft.logits[(alt["archs"][0][0], "soft", None, alt["lr"][0], 1)])


def _keys(cache, kind):
    return sorted(json.dumps(json.loads((p / "meta.json").read_text())["config"], sort_keys=True)
                  for p in (cache.root / kind).iterdir() if (p / "meta.json").exists())


def test_laing_grid_stacks_the_runs_of_every_model_type(tmp_path, monkeypatch):
    """Basic, MC dropout (validated by its averaged passes), SNGP and DUQ (training hooks) all
    train their runs together, every condition and seed of a model type in one group (soft
    targets beside hard ones with mixup), and give the grid one at a time would."""
    from softlib.studies import laing as L
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    data = laing_data(0)
    params = {"epochs": 1, "width": 2, "lr": 0.05, "batch_size": 20, "mix_alpha": 0.2,
              "early_stopping_patience": None, "fgsm_eps": 0.005, "train_subset": None,
              "split_sizes": (40, 10, 10), "seeds": [0, 1],
              "model_types": ["basic", "dropout_aug", "sngp", "duq"], "mc_samples": 2,
              "dropout_p": 0.0,  # dropout draws differ between stacked and alone runs
              "label_conditions": ["soft", "hard_mixup"], "extra_conditions": [],
              "stack_models": True}
    cache = ResultCache(tmp_path / "stacked")
    g = L.run_grid(data, params, cache, device="cpu", progress=False)
    types = params["model_types"]
    stacked = {(m, c, s): cache.load("laing_train",
                                     L._train_job(data, m, c, s, params)[0].key()).meta.get("stacked")
               for m in types for c in params["label_conditions"] for s in (0, 1)}
    assert set(stacked.values()) == {4}
    # 16 trainings, 16 evaluations, and no load: run_one took the entries the group trained
    assert (cache.misses, cache.hits) == (32, 0)
    seq = L.run_grid(data, dict(params, stack_models=False), ResultCache(tmp_path / "seq"),
                     device="cpu", progress=False)
    cols = ["accuracy", "ece", "brier", "nll", "temperature", "attack_decrease"]
    np.testing.assert_allclose(g.table[cols].to_numpy(float), seq.table[cols].to_numpy(float),
                               atol=1e-3, rtol=1e-3)
    # stacked runs monitor their own validation sets too: the same best epochs as one at a time
    assert seq.table.best_epoch.notna().all()
    np.testing.assert_array_equal(g.table.best_epoch, seq.table.best_epoch)
    # mixing and label smoothing: their probability / epsilon follow each seed's split, so the
    # seeds' configurations differ in them (and the conditions' in the mixing itself); they
    # still train together. (Labels sharper than laing_data's, whose mean entropy clips the
    # mixing probability to 1 for every seed.)
    rng = np.random.default_rng(1)
    sharp = L.LaingData(data.images, data.labels,
                        0.9 * np.eye(10)[data.labels] + 0.1 * rng.dirichlet(np.ones(10), 60),
                        data.ood, provenance="synthetic, sharper labels")
    p = dict(params, model_types=["basic"], label_conditions=["hard_cutmix"],
             extra_conditions=["label_smoothing"])
    mixed = ResultCache(tmp_path / "mixed")
    g = L.run_grid(sharp, p, mixed, device="cpu", progress=False)
    for c in ("hard_cutmix", "label_smoothing"):
        cfgs = [L._train_job(sharp, "basic", c, s, p)[0].config for s in (0, 1)]
        assert (cfgs[0].mix_prob, cfgs[0].label_smoothing) != (cfgs[1].mix_prob,
                                                                cfgs[1].label_smoothing)
        for s in (0, 1):
            job = L._train_job(sharp, "basic", c, s, p)[0]
            assert mixed.load("laing_train", job.key()).meta["stacked"] == 4
    seq = L.run_grid(sharp, dict(p, stack_models=False), ResultCache(tmp_path / "mixed_seq"),
                     device="cpu", progress=False)
    np.testing.assert_allclose(g.table[cols].to_numpy(float), seq.table[cols].to_numpy(float),
                               atol=1e-3, rtol=1e-3)
    # with early stopping (or keep_best) the seeds still train together, each stopping on its own
    for kw in (dict(early_stopping_patience=1, epochs=4), dict(keep_best_checkpoint=True)):
        p = dict(params, model_types=["basic"], label_conditions=["soft"], **kw)
        es = ResultCache(tmp_path / f"es{len(kw)}")
        g = L.run_grid(data, p, es, device="cpu", progress=False)
        for s in (0, 1):
            job = L._train_job(data, "basic", "soft", s, p)[0]
            assert es.load("laing_train", job.key()).meta["stacked"] == 2
        seq = L.run_grid(data, dict(p, stack_models=False), ResultCache(tmp_path / f"seq{len(kw)}"),
                         device="cpu", progress=False)
        for col in ("best_epoch", "epochs_run"):
            np.testing.assert_array_equal(g.table[col], seq.table[col])
        np.testing.assert_allclose(g.table[cols].to_numpy(float), seq.table[cols].to_numpy(float),
                                   atol=1e-3, rtol=1e-3)


def test_large_groups_are_split_under_the_parameter_limit(tmp_path):
    x, t = data()
    jobs = fold_jobs(x, t, sizes=(30,) * 5, seeds=(0, 1, 2, 3, 4))
    n_params = sum(p.numel() for p in TinyBN().parameters())
    cache = ResultCache(tmp_path)
    out = multimodel.train_cached_many(cache, "t", jobs, device="cpu", progress=False, stack=True,
                                  max_group_params=2.5 * n_params)
    assert [e.meta.get("stacked") for e in out] == [2, 2, 2, 2, None]
    out = multimodel.train_cached_many(ResultCache(tmp_path / "one"), "t", jobs, device="cpu",
                                  progress=False, stack=True, max_group_params=n_params)
    assert all("stacked" not in e.meta for e in out)


def test_a_group_out_of_device_memory_is_halved(tmp_path, monkeypatch):
    from softlib import multimodel
    real, sizes = multimodel.fit_stacked, []

    def small_device(models, *args, **kw):
        sizes.append(len(models))
        if len(models) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(models, *args, **kw)

    monkeypatch.setattr(multimodel, "fit_stacked", small_device)
    x, t = data()
    jobs = fold_jobs(x, t, sizes=(30,) * 5, seeds=(0, 1, 2, 3, 4))
    cache = ResultCache(tmp_path)
    with pytest.warns(UserWarning, match="ran out of device memory"):
        out = multimodel.train_cached_many(cache, "t", jobs, device="cpu", progress=False, stack=True)
    assert sizes == [5, 2, 3, 2]  # 5 -> 2 + 3 -> 2 + (3 -> 1 + 2)
    assert [e.meta.get("stacked") for e in out] == [2, 2, None, 2, 2] and cache.misses == 5
    seq = sequential(ResultCache(tmp_path / "seq"), jobs)
    assert_same_entries(out, seq)


@pytest.mark.parametrize("stack", [True, False])
def test_a_budget_never_stops_laing_between_a_model_and_its_evaluation(tmp_path, monkeypatch, stack):
    """Bundles carry no weights: a run trained before the deadline is evaluated on this machine."""
    from softlib.cache import BudgetExhausted, set_deadline
    from softlib.studies import laing as L
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    data = laing_data(0)
    params = {"epochs": 1, "width": 2, "lr": 0.05, "batch_size": 20, "mix_alpha": 0.2,
              "early_stopping_patience": None, "fgsm_eps": 0.005, "train_subset": None,
              "split_sizes": (40, 10, 10), "seeds": [0, 1],
              "model_types": ["basic", "dropout_noaug"],
              "label_conditions": ["soft", "hard"], "extra_conditions": [], "stack_models": stack}

    def spend_budget_on_first_training(action, kind, key):
        if action == "save" and kind == "laing_train":
            set_deadline(0)

    cache = ResultCache(tmp_path, on_access=spend_budget_on_first_training)
    try:
        with pytest.raises(BudgetExhausted):
            L.run_grid(data, params, cache, device="cpu", progress=False)
    finally:
        set_deadline(None)
    trained = [p.name for p in (tmp_path / "laing_train").iterdir() if (p / "meta.json").exists()]
    evaluated = [p for p in (tmp_path / "laing_eval").iterdir() if (p / "meta.json").exists()]
    # stacked: every run of the first model type (2 conditions x 2 seeds) trains together, and
    # the budget stops the grid before the second; else the first run alone
    assert len(trained) == (4 if stack else 1) and len(evaluated) == len(trained)


def test_laing_mc_dropout_seeds_stack_and_evaluate(tmp_path, monkeypatch):
    """MC dropout (dropout after every ReLU, sampled at evaluation) trains stacked with early
    stopping and evaluates; its dropout draws differ from one at a time, as another seed's would,
    so only its bookkeeping and finite metrics are checked here."""
    from softlib.studies import laing as L
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    data = laing_data(1)
    params = {"epochs": 3, "width": 2, "lr": 0.05, "batch_size": 20, "mix_alpha": 0.2,
              "early_stopping_patience": 1, "fgsm_eps": 0.005, "train_subset": None,
              "split_sizes": (40, 10, 10), "seeds": [0, 1], "model_types": ["dropout_aug"],
              "label_conditions": ["soft_cutmix"], "extra_conditions": [], "stack_models": True,
              "dropout_p": 0.05, "mc_average": "logits", "mc_samples": 3}
    cache = ResultCache(tmp_path)
    g = L.run_grid(data, params, cache, device="cpu", progress=False)
    for s in (0, 1):
        entry = cache.load("laing_train", L._train_job(data, "dropout_aug", "soft_cutmix", s,
                                                       params)[0].key())
        r = entry.meta["result"]
        assert entry.meta["stacked"] == 2
        assert len(r["history"]["val_loss"]) == r["epochs_run"] and 1 <= r["best_epoch"] <= 3
    assert np.isfinite(g.table[["accuracy", "ece", "nll", "attack_decrease"]].to_numpy(float)).all()
