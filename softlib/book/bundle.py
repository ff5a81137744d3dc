"""Manifests of the cache entries a profile's sections use, and results bundles made from them.

``python -m softlib.book compute`` records, per profile, which cache entries each section loaded
or saved: ``<cache root>/manifests/<profile>.json`` (section -> ``[[kind, key], ...]``, whether
the section's work is complete, and where it was computed). ``export`` packs those entries into
a ``.tar.gz`` results bundle, like showyourwork's cached intermediate results; ``import`` puts
a bundle's entries into another machine's cache, so its notebooks find everything there.

A bundle holds ``softlib-bundle/BUNDLE.json`` (format, profile, the SHA-256 and size of every
other file), ``softlib-bundle/manifest.json`` (the profile's manifest) and
``softlib-bundle/entries/<kind>/<key>/{meta.json, arrays.npz[, model.pt]}``. Weights
(``model.pt``) are left out unless asked for.

A bundle may *build on* earlier bundles (``export --builds-on results/gpu``): entries that
those already carry, unchanged, are left out and named in ``BUNDLE.json``'s ``requires``
(entry -> the SHA-256 of its ``meta.json`` and the bundle that carries it). So each slice of a
long computation commits only what it added, while its manifest still records the whole
section; importing it needs the entries it builds on in the cache first. A bundle larger than
a size is written as a chain of such bundles (:func:`split_bundle`), so that no file committed to
git is more than a few MB.

Import is strict: every member must be a plain file at one of those paths (no absolute paths,
no ``..``, no links or devices), every checksum and size must match, every entry's
``meta.json`` must hash to the key it is stored under, and the manifest must list exactly the
bundle's entries and those it requires, which must already be in the cache, unchanged. An
existing entry under the same key is left alone when it is identical (or only lacks the
bundle's weights, which are then added); a *different* existing entry stops the import before
anything is written. Entries are written beside their final place and renamed
into it, as :class:`softlib.cache.ResultCache` does. Nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import re
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from .._io import atomic_path, save_json, sha256_file
from ..cache import canonical_json, config_key
from ..paths import cache_root

BUNDLE_FORMAT = 2  # 2: BUNDLE.json may name entries the bundle builds on ('requires')
READABLE_FORMATS = (1, 2)
MANIFEST_FORMAT = 1
TOP = "softlib-bundle"
ENTRY_FILES = ("meta.json", "arrays.npz", "model.pt")
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_KEY = re.compile(r"^[0-9a-f]{20}$")


class BundleError(RuntimeError):
    """A bundle that cannot be made or must not be imported (corrupt, mismatched, conflicting)."""


class MissingBaseError(BundleError):
    """A bundle that builds on entries the cache does not hold yet (import their bundle first)."""


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------

def manifest_path(profile: str, root: str | os.PathLike | None = None) -> Path:
    return cache_root(root) / "manifests" / f"{profile}.json"


def load_manifest(profile: str, root: str | os.PathLike | None = None) -> dict[str, Any] | None:
    path = manifest_path(profile, root)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def provenance(device: str | None = None) -> dict[str, Any]:
    """Where and with what a section was computed: machine, device name, torch, commit, date."""
    from .header import git_commit
    info: dict[str, Any] = {"machine": f"{platform.node()} ({platform.platform()})",
                            "python": platform.python_version(), "git_commit": git_commit(),
                            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        import torch
        info["torch"] = torch.__version__
        name = "cpu"
        if device and str(device).startswith("cuda") and torch.cuda.is_available():
            name = torch.cuda.get_device_name(torch.device(device))
        elif device and str(device).startswith("mps"):
            name = "Apple MPS"
        info["device"] = str(device) if device else "unknown"
        info["device_name"] = name
    except ImportError:  # pragma: no cover - torch is a dependency
        info["torch"] = "not installed"
    return info


def same_json(a: object, b: object) -> bool:
    """Whether two JSON-able values are equal as JSON (key order aside)."""
    return canonical_json(a) == canonical_json(b)


def machine_of(prov: dict[str, Any]) -> dict[str, str]:
    """The device name and short machine name a :func:`provenance` record names."""
    return {"device_name": prov.get("device_name") or prov.get("device") or "unknown",
            "machine": str(prov.get("machine", "unknown")).split(" (")[0]}


def short_device_name(device: str) -> str:
    """A GPU's name without the vendor: ``H100 80GB HBM3``, ``H200``."""
    return device.replace("NVIDIA ", "")


