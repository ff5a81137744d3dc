"""Chains of results bundles, each building on the ones before: a bundle split into parts of at
most a size imports (in any order of their names) into exactly what the whole bundle imports,
and a bundle whose base is not imported yet waits without being extracted."""
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from softlib.book import bundle
from softlib.book import runner as book
from softlib.cache import Entry, ResultCache, config_key


def _cache(root: Path, n: int, section: str = "calibration_ood", start: int = 0,
           complete: bool = True, record: bool = True) -> list[tuple[str, str]]:
    """``n`` entries of ~100 KB of incompressible arrays, recorded as ``section``'s (unless
    not ``record``)."""
    cache = ResultCache(root)
    rng = np.random.default_rng(start)
    keys = []
    for i in range(start, start + n):
        kind = "laing_train" if i % 2 else "laing_eval"
        cfg = {"run": i}
        cache.save(kind, cfg, Entry(arrays={"x": rng.random(12_500, dtype=np.float64)},
                                    meta={"i": i}))
        keys.append((kind, config_key(kind, cfg)))
    if record:
        bundle.update_manifest("smoke", section, {"entries": keys, "complete": complete},
                               root=root)
    return keys


def _base_then_more(src: Path, base: Path, first: int, more: int) -> None:
    """A cache at ``src`` whose section's first ``first`` entries are exported to ``base`` (a
    slice stopped half-way), then ``more`` entries complete the section."""
    done = _cache(src, first, complete=False)
    bundle.export_bundle("smoke", base, root=src)
    rest = _cache(src, more, start=first)
    bundle.update_manifest("smoke", "calibration_ood", {"entries": done + rest, "complete": True},
                           root=src)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.glob("*/*/*")
            if p.name in bundle.ENTRY_FILES and not p.parts[-3].startswith(".")}


def test_split_parts_import_into_what_the_whole_imports(tmp_path, monkeypatch):
    src = tmp_path / "src"
    keys = _cache(src, 20)
    whole = tmp_path / "whole" / "cal-1.tar.gz"
    bundle.export_bundle("smoke", whole, root=src)
    assert whole.stat().st_size > 1_500_000
    d = tmp_path / "results"
    out = d / "cal-1.tar.gz"
    b = bundle.export_bundle("smoke", out, root=src, max_bytes=600_000)
    parts = [d / p for p in b["parts"]]
    assert len(parts) >= 3 and parts[-1] == out
    assert sorted(d.glob("*.tar.gz")) == sorted(parts)
    assert all(p.stat().st_size <= 600_000 for p in parts)
    listings = [bundle.read_bundle_listing(p) for p in parts]
    assert [x["part"]["index"] for x in listings] == list(range(1, len(parts) + 1))
    # every entry is carried by exactly one part, in the manifest's order
    carried = [sorted({tuple(f.split("/")[1:3]) for f in x["files"] if f.startswith("entries/")})
               for x in listings]
    assert sorted(e for c in carried for e in c) == sorted(keys)
    # only the last part says the section is complete; alone, a later part cannot import
    flags = [x["complete"]["calibration_ood"] for x in listings]
    assert flags == [False] * (len(parts) - 1) + [True]
    with pytest.raises(bundle.MissingBaseError, match=parts[0].name):
        bundle.import_bundle(parts[1], root=tmp_path / "alone")
    # the first part alone: its entries, recorded as a section not complete yet
    first = tmp_path / "first"
    bundle.import_bundle(parts[0], root=first)
    rec = bundle.load_manifest("smoke", first)["sections"]["calibration_ood"]
    assert not rec["complete"] and sorted(map(tuple, rec["entries"])) == carried[0]
    # all parts, imported from their directory, equal the whole bundle imported
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "fresh"))
    done = book.import_results("smoke", d)
    assert not any("error" in r for r in done)
    bundle.import_bundle(whole, root=tmp_path / "ref")
    assert _files(tmp_path / "fresh") == _files(tmp_path / "ref") == _files(src)
    got = bundle.load_manifest("smoke", tmp_path / "fresh")["sections"]["calibration_ood"]
    ref = bundle.load_manifest("smoke", tmp_path / "ref")["sections"]["calibration_ood"]
    assert got == ref and got["complete"]


