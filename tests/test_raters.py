"""softlib.raters: agreement of ReaL's raters with its experts, and the section's part on it."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from softlib import raters as R
from softlib.data import fixtures, load_real_golden

N, M, Y = R.NO, R.MAYBE, R.YES


def test_majority_breaks_no_ties_and_skips_unasked():
    codes = np.array([[Y, N, -1, Y, M],
                      [Y, Y, -1, N, M],
                      [N, Y, -1, M, N]])
    # Y wins 2-1; Y wins 2-1; nobody asked; a three-way tie; M wins 2-1
    assert R.majority(codes).tolist() == [Y, Y, -1, -1, M]
    assert R.majority(np.array([[Y, N], [N, N]])).tolist() == [-1, N]
    with pytest.raises(ValueError, match="-1 .not asked., 0 no, 1 maybe or 2 yes"):
        R.majority(np.array([[3]]))
    with pytest.raises(ValueError, match="raters, questions"):
        R.majority(np.array([Y, N]))


def test_agreement_counts_only_questions_both_answered_with_exact_intervals():
    ref = np.array([Y, N, N, -1, Y, N])
    codes = np.array([[Y, N, Y, Y, -1, M],    # asked 4 decided: agrees on 2
                      [Y, N, N, N, Y, N]])    # 5 decided: agrees on all 5
    a = R.agreement(codes, ref)
    assert a["n"].tolist() == [4, 5] and a["agree"].tolist() == [2, 5]
    assert a["rate"].tolist() == [0.5, 1.0]
    ci = binomtest(2, 4).proportion_ci(0.95, method="exact")
    assert a.loc[0, "lo"] == pytest.approx(ci.low) and a.loc[0, "hi"] == pytest.approx(ci.high)
    assert a.loc[0, "maybe"] == pytest.approx(1 / 5)  # one 'maybe' of its 5 answers
    with pytest.raises(ValueError, match="one answer per question"):
        R.agreement(codes, ref[:3])


def test_golden_agreement_scores_each_expert_against_the_others_only():
    experts = np.array([[Y, N, N, Y],
                        [Y, N, N, Y],
                        [Y, N, N, N],
                        [N, Y, Y, N]])
    raters = np.array([[Y, N, N, Y], [N, N, Y, M]])
    t = R.golden_agreement({"experts": experts, "raters": raters})
    ex = t[t["kind"] == "expert"].reset_index(drop=True)
    # expert 3 against the majority of experts 0-2 (Y, N, N, Y): disagrees on all four
    assert ex.loc[3, "agree"] == 0 and ex.loc[3, "n"] == 4
    # expert 0 against the majority of experts 1-3 (Y, N, N, N): agrees on the first three
    assert ex.loc[0, "n"] == 4 and ex.loc[0, "agree"] == 3
    rat = t[t["kind"] == "rater"].reset_index(drop=True)
    ref = R.majority(experts)  # the last question ties 2-2: no reference, left out
    assert ref.tolist() == [Y, N, N, -1]
    assert rat["agree"].tolist() == [3, 1] and rat["n"].tolist() == [3, 3]
    # leaving 'maybe' out: rater 1's M on the last question was not scored anyway (a tie)
    assert rat["decided_n"].tolist() == [3, 3] and rat["decided_rate"].tolist() == [1.0, 1 / 3]
    maj = t[t["kind"] == "raters' majority"].iloc[0]
    assert maj["who"] == "majority of the 2 raters" and maj["n"] == 1  # raters tie on 3 of 4
    # a 'maybe' where the experts decided: a disagreement in rate, left out of decided_*
    one = R.golden_agreement({"experts": np.full((3, 2), Y), "raters": np.array([[M, Y]])})
    r = one[one["kind"] == "rater"].iloc[0]
    assert (r["n"], r["agree"], r["decided_n"], r["decided_rate"]) == (2, 1, 1, 1.0)
    with pytest.raises(ValueError, match="at least 3 experts"):
        R.golden_agreement({"experts": experts[:2], "raters": raters})
    with pytest.raises(ValueError, match="same questions"):
        R.golden_agreement({"experts": experts, "raters": raters[:, :3]})


def test_unanimity_and_yes_share():
    experts = np.array([[Y, N, N], [Y, N, Y], [Y, N, N]])
    u = R.expert_unanimity(experts)
    assert (u["n"], u["unanimous"]) == (3, 2) and u["rate"] == pytest.approx(2 / 3)
    assert u["lo"] < 2 / 3 < u["hi"] and u["yes"] == pytest.approx(1 / 3)
    share = R.yes_share(np.array([[Y, N, -1], [Y, M, -1], [N, Y, -1], [-1, Y, -1]]))
    assert share[0] == pytest.approx(2 / 3) and share[1] == pytest.approx(0.5)
    assert np.isnan(share[2])


def test_vote_counts_and_summary():
    codes = np.array([[Y, N, -1, -1],
                      [Y, Y, N, -1],
                      [Y, M, N, -1]])
    c = R.vote_counts(codes)
    assert c["asked"].tolist() == [3, 3, 2, 0] and c["yes"].tolist() == [3, 1, 0, 0]
    assert c["unanimous"].tolist() == [True, False, True, False]
    s = R.vote_summary(c, ["a.JPEG", "a.JPEG", "b.JPEG", "c.JPEG"])
    assert s["questions"] == 3 and s["images"] == 2  # the unasked question and its image out
    assert s["all_yes"] == pytest.approx(1 / 3) and s["all_no"] == pytest.approx(1 / 3)
    assert s["split"] == pytest.approx(1 / 3) and s["images_with_split"] == pytest.approx(0.5)


def test_the_section_part_from_the_fixture(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from softlib.studies import shankar
    (tmp_path / "imagenet_real").mkdir()
    fixtures._real_golden(tmp_path / "imagenet_real", np.random.default_rng(0))
    g = load_real_golden(tmp_path)
    rs = shankar.rater_study(g)
    assert (rs.table["kind"] == "rater").sum() == 12 and rs.images == 20
    shown = shankar.rater_table(rs)
    assert list(shown.index[:5]) == [f"expert {i}" for i in range(100, 105)]
    assert shown.index[-1] == "majority of the 12 raters"
    assert shown["agreement % [95% CI]"].str.match(r"^\d+\.\d \[\d+\.\d, \d+\.\d\]$").all()
    lines = shankar.rater_takeaways(rs)
    assert "5 experts gave the same answer" in lines[0] and "of 60 golden questions" in lines[0]
    assert "One rater agrees with the experts' majority" in lines[1]
    assert "majority of all 12 raters" in lines[1]
    assert "Leaving each rater's 'maybe' answers out, the median agreement" in lines[2]
    text = " ".join(shankar.takeaways(None, None, None, None, raters=rs))
    assert "golden questions" in text and "People: not measured" in text
    assert "golden questions" not in " ".join(shankar.takeaways(None, None, None, None))
    fig = shankar.plot_raters(rs)
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel().startswith("agreement")
    plt.close(fig)
    assert shankar.load_golden(tmp_path / "nowhere") is None
    assert shankar.load_votes(tmp_path / "nowhere") is None
    assert rs.votes is None
    # with the votes on all questions: a third panel and a sentence
    from softlib.data import load_real_votes
    full = shankar.rater_study(g, load_real_votes(tmp_path))
    assert (full.votes["asked"] == 5).all() and full.vote_summary["questions"] == 60
    assert "Across all 60 (image, class) questions" in " ".join(shankar.rater_takeaways(full))
    fig = shankar.plot_votes(full)
    assert fig.axes[0].get_ylabel() == "questions (%)"
    assert "all 60 ReaL questions" in fig.axes[0].get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="raters.npz was absent"):
        shankar.plot_votes(rs)
    assert "concern 20 val images" in lines[0] and "one time in" in lines[0]
    # experts who never disagree: no "one time in N" (N would be infinite)
    agreeing = dict(g, experts=np.repeat(g["experts"][:1], 5, axis=0))
    first = shankar.rater_takeaways(shankar.rater_study(agreeing))[0]
    assert "60 of 60 golden questions (100.0%" in first and "one time in" not in first