def computed_by(rec: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The runs that computed a section record's results, oldest first: device name, machine,
    date and how many cache entries each computed. A record written before this list was
    kept stands for its own run alone."""
    if not rec:
        return []
    if "computed_by" in rec:
        return [dict(r) for r in rec["computed_by"]]
    if not rec.get("trained"):
        return []
    p = rec.get("provenance") or {}
    return [{**machine_of(p), "date": p.get("date"), "trained": int(rec["trained"])}]


def describe_runs(runs: list[dict[str, Any]]) -> str:
    """The runs of :func:`computed_by` in one line, by device and machine in order of first
    run: ``NVIDIA H200 (vm): 90 results in 3 runs, 2026-11-26; NVIDIA H100 (vm): 120, ...``."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((str(r.get("device_name")), str(r.get("machine"))), []).append(r)
    parts = []
    for (device, machine), rs in groups.items():
        days = sorted({str(r.get("date") or "?")[:10] for r in rs})
        n = sum(int(r.get("trained") or 0) for r in rs)
        parts.append(f"{device} ({machine}): {n} result{'s' if n != 1 else ''}"
                     f"{f' in {len(rs)} runs' if len(rs) > 1 else ''}, "
                     f"{days[0] if len(days) == 1 else f'{days[0]} to {days[-1]}'}")
    return "; ".join(parts)


def _with_runs(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """``new`` with ``computed_by``: the runs ``old`` lists when it is the same section
    configuration (a section computed in slices, on several machines), then new's own."""
    same = old is not None and same_json(old.get("params"), new.get("params")) \
        and old.get("seed") == new.get("seed")
    runs = computed_by(old) if same else []
    for run in computed_by(new):
        if run not in runs:
            runs.append(run)
    return dict(new, computed_by=runs)


def update_manifest(profile: str, section: str, record: dict[str, Any],
                    root: str | os.PathLike | None = None, device: str | None = None) -> Path:
    """Replace ``section``'s record in the profile's manifest (written atomically), keeping
    the list of runs that computed its results (:func:`computed_by`)."""
    man = load_manifest(profile, root) or {"format": MANIFEST_FORMAT, "profile": profile,
                                           "sections": {}}
    prov = provenance(device)
    record = dict(record, provenance=prov)
    record["entries"] = [[str(k), str(v)] for k, v in record.get("entries", [])]
    man["sections"][section] = _with_runs(record, man["sections"].get(section))
    man["provenance"] = prov
    path = manifest_path(profile, root)
    save_json(path, man)
    return path


def manifest_entries(man: dict[str, Any], sections: Iterable[str] | None = None
                     ) -> list[tuple[str, str]]:
    """Every ``(kind, key)`` the manifest lists (of ``sections``), in order, without repeats."""
    seen: dict[tuple[str, str], None] = {}
    for name, sec in man.get("sections", {}).items():
        if sections is None or name in sections:
            for kind, key in sec.get("entries", []):
                seen.setdefault((str(kind), str(key)), None)
    return list(seen)


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

def bundle_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The bundles named by ``paths``: files, and every ``*.tar.gz`` of a directory (none
    where a directory does not exist yet, as before the first bundle)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.glob("*.tar.gz")))
        elif p.is_file():
            out.append(p)
        elif p.name.endswith(".tar.gz"):
            raise BundleError(f"no bundle at {p}")
    return out


