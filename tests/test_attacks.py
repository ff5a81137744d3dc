"""Tests for softlib.attacks: FGSM/PGD against torchattacks, eps-ball, clipping, mode restore."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from softlib import attacks as A

torchattacks = pytest.importorskip("torchattacks")


class TinyCNN(nn.Module):
    """Small CNN with BatchNorm and Dropout (so train/eval mode changes its output)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        self.modes_seen = []
        with torch.no_grad():  # non-trivial running statistics
            self.bn.running_mean.uniform_(-0.1, 0.1)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        self.modes_seen.append(self.training)
        h = F.relu(self.bn(self.conv((x - 0.5) / 0.25)))
        h = F.adaptive_avg_pool2d(h, 4).flatten(1)
        return self.fc(self.drop(h))


def _data(b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, 8, 8, generator=g)
    x[:, :, 0, :] = 0.0  # pixels on the border of [0, 1] exercise the clipping
    x[:, :, -1, :] = 1.0
    y = torch.randint(0, 10, (b,), generator=g)
    return x, y


def test_fgsm_matches_torchattacks():
    model = TinyCNN()
    x, y = _data()
    ours = A.fgsm(model, x, y, eps=4 / 255)
    ref = torchattacks.FGSM(model, eps=4 / 255)(x, y)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert not torch.equal(ours, x)


def test_pgd_matches_torchattacks():
    model = TinyCNN(1)
    x, y = _data(seed=1)
    ours, hist = A.pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=5, random_start=False)
    ref = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=5, random_start=False)(x, y)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert hist.shape == (6,)
    model.eval()
    with torch.no_grad():
        assert hist[0] == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-5)
        assert hist[-1] == pytest.approx(F.cross_entropy(model(ours), y).item(), rel=1e-5)
    assert hist[-1] > hist[0]


def test_pgd_eps_ball_clipping_and_determinism():
    model = TinyCNN(2)
    x, y = _data(seed=2)
    eps = 0.03
    adv, hist = A.pgd(model, x, y, eps, 0.01, 4, random_start=True, generator=torch.Generator().manual_seed(3))
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert (adv[:, :, 0, :] >= 0).all() and (adv[:, :, -1, :] <= 1).all()
    assert len(hist) == 5
    adv2, hist2 = A.pgd(model, x, y, eps, 0.01, 4, random_start=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(adv, adv2) and np.array_equal(hist, hist2)
    adv3, _ = A.pgd(model, x, y, eps, 0.01, 4, random_start=True, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(adv, adv3)
    only = A.pgd(model, x, y, eps, 0.01, 4, random_start=False, return_history=False)
    assert isinstance(only, torch.Tensor)
    f = A.fgsm(model, x, y, eps)
    assert (f - x).abs().max() <= eps + 1e-6 and f.min() >= 0 and f.max() <= 1


def test_probability_targets_equal_one_hot_labels():
    model = TinyCNN(3)
    x, y = _data(seed=3)
    oh = F.one_hot(y, 10).float()
    torch.testing.assert_close(A.fgsm(model, x, oh, 0.02), A.fgsm(model, x, y, 0.02))
    a, ha = A.pgd(model, x, oh, 0.02, 0.005, 3, random_start=False)
    b, hb = A.pgd(model, x, y, 0.02, 0.005, 3, random_start=False)
    torch.testing.assert_close(a, b)
    np.testing.assert_allclose(ha, hb, rtol=1e-5)
    soft = torch.softmax(torch.randn(8, 10), 1)
    assert A.fgsm(model, x, soft, 0.02).shape == x.shape


def test_eval_mode_during_attack_and_restored():
    model = TinyCNN(4)
    model.train()
    x, y = _data()
    model.modes_seen.clear()
    A.fgsm(model, x, y, 0.01)
    A.pgd(model, x, y, 0.01, 0.005, 2)
    assert model.modes_seen and not any(model.modes_seen)
    assert model.training and model.bn.training and model.drop.training
    model.eval()
    model.drop.train()  # mixed modes are restored module by module
    A.fgsm(model, x, y, 0.01)
    assert not model.training and model.drop.training and not model.bn.training


def test_no_parameter_gradients_and_no_grad_context():
    model = TinyCNN(5)
    x, y = _data()
    A.fgsm(model, x, y, 0.01)
    A.pgd(model, x, y, 0.01, 0.005, 2)
    assert all(p.grad is None for p in model.parameters())
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    A.fgsm(model, x, y, 0.01)
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight))
    assert model.conv.weight.grad is None
    with torch.no_grad():
        adv = A.fgsm(model, x, y, 0.01)
    torch.testing.assert_close(adv, A.fgsm(model, x, y, 0.01))
    assert not adv.requires_grad


