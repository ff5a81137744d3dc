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


_BYTES_UNDER_BLAS_KERNEL = """
import hashlib, sys
import numpy as np
from softlib.data import corruptions
rng = np.random.default_rng(7)  # flat 4x4 blocks, as photos have: interpolating inside them
blocks = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)  # lands on exact pixel values
imgs = blocks.repeat(4, axis=1).repeat(4, axis=2)
h = hashlib.sha256()
for name in corruptions.CORRUPTIONS:
    for s in (1, 3, 5):
        for i, img in enumerate(imgs):
            h.update(corruptions.corrupt_image(img, name, s, i).tobytes())
print(h.hexdigest())
"""


def test_corrupted_images_do_not_depend_on_the_cpus_blas_kernels():
    """The same bytes whichever OpenBLAS kernels the CPU selects (a GPU machine and a laptop
    must agree, or results computed on one do not match the evaluation sets of the other).
    On a CPU whose default kernels are not the forced ones this compares two kernel sets."""
    import os
    import subprocess
    import sys
    out = {}
    for core in ("", "Haswell", "Prescott"):
        env = {**os.environ, "OPENBLAS_CORETYPE": core} if core else dict(os.environ)
        r = subprocess.run([sys.executable, "-c", _BYTES_UNDER_BLAS_KERNEL], env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        out[core or "default"] = r.stdout.strip()
    assert len(set(out.values())) == 1, out


def test_a_file_of_an_older_generator_is_generated_again(tmp_path):
    from softlib.studies.peterson.common import load_corruption_sets
    root = fixtures.write_fixture_root(tmp_path, n_train=40, n_test=50, n_small=10,
                                       cifar10_c=False)
    first = load_corruption_sets(10, ["elastic_transform"], [2], root=root)
    path = root / "cifar10_c" / "elastic_transform_2.npz"
    assert corruptions.is_current(path)
    with np.load(path) as z:  # as the previous generator wrote it: no version, other bytes
        old = {k: z[k] for k in z.files if k != "version"}
    old["images"] = 255 - old["images"]
    np.savez(path, **old)
    assert not corruptions.is_current(path)
    again = load_corruption_sets(10, ["elastic_transform"], [2], root=root)
    assert corruptions.is_current(path)
    key = "c10c_elastic_transform_2"
    assert np.array_equal(again.images[key], first.images[key])
