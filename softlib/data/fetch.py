"""Getting datasets from their canonical sources and converting them to the prepared format.

Only :func:`fetch` (and the CLI) touch the network; :func:`softlib.data.load` never does.
Conversions write uncompressed npz (fast to load) atomically and record content sha256s in the
folder's PROVENANCE.json so that ``verify`` can recheck them later.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import os
import tarfile
import urllib.request
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .._io import atomic_path, save_json, save_npz, sha256_array, sha256_file
from ..paths import data_root
from .errors import DataCorruptError, DataError
from .registry import CIFAR10_CLASSES, DOWNLOADS, IMAGENET_HUMAN_FILE, get_spec
from .safe_pickle import NUMPY_ARRAY_GLOBALS, restricted_load
from .store import read_provenance_json


def _tqdm(*args, **kwargs):
    from ..progress import progress
    return progress(*args, **kwargs)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- provenance

def update_provenance(folder: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``folder/PROVENANCE.json`` (``files``/``arrays`` dicts are merged)."""
    pj = read_provenance_json(folder)
    for k, v in fields.items():
        if k in ("files", "arrays") and isinstance(v, dict):
            pj.setdefault(k, {}).update(v)
        elif k == "notes":
            pj.setdefault("notes", [])
            pj["notes"] += [n for n in v if n not in pj["notes"]]
        else:
            pj[k] = v
    save_json(folder / "PROVENANCE.json", pj)
    return pj


