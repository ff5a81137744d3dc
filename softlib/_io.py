"""Small file helpers shared by the data layer and the results cache.

Every write goes to a temporary file in the target folder and is moved into place with
``os.replace``, so an interrupted run leaves either the old file or the new one, never half.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_array(a: np.ndarray) -> str:
    """SHA-256 of an array's raw C-order bytes (stable across npz rewrites, unlike file hashes)."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file under the process umask (``mkstemp``'s is 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds,
    with the mode a file written directly would have had (not the temporary file's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix + ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _new_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npz(path: str | os.PathLike, compressed: bool = True, **arrays: np.ndarray) -> None:
    """Atomically write arrays to ``path`` (an .npz readable with ``allow_pickle=False``)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def exit_with(main: Any) -> None:
    """Exit with ``main()``'s status; a reader that closes the pipe early (``... | head``) ends
    the command quietly, as ``ls | head`` does, instead of with a BrokenPipeError traceback."""
    import sys
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # stdout is gone: point it at devnull so the interpreter's own final flush cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 141  # 128 + SIGPIPE, what a shell reports for a pipe closed by its reader
    sys.exit(status)
