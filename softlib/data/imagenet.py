"""ImageNet-side label data: Shankar et al.'s human-accuracy release and ImageNet ReaL.

``load_imagenet_human`` reads the authors' pickle through the restricted unpickler (plain
containers only) and validates the schema described in shared/reference/imagenet_human_schema.md,
failing with an error that names the file and the offending key. ``load_imagenet_real`` returns
ReaL's multi-labels and timm's result tables as pandas DataFrames.
"""
from __future__ import annotations

import json
import os
from typing import Any

from .errors import DataCorruptError
from .registry import IMAGENET_HUMAN_FILE
from .safe_pickle import restricted_load
from .locate import dataset_dir, missing_error

HUMAN_USERS = ("human_a", "human_b", "human_c", "human_d", "human_e")
REQUIRED_KEYS = ("labeled_images", "annot_data", "image_map", "image_labels", "split_wnids",
                 "wnid_map")
SPLIT_KEYS = (("organism",), ("organism", "dog"), ("object",))
VAL_PREFIX = "ILSVRC2012_val_"
TIMM_TABLES = {"imagenet": "timm_results-imagenet.csv",
               "imagenet-real": "timm_results-imagenet-real.csv",
               "imagenetv2-matched-frequency": "timm_results-imagenetv2-matched-frequency.csv"}


