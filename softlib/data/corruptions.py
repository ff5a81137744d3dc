"""CIFAR-10-C-style corruptions of CIFAR-10 *training* images, generated locally.

The 15 corruptions and 5 severities follow Hendrycks & Dietterich (2019), with the parameters of
their CIFAR script (``make_cifar_c.py``), re-implemented with numpy/scipy/Pillow (the
``imagecorruptions`` package, OpenCV, scikit-image and ImageMagick are not used). Faithful
re-implementations: gaussian/shot/impulse noise, defocus/glass/zoom blur, fog, brightness,
contrast, elastic transform, pixelate, JPEG. Documented approximations (also written into the
output's PROVENANCE.json):

* ``motion_blur`` and the streaks of ``snow``: ImageMagick's one-sided motion-blur kernel is
  approximated by a one-sided Gaussian-weighted line kernel (length 2*radius+1, nearest-pixel
  taps along a random angle, edge pixels repeated).
* ``frost``: the six frost photographs are not available, so the frost layer is a seeded
  procedural texture (plasma fractal plus thin bright crystal streaks, bluish white) with the
  same blending weights.
* skimage/OpenCV border modes are mapped to their scipy equivalents.

Randomness is deterministic: each image gets ``np.random.default_rng([seed, corruption id,
severity, source index])``, so any subset of indices gives the same pixels as the full run.
Output: ``<root>/cifar10_c/<corruption>_<severity>.npz`` with ``images``, ``labels`` and
``indices`` (positions in ``cifar10/train.npz``).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from scipy import ndimage as ndi

from ..paths import data_root
from .registry import CORRUPTIONS, SEVERITIES

#: bumped when the generated images change: a file of another version is generated again
#: (2: the elastic transform's affine map without BLAS, so every CPU makes the same bytes)
GENERATOR_VERSION = 2

APPROXIMATED = {
    "motion_blur": "ImageMagick motion blur approximated by a one-sided Gaussian line kernel",
    "snow": "snow streaks use the same motion-blur approximation",
    "frost": "procedural frost texture instead of Hendrycks' frost photographs",
}

# ---------------------------------------------------------------- helpers (float images in [0,1])


def _gauss(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    s = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return ndi.gaussian_filter(x, s, mode=mode, truncate=truncate)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    L = np.arange(-8, 9) if radius <= 8 else np.arange(-int(radius), int(radius) + 1)
    X, Y = np.meshgrid(L, L)
    k = ((X ** 2 + Y ** 2) <= radius ** 2).astype(np.float64)
    k /= k.sum()
    # OpenCV GaussianBlur with a 3x3 (5x5 for big radii) window, border reflect-101
    ks = 3 if radius <= 8 else 5
    t = np.arange(ks) - ks // 2
    g = np.exp(-t ** 2 / (2 * alias_blur ** 2))
    g /= g.sum()
    k = ndi.correlate1d(k, g, axis=0, mode="mirror")
    return ndi.correlate1d(k, g, axis=1, mode="mirror")


def _clipped_zoom(img: np.ndarray, z: float) -> np.ndarray:
    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    zoomed = ndi.zoom(img[top:top + ch, top:top + ch], (z, z) + (1,) * (img.ndim - 2), order=1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim:trim + h, trim:trim + h]


def _plasma(rng: np.random.Generator, mapsize: int = 32, decay: float = 3.0) -> np.ndarray:
    """Diamond-square height map in [0, 1] (as in Hendrycks' fog)."""
    a = np.empty((mapsize, mapsize))
    a[0, 0] = 0
    step, wibble = mapsize, 100.0

    def wmean(x):
        return x / 4 + wibble * rng.uniform(-wibble, wibble, x.shape)

    while step >= 2:
        h = step // 2
        c = a[0:mapsize:step, 0:mapsize:step]
        sq = c + np.roll(c, -1, axis=0)
        sq = sq + np.roll(sq, -1, axis=1)
        a[h:mapsize:step, h:mapsize:step] = wmean(sq)
        dr = a[h:mapsize:step, h:mapsize:step]
        ul = a[0:mapsize:step, 0:mapsize:step]
        a[0:mapsize:step, h:mapsize:step] = wmean(dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1))
        a[h:mapsize:step, 0:mapsize:step] = wmean(dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0))
        step //= 2
        wibble /= decay
    a -= a.min()
    return a / a.max()


