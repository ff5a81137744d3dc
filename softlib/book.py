"""The book runner: execute every section under a profile with papermill, then build the book.

    python -m softlib.book run   [--profile cpu] [--data-root DIR] [--sections a,b] [-p name=value]
    python -m softlib.book build
    python -m softlib.book all   (run, then build)
    python -m softlib.book list
    python -m softlib.book compute --profile P [--sections a,b] [--budget-seconds N] [--device auto]
                                   [--seed 0] [-p name=value]
    python -m softlib.book export --profile P OUT.tar.gz [--with-weights [SECTIONS]]
    python -m softlib.book import FILE.tar.gz

Sections are paired jupytext notebooks in ``notebooks/``. Each is converted in memory, executed
by papermill with the profile's parameters, and written to ``book/sections/`` (where
``_toc.yml`` expects it) only when every requested section succeeded, so a failure never leaves
a half-updated book. jupyter-book then builds HTML with execution off and warnings as errors.

``compute`` runs only the training and evaluation work of the sections (the same calls, with the
same resolved parameters, as their notebooks; see :mod:`softlib.sections`) into the results
cache, without papermill, Jupyter or IPython: on a machine with a GPU, say. ``--budget-seconds``
stops it between jobs; the next call continues from the cache. It records which cache entries
each section used in ``<cache root>/manifests/<profile>.json``; ``export`` packs them into a
results bundle and ``import`` adds a bundle to another machine's cache (:mod:`softlib.bundle`).
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

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def book_root() -> Path:
    """Where the book is executed and built: ``$SOFTLIB_BOOK_DIR``, else the repository."""
    env = os.environ.get("SOFTLIB_BOOK_DIR")
    return Path(env).expanduser().resolve() if env else REPO


def sections_dir() -> Path:
    return book_root() / "book" / "sections"


def _staging() -> Path:
    return book_root() / "_build" / "staging"


def _timings_path() -> Path:
    return sections_dir() / "timings.json"

# section name -> notebook file, in book order (the compute page runs last: it shows the others' times)
SECTIONS = {
    "cifar10h_data": "01_cifar10h_data.py",
    "generalisation": "02_generalisation.py",
    "alternatives": "03_alternatives.py",
    "adversarial": "04_adversarial.py",
    "calibration_ood": "05_calibration_ood.py",
    "imagenet_humans": "06_imagenet_humans.py",
    "compute": "07_compute.py",
}

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
    """Every override must be a parameter of at least one requested section."""
    known = set()
    for s in sections:
        known |= set(profiles.resolve(profile, s))
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


def run_sections(profile: str, sections: list[str] | None = None, data_root: str = "",
                 device: str = "auto", seed: int = 0,
                 overrides: dict[str, object] | None = None) -> dict[str, dict]:
    """Execute ``sections`` (default: all) under ``profile``; publish them only if all succeed."""
    import nbformat
    import papermill as pm

    profiles.get_profile(profile)  # unknown profile: one clear error before any work
    sections = sections or list(SECTIONS)
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise BookError(f"unknown section(s) {', '.join(bad)}; valid: {', '.join(SECTIONS)}")
    overrides = overrides or {}
    _check_overrides(profile, sections, overrides)
    env_commit = _commit()
    os.environ.setdefault("SOFTLIB_COMMIT", env_commit)
    if data_root:
        os.environ["SOFTLIB_DATA"] = str(Path(data_root).expanduser().resolve())
    staging = _staging()
    staging.mkdir(parents=True, exist_ok=True)
    timings: dict[str, dict] = {}
    # sections that report timings (the compute page) read this build's times as they accrue
    partial = staging / "timings.json"
    os.environ["SOFTLIB_TIMINGS"] = str(partial)
    from ._io import save_json
    save_json(partial, {})
    for i, section in enumerate(sections, 1):
        nb = _load_notebook(section)
        src = staging / f"{Path(SECTIONS[section]).stem}.in.ipynb"
        dst = staging / f"{Path(SECTIONS[section]).stem}.ipynb"
        nbformat.write(nb, src)
        own = set(profiles.resolve(profile, section))
        params = {"profile": profile, "data_root": os.environ.get("SOFTLIB_DATA", ""),
                  "device": device, "seed": seed,
                  **{k: v for k, v in overrides.items() if k in own}}
        print(f"[{i}/{len(sections)}] {section} (profile {profile}) ...", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3",
                                cwd=str(REPO), progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as exc:
            tb = _ANSI.sub("", "\n".join(exc.traceback or []))
            raise BookError(f"section {section!r} failed under profile {profile!r} "
                            f"(executed notebook kept at {dst}):\n{tb}\n"
                            f"{exc.ename}: {exc.evalue}") from None
        wall = time.perf_counter() - t0
        out = nbformat.read(dst, as_version=4)
        out.metadata["softlib"] = {"profile": profile, "section": section, "commit": env_commit}
        for c in out.cells:
            if "injected-parameters" in c.metadata.get("tags", []):
                c.metadata["tags"].append("remove-input")
        nbformat.write(out, dst)
        timings[section] = {"seconds": round(wall, 1), "peak_rss_mb": _peak_rss(out),
                            "profile": profile}
        save_json(partial, timings)
        print(f"    done in {wall:.1f} s", flush=True)
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
    write_build_provenance(profile)
    return timings


def _first_sentence(text: str, limit: int = 200) -> str:
    """The first prose line of a PROVENANCE text, for a one-line table cell."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "|", "```", "{", "}")):
            line = line.replace("|", "/")
            return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " ..."
    return "(no description)"


def write_build_provenance(profile: str) -> Path:
    """The generated part of book/provenance.md: environment and datasets of this build."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from . import data
    from ._io import save_text
    from .paths import data_root

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
    path = book_root() / "book" / "generated" / "build_provenance.md"
    save_text(path, "\n".join(lines) + "\n")
    return path


def _commit() -> str:
    from .book_header import git_commit
    return git_commit()


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
        for src in [REPO / "_config.yml", REPO / "_toc.yml", *(REPO / "book").glob("*.md")]:
            dst = root / src.relative_to(REPO)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    jb = Path(sys.executable).parent / "jupyter-book"  # the console script of this environment
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(root), "--builder", "html"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print("$ " + " ".join(cmd), flush=True)
    res = subprocess.run(cmd, cwd=root)
    if res.returncode != 0:
        raise BookError(f"jupyter-book build failed (exit {res.returncode}); see the warnings above")
    index = root / "_build" / "html" / "index.html"
    print(f"book: {index}")
    return index


def compute_sections(profile: str, sections: list[str] | None = None, data_root: str = "",
                     device: str = "auto", seed: int = 0,
                     overrides: dict[str, object] | None = None,
                     budget_seconds: float | None = None,
                     allow_cpu: bool = False) -> dict[str, str]:
    """Run the training / evaluation work of ``sections`` under ``profile`` into the cache.

    The same calls, with the same resolved parameters, as the sections' notebooks
    (:mod:`softlib.sections`), so executing the notebooks afterwards only reads the cache.
    With ``budget_seconds`` no new result is started after that many seconds: the run stops
    between jobs, says which sections are complete, and the next call continues from the cache.
    Records the cache entries each section used in the profile's manifest. Returns section ->
    state ('complete', 'stopped', 'not started', 'nothing to compute').
    """
    from . import bundle
    from . import sections as S
    from .cache import BudgetExhausted, ResultCache, record_access, set_deadline
    from .train import resolve_device

    prof = profiles.get_profile(profile)
    names = sections or list(S.DEFAULT_SECTIONS)
    bad = [s for s in names if s not in SECTIONS]
    if bad:
        raise BookError(f"unknown section(s) {', '.join(bad)}; valid: {', '.join(SECTIONS)}")
    names = [s for s in SECTIONS if s in names]  # book order: section 4 reuses section 3's models
    overrides = overrides or {}
    _check_overrides(profile, names, overrides)
    root = S.section_data_root(profile, data_root)
    dev = str(resolve_device(device))
    if prof.get("requires_gpu") and dev == "cpu" and not allow_cpu:
        raise BookError(f"profile {profile!r} is sized for a GPU ({prof['description']}); the "
                        f"device here is the CPU. Use a GPU, or pass --allow-cpu to run it anyway")
    os.environ.setdefault("SOFTLIB_COMMIT", _commit())
    print(f"compute: profile {profile} | device {dev} | data root {root} | cache "
          f"{ResultCache().root}" + (f" | budget {budget_seconds:g} s" if budget_seconds is not None
                                     else ""), flush=True)
    state: dict[str, str] = {s: "not started" for s in names}
    stopped: str | None = None
    set_deadline(budget_seconds)
    try:
        for i, section in enumerate(names, 1):
            head = f"[{i}/{len(names)}] {section}"
            if section not in S.COMPUTE:
                state[section] = "nothing to compute"
                print(f"{head}: nothing to compute (its notebook only reads data)", flush=True)
                continue
            own = profiles.resolve(profile, section)
            params = profiles.resolve(profile, section,
                                      **{k: v for k, v in overrides.items() if k in own})
            cache = ResultCache()
            print(f"{head}: computing ...", flush=True)
            t0 = time.perf_counter()
            error: BaseException | None = None
            with record_access() as touched:
                try:
                    S.COMPUTE[section](params, cache, dev, seed, root, profile=profile)
                except BudgetExhausted as exc:
                    stopped = str(exc)
                except BaseException as exc:  # recorded as incomplete, then raised
                    error = exc
            wall = time.perf_counter() - t0
            complete = stopped is None and error is None
            bundle.update_manifest(profile, section, {
                "complete": complete, "entries": touched, "params": params,
                "overrides": {k: v for k, v in overrides.items() if k in own}, "seed": seed,
                "seconds": round(wall, 1), "trained": cache.misses, "cache_hits": cache.hits,
                "data_root": str(root)}, device=dev)
            if error is not None:
                state[section] = "failed"
                print(f"{head}: FAILED after {wall:.0f} s ({type(error).__name__})", flush=True)
                raise error
            if not complete:
                state[section] = "stopped"
                print(f"{head}: STOPPED after {wall:.0f} s: the compute budget is spent "
                      f"(trained {cache.misses}, cache hits {cache.hits})", flush=True)
                break
            state[section] = "complete"
            print(f"{head}: complete in {wall:.0f} s (trained {cache.misses}, cache hits "
                  f"{cache.hits}, {len(touched)} cache entries)", flush=True)
    finally:
        set_deadline(None)
    done = [s for s, v in state.items() if v == "complete"]
    todo = [s for s, v in state.items() if v in ("stopped", "not started")]
    print(f"manifest: {bundle.manifest_path(profile)}")
    if stopped is not None:
        print(f"compute budget spent ({budget_seconds or 0:g} s): no new job was started after it. "
              f"Complete: {', '.join(done) or 'none'}. Not complete: {', '.join(todo)}. Run the "
              "same command again to continue from the cache.", flush=True)
    else:
        print(f"all requested sections complete: {', '.join(done) or 'none'}", flush=True)
    return state


def _book_order(section: str) -> int:
    return list(SECTIONS).index(section) if section in SECTIONS else len(SECTIONS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m softlib.book", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "all"):
        p = sub.add_parser(name, help="execute sections" + (" and build" if name == "all" else ""))
        p.add_argument("--profile", default=os.environ.get("PROFILE", "cpu"),
                       help=f"one of {', '.join(profiles.profile_names())} (default: cpu)")
        p.add_argument("--data-root", default=os.environ.get("SOFTLIB_DATA", ""))
        p.add_argument("--sections", default="", help="comma-separated (default: all)")
        p.add_argument("--device", default="auto")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("-p", "--param", action="append", default=[],
                       help="override a section parameter, name=value (YAML value)")
    p = sub.add_parser("compute", help="train / evaluate what the sections need into the cache "
                                       "(no papermill or Jupyter needed)")
    p.add_argument("--profile", default=os.environ.get("PROFILE", "cpu"),
                   help=f"one of {', '.join(profiles.profile_names())} (default: cpu)")
    p.add_argument("--data-root", default=os.environ.get("SOFTLIB_DATA", ""))
    p.add_argument("--sections", default="",
                   help="comma-separated (default: generalisation, alternatives, adversarial, "
                        "calibration_ood)")
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="start no new training or evaluation job once this many seconds have "
                        "passed since the command started (loading data counts)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-cpu", action="store_true",
                   help="run a profile that requires a GPU on the CPU anyway")
    p.add_argument("-p", "--param", action="append", default=[],
                   help="override a section parameter, name=value (YAML value)")
    p = sub.add_parser("export", help="pack a profile's cached results into a bundle")
    p.add_argument("--profile", required=True)
    p.add_argument("out", help="the bundle to write (.tar.gz)")
    p.add_argument("--with-weights", nargs="?", const="all", default=None, metavar="SECTIONS",
                   help="include model weights (model.pt): of every entry, or of the entries of "
                        "the given comma-separated sections (e.g. adversarial)")
    p = sub.add_parser("import", help="add a results bundle to this machine's cache")
    p.add_argument("file")
    sub.add_parser("build", help="build the HTML book from executed sections")
    sub.add_parser("list", help="list sections and profiles")
    args = ap.parse_args(argv)
    from .bundle import BundleError
    try:
        if args.cmd == "compute":
            compute_sections(args.profile, [s for s in args.sections.split(",") if s] or None,
                             data_root=args.data_root, device=args.device, seed=args.seed,
                             overrides=_parse_overrides(args.param),
                             budget_seconds=args.budget_seconds, allow_cpu=args.allow_cpu)
            return 0
        if args.cmd == "export":
            from .bundle import export_bundle
            w = args.with_weights
            if w not in (None, "all", "none"):
                w = [s for s in w.split(",") if s]
            b = export_bundle(args.profile, args.out, with_weights=w)
            size = Path(args.out).stat().st_size
            incomplete = [s for s, c in b["complete"].items() if not c]
            print(f"bundle {args.out}: profile {args.profile}, {b['entries']} cache entries, "
                  f"{len(b['files'])} files, {size / 2**20:.1f} MiB; weights: "
                  f"{', '.join(b['with_weights']) or 'none'}")
            if incomplete:
                print(f"note: section(s) {', '.join(incomplete)} were not complete when exported")
            if "adversarial" in b["complete"] and not (
                    "all" in b["with_weights"] or "adversarial" in b["with_weights"]):
                print("note: the adversarial notebook rebuilds section 3's fine-tuned models from "
                      "their weights; to render it from this bundle alone, export with "
                      "--with-weights adversarial")
            return 0
        if args.cmd == "import":
            from .bundle import import_bundle
            r = import_bundle(args.file)
            print(f"imported {args.file} (profile {r['profile']}): {r['imported']} new entries, "
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
                         overrides=_parse_overrides(args.param))
        if args.cmd in ("build", "all"):
            build_book()
    except (BookError, BundleError, profiles.ProfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
