"""Where softlib reads data and keeps results.

Both locations are environment variables so that the notebooks, the book runner and the tests
agree without passing paths around: ``SOFTLIB_DATA`` (prepared datasets) and ``SOFTLIB_CACHE``
(trained models, predictions, metrics).
"""
from __future__ import annotations

import os
from pathlib import Path


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "softlib"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The prepared-data root: ``root`` if given, else ``$SOFTLIB_DATA``, else the user cache."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("SOFTLIB_DATA")
    return Path(env).expanduser() if env else _user_cache_dir() / "data"


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """The results cache: ``root`` if given, else ``$SOFTLIB_CACHE``, else the user cache."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("SOFTLIB_CACHE")
    return Path(env).expanduser() if env else _user_cache_dir() / "results"
