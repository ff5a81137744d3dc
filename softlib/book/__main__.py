"""``python -m softlib.book``: see :mod:`softlib.book.runner`."""
import sys

from .runner import main

sys.exit(main())
