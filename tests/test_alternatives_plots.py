"""Section 3's (alternatives, paper Table 1) tables and figures, on small constructed inputs
shaped like the real ones (``alternatives_metrics``'s long frame, ``FinetuneRuns``)."""
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from softlib import figures as F
from softlib.cache import Entry
from softlib.studies import peterson as P

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
RESNET = P.parse_archs([["ResNet-20", "resnet_20", {}]])[0]     # paper family: ResNet
OTHER = P.parse_archs([["Tiny", "tiny", {}]])[0]              # no paper family
FOLDS = 3


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def metrics_frame(archs=(RESNET, OTHER), alphas=(0.2,), ensemble=True) -> pd.DataFrame:
    """A long frame like ``alternatives_metrics``: per arch, method (mixup per alpha), fold;
    pretrained rows with NaN alpha and lr; c10H grows with the method's position, so the
    ranking is known; v4 / v6 NaN (CIFAR-10.1 absent)."""
    rows = []

    def row(arch, method, alpha, lr, k, c10h):
        rows.append({"arch": arch, "method": method, "alpha": alpha, "lr": lr, "fold": k,
                     "c10H": c10h, "c10": c10h - 0.1, "accuracy": 0.8 - c10h / 10,
                     "sba": 0.3, "v4": np.nan, "v6": np.nan, "diverged": False,
                     "diverged_epoch": np.nan})

    for a in archs:
        for k in range(FOLDS):
            row(a.label, "pretrained", np.nan, np.nan, k, 0.9 + 0.01 * k)
            for i, m in enumerate(P.METHODS):
                for alpha in (alphas if m.startswith("mixup") else (None,)):
                    # a larger alpha fits better here, so the selection must pick the largest
                    bonus = 0.0 if alpha is None else -0.025 * alpha
                    row(a.label, m, alpha, 0.0005, k, 0.5 + 0.02 * i + 0.01 * k + bonus)
    if ensemble:
        for k in range(FOLDS):
            row(P.ENSEMBLE, "pretrained", np.nan, np.nan, k, 0.7 + 0.01 * k)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- pretraining table ----------

def pretrained(labels_by_arch: dict[str, np.ndarray]) -> P.Pretrained:
    entries = {}
    for label, predicted in labels_by_arch.items():
        logits = np.full((len(predicted), 10), -5.0, np.float32)
        logits[np.arange(len(predicted)), predicted] = 5.0
        entries[label] = Entry({"logits_cifar10h": logits},
                               {"result": {"epochs_run": 3, "seconds": 211.6}})
    return P.Pretrained(entries, {}, {k: k for k in entries})


def test_pretrained_table_counts_are_integers_and_accuracy_is_against_the_labels():
    labels = np.array([0, 1, 2, 3])
    pre = pretrained({"ResNet-20": np.array([0, 1, 2, 0]), "Tiny": labels})
    study = SimpleNamespace(labels=labels)
    t = P.alternatives_pretrained_table(pre, [RESNET, OTHER], study, 50000, 50000)
    assert list(t.index) == ["ResNet-20", "Tiny"]
    acc = t["accuracy on the 10,000 CIFAR-10H images"]
    assert acc["ResNet-20"] == pytest.approx(0.75) and acc["Tiny"] == pytest.approx(1.0)
    assert t.loc["Tiny", "training seconds"] == 212
    html = t.style.format(F.sig).to_html()
    assert "50,000" in html and ">3<" in html.replace(" ", "") and "212" in html
    assert "3.000" not in html and "211.6" not in html
    # no subset: every training image; a subset larger than the set: the set
    assert (P.alternatives_pretrained_table(pre, [RESNET], study, None, 40)
            ["pretraining images"].tolist() == [40])
    assert (P.alternatives_pretrained_table(pre, [RESNET], study, 64, 40)
            ["pretraining images"].tolist() == [40])


# ---------------------------------------------------------------- paper Figure 1 -------------

def figure1_inputs(n_images=8):
    rng = np.random.default_rng(0)
    human = rng.dirichlet(np.ones(10), n_images)
    model = rng.dirichlet(np.ones(10), n_images)
    examples = pd.DataFrame({"index": [6148, 7], "top class": [4, 9], "human 2nd": [7, 1],
                             "model 2nd": [6, 7], "human mass off top": [0.294, 0.491],
                             "model mass off top": [0.197, 0.502],
                             "other-choice TV": [0.993, 0.985]})
    images = np.zeros((7000, 4, 4, 3), np.uint8)
    big_h, big_m = np.zeros((7000, 10)), np.zeros((7000, 10))
    big_h[[6148, 7]], big_m[[6148, 7]] = human[:2], model[:2]
    return images, big_h, big_m, examples


