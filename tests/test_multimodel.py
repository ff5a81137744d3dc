"""Stacked (vmap) training must match sequential softlib.train.fit model by model."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from softlib import train
from softlib.multimodel import StackedModels, fit_stacked
from softlib.train import TrainConfig


from tiny_models import TinyBN  # noqa: E402  (tests/tiny_models.py)


def data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6, 6, 3)).astype(np.uint8)
    t = rng.dirichlet(np.ones(3), n).astype(np.float32)
    return x, t / t.sum(1, keepdims=True)


def models(k):
    out = []
    for i in range(k):
        torch.manual_seed(100 + i)
        out.append(TinyBN())
    return out


@pytest.mark.parametrize("kw", [
    dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
         augment="crop_flip", schedule="multistep", milestones=[1], warmup_epochs=1),
    dict(optimizer="adam", lr=0.01, weight_decay=1e-4, augment="laing", mix="mixup",
         mix_alpha=0.3, label_smoothing=0.05),
    dict(optimizer="sgd", lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0,
         augment="none", mix="cutmix", mix_prob="entropy"),
])
def test_stacked_equals_sequential(kw):
    x, t = data()
    idx = [np.arange(0, 30), np.arange(10, 40), np.arange(5, 35)]
    cfg = TrainConfig(arch="tiny", batch_size=8, epochs=2, **kw)
    seeds = [3, 4, 5]
    ms = models(3)
    seq = [copy.deepcopy(m) for m in ms]
    for k, m in enumerate(seq):
        train.fit(m, x[idx[k]], t[idx[k]], cfg.replace(seed=seeds[k]), progress=False)
    res = fit_stacked(ms, x, t, idx, cfg, seeds=seeds, progress=False)
    assert len(res.history["train_loss"]) == 2 and len(res.history["train_loss"][0]) == 3
    for k in range(3):
        a, b = res.models[k].state_dict(), seq[k].state_dict()
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4, msg=f"model {k} {name}")
        assert not torch.equal(a["bn.running_mean"], torch.zeros(4))
        assert int(a["bn.num_batches_tracked"]) == 2 * 4  # ceil(30 / 8) steps x 2 epochs


def test_forward_matches_each_model_and_unstack_roundtrip():
    ms = models(2)
    for m in ms:
        m.eval()
    st = StackedModels(ms).eval()
    x = torch.rand(2, 5, 3, 6, 6)
    out = st(x)
    for k in range(2):
        torch.testing.assert_close(out[k], ms[k](x[k]), atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        st.params["conv__weight"].add_(1.0)
    st.unstack()
    torch.testing.assert_close(ms[1](x[1]), st(x)[1], atol=1e-5, rtol=1e-5)


def test_errors():
    x, t = data()
    cfg = TrainConfig(arch="tiny", batch_size=8, epochs=1)
    with pytest.raises(ValueError, match="sizes differ"):
        fit_stacked(models(2), x, t, [np.arange(30), np.arange(31)], cfg, progress=False)
    res = fit_stacked(models(2), x, t, [np.arange(30), np.arange(31)], cfg.replace(drop_last=True),
                      progress=False)
    assert res.steps_per_epoch == 3

    class OwnLoss(TinyBN):  # a loss hook that has not declared it takes stacked inputs
        def training_loss(self, x, out, t):
            return out.sum()

    with pytest.raises(ValueError, match="training_loss"):
        StackedModels([OwnLoss(), OwnLoss()])


def test_batchnorm_runs_in_float32_under_autocast(monkeypatch):
    """Stacked BatchNorms compute in float32 under bf16 autocast (the CUDA backward of a vmapped
    BatchNorm rejects a bf16 input with float32 running statistics)."""
    from softlib import multimodel
    seen = []
    real = torch.nn.functional.batch_norm

    def spy(x, *args, **kw):
        seen.append(x.dtype)
        return real(x, *args, **kw)

    monkeypatch.setattr(torch.nn.functional, "batch_norm", spy)
    bn = multimodel._batchnorm_in_float32(nn.BatchNorm2d(4))
    x = torch.rand(3, 4, 5, 5, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = bn(x)
    assert seen == [torch.float32] and y.dtype == torch.bfloat16
    assert bn.running_mean.dtype == torch.float32
    seen.clear()
    bn(torch.rand(3, 4, 5, 5))  # no autocast: the plain forward
    assert seen == [torch.float32]

    # the stacked forward and backward run under autocast, statistics stay float32 and move
    ms = models(2)
    st = StackedModels(ms)
    xs = torch.rand(2, 5, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = st(xs)
    out.float().sum().backward()
    rm = st.b__bn__running_mean
    assert rm.dtype == torch.float32 and not torch.equal(rm, torch.zeros_like(rm))
    # without autocast the forward equals each model's own
    st.eval()
    with torch.no_grad():
        st.unstack()
        for m in ms:
            m.eval()
        torch.testing.assert_close(st(xs)[1], ms[1](xs[1]), atol=1e-6, rtol=1e-5)


def test_stacked_bf16_close_to_sequential_bf16():
    x, t = data()
    idx = [np.arange(0, 32), np.arange(8, 40)]
    cfg = TrainConfig(arch="tiny", batch_size=8, epochs=1, optimizer="sgd", lr=0.05, amp=True,
                      augment="crop_flip")
    ms = models(2)
    seq = [copy.deepcopy(m) for m in ms]
    for k, m in enumerate(seq):
        train.fit(m, x[idx[k]], t[idx[k]], cfg.replace(seed=k), progress=False)
    res = fit_stacked(ms, x, t, idx, cfg, seeds=[0, 1], progress=False)
    for k in range(2):
        a, b = res.models[k].state_dict(), seq[k].state_dict()
        for name in a:  # bf16 kernels: agreement to bf16 precision, not bit for bit
            torch.testing.assert_close(a[name].float(), b[name].float(), atol=3e-2, rtol=3e-2,
                                       msg=f"model {k} {name}")


@pytest.mark.parametrize("kw", [dict(early_stopping_patience=2), dict(keep_best=True)])
def test_early_stopping_and_keep_best_act_per_model(kw):
    """Each stacked model stops, and ends with its best epoch's weights, as fit would alone."""
    x, t = data(n=60)
    idx = [np.arange(0, 30), np.arange(10, 40), np.arange(20, 50)]
    vals = [(x[40:60], t[40:60]), (x[0:10], t[0:10]), (x[5:25], t[5:25])]
    cfg = TrainConfig(arch="tiny", batch_size=8, epochs=8, optimizer="adam", lr=0.01,
                      weight_decay=0.0, augment="none", **kw)
    seeds = [3, 4, 5]
    ms = models(3)
    seq = [copy.deepcopy(m) for m in ms]
    alone = [train.fit(m, x[idx[k]], t[idx[k]], cfg.replace(seed=seeds[k]), val=vals[k],
                       progress=False) for k, m in enumerate(seq)]
    res = fit_stacked(ms, x, t, idx, cfg, seeds=seeds, progress=False, vals=vals)
    for k in range(3):
        assert res.best_epochs[k] == alone[k].best_epoch
        assert res.epochs_run(k) == alone[k].epochs_run
        assert (res.stopped_epochs[k] is not None) == alone[k].stopped_early
        got = [row[k] for row in res.history["val_loss"][:res.epochs_run(k)]]
        np.testing.assert_allclose(got, alone[k].history["val_loss"], rtol=1e-4, atol=1e-5)
        a, b = res.models[k].state_dict(), seq[k].state_dict()
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-4, msg=f"model {k} {name}")
    # the runs differ from each other, so per-model bookkeeping is what the test checks
    assert len({(r.best_epoch, r.epochs_run) for r in alone}) > 1
    assert any(r.best_epoch < r.epochs_run for r in alone)  # a restore that changes weights