def validate_imagenet_human(data: Any, where: str = "human_accuracy pickle") -> None:
    """Raise DataCorruptError (naming ``where`` and the key) unless ``data`` fits the schema."""
    def bad(msg: str) -> DataCorruptError:
        return DataCorruptError(f"{where}: {msg}")

    if not isinstance(data, dict):
        raise bad(f"expected a dict at the top level, found {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise bad(f"missing top-level keys {missing}; found {sorted(map(str, data))}")
    images = list(data["labeled_images"])
    if not images or not all(isinstance(i, str) for i in images):
        raise bad("'labeled_images' must be a non-empty collection of image id strings")
    for key in ("image_map", "image_labels", "wnid_map"):
        if not isinstance(data[key], dict):
            raise bad(f"'{key}' must be a dict keyed by image id")
        absent = [i for i in images if i not in data[key]]
        if absent:
            raise bad(f"'{key}' lacks {len(absent)} labelled images (e.g. {absent[0]!r})")
    for i in images:
        im = data["image_map"][i]
        if not isinstance(im, dict) or "problematic" not in im or not isinstance(im["problematic"], bool):
            raise bad(f"image_map[{i!r}] must be a dict with a bool 'problematic'")
        lab = data["image_labels"][i]
        if not isinstance(lab, dict) or not isinstance(lab.get("correct"), (list, set, tuple, frozenset)):
            raise bad(f"image_labels[{i!r}] must be a dict with a 'correct' list of WordNet ids")
        if not isinstance(data["wnid_map"][i], str):
            raise bad(f"wnid_map[{i!r}] must be a WordNet id string")
    sw = data["split_wnids"]
    if not isinstance(sw, dict) or any(k not in sw for k in SPLIT_KEYS):
        raise bad(f"'split_wnids' must be a dict with keys {list(SPLIT_KEYS)}")
    annot = data["annot_data"]
    if not isinstance(annot, dict):
        raise bad("'annot_data' must be a dict keyed by user name")
    absent_users = [u for u in HUMAN_USERS if u not in annot]
    if absent_users:
        raise bad(f"'annot_data' lacks the human users {absent_users}")
    for user, per in annot.items():
        if not isinstance(per, dict):
            raise bad(f"annot_data[{user!r}] must be a dict keyed by image id")
        for i, a in per.items():
            if not isinstance(a, dict) or not isinstance(a.get("label"), str):
                raise bad(f"annot_data[{user!r}][{i!r}] must be a dict with a 'label' string")
            if user in HUMAN_USERS:
                ei = a.get("extra_info")
                if not isinstance(ei, dict) or not all(isinstance(ei.get(t), str)
                                                       for t in ("start_time", "end_time")):
                    raise bad(f"annot_data[{user!r}][{i!r}]['extra_info'] must hold "
                              f"'start_time' and 'end_time' strings")


def load_imagenet_human(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Shankar et al.'s ``human_accuracy`` release as plain Python containers, schema-checked."""
    d = dataset_dir("imagenet_human", root)
    p = d / IMAGENET_HUMAN_FILE
    if not p.exists():
        raise missing_error("imagenet_human", p, root)
    with open(p, "rb") as f:
        data = restricted_load(f, source=str(p))
    validate_imagenet_human(data, str(p))
    return data


def is_val_image(image_id: str) -> bool:
    """ImageNet val ids start with 'ILSVRC2012_val_'; every other id is an ImageNetV2 image."""
    return image_id.startswith(VAL_PREFIX)


def load_imagenet_real(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """ReaL labels and timm results: ``{'real': list[list[int]] (50,000), 'results': {name: DataFrame}}``.

    ``real[i]`` lists the ReaL class ids of ``ILSVRC2012_val_{i+1:08d}.JPEG`` (empty: excluded).
    ``results`` maps 'imagenet', 'imagenet-real', 'imagenetv2-matched-frequency' to timm's tables
    (``param_count`` parsed as a float; it is quoted with thousands separators upstream).
    """
    import pandas as pd
    d = dataset_dir("imagenet_real", root)
    need = [d / "real.json"] + [d / f for f in TIMM_TABLES.values()]
    missing = [p for p in need if not p.exists()]
    if missing:
        raise missing_error("imagenet_real", missing, root)
    p = d / "real.json"
    try:
        real = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataCorruptError(f"{p}: not valid JSON ({e})") from e
    if not isinstance(real, list) or not all(isinstance(r, list) for r in real):
        raise DataCorruptError(f"{p}: expected a list of label lists")
    if not all(isinstance(c, int) and 0 <= c < 1000 for r in real for c in r):
        raise DataCorruptError(f"{p}: ReaL class ids must be integers in 0..999")
    results = {}
    for key, fname in TIMM_TABLES.items():
        fp = d / fname
        try:
            df = pd.read_csv(fp, thousands=",")
        except Exception as e:
            raise DataCorruptError(f"{fp}: cannot parse the CSV ({e})") from e
        for col in ("model", "top1", "top5"):
            if col not in df.columns:
                raise DataCorruptError(f"{fp}: missing column {col!r}; found {list(df.columns)}")
        results[key] = df
    out: dict[str, Any] = {"real": real, "results": results, "path": d}
    for f in ("timm_imagenet_synsets.txt",):
        if (d / f).exists():
            out["synsets"] = (d / f).read_text().split()
    return out


GOLDEN_FILES = {"experts": "golden.npz", "raters": "raters_golden.npz"}
#: the answer codes of :func:`load_real_golden`, in the order of the release's one-hot axis
ANSWERS = ("no", "maybe", "yes")


def _answers(path, t, n: int | None) -> Any:
    """One-hot ``[R, N, 3]`` votes -> int8 ``[R, N]`` answer codes (-1: not asked)."""
    import numpy as np
    if t.ndim != 3 or t.shape[2] != 3 or (n is not None and t.shape[1] != n):
        raise DataCorruptError(f"{path}: 'tensor' must have shape [raters, questions, 3], got "
                               f"{list(t.shape)}")
    if not np.isin(t, (0, 1)).all() or (t.sum(2) > 1).any():
        raise DataCorruptError(f"{path}: 'tensor' must be one-hot no/maybe/yes votes (0/1, at "
                               "most one per rater and question)")
    codes = t.argmax(2).astype(np.int8)
    codes[t.sum(2) == 0] = -1
    return codes


def _read_votes(path, n: int | None = None) -> tuple[Any, Any, Any]:
    """One ReaL votes file: int8 answer codes [R, N] (:func:`_answers`; ``n`` questions where
    known), ``info`` [N, 2] and ``ids`` [R], each checked against the others."""
    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as z:
            t, info, ids = z["tensor"], z["info"], z["ids"]
    except (OSError, ValueError, KeyError) as e:
        raise DataCorruptError(f"{path}: cannot read 'tensor', 'info' and 'ids' ({e})") from e
    codes = _answers(path, t, n)
    del t  # the release's dense float64 one-hot tensor: the largest array here
    if info.shape != (codes.shape[1], 2) or len(ids) != codes.shape[0]:
        raise DataCorruptError(f"{path}: 'info' must be [questions, 2] and 'ids' one per rater; "
                               f"got {list(info.shape)} and {len(ids)}")
    return codes, info, np.asarray(ids)


def load_real_golden(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """ReaL's golden questions (Beyer et al. 2020): ``experts`` int8 [5, N] and ``raters`` int8
    [R, N] answers (0 no, 1 maybe, 2 yes, -1 not asked; :data:`ANSWERS`), ``info`` [N, 2]
    (val file name, proposed class id), ``expert_ids``, ``rater_ids``. Each question asks
    whether a class fits an image; the experts' answers are the reference for the raters'."""
    import numpy as np
    d = dataset_dir("imagenet_real", root)
    paths = {k: d / f for k, f in GOLDEN_FILES.items()}
    missing = [p for p in paths.values() if not p.exists()]
    if missing:
        raise missing_error("imagenet_real", missing, root,
                            note="the golden-question files are optional parts of ReaL's release")
    out: dict[str, Any] = {"path": d}
    info = None
    for key, p in paths.items():
        codes, inf, ids = _read_votes(p, None if info is None else len(info))
        if info is not None and not np.array_equal(inf, info):
            raise DataCorruptError(f"{p}: its questions ('info') differ from those of "
                                   f"{paths['experts']}")
        info = inf
        out[key], out[f"{key[:-1]}_ids"] = codes, ids
    out["info"] = info
    return out


def load_real_votes(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """ReaL's crowd votes on every (image, class) question it asked (``raters.npz``):
    ``raters`` int8 [R, N] answers coded as in :func:`load_real_golden`, ``info`` [N, 2] (val
    file name, proposed class id), ``rater_ids``. The release stores them as a dense float64
    one-hot tensor (about 0.4 GB in memory while it is read)."""
    p = dataset_dir("imagenet_real", root) / "raters.npz"
    if not p.exists():
        raise missing_error("imagenet_real", p, root,
                            note="raters.npz is an optional part of ReaL's release")
    codes, info, ids = _read_votes(p)
    return {"raters": codes, "info": info, "rater_ids": ids, "path": p}
