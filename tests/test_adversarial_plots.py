"""Section 4's figures and tables (softlib.studies.peterson.adversarial), on constructed
FGSM / PGD tables shaped like :func:`run_adversarial`'s."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from softlib import figures as F  # noqa: E402
from softlib.studies import peterson as P  # noqa: E402
from softlib.studies.peterson import Arch  # noqa: E402

RESNET = Arch("ResNet-20", "resnet_20")  # paper family 'ResNet'
TINY = Arch("tiny", "tiny_cnn")  # no paper row
EPS = [0, 4.0, 6.0]


def _fgsm(archs=(RESNET, TINY), folds=3):
    """FGSM table: soft has a lower CE than hard by 0.5 nats; accuracy falls with eps."""
    rows = []
    for a in archs:
        for cond in P.ATTACK_METHODS:
            for k in range(folds):
                for e in EPS:
                    rows.append({"arch": a.label, "condition": cond, "fold": k, "lr": 0.01,
                                 "eps": e, "accuracy": 0.8 - 0.1 * e + 0.01 * k,
                                 "ce": 1 + e - (0.5 if cond == "soft" else 0) + 0.1 * k,
                                 "n": 100})
    return pd.DataFrame(rows)


def _pgd(archs=(RESNET, TINY), folds=2, steps=3, bounds=(4.0, 8.0)):
    rows = []
    for a in archs:
        for cond in P.ATTACK_METHODS:
            for k in range(folds):
                for pe in bounds:
                    for s in range(steps + 1):
                        rows.append({"arch": a.label, "condition": cond, "fold": k, "lr": 0.01,
                                     "eps": pe, "step": s, "ce": s * pe / (2 if cond == "soft"
                                                                           else 1) + k,
                                     "final_accuracy": 0.02 if cond == "hard" else 0.04,
                                     "n": 50})
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _paper_lines(ax):
    return [ln for ln in ax.get_lines() if ln.get_label().startswith("paper")]


def test_fgsm_sweep_draws_a_line_per_arch_and_label_type_and_paper_marks_for_known_families():
    fig = P.plot_fgsm_sweep(_fgsm(), [RESNET, TINY])
    acc_ax, ce_ax = fig.axes
    ref = P.PAPER_TABLE2["ResNet"]  # (accuracy hard, accuracy soft, CE hard, CE soft)
    for ax, paper in [(acc_ax, ref[:2]), (ce_ax, ref[2:])]:
        assert len(ax.containers) == 4  # 2 archs x hard / soft, each with error bars
        # the paper's ResNet row only: the tiny net's family has none
        marks = _paper_lines(ax)
        assert sorted(m.get_label() for m in marks) == ["paper Table 2, hard (ResNet)",
                                                        "paper Table 2, soft (ResNet)"]
        assert [float(m.get_ydata()[0]) for m in marks] == list(paper)  # hard, then soft
        assert all(float(m.get_xdata()[0]) == 4 for m in marks)
        # the run points sit at each eps
        run = ax.containers[0].lines[0]
        assert list(run.get_xdata()) == EPS
    assert "accuracy" in acc_ax.get_ylabel() and "nats" in ce_ax.get_ylabel()
    assert "±1 s.d. over 3 fold models" in acc_ax.get_title()
    assert acc_ax.get_legend() is None and ce_ax.get_legend() is None  # one shared legend
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert "fine-tuned on soft labels (tiny)" in texts and len(texts) == 6


def test_fgsm_sweep_means_and_error_bars_are_over_folds():
    fg = _fgsm([RESNET])
    fig = P.plot_fgsm_sweep(fg, [RESNET])
    ce_ax = fig.axes[1]
    hard, soft = ce_ax.containers  # hard first (groupby order), one arch: no arch in the label
    np.testing.assert_allclose(np.asarray(hard.lines[0].get_ydata(), dtype=float), [1.1, 5.1, 7.1])
    np.testing.assert_allclose(np.asarray(soft.lines[0].get_ydata(), dtype=float), [0.6, 4.6, 6.6])
    seg = hard.lines[2][0].get_segments()[0]  # the bar at eps 0: mean ± std of 1.0, 1.1, 1.2
    np.testing.assert_allclose(np.asarray(seg, dtype=float)[:, 1], [1.0, 1.2])
    assert hard.get_label() == "fine-tuned on hard labels"


def test_fgsm_sweep_with_one_fold_says_there_are_no_bars():
    fig = P.plot_fgsm_sweep(_fgsm([TINY], folds=1), [TINY])
    assert "none, one fold model" in fig.axes[0].get_title()
    assert not _paper_lines(fig.axes[0])


def test_fgsm_tables_have_the_label_types_side_by_side():
    fg = _fgsm()
    t = P.fgsm_sweep_table(fg)
    assert list(t.index.names) == ["arch", "eps"] and len(t) == 2 * len(EPS)
    assert ("cross-entropy", "mean", "soft") in t.columns
    assert t.loc[("ResNet-20", 4.0), ("cross-entropy", "mean", "hard")] == pytest.approx(5.1)
    d = P.fgsm_paired_differences(fg)
    assert list(d.index.names) == ["metric", "arch", "eps"]
    assert d.loc[("ce", "tiny", 6.0), "mean diff"] == pytest.approx(-0.5)
    assert d.loc[("ce", "tiny", 6.0), "folds with same sign"] == 3


def test_sig_table_shows_counts_whole_eps_without_zeros_and_nan_as_na():
    fg = _fgsm([RESNET, TINY])
    html = F.sig_table(P.table2(fg, 4.0), "cap").to_html()
    assert ">3<" in html and "3.000" not in html  # folds
    assert ">4.6<" in html  # soft CE mean at eps 4, 3 significant digits
    html = F.sig_table(P.fgsm_paired_differences(fg), "cap").to_html()
    assert ">4<" in html and "4.000000" not in html
    cmp = P.paper_vs_run_table2(fg, [RESNET, TINY], 4.0)
    html = F.sig_table(cmp, "cap").to_html()
    assert "n/a" in html and "nan" not in html.lower()
    assert ">6.1<" in html and "(none)" in html  # the paper's ResNet CE; the tiny net's row


def test_pgd_curves_draw_the_smallest_bound_with_bands():
    pg = _pgd()
    fig = P.plot_pgd_curves(pg, [RESNET, TINY])
    (ax,) = fig.axes
    lines = [ln for ln in ax.get_lines()]
    assert len(lines) == 4 and len(ax.collections) == 4  # a band per line
    hard_resnet = next(ln for ln in lines if ln.get_label() == "hard labels (ResNet-20)")
    np.testing.assert_allclose(hard_resnet.get_ydata(), [0.5, 4.5, 8.5, 12.5])  # eps 4, not 8
    assert list(hard_resnet.get_xdata()) == [0, 1, 2, 3]
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)  # iterations are whole numbers
    assert "eps 4/255" in ax.get_title() and "band: ±1 s.d. over 2 fold models" in ax.get_title()


def test_pgd_tables_and_text():
    pg = _pgd(steps=3)
    t = P.pgd_final_table(pg)
    assert list(t.columns) == [("cross-entropy (nats)", "eps 4/255"),
                               ("cross-entropy (nats)", "eps 8/255"),
                               ("accuracy", "eps 4/255"), ("accuracy", "eps 8/255")]
    assert t.loc[("tiny", "soft"), ("cross-entropy (nats)", "eps 8/255")] == pytest.approx(12.5)
    acc = P.pgd_accuracy_vs_paper(pg)
    assert list(acc["paper"]) == list(P.PAPER_PGD_ACCURACY)
    assert list(acc["this run"]) == pytest.approx([0.02, 0.04])
    only_hard = P.pgd_accuracy_vs_paper(pg[pg.condition == "hard"])
    assert np.isnan(only_hard.loc["accuracy after PGD, soft", "this run"])
    assert "n/a" in F.sig_table(only_hard, "cap").to_html()
    text = P.pgd_settings_text(pg, 1.0, 3)
    assert "**4, 8 (/255)**" in text and "**3 iterations**" in text and "**1.0/255**" in text


def test_fgsm_measured_text_lists_archs_with_both_label_types():
    fg = _fgsm()
    fg = fg[~((fg.arch == "tiny") & (fg.condition == "soft"))]
    text = P.fgsm_measured_text(fg, [RESNET, TINY], 4.0)
    assert text.startswith("**What this run measured:**")
    assert "- ResNet-20, FGSM eps 4.0/255: accuracy hard 0.410 vs soft 0.410; " \
           "cross-entropy hard 5.10 vs soft 4.60." in text
    assert "tiny" not in text


def test_fgsm_differences_draw_soft_minus_hard_per_eps_with_two_standard_errors():
    from matplotlib.container import ErrorbarContainer
    fg = _fgsm()
    soft = fg.condition == "soft"
    fg.loc[soft, "ce"] += fg.loc[soft, "fold"].map({0: 0.0, 1: 0.1, 2: -0.1})
    fig = P.plot_fgsm_differences(fg, [RESNET, TINY])
    acc_ax, ce_ax = fig.axes
    bars = [c for c in ce_ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2  # one line per architecture
    np.testing.assert_allclose(np.asarray(bars[0].lines[0].get_xdata(), float), EPS)
    np.testing.assert_allclose(np.asarray(bars[0].lines[0].get_ydata(), float), -0.5)
    seg = bars[0].lines[2][0].get_segments()[0]
    assert seg[1, 1] - seg[0, 1] == pytest.approx(4 * 0.1 / np.sqrt(3))  # ±2 s.e., 3 folds
    # the paper's Table 2 soft - hard for the ResNet family at eps 4; none for the tiny net
    (acc_mark,), (ce_mark,) = _paper_lines(acc_ax), _paper_lines(ce_ax)
    assert acc_mark.get_xdata()[0] == 4 and acc_mark.get_ydata()[0] == pytest.approx(0.08)
    assert ce_mark.get_ydata()[0] == pytest.approx(3.1 - 6.1)
    assert "±2 s.e. over 3 fold models" in ce_ax.get_title()
