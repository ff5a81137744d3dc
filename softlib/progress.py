"""Progress bars for long work, one policy for the whole package.

Plain-text tqdm bars (not the ipywidgets flavour, which papermill cannot store and a static
book cannot show). They go to stderr, which the rendered book leaves out, so a reader of the
book sees results while someone running a notebook or the runner sees progress.
``SOFTLIB_QUIET=1`` turns them off.
"""
from __future__ import annotations

import os
import sys

from tqdm.std import tqdm


def quiet() -> bool:
    return os.environ.get("SOFTLIB_QUIET", "") not in ("", "0")


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar (text), disabled under ``SOFTLIB_QUIET=1``, updating at most every 2 s."""
    kwargs.setdefault("disable", quiet())
    kwargs.setdefault("mininterval", 2.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def write(message: str) -> None:
    """A line on stderr that leaves any running bar intact (not silenced by SOFTLIB_QUIET:
    lines say what happened, bars how far it is)."""
    tqdm.write(message, file=sys.stderr)
