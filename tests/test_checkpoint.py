"""Epoch checkpoints (softlib.checkpoint): a training stopped at the halt deadline, or killed,
resumes from its last checkpoint and ends exactly as an uninterrupted run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from softlib import train
from softlib.cache import ResultCache
from softlib.checkpoint import Checkpoint, TrainingHalted, set_halt
from softlib.multimodel import fit_stacked, train_cached_many
from softlib.train import TrainConfig, TrainJob

from tiny_models import TinyBN  # noqa: E402  (tests/tiny_models.py)

REPO = Path(train.__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


class TinyDropout(TinyBN):
    """Dropout draws from torch's global generator: a resume must restore it too."""

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.fc(nn.functional.dropout(h, 0.3, self.training))


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6, 6, 3)).astype(np.uint8)
    t = rng.dirichlet(np.ones(3), n).astype(np.float32)
    return x, t / t.sum(1, keepdims=True)


def build(i=0):
    torch.manual_seed(100 + i)
    return TinyDropout()


def sampler_for(t):
    """Peterson's sampled hard labels: one-hot draws from the soft labels, per epoch."""
    def sampler(epoch, gen):
        u = torch.rand(len(t), 1, generator=gen).numpy()
        return np.eye(3, dtype=np.float32)[(u > np.cumsum(t, 1)).sum(1).clip(max=2)]
    return sampler


@pytest.fixture(autouse=True)
def no_halt():
    yield
    set_halt(None)


def until_done(run):
    """Call ``run()`` under a halt deadline already past (each call trains one more epoch and
    halts) until it returns; the number of halts and the result."""
    set_halt(0)
    halts = 0
    while True:
        try:
            return halts, run()
        except TrainingHalted:
            halts += 1
        assert halts < 50


def assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def without_seconds(history):
    return {k: v for k, v in history.items() if k != "seconds"}


FIT_CASES = {
    "mixup, laing augmentation, sgd": dict(
        config=dict(optimizer="sgd", lr=0.05, momentum=0.9, augment="laing", mix="mixup",
                    schedule="multistep", milestones=[2, 4], warmup_epochs=1),
        val=False, sampler=False),
    "adam, early stopping, sampled targets": dict(
        config=dict(optimizer="adam", lr=0.02, augment="crop_flip", early_stopping_patience=2,
                    keep_best=True, label_smoothing=0.05),
        val=True, sampler=True),
}


@pytest.mark.parametrize("case", FIT_CASES)
def test_fit_halted_every_epoch_ends_as_an_uninterrupted_run(case, tmp_path):
    spec = FIT_CASES[case]
    x, t = data()
    cfg = TrainConfig(arch="tiny", batch_size=8, epochs=6, **spec["config"])
    kw = dict(val=(x[:12], t[:12]) if spec["val"] else None,
              target_sampler=sampler_for(t) if spec["sampler"] else None, progress=False)
    alone = build()
    want = train.fit(alone, x, t, cfg, **kw)
    ckpt = Checkpoint(tmp_path / "c.pt", {"run": case}, every_seconds=3600)
    models = []

    def run():
        models.append(build())  # a fresh process would build the model again
        return train.fit(models[-1], x, t, cfg, checkpoint=ckpt, **kw)

    halts, got = until_done(run)
    assert halts == want.epochs_run - 1  # once after every epoch but the last
    assert without_seconds(got.history) == without_seconds(want.history)
    assert (got.epochs_run, got.best_epoch, got.stopped_early) == \
        (want.epochs_run, want.best_epoch, want.stopped_early)
    assert_same_state(models[-1], alone)
    assert got.seconds >= sum(got.history["seconds"][:-1])  # earlier calls' time counted


def test_fit_without_a_halt_deadline_saves_every_interval_and_resumes_after_a_crash(tmp_path):
    """A run killed mid-epoch (here: by its target sampler) resumes from its last checkpoint."""
    x, t = data()
    cfg = TrainConfig(arch="tiny", batch_size=8, epochs=5, optimizer="sgd", lr=0.05,
                      augment="laing")
    alone = build()
    want = train.fit(alone, x, t, cfg, target_sampler=sampler_for(t), progress=False)
    draw = sampler_for(t)

    def crashing(epoch, gen):
        if epoch == 3:
            raise KeyboardInterrupt
        return draw(epoch, gen)

    ckpt = Checkpoint(tmp_path / "c.pt", {"run": 1}, every_seconds=1e-9)
    with pytest.raises(KeyboardInterrupt):
        train.fit(build(), x, t, cfg, target_sampler=crashing, checkpoint=ckpt, progress=False)
    assert torch.load(ckpt.path, weights_only=True)["epoch"] == 3
    resumed = build()
    got = train.fit(resumed, x, t, cfg, target_sampler=draw, checkpoint=ckpt, progress=False)
    assert ckpt.resumed_epoch == 3
    assert without_seconds(got.history) == without_seconds(want.history)
    assert_same_state(resumed, alone)


