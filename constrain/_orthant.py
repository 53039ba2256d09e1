r"""Projection onto the non-negative orthant :math:`\{y : y \ge 0\}`."""

from __future__ import annotations

from torch import Tensor

from constrain._checks import check_finite, check_tensor


def project_nonnegative(x: Tensor) -> Tensor:
    r""":math:`\max(x, 0)` elementwise; any shape. Gradient: 1 where :math:`x \ge 0`, else 0 (torch.clamp's convention)."""
    x = check_tensor(x)
    if x.numel():
        check_finite(x.sum())
    return x.clamp_min(0)
