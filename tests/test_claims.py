"""The claims ledger (softlib.book.claims): every verdict rule on constructed inputs, the registry
against the papers' constants and the notebooks, the sections' measurements, and a record ->
ledger round trip (including a book rendered from a GPU results bundle)."""
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from softlib.book import runner as book, claims
from softlib.book.claims import (CONTRADICTED, NOT_MEASURABLE, NOT_MEASURED, REPRODUCED,
                            NO_DIFFERENCE, OPPOSITE_WITHIN_NOISE, SAME_WITHIN_NOISE,
                            verdict)


# --------------------------------------------------------------------------- the verdict rule
def test_reproduced_same_direction_beyond_noise():
    # mean -0.2 over 5 folds, se 0.02: the t interval (4 d.o.f.) is far from 0
    assert verdict(-0.2, -1, se=0.02, n=5) == REPRODUCED
    assert verdict(0.3, +1, se=0.05, n=10) == REPRODUCED


def test_same_direction_within_noise():
    assert verdict(-0.2, -1, se=0.2, n=5) == SAME_WITHIN_NOISE


def test_within_noise_opposite_direction():
    assert verdict(0.05, -1, se=0.2, n=5) == OPPOSITE_WITHIN_NOISE


def test_contradicted_opposite_direction_beyond_noise():
    assert verdict(0.2, -1, se=0.02, n=5) == CONTRADICTED
    assert verdict(-1.0, +1, se=0.1, n=3) == CONTRADICTED


def test_not_measurable_without_an_estimate():
    for est in (None, float("nan"), float("inf")):
        assert verdict(est, -1, se=0.1, n=5) == NOT_MEASURABLE


def test_noise_uses_the_student_t_interval_of_the_folds():
    # 3 folds: t(0.975, 2) = 4.303, so |mean| / se = 4 is NOT beyond noise, 4.5 is
    assert verdict(-4.0, -1, se=1.0, n=3) == SAME_WITHIN_NOISE
    assert verdict(-4.5, -1, se=1.0, n=3) == REPRODUCED
    lo, hi = claims.confidence_interval(0.0, 1.0, 3)
    assert hi == pytest.approx(4.3027, abs=1e-3) and lo == pytest.approx(-hi)
    # with 30 folds the same ratio is far beyond noise
    assert verdict(-4.0, -1, se=1.0, n=30) == REPRODUCED


def test_one_fold_or_seed_is_never_beyond_noise():
    assert verdict(-5.0, -1, se=float("nan"), n=1) == SAME_WITHIN_NOISE
    assert verdict(5.0, -1, se=None, n=1) == OPPOSITE_WITHIN_NOISE
    assert claims.confidence_interval(1.0, 0.1, 1) is None


def test_an_explicit_interval_replaces_the_standard_error():
    assert verdict(4.3, +1, interval=(1.0, 7.6)) == REPRODUCED
    assert verdict(4.3, +1, interval=(-1.0, 9.6)) == SAME_WITHIN_NOISE
    assert verdict(-4.3, +1, interval=(-7.6, -1.0)) == CONTRADICTED
    with pytest.raises(ValueError, match="interval"):
        verdict(1.0, +1, interval=(2.0, 1.0))


def test_ratio_claims_are_judged_against_one():
    assert verdict(0.5, -1, se=0.05, n=5, null=1.0) == REPRODUCED
    assert verdict(1.2, -1, se=0.02, n=5, null=1.0) == CONTRADICTED
    assert verdict(0.9, -1, se=0.5, n=5, null=1.0) == SAME_WITHIN_NOISE


def test_an_estimate_at_the_null_is_no_difference_not_either_direction():
    """Soft and hard equally accurate (one seed, +0.00) is neither the paper's direction nor
    the opposite: it was counted as 'within noise' (the opposite direction) before."""
    assert verdict(0.0, +1, se=0.1, n=5) == NO_DIFFERENCE
    assert verdict(0.0, -1, se=0.0, n=5) == NO_DIFFERENCE
    assert verdict(0.0, +1) == NO_DIFFERENCE  # one seed: no interval
    assert verdict(1.0, -1, null=1.0) == NO_DIFFERENCE  # a ratio at its null
    assert verdict(1e-9, -1) == OPPOSITE_WITHIN_NOISE and verdict(-1e-9, -1) == SAME_WITHIN_NOISE


def test_expected_sign_must_be_plus_or_minus_one():
    with pytest.raises(ValueError, match="expected"):
        verdict(1.0, 0, se=0.1, n=3)


