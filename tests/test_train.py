"""Tests for softlib.train: learning, determinism, early stopping, hooks, cache and k-fold."""
import numpy as np
import pytest
import torch
from torch import nn

from softlib import train
from softlib.cache import ResultCache
from softlib.train import TrainConfig


class TinyCNN(nn.Module):
    """A small CNN with BatchNorm; pixels in [0, 1], normalisation inside."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.net((x - 0.5) / 0.25)


def make_data(n=96, c=3, seed=0):
    """Images whose mean colour channel encodes the class: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    img = rng.integers(0, 80, (n, 8, 8, 3)).astype(np.int64)
    img[np.arange(n), :, :, labels] += 150
    targets = np.eye(c, dtype=np.float32)[labels]
    return img.astype(np.uint8), targets, labels


def cfg(**kw):
    base = dict(arch="tiny", optimizer="adam", lr=0.01, weight_decay=0.0, batch_size=16,
                epochs=4, augment="crop_flip")
    base.update(kw)
    return TrainConfig(**base)


def build(config=None):
    return TinyCNN()


def test_training_reduces_loss_and_learns():
    x, t, y = make_data()
    torch.manual_seed(0)
    m = build()
    res = train.fit(m, x, t, cfg(epochs=6), val=(x, t), progress=False)
    h = res.history
    assert h["train_loss"][-1] < 0.6 * h["train_loss"][0]
    assert h["val_acc"][-1] > 0.8
    assert set(h) >= {"train_loss", "val_loss", "val_acc", "lr", "seconds"}
    logits = train.predict(m, x, batch_size=40)
    assert logits.shape == (len(x), 3) and logits.dtype == np.float32
    assert (logits.argmax(1) == y).mean() > 0.8


@pytest.mark.parametrize("kw", [dict(), dict(mix="mixup", mix_alpha=0.4, augment="laing"),
                                dict(mix="cutmix", mix_prob="entropy", label_smoothing=0.1,
                                     optimizer="sgd", schedule="multistep", milestones=[1],
                                     warmup_epochs=1)])