def test_early_stopping_and_keep_best_need_validation_sets():
    x, t = data()
    cfg = TrainConfig(arch="tiny", batch_size=8, epochs=1)
    for kw in (dict(keep_best=True), dict(early_stopping_patience=1)):
        with pytest.raises(ValueError, match="need vals"):
            fit_stacked(models(2), x, t, [np.arange(30), np.arange(30)], cfg.replace(**kw),
                        progress=False)


def assert_same_as_alone(res, alone, seq):
    """Each stacked model's per-epoch train losses and final state are those of ``fit`` alone
    (``alone``: the fit results, ``seq``: the models fit trained)."""
    for k in range(len(seq)):
        run = res.history["train_loss"][:res.epochs_run(k)]  # a stopped model's rows end there
        np.testing.assert_allclose([row[k] for row in run], alone[k].history["train_loss"],
                                   rtol=1e-5, atol=1e-6)
        a, b = res.models[k].state_dict(), seq[k].state_dict()
        for n in a:
            torch.testing.assert_close(a[n], b[n], atol=2e-5, rtol=1e-4, msg=f"model {k} {n}")


class ScaledInference(TinyBN):
    """``inference`` (what fit validates with) differs from the training forward."""

    def inference(self, x):
        return 3.0 * self(x)


def test_validation_scores_inference_as_fit_does():
    """fit validates a model through its ``inference`` (MC dropout: averaged passes; SNGP:
    mean-field logits); each stacked model's validation loss must be the same quantity."""
    x, t = data(n=60)
    idx = [np.arange(0, 30), np.arange(10, 40)]
    vals = [(x[40:60], t[40:60]), (x[0:10], t[0:10])]
    cfg = TrainConfig(arch="tiny", batch_size=8, epochs=2, optimizer="adam", lr=0.01,
                      weight_decay=0.0, augment="none")
    ms = []
    for i in range(2):
        torch.manual_seed(100 + i)
        ms.append(ScaledInference())
    seq = [copy.deepcopy(m) for m in ms]
    alone = [train.fit(m, x[idx[k]], t[idx[k]], cfg.replace(seed=k), val=vals[k], progress=False)
             for k, m in enumerate(seq)]
    res = fit_stacked(ms, x, t, idx, cfg, seeds=[0, 1], progress=False, vals=vals)
    for k in range(2):
        np.testing.assert_allclose([row[k] for row in res.history["val_loss"]],
                                   alone[k].history["val_loss"], rtol=1e-5, atol=1e-6)


