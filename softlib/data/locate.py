"""Where a dataset lives under the data root, and the one clear error when it is not there
(a leaf module: the loaders of :mod:`.store` and :mod:`.imagenet` both use it)."""
from __future__ import annotations

import os
from pathlib import Path

from ..paths import data_root
from .errors import DataMissingError
from .registry import get_spec


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """``<data root>/<name>`` (whether or not it exists)."""
    get_spec(name)
    return data_root(root) / name


def _root_note(root: str | os.PathLike | None) -> str:
    if root is not None and str(root) != "":
        return f"data root {data_root(root)} (passed as root=)"
    env = os.environ.get("SOFTLIB_DATA")
    if env:
        # the book runner copies its --data-root flag into SOFTLIB_DATA, so either may have set it
        return f"data root {data_root(None)} (SOFTLIB_DATA or --data-root)"
    return f"data root {data_root(None)} (default; SOFTLIB_DATA is not set)"


def missing_error(name: str, searched: Path | list[Path], root: str | os.PathLike | None = None,
                  split: str | None = None, note: str = "") -> DataMissingError:
    """The one clear 'dataset not present' error (returned, for the caller to raise)."""
    spec = get_spec(name)
    paths = searched if isinstance(searched, list) else [searched]
    what = f"dataset '{name}'" + (f" split '{split}'" if split else "")
    get = (f"run `python -m softlib.data fetch {name}` on a machine with internet "
           f"({spec.how})" if spec.fetchable else f"build it: {spec.how}")
    msg = (f"{what} ({spec.title}) is not available.\n"
           f"  searched: {', '.join(str(p) for p in paths)}\n"
           f"  {_root_note(root)}\n"
           f"  canonical source: {spec.url}\n"
           f"  to get it: {get};\n"
           f"  or point SOFTLIB_DATA at a folder that holds {name}/ in the prepared format\n"
           f"  (e.g. an offline mirror prepared by the project's developers).")
    if note:
        msg += f"\n  note: {note}"
    return DataMissingError(msg)
