"""The book runner: execute every section under a profile with papermill, then build the book.

    python -m softlib.book run   [--profile cpu] [--data-root DIR] [--sections a,b] [-p name=value]
                                 [--from-bundles] [--results DIR] [--require-complete]
    python -m softlib.book build
    python -m softlib.book all   (run, then build)
    python -m softlib.book list
    python -m softlib.book plan    --profile P [--sections a,b] [--gpus 32] [--jobs]
    python -m softlib.book compute --profile P [--sections a,b] [--budget-seconds N] [--device auto]
                                   [--halt-seconds M] [--seed 0] [-p name=value] [--archs LABEL,...]
                                   [--backend local|ray [--address auto|ray://HOST:10001]]
    python -m softlib.book export --profile P OUT.tar.gz [--with-weights [SECTIONS]]
                                  [--sections a,b] [--builds-on results/P]
                                  [--pretrained-weights LABEL,...] [--max-mib MIB]
    python -m softlib.book split FILE.tar.gz --max-mib MIB
    python -m softlib.book import FILE.tar.gz|DIR ...

Sections are paired jupytext notebooks in ``notebooks/``. ``run`` / ``all`` go plan -> compute
-> execute (-> build): *compute* runs each section's training and evaluation work
(:mod:`softlib.book.sections`) in this process with one progress line per section (jobs done / total,
trained, cache hits, elapsed, ETA on a text bar), so that *execute* only reads the cache: each
notebook is converted in memory, executed by papermill with the profile's parameters (the
kernel's own start-up notices go to a log in ``_build/staging/``, its errors are shown in full),
and written to ``book/sections/`` (where ``_toc.yml`` expects it) only when every requested
section succeeded, so a failure never leaves a half-updated book. jupyter-book then builds HTML
with execution off and warnings as errors, and a table sums up the build.

A profile that ``requires_gpu`` (``gpu``, ``paper``) on a machine without one is rendered *from
results bundles* (``--from-bundles`` forces this for any profile): every bundle of
``results/<profile>/*.tar.gz`` is imported into the cache first, each training section is only
checked against the cache under a zero compute budget, and a section whose results are not all
there is not trained but rendered as a page that says so and gives the commands that compute it
(``--require-complete`` makes that an error). The run fails only when no requested section can
be rendered at all.

``compute`` runs only the training and evaluation work of the sections (the same calls, with the
same resolved parameters, as their notebooks; see :mod:`softlib.book.sections`) into the results
cache, without papermill, Jupyter or IPython: on a machine with a GPU, say. ``--budget-seconds``
stops it between jobs; the next call continues from the cache. It records which cache entries
each section used in ``<cache root>/manifests/<profile>.json``; ``export`` packs them into a
results bundle and ``import`` adds a bundle to another machine's cache (:mod:`softlib.book.bundle`).
Only ``run``, ``all`` and ``build`` import papermill, nbformat, jupytext or jupyter-book.

``SOFTLIB_BOOK_DIR`` moves the whole book (executed sections, staging, ``_build``) out of the
repository: the build copies the book's sources there first. The tests use it so that running
them never overwrites a book a user has executed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import profiles
from .bundle import same_json, short_device_name
from .toc import NOTEBOOKS, REPO, SECTIONS, book_root, sections_dir  # noqa: F401 (re-exported)

RESULTS = REPO / "results"  # committed results bundles: results/<profile>/*.tar.gz
_BUDGET_HINT = 3000  # the --budget-seconds a "not computed" page suggests (under an hour)


def _staging() -> Path:
    return book_root() / "_build" / "staging"


def _timings_path() -> Path:
    return sections_dir() / "timings.json"


# Appended to every executed notebook (hidden in the book): the kernel's own peak memory.
_PEAK_CELL = """\
import json as _json, resource as _resource, sys as _sys
_kb = _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss
print("SOFTLIB_PEAK_RSS_MB=" + str(round(_kb / 1024 if _sys.platform != "darwin" else _kb / 2**20, 1)))
"""
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BookError(RuntimeError):
    """A section failed, or the book cannot be built from what has been executed."""


def _parse_value(text: str) -> object:
    """A ``-p`` value as YAML (JSON, then the plain string, where PyYAML is not installed)."""
    try:
        import yaml
    except ImportError:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return yaml.safe_load(text)


def _parse_overrides(pairs: list[str]) -> dict[str, object]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise BookError(f"-p expects name=value, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = _parse_value(v)
    return out


def _check_overrides(profile: str, sections: list[str], overrides: dict[str, object]) -> None:
    """Every override must be a parameter of at least one requested section, of the kind the
    profile gives it (checked here, before any data is loaded)."""
    known = set()
    for s in sections:
        params = profiles.resolve(profile, s)
        known |= set(params)
        profiles.resolve(profile, s, **{k: v for k, v in overrides.items() if k in params})
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise profiles.ProfileError(
            f"unknown parameter(s) {', '.join(unknown)} for section(s) {', '.join(sections)}; "
            f"valid parameters: {', '.join(sorted(known))}")


def _load_notebook(section: str):
    import jupytext
    path = NOTEBOOKS / SECTIONS[section]
    if not path.exists():
        raise BookError(f"section {section!r}: notebook {path} does not exist")
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    import nbformat
    for c in nb.cells:  # the provenance box shows the parameters: hide the code that makes it
        tags = c.metadata.get("tags", [])
        if c.cell_type == "code" and ("parameters" in tags or "show_header(" in c.source):
            c.metadata["tags"] = [*tags, "remove-input"]
    cell = nbformat.v4.new_code_cell(_PEAK_CELL)
    cell.metadata["tags"] = ["remove-cell"]
    nb.cells.append(cell)
    return nb


def _peak_rss(nb) -> float | None:
    for out in nb.cells[-1].get("outputs", []):
        m = re.search(r"SOFTLIB_PEAK_RSS_MB=([0-9.]+)", out.get("text", ""))
        if m:
            return float(m.group(1))
    return None


def results_dir(profile: str) -> Path:
    """Where the committed results bundles of ``profile`` live: ``results/<profile>/*.tar.gz``."""
    return RESULTS / profile


def _rel(path: Path) -> str:
    """``path`` relative to the repository where it is inside it (what a reader types)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _checked_device(device: str | None) -> str:
    """``--device`` resolved ('auto': CUDA when there is one), or a BookError before any data
    is loaded: an unknown name, or a CUDA device on a machine without one."""
    import torch

    from ..train import resolve_device
    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        raise BookError(f"--device {device!r}: not a torch device name ({exc}); use auto, cpu, "
                        "cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BookError(f"--device {device}: torch sees no CUDA device on this machine; use "
                        "--device auto or cpu")
    return str(dev)


def _gpu_here(device: str, cuda_available: bool | None = None) -> bool:
    """Whether the sections would run on a GPU here (``cuda_available`` overrides, for tests)."""
    if cuda_available is not None:
        return bool(cuda_available)
    from ..train import resolve_device
    return resolve_device(device).type != "cpu"


def import_results(profile: str, directory: str | os.PathLike | None = None) -> list[dict]:
    """Import every bundle of ``results/<profile>/`` (or ``directory``) into the results cache.

    Idempotent: entries already present and identical are skipped. A bundle that builds on
    others is imported after them, whatever the order of their names. A bundle that cannot be
    imported (corrupt, conflicting with a different existing result, or building on entries
    no bundle here carries) is reported and left out; the others are still imported. Returns
    one summary per bundle."""
    d = Path(directory) if directory is not None else results_dir(profile)
    files = sorted(d.glob("*.tar.gz")) if d.is_dir() else []
    if not files:
        print(f"results: no bundle in {_rel(d)}/ (expected {_rel(d)}/*.tar.gz)", flush=True)
    return import_bundles(files, profile)


def import_bundles(files: list[Path], profile: str | None = None) -> list[dict]:
    """Import ``files`` (see :func:`import_results`), each after the bundles it builds on;
    one summary per bundle, with an ``error`` where it was not imported."""
    from .bundle import BundleError, MissingBaseError, import_bundle
    out = []
    pending, waiting = files, {}
    while pending:
        later = []
        for f in pending:
            t0 = time.perf_counter()
            try:
                r = import_bundle(f)
            except MissingBaseError as exc:  # another bundle here may carry its base
                later.append(f)
                waiting[f] = exc
                continue
            except BundleError as exc:
                print(f"results: {_rel(f)} NOT imported: {exc}", flush=True)
                out.append({"file": str(f), "error": str(exc)})
                continue
            waiting.pop(f, None)
            out.append(_report_import(profile, f, r, t0))
        if len(later) == len(pending):  # no progress: nothing here carries their base
            for f in later:
                print(f"results: {_rel(f)} NOT imported: {waiting[f]}", flush=True)
                out.append({"file": str(f), "error": str(waiting[f])})
            break
        pending = later
    return out


def _report_import(profile: str, f: Path, r: dict, t0: float) -> dict:
    """Print one imported bundle's summary line; return the summary with its file."""
    done = [s for s in sorted(r["complete"], key=_book_order) if r["complete"][s]]
    print(f"results: {_rel(f)} (profile {r['profile']}): {r['imported']} new entries, "
          f"{r['identical']} already here; complete in it: {', '.join(done) or 'none'} "
          f"[{time.perf_counter() - t0:.1f} s]", flush=True)
    if profile is not None and r["profile"] != profile:
        print(f"results: note: {_rel(f)} holds results of profile {r['profile']!r}, not "
              f"{profile!r}", flush=True)
    return {"file": str(f), **r}


class _JobProgress:
    """A text bar (stderr, :mod:`softlib.progress`) of the cache entries a section's compute
    function loads (cache hits) or saves (trained / computed), and their counts."""

    IGNORE = ("section_params",)  # bookkeeping, not a job

    def __init__(self, desc: str, total: int | None):
        self.desc, self.total = desc, total
        self.first: dict[tuple[str, str], str] = {}
        self.hits = self.trained = 0
        self.bar = None
        self._stop = None

    def _listen(self, action: str, kind: str, key: str) -> None:
        if kind in self.IGNORE or (kind, key) in self.first:
            return
        self.first[(kind, key)] = action
        if action == "load":
            self.hits += 1
        else:
            self.trained += 1
        if self.bar is not None:
            if self.bar.total is not None and len(self.first) > self.bar.total:
                self.bar.total = len(self.first)
            self.bar.set_postfix_str(f"trained {self.trained}, cache hits {self.hits}",
                                     refresh=False)
            self.bar.update(1)

    def __enter__(self):
        import threading

        from ..cache import _listeners
        from ..progress import progress
        self.bar = progress(total=self.total, desc=self.desc, unit="job", leave=False,
                            file=sys.stderr, mininterval=1.0)
        _listeners.append(self._listen)
        if not self.bar.disable and sys.stderr.isatty():  # keep elapsed / ETA ticking
            self._stop = threading.Event()

            def tick():
                while not self._stop.wait(5.0):
                    self.bar.refresh()
            threading.Thread(target=tick, daemon=True).start()
        return self

    def __exit__(self, *exc):
        from ..cache import _listeners
        if self._stop is not None:
            self._stop.set()
        if self._listen in _listeners:
            _listeners.remove(self._listen)
        self.bar.close()
        return False


def _known_total(profile: str, section: str, params: dict, seed: int) -> int | None:
    """The number of jobs of ``section``: from the profile's manifest when it records the
    section complete with these parameters, else counted from its structure."""
    from . import bundle
    from . import sections as S
    try:
        rec = (bundle.load_manifest(profile) or {}).get("sections", {}).get(section)
    except (OSError, ValueError):
        rec = None
    if rec and rec.get("complete") and same_json(rec.get("params"), params) \
            and rec.get("seed") == seed:
        return len([e for e in rec.get("entries", []) if e[0] not in _JobProgress.IGNORE])
    planned = getattr(S, "planned_jobs", None)
    return planned(section, params, profile) if planned is not None else None


def _compute_one(profile: str, section: str, params: dict, own_overrides: dict, dev: str,
                 seed: int, root: Path, desc: str, *, check_only: bool = False,
                 log: Path | None = None, write_manifest: bool = True,
                 archs: list[str] | None = None) -> dict:
    """Run ``section``'s compute function (:mod:`softlib.book.sections`) into the cache, with a
    progress bar; with ``check_only`` under a zero compute budget, so that the first result
    that is not cached stops it before anything is trained. ``log``: where its stdout goes.
    ``archs``: fine-tune and attack only these architectures (sections 3-4,
    :func:`softlib.studies.peterson.only_archs`); the section is then recorded as partial."""
    import contextlib
    import traceback

    from . import bundle
    from . import sections as S
    from ..cache import BudgetExhausted, ResultCache, record_access, set_deadline
    from ..data.store import describe_data
    cache = ResultCache()
    total = _known_total(profile, section, params, seed)
    stopped: BaseException | None = None
    error: BaseException | None = None
    tb = ""
    t0 = time.perf_counter()
    partial_run = archs is not None and section in ARCH_SECTIONS
    if check_only:
        set_deadline(0, strict=True)  # nothing at all is computed, not even evaluations
    try:
        with contextlib.ExitStack() as stack:
            touched = stack.enter_context(record_access())
            if log is not None:
                log.parent.mkdir(parents=True, exist_ok=True)
                fh = stack.enter_context(open(log, "w"))
                stack.enter_context(contextlib.redirect_stdout(fh))
            prog = stack.enter_context(_JobProgress(desc, total))
            if partial_run:
                from ..studies.peterson import only_archs
                stack.enter_context(only_archs(archs))
            try:
                S.COMPUTE[section](params, cache, dev, seed, root, profile=profile)
            except BudgetExhausted as exc:
                stopped = exc
            except BaseException as exc:  # recorded as incomplete; the caller raises it
                error, tb = exc, traceback.format_exc()
    finally:
        if check_only:
            set_deadline(None)
    wall = time.perf_counter() - t0
    complete = stopped is None and error is None and not partial_run
    # a run that failed (bad input, Ctrl-C, a crash) leaves the section's record as it was: its
    # entries are in the cache, and the next run that gets through records them; recording it
    # would replace a complete section's record with an empty, failed one
    if write_manifest and not check_only and error is None:
        old = (bundle.load_manifest(profile) or {}).get("sections", {}).get(section)
        unchanged = (complete and cache.misses == 0 and old and old.get("complete")
                     and same_json(old.get("params"), params) and old.get("seed") == seed
                     and {tuple(e) for e in old.get("entries", [])} == set(touched))
        if not unchanged:  # else keep the record of where and when it was computed
            bundle.update_manifest(profile, section, {
                "complete": complete, "entries": touched, "params": params,
                "overrides": own_overrides, "seed": seed, "seconds": round(wall, 1),
                "trained": cache.misses, "cache_hits": cache.hits, "data_root": str(root),
                "data": describe_data(root),
                **({"only_archs": list(archs)} if partial_run else {})},
                device=dev)
    missing = ""
    if stopped is not None:
        m = re.search(r"before (.*) could be computed", str(stopped))
        missing = m.group(1) if m else str(stopped)
    return {"complete": complete, "partial": partial_run and stopped is None and error is None,
            "seconds": wall, "trained": cache.misses,
            "hits": cache.hits, "entries": len(touched), "jobs": len(prog.first),
            "planned": total, "stopped": stopped, "missing": missing, "error": error,
            "traceback": tb, "log": str(log) if log is not None else None}


def _nearest_to_missing(stopped: BaseException | None, profile: str, section: str,
                        overrides: dict, seed: int, root: Path, inputs=None) -> tuple | None:
    """``(kind, key, differences)``: the cached entry nearest to the first result a check found
    missing (:meth:`softlib.cache.ResultCache.nearest`), or None. The result is the one the
    budget stopped at (``stopped``), or, for a group of stacked models (whose stop names no
    single entry), the first of the section's planned jobs not in the cache (``inputs``: the
    plan's data, loaded once for every plan of the build)."""
    from ..cache import ResultCache
    if stopped is None:
        return None
    cache = ResultCache()
    kind, config = getattr(stopped, "kind", None), getattr(stopped, "config", None)
    if config is None:
        from . import plan as PL
        try:
            jobs = PL.build_plan(profile, [section], cache, seed, overrides, str(root),
                                 inputs).jobs
        except Exception as exc:  # the page still names the first missing result
            print(f"note: {section}: no nearest cached result (planning failed: "
                  f"{type(exc).__name__}: {exc})", flush=True)
            return None
        job = next((j for j in jobs if not j.provisional and not cache.has(j.kind, j.config)),
                   None)
        if job is None:
            return None
        kind, config = job.kind, job.config
    found = cache.nearest(kind, config)
    return None if found is None else (kind, *found)


def _tail(path: str | os.PathLike | None, lines: int = 40) -> str:
    if not path or not Path(path).exists():
        return ""
    text = _ANSI.sub("", Path(path).read_text(errors="replace")).rstrip().splitlines()
    return "\n".join(text[-lines:])


def _kernel_manager(log: Path):
    """A kernel manager class whose kernel writes its own stdout / stderr (start-up notices
    such as "Kernel is running over TCP without encryption", C-level warnings) to ``log``
    instead of the terminal; the notebook's outputs and errors are unaffected."""
    from jupyter_client.manager import AsyncKernelManager

    class _LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as fh:  # the kernel process keeps its own copy of the fd
                kw.setdefault("stdout", fh)
                kw.setdefault("stderr", fh)
                return await super().start_kernel(**kw)

    return _LoggedKernelManager


def _section_title(section: str) -> str:
    """The first heading of a section's notebook (``# 4. Adversarial robustness ...``)."""
    path = NOTEBOOKS / SECTIONS[section]
    for line in path.read_text().splitlines():
        m = re.match(r"^# (# .+)$", line)
        if m:
            return m.group(1)
    return f"# {section}"


#: the sections that fine-tune and attack per architecture: ``compute --archs`` restricts them
ARCH_SECTIONS = ("alternatives", "adversarial")


def check_archs(profile: str, sections: list[str], archs: list[str],
                overrides: dict[str, object] | None = None) -> list[str]:
    """Refuse ``compute --archs`` where it would do nothing or name an architecture the
    sections do not have: the labels are section 3's (its ``archs`` parameter), which this
    returns."""
    from ..studies.peterson import parse_archs
    if not archs:
        raise BookError("--archs: name at least one architecture")
    if not any(s in ARCH_SECTIONS for s in sections):
        raise BookError(f"--archs applies to {' and '.join(ARCH_SECTIONS)} only (the sections "
                        f"that fine-tune and attack per architecture); requested: "
                        f"{', '.join(sections)}")
    own = {k: v for k, v in (overrides or {}).items()
           if k in profiles.resolve(profile, "alternatives")}
    known = [a.label for a in parse_archs(profiles.resolve(profile, "alternatives", **own)["archs"])]
    unknown = [a for a in archs if a not in known]
    if unknown:
        raise BookError(f"--archs: unknown architecture(s) {', '.join(map(repr, unknown))} under "
                        f"profile {profile!r}; its architectures: {', '.join(map(repr, known))}")
    return known


#: section -> the list parameter along which a section's results split into parts that are
#: computed and rendered on their own (a model type of Laing's grid, an architecture's fold
#: models): a `gpu` book rendered from bundles shows the parts that are complete, marked
#: partial. Sections 3-4 split by architecture too, but only in what they fine-tune and attack
#: (every architecture is pretrained: ``compute --archs``, the notebooks' ``only_archs``)
PARTS_OF = {"calibration_ood": "model_types", "generalisation": "archs",
            "alternatives": "archs", "adversarial": "archs"}
#: the states of a section whose results are not all there (its page says how to compute them)
INCOMPLETE = ("not computed", "partial")


def _part_label(item: object) -> str:
    """An item of a :data:`PARTS_OF` list as a reader names it (an architecture's label)."""
    return str(item[0]) if isinstance(item, (list, tuple)) and item else str(item)


def _describe_part(part: dict) -> str:
    """``model_types basic, sngp (not computed: duq)``: a partial section on one line."""
    return (f"{part['param']} {', '.join(map(_part_label, part['done']))} (not computed: "
            f"{', '.join(map(_part_label, part['left_out']))})")


def _complete_parts(profile: str, section: str, own: dict, dev: str, seed: int, root: Path,
                    log: Path) -> dict | None:
    """The parts of a section whose results are all in the cache when the whole is not: each
    item of its :data:`PARTS_OF` parameter checked alone, then the complete ones together
    (nothing is computed). ``{"param", "done", "left_out", "notebook_param", "what"}``: the
    split parameter, its complete and missing items, the notebook parameter that restricts a
    page to the complete ones, and what the items are in words; None where no part, or every
    part, is complete, or the section does not split."""
    key = PARTS_OF.get(section)
    params = profiles.resolve(profile, section, **own)
    items = list(params.get(key) or []) if key else []
    by_arch = section in ARCH_SECTIONS
    if by_arch:  # fine-tuned and attacked by label: section 3's architectures (as it last ran)
        from . import sections as S
        from ..cache import ResultCache
        from ..studies.peterson import parse_archs
        if section != "alternatives":  # section 4 attacks the models section 3 ran with
            items = S.adversarial_alt_params(profile, ResultCache(), seed)["archs"]
        items = [a.label for a in parse_archs(items)]
    if len(items) < 2:
        return None

    def complete(sub: list) -> bool:
        desc = f"{section} ({key} {', '.join(map(_part_label, sub))})"
        if by_arch:
            return _compute_one(profile, section, params, own, dev, seed, root, desc,
                                check_only=True, log=log, archs=sub)["partial"]
        part = {**own, key: sub}
        return _compute_one(profile, section, profiles.resolve(profile, section, **part), part,
                            dev, seed, root, desc, check_only=True, log=log)["complete"]
    done = [item for item in items if complete([item])]
    if not done or len(done) == len(items) or not complete(done):
        return None
    return {"param": key, "done": done, "left_out": [i for i in items if i not in done],
            # the notebook parameter that restricts the page to them
            "notebook_param": "only_archs" if by_arch else key,
            "what": ("architectures (their fine-tuned models; every architecture is pretrained)"
                     if by_arch else key.replace("_", " "))}


def _partial_banner(section: str, profile: str, part: dict, progress: list[dict] | None) -> str:
    """The note at the top of a section rendered from some of its parts (:func:`_complete_parts`):
    what it shows, what it leaves out, how far the rest is and how to compute it."""
    done = ", ".join(f"`{_part_label(i)}`" for i in part["done"])
    left = ", ".join(f"`{_part_label(i)}`" for i in part["left_out"])
    what = part.get("what", part["param"].replace("_", " "))
    short = what.split(" (")[0]
    export, out = export_command(profile, [section])
    return f"""```{{warning}}
**Partial: {len(part['done'])} of {len(part['done']) + len(part['left_out'])} {what}.**
This page of the `{profile}` book shows the results of {done} only, the {short} whose
results the committed bundles hold in full. Not computed yet: {left}. Every table, figure and
claim below is computed from the shown {short} alone (the notebook's
`{part.get('notebook_param', part['param'])}` parameter is set to them, see the box); nothing
was trained here.
```

{_progress_table(progress)}To complete it, run on a machine with a GPU:

```bash
{compute_command(profile, [section])}
{export}
```

then commit the new `{out}` and build the book again. {_weights_note([section])}
"""


#: section -> the section whose models' weights it needs (results bundles carry no weights, so
#: both must be computed with one cache): section 4 attacks section 3's fine-tuned models
NEEDS_WEIGHTS_OF = {"adversarial": "alternatives"}


def with_weight_sources(sections: list[str]) -> list[str]:
    """``sections`` plus the sections whose weights they need (:data:`NEEDS_WEIGHTS_OF`), in
    book order: what one compute run, on one cache, must cover."""
    need = set(sections) | {NEEDS_WEIGHTS_OF[s] for s in sections if s in NEEDS_WEIGHTS_OF}
    return [s for s in SECTIONS if s in need]


def compute_order(sections: list[str]) -> list[str]:
    """``sections`` in the order asked for, each section whose weights another needs
    (:data:`NEEDS_WEIGHTS_OF`) moved just before it: a budgeted slice of
    ``calibration_ood,generalisation`` finishes Laing's grid before it starts the folds."""
    out: list[str] = []
    for s in dict.fromkeys(sections):
        source = NEEDS_WEIGHTS_OF.get(s)
        if source in sections and source not in out:
            out.append(source)
        if s not in out:
            out.append(s)
    return out


def compute_command(profile: str, sections: list[str], budget: int = _BUDGET_HINT) -> str:
    return (f"python -m softlib.book compute --profile {profile} --sections "
            f"{','.join(with_weight_sources(sections))} --budget-seconds {budget}")


BUNDLE_MAX_MIB = 4  # committed results bundles stay a few MB a file (export splits them)


def export_command(profile: str, sections: list[str]) -> tuple[str, str]:
    """The export command of ``sections``' results and the bundles it adds (a glob): each
    export holds what is new since the committed bundles it builds on, named by its UTC time,
    in parts of at most ``BUNDLE_MAX_MIB``."""
    sections = with_weight_sources(sections)
    name = "-".join(sections)
    where = f"results/{profile}"
    return (f"python -m softlib.book export --profile {profile} --sections {','.join(sections)} "
            f"--builds-on {where} --max-mib {BUNDLE_MAX_MIB:g} "
            f"{where}/{name}-$(date -u +%Y%m%dT%H%M).tar.gz",
            f"{where}/{name}-*.tar.gz")


def _weights_note(sections: list[str]) -> str:
    pairs = [(s, NEEDS_WEIGHTS_OF[s]) for s in sections if s in NEEDS_WEIGHTS_OF]
    return "".join(f"{s} needs the weights of the models of {src}, which results bundles "
                   f"do not carry: compute both in one run on one cache, or one architecture "
                   f"at a time (compute --archs LABEL, then export --pretrained-weights for the "
                   f"others; benchmarks/README.md). " for s, src in pairs)


def _how_to_compute(profile: str, sections: list[str]) -> str:
    """The commands that add ``sections`` to the results bundles a build without a GPU renders."""
    gpu = bool(profiles.get_profile(profile).get("requires_gpu"))
    export, out = export_command(profile, sections)
    return "\n".join([
        f"  to compute them, on {'a machine with a GPU' if gpu else 'a machine that can train them'}:",
        f"    {compute_command(profile, sections)}",
        f"    {export}",
        f"  then commit the new {out} and build again (make book PROFILE={profile}); "
        f"{_weights_note(sections)}--budget-seconds: no new job starts after that many seconds, "
        "and the same command continues from its cache"])


def not_computed_reason(r: dict) -> str:
    """Why a section checked against the cache (``_compute_one(check_only=True)``'s result
    ``r``) cannot be rendered: how far its results go, and the first one missing."""
    if r["error"] is not None:
        reason = f"checking its results raised {type(r['error']).__name__}: {r['error']}"
        if "no state dict" in str(r["error"]):
            reason += (" (a result must be recomputed from weights the cache does not hold: are "
                       "the evaluation data here the ones the bundle was computed with?)")
        return reason
    done = (f"the first {r['jobs']} of its {r['planned']} jobs are there, the next is not: "
            if r["jobs"] and r["planned"] else "")
    reason = f"{done}first result missing: {r['missing']}"
    if r.get("nearest"):
        kind, key, diff = r["nearest"]
        shown = ", ".join(f"`{path}` (here {_short(here)}, cached {_short(cached)})"
                          for path, here, cached in diff[:4])
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        reason += (f"; the nearest {kind} result in the cache ({key}) differs from it in "
                   f"{shown}{more}" if diff else "")
    return reason


def _short(value: object) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 28 else text[:25] + "..."


def _is_fingerprint(value: object) -> bool:
    """A data fingerprint (:func:`softlib.train.data_fingerprint`: 24 hex digits)."""
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{24}", value) is not None


def computed_from_other_data(r: dict) -> bool:
    """Whether the results a section misses are in the cache for other data: the nearest
    cached entry differs from the one needed in a data fingerprint (other images, labels or
    folds under this data root than where the cache's results were computed)."""
    near = r.get("nearest")
    return bool(near) and any(_is_fingerprint(here) and _is_fingerprint(cached)
                              for _, here, cached in near[2])


def _other_data_note(profile: str, section: str, data_root: str | os.PathLike) -> str:
    """The paragraph of a "not computed" page whose results are in the cache for other data:
    what the bundles' manifest says their data were, and what this data root holds."""
    from . import bundle
    from ..data import store
    rec = ((bundle.load_manifest(profile) or {}).get("sections") or {}).get(section) or {}
    theirs, here = rec.get("data") or {}, store.describe_data(data_root)

    origin = {"jpeg": "JPEG re-encoded", "synthetic": "synthetic fixture",
              "canonical": "not re-encoded"}

    def say(d: dict) -> str:
        return "; ".join(f"{name}: {v['source']} ({origin.get(v['origin'], v['origin'])})"
                         for name, v in sorted(d.items()))
    differ = {k: v for k, v in theirs.items() if here.get(k) != v}
    if theirs and not differ:
        told = ("The results' manifest records the same dataset sources as this data root's, "
                "so the data themselves differ (a changed file, labels or folds). ")
    else:
        told = (f"The results' manifest records their data as: {say(differ)}. " if differ else
                "The results' manifest does not record their data (bundles written before it "
                "did). ")
        # the datasets that differ; without a record, those every training section reads
        shown = {k: v for k, v in here.items() if k in (differ or ("cifar10", "cifar10h"))}
        told += f"This data root ({data_root}) holds: {say(shown) or 'none of them'}. "
    return (
        "**Computed from other data.** The cache holds results of this kind, but the nearest "
        "one differs from what this data root needs in a *data fingerprint* (a hash of the "
        "images, labels and folds that keys every result, so that results of other pixels are "
        f"never shown as this data's). {told}To render them, point `SOFTLIB_DATA` at a copy of "
        "the data they were computed from; to have results of this data, compute them "
        "(below).\n\n")


def _progress_by_group(profile: str, sections: list[str], overrides: dict, seed: int,
                       data_root: str | os.PathLike, inputs=None) -> dict[str, list[dict]]:
    """Each of ``sections``' jobs in the cache by group (:func:`plan.progress_by_group`), for
    the pages of sections not computed yet; {} where the plan cannot be built here (said).
    ``inputs``: the plan's data, loaded once for every plan of the build."""
    from . import plan as PL
    from ..cache import ResultCache
    if not sections:
        return {}
    cache = ResultCache()
    try:
        p = PL.build_plan(profile, sections, cache, seed, overrides, str(data_root), inputs)
    except Exception as exc:  # the pages still say what is missing, without the table
        print(f"note: no progress by group for {', '.join(sections)}: planning them failed "
              f"({type(exc).__name__}: {exc})", flush=True)
        return {}
    try:  # the device time still to do, at the throughput recorded under benchmarks/
        tp = PL.recorded_throughput()
    except (OSError, ValueError):
        tp = None
    out: dict[str, list[dict]] = {}
    for row in PL.progress_by_group(p, cache, tp):
        if tp is not None:
            row["device"] = tp.device
        if row["section"] in sections:
            out.setdefault(row["section"], []).append(row)
    return out


def _waiting(row: dict) -> str:
    return f" ({row['provisional']} wait for the stage before)" if row["provisional"] else ""


def _progress_line(rows: list[dict]) -> str:
    """A section's :func:`_progress_by_group` rows on one line: group by group in a stage whose
    groups are not all equally far (``train laing/basic 21/21; train laing/sngp 0/21``), else
    the stage in all (``finetune 0/140 in 14 groups``)."""
    stages: dict[str, list[dict]] = {}
    for r in rows:
        stages.setdefault(r["stage"], []).append(r)
    parts = []
    for stage, rs in stages.items():
        states = {"all" if r["done"] == r["jobs"] else "some" if r["done"] else "none"
                  for r in rs}
        if len(rs) > 1 and (len(states) > 1 or states == {"some"}):
            parts += [f"{stage} {r['group']} {r['done']}/{r['jobs']}{_waiting(r)}" for r in rs]
            continue
        total = {k: sum(r[k] for r in rs) for k in ("done", "jobs", "provisional")}
        groups = f" in {len(rs)} groups" if len(rs) > 1 else ""
        one = rs[0]["group"] if len(rs) == 1 and rs[0]["group"] else ""
        parts.append(f"{stage}{' ' + one if one else ''} {total['done']}/{total['jobs']}{groups}"
                     f"{_waiting(total)}")
    return "; ".join(parts)


def _progress_table(rows: list[dict] | None) -> str:
    """The Markdown table of a not-computed page: its jobs in the cache, group by group."""
    if not rows:
        return ""
    timed = all("seconds_to_do" in r for r in rows)
    device = short_device_name(str(rows[0].get("device", "GPU")))
    lines = ["How far it is: the jobs whose results are in the cache, by the groups that train "
             "together (a model type of the grid, the folds of one configuration)"
             + (f", and the time the rest would take on one {device}, estimated from the speeds "
                "recorded under `benchmarks/` (`python -m softlib.book plan` shows the "
                "arithmetic)." if timed else "."), "",
             "| stage | group | in the cache |" + (" still to do (estimate) |" if timed else ""),
             "| --- | --- | --- |" + (" --- |" if timed else "")]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['group'] or '(one at a time)'} | "
                     f"{r['done']} of {r['jobs']}{_waiting(r)} |"
                     + (f" {_duration(r['seconds_to_do'])} |" if timed else ""))
    if timed and len(rows) > 1:
        total = sum(r["seconds_to_do"] for r in rows)
        lines.append(f"| | **in all** | {sum(r['done'] for r in rows)} of "
                     f"{sum(r['jobs'] for r in rows)} | **{_duration(total)}** |")
    return "\n".join(lines) + "\n\n"


def _duration(seconds: float) -> str:
    """An estimated duration in words a reader compares at a glance: ``none``, ``< 1 min``,
    ``12 min``, ``1.4 h``."""
    if seconds <= 0:
        return "none"
    if seconds < 60:
        return "< 1 min"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _placeholder_notebook(section: str, profile: str, reason: str, gpu_profile: bool,
                          progress: list[dict] | None = None, other_data: str = ""):
    """The page of a section that could not be rendered from the cache: what is missing, how
    far its jobs are (``progress``: :func:`_progress_by_group`'s rows), whether the cache holds
    them for other data (``other_data``: :func:`_other_data_note`'s paragraph) and the exact
    commands that compute it."""
    import nbformat
    why = (f"profile `{profile}` is sized for a GPU and this machine has none"
           if gpu_profile else "this build renders only results already in the cache "
           "(`--from-bundles`)")
    export, out = export_command(profile, [section])
    md = f"""{_section_title(section)}

**Not computed yet.** This section of the `{profile}` book is rendered from results computed
elsewhere ({why}), and the results cache here does not hold everything it needs
({reason}). Nothing was trained for it here, so this page has no results yet.

{other_data}{_progress_table(progress)}To add it, run on {'a machine with a GPU' if gpu_profile else 'a machine that can train it'}:

```bash
{compute_command(profile, [section])}
{export}
```

then commit the new `{out}` and build the book again
(`make book PROFILE={profile}`): the runner imports every bundle of `results/{profile}/` into
the cache before it renders. {_weights_note([section])}`--budget-seconds` stops starting new
jobs after that many seconds; the same command continues from its cache.
"""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(md))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["softlib"] = {"profile": profile, "section": section, "commit": _commit(),
                              "not_computed": True, "reason": reason,
                              "other_data": bool(other_data), "progress": progress or []}
    return nb


def _forget_claims(section: str) -> None:
    """A section rendered as "not computed" must not leave an older build's claim records."""
    try:
        from .claims import records_dir
    except ImportError:
        return
    (records_dir() / f"{section}.json").unlink(missing_ok=True)


def run_sections(profile: str, sections: list[str] | None = None, data_root: str = "",
                 device: str = "auto", seed: int = 0,
                 overrides: dict[str, object] | None = None, *,
                 from_bundles: bool | None = None, results: str | os.PathLike | None = None,
                 cuda_available: bool | None = None,
                 require_complete: bool = False) -> dict[str, dict]:
    """Plan, compute, then execute ``sections`` (default: all) under ``profile``; publish them
    only if all succeed. Returns section -> its record (state, times, jobs, cache hits).

    *Compute*: each section's compute function (:mod:`softlib.book.sections`, the calls its notebook
    makes) runs in this process first, with a progress line, so that the notebooks only read
    the cache. *From bundles* (default: when the profile ``requires_gpu`` and there is no GPU
    here; ``from_bundles`` forces it either way): the bundles of ``results/<profile>/`` (or
    ``results``) are imported first and every training section is only *checked* against the
    cache, under a zero compute budget; a section that is not complete is not trained but
    rendered as a page that says so and gives the command that computes it (``require_complete``
    makes that an error). The benchmark of the compute page measures this machine and runs
    here either way. ``cuda_available`` overrides the GPU detection (tests).
    """
    import nbformat
    import papermill as pm

    from . import sections as S
    from .._io import save_json

    t_start = time.perf_counter()
    prof = profiles.get_profile(profile)  # unknown profile: one clear error before any work
    sections = sections or list(SECTIONS)
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise BookError(f"unknown section(s) {', '.join(bad)}; valid: {', '.join(SECTIONS)}")
    sections = [s for s in SECTIONS if s in sections]
    overrides = overrides or {}
    _check_overrides(profile, sections, overrides)
    env_commit = _commit()
    os.environ.setdefault("SOFTLIB_COMMIT", env_commit)
    if data_root:
        os.environ["SOFTLIB_DATA"] = str(Path(data_root).expanduser().resolve())
    staging = _staging()
    staging.mkdir(parents=True, exist_ok=True)
    from ..cache import ResultCache
    from ..train import resolve_device
    dev = str(resolve_device(device))
    gpu_profile = bool(prof.get("requires_gpu"))
    bundles = (gpu_profile and not _gpu_here(dev, cuda_available)) if from_bundles is None \
        else bool(from_bundles)
    n = len(sections)
    width = max(len(s) for s in sections)

    # ---- plan ---------------------------------------------------------------------------
    print(f"book: profile {profile} | {n} section(s) | device {dev} | cache "
          f"{ResultCache().root} | book {book_root()}", flush=True)
    if bundles:
        why = (f"profile {profile!r} is sized for a GPU and there is none here"
               if gpu_profile and from_bundles is None else "--from-bundles")
        print(f"plan: {why}: render from the results bundles in "
              f"{_rel(Path(results) if results else results_dir(profile))}/ and train nothing; "
              "a section whose results are not all there gets a 'not computed' page", flush=True)
        import_results(profile, results)
    else:
        dev = _checked_device(device) if cuda_available is None else dev
        print("plan: compute every section's results into the cache (trained here where "
              "missing), then execute the notebooks (they only read the cache), then build",
              flush=True)

    # ---- compute ------------------------------------------------------------------------
    print("compute:", flush=True)
    from .plan import _Inputs
    plan_inputs = _Inputs(for_running=False)  # the data of every plan this build makes, once
    records: dict[str, dict] = {}
    env_data = os.environ.get("SOFTLIB_DATA")
    root = S.section_data_root(profile, os.environ.get("SOFTLIB_DATA", ""))
    try:
        for i, section in enumerate(sections, 1):
            head = f"[{i}/{n}] {section:<{width}}"
            if section not in S.COMPUTE:
                records[section] = {"state": "nothing to compute", "compute_seconds": 0.0}
                print(f"{head}  nothing to compute (the notebook reads data and recorded "
                      "results only)", flush=True)
                continue
            own = {k: v for k, v in overrides.items() if k in profiles.resolve(profile, section)}
            params = profiles.resolve(profile, section, **own)
            check = bundles and section in S.DEFAULT_SECTIONS
            stem = Path(SECTIONS[section]).stem
            r = _compute_one(profile, section, params, own, dev, seed, root, f"[{i}/{n}] {section}",
                             check_only=check, log=staging / f"{stem}.compute.log")
            if isinstance(r["error"], KeyboardInterrupt):
                raise r["error"]
            jobs = (f"{r['jobs']}/{r['planned']} jobs" if r["planned"] is not None
                    else f"{r['jobs']} jobs")
            # the compute page's benchmark measures the machine that builds the book: it is
            # counted as a measurement, never as a study result trained here
            what = "trained" if section in S.DEFAULT_SECTIONS else "benchmarked"
            counts = f"{jobs} | {what} {r['trained']} | cache hits {r['hits']}"
            rec = {"compute_seconds": round(r["seconds"], 1), "jobs": r["jobs"],
                   "planned_jobs": r["planned"], what: r["trained"], "cache_hits": r["hits"]}
            if r["complete"]:
                rec["state"] = "complete"
                print(f"{head}  complete      {counts} | {r['seconds']:.0f} s", flush=True)
            elif check:
                r["nearest"] = _nearest_to_missing(r["stopped"], profile, section, own, seed,
                                                   root, plan_inputs)
                reason = not_computed_reason(r)
                rec.update(state="not computed", reason=reason)
                if computed_from_other_data(r):
                    rec["other_data"] = _other_data_note(profile, section, root)
                part = _complete_parts(profile, section, own, dev, seed, root,
                                       staging / f"{stem}.parts.log")
                if part is None:
                    print(f"{head}  NOT COMPUTED  {counts} | {reason}", flush=True)
                else:
                    rec.update(state="partial", part=part)
                    print(f"{head}  PARTIAL       {counts} | rendered from its complete "
                          f"{_describe_part(part)}", flush=True)
            else:
                err = r["error"]
                if err is None:  # a compute budget set by someone else ran out
                    err = r["stopped"]
                log_tail = _tail(r["log"])
                raise BookError(
                    f"section {section!r} failed while computing its results under profile "
                    f"{profile!r} after {r['seconds']:.0f} s (trained {r['trained']}, cache hits "
                    f"{r['hits']}):\n{r['traceback'] or repr(err)}"
                    + (f"\n--- its output ({r['log']}), last lines:\n{log_tail}" if log_tail
                       else ""))
            records[section] = rec
        for section, rows in _progress_by_group(
                profile, [s for s in sections if records[s]["state"] in INCOMPLETE],
                overrides, seed, root, plan_inputs).items():
            records[section]["progress"] = rows
    finally:
        if env_data is None:
            os.environ.pop("SOFTLIB_DATA", None)
        else:
            os.environ["SOFTLIB_DATA"] = env_data
    missing = [s for s in sections if records[s]["state"] == "not computed"]
    incomplete = [s for s in sections if records[s]["state"] in INCOMPLETE]
    if incomplete:
        if missing:
            print(f"not computed (their results are not in the cache): {', '.join(missing)}",
                  flush=True)
        partial = [s for s in incomplete if s not in missing]
        if partial:
            print(f"partial (rendered from their complete parts): {', '.join(partial)}",
                  flush=True)
        for s in incomplete:
            if records[s].get("progress"):
                print(f"  {s}, jobs in the cache: {_progress_line(records[s]['progress'])}",
                      flush=True)
        print(_how_to_compute(profile, incomplete), flush=True)
        if require_complete:
            raise BookError(f"--require-complete: section(s) {', '.join(incomplete)} are not "
                            "(all) computed; nothing was executed")
        if len(missing) == n:
            raise BookError(f"nothing can be rendered: none of the requested sections "
                            f"({', '.join(sections)}) has its results in the cache")

    # ---- execute ------------------------------------------------------------------------
    print("execute:", flush=True)
    timings: dict[str, dict] = {}
    # sections that report timings (the compute page) read this build's times as they accrue
    partial = staging / "timings.json"
    os.environ["SOFTLIB_TIMINGS"] = str(partial)
    save_json(partial, {})
    for i, section in enumerate(sections, 1):
        head = f"[{i}/{n}] {section:<{width}}"
        stem = Path(SECTIONS[section]).stem
        dst = staging / f"{stem}.ipynb"
        rec = records[section]
        if rec["state"] == "not computed":
            nbformat.write(_placeholder_notebook(section, profile, rec["reason"], gpu_profile,
                                                 rec.get("progress"), rec.get("other_data", "")),
                           dst)
            _forget_claims(section)
            timings[section] = {"seconds": rec["compute_seconds"], "peak_rss_mb": None,
                                "profile": profile, "execute_seconds": 0.0, **rec}
            print(f"{head}  not computed: page says so and how to compute it", flush=True)
            continue
        nb = _load_notebook(section)
        own = set(profiles.resolve(profile, section))
        params = {"profile": profile, "data_root": os.environ.get("SOFTLIB_DATA", ""),
                  "device": device, "seed": seed,
                  **{k: v for k, v in overrides.items() if k in own}}
        part = rec.get("part")
        if part:  # only its complete parts, said at the top of the page (after the title)
            params[part.get("notebook_param", part["param"])] = part["done"]
            nb.cells.insert(1, nbformat.v4.new_markdown_cell(
                _partial_banner(section, profile, part, rec.get("progress"))))
        src = staging / f"{stem}.in.ipynb"
        nbformat.write(nb, src)
        klog = staging / f"{stem}.kernel.log"
        klog.unlink(missing_ok=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3",
                                cwd=str(REPO), progress_bar=False, log_output=False,
                                kernel_manager_class=_kernel_manager(klog))
        except pm.PapermillExecutionError as exc:
            tb = _ANSI.sub("", "\n".join(exc.traceback or []))
            raise BookError(f"section {section!r} failed under profile {profile!r} "
                            f"(executed notebook kept at {dst}):\n{tb}\n"
                            f"{exc.ename}: {exc.evalue}") from None
        except Exception as exc:  # the kernel died, timed out, or never started
            tail = _tail(klog)
            raise BookError(f"section {section!r} failed under profile {profile!r}: "
                            f"{type(exc).__name__}: {exc}"
                            + (f"\n--- kernel log ({klog}), last lines:\n{tail}" if tail else "")
                            ) from None
        wall = time.perf_counter() - t0
        out = nbformat.read(dst, as_version=4)
        out.metadata["softlib"] = {"profile": profile, "section": section, "commit": env_commit}
        for c in out.cells:
            if "injected-parameters" in c.metadata.get("tags", []):
                c.metadata["tags"].append("remove-input")
        nbformat.write(out, dst)
        rec = dict(rec, state=rec["state"] if rec["state"] in ("complete", "partial")
                   else "rendered", execute_seconds=round(wall, 1))
        timings[section] = {"seconds": round(wall + rec.get("compute_seconds", 0.0), 1),
                            "peak_rss_mb": _peak_rss(out), "profile": profile, **rec}
        save_json(partial, timings)
        print(f"{head}  executed in {wall:.1f} s", flush=True)
    # every requested section succeeded: publish them together
    out_dir = sections_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    for section in sections:
        stem = Path(SECTIONS[section]).stem
        os.replace(staging / f"{stem}.ipynb", out_dir / f"{stem}.ipynb")
    timings_path = _timings_path()
    old = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    old.update(timings)
    save_json(timings_path, old)
    write_build_provenance(profile, old)
    _LAST_RUN.clear()
    _LAST_RUN.update(profile=profile, sections=sections, records=timings, start=t_start,
                     from_bundles=bundles)
    return timings


#: what the last :func:`run_sections` did (for the summary after the build)
_LAST_RUN: dict = {}


def print_summary(html: Path | None = None) -> None:
    """The table that ends ``run`` / ``all``: per section its state, compute and execution
    time, jobs, trained and cache hits; then what is missing and where the HTML is."""
    if not _LAST_RUN:
        return
    profile, recs = _LAST_RUN["profile"], _LAST_RUN["records"]
    w = max(len("section"), *(len(s) for s in recs))

    def secs(x):
        return "-" if x is None else f"{x:.0f} s" if x >= 10 else f"{x:.1f} s"

    rows = [f"  {'section':<{w}}  {'state':<13} {'compute':>8} {'execute':>8} {'jobs':>9} "
            f"{'trained':>8} {'cache hits':>10}"]
    tot = [0.0, 0.0, 0, 0]
    for s, r in recs.items():
        computed = "jobs" in r  # the section has a compute function
        jobs = "-" if not computed else (f"{r['jobs']}/{r['planned_jobs']}"
                                         if r.get("planned_jobs") is not None else str(r["jobs"]))
        state = {"not computed": "NOT COMPUTED", "partial": "PARTIAL",
                 "nothing to compute": "rendered"}.get(r["state"], r["state"])
        execute = r.get("execute_seconds") if r["state"] != "not computed" else None
        trained = (str(r["trained"]) if "trained" in r else
                   f"bench {r['benchmarked']}" if "benchmarked" in r else "-")
        rows.append(f"  {s:<{w}}  {state:<13} "
                    f"{secs(r.get('compute_seconds') if computed else None):>8} "
                    f"{secs(execute):>8} {jobs:>9} {trained:>8} "
                    f"{str(r.get('cache_hits', '-')):>10}")
        tot[0] += r.get("compute_seconds") or 0.0
        tot[1] += execute or 0.0
        tot[2] += r.get("trained") or 0
        tot[3] += r.get("cache_hits") or 0
    rows.append(f"  {'total':<{w}}  {'':<13} {secs(tot[0]):>8} {secs(tot[1]):>8} {'':>9} "
                f"{tot[2]:>8} {tot[3]:>10}")
    missing = [s for s, r in recs.items() if r["state"] == "not computed"]
    partial = [s for s, r in recs.items() if r["state"] == "partial"]
    elapsed = (time.perf_counter() - _LAST_RUN["start"]) / 60
    print(f"summary (profile {profile}, {elapsed:.1f} min in all"
          + (", rendered from results bundles: no study trained here"
             if _LAST_RUN["from_bundles"] else "") + "):")
    print("\n".join(rows))
    if any("benchmarked" in r for r in recs.values()):
        print("  (bench: the compute page's speed benchmark of this machine; it is measured where "
              "the book is built, not a study result)")
    print(f"complete: {', '.join(s for s in recs if s not in missing + partial) or 'none'}")
    for s in partial:
        print(f"PARTIAL: {s}, rendered from {_describe_part(recs[s]['part'])}; its page says so")
    if missing:
        print(f"NOT computed (their pages say so): {', '.join(missing)}")
    if missing or partial:
        print(_how_to_compute(profile, [s for s in recs if s in missing + partial]))
    print(f"HTML: {html}" if html is not None else
          f"executed notebooks: {sections_dir()} (HTML: `python -m softlib.book build`)")
    sys.stdout.flush()


def _first_sentence(text: str, limit: int = 200) -> str:
    """The first prose line of a PROVENANCE text, for a one-line table cell."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "|", "```", "{", "}")):
            line = line.replace("|", "/")
            return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " ..."
    return "(no description)"


def write_build_provenance(profile: str, timings: dict[str, dict] | None = None) -> Path:
    """The generated part of book/provenance.md: environment, datasets and (with ``timings``,
    the runner's per-section records) which sections this build computed, read from the cache
    or could not render."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from .. import data
    from .._io import save_text
    from ..paths import data_root

    rows = []
    for pkg in ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "statsmodels",
                "papermill", "jupytext", "jupyter-book"):
        try:
            rows.append(f"| `{pkg}` | {version(pkg)} |")
        except PackageNotFoundError:
            rows.append(f"| `{pkg}` | not installed |")
    root = data_root()
    synthetic = profiles.get_profile(profile)["synthetic_data"]
    lines = [f"Built under profile **`{profile}`** from softlib commit `{_commit()}` on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python "
             f"{platform.python_version()} on {platform.platform()}.", "",
             "| package | version |", "| --- | --- |", *rows, ""]
    if synthetic:
        lines += ["**This build used synthetic fixture data (smoke profile): its numbers are "
                  "not results.**", ""]
    else:
        lines += [f"Data root: `{root}`", "", "| dataset | present | source |", "| --- | --- | --- |"]
        for name in data.DATASETS:
            present = data.available(name, root=root)
            summary = _first_sentence(data.provenance(name, root=root)) if present else "absent"
            lines.append(f"| `{name}` | {'yes' if present else 'no'} | {summary} |")
    recs = {s: r for s, r in (timings or {}).items() if r.get("profile") == profile}
    if recs:
        from . import bundle
        try:
            man = bundle.load_manifest(profile) or {}
        except (OSError, ValueError):
            man = {}
        lines += ["", "| section | state | results trained in this build | read from the cache "
                  "| results computed on |", "| --- | --- | --- | --- | --- |"]
        for s in sorted(recs, key=_book_order):
            r = recs[s]
            state = {"not computed": "**not computed** (its page says how to compute it)",
                     "complete": "complete", "rendered": "complete (reads data only)"}.get(
                         r.get("state", "complete"), r.get("state", "complete"))
            if r.get("state") == "partial":
                state = f"**partial**: {_describe_part(r['part'])}"
            trained = (r.get("trained", f"none (benchmark: {r.get('benchmarked')})"
                             if "benchmarked" in r else "-") if "jobs" in r else "-")
            hits = r.get("cache_hits", "-") if "jobs" in r else "-"
            # every run (machine, GPU) whose results the section's record lists, slices included
            runs = bundle.computed_by(man.get("sections", {}).get(s)) if "jobs" in r else []
            lines.append(f"| `{s}` | {state} | {trained} | {hits} | "
                         f"{bundle.describe_runs(runs) if runs else '-'} |")
        lines.append("")
    path = book_root() / "book" / "generated" / "build_provenance.md"
    save_text(path, "\n".join(lines) + "\n")
    return path


def _commit() -> str:
    from .header import git_commit
    return git_commit()


def repository_url() -> str | None:
    """The public repository the book's Binder / Colab / repository buttons point at:
    ``$SOFTLIB_REPOSITORY_URL``, else the git remote ``origin`` (an ``https`` address, from an
    ssh one where needed), else None (the buttons are left out, never a placeholder)."""
    env = os.environ.get("SOFTLIB_REPOSITORY_URL")
    if env is not None:
        return env.strip().rstrip("/") or None
    try:
        out = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    url = out.stdout.strip() if out.returncode == 0 else ""
    m = re.match(r"^(?:ssh://)?git@([^:/]+)[:/](.+?)(?:\.git)?/?$", url)
    if m:
        return f"https://{m.group(1)}/{m.group(2)}"
    m = re.match(r"^(https?://[^ ]+?)(?:\.git)?/?$", url)
    return m.group(1) if m else None


def effective_config(url: str | None, source: Path | None = None) -> dict:
    """``_config.yml`` with the repository and launch buttons set from ``url`` (or removed)."""
    import yaml
    cfg = yaml.safe_load((source or REPO / "_config.yml").read_text())
    html = cfg.setdefault("html", {})
    if url:
        cfg.setdefault("repository", {})["url"] = url
        html["use_repository_button"] = html["use_issues_button"] = True
    else:
        cfg.pop("repository", None)
        cfg.pop("launch_buttons", None)
        html["use_repository_button"] = html["use_issues_button"] = False
    return cfg


def build_book(strict: bool = True) -> Path:
    """Build the HTML book from the executed sections (execution off); return index.html."""
    import nbformat
    root, out_dir = book_root(), sections_dir()
    missing = [s for s, f in SECTIONS.items() if not (out_dir / f"{Path(f).stem}.ipynb").exists()]
    if missing:
        raise BookError(f"not executed yet: {', '.join(missing)}; run "
                        f"`python -m softlib.book run --sections {','.join(missing)}` first")
    used = {nbformat.read(out_dir / f"{Path(f).stem}.ipynb", as_version=4)
            .metadata.get("softlib", {}).get("profile") for f in SECTIONS.values()}
    if len(used) > 1:
        raise BookError(f"the executed sections mix profiles {sorted(map(str, used))}; "
                        "rerun them all under one profile")
    if root != REPO:  # an outside book directory gets the current sources
        for src in [REPO / "_config.yml", REPO / "_toc.yml", *(REPO / "book").glob("*.md"),
                    *(REPO / "book" / "_static").glob("*")]:
            dst = root / src.relative_to(REPO)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    jb = Path(sys.executable).parent / "jupyter-book"  # the console script of this environment
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(root), "--builder", "html"]
    import yaml
    url = repository_url()
    eff = root / "_build" / "_config.effective.yml"
    eff.parent.mkdir(parents=True, exist_ok=True)
    eff.write_text(yaml.safe_dump(effective_config(url, root / "_config.yml"), sort_keys=False))
    cmd += ["--config", str(eff)]
    print("build: launch buttons " + (f"point at {url}" if url else
                                      "left out (no SOFTLIB_REPOSITORY_URL, no git remote)"),
          flush=True)
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    cmd += ["-q"]  # no Sphinx status lines; its warnings (errors under -W) are still shown
    placeholders = [s for s, f in SECTIONS.items()
                    if nbformat.read(out_dir / f"{Path(f).stem}.ipynb", as_version=4)
                    .metadata.get("softlib", {}).get("not_computed")]
    print("build: $ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    log = root / "_build" / "jupyter-book.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:  # its banner and status; warnings and errors stay on stderr
        res = subprocess.run(cmd, cwd=root, stdout=fh)
    if res.returncode != 0:
        tail = _tail(log)
        raise BookError(f"jupyter-book build failed (exit {res.returncode}); see the warnings "
                        f"above" + (f" and its output ({log}), last lines:\n{tail}" if tail else ""))
    index = root / "_build" / "html" / "index.html"
    print(f"build: done in {time.perf_counter() - t0:.0f} s" + (
        f"; section(s) {', '.join(placeholders)} are 'not computed' pages" if placeholders
        else ""), flush=True)
    print(f"book: {index}", flush=True)
    return index


def compute_sections(profile: str, sections: list[str] | None = None, data_root: str = "",
                     device: str = "auto", seed: int = 0,
                     overrides: dict[str, object] | None = None,
                     budget_seconds: float | None = None,
                     allow_cpu: bool = False, archs: list[str] | None = None,
                     halt_seconds: float | None = None) -> dict[str, str]:
    """Run the training / evaluation work of ``sections`` under ``profile`` into the cache.

    The same calls, with the same resolved parameters, as the sections' notebooks
    (:mod:`softlib.book.sections`), so executing the notebooks afterwards only reads the cache.
    Sections run in the order given (:func:`compute_order`: a section whose models another
    reuses goes first). With ``budget_seconds`` no new result is started after that many
    seconds: the run stops between jobs, says which sections are complete, and the next call
    continues from the cache. With ``halt_seconds`` a training still running then stops at the
    end of its last epoch that fits, after writing its checkpoint (:mod:`softlib.checkpoint`),
    and the next call resumes it there.
    Records the cache entries each section used in the profile's manifest (a section that was
    all cache hits, with the same parameters and entries as its record, keeps the record and
    so where it was computed). ``archs``: sections 3-4 fine-tune and attack only these
    architectures (every one is still pretrained) and are recorded as partial, so that the
    weights a bundle cannot carry are used on the machine that trained them. Returns section ->
    state ('complete', 'partial', 'stopped', 'not started', 'nothing to compute').
    """
    from . import bundle
    from . import sections as S
    from ..cache import ResultCache, set_deadline
    from ..checkpoint import TrainingHalted, checkpoint_seconds, set_halt

    for flag, v in (("--budget-seconds", budget_seconds), ("--halt-seconds", halt_seconds)):
        if v is not None and not v >= 0:
            raise BookError(f"{flag} must be a number of seconds >= 0, got {v:g}")
    if halt_seconds is not None and budget_seconds is not None and halt_seconds < budget_seconds:
        raise BookError(f"--halt-seconds ({halt_seconds:g}) must not come before "
                        f"--budget-seconds ({budget_seconds:g})")
    if halt_seconds is not None and checkpoint_seconds() <= 0:
        raise BookError("--halt-seconds needs checkpoints, which SOFTLIB_CHECKPOINT_SECONDS=0 "
                        "turns off")
    prof = profiles.get_profile(profile)
    names = sections or list(S.DEFAULT_SECTIONS)
    bad = [s for s in names if s not in SECTIONS]
    if bad:
        raise BookError(f"unknown section(s) {', '.join(bad)}; valid: {', '.join(SECTIONS)}")
    names = compute_order(names)  # as asked; section 4 after section 3, whose models it reuses
    overrides = overrides or {}
    _check_overrides(profile, names, overrides)
    if archs is not None and set(check_archs(profile, names, archs, overrides)) <= set(archs):
        archs = None  # every architecture: the sections are computed whole
    dev = _checked_device(device)
    root = S.section_data_root(profile, data_root)
    if prof.get("requires_gpu") and dev == "cpu" and not allow_cpu:
        raise BookError(f"profile {profile!r} is sized for a GPU ({prof['description']}); the "
                        f"device here is the CPU. Use a GPU, or pass --allow-cpu to run it anyway")
    os.environ.setdefault("SOFTLIB_COMMIT", _commit())
    print(f"compute: profile {profile} | device {dev} | data root {root} | cache "
          f"{ResultCache().root}" + (f" | budget {budget_seconds:g} s" if budget_seconds is not None
                                     else "")
          + (f" | halt {halt_seconds:g} s" if halt_seconds is not None else ""), flush=True)
    state: dict[str, str] = {s: "not started" for s in names}
    stopped: str | None = None
    halted = False
    set_deadline(budget_seconds)
    set_halt(halt_seconds)
    try:
        for i, section in enumerate(names, 1):
            head = f"[{i}/{len(names)}] {section}"
            if section not in S.COMPUTE:
                state[section] = "nothing to compute"
                print(f"{head}: nothing to compute (its notebook only reads data)", flush=True)
                continue
            own = {k: v for k, v in overrides.items() if k in profiles.resolve(profile, section)}
            params = profiles.resolve(profile, section, **own)
            print(f"{head}: computing ...", flush=True)
            r = _compute_one(profile, section, params, own, dev, seed, root, head, archs=archs)
            if r["stopped"] is not None:
                stopped = str(r["stopped"])
                halted = isinstance(r["stopped"], TrainingHalted)
            wall = r["seconds"]
            if r["error"] is not None:
                state[section] = "failed"
                print(f"{head}: " + ("interrupted" if isinstance(r["error"], KeyboardInterrupt)
                                     else "FAILED") + f" after {wall:.0f} s "
                      f"({type(r['error']).__name__})", flush=True)
                raise r["error"]
            if r["partial"]:
                state[section] = "partial"
                print(f"{head}: done for {', '.join(archs)} only in {wall:.0f} s (trained "
                      f"{r['trained']}, cache hits {r['hits']}): recorded as not complete",
                      flush=True)
                continue
            if not r["complete"]:
                state[section] = "stopped"
                why = stopped if halted else "the compute budget is spent"
                print(f"{head}: STOPPED after {wall:.0f} s: {why} (trained {r['trained']}, cache "
                      f"hits {r['hits']})", flush=True)
                break
            state[section] = "complete"
            print(f"{head}: complete in {wall:.0f} s (trained {r['trained']}, cache hits "
                  f"{r['hits']}, {r['entries']} cache entries)", flush=True)
    finally:
        set_deadline(None)
        set_halt(None)
    done = [s for s, v in state.items() if v == "complete"]
    todo = [s for s, v in state.items() if v in ("stopped", "not started", "partial")]
    print(f"manifest: {bundle.manifest_path(profile)}")
    if stopped is not None:
        what = (f"halted at {halt_seconds:g} s: the training in progress keeps a checkpoint of "
                "its last epoch" if halted else
                f"compute budget spent ({budget_seconds or 0:g} s): no new job was started "
                "after it")
        print(f"{what}. Complete: {', '.join(done) or 'none'}. Not complete: "
              f"{', '.join(todo)}. Run the same command again to continue from the cache.",
              flush=True)
    elif todo:
        print(f"Complete: {', '.join(done) or 'none'}. Done for architecture(s) "
              f"{', '.join(archs or [])} only: {', '.join(todo)}", flush=True)
    else:
        print(f"all requested sections complete: {', '.join(done) or 'none'}", flush=True)
    return state


def print_plan(profile: str, sections: list[str] | None = None, data_root: str = "",
               seed: int = 0, overrides: dict[str, object] | None = None, gpus: int = 32,
               device_name: str = "NVIDIA H200", list_jobs: bool = False) -> None:
    """Print the job plan of ``sections`` under ``profile`` (:mod:`softlib.book.plan`)."""
    from . import plan as PL
    from ..cache import ResultCache
    profiles.get_profile(profile)
    overrides = overrides or {}
    _check_overrides(profile, sections or list(SECTIONS), overrides)
    cache = ResultCache()
    print(f"plan: profile {profile}: loading the data and listing every job (a minute for "
          "paper's thousands; nothing is trained) ...", file=sys.stderr, flush=True)
    try:
        p = PL.build_plan(profile, sections, cache, seed, overrides, data_root)
    except ValueError as exc:
        raise BookError(str(exc)) from exc
    try:
        tp = PL.recorded_throughput(device_name)
    except ValueError as exc:
        print(f"note: {exc}; no cost estimate", flush=True)
        tp = None
    print(PL.format_summary(p, PL.summarise(p, cache, tp), tp, gpus), flush=True)
    from ..checkpoint import checkpoints_dir, in_progress
    for c in in_progress(checkpoints_dir(cache.root)):
        print(f"in progress: {c.get('label')}, checkpointed after epoch {c.get('epoch')}"
              f"{'/' + str(c['epochs']) if c.get('epochs') else ''} at {c.get('saved')} "
              f"({(c.get('bytes') or 0) / 2**20:.1f} MiB, {c['file']}): the next compute "
              "resumes it there", flush=True)
    if list_jobs:
        for i, stage in enumerate(p.stages, 1):
            for j in stage:
                state = ("provisional" if j.provisional else
                         "cached" if cache.has(j.kind, j.config) else "to do")
                print(f"  stage {i} {j.kind}/{j.key} {state:11s} {j.label}")


def compute_with_ray(profile: str, sections: list[str] | None = None, data_root: str = "",
                     device: str = "auto", seed: int = 0,
                     overrides: dict[str, object] | None = None,
                     budget_seconds: float | None = None, address: str | None = None,
                     gpus_per_job: float | None = None, cpus_per_job: float = 1,
                     retries: int = 3) -> dict[str, str]:
    """``compute --backend ray``: the planned jobs not cached yet as Ray tasks (their results
    written into this machine's cache), then :func:`compute_sections` here, which finds them
    cached, computes what no plan lists (cheap summaries) and writes the manifest."""
    from . import distributed
    from ..cache import ResultCache, set_deadline
    profiles.get_profile(profile)
    overrides = overrides or {}
    _check_overrides(profile, sections or list(SECTIONS), overrides)
    os.environ.setdefault("SOFTLIB_COMMIT", _commit())
    cache = ResultCache()
    t0 = time.perf_counter()
    set_deadline(budget_seconds)
    try:
        reports = distributed.compute_on_ray(profile, sections, cache=cache, seed=seed,
                                             overrides=overrides, data_root=data_root,
                                             address=address, gpus_per_job=gpus_per_job,
                                             cpus_per_job=cpus_per_job, retries=retries)
    except distributed.RayUnavailable as exc:
        raise BookError(str(exc)) from exc
    except Exception as exc:
        from ..cache import BudgetExhausted
        if not isinstance(exc, BudgetExhausted):
            raise
        print(f"ray: compute budget spent ({budget_seconds:g} s): no new job was submitted "
              "after it; run the same command again to continue from the cache", flush=True)
        return {}
    finally:
        set_deadline(None)
    n = sum(r.computed for r in reports)
    print(f"ray: {n} job(s) computed on the cluster in {time.perf_counter() - t0:.0f} s; "
          "checking every section here", flush=True)
    remaining = None if budget_seconds is None else max(0.0, budget_seconds
                                                         - (time.perf_counter() - t0))
    return compute_sections(profile, sections, data_root=data_root, device=device, seed=seed,
                            overrides=overrides, budget_seconds=remaining, allow_cpu=True)


def _book_order(section: str) -> int:
    return list(SECTIONS).index(section) if section in SECTIONS else len(SECTIONS)


def _add_common_args(p: argparse.ArgumentParser) -> None:
    """The arguments ``compute`` and ``plan`` share: which profile, data, sections, seed and
    parameter overrides."""
    p.add_argument("--profile", default=os.environ.get("PROFILE", "cpu"),
                   help=f"one of {', '.join(profiles.profile_names())} (default: cpu)")
    p.add_argument("--data-root", default=os.environ.get("SOFTLIB_DATA", ""),
                   help="the data root (default: $SOFTLIB_DATA, else ~/.cache/softlib/data; the "
                        "smoke profile writes its own synthetic fixtures instead); results "
                        "go to $SOFTLIB_CACHE (default ~/.cache/softlib/results)")
    p.add_argument("--sections", default="",
                   help="comma-separated, computed in this order (section 3 before 4, whose "
                        "models it reuses; default: generalisation, alternatives, adversarial, "
                        "calibration_ood)")
    p.add_argument("--seed", type=int, default=0,
                   help="the seed of folds, splits and training (default: 0)")
    p.add_argument("-p", "--param", action="append", default=[],
                   help="override a section parameter, name=value (YAML value, e.g. -p epochs=3 "
                        "-p 'lr=[0.01]'; each section's box in the book lists its parameters)")


DEVICE_HELP = ("auto (default: CUDA when torch sees one, else the CPU), cpu, cuda or cuda:N; "
               "checked before any data is loaded")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m softlib.book", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "all"):
        p = sub.add_parser(name, help=(
            "compute what the sections need (train where missing), execute their notebooks"
            + (" and build the HTML book (what `make book` runs)" if name == "all" else
               " (no HTML: `build` makes it)")))
        p.add_argument("--profile", default=os.environ.get("PROFILE", "cpu"),
                       help=f"one of {', '.join(profiles.profile_names())} (default: cpu)")
        p.add_argument("--data-root", default=os.environ.get("SOFTLIB_DATA", ""),
                       help="the data root (default: $SOFTLIB_DATA, else ~/.cache/softlib/data; the "
                            "smoke profile writes its own synthetic fixtures instead); results "
                            "go to $SOFTLIB_CACHE (default ~/.cache/softlib/results)")
        p.add_argument("--sections", default="", help="comma-separated (default: all)")
        p.add_argument("--device", default="auto", help=DEVICE_HELP)
        p.add_argument("--seed", type=int, default=0,
                       help="the seed of folds, splits and training (default: 0)")
        p.add_argument("-p", "--param", action="append", default=[],
                       help="override a section parameter, name=value (YAML value)")
        p.add_argument("--from-bundles", action=argparse.BooleanOptionalAction, default=None,
                       help="render only what the results cache (after importing the bundles "
                            "of results/<profile>/) holds and train nothing; sections missing "
                            "results get a 'not computed' page (default: on for a profile that "
                            "requires a GPU when there is none here)")
        p.add_argument("--results", default=None, metavar="DIR",
                       help="the bundles to import with --from-bundles "
                            "(default: results/<profile>/)")
        p.add_argument("--require-complete", action="store_true",
                       help="fail (exit 2) instead of rendering a 'not computed' page")
    p = sub.add_parser("compute", help="train / evaluate what the sections need into the cache "
                                       "(no papermill or Jupyter needed)")
    _add_common_args(p)
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="start no new training or evaluation job once this many seconds have "
                        "passed since the command started (loading data counts)")
    p.add_argument("--halt-seconds", type=float, default=None,
                   help="(local backend) stop a training still running this many seconds "
                        "after the start at the end of its last epoch that fits, keeping a "
                        "checkpoint the next call resumes from (a machine whose time ends "
                        "then loses nothing it trained)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--allow-cpu", action="store_true",
                   help="run a profile that requires a GPU on the CPU anyway")
    p.add_argument("--archs", default=None, metavar="LABEL,...",
                   help="alternatives and adversarial: fine-tune and attack only these "
                        "architectures (labels as in the profile; every one is still "
                        "pretrained), recorded as not complete: sections 3-4 one architecture "
                        "at a time, each on the machine that has its weights")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: train here, one job after another (default); ray: run the "
                        "planned jobs as Ray tasks (see `plan`), then check every section here")
    p.add_argument("--address", default=None,
                   help="with --backend ray: the cluster ('auto': the one this node belongs "
                        "to, 'ray://head:10001': a remote one; default: start a local one)")
    p.add_argument("--gpus-per-job", type=float, default=None,
                   help="with --backend ray: the GPU share of every job (default: 0.25 for a "
                        "network under 5M parameters, else 1)")
    p.add_argument("--cpus-per-job", type=float, default=1,
                   help="with --backend ray on a cluster without GPUs: CPUs per job")
    p.add_argument("--retries", type=int, default=3,
                   help="with --backend ray: times a job is retried when its worker dies")
    p = sub.add_parser("plan", help="list the jobs a profile's sections need, how many are "
                                    "cached and their estimated cost (runs nothing)")
    _add_common_args(p)
    p.add_argument("--gpus", type=int, default=32,
                   help="cluster size for the wall-time estimate (default: 32)")
    p.add_argument("--device-name", default="NVIDIA H200",
                   help="the recorded device whose throughput costs the jobs")
    p.add_argument("--jobs", action="store_true", help="also list every job")
    p = sub.add_parser("export", help="pack a profile's cached results into a bundle")
    p.add_argument("--profile", required=True)
    p.add_argument("out", nargs="?", metavar="OUT.tar.gz",
                   help="the bundle to write (required; a new file unless --force)")
    p.add_argument("--with-weights", nargs="?", const="all", default=None, metavar="SECTIONS",
                   help="include model weights (model.pt): of every entry, or of the entries of "
                        "the given comma-separated sections (e.g. adversarial); "
                        "`--with-weights OUT.tar.gz` means every entry's")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing OUT (and the parts of an earlier split of it)")
    p.add_argument("--allow-empty", action="store_true",
                   help="write the bundle even if it carries no cache entry (the sections "
                        "recorded none, or all are in the bundles it builds on); else refused")
    p.add_argument("--sections", default="",
                   help="comma-separated: only these sections' results (default: every section "
                        "the profile's manifest records)")
    p.add_argument("--builds-on", action="append", default=None, metavar="BUNDLE_OR_DIR",
                   help="leave out the entries these bundles (or every bundle of a directory, "
                        "e.g. results/gpu) already carry unchanged: the bundle then holds what "
                        "is new since them and needs them imported first (repeatable)")
    p.add_argument("--pretrained-weights", default=None, metavar="LABEL,...",
                   help="keep the weights of the pretrained models of these architectures "
                        "(section 3's labels): another machine can then fine-tune them, after "
                        "`compute --archs` ran the others here")
    p.add_argument("--max-mib", type=float, default=None, metavar="MIB",
                   help="split a bundle larger than this into parts, each building on the ones "
                        "before (results committed to git stay a few MB a file)")
    p = sub.add_parser("split", help="split a results bundle into parts of at most --max-mib")
    p.add_argument("file", help="the bundle (.tar.gz); its last part keeps its name")
    p.add_argument("--max-mib", type=float, required=True, metavar="MIB",
                   help="the largest part, in MiB (a positive number, e.g. 4)")
    p = sub.add_parser("import", help="add results bundles to this machine's cache")
    p.add_argument("file", nargs="+", help="bundles, or directories of them (e.g. results/gpu): "
                                           "each is imported after the bundles it builds on")
    sub.add_parser("build", help="build the HTML book from executed sections",
                   description="Build the HTML book (jupyter-book) from the notebooks that "
                               "`run` executed into book/sections/.")
    sub.add_parser("list", help="list sections and profiles",
                   description="List the sections (and their notebooks) and the profiles.")
    args = ap.parse_args(argv)
    from ..data.errors import DataError
    from .bundle import BundleError
    try:
        if args.cmd == "plan":
            print_plan(args.profile, [s for s in args.sections.split(",") if s] or None,
                       data_root=args.data_root, seed=args.seed,
                       overrides=_parse_overrides(args.param), gpus=args.gpus,
                       device_name=args.device_name, list_jobs=args.jobs)
            return 0
        archs = ([a.strip() for a in args.archs.split(",") if a.strip()]
                 if getattr(args, "archs", None) is not None else None)
        if args.cmd == "compute" and args.backend == "ray" and args.halt_seconds is not None:
            raise BookError("--halt-seconds runs on the local backend only")
        if args.cmd == "compute" and args.backend == "ray" and archs is not None:
            raise BookError("--archs runs on the local backend only (a cluster holds every "
                            "architecture's weights in its shared cache: compute them all)")
        if args.cmd == "compute" and args.backend == "ray":
            compute_with_ray(args.profile, [s for s in args.sections.split(",") if s] or None,
                             data_root=args.data_root, device=args.device, seed=args.seed,
                             overrides=_parse_overrides(args.param),
                             budget_seconds=args.budget_seconds, address=args.address,
                             gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job,
                             retries=args.retries)
            return 0
        if args.cmd == "compute":
            compute_sections(args.profile, [s for s in args.sections.split(",") if s] or None,
                             data_root=args.data_root, device=args.device, seed=args.seed,
                             overrides=_parse_overrides(args.param),
                             budget_seconds=args.budget_seconds, allow_cpu=args.allow_cpu,
                             archs=archs, halt_seconds=args.halt_seconds)
            return 0
        if args.cmd == "export":
            from .bundle import export_bundle, max_bytes_of
            out, w = args.out, args.with_weights
            if out is None and w is not None and w.endswith(".tar.gz"):
                out, w = w, "all"  # `--with-weights OUT.tar.gz`: the flag alone, then OUT
            if out is None:
                raise BundleError("export: name the bundle to write, OUT.tar.gz")
            if w is not None and w.endswith(".tar.gz"):
                raise BundleError(f"--with-weights {w}: takes section names, not a bundle; write "
                                  f"--with-weights=SECTIONS, or put {out} before the flag")
            if w not in (None, "all", "none"):
                w = [s for s in w.split(",") if s]
            b = export_bundle(args.profile, out, with_weights=w,
                              sections=[s for s in args.sections.split(",") if s] or None,
                              builds_on=args.builds_on,
                              pretrained_weights=None if args.pretrained_weights is None else
                              [a.strip() for a in args.pretrained_weights.split(",") if a.strip()],
                              max_bytes=max_bytes_of(args.max_mib), force=args.force,
                              allow_empty=args.allow_empty)
            size = Path(out).stat().st_size
            incomplete = [s for s, c in b["complete"].items() if not c]
            based = (f" ({len(b['requires'])} more in the bundles it builds on)"
                     if b["requires"] else "")
            print(f"bundle {out}: profile {args.profile}, "
                  f"{b['entries'] - len(b['requires'])} cache entries{based}, "
                  f"{len(b['files'])} files, {size / 2**20:.1f} MiB; weights: "
                  f"{', '.join(b['with_weights']) or 'none'}")
            if b.get("parts"):
                print(f"split into {len(b['parts'])} bundles of at most {args.max_mib:g} MiB, "
                      f"each building on the ones before; import them all (a directory): "
                      + ", ".join(f"{p} ({(Path(out).parent / p).stat().st_size / 2**20:.1f}"
                                  " MiB)" for p in b["parts"]))
            if incomplete:
                print(f"note: section(s) {', '.join(incomplete)} were not complete when exported")
            if b.get("not_started"):
                print(f"note: section(s) {', '.join(b['not_started'])} have not started yet (no "
                      "record in the manifest): not in this bundle")
            if "adversarial" in b["complete"] and not (
                    "all" in b["with_weights"] or "adversarial" in b["with_weights"]):
                print("note: section 4 renders from the attack results in this bundle; to attack "
                      "section 3's models with other parameters elsewhere, export with "
                      "--with-weights adversarial")
            return 0
        if args.cmd == "split":
            from .bundle import max_bytes_of, split_bundle
            parts = split_bundle(args.file, max_bytes_of(args.max_mib))
            print(f"{args.file}: " + ("within the limit, left as it is" if len(parts) == 1 else
                  f"{len(parts)} parts: " + ", ".join(
                      f"{p.name} ({p.stat().st_size / 2**20:.1f} MiB)" for p in parts)))
            return 0
        if args.cmd == "import":
            from .bundle import bundle_paths, import_bundle
            if len(args.file) > 1 or Path(args.file[0]).is_dir():
                done = import_bundles(bundle_paths(args.file))
                return 2 if any("error" in r for r in done) else 0
            r = import_bundle(args.file[0])
            print(f"imported {args.file[0]} (profile {r['profile']}): {r['imported']} new entries, "
                  f"{r['identical']} already present and identical, {r['weights_added']} "
                  f"weights added; sections complete: "
                  + ", ".join(f"{s} {'yes' if r['complete'][s] else 'NO'}"
                              for s in sorted(r["complete"], key=_book_order)))
            return 0
        if args.cmd == "list":
            for s, f in SECTIONS.items():
                print(f"{s:18s} notebooks/{f}")
            print("profiles: " + ", ".join(f"{n} ({profiles.PROFILES[n]['description']})"
                                            for n in profiles.profile_names()))
            return 0
        if args.cmd in ("run", "all"):
            run_sections(args.profile, [s for s in args.sections.split(",") if s] or None,
                         data_root=args.data_root, device=args.device, seed=args.seed,
                         overrides=_parse_overrides(args.param),
                         from_bundles=args.from_bundles, results=args.results,
                         require_complete=args.require_complete)
        if args.cmd == "run":
            print_summary()
        if args.cmd in ("build", "all"):
            index = build_book()
            if args.cmd == "all":
                print_summary(index)
    except (BookError, BundleError, profiles.ProfileError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: every result finished so far is in the cache (and a training in "
              "progress keeps its last epoch checkpoint); run the same command again to "
              "continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
