r"""Projection onto the non-negative orthant :math:`\{y : y \ge 0\}`."""

from __future__ import annotations

import torch
from torch import Tensor

from constrain._checks import check_finite, check_tensor


def project_nonnegative(x: Tensor) -> Tensor:
    r""":math:`\max(x, 0)` elementwise; any shape. Gradient: 1 where :math:`x \ge 0`, else 0 (torch.clamp's convention)."""
    x = check_tensor(x)
    if x.numel() and not bool(torch.isfinite(x.sum())):
        check_finite(x)  # NaN/Inf, or only a sum that overflows: the entries decide
    return x.clamp_min(0)
