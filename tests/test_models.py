"""Tests for softlib.models: parameter counts, builds and forwards, in-model normalisation,
channels_last, and the hooks of Laing (2024)'s uncertainty variants."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from softlib import models
from softlib.models import build, count_parameters, describe, list_models
from softlib.models.shake_shake import shake
from softlib.models.spectral import BoundedSpectralNorm, apply_spectral_norm
from softlib.models.sngp import orthogonal_random_features

torch.set_num_threads(2)

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)

# Small knob settings so that every name builds and runs quickly on a CPU.
SMALL = {
    "resnet": dict(depth=8, width=4),
    "resnet_20": dict(width=4),
    "resnet_basic_110": dict(depth=8, width=4),
    "preact_resnet": dict(depth=11, width=4),
    "resnet_preact_bottleneck_164": dict(depth=11, width=4),
    "wrn": dict(depth=10, widen=1),
    "wrn_28_10": dict(depth=10, widen=1),
    "vgg": dict(width=4, layers=(1, 1, 1, 1, 1)),
    "vgg_15_BN_64": dict(width=4),
    "resnext": dict(depth=11, cardinality=2, base_width=2, width=16),
    "resnext_29_8x64d": dict(depth=11, cardinality=2, base_width=2, width=16),
    "densenet": dict(depth=10, growth=4),
    "densenet_BC_100_12": dict(depth=10, growth=4),
    "pyramidnet": dict(depth=8, alpha=12, width=4),
    "pyramidnet_basic_110_270": dict(depth=8, alpha=12, width=4),
    "shake_shake": dict(depth=8, width=4),
    "shake_shake_26_2x64d_SSI": dict(depth=8, width=4),
    "shake_shake_26_2x64d_SSI_cutout16": dict(depth=8, width=4),
    "resnet20_dropout": dict(depth=8, width=4, samples=3),
    "resnet20_sngp": dict(depth=8, width=4, num_random_features=32),
    "resnet20_duq": dict(depth=8, width=4, centroid_size=8),
}
STOCHASTIC_IN_EVAL = {"resnet20_dropout"}


def small(name: str, num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build(name, num_classes=num_classes, **SMALL[name])


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_small_settings_cover_every_name():
    assert set(SMALL) == set(list_models())


# ----------------------------------------------------------------------------- parameter counts
def _basic_resnet_params(depth: int, width: int, classes: int) -> int:
    """Independent count of a basic ResNet with 1x1-conv+BN projection shortcuts."""
    n = (depth - 2) // 6
    total = 3 * 9 * width + 2 * width  # stem conv + BN
    cin = width
    for stage in range(3):
        c = width * 2**stage
        for i in range(n):
            total += 9 * cin * c + 2 * c + 9 * c * c + 2 * c
            if cin != c:
                total += cin * c + 2 * c
            cin = c
    return total + cin * classes + classes


def test_resnet20_matches_laing_count():
    m = build("resnet_20")
    assert abs(count_parameters(m) - 272_474) <= 0.01 * 272_474
    for depth in (20, 32, 110):
        assert count_parameters(build("resnet", depth=depth)) == _basic_resnet_params(depth, 16, 10)
    assert count_parameters(build("resnet_20", num_classes=100)) == _basic_resnet_params(20, 16, 100)


@pytest.mark.parametrize(
    "name,expected,tol",
    [
        ("resnet_basic_110", 1.73e6, 0.02),
        ("resnet_preact_bottleneck_164", 1.70e6, 0.02),
        ("wrn_28_10", 36.5e6, 0.01),
        ("vgg_15_BN_64", 14.7e6, 0.01),
        ("resnext_29_8x64d", 34.4e6, 0.01),
        ("densenet_BC_100_12", 0.77e6, 0.02),
        ("pyramidnet_basic_110_270", 28.3e6, 0.02),
        ("shake_shake_26_2x64d_SSI", 11.7e6, 0.01),
    ],
)
def test_full_size_parameter_counts(name, expected, tol):
    with torch.device("meta"):  # shapes only: no memory, no random init
        m = build(name)
    assert abs(count_parameters(m) - expected) <= tol * expected, count_parameters(m)


def test_uncertainty_variant_counts_near_laing():
    assert count_parameters(build("resnet20_dropout")) == 272_474
    torch.manual_seed(0)
    sngp = build("resnet20_sngp")
    fixed = sngp.gp.rff_weight.numel() + sngp.gp.rff_bias.numel()
    assert abs(count_parameters(sngp) + fixed - 349_284) <= 0.01 * 349_284
    assert "fixed random-feature" in describe(sngp)
    assert abs(count_parameters(build("resnet20_duq")) - 927_834) <= 0.01 * 927_834


# ----------------------------------------------------------------------------- build / forward
@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_name_builds_and_forwards(name):
    m = small(name, num_classes=7)
    x = images()
    m.train()
    out = m(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    m.eval()
    with torch.no_grad():
        out = models.inference(m, x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert m.arch_name == name and m.knobs
    text = describe(m)
    assert name in text and f"{count_parameters(m):,}" in text and "[0, 1]" in text


def test_build_errors_are_clear():
    with pytest.raises(KeyError, match="unknown model 'resnet_21'"):
        build("resnet_21")
    with pytest.raises(TypeError, match="unknown knob.*'widen'"):
        build("resnet", widen=2)
    with pytest.raises(ValueError, match="depth=21"):
        build("resnet", depth=21)
    with pytest.raises(ValueError, match="num_classes"):
        build("resnet_20", num_classes=0)
    with pytest.raises(TypeError, match="uint8"):
        small("resnet")(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="channels"):
        small("resnet")(torch.zeros(1, 1, 32, 32))


def test_preset_knobs_can_be_overridden():
    m = build("wrn_28_10", depth=10, widen=2)
    assert m.knobs["depth"] == 10 and m.knobs["widen"] == 2
    assert m.features.num_features == 128
    assert models.knobs_of("resnet_20")["depth"] == 20


def test_shake_shake_recommends_cutout():
    assert small("shake_shake_26_2x64d_SSI").recommended_augment["cutout"] == 16
    assert "cutout" not in small("resnet").recommended_augment


def test_shake_mixes_forward_and_backward_independently():
    torch.manual_seed(0)
    a = torch.randn(64, 3, 2, 2, requires_grad=True)
    b = torch.randn(64, 3, 2, 2, requires_grad=True)
    out = shake(a, b, training=True)
    out.sum().backward()
    # Per image: out = alpha a + (1 - alpha) b, and the gradients are beta and 1 - beta.
    alpha = ((out - b) / (a - b)).detach().flatten(1)
    assert torch.allclose(alpha, alpha[:, :1].expand_as(alpha), atol=1e-4)
    beta = a.grad.flatten(1)
    assert torch.allclose(a.grad + b.grad, torch.ones_like(a.grad))
    assert torch.allclose(beta, beta[:, :1].expand_as(beta))
    assert not torch.allclose(alpha[:, 0], beta[:, 0])  # forward and backward weights differ
    assert torch.equal(shake(a, b, training=False), 0.5 * (a + b))


# ----------------------------------------------------------------------------- normalisation, layout
@pytest.mark.parametrize("name", ["resnet", "wrn", "vgg", "densenet", "pyramidnet", "resnext"])
def test_normalisation_is_inside_the_model(name):
    m = small(name).eval()
    x = images()
    with torch.no_grad():
        direct = m(x)
        manual = m.head(m.features((x - MEAN) / STD))
        skipped = m.head(m.features(x))
    assert torch.allclose(direct, manual, atol=1e-5)
    assert not torch.allclose(direct, skipped, atol=1e-3)


@pytest.mark.parametrize("name", sorted(set(SMALL) - STOCHASTIC_IN_EVAL))
def test_channels_last_matches_contiguous(name):
    m = small(name).eval()
    x = images(4)
    with torch.no_grad():
        ref = models.inference(m, x)
        m_cl = m.to(memory_format=torch.channels_last)
        out = models.inference(m_cl, x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-4, rtol=1e-4)


def test_plain_models_work_with_torch_func_vmap():
    from torch.func import functional_call, stack_module_state

    ms = [small("resnet", seed=s) for s in range(3)]
    for m in ms:
        m.train()
    params, buffers = stack_module_state(ms)
    base = small("resnet").to("meta")
    x = images(4)

    def call(p, b, xx):
        return functional_call(base, (p, b), (xx,))

    out = torch.vmap(call, in_dims=(0, 0, None))(params, buffers, x)
    assert out.shape == (3, 4, 10)
    for i, m in enumerate(ms):
        assert torch.allclose(out[i], m(x), atol=1e-5)


# ----------------------------------------------------------------------------- MC dropout
@pytest.mark.parametrize("placement", ["relu", "head", "blocks"])
def test_mc_dropout_inference_is_log_mean_softmax(placement):
    m = build("resnet20_dropout", depth=8, width=4, p=0.3, samples=5, placement=placement).eval()
    x = images(3)
    with torch.no_grad():
        assert not torch.allclose(m(x), m(x))  # dropout stays active in eval mode
        torch.manual_seed(123)
        out = m.inference(x)
        torch.manual_seed(123)
        manual = torch.stack([m(x).softmax(-1) for _ in range(5)]).mean(0).log()
    assert torch.allclose(out, manual, atol=1e-5)
    assert torch.allclose(out.logsumexp(-1), torch.zeros(3), atol=1e-5)


def _relu_dropout_trace(m, x):
    """Modules of type ReLU / MCDropout in the order the forward pass calls them, with whether
    each dropout's input is the output of the ReLU called just before it."""
    from softlib.models.common import MCDropout
    calls, hooks = [], []

    def hook(mod, inp, out):
        calls.append((mod, inp[0], out))

    for mod in m.modules():
        if isinstance(mod, (nn.ReLU, MCDropout)):
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    return calls


