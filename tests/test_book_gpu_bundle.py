"""Rendering a book from results bundles without training, as ``make book PROFILE=gpu`` does on a
machine without a GPU: under the smoke profile's sections and fixture data, with the profile
marked ``requires_gpu`` for the runner (the notebooks' kernels see the ordinary smoke profile)
and CUDA reported absent. Also: section 4 renders from a bundle without model weights, and the
lazily loaded weights leave the attack results unchanged."""
import platform
import shutil
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from softlib.book import runner as book, bundle, profiles

pytestmark = [pytest.mark.book, pytest.mark.usefixtures("one_thread")]

COMPUTED = ["generalisation", "alternatives", "adversarial"]


def _entries(root: Path) -> dict[str, bytes]:
    """Every cache entry file (kind/key/name) under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.glob("*/*/*")
            if p.is_file() and p.name in bundle.ENTRY_FILES and not p.parts[-3].startswith(".")}


@pytest.fixture(scope="module")
def smoke_bundle(tmp_path_factory):
    """Sections 2-4 of the smoke profile computed into a cache and exported WITHOUT weights."""
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("computed")
    results = tmp_path_factory.mktemp("results")
    mp.setenv("SOFTLIB_CACHE", str(cache))
    mp.setenv("SOFTLIB_QUIET", "1")
    mp.delenv("SOFTLIB_DATA", raising=False)
    try:
        state = book.compute_sections("smoke", COMPUTED)
        assert all(state[s] == "complete" for s in COMPUTED), state
        bundle.export_bundle("smoke", results / "smoke.tar.gz", root=cache)
    finally:
        mp.undo()
    return {"cache": cache, "results": results, "entries": _entries(cache)}


@pytest.fixture
def gpu_smoke(monkeypatch, tmp_path):
    """The smoke profile as a profile that requires a GPU, an empty cache and book directory."""
    monkeypatch.setitem(profiles.PROFILES["smoke"], "requires_gpu", True)
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SOFTLIB_BOOK_DIR", str(tmp_path / "book"))
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    monkeypatch.delenv("SOFTLIB_DATA", raising=False)
    return tmp_path


def _outputs(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))


def test_a_gpu_profile_without_a_gpu_renders_from_bundles_and_trains_nothing(
        smoke_bundle, gpu_smoke, capsys):
    cache = gpu_smoke / "cache"
    sections = ["cifar10h_data", "generalisation", "adversarial", "calibration_ood"]
    rec = book.run_sections("smoke", sections, cuda_available=False,
                            results=smoke_bundle["results"])
    out = capsys.readouterr().out
    # the bundle was imported, and nothing was added to the cache afterwards: the notebooks
    # and the checks found every result there (no training, no new attack, no benchmark)
    assert "smoke.tar.gz (profile smoke):" in out and " new entries" in out
    got = _entries(cache)
    want = {k: v for k, v in smoke_bundle["entries"].items() if not k.endswith("model.pt")}
    assert set(got) == set(want), sorted(set(got) ^ set(want))[:5]
    assert all(got[k] == want[k] for k in got), "an imported result was rewritten"
    assert not list(cache.glob("laing_*")), "calibration_ood trained on the CPU"
    # terminal: which sections are complete, which are not, and how to compute them
    assert "is sized for a GPU and there is none here" in out
    for s in ("generalisation", "adversarial"):
        line = next(x for x in out.splitlines() if x.startswith("[") and f"] {s} " in x)
        assert "complete" in line and "trained 0" in line, line
        assert rec[s]["state"] == "complete" and rec[s]["trained"] == 0
    line = next(x for x in out.splitlines() if "] calibration_ood " in x and "NOT COMPUTED" in x)
    assert "first result missing: laing_train" in line, line
    cmd = ("python -m softlib.book compute --profile smoke --sections calibration_ood "
           "--budget-seconds")
    assert cmd in out
    assert ("python -m softlib.book export --profile smoke --sections calibration_ood "
            "--builds-on results/smoke --max-mib 4 results/smoke/calibration_ood-") in out
    assert rec["calibration_ood"]["state"] == "not computed"
    # ... and how far its jobs are, group by group (none of them in this bundle)
    progress = rec["calibration_ood"]["progress"]
    assert sum(r["jobs"] for r in progress) == rec["calibration_ood"]["planned_jobs"] > 0
    assert all(r["done"] == 0 and r["section"] == "calibration_ood" for r in progress)
    assert "calibration_ood, jobs in the cache: train 0/" in out
    # the executed notebooks read the cache only
    sections_dir = gpu_smoke / "book" / "book" / "sections"
    gen = nbformat.read(sections_dir / "02_generalisation.ipynb", as_version=4)
    assert "trained 0)" in _outputs(gen)
    adv = nbformat.read(sections_dir / "04_adversarial.ipynb", as_version=4)
    assert "new results 0" in _outputs(adv), "section 4 computed an attack"
    # the incomplete section is a page that says so, with the command; not an executed notebook
    page = nbformat.read(sections_dir / "05_calibration_ood.ipynb", as_version=4)
    assert page.metadata["softlib"]["not_computed"] is True
    text = "\n".join(c.source for c in page.cells)
    assert text.startswith("# 5.") and "Not computed yet" in text and cmd in text
    assert "| stage | group | in the cache |" in text and "| train | laing/basic | 0 of " in text
    # ... and the device time the rest would take, estimated from benchmarks/ (an H200's)
    assert "| in the cache | still to do (estimate) |" in text and "| | **in all** |" in text
    assert "on one H200, estimated from the speeds recorded under `benchmarks/`" in text
    assert not any(c.cell_type == "code" for c in page.cells)
    prov = (gpu_smoke / "book" / "book" / "generated" / "build_provenance.md").read_text()
    assert "| `calibration_ood` | **not computed**" in prov
    assert "| `generalisation` | complete | 0 |" in prov
    # ... and which machine computed the results the section read (the bundle's, on this CPU)
    assert "| results computed on |" in prov
    row = next(x for x in prov.splitlines() if x.startswith("| `generalisation` |"))
    n = bundle.load_manifest("smoke", smoke_bundle["cache"])["sections"]["generalisation"][
        "trained"]
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert row.endswith(f" | cpu ({platform.node()}): {n} results, {day} |"), row
    book.print_summary()
    summary = capsys.readouterr().out
    assert "NOT COMPUTED" in summary and "complete: cifar10h_data, generalisation, adversarial" \
        in summary


def test_a_section_whose_bundles_hold_some_model_types_renders_those_marked_partial(
        gpu_smoke, capsys):
    """Slices that have finished some of Laing's model types: the book shows those (the section
    run with them alone, its claims recorded as partial) under a note that names the others and
    how to compute them, instead of hiding results it has; nothing is trained."""
    import json
    computed, results = gpu_smoke / "computed", gpu_smoke / "results"
    results.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTLIB_CACHE", str(computed))
        mp.delenv("SOFTLIB_DATA", raising=False)  # compute sets it: undone on leaving
        state = book.compute_sections("smoke", ["calibration_ood"], allow_cpu=True,
                                      overrides={"model_types": ["basic", "sngp"]})
        assert state["calibration_ood"] == "complete"
        bundle.export_bundle("smoke", results / "laing-some.tar.gz", root=computed)
    capsys.readouterr()
    cache = gpu_smoke / "cache"
    rec = book.run_sections("smoke", ["calibration_ood", "claims"], cuda_available=False,
                            results=results)
    out = capsys.readouterr().out
    everything = profiles.resolve("smoke", "calibration_ood")["model_types"]
    r = rec["calibration_ood"]
    assert r["state"] == "partial" and r["part"]["param"] == "model_types"
    assert r["part"]["done"] == ["basic", "sngp"]
    assert r["part"]["left_out"] == [m for m in everything if m not in ("basic", "sngp")]
    line = next(x for x in out.splitlines() if "] calibration_ood " in x and "PARTIAL" in x)
    assert "rendered from its complete model_types basic, sngp (not computed: " in line, line
    assert "python -m softlib.book compute --profile smoke --sections calibration_ood" in out
    got = _entries(cache)
    want = {k: v for k, v in _entries(computed).items() if not k.endswith("model.pt")}
    assert set(got) == set(want), "the partial section trained or evaluated something"
    # the page: the note after the title, then the section run with its complete model types
    sections_dir = gpu_smoke / "book" / "book" / "sections"
    page = nbformat.read(sections_dir / "05_calibration_ood.ipynb", as_version=4)
    assert page.cells[0].source.startswith("# 5.")
    note = page.cells[1].source
    assert "Partial: 2 of 5 model types" in note and "`dropout_aug`" in note
    assert "| train | laing/duq | 0 of " in note and "--sections calibration_ood" in note
    injected = next(c for c in page.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'model_types = ["basic", "sngp"]' in injected.source
    assert any(c.cell_type == "code" and c.get("outputs") for c in page.cells)
    doc = json.loads((sections_dir / "claims" / "calibration_ood.json").read_text())
    assert doc["provenance"]["partial"] == "model_types"
    assert doc["claims"]["laing.ece"]["verdict"] != "not measurable here"
    assert "not among the model types" in doc["claims"]["laing.dropout_defender"]["reason"]
    prov = (gpu_smoke / "book" / "book" / "generated" / "build_provenance.md").read_text()
    assert "| `calibration_ood` | **partial**: model_types basic, sngp (not computed: " in prov
    book.print_summary()
    summary = capsys.readouterr().out
    assert "PARTIAL: calibration_ood, rendered from model_types basic, sngp" in summary
    assert "complete: claims" in summary
    # a book that must be complete refuses it
    assert book.main(["run", "--profile", "smoke", "--sections", "calibration_ood",
                      "--results", str(results), "--from-bundles", "--require-complete"]) == 2
    assert "are not (all) computed" in capsys.readouterr().err


def test_the_architectures_of_section_2_are_parts_too(smoke_bundle, gpu_smoke, monkeypatch):
    """Section 2's fold models of one architecture are a part: with a second architecture
    added to the profile, the bundle's one is complete on its own and the other is left out."""
    from softlib.book import sections as S
    bundle.import_bundle(smoke_bundle["results"] / "smoke.tar.gz", root=gpu_smoke / "cache")
    gen = profiles.PROFILES["smoke"]["sections"]["generalisation"]
    have = gen["archs"]
    other = ["ResNet-8 (w2)", "resnet", {"depth": 8, "width": 2}]
    monkeypatch.setitem(gen, "archs", have + [other])
    root = S.section_data_root("smoke")
    log = gpu_smoke / "parts.log"
    before = _entries(gpu_smoke / "cache")
    part = book._complete_parts("smoke", "generalisation", {}, "cpu", 0, root, log)
    assert (part["param"], part["done"], part["left_out"]) == ("archs", have, [other])
    assert part["notebook_param"] == "archs"
    assert book._part_label(other) == "ResNet-8 (w2)"
    assert _entries(gpu_smoke / "cache") == before, "checking the parts computed something"
    # one architecture: nothing to split into parts
    monkeypatch.setitem(gen, "archs", have)
    assert book._complete_parts("smoke", "generalisation", {}, "cpu", 0, root, log) is None


