"""Compiled training (TrainConfig.compile): the same training as eager, and a compiled model that
fails in its first steps falls back to eager without a trace of the failed step."""
import copy
import warnings

import numpy as np
import pytest
import torch

from softlib import train
from softlib.multimodel import fit_stacked
from softlib.train import TrainConfig, compile_mode

from tiny_models import TinyBN  # noqa: E402  (tests/tiny_models.py)


def data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6, 6, 3)).astype(np.uint8)
    t = rng.dirichlet(np.ones(3), n).astype(np.float32)
    return x, t


def tiny(seed):
    torch.manual_seed(seed)
    return TinyBN()


CFG = TrainConfig(arch="tiny", batch_size=8, epochs=2, optimizer="sgd", lr=0.05,
                  augment="crop_flip")


def assert_same_weights(a, b, exact=True):
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        if exact:
            assert torch.equal(pa, pb), name
        else:
            torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4, msg=name)


def test_compile_setting_is_validated_and_resolved():
    with pytest.raises(ValueError, match="compile.*reduce-overhead"):
        TrainConfig(compile="graphs")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_mode(False, cuda) is None and compile_mode("auto", cpu) is None
    assert compile_mode("auto", cuda) == compile_mode(True, cpu) == "default"
    assert compile_mode("reduce-overhead", cpu) == "reduce-overhead"


class _FailingBackward(torch.autograd.Function):
    """Passes the forward through and raises in the backward: a compiled graph that runs its
    forward (updating BatchNorm's running statistics) and then fails."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("simulated: the compiler cannot differentiate this graph")


def _fake_compile(fail_on_calls):
    """A stand-in for torch.compile whose compiled models each fail on the given call numbers
    (counted per compiled model); ``calls['n']`` counts all calls."""
    calls = {"n": 0}

    def compile_(model, mode=None):
        mine = {"n": 0}

        def compiled(x):
            calls["n"] += 1
            mine["n"] += 1
            out = model(x)
            return _FailingBackward.apply(out) if mine["n"] in fail_on_calls else out
        return compiled
    return compile_, calls


@pytest.mark.parametrize("stacked", [False, True])
def test_a_compiled_model_failing_in_its_first_step_falls_back_to_eager(monkeypatch, stacked):
    x, t = data()
    idx = [np.arange(0, 32), np.arange(8, 40)]

    def run(cfg):
        ms = [tiny(1), tiny(2)]
        if stacked:
            return fit_stacked(ms, x, t, idx, cfg, seeds=[0, 1], progress=False).models
        for m, i, s in zip(ms, idx, [0, 1]):
            train.fit(m, x[i], t[i], cfg.replace(seed=s), progress=False)
        return ms

    eager = run(CFG)
    fake, calls = _fake_compile(fail_on_calls={1})
    monkeypatch.setattr(torch, "compile", fake)
    with pytest.warns(UserWarning, match="compiled model failed.*rest of training run eagerly"):
        fell_back = run(CFG.replace(compile="reduce-overhead"))
    assert calls["n"] == (1 if stacked else 2)  # only the failed call per compiled model
    for a, b in zip(fell_back, eager):  # the failed step left no trace (BatchNorm statistics)
        assert_same_weights(a, b)


def test_a_compiled_model_failing_after_its_guarded_steps_is_an_error(monkeypatch):
    x, t = data()
    fake, calls = _fake_compile(fail_on_calls={train._Forward.GUARDED_STEPS + 1})
    monkeypatch.setattr(torch, "compile", fake)
    with pytest.raises(RuntimeError, match="simulated"):
        train.fit(tiny(1), x[:32], t[:32], CFG.replace(compile=True), progress=False)


def test_a_compiled_model_that_works_is_used_throughout(monkeypatch):
    x, t = data()
    fake, calls = _fake_compile(fail_on_calls=set())
    monkeypatch.setattr(torch, "compile", fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train.fit(got := tiny(1), x[:32], t[:32], CFG.replace(compile=True), progress=False)
    assert calls["n"] == 2 * 4  # every training step of 2 epochs x 4 batches
    train.fit(want := tiny(1), x[:32], t[:32], CFG, progress=False)
    assert_same_weights(got, want)


@pytest.mark.parametrize("mode", [True, "reduce-overhead"])
def test_compiled_training_equals_eager(mode):
    """The real torch.compile (on a CPU 'reduce-overhead' compiles as True does)."""
    x, t = data()
    idx = [np.arange(0, 32), np.arange(8, 40)]
    cfg = CFG.replace(epochs=1)
    ms = [tiny(1), tiny(2)]
    eager = fit_stacked([copy.deepcopy(m) for m in ms], x, t, idx, cfg, seeds=[0, 1],
                        progress=False)
    compiled = fit_stacked(ms, x, t, idx, cfg.replace(compile=mode), seeds=[0, 1],
                           progress=False)
    for a, b in zip(compiled.models, eager.models):
        assert_same_weights(a, b, exact=False)
    train.fit(fit_eager := tiny(1), x[:32], t[:32], cfg, progress=False)
    train.fit(fit_compiled := tiny(1), x[:32], t[:32], cfg.replace(compile=mode), progress=False)
    assert_same_weights(fit_compiled, fit_eager, exact=False)