@pytest.mark.parametrize("depth", [8, 20])
def test_mc_dropout_sits_after_every_relu(depth):
    """Laing's code: every ReLU is followed by dropout (19 of each in ResNet-20)."""
    from softlib.models.common import MCDropout
    m = build("resnet20_dropout", depth=depth, width=4, p=0.2).eval()
    assert m.knobs["placement"] == "relu" and m.knobs["p"] == 0.2
    relus = [x for x in m.modules() if isinstance(x, nn.ReLU)]
    drops = [x for x in m.modules() if isinstance(x, MCDropout)]
    assert len(relus) == len(drops) == 1 + 2 * 3 * ((depth - 2) // 6)
    assert all(d.p == 0.2 for d in drops)
    calls = _relu_dropout_trace(m, images(2))
    kinds = [type(c[0]) for c in calls]
    assert kinds == [nn.ReLU, MCDropout] * len(relus)  # each ReLU, then its dropout
    for (r, _, r_out), (d, d_in, _) in zip(calls[::2], calls[1::2]):
        assert d_in is r_out
    # no ReLU anywhere else: with p = 0 it computes exactly the plain ResNet
    plain = build("resnet", depth=depth, width=4).eval()
    nodrop = build("resnet20_dropout", depth=depth, width=4, p=0.0).eval()
    nodrop.load_state_dict(plain.state_dict())
    x = images(3)
    with torch.no_grad():
        assert torch.allclose(nodrop(x), plain(x), atol=1e-6)
    assert count_parameters(build("resnet20_dropout")) == count_parameters(build("resnet_20"))


def test_mc_dropout_relu_placement_active_at_inference_and_logit_average():
    m = build("resnet20_dropout", depth=8, width=4, p=0.3, samples=4, average="logits").eval()
    x = images(3)
    with torch.no_grad():
        assert not torch.allclose(m(x), m(x))          # dropout after the ReLUs in eval mode
        torch.manual_seed(7)
        out = m.inference(x)
        torch.manual_seed(7)
        manual = torch.stack([m(x) for _ in range(4)]).mean(0)
    assert torch.allclose(out, manual, atol=1e-6)     # the author's mean of sampled logits
    with pytest.raises(ValueError, match="average"):
        build("resnet20_dropout", average="median")
    with pytest.raises(ValueError, match="placement"):
        build("resnet20_dropout", placement="everywhere")


def test_mc_dropout_averaging_reduces_spread():
    torch.manual_seed(0)
    m = build("resnet20_dropout", depth=8, width=4, p=0.3, samples=25).eval()
    x = images(8)
    with torch.no_grad():
        singles = torch.stack([m(x).softmax(-1) for _ in range(10)])
        averaged = torch.stack([m.inference(x).exp() for _ in range(10)])
    assert not torch.allclose(averaged[0], averaged[1])  # still stochastic across calls
    assert averaged.std(0).mean() < 0.5 * singles.std(0).mean()


# ----------------------------------------------------------------------------- spectral norm, SNGP
def test_bounded_spectral_norm_against_torch():
    torch.manual_seed(0)
    big = nn.Linear(20, 30)
    with torch.no_grad():
        big.weight.mul_(10)
    ref = torch.nn.utils.parametrizations.spectral_norm(nn.Linear(20, 30), n_power_iterations=1)
    with torch.no_grad():
        ref.parametrizations.weight.original.copy_(big.weight)
    apply_spectral_norm(big, bound=3.0, n_power_iterations=1)
    for _ in range(30):  # power iterations converge over training forwards
        big(torch.zeros(1, 20)), ref(torch.zeros(1, 20))
    sigma = torch.linalg.matrix_norm(big.weight.detach(), ord=2)
    assert abs(sigma.item() - 3.0) < 1e-3
    assert torch.allclose(big.weight, 3.0 * ref.weight, atol=1e-4)
    # A weight already below the bound is left unchanged.
    small_lin = nn.Linear(20, 30)
    with torch.no_grad():
        small_lin.weight.mul_(0.01)
    w0 = small_lin.weight.detach().clone()
    apply_spectral_norm(small_lin, bound=3.0)
    assert torch.allclose(small_lin.weight, w0)


def test_spectral_norm_on_convs_bounds_reshaped_weight_and_trains():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3)
    with torch.no_grad():
        conv.weight.mul_(20)
    apply_spectral_norm(conv, bound=1.5)
    for _ in range(30):
        out = conv(torch.randn(2, 4, 5, 5))
    out.sum().backward()
    assert conv.parametrizations.weight.original.grad is not None
    mat = conv.weight.detach().reshape(8, -1)
    assert abs(torch.linalg.matrix_norm(mat, ord=2).item() - 1.5) < 1e-3
    with pytest.raises(ValueError, match="bound"):
        BoundedSpectralNorm(conv.weight, bound=0)


