"""The benchmark's quick mode runs end to end on tiny sizes (checks it runs; no timing asserts)."""
import json
import math

import numpy as np
import torch

from softlib import bench
from tiny_models import TinyBN  # tests/tiny_models.py


def Tiny():
    return TinyBN(num_classes=10)  # CIFAR-10's classes


def test_quick_run_produces_every_row(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTLIB_DATA", str(tmp_path / "nodata"))
    res = bench.run(quick=True, device="cpu", arch="tiny", model_factory=Tiny, n_train=32,
                    n_eval=32, batch_size=16, k_models=2, pgd_steps=1, progress=False)
    names = [r["measurement"] for r in res["rows"]]
    for expected in ("engine epoch", "bare fwd+bwd+step", "engine / bare",
                     "DataLoader + PIL transforms", "engine speed-up over DataLoader",
                     "DataLoader, 1 workers", "engine speed-up over DataLoader, 1 workers",
                     "2 models at once (vmap)", "vmap speed-up", "2 models at once / one model",
                     "2 models at once / DataLoader, 1 workers", "evaluation", "FGSM", "PGD step"):
        assert expected in names
    for r in res["rows"]:
        assert r["value"] > 0 and math.isfinite(r["value"]), r
    assert "random uint8" in res["images"]
    table = bench.format_table(res)
    assert "engine / bare" in table and res["machine"]["cpu"] in table
    json.dumps(res)


def test_cli_rejects_cuda_without_gpu(capsys):
    if torch.cuda.is_available():
        return
    try:
        bench.main(["--device", "cuda", "--quick"])
    except SystemExit as e:
        assert e.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


def _stacked_profile(tmp_path, monkeypatch, name="stacked_profile"):
    """benchmarks/<name>.py as a module, reading no data (random images)."""
    import importlib.util
    from pathlib import Path
    monkeypatch.setenv("SOFTLIB_DATA", str(tmp_path / "nodata"))
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stacked_profile_splits_the_fold_grid_time(tmp_path, monkeypatch):
    """benchmarks/stacked_profile.py (run on a lent GPU) runs end to end on a CPU at tiny size."""
    mod = _stacked_profile(tmp_path, monkeypatch)
    out = tmp_path / "p.json"
    assert mod.main(["--device", "cpu", "--k", "2", "--batch", "8", "--n", "16", "--repeats", "1",
                     "--arch", "resnet_20", "--top", "5", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    names = [r["measurement"] for r in res["rows"]]
    assert names[0] == "2 models at once: fit_stacked (engine)" and len(names) == 6
    assert all(r["value"] > 0 and math.isfinite(r["value"]) for r in res["rows"])
    assert len(res["top_ops"]) == 5 and 0 < sum(o["share"] for o in res["top_ops"]) <= 1 + 1e-9


def test_stacked_profile_keeps_its_timings_when_cut_during_the_profiler(tmp_path, monkeypatch):
    """A lent machine's time limit often falls in the slow profiler run: the timings are saved
    before it."""
    import pytest
    import torch.profiler
    mod = _stacked_profile(tmp_path, monkeypatch)

    def cut(*a, **k):
        raise TimeoutError("the command's time ran out")
    monkeypatch.setattr(torch.profiler, "profile", cut)
    out = tmp_path / "p.json"
    with pytest.raises(TimeoutError):
        mod.main(["--device", "cpu", "--k", "2", "--batch", "8", "--n", "16", "--repeats", "1",
                  "--json", str(out)])
    res = json.loads(out.read_text())
    assert len(res["rows"]) == 6 and res["top_ops"] == []


def test_graph_reuse_times_each_call_and_saves_as_it_goes(tmp_path, monkeypatch):
    """benchmarks/graph_reuse.py (run on a lent GPU) times every fit_stacked call, eager and
    compiled, and rewrites its JSON after each, so a run cut by a time limit keeps the calls
    done. The compiler is replaced by the identity here (compiling takes a minute on a CPU)."""
    import torch
    mod = _stacked_profile(tmp_path, monkeypatch, "graph_reuse")
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(kw) or fn)
    saved = []
    real_save = mod.save_json
    monkeypatch.setattr(mod, "save_json", lambda path, obj: (saved.append(len(obj["rows"])),
                                                             real_save(path, obj)))
    out = tmp_path / "g.json"
    assert mod.main(["--device", "cpu", "--k", "2", "--batch", "8", "--n", "20", "--calls", "1",
                     "--epochs", "1", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [(r["compile"], r["epochs"], r["warmup"]) for r in res["rows"]] == [
        (False, 1, True), (False, 1, False), (False, 2, False),
        ("reduce-overhead", 1, True), ("reduce-overhead", 1, False), ("reduce-overhead", 2, False)]
    assert saved == [1, 2, 3, 4, 5, 6]
    assert all(r["seconds"] > 0 and math.isclose(r["img_per_s"], 2 * 20 * r["epochs"] / r["seconds"])
               for r in res["rows"])
    assert compiled and all(kw.get("mode") == "reduce-overhead" for kw in compiled)
    assert set(res["steady_state"]) == {"False", "reduce-overhead"}


def test_graph_reuse_splits_setup_from_the_steps_rate(tmp_path, monkeypatch):
    """Calls of 1 and 3 epochs that take 1.5 s and 2.5 s: 0.5 s per epoch, 1 s of setup."""
    mod = _stacked_profile(tmp_path, monkeypatch, "graph_reuse")
    rows = [{"compile": False, "warmup": True, "epochs": 1, "seconds": 30.0},
            {"compile": False, "warmup": False, "epochs": 1, "seconds": 1.4},
            {"compile": False, "warmup": False, "epochs": 1, "seconds": 1.5},
            {"compile": False, "warmup": False, "epochs": 1, "seconds": 1.6},
            {"compile": False, "warmup": False, "epochs": 3, "seconds": 2.5},
            {"compile": "reduce-overhead", "warmup": False, "epochs": 1, "seconds": 9.0}]
    ss = mod.steady_state(rows, k=10, n=5000)
    assert set(ss) == {"False"}  # one epoch count only: no split
    assert math.isclose(ss["False"]["img_per_s"], 10 * 5000 / 0.5)
    assert math.isclose(ss["False"]["setup_seconds"], 1.0)


def test_cuda_checks_save_after_every_check(tmp_path, monkeypatch):
    """benchmarks/cuda_checks.py rewrites its JSON after each check (a lent machine's time
    limit cut a run during its last check and lost the three before), and a failed check
    makes the exit status 1. The checks are replaced by instant fakes here."""
    mod = _stacked_profile(tmp_path, monkeypatch, "cuda_checks")
    for name, ok in (("exact_in_float64", True), ("bf16_trains_like_alone", False),
                     ("graphs_equal_eager_in_float64", True),
                     ("hook_models_exact_in_float64", True),
                     ("hook_models_bf16_train_like_alone", True),
                     ("resume_after_halt_exact_in_float64", True)):
        monkeypatch.setattr(mod, name, lambda dev, ok=ok, **kw: {"ok": ok, **kw})
    saved = []
    real_save = mod.save_json
    monkeypatch.setattr(mod, "save_json", lambda path, obj: (saved.append(list(obj["checks"])),
                                                             real_save(path, obj)))
    out = tmp_path / "c.json"
    assert mod.main(["--device", "cpu", "--json", str(out)]) == 1
    assert [len(s) for s in saved] == [1, 2, 3, 4, 5, 6, 7]
    rec = json.loads(out.read_text())
    assert rec["engine"] == mod.engine_fingerprint() and rec["n"] is None
    checks = rec["checks"]  # the JSON's keys are sorted; the run order is mod.CHECKS'
    assert [checks[name]["ok"] for name in mod.CHECKS] == [True, False, True, False, True, True,
                                                           True]
    assert checks["fit_stacked_cuda_graphs_bf16_trains_like_fit"]["compile"] == "reduce-overhead"
    # --checks eager: the eager path the gpu slices run, without the CUDA-graph checks
    saved.clear()
    assert mod.main(["--device", "cpu", "--checks", "eager", "--json", str(out)]) == 1
    rec = json.loads(out.read_text())
    assert rec["check_set"] == "eager" and set(rec["checks"]) == set(mod.CHECK_SETS["eager"])
    assert not any("graphs" in name for name in rec["checks"]) and len(saved) == 5


def _small_hook_model_checks(tmp_path, monkeypatch, n_images: int):
    """cuda_checks with ``n_images`` random images and small SNGP / DUQ models."""
    mod = _stacked_profile(tmp_path, monkeypatch, "cuda_checks")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, len(x))]
    monkeypatch.setattr(mod, "_data", lambda n: (x[:n], t[:n], "random"))
    real_build = mod.build
    small = {"resnet20_sngp": dict(depth=8, width=4, num_random_features=32),
             "resnet20_duq": dict(depth=8, width=4, centroid_size=8)}
    monkeypatch.setattr(mod, "build", lambda arch: real_build(arch, **small[arch]))
    return mod


def test_cuda_check_of_the_hook_models_runs_and_can_fail(tmp_path, monkeypatch):
    """The SNGP / DUQ check (small models here) passes on the CPU, and fails when the stacked
    models train differently from those alone (here: SNGP's per-epoch reset lost)."""
    mod = _small_hook_model_checks(tmp_path, monkeypatch, 64 + 128)
    r = mod.hook_models_exact_in_float64("cpu", k=2, n=64, epochs=2)
    assert r["ok"], r
    assert r["resnet20_duq"]["max_abs_diff"] < 1e-6 and r["resnet20_sngp"]["max_abs_diff"] < 1e-9
    import softlib.multimodel as MM
    monkeypatch.setattr(MM.StackedModels, "epoch_start", lambda self, epoch: None)
    bad = mod.hook_models_exact_in_float64("cpu", k=2, n=64, epochs=2)
    assert not bad["ok"] and bad["resnet20_sngp"]["max_abs_diff"] > 1e-3


def test_cuda_check_of_the_hook_models_under_bf16_runs_and_can_fail(tmp_path, monkeypatch):
    """SNGP and DUQ stacked under bf16 autocast (the CPU's here, small models), with Laing's
    augmentation and per-model mixing: the check passes, and fails when a stacked model's train
    loss is not its own trained alone (here: shifted by 10%) or is not finite."""
    mod = _small_hook_model_checks(tmp_path, monkeypatch, 64 + 500)
    r = mod.hook_models_bf16_train_like_alone("cpu", k=3, n=64, epochs=2)
    assert r["ok"], r
    assert all(r[a]["max_relative_difference"] < 0.01 for a in ("resnet20_sngp", "resnet20_duq"))
    real_fit_stacked = mod.fit_stacked

    def shifted(scale):
        def fit_stacked(*a, **kw):
            res = real_fit_stacked(*a, **kw)
            res.history["train_loss"][-1] = [v * scale for v in res.history["train_loss"][-1]]
            return res
        return fit_stacked

    for scale in (1.1, float("nan")):
        monkeypatch.setattr(mod, "fit_stacked", shifted(scale))
        assert not mod.hook_models_bf16_train_like_alone("cpu", k=3, n=64, epochs=1)["ok"]


def _small_resnet_checks(tmp_path, monkeypatch, name_of):
    """cuda_checks with 64 random images and depth-8, width-4 versions of the checks' models
    (``name_of(arch)``: the architecture built instead of ``arch``)."""
    mod = _stacked_profile(tmp_path, monkeypatch, "cuda_checks")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, len(x))]
    monkeypatch.setattr(mod, "_data", lambda n: (x[:n], t[:n], "random"))
    real_build = mod.build

    monkeypatch.setattr(mod, "build", lambda arch: real_build(name_of(arch), depth=8, width=4))
    return mod


