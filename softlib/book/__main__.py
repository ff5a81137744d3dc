"""``python -m softlib.book``: see :mod:`softlib.book.runner`."""
from .._io import exit_with
from .runner import main

exit_with(main)