def test_orthogonal_random_features_blocks_are_orthogonal():
    torch.manual_seed(0)
    w = orthogonal_random_features(20, 8)
    assert w.shape == (20, 8)
    unit = w / w.norm(dim=1, keepdim=True)
    gram = unit[:8] @ unit[:8].t()
    assert torch.allclose(gram, torch.eye(8), atol=1e-5)


def test_sngp_precision_accumulates_and_resets():
    m = small("resnet20_sngp")
    gp = m.gp
    eye = torch.eye(gp.num_features)
    assert torch.equal(gp.precision, eye)  # ridge penalty 1
    x = images(6)
    seen = []
    hook = gp.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    m.train()
    m(x)
    hook.remove()
    phi = gp.random_features(seen[0])
    assert torch.allclose(gp.precision, eye + phi.t() @ phi, atol=1e-4)
    p1 = gp.precision.clone()
    m.eval()
    with torch.no_grad():
        m(x), m.inference(x)
    assert torch.equal(gp.precision, p1)  # eval passes do not accumulate
    m.on_epoch_start(1)
    assert torch.equal(gp.precision, eye)


def test_sngp_mean_field_logits():
    m = small("resnet20_sngp").train()
    for s in range(3):
        m(images(8, seed=s))
    m.eval()
    x = images(4, seed=9)
    with torch.no_grad():
        logits = m(x)
        mf = m.inference(x)
        phi = m.gp.random_features(m.features(m.normalize(x)))
        var = torch.diag(phi @ torch.linalg.inv(m.gp.precision) @ phi.t())
    assert torch.isfinite(mf).all()
    assert torch.allclose(mf, logits / torch.sqrt(1 + math.pi / 8 * var).unsqueeze(-1), atol=1e-4)
    assert (mf.abs() <= logits.abs() + 1e-6).all()
    # More training data shrinks the predictive variance at the same inputs.
    m.train()
    for s in range(5):
        m(images(16, seed=10 + s))
    assert (m.gp.variance(phi) <= var + 1e-6).all()