def test_every_verdict_is_in_the_legend_shown_on_the_page():
    for v in (REPRODUCED, SAME_WITHIN_NOISE, NO_DIFFERENCE, OPPOSITE_WITHIN_NOISE, CONTRADICTED,
              NOT_MEASURABLE, NOT_MEASURED):
        assert v in claims.VERDICTS and f"**{v}**" in claims.RULE_MARKDOWN


# --------------------------------------------------------------------------- the registry
def test_registry_ids_are_unique_and_sections_exist():
    ids = [c.id for c in claims.CLAIMS]
    assert len(ids) == len(set(ids)) >= 15
    for c in claims.CLAIMS:
        assert c.section in book.SECTIONS, c.id
        assert c.expected in (1, -1), c.id
    assert {c.study for c in claims.CLAIMS} == {"Peterson et al. 2019", "Laing 2024",
                                                 "Shankar et al. 2020"}


def test_paper_values_come_from_the_studies_constants_and_agree_with_the_expected_sign():
    from softlib.studies import peterson as P
    assert claims.paper_value("peterson.heldout_ce_human") == pytest.approx(0.35 - 0.57)
    assert claims.paper_value("peterson.shift_ce_far") == pytest.approx(
        P.PAPER_FIG2[("imagenet_far", "ce")][1] - P.PAPER_FIG2[("imagenet_far", "ce")][0])
    assert claims.paper_value("peterson.fgsm_ce_halved") == pytest.approx(0.5090, abs=1e-3)
    assert claims.paper_value("laing.dropout_defender") == pytest.approx(0.1518 - 0.3518)
    assert claims.paper_value("shankar.human_v2_drop") == pytest.approx(0.56 - 5.9)
    for c in claims.CLAIMS:
        v = claims.paper_value(c.id)
        if v is not None:  # the paper's own number points the way the claim says
            assert np.sign(v - c.null) == c.expected, c.id


def _headings(section: str) -> set[str]:
    text = (book.NOTEBOOKS / book.SECTIONS[section]).read_text()
    return {m.group(1).strip() for m in re.finditer(r"^# #+ (.+)$", text, re.M)}


def test_every_claim_links_to_a_heading_of_its_notebook():
    for c in claims.CLAIMS:
        assert c.heading in _headings(c.section), (c.id, c.heading)
    assert claims.anchor("2. Val vs V2 (Figure 1)") == "val-vs-v2-figure-1"
    assert claims.anchor("FGSM at eps = 4/255 (paper Table 2)") == "fgsm-at-eps-4-255-paper-table-2"


def test_every_section_with_claims_records_them_and_the_ledger_runs_after_them():
    order = list(book.SECTIONS)
    for section in {c.section for c in claims.CLAIMS}:
        text = (book.NOTEBOOKS / book.SECTIONS[section]).read_text()
        assert "claims.record(sec, claims.measure_" in text, section
        assert order.index(section) < order.index("claims"), section
        # the answer comes first: the verdicts right after the runs, before the paper's figures
        heads = re.findall(r"^# ## (.+)$", text, flags=re.M)
        brief = next(i for i, h in enumerate(heads) if h.startswith("In brief"))
        figures = {c.heading for c in claims.claims_of(section)}
        assert all(heads.index(h) > brief for h in figures if h in heads), section
        after = text.split("# ## " + heads[brief], 1)[1].split("# %% [markdown]", 1)[0]
        assert "claims.styled(claims.record(sec, claims.measure_" in after, section
    toc = (book.REPO / "_toc.yml").read_text()
    files = re.findall(r"file: (\S+)", toc)
    assert files[0] == "book/sections/" + book.SECTIONS["claims"][:-3]  # first after the intro


# --------------------------------------------------------------------------- measurements
def _gen_df(datasets=("heldout", "cifar10_train"), folds=3, archs=("A", "B")):
    rng = np.random.default_rng(0)
    rows = []
    for a in archs:
        for k in range(folds):
            for ds in datasets:
                for cond, shift in (("hard", 0.0), ("soft", -0.2)):
                    rows.append({"arch": a, "condition": cond, "lr": 0.1, "fold": k, "dataset": ds,
                                 "ce": 1.0 + shift + 0.01 * rng.standard_normal(),
                                 "accuracy": 0.6 - shift / 10, "sba": 0.4 - shift})
    return pd.DataFrame(rows)