def read_bundle_listing(path: str | os.PathLike) -> dict[str, Any]:
    """The ``BUNDLE.json`` of a bundle (read without extracting anything else)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name == f"{TOP}/BUNDLE.json" and member.isfile():
                    return json.loads(tar.extractfile(member).read())
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib_error()) as exc:
        raise BundleError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    raise BundleError(f"{path}: not a results bundle (no BUNDLE.json)")


def read_bundle_metas(path: str | os.PathLike) -> tuple[dict[str, Any],
                                                        dict[tuple[str, str], dict[str, Any]]]:
    """The manifest of the bundle at ``path`` and the ``meta.json`` of every entry it carries,
    ``(kind, key) -> meta``, read as JSON without extracting anything (arrays and weights are
    skipped; a member at an unexpected place is refused as :func:`import_bundle` refuses it).
    For reading what a slice recorded (training times, the device) without importing it."""
    path = Path(path)
    manifest, metas = None, {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                rel = _member_rel(member, path)
                if rel == "manifest.json":
                    manifest = json.loads(tar.extractfile(member).read())
                elif rel is not None and rel.endswith("/meta.json"):
                    _, kind, key, _ = rel.split("/")
                    metas[(kind, key)] = json.loads(tar.extractfile(member).read())
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib_error()) as exc:
        raise BundleError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if manifest is None:
        raise BundleError(f"{path}: not a results bundle (no manifest.json)")
    return manifest, metas


def producing_device(manifest: dict[str, Any]) -> str | None:
    """The device name of the latest run a bundle's manifest records (over its sections): the
    run that computed what the bundle adds, since each slice exports right after computing."""
    runs = [r for rec in (manifest.get("sections") or {}).values() for r in computed_by(rec)]
    runs = [r for r in runs if r.get("date")]
    return str(max(runs, key=lambda r: str(r["date"])).get("device_name")) if runs else None


def _names_listing(path: Path) -> bool:
    """Whether the archive at ``path`` has a ``BUNDLE.json`` member (True where it cannot be
    read: the caller's own error then says what is wrong)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            return any(m.name == f"{TOP}/BUNDLE.json" for m in tar)
    except (tarfile.TarError, EOFError, OSError, zlib_error()):
        return True


def max_bytes_of(mib: float | None) -> int | None:
    """``--max-mib`` in bytes (None stays None); a BundleError unless a positive number."""
    if mib is None:
        return None
    if not (math.isfinite(mib) and mib > 0) or int(mib * 2**20) < 1:
        raise BundleError(f"--max-mib must be a positive number of MiB (e.g. 4), got {mib:g}")
    return int(mib * 2**20)


def _check_out(out: Path) -> None:
    """A BundleError unless ``out`` can name a new bundle file."""
    if out.is_dir():
        raise BundleError(f"{out} is a directory: give the bundle's file name, e.g. "
                          f"{out / 'NAME.tar.gz'}")
    if not out.name.endswith(".tar.gz") or out.name == ".tar.gz":
        raise BundleError(f"{out}: a results bundle's name must end in .tar.gz (import and "
                          "--builds-on read only *.tar.gz files)")


def _existing_outputs(out: Path) -> list[Path]:
    """``out`` and the parts of an earlier split of it (``<stem>-part<i>of<n>.tar.gz``) that
    already exist."""
    stem = re.escape(out.name[:-len(".tar.gz")])
    found = [out] if out.exists() else []
    if out.parent.is_dir():
        found += sorted(p for p in out.parent.iterdir()
                        if re.fullmatch(stem + r"-part\d+of\d+\.tar\.gz", p.name))
    return found


def carried_entries(paths: Iterable[str | os.PathLike]) -> dict[tuple[str, str], dict[str, str]]:
    """``(kind, key)`` -> checksums of the entry files the bundles carry, and which bundle."""
    got: dict[tuple[str, str], dict[str, str]] = {}
    for path in bundle_paths(paths):
        for rel, info in read_bundle_listing(path).get("files", {}).items():
            p = rel.split("/")
            if len(p) == 4 and p[0] == "entries":
                got.setdefault((p[1], p[2]), {"bundle": path.name})[p[3]] = info.get("sha256")
    return got


def _carried_unchanged(there: dict[str, str], entry_dir: Path) -> bool:
    """Whether a bundle's copy of an entry (its files' checksums) is the cache's entry."""
    return all((name in there) == (entry_dir / name).exists()
               and (name not in there or there[name] == sha256_file(entry_dir / name))
               for name in ("meta.json", "arrays.npz"))


def _pretrained_entries(man: dict[str, Any], labels: list[str],
                        entries: Iterable[tuple[str, str]], croot: Path) -> set[tuple[str, str]]:
    """The ``peterson_pretrain`` entries (of ``entries``) of section 3's architectures
    ``labels``, as the manifest's record of that section names them."""
    from ..studies.peterson import parse_archs
    rec = man.get("sections", {}).get("alternatives")
    if rec is None:
        raise BundleError("--pretrained-weights: the manifest has no record of the alternatives "
                          "section, whose architectures these labels name")
    archs = {a.label: a for a in parse_archs(rec["params"]["archs"])}
    unknown = [x for x in labels if x not in archs]
    if unknown:
        raise BundleError(f"--pretrained-weights: unknown architecture(s) "
                          f"{', '.join(map(repr, unknown))}; section 3's: "
                          f"{', '.join(map(repr, archs))}")
    want = {(archs[x].name, json.dumps(archs[x].kwargs, sort_keys=True)): x for x in labels}
    found: dict[str, tuple[str, str]] = {}
    for kind, key in entries:
        if kind != "peterson_pretrain" or not (croot / kind / key / "meta.json").exists():
            continue
        train = json.loads((croot / kind / key / "meta.json").read_text())["config"]["train"]
        label = want.get((train["arch"], json.dumps(train.get("arch_kwargs") or {}, sort_keys=True)))
        if label is not None:
            if not (croot / kind / key / "model.pt").exists():
                raise BundleError(f"--pretrained-weights: the pretrained {label} in this cache "
                                  "has no weights (imported from a bundle without them?)")
            found[label] = (kind, key)
    missing = [x for x in labels if x not in found]
    if missing:
        raise BundleError(f"--pretrained-weights: no pretrained model of "
                          f"{', '.join(map(repr, missing))} among the exported entries: compute "
                          "its pretraining first (compute --sections alternatives)")
    return set(found.values())


def export_bundle(profile: str, out: str | os.PathLike, with_weights: str | Iterable[str] | None = None,
                  root: str | os.PathLike | None = None,
                  sections: Iterable[str] | None = None,
                  builds_on: Iterable[str | os.PathLike] | None = None,
                  pretrained_weights: Iterable[str] | None = None,
                  max_bytes: int | None = None, force: bool = False,
                  allow_empty: bool = False) -> dict[str, Any]:
    """Write the profile's manifest entries as a ``.tar.gz`` bundle at ``out``.

    ``with_weights``: None (no ``model.pt``), ``'all'``, or section names whose entries keep
    their weights (e.g. ``['adversarial']``: its notebook rebuilds the attacked models).
    ``sections``: only these sections' records and entries (None: all the manifest has), e.g.
    what one slice computed, next to the bundles of the other sections; those the manifest does
    not record yet (a budget spent before they started) are listed in ``not_started``.
    ``builds_on``: bundles (files or directories of them) whose entries, where unchanged here,
    this bundle leaves out and requires instead (an entry that keeps its weights is carried).
    ``pretrained_weights``: section 3's architecture labels whose pretrained models keep their
    weights, so that another machine can fine-tune them (``compute --archs`` ran the others).
    ``max_bytes``: a bundle larger than this is split into parts (:func:`split_bundle`), listed
    in the result's ``parts``. ``force``: overwrite an existing bundle at ``out`` (and the
    parts of an earlier split of it), else refused. ``allow_empty``: write a bundle that
    carries no cache entry (the requested sections recorded none, or every one is in the
    bundles it builds on), else refused. Returns the bundle manifest (of the whole, not of a
    part).
    """
    from .profiles import get_profile
    get_profile(profile)  # an unknown profile: the one error every command gives
    out = Path(out)
    _check_out(out)
    if max_bytes is not None and max_bytes < 1:
        raise BundleError(f"the size limit must be positive, got {max_bytes} bytes")
    croot = cache_root(root)
    man = recorded = load_manifest(profile, croot)  # recorded: every section, for their params
    if man is None:
        raise BundleError(f"no manifest for profile {profile!r} under {croot / 'manifests'}; run "
                          f"`python -m softlib.book compute --profile {profile}` first")
    not_recorded: list[str] = []
    if sections is not None:
        from .toc import SECTIONS
        sections = list(sections)
        has = ", ".join(man.get("sections", {})) or "none"
        unknown = [s for s in sections if s not in SECTIONS]
        if unknown:
            raise BundleError(f"unknown section(s) {', '.join(unknown)}; the book's: "
                              f"{', '.join(SECTIONS)}")
        # a slice of several sections whose budget ran out before the later ones started
        # exports what it computed; a section none of them recorded is an error
        not_recorded = [s for s in sections if s not in man.get("sections", {})]
        if len(not_recorded) == len(sections):
            raise BundleError(f"sections {', '.join(not_recorded)} are not in the manifest of "
                              f"profile {profile!r} (it has {has}): compute them first")
        man = dict(man, sections={s: r for s, r in man["sections"].items() if s in sections})
    entries = manifest_entries(man)
    if with_weights is None or with_weights == "none":
        weighted: set[tuple[str, str]] = set()
    elif with_weights == "all":
        weighted = set(entries)
    else:
        names = [with_weights] if isinstance(with_weights, str) else list(with_weights)
        unknown = [s for s in names if s not in man["sections"]]
        if unknown:
            raise BundleError(f"--with-weights: section(s) {', '.join(unknown)} are not in the "
                              f"manifest; it has {', '.join(man['sections'])}")
        weighted = set(manifest_entries(man, names))
    if pretrained_weights is not None:
        weighted |= _pretrained_entries(recorded, list(pretrained_weights), entries, croot)
    base = carried_entries(builds_on) if builds_on is not None else {}
    files: dict[str, Path] = {}
    requires: dict[str, dict[str, str]] = {}
    missing = []
    for kind, key in entries:
        if not (_KIND.match(kind) and _KEY.match(key)):
            raise BundleError(f"manifest lists a malformed entry {kind}/{key}")
        d = croot / kind / key
        if not (d / "meta.json").exists():
            missing.append(f"{kind}/{key}")
            continue
        there = base.get((kind, key))
        if there is not None and (kind, key) not in weighted and _carried_unchanged(there, d):
            requires[f"{kind}/{key}"] = {"meta.json": there["meta.json"],
                                         "bundle": there["bundle"]}
            continue
        for name in ENTRY_FILES:
            if name == "model.pt" and (kind, key) not in weighted:
                continue
            if (d / name).exists():
                files[f"entries/{kind}/{key}/{name}"] = d / name
    if missing:
        raise BundleError(f"{len(missing)} entr{'y' if len(missing) == 1 else 'ies'} of the "
                          f"manifest are not in the cache {croot} (e.g. {missing[0]}); rerun "
                          f"`python -m softlib.book compute --profile {profile}`")
    if not allow_empty and len(requires) == len(entries):
        raise BundleError(_nothing_to_export(profile, man, not_recorded, requires))
    if not force:
        there = _existing_outputs(out)
        if there:
            raise BundleError(f"{', '.join(map(str, there))} already exist"
                              f"{'s' if len(there) == 1 else ''} (a bundle others may build "
                              "on): give a new name, or --force to overwrite")
    manifest_bytes = (json.dumps(man, indent=2, sort_keys=True) + "\n").encode()
    listing = {"manifest.json": {"sha256": hashlib.sha256(manifest_bytes).hexdigest(),
                                 "size": len(manifest_bytes)}}
    for rel, path in files.items():
        listing[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    if with_weights is None or with_weights == "none":
        weights_of: list[str] = []
    elif isinstance(with_weights, str):
        weights_of = [with_weights]
    else:
        weights_of = sorted(set(with_weights))
    weights_of += [f"pretrained {label}" for label in (pretrained_weights or [])]
    bundle = {"format": BUNDLE_FORMAT, "profile": profile, "created": provenance(None)["date"],
              "with_weights": weights_of,
              "entries": len(entries), "requires": requires,
              "complete": {s: bool(r.get("complete")) for s, r in man["sections"].items()},
              "files": listing}
    if not_recorded:
        bundle["not_started"] = not_recorded
    try:
        _write_bundle(out, bundle, manifest_bytes, files)
    except OSError as exc:
        raise BundleError(f"cannot write {out}: {exc}") from None
    if max_bytes is not None and out.stat().st_size > max_bytes:
        bundle = dict(bundle, parts=[p.name for p in split_bundle(out, max_bytes)])
    return bundle


def _nothing_to_export(profile: str, man: dict[str, Any], not_recorded: list[str],
                       requires: dict[str, Any]) -> str:
    """Why a bundle would carry no cache entry, and what to run instead."""
    none = [s for s, r in man.get("sections", {}).items() if not r.get("entries")] + not_recorded
    based = [s for s in man.get("sections", {}) if s not in none]
    what = []
    if none:
        what.append(f"section(s) {', '.join(none)} have no results in the cache")
    if based:
        bases = sorted({str(r.get("bundle")) for r in requires.values()})
        what.append(f"every result of {', '.join(based)} is already in the bundles it builds on "
                    f"({', '.join(bases[:3])}{', ...' if len(bases) > 3 else ''})")
    todo = ""
    if none or not based:  # something to compute (not: every result exported already)
        only = f" --sections {','.join(none)}" if none else ""
        todo = f"compute them first (python -m softlib.book compute --profile {profile}{only}), or "
    return (f"nothing to export for profile {profile!r}: {'; '.join(what) or 'no sections'}; "
            f"{todo}pass --allow-empty to write a bundle of the manifest alone")


def _write_bundle(out: Path, bundle: dict[str, Any], manifest_bytes: bytes,
                  files: dict[str, Path]) -> None:
    """Write ``BUNDLE.json``, ``manifest.json`` and ``files`` (bundle path -> file, each as
    ``bundle['files']`` lists it) as the ``.tar.gz`` at ``out``, atomically."""
    bundle_bytes = (json.dumps(bundle, indent=2, sort_keys=True) + "\n").encode()
    with atomic_path(out, suffix=".tar.gz") as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            _add_bytes(tar, f"{TOP}/BUNDLE.json", bundle_bytes)
            _add_bytes(tar, f"{TOP}/manifest.json", manifest_bytes)
            for rel, path in files.items():
                info = tarfile.TarInfo(f"{TOP}/{rel}")
                info.size = bundle["files"][rel]["size"]
                info.mtime = int(path.stat().st_mtime)
                info.mode = 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _tar_bytes(size: int) -> int:
    """What a file of ``size`` bytes takes in a tar archive: its header and padded data."""
    return 512 + -(-size // 512) * 512


def split_bundle(path: str | os.PathLike, max_bytes: int) -> list[Path]:
    """Split the bundle at ``path`` into parts of at most ``max_bytes`` each, so that results
    committed to git stay a few MB a file; return the parts in the order they import.

    The parts are a chain of bundles, each building on the ones before it (``requires``), as
    the slices of a long computation do. The last part keeps the bundle's name, the whole
    manifest and its ``complete`` flags, so later bundles that build on this one still name it;
    an earlier part, ``<name>-part<i>of<n>.tar.gz`` (``i`` zero-padded, so they sort in order),
    records each section with only the entries imported so far and as not complete. A bundle
    within ``max_bytes`` is left as it is. An entry larger than ``max_bytes`` on its own makes
    a part of its own that is larger. The bundle's files are checked as an import checks them
    (paths, checksums, manifest) before anything is written.
    """
    path = Path(path)
    if max_bytes < 1:
        raise BundleError(f"the size limit must be positive, got {max_bytes} bytes")
    if not path.is_file():
        raise BundleError(f"no bundle at {path}")
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=".split."))
    try:
        bundle, man, have = _unpack(path, staging)
        if path.stat().st_size <= max_bytes:
            return [path]
        listed = manifest_entries(man)
        files_of: dict[tuple[str, str], list[str]] = {}
        for rel in sorted(have - {"manifest.json"}):
            files_of.setdefault(tuple(rel.split("/")[1:3]), []).append(rel)
        carried = [e for e in listed if e in files_of]
        if set(carried) != set(files_of):
            raise BundleError(f"cannot split {path}: it carries entries its manifest does not list")
        sizes = {e: sum(_tar_bytes(bundle["files"][r]["size"]) for r in files_of[e])
                 for e in carried}
        # room for BUNDLE.json, the manifest and the archive's end, before compression
        fixed = (_tar_bytes(len(json.dumps(man, indent=2)) + 1)
                 + _tar_bytes(256 * (len(listed) + sum(map(len, files_of.values()))) + 4096)
                 + 10240)
        room = max_bytes - fixed
        while True:
            chunks: list[list[tuple[str, str]]] = [[]]
            for e in carried:
                if chunks[-1] and sum(sizes[x] for x in chunks[-1]) + sizes[e] > room:
                    chunks.append([])
                chunks[-1].append(e)
            parts = _write_parts(path, bundle, man, files_of, chunks, staging)
            over = [p for p, c in zip(parts, chunks) if len(c) > 1
                    and p.stat().st_size > max_bytes]
            if not over or room < 1024:
                break
            for p in parts[:-1]:
                p.unlink()
            room = int(room * 0.9)  # the estimate was short: smaller parts
        os.replace(parts[-1], path)  # the parts before it are written: replaced last
        return parts[:-1] + [path]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_parts(path: Path, bundle: dict[str, Any], man: dict[str, Any],
                 files_of: dict[tuple[str, str], list[str]],
                 chunks: list[list[tuple[str, str]]], staging: Path) -> list[Path]:
    """Write the parts of :func:`split_bundle`: the last to ``staging``, the others beside
    ``path``."""
    stem = path.name[:-len(".tar.gz")] if path.name.endswith(".tar.gz") else path.name
    n = len(chunks)
    names = [f"{stem}-part{i:0{len(str(n))}d}of{n}.tar.gz" for i in range(1, n)] + [path.name]
    requires = dict(bundle.get("requires") or {})
    earlier: set[tuple[str, str]] = set(tuple(r.split("/", 1)) for r in requires)
    out = []
    for i, chunk in enumerate(chunks):
        last = i == n - 1
        if last:
            part_man = man
        else:
            keep = earlier | set(chunk)
            part_man = dict(man, sections={
                s: dict(r, complete=False, split_part=f"{i + 1} of {n}",
                        entries=[e for e in r.get("entries", []) if tuple(e) in keep])
                for s, r in man["sections"].items()})
        manifest_bytes = (json.dumps(part_man, indent=2, sort_keys=True) + "\n").encode()
        listing = {"manifest.json": {"sha256": hashlib.sha256(manifest_bytes).hexdigest(),
                                     "size": len(manifest_bytes)}}
        files = {rel: staging / rel for e in chunk for rel in files_of[e]}
        listing.update({rel: bundle["files"][rel] for rel in files})
        part = dict(bundle, requires=dict(requires), files=listing,
                    entries=len(manifest_entries(part_man)),
                    complete={s: bool(r.get("complete")) for s, r in part_man["sections"].items()},
                    part={"index": i + 1, "of": n, "bundle": path.name})
        dest = staging / "last.tar.gz" if last else path.with_name(names[i])
        _write_bundle(dest, part, manifest_bytes, files)
        out.append(dest)
        for kind, key in chunk:  # the next parts build on this one
            requires[f"{kind}/{key}"] = {"meta.json": bundle["files"][
                f"entries/{kind}/{key}/meta.json"]["sha256"], "bundle": names[i]}
        earlier |= set(chunk)
    return out


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------

def _member_rel(member: tarfile.TarInfo, path: Path) -> str | None:
    """The path of a member below ``softlib-bundle/`` if it is a plain file at an allowed
    place; None for the allowed directories; else a BundleError."""
    name = member.name
    parts = name.split("/")
    if (name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts[:-1])
            or parts[-1] in (".", "..") or parts[0] != TOP):
        raise BundleError(f"refusing bundle {path}: unsafe or foreign path {name!r}")
    rel = "/".join(p for p in parts[1:] if p)
    if member.isdir():
        ok = rel in ("", "entries") or re.fullmatch(r"entries/[a-z][a-z0-9_]*(/[0-9a-f]{20})?", rel)
        if not ok:
            raise BundleError(f"refusing bundle {path}: unexpected directory {name!r}")
        return None
    if not member.isfile():  # symlinks, hard links, devices, fifos
        raise BundleError(f"refusing bundle {path}: {name!r} is not a regular file (links and "
                          "special files are never extracted)")
    if rel in ("BUNDLE.json", "manifest.json"):
        return rel
    p = rel.split("/")
    if not (len(p) == 4 and p[0] == "entries" and _KIND.match(p[1]) and _KEY.match(p[2])
            and p[3] in ENTRY_FILES):
        raise BundleError(f"refusing bundle {path}: unexpected file {name!r}")
    return rel