# ----------------------------------------------------------------------------- DUQ
def test_duq_forward_loss_and_centroid_update():
    m = small("resnet20_duq").train()
    assert m.requires_input_grad
    x = images(4).requires_grad_()
    targets = torch.tensor([[0.7, 0.3] + [0.0] * 8] * 2 + [[0.0] * 9 + [1.0]] * 2)
    k = m(x)
    assert k.shape == (4, 10) and (k > 0).all() and (k <= 1).all()
    loss = m.training_loss(x, k, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    bce = nn.functional.binary_cross_entropy(k, targets)
    assert loss.item() > bce.item()  # the gradient penalty is added
    loss.backward()
    assert m.W.grad is not None and m.W.grad.abs().sum() > 0
    assert m.features.stem[0].weight.grad.abs().sum() > 0

    m.eval()
    with torch.no_grad():
        z = m.embed(x.detach())
        assert torch.allclose(m.inference(x), m(x).log(), atol=1e-4)
    n0, m0, c0 = m.n.clone(), m.m.clone(), m.centroids().clone()
    m.after_optimizer_step(x, targets)
    assert torch.allclose(m.n, 0.999 * n0 + 0.001 * targets.sum(0))
    assert torch.allclose(m.m, 0.999 * m0 + 0.001 * torch.einsum("bkc,bc->kc", z, targets), atol=1e-6)
    assert not torch.allclose(m.centroids(), c0)


def test_duq_requires_input_grad_and_checks_shapes():
    m = small("resnet20_duq").train()
    x = images(2)
    k = m(x)
    with pytest.raises(ValueError, match="requires_grad"):
        m.training_loss(x, k, torch.full((2, 10), 0.1))
    with pytest.raises(ValueError, match="targets"):
        m.after_optimizer_step(x, torch.full((2, 5), 0.2))


def test_inference_helper_dispatches():
    plain = small("resnet").eval()
    duq = small("resnet20_duq").eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(models.inference(plain, x), plain(x))
        assert torch.allclose(models.inference(duq, x), duq.inference(x))


def test_duq_author_eval_probs_cap_top1_confidence():
    """Laing's code: sigmoid(log normalised kernel) then softmax caps top-1 at e^.5/(e^.5+9)."""
    from softlib.models.duq import AUTHOR_DUQ_MAX_CONFIDENCE, author_eval_probs
    assert AUTHOR_DUQ_MAX_CONFIDENCE == pytest.approx(math.exp(0.5) / (math.exp(0.5) + 9))
    assert AUTHOR_DUQ_MAX_CONFIDENCE == pytest.approx(0.1548, abs=1e-4)
    z = torch.full((1, 10), -1e4)
    z[0, 3] = 0.0  # one class has kernel 1, the others ~0: the most confident case
    p = author_eval_probs(z)
    assert p[0].argmax() == 3 and float(p.max()) == pytest.approx(AUTHOR_DUQ_MAX_CONFIDENCE, abs=1e-6)
    torch.manual_seed(0)
    z = torch.randn(500, 10) * 30 - 20   # log kernel values
    p = author_eval_probs(z)
    assert torch.equal(p.argmax(1), z.argmax(1))       # accuracy unchanged
    assert p.max(1).values.max() <= AUTHOR_DUQ_MAX_CONFIDENCE + 1e-6
    assert p.max(1).values.min() >= 0.1 - 1e-6
    assert torch.allclose(p.sum(1), torch.ones(500))
    # a model 82% accurate with every confidence in [0.1, 0.155] has ECE around 0.82 - 0.15
    conf = p.max(1).values
    correct = torch.rand(500, generator=torch.Generator().manual_seed(1)) < 0.82
    ece_one_bin = abs(correct.float().mean() - conf.mean())
    assert 0.62 < float(ece_one_bin) < 0.73


def test_duq_keeps_float64_and_lifts_only_lower_precisions_to_float32():
    """A float64 DUQ (the exactness checks of stacked training) keeps float64 in its kernel,
    loss and centroid update: rounding to float32 there set stacked and alone runs 3e-3 apart.
    Under bf16 autocast the kernel and the loss still run in float32, as before."""
    torch.manual_seed(0)
    m = small("resnet20_duq").double().train()
    x = images(4).double().requires_grad_()
    targets = torch.full((4, 10), 0.1, dtype=torch.float64)
    k = m(x)
    assert k.dtype == torch.float64 and m.inference(x).dtype == torch.float64
    assert m.training_loss(x, k, targets).dtype == torch.float64
    m.after_optimizer_step(x, targets)
    assert m.m.dtype == torch.float64
    m0 = m.m.clone()
    m.after_optimizer_step(x, targets)  # a second update in float64: exact to float64's rounding
    z = m.eval().embed(x.detach()).detach()
    m.train()
    expect = 0.999 * m0 + 0.001 * torch.einsum("bkc,bc->kc", z, targets)
    assert torch.allclose(m.m, expect, rtol=0, atol=1e-12)
    m32 = small("resnet20_duq").train()
    x32 = images(4).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        k32 = m32(x32)
        assert k32.dtype == torch.float32 and m32.inference(x32).dtype == torch.float32
        assert m32.training_loss(x32, k32, targets.float()).dtype == torch.float32


def test_duq_centroid_update_embeds_in_eval_mode_as_the_original():
    """The original DUQ (and Laing's code) call model.eval() before updating the centroids:
    BatchNorm normalises with its running statistics and does not update them; the mode is
    restored. 'train' keeps the earlier behaviour (a second BatchNorm update per step)."""
    x = images(4)
    targets = torch.full((4, 10), 0.1)
    for mode, bn_moves in (("eval", False), ("train", True)):
        torch.manual_seed(0)
        m = build("resnet20_duq", **SMALL["resnet20_duq"], centroid_update=mode).train()
        bn = next(b for b in m.modules() if isinstance(b, nn.BatchNorm2d))
        stats, m0 = bn.running_mean.clone(), m.m.clone()
        with torch.no_grad():
            z_eval = m.eval().embed(x).float()
        m.train()
        m.after_optimizer_step(x, targets)
        assert m.training and all(c.training for c in m.modules())
        assert (not torch.equal(bn.running_mean, stats)) == bn_moves
        if mode == "eval":
            expect = 0.999 * m0 + 0.001 * torch.einsum("bkc,bc->kc", z_eval, targets)
            assert torch.allclose(m.m, expect, atol=1e-6)
    with pytest.raises(ValueError, match="centroid_update"):
        build("resnet20_duq", **SMALL["resnet20_duq"], centroid_update="sometimes")