def test_paired_by_unit_differences_and_ratios_average_over_architectures():
    df = pd.DataFrame({"fold": [0, 0, 0, 0, 1, 1, 1, 1], "arch": list("AABB") * 2,
                       "condition": ["hard", "soft"] * 4, "ce": [2, 1, 4, 3, 2, 1.5, 4, 2]})
    d = claims.paired_by_unit(df, "ce", "condition", "soft", "hard", "fold", ("arch",))
    assert list(d) == [-1.0, -1.25]
    r = claims.paired_by_unit(df, "ce", "condition", "soft", "hard", "fold", ("arch",), how="ratio")
    assert list(r) == pytest.approx([(0.5 + 0.75) / 2, (0.75 + 0.5) / 2])
    m = claims.from_units("peterson.fgsm_ce_halved", r)
    assert m.n == 2 and m.estimate == pytest.approx(0.625) and m.se == pytest.approx(0.0)
    assert claims.paired_by_unit(df, "ce", "condition", "soft", "mixup", "fold").empty


def test_generalisation_absent_shift_set_is_not_measurable_with_the_reason():
    ms = {m.claim: m for m in claims.measure_generalisation(
        _gen_df(), {"imagenet_far": "not under /data/imagenet_far (to get it: ...)"})}
    assert set(ms) == {c.id for c in claims.claims_of("generalisation")}
    far = ms["peterson.shift_ce_far"]
    assert far.estimate is None and far.verdict() == NOT_MEASURABLE
    assert "ImageNet-Far absent" in far.reason and "/data/imagenet_far" in far.reason
    ce = ms["peterson.shift_ce_cifar10"]
    assert ce.n == 3 and ce.n_what == "folds" and ce.estimate == pytest.approx(-0.2, abs=0.03)
    assert ce.verdict() == REPRODUCED and "2 architectures" in ce.note


def _laing_runs(seeds=(0, 1, 2), svhn=True):
    rows = []
    for s in seeds:
        for mt in ("basic", "dropout_aug", "sngp", "duq"):
            for cond in ("hard", "soft"):
                soft = cond == "soft"
                rows.append({"model_type": mt, "condition": cond, "seed": s,
                             "accuracy": 80 + soft * 1.5 + 0.1 * s,
                             "ood_auroc_svhn": (0.7 + soft * 0.06 + 0.001 * s) if svhn else np.nan,
                             "ood_auroc_fashion_mnist": 0.8 + soft * 0.02,
                             "ece": 0.05 + soft * (0.04 + 0.002 * s) + 0.001 * s,
                             "attack_decrease": (0.15 + 0.004 * s if mt == "dropout_aug" else 0.4)
                             - soft * 0.05 + 0.001 * s})
    return pd.DataFrame(rows)


def test_calibration_claims_from_a_constructed_grid():
    ms = {m.claim: m for m in claims.measure_calibration(_laing_runs())}
    assert set(ms) == {c.id for c in claims.claims_of("calibration_ood")}
    assert ms["laing.ece"].estimate == pytest.approx(0.042) and ms["laing.ece"].n == 3
    assert ms["laing.ece"].verdict() == REPRODUCED
    assert ms["laing.dropout_defender"].estimate == pytest.approx(-0.246)
    assert ms["laing.dropout_defender"].verdict() == REPRODUCED


def test_svhn_absent_makes_the_ood_claims_not_measurable_and_one_seed_is_within_noise():
    runs = _laing_runs(seeds=(0,), svhn=False)
    ms = {m.claim: m for m in claims.measure_calibration(runs, {"svhn": None, "fashion_mnist": 1})}
    for cid in ("laing.ood_auroc", "laing.ood_auroc_sngp"):
        assert ms[cid].verdict() == NOT_MEASURABLE
        assert "SVHN" in ms[cid].reason and "Fashion-MNIST" in ms[cid].note
    assert ms["laing.accuracy"].n == 1 and ms["laing.accuracy"].verdict() == SAME_WITHIN_NOISE


def test_imagenet_claims_without_the_release_or_real_are_not_measurable():
    ms = claims.measure_imagenet(None, None)
    assert {m.claim for m in ms} == {c.id for c in claims.claims_of("imagenet_humans")}
    for m in ms:
        assert m.verdict() == NOT_MEASURABLE and "absent" in m.reason
    assert "imagenet_human" in ms[0].reason


