"""``python -m softlib.book compute`` (training without Jupyter), its manifest, and results
bundles (``export`` / ``import``), under the smoke profile's synthetic data."""
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from softlib.book import runner as book, bundle
from softlib.cache import Entry, ResultCache, config_key, record_access

REPO = Path(book.__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")

BLOCKED = ("IPython", "papermill", "nbformat", "jupytext", "ipykernel", "ipywidgets", "nbclient")


def _book_without_jupyter(args, env):
    """``python -m softlib.book ARGS`` in a process where papermill, IPython, nbformat and
    jupytext cannot be imported (as on a GPU machine that only has torch)."""
    prelude = ("import sys, runpy\n"
               f"for n in {BLOCKED!r}: sys.modules[n] = None\n"
               f"sys.argv = ['softlib.book', *{list(args)!r}]\n"
               "runpy.run_module('softlib.book', run_name='__main__', alter_sys=True)\n")
    return subprocess.run([sys.executable, "-c", prelude], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=600)


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SOFTLIB_DATA",)}
    return {**env, "SOFTLIB_CACHE": str(cache), "SOFTLIB_QUIET": "1", "OMP_NUM_THREADS": "1"}


def _entries(root: Path) -> dict[str, bytes]:
    """Every cache entry file (kind/key/name) under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.glob("*/*/*")
            if p.is_file() and p.name in bundle.ENTRY_FILES and not p.parts[-3].startswith(".")}


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    """The smoke profile computed once (in a process without Jupyter), then computed again."""
    cache = tmp_path_factory.mktemp("cache")
    env = _env(cache)
    first = _book_without_jupyter(["compute", "--profile", "smoke"], env)
    assert first.returncode == 0, first.stdout + first.stderr
    before = {k: v for k, v in _entries(cache).items()}
    second = _book_without_jupyter(["compute", "--profile", "smoke"], env)
    assert second.returncode == 0, second.stdout + second.stderr
    return {"cache": cache, "first": first.stdout, "second": second.stdout, "before": before,
            "after": _entries(cache)}


def test_compute_trains_every_section_without_jupyter(computed):
    out = computed["first"]
    for section in ("generalisation", "alternatives", "adversarial", "calibration_ood"):
        assert f"{section}: complete" in out, out
    assert "all requested sections complete" in out
    assert computed["before"], "compute cached nothing"


def test_second_compute_is_all_cache_hits(computed):
    out = computed["second"]
    assert out.count("(trained 0,") == 4, out
    assert computed["after"] == computed["before"], "the second compute rewrote cache entries"


def test_manifest_lists_every_entry_and_provenance(computed):
    cache = computed["cache"]
    man = json.loads((cache / "manifests" / "smoke.json").read_text())
    assert man["profile"] == "smoke"
    listed = set()
    for section in ("generalisation", "alternatives", "adversarial", "calibration_ood"):
        rec = man["sections"][section]
        assert rec["complete"] is True and rec["entries"]
        listed |= {tuple(e) for e in rec["entries"]}
        assert rec["params"] and rec["provenance"]["torch"]
    # adversarial reuses section 3's models: its list includes alternatives' entries
    adv = {tuple(e) for e in man["sections"]["adversarial"]["entries"]}
    assert {k for k, _ in adv} >= {"peterson_pretrain", "peterson_finetune", "peterson_attack"}
    on_disk = {tuple(p.split("/")[:2]) for p in computed["after"]}
    assert listed == on_disk
    prov = man["provenance"]
    for key in ("machine", "device_name", "torch", "git_commit", "date"):
        assert prov[key]


def test_compute_without_jupyter_never_imports_it(computed):
    for out in (computed["first"], computed["second"]):
        assert "Traceback" not in out


def test_budget_zero_stops_before_the_first_training_job(tmp_path):
    env = _env(tmp_path)
    res = _book_without_jupyter(["compute", "--profile", "smoke", "--sections",
                                 "generalisation,alternatives", "--budget-seconds", "0"], env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "generalisation: STOPPED" in res.stdout and "trained 0" in res.stdout
    assert "compute budget spent" in res.stdout
    assert "Not complete: generalisation, alternatives" in res.stdout
    assert "rerun" in res.stdout.lower() or "again" in res.stdout
    assert not list(tmp_path.glob("peterson_*/*/meta.json")), "a model was trained"
    man = json.loads((tmp_path / "manifests" / "smoke.json").read_text())
    assert man["sections"]["generalisation"]["complete"] is False
    assert "alternatives" not in man["sections"]


def test_gpu_profile_refuses_the_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path))
    monkeypatch.setenv("SOFTLIB_DATA", str(tmp_path / "data"))
    assert book.main(["compute", "--profile", "gpu", "--device", "cpu"]) == 2
    assert "--allow-cpu" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# bundles
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(computed, tmp_path_factory):
    d = tmp_path_factory.mktemp("bundles")
    plain, weighted = d / "smoke.tar.gz", d / "smoke-adv.tar.gz"
    b1 = bundle.export_bundle("smoke", plain, root=computed["cache"])
    b2 = bundle.export_bundle("smoke", weighted, with_weights=["adversarial"],
                              root=computed["cache"])
    return {"plain": plain, "weighted": weighted, "b1": b1, "b2": b2}


def test_export_leaves_out_weights_and_lists_checksums(exported):
    with tarfile.open(exported["plain"]) as tar:
        names = tar.getnames()
    assert names[:2] == ["softlib-bundle/BUNDLE.json", "softlib-bundle/manifest.json"]
    assert not any(n.endswith("model.pt") for n in names)
    assert set(exported["b1"]["files"]) == {n.split("/", 1)[1] for n in names[1:]}
    with tarfile.open(exported["weighted"]) as tar:
        pts = [n for n in tar.getnames() if n.endswith("model.pt")]
    adv_kinds = {n.split("/")[2] for n in pts}
    assert pts and adv_kinds <= {"peterson_pretrain", "peterson_finetune"}


def test_import_into_an_empty_cache_is_byte_identical(computed, exported, tmp_path):
    r = bundle.import_bundle(exported["plain"], root=tmp_path)
    assert r["imported"] == r["entries"] > 0 and r["identical"] == 0
    src, dst = computed["after"], _entries(tmp_path)
    for rel, data in dst.items():
        assert src[rel] == data, rel
    assert {k for k in src if not k.endswith("model.pt")} == set(dst)
    man = json.loads((tmp_path / "manifests" / "smoke.json").read_text())
    assert all(s["complete"] for s in man["sections"].values())
    # a second import of the same bundle is a no-op
    again = bundle.import_bundle(exported["plain"], root=tmp_path)
    assert again["imported"] == 0 and again["identical"] == r["entries"]
    # the weights bundle adds model.pt to the entries that lacked it, and nothing else
    w = bundle.import_bundle(exported["weighted"], root=tmp_path)
    assert w["weights_added"] > 0 and w["imported"] == 0
    for rel, data in _entries(tmp_path).items():
        assert src[rel] == data, rel
    # the arrays read back identically through the cache
    kind, key = next(r for r in src if r.endswith("arrays.npz")).split("/")[:2]
    meta = json.loads((tmp_path / kind / key / "meta.json").read_text())
    a, b = ResultCache(computed["cache"]).load(kind, meta["config"]), \
        ResultCache(tmp_path).load(kind, meta["config"])
    assert a.arrays.keys() == b.arrays.keys()
    assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    assert a.meta == b.meta


def test_imported_cache_serves_compute_without_training(exported, tmp_path):
    """What the notebooks need is all in a bundle: the imported cache recomputes nothing (the
    attacks section needs the weights of section 3's models, hence the weights bundle)."""
    bundle.import_bundle(exported["weighted"], root=tmp_path)
    res = _book_without_jupyter(["compute", "--profile", "smoke"], _env(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("(trained 0,") == 4, res.stdout


def _repack(src: Path, dst: Path, change) -> None:
    """Copy the bundle ``src`` to ``dst``, passing each (TarInfo, bytes) through ``change``."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin:
            data = tin.extractfile(m).read() if m.isfile() else b""
            for info, payload in change(m, data):
                tout.addfile(info, io.BytesIO(payload) if info.isfile() else None)


def _assert_refused(path: Path, root: Path, match: str) -> None:
    with pytest.raises(bundle.BundleError, match=match):
        bundle.import_bundle(path, root=root)
    assert not _entries(root), "a refused bundle wrote entries"
    assert not list(root.glob(".import.*")), "staging left behind"


def test_corrupt_bundles_are_refused(exported, tmp_path):
    good = exported["plain"]
    raw = good.read_bytes()
    (tmp_path / "truncated.tar.gz").write_bytes(raw[: len(raw) // 2])
    _assert_refused(tmp_path / "truncated.tar.gz", tmp_path / "c1", "not a readable")

    def flip(m, data):
        if m.name.endswith("arrays.npz") and not getattr(flip, "done", False):
            flip.done = True
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        m.size = len(data)
        yield m, data
    _repack(good, tmp_path / "flipped.tar.gz", flip)
    _assert_refused(tmp_path / "flipped.tar.gz", tmp_path / "c2", "checksum mismatch")

    def drop(m, data):
        if not (m.name.endswith("meta.json") and "laing_eval" in m.name):
            yield m, data
    _repack(good, tmp_path / "dropped.tar.gz", drop)
    _assert_refused(tmp_path / "dropped.tar.gz", tmp_path / "c3", "do not match BUNDLE.json")


def test_unsafe_members_are_refused(exported, tmp_path):
    def escape(m, data):
        yield m, data
        if m.name.endswith("BUNDLE.json"):
            evil = tarfile.TarInfo("softlib-bundle/../../evil.txt")
            evil.size = 4
            yield evil, b"evil"
    _repack(exported["plain"], tmp_path / "escape.tar.gz", escape)
    _assert_refused(tmp_path / "escape.tar.gz", tmp_path / "c1", "unsafe")
    assert not (tmp_path / "evil.txt").exists()

    def link(m, data):
        yield m, data
        if m.name.endswith("BUNDLE.json"):
            ln = tarfile.TarInfo("softlib-bundle/entries/x/0123456789abcdef0123/meta.json")
            ln.type, ln.linkname = tarfile.SYMTYPE, "/etc/passwd"
            yield ln, b""
    _repack(exported["plain"], tmp_path / "link.tar.gz", link)
    _assert_refused(tmp_path / "link.tar.gz", tmp_path / "c2", "not a regular file")

    def absolute(m, data):
        if m.name.endswith("manifest.json"):
            m.name = "/tmp/manifest.json"
        yield m, data
    _repack(exported["plain"], tmp_path / "abs.tar.gz", absolute)
    _assert_refused(tmp_path / "abs.tar.gz", tmp_path / "c3", "unsafe")

    def traverse(m, data):  # an entry it builds on must be named as kind/key, nothing else
        if m.name.endswith("BUNDLE.json"):
            doc = json.loads(data)
            doc["requires"] = {"../../etc": {"meta.json": "0" * 64, "bundle": "x.tar.gz"}}
            data = json.dumps(doc).encode()
            m.size = len(data)
        yield m, data
    _repack(exported["plain"], tmp_path / "requires.tar.gz", traverse)
    _assert_refused(tmp_path / "requires.tar.gz", tmp_path / "c9", "malformed 'requires'")


def test_a_mismatched_entry_is_refused(exported, tmp_path):
    """An entry stored under a key its configuration does not hash to (with matching checksums)."""
    # rebuild the bundle with one meta.json's config altered and its checksum updated
    with tarfile.open(exported["plain"]) as tin:
        members = [(m, tin.extractfile(m).read()) for m in tin if m.isfile()]
    b = json.loads(members[0][1])
    target = next(m.name for m, _ in members if m.name.endswith("meta.json"))
    out = tmp_path / "mismatch.tar.gz"
    new = []
    for m, data in members:
        if m.name == target:
            meta = json.loads(data)
            meta["config"]["tampered"] = True
            data = json.dumps(meta).encode()
            rel = m.name.split("/", 1)[1]
            b["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        new.append((m, data))
    bdata = json.dumps(b).encode()
    with tarfile.open(out, "w:gz") as tout:
        for m, data in [(new[0][0], bdata)] + new[1:]:
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
    _assert_refused(out, tmp_path / "c", "not the result of the configuration")


def test_a_conflicting_existing_entry_is_never_overwritten(computed, exported, tmp_path):
    man = json.loads((computed["cache"] / "manifests" / "smoke.json").read_text())
    kind, key = man["sections"]["generalisation"]["entries"][0]
    meta = json.loads((computed["cache"] / kind / key / "meta.json").read_text())
    mine = ResultCache(tmp_path)
    mine.save(kind, meta["config"], Entry(arrays={"x": np.zeros(3)}, meta={"other": "result"}))
    assert config_key(kind, meta["config"]) == key
    before = _entries(tmp_path)
    with pytest.raises(bundle.BundleError, match="differ from the bundle's"):
        bundle.import_bundle(exported["plain"], root=tmp_path)
    assert _entries(tmp_path) == before, "the import changed the cache"
    assert not (tmp_path / "manifests" / "smoke.json").exists()


def test_export_needs_a_manifest(tmp_path):
    with pytest.raises(bundle.BundleError, match="compute --profile cpu"):
        bundle.export_bundle("cpu", tmp_path / "x.tar.gz", root=tmp_path)


def test_cli_export_and_import(exported, computed, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SOFTLIB_CACHE", str(computed["cache"]))
    out = tmp_path / "cli.tar.gz"
    assert book.main(["export", "--profile", "smoke", str(out)]) == 0
    assert "weights: none" in capsys.readouterr().out
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "fresh"))
    assert book.main(["import", str(out)]) == 0
    assert "new entries" in capsys.readouterr().out
    (tmp_path / "bad.tar.gz").write_bytes(b"not a bundle")
    assert book.main(["import", str(tmp_path / "bad.tar.gz")]) == 2
    assert "refusing bundle" in capsys.readouterr().err


def test_record_access_sees_loads_and_saves(tmp_path):
    c = ResultCache(tmp_path)
    seen = []
    c.on_access = lambda action, kind, key: seen.append((action, kind))
    with record_access() as touched:
        c.get_or_compute("k", {"a": 1}, lambda: Entry(meta={"v": 1}))
        c.get_or_compute("k", {"a": 1}, lambda: Entry(meta={"v": 2}))
    assert touched == [("k", config_key("k", {"a": 1}))]
    assert seen == [("save", "k"), ("load", "k")]
    assert list(c.touched) == touched


def test_section4_attacks_the_models_section3_ran_with(tmp_path):
    """Section 3's effective parameters (overrides included) are what section 4 attacks."""
    import pytest
    from softlib.book import profiles, sections
    from softlib.cache import ResultCache
    cache = ResultCache(tmp_path / "c")
    default = profiles.resolve("smoke", "alternatives")
    assert sections.adversarial_alt_params("smoke", cache) == default  # nothing recorded yet
    changed = profiles.resolve("smoke", "alternatives", finetune_epochs=3)
    sections.record_section_params(cache, "smoke", "alternatives", changed, seed=0)
    got = sections.adversarial_alt_params("smoke", cache, seed=0)
    assert got["finetune_epochs"] == 3 and got != default
    with pytest.raises(ValueError, match="seed"):
        sections.adversarial_alt_params("smoke", cache, seed=1)
    assert sections.adversarial_alt_params("cpu", cache) == profiles.resolve("cpu", "alternatives")


def test_a_bundle_of_some_sections_holds_only_theirs(exported, computed, tmp_path):
    """What one slice computed travels on its own, next to the other sections' bundles."""
    root = computed["cache"]
    man = bundle.load_manifest("smoke", root)
    out = tmp_path / "cal.tar.gz"
    b = bundle.export_bundle("smoke", out, root=root, sections=["calibration_ood"])
    assert list(b["complete"]) == ["calibration_ood"]
    assert b["entries"] == len(bundle.manifest_entries(man, ["calibration_ood"])) > 0
    r = bundle.import_bundle(out, root=tmp_path / "fresh")
    assert r["imported"] == b["entries"]
    kinds = {p.parent.parent.name for p in (tmp_path / "fresh").glob("*/*/meta.json")}
    assert kinds == {"laing_train", "laing_eval"}
    assert list(bundle.load_manifest("smoke", tmp_path / "fresh")["sections"]) == ["calibration_ood"]
    with pytest.raises(bundle.BundleError, match="unknown section"):
        bundle.export_bundle("smoke", tmp_path / "x.tar.gz", root=root, sections=["nope"])


def _first_slice(root: Path, dest: Path, section: str) -> tuple[Path, list]:
    """A copy of ``root`` whose manifest records ``section`` as a slice stopped half-way."""
    import shutil
    shutil.copytree(root, dest)
    man = bundle.load_manifest("smoke", dest)
    rec = man["sections"][section]
    half = rec["entries"][: len(rec["entries"]) // 2]
    man["sections"] = {section: dict(rec, entries=half, complete=False)}
    (dest / "manifests" / "smoke.json").write_text(json.dumps(man))
    return dest, [tuple(e) for e in half]


def test_a_slice_bundle_holds_only_what_is_new_since_the_bundles_it_builds_on(computed, tmp_path,
                                                                               monkeypatch):
    root = computed["cache"]
    section = "calibration_ood"
    first, half = _first_slice(root, tmp_path / "first", section)
    d = tmp_path / "results"
    d.mkdir()
    base = d / "b-1.tar.gz"
    bundle.export_bundle("smoke", base, root=first, sections=[section], builds_on=[d])
    later = d / "a-2.tar.gz"  # sorts before its base: the import must order them itself
    b = bundle.export_bundle("smoke", later, root=root, sections=[section], builds_on=[d])
    everything = bundle.manifest_entries(bundle.load_manifest("smoke", root), [section])
    assert sorted(tuple(r.split("/")) for r in b["requires"]) == sorted(half)
    assert {r["bundle"] for r in b["requires"].values()} == {"b-1.tar.gz"}
    carried = {tuple(f.split("/")[1:3]) for f in b["files"] if f.startswith("entries/")}
    assert carried == set(everything) - set(half) and carried
    # alone it cannot be imported, and says which bundle it needs
    with pytest.raises(bundle.MissingBaseError, match="import b-1.tar.gz first"):
        bundle.import_bundle(later, root=tmp_path / "alone")
    assert not list((tmp_path / "alone").glob("*/*/meta.json"))
    # the directory imports both, base first, into the complete section
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "fresh"))
    done = book.import_results("smoke", d)
    monkeypatch.undo()
    assert [Path(r["file"]).name for r in done] == ["b-1.tar.gz", "a-2.tar.gz"]
    assert not any("error" in r for r in done)
    fresh = bundle.load_manifest("smoke", tmp_path / "fresh")["sections"][section]
    assert fresh["complete"] and sorted(map(tuple, fresh["entries"])) == sorted(everything)
    fresh_files = _entries(tmp_path / "fresh")
    want = {f"{k}/{key}/{n}" for k, key in everything for n in ("meta.json", "arrays.npz")
            if (root / k / key / n).exists()}
    assert set(fresh_files) == want
    assert all(fresh_files[f] == (root / f).read_bytes() for f in want if f.endswith(".json"))


def test_a_changed_entry_is_carried_and_a_base_nobody_has_is_reported(computed, tmp_path,
                                                                        monkeypatch):
    root = computed["cache"]
    section = "calibration_ood"
    first, half = _first_slice(root, tmp_path / "first", section)
    base = tmp_path / "base.tar.gz"
    bundle.export_bundle("smoke", base, root=first, sections=[section])
    kind, key = half[0]
    meta = first / kind / key / "meta.json"  # the same configuration, a different result
    m = json.loads(meta.read_text())
    m["meta"]["note"] = "recomputed"
    meta.write_text(json.dumps(m))
    man = bundle.load_manifest("smoke", root)  # the finished section, from this cache
    (first / "manifests" / "smoke.json").write_text(json.dumps(man))
    b = bundle.export_bundle("smoke", tmp_path / "next.tar.gz", root=first, sections=[section],
                             builds_on=[base])
    assert f"{kind}/{key}" not in b["requires"] and len(b["requires"]) == len(half) - 1
    assert f"entries/{kind}/{key}/meta.json" in b["files"]
    # a directory without the base: reported, not imported, the rest still works
    d = tmp_path / "only-next"
    d.mkdir()
    (tmp_path / "next.tar.gz").rename(d / "next.tar.gz")
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "fresh"))
    done = book.import_results("smoke", d)
    assert book.main(["import", str(d)]) == 2
    monkeypatch.undo()
    assert len(done) == 1 and "import base.tar.gz first" in done[0]["error"]
    assert book.main(["import", str(tmp_path / "missing.tar.gz")]) == 2


def test_float16_predictions_travel_in_a_bundle_and_read_back_exactly(tmp_path):
    """A section computed with ``logits_precision=float16`` stores its predictions in half the
    bytes; its bundle imports byte for byte, the imported cache reads them back as the same
    float32 values and serves the section without training."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    args = ["--profile", "smoke", "--sections", "generalisation", "-p", "logits_precision=float16"]
    r = _book_without_jupyter(["compute", *args], _env(src))
    assert r.returncode == 0, r.stdout + r.stderr
    kinds = {p.parts[-3] for p in src.glob("*/*/arrays.npz")}
    assert kinds == {"peterson_scratch"}
    for p in src.glob("peterson_scratch/*/arrays.npz"):
        with np.load(p) as z:
            assert {z[k].dtype for k in z.files} == {np.dtype(np.float16)}, p
    bundle.export_bundle("smoke", tmp_path / "b.tar.gz", root=src)
    bundle.import_bundle(tmp_path / "b.tar.gz", root=dst)
    a, b = _entries(src), _entries(dst)
    assert {k: v for k, v in a.items() if not k.endswith("model.pt")} == b
    for p in src.glob("peterson_scratch/*/meta.json"):
        cfg = json.loads(p.read_text())["config"]
        assert cfg["train"]["logits_precision"] == "float16"  # in the key
        x, y = (ResultCache(r).load("peterson_scratch", cfg) for r in (src, dst))
        for k, v in x.arrays.items():
            assert v.dtype == y.arrays[k].dtype == np.float32
            assert np.array_equal(v, y.arrays[k], equal_nan=True)
    again = _book_without_jupyter(["compute", *args], _env(dst))
    assert again.returncode == 0 and "trained 0" in again.stdout, again.stdout + again.stderr


def test_a_failed_compute_leaves_the_sections_record_as_it_was(computed, tmp_path):
    """A run that dies on bad input (here a batch size of 0, caught by the training config)
    must not replace a complete section's manifest record with an empty, failed one."""
    import shutil
    cache = tmp_path / "cache"
    shutil.copytree(computed["cache"], cache)
    man = cache / "manifests" / "smoke.json"
    before = json.loads(man.read_text())["sections"]["generalisation"]
    assert before["complete"] and before["entries"]
    r = _book_without_jupyter(["compute", "--profile", "smoke", "--sections", "generalisation",
                               "-p", "batch_size=0"], _env(cache))
    assert r.returncode != 0 and "FAILED" in r.stdout, r.stdout + r.stderr
    assert json.loads(man.read_text())["sections"]["generalisation"] == before


def test_bad_input_to_the_command_line_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "c"))
    cases = [
        (["plan", "--profile", "cpu", "--sections", "generalisation", "--data-root",
          str(tmp_path / "nowhere")], "nowhere"),
        (["compute", "--profile", "smoke", "--sections", "generalisation", "--device", "nonsense"],
         "--device 'nonsense'"),
        (["compute", "--profile", "smoke", "--sections", "generalisation", "-p", "epochs=abc"],
         "expected a whole number"),
        (["compute", "--profile", "smoke", "--sections", "generalisation", "-p", "lr=0.01"],
         "expected a list"),
    ]
    import torch
    if not torch.cuda.is_available():
        cases.append((["compute", "--profile", "smoke", "--sections", "generalisation",
                       "--device", "cuda"], "no CUDA device"))
    for argv, says in cases:
        assert book.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        # one error (some messages go on over a few indented lines), after plan's notice
        msg = err[err.index("error: "):] if "error: " in err else ""
        assert msg and says in msg and "Traceback" not in err, (argv, err)
        assert all(line.startswith(" ") for line in msg.splitlines()[1:]), msg


def test_ctrl_c_says_how_to_continue_and_exits_130(monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(book, "compute_sections", interrupted)
    assert book.main(["compute", "--profile", "smoke"]) == 130
    assert "run the same command again to continue" in capsys.readouterr().err
