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
* :func:`laing_augment` is the training augmentation of Laing (2024), as in the author's code
  (sam-laing/soft_cifar, ``data/read_loader.py``)::

      ColorJitter(brightness=0.15, contrast=0.15, saturation=0.2, hue=0.15)
      RandomHorizontalFlip()
      RandomRotation(10)                      # nearest interpolation, fill 0 (the defaults)
      RandomResizedCrop(32, scale=(0.8, 1.0), ratio=(0.8, 1.2))   # bilinear

  with torchvision's per-image randomness: the four jitter factors are uniform in
  ``[max(0, 1 - s), 1 + s]`` (hue in ``[-0.15, 0.15]``) and applied in a random order per image;
  the rotation angle is uniform in [-10, 10] degrees; the crop box is drawn as
  ``RandomResizedCrop.get_params`` does (integer width and height, up to ten tries, then the
  fallback crop). :func:`draw_laing_params` draws those parameters for the whole batch and
  :func:`apply_laing_params` applies them with batched tensor ops: the jitter with
  torchvision's formulas, flip + rotation as one nearest-neighbour ``grid_sample`` and the
  resized crop as one bilinear ``grid_sample`` whose coordinates reproduce ``resized_crop``
  (edge pixels clamped to the crop). Per image the result equals torchvision's functional ops
  with the same parameters on float tensors (tested). What differs from the author's PIL
  pipeline: no rounding to uint8 between the steps, and the model normalises with the CIFAR-10
  mean/std rather than the training split's.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["random_crop_flip", "cutout", "color_jitter", "jitter_with", "jitter_ordered",
           "adjust_hue", "draw_laing_params", "apply_laing_params", "laing_augment", "apply",
           "apply_grouped", "AUGMENTATIONS", "LAING_PARAMS"]

AUGMENTATIONS = ("none", "crop_flip", "crop_flip_cutout16", "laing")

#: Laing's (2024) augmentation, from the author's code (data/read_loader.py).
LAING_PARAMS = {"brightness": 0.15, "contrast": 0.15, "saturation": 0.2, "hue": 0.15,
                "degrees": 10.0, "scale": (0.8, 1.0), "ratio": (0.8, 1.2)}


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
    return _crop_flip_with(x, pad, *_draw_crop_flip(n, pad, x, generator, flip), padding_mode)


def _draw_crop_flip(n: int, pad: int, x: torch.Tensor, generator, flip: bool = True):
    """The random part of :func:`random_crop_flip`: offsets and flips of ``n`` images."""
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    fl = (_rand(n, x, generator) < 0.5) if flip else None
    return oy, ox, fl


def _crop_flip_with(x: torch.Tensor, pad: int, oy: torch.Tensor, ox: torch.Tensor,
                    fl: torch.Tensor | None, padding_mode: str = "zeros") -> torch.Tensor:
    """The deterministic part of :func:`random_crop_flip`, for drawn offsets and flips."""
    n, c, h, w = x.shape
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
    return _cutout_with(x, size, *_draw_cutout(n, h, w, x, generator))


def _draw_cutout(n: int, h: int, w: int, x: torch.Tensor, generator):
    """The random part of :func:`cutout`: the squares' centres."""
    cy = torch.randint(0, h, (n,), generator=generator, device=x.device)
    cx = torch.randint(0, w, (n,), generator=generator, device=x.device)
    return cy, cx


