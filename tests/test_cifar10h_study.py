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