def test_a_checkpoint_of_another_training_or_an_unreadable_one_starts_over(tmp_path):
    x, t = data()
    cfg = TrainConfig(arch="tiny", batch_size=8, epochs=3, optimizer="sgd", lr=0.05)
    alone = build()
    want = train.fit(alone, x, t, cfg, progress=False)
    other = Checkpoint(tmp_path / "c.pt", {"run": "other"}, every_seconds=1e-9)
    train.fit(build(), x, t, cfg.replace(lr=0.01), checkpoint=other, progress=False)
    assert other.path.exists()  # saved after epochs 1 and 2
    for corrupt in (False, True):
        if corrupt:
            other.path.write_bytes(b"not a checkpoint")
        ckpt = Checkpoint(other.path, {"run": "this"}, every_seconds=3600)
        model = build()
        with pytest.warns(UserWarning, match="could not read" if corrupt else "another training"):
            got = train.fit(model, x, t, cfg, checkpoint=ckpt, progress=False)
        assert ckpt.resumed_epoch == 0
        assert without_seconds(got.history) == without_seconds(want.history)
        assert_same_state(model, alone)


def test_checkpoints_turned_off_never_halt(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTLIB_CHECKPOINT_SECONDS", "0")
    x, t = data()
    ckpt = Checkpoint(tmp_path / "c.pt", {"run": 1})
    set_halt(0)
    got = train.fit(build(), x, t, TrainConfig(arch="tiny", batch_size=8, epochs=3),
                    checkpoint=ckpt, progress=False)
    assert got.epochs_run == 3 and not ckpt.path.exists()
    monkeypatch.setenv("SOFTLIB_CHECKPOINT_SECONDS", "soon")
    with pytest.raises(ValueError, match="SOFTLIB_CHECKPOINT_SECONDS"):
        Checkpoint(tmp_path / "c.pt", {"run": 1})


def test_fit_stacked_halted_every_epoch_ends_as_an_uninterrupted_group(tmp_path):
    """Per-model mixing, dropout, sampled targets, validation and early stopping: every part
    of a stacked group's state survives a halt."""
    x, t = data(n=64)
    idx = [np.arange(0, 32), np.arange(16, 48), np.arange(32, 64)]
    vals = [(x[:16], t[:16]), (x[16:32], t[16:32]), (x[40:56], t[40:56])]
    base = TrainConfig(arch="tiny", batch_size=8, epochs=6, optimizer="sgd", lr=0.05,
                       momentum=0.9, augment="laing", early_stopping_patience=2, keep_best=True)
    configs = [base.replace(seed=0, mix="mixup", mix_prob=0.5), base.replace(seed=1),
               base.replace(seed=2, mix="cutmix", label_smoothing=0.1)]
    kw = dict(configs=configs, vals=vals, progress=False,
              target_samplers=[sampler_for(t[i]) for i in idx])
    alone = [build(i) for i in range(3)]
    want = fit_stacked(alone, x, t, idx, base, **kw)
    ckpt = Checkpoint(tmp_path / "g.pt", {"group": 1}, every_seconds=3600)
    groups = []

    def run():
        groups.append([build(i) for i in range(3)])
        return fit_stacked(groups[-1], x, t, idx, base, checkpoint=ckpt, **kw)

    halts, got = until_done(run)
    assert halts == len(want.history["epoch"]) - 1
    assert without_seconds(got.history) == without_seconds(want.history)
    for name in ("diverged_epochs", "stopped_epochs", "best_epochs"):
        assert getattr(got, name) == getattr(want, name), name
    assert any(s is not None for s in want.stopped_epochs)  # early stopping was exercised
    for a, b in zip(got.models, want.models):
        assert_same_state(a, b)


def _job(i, x, t, **config):
    cfg = TrainConfig(arch="tiny", batch_size=8, epochs=4, optimizer="sgd", lr=0.05,
                      augment="crop_flip", seed=i, **config)
    rows = np.arange(8 * i, 8 * i + 32)
    return TrainJob(config=cfg, data_fingerprint=f"rows {i}", train_data=(x[rows], t[rows]),
                    build_model=lambda c: TinyBN(), eval_sets={"test": x[:16]})


@pytest.mark.parametrize("stacked", [False, True])
def test_a_cached_training_halts_keeps_its_checkpoint_and_resumes(stacked, tmp_path, capfd):
    """train_cached / a stacked group of train_cached_many: halted, it stores nothing but its
    checkpoint under <cache>/.checkpoints; the next call resumes and stores the entries an
    uninterrupted call stores; the checkpoint is then gone."""
    x, t = data(n=64)
    jobs = [_job(i, x, t) for i in range(3 if stacked else 1)]
    ref = ResultCache(tmp_path / "ref")
    want = train_cached_many(ref, "k", jobs, device="cpu", stack=stacked, progress=False)
    cache = ResultCache(tmp_path / "c")
    set_halt(0)
    with pytest.raises(TrainingHalted, match="after epoch 1/4"):
        train_cached_many(cache, "k", jobs, device="cpu", stack=stacked, progress=False)
    assert not list((tmp_path / "c").glob("k/*/meta.json"))
    assert cache.misses == 0  # nothing counted as trained (compute's "trained N")
    saved = list((tmp_path / "c" / ".checkpoints" / "k").glob("*.pt"))
    assert len(saved) == 1
    set_halt(None)
    capfd.readouterr()
    got = train_cached_many(cache, "k", jobs, device="cpu", stack=stacked, progress=False)
    assert "resuming" in capfd.readouterr().err
    assert not saved[0].exists()
    for a, b in zip(got, want):
        assert a.meta.get("stacked") == b.meta.get("stacked")
        assert a.meta["result"]["history"]["train_loss"] == b.meta["result"]["history"]["train_loss"]
        for name in a.state_dict:
            assert torch.equal(a.state_dict[name], b.state_dict[name]), name
        np.testing.assert_array_equal(a.arrays["logits_test"], b.arrays["logits_test"])


def test_compute_halts_and_the_next_call_resumes_the_section(tmp_path):
    """``compute --halt-seconds``: the section stops inside a training, keeping its checkpoint;
    the next compute resumes it and caches what an uninterrupted compute caches."""
    def compute(cache, *extra):
        env = {**os.environ, "SOFTLIB_CACHE": str(cache), "SOFTLIB_QUIET": "1",
               "OMP_NUM_THREADS": "1"}
        env.pop("SOFTLIB_DATA", None)
        return subprocess.run([sys.executable, "-m", "softlib.book", "compute", "--profile",
                               "smoke", "--sections", "generalisation", "-p", "epochs=2",
                               *extra], cwd=REPO, env=env, text=True, capture_output=True,
                              timeout=600)

    ref = compute(tmp_path / "ref")
    assert ref.returncode == 0, ref.stdout + ref.stderr
    halted = compute(tmp_path / "c", "--halt-seconds", "0")
    assert halted.returncode == 0, halted.stdout + halted.stderr
    assert "generalisation: STOPPED" in halted.stdout and "halted at 0 s" in halted.stdout
    assert list((tmp_path / "c" / ".checkpoints").glob("*/*.pt"))
    man = json.loads((tmp_path / "c" / "manifests" / "smoke.json").read_text())
    assert man["sections"]["generalisation"]["complete"] is False
    resumed = compute(tmp_path / "c")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stderr and "generalisation: complete" in resumed.stdout
    assert not list((tmp_path / "c" / ".checkpoints").glob("*/*.pt"))
    weights = sorted((tmp_path / "ref").glob("*/*/model.pt"))
    assert weights
    for w in weights:
        other = tmp_path / "c" / w.relative_to(tmp_path / "ref")
        a = torch.load(w, weights_only=True)
        b = torch.load(other, weights_only=True)
        for name in a:
            assert torch.equal(a[name], b[name]), (w, name)


def test_compute_checks_the_halt_against_the_budget(tmp_path, monkeypatch, capsys):
    from softlib.book import runner
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path))
    assert runner.main(["compute", "--profile", "smoke", "--budget-seconds", "60",
                        "--halt-seconds", "30"]) == 2
    assert "must not come before" in capsys.readouterr().err
    assert runner.main(["compute", "--profile", "smoke", "--backend", "ray",
                        "--halt-seconds", "30"]) == 2
    assert "local backend only" in capsys.readouterr().err