def test_results_of_other_data_are_named_as_such_never_shown(smoke_bundle, gpu_smoke,
                                                             monkeypatch):
    """A data root whose images and labels differ from those a bundle was computed from (here
    the fixtures of another seed; a user's canonical CIFAR-10 against the mirror's JPEG
    re-encoding) finds nothing to render: its page says the results are there for other data,
    the setting in which they differ, and what the manifest records about their data."""
    from softlib.data import fixtures
    bundle.import_bundle(smoke_bundle["results"] / "smoke.tar.gz", root=gpu_smoke / "cache")
    recorded = bundle.load_manifest("smoke", gpu_smoke / "cache")["sections"]["generalisation"]
    assert recorded["data"]["cifar10"] == {"source": "SYNTHETIC FIXTURE — not real data",
                                           "origin": "synthetic"}
    # the smoke profile reads the fixture root in the cache: make it another seed's
    other = fixtures.write_fixture_root(gpu_smoke / "cache" / "fixture-data", seed=1)
    (other / ".complete").write_text("fixtures of seed 1\n")
    monkeypatch.setenv("SOFTLIB_DATA", str(other))
    params = profiles.resolve("smoke", "generalisation")
    before = _entries(gpu_smoke / "cache")
    r = book._compute_one("smoke", "generalisation", params, {}, "cpu", 0, other, "check",
                          check_only=True, log=gpu_smoke / "check.log")
    assert not r["complete"]
    r["nearest"] = book._nearest_to_missing(r["stopped"], "smoke", "generalisation", {}, 0,
                                            other)
    assert _entries(gpu_smoke / "cache") == before
    assert book.computed_from_other_data(r)
    kind, key, diff = r["nearest"]
    assert kind == "peterson_scratch" and (gpu_smoke / "cache" / kind / key).is_dir()
    assert r["missing"].startswith(kind)
    reason = book.not_computed_reason(r)
    assert f"; the nearest {kind} result in the cache ({key}) differs from it in `" in reason
    note = book._other_data_note("smoke", "generalisation", other)
    assert note.startswith("**Computed from other data.**")
    assert ("records the same dataset sources as this data root's, so the data themselves "
            "differ") in note
    page = book._placeholder_notebook("generalisation", "smoke", reason, True, None, note)
    assert "Computed from other data" in page.cells[0].source
    assert page.metadata["softlib"]["other_data"] is True