def _motion_kernel_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """Approximation of ImageMagick's MotionBlurImage: one-sided Gaussian taps along ``angle``."""
    width = 2 * int(radius) + 1
    i = np.arange(width)
    w = np.exp(-(i ** 2) / (2 * sigma ** 2))
    w /= w.sum()
    t = np.deg2rad(angle)
    dx, dy = np.rint(i * np.cos(t)).astype(int), np.rint(i * np.sin(t)).astype(int)
    h, wd = x.shape[:2]
    rows, cols = np.arange(h)[:, None], np.arange(wd)[None, :]
    out = np.zeros_like(x, dtype=np.float64)
    for wi, ox, oy in zip(w, dx, dy):
        r = np.clip(rows + oy, 0, h - 1)
        c = np.clip(cols + ox, 0, wd - 1)
        out += wi * x[r, c]
    return out


def _rgb2gray(x: np.ndarray) -> np.ndarray:
    # elementwise rather than a BLAS product, whose CPU-specific kernels may round differently
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


# ---------------------------------------------------------------- the 15 corruptions

def gaussian_noise(x, s, rng):
    c = [0.04, 0.06, .08, .09, .10][s - 1]
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1)


def shot_noise(x, s, rng):
    c = [500, 250, 100, 75, 50][s - 1]
    return np.clip(rng.poisson(x * c) / c, 0, 1)


def impulse_noise(x, s, rng):
    c = [.01, .02, .03, .05, .07][s - 1]
    x = x.copy()
    flip = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    x[flip & salt] = 1.0
    x[flip & ~salt] = 0.0
    return x


def defocus_blur(x, s, rng):
    c = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][s - 1]
    k = _disk(*c)
    return np.clip(np.stack([ndi.correlate(x[..., d], k, mode="mirror") for d in range(3)], -1), 0, 1)


def glass_blur(x, s, rng):
    sigma, delta, iters = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][s - 1]
    y = np.uint8(_gauss(x, sigma) * 255)
    n = y.shape[0]
    for _ in range(iters):
        for h in range(n - delta, delta, -1):
            for w in range(n - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=2)
                hp, wp = h + dy, w + dx
                y[h, w], y[hp, wp] = y[hp, wp].copy(), y[h, w].copy()
    return np.clip(_gauss(y / 255.0, sigma), 0, 1)


def motion_blur(x, s, rng):
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][s - 1]
    return np.clip(_motion_kernel_blur(x, radius, sigma, rng.uniform(-45, 45)), 0, 1)


def zoom_blur(x, s, rng):
    zs = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
          np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][s - 1]
    out = np.zeros_like(x)
    for z in zs:
        out += _clipped_zoom(x, z)
    return np.clip((x + out) / (len(zs) + 1), 0, 1)


def snow(x, s, rng):
    c = [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
         (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
         (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][s - 1]
    layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    layer = _clipped_zoom(layer[..., None], c[2])[..., 0]
    layer[layer < c[3]] = 0
    layer = np.uint8(np.clip(layer, 0, 1) * 255) / 255.0  # the original passes it through PNG
    layer = _motion_kernel_blur(layer, c[4], c[5], rng.uniform(-135, -45))
    layer = (np.uint8(np.clip(layer, 0, 1) * 255) / 255.0)[..., None]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, _rgb2gray(x)[..., None] * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1)


def _frost_texture(rng: np.random.Generator, n: int = 32) -> np.ndarray:
    base = _plasma(rng, 32, 1.6)[:n, :n]
    streaks = np.zeros((n, n))
    for _ in range(rng.integers(6, 12)):
        r, c0 = rng.integers(0, n, 2)
        ang, length = rng.uniform(0, np.pi), rng.integers(4, 14)
        t = np.arange(length)
        rr = np.clip(np.rint(r + t * np.sin(ang)).astype(int), 0, n - 1)
        cc = np.clip(np.rint(c0 + t * np.cos(ang)).astype(int), 0, n - 1)
        streaks[rr, cc] = 1.0
    streaks = _gauss(streaks, 0.5)
    g = np.clip(0.35 + 0.35 * base + 0.6 * streaks / max(streaks.max(), 1e-8), 0, 1)
    tint = np.array([0.85, 0.92, 1.0])
    return g[..., None] * tint  # in [0, 1]


def frost(x, s, rng):
    c = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][s - 1]
    return np.clip(c[0] * x + c[1] * _frost_texture(rng, x.shape[0]), 0, 1)


