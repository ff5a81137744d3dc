"""The book's sections and where they live: the one leaf module the runner, the section header
and the claims ledger all read (so none of them imports another for it)."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"


def book_root() -> Path:
    """Where the book is executed and built: ``$SOFTLIB_BOOK_DIR``, else the repository."""
    env = os.environ.get("SOFTLIB_BOOK_DIR")
    return Path(env).expanduser().resolve() if env else REPO


def sections_dir() -> Path:
    return book_root() / "book" / "sections"


# section name -> notebook file, in book order (the compute page runs last: it shows the others' times)
SECTIONS = {
    "cifar10h_data": "01_cifar10h_data.py",
    "generalisation": "02_generalisation.py",
    "alternatives": "03_alternatives.py",
    "adversarial": "04_adversarial.py",
    "calibration_ood": "05_calibration_ood.py",
    "imagenet_humans": "06_imagenet_humans.py",
    # the claims ledger is the first page after the introduction (_toc.yml) but runs after the
    # sections whose recorded claims it reads (softlib/book/claims.py)
    "claims": "00_claims.py",
    "compute": "07_compute.py",
}
