"""Sections 3-4 computed one architecture at a time (``compute --archs``), with the pretrained
weights the other machine needs travelling in a bundle (``export --pretrained-weights``): the
same cache entries as one run that computes everything, under the smoke profile."""
import json
from pathlib import Path

import numpy as np
import pytest

from softlib.book import bundle
from softlib.book import runner as book

pytestmark = pytest.mark.usefixtures("one_thread")

W4, W2 = "ResNet-8 (w4)", "ResNet-8 (w2)"
ARCHS = (f'archs=[["{W4}", "resnet", {{"depth": 8, "width": 4}}], '
         f'["{W2}", "resnet", {{"depth": 8, "width": 2}}]]')
SECTIONS = "alternatives,adversarial"


def _compute(cache: Path, monkeypatch, *extra: str) -> None:
    monkeypatch.setenv("SOFTLIB_CACHE", str(cache))
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    assert book.main(["compute", "--profile", "smoke", "--sections", SECTIONS, "-p", ARCHS,
                      *extra]) == 0


def _entries(cache: Path, kind: str) -> dict[str, dict]:
    """key -> meta of every ``kind`` entry in ``cache``."""
    return {p.parent.name: json.loads(p.read_text()) for p in (cache / kind).glob("*/meta.json")}


def _width(meta: dict) -> int:
    """The width of the model a fine-tuning or pretraining entry trained."""
    return meta["config"]["train"]["arch_kwargs"]["width"]


def _attacked_width(cache: Path, meta: dict) -> int:
    """The width of the fine-tuned model an attack entry attacked."""
    ft = meta["config"]["finetune"]  # that model's cache key
    return _width(json.loads((cache / "peterson_finetune" / ft / "meta.json").read_text()))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Cache A: sections 3-4 for W4 only; cache B: A's bundles (W2's pretrained weights in one
    of them), then everything; cache C: everything in one run."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("by_arch")
    try:
        _compute(tmp / "a", mp, "--archs", W4)
        results, weights = tmp / "results.tar.gz", tmp / "weights.tar.gz"
        bundle.export_bundle("smoke", results, root=tmp / "a", sections=SECTIONS.split(","))
        w = bundle.export_bundle("smoke", weights, root=tmp / "a", sections=["alternatives"],
                                 builds_on=[results], pretrained_weights=[W2])
        for b in (results, weights):
            bundle.import_bundle(b, root=tmp / "b")
        before = set(_entries(tmp / "b", "peterson_pretrain"))
        _compute(tmp / "b", mp)
        _compute(tmp / "c", mp)
    finally:
        mp.undo()
    return {"tmp": tmp, "weights_bundle": w, "pretrain_before_b": before,
            "a": tmp / "a", "b": tmp / "b", "c": tmp / "c"}


def test_only_the_named_architecture_is_fine_tuned_and_attacked(runs):
    a = runs["a"]
    assert sorted(_width(m) for m in _entries(a, "peterson_pretrain").values()) == [2, 4]
    assert {_width(m) for m in _entries(a, "peterson_finetune").values()} == {4}
    attacks = _entries(a, "peterson_attack")
    assert attacks and {_attacked_width(a, m) for m in attacks.values()} == {4}
    man = bundle.load_manifest("smoke", a)["sections"]
    for s in SECTIONS.split(","):
        assert man[s]["complete"] is False and man[s]["only_archs"] == [W4]


def test_the_weights_bundle_carries_only_the_other_pretrained_model(runs):
    w = runs["weights_bundle"]
    files = [f for f in w["files"] if f.startswith("entries/")]
    assert all(f.startswith("entries/peterson_pretrain/") for f in files)
    assert sum(f.endswith("model.pt") for f in files) == 1
    key = next(f.split("/")[2] for f in files if f.endswith("model.pt"))
    assert _width(_entries(runs["a"], "peterson_pretrain")[key]) == 2
    assert w["with_weights"] == [f"pretrained {W2}"]


def test_the_second_machine_completes_the_sections_without_pretraining(runs):
    b, c = runs["b"], runs["c"]
    # nothing was pretrained again on B: its pretraining entries are the bundles'
    assert set(_entries(b, "peterson_pretrain")) == runs["pretrain_before_b"]
    man_b, man_c = (bundle.load_manifest("smoke", r)["sections"] for r in (b, c))
    for s in SECTIONS.split(","):
        assert man_b[s]["complete"] and "only_archs" not in man_b[s]
        # the same entries (keys) as one run of everything: the distillation teacher included
        assert sorted(map(tuple, man_b[s]["entries"])) == sorted(map(tuple, man_c[s]["entries"]))
    # W2's fine-tuned models (trained on B from the carried weights) match C's
    for key, meta in _entries(c, "peterson_finetune").items():
        if _width(meta) == 2:
            with np.load(b / "peterson_finetune" / key / "arrays.npz") as zb, \
                    np.load(c / "peterson_finetune" / key / "arrays.npz") as zc:
                np.testing.assert_allclose(zb["logits_heldout"], zc["logits_heldout"],
                                           rtol=1e-4, atol=1e-4)


