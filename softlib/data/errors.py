"""The data layer's exceptions: one base class, one for absent data, one for damaged data."""
from __future__ import annotations


class DataError(Exception):
    """Base class of every error raised by :mod:`softlib.data`."""


class DataMissingError(DataError, FileNotFoundError):
    """A dataset (or one of its files) is not present under the data root."""


class DataCorruptError(DataError, ValueError):
    """A dataset file is present but wrong: checksum, truncation, shape, dtype or values."""