def test_same_seed_same_weights(kw):
    x, t, _ = make_data(48)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        m = build()
        train.fit(m, x, t, cfg(epochs=2, **kw), progress=False)
        states.append(m.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    torch.manual_seed(0)
    m = build()
    train.fit(m, x, t, cfg(epochs=2, seed=1, **kw), progress=False)
    assert not torch.equal(m.state_dict()["net.0.weight"], states[0]["net.0.weight"])


def test_early_stopping_restores_best_weights():
    x, t, _ = make_data(64)
    # validation targets are the wrong class: validation loss rises as training succeeds
    vt = np.roll(t, 1, axis=1)
    torch.manual_seed(0)
    m = build()
    snapshots = []

    class Spy(TinyCNN):
        def on_epoch_start(self, epoch):
            snapshots.append({k: v.clone() for k, v in self.state_dict().items()})

    torch.manual_seed(0)
    m = Spy()
    res = train.fit(m, x, t, cfg(epochs=10, early_stopping_patience=2, augment="none"),
                    val=(x, vt), progress=False)
    h = res.history
    assert res.stopped_early and res.epochs_run < 10
    best = int(np.argmin(h["val_loss"])) + 1
    assert res.best_epoch == best
    assert res.epochs_run == best + 2
    # the restored weights are those at the end of the best epoch = start of epoch index `best`
    ref = snapshots[best] if best < len(snapshots) else None
    assert ref is not None
    for k, v in m.state_dict().items():
        assert torch.equal(v, ref[k]), k
    logits = torch.from_numpy(train.predict(m, x))
    from softlib.losses import soft_cross_entropy
    assert float(soft_cross_entropy(logits, torch.from_numpy(vt))) == pytest.approx(min(h["val_loss"]), rel=1e-4)


def test_target_sampler_called_each_epoch_and_hooks():
    x, t, y = make_data(32)
    calls = []

    def sampler(epoch, gen):
        calls.append(epoch)
        draws = torch.randint(0, 3, (len(x),), generator=gen)
        return torch.nn.functional.one_hot(draws, 3).float()

    events = {"epoch": [], "after": 0, "loss": 0}

    class Hooked(TinyCNN):
        requires_input_grad = True

        def on_epoch_start(self, epoch):
            events["epoch"].append(epoch)

        def training_loss(self, xb, out, tb):
            assert xb.requires_grad
            events["loss"] += 1
            return nn.functional.cross_entropy(out, tb)

        def after_optimizer_step(self, xb, tb):
            events["after"] += 1

    torch.manual_seed(0)
    train.fit(Hooked(), x, t, cfg(epochs=3, batch_size=10), target_sampler=sampler, progress=False)
    assert calls == [0, 1, 2]
    assert events["epoch"] == [0, 1, 2]
    assert events["loss"] == events["after"] == 3 * 4  # ceil(32 / 10) steps per epoch


def test_inference_hook_used_by_predict():
    class WithInference(TinyCNN):
        def inference(self, x):
            assert not self.training
            return torch.zeros(x.shape[0], 3) + 7.0

    out = train.predict(WithInference(), make_data(10)[0])
    assert np.all(out == 7.0)


def test_lr_schedules():
    c = cfg(lr=1.0, schedule="multistep", milestones=[2, 4], gamma=0.5, epochs=6)
    assert [train.lr_at(c, e) for e in (0, 1.9, 2, 3.5, 4, 5.9)] == [1, 1, .5, .5, .25, .25]
    c = cfg(lr=1.0, schedule="cosine", epochs=4, warmup_epochs=1)
    assert train.lr_at(c, 0, 4) == pytest.approx(0.25)
    assert train.lr_at(c, 1) == pytest.approx(1.0)
    assert train.lr_at(c, 2.5) == pytest.approx(0.5)
    assert train.lr_at(c, 4) == pytest.approx(0.0)


def test_config_validation_and_dict_roundtrip():
    c = cfg(milestones=[3])
    assert TrainConfig.from_dict(c.to_dict()) == c
    import json
    json.dumps(c.to_dict())
    with pytest.raises(ValueError, match="optimizer"):
        cfg(optimizer="rmsprop")
    with pytest.raises(ValueError, match="augment"):
        cfg(augment="bogus")
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig.from_dict({"nope": 1})
    x, t, _ = make_data(8)
    with pytest.raises(ValueError, match="sums to"):
        train.fit(build(), x, t * 2, cfg(), progress=False)
    with pytest.raises(ValueError, match="early_stopping_patience"):
        train.fit(build(), x, t, cfg(early_stopping_patience=1), progress=False)


def test_cache_hit_skips_training(tmp_path):
    x, t, _ = make_data(32)
    cache = ResultCache(tmp_path)
    builds = []

    def counting_build(config):
        builds.append(1)
        return TinyCNN()

    fp = train.data_fingerprint(t, provenance="test")
    e1 = train.train_cached(cache, "tiny", cfg(epochs=1), fp, counting_build, (x, t),
                            {"test": x[:10]}, progress=False)
    assert len(builds) == 1 and e1.arrays["logits_test"].shape == (10, 3)
    e2 = train.train_cached(cache, "tiny", cfg(epochs=1), fp, counting_build, (x, t),
                            {"test": x[:10]}, progress=False)
    assert len(builds) == 1 and cache.hits == 1
    np.testing.assert_array_equal(e1.arrays["logits_test"], e2.arrays["logits_test"])
    assert e2.meta["result"]["epochs_run"] == 1
    # a new eval set on a hit: predicted from the stored weights, no training
    e3 = train.train_cached(cache, "tiny", cfg(epochs=1), fp, counting_build, (x, t),
                            {"test": x[:10], "other": x[10:15]}, progress=False)
    assert e3.arrays["logits_other"].shape == (5, 3)
    assert len(builds) == 2 and cache.misses == 1  # one rebuild to load weights, not a fit
    m = train.load_model(e3, cfg(epochs=1), counting_build)
    np.testing.assert_allclose(train.predict(m, x[:10]), e1.arrays["logits_test"], atol=1e-6)
    # a changed configuration trains again
    train.train_cached(cache, "tiny", cfg(epochs=2), fp, counting_build, (x, t), {}, progress=False)
    assert cache.misses == 2


def test_run_folds_assembles_every_index_once(tmp_path):
    x, t, _ = make_data(30)
    idx = np.random.default_rng(0).permutation(30)
    parts = np.array_split(idx, 3)
    folds = [(np.concatenate([p for j, p in enumerate(parts) if j != k]), parts[k]) for k in range(3)]
    res = train.run_folds(ResultCache(tmp_path), "tinyfold", cfg(epochs=1), x, t, folds,
                          data_id="t", build_model=build, eval_sets={"extra": x[:4]},
                          progress=False)
    assert res.heldout_logits.shape == (30, 3) and np.isfinite(res.heldout_logits).all()
    for k, (_, te) in enumerate(folds):
        assert (res.fold_of[te] == k).all()
        np.testing.assert_array_equal(res.heldout_logits[te], res.entries[k].arrays["logits_heldout"])
        assert res.entries[k].arrays["logits_extra"].shape == (4, 3)
    bad = [folds[0], folds[1], (folds[2][0], folds[2][1][:-1])]
    with pytest.raises(ValueError, match="held out by no fold"):
        train.run_folds(ResultCache(tmp_path), "tinyfold", cfg(epochs=1), x, t, bad,
                        build_model=build, progress=False)
    dup = [folds[0], folds[0], folds[2]]
    with pytest.raises(ValueError, match="already held out"):
        train.run_folds(ResultCache(tmp_path), "tinyfold", cfg(epochs=1), x, t, dup,
                        build_model=build, progress=False)


def test_keep_best_trains_every_epoch_and_ends_with_the_best_validation_weights():
    import copy
    import numpy as np
    import pytest
    import torch
    from torch import nn
    from softlib.train import TrainConfig, fit
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (48, 8, 8, 3), dtype=np.uint8)
    t = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 48)]
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(192, 3))
    cfg = TrainConfig(arch="tiny", optimizer="sgd", lr=2.0, momentum=0.9, batch_size=16, epochs=6,
                      augment="none", keep_best=True)
    assert "keep_best" in cfg.to_dict()
    assert "keep_best" not in cfg.replace(keep_best=False).to_dict()  # old cache keys unchanged
    kept = copy.deepcopy(m)
    r = fit(kept, x, t, cfg, val=(x[:16], t[:16]), progress=False)
    assert r.epochs_run == 6 and not r.stopped_early                  # no early stop
    best = int(np.argmin(r.history["val_loss"])) + 1
    assert r.best_epoch == best
    # the kept weights are the best epoch's: their validation loss is the history's minimum
    from softlib.losses import soft_cross_entropy
    from softlib.train import predict
    z = torch.from_numpy(predict(kept, x[:16]))
    vloss = float(soft_cross_entropy(z, torch.from_numpy(t[:16])))
    assert vloss == pytest.approx(min(r.history["val_loss"]), rel=1e-4)
    final = copy.deepcopy(m)   # without keep_best the last epoch's weights stay
    r2 = fit(final, x, t, cfg.replace(keep_best=False), val=(x[:16], t[:16]), progress=False)
    z2 = torch.from_numpy(predict(final, x[:16]))
    assert float(soft_cross_entropy(z2, torch.from_numpy(t[:16]))) == pytest.approx(
        r2.history["val_loss"][-1], rel=1e-4)
    with pytest.raises(ValueError, match="keep_best needs"):
        fit(copy.deepcopy(m), x, t, cfg, progress=False)


