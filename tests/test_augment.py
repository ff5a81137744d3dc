"""Tests for softlib.augment: shapes, dtypes, determinism, and agreement with per-image references."""
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode, RandomResizedCrop

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
                              saturation=0, hue=0, degrees=0, scale=(1, 1), ratio=(1, 1))
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


# --------------------------------------------------------------------------- Laing's pipeline
def test_laing_params_are_the_authors():
    """sam-laing/soft_cifar data/read_loader.py: ColorJitter(0.15, 0.15, 0.2, 0.15),
    RandomHorizontalFlip, RandomRotation(10), RandomResizedCrop(32, (0.8, 1), (0.8, 1.2))."""
    assert augment.LAING_PARAMS == {"brightness": 0.15, "contrast": 0.15, "saturation": 0.2,
                                    "hue": 0.15, "degrees": 10.0, "scale": (0.8, 1.0),
                                    "ratio": (0.8, 1.2)}


def _reference(img, p, i, size):
    """torchvision's functional ops, one image, with the drawn parameters of image i."""
    ops = [lambda r: TF.adjust_brightness(r, float(p["brightness"][i])),
           lambda r: TF.adjust_contrast(r, float(p["contrast"][i])),
           lambda r: TF.adjust_saturation(r, float(p["saturation"][i])),
           lambda r: TF.adjust_hue(r, float(p["hue"][i]))]
    for k in p["order"][i].tolist():
        img = ops[k](img)
    if p["flip"][i]:
        img = TF.horizontal_flip(img)
    img = TF.rotate(img, float(p["angle"][i]), interpolation=InterpolationMode.NEAREST, fill=0)
    return TF.resized_crop(img, int(p["top"][i]), int(p["left"][i]), int(p["height"][i]),
                           int(p["width"][i]), list(size), interpolation=InterpolationMode.BILINEAR,
                           antialias=True)


@pytest.mark.parametrize("shape", [(48, 32, 32), (12, 24, 40)])
def test_laing_batched_equals_torchvision_per_image(shape):
    n, h, w = shape
    x = _batch(n, h=h, w=w, dtype=torch.float32, seed=2)
    p = augment.draw_laing_params(x, torch.Generator().manual_seed(5))
    y = augment.apply_laing_params(x, p)
    assert y.shape == x.shape
    for i in range(n):
        torch.testing.assert_close(y[i], _reference(x[i], p, i, (h, w)), atol=2e-5, rtol=0)
    # the draws do vary per image
    assert p["flip"].any() and (~p["flip"]).any()
    assert len(set(map(tuple, p["order"].tolist()))) > 5
    assert p["angle"].abs().max() <= 10 and p["hue"].abs().max() <= 0.15
    if h == w:  # (24 x 40 never fits the ratio range: every box is the fallback, 24 x 29)
        assert len(set(p["width"].tolist())) > 2
    else:
        assert set(p["width"].tolist()) == {29} and set(p["height"].tolist()) == {24}


def test_laing_augment_is_draw_then_apply():
    x = _batch(8, dtype=torch.float32)
    a = augment.laing_augment(x, torch.Generator().manual_seed(9))
    p = augment.draw_laing_params(x, torch.Generator().manual_seed(9))
    assert torch.equal(a, augment.apply_laing_params(x, p))


def test_hue_matches_torchvision_per_image():
    x = _batch(6, dtype=torch.float32)
    x[0] = 0.5  # grey image: hue undefined, unchanged
    hue = torch.tensor([0.1, -0.15, 0.5, -0.5, 0.0, 0.07])
    y = augment.adjust_hue(x, hue)
    for i in range(6):
        torch.testing.assert_close(y[i], TF.adjust_hue(x[i], float(hue[i])), atol=1e-5, rtol=0)


@pytest.mark.parametrize("by_index", [True, False])
def test_jitter_in_a_per_image_order(monkeypatch, by_index):
    """Both code paths (CPU: hue on selected images; accelerators: hue on all, then select)."""
    monkeypatch.setattr(augment, "_hue_by_index", lambda x: by_index)
    x = _batch(24, dtype=torch.float32, seed=3)
    g = torch.Generator().manual_seed(0)
    b, c, s = (0.8 + 0.4 * torch.rand(24, generator=g) for _ in range(3))
    h = 0.3 * torch.rand(24, generator=g) - 0.15
    order = torch.stack([torch.randperm(4, generator=g) for _ in range(24)])
    y = augment.jitter_ordered(x, b, c, s, h, order)
    for i in range(24):
        ref = x[i]
        for k in order[i].tolist():
            ref = [lambda r: TF.adjust_brightness(r, float(b[i])),
                   lambda r: TF.adjust_contrast(r, float(c[i])),
                   lambda r: TF.adjust_saturation(r, float(s[i])),
                   lambda r: TF.adjust_hue(r, float(h[i]))][k](ref)
        torch.testing.assert_close(y[i], ref, atol=2e-5, rtol=0)
    # order matters: the same factors in a fixed order give a different result
    fixed = augment.jitter_ordered(x, b, c, s, h, torch.arange(4).expand(24, 4))
    assert not torch.allclose(fixed, y, atol=1e-4)