def test_cuda_check_of_per_model_mixing_runs_and_can_fail(tmp_path, monkeypatch):
    """The float64 exactness check (small ResNets here), with Laing's augmentation and each
    model its own mixing, passes on the CPU, and fails when the stacked models mix as one (here:
    every model given model 0's mixing)."""
    mod = _small_resnet_checks(tmp_path, monkeypatch, lambda arch: "resnet")
    r = mod.exact_in_float64("cpu", k=3, n=64, epochs=2)
    assert r["ok"] and r["max_abs_diff"] < 1e-12, r
    import softlib.multimodel as MM
    real_mix = MM.maybe_mix
    monkeypatch.setattr(MM, "maybe_mix", lambda x, t, kind, *a: real_mix(x, t, "none", *a))
    bad = mod.exact_in_float64("cpu", k=3, n=64, epochs=2)
    assert not bad["ok"] and bad["max_abs_diff"] > 1e-6


def test_cuda_check_of_resuming_a_halted_group_runs_and_can_fail(tmp_path, monkeypatch):
    """A stacked MC-dropout group halted after every epoch and resumed (small ResNets here)
    ends as the uninterrupted group on the CPU; the check fails when the resume loses the
    global generator's state (dropout's draws)."""
    mod = _small_resnet_checks(tmp_path, monkeypatch, lambda arch: arch)
    r = mod.resume_after_halt_exact_in_float64("cpu", k=2, n=64, epochs=3)
    assert r["ok"] and r["halts"] == 2 and r["max_abs_diff"] == 0.0, r
    import softlib.multimodel as MM
    monkeypatch.setattr(MM, "set_rng_state", lambda saved, device: None)
    bad = mod.resume_after_halt_exact_in_float64("cpu", k=2, n=64, epochs=3)
    assert not bad["ok"] and bad["max_abs_diff"] > 1e-6


