"""DUQ on a ResNet-20 trunk (van Amersfoort et al. 2020), Laing (2024)'s DUQ variant.

The trunk's pooled features h [B, F] are mapped per class by weight matrices W [K, C, F] to
embeddings z [B, K, C]; the output is an RBF kernel to per-class centroids,
``exp(-mean_k (z - e_c)^2 / (2 l^2))`` in (0, 1] (l = 0.1). Centroids ``e = m / n`` are
exponential moving averages (momentum 0.999) updated after each optimiser step, with the
(soft) targets as class memberships. The loss is binary cross-entropy of kernel vs targets
plus 0.1 x the two-sided gradient penalty ``(||d sum_c K_c / d x_normalised|| - 1)^2``.
The penalty is taken w.r.t. the normalised input, as in the original (where normalisation
happens outside the model): the gradient w.r.t. pixels is multiplied by the per-channel std.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import Normalize, init_weights
from .resnet import ResNetFeatures

#: Largest top-1 probability the author's DUQ evaluation can output with 10 classes:
#: softmax of (0.5, 0, ..., 0) = e^0.5 / (e^0.5 + 9).
AUTHOR_DUQ_MAX_CONFIDENCE = 0.15482809896025465


def author_eval_probs(log_kernel: torch.Tensor) -> torch.Tensor:
    """Class probabilities as Laing's code produces them for DUQ, from log kernel values [B, C].

    The author's ``DUQHead`` (eval mode) returns ``sigmoid(log(K_c / sum_k K_k))`` as its
    "logit", and the evaluation then applies a softmax. Since ``sigmoid(log q) = q / (1 + q)``
    lies in (0, 0.5], the softmax's top-1 probability lies in [1/C, e^0.5 / (e^0.5 + C - 1)]
    (0.1 to 0.1548 for 10 classes) whatever the kernel values: the argmax (accuracy) is kept,
    but every prediction looks nearly uniform, hence the paper's DUQ ECE of about 0.69.
    Reproduces the paper's number; not a sensible predictive distribution (use
    ``softmax(log_kernel)``, i.e. normalised kernel values, for that).
    """
    q = torch.softmax(log_kernel.float(), dim=-1)
    return torch.softmax(q / (1.0 + q), dim=-1)


#: How the centroid update embeds the batch: 'eval' (the original DUQ and Laing's code call
#: ``model.eval()`` first: BatchNorm uses its running statistics and does not update them) or
#: 'train' (the model's training mode, BatchNorm seeing the batch a second time: what softlib
#: did before 2026-11-27, kept so that those results stay reproducible).
CENTROID_UPDATES = ("eval", "train")


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is in a lower precision (autocast's bf16/fp16), else unchanged: the
    kernel is touchy (``exp(-d / 0.02)``), and a float64 model (the exactness checks) keeps
    float64 throughout instead of rounding its distances and centroids to float32."""
    return t.float() if t.is_floating_point() and t.element_size() < 4 else t


