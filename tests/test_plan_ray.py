"""The job plan (``python -m softlib.book plan``) and the Ray backend (``compute --backend ray``)
under the smoke profile: the plan lists exactly the entries the sections use, Ray computes the
same entries as the local backend, and a worker killed after its job is retried."""
import json
from pathlib import Path

import numpy as np
import pytest

from softlib.book import runner as book, bundle
from softlib.book import plan as PL
from softlib.cache import Entry, ResultCache

pytestmark = [pytest.mark.book, pytest.mark.usefixtures("one_thread")]

SECTIONS = ["generalisation", "alternatives", "adversarial", "calibration_ood"]


def _manifest_entries(root: Path) -> set[tuple[str, str]]:
    man = bundle.load_manifest("smoke", root)
    return {tuple(e) for s in SECTIONS for e in man["sections"][s]["entries"]
            if e[0] != "section_params"}


@pytest.fixture(scope="module")
def local_smoke(tmp_path_factory):
    """The smoke profile's training sections computed here (the local backend), on one thread
    as a Ray task with one CPU is (module fixtures are set up before ``one_thread``)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("local")
    mp.setenv("SOFTLIB_CACHE", str(cache))
    mp.setenv("SOFTLIB_QUIET", "1")
    mp.delenv("SOFTLIB_DATA", raising=False)
    try:
        plan_before = PL.build_plan("smoke", SECTIONS, ResultCache(cache))
        state = book.compute_sections("smoke", SECTIONS)
        assert all(state[s] == "complete" for s in SECTIONS), state
        yield {"cache": cache, "plan_before": plan_before}
    finally:
        mp.undo()
        torch.set_num_threads(threads)


def test_plan_lists_exactly_the_entries_the_sections_use(local_smoke, monkeypatch, capsys):
    root = local_smoke["cache"]
    used = _manifest_entries(root)
    before = local_smoke["plan_before"]
    # before anything ran: every job counted, the later stages provisional, none runnable yet
    assert len(before.jobs) == len(used)
    assert not any(j.provisional for j in before.stages[0])
    assert all(j.provisional for j in before.stages[-1])
    after = PL.build_plan("smoke", SECTIONS, ResultCache(root))
    assert {(j.kind, j.key) for j in after.jobs} == used
    assert not any(j.provisional for j in after.jobs)
    # the keys known before anything ran were already the right ones
    first = {(j.kind, j.key) for j in before.jobs if not j.provisional}
    assert first and first <= used
    # the command: counts per kind, all cached
    monkeypatch.setenv("SOFTLIB_CACHE", str(root))
    monkeypatch.delenv("SOFTLIB_DATA", raising=False)
    assert book.main(["plan", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert f"smoke: {len(used)} jobs, {len(used)} cached" in out
    for kind in {k for k, _ in used}:
        assert kind in out


def test_job_cost_uses_the_recorded_throughput():
    tp = PL.recorded_throughput("NVIDIA H200")
    rate = tp.train["resnet_basic_110"]
    job = PL.Job("s", "train", "k", {}, "x", arch="resnet_basic_110", train_images=rate * 100,
                 eval_images=tp.eval["resnet_basic_110"] * 2, attack_passes=rate * 3)
    seconds, measured = PL.job_seconds(job, tp)
    assert measured and seconds == pytest.approx(105)
    other = PL.Job("s", "train", "k", {}, "x", arch="no_such_net", train_images=1000)
    seconds, measured = PL.job_seconds(other, tp)
    assert not measured and seconds == pytest.approx(1000 / tp.train[tp.default_arch])
    # in a stacked group: its share of the group's recorded aggregate speed; never stacked when
    # the group is a single job or stacking is off, nor when the group is smaller than the one
    # measured (10 models)
    together = tp.stacked_rate("resnet_basic_110", 10)
    assert together > rate and tp.stacked_rate("resnet_basic_110", 9) is None
    grouped = PL.Job("s", "train", "k", {}, "x", arch="resnet_basic_110",
                     train_images=together * 7, group="g", stack="auto")
    assert PL.job_seconds(grouped, tp, group_size=10)[0] == pytest.approx(7)
    assert PL.job_seconds(grouped, tp, group_size=5)[0] == pytest.approx(together * 7 / rate)
    assert PL.job_seconds(grouped, tp, group_size=1)[0] == pytest.approx(together * 7 / rate)
    grouped.stack = False
    assert PL.job_seconds(grouped, tp, group_size=10)[0] == pytest.approx(together * 7 / rate)
    with pytest.raises(ValueError, match="no per-architecture throughput"):
        PL.recorded_throughput("a GPU nobody measured")


def test_progress_by_group_counts_each_groups_cached_jobs(local_smoke, tmp_path):
    """The rows a not-computed page shows: every job once, under its (section, stage, group),
    counted as done exactly where its entry is in the cache."""
    root = local_smoke["cache"]
    plan = PL.build_plan("smoke", SECTIONS, ResultCache(root))
    full = PL.progress_by_group(plan, ResultCache(root))
    assert sum(r["jobs"] for r in full) == len(plan.jobs)
    assert all(r["done"] == r["jobs"] and r["provisional"] == 0 for r in full)
    assert [r for r in full if r["section"] == "calibration_ood" and r["stage"] == "train"
            and str(r["group"]).startswith("laing/")]
    assert all(r["done"] == 0 for r in PL.progress_by_group(plan, ResultCache(tmp_path)))

    class OneGroupCached:  # the cache of a slice that stopped after one group
        def has(self, kind, config):
            return any(j.kind == kind and j.config == config for j in plan.jobs
                       if j.group == first["group"])

    first = next(r for r in full if r["group"] is not None)
    rows = PL.progress_by_group(plan, OneGroupCached())
    assert [r["done"] for r in rows] == [r["jobs"] if r is first else 0 for r in full]
    # with a throughput: the device time of what is not cached, as `plan` costs it in all
    tp = PL.recorded_throughput("NVIDIA H200")
    assert all(r["seconds_to_do"] == 0 for r in PL.progress_by_group(plan, ResultCache(root), tp))
    empty = ResultCache(tmp_path)
    todo = PL.progress_by_group(plan, empty, tp)
    assert all(r["seconds_to_do"] > 0 for r in todo)
    hours = PL.summarise(plan, empty, tp)["gpu_hours_to_do"].sum()
    assert sum(r["seconds_to_do"] for r in todo) == pytest.approx(hours * 3600)
    part = PL.progress_by_group(plan, OneGroupCached(), tp)
    assert [r["seconds_to_do"] == 0 for r in part] == [r is first for r in full]


def test_a_provisional_job_refuses_to_run(tmp_path):
    job = PL.Job("s", "attack", "k", {"a": 1}, "s/attack/x", run=lambda e: e,
                 needs=(("up", {"b": 2}),), provisional=True)
    with pytest.raises(ValueError, match="cannot run"):
        job.compute(ResultCache(tmp_path))


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    yield ray
    if ray.is_initialized():
        ray.shutdown()


def _same_entry(a: Path, b: Path) -> None:
    ma, mb = json.loads((a / "meta.json").read_text()), json.loads((b / "meta.json").read_text())
    assert ma["config"] == mb["config"]
    if (a / "arrays.npz").exists():
        za, zb = np.load(a / "arrays.npz"), np.load(b / "arrays.npz")
        assert sorted(za.files) == sorted(zb.files), a
        for k in za.files:
            np.testing.assert_array_equal(za[k], zb[k], err_msg=f"{a.parent.name}/{a.name} {k}")


def test_ray_backend_matches_local_and_retries_a_killed_worker(local_smoke, ray_cluster,
                                                                tmp_path, monkeypatch, capsys):
    from softlib.book import distributed
    cache = tmp_path / "cache"
    kills = tmp_path / "kills"
    monkeypatch.setenv("SOFTLIB_CACHE", str(cache))
    monkeypatch.delenv("SOFTLIB_QUIET", raising=False)  # the progress bar over jobs is shown
    monkeypatch.delenv("SOFTLIB_DATA", raising=False)
    monkeypatch.setenv(distributed.FAULT_ENV, str(kills))
    assert book.main(["compute", "--profile", "smoke", "--backend", "ray"]) == 0
    out = capsys.readouterr()
    used = _manifest_entries(local_smoke["cache"])
    # every job ran on Ray: the local pass afterwards trained nothing
    assert f"ray: {len(used)} job(s) computed on the cluster" in out.out
    for s in SECTIONS:
        assert f"{s}: complete" in out.out and "(trained 0," in out.out.split(f"{s}: complete")[1]
    assert _manifest_entries(cache) == used
    # one worker was killed after its job's work (the fault hook); Ray retried that job
    killed = (kills / "killed").read_text()
    assert killed in {key for _, key in used}
    assert "stage 1/3" in out.err and "stage 3/3" in out.err and "job" in out.err  # bars
    # the same results as the local backend, and no partial entry anywhere
    for kind, key in used:
        _same_entry(local_smoke["cache"] / kind / key, cache / kind / key)
    assert not [p for p in cache.glob("*/.*") if p.is_dir()]


def test_ray_stage_refuses_jobs_whose_upstream_is_missing(ray_cluster, tmp_path):
    from softlib.book import distributed
    job = PL.Job("s", "eval", "k", {"a": 1}, "s/eval/x", run=lambda e: Entry(),
                 needs=(("up", {"b": 2}),), provisional=True)
    distributed.connect(None, num_cpus=2)
    with pytest.raises(RuntimeError, match="cannot run"):
        distributed.run_stage([job], ResultCache(tmp_path))


@pytest.mark.parametrize("fields", [None, ("seed",)])
def test_every_group_the_plan_declares_trains_as_one_stack(tmp_path, monkeypatch, fields):
    """A group of jobs the plan (and the study) means to train together must share one stacking
    signature, or train_cached_many splits it and trains one at a time unnoticed: the runs of
    one Laing model type differ in their mixing (the conditions), mixing probability and
    smoothing epsilon (each follows its seed's split), which only per-model fields keep
    together (``fields=('seed',)``: the engine without them, which this check catches)."""
    from softlib import multimodel as MM
    if fields is not None:
        monkeypatch.setattr(MM, "PER_MODEL_FIELDS", fields)
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path))
    monkeypatch.delenv("SOFTLIB_DATA", raising=False)
    p = PL.build_plan("smoke", ["generalisation", "calibration_ood"], ResultCache(tmp_path),
                      overrides={"seeds": [0, 1, 2]})
    groups: dict[str, list] = {}
    for j in p.jobs:
        if j.group is not None and j.make is not None and not j.provisional:
            groups.setdefault(j.group, []).append(MM._stack_signature(j.make()))
    assert {g.split("/")[0] for g in groups} == {"generalisation", "laing"}
    assert min(len(s) for s in groups.values()) >= 2
    # section 2: one group per (arch, lr), the fold models of both conditions
    gen = {j.group: set() for j in p.jobs if j.section == "generalisation"}
    for j in p.jobs:
        if j.section == "generalisation":
            gen[j.group].add(j.label.split("/")[2])
    assert gen and all(c == {"hard", "soft"} for c in gen.values()), gen
    split = sorted(g for g, s in groups.items() if len(set(s)) > 1 or None in s)
    if fields is None:
        assert split == []
    else:
        assert {g for g in split if g.startswith("laing/")} == {
            f"laing/{m}" for m in ("basic", "dropout_aug", "dropout_noaug", "sngp", "duq")}, split


def test_every_fine_tuning_group_trains_as_one_stack(local_smoke, monkeypatch):
    """Section 3's fold groups (every method, 'sampled' included) share one stacking signature
    once the pretrained models they start from exist."""
    from softlib import multimodel as MM
    monkeypatch.setenv("SOFTLIB_CACHE", str(local_smoke["cache"]))
    monkeypatch.delenv("SOFTLIB_DATA", raising=False)
    p = PL.build_plan("smoke", ["alternatives"], ResultCache(local_smoke["cache"]))
    groups: dict[str, list] = {}
    for j in p.jobs:
        if j.group is not None and j.make is not None:
            assert not j.provisional
            groups.setdefault(j.group, []).append(MM._stack_signature(j.make()))
    assert any("sampled" in g for g in groups) and min(len(s) for s in groups.values()) >= 2
    assert sorted(g for g, s in groups.items() if len(set(s)) > 1 or None in s) == []


def test_plan_counts_the_prediction_bytes_each_entry_stores(local_smoke):
    """What ``plan`` says a results bundle will grow by is what the entries hold."""
    root = local_smoke["cache"]
    cache = ResultCache(root)
    plan = PL.build_plan("smoke", SECTIONS, cache)
    kinds = set()
    for job in plan.jobs:
        e = cache.load(job.kind, job.config)
        held = sum(a.nbytes for n, a in e.arrays.items() if "logits" in n)
        assert job.stored_bytes == held, job.label
        kinds.add(job.kind) if held else None
    assert {"peterson_scratch", "peterson_finetune", "peterson_attack", "laing_train"} <= kinds
    df = PL.summarise(plan, cache)
    assert (df["bundle_mb_to_do"] == 0).all()  # everything is cached
    assert PL.stored_prediction_bytes(100, 10, "float16") * 2 == PL.stored_prediction_bytes(100, 10)