@pytest.mark.parametrize("stacked", [False, True])
def test_a_retried_remote_task_resumes_from_the_nodes_checkpoint(stacked, tmp_path, monkeypatch):
    """The bodies of compute --backend ray's tasks train in a throw-away cache, but keep their
    checkpoints in the node's cache ($SOFTLIB_CACHE/.checkpoints): a task retried on the node
    after its worker stopped resumes there."""
    from softlib.book.plan import train_group_entries, train_job_entry
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path))
    x, t = data(n=64)
    jobs = [_job(i, x, t) for i in range(3 if stacked else 1)]
    bare = [TrainJob(j.config, j.data_fingerprint, j.train_data, None, j.build_model)
            for j in jobs]

    def task():
        if stacked:
            return train_group_entries("k", bare, [["test"]] * 3, [[0]] * 3, True, x[:16])
        return [train_job_entry(bare[0], ["test"], x[:16])]

    want = task()
    set_halt(0)
    with pytest.raises(TrainingHalted):
        task()
    assert len(list((tmp_path / ".checkpoints").glob("*/*.pt"))) == 1
    set_halt(None)
    got = task()
    assert not list((tmp_path / ".checkpoints").glob("*/*.pt"))
    for a, b in zip(got, want):
        for name in a.state_dict:
            assert torch.equal(a.state_dict[name], b.state_dict[name]), name