class KernelModel(TinyCNN):
    """forward returns kernel-like values; inference returns their log (like DUQ)."""

    attack_with_inference = True

    def forward(self, x):
        return torch.sigmoid(super().forward(x))

    def inference(self, x):
        return torch.log(self.forward(x))


def test_inference_flag_selects_attacked_output():
    model = KernelModel(6)
    x, y = _data()
    ours = A.fgsm(model, x, y, 0.02)
    model.eval()
    xg = x.clone().requires_grad_(True)
    F.cross_entropy(model.inference(xg), y).backward()
    torch.testing.assert_close(ours, (x + 0.02 * xg.grad.sign()).clamp(0, 1))
    fwd = A.fgsm(model, x, y, 0.02, use_inference=False)
    xg = x.clone().requires_grad_(True)
    F.cross_entropy(model(xg), y).backward()
    torch.testing.assert_close(fwd, (x + 0.02 * xg.grad.sign()).clamp(0, 1))
    with pytest.raises(ValueError, match="inference"):
        A.fgsm(TinyCNN(), x, y, 0.02, use_inference=True)


def test_evaluate_attack_uint8_and_float_agree_and_batching():
    model = TinyCNN(7)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=10)
    xf = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    p_u8 = A.evaluate_attack(model, imgs, y, 4 / 255, "fgsm", batch_size=3)
    p_f = A.evaluate_attack(model, xf, y, 4 / 255, "fgsm", batch_size=10)
    np.testing.assert_allclose(p_u8, p_f, atol=1e-6)
    assert p_u8.shape == (10, 10) and np.allclose(p_u8.sum(1), 1, atol=1e-5)
    model.eval()
    with torch.no_grad():
        ref = torch.softmax(model(A.fgsm(model, xf, torch.from_numpy(y), 4 / 255)), 1).numpy()
    np.testing.assert_allclose(p_f, ref, atol=1e-6)
    clean = A.evaluate_attack(model, imgs, y, 0.0, "none")
    with torch.no_grad():
        np.testing.assert_allclose(clean, torch.softmax(model(xf), 1).numpy(), atol=1e-6)
    probs, hist = A.evaluate_attack(model, imgs, y, 4 / 255, "pgd", batch_size=4, steps=3, return_history=True)
    assert probs.shape == (10, 10) and hist.shape == (4,)
    probs2 = A.evaluate_attack(model, imgs, y, 4 / 255, "pgd", batch_size=4, steps=3)
    np.testing.assert_array_equal(probs, probs2)  # seeded random start
    with pytest.raises(ValueError, match="kind"):
        A.evaluate_attack(model, imgs, y, 0.01, "cw")
    with pytest.raises(ValueError, match="NCHW"):
        A.evaluate_attack(model, xf.permute(0, 2, 3, 1).contiguous(), y, 0.01)


def test_attack_decrease_matches_manual():
    model = TinyCNN(8)
    g = torch.Generator().manual_seed(9)
    x = torch.rand(24, 3, 8, 8, generator=g)
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[::3] = (y[::3] + 1) % 10  # a third wrong, the rest correct
    d = A.attack_decrease(model, x, y.numpy(), eps=0.05, batch_size=5)
    correct = (pred == y).numpy()
    adv = torchattacks.FGSM(model, eps=0.05)(x[correct], y[correct])
    with torch.no_grad():
        still = (model(adv).argmax(1) == y[correct]).float().mean().item()
    assert d["acc_clean"] == pytest.approx(correct.mean())
    assert d["n_correct"] == int(correct.sum()) and d["n"] == 24
    assert d["acc_adv_on_correct"] == pytest.approx(still)
    assert d["decrease"] == pytest.approx(1 - still)
    assert d["decrease"] > 0