def test_without_the_weights_bundle_fine_tuning_says_what_is_missing(runs, tmp_path, monkeypatch):
    bundle.import_bundle(runs["tmp"] / "results.tar.gz", root=tmp_path / "d")
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "d"))
    with pytest.raises(ValueError, match="--pretrained-weights"):
        book.compute_sections("smoke", ["alternatives"], overrides=book._parse_overrides([ARCHS]))


def test_archs_are_checked_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "e"))
    with pytest.raises(book.BookError, match="unknown architecture"):
        book.compute_sections("smoke", ["alternatives"], archs=["VGG-16"])
    with pytest.raises(book.BookError, match="applies to alternatives and adversarial only"):
        book.compute_sections("smoke", ["calibration_ood"], archs=["ResNet-8 (w4)"])
    assert book.main(["compute", "--profile", "smoke", "--sections", "calibration_ood",
                      "--archs", "ResNet-8 (w4)"]) != 0
    assert not (tmp_path / "e").exists() or not list((tmp_path / "e").glob("*/*/meta.json"))
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    # naming every architecture is the whole section
    assert book.check_archs("smoke", ["alternatives"], ["ResNet-8 (w4)"]) == ["ResNet-8 (w4)"]
    state = book.compute_sections("smoke", ["alternatives"], archs=["ResNet-8 (w4)"])
    assert state == {"alternatives": "complete"}


def test_pretrained_weights_export_refuses_what_it_cannot_carry(runs, tmp_path):
    with pytest.raises(bundle.BundleError, match="unknown architecture"):
        bundle.export_bundle("smoke", tmp_path / "x.tar.gz", root=runs["a"],
                             pretrained_weights=["VGG-16"])
    # B's pretrained W4 came from a bundle without weights
    with pytest.raises(bundle.BundleError, match="has no weights"):
        bundle.export_bundle("smoke", tmp_path / "y.tar.gz", root=runs["b"],
                             pretrained_weights=[W4])


def test_a_partial_section_is_reported_with_how_far_it_goes(runs, monkeypatch):
    """The book's 'not computed' page of a section computed for one architecture only says
    how many of its jobs are there and which result comes next."""
    from softlib.book import profiles
    monkeypatch.setenv("SOFTLIB_CACHE", str(runs["a"]))
    own = book._parse_overrides([ARCHS])
    params = profiles.resolve("smoke", "alternatives", **own)
    r = book._compute_one("smoke", "alternatives", params, own, "cpu", 0,
                          Path(runs["a"]) / "fixture-data", "check", check_only=True)
    assert not r["complete"] and 0 < r["jobs"] < r["planned"]
    reason = book.not_computed_reason(r)
    assert reason.startswith(f"the first {r['jobs']} of its {r['planned']} jobs are there")
    assert "first result missing: peterson_finetune" in reason


def test_a_gpu_book_renders_the_architectures_computed_so_far(runs, tmp_path, monkeypatch,
                                                               capsys):
    """Sections 3-4 of one architecture in a bundle (``compute --archs``): a book rendered from
    bundles shows that architecture's fine-tuned and attacked models, marked partial, and
    trains nothing (the other one's pretrained model is in the bundle, its fine-tuning not)."""
    import nbformat

    from softlib.book import profiles
    monkeypatch.setitem(profiles.PROFILES["smoke"], "requires_gpu", True)
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SOFTLIB_BOOK_DIR", str(tmp_path / "book"))
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    monkeypatch.delenv("SOFTLIB_DATA", raising=False)
    results = tmp_path / "results"
    results.mkdir()
    (results / "w4.tar.gz").write_bytes((runs["tmp"] / "results.tar.gz").read_bytes())
    rec = book.run_sections("smoke", SECTIONS.split(","), cuda_available=False,
                            results=results, overrides=book._parse_overrides([ARCHS]))
    out = capsys.readouterr().out
    for s in SECTIONS.split(","):
        part = rec[s]["part"]
        assert rec[s]["state"] == "partial", (s, rec[s])
        assert (part["done"], part["left_out"], part["notebook_param"]) == ([W4], [W2],
                                                                          "only_archs")
        assert rec[s]["trained"] == 0
    assert not list((tmp_path / "cache").glob("peterson_finetune/*/model.pt")), "trained here"
    assert {_width(m) for m in _entries(tmp_path / "cache", "peterson_finetune").values()} == {4}
    assert "PARTIAL" in out
    pages = tmp_path / "book" / "book" / "sections"
    for stem in ("03_alternatives", "04_adversarial"):
        nb = nbformat.read(pages / f"{stem}.ipynb", as_version=4)
        assert "Partial: 1 of 2 architectures" in nb.cells[1].source, stem
        injected = next(c for c in nb.cells
                        if "injected-parameters" in c.metadata.get("tags", []))
        assert f'only_archs = ["{W4}"]' in injected.source
        text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                         for o in c.get("outputs", []))
        assert "trained 0" in text or "new results 0" in text, stem
    doc = json.loads((pages / "claims" / "adversarial.json").read_text())
    assert doc["provenance"]["partial"] == "archs"
    assert doc["provenance"]["source"] == "imported results bundle"