def test_a_split_slice_still_builds_on_earlier_bundles(tmp_path, monkeypatch):
    """A slice's bundle that builds on committed ones splits into parts that require both."""
    src, d = tmp_path / "src", tmp_path / "results"
    _base_then_more(src, d / "cal-1.tar.gz", 6, 12)
    b = bundle.export_bundle("smoke", d / "cal-2.tar.gz", root=src, builds_on=[d],
                             max_bytes=500_000)
    assert len(b["parts"]) >= 2
    first = bundle.read_bundle_listing(d / b["parts"][0])
    assert {v["bundle"] for v in first["requires"].values()} == {"cal-1.tar.gz"}
    last = bundle.read_bundle_listing(d / b["parts"][-1])
    assert {v["bundle"] for v in last["requires"].values()} == {"cal-1.tar.gz", *b["parts"][:-1]}
    # a later slice builds on all of them by their names
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "fresh"))
    done = book.import_results("smoke", d)
    assert len(done) == 1 + len(b["parts"]) and not any("error" in r for r in done)
    assert _files(tmp_path / "fresh") == _files(src)


def test_split_an_existing_bundle_from_the_command_line(tmp_path, capsys):
    src = tmp_path / "src"
    _cache(src, 8)
    out = tmp_path / "r" / "cal.tar.gz"
    bundle.export_bundle("smoke", out, root=src)
    before = bundle.read_bundle_listing(out)
    assert book.main(["split", str(out), "--max-mib", "0.4"]) == 0
    assert "parts" in capsys.readouterr().out
    parts = sorted(out.parent.glob("*.tar.gz"))
    assert len(parts) >= 2 and all(p.stat().st_size <= 0.4 * 2**20 for p in parts)
    after = bundle.read_bundle_listing(out)  # the last part keeps the name and the whole
    assert after["entries"] == before["entries"] and after["complete"] == before["complete"]
    # a bundle within the limit is left alone; a corrupt one is refused before anything is written
    assert book.main(["split", str(parts[0]), "--max-mib", "10"]) == 0
    assert "left as it is" in capsys.readouterr().out
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(out.read_bytes()[:5000])
    with pytest.raises(bundle.BundleError):
        bundle.split_bundle(bad, 1000)
    assert sorted(tmp_path.glob("bad*")) == [bad] and not list(tmp_path.glob(".split.*"))


def test_one_entry_larger_than_the_limit_is_a_part_of_its_own(tmp_path):
    src = tmp_path / "src"
    _cache(src, 3)
    out = tmp_path / "r" / "cal.tar.gz"
    b = bundle.export_bundle("smoke", out, root=src, max_bytes=50_000)
    assert len(b["parts"]) == 3
    for p in b["parts"]:
        with tarfile.open(out.parent / p) as tar:
            assert len({n.split("/")[3] for n in tar.getnames() if "/entries/" in n}) == 1
    man = json.loads(tarfile.open(out).extractfile("softlib-bundle/manifest.json").read())
    assert man["sections"]["calibration_ood"]["complete"]


def test_a_bundle_waiting_for_its_base_is_extracted_once(tmp_path, monkeypatch):
    src, d = tmp_path / "src", tmp_path / "results"
    _base_then_more(src, d / "z-base.tar.gz", 4, 4)
    bundle.export_bundle("smoke", d / "a-next.tar.gz", root=src, builds_on=[d])
    unpacked = []
    real = bundle._unpack
    monkeypatch.setattr(bundle, "_unpack", lambda path, staging: (unpacked.append(path.name),
                                                                  real(path, staging))[1])
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "fresh"))
    done = book.import_results("smoke", d)  # a-next sorts first: it waits for z-base
    assert [Path(r["file"]).name for r in done] == ["z-base.tar.gz", "a-next.tar.gz"]
    assert unpacked == ["z-base.tar.gz", "a-next.tar.gz"]
    assert _files(tmp_path / "fresh") == _files(src)


def test_parts_are_named_to_sort_in_import_order(tmp_path):
    src = tmp_path / "src"
    _cache(src, 12)
    out = tmp_path / "r" / "cal.tar.gz"
    b = bundle.export_bundle("smoke", out, root=src, max_bytes=150_000)
    assert len(b["parts"]) >= 10
    assert b["parts"][0] == f"cal-part01of{len(b['parts'])}.tar.gz"
    assert sorted(p.name for p in out.parent.glob("*.tar.gz")) == b["parts"]


