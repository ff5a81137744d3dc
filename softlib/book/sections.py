"""The expensive work of each book section (training, prediction, attacks) as plain functions.

The notebooks call these functions for everything they train or evaluate, and
``python -m softlib.book compute`` calls the same functions with the same resolved parameters,
without papermill, Jupyter or IPython. A section computed on one machine (say a lent GPU) is
therefore found in the results cache when its notebook is executed later on another.

Each section with cached work has a ``compute_<section>(params, cache, device, seed, data_root,
profile)`` function in :data:`COMPUTE`; the ``*_inputs`` / ``*_runs`` helpers are its steps, which
the notebooks use one cell at a time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import profiles
from ..cache import ResultCache

#: Sections whose notebooks only read data or fixed files: nothing to precompute.
NOTHING_TO_COMPUTE = ("cifar10h_data", "imagenet_humans")


def section_data_root(profile: str, data_root: str | os.PathLike | None = None) -> Path:
    """The data root a section uses under ``profile`` (the synthetic fixture root under a
    profile with ``synthetic_data``), exported as ``SOFTLIB_DATA`` for the study loaders, as
    :func:`softlib.book.header.show_header` does for a notebook."""
    from .header import fixture_data_root
    from ..paths import data_root as default_data_root
    synthetic = bool(profiles.get_profile(profile)["synthetic_data"])
    root = fixture_data_root() if synthetic else default_data_root(data_root or None)
    os.environ["SOFTLIB_DATA"] = str(root)
    return root


# --------------------------------------------------------------------------------------------
# Section 2: generalisation (Peterson et al. 2019, section 5)
# --------------------------------------------------------------------------------------------

@dataclass
class GeneralisationInputs:
    study: Any        # peterson.StudyData
    shift: Any        # peterson.EvalSets: the shift sets
    corr: Any         # peterson.EvalSets: the corruption sets
    evalsets: Any     # peterson.EvalSets: both together (what every fold model predicts)


def generalisation_inputs(params: Mapping[str, Any], seed: int = 0,
                          generate: bool = True) -> GeneralisationInputs:
    """CIFAR-10H, the shift sets and the corruption sets (generated if missing, unless not
    ``generate``) of the section."""
    from ..studies import peterson as P
    study = P.load_study_data()
    shift = P.load_shift_sets(params["eval_subset"], seed=seed)
    corr = P.load_corruption_sets(params["corruption_subset"], params["corruptions"],
                                  params["corruption_severities"], generate=generate)
    evalsets = P.EvalSets({**shift.images, **corr.images}, {**shift.labels, **corr.labels},
                          {**shift.titles, **corr.titles},
                          {**shift.unavailable, **corr.unavailable})
    return GeneralisationInputs(study, shift, corr, evalsets)


def generalisation_runs(cache: ResultCache, inputs: GeneralisationInputs,
                        params: Mapping[str, Any], device: Any = None, seed: int = 0):
    """Every fold model of the section (trained or loaded): ``peterson.FoldRuns``."""
    from ..studies import peterson as P
    return P.run_generalisation(cache, inputs.study, params, inputs.evalsets, device=device,
                                seed=seed)


def compute_generalisation(params, cache, device=None, seed=0, data_root=None, profile=None):
    return generalisation_runs(cache, generalisation_inputs(params, seed), params, device, seed)


# --------------------------------------------------------------------------------------------
# Section 3: alternatives to human labels (paper section 6)
# --------------------------------------------------------------------------------------------

@dataclass
class AlternativesInputs:
    study: Any         # peterson.StudyData
    cifar_train: Any   # the 50,000 CIFAR-10 training images (pretraining)
    c101: Any          # peterson.EvalSets: CIFAR-10.1 v4 / v6 where present


def alternatives_inputs() -> AlternativesInputs:
    from .. import data
    from ..studies import peterson as P
    return AlternativesInputs(P.load_study_data(), data.load("cifar10", "train"),
                              P.load_cifar10_1_sets())


def alternatives_pretraining(cache: ResultCache, inputs: AlternativesInputs,
                             params: Mapping[str, Any], device: Any = None, seed: int = 0):
    """The pretrained model of every architecture (``peterson.Pretrained``)."""
    from ..studies import peterson as P
    return P.run_pretraining(cache, inputs.study, params, inputs.cifar_train, device=device,
                             seed=seed, extra=inputs.c101)


def alternatives_runs(cache: ResultCache, inputs: AlternativesInputs, pre,
                      params: Mapping[str, Any], device: Any = None, seed: int = 0,
                      profile: str | None = None, only_archs: Sequence[str] | None = None):
    """Every fine-tuned fold model of every method (``peterson.FinetuneRuns``). With
    ``profile``, the parameters used are recorded for section 4, which attacks these models.
    ``only_archs``: those architectures' models only (:func:`peterson.only_archs`; a book
    rendered from the architectures computed so far)."""
    from ..studies import peterson as P
    with _only_archs(only_archs):
        runs = P.run_alternatives(cache, inputs.study, pre, params, device=device, seed=seed,
                                  extra=inputs.c101)
    if profile is not None:
        record_section_params(cache, profile, "alternatives", params, seed)
    return runs


def _params_key(profile: str, section: str) -> dict[str, Any]:
    return {"profile": str(profile), "section": str(section)}


def record_section_params(cache: ResultCache, profile: str, section: str,
                          params: Mapping[str, Any], seed: int) -> None:
    """Store the effective parameters (profile + overrides) a section last ran with."""
    import json

    from ..cache import Entry
    value = json.loads(json.dumps({"params": dict(params), "seed": int(seed)}, default=str))
    key = _params_key(profile, section)
    if cache.has("section_params", key) and cache.load("section_params", key).meta == value:
        return
    cache.save("section_params", key, Entry(meta=value))


def recorded_section_params(cache: ResultCache, profile: str, section: str
                            ) -> dict[str, Any] | None:
    """``{'params': ..., 'seed': ...}`` recorded by :func:`record_section_params`, or None."""
    key = _params_key(profile, section)
    return cache.load("section_params", key).meta if cache.has("section_params", key) else None


def compute_alternatives(params, cache, device=None, seed=0, data_root=None, profile=None):
    inputs = alternatives_inputs()
    pre = alternatives_pretraining(cache, inputs, params, device, seed)
    return alternatives_runs(cache, inputs, pre, params, device, seed, profile=profile)


# --------------------------------------------------------------------------------------------
# Section 4: adversarial robustness of section 3's fine-tuned models (paper section 7)
# --------------------------------------------------------------------------------------------

def adversarial_alt_params(profile: str, cache: ResultCache | None = None,
                           seed: int = 0) -> dict[str, Any]:
    """The parameters of the models section 4 attacks: section 3's *effective* ones (profile
    plus its overrides, as recorded by its last run under ``profile`` in ``cache``), else the
    profile's. A section 3 run with another seed is refused: its models are not these."""
    rec = recorded_section_params(cache, profile, "alternatives") if cache is not None else None
    if rec is None:
        return profiles.resolve(profile, "alternatives")
    if int(rec["seed"]) != int(seed):
        raise ValueError(f"section 4 (adversarial) runs with seed {seed}, but section 3 "
                         f"(alternatives) last ran under profile {profile!r} with seed "
                         f"{rec['seed']}: attack the same models by using the same seed, or rerun "
                         "section 3 with this one")
    return dict(rec["params"])


