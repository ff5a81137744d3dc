"""softlib's data layer: every dataset's source, verification, prepared format and label views.

    from softlib import data
    train = data.load("cifar10", "train")          # ImageSet: uint8 NHWC images, int64 labels
    h = data.load_cifar10h()                        # HumanLabels: counts, probs [10000, 10]

Data lives under ``softlib.paths.data_root()`` (``$SOFTLIB_DATA``). ``load`` never downloads;
``fetch`` (or ``python -m softlib.data fetch NAME``) does. See CONTRIBUTING.md for the layout.
"""
from . import splits, views
from .errors import DataCorruptError, DataError, DataMissingError
from .fetch import fetch
from .imagenet import load_imagenet_human, load_imagenet_real, load_real_golden, load_real_votes
from .registry import CIFAR10_CLASSES, CORRUPTIONS, SEVERITIES, SPECS, get_spec
from .store import (HumanLabels, ImageSet, available, dataset_dir, info, load, load_cifar10_1_labels,
                    load_cifar10h, load_cifar10h_raw, pixel_origin, provenance, verify)

DATASETS = tuple(SPECS)

__all__ = ["load", "load_cifar10h", "load_cifar10_1_labels", "load_cifar10h_raw",
           "load_imagenet_human", "load_imagenet_real", "load_real_golden", "load_real_votes",
           "available", "pixel_origin", "provenance", "verify", "info", "fetch", "dataset_dir",
           "ImageSet", "HumanLabels", "DataError", "DataMissingError", "DataCorruptError",
           "CIFAR10_CLASSES", "CORRUPTIONS", "SEVERITIES", "DATASETS", "get_spec", "splits",
           "views"]