def test_plan_lists_the_checkpointed_trainings(tmp_path, monkeypatch, capsys):
    """A training halted under ``compute`` shows in ``plan`` (read from its small note, not
    its weights) until it is resumed and stored."""
    from softlib.book import runner
    from softlib.checkpoint import in_progress
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path))
    x, t = data(n=64)
    jobs = [_job(i, x, t) for i in range(2)]
    set_halt(0)
    with pytest.raises(TrainingHalted):
        train_cached_many(ResultCache(tmp_path), "k", jobs, device="cpu", stack=True,
                          progress=False)
    set_halt(None)
    [info] = in_progress(tmp_path / ".checkpoints")
    assert (info["label"], info["epoch"], info["epochs"]) == ("2 stacked k models (tiny)", 1, 4)
    assert info["bytes"] == Path(info["file"]).stat().st_size
    assert runner.main(["plan", "--profile", "smoke", "--sections", "generalisation"]) == 0
    assert "in progress: 2 stacked k models (tiny), checkpointed after epoch 1/4" in \
        capsys.readouterr().out
    train_cached_many(ResultCache(tmp_path), "k", jobs, device="cpu", stack=True, progress=False)
    assert in_progress(tmp_path / ".checkpoints") == []
    assert not list((tmp_path / ".checkpoints").glob("*/*"))  # weights and note both gone


def test_the_halt_comes_before_an_epoch_that_would_end_past_it(monkeypatch):
    """halt_due: another epoch as long as the last one must end before the deadline."""
    import softlib.checkpoint as C
    now = [1000.0]
    monkeypatch.setattr(C.time, "monotonic", lambda: now[0])
    assert not C.halt_due(10.0)  # no deadline set
    set_halt(60)  # at 1060
    assert not C.halt_due(59.0)
    assert C.halt_due(60.0)
    now[0] = 1050.0
    assert not C.halt_due(9.0) and C.halt_due(10.0)
    set_halt(None)
    assert not C.halt_due(1e9)


def test_a_checkpoint_that_cannot_be_written_leaves_the_training_running(tmp_path):
    """No space or no permission: a warning, then the training goes on (and is not halted,
    since nothing would resume it) to the same result as without checkpoints."""
    x, t = data()
    cfg = TrainConfig(arch="tiny", batch_size=8, epochs=3, optimizer="sgd", lr=0.05)
    alone = build()
    want = train.fit(alone, x, t, cfg, progress=False)
    (tmp_path / "file").write_text("not a folder")
    ckpt = Checkpoint(tmp_path / "file" / "c.pt", {"run": 1}, every_seconds=3600)
    set_halt(0)
    model = build()
    with pytest.warns(UserWarning, match="could not write"):
        got = train.fit(model, x, t, cfg, checkpoint=ckpt, progress=False)
    assert got.epochs_run == 3 and not ckpt.enabled
    assert without_seconds(got.history) == without_seconds(want.history)
    assert_same_state(model, alone)


@pytest.mark.parametrize("address", [None, "ray://head:10001"])
def test_a_local_ray_clusters_workers_checkpoint_in_the_drivers_cache(address, tmp_path,
                                                                       monkeypatch):
    """connect() gives a local cluster's workers the driver's SOFTLIB_CACHE (their
    checkpoints' home) and every cluster the checkpoint interval; a remote node keeps its own
    cache."""
    from softlib.book import distributed

    class FakeRay:
        def is_initialized(self):
            return False

        def init(self, **kw):
            self.kw = kw

    fake = FakeRay()
    monkeypatch.setattr(distributed, "_import_ray", lambda: fake)
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path))
    monkeypatch.setenv("SOFTLIB_CHECKPOINT_SECONDS", "30")
    distributed.connect(address)
    env = fake.kw["runtime_env"]["env_vars"]
    assert env["SOFTLIB_CHECKPOINT_SECONDS"] == "30"
    assert env.get("SOFTLIB_CACHE") == (str(tmp_path) if address is None else None)
