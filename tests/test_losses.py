"""Tests for softlib.losses: soft CE against torch, validation, smoothing, mixup/CutMix, DUQ loss."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from softlib import losses as L


def _rand_targets(b, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, c, generator=g) * 2, dim=1)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_soft_ce_matches_torch_probability_targets(reduction):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(16, 10, generator=g, dtype=torch.float64)
    t = _rand_targets(16, 10).double()
    ours = L.soft_cross_entropy(z, t, reduction=reduction)
    ref = F.cross_entropy(z, t, reduction=reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_soft_ce_one_hot_equals_index_ce_and_gradients():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(8, 10, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = z1.detach().clone().requires_grad_(True)
    y = torch.randint(0, 10, (8,), generator=g)
    a = L.soft_cross_entropy(z1, L.one_hot(y, 10).double())
    b = F.cross_entropy(z2, y)
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    torch.testing.assert_close(z1.grad, z2.grad)
    # analytic gradient of mean soft CE: (softmax(z) - t) / B
    t = _rand_targets(8, 10).double()
    z3 = z1.detach().clone().requires_grad_(True)
    L.soft_cross_entropy(z3, t).backward()
    torch.testing.assert_close(z3.grad, (torch.softmax(z3.detach(), 1) - t) / 8)
    # integer labels are accepted directly
    torch.testing.assert_close(L.soft_cross_entropy(z1.detach(), y), F.cross_entropy(z1.detach(), y))


def test_soft_ce_shape_errors():
    with pytest.raises(ValueError, match="targets"):
        L.soft_cross_entropy(torch.zeros(4, 10), torch.zeros(4, 9))
    with pytest.raises(ValueError, match="reduction"):
        L.soft_cross_entropy(torch.zeros(4, 10), torch.full((4, 10), 0.1), reduction="avg")


def test_validate_targets_accepts_good_rows():
    t = _rand_targets(5, 10)
    assert L.validate_targets(t) is t
    assert L.validate_targets(t.numpy(), num_classes=10) is not None
    L.validate_targets(L.one_hot(np.array([0, 3, 9]), 10))


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (np.full((3,), 0.1), "2-D"),
        (np.full((2, 10), 0.1)[:, :9] / 0.9, "10 classes"),
        (np.array([[0.5, 0.5], [np.nan, 1.0]]), "row 1 contains NaN"),
        (np.array([[0.5, 0.5], [1.2, -0.2]]), "row 1 has a negative"),
        (np.array([[0.5, 0.5], [0.3, 0.3], [0.6, 0.5]]), r"row 1 sums to 0\.6"),
    ],
)
def test_validate_targets_errors(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        L.validate_targets(bad, num_classes=10 if "classes" in pattern else None)


def test_validate_targets_names_parameter_and_atol():
    t = np.array([[0.5, 0.5 + 1e-5]])
    with pytest.raises(ValueError, match="^human: row 0"):
        L.validate_targets(t, name="human")
    L.validate_targets(t, atol=1e-4)


def test_one_hot_and_errors():
    oh = L.one_hot(torch.tensor([1, 0, 2]), 3)
    assert oh.dtype == torch.float32
    assert oh.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert L.one_hot(np.array([2]), 3).tolist() == [[0, 0, 1]]
    with pytest.raises(ValueError, match="values in"):
        L.one_hot(np.array([3]), 3)
    with pytest.raises(ValueError, match="integer"):
        L.one_hot(np.array([0.5]), 3)


def test_smooth_labels():
    t = L.one_hot(torch.tensor([0, 1]), 4)
    s = L.smooth_labels(t, 0.2)
    torch.testing.assert_close(s[0], torch.tensor([0.85, 0.05, 0.05, 0.05]))
    torch.testing.assert_close(s.sum(1), torch.ones(2))
    torch.testing.assert_close(L.smooth_labels(t, 1.0), torch.full((2, 4), 0.25))
    with pytest.raises(ValueError, match="eps"):
        L.smooth_labels(t, 1.5)


def _batch(seed=0, b=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, 8, 8, generator=g)
    t = _rand_targets(b, 10, seed)
    return x, t


def test_mixup_is_convex_mix_and_deterministic():
    x, t = _batch()
    xm, tm, info = L.mixup(x, t, 0.4, torch.Generator().manual_seed(5), return_info=True)
    lam, perm = info["lam"], info["perm"]
    assert 0.0 <= lam <= 1.0
    assert sorted(perm.tolist()) == list(range(6))
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(tm, lam * t + (1 - lam) * t[perm])
    L.validate_targets(tm, atol=1e-5)
    xm2, tm2 = L.mixup(x, t, 0.4, torch.Generator().manual_seed(5))
    assert torch.equal(xm, xm2) and torch.equal(tm, tm2)
    xm3, _ = L.mixup(x, t, 0.4, torch.Generator().manual_seed(6))
    assert not torch.equal(xm, xm3)


def test_mixup_lambda_follows_beta():
    x, t = _batch(b=2)
    g = torch.Generator().manual_seed(0)
    lams = np.array([L.mixup(x, t, 0.2, g, return_info=True)[2]["lam"] for _ in range(400)])
    # Beta(0.2, 0.2) puts most mass near 0 and 1, mean 0.5
    assert abs(lams.mean() - 0.5) < 0.07
    assert ((lams < 0.1) | (lams > 0.9)).mean() > 0.5


def test_cutmix_box_and_area_corrected_lambda():
    x, t = _batch(seed=3)
    x_before = x.clone()
    seen_partial = False
    g = torch.Generator().manual_seed(11)
    for _ in range(30):
        xm, tm, info = L.cutmix(x, t, 1.0, g, return_info=True)
        y0, y1, x0, x1 = info["box"]
        perm, lam = info["perm"], info["lam"]
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert math.isclose(lam, 1 - inside.sum().item() / 64)
        torch.testing.assert_close(xm[:, :, inside], x[perm][:, :, inside])
        torch.testing.assert_close(xm[:, :, ~inside], x[:, :, ~inside])
        torch.testing.assert_close(tm, lam * t + (1 - lam) * t[perm])
        torch.testing.assert_close(tm.sum(1), torch.ones(6))
        seen_partial |= 0 < lam < 1
    assert seen_partial
    assert torch.equal(x, x_before)  # input not modified
    a = L.cutmix(x, t, 1.0, torch.Generator().manual_seed(4))
    b = L.cutmix(x, t, 1.0, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_mix_errors():
    x, t = _batch()
    with pytest.raises(ValueError, match="alpha"):
        L.mixup(x, t, 0.0)
    with pytest.raises(ValueError, match="targets"):
        L.cutmix(x, torch.zeros(6, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="kind"):
        L.maybe_mix(x, t, "mixcut", 1.0, 1.0)


def test_maybe_mix_probability():
    x, t = _batch()
    g = torch.Generator().manual_seed(0)
    assert L.maybe_mix(x, t, "mixup", 1.0, 0.0, g)[0] is x
    assert L.maybe_mix(x, t, None, 1.0, 1.0, g)[0] is x
    fired = sum(L.maybe_mix(x, t, "cutmix", 1.0, 0.3, g)[0] is not x for _ in range(400))
    assert 80 < fired < 160  # about 120 expected
    xa, ta = L.maybe_mix(x, t, "mixup", 0.5, 1.0, torch.Generator().manual_seed(9))
    xb, tb = L.maybe_mix(x, t, "mixup", 0.5, 1.0, torch.Generator().manual_seed(9))
    assert torch.equal(xa, xb) and not torch.equal(xa, x)


def test_mix_probability_from_entropy():
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    assert math.isclose(L.mix_probability_from_entropy(p), math.log(2) / 2)
    from scipy.stats import entropy
    q = _rand_targets(20, 10).numpy()
    expect = min(entropy(q, axis=1).mean(), 1.0)
    assert math.isclose(L.mix_probability_from_entropy(q), expect, rel_tol=1e-6)
    assert L.mix_probability_from_entropy(np.full((3, 10), 0.1)) == 1.0  # ln 10 > 1, clipped


def test_duq_loss_is_bce():
    g = torch.Generator().manual_seed(0)
    k = torch.rand(5, 10, generator=g, dtype=torch.float64).clamp(0.01, 0.99).requires_grad_(True)
    t = _rand_targets(5, 10).double()
    ours = L.duq_loss(k, t)
    ref = -(t * torch.log(k) + (1 - t) * torch.log(1 - k)).mean()
    torch.testing.assert_close(ours, ref)
    ours.backward()
    assert k.grad is not None and torch.isfinite(k.grad).all()
    per = L.duq_loss(k.detach(), t, reduction="none")
    torch.testing.assert_close(per.mean() / 10, ref.detach())
    y = torch.tensor([0, 1, 2, 3, 4])
    torch.testing.assert_close(L.duq_loss(k.detach(), y), L.duq_loss(k.detach(), F.one_hot(y, 10).double()))