def _same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return sha256_file(a) == sha256_file(b)


def _same_arrays(a: Path, b: Path) -> bool:
    """Equal array contents as the cache reads them (npz files written at different times
    differ in zip timestamps; a float32 array may be stored as the float16 that holds it)."""
    import numpy as np

    from ..cache import _loaded
    try:
        with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
            if sorted(za.files) != sorted(zb.files):
                return False
            for k in za.files:
                x, y = _loaded(za[k]), _loaded(zb[k])
                if x.dtype != y.dtype or not np.array_equal(
                        x, y, equal_nan=x.dtype.kind in "fc"):
                    return False
            return True
    except (ValueError, OSError):
        return False


def import_bundle(path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Verify the bundle at ``path`` and add its entries to the cache; return a summary."""
    croot = cache_root(root)
    croot.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=croot, prefix=".import."))
    try:
        return _import(Path(path), croot, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(path: Path, staging: Path) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """Extract the bundle at ``path`` into ``staging`` and check it: safe member paths, files
    as ``BUNDLE.json`` lists them, checksums, a readable manifest of the same profile. Returns
    ``BUNDLE.json``, the manifest and the bundle paths of the files besides ``BUNDLE.json``."""
    if not path.is_file():
        raise BundleError(f"no bundle at {path}")
    got: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                try:
                    rel = _member_rel(member, path)
                except BundleError:
                    if "BUNDLE.json" not in got and not _names_listing(path):
                        raise BundleError(f"{path}: not a results bundle (no BUNDLE.json)"
                                          ) from None
                    raise
                if rel is None:
                    continue
                if rel in got:
                    raise BundleError(f"refusing bundle {path}: {member.name!r} appears twice")
                dst = staging / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                h, size = hashlib.sha256(), 0
                src = tar.extractfile(member)
                with open(dst, "wb") as f:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        size += len(block)
                        f.write(block)
                got[rel] = {"sha256": h.hexdigest(), "size": size}
    except (tarfile.TarError, EOFError, OSError, zlib_error()) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"refusing bundle {path}: not a readable .tar.gz results bundle "
                          f"({type(exc).__name__}: {exc})") from None
    if "BUNDLE.json" not in got:
        raise BundleError(f"{path}: not a results bundle (no BUNDLE.json)")
    try:
        bundle = json.loads((staging / "BUNDLE.json").read_text())
        listing = dict(bundle["files"])
        profile = str(bundle["profile"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"refusing bundle {path}: unreadable BUNDLE.json ({exc})") from None
    if bundle.get("format") not in READABLE_FORMATS:
        raise BundleError(f"refusing bundle {path}: format {bundle.get('format')!r}, this softlib "
                          f"reads formats {', '.join(map(str, READABLE_FORMATS))}")
    if not _well_formed_requires(bundle.get("requires") or {}):
        raise BundleError(f"refusing bundle {path}: malformed 'requires' in BUNDLE.json")
    have = set(got) - {"BUNDLE.json"}
    if have != set(listing):
        extra, lost = sorted(have - set(listing)), sorted(set(listing) - have)
        raise BundleError(f"refusing bundle {path}: its files do not match BUNDLE.json "
                          f"(missing: {lost[:3]}, unlisted: {extra[:3]}); it is incomplete or "
                          "was altered")
    bad = [rel for rel in sorted(have) if got[rel]["sha256"] != listing[rel].get("sha256")
           or got[rel]["size"] != listing[rel].get("size")]
    if bad:
        raise BundleError(f"refusing bundle {path}: checksum mismatch for {len(bad)} file(s), "
                          f"e.g. {bad[0]}; the bundle is corrupt")
    try:
        man = json.loads((staging / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"refusing bundle {path}: unreadable manifest.json ({exc})") from None
    if man.get("profile") != profile:
        raise BundleError(f"refusing bundle {path}: BUNDLE.json is for profile {profile!r} but its "
                          f"manifest for {man.get('profile')!r}")
    return bundle, man, have


def _well_formed_requires(requires: Any) -> bool:
    """Whether ``BUNDLE.json``'s ``requires`` maps ``kind/key`` names to dicts."""
    return isinstance(requires, dict) and all(
        isinstance(r, str) and r.count("/") == 1 and bool(_KIND.match(r.split("/")[0]))
        and bool(_KEY.match(r.split("/")[1])) and isinstance(v, dict) for r, v in requires.items())


def _check_bases(path: Path, requires: dict[str, Any], croot: Path) -> None:
    """A MissingBaseError unless every entry the bundle builds on is in the cache, unchanged."""
    absent = []
    for rel, want in requires.items():
        meta = croot / rel / "meta.json"
        if not (meta.exists() and sha256_file(meta) == want.get("meta.json")):
            absent.append((rel, str(want.get("bundle"))))
    if absent:
        names = sorted({b for _, b in absent})
        raise MissingBaseError(f"refusing bundle {path} for now: it builds on {len(absent)} "
                               f"entries it does not carry, which this cache lacks or holds in "
                               f"another version (e.g. {absent[0][0]}); import "
                               f"{', '.join(names)} first")


def _import(path: Path, croot: Path, staging: Path) -> dict[str, Any]:
    if path.is_file():  # a bundle whose base is not here yet waits, before it is extracted
        try:
            listing = read_bundle_listing(path)
            early = (listing.get("requires") if isinstance(listing, dict) else None) or {}
            ok = _well_formed_requires(early)
        except BundleError:
            ok = False  # the full check below says what is wrong
        if ok:
            _check_bases(path, early, croot)
    bundle, man, have = _unpack(path, staging)
    profile, requires = str(bundle["profile"]), bundle.get("requires") or {}
    entries = sorted({tuple(rel.split("/")[1:3]) for rel in have if rel.startswith("entries/")})
    required = sorted(tuple(r.split("/", 1)) for r in requires)
    listed = sorted(set(manifest_entries(man)))
    if set(entries) & set(required) or sorted(entries + required) != listed:
        raise BundleError(f"refusing bundle {path}: the manifest lists {len(listed)} entries but "
                          f"the bundle holds {len(entries)} and builds on {len(required)} others")
    _check_bases(path, requires, croot)
    for kind, key in entries:  # each entry must be stored under the key of its configuration
        meta_path = staging / "entries" / kind / key / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
            ok = meta.get("kind") == kind and config_key(kind, meta["config"]) == key
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise BundleError(f"refusing bundle {path}: entry {kind}/{key} is not the result of "
                              "the configuration that key stands for (mismatched bundle, or one "
                              "written by another softlib cache format)")
    # conflicts: decide everything before writing anything
    new, same, add_weights, conflicts = [], [], [], []
    for kind, key in entries:
        src, dst = staging / "entries" / kind / key, croot / kind / key
        if not (dst / "meta.json").exists():
            new.append((kind, key))
            continue
        differs = not _same_file(src / "meta.json", dst / "meta.json")
        if not differs and (src / "arrays.npz").exists() != (dst / "arrays.npz").exists():
            differs = True
        if not differs and (src / "arrays.npz").exists():
            differs = not (_same_file(src / "arrays.npz", dst / "arrays.npz")
                           or _same_arrays(src / "arrays.npz", dst / "arrays.npz"))
        if not differs and (src / "model.pt").exists() and (dst / "model.pt").exists():
            differs = not _same_file(src / "model.pt", dst / "model.pt")
        if differs:
            conflicts.append(f"{kind}/{key}")
        elif (src / "model.pt").exists() and not (dst / "model.pt").exists():
            add_weights.append((kind, key))
        else:
            same.append((kind, key))
    if conflicts:
        raise BundleError(
            f"refusing bundle {path}: {len(conflicts)} entr{'y' if len(conflicts) == 1 else 'ies'} "
            f"already in {croot} differ from the bundle's under the same key (e.g. "
            f"{', '.join(conflicts[:3])}); nothing was imported. Existing results are never "
            "overwritten: import into another cache (SOFTLIB_CACHE=...) or remove those entries")
    for kind, key in new:
        final = croot / kind / key
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}."))
        try:
            for f in (staging / "entries" / kind / key).iterdir():
                os.replace(f, tmp / f.name)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    for kind, key in add_weights:
        with atomic_path(croot / kind / key / "model.pt", suffix=".pt") as tmp:
            os.replace(staging / "entries" / kind / key / "model.pt", tmp)
    _merge_manifest(man, croot)
    return {"profile": profile, "entries": len(entries), "required": len(required),
            "imported": len(new),
            "identical": len(same), "weights_added": len(add_weights),
            "complete": {s: bool(r.get("complete")) for s, r in man.get("sections", {}).items()},
            "with_weights": bundle.get("with_weights", [])}


def zlib_error():
    import zlib
    return zlib.error


def _merge_manifest(man: dict[str, Any], croot: Path) -> None:
    """The bundle's manifest becomes this cache's for its profile, section by section, except
    where this cache already records a complete section the bundle has as incomplete."""
    profile = man["profile"]
    local = load_manifest(profile, croot) or {"format": MANIFEST_FORMAT, "profile": profile,
                                              "sections": {}}
    for name, rec in man.get("sections", {}).items():
        mine = local["sections"].get(name)
        if mine is not None and mine.get("complete") and not rec.get("complete"):
            continue
        local["sections"][name] = _with_runs(dict(rec, imported=True), mine)
    local["provenance"] = man.get("provenance", local.get("provenance"))
    save_json(manifest_path(profile, croot), local)
