"""Section 2's figures and tables (softlib.studies.peterson.generalisation): what each draws
and returns, on small frames shaped like generalisation_metrics' long table."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from softlib import figures as F
from softlib.studies import peterson as P

ARCHS = ["A", "B"]
HELD_COLUMNS = ["ce_human", "sba", "kl_human", "conf_correct", "conf_incorrect"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _value(arch, cond, dataset, fold, metric):
    """A distinct, reproducible value per cell, so a misplaced row shows in the means."""
    base = {"accuracy": 0.6, "ce": 1.0, "ce_human": 1.1, "sba": 0.3, "kl_human": 0.9,
            "conf_correct": 0.8, "conf_incorrect": 0.5}[metric]
    return (base + 0.05 * ARCHS.index(arch) + 0.01 * P.CONDITIONS.index(cond)
            + 0.002 * fold + 0.001 * (sum(map(ord, dataset)) % 7))


def _metrics_frame(archs=ARCHS, folds=3, datasets=("heldout", "cifar10_train", "c10c_fog_1",
                                                    "c10c_fog_2", "c10c_snow_1", "c10c_snow_2"),
                   lr=0.1):
    """Rows like generalisation_metrics': one per (arch, condition, fold, dataset); held-out
    rows carry the human-label metrics, the others NaN there."""
    rows = []
    for arch in archs:
        for cond in P.CONDITIONS:
            for k in range(folds):
                for ds in datasets:
                    row = {"arch": arch, "condition": cond, "lr": lr, "fold": k, "dataset": ds,
                           "n": 10}
                    for m in ["accuracy", "ce"] + HELD_COLUMNS:
                        row[m] = (_value(arch, cond, ds, k, m)
                                  if m in ("accuracy", "ce") or ds == "heldout" else np.nan)
                    rows.append(dict(row, diverged=False, diverged_epoch=np.nan))
    return pd.DataFrame(rows)


def _errorbars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _x(line):
    return np.asarray(line.get_xdata(), dtype=float)


def _y(line):
    return np.asarray(line.get_ydata(), dtype=float)


def _bars(ax):
    return [p for c in ax.containers if isinstance(c, BarContainer) for p in c.patches]


def _paper_lines(ax):
    return [line for line in ax.lines if line.get_label().startswith("paper")]


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------

def test_evaluation_set_status_lists_every_set_with_its_count_or_why_it_is_absent():
    shift = P.EvalSets()
    shift.add("cifar10_train", "CIFAR-10 (train images) (2,000 of 50,000)", np.zeros(1),
              np.zeros(2000, dtype=int))
    for key in ["cifar10_1_v4", "cifar10_1_v6", "cinic10", "imagenet_far"]:
        shift.unavailable[key] = f"{key} is not here"
    corr = P.EvalSets()
    corr.add("c10c_fog_1", "fog (severity 1)", np.zeros(1), np.zeros(100, dtype=int))
    corr.add("c10c_fog_2", "fog (severity 2)", np.zeros(1), np.zeros(100, dtype=int))
    corr.unavailable["c10c_snow_1"] = "no snow"
    t = P.evaluation_set_status(3, shift, corr)
    assert list(t.index) == ([P.SHIFT_SETS["heldout"][0],
                              "CIFAR-10 (train images) (2,000 of 50,000)"]
                             + [P.SHIFT_SETS[k][0] for k in ["cifar10_1_v4", "cifar10_1_v6",
                                                              "cinic10", "imagenet_far"]]
                             + ["CIFAR-10-C-style corruptions (this book's addition)"])
    assert t.iloc[0]["images"] == "3 x 1,000"
    assert F.sig(t.iloc[1]["images"]) == "2,000"  # a count, shown whole with a separator
    assert t.loc["ImageNet-Far", "status"] == "ABSENT: imagenet_far is not here"
    assert t.loc["ImageNet-Far", "images"] == 0
    last = t.iloc[-1]
    assert last["images"] == 200
    assert last["status"] == "2 corruption x severity sets present; 1 absent: no snow"
    corr.unavailable.clear()
    assert P.evaluation_set_status(3, shift, corr).iloc[-1]["status"] == (
        "2 corruption x severity sets present")


def test_training_seconds_sum_the_folds_of_each_arch_and_condition():
    seconds = {("A", "hard", 0.1, 0): 10.4, ("A", "hard", 0.1, 1): 20.2,
               ("A", "soft", 0.1, 0): 5.0, ("B", "hard", 0.1, 0): 7.0}
    runs = P.FoldRuns([], {}, seconds)
    t = P.training_seconds(runs)
    assert list(t.index.names) == ["arch", "condition"]
    assert list(t.columns) == ["training seconds (all folds and learning rates)"]
    assert t.loc[("A", "hard")].iloc[0] == pytest.approx(30.6)
    assert t.loc[("A", "soft")].iloc[0] == pytest.approx(5.0)
    assert len(t) == 3
    assert "31" in t.style.format("{:,.0f}").to_html()  # whole seconds, as the notebook shows


def test_shift_paired_differences_leave_out_corrupted_sets_and_lines_name_the_sets():
    df = _metrics_frame()
    paired = P.shift_paired_differences(df)
    assert list(paired.index.names) == ["metric", "arch", "dataset"]
    assert set(paired.index.get_level_values("dataset")) == {"heldout", "cifar10_train"}
    assert set(paired.index.get_level_values("metric")) == {"accuracy", "ce"}
    np.testing.assert_allclose(paired["mean diff"], 0.01)  # soft is 0.01 above hard everywhere
    lines = P.shift_gap_lines(paired)
    assert len(lines) == 2 * 2 * 2  # metric x arch x (held-out, CIFAR-10 train)
    assert lines[0].startswith("- accuracy on ") and "soft minus hard +0.010" in lines[0]
    assert "3 of 3 folds agree in sign" in lines[0]
    # a set the summary does not name (CIFAR-10.1) gives no sentence
    other = _metrics_frame(datasets=("cifar10_1_v4",))
    assert P.shift_gap_lines(P.shift_paired_differences(other)) == []


def test_absent_shift_note_names_the_absent_sets_in_shift_order():
    note = P.absent_shift_note({"imagenet_far": "x", "cinic10": "y"})
    assert note == ("not shown (data absent on this machine): CINIC-10 (ImageNet part), "
                    "ImageNet-Far")
    assert P.absent_shift_note({}) == ""


def test_heldout_summary_names_the_metrics_and_confidence_summary_the_predictions():
    held = _metrics_frame(datasets=("heldout",))
    s = P.heldout_summary(held)
    assert list(dict.fromkeys(s.columns.get_level_values(0))) == [
        "accuracy", "CE vs CIFAR-10 labels", "CE vs human labels", "second-best accuracy",
        "KL(humans || model)"]
    assert s.loc[("A", "hard"), ("second-best accuracy", "folds")] == 3
    c = P.confidence_summary(held)
    assert list(c.columns) == [("correct", "mean"), ("correct", "std"), ("incorrect", "mean"),
                               ("incorrect", "std")]
    assert c.loc[("B", "soft"), ("incorrect", "mean")] == pytest.approx(
        np.mean([_value("B", "soft", "heldout", k, "conf_incorrect") for k in range(3)]))


def test_heldout_divergence_table_shows_n_a_where_humans_have_no_divergence():
    human = np.array([[0.5, 0.5] + [0.0] * 8, [1.0] + [0.0] * 9])
    soft = human.copy()
    hard = np.full_like(human, 0.1)
    t = P.heldout_divergence_table(human, hard, soft)
    assert list(t.columns) == ["hard", "soft", "humans"]
    assert t.loc["KL(human || model), held-out", "soft"] == pytest.approx(0, abs=1e-9)
    assert t.loc["KL(human || model), held-out", "hard"] > 0.5
    assert t.loc["mean entropy of predictions (nats)", "humans"] == pytest.approx(np.log(2) / 2)
    assert t.loc["mean entropy of predictions (nats)", "hard"] == pytest.approx(np.log(10))
    html = t.style.format(F.sig).to_html()
    assert html.count("n/a") == 2 and "nan" not in html


def test_paper_vs_run_table_shows_n_a_not_nan_for_sets_this_run_lacks():
    shift = P.EvalSets(unavailable={"imagenet_far": "absent here"})
    html = P.paper_vs_run_generalisation(_metrics_frame(), shift).style.format(F.sig).to_html()
    assert "n/a" in html and "nan" not in html


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------

def test_plot_shift_curves_draws_each_run_on_the_uncorrupted_sets_with_the_papers_values():
    df = _metrics_frame()
    fig = P.plot_shift_curves(df, ARCHS)
    axes = fig.axes
    assert len(axes) == 2
    for ax, metric in zip(axes, ["accuracy", "ce"]):
        bars = _errorbars(ax)
        assert len(bars) == len(ARCHS) * len(P.CONDITIONS)
        for b in bars:  # one point per uncorrupted set, no corrupted one
            assert len(b.lines[0].get_xdata()) == 2
        first = bars[0].lines[0]  # arch A, hard
        np.testing.assert_allclose(_y(first), [
            np.mean([_value("A", "hard", ds, k, metric) for k in range(3)])
            for ds in ["heldout", "cifar10_train"]])
        assert first.get_alpha() in (None, 1) and bars[2].lines[0].get_alpha() == 0.5
        assert [t.get_text() for t in ax.get_xticklabels()] == ["held-out\nCIFAR-10H",
                                                                  "CIFAR-10\ntrain"]
        paper = _paper_lines(ax)  # PAPER_FIG2 has CIFAR-10 train (and ImageNet-Far, absent)
        assert len(paper) == 2
        np.testing.assert_allclose([p.get_ydata()[0] for p in paper],
                                   P.PAPER_FIG2[("cifar10_train", metric)])
        labels = ax.get_legend().get_texts()
        assert "hard labels (A)" in [t.get_text() for t in labels]
        assert "over 3 folds" in ax.get_title()


def test_plot_shift_curves_draws_no_paper_marks_where_the_paper_has_no_value():
    fig = P.plot_shift_curves(_metrics_frame(archs=["A"], datasets=("heldout",)), ["A"])
    for ax in fig.axes:
        assert _paper_lines(ax) == []
        assert "hard labels" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_plot_sba_bars_fold_dots_and_the_papers_gain_on_the_hard_bar():
    held = _metrics_frame(datasets=("heldout",))
    fig = P.plot_sba(held, ARCHS)
    ax = fig.axes[0]
    bars = _bars(ax)
    assert len(bars) == len(ARCHS) * len(P.CONDITIONS)
    assert bars[1].get_height() == pytest.approx(
        np.mean([_value("A", "soft", "heldout", k, "sba") for k in range(3)]))
    dots = [line for line in ax.lines if line.get_marker() == "." and len(line.get_xdata()) == 3]
    assert len(dots) == 4
    paper = _paper_lines(ax)
    assert len(paper) == len(ARCHS)
    for i, (p, arch) in enumerate(zip(paper, ARCHS)):
        hard = np.mean([_value(arch, "hard", "heldout", k, "sba") for k in range(3)])
        np.testing.assert_allclose(p.get_xydata(), [[i * 3 + 1, hard + P.PAPER_FIG2_SBA_GAIN]])
    assert [t.get_text() for t in ax.get_xticklabels()] == ARCHS
    # the legend sits right of the axes, so it hides no bar
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1


def test_plot_sba_with_one_fold_draws_no_error_bar():
    fig = P.plot_sba(_metrics_frame(archs=["A"], folds=1, datasets=("heldout",)), ["A"])
    ax = fig.axes[0]
    assert "none, one fold" in ax.get_title()
    assert len(_bars(ax)) == 2


def test_plot_confidence_two_bars_per_run_named_by_arch_only_when_there_are_several():
    held = _metrics_frame(datasets=("heldout",))
    ax = P.plot_confidence(held, ARCHS).axes[0]
    bars = _bars(ax)
    assert len(bars) == 2 * len(ARCHS) * len(P.CONDITIONS)
    assert bars[0].get_height() == pytest.approx(
        np.mean([_value("A", "hard", "heldout", k, "conf_correct") for k in range(3)]))
    assert bars[1].get_height() == pytest.approx(
        np.mean([_value("A", "hard", "heldout", k, "conf_incorrect") for k in range(3)]))
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["hard\nA", "soft\nA"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["correct", "incorrect"]
    one = P.plot_confidence(_metrics_frame(archs=["A"], datasets=("heldout",)), ["A"]).axes[0]
    assert [t.get_text() for t in one.get_xticklabels()] == ["hard", "soft"]


def test_plot_corruption_averages_corruptions_then_folds_and_marks_the_clean_set():
    df = _metrics_frame()
    fig = P.plot_corruption(df, ARCHS)
    for ax, metric in zip(fig.axes, ["accuracy", "ce"]):
        bars = _errorbars(ax)
        assert len(bars) == len(ARCHS) * len(P.CONDITIONS)
        line = bars[0].lines[0]  # A, hard: severities 1 and 2, drawn just left of the tick
        np.testing.assert_allclose(np.round(_x(line)), [1, 2])
        assert np.all(_x(line) < [1, 2])
        np.testing.assert_allclose(_y(line), [
            np.mean([_value("A", "hard", f"c10c_{c}_{s}", k, metric)
                     for c in ["fog", "snow"] for k in range(3)]) for s in [1, 2]])
        dotted = [x for x in ax.lines if x.get_linestyle() == ":"]
        assert len(dotted) == len(ARCHS) * len(P.CONDITIONS)  # one clean line per run
        assert _paper_lines(ax) == []  # the paper has no corrupted sets
        assert "mean of 2 corruptions" in ax.get_title() and "over 3 folds" in ax.get_title()
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
    with pytest.raises(ValueError):
        P.plot_corruption(_metrics_frame(datasets=("heldout",)), ARCHS)


def test_corruption_table_shows_fold_counts_as_integers():
    html = P.corruption_summary(_metrics_frame()).style.format(F.sig).to_html()
    assert ">3<" in html.replace(" ", "") and "3.000" not in html


def _runs_with_logits(folds=2, per_fold=5, diverged=()):
    """FoldRuns over 10 images: a fold per ``per_fold`` images, held-out logits per run."""
    rng = np.random.default_rng(0)
    held = [np.arange(k * per_fold, (k + 1) * per_fold) for k in range(folds)]
    split = [(np.setdiff1d(np.arange(folds * per_fold), te), te) for te in held]
    logits = {("A", c, 0.1, k): {"heldout": rng.normal(size=(per_fold, 10))}
              for c in P.CONDITIONS for k in range(folds)}
    return P.FoldRuns(split, logits, {}, {key: 3 for key in diverged})


def test_paired_heldout_predictions_keep_only_folds_where_neither_run_diverged():
    runs = _runs_with_logits(diverged=[("A", "soft", 0.1, 0)])
    df = _metrics_frame(archs=["A"], folds=2, datasets=("heldout",))
    idx, p_hard, p_soft = P.paired_heldout_predictions(runs, df, "A", 10)
    np.testing.assert_array_equal(idx, np.arange(5, 10))
    np.testing.assert_allclose(p_hard, P.probs_of(runs.logits[("A", "hard", 0.1, 1)]["heldout"]))
    np.testing.assert_allclose(p_soft, P.probs_of(runs.logits[("A", "soft", 0.1, 1)]["heldout"]))
    with pytest.raises(KeyError):  # the selected lr (0.2 here) never ran
        P.paired_heldout_predictions(runs, df.assign(lr=0.2), "A", 10)


def test_plot_divisive_gallery_shows_the_most_divisive_images_first():
    n = 8
    human = np.zeros((n, 10))
    human[np.arange(n), np.arange(n) % 10] = 1.0
    human[5] = 0.1                      # the most divisive (uniform)
    human[2, :4] = 0.25                 # second (four classes)
    human[7, :2] = [0.5, 0.5]           # third
    study = P.StudyData(np.zeros((n, 32, 32, 3), np.uint8), np.arange(n) % 10,
                        human.astype(np.float32), "t")
    idx = np.arange(n)[::-1]            # predictions in another order than the images
    probs = np.full((n, 10), 0.1)
    fig = P.plot_divisive_gallery(study, idx, probs, probs, n=3)
    tops, bottoms = fig.axes[:3], fig.axes[3:]
    assert [ax.get_title() for ax in tops] == [f"#5: {P.CLASSES[5]}", f"#2: {P.CLASSES[2]}",
                                               f"#7: {P.CLASSES[7]}"]
    assert len(bottoms) == 3
    for ax in bottoms:
        assert len(_bars(ax)) == 3 * 10  # humans, hard- and soft-label model per class
        assert ax.get_ylim() == (0, 1)
    np.testing.assert_allclose([p.get_height() for p in _bars(bottoms[0])[:10]], 0.1)
    assert [t.get_text() for t in bottoms[0].get_legend().get_texts()] == [
        "humans", "hard-label model", "soft-label model"]


def test_selected_heldout_curves_keep_the_selected_rate_and_are_drawn_one_line_per_run():
    curves = {("A", c, lr, k): [1.0 - 0.1 * e - lr for e in range(4)]
              for c in P.CONDITIONS for lr in (0.1, 0.2) for k in range(2)}
    runs = P.FoldRuns([], {}, {}, heldout_curves=curves)
    df = _metrics_frame(archs=["A"], folds=2, datasets=("heldout",), lr=0.2)
    sel = P.selected_heldout_curves(runs, df)
    assert set(sel.lr) == {0.2} and len(sel) == 2 * 2 * 4
    ax = P.plot_scratch_heldout_curves(sel).axes[0]
    means = [line for line in ax.lines if line.get_marker() in ("None", None, "")]
    assert len(means) == len(P.CONDITIONS)
    assert "over 2 folds" in ax.get_title()
    empty = P.FoldRuns([], {}, {})
    assert len(P.selected_heldout_curves(empty, df)) == 0


def test_shift_gap_lines_say_when_no_fold_is_left_instead_of_failing():
    paired = P.shift_paired_differences(_metrics_frame())
    arch = paired.loc["accuracy"].index[0][0]
    paired.loc[("accuracy", arch, "heldout"), ["mean diff", "std over folds", "folds",
                                                "folds with same sign"]] = [np.nan, np.nan, 0,
                                                                            np.nan]
    lines = P.shift_gap_lines(paired)
    assert any("no fold with both conditions finite" in line for line in lines)
    assert len(lines) == 8


def test_plot_shift_differences_draws_soft_minus_hard_with_two_standard_errors():
    from matplotlib.container import ErrorbarContainer
    paired = P.shift_paired_differences(_metrics_frame())
    archs = list(dict.fromkeys(paired.loc["accuracy"].index.get_level_values("arch")))
    fig = P.plot_shift_differences(paired, archs)
    acc, ce = fig.axes
    bars = [c for c in acc.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == len(archs)
    r = paired.loc[("accuracy", archs[0])].reindex(P.dataset_order(
        paired.loc[("accuracy", archs[0])].index))
    np.testing.assert_allclose(np.asarray(bars[0].lines[0].get_ydata(), float), r["mean diff"])
    seg = bars[0].lines[2][0].get_segments()[0]
    se = r["std over folds"].iloc[0] / np.sqrt(r["folds"].iloc[0])
    assert seg[1, 1] - seg[0, 1] == pytest.approx(4 * se)
    # the paper's soft - hard on CIFAR-10 train: +0.010 accuracy, -0.2 nats
    acc_paper = [ln for ln in acc.lines if ln.get_label().startswith("paper")][0]
    ce_paper = [ln for ln in ce.lines if ln.get_label().startswith("paper")][0]
    assert acc_paper.get_ydata()[0] == pytest.approx(0.01)
    assert ce_paper.get_ydata()[0] == pytest.approx(-0.2)
    assert "±2 s.e. over 3 folds" in acc.get_title() and "below 0: soft better" in ce.get_title()
    plt.close(fig)
