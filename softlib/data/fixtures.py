"""SYNTHETIC tiny versions of every dataset, for the tests and the book's smoke profile.

:func:`write_fixture_root` writes each dataset in its prepared (or canonical) format under a
folder that can be used as ``SOFTLIB_DATA``. Every folder's PROVENANCE says loudly
"SYNTHETIC FIXTURE — not real data" and its PROVENANCE.json has ``"synthetic": true`` (which
also waives the canonical split sizes). Images carry a learnable class signal: a class colour and
a class-specific stripe orientation/frequency, plus noise, so tiny training runs can lower the
loss. :func:`write_fake_cifar10_batches` writes a fake canonical ``cifar-10-batches-py``.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .._io import save_text
from .registry import IMAGENET_HUMAN_FILE

BANNER = "SYNTHETIC FIXTURE — not real data"

_PALETTE = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [200, 60, 200],
                     [60, 200, 200], [230, 140, 40], [120, 120, 120], [40, 40, 100],
                     [240, 240, 240]], dtype=np.float32)


def synthetic_images(labels: np.ndarray, rng: np.random.Generator, size: int = 32,
                     channels: int = 3, noise: float = 40.0) -> np.ndarray:
    """uint8 [N,size,size,channels] images whose colour and stripes depend on the label."""
    labels = np.asarray(labels)
    c = np.arange(10)[:, None, None]
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    ang, freq = c * (np.pi / 10), 0.25 + 0.05 * (c % 5)
    stripes = np.sin(freq * (xx * np.cos(ang) + yy * np.sin(ang)))     # [10,H,W]
    tmpl = _PALETTE[:, None, None, :] * (0.75 + 0.25 * stripes[..., None]).astype(np.float32)
    if channels == 1:
        tmpl = tmpl.mean(-1, keepdims=True)
    img = tmpl.astype(np.int16)[labels % 10]                            # [N,H,W,C]
    a = int(noise * 1.7)  # uniform noise on [-a, a]: std about ``noise``; cheaper than normal
    img += rng.integers(-a, a + 1, size=img.shape, dtype=np.int16)
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def _labels(n: int, rng: np.random.Generator, C: int = 10) -> np.ndarray:
    lab = np.arange(n) % C
    return rng.permutation(lab).astype(np.int64)


def _stamp(folder: Path, name: str, seed: int, **more: Any) -> None:
    from .fetch import update_provenance
    folder.mkdir(parents=True, exist_ok=True)
    save_text(folder / "PROVENANCE.md",
              f"# {name} — {BANNER}\n\n**{BANNER}.** Written by softlib.data.fixtures."
              f"write_fixture_root(seed={seed}) for tests and the smoke profile. Numbers computed "
              f"from it mean nothing about the real {name}.\n")
    update_provenance(folder, dataset=name, synthetic=True, source=BANNER, seed=seed, **more)


def _images(root: Path, name: str, splits: dict[str, int], rng, seed: int, size=32, channels=3,
            compressed=False) -> dict[str, np.ndarray]:
    from .fetch import write_split
    folder = root / name
    _stamp(folder, name, seed)
    out = {}
    for split, n in splits.items():
        lab = _labels(n, rng)
        write_split(folder, split, synthetic_images(lab, rng, size, channels), lab, compressed)
        out[split] = lab
    return out


def _cifar10h(root: Path, test_labels: np.ndarray, rng: np.random.Generator, seed: int) -> None:
    """Vote counts (~51 per image) concentrated on the label, with some confusion."""
    from .fetch import update_provenance
    from .._io import sha256_file
    n = len(test_labels)
    folder = root / "cifar10h"
    _stamp(folder, "cifar10h", seed)
    alpha = np.full((n, 10), 0.15)
    alpha[np.arange(n), test_labels] = rng.uniform(1.0, 12.0, n)
    p = np.stack([rng.dirichlet(a) for a in alpha])
    counts = np.stack([rng.multinomial(51, pi) for pi in p]).astype(np.float64)
    probs = counts / counts.sum(1, keepdims=True)
    files = {}
    for fname, arr in (("cifar10h-counts.npy", counts), ("cifar10h-probs.npy", probs)):
        np.save(folder / fname, arr)
        files[fname] = sha256_file(folder / fname)
    update_provenance(folder, files=files)


def synthetic_imagenet_human(rng: np.random.Generator, n_val: int = 12, n_v2: int = 12,
                             models: tuple[str, ...] = ("resnet50", "FixResNeXt101_32x48d_v2",
                                                        "efficientnet-b7")) -> dict[str, Any]:
    """A small dict with the full schema of Shankar et al.'s ``human_accuracy`` pickle."""
    organisms = [f"n0{1000000 + i:07d}" for i in range(6)]
    dogs = organisms[:3]
    objects = [f"n0{3000000 + i:07d}" for i in range(6)]
    wnids = organisms + objects
    ids = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(n_val)] + \
          [f"{wnids[i % len(wnids)]}_v2_{i:04d}" for i in range(n_v2)]
    wnid_map = {i: wnids[k % len(wnids)] for k, i in enumerate(ids)}
    image_labels, image_map = {}, {}
    for k, i in enumerate(ids):
        correct = [wnid_map[i]] + ([wnids[(k + 1) % len(wnids)]] if k % 4 == 0 else [])
        image_labels[i] = {"correct": correct, "wrong": [wnids[(k + 5) % len(wnids)]],
                           "unclear": []}
        image_map[i] = {"id": i, "problematic": k % 11 == 10}
    annot: dict[str, dict[str, Any]] = {}
    users = [f"human_{c}" for c in "abcde"]
    for u_i, u in enumerate(users):
        annot[u] = {}
        for k, i in enumerate(ids):
            right = rng.random() < 0.9
            start = 1000 + 100 * k
            dur = int(rng.integers(5, 120))
            annot[u][i] = {"label": wnid_map[i] if right else wnids[(k + 2) % len(wnids)],
                           "extra_info": {
                               "start_time": f"2019-06-01 10:{start // 60 % 60:02d}:{start % 60:02d}",
                               "end_time": f"2019-06-01 10:{(start + dur) // 60 % 60:02d}:"
                                           f"{(start + dur) % 60:02d}"}}
    annot["human_majority"] = {i: {"label": wnid_map[i]} for i in ids}
    for m_i, m in enumerate(models):
        annot[m] = {i: {"label": wnid_map[i] if rng.random() < 0.8 - 0.1 * m_i
                        else wnids[(k + 3) % len(wnids)]} for k, i in enumerate(ids)}
    annot["model_majority"] = {i: {"label": wnid_map[i]} for i in ids}
    return {"labeled_images": set(ids), "annot_data": annot, "image_map": image_map,
            "image_labels": image_labels,
            "split_wnids": {("organism",): set(organisms), ("organism", "dog"): set(dogs),
                            ("object",): set(objects)},
            "all_candidates": {i for i in ids if not i.startswith("ILSVRC2012_val_")},
            "wnid_map": wnid_map, "initial_annots": {}}