def _laing_hook_model(name, i):
    from softlib.models import build
    torch.manual_seed(100 + i)
    kw = (dict(num_random_features=32) if name == "resnet20_sngp" else dict(centroid_size=8))
    return build(name, depth=8, width=4, **kw)


@pytest.mark.parametrize("name", ["resnet20_sngp", "resnet20_duq"])
def test_models_with_training_hooks_stack_as_they_train_alone(name):
    """SNGP (per-epoch precision reset, spectral-norm power iteration, mean-field validation)
    and DUQ (per-model gradient-penalty loss, centroid update after every step, kernel
    validation) train stacked exactly as each would alone, early stopping included."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (48, 8, 8, 3)).astype(np.uint8)
    t = rng.dirichlet(np.ones(10), 48).astype(np.float32)
    t /= t.sum(1, keepdims=True)
    idx = [np.arange(0, 32), np.arange(8, 40), np.arange(16, 48)]
    vals = [(x[:16], t[:16]), (x[16:32], t[16:32]), (x[32:], t[32:])]
    cfg = TrainConfig(arch=name, batch_size=8, epochs=3, optimizer="sgd", lr=0.05, momentum=0.9,
                      weight_decay=5e-4, augment="crop_flip", amp=False,
                      early_stopping_patience=2)
    ms = [_laing_hook_model(name, i) for i in range(3)]
    seq = [copy.deepcopy(m) for m in ms]
    alone = [train.fit(m, x[idx[k]], t[idx[k]], cfg.replace(seed=k), val=vals[k], progress=False)
             for k, m in enumerate(seq)]
    res = fit_stacked(ms, x, t, idx, cfg, seeds=[0, 1, 2], progress=False, vals=vals)
    for k in range(3):
        assert res.epochs_run(k) == alone[k].epochs_run
        assert res.best_epochs[k] == alone[k].best_epoch
        run = res.history["val_loss"][:res.epochs_run(k)]
        np.testing.assert_allclose([row[k] for row in run], alone[k].history["val_loss"],
                                   rtol=1e-5, atol=1e-6)
    assert_same_as_alone(res, alone, seq)
    a = res.models[0].state_dict()
    if name == "resnet20_sngp":  # reset at the last epoch's start: the ridge plus one epoch's
        # 32 images of features, each adding ||phi||^2 <= 2 to the trace (three epochs' ~96
        # images, had the reset been lost)
        gp = res.models[0].gp
        assert gp.num_features < float(gp.precision.trace()) <= gp.num_features + 2 * 32 + 1e-3
    else:  # the centroids moved with each step's update
        assert not torch.equal(a["n"], torch.full((10,), 13.0))


def test_target_samplers_redraw_each_models_targets_as_fit_does():
    """Peterson's sampled hard labels: model k's targets are redrawn every epoch from the
    generator fit would use for its seed, so stacked = alone."""
    x, t = data()
    idx = [np.arange(0, 30), np.arange(10, 40)]

    def sampler_for(rows):
        def sampler(epoch, gen):
            u = torch.rand(len(rows), 1, generator=gen).numpy()
            labels = (u > np.cumsum(t[rows], 1)).sum(1).clip(max=2)
            return np.eye(3, dtype=np.float32)[labels]
        return sampler

    cfg = TrainConfig(arch="tiny", batch_size=8, epochs=3, optimizer="adam", lr=0.01,
                      weight_decay=0.0, augment="none")
    ms = models(2)
    seq = [copy.deepcopy(m) for m in ms]
    alone = [train.fit(m, x[idx[k]], t[idx[k]], cfg.replace(seed=k),
                       target_sampler=sampler_for(idx[k]), progress=False)
             for k, m in enumerate(seq)]
    res = fit_stacked(ms, x, t, idx, cfg, seeds=[0, 1], progress=False,
                      target_samplers=[sampler_for(i) for i in idx])
    plain = fit_stacked(models(2), x, t, idx, cfg, seeds=[0, 1], progress=False)
    assert_same_as_alone(res, alone, seq)
    # the redrawn one-hot targets are not the soft ones
    assert not np.allclose(plain.history["train_loss"], res.history["train_loss"], atol=1e-3)
    with pytest.raises(ValueError, match="1 samplers for 2 models"):
        fit_stacked(models(2), x, t, idx, cfg, progress=False, target_samplers=[None])


def test_a_stacking_loss_hook_must_return_one_loss_per_model():
    class ScalarLoss(TinyBN):  # declares it stacks, but sums the models' losses
        training_loss_stacks = True

        def training_loss(self, x, out, t):
            return -(t * out.log_softmax(-1)).sum(-1).mean()

    x, t = data()
    ms = []
    for i in range(2):
        torch.manual_seed(i)
        ms.append(ScalarLoss())
    with pytest.raises(ValueError, match="one loss per model"):
        fit_stacked(ms, x, t, [np.arange(30)] * 2, TrainConfig(arch="tiny", batch_size=8, epochs=1),
                    progress=False)


def test_per_model_mixing_probability_and_label_smoothing():
    """Laing's mixing probability and smoothing epsilon follow each seed's split, so the seeds'
    configurations differ in them, and its conditions differ in the mixing itself (mixup,
    CutMix, none): each stacked model applies its own, as fit would."""
    x, t = data()
    idx = [np.arange(0, 30), np.arange(10, 40), np.arange(5, 35)]
    base = TrainConfig(arch="tiny", batch_size=8, epochs=2, optimizer="adam", lr=0.01,
                       weight_decay=0.0, augment="crop_flip", mix="mixup", mix_alpha=0.3)
    configs = [base.replace(seed=3, mix_prob=0.2, label_smoothing=0.05),
               base.replace(seed=4, mix="cutmix", mix_prob=0.9, label_smoothing=0.0),
               base.replace(seed=5, mix="none", mix_prob=1.0, label_smoothing=0.2)]
    ms = models(3)
    seq = [copy.deepcopy(m) for m in ms]
    alone = [train.fit(m, x[idx[k]], t[idx[k]], configs[k], progress=False)
             for k, m in enumerate(seq)]
    res = fit_stacked(ms, x, t, idx, base, progress=False, configs=configs)
    assert_same_as_alone(res, alone, seq)
    # the same three models under model 0's settings train differently: the fields are used
    same = fit_stacked(models(3), x, t, idx, configs[0], seeds=[3, 4, 5], progress=False)
    assert not np.allclose(np.asarray(same.history["train_loss"])[:, 1:],
                           np.asarray(res.history["train_loss"])[:, 1:], atol=1e-4)
    with pytest.raises(ValueError, match="differs from config in lr"):
        fit_stacked(models(3), x, t, idx, base, progress=False,
                    configs=configs[:2] + [configs[2].replace(lr=0.02)])
    with pytest.raises(ValueError, match="differ from the configs' seeds"):
        fit_stacked(models(3), x, t, idx, base, seeds=[0, 1, 2], progress=False, configs=configs)
