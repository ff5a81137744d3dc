import numpy as np
import pytest

from softlib.studies import cifar10h as study


@pytest.fixture
def toy():
    counts = np.array([[5, 0, 0], [3, 2, 0], [0, 1, 4], [2, 2, 1]], dtype=float)
    labels = np.array([0, 0, 1, 2])
    return counts, labels


def test_vote_summary_and_accuracy(toy):
    counts, labels = toy
    s = study.vote_summary(counts)
    assert s == {"images": 4, "judgments": 20, "mean_votes": 5.0, "min_votes": 5, "max_votes": 5}
    np.testing.assert_allclose(study.human_accuracy_per_image(counts, labels), [1, 0.6, 0.2, 0.2])


def test_confusion_rows_are_vote_shares(toy):
    counts, labels = toy
    m = study.human_confusion(counts, labels, num_classes=3)
    np.testing.assert_allclose(m[0], [8 / 10, 2 / 10, 0])
    np.testing.assert_allclose(m[1], [0, 0.2, 0.8])
    np.testing.assert_allclose(m.sum(1), 1)


def test_entropy_concentration_counts_the_fewest_images():
    # one image holds all the entropy: it alone reaches every share
    probs = np.array([[0.5, 0.5], [1, 0], [1, 0], [1, 0]])
    table = study.entropy_concentration(probs, shares=(0.5, 1.0))
    assert list(table["images needed"]) == [1, 1]
    x, y = study.entropy_lorenz(probs)
    assert y[1] == pytest.approx(1.0) and x[-1] == 1.0


def test_gallery_groups(toy):
    counts, labels = toy
    g = study.gallery_indices(counts, labels, per_group=2)
    assert list(g["certain"]) == [0]
    assert g["split"][0] == 3
    assert set(g["confused"]) == {2, 3}  # majority (class 2 for #2, tie -> 0 for #3) != label


def test_entropy_share_of_most_uncertain():
    probs = np.array([[1, 0], [1, 0], [0.5, 0.5], [0.9, 0.1]], dtype=float)
    h = np.array([0, 0, np.log(2), -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))])
    assert study.entropy_share_of_most_uncertain(probs, 0.25) == pytest.approx(h[2] / h.sum())
    assert study.entropy_share_of_most_uncertain(probs, 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="fraction"):
        study.entropy_share_of_most_uncertain(probs, 0)


def test_participant_facts_counts_people_and_images():
    import pandas as pd
    raw = pd.DataFrame({"annotator_id": [1, 1, 1, 2, 2, 3],
                        "cifar10_test_test_idx": [0, 1, 2, 0, 5, 7]})
    f = study.participant_facts(raw)
    assert f.loc["participants in the table", "this data"] == 3
    assert f.loc["participants in the table", "paper"] == 2571 - 14
    assert f.loc["images per participant (median)", "this data"] == 2
    assert f.loc["judgments (non-attention trials)", "this data"] == 6


def _paper_like_counts(judgments: int) -> np.ndarray:
    """10,000 images with 47-63 votes each, about 51 on average, summing to ``judgments``."""
    votes = np.full(10000, 51)
    votes[0], votes[1] = 47, 63
    votes[2:2 + abs(judgments - votes.sum())] += np.sign(judgments - votes.sum())
    assert votes.sum() == judgments
    counts = np.zeros((10000, 10))
    counts[:, 0] = votes
    return counts


def test_paper_comparison_flags_only_what_differs_and_explains_missing_participants():
    agree = study.paper_comparison(_paper_like_counts(511400)).set_index("quantity")
    assert agree["agrees"].all() and (agree["note"] == "").all()
    short = study.paper_comparison(_paper_like_counts(511000)).set_index("quantity")
    assert list(short.index[~short["agrees"]]) == ["judgments"]
    assert short.loc["judgments", "this data"] == "511,000"
    assert "400 fewer, 2 participants' worth" in short.loc["judgments", "note"]
    # a gap that is not a whole number of participants is not explained away
    odd = study.paper_comparison(_paper_like_counts(511350)).set_index("quantity")
    assert "fewer" not in odd.loc["judgments", "note"]


def test_takeaways_are_written_from_the_counts(toy):
    counts, labels = toy
    lines = study.takeaways(counts, labels, top_fraction=0.25)
    # 2 of 4 images have a majority other than their label; 1 of 4 is unanimous
    assert "on 2 images (50.00%)" in lines[0] and "every vote does on 25%" in lines[0]
    # the largest confusion of the toy: class 1's votes go to class 2 (80%)
    assert "automobile called bird (80.0% of its votes)" in lines[2]
    # 20 judgments against the paper's 511,400: the comparison line says so
    assert "judgments 20 here vs 511,400" in lines[-1]


def test_the_section_figures_draw_every_image_and_class(toy):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    counts = np.zeros((6, 10))
    counts[np.arange(6), np.arange(6)] = 5
    counts[0, 3] = 2
    labels = np.arange(6)
    images = np.zeros((6, 4, 4, 3), dtype=np.uint8)
    fig = study.plot_confusion(counts, labels)
    conf_ax, bar_ax = fig.axes[:2]
    assert len(bar_ax.patches) == 6  # one bar per class that has images
    assert any(t.get_text() == "28.6" for t in conf_ax.texts)  # image 0: 2 of its 7 votes
    plt.close(fig)
    groups = {"certain": np.array([1, 2]), "split": np.array([0])}
    fig = study.plot_gallery(images, counts, labels, groups)
    assert sum(len(ax.images) for ax in fig.axes) == 3
    from matplotlib.text import Text
    words = [t.get_text() for t in fig.findobj(Text)]
    assert "airpl 71% / cat 29%" in words and "#0: airplane" in words
    plt.close(fig)


def test_takeaways_say_concentrated_only_when_the_entropy_is():
    labels = np.zeros(10, dtype=int)
    one = np.tile([10.0, 0, 0], (10, 1))
    one[0] = [4, 3, 3]  # one image holds all the entropy
    even = np.tile([6.0, 2, 2], (10, 1))  # every image equally uncertain
    assert study.takeaways(one, labels)[1].startswith("The uncertainty sits in a minority")
    assert study.takeaways(even, labels)[1].startswith("The uncertainty is spread")


def test_agreement_concentration_and_annotator_figures(toy):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    counts, labels = toy
    fig = study.plot_agreement(counts, labels)
    acc_ax, h_ax = fig.axes
    assert sum(p.get_height() for p in acc_ax.patches) == len(labels)  # every image counted
    assert acc_ax.get_legend().get_texts()[0].get_text() == "mean 0.500"  # (1+.6+.2+.2)/4
    assert "How uncertain" in h_ax.get_title()
    plt.close(fig)
    probs = np.array([[1, 0], [1, 0], [0.5, 0.5], [0.9, 0.1]], dtype=float)
    fig = study.plot_entropy_concentration(probs, 0.25)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    share = study.entropy_share_of_most_uncertain(probs, 0.25)
    assert f"25% most uncertain hold {share:.0%}" in texts
    assert any(t.startswith("paper") for t in texts)
    plt.close(fig)
    raw = pd.DataFrame({"annotator_id": [1, 1, 2, 2, 3], "correct_guess": [1, 0, 1, 1, 0]})
    fig = study.plot_annotators(raw)
    assert sum(p.get_height() for p in fig.axes[0].patches) == 3  # three annotators
    assert "3 annotators" in fig.axes[0].get_title()
    plt.close(fig)