def test_figure1_table_names_classes_and_writes_image_ids_without_separators():
    *_, examples = figure1_inputs()
    t = P.figure1_table(examples, CLASSES)
    assert t["top class"].tolist() == ["deer", "truck"]
    assert t["human 2nd"].tolist() == ["horse", "automobile"]
    assert t["model 2nd"].tolist() == ["frog", "horse"]
    assert t["image"].tolist() == ["6148", "7"] and "index" not in t
    html = t.style.format(F.sig).hide(axis="index").to_html()
    assert "6148" in html and "6,148" not in html and "0.294" in html


def test_figure1_draws_each_image_beside_human_and_model_bars():
    images, human, model, examples = figure1_inputs()
    fig = P.plot_alternatives_figure1(images, human, model, examples, "ResNet-20", CLASSES)
    axes = np.array(fig.axes).reshape(2, 2)
    assert [len(ax.images) for ax in axes[:, 0]] == [1, 1]
    assert [ax.get_title() for ax in axes[:, 0]] == ["image 6148", "image 7"]
    for r, ax in enumerate(axes[:, 1]):
        bars = ax.patches
        assert len(bars) == 20  # humans and model, ten classes each
        i = examples["index"].iloc[r]
        np.testing.assert_allclose([b.get_height() for b in bars[:10]], human[i])
        np.testing.assert_allclose([b.get_height() for b in bars[10:]], model[i])
    # class names under the last row only
    assert [t.get_text() for t in axes[1, 1].get_xticklabels()] == list(CLASSES)
    assert all(t.get_text() == "" for t in axes[0, 1].get_xticklabels())
    assert "paper Fig. 1" in axes[0, 1].get_title()
    labels = [t.get_text() for t in axes[0, 1].get_legend().get_texts()]
    assert labels == ["humans (CIFAR-10H)", "ResNet-20, pretrained (hard labels)"]


def test_figure1_without_examples_says_so_instead_of_failing():
    images, human, model, examples = figure1_inputs()
    fig = P.plot_alternatives_figure1(images, human, model, examples.iloc[:0], "ResNet-20",
                                      CLASSES)
    assert sum(len(ax.images) for ax in fig.axes) == 0
    assert any("no image" in t.get_text() for ax in fig.axes for t in ax.texts)


# ---------------------------------------------------------------- held-out curves ------------

def runs_with_curves(alphas=(0.2, 0.4)) -> P.FinetuneRuns:
    curves = {}
    for k in range(FOLDS):
        curves[("Tiny", "hard", None, 0.0005, k)] = [1.0, 0.8, 0.9]
        curves[("Tiny", "soft", None, 0.0005, k)] = [0.9, 0.7, 0.6]
        for a in alphas:
            curves[("Tiny", "mixup_soft", a, 0.0005, k)] = [1.1, 1.0, 0.95]
    return P.FinetuneRuns([], {}, {}, heldout_curves=curves)


def test_heldout_curves_keep_only_the_variants_table1_shows():
    df = metrics_frame(archs=(OTHER,), alphas=(0.2, 0.4), ensemble=False)
    curves = P.table1_heldout_curves(runs_with_curves(), df)
    mix = curves[curves.method == "mixup_soft"]
    assert set(mix.alpha) == {0.4}  # the alpha with the lowest c10H
    assert len(mix) == FOLDS * 3
    assert set(curves.method) == {"hard", "soft", "mixup_soft"}
    empty = P.table1_heldout_curves(P.FinetuneRuns([], {}, {}), df)
    assert not len(empty)


def test_heldout_curve_figure_draws_a_line_and_best_epoch_per_method():
    df = metrics_frame(archs=(OTHER,), alphas=(0.2, 0.4), ensemble=False)
    curves = P.table1_heldout_curves(runs_with_curves(), df)
    fig = P.plot_alternatives_heldout_curves(curves)
    ax = fig.axes[0]
    best = [ln for ln in ax.lines if ln.get_marker() == "v"]
    assert len(best) == 3 and len(ax.lines) == 6
    by_x = sorted(int(ln.get_xdata()[0]) for ln in best)
    assert by_x == [2, 3, 3]  # hard is best at epoch 2; soft and mixup at their last
    assert "bands: ±1 s.d. over 3 folds" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["Tiny / hard", "Tiny / soft", "Tiny / mixup_soft"]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)  # epochs, not 0.96 ... 1.04
    one_epoch = curves[curves.epoch == 1]
    ax1 = P.plot_alternatives_heldout_curves(one_epoch).axes[0]
    ticks = [t for t in ax1.get_xticks() if ax1.get_xlim()[0] <= t <= ax1.get_xlim()[1]]
    assert ticks == [1]


# ---------------------------------------------------------------- Table 1 --------------------