def test_a_manifest_names_the_data_its_results_were_computed_from(tmp_path, monkeypatch):
    """The "other data" paragraph says which datasets differ: the manifest's record of the
    results' data (source and pixel origin) against this data root's."""
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "cache"))
    mirror = tmp_path / "mirror" / "cifar10"
    mirror.mkdir(parents=True)
    (mirror / "PROVENANCE.md").write_text("# CIFAR-10 (JPEG re-encoding), test set in order\n")
    canonical = tmp_path / "canonical" / "cifar10"
    canonical.mkdir(parents=True)
    (canonical / "PROVENANCE.json").write_text('{"source": "https://www.cs.toronto.edu/"}')
    from softlib.data.store import describe_data
    bundle.update_manifest("gpu", "calibration_ood", {
        "complete": True, "entries": [], "data": describe_data(tmp_path / "mirror")})
    note = book._other_data_note("gpu", "calibration_ood", tmp_path / "canonical")
    assert ("records their data as: cifar10: CIFAR-10 (JPEG re-encoding), test set in order "
            "(JPEG re-encoded)") in note
    assert "cifar10: https://www.cs.toronto.edu/ (not re-encoded)" in note
    bundle.update_manifest("gpu", "calibration_ood", {"complete": True, "entries": []})
    assert "does not record their data" in book._other_data_note(
        "gpu", "calibration_ood", tmp_path / "canonical")