def _only_archs(labels: Sequence[str] | None):
    """:func:`peterson.only_archs` where ``labels`` are given; else leave the restriction
    as it is (``compute --archs`` sets it around the whole section)."""
    import contextlib

    from ..studies import peterson as P
    return P.only_archs(labels) if labels else contextlib.nullcontext()


def adversarial_runs(cache: ResultCache, profile: str, params: Mapping[str, Any],
                     device: Any = None, seed: int = 0, only_archs: Sequence[str] | None = None):
    """(study data, alternatives parameters, FGSM table, PGD table) of the section; with
    ``only_archs``, of those architectures' models only."""
    from .. import data
    from ..studies import peterson as P
    alt = adversarial_alt_params(profile, cache, seed)
    study = P.load_study_data()
    pre = P.run_pretraining(cache, study, alt, data.load("cifar10", "train"), device=device,
                            seed=seed)
    with _only_archs(only_archs):
        fg, pg = P.run_adversarial(cache, study, pre, alt, params, device=device, seed=seed)
    return study, alt, fg, pg


def compute_adversarial(params, cache, device=None, seed=0, data_root=None, profile=None):
    if profile is None:
        raise ValueError("compute_adversarial needs the profile (its models are section 3's)")
    return adversarial_runs(cache, profile, params, device, seed)


