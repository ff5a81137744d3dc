"""Batched, on-device image augmentation (no per-image Python loops).

Every function takes an NCHW batch (uint8 in [0, 255] or float in [0, 1]) that already lives on
the training device, draws one set of random parameters **per image** from ``generator`` (a
``torch.Generator`` on the batch's device; ``None`` uses the global RNG) and transforms the
whole batch with a few tensor ops. The same generator state gives the same output.

* :func:`random_crop_flip` is the standard CIFAR augmentation (pad 4, random 32x32 crop,
  horizontal flip with probability 1/2), computed as two ``gather`` ops whose indices already
  contain the per-image offset, the padding (zero or reflect) and the flip: nothing is padded
  or copied per image.
* :func:`cutout` zeroes one ``size`` x ``size`` square per image (DeVries & Taylor 2017; the
  square is clipped at the border, as in their code).
* :func:`laing_augment` is Laing's (2024) pipeline ColorJitter -> RandomHorizontalFlip ->
  RandomRotation(10) -> RandomResizedCrop, in that order, with per-image parameters. The paper
  and its code do not fix the jitter strengths or crop scale in the text we have, so we use
  brightness = contrast = saturation = 0.2 (no hue), and RandomResizedCrop(32,
  scale=(0.8, 1.0), ratio=(3/4, 4/3)): torchvision's default scale (0.08, 1) is meant for
  ImageNet and is far too aggressive for 32x32 CIFAR images. Flip, rotation and resized crop
  are composed into ONE affine map per image and applied with a single bilinear
  ``grid_sample`` (zero fill outside), so the image is interpolated once rather than twice as in
  torchvision's sequential pipeline. Deviations from torchvision, on purpose: the three jitter
  factors are applied in a fixed order (brightness, contrast, saturation) rather than a random
  one, and a crop whose width or height would exceed the image is clipped to the image instead
  of being redrawn up to ten times.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["random_crop_flip", "cutout", "color_jitter", "laing_augment", "apply",
           "AUGMENTATIONS", "LAING_PARAMS"]

AUGMENTATIONS = ("none", "crop_flip", "crop_flip_cutout16", "laing")

LAING_PARAMS = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "degrees": 10.0,
                "scale": (0.8, 1.0), "ratio": (3 / 4, 4 / 3)}


def _check(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"softlib.augment: {name} must be an NCHW tensor, "
                         f"got {type(x).__name__} with shape {getattr(x, 'shape', None)}")


def _rand(n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=x.device)


def _source_index(n: int, size: int, pad: int, offsets: torch.Tensor, flip: torch.Tensor | None,
                  mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-image source indices [n, size] into the unpadded axis, and a validity mask (zeros)."""
    ar = torch.arange(size, device=offsets.device)
    pos = ar.unsqueeze(0).expand(n, size)
    if flip is not None:
        pos = torch.where(flip.unsqueeze(1), (size - 1) - pos, pos)
    src = pos + offsets.unsqueeze(1) - pad
    if mode == "reflect":
        src = src.abs()
        src = torch.where(src > size - 1, 2 * (size - 1) - src, src)
        return src, None
    valid = (src >= 0) & (src <= size - 1)
    return src.clamp(0, size - 1), valid


def random_crop_flip(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None,
                     flip: bool = True, padding_mode: str = "zeros") -> torch.Tensor:
    """Pad by ``pad``, crop back to the input size at a random offset, flip with p = 1/2.

    Same semantics as torchvision ``RandomCrop(H, padding=pad)`` + ``RandomHorizontalFlip()``
    per image (``padding_mode`` 'zeros' is torchvision's default 'constant' with fill 0;
    'reflect' mirrors without repeating the edge pixel). Works for uint8 and float batches.
    """
    _check(x)
    if padding_mode not in ("zeros", "reflect"):
        raise ValueError(f"softlib.augment.random_crop_flip: padding_mode must be 'zeros' or "
                         f"'reflect', got {padding_mode!r}")
    n, c, h, w = x.shape
    if padding_mode == "reflect" and (pad >= h or pad >= w):
        raise ValueError(f"softlib.augment.random_crop_flip: reflect padding {pad} needs pad < "
                         f"image size ({h}x{w})")
    if n == 0:
        return x.clone()
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    fl = (_rand(n, x, generator) < 0.5) if flip else None
    rows, rvalid = _source_index(n, h, pad, oy, None, padding_mode)
    cols, cvalid = _source_index(n, w, pad, ox, fl, padding_mode)
    # gather rows then columns: out[i, :, r, q] = x[i, :, rows[i, r], cols[i, q]]
    out = x.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w))
    out = out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))
    if padding_mode == "zeros":
        mask = (rvalid.view(n, 1, h, 1) & cvalid.view(n, 1, 1, w))
        out = out * mask.to(out.dtype)
    return out


