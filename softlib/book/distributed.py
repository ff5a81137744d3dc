"""A job plan (:mod:`softlib.book.plan`) run on a Ray cluster.

Each job not cached yet becomes a Ray task with declared resources (a fraction of a GPU for a
small network, a whole one for a large one; CPUs on a CPU-only cluster), retried when its
worker dies. The entries a job needs (a fine-tuned model for its attack) and the large arrays
many jobs share (the evaluation sets) go through Ray's object store once, as object refs; the
result comes back to the driver, which writes it into its own cache atomically, so no shared
file system is needed. Stages run in dependency order (a stage's jobs are built from the
study code once the stage before is cached). Ray does the distribution: this module only
declares tasks and collects their results.
"""
from __future__ import annotations

import os
import sys
import time
import weakref
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..cache import ResultCache, check_budget
from .plan import Job, build_plan, gpu_fraction

#: Test-only fault hook: with this set to a folder, the first job to finish on any worker kills
#: that worker before returning (the result never reaches the driver; its key is written to
#: ``<folder>/killed``); Ray retries the task.
FAULT_ENV = "SOFTLIB_TEST_KILL_WORKER_ONCE"
#: environment variables the workers get from the driver
_FORWARD = ("SOFTLIB_DATA", "SOFTLIB_QUIET", FAULT_ENV, "SOFTLIB_COMMIT",
            "SOFTLIB_CHECKPOINT_SECONDS")


class RayUnavailable(RuntimeError):
    """``--backend ray`` without Ray installed."""


def _import_ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RayUnavailable("--backend ray needs Ray: pip install 'softlib[cluster]' (or "
                             "'ray>=2.9') on the driver and every node") from exc
    return ray


