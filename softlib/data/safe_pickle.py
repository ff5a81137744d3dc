"""A restricted unpickler for outside pickle files (never ``pickle.load`` outside bytes).

Only plain containers and scalars can be rebuilt: ``dict``, ``list``, ``set``, ``frozenset``,
``tuple``, ``str``, ``int``, ``float``, ``bool``, ``None``, ``bytes``. Any other global (a
function such as ``os.system``, a class, ``copyreg`` reconstructors) is refused with
:class:`UnsafePickleError`, so loading cannot execute code. Callers that must read numpy arrays
from a *checksummed* file (the canonical CIFAR-10 batches) may allow numpy's array
reconstruction explicitly with ``allow=NUMPY_ARRAY_GLOBALS``.
"""
from __future__ import annotations

import io
import pickle
from typing import IO, Any, Iterable

from .errors import DataCorruptError

#: Builtins the default unpickler may rebuild (protocol 0-2 pickles name ``set``/``frozenset``
#: as globals; Python 2's ``__builtin__`` is mapped to ``builtins`` by ``fix_imports``).
SAFE_BUILTINS = frozenset({"dict", "list", "set", "frozenset", "tuple", "str", "int", "float",
                           "bool", "bytes", "bytearray"})

#: (module, name) pairs that numpy uses to pickle a plain ndarray and its dtype.
NUMPY_ARRAY_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


class UnsafePickleError(DataCorruptError, pickle.UnpicklingError):
    """The pickle asked for a global that the restricted unpickler does not allow."""


def _numpy_global(module: str, name: str) -> Any:
    import numpy as np
    if name == "_reconstruct":
        try:
            from numpy._core.multiarray import _reconstruct  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy.core.multiarray import _reconstruct
        return _reconstruct
    return getattr(np, name)


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` allows only :data:`SAFE_BUILTINS` (and ``allow``)."""

    def __init__(self, file: IO[bytes], *, allow: Iterable[tuple[str, str]] = (),
                 source: str = "<bytes>", **kwargs: Any):
        super().__init__(file, **kwargs)
        self._allow = frozenset(allow)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        if module in ("builtins", "__builtin__") and name in SAFE_BUILTINS:
            import builtins
            return getattr(builtins, name)
        if (module, name) in self._allow and (module, name) in NUMPY_ARRAY_GLOBALS:
            return _numpy_global(module, name)
        raise UnsafePickleError(
            f"{self._source}: refusing to unpickle global '{module}.{name}': only plain "
            f"containers and scalars ({', '.join(sorted(SAFE_BUILTINS))}, None) are allowed")


def restricted_loads(data: bytes, *, allow: Iterable[tuple[str, str]] = (),
                     source: str = "<bytes>", encoding: str = "ASCII") -> Any:
    """Unpickle ``data`` allowing only plain builtin containers (see module docstring)."""
    return restricted_load(io.BytesIO(data), allow=allow, source=source, encoding=encoding)


def restricted_load(file: IO[bytes], *, allow: Iterable[tuple[str, str]] = (),
                    source: str | None = None, encoding: str = "ASCII") -> Any:
    """Unpickle from an open binary file allowing only plain builtin containers."""
    src = source or getattr(file, "name", "<file>")
    try:
        return RestrictedUnpickler(file, allow=allow, source=str(src), encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError) as e:
        raise DataCorruptError(f"{src}: not a readable pickle ({type(e).__name__}: {e})") from e
