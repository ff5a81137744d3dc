"""ImageNet-Far: 32x32 images of ImageNet classes that are not CIFAR-10 classes or synonyms.

The user supplies a local ImageNet folder laid out as ``<dir>/<wnid>/*.JPEG`` (the ILSVRC train
folder, or val sorted into class folders). The WordNet-id -> CIFAR class map lives in
``imagenet_far_wnids.json`` beside this module (e.g. ibex, gazelle -> deer; zebra -> horse; see
its ``_about``). Each image is centre-cropped to a square and resized to 32x32 with Pillow's
antialiasing bicubic filter. Output: ``<root>/imagenet_far/test.npz`` labelled with CIFAR ids,
plus ``wnids`` (the source class of each image).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..paths import data_root
from .errors import DataError
from .registry import CIFAR10_CLASSES

WNID_FILE = Path(__file__).with_name("imagenet_far_wnids.json")
EXTS = (".jpeg", ".jpg", ".png")


def wnid_map(path: str | os.PathLike = WNID_FILE) -> dict[str, int]:
    """WordNet id -> CIFAR-10 class id, from the mapping file."""
    spec = json.loads(Path(path).read_text())
    out = {}
    for wnid, v in spec["classes"].items():
        if v["cifar"] not in CIFAR10_CLASSES:
            raise DataError(f"{path}: {wnid} maps to {v['cifar']!r}, not a CIFAR-10 class")
        out[wnid] = CIFAR10_CLASSES.index(v["cifar"])
    return out


def to_32(img, size: int = 32) -> np.ndarray:
    """Centre-crop a PIL image to a square and resize it to ``size`` x ``size`` RGB uint8."""
    from PIL import Image
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(img.resize((size, size), Image.BICUBIC, reducing_gap=None), dtype=np.uint8)


def build_imagenet_far(imagenet_dir: str | os.PathLike, root: str | os.PathLike | None = None,
                       mapping: str | os.PathLike = WNID_FILE, max_per_class: int | None = None,
                       allow_missing: bool = False) -> Path:
    """Build ``imagenet_far/test.npz`` from a local ImageNet folder (see module docstring)."""
    from PIL import Image
    from .fetch import _tqdm, now, update_provenance, write_split
    src = Path(imagenet_dir)
    if not src.is_dir():
        raise DataError(f"build_imagenet_far: {src} is not a folder (expected <dir>/<wnid>/*.JPEG)")
    m = wnid_map(mapping)
    absent = [w for w in m if not (src / w).is_dir()]
    if absent and not allow_missing:
        raise DataError(f"build_imagenet_far: {len(absent)} class folders missing under {src}: "
                        f"{absent[:5]}{'...' if len(absent) > 5 else ''} (allow_missing=True skips them)")
    files: list[tuple[Path, str]] = []
    for w in m:
        if w in absent:
            continue
        fs = sorted(p for p in (src / w).iterdir() if p.suffix.lower() in EXTS)
        files += [(p, w) for p in fs[:max_per_class]]
    if not files:
        raise DataError(f"build_imagenet_far: no images found under {src} for the mapped classes")
    images = np.empty((len(files), 32, 32, 3), np.uint8)
    for i, (p, _) in enumerate(_tqdm(files, desc="imagenet_far")):
        with Image.open(p) as im:
            images[i] = to_32(im)
    labels = np.array([m[w] for _, w in files], np.int64)
    out = data_root(root) / "imagenet_far"
    path = write_split(out, "test", images, labels, wnids=np.array([w for _, w in files]))
    update_provenance(out, dataset="imagenet_far", source=f"local ImageNet folder {src}",
                      how="centre crop to square, Pillow bicubic resize to 32x32; classes from "
                          "softlib/data/imagenet_far_wnids.json", built=now(),
                      mapping=json.loads(Path(mapping).read_text())["classes"],
                      missing_classes=absent, max_per_class=max_per_class)
    return path
