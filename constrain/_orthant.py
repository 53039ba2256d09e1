r"""Projection onto the non-negative orthant :math:`\{y : y \ge 0\}`."""

from __future__ import annotations

import torch
from torch import Tensor

from constrain._checks import check_finite, check_tensor, plain


def project_nonnegative(x: Tensor) -> Tensor:
    r""":math:`\max(x, 0)` elementwise; any shape. Gradient: 1 where :math:`x \ge 0`, else 0 (torch.clamp's convention)."""
    x = check_tensor(x)
    values = plain(x)  # the data under torch.func transforms: the check holds under vmap
    if values.numel() and not bool(torch.isfinite(values.sum())):
        check_finite(values)  # NaN/Inf, or only a sum that overflows: the entries decide
    return x.clamp_min(0)