def test_imagenet_claims_from_a_constructed_study():
    table1 = pd.DataFrame({"user": ["human_a", "human_b", "human_c", "m1", "m2", "m3"],
                           "kind": ["human"] * 3 + ["model"] * 3,
                           "val": [92, 95, 96, 84, 93, 95], "v2": [91, 94, 96, 76, 88, 90]})
    mcn = pd.DataFrame([{"dataset": "v2", "model": "FixResNeXt", "other": "human_b", "n": 1000,
                         "a_only": 20, "b_only": 63, "pvalue": 2e-4}])
    zoo = pd.DataFrame({"v2_minus_val": [-8.0, -6.0, -7.0, -5.5]})
    ms = {m.claim: m for m in claims.measure_imagenet(SimpleNamespace(table1=table1, mcnemar=mcn), zoo)}
    drop = ms["shankar.human_v2_drop"]
    assert drop.estimate == pytest.approx(2 / 3 - 5.0) and drop.n == 3 and drop.n_what == "people"
    fix = ms["shankar.human_beats_fixres_v2"]
    assert fix.estimate == pytest.approx(4.3) and fix.verdict() == REPRODUCED
    assert ms["shankar.models_v2_drop"].verdict() == REPRODUCED
    # a zoo with model names counts architectures, not the many weights of one network
    named = pd.DataFrame({"model": ["r50.a", "r50.b", "r50.c", "vit.a", "eff.a"],
                          "v2_minus_val": [-8.0, -10.0, -9.0, -6.0, np.nan]})
    z = {m.claim: m for m in claims.measure_imagenet(None, named)}["shankar.models_v2_drop"]
    assert z.n == 2 and z.n_what == "architectures" and z.estimate == pytest.approx(-7.5)
    assert "4 of 4 models lose accuracy" in z.note and "-10.0 to -6.0" in z.note


def test_adversarial_claims_and_pgd_switched_off():
    rows = []
    for k in range(3):
        for cond, ce, acc in (("hard", 6.0, 0.15), ("soft", 3.0 + 0.1 * k, 0.2)):
            rows.append({"arch": "A", "condition": cond, "fold": k, "eps": 4, "ce": ce, "accuracy": acc})
    ms = {m.claim: m for m in claims.measure_adversarial(pd.DataFrame(rows), pd.DataFrame())}
    assert ms["peterson.fgsm_ce_halved"].estimate == pytest.approx(0.5 + 0.1 / 6)
    assert ms["peterson.fgsm_ce_halved"].verdict() == REPRODUCED
    assert ms["peterson.pgd_ce"].verdict() == NOT_MEASURABLE
    ms = {m.claim: m for m in claims.measure_adversarial(pd.DataFrame(rows), None, eps=8)}
    assert "eps 8/255" in ms["peterson.fgsm_acc"].reason


# --------------------------------------------------------------------------- record -> ledger
def _sec(name, profile="smoke", params=None, misses=0):
    return SimpleNamespace(name=name, profile=profile, device="cpu", params=params or {"x": 1},
                           cache=SimpleNamespace(misses=misses), synthetic=profile == "smoke")