def test_a_bundle_json_that_is_not_an_object_is_refused(tmp_path):
    import io
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        data = b"[1, 2]"
        info = tarfile.TarInfo("softlib-bundle/BUNDLE.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(bundle.BundleError, match="unreadable BUNDLE.json"):
        bundle.import_bundle(bad, root=tmp_path / "cache")


def test_a_slice_whose_later_sections_never_started_still_exports(tmp_path, capsys,
                                                                  monkeypatch):
    """``device_run.sh slice 400 alternatives,adversarial`` whose budget ran out in the first
    section: the export holds what was computed and says which section has not started
    (it used to refuse, and the slice's work did not come back)."""
    src = tmp_path / "src"
    keys = _cache(src, 3, complete=False)
    out = tmp_path / "r" / "slice.tar.gz"
    b = bundle.export_bundle("smoke", out, root=src,
                             sections=["calibration_ood", "generalisation"])
    assert b["not_started"] == ["generalisation"] and b["complete"] == {"calibration_ood": False}
    assert b["entries"] == len(keys)
    monkeypatch.setenv("SOFTLIB_CACHE", str(src))
    assert book.main(["export", "--profile", "smoke", "--sections",
                      "calibration_ood,generalisation", str(tmp_path / "cli.tar.gz")]) == 0
    assert "generalisation have not started yet" in capsys.readouterr().out
    with pytest.raises(bundle.BundleError, match="not in the manifest.*compute them first"):
        bundle.export_bundle("smoke", out, root=src, sections=["generalisation"])
    with pytest.raises(bundle.BundleError, match="unknown section"):
        bundle.export_bundle("smoke", out, root=src, sections=["calibration_ood", "claim"])


def _on(monkeypatch, gpu: str, date: str) -> None:
    """Make the runs recorded from now on come from a machine with ``gpu``, on ``date``."""
    monkeypatch.setattr(bundle, "provenance", lambda device=None: {
        "machine": "vm (Linux-x86_64)", "device": "cuda", "device_name": gpu, "date": date})


def test_a_section_computed_in_slices_on_two_machines_lists_both(tmp_path, monkeypatch):
    """Each slice's record names only its own machine; the manifest keeps every run that
    computed the section's results (import after import), so a section begun on one GPU and
    finished on another is not credited to the last one alone."""
    src, d = tmp_path / "h200", tmp_path / "results"
    params = {"epochs": 5}
    _on(monkeypatch, "NVIDIA H200", "2026-11-26T22:18:00Z")
    done = _cache(src, 3, record=False)
    bundle.update_manifest("smoke", "calibration_ood", {
        "entries": done, "complete": False, "params": params, "seed": 0, "trained": 3}, root=src)
    bundle.export_bundle("smoke", d / "cal-1.tar.gz", root=src)
    # the next machine imports it, computes the rest and exports what it added
    nxt = tmp_path / "h100"
    bundle.import_bundle(d / "cal-1.tar.gz", root=nxt)
    _on(monkeypatch, "NVIDIA H100", "2026-11-27T08:35:00Z")
    rest = _cache(nxt, 2, start=3, record=False)
    bundle.update_manifest("smoke", "calibration_ood", {
        "entries": done + rest, "complete": True, "params": params, "seed": 0, "trained": 2},
        root=nxt)
    runs = bundle.load_manifest("smoke", nxt)["sections"]["calibration_ood"]["computed_by"]
    assert [(r["device_name"], r["trained"]) for r in runs] == [("NVIDIA H200", 3),
                                                                ("NVIDIA H100", 2)]
    bundle.export_bundle("smoke", d / "cal-2.tar.gz", root=nxt, builds_on=[d])
    # a machine that imports both (twice: nothing is counted twice) knows both runs
    fresh = tmp_path / "fresh"
    for _ in range(2):
        for b in ("cal-1.tar.gz", "cal-2.tar.gz"):
            bundle.import_bundle(d / b, root=fresh)
    rec = bundle.load_manifest("smoke", fresh)["sections"]["calibration_ood"]
    assert rec["complete"] and rec["computed_by"] == runs
    assert bundle.describe_runs(rec["computed_by"]) == (
        "NVIDIA H200 (vm): 3 results, 2026-11-26; NVIDIA H100 (vm): 2 results, 2026-11-27")
    # a record written before the list was kept stands for its own run
    legacy = {k: v for k, v in rec.items() if k != "computed_by"}
    assert [r["device_name"] for r in bundle.computed_by(legacy)] == ["NVIDIA H100"]
    # a run with other parameters starts the list again; a run that trained nothing adds none
    _on(monkeypatch, "cpu", "2026-11-28T00:00:00Z")
    bundle.update_manifest("smoke", "calibration_ood", {
        "entries": done + rest, "complete": True, "params": params, "seed": 0, "trained": 0},
        root=fresh)
    assert bundle.load_manifest("smoke", fresh)["sections"]["calibration_ood"][
        "computed_by"] == runs
    bundle.update_manifest("smoke", "calibration_ood", {
        "entries": done, "complete": True, "params": {"epochs": 6}, "seed": 0, "trained": 1},
        root=fresh)
    assert [r["device_name"] for r in bundle.load_manifest("smoke", fresh)["sections"][
        "calibration_ood"]["computed_by"]] == ["cpu"]


def test_describe_runs_groups_a_machines_slices():
    runs = [{"device_name": "NVIDIA H200", "machine": "vm", "date": d, "trained": n}
            for d, n in (("2026-11-26T22:18:00Z", 48), ("2026-11-27T01:00:00Z", 30))]
    runs.append({"device_name": "cpu", "machine": "laptop", "date": "2026-11-28T00:00:00Z",
                 "trained": 1})
    assert bundle.describe_runs(runs) == ("NVIDIA H200 (vm): 78 results in 2 runs, 2026-11-26 "
                                          "to 2026-11-27; cpu (laptop): 1 result, 2026-11-28")
    assert bundle.describe_runs([]) == ""


# --------------------------------------------------------------------------------------------
# the export / split / import commands' answers to common mistakes
# --------------------------------------------------------------------------------------------

def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_export_never_overwrites_a_bundle_unless_forced(tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    _cache(src, 2)
    monkeypatch.setenv("SOFTLIB_CACHE", str(src))
    out = tmp_path / "r" / "cal.tar.gz"
    assert book.main(["export", "--profile", "smoke", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask(), "a bundle is a normal file"
    before = out.read_bytes()
    _cache(src, 1, start=2, section="generalisation")  # the cache moved on since
    assert book.main(["export", "--profile", "smoke", str(out)]) == 2
    assert "already exists" in _one_line_error(capsys) and out.read_bytes() == before
    with pytest.raises(bundle.BundleError, match="already exists"):
        bundle.export_bundle("smoke", out, root=src)
    # nor the parts a split wrote beside it
    out.unlink()
    (out.parent / "cal-part1of2.tar.gz").write_bytes(before)
    assert book.main(["export", "--profile", "smoke", str(out)]) == 2
    assert "cal-part1of2.tar.gz" in _one_line_error(capsys) and not out.exists()
    out.write_bytes(before)
    assert book.main(["export", "--profile", "smoke", "--force", str(out)]) == 0
    assert out.read_bytes() != before
    assert bundle.read_bundle_listing(out)["complete"] == {"calibration_ood": True,
                                                          "generalisation": True}
    # a directory, or a name import would not read, is refused in one line
    assert book.main(["export", "--profile", "smoke", str(tmp_path / "r")]) == 2
    assert "is a directory" in _one_line_error(capsys)
    assert book.main(["export", "--profile", "smoke", str(tmp_path / "cal.tgz")]) == 2
    assert ".tar.gz" in _one_line_error(capsys) and not (tmp_path / "cal.tgz").exists()


def _umask() -> int:
    import os
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_export_of_no_results_is_refused_unless_allowed(tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    _cache(src, 2)
    bundle.update_manifest("smoke", "generalisation", {"entries": [], "complete": False},
                           root=src)
    monkeypatch.setenv("SOFTLIB_CACHE", str(src))
    out = tmp_path / "gen.tar.gz"
    assert book.main(["export", "--profile", "smoke", "--sections", "generalisation",
                      str(out)]) == 2
    err = _one_line_error(capsys)
    assert "generalisation" in err and "compute --profile smoke --sections generalisation" in err
    assert "--allow-empty" in err and not out.exists()
    assert book.main(["export", "--profile", "smoke", "--sections", "generalisation",
                      "--allow-empty", str(out)]) == 0
    assert bundle.read_bundle_listing(out)["entries"] == 0
    # a slice that added nothing to the bundles it builds on says so
    d = tmp_path / "results"
    bundle.export_bundle("smoke", d / "cal-1.tar.gz", root=src, sections=["calibration_ood"])
    with pytest.raises(bundle.BundleError, match="already in the bundles it builds on"):
        bundle.export_bundle("smoke", d / "cal-2.tar.gz", root=src, sections=["calibration_ood"],
                             builds_on=[d])
    capsys.readouterr()
    with pytest.raises(SystemExit):  # the help names the flag
        book.main(["export", "--help"])
    assert "--allow-empty" in capsys.readouterr().out


def test_export_checks_the_profile_name_first(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path))
    assert book.main(["export", "--profile", "foo", str(tmp_path / "x.tar.gz")]) == 2
    err = _one_line_error(capsys)
    assert "unknown profile 'foo'" in err and "smoke" in err and "compute" not in err


def test_split_needs_a_positive_size(tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    _cache(src, 3)
    out = tmp_path / "r" / "cal.tar.gz"
    bundle.export_bundle("smoke", out, root=src)
    for bad in ("0", "-1", "nan", "inf"):
        assert book.main(["split", str(out), "--max-mib", bad]) == 2
        assert "positive" in _one_line_error(capsys)
    assert sorted(out.parent.iterdir()) == [out]
    monkeypatch.setenv("SOFTLIB_CACHE", str(src))
    assert book.main(["export", "--profile", "smoke", "--max-mib", "0",
                      str(tmp_path / "y.tar.gz")]) == 2
    assert "positive" in _one_line_error(capsys) and not (tmp_path / "y.tar.gz").exists()
    with pytest.raises(bundle.BundleError, match="positive"):
        bundle.split_bundle(out, 0)


def test_importing_a_tar_gz_that_is_not_a_bundle_names_it(tmp_path, capsys, monkeypatch):
    import io
    plain = tmp_path / "docs.tar.gz"
    with tarfile.open(plain, "w:gz") as tar:
        info = tarfile.TarInfo("README.md")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "cache"))
    assert book.main(["import", str(plain)]) == 2
    assert f"{plain}: not a results bundle (no BUNDLE.json)" in _one_line_error(capsys)
    # a bundle with a foreign member: the unsafe-path message names the file
    src = tmp_path / "src"
    _cache(src, 1)
    good = tmp_path / "good.tar.gz"
    bundle.export_bundle("smoke", good, root=src)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(good) as tin, tarfile.open(evil, "w:gz") as tout:
        for m in tin:
            tout.addfile(m, tin.extractfile(m) if m.isfile() else None)
        info = tarfile.TarInfo("README.md")
        info.size = 5
        tout.addfile(info, io.BytesIO(b"hello"))
    with pytest.raises(bundle.BundleError, match=f"{evil}.*unsafe or foreign path 'README.md'"):
        bundle.import_bundle(evil, root=tmp_path / "c2")


def test_with_weights_before_the_bundle_name(tmp_path, capsys, monkeypatch):
    """``export --with-weights OUT.tar.gz``: the flag without sections, then the bundle."""
    src = tmp_path / "src"
    _cache(src, 2)
    monkeypatch.setenv("SOFTLIB_CACHE", str(src))
    out = tmp_path / "w.tar.gz"
    assert book.main(["export", "--profile", "smoke", "--with-weights", str(out)]) == 0
    assert bundle.read_bundle_listing(out)["with_weights"] == ["all"]
    assert book.main(["export", "--profile", "smoke", "--with-weights=calibration_ood",
                      str(tmp_path / "s.tar.gz")]) == 0
    assert bundle.read_bundle_listing(tmp_path / "s.tar.gz")["with_weights"] == ["calibration_ood"]
    # a bundle name as the sections, with another bundle name: a clear error, nothing written
    assert book.main(["export", "--profile", "smoke", "--with-weights", str(tmp_path / "a.tar.gz"),
                      str(tmp_path / "b.tar.gz")]) == 2
    assert "--with-weights" in _one_line_error(capsys)
    assert not (tmp_path / "a.tar.gz").exists() and not (tmp_path / "b.tar.gz").exists()
    assert book.main(["export", "--profile", "smoke"]) == 2
    assert "OUT.tar.gz" in _one_line_error(capsys)