def write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray,
                compressed: bool = False, **extra: np.ndarray) -> Path:
    """Write ``<folder>/<split>.npz`` (uint8 images, int64 labels) and record its content hashes."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"write_split({folder.name}/{split}): need images [N,H,W,C] and labels "
                         f"[N], got {images.shape} and {labels.shape}")
    path = folder / f"{split}.npz"
    save_npz(path, compressed=compressed, images=images, labels=labels, **extra)
    update_provenance(folder, arrays={split: {"images": sha256_array(images),
                                              "labels": sha256_array(labels)}})
    return path


# --------------------------------------------------------------------------- downloading

def download(url: str, dest: Path, sha256: str | None = None, desc: str | None = None) -> str:
    """Download ``url`` to ``dest`` atomically with a progress bar; check ``sha256`` if given.

    Returns the file's sha256. A mismatch raises DataCorruptError and leaves nothing at ``dest``.
    """
    h = hashlib.sha256()
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with _tqdm(total=total, unit="B", unit_scale=True, desc=desc or dest.name) as bar:
                for block in iter(lambda: r.read(1 << 20), b""):
                    f.write(block)
                    h.update(block)
                    bar.update(len(block))
        got = h.hexdigest()
        if sha256 is not None and got != sha256:
            raise DataCorruptError(f"{url}: downloaded bytes have sha256 {got}, expected {sha256}"
                                   f" (not saved to {dest})")
    return got


def _fetch_direct(name: str, folder: Path) -> None:
    spec = get_spec(name)
    pj = read_provenance_json(folder)
    recorded = pj.get("files") or {}
    done: set[str] = set()
    files: dict[str, str] = {}
    errors: list[str] = []
    for fname, url, required in DOWNLOADS[name]:
        if fname in done:
            continue
        dest = folder / fname
        want = (spec.file_sha256.get(fname) or spec.optional_sha256.get(fname)
                or recorded.get(fname))
        if dest.exists() and (want is None or sha256_file(dest) == want):
            done.add(fname)
            continue
        try:
            files[fname] = download(url, dest, want)
            done.add(fname)
        except DataCorruptError:
            raise
        except Exception as e:  # network errors: try the next URL for this file, if any
            errors.append(f"{url}: {e}")
            if not required:
                done.add(fname)
    wanted = {f for f, _, req in DOWNLOADS[name] if req}
    if not wanted <= done:
        raise DataError(f"fetch {name}: could not download {sorted(wanted - done)}:\n  "
                        + "\n  ".join(errors))
    update_provenance(folder, dataset=name, source=spec.url, how=spec.how, fetched=now(),
                      files=files)


# --------------------------------------------------------------------------- CIFAR-10

def convert_cifar10_batches(src: str | os.PathLike, out_folder: str | os.PathLike,
                            check_md5: bool = True) -> dict[str, Path]:
    """Convert a canonical ``cifar-10-batches-py`` folder to ``train.npz`` / ``test.npz``.

    The batch pickles are read with the restricted unpickler (numpy arrays allowed, nothing
    else) after their md5 is checked against torchvision's list (``check_md5=False`` only for
    synthetic test folders). Images go from CHW rows to HWC; training order is batch 1..5.
    """
    from torchvision.datasets import CIFAR10
    src, out = Path(src), Path(out_folder)
    parts = {"train": [f for f, _ in CIFAR10.train_list], "test": [f for f, _ in CIFAR10.test_list]}
    md5s = dict(CIFAR10.train_list + CIFAR10.test_list)
    written = {}
    for split, files in parts.items():
        images, labels = [], []
        for fname in files:
            p = src / fname
            if not p.exists():
                raise DataError(f"convert_cifar10_batches: {p} not found (expected the canonical "
                                f"cifar-10-batches-py folder)")
            if check_md5:
                got = hashlib.md5(p.read_bytes()).hexdigest()
                if got != md5s[fname]:
                    raise DataCorruptError(f"{p}: md5 {got} does not match torchvision's "
                                           f"{md5s[fname]}")
            with open(p, "rb") as f:
                batch = restricted_load(f, allow=NUMPY_ARRAY_GLOBALS, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072:
                raise DataCorruptError(f"{p}: expected data [N, 3072], found {data.shape}")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        written[split] = write_split(out, split, np.concatenate(images), np.concatenate(labels))
    update_provenance(out, dataset="cifar10", source=get_spec("cifar10").url,
                      how="canonical cifar-10-batches-py converted by "
                          "softlib.data.fetch.convert_cifar10_batches", converted=now(),
                      notes=["train order: data_batch_1..5 concatenated; test order: test_batch "
                             "(the CIFAR-10H order)"])
    return written


def _fetch_cifar10(folder: Path) -> None:
    from torchvision.datasets import CIFAR10
    raw = folder / "raw"
    CIFAR10(str(raw), train=True, download=True)  # downloads and md5-checks the tarball
    convert_cifar10_batches(raw / "cifar-10-batches-py", folder)


# --------------------------------------------------------------------------- torchvision sets

def _fetch_svhn(folder: Path) -> None:
    from torchvision.datasets import SVHN
    ds = SVHN(str(folder / "raw"), split="test", download=True)  # md5-checked .mat
    write_split(folder, "test", ds.data.transpose(0, 2, 3, 1), ds.labels)
    update_provenance(folder, dataset="svhn", source=get_spec("svhn").url,
                      how=get_spec("svhn").how, converted=now(),
                      notes=["labels are digits 0-9 (torchvision maps the .mat's 10 to 0); "
                             "used as an out-of-distribution set"])


def _fetch_fashion_mnist(folder: Path) -> None:
    from torchvision.datasets import FashionMNIST
    for split in ("train", "test"):
        ds = FashionMNIST(str(folder / "raw"), train=split == "train", download=True)
        write_split(folder, split, ds.data.numpy()[..., None], ds.targets.numpy())
    update_provenance(folder, dataset="fashion_mnist", source=get_spec("fashion_mnist").url,
                      how=get_spec("fashion_mnist").how, converted=now(),
                      notes=["28x28 grey, C=1; convert to 32x32 RGB when feeding CIFAR models"])


# --------------------------------------------------------------------------- CINIC-10

def convert_cinic10(src: str | os.PathLike, out_folder: str | os.PathLike) -> dict[str, Path]:
    """Convert CINIC-10 (extracted folder or the .tar.gz) keeping only ImageNet-derived images.

    CINIC-10 stores ``<split>/<class>/<file>.png``; files whose names start with ``n`` (a
    WordNet id) come from ImageNet, ``cifar10-*`` files are CIFAR-10 images and are dropped.
    Class folder names are the CIFAR-10 class names and map to CIFAR ids.
    """
    from PIL import Image
    src, out = Path(src), Path(out_folder)
    per_split: dict[str, list[tuple[str, int, bytes]]] = {"train": [], "valid": [], "test": []}

    def consider(relpath: str, read) -> None:
        parts = relpath.replace("\\", "/").split("/")
        if len(parts) < 3 or not parts[-1].lower().endswith(".png"):
            return
        split, cls, fname = parts[-3], parts[-2], parts[-1]
        if split in per_split and cls in CIFAR10_CLASSES and fname.startswith("n"):
            per_split[split].append((fname, CIFAR10_CLASSES.index(cls), read()))

    if src.is_dir():
        for p in sorted(src.rglob("*.png")):
            consider(str(p.relative_to(src)), p.read_bytes)
    else:
        with tarfile.open(src, "r:*") as tar:
            for m in _tqdm(tar, desc="reading CINIC-10 tar"):
                if m.isfile():
                    consider(m.name, lambda m=m: tar.extractfile(m).read())
    written = {}
    for split, items in per_split.items():
        if not items:
            continue
        items.sort(key=lambda t: (t[1], t[0]))
        images = np.empty((len(items), 32, 32, 3), np.uint8)
        for i, (_, _, b) in enumerate(_tqdm(items, desc=f"decoding cinic10/{split}")):
            images[i] = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.uint8)
        labels = np.array([t[1] for t in items], np.int64)
        written[split] = write_split(out, split, images, labels)
    if not written:
        raise DataError(f"convert_cinic10: no ImageNet-derived PNGs found under {src}")
    update_provenance(out, dataset="cinic10", source=get_spec("cinic10").url,
                      how=get_spec("cinic10").how, converted=now(),
                      notes=["ImageNet-derived images only (file names starting with 'n'); "
                             "sorted by class, then file name"])
    return written


def _fetch_cinic10(folder: Path) -> None:
    tgz = folder / "raw" / "CINIC-10.tar.gz"
    if not tgz.exists():
        download(get_spec("cinic10").url, tgz)
    convert_cinic10(tgz, folder)


# --------------------------------------------------------------------------- entry point

def _fetch_imagenet_human(folder: Path) -> None:
    _fetch_direct("imagenet_human", folder)
    # no sha256 is published: the first download's hash is recorded (by _fetch_direct) and
    # later fetches and ``verify`` compare against it.
    from .imagenet import load_imagenet_human
    load_imagenet_human(folder.parent)
    update_provenance(folder, notes=[f"{IMAGENET_HUMAN_FILE}: no checksum is published; the "
                                     "sha256 in 'files' was recorded at first download"])


_FETCHERS = {
    "cifar10": _fetch_cifar10,
    "cifar10h": lambda f: _fetch_direct("cifar10h", f),
    "cifar10_1": lambda f: _fetch_direct("cifar10_1", f),
    "cinic10": _fetch_cinic10,
    "svhn": _fetch_svhn,
    "fashion_mnist": _fetch_fashion_mnist,
    "imagenet_human": _fetch_imagenet_human,
    "imagenet_real": lambda f: _fetch_direct("imagenet_real", f),
}


def fetch(name: str, root: str | os.PathLike | None = None) -> Path:
    """Download ``name`` from its canonical source into ``<root>/<name>`` and prepare it."""
    spec = get_spec(name)
    if not spec.fetchable:
        raise DataError(f"fetch {name}: this dataset is built locally, not downloaded: {spec.how}")
    folder = data_root(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    _FETCHERS[name](folder)
    return folder


def fetch_many(names: Iterable[str], root: str | os.PathLike | None = None) -> list[Path]:
    return [fetch(n, root) for n in names]


def repack(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Rewrite ``name``'s compressed split files uncompressed (same arrays, faster ``load``).

    The content is checked to be identical before the file is replaced.
    """
    import zipfile
    from .store import dataset_dir
    out = []
    for p in sorted(dataset_dir(name, root).glob("*.npz")):
        with zipfile.ZipFile(p) as zf:
            if all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist()):
                continue
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        save_npz(p, compressed=False, **arrays)
        with np.load(p, allow_pickle=False) as z:
            if any(sha256_array(z[k]) != sha256_array(v) for k, v in arrays.items()):
                raise DataCorruptError(f"{p}: repacked content differs (disk problem?)")
        out.append(p)
    return out