def _cutout_with(x: torch.Tensor, size: int, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    y0, x0 = (cy - size // 2).view(n, 1, 1), (cx - size // 2).view(n, 1, 1)
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (yy >= y0) & (yy < y0 + size) & (xx >= x0) & (xx < x0 + size)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _gray(x: torch.Tensor) -> torch.Tensor:
    # ITU-R 601-2 luma with torchvision's rounded weights (rgb_to_grayscale)
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _check_rgb_float(x: torch.Tensor, name: str) -> None:
    _check(x)
    if x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"softlib.augment.{name}: expects a float RGB batch [N, 3, H, W], "
                         f"got dtype {x.dtype} with shape {tuple(x.shape)}")


def _brightness(x, b):
    return (x * b.view(-1, 1, 1, 1)).clamp(0, 1)


def _contrast(x, c):
    c = c.view(-1, 1, 1, 1)
    m = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return (c * x + (1 - c) * m).clamp(0, 1)


def _saturation(x, s):
    s = s.view(-1, 1, 1, 1)
    return (s * x + (1 - s) * _gray(x)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Shift each image's hue by ``hue[i]`` (a fraction of the colour circle, in [-0.5, 0.5]).

    RGB -> HSV -> RGB with torchvision's formulas (``adjust_hue`` on float tensors), batched
    with one factor per image.
    """
    _check_rgb_float(x, "adjust_hue")
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    sat = cr / torch.where(eqc, ones, maxc)
    crd = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    neq_r, eq_g = maxc != r, maxc == g
    h = torch.where(~neq_r, bc - gc, torch.where(eq_g, 2.0 + rc - bc, 4.0 + gc - rc))
    # (h / 6 + 1) mod 1 and (h + hue) mod 1 for arguments in [-0.5, 2): exact conditional shifts
    h = h / 6.0 + 1.0
    h = torch.where(h >= 1.0, h - 1.0, h)
    h = h + hue.to(x.dtype).view(-1, 1, 1)
    h = torch.where(h < 0.0, h + 1.0, torch.where(h >= 1.0, h - 1.0, h))
    # HSV -> RGB: channel = v - v s clamp(min(k, 4 - k), 0, 1), k = (m + 6 h) mod 6, m = 5, 3, 1
    # (the same piecewise-linear map as torchvision's sector table, without gathers)
    k = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1) \
        + 6.0 * h.unsqueeze(1)                                   # in [1, 11)
    k = torch.where(k >= 6.0, k - 6.0, k)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    v = maxc.unsqueeze(1)
    return (v - v * sat.unsqueeze(1) * ramp).clamp(0.0, 1.0)


def color_jitter(x: torch.Tensor, brightness: float = LAING_PARAMS["brightness"],
                 contrast: float = LAING_PARAMS["contrast"],
                 saturation: float = LAING_PARAMS["saturation"], hue: float = LAING_PARAMS["hue"],
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """torchvision's ``ColorJitter`` per image, batched, on a float RGB batch in [0, 1].

    Factors are uniform in ``[max(0, 1 - s), 1 + s]`` (hue: ``[-hue, hue]``), a strength of 0
    leaves that step out, and the steps run in a random order per image (as ``ColorJitter``
    draws ``randperm(4)`` per call).
    """
    _check_rgb_float(x, "color_jitter")
    p = _draw_jitter(x.shape[0], x, generator, brightness, contrast, saturation, hue)
    return jitter_ordered(x, p["brightness"], p["contrast"], p["saturation"], p["hue"], p["order"],
                          p["enabled"])


def _jitter_uniforms(n, x, g, brightness, contrast, saturation, hue) -> dict:
    """The jitter's random draws (uniform [0, 1)), in the order torchvision makes them: one per
    image for each non-zero strength, then four per image for the order."""
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"softlib.augment: hue={hue} must be in [0, 0.5]")
    out = {}
    for name, s in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if s < 0:
            raise ValueError(f"softlib.augment: {name}={s} must be >= 0")
        out[name] = _rand(n, x, g) if s else None
    out["hue"] = _rand(n, x, g) if hue else None
    out["order"] = _rand(4 * n, x, g).view(n, 4)
    return out


def _jitter_from(u: dict, brightness, contrast, saturation, hue) -> dict:
    """The jitter's factors and per-image order from its draws (:func:`_jitter_uniforms`)."""
    n, dev = u["order"].shape[0], u["order"].device
    out = {}
    for name, s in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        lo, hi = max(0.0, 1 - s), 1 + s
        out[name] = lo + (hi - lo) * u[name] if s else torch.ones(n, device=dev)
    out["hue"] = -hue + 2 * hue * u["hue"] if hue else torch.zeros(n, device=dev)
    out["order"] = torch.argsort(u["order"], dim=1)  # a random permutation each
    out["enabled"] = (bool(brightness), bool(contrast), bool(saturation), bool(hue))
    return out


def _draw_jitter(n, x, g, brightness, contrast, saturation, hue) -> dict:
    return _jitter_from(_jitter_uniforms(n, x, g, brightness, contrast, saturation, hue),
                        brightness, contrast, saturation, hue)


def jitter_with(x: torch.Tensor, b: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation (this order) with per-image factors [N] (torchvision formulas)."""
    return _saturation(_contrast(_brightness(x, b), c), s)


def _hue_by_index(x: torch.Tensor) -> bool:
    """Whether to apply hue to the selected images only (CPU) rather than to the whole batch
    followed by a select (accelerators: no host synchronisation, the extra work is free)."""
    return x.device.type == "cpu"


def jitter_ordered(x: torch.Tensor, b: torch.Tensor, c: torch.Tensor, s: torch.Tensor,
                   h: torch.Tensor, order: torch.Tensor,
                   enabled: tuple[bool, bool, bool, bool] = (True, True, True, True)) -> torch.Tensor:
    """Brightness (0), contrast (1), saturation (2) and hue (3) in a per-image order.

    ``order`` [N, 4] holds a permutation of 0..3 per image. At step k every image runs every
    adjustment, with the identity factor (1, or 0 for hue) unless that adjustment is its k-th:
    the identity factor leaves the image bit-for-bit unchanged (hue is applied by selection),
    so the batch needs no sorting, indexing or host synchronisation. ``enabled`` skips
    adjustments whose strength is 0 (known from the settings, not read back from the device).
    """
    _check_rgb_float(x, "jitter_ordered")
    n = x.shape[0]
    if order.shape != (n, 4):
        raise ValueError(f"softlib.augment.jitter_ordered: order must be [N, 4], got {tuple(order.shape)}")
    one = torch.ones((), device=x.device, dtype=x.dtype)
    b, c, s, h = (t.to(device=x.device, dtype=x.dtype) for t in (b, c, s, h))
    do_b, do_c, do_s, do_h = (bool(e) for e in enabled)
    for k in range(4):
        step = order[:, k]
        if do_b:
            x = _brightness(x, torch.where(step == 0, b, one))
        if do_c:
            x = _contrast(x, torch.where(step == 1, c, one))
        if do_s:
            x = _saturation(x, torch.where(step == 2, s, one))
        if do_h:
            sel = step == 3
            if _hue_by_index(x):  # on the CPU: convert only the selected images
                idx = sel.nonzero().squeeze(1)
                if idx.numel():
                    x = x.index_copy(0, idx, adjust_hue(x.index_select(0, idx), h.index_select(0, idx)))
            else:
                x = torch.where(sel.view(n, 1, 1, 1), adjust_hue(x, h), x)
    return x


def _check_crop(scale, ratio) -> None:
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"softlib.augment: need 0 < scale[0] <= scale[1] and 0 < ratio[0] <= "
                         f"ratio[1], got scale={scale}, ratio={ratio}")


_CROP_TRIES = 10  # RandomResizedCrop.get_params' tries before its fallback


def _crop_uniforms(n: int, x: torch.Tensor, g) -> tuple[torch.Tensor, torch.Tensor]:
    """The crop's random draws (float64, as Python's ``random`` draws them): [N, tries, 2]
    for the tries' area and aspect, [N, 2] for the box's position."""
    f64 = torch.float64
    return (torch.rand(n, _CROP_TRIES, 2, generator=g, device=x.device, dtype=f64),
            torch.rand(n, 2, generator=g, device=x.device, dtype=f64))


def _crop_boxes(n: int, h: int, w: int, scale, ratio, x: torch.Tensor, g) -> tuple[torch.Tensor, ...]:
    """``RandomResizedCrop.get_params`` per image: (top, left, height, width) as int64 [N]."""
    _check_crop(scale, ratio)
    return _boxes_from(*_crop_uniforms(n, x, g), h, w, scale, ratio)


def _boxes_from(u: torch.Tensor, v: torch.Tensor, h: int, w: int, scale,
                ratio) -> tuple[torch.Tensor, ...]:
    """The crop boxes of :func:`_crop_boxes` from its draws (:func:`_crop_uniforms`)."""
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    lr0, lr1 = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lr0 + (lr1 - lr0) * u[..., 1])
    cw = torch.round(torch.sqrt(area * aspect))        # half to even, as Python's round
    ch = torch.round(torch.sqrt(area / aspect))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.to(torch.float32).argmax(dim=1, keepdim=True)   # first successful try
    found = ok.any(dim=1)
    cw = cw.gather(1, first).squeeze(1)
    ch = ch.gather(1, first).squeeze(1)
    # torchvision's fallback: the largest central crop with the ratio clamped to the range
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(h * ratio[1])), h
    else:
        fw, fh = w, h
    cw = torch.where(found, cw, torch.full_like(cw, fw)).to(torch.int64)
    ch = torch.where(found, ch, torch.full_like(ch, fh)).to(torch.int64)
    top = torch.minimum(torch.floor(v[:, 0] * (h - ch + 1)).to(torch.int64), h - ch)
    left = torch.minimum(torch.floor(v[:, 1] * (w - cw + 1)).to(torch.int64), w - cw)
    top = torch.where(found, top, (h - ch) // 2)
    left = torch.where(found, left, (w - cw) // 2)
    return top, left, ch, cw


def draw_laing_params(x: torch.Tensor, generator: torch.Generator | None = None,
                      brightness: float = LAING_PARAMS["brightness"],
                      contrast: float = LAING_PARAMS["contrast"],
                      saturation: float = LAING_PARAMS["saturation"],
                      hue: float = LAING_PARAMS["hue"],
                      degrees: float = LAING_PARAMS["degrees"],
                      scale: tuple[float, float] = LAING_PARAMS["scale"],
                      ratio: tuple[float, float] = LAING_PARAMS["ratio"]) -> dict[str, torch.Tensor]:
    """Per-image random parameters of :func:`laing_augment` for the batch ``x`` (on its device).

    Keys: ``brightness``, ``contrast``, ``saturation``, ``hue``, ``order`` ([N, 4] jitter
    order), ``enabled`` (which jitter steps have a non-zero strength, Python bools), ``flip``
    (bool), ``angle`` (degrees, counter-clockwise as ``TF.rotate``), ``top``, ``left``,
    ``height``, ``width`` (the crop box in pixels, int64).
    """
    _check(x)
    strengths = dict(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue,
                     degrees=degrees, scale=scale, ratio=ratio)
    return _laing_params_from(_laing_uniforms(x, generator, **strengths), *x.shape[2:],
                              **strengths)


def _laing_uniforms(x: torch.Tensor, g, brightness, contrast, saturation, hue, degrees, scale,
                    ratio) -> dict[str, Any]:
    """Every random draw of :func:`draw_laing_params` for the batch ``x``, in its order, from
    ``g``: what one generator contributes when several groups are augmented at once."""
    _check_crop(scale, ratio)
    n = x.shape[0]
    u = _jitter_uniforms(n, x, g, brightness, contrast, saturation, hue)
    u["flip"] = _rand(n, x, g)
    u["angle"] = _rand(n, x, g) if degrees else None
    u["crop"] = _crop_uniforms(n, x, g)
    return u


def _laing_params_from(u: dict[str, Any], h: int, w: int, brightness, contrast, saturation, hue,
                       degrees, scale, ratio) -> dict[str, Any]:
    """:func:`draw_laing_params`' parameters from its draws (:func:`_laing_uniforms`)."""
    p = _jitter_from(u, brightness, contrast, saturation, hue)
    p["flip"] = u["flip"] < 0.5
    p["angle"] = (-degrees + 2 * degrees * u["angle"] if degrees
                  else torch.zeros_like(u["flip"]))
    p["top"], p["left"], p["height"], p["width"] = _boxes_from(*u["crop"], h, w, scale, ratio)
    return p


def _cat_uniforms(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The draws of consecutive groups (:func:`_laing_uniforms`) as those of one batch."""
    out: dict[str, Any] = {}
    for key, first in parts[0].items():
        if first is None:
            out[key] = None
        elif isinstance(first, tuple):
            out[key] = tuple(torch.cat(t) for t in zip(*(q[key] for q in parts)))
        else:
            out[key] = torch.cat([q[key] for q in parts])
    return out


def _rotation_grid(n: int, h: int, w: int, angle_deg: torch.Tensor, flip: torch.Tensor,
                   dtype: torch.dtype) -> torch.Tensor:
    """Sampling grid [N, H, W, 2] of ``rotate(hflip?(img), angle)`` about the image centre.

    Built as torchvision's ``_gen_affine_grid``: centred pixel coordinates times the inverse
    rotation, divided by half the image size (``grid_sample`` with ``align_corners=False``).
    """
    dev = angle_deg.device
    a = torch.deg2rad(angle_deg.to(torch.float64))
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(cos)
    # output (x, y) -> source: [[cos, -sin], [sin, cos]] (y pointing down, as TF.rotate)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    theta = theta.to(dtype)                                             # [N, 2, 3]
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, device=dev, dtype=dtype)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, device=dev, dtype=dtype)
    base = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w),
                        torch.ones(h, w, device=dev, dtype=dtype)], -1).view(1, h * w, 3)
    scale = torch.tensor([0.5 * w, 0.5 * h], device=dev, dtype=dtype)
    grid = base.expand(n, -1, -1).bmm(theta.transpose(1, 2) / scale).view(n, h, w, 2)
    sx = torch.where(flip, -1.0, 1.0).to(dtype).view(n, 1, 1)
    return torch.stack([grid[..., 0] * sx, grid[..., 1]], -1)


def _resized_crop_grid(top, left, ch, cw, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """Grid [N, H, W, 2] that resizes the box (top, left, ch, cw) to H x W like
    ``resized_crop`` with bilinear interpolation (source clamped to the box's edge pixels)."""
    dev = top.device

    def axis(start, size, out):
        # torch's bilinear resize: src = (u + 0.5) * in / out - 0.5, clamped to [0, in - 1]
        u = torch.arange(out, device=dev, dtype=torch.float64).view(1, out)
        sz = size.to(torch.float64).view(-1, 1)
        src = ((u + 0.5) * (sz / out) - 0.5).clamp(min=0.0)
        src = torch.minimum(src, sz - 1) + start.to(torch.float64).view(-1, 1)
        return ((src + 0.5) * (2.0 / out) - 1.0).to(dtype)   # pixel -> grid_sample coordinate

    gx = axis(left, cw, w)                                              # [N, W]
    gy = axis(top, ch, h)                                               # [N, H]
    n = top.shape[0]
    return torch.stack([gx.view(n, 1, w).expand(n, h, w), gy.view(n, h, 1).expand(n, h, w)], -1)


def apply_laing_params(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply drawn parameters (:func:`draw_laing_params`) to a float RGB batch in [0, 1]:
    jitter (per-image order) -> flip -> rotation (nearest, fill 0) -> resized crop (bilinear)."""
    _check_rgb_float(x, "apply_laing_params")
    n, _, h, w = x.shape
    x = jitter_ordered(x, p["brightness"], p["contrast"], p["saturation"], p["hue"], p["order"],
                       p.get("enabled", (True, True, True, True)))
    grid = _rotation_grid(n, h, w, p["angle"], p["flip"], x.dtype)
    x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    grid = _resized_crop_grid(p["top"], p["left"], p["height"], p["width"], h, w, x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def laing_augment(x: torch.Tensor, generator: torch.Generator | None = None,
                  **strengths: Any) -> torch.Tensor:
    """ColorJitter -> HorizontalFlip -> Rotation(degrees) -> ResizedCrop(scale, ratio), per image.

    Returns a float batch in [0, 1] (uint8 input is converted). ``strengths``: any of
    :func:`draw_laing_params`' keyword arguments (defaults: the author's, :data:`LAING_PARAMS`);
    see the module docstring.
    """
    _check(x)
    if not x.is_floating_point():
        x = x.float().div_(255)
    if x.shape[0] == 0:
        return x.clone()
    return apply_laing_params(x, draw_laing_params(x, generator, **strengths))


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


def apply_grouped(name: str, x: torch.Tensor, generators) -> torch.Tensor:
    """:func:`apply` to each of ``len(generators)`` equal consecutive groups of ``x`` with its own
    generator (group k: ``apply(name, x[k*B:(k+1)*B], generators[k])``, the same output), with
    the transform batched over all groups: only the random draws are made group by group. Many
    models trained at once prepare their batches this way with one set of kernels instead of
    one per model."""
    _check(x)
    k = len(generators)
    if k == 0 or x.shape[0] % k:
        raise ValueError(f"softlib.augment.apply_grouped: {x.shape[0]} images do not split into "
                         f"{k} equal groups")
    b = x.shape[0] // k
    if name == "none" or b == 0:
        return x
    if name in ("crop_flip", "crop_flip_cutout16"):
        draws = [[_draw_crop_flip(b, 4, x, g)] for g in generators]
        if name == "crop_flip_cutout16":
            _, _, h, w = x.shape
            for d, g in zip(draws, generators):  # after the crop's draws, as cutout follows it
                d.append(_draw_cutout(b, h, w, x, g))
        cat = [torch.cat(parts) for parts in zip(*(d[0] for d in draws))]
        out = _crop_flip_with(x, 4, *cat)
        if name == "crop_flip_cutout16":
            out = _cutout_with(out, 16, *[torch.cat(parts) for parts in zip(*(d[1] for d in draws))])
        return out
    if name == "laing":  # each group's draws, then one derivation and one transform for all
        if not x.is_floating_point():
            x = x.float().div_(255)
        u = _cat_uniforms([_laing_uniforms(x[i * b:(i + 1) * b], g, **LAING_PARAMS)
                           for i, g in enumerate(generators)])
        return apply_laing_params(x, _laing_params_from(u, *x.shape[2:], **LAING_PARAMS))
    return torch.cat([apply(name, x[i * b:(i + 1) * b], g) for i, g in enumerate(generators)])