class DUQResNet(nn.Module):
    output_kind = "RBF kernel values in (0, 1]"
    requires_input_grad = True
    # forward() returns RBF kernel values, not logits: attacks take cross-entropy of inference()
    attack_with_inference = True

    def __init__(self, num_classes: int = 10, depth: int = 20, width: int = 16,
                 centroid_size: int = 1024, length_scale: float = 0.1, momentum: float = 0.999,
                 gradient_penalty: float = 0.1, centroid_update: str = "eval"):
        super().__init__()
        if centroid_update not in CENTROID_UPDATES:
            raise ValueError(f"resnet20_duq: centroid_update={centroid_update!r}, expected one of "
                             f"{CENTROID_UPDATES}")
        self.centroid_update = centroid_update
        if length_scale <= 0:
            raise ValueError(f"resnet20_duq: length_scale={length_scale} must be > 0")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"resnet20_duq: momentum={momentum} must be in [0, 1)")
        self.length_scale, self.momentum = float(length_scale), float(momentum)
        self.gradient_penalty = float(gradient_penalty)
        self.normalize = Normalize()
        self.features = init_weights(ResNetFeatures(depth, width))
        nf = self.features.num_features
        self.W = nn.Parameter(torch.empty(centroid_size, num_classes, nf))
        if not self.W.is_meta:  # shape-only builds skip (slow, meaningless) random init
            nn.init.kaiming_normal_(self.W, nonlinearity="relu")
        n0 = torch.full((num_classes,), 13.0)
        self.register_buffer("n", n0)  # EMA of class membership counts
        self.register_buffer("m", torch.randn(centroid_size, num_classes) * 0.05 * n0)  # EMA of sums

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class embeddings z [B, K, C]."""
        h = self.features(self.normalize(x))
        return torch.einsum("bf,kcf->bkc", h, self.W)

    def centroids(self) -> torch.Tensor:
        return self.m / self.n

    def log_kernel(self, z: torch.Tensor) -> torch.Tensor:
        z = _at_least_float32(z)  # distances in float32 even under autocast
        d2 = (z - self.centroids()).pow(2).mean(1)
        return -d2 / (2 * self.length_scale**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_kernel(self.embed(x)).exp()

    def inference(self, x: torch.Tensor) -> torch.Tensor:
        """Log kernel values [B, C] (their max is the certainty score)."""
        return self.log_kernel(self.embed(x))

    #: training_loss also takes K stacked models' [K, B, ...] tensors and returns their K losses
    #: (it reads only the shared constants gradient_penalty and normalize.std), so DUQ's seeds
    #: can train together (softlib.multimodel)
    training_loss_stacks = True

    def training_loss(self, x: torch.Tensor, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """BCE(kernel, targets) + gradient_penalty * two-sided gradient penalty; ``x`` [B, 3, H,
        W] gives a scalar, stacked ``x`` [K, B, 3, H, W] (model k's outputs depending only on
        x[k]) one loss per model, [K]."""
        if not x.requires_grad:
            raise ValueError(
                "resnet20_duq.training_loss: x must require grad before the forward pass "
                "(the model sets requires_input_grad = True; call x.requires_grad_() first)"
            )
        if output.shape != targets.shape:
            raise ValueError(f"resnet20_duq.training_loss: output {tuple(output.shape)} vs "
                             f"targets {tuple(targets.shape)}")
        if x.dim() not in (4, 5) or x.shape[:-3] != output.shape[:-1]:
            raise ValueError(f"resnet20_duq.training_loss: x {tuple(x.shape)} does not match "
                             f"output {tuple(output.shape)}")
        with torch.autocast(device_type=output.device.type, enabled=False):
            out = _at_least_float32(output)
            bce = F.binary_cross_entropy(out, targets.to(out.dtype), reduction="none")
            bce = bce.flatten(-2).mean(-1)  # per model: the mean over its batch and classes
        # each image's gradient: the outputs of other images (and other models) are constants
        # for it, except through BatchNorm's batch statistics, as in the original
        (grad,) = torch.autograd.grad(output.sum(), x, create_graph=True)
        grad = grad * self.normalize.std.to(grad.dtype)  # d/d(normalised input); [1, C, 1, 1]
        # broadcasts over a leading model dimension too
        penalty = (grad.flatten(-3).norm(2, dim=-1) - 1.0).pow(2).mean(-1)
        return bce + self.gradient_penalty * penalty

    @torch.no_grad()
    def after_optimizer_step(self, x: torch.Tensor, targets: torch.Tensor) -> None:
        """EMA update of the centroids with soft class memberships ``targets`` [B, C].

        The embeddings are recomputed in eval mode, as the original DUQ does
        (``centroid_update='eval'``), or in the current mode (``'train'``, see
        :data:`CENTROID_UPDATES`); the model's mode is restored afterwards.
        """
        was_training = self.training
        if self.centroid_update == "eval":
            self.eval()
        try:
            z = self.embed(x.detach()).to(self.m.dtype)
        finally:
            self.train(was_training)
        t = targets.detach().to(self.m.dtype)
        if t.shape != (z.shape[0], z.shape[2]):
            raise ValueError(f"resnet20_duq.after_optimizer_step: targets {tuple(t.shape)}, "
                             f"expected {(z.shape[0], z.shape[2])}")
        g = self.momentum
        self.n.mul_(g).add_((1 - g) * t.sum(0))
        self.m.mul_(g).add_((1 - g) * torch.einsum("bkc,bc->kc", z, t))
