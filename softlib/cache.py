"""A results cache keyed by the full configuration that produced the result.

Training runs, predictions and metrics are stored under ``<cache root>/<kind>/<key>/`` where the
key is a hash of the configuration (plus a format version). A rerun with the same configuration
loads the stored result; a changed parameter changes the key, so only what depends on it is
recomputed. An entry is written into a temporary folder and renamed into place as a whole, so an
interrupted run leaves no half-written entry and simply resumes.

An entry holds numpy arrays (``arrays.npz``, no pickle), JSON metadata (``meta.json``) and an
optional torch state dict (``model.pt``, loaded with ``weights_only=True``). A float32 array
whose every value is a float16 value (predictions rounded by ``logits_precision='float16'``) is
stored as float16, half the bytes, and read back as the same float32 array: lossless either way.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .paths import cache_root

FORMAT_VERSION = 1


class BudgetExhausted(RuntimeError):
    """A compute budget (``set_deadline``) ran out before a result that is not cached yet.
    ``kind`` and ``config``: that result's, where one entry was asked for (so a caller can say
    how it differs from what the cache holds: :meth:`ResultCache.nearest`)."""

    def __init__(self, message: str, kind: str | None = None,
                 config: dict[str, Any] | None = None):
        super().__init__(message)
        self.kind, self.config = kind, config


_deadline: float | None = None
_strict = False
_exempt = 0


def set_deadline(seconds_from_now: float | None, strict: bool = False) -> None:
    """Allow new computations for this many more seconds (``None``: no limit; 0: none at all).

    Cache hits are always served; a miss after the deadline raises :class:`BudgetExhausted`
    *before* its computation starts, so a budgeted run stops between jobs and the next run
    resumes from the cache. ``strict``: :func:`budget_exempt` work stops too (a check that must
    compute nothing at all).
    """
    global _deadline, _strict
    _deadline = None if seconds_from_now is None else time.monotonic() + float(seconds_from_now)
    _strict = bool(strict) and _deadline is not None


def check_budget(what: str = "a result", kind: str | None = None,
                 config: dict[str, Any] | None = None) -> None:
    """Raise :class:`BudgetExhausted` if the deadline set by :func:`set_deadline` has passed
    (inside :func:`budget_exempt` only under a strict deadline); ``kind`` and ``config``: the
    entry that would be computed, carried by the exception."""
    if (_deadline is not None and (_strict or not _exempt)
            and time.monotonic() >= _deadline):
        raise BudgetExhausted(f"compute budget spent before {what} could be computed; "
                              "rerun to continue from the cache", kind, config)


@contextmanager
def budget_exempt():
    """Computations that finish what is already here run past the deadline: e.g. evaluating a
    model whose weights are in this cache. A results bundle carries no weights, so stopping
    between a model and its evaluation would leave the next machine unable to evaluate it."""
    global _exempt
    _exempt += 1
    try:
        yield
    finally:
        _exempt -= 1


# Listeners told about every entry any ResultCache loads or saves (see ``record_access``).
_listeners: list[Callable[[str, str, str], None]] = []


@contextmanager
def record_access():
    """Collect ``(kind, key)`` of every entry loaded or saved by any ResultCache meanwhile.

    Yields a list (in first-use order, without repeats); ``python -m softlib.book compute``
    uses it to write which entries each section needs into the profile's manifest.
    """
    seen: dict[tuple[str, str], None] = {}

    def listen(action: str, kind: str, key: str) -> None:
        seen.setdefault((kind, key), None)

    out: list[tuple[str, str]] = []
    _listeners.append(listen)
    try:
        yield out
    finally:
        _listeners.remove(listen)
        out.extend(seen)


def config_key(kind: str, config: dict[str, Any]) -> str:
    """A short, stable hash of ``kind`` and a JSON-serialisable configuration."""
    canon = json.dumps({"kind": kind, "config": config, "format": FORMAT_VERSION},
                       sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:20]


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested configuration as ``{"train.lr": 0.1, ...}`` (lists stay whole)."""
    if not isinstance(config, dict):
        return {prefix: config}
    out: dict[str, Any] = {}
    for k, v in config.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def canonical_json(value: Any) -> str:
    """A JSON-able value as one string, key order aside (a tuple reads as the list a cache
    entry stores): two settings are the same when these are equal."""
    return json.dumps(value, sort_keys=True, default=str)


def _stored(a: Any) -> np.ndarray:
    """How an array is written: float32 as float16 where that loses nothing (every value,
    NaN and infinities included, survives the round trip), else unchanged."""
    a = np.asarray(a)
    if a.dtype == np.float32 and a.size:
        with np.errstate(over="ignore"):
            half = a.astype(np.float16)
        if np.array_equal(half.astype(np.float32), a, equal_nan=True):
            return half
    return a


