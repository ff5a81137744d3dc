"""The job plan of a profile: every cache entry its sections compute, before anything runs.

A *job* is one cache entry (a trained model, an attack, an evaluation) with its cache key, the
entries it needs (``needs``: a fine-tuned model for its attack, a trained run for its
evaluation), its estimated cost and a picklable ``run`` that computes it from those entries.
Jobs come in stages (pretraining -> fine-tuning -> attacks; Laing's training -> evaluation): a
stage's jobs are built from the study code (:mod:`softlib.studies`) with its upstream stages
read from the cache, so their keys are exactly the ones the notebooks later look up. When an
upstream stage is not cached yet its jobs are still counted and costed, but marked
*provisional* (a key may change: e.g. the distillation targets are the pretrained ensemble's).

``python -m softlib.book plan`` prints the plan; ``compute --backend ray`` runs it
(:mod:`softlib.book.distributed`).
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from . import profiles
from .bundle import short_device_name
from ..cache import Entry, ResultCache, config_key

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@dataclass
class Job:
    """One cache entry to compute: ``run(*needed entries, *shared arrays) -> Entry``, where
    ``run`` and ``shared`` are given, or made by ``make()`` (a training job: its training
    images are copied only when it is about to run)."""
    section: str
    stage: str
    kind: str
    config: dict[str, Any]
    label: str
    run: Callable[..., Entry] | None = None
    needs: tuple[tuple[str, dict[str, Any]], ...] = ()
    shared: tuple[tuple[str, np.ndarray], ...] = ()   # large arrays many jobs share
    make: Callable[[], Any] | None = None              # -> softlib.train.TrainJob
    arch: str = ""
    train_images: float = 0.0      # images trained (epochs x training-set size)
    eval_images: float = 0.0       # images predicted
    attack_passes: float = 0.0     # forward + backward passes of attacks
    stored_bytes: float = 0.0      # the predictions its entry stores (what a bundle carries)
    provisional: bool = False
    runnable: bool = True
    #: jobs with the same ``group`` are the ones the notebooks train together through
    #: :func:`softlib.multimodel.train_cached_many` with ``stack`` (the fold models of one
    #: configuration); a cluster runs such a group as one task, so it trains them the same way
    group: str | None = None
    stack: Any = False

    @property
    def key(self) -> str:
        return config_key(self.kind, self.config)

    def _check_runnable(self) -> None:
        if self.provisional or not self.runnable or (self.run is None and self.make is None):
            raise ValueError(f"job {self.label} cannot run: the entries or data it is built "
                             "from are not there yet")

    def train_job(self):
        """The :class:`softlib.train.TrainJob` without its eval sets, and the eval sets."""
        from ..train import TrainJob
        self._check_runnable()
        tj = self.make()
        bare = TrainJob(tj.config, tj.data_fingerprint, tj.train_data, None, tj.build_model,
                        tj.val, tj.target_sampler, tj.val_optional)
        return bare, dict(tj.eval_sets or {})

    def materialize(self) -> tuple[Callable[..., Entry], tuple[tuple[str, np.ndarray], ...]]:
        """``(run, shared)``, ready to call or to send to a worker."""
        self._check_runnable()
        if self.make is None:
            return self.run, self.shared
        bare, sets = self.train_job()
        return partial(train_job_entry, bare, list(sets)), tuple(sets.items())

    def compute(self, cache: ResultCache) -> Entry:
        """Run the job here, its needed entries read from ``cache``."""
        run, shared = self.materialize()
        return run(*[cache.load(k, c) for k, c in self.needs], *[a for _, a in shared])


def train_job_entry(job, names: Sequence[str], *arrays: np.ndarray, device: Any = None) -> Entry:
    """What :func:`softlib.train.train_cached` stores for ``job`` (its eval sets ``names`` given
    as ``arrays``), computed without a cache: the body of a remote training task (its epoch
    checkpoints in this node's cache, so a retried task resumes on the same node)."""
    import tempfile

    from ..checkpoint import checkpoints_dir
    from ..paths import cache_root
    from ..train import TrainJob, train_cached
    full = TrainJob(job.config, job.data_fingerprint, job.train_data,
                    dict(zip(names, arrays)), job.build_model, job.val, job.target_sampler,
                    job.val_optional)
    with tempfile.TemporaryDirectory(prefix="softlib-job-") as d:
        return train_cached(ResultCache(d), "job", full.config, full.data_fingerprint,
                            full.build_model, full.train_data, full.eval_sets, val=full.val,
                            target_sampler=full.target_sampler, device=device, progress=False,
                            checkpoints=checkpoints_dir(cache_root()))


def train_group_entries(kind: str, jobs: Sequence[Any], names: Sequence[Sequence[str]],
                        layout: Sequence[Sequence[int]], stack: Any, *arrays: np.ndarray,
                        device: Any = None) -> list[Entry]:
    """What :func:`softlib.multimodel.train_cached_many` stores for ``jobs`` (job ``i``'s eval
    sets ``names[i]`` are ``arrays[layout[i][j]]``), computed without a cache: the body of a
    remote task that trains a group of same-configuration models together (checkpointed as
    :func:`train_job_entry`)."""
    import tempfile

    from ..checkpoint import checkpoints_dir
    from ..multimodel import train_cached_many
    from ..paths import cache_root
    from ..train import TrainJob
    full = [TrainJob(j.config, j.data_fingerprint, j.train_data,
                     {n: arrays[i] for n, i in zip(ns, idx)}, j.build_model, j.val,
                     j.target_sampler, j.val_optional)
            for j, ns, idx in zip(jobs, names, layout)]
    with tempfile.TemporaryDirectory(prefix="softlib-group-") as d:
        return train_cached_many(ResultCache(d), kind, full, device, progress=False, stack=stack,
                                 checkpoints=checkpoints_dir(cache_root()))


def from_train_job(section: str, stage: str, kind: str, make: Callable[[], Any], label: str,
                   provisional: bool = False, group: str | None = None,
                   stack: Any = False, made: Any = None) -> Job:
    """A :class:`Job` for the :class:`softlib.train.TrainJob` that ``make()`` returns (made once
    here for its key and size, again when it runs; its eval sets travel as shared arrays, so
    jobs that predict the same sets send them once). ``made``: that TrainJob, where the caller
    already made it."""
    tj = made if made is not None else make()
    c = tj.config
    n_train = len(tj.train_data[0])
    n_val = len(tj.val[0]) if tj.val is not None else 0
    n_eval = sum(len(v) for v in (tj.eval_sets or {}).values())
    return Job(section, stage, kind, tj.key(), label, make=make,
               arch=_arch_id(c.arch, c.arch_kwargs), train_images=float(c.epochs) * n_train,
               eval_images=float(n_eval + c.epochs * n_val), provisional=provisional,
               group=group, stack=stack,
               stored_bytes=stored_prediction_bytes(n_eval, _n_classes(tj.train_data[1]),
                                                    c.logits_precision))


def stored_prediction_bytes(n_images: float, n_classes: int, precision: str = "float32") -> float:
    """Bytes of the logits an entry keeps for ``n_images`` (float16: 2 a value, float32: 4),
    before compression: a results bundle carries them (weights aside)."""
    return float(n_images) * int(n_classes) * np.dtype(precision).itemsize


def _n_classes(targets: Any) -> int:
    t = np.asarray(targets)
    return int(t.shape[1]) if t.ndim == 2 else int(t.max()) + 1 if t.size else 0


def _arch_id(name: str, kwargs: Mapping[str, Any] | None) -> str:
    kw = {k: v for k, v in dict(kwargs or {}).items() if k in ("width", "depth")}
    return name + ("" if not kw else "(" + ",".join(f"{k}={v}" for k, v in sorted(kw.items()))
                   + ")")


# --------------------------------------------------------------------------------------------
# What each section's stages are
# --------------------------------------------------------------------------------------------

class _Inputs:
    """The data a section's jobs are built from, loaded once per plan. ``for_running``: the
    jobs will run, so data generated on first use (corrupted images) is generated now; else
    such jobs are listed and costed but cannot run (``run`` None)."""

    def __init__(self, for_running: bool = True):
        self._memo: dict[str, Any] = {}
        self.for_running = for_running

    def get(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._memo:
            self._memo[name] = make()
        return self._memo[name]


def _pretrained(cache: ResultCache, study, params, cifar_train, seed: int, extra,
                jobs: list[Job] | None = None, section: str = "alternatives"):
    """Section 3's :class:`~softlib.studies.peterson.Pretrained` read from the cache; where a
    pretrained model is not cached, a stand-in (uniform predictions, no weights) and False."""
    from ..studies import peterson as P
    entries, cfgs, ids, complete = {}, {}, {}, True
    for arch in P.parse_archs(params["archs"]):
        make = partial(P.pretrain_job, arch, params, cifar_train, study, seed, extra.images)
        tj = make()
        if jobs is not None:
            jobs.append(from_train_job(section, "pretrain", "peterson_pretrain", make,
                                       f"{section}/pretrain/{arch.label}", made=tj))
        if cache.has("peterson_pretrain", tj.key()):
            entries[arch.label] = cache.load("peterson_pretrain", tj.key())
        else:
            complete = False
            entries[arch.label] = Entry(arrays={"logits_cifar10h": np.zeros(
                (len(study.labels), 10), np.float32)})
        cfgs[arch.label] = tj.config
        ids[arch.label] = config_key("peterson_pretrain", tj.key())
    return P.Pretrained(entries, cfgs, ids), complete


def plan_generalisation(params, cache, seed, profile, inputs: _Inputs) -> list[list[Job]]:
    from . import sections as S
    from ..studies import peterson as P
    ins = inputs.get("generalisation", lambda: S.generalisation_inputs(
        params, seed, generate=inputs.for_running))
    missing = sum(1 for k in ins.corr.unavailable if k.startswith("c10c_"))
    n_missing = missing * int(params["corruption_subset"])  # not generated yet: costed only
    jobs = []
    stack = params.get("stack_models", "auto")
    for group in P.generalisation_jobs(ins.study, params, ins.evalsets, seed):
        for key, make in group:
            job = from_train_job("generalisation", "train", "peterson_scratch", make,
                                 "generalisation/" + "/".join(map(str, key)),
                                 group=f"generalisation/{key[0]}/{key[2]}",  # (arch, lr)
                                 stack=stack)
            if n_missing and not inputs.for_running:
                job.eval_images += n_missing
                job.stored_bytes += stored_prediction_bytes(
                    n_missing, 10, params.get("logits_precision", "float32"))
                job.runnable = False
            jobs.append(job)
    return [jobs]


def _alternatives_stages(section: str, params, cache, seed, inputs: _Inputs,
                         methods=None) -> tuple[list[Job], list[Job], Any, bool]:
    from . import sections as S
    from ..studies import peterson as P
    ins = inputs.get("alternatives", S.alternatives_inputs)
    pre_jobs: list[Job] = []
    pre, complete = _pretrained(cache, ins.study, params, ins.cifar_train, seed, ins.c101,
                                pre_jobs, section)
    ft_jobs = [from_train_job(section, "finetune", "peterson_finetune", make,
                              f"{section}/finetune/" + "/".join(map(str, key)),
                              provisional=not complete,
                              group="finetune/" + "/".join(map(str, key[:-1])),
                              stack=params.get("stack_models", "auto"))
               for group in P.alternatives_jobs(ins.study, pre, params, seed, methods, ins.c101)
               for key, make in group]
    return pre_jobs, ft_jobs, pre, complete


def plan_alternatives(params, cache, seed, profile, inputs: _Inputs) -> list[list[Job]]:
    pre_jobs, ft_jobs, _, _ = _alternatives_stages("alternatives", params, cache, seed, inputs)
    return [pre_jobs, ft_jobs]


def plan_adversarial(params, cache, seed, profile, inputs: _Inputs) -> list[list[Job]]:
    from . import sections as S
    from ..studies import peterson as P
    alt = S.adversarial_alt_params(profile, cache, seed)
    methods = [(m, None) for m in P.ATTACK_METHODS]
    pre_jobs, ft_jobs, pre, complete = _alternatives_stages("adversarial", alt, cache, seed,
                                                            inputs, methods)
    ins = inputs.get("alternatives", S.alternatives_inputs)
    out = []
    for aj in P.attack_jobs(cache, ins.study, pre, alt, params, None, seed, progress=False,
                            train_missing=False):
        model_cached = cache.has(aj.model_kind, aj.model_config)
        n, n_pgd = len(aj.labels), int(aj.config["pgd_n"])
        passes = (n * (1 + len(aj.config["eps"]))
                  + n_pgd * int(aj.config["pgd_steps"]) * len(aj.config["pgd_eps"]))
        logits = n * (1 + len(aj.config["eps"])) + n_pgd * len(aj.config["pgd_eps"])
        b = aj.base
        out.append(Job("adversarial", "attack", aj.kind, aj.config,
                       f"adversarial/attack/{b['arch']}/{b['condition']}/lr{b['lr']}/{b['fold']}",
                       aj.run, needs=((aj.model_kind, aj.model_config),),
                       arch=_arch_id(pre.configs[b["arch"]].arch, pre.configs[b["arch"]].arch_kwargs),
                       attack_passes=float(passes),
                       stored_bytes=stored_prediction_bytes(
                           logits, 10, aj.config.get("logits_precision", "float32")),
                       provisional=aj.provisional or not complete or not model_cached))
    return [pre_jobs, ft_jobs, out]


def plan_calibration_ood(params, cache, seed, profile, inputs: _Inputs) -> list[list[Job]]:
    from . import sections as S
    from ..studies import laing
    from ..train import diverged_epoch
    data = inputs.get("laing", lambda: S.calibration_inputs(None))
    conds = list(params["label_conditions"]) + list(params.get("extra_conditions") or [])
    stack = params.get("stack_models", "auto")
    train, evals = [], []
    for s in params["seeds"]:
        for m in params["model_types"]:
            for c in conds:
                ej, sp, _ = laing.eval_job(data, m, c, s, params)
                tj = ej.train_job
                label = f"calibration_ood/{m}/{c}/seed{s}"
                # the runs of one model type train together where run_grid stacks them
                grouped = laing.runs_train_together(params, m)
                train.append(from_train_job("calibration_ood", "train", "laing_train",
                                            partial(laing.train_job, data, m, c, s, params),
                                            label, group=f"laing/{m}" if grouped else None,
                                            stack=stack))
                cached = cache.has("laing_train", tj.key())
                if cached and diverged_epoch(cache.load("laing_train", tj.key())) is not None:
                    continue  # a diverged run is a result; it is not evaluated
                evals.append(Job("calibration_ood", "eval", ej.kind, ej.config, label + "/eval",
                                 ej.run, needs=(("laing_train", tj.key()),),
                                 arch=_arch_id(tj.config.arch, tj.config.arch_kwargs),
                                 eval_images=float(len(sp.test) + len(sp.val)),
                                 attack_passes=float(len(sp.test)), provisional=not cached))
    return [train, evals]


#: section -> its plan: stages of jobs, in dependency order
PLANS: dict[str, Callable[..., list[list[Job]]]] = {
    "generalisation": plan_generalisation,
    "alternatives": plan_alternatives,
    "adversarial": plan_adversarial,
    "calibration_ood": plan_calibration_ood,
}


@dataclass
class Plan:
    """The jobs of some sections under one profile, stage by stage (jobs shared by two sections,
    e.g. section 4's models, which are section 3's, appear once, under the first)."""
    profile: str
    stages: list[list[Job]]
    sections: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def jobs(self) -> list[Job]:
        return [j for stage in self.stages for j in stage]


def build_plan(profile: str, sections: Sequence[str] | None = None,
               cache: ResultCache | None = None, seed: int = 0,
               overrides: Mapping[str, Any] | None = None, data_root: str = "",
               inputs: _Inputs | None = None, for_running: bool = False) -> Plan:
    """The job plan of ``sections`` (default: the training sections) under ``profile``, with
    upstream stages read from ``cache``. Needs the data the sections read (``data_root``);
    ``inputs`` keeps it loaded between calls. Data a section generates on first use (the
    corrupted images) is generated only ``for_running``."""
    from . import sections as S
    cache = cache if cache is not None else ResultCache()
    names = list(sections or S.DEFAULT_SECTIONS)
    unknown = [s for s in names if s not in S.COMPUTE and s not in S.NOTHING_TO_COMPUTE]
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(list(S.NOTHING_TO_COMPUTE) + list(S.COMPUTE))}")
    S.section_data_root(profile, data_root)
    inputs = inputs if inputs is not None else _Inputs(for_running)
    stages: list[list[Job]] = []
    notes: list[str] = []
    seen: set[tuple[str, str]] = set()
    for section in names:
        if section not in PLANS:
            if section in S.COMPUTE:
                notes.append(f"{section}: not planned (machine-specific; it runs where the "
                             "book is built)")
            continue
        own = {k: v for k, v in (overrides or {}).items()
               if k in profiles.resolve(profile, section)}
        params = profiles.resolve(profile, section, **own)
        for i, stage in enumerate(PLANS[section](params, cache, seed, profile, inputs)):
            while len(stages) <= i:
                stages.append([])
            for job in stage:
                if (job.kind, job.key) not in seen:
                    seen.add((job.kind, job.key))
                    stages[i].append(job)
    return Plan(profile, stages, names, notes)


def progress_by_group(plan: Plan, cache: ResultCache, tp: Throughput | None = None
                      ) -> list[dict[str, Any]]:
    """How far each section's jobs are in ``cache``, one row per (section, stage, group), in
    plan order: ``done`` of ``jobs`` cached, and how many are ``provisional`` (keyed by a stage
    before them that is not cached yet). A section that stopped half-way, a slice at a time,
    says which of its groups (a model type of Laing's grid, a configuration's folds) are there.
    ``group`` is None for a stage whose jobs run one at a time. With ``tp``, each row also has
    ``seconds_to_do``: the estimated device time of its jobs not cached yet
    (:func:`job_seconds`, a stacked group at its recorded speed)."""
    cost = _costing(plan, tp) if tp is not None else None
    rows: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for job in plan.jobs:
        row = rows.setdefault((job.section, job.stage, job.group),
                              {"section": job.section, "stage": job.stage, "group": job.group,
                               "done": 0, "jobs": 0, "provisional": 0})
        row["jobs"] += 1
        done = bool(cache.has(job.kind, job.config))
        row["done"] += done
        row["provisional"] += bool(job.provisional)
        if cost is not None:
            row["seconds_to_do"] = row.get("seconds_to_do", 0.0) + (0.0 if done else cost(job)[0])
    return list(rows.values())


# --------------------------------------------------------------------------------------------
# Cost: recorded throughput
# --------------------------------------------------------------------------------------------

@dataclass
class Throughput:
    """Recorded images per second of one device (``benchmarks/*.json`` rows with an ``arch``)."""
    device: str
    train: dict[str, float]
    eval: dict[str, float]
    source: str
    default_arch: str
    #: arch -> (models, aggregate img/s) of that many models trained at once (role
    #: ``train_stacked``)
    stacked: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: arch -> the other GPU whose stacked record :attr:`stacked` holds for it, where
    #: ``device`` has none of its own
    stacked_elsewhere: dict[str, str] = field(default_factory=dict)

    def stacked_rate(self, arch: str, group_size: int) -> float | None:
        """The recorded aggregate training speed of ``arch`` stacked, where a group of at least
        ``group_size`` models was measured (the gain grows steeply with the group: on the H200,
        4 ResNet-20s at once ran 1.07x one, 10 ran 3.3x; a smaller group is costed one model
        at a time rather than at a speed nobody measured)."""
        got = self.stacked.get(arch, self.stacked.get(arch.split("(")[0]))
        if got is None or group_size < got[0]:
            return None
        return got[1]

    def lookup(self, arch: str) -> tuple[float, float, bool]:
        """(train img/s, eval img/s, measured?) of ``arch`` (an unmeasured one: the default's)."""
        if arch in self.train:
            return self.train[arch], self.eval.get(arch, 10 * self.train[arch]), True
        base = arch.split("(")[0]
        if base in self.train:
            return self.train[base], self.eval.get(base, 10 * self.train[base]), True
        d = self.default_arch
        return self.train[d], self.eval.get(d, 10 * self.train[d]), False


def recorded_throughput(device: str = "NVIDIA H200") -> Throughput:
    """The per-architecture training throughput recorded for ``device`` in ``benchmarks/``.
    Of several stacked records of an architecture the largest group's is kept (the gain grows
    with the group). An architecture that ``device`` never trained stacked takes another GPU's
    (named in :attr:`Throughput.stacked_elsewhere` and the source):
    the study groups of Laing's grid were timed on an H100 only, and one model at a time they
    would be costed several times too slow."""
    train: dict[str, float] = {}
    evals: dict[str, float] = {}
    stacked: dict[str, tuple[int, float]] = {}
    other: dict[str, tuple[int, float, str, str]] = {}
    sources = []
    default = None
    for path in sorted(BENCHMARKS.glob("*.json")):
        res = json.loads(path.read_text())
        gpu = (res.get("machine") or {}).get("gpu")
        rows = [r for r in res.get("rows", []) if r.get("arch")]
        if gpu != device:
            for r in rows:
                if r.get("role") == "train_stacked" and (
                        r["arch"] not in other or int(r["models"]) > other[r["arch"]][0]):
                    other[r["arch"]] = (int(r["models"]), float(r["value"]), str(gpu), path.name)
            continue
        for r in rows:
            if r.get("unit") == "img/s" and r.get("role", "train") == "train":
                train[r["arch"]] = float(r["value"])
                default = default or res.get("default_arch")
            elif r.get("role") == "eval":
                evals[r["arch"]] = float(r["value"])
            elif r.get("role") == "train_stacked" and (
                    r["arch"] not in stacked or int(r["models"]) >= stacked[r["arch"]][0]):
                stacked[r["arch"]] = (int(r["models"]), float(r["value"]))
        if rows:
            sources.append(path.name)
    if not train:
        raise ValueError(f"no per-architecture throughput recorded for {device!r} under "
                         f"{BENCHMARKS} (rows with an 'arch' field)")
    elsewhere: dict[str, str] = {}
    borrowed: dict[tuple[str, str], list[str]] = {}
    for arch, (models, value, gpu, name) in sorted(other.items()):
        if arch not in stacked:
            stacked[arch] = (models, value)
            elsewhere[arch] = gpu
            borrowed.setdefault((name, gpu), []).append(arch)
    sources += [f"{name} (stacked {', '.join(archs)}: on {short_device_name(gpu)})"
                for (name, gpu), archs in borrowed.items()]
    return Throughput(device, train, evals, ", ".join(sources),
                      default if default in train else next(iter(train)), stacked, elsewhere)


def stacked_group_rates(metas: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``train_stacked`` rows for a ``benchmarks/*.json`` record (what :func:`job_seconds` costs
    a stacked group at), from the cache entries of models that trained in stacked groups
    (``meta['stacked'] = K``): per architecture and group size, the median over the groups of
    their aggregate images per second (validation included, as in the studies' own runs).
    The entries of one group share its aggregate rate; entries trained alone are skipped."""
    groups: dict[tuple[str, int], dict[float, set[str]]] = {}
    for m in metas:
        k = int((m.get("meta") or {}).get("stacked") or 1)
        res = (m.get("meta") or {}).get("result") or {}
        rate = res.get("images_per_second")
        if k < 2 or not rate or not math.isfinite(float(rate)):
            continue
        train = (m.get("config") or {}).get("train") or {}
        arch = train.get("arch")
        if not arch:
            continue
        what = f"{train.get('augment', '-')}/{train.get('mix', '-')}"
        groups.setdefault((arch, k), {}).setdefault(float(rate), set()).add(what)
    rows = []
    for (arch, k), by_rate in sorted(groups.items()):
        rates = sorted(by_rate)
        rows.append({
            "measurement": f"train {arch}, {k} models at once (a study's stacked groups)",
            "arch": arch, "role": "train_stacked", "models": k,
            "value": round(float(np.median(rates)), 1), "unit": "img/s",
            "groups": len(rates), "min": round(rates[0], 1), "max": round(rates[-1], 1),
            "note": "aggregate over the group's models, per-epoch validation included; "
                    "median over the groups (augment/mix: "
                    f"{', '.join(sorted(set().union(*by_rate.values())))})"})
    return rows


def _costing(plan: Plan, tp: Throughput) -> Callable[[Job], tuple[float, bool]]:
    """:func:`job_seconds` of a job of ``plan``, sized by the stacked group it trains in."""
    sizes = Counter(j.group for j in plan.jobs if j.group is not None)
    return lambda job: job_seconds(job, tp, sizes[job.group] if job.group else 1)


def job_seconds(job: Job, tp: Throughput, group_size: int = 1) -> tuple[float, bool]:
    """Estimated seconds of ``job`` on ``tp``'s device (attack passes are costed as training
    steps: a forward and a backward pass each), and whether its architecture's throughput was
    measured. A job trained in a stacked group of ``group_size`` > 1 models (a GPU stacks a
    group whose ``stack`` is not False) is costed at its share of the group's recorded
    aggregate speed, where one is recorded for its architecture and a group that large
    (:meth:`Throughput.stacked_rate`); else one model at a time."""
    train, ev, measured = tp.lookup(job.arch)
    from ..multimodel import stacks_on
    together = (tp.stacked_rate(job.arch, group_size)
                if group_size > 1 and stacks_on(job.stack, cuda=True) else None)
    if together is not None and measured:
        train = max(train, together)  # aggregate img/s of the group: this job's share
    return (job.train_images + job.attack_passes) / train + job.eval_images / ev, measured


# --------------------------------------------------------------------------------------------
# The summary ``plan`` prints
# --------------------------------------------------------------------------------------------

def summarise(plan: Plan, cache: ResultCache, tp: Throughput | None = None):
    """One row per (section, stage, kind): jobs, cached, provisional, estimated GPU-hours of the
    jobs not cached yet, the MB of predictions their entries will add to a results bundle
    (uncompressed, weights aside), and architectures without a recorded throughput."""
    import pandas as pd
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    cost = _costing(plan, tp) if tp is not None else None
    for job in plan.jobs:
        r = rows.setdefault((job.section, job.stage, job.kind), {
            "section": job.section, "stage": job.stage, "kind": job.kind, "jobs": 0,
            "cached": 0, "provisional": 0, "gpu_hours_to_do": 0.0, "bundle_mb_to_do": 0.0,
            "unmeasured": set()})
        r["jobs"] += 1
        done = not job.provisional and cache.has(job.kind, job.config)
        r["cached"] += int(done)
        r["provisional"] += int(job.provisional)
        if not done:
            r["bundle_mb_to_do"] += job.stored_bytes / 1e6
        if cost is not None and not done:
            s, measured = cost(job)
            r["gpu_hours_to_do"] += s / 3600
            if not measured:
                r["unmeasured"].add(job.arch)
    order = {s: i for i, s in enumerate(plan.sections)}
    df = pd.DataFrame(sorted(rows.values(), key=lambda r: order.get(r["section"], len(order))))
    if len(df):
        df["unmeasured"] = df["unmeasured"].map(lambda s: ", ".join(sorted(s)))
    return df


def format_summary(plan: Plan, df, tp: Throughput | None, gpus: int = 32) -> str:
    lines = [f"plan: profile {plan.profile} | sections {', '.join(plan.sections)}"]
    if len(df):
        show = df.copy()
        show["gpu_hours_to_do"] = show["gpu_hours_to_do"].map(lambda h: f"{h:,.2f}")
        show["bundle_mb_to_do"] = show["bundle_mb_to_do"].map(lambda m: f"{m:,.1f}")
        lines.append(show.to_string(index=False))
    n, cached = int(df["jobs"].sum()) if len(df) else 0, int(df["cached"].sum()) if len(df) else 0
    prov = int(df["provisional"].sum()) if len(df) else 0
    total = f"{plan.profile}: {n:,} jobs, {cached:,} cached"
    if prov:
        total += f" ({prov:,} provisional: their upstream stage is not cached yet)"
    if tp is not None and len(df):
        h = float(df["gpu_hours_to_do"].sum())
        spread = f"{h / gpus:,.1f} h" if h / gpus >= 1 else f"{60 * h / gpus:,.0f} min"
        total += (f", ≈ {h:,.1f} {short_device_name(tp.device)}-hours to do, ≈ {spread} on {gpus} "
                  f"GPUs with perfect packing (stacked fold groups at their recorded aggregate "
                  f"speed where recorded, else one model per GPU; sharing GPUs is faster, stage "
                  f"barriers slower)")
        miss = sorted({a for s in df["unmeasured"] for a in s.split(", ") if a})
        if miss:
            total += (f"; no recorded throughput for {', '.join(miss)}: costed as "
                      f"{tp.default_arch}")
        total += f" [throughput: {tp.source}]"
    if len(df):
        total += (f"; ≈ {float(df['bundle_mb_to_do'].sum()):,.1f} MB of predictions to add to "
                  f"its results bundles (uncompressed, no weights)")
    lines.append(total)
    lines += [f"note: {x}" for x in plan.notes]
    return "\n".join(lines)




def gpu_fraction(job: Job, small_params: int = 5_000_000, share: float = 0.25) -> float:
    """The GPU share a job asks Ray for: ``share`` for a small network (it leaves most of the
    device idle at batch 128; several run side by side), else one whole GPU."""
    return share if _count_parameters(job.arch) < small_params else 1.0


_PARAMS: dict[str, int] = {}


def _count_parameters(arch: str) -> int:
    if arch not in _PARAMS:
        from ..models import build, count_parameters
        name, _, rest = arch.partition("(")
        kw = {}
        for part in filter(None, rest.rstrip(")").split(",")):
            k, v = part.split("=")
            kw[k] = int(v)
        try:
            _PARAMS[arch] = count_parameters(build(name, **kw))
        except Exception:  # an architecture that needs other knobs: treat it as large
            _PARAMS[arch] = math.inf  # type: ignore[assignment]
    return _PARAMS[arch]
