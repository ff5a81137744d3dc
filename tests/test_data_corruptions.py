"""softlib.data.corruptions: the CIFAR-10-C-style generator."""
from __future__ import annotations

import numpy as np
import pytest

from softlib import data
from softlib.data import corruptions, fixtures
from softlib.data.registry import CORRUPTIONS

IMG = fixtures.synthetic_images(np.array([3]), np.random.default_rng(0))[0]


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_shape_determinism_and_monotone_damage(name):
    outs = [corruptions.corrupt_image(IMG, name, s, index=7) for s in (1, 5)]
    for o in outs:
        assert o.shape == IMG.shape and o.dtype == np.uint8
    again = corruptions.corrupt_image(IMG, name, 5, index=7)
    assert np.array_equal(outs[1], again)                       # seeded per image
    d1, d5 = (np.abs(o.astype(float) - IMG).mean() for o in outs)
    assert d5 > 0
    if name != "elastic_transform":   # Hendrycks' severity 1 is a larger pure affine warp
        assert d5 >= d1 * 0.9, (name, d1, d5)                   # severity 5 damages more


def test_reference_formulas():
    x = IMG.astype(float) / 255
    c = corruptions.contrast(x, 2, None)
    np.testing.assert_allclose(c, np.clip((x - x.mean((0, 1))) * 0.5 + x.mean((0, 1)), 0, 1))
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
    h = rgb_to_hsv(x)
    h[..., 2] = np.clip(h[..., 2] + 0.3, 0, 1)
    np.testing.assert_allclose(corruptions.brightness(x, 5, None), hsv_to_rgb(h), atol=1e-9)


def test_generate_subset(tmp_path):
    root = fixtures.write_fixture_root(tmp_path, n_train=50, n_test=10000, cifar10_c=False)
    paths = corruptions.generate(per_class=2, corruptions=["fog", "pixelate"], severities=[1, 3],
                                 root=root)
    assert len(paths) == 4
    s = data.load("cifar10_c", "fog_3", root)
    train = data.load("cifar10", "train", root)
    idx = corruptions.first_per_class(train.labels, 2)
    assert np.array_equal(s.extra["indices"], idx) and len(s) == 20
    # the same image gets the same pixels whatever subset it is generated in
    one = corruptions.corrupt_image(train.images[idx[5]], "fog", 3, idx[5])
    assert np.array_equal(s.images[5], one)
    assert "approximations" in data.provenance("cifar10_c", root)