@pytest.fixture
def book_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTLIB_BOOK_DIR", str(tmp_path / "book"))
    monkeypatch.setenv("SOFTLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_record_requires_each_claim_of_the_section_once(book_dir):
    ms = claims.measure_imagenet(None, None)
    with pytest.raises(ValueError, match="missing"):
        claims.record(_sec("imagenet_humans"), ms[:1])
    with pytest.raises(ValueError, match="do not belong"):
        claims.record(_sec("generalisation"), ms)
    with pytest.raises(ValueError, match="duplicated"):
        claims.record(_sec("imagenet_humans"), ms + ms[:1])


def test_ledger_has_one_row_per_claim_and_marks_sections_not_run(book_dir):
    shown = claims.record(_sec("generalisation"), claims.measure_generalisation(_gen_df()))
    assert len(shown) == len(claims.claims_of("generalisation"))
    # a section's "In brief" sets each number beside the paper's
    assert list(shown.columns[:2]) == ["paper", "this build"]
    assert list(shown["paper"]) == [claims._fmt_paper(c)
                                    for c in claims.claims_of("generalisation")]
    claims.record(_sec("imagenet_humans"), claims.measure_imagenet(None, None))
    claims.record(_sec("calibration_ood", profile="cpu"), claims.measure_calibration(_laing_runs()))
    path = book.sections_dir() / "claims" / "generalisation.json"
    doc = json.loads(path.read_text())
    assert doc["profile"] == "smoke" and doc["provenance"]["computed_on"]["device"] == "cpu"

    table = claims.ledger("smoke")
    assert list(table["id"]) == [c.id for c in claims.CLAIMS]
    v = table.set_index("id")["verdict"]
    assert v["peterson.shift_ce_cifar10"] == REPRODUCED
    assert v["peterson.shift_ce_far"] == NOT_MEASURABLE  # absent from the constructed table
    assert v["shankar.human_v2_drop"] == NOT_MEASURABLE
    assert v["peterson.heldout_ce_human"] == NOT_MEASURED  # section 3 did not run
    assert v["laing.ece"] == NOT_MEASURED  # recorded under another profile
    assert "profile 'cpu'" in table.set_index("id").loc["laing.ece", "note"]
    assert (table["verdict"] != "").all()

    page = claims.ledger_html(table)
    assert page.count("<tr data-claim=") == len(claims.CLAIMS)
    assert "02_generalisation.html#accuracy-and-cross-entropy-as-the-shift-grows" in page
    counts = claims.verdict_counts(table)
    assert int(counts.to_numpy().sum()) == len(claims.CLAIMS)


def _gpu_manifest(book_dir, section, params, complete=True):
    """An imported `gpu` manifest recording ``section`` as computed on an H200 box; its path."""
    man = {"format": 1, "profile": "gpu", "sections": {section: {
        "complete": complete, "params": params, "imported": True, "entries": [],
        "provenance": {"device": "cuda", "device_name": "NVIDIA H200",
                       "machine": "gpubox (Linux-x86_64)"}}}}
    mp = book_dir / "cache" / "manifests" / "gpu.json"
    mp.parent.mkdir(parents=True, exist_ok=True)
    mp.write_text(json.dumps(man))
    return mp, man


def test_a_book_rendered_from_a_gpu_bundle_names_the_gpu(book_dir):
    params = {"folds": 10}
    _gpu_manifest(book_dir, "generalisation", params)
    claims.record(_sec("generalisation", "gpu", params), claims.measure_generalisation(_gen_df()))
    row = claims.ledger("gpu").set_index("id").loc["peterson.shift_ce_cifar10"]
    assert "NVIDIA H200" in row["profile / device"] and "gpubox" in row["profile / device"]
    assert "imported results bundle" in row["profile / device"]
    assert "rendered on cpu" in row["profile / device"]
    # a notebook that had to train something itself computed its numbers here
    claims.record(_sec("generalisation", "gpu", params, misses=2),
                  claims.measure_generalisation(_gen_df()))
    row = claims.ledger("gpu").set_index("id").loc["peterson.shift_ce_cifar10"]
    assert "NVIDIA H200" not in row["profile / device"]


def test_a_section_finished_on_another_gpu_names_both_machines(book_dir):
    """A section whose slices ran on two GPUs (the manifest's ``computed_by``) is credited to
    both, with how many results each computed, not to the machine of the last slice alone."""
    params = {"folds": 10}
    mp, man = _gpu_manifest(book_dir, "generalisation", params)
    man["sections"]["generalisation"]["computed_by"] = [
        {"device_name": "NVIDIA H200", "machine": "gpubox", "date": "2026-11-26T22:18:00Z",
         "trained": 90},
        {"device_name": "NVIDIA H100 80GB HBM3", "machine": "otherbox",
         "date": "2026-11-27T08:35:00Z", "trained": 120}]
    mp.write_text(json.dumps(man))
    claims.record(_sec("generalisation", "gpu", params), claims.measure_generalisation(_gen_df()))
    where = claims.ledger("gpu").set_index("id").loc["peterson.shift_ce_cifar10",
                                                     "profile / device"]
    assert ("NVIDIA H200 (gpubox): 90 results, 2026-11-26; NVIDIA H100 80GB HBM3 (otherbox): "
            "120 results, 2026-11-27") in where
    assert "imported results bundle" in where and "rendered on cpu" in where
    # one machine's slices read as before: that machine
    man["sections"]["generalisation"]["computed_by"][1].update(
        device_name="NVIDIA H200", machine="gpubox")
    mp.write_text(json.dumps(man))
    claims.record(_sec("generalisation", "gpu", params), claims.measure_generalisation(_gen_df()))
    where = claims.ledger("gpu").set_index("id").loc["peterson.shift_ce_cifar10",
                                                     "profile / device"]
    assert where.startswith("gpu · NVIDIA H200 (gpubox) · recorded") and "H100" not in where
    # a last run that only read the results (trained nothing) is not who computed them
    man["sections"]["generalisation"].update(
        provenance={"device": "cpu", "device_name": "cpu", "machine": "laptop (Linux)"},
        computed_by=man["sections"]["generalisation"]["computed_by"][:1])
    mp.write_text(json.dumps(man))
    claims.record(_sec("generalisation", "gpu", params), claims.measure_generalisation(_gen_df()))
    where = claims.ledger("gpu").set_index("id").loc["peterson.shift_ce_cifar10",
                                                     "profile / device"]
    assert where.startswith("gpu · NVIDIA H200 (gpubox) · recorded") and "laptop" not in where


def test_a_section_rendered_from_its_complete_model_types_names_the_gpu_and_says_partial(
        book_dir):
    """A `gpu` book whose slices have computed some of Laing's model types renders those: the
    numbers still come from the machine of the (incomplete) run the manifest records, and the
    ledger says the section is partial."""
    from softlib.book import profiles
    full = profiles.resolve("gpu", "calibration_ood")
    some = dict(full, model_types=["basic", "dropout_noaug"])
    mp, man = _gpu_manifest(book_dir, "calibration_ood", full, complete=False)
    runs = _laing_runs()
    runs = runs[runs["model_type"] == "basic"]
    claims.record(_sec("calibration_ood", "gpu", some), claims.measure_calibration(runs))
    table = claims.ledger("gpu").set_index("id")
    where = table.loc["laing.ece", "profile / device"]
    assert "NVIDIA H200" in where
    assert "partial section: fewer model types than the profile's" in where
    assert table.loc["laing.ood_auroc_sngp", "verdict"] == NOT_MEASURABLE
    assert "not among the model types this build computed" in table.loc[
        "laing.ood_auroc_sngp", "note"]
    # the whole grid is not a part; neither is a change of anything else, or an item the run lacks
    assert claims._part_of(full, full) is None
    assert claims._part_of(full, dict(some, epochs=full["epochs"] + 1)) is None
    assert claims._part_of(full, dict(full, model_types=["basic", "no_such_type"])) is None
    assert claims._part_of(full, dict(full, model_types=[])) is None
    assert claims._part_of(full, some) == "model_types"
    # not the run's part (the manifest's params differ elsewhere): computed here, still partial
    man["sections"]["calibration_ood"]["params"] = dict(full, epochs=full["epochs"] + 1)
    mp.write_text(json.dumps(man))
    claims.record(_sec("calibration_ood", "gpu", some), claims.measure_calibration(runs))
    where = claims.ledger("gpu").set_index("id").loc["laing.ece", "profile / device"]
    assert "NVIDIA H200" not in where and "partial section" in where


def test_ledger_figure_draws_with_and_without_measurements(book_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    empty = claims.ledger("smoke")
    assert (empty["verdict"] == NOT_MEASURED).all()
    claims.plot_ledger(empty)
    claims.record(_sec("calibration_ood"), claims.measure_calibration(_laing_runs()))
    fig = claims.plot_ledger(claims.ledger("smoke"))
    assert len(fig.axes) == 1
    # every claim is labelled whole or on two lines ending in an ellipsis, never cut mid-word
    for tick in fig.axes[0].get_yticklabels():
        lines = tick.get_text().split("\n")
        assert 1 <= len(lines) <= 2 and all(len(line) <= 52 for line in lines)
    first = claims.CLAIMS[0].statement  # short enough for two lines: shown whole
    assert fig.axes[0].get_yticklabels()[0].get_text().replace("\n", " ") == f"1. {first}"
    plt.close("all")
    assert math.isfinite(claims.ledger("smoke").set_index("id").loc["laing.ece", "estimate"])


def test_summary_and_verdict_bars_count_the_ledgers_verdicts(book_dir):
    """The page's first lines and bars are computed from the table: measured = neither
    'not measurable here' nor 'not measured'; each study's bar sums to its claims."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    empty = claims.ledger("smoke")
    text = claims.summary_markdown(empty, "smoke")
    assert f"measured **0 of the papers' {len(claims.CLAIMS)} headline claims**" in text
    assert f"{len(claims.CLAIMS)} were not measured" in text and "could not be measured" not in text
    assert "**none reproduced**" in text and "none contradicted" in text
    assert "within noise" not in text and "no difference" not in text  # empty kinds left out
    claims.record(_sec("calibration_ood"), claims.measure_calibration(_laing_runs()))
    claims.record(_sec("imagenet_humans"), claims.measure_imagenet(None, None))
    table = claims.ledger("smoke")
    v = table["verdict"]
    measured = int((~v.isin([NOT_MEASURABLE, NOT_MEASURED])).sum())
    assert 0 < measured < len(table)
    text = claims.summary_markdown(table, "smoke")
    assert f"measured **{measured} of the papers' {len(table)} headline claims**" in text
    assert f"{int((v == NOT_MEASURABLE).sum())} could not be measured" in text
    for k, what in ((SAME_WITHIN_NOISE, "in the same direction but within noise"),
                    (OPPOSITE_WITHIN_NOISE, "in the opposite direction but within noise"),
                    (NO_DIFFERENCE, "with no difference at all")):
        n_k = int((v == k).sum())
        assert (f"{n_k} {what}" in text) == (n_k > 0), (k, text)
    for study in set(table["study"]):
        c = table[table["study"] == study]["verdict"].value_counts()
        line = next(x for x in text.splitlines() if x.startswith(f"* {study}: "))
        assert sorted(line.split(": ", 1)[1].split("; ")) == sorted(
            f"{n} {k}" for k, n in c.items())
    fig = claims.plot_verdicts(table)
    widths = {}
    for bar in fig.axes[0].patches:
        y = round(bar.get_y() + bar.get_height() / 2)
        widths[y] = widths.get(y, 0) + bar.get_width()
    studies = list(dict.fromkeys(table["study"]))
    assert [widths[i] for i in range(len(studies))] == [
        int((table["study"] == s).sum()) for s in studies]
    plt.close("all")


def test_a_sections_in_brief_colours_each_verdict_as_the_ledger(book_dir):
    shown = claims.record(_sec("imagenet_humans"), claims.measure_imagenet(None, None))
    page = re.sub(r"\s+", "", claims.styled(shown).to_html())
    for v in set(shown["verdict"]):
        assert f"color:{claims.VERDICT_COLOURS[v]};font-weight:bold" in page
    # the book's stylesheet widens that table's claim column, found by its class
    assert f'class="{claims.IN_BRIEF_CLASS}"' in page
    css = (Path(__file__).resolve().parents[1] / "book" / "_static" / "softlib.css").read_text()
    assert f"table.{claims.IN_BRIEF_CLASS} th.row_heading" in css


def test_ledger_html_says_a_shared_provenance_once_and_keeps_differing_ones_per_row(book_dir):
    claims.record(_sec("calibration_ood"), claims.measure_calibration(_laing_runs()))
    table = claims.ledger("smoke")
    shared = claims.shared_provenance(table)
    assert shared is not None
    page = claims.ledger_html(table)
    assert f"Every measured row: {shared}." in page and "<th" in page
    assert ">profile / device</th>" not in page
    assert page.count("<tr data-claim=") == len(claims.CLAIMS)
    assert page.count("class='softlib-study'") == len(set(table["study"]))
    mixed = table.copy()
    mixed.loc[mixed.index[0], "profile / device"] = "gpu · NVIDIA H200 (box) · recorded 2026-11-27"
    assert claims.shared_provenance(mixed) is None
    page = claims.ledger_html(mixed)
    assert ">profile / device</th>" in page and "Every measured row" not in page
    assert "NVIDIA H200 (box)" in page


# --------------------------------------------------------------------------- audit follow-ups
def test_identical_values_over_folds_are_no_noise_estimate():
    m = claims.from_units("laing.accuracy", [0.5, 0.5], "seeds")
    assert m.se == 0.0 and m.ci() is None and m.verdict() == SAME_WITHIN_NOISE
    assert claims.confidence_interval(0.5, 0.0, 2) is None
    row = {"estimate": m.estimate, "se": m.se, "n": m.n, "n_what": m.n_what, "ci": None}
    assert "all 2 seeds gave the same value" in claims._fmt_value(row, claims.CLAIMS_BY_ID[m.claim])
    one = {"estimate": 1.0, "se": None, "n": 1, "n_what": "people", "ci": None}
    assert "(no interval: one person)" in claims._fmt_value(one, claims.CLAIMS_BY_ID[m.claim])


def test_a_fold_missing_one_architecture_is_dropped_not_averaged_over_fewer():
    df = pd.DataFrame({"fold": [0] * 4 + [1] * 4 + [2] * 4, "arch": list("AABB") * 3,
                       "condition": ["hard", "soft"] * 6,
                       "ce": [2, 1.5, 4, 3.9, 2, 1.5, 4, 3.9, 2, np.nan, 4, 3.9]})
    d = claims.paired_by_unit(df, "ce", "condition", "soft", "hard", "fold", ("arch",))
    assert list(d.index) == [0, 1] and list(d) == pytest.approx([-0.3, -0.3])
    # an architecture with no pair anywhere does not empty the table
    extra = pd.DataFrame({"fold": [0, 1, 2], "arch": "C", "condition": "hard", "ce": 1.0})
    d2 = claims.paired_by_unit(pd.concat([df, extra]), "ce", "condition", "soft", "hard", "fold",
                               ("arch",))
    assert list(d2) == pytest.approx([-0.3, -0.3])


@pytest.mark.parametrize("a_only,b_only", [(10, 22), (0, 5), (0, 6), (20, 63), (30, 30),
                                           (5, 0), (40, 60), (12, 25), (100, 130), (0, 0)])
def test_the_paired_interval_agrees_with_mcnemars_exact_test(a_only, b_only):
    from statsmodels.stats.contingency_tables import mcnemar
    n = 1000
    est, (lo, hi) = claims.paired_difference_interval(a_only, b_only, n)
    assert est == pytest.approx(100 * (b_only - a_only) / n) and lo <= est <= hi
    if a_only + b_only == 0:
        assert (lo, hi) == (0.0, 0.0)
        return
    p = mcnemar([[n - a_only - b_only, a_only], [b_only, 0]], exact=True).pvalue
    assert (lo > 0 or hi < 0) == (p < 0.05), (p, lo, hi)


def test_the_human_vs_fixed_model_claim_uses_the_exact_interval():
    # 10 vs 22 discordant images: a Wald interval excludes 0, McNemar's exact p is 0.05
    table1 = pd.DataFrame({"user": ["human_b", "m1"], "kind": ["human", "model"],
                           "val": [95, 90], "v2": [94, 85]})
    mcn = pd.DataFrame([{"dataset": "v2", "model": "FixResNeXt", "other": "human_b", "n": 1000,
                         "a_only": 10, "b_only": 22, "pvalue": 0.0501}])
    ms = {m.claim: m for m in claims.measure_imagenet(SimpleNamespace(table1=table1, mcnemar=mcn),
                                                      None)}
    fix = ms["shankar.human_beats_fixres_v2"]
    assert fix.estimate == pytest.approx(1.2) and fix.verdict() == SAME_WITHIN_NOISE
    assert "32 images only one of them got right" in fix.note
    # one person and one model: no noise estimate for the drop (was a zero model variance)
    drop = ms["shankar.human_v2_drop"]
    assert drop.ci() is None and drop.verdict() == SAME_WITHIN_NOISE


def test_the_human_drop_has_welch_degrees_of_freedom():
    people = pd.Series([1.0, 0.0, 2.0, 1.0, 0.5])
    models = pd.Series([5.0, 7.0, 6.0, 9.0])
    se, dof = claims._mean_minus_median_se(people, models)
    vh, vm = people.var() / 5, 1.2533 ** 2 * models.var() / 4
    assert se == pytest.approx(math.sqrt(vh + vm))
    assert dof == math.floor((vh + vm) ** 2 / (vh ** 2 / 4 + vm ** 2 / 3))
    assert claims._mean_minus_median_se(people, models[:1])[0] != claims._mean_minus_median_se(
        people, models[:1])[0]  # NaN


def test_the_dropout_defender_is_compared_with_the_type_of_lowest_mean_decrease():
    # per seed the lowest of basic / sngp alternates; by mean, sngp (0.30) beats basic (0.32)
    rows = []
    for seed, (basic, sngp) in enumerate([(0.20, 0.30), (0.44, 0.30), (0.32, 0.30)]):
        for mt, dec in (("basic", basic), ("sngp", sngp), ("dropout_aug", 0.25)):
            for cond in ("hard", "soft"):
                rows.append({"model_type": mt, "condition": cond, "seed": seed, "accuracy": 80.0,
                             "ece": 0.05, "attack_decrease": dec, "ood_auroc_svhn": np.nan})
    m = {x.claim: x for x in claims.measure_calibration(pd.DataFrame(rows))}["laing.dropout_defender"]
    assert m.estimate == pytest.approx(-0.05) and "with sngp" in m.note
