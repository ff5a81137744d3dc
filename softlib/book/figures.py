"""The book's plotting conventions, under the name the notebooks import (``F``).

They live in :mod:`softlib.figures`, where the study modules' own plot functions use them too
(the science library never imports ``softlib.book``)."""
from ..figures import *  # noqa: F401,F403
