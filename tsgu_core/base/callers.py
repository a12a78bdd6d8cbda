"""Where a warning should point: the user's line, not tsgu's or torch's.

>>> import warnings
>>> from tsgu_core.base.callers import user_stacklevel
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     warnings.warn("look here", UserWarning, stacklevel=user_stacklevel())
>>> caught[0].filename.startswith("<doctest")  # here the user is the doctest
True
"""

from __future__ import annotations

import os
import sys

import torch

__all__ = ["user_stacklevel"]

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_INTERNAL = tuple(
    path + os.sep
    for path in (
        os.path.dirname(os.path.abspath(torch.__file__)),  # torch.compile's disabled wrappers sit between user and tsgu
        os.path.join(_ROOT, "tsgu_core"),
        os.path.join(_ROOT, "tsgu_backends"),
    )
)


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning name the first frame outside tsgu and torch: the user's line.

    Call it as the ``stacklevel`` argument of the ``warnings.warn`` it serves: level 1 is that function.
    """
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level