def test_color_jitter_ranges():
    x = _batch(4, dtype=torch.float32)
    p = augment._draw_jitter(4000, x, torch.Generator().manual_seed(0), 0.15, 0.15, 0.2, 0.15)
    for name, lo, hi in (("brightness", 0.85, 1.15), ("contrast", 0.85, 1.15),
                         ("saturation", 0.8, 1.2), ("hue", -0.15, 0.15)):
        v = p[name]
        assert v.min() >= lo and v.max() <= hi
        assert v.min() < lo + 0.01 and v.max() > hi - 0.01
    assert sorted(p["order"][0].tolist()) == [0, 1, 2, 3]
    firsts = torch.bincount(p["order"][:, 0], minlength=4).float() / 4000
    assert (firsts - 0.25).abs().max() < 0.04  # every step comes first about equally often


def test_crop_boxes_follow_torchvision_get_params():
    """The batched draw has the distribution of RandomResizedCrop.get_params (10 tries, integer
    sizes), compared on the joint histogram of (height, width) and on the offsets."""
    n = 20000
    x = torch.zeros(n, 3, 32, 32)
    top, left, ch, cw = augment._crop_boxes(n, 32, 32, (0.8, 1.0), (0.8, 1.2), x,
                                           torch.Generator().manual_seed(0))
    assert (ch >= 1).all() and (ch <= 32).all() and (cw <= 32).all()
    assert (top >= 0).all() and (top + ch <= 32).all() and (left + cw <= 32).all()
    torch.manual_seed(0)
    img = torch.zeros(3, 32, 32)
    ref = torch.tensor([RandomResizedCrop.get_params(img, [0.8, 1.0], [0.8, 1.2]) for _ in range(n)])

    def hist(hh, ww):
        return torch.bincount((hh * 33 + ww).long(), minlength=33 * 33).float() / len(hh)
    tv = 0.5 * (hist(ch, cw) - hist(ref[:, 2], ref[:, 3])).abs().sum()
    assert tv < 0.03, f"total variation {tv:.3f} between the crop-size distributions"
    assert abs(top.float().mean() - ref[:, 0].float().mean()) < 0.05
    assert abs(left.float().mean() - ref[:, 1].float().mean()) < 0.05


def test_crop_fallback_is_torchvisions_central_crop():
    x = torch.zeros(5, 3, 32, 32)
    # areas beyond the image never fit: torchvision falls back to the central crop
    top, left, ch, cw = augment._crop_boxes(5, 32, 32, (1.5, 2.0), (0.8, 1.2), x,
                                           torch.Generator().manual_seed(0))
    assert ch.tolist() == [32] * 5 and cw.tolist() == [32] * 5 and top.tolist() == [0] * 5
    top, left, ch, cw = augment._crop_boxes(2, 32, 32, (1.5, 2.0), (1.5, 2.0), x,
                                           torch.Generator().manual_seed(0))
    assert ch.tolist() == [21, 21] and cw.tolist() == [32, 32] and top.tolist() == [5, 5]
    with pytest.raises(ValueError, match="scale"):
        augment._crop_boxes(2, 32, 32, (0.0, 1.0), (0.8, 1.2), x, None)


@pytest.mark.parametrize("name", augment.AUGMENTATIONS)
def test_grouped_apply_equals_each_group_with_its_own_generator(name):
    """Several models' batches augmented at once: the same images as one model at a time."""
    x = _batch(3 * 12, dtype=torch.float32)
    seeds = (5, 6, 7)
    grouped = augment.apply_grouped(name, x, [torch.Generator().manual_seed(s) for s in seeds])
    alone = torch.cat([augment.apply(name, x[i * 12:(i + 1) * 12], torch.Generator().manual_seed(s))
                       for i, s in enumerate(seeds)])
    assert torch.equal(grouped, alone)
    with pytest.raises(ValueError, match="equal groups"):
        augment.apply_grouped(name, x[:35], [torch.Generator() for _ in range(3)])


def test_grouped_laing_takes_uint8_and_draws_each_group_from_its_own_generator():
    """Laing's groups share one transform: uint8 input is converted as laing_augment converts
    it, and a group's images depend on its own generator only."""
    x = _batch(2 * 10, h=16, w=16)
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    grouped = augment.apply_grouped("laing", x, gens(3, 4))
    alone = torch.cat([augment.laing_augment(x[:10], gens(3)[0]),
                       augment.laing_augment(x[10:], gens(4)[0])])
    assert grouped.dtype == torch.float32 and torch.equal(grouped, alone)
    other = augment.apply_grouped("laing", x, gens(3, 5))
    assert torch.equal(other[:10], grouped[:10]) and not torch.equal(other[10:], grouped[10:])