def _fault_hook(key: str) -> None:
    folder = os.environ.get(FAULT_ENV)
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(Path(folder) / "killed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, key.encode())
    os.close(fd)
    os._exit(137)  # as if the node's OOM killer or a preemption took the worker


def _run_remote(run, key: str, *args):
    """The body of every task: compute the entry from the resolved needed entries and shared
    arrays (Ray hands object refs given as arguments over as their values)."""
    os.environ.setdefault("SOFTLIB_QUIET", "1")
    result = run(*args)
    _fault_hook(key)
    return result


def _units(todo: Sequence[Job], gpus: float) -> list[list[Job]]:
    """The tasks of a stage: a group of jobs the notebooks train together (stacked) is one task
    where it will be stacked (``stack`` True, or 'auto' on a cluster with GPUs), so it trains
    the same way and fills a GPU; every other job is a task of its own."""
    from ..multimodel import stacks_on
    units: list[list[Job]] = []
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in todo:
        stacked = job.group is not None and stacks_on(job.stack, cuda=gpus > 0)
        if not stacked:
            units.append([job])
            continue
        key = (job.kind, job.group)
        if key not in groups:
            groups[key] = []
            units.append(groups[key])
        groups[key].append(job)
    return units


@dataclass
class StageReport:
    stage: int
    jobs: int
    cached: int
    computed: int
    seconds: float
    by_kind: dict[str, int] = field(default_factory=dict)


def _resources(job: Job, cluster: Mapping[str, float], gpus_per_job: float | None,
               cpus_per_job: float) -> dict[str, float]:
    if cluster.get("GPU", 0) > 0:
        g = gpus_per_job if gpus_per_job is not None else gpu_fraction(job)
        return {"num_gpus": float(g), "num_cpus": float(min(cpus_per_job, 1))}
    return {"num_gpus": 0.0, "num_cpus": float(cpus_per_job)}


def connect(address: str | None = None, num_cpus: int | None = None,
            runtime_env: dict | None = None):
    """Connect to the Ray cluster at ``address`` ('auto': the one this node belongs to;
    ``ray://host:10001``: a remote one), or start a local one with ``num_cpus`` when None.
    The workers get the driver's ``SOFTLIB_*`` settings; on a remote cluster they also get this
    copy of ``softlib`` (``py_modules``), so every node runs the driver's code. A local
    cluster's workers also get ``SOFTLIB_CACHE``, for their epoch checkpoints (they write no
    entries: results come back to the driver); a remote node keeps its own."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    env = {k: os.environ[k] for k in _FORWARD if k in os.environ}
    rt: dict[str, Any] = {"env_vars": env}
    if address not in (None, "", "local"):
        rt["py_modules"] = [str(Path(__file__).resolve().parents[1])]
    else:  # a local cluster imports what the driver imports, and checkpoints in its cache
        for name in ("PYTHONPATH", "SOFTLIB_CACHE"):
            if os.environ.get(name):
                env[name] = os.environ[name]
    rt.update(runtime_env or {})
    kw: dict[str, Any] = {"runtime_env": rt, "log_to_driver": False,
                          "include_dashboard": False}
    if address in (None, "", "local"):
        kw["num_cpus"] = num_cpus or os.cpu_count()
    else:
        kw["address"] = address
    ray.init(**kw)
    return ray


def run_stage(jobs: Sequence[Job], cache: ResultCache, *, gpus_per_job: float | None = None,
              cpus_per_job: float = 1, retries: int = 3, max_in_flight: int | None = None,
              desc: str = "ray") -> StageReport:
    """Run the ``jobs`` that are not in ``cache`` as Ray tasks and write their results into it
    (as each arrives, so an interrupted stage resumes with what was done)."""
    ray = _import_ray()
    from ..progress import progress
    t0 = time.perf_counter()
    todo = [j for j in jobs if not cache.has(j.kind, j.config)]
    blocked = [j.label for j in todo if j.provisional or not j.runnable]
    if blocked:
        raise RuntimeError(f"{desc}: {len(blocked)} job(s) cannot run: the entries they are "
                           f"built from are not cached (e.g. {blocked[0]}); run the stages "
                           "before them first")
    cluster = ray.cluster_resources()
    slots = int(cluster.get("GPU", 0) / 0.25) or int(cluster.get("CPU", 1))
    limit = max_in_flight or max(2, 2 * slots)
    task = ray.remote(_run_remote)
    shared_refs: dict[int, tuple[Any, Any]] = {}

    def share(arr) -> Any:
        """One object ref per array object while it is alive: the evaluation sets many jobs
        share go to the object store once (a job's own copy is dropped with it, so its id,
        which Python reuses, never maps to another array's ref)."""
        hit = shared_refs.get(id(arr))
        if hit is not None and hit[0]() is arr:
            return hit[1]
        k = id(arr)
        ref = ray.put(arr)
        shared_refs[k] = (weakref.ref(arr, lambda _, k=k: shared_refs.pop(k, None)), ref)
        return ref

    def submit(unit: list[Job]):
        head = unit[0]
        if len(unit) == 1:
            run, shared = head.materialize()
            args = [ray.put(cache.load(kind, cfg)) for kind, cfg in head.needs]
            args += [share(arr) for _, arr in shared]
            opts = _resources(head, cluster, gpus_per_job, cpus_per_job)
        else:  # a stacked group: one task, a whole GPU
            from .plan import train_group_entries
            bare, names, layout, arrays = [], [], [], []
            for job in unit:
                b, sets = job.train_job()
                bare.append(b)
                names.append(list(sets))
                layout.append(list(range(len(arrays), len(arrays) + len(sets))))
                arrays += [share(a) for a in sets.values()]
            run = partial(train_group_entries, head.kind, bare, names, layout, head.stack)
            args = arrays
            opts = _resources(head, cluster, gpus_per_job, cpus_per_job)
            if cluster.get("GPU", 0) > 0:
                opts["num_gpus"] = 1.0
        label = head.label if len(unit) == 1 else f"{head.group} ({len(unit)} stacked)"
        return task.options(max_retries=retries, name=label[:120], **opts).remote(
            run, head.key, *args)

    pending: dict[Any, list[Job]] = {}
    by_kind: dict[str, int] = {}
    queue = _units(todo, cluster.get("GPU", 0))
    bar = progress(total=len(todo), desc=desc, unit="job", file=sys.stderr, leave=True)
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                check_budget(f"{desc}: {queue[0][0].label}")
                unit = queue.pop(0)
                pending[submit(unit)] = unit
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                unit = pending.pop(ref)
                result = ray.get(ref)  # a job that failed for good raises here, with its error
                entries = result if isinstance(result, list) else [result]
                for job, entry in zip(unit, entries):
                    cache.save(job.kind, job.config, entry)
                    cache.misses += 1
                    by_kind[job.kind] = by_kind.get(job.kind, 0) + 1
                bar.set_postfix_str(unit[0].label[-40:], refresh=False)
                bar.update(len(unit))
    finally:
        bar.close()
        for ref in pending:
            ray.cancel(ref, force=True)
    return StageReport(0, len(jobs), len(jobs) - len(todo), len(todo),
                       time.perf_counter() - t0, by_kind)


def compute_on_ray(profile: str, sections: Sequence[str] | None = None, *,
                   cache: ResultCache | None = None, seed: int = 0,
                   overrides: Mapping[str, Any] | None = None, data_root: str = "",
                   address: str | None = None, num_cpus: int | None = None,
                   gpus_per_job: float | None = None, cpus_per_job: float = 1,
                   retries: int = 3, runtime_env: dict | None = None) -> list[StageReport]:
    """Every planned job of ``sections`` under ``profile`` that is not cached, on Ray, stage
    by stage; the results land in ``cache`` (default: this machine's)."""
    from .plan import _Inputs
    cache = cache if cache is not None else ResultCache()
    connect(address, num_cpus, runtime_env)
    ray = _import_ray()
    res = ray.cluster_resources()
    print(f"ray: {int(res.get('CPU', 0))} CPUs, {res.get('GPU', 0):g} GPUs on "
          f"{len(ray.nodes())} node(s)", flush=True)
    inputs = _Inputs(for_running=True)
    reports = []
    i = 0
    while True:
        plan = build_plan(profile, sections, cache, seed, overrides, data_root, inputs=inputs)
        if i >= len(plan.stages):
            break
        stage = plan.stages[i]
        kinds = sorted({j.stage for j in stage})
        r = run_stage(stage, cache, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job,
                      retries=retries, desc=f"stage {i + 1}/{len(plan.stages)} "
                                            f"({', '.join(kinds)})")
        r.stage = i + 1
        reports.append(r)
        print(f"ray: stage {i + 1}/{len(plan.stages)} ({', '.join(kinds)}): {r.jobs} jobs, "
              f"{r.cached} cached, {r.computed} computed in {r.seconds:.0f} s", flush=True)
        i += 1
    return reports