def test_without_bundles_it_says_what_is_missing_and_fails_only_if_nothing_renders(
        gpu_smoke, capsys):
    empty = gpu_smoke / "no-results"
    empty.mkdir()
    assert book.main(["run", "--profile", "smoke", "--sections", "generalisation",
                      "--results", str(empty), "--from-bundles"]) == 2
    cap = capsys.readouterr()
    assert "no bundle in" in cap.out
    assert "python -m softlib.book compute --profile smoke --sections generalisation " \
           "--budget-seconds" in cap.out
    assert "nothing can be rendered" in cap.err
    assert not list((gpu_smoke / "cache").glob("peterson_*")), "trained without a GPU"
    # --require-complete refuses before executing anything
    assert book.main(["run", "--profile", "smoke", "--sections", "cifar10h_data,generalisation",
                      "--results", str(empty), "--from-bundles", "--require-complete"]) == 2
    assert "--require-complete" in capsys.readouterr().err
    assert not (gpu_smoke / "book" / "book" / "sections").exists()


def test_section_4_without_weights_needs_no_model_and_lazy_loading_keeps_results(
        smoke_bundle, tmp_path, monkeypatch):
    from softlib.book import sections as S
    from softlib.cache import ResultCache
    from softlib.studies import peterson as P
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    monkeypatch.delenv("SOFTLIB_DATA", raising=False)
    params = profiles.resolve("smoke", "adversarial")
    S.section_data_root("smoke")
    _, _, fg, pg = S.adversarial_runs(ResultCache(smoke_bundle["cache"]), "smoke", params)
    # a cache without weights (the bundle): the attack results are used, no model is built
    bundle.import_bundle(smoke_bundle["results"] / "smoke.tar.gz", root=tmp_path / "bundle")
    loads = []
    from softlib.studies.peterson import adversarial as PA
    real_load = PA.load_model
    monkeypatch.setattr(PA, "load_model", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    plain = ResultCache(tmp_path / "bundle")
    _, _, fg2, pg2 = S.adversarial_runs(plain, "smoke", params)
    assert not loads and plain.misses == 0
    assert fg.equals(fg2) and pg.equals(pg2)
    # the attacks computed again (the weights loaded from the cache) are identical
    again = tmp_path / "again"
    shutil.copytree(smoke_bundle["cache"], again)
    shutil.rmtree(again / "peterson_attack")
    c = ResultCache(again)
    _, _, fg3, pg3 = S.adversarial_runs(c, "smoke", params)
    assert c.misses == len(P.ATTACK_METHODS) * params_folds(), c.misses
    assert fg.equals(fg3) and pg.equals(pg3)
    for kind_key in (p for p in smoke_bundle["entries"] if p.startswith("peterson_attack/")
                     and p.endswith("arrays.npz")):
        a = np.load(smoke_bundle["cache"] / kind_key)
        b = np.load(again / kind_key)
        assert sorted(a.files) == sorted(b.files)
        assert all(np.array_equal(a[k], b[k]) for k in a.files), kind_key
    # no weights and no cached attack: a clear error, not an AttributeError
    shutil.rmtree(tmp_path / "bundle" / "peterson_attack")
    with pytest.raises(ValueError, match="weights are not in the cache"):
        S.adversarial_runs(ResultCache(tmp_path / "bundle"), "smoke", params)


def params_folds() -> int:
    return int(profiles.resolve("smoke", "alternatives")["folds"])


def test_results_bundles_may_be_committed():
    import subprocess
    repo = Path(book.__file__).resolve().parents[2]

    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=repo).returncode == 0
    if subprocess.run(["git", "rev-parse"], cwd=repo, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    assert not ignored("results/gpu/gpu-h200.tar.gz")
    assert ignored("results/gpu/notes.txt") and ignored("results/scratch.tar.gz")
    assert ignored("results/gpu/sub/x.tar.gz")
    assert book.results_dir("gpu") == repo / "results" / "gpu"
