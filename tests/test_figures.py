"""softlib.figures: the papers' reference marks, titles and error-bar notes."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from softlib import figures as F
from softlib.studies import peterson as P


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_paper_marks_draws_hollow_points_at_the_published_values(ax):
    (hard, soft) = P.PAPER_FIG2[("cifar10_train", "ce")]
    line = F.paper_marks(ax, [1, 1], [hard, soft], label="paper (8-CNN mean)", color="C0")
    assert line in ax.lines
    np.testing.assert_allclose(line.get_xydata(), [[1, hard], [1, soft]])
    assert "paper" in line.get_label()
    assert line.get_markerfacecolor() == "none"
    assert line.get_linestyle() == "None"
    handles, labels = ax.get_legend_handles_labels()
    assert labels == ["paper (8-CNN mean)"]


def test_paper_marks_names_the_paper_and_skips_missing_values(ax):
    line = F.paper_marks(ax, [0, 1, 2], [0.5, np.nan, 0.7], label="Table 1")
    assert line.get_label() == "paper: Table 1"
    np.testing.assert_allclose(line.get_xydata(), [[0, 0.5], [2, 0.7]])
    assert F.paper_marks(ax, 0, np.nan) is None
    assert len(ax.lines) == 1
    with pytest.raises(ValueError):
        F.paper_marks(ax, [0, 1], [0.5])


def test_paper_line_is_dashed_at_the_value(ax):
    h = F.paper_line(ax, y=0.41, label="paper ensemble")
    assert h.get_ydata()[0] == pytest.approx(0.41) and h.get_linestyle() == "--"
    v = F.paper_line(ax, x=4, label="eps")
    assert v.get_xdata()[0] == pytest.approx(4) and "paper" in v.get_label()
    with pytest.raises(ValueError):
        F.paper_line(ax, x=1, y=1)
    with pytest.raises(ValueError):
        F.paper_line(ax)


def test_paper_fit_spans_the_data(ax):
    line = F.paper_fit(ax, 1.056, -12.53, [70, np.nan, 90])
    np.testing.assert_allclose(line.get_xydata(), [[70, 1.056 * 70 - 12.53],
                                                   [90, 1.056 * 90 - 12.53]])
    assert "paper" in line.get_label()


def test_titles_and_spread_notes(ax):
    assert F.spread_note(3) == "bars: ±1 s.d. over 3 folds"
    assert F.spread_note(1, "seeds") == "bars: none, one seed (no spread to show)"
    assert F.spread_note(5, "seeds", "±1 s.e.", "band") == "band: ±1 s.e. over 5 seeds"
    text = F.question_title(ax, "Do soft labels lower cross-entropy?", "paper Fig. 2",
                            F.spread_note(2))
    assert ax.get_title() == text
    assert text == ("Do soft labels lower cross-entropy? (paper Fig. 2)\n"
                    "bars: ±1 s.d. over 2 folds")


def test_binomial_se():
    se = F.binomial_se([0.5, 0.9, 0.3], [100, 0, 25])
    assert se[0] == pytest.approx(0.05)
    assert np.isnan(se[1])
    assert se[2] == pytest.approx(np.sqrt(0.21 / 25))


def test_legend_unique(ax):
    for _ in range(2):
        ax.plot([0], [0], label="soft labels")
    ax.plot([0], [0], label="hard labels")
    leg = F.legend_unique(ax)
    assert [t.get_text() for t in leg.get_texts()] == ["soft labels", "hard labels"]


def test_sig_keeps_three_significant_digits_and_passes_text_through():
    assert F.sig(82.917) == "82.9"
    assert F.sig(0.04631) == "0.0463"
    assert F.sig(2e-4, 2) == "0.0002"
    assert F.sig(float("nan")) == "n/a" and F.sig(None, na="-") == "-"
    assert F.sig("paper row 'dropout soft'") == "paper row 'dropout soft'"
    assert F.sig(True) == "True"
    assert F.sig(np.int64(511400)) == "511,400" and F.sig(12345.6) == "12,346"


def test_sig_table_rounds_values_and_row_labels_and_can_hide_the_index():
    import pandas as pd
    frame = pd.DataFrame({"acc": [0.123456, float("nan")], "folds": [3.0, 3.0]},
                         index=pd.Index([4.0, 8.0], name="eps"))
    html = F.sig_table(frame, "cap").to_html()
    assert "0.123" in html and "0.123456" not in html and "n/a" in html
    assert ">4<" in html.replace(" ", "") and "4.000000" not in html and ">3<" in html
    assert "cap" in html
    assert "row_heading" in html
    assert "row_heading" not in F.sig_table(frame, hide_index=True).to_html()