def _imagenet_human(root: Path, rng, seed: int) -> None:
    folder = root / "imagenet_human"
    _stamp(folder, "imagenet_human", seed)
    (folder / IMAGENET_HUMAN_FILE).write_bytes(pickle.dumps(synthetic_imagenet_human(rng),
                                                            protocol=4))


def _imagenet_real(root: Path, rng, seed: int, n: int = 100) -> None:
    folder = root / "imagenet_real"
    _stamp(folder, "imagenet_real", seed)
    real = [sorted({int(c) for c in rng.integers(0, 1000, rng.integers(0, 3))}) for _ in range(n)]
    (folder / "real.json").write_text(json.dumps(real))
    models = [f"model_{i}" for i in range(8)]
    top1 = rng.uniform(60, 90, len(models))
    header = "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation"
    for fname, shift in (("timm_results-imagenet.csv", 0.0), ("timm_results-imagenet-real.csv", 6.0),
                         ("timm_results-imagenetv2-matched-frequency.csv", -11.0)):
        rows = [header] + [f'{m},224,{t + shift:.3f},{100 - t - shift:.3f},{min(t + shift + 15, 99.9):.3f},'
                           f'{100 - min(t + shift + 15, 99.9):.3f},"1,0{i}.5",0.875,bicubic'
                           for i, (m, t) in enumerate(zip(models, top1))]
        (folder / fname).write_text("\n".join(rows) + "\n")
    (folder / "timm_imagenet_synsets.txt").write_text(
        "\n".join(f"n{i:08d}" for i in range(1000)) + "\n")
    _real_golden(folder, rng)


def _real_golden(folder: Path, rng, questions: int = 60, raters: int = 12) -> None:
    """ReaL's golden-question files: one-hot no/maybe/yes votes [R, N, 3] of 5 experts (no
    'maybe', as in the release) and of raters who agree with the experts' majority 80% of
    the time; the two files ask the same (file name, class) questions."""
    truth = rng.choice([0, 2], questions, p=[0.75, 0.25])
    info = np.array([(f"ILSVRC2012_val_{1 + q // 3:08d}.JPEG", str(int(rng.integers(1000))))
                     for q in range(questions)])

    def votes(n: int, p_agree: float, answers: tuple[int, ...]) -> np.ndarray:
        agree = rng.random((n, questions)) < p_agree
        other = rng.choice(answers, (n, questions))
        codes = np.where(agree, truth[None, :], other)
        return np.eye(3)[codes]

    np.savez_compressed(folder / "golden.npz", tensor=votes(5, 0.95, (0, 2)), info=info,
                        ids=np.arange(100, 105))
    np.savez_compressed(folder / "raters_golden.npz", tensor=votes(raters, 0.8, (0, 1, 2)),
                        info=info, ids=np.arange(raters))
    # raters.npz: every question asked of 5 of the raters, the others not asked (all zeros)
    asked = np.argsort(rng.random((raters, questions)), axis=0) < 5
    np.savez_compressed(folder / "raters.npz",
                        tensor=votes(raters, 0.8, (0, 1, 2)) * asked[..., None], info=info,
                        ids=np.arange(raters))