# --------------------------------------------------------------------------------------------
# Section 5: calibration, OOD detection and robustness (Laing 2024)
# --------------------------------------------------------------------------------------------

def calibration_inputs(data_root: str | os.PathLike | None):
    from ..studies import laing
    return laing.load_inputs(data_root)


def calibration_grid(data, params: Mapping[str, Any], cache: ResultCache, device: Any = None):
    """Every model type x label condition x seed (``laing.GridResult``)."""
    from ..studies import laing
    return laing.run_grid(data, params, cache, device=device)


def compute_calibration_ood(params, cache, device=None, seed=0, data_root=None, profile=None):
    return calibration_grid(calibration_inputs(data_root), params, cache, device)


# --------------------------------------------------------------------------------------------
# Section 7: the engine benchmark of this machine (optional: it is machine-specific)
# --------------------------------------------------------------------------------------------

def compute_compute(params, cache, device=None, seed=0, data_root=None, profile=None):
    from . import compute_page as compute
    return compute.cached_benchmark(cache, quick=params["quick"], device=device)


#: section -> its compute function, in book order
COMPUTE: dict[str, Callable[..., Any]] = {
    "generalisation": compute_generalisation,
    "alternatives": compute_alternatives,
    "adversarial": compute_adversarial,
    "calibration_ood": compute_calibration_ood,
    "compute": compute_compute,
}
#: what ``compute`` runs when no sections are named: the training sections (the benchmark of
#: the compute page is specific to the machine that builds the book, so it is left to it)
DEFAULT_SECTIONS = ("generalisation", "alternatives", "adversarial", "calibration_ood")


def planned_jobs(section: str, params: Mapping[str, Any], profile: str | None = None
                 ) -> int | None:
    """About how many cache entries (trained models, attack and evaluation results) the
    section's compute function loads or saves under ``params``: the total of the book runner's
    progress bar, where the section's structure makes it countable (None: unknown). Bookkeeping
    entries (``section_params``) are not counted."""
    from ..studies import peterson as P
    try:
        if section == "generalisation":
            return (len(P.parse_archs(params["archs"])) * len(P.CONDITIONS) * len(params["lr"])
                    * int(params["folds"]))
        if section == "alternatives":
            n = len(P.parse_archs(params["archs"]))
            return n + n * len(P.method_variants(params)) * len(params["lr"]) * int(params["folds"])
        if section == "adversarial" and profile is not None:
            alt = adversarial_alt_params(profile)
            n, folds = len(P.parse_archs(alt["archs"])), int(alt["folds"])
            return n + n * len(P.ATTACK_METHODS) * folds * (len(alt["lr"]) + 1)
        if section == "calibration_ood":
            conds = list(params["label_conditions"]) + list(params.get("extra_conditions") or [])
            return 2 * len(params["seeds"]) * len(params["model_types"]) * len(conds)
        if section == "compute":
            return 1
    except (KeyError, TypeError, ValueError):
        return None
    return None
