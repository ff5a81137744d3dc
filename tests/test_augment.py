"""Tests for softlib.augment: shapes, dtypes, determinism, and agreement with per-image references."""
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from softlib import augment


def _batch(n=16, c=3, h=8, w=8, dtype=torch.uint8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.float() / 255


def _candidates(img, pad, mode):
    """All crops (and their flips) of one padded image, as a reference built with torchvision."""
    padded = TF.pad(img, [pad, pad, pad, pad], fill=0,
                    padding_mode="constant" if mode == "zeros" else "reflect")
    h, w = img.shape[-2:]
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            out += [(dy, dx, False, crop), (dy, dx, True, TF.horizontal_flip(crop))]
    return out


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_crop_flip_matches_a_manual_crop_per_image(dtype, mode):
    x = _batch(24, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    y = augment.random_crop_flip(x, pad=2, generator=g, padding_mode=mode)
    assert y.shape == x.shape and y.dtype == x.dtype
    seen_flip, offsets = set(), set()
    for i in range(x.shape[0]):
        matches = [(dy, dx, f) for dy, dx, f, c in _candidates(x[i], 2, mode) if torch.equal(c, y[i])]
        assert matches, f"image {i} is not a crop/flip of its padded source"
        seen_flip.update(m[2] for m in matches)
        offsets.update(m[:2] for m in matches)
    assert seen_flip == {True, False}
    assert len(offsets) > 3  # offsets do vary per image


def test_flip_only_when_pad_zero():
    x = _batch(32)
    y = augment.random_crop_flip(x, pad=0, generator=torch.Generator().manual_seed(0))
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(32)]
    kept = [torch.equal(y[i], x[i]) for i in range(32)]
    assert all(a or b for a, b in zip(flipped, kept))
    assert any(flipped) and any(kept)


def test_determinism_with_generator():
    x = _batch(8, dtype=torch.float32)
    for fn in (lambda g: augment.random_crop_flip(x, 4, g),
               lambda g: augment.cutout(x, 4, g),
               lambda g: augment.laing_augment(x, g)):
        a = fn(torch.Generator().manual_seed(3))
        b = fn(torch.Generator().manual_seed(3))
        c = fn(torch.Generator().manual_seed(4))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_cutout_zeroes_one_clipped_square():
    x = torch.ones(50, 1, 10, 10)
    y = augment.cutout(x, 4, torch.Generator().manual_seed(0))
    for i in range(50):
        zeros = (y[i, 0] == 0).nonzero()
        assert 1 <= len(zeros) <= 16
        r0, r1 = zeros[:, 0].min(), zeros[:, 0].max()
        c0, c1 = zeros[:, 1].min(), zeros[:, 1].max()
        assert len(zeros) == (r1 - r0 + 1) * (c1 - c0 + 1)  # a filled rectangle
    assert ((y == 0).sum(dim=(1, 2, 3)) == 16).any()


def test_jitter_matches_torchvision_per_image():
    x = _batch(4, dtype=torch.float32)
    b = torch.tensor([0.8, 1.0, 1.2, 0.9])
    c = torch.tensor([1.1, 0.8, 1.0, 1.2])
    s = torch.tensor([0.9, 1.2, 0.8, 1.0])
    y = augment.jitter_with(x, b, c, s)
    for i in range(4):
        ref = TF.adjust_brightness(x[i], float(b[i]))
        ref = TF.adjust_contrast(ref, float(c[i]))
        ref = TF.adjust_saturation(ref, float(s[i]))
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)


def test_laing_identity_parameters_give_image_or_its_flip():
    x = _batch(16, dtype=torch.float32)
    y = augment.laing_augment(x, torch.Generator().manual_seed(0), brightness=0, contrast=0,
                              saturation=0, degrees=0, scale=(1, 1), ratio=(1, 1))
    for i in range(16):
        ok = torch.allclose(y[i], x[i], atol=1e-5) or torch.allclose(y[i], x[i].flip(-1), atol=1e-5)
        assert ok


def test_laing_output_range_and_dtype():
    x = _batch(8)  # uint8 in
    y = augment.laing_augment(x, torch.Generator().manual_seed(0))
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y, x.float() / 255)


def test_apply_names_and_errors():
    x = _batch(4, dtype=torch.float32)
    for name in augment.AUGMENTATIONS:
        assert augment.apply(name, x, torch.Generator().manual_seed(0)).shape == x.shape
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.apply("bogus", x)
    with pytest.raises(ValueError, match="NCHW"):
        augment.random_crop_flip(x[0])