def test_table1_styled_shows_titles_three_decimals_and_na():
    t1 = P.table1(metrics_frame())
    html = P.table1_styled(t1).to_html()
    assert P.METHOD_TITLES["soft"] in html and P.METHOD_TITLES["pretrained"] in html
    assert ">0.200000<" not in html and ">0.000500<" not in html
    assert ">0.2<" in html and ">0.0005<" in html
    assert ">nan<" not in html and ">n/a<" in html  # v4, v6 and the pretrained rows' alpha, lr
    c10h, sd = t1.loc[("ResNet-20", "hard"), ["c10H", "c10H std"]]
    assert f">{c10h:.3f} ± {sd:.3f}<" in html
    assert ">3<" in html  # folds as an integer


def test_table1_bars_draw_each_row_with_spread_and_paper_marks_where_the_paper_has_cells():
    t1 = P.table1(metrics_frame())
    fig = P.plot_table1_bars(t1, [RESNET, OTHER])
    left, right = fig.axes
    for ax, col in ((left, "c10H"), (right, "c10")):
        bars = ax.patches
        assert len(bars) == len(t1)
        np.testing.assert_allclose([b.get_width() for b in bars], t1[col])
        (err,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        segments = err.lines[2][0].get_segments()  # one horizontal bar per row: mean ± std
        np.testing.assert_allclose([(s[1, 0] - s[0, 0]) / 2 for s in segments],
                                   t1[f"{col} std"])
    # colours: grey pretrained, orange human-label targets, blue the rest
    grey, orange, blue = (matplotlib.colors.to_rgba(c) for c in ("C7", "C1", "C0"))
    for b, (_, m) in zip(left.patches, t1.index):
        want = grey if m == "pretrained" else orange if m in ("soft", "sampled",
                                                              "mixup_soft") else blue
        assert b.get_facecolor() == want
    # paper diamonds only for the ResNet family's transcribed rows; the teacher's square
    rows = list(t1.index)
    transcribed = [rows.index(("ResNet-20", m)) for m in P.METHODS + ("pretrained",)
                   if ("ResNet", m) in P.PAPER_TABLE1]
    diamonds = [ln for ln in left.lines if ln.get_marker() == "D"]
    assert len(diamonds) == 1
    assert sorted(diamonds[0].get_ydata()) == sorted(transcribed)
    squares = [ln for ln in left.lines if ln.get_marker() == "s"]
    assert len(squares) == 1
    assert squares[0].get_ydata()[0] == rows.index((P.ENSEMBLE, "pretrained"))
    assert squares[0].get_xdata()[0] == P.PAPER_TABLE1_ENSEMBLE_C10H
    assert not [ln for ln in right.lines if ln.get_marker() == "s"]  # c10H only
    # row labels name the architecture when there are several
    ticks = [t.get_text() for t in left.get_yticklabels()]
    assert ticks[0] == "pretrained (ResNet-20)" and "soft (Tiny)" in ticks
    assert "bars: ±1 s.d. over 3 folds" in left.get_title()


def test_table1_bars_legend_lies_below_both_panels_and_lists_each_entry_once():
    t1 = P.table1(metrics_frame())
    fig = P.plot_table1_bars(t1, [RESNET, OTHER])
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert len(labels) == len(set(labels)) == 5
    assert {"pretrained, not fine-tuned", "each image's human labels",
            "other targets"} <= set(labels)
    assert sum("paper" in lab for lab in labels) == 2
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top_of_legend = legend.get_window_extent(renderer).y1
    for ax in fig.axes:
        assert ax.get_tightbbox(renderer).y0 >= top_of_legend - 1  # nothing hidden under it


def test_table1_bars_with_one_architecture_label_rows_by_method_only():
    t1 = P.table1(metrics_frame(archs=(OTHER,), ensemble=False))
    fig = P.plot_table1_bars(t1, [OTHER])
    left = fig.axes[0]
    assert [t.get_text() for t in left.get_yticklabels()] == ["pretrained", *P.METHODS]
    assert not [ln for ln in left.lines if ln.get_marker() == "D"]  # no paper family
    # the teacher is the single pretrained model here: its square sits on that row
    (square,) = [ln for ln in left.lines if ln.get_marker() == "s"]
    assert square.get_ydata()[0] == 0


def test_distill_teacher_row_and_paper_comparison_agree():
    two = P.table1(metrics_frame())
    one = P.table1(metrics_frame(archs=(RESNET,), ensemble=False))
    assert P.distill_teacher_row(two, [RESNET, OTHER]) == (P.ENSEMBLE, "pretrained")
    assert P.distill_teacher_row(one, [RESNET]) == ("ResNet-20", "pretrained")
    cmp = P.paper_vs_run_table1(one, [RESNET])
    teacher = cmp[cmp.method == "distillation teacher (c10H only)"]
    assert teacher["arch"].tolist() == [
        "single pretrained model (ResNet-20); paper: ensemble of 8"]
    assert teacher["run c10H"].iloc[0] == pytest.approx(one.loc[("ResNet-20", "pretrained"),
                                                                "c10H"])
    cmp2 = P.paper_vs_run_table1(two, [RESNET, OTHER])
    assert "ensemble of 2 pretrained models" in cmp2["arch"].tolist()


# ---------------------------------------------------------------- grid, paired, ranking ------

def test_mixup_grid_has_every_alpha_and_the_fold_mean():
    df = metrics_frame(alphas=(0.2, 0.4))
    grid = P.mixup_grid_table(df)
    assert len(grid) == 2 * 2 * 2  # archs x mixup methods x alphas
    assert set(grid.index.get_level_values("alpha")) == {0.2, 0.4}
    want = df[(df.arch == "Tiny") & (df.method == "mixup_hard") & (df.alpha == 0.4)].c10H.mean()
    assert grid.loc[("Tiny", "mixup_hard", 0.4, 0.0005), ("c10H", "mean")] == pytest.approx(want)
    html = grid.style.format("{:.3f}", na_rep="n/a").format_index(F.sig).to_html()
    assert ">0.4<" in html and "0.400000" not in html and "0.000500" not in html
    # one fold: no std, shown as n/a
    one_fold = P.mixup_grid_table(df[df.fold == 0])
    assert one_fold[("c10H", "std")].isna().all()
    assert ">nan<" not in one_fold.style.format("{:.3f}", na_rep="n/a").to_html()


def test_paired_vs_hard_takes_the_selected_variant_fold_by_fold():
    df = metrics_frame(alphas=(0.2, 0.4))
    paired = P.paired_vs_hard_table(df)
    assert paired.index.names[:2] == ["metric", "method minus hard"]
    soft = paired.loc[("c10H", "soft", "ResNet-20")]
    # soft is four method positions after hard: +0.08 nats on every fold
    assert soft["mean diff"] == pytest.approx(0.08)
    assert soft["folds"] == FOLDS and soft["folds with same sign"] == FOLDS
    # mixup at the selected alpha (0.4): +0.02 - 0.01 nats (at 0.2 it would be +0.015)
    assert paired.loc[("c10H", "mixup_hard", "Tiny"), "mean diff"] == pytest.approx(0.01)
    assert "hard" not in paired.index.get_level_values("method minus hard")


def test_c10h_ranking_orders_rows_and_names_the_control():
    t1 = P.table1(metrics_frame())
    lines = P.table1_c10h_ranking(t1, [RESNET, OTHER])
    assert len(lines) == 2 and lines[0].startswith("ResNet-20: c10H ranking (lowest first): hard")
    hard = t1.loc[("ResNet-20", "hard"), "c10H"]
    assert lines[0].endswith(f"the hard-label control is at {hard:.3f}.")
    assert lines[0].index("soft ") < lines[0].index("pretrained ")
    no_hard = t1.drop(index=("Tiny", "hard"))
    assert len(P.table1_c10h_ranking(no_hard, [RESNET, OTHER])) == 1


def test_methods_vs_hard_figure_draws_each_method_per_arch_and_the_papers_differences():
    from matplotlib.container import ErrorbarContainer
    df = metrics_frame()
    paired = P.paired_vs_hard_table(df)
    fig = P.plot_methods_vs_hard(paired, [RESNET, OTHER])
    c10h, c10, acc = fig.axes
    methods = [m for m in P.METHODS if m != "hard"]
    bars = [c for c in c10h.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2 * len(methods)  # a point per method and architecture
    soft = bars[methods.index("soft")]  # ResNet-20's soft point: +0.08 nats, no spread
    assert float(np.asarray(soft.lines[0].get_xdata(), float)[0]) == pytest.approx(0.08)
    assert soft.lines[0].get_color() == "C1" or soft.lines[0].get_markerfacecolor() == "C1"
    # paper Table 1, ResNet family: soft - hard c10H = 0.35 - 0.57; none for 'distill'
    (mark,) = [ln for ln in c10h.lines if ln.get_label().startswith("paper")]
    xs = np.asarray(mark.get_xdata(), float)
    assert xs[methods.index("soft")] == pytest.approx(0.35 - 0.57)
    assert not [ln for ln in acc.lines if ln.get_label().startswith("paper")]  # CE only
    assert "±2 s.e. over 3 folds" in fig._suptitle.get_text()
    assert c10h.get_title() == "c10H: better than hard left of 0"
    assert c10h.get_yticklabels()[methods.index("soft")].get_text().startswith("human soft")