def test_engine_fingerprint_follows_the_engine_files(tmp_path, monkeypatch):
    """The fingerprint a recorded pass is matched by changes with the training code and the
    checks, and not with the rest of the repository."""
    import shutil
    mod = _stacked_profile(tmp_path, monkeypatch, "cuda_checks")
    root = tmp_path / "repo"
    for pattern in mod.ENGINE_FILES + ("softlib/book/runner.py",):
        for path in mod.ROOT.glob(pattern):
            dest = root / path.relative_to(mod.ROOT)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
    assert mod.engine_fingerprint(root) == mod.engine_fingerprint(mod.ROOT)
    (root / "softlib/book/runner.py").write_text("# not the engine\n")
    first = mod.engine_fingerprint(root)
    assert first == mod.engine_fingerprint(mod.ROOT)
    for rel in ("softlib/multimodel.py", "softlib/models/resnet.py", "benchmarks/cuda_checks.py"):
        path = root / rel
        old = path.read_bytes()
        path.write_bytes(old + b"\n# changed\n")
        assert mod.engine_fingerprint(root) != first, rel
        path.write_bytes(old)
    assert mod.engine_fingerprint(root) == first


def test_passed_before_needs_every_check_passing_on_a_gpu_with_this_engine(tmp_path, monkeypatch):
    """device_run.sh skips the GPU checks only where a record shows all of them passing on a
    GPU, at the default sizes, with the same engine fingerprint and torch."""
    mod = _stacked_profile(tmp_path, monkeypatch, "cuda_checks")
    good = {"torch": "2.11.0", "gpu": "NVIDIA H100", "engine": "abc", "n": None,
            "checks": {name: {"ok": True} for name in mod.CHECKS}}
    rec = tmp_path / "records"
    rec.mkdir()
    (rec / "broken.json").write_text("{not json")
    assert mod.passed_before(rec, "abc", "2.11.0") is None
    variants = {"engine": dict(good, engine="other"), "torch": dict(good, torch="2.12.0"),
                "cpu": dict(good, gpu=None), "small": dict(good, n=256),
                "failed": dict(good, checks={**good["checks"], "cuda_graphs_equal_eager_float64":
                                             {"ok": False}}),
                "missing": dict(good, checks={k: v for k, v in list(good["checks"].items())[:3]})}
    for name, doc in variants.items():
        (rec / f"{name}.json").write_text(json.dumps(doc))
    assert mod.passed_before(rec, "abc", "2.11.0") is None
    (rec / "z-nested.json").write_text(json.dumps({"rows": [], "cuda_checks": good}))
    assert mod.passed_before(rec, "abc", "2.11.0").name == "z-nested.json"
    monkeypatch.setattr(mod, "engine_fingerprint", lambda root=None: "abc")
    monkeypatch.setattr(mod.torch, "__version__", "2.11.0")
    assert mod.main(["--passed-before", str(rec)]) == 0
    assert mod.main(["--passed-before", str(tmp_path / "nothing")]) == 1
    # a record of the eager checks vouches for the eager set, not for all; a full one for both
    eager = tmp_path / "eager"
    eager.mkdir()
    (eager / "e.json").write_text(json.dumps(dict(good, checks={
        name: {"ok": True} for name in mod.CHECK_SETS["eager"]})))
    assert mod.main(["--passed-before", str(eager), "--checks", "eager"]) == 0
    assert mod.main(["--passed-before", str(eager)]) == 1
    assert mod.main(["--passed-before", str(rec), "--checks", "eager"]) == 0
    # the record whose only failure is a graph check vouches for the eager path
    assert mod.passed_before(rec, "abc", "2.11.0", mod.CHECK_SETS["eager"]).name == "failed.json"