def test_round_logits_to_float16_and_its_limits():
    z = np.array([[1.0001, -3.14159, 70000.0, np.nan]], np.float32)
    r = train.round_logits(z, "float16")
    assert r.dtype == np.float32
    np.testing.assert_array_equal(r[0, :2], z[0, :2].astype(np.float16).astype(np.float32))
    assert r[0, 2] == z[0, 2] and np.isnan(r[0, 3])  # beyond float16: kept, not made infinite
    assert np.all(np.abs(r[0, :2] - z[0, :2]) <= np.abs(z[0, :2]) * 2.0 ** -11)
    np.testing.assert_array_equal(train.round_logits(z, "float32"), z)
    with pytest.raises(ValueError, match="logits_precision"):
        train.round_logits(z, "bfloat16")


def test_logits_precision_rounds_the_stored_predictions_and_nothing_else(tmp_path):
    with pytest.raises(ValueError, match="logits_precision"):
        cfg(logits_precision="half")
    assert "logits_precision" not in cfg().to_dict()  # keys of earlier results unchanged
    assert cfg(logits_precision="float16").to_dict()["logits_precision"] == "float16"
    x, t, _ = make_data(48)
    fp = train.data_fingerprint(t, provenance="test")
    cache = ResultCache(tmp_path)
    sets = {"test": x[:20]}
    e32 = train.train_cached(cache, "tiny", cfg(epochs=2), fp, build, (x, t), sets,
                             progress=False)
    e16 = train.train_cached(cache, "tiny", cfg(epochs=2, logits_precision="float16"), fp,
                             build, (x, t), sets, progress=False)
    assert cache.misses == 2  # its own key
    for k, w in e32.state_dict.items():  # the same training
        assert torch.equal(w, e16.state_dict[k])
    np.testing.assert_array_equal(e16.arrays["logits_test"],
                                  train.round_logits(e32.arrays["logits_test"], "float16"))
    assert not np.array_equal(e16.arrays["logits_test"], e32.arrays["logits_test"])
    # a new eval set on a cache hit is rounded too
    e = train.train_cached(cache, "tiny", cfg(epochs=2, logits_precision="float16"), fp, build,
                           (x, t), dict(sets, more=x[20:30]), progress=False)
    np.testing.assert_array_equal(e.arrays["logits_more"],
                                  e.arrays["logits_more"].astype(np.float16).astype(np.float32))
