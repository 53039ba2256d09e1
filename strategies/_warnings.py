"""Warnings attributed to the user's line, however deep in a strategy or in torch they are raised."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch

_INTERNAL = tuple(str(Path(file).resolve().parent) + os.sep for file in (__file__, torch.__file__) if file)  # strategies/, torch/


def warn_at_caller(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """``warnings.warn(message, category)`` naming the first frame outside this package and torch: the user's
    call (``strategy.after_step()``, ``optimizer.step()``) that led here, whichever hooks and wrappers lie between
    (Python 3.12's ``skip_file_prefixes``, on every supported version)."""
    frame, level = sys._getframe(1), 2  # stacklevel=2 names this function's caller
    while frame.f_back is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