def fog(x, s, rng):
    c = [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][s - 1]
    mx = x.max()
    x = x + c[0] * _plasma(rng, 32, c[1])[:x.shape[0], :x.shape[0]][..., None]
    return np.clip(x * mx / (mx + c[0]), 0, 1)


def brightness(x, s, rng):
    """HSV value + c. With hue and saturation fixed every RGB channel is proportional to
    V = max(R, G, B), so the HSV round trip is RGB * V'/V (grey V' where V = 0)."""
    c = [.05, .1, .15, .2, .3][s - 1]
    v = x.max(axis=-1, keepdims=True)
    v2 = np.clip(v + c, 0, 1)
    return np.clip(np.where(v > 0, x * v2 / np.where(v > 0, v, 1), v2), 0, 1)


def contrast(x, s, rng):
    c = [.75, .5, .4, .3, 0.15][s - 1]
    m = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - m) * c + m, 0, 1)


def _inverse_affine_yx(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The affine map sending the three points ``src`` to ``dst`` ((x, y) rows), inverted and
    written in scipy's (row, col) order: ``(matrix, offset)`` for ``ndi.affine_transform``.

    Plain scalar arithmetic, no BLAS/LAPACK: OpenBLAS picks CPU-specific kernels, whose
    last-bit differences the truncation to uint8 turns into different images on another
    machine (measured: the elastic corruptions of one GPU machine did not match a CPU's, and
    matched it under ``OPENBLAS_CORETYPE=Haswell``), and results computed there would no longer
    match the evaluation sets here."""
    (x1, y1), (x2, y2), (x3, y3) = (tuple(map(float, p)) for p in src)
    det = x1 * (y2 - y3) - x2 * (y1 - y3) + x3 * (y1 - y2)
    # src^-1 by cofactors: rows of the inverse of [[x1, y1, 1], [x2, y2, 1], [x3, y3, 1]]
    inv = [[(y2 - y3) / det, (y3 - y1) / det, (y1 - y2) / det],
           [(x3 - x2) / det, (x1 - x3) / det, (x2 - x1) / det],
           [(x2 * y3 - x3 * y2) / det, (x3 * y1 - x1 * y3) / det, (x1 * y2 - x2 * y1) / det]]
    d = [tuple(map(float, p)) for p in dst]
    # forward map dst = [[a, b, c], [e, f, g]] @ [x, y, 1]
    a, b, c = (inv[r][0] * d[0][0] + inv[r][1] * d[1][0] + inv[r][2] * d[2][0] for r in range(3))
    e, f, g = (inv[r][0] * d[0][1] + inv[r][1] * d[1][1] + inv[r][2] * d[2][1] for r in range(3))
    dl = a * f - b * e  # invert the linear part, then the translation
    ia, ib, ie, i_f = f / dl, -b / dl, -e / dl, a / dl
    tx, ty = -(ia * c + ib * g), -(ie * c + i_f * g)
    # scipy indexes (row, col) = (y, x): swap both axes
    return np.array([[i_f, ie], [ib, ia]]), np.array([ty, tx])


def elastic_transform(x, s, rng):
    n = x.shape[0]
    alpha, sigma, aff = [(n * 0, n * 0, n * 0.08), (n * 0.05, n * 0.2, n * 0.07),
                         (n * 0.08, n * 0.06, n * 0.06), (n * 0.1, n * 0.04, n * 0.05),
                         (n * 0.1, n * 0.03, n * 0.03)][s - 1]
    # random affine: three points (x, y) moved by up to ``aff`` pixels (OpenCV convention)
    cs, sq = np.float64(n // 2), n // 3
    p1 = np.array([[cs + sq, cs + sq], [cs + sq, cs - sq], [cs - sq, cs - sq]])
    p2 = p1 + rng.uniform(-aff, aff, size=p1.shape)
    lin, off = _inverse_affine_yx(p1, p2)
    x = np.stack([ndi.affine_transform(x[..., d], lin, offset=off, order=1, mode="mirror")
                  for d in range(3)], -1)
    dx = (_gauss(rng.uniform(-1, 1, size=(n, n)), sigma, "reflect", 3) * alpha) if sigma > 0 \
        else np.zeros((n, n))
    dy = (_gauss(rng.uniform(-1, 1, size=(n, n)), sigma, "reflect", 3) * alpha) if sigma > 0 \
        else np.zeros((n, n))
    yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    out = np.stack([ndi.map_coordinates(x[..., d], [yy + dy, xx + dx], order=1, mode="reflect")
                    for d in range(3)], -1)
    return np.clip(out, 0, 1)


def pixelate(x, s, rng):
    from PIL import Image
    c = [0.95, 0.9, 0.85, 0.75, 0.65][s - 1]
    im = Image.fromarray(np.uint8(np.clip(x, 0, 1) * 255 + 0.5))
    n = im.size[0]
    im = im.resize((int(n * c), int(n * c)), Image.BOX).resize((n, n), Image.BOX)
    return np.asarray(im) / 255.0


def jpeg_compression(x, s, rng):
    from PIL import Image
    q = [80, 65, 58, 50, 40][s - 1]
    buf = io.BytesIO()
    Image.fromarray(np.uint8(np.clip(x, 0, 1) * 255 + 0.5)).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("RGB")) / 255.0


FUNCS: dict[str, Callable] = {name: globals()[name] for name in CORRUPTIONS}


def corrupt_image(img: np.ndarray, corruption: str, severity: int, index: int, seed: int = 0
                  ) -> np.ndarray:
    """One corrupted uint8 HWC image; deterministic in (seed, corruption, severity, index)."""
    if corruption not in FUNCS:
        raise ValueError(f"unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    rng = np.random.default_rng([seed, CORRUPTIONS.index(corruption), severity, int(index)])
    out = FUNCS[corruption](img.astype(np.float64) / 255.0, severity, rng)
    return np.uint8(np.clip(out, 0, 1) * 255)  # truncation, as np.uint8 in the original script


def is_current(path: str | os.PathLike, indices: np.ndarray | None = None,
               seed: int | None = None) -> bool:
    """Whether a generated ``cifar10_c`` file was written by this :data:`GENERATOR_VERSION`
    (and, where given, for these training ``indices`` and this ``seed``)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not ("version" in z.files and int(z["version"]) == GENERATOR_VERSION):
                return False
            if indices is not None and not ("indices" in z.files
                                            and np.array_equal(z["indices"], indices)):
                return False
            return seed is None or ("seed" in z.files and int(z["seed"]) == seed)
    except (OSError, ValueError):
        return False


def first_per_class(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first ``n`` images of each class (sorted)."""
    labels = np.asarray(labels)
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:n] for c in np.unique(labels)]))


def generate(indices: np.ndarray | None = None, corruptions: Iterable[str] = CORRUPTIONS,
             severities: Iterable[int] = SEVERITIES, root: str | os.PathLike | None = None,
             seed: int = 0, per_class: int | None = None, overwrite: bool = False) -> list[Path]:
    """Write ``cifar10_c/<corruption>_<severity>.npz`` for the chosen training ``indices``.

    ``per_class=n`` picks the first n training images of each class when ``indices`` is None.
    Existing files with the same indices and seed are kept unless ``overwrite``.
    """
    from .fetch import _tqdm, now, update_provenance, write_split
    from .store import load
    train = load("cifar10", "train", root)
    if indices is None:
        indices = first_per_class(train.labels, per_class) if per_class else np.arange(len(train))
    indices = np.asarray(indices, dtype=np.int64)
    out = data_root(root) / "cifar10_c"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    jobs = [(c, s) for c in corruptions for s in severities]
    for c, s in _tqdm(jobs, desc="cifar10_c"):
        path = out / f"{c}_{s}.npz"
        if path.exists() and not overwrite and is_current(path, indices, seed):
            written.append(path)
            continue
        imgs = np.stack([corrupt_image(train.images[i], c, s, i, seed) for i in indices])
        written.append(write_split(out, f"{c}_{s}", imgs, train.labels[indices],
                                   indices=indices, seed=np.int64(seed),
                                   version=np.int64(GENERATOR_VERSION)))
    update_provenance(out, dataset="cifar10_c",
                      source="generated locally from cifar10/train.npz by softlib.data.corruptions",
                      how="Hendrycks & Dietterich (2019) CIFAR-10-C corruptions and parameters, "
                          "re-implemented with numpy/scipy/Pillow; per-image seeded RNG",
                      generated=now(), seed=seed, approximations=APPROXIMATED,
                      cifar10_source=_cifar_source(root),
                      notes=["images are corrupted CIFAR-10 TRAINING images; 'indices' holds "
                             "their positions in cifar10/train.npz"])
    return written


def _cifar_source(root) -> str:
    from .store import _source_line
    return _source_line(data_root(root) / "cifar10")
