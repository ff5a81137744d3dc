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
