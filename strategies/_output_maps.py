r"""Row maps onto a set: smooth (or piecewise smooth) maps :math:`\mathbb{R}^n \to C`, row by row.

They serve as output layers (appended with :func:`strategies._base.install_output_map`, so the
map holds on every input, seen or unseen) and, for the L1 ball, on the rows of a weight.

- non-negative, elementwise: :math:`\operatorname{softplus}(z) = \log(1 + e^z)`, :math:`e^z`, :math:`z^2`;
- L1 ball, radial: :math:`y = r z / \max(r, \|z\|_1)`, the identity inside the ball;
- L1 ball, the seed answer's "sigmoid + slack + simplex" map (:func:`sigmoid_simplex`).

Every value is in the set up to floating-point rounding (about ``n * eps * r`` for the L1 ball).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from constrain import project_simplex

RadiusLike = float | Tensor

#: Elementwise maps onto the orthant :math:`\{y \ge 0\}`, by name.
NONNEGATIVE_MAPS: dict[str, Callable[[Tensor], Tensor]] = {
    "softplus": F.softplus,
    "exp": torch.exp,
    "square": torch.square,
}


def radial_l1(z: Tensor, radius: RadiusLike = 1.0) -> Tensor:
    r"""Radial retraction onto the L1 ball, per row: :math:`y = r z / \max(r, \|z\|_1)`.

    The identity inside the ball; outside, the row is scaled onto the sphere (its direction is
    kept, so signs and zeros are kept too). ``radius``: a float or a tensor broadcastable to
    ``z.shape[:-1] + (1,)`` (one radius per row).
    """
    norm = z.abs().sum(-1, keepdim=True)
    if isinstance(radius, Tensor):
        return z * (radius / torch.maximum(norm, radius))
    return z * (radius / norm.clamp_min(radius))


def sigmoid_simplex(z: Tensor, radius: float = 1.0) -> Tensor:
    r"""The seed answer's map onto the L1 ball of radius :math:`r`, per row of ``z`` (shape ``(..., n)``).

    1. :math:`u = r\,(2\sigma(z) - 1) = r \tanh(z / 2) \in (-r, r)^n` (the answer's sigmoid to
       :math:`[-1, 1]`, scaled by :math:`r`);
    2. slack :math:`s = r - \|u\|_1` (the answer writes :math:`1 - \sum_i v_i` for :math:`r = 1`; we
       use absolute values and the radius, so that the augmented vector :math:`q = (|u|, |s|)` already
       lies on the simplex of radius :math:`r` whenever :math:`\|u\|_1 \le r`);
    3. :math:`p = P_{\Delta_r}(q)` with :func:`constrain.project_simplex` (exact Jacobian, no sorting);
    4. :math:`y = \operatorname{sign}(u) \odot p_{1..n}`, so :math:`\|y\|_1 = r - p_{n+1} \le r`.

    Rows with :math:`\|u\|_1 \le r` give :math:`y = u` (with the identity as Jacobian in :math:`u`:
    the columns of :math:`\partial q / \partial u` sum to zero); rows outside are shrunk by the
    simplex threshold. The map is continuous and ``y`` scales with ``r``.
    """
    u = radius * torch.tanh(0.5 * z)
    slack = radius - u.abs().sum(-1, keepdim=True)
    p = project_simplex(torch.cat([u.abs(), slack.abs()], -1), radius)
    return torch.sign(u) * p[..., :-1]


def guard_nonfinite(strategy: Any, label: str, row_map: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``row_map`` as the output layer of ``strategy`` for the constraint ``label``: when the map refuses
    rows holding NaN or Inf (the projection kernels check at no extra cost), raise ``FloatingPointError``
    naming the step and the constraint, or, with ``on_nonfinite="skip"``, pass the rows through so
    that the loss sees them and the step is skipped. Finite rows cost nothing more."""

    def guarded(rows: Tensor, *bound: Any) -> Tensor:
        try:
            return row_map(rows, *bound)
        except ValueError:
            if bool(torch.isfinite(rows).all()):
                raise
            if strategy.on_nonfinite == "skip":
                return rows
            raise FloatingPointError(
                f"strategy {strategy.name!r}: the model's outputs contain NaN or Inf at step {strategy.steps}, so the "
                f"output layer of {label} cannot map them. Find where they come from "
                f"(torch.autograd.set_detect_anomaly), lower the learning rate, or pass on_nonfinite='skip' "
                f"to strategies.get to skip such steps."
            ) from None

    return guarded