def _loaded(a: np.ndarray) -> np.ndarray:
    """An array as read: float16 back to the float32 it was stored from (:func:`_stored`)."""
    return a.astype(np.float32) if a.dtype == np.float16 else a


@dataclass
class Entry:
    """One cached result: arrays, JSON-able metadata and an optional state dict."""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    state_dict: dict[str, Any] | None = None


class ResultCache:
    """Configuration-keyed, atomically written store of expensive results."""

    def __init__(self, root: str | os.PathLike | None = None,
                 on_access: Callable[[str, str, str], None] | None = None):
        self.root = cache_root(root)
        self.hits = 0
        self.misses = 0
        #: ``(kind, key)`` of every entry this cache has loaded or saved, in first-use order
        self.touched: dict[tuple[str, str], None] = {}
        #: optional ``on_access(action, kind, key)``, action 'load' or 'save'
        self.on_access = on_access

    def _touch(self, action: str, kind: str, config: dict[str, Any]) -> None:
        key = config_key(kind, config)
        self.touched.setdefault((kind, key), None)
        if self.on_access is not None:
            self.on_access(action, kind, key)
        for listen in list(_listeners):
            listen(action, kind, key)

    def path(self, kind: str, config: dict[str, Any]) -> Path:
        return self.root / kind / config_key(kind, config)

    def has(self, kind: str, config: dict[str, Any]) -> bool:
        return (self.path(kind, config) / "meta.json").exists()

    def load(self, kind: str, config: dict[str, Any]) -> Entry:
        d = self.path(kind, config)
        meta = json.loads((d / "meta.json").read_text())
        self._touch("load", kind, config)
        arrays: dict[str, np.ndarray] = {}
        if (d / "arrays.npz").exists():
            with np.load(d / "arrays.npz", allow_pickle=False) as z:
                arrays = {k: _loaded(z[k]) for k in z.files}
        state = None
        if (d / "model.pt").exists():
            import torch
            state = torch.load(d / "model.pt", map_location="cpu", weights_only=True)
        return Entry(arrays=arrays, meta=meta.get("meta", {}), state_dict=state)

    def save(self, kind: str, config: dict[str, Any], entry: Entry) -> Path:
        final = self.path(kind, config)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
        try:
            if entry.arrays:
                with open(tmp / "arrays.npz", "wb") as f:
                    np.savez(f, **{k: _stored(v) for k, v in entry.arrays.items()})
            if entry.state_dict is not None:
                import torch
                torch.save(entry.state_dict, tmp / "model.pt")
            # meta.json is written last: its presence marks a complete entry.
            (tmp / "meta.json").write_text(json.dumps(
                {"kind": kind, "config": config, "meta": entry.meta},
                indent=2, sort_keys=True, default=str))
            if final.exists():  # a concurrent or stale entry: replace it whole
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self._touch("save", kind, config)
        return final

    def nearest(self, kind: str, config: dict[str, Any]
                ) -> tuple[str, list[tuple[str, Any, Any]]] | None:
        """The cached entry of ``kind`` whose configuration differs least from ``config``:
        its key and the differing settings as ``(dotted path, config's value, entry's value)``;
        None if the cache holds no entry of ``kind``. Says why a result is missing: a changed
        parameter, or other data (a different data fingerprint)."""
        want = _flatten(config)
        best: tuple[str, list[tuple[str, Any, Any]]] | None = None
        folder = self.root / kind
        for meta in sorted(folder.glob("*/meta.json")) if folder.is_dir() else ():
            try:
                have = _flatten(json.loads(meta.read_text()).get("config", {}))
            except (OSError, ValueError):
                continue  # an unreadable entry is no candidate
            diff = [(k, want.get(k), have.get(k)) for k in sorted(set(want) | set(have))
                    if canonical_json(want.get(k)) != canonical_json(have.get(k))]
            if best is None or len(diff) < len(best[1]):
                best = (meta.parent.name, diff)
        return best

    def get_or_compute(self, kind: str, config: dict[str, Any],
                       compute: Callable[[], Entry], force: bool = False) -> Entry:
        """Return the cached entry for ``config``, computing and storing it on a miss."""
        if not force and self.has(kind, config):
            self.hits += 1
            return self.load(kind, config)
        check_budget(f"{kind} {config_key(kind, config)}", kind, config)
        entry = compute()
        self.misses += 1  # counted once computed: a training halted or interrupted is not
        self.save(kind, config, entry)
        return entry