def cutout(x: torch.Tensor, size: int = 16, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image, centred uniformly, clipped at borders."""
    _check(x)
    n, _, h, w = x.shape
    if size <= 0 or n == 0:
        return x.clone()
    cy = torch.randint(0, h, (n,), generator=generator, device=x.device)
    cx = torch.randint(0, w, (n,), generator=generator, device=x.device)
    y0, x0 = (cy - size // 2).view(n, 1, 1), (cx - size // 2).view(n, 1, 1)
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (yy >= y0) & (yy < y0 + size) & (xx >= x0) & (xx < x0 + size)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _uniform(n: int, lo: float, hi: float, x: torch.Tensor, g) -> torch.Tensor:
    return lo + (hi - lo) * _rand(n, x, g)


def _gray(x: torch.Tensor) -> torch.Tensor:
    # ITU-R 601-2 luma with torchvision's rounded weights (rgb_to_grayscale)
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def color_jitter(x: torch.Tensor, brightness: float = 0.2, contrast: float = 0.2,
                 saturation: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image brightness, contrast and saturation jitter of a float RGB batch in [0, 1].

    Factors are uniform in [1 - s, 1 + s]; formulas follow torchvision's adjust_* functions
    (contrast blends with the image's mean grey level, saturation with its grey image).
    """
    _check(x)
    if x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError("softlib.augment.color_jitter: expects a float RGB batch [N, 3, H, W], "
                         f"got dtype {x.dtype} with shape {tuple(x.shape)}")
    n = x.shape[0]
    ones = torch.ones(n, device=x.device, dtype=x.dtype)
    b = _uniform(n, max(0.0, 1 - brightness), 1 + brightness, x, generator) if brightness else ones
    c = _uniform(n, max(0.0, 1 - contrast), 1 + contrast, x, generator) if contrast else ones
    s = _uniform(n, max(0.0, 1 - saturation), 1 + saturation, x, generator) if saturation else ones
    return jitter_with(x, b, c, s)


def jitter_with(x: torch.Tensor, b: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation with given per-image factors [N] (torchvision formulas)."""
    n = x.shape[0]
    x = (x * b.view(n, 1, 1, 1)).clamp(0, 1)
    c = c.view(n, 1, 1, 1)
    m = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = (c * x + (1 - c) * m).clamp(0, 1)
    s = s.view(n, 1, 1, 1)
    return (s * x + (1 - s) * _gray(x)).clamp(0, 1)


def laing_augment(x: torch.Tensor, generator: torch.Generator | None = None,
                  brightness: float = LAING_PARAMS["brightness"],
                  contrast: float = LAING_PARAMS["contrast"],
                  saturation: float = LAING_PARAMS["saturation"],
                  degrees: float = LAING_PARAMS["degrees"],
                  scale: tuple[float, float] = LAING_PARAMS["scale"],
                  ratio: tuple[float, float] = LAING_PARAMS["ratio"]) -> torch.Tensor:
    """ColorJitter -> HorizontalFlip -> Rotation(degrees) -> ResizedCrop(scale, ratio), per image.

    Returns a float batch in [0, 1] (uint8 input is converted). See the module docstring for the
    parameter choices and the single-interpolation design.
    """
    _check(x)
    if not x.is_floating_point():
        x = x.float().div_(255)
    n, _, h, w = x.shape
    if n == 0:
        return x.clone()
    x = color_jitter(x, brightness, contrast, saturation, generator)
    g = generator
    flip = _rand(n, x, g) < 0.5
    angle = _uniform(n, -degrees, degrees, x, g) * (math.pi / 180)
    area = _uniform(n, scale[0], scale[1], x, g)
    logr = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), x, g)
    ar = torch.exp(logr)
    cw = torch.sqrt(area * ar).clamp(max=1.0)      # crop width / image width
    ch = torch.sqrt(area / ar).clamp(max=1.0)      # crop height / image height
    # crop centre in normalised coordinates [-1, 1] such that the crop lies inside the image
    cx = (1 - cw) * (2 * _rand(n, x, g) - 1)
    cy = (1 - ch) * (2 * _rand(n, x, g) - 1)
    # Output coords u -> crop coords p = c + diag(cw, ch) u  (in the rotated image)
    #                 -> rotated image samples the flipped image at R(-angle) p
    #                 -> flipped image samples the original at (sx * qx, qy), sx = -1 if flipped
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx = torch.where(flip, -1.0, 1.0).to(x.dtype)
    # R(-a) = [[cos, sin], [-sin, cos]]
    a11, a12 = cos * cw, sin * ch
    a21, a22 = -sin * cw, cos * ch
    t1 = cos * cx + sin * cy
    t2 = -sin * cx + cos * cy
    theta = torch.stack([torch.stack([sx * a11, sx * a12, sx * t1], 1),
                         torch.stack([a21, a22, t2], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply(name: str, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the named augmentation (one of :data:`AUGMENTATIONS`) to a float batch in [0, 1]."""
    if name == "none":
        return x
    if name == "crop_flip":
        return random_crop_flip(x, 4, generator)
    if name == "crop_flip_cutout16":
        return cutout(random_crop_flip(x, 4, generator), 16, generator)
    if name == "laing":
        return laing_augment(x, generator)
    raise ValueError(f"softlib.augment: unknown augmentation {name!r}; expected one of "
                     f"{', '.join(AUGMENTATIONS)}")