def write_fixture_root(path: str | os.PathLike, seed: int = 0, n_train: int = 500,
                       n_test: int = 10000, n_small: int = 100, cifar10_c: bool = True
                       ) -> Path:
    """Write synthetic versions of every dataset under ``path`` (usable as SOFTLIB_DATA).

    ``n_test`` is the CIFAR-10 test size and the number of CIFAR-10H rows (10,000 keeps
    ``load_cifar10h``'s default shape check); ``n_small`` sizes the other sets. CIFAR-10-C is
    generated by the real corruption code from the first 4 training images.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    c10 = _images(root, "cifar10", {"train": n_train, "test": n_test}, rng, seed)
    _cifar10h(root, c10["test"], rng, seed)
    v = _images(root, "cifar10_1", {"v4": n_small, "v6": n_small}, rng, seed)
    for ver, lab in v.items():
        np.save(root / "cifar10_1" / f"cifar10.1_{ver}_labels.npy", lab.astype(np.int32))
    _images(root, "cinic10", {"train": n_small, "valid": n_small, "test": n_small}, rng, seed)
    _images(root, "imagenet_far", {"test": n_small}, rng, seed)
    _images(root, "svhn", {"test": n_small}, rng, seed)
    _images(root, "fashion_mnist", {"train": n_small, "test": n_small}, rng, seed, 28, 1)
    if cifar10_c:
        from .corruptions import generate
        _stamp(root / "cifar10_c", "cifar10_c", seed)
        generate(indices=np.arange(min(4, n_train)), root=root, seed=seed)
    _imagenet_human(root, rng, seed)
    _imagenet_real(root, rng, seed)
    for name in ("cifar10_1", "imagenet_human"):
        _record_files(root / name)
    _record_files(root / "imagenet_real", npz=True)  # raw release files, not prepared splits
    return root


def _record_files(folder: Path, npz: bool = False) -> None:
    """Record the sha256 of the synthetic raw files (they take precedence over the canonical);
    ``.npz`` files only with ``npz`` (elsewhere they are prepared splits, checked by array)."""
    from .fetch import update_provenance
    from .._io import sha256_file
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
             if p.is_file() and not p.name.startswith("PROVENANCE") and (npz or p.suffix != ".npz")}
    update_provenance(folder, files=files)


def write_fake_cifar10_batches(path: str | os.PathLike, seed: int = 0, per_train_batch: int = 2,
                               n_test: int = 10) -> tuple[dict[str, np.ndarray], Path]:
    """A fake canonical ``cifar-10-batches-py`` folder (default 5x2 train + 10 test = 20 images).

    Same structure as the real one (dict with bytes keys, ``data`` uint8 [N, 3072] in CHW row
    order, ``labels`` list) but md5s differ, so convert it with ``check_md5=False``. Returns the
    expected HWC arrays and the folder.
    """
    rng = np.random.default_rng(seed)
    folder = Path(path) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, list] = {"train_images": [], "train_labels": [], "test_images": [],
                               "test_labels": []}
    batches = [(f"data_batch_{i}", per_train_batch, "train") for i in range(1, 6)] + \
              [("test_batch", n_test, "test")]
    for fname, n, split in batches:
        lab = rng.integers(0, 10, n)
        img = synthetic_images(lab, rng)
        data = img.transpose(0, 3, 1, 2).reshape(n, 3072)
        batch = {b"batch_label": f"fake {fname}".encode(), b"labels": [int(x) for x in lab],
                 b"data": data, b"filenames": [f"img_{k}.png".encode() for k in range(n)]}
        (folder / fname).write_bytes(pickle.dumps(batch, protocol=3))
        expect[f"{split}_images"].append(img)
        expect[f"{split}_labels"].append(lab.astype(np.int64))
    (folder / "batches.meta").write_bytes(pickle.dumps(
        {b"label_names": [c.encode() for c in
                          ("airplane automobile bird cat deer dog frog horse ship truck").split()],
         b"num_cases_per_batch": per_train_batch, b"num_vis": 3072}, protocol=3))
    return {k: np.concatenate(v) for k, v in expect.items()}, folder
