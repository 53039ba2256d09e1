r"""Euclidean projections onto the simplex and the L1 ball, with their exact Jacobians.

Simplex :math:`\Delta_r = \{y : y \ge 0, \sum_i y_i = r\}`. Its projection is
:math:`P(v) = \max(v - \tau, 0)` where the threshold :math:`\tau` solves
:math:`\sum_i \max(v_i - \tau, 0) = r` (Held et al. 1974; Duchi et al. 2008).

L1 ball :math:`B_r = \{y : \|y\|_1 \le r\}`. Inside the ball :math:`P(x) = x`; outside,
:math:`P(x) = \operatorname{sign}(x) \max(|x| - \tau, 0)` with :math:`\tau` the simplex threshold
of :math:`|x|`. Both read as :math:`\operatorname{sign}(x)\max(|x| - \max(\tau, 0), 0)`.

Jacobian. On the support :math:`S = \{i : y_i \ne 0\}` with signs :math:`s = \operatorname{sign}(y)`,
:math:`J = \operatorname{diag}(1_S) - s_S s_S^\top / |S|` (identity for rows inside the ball), and
:math:`\partial y / \partial r = s_S / |S|`. It is applied in O(n) by a custom backward:
no differentiable sorting is needed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from constrain._checks import LOW_PRECISION, Radius, check_dim, check_finite, check_radius, check_tensor


def _newton_threshold(v: Tensor, radius: Tensor) -> Tensor:
    r"""Threshold :math:`\tau` of each row of ``v`` (shape ``(..., n)``) for the simplex of ``radius``.

    Newton's method on the convex, decreasing, piecewise-linear
    :math:`f(\tau) = \sum_i \max(v_i - \tau, 0) - r` (Michelot 1986): started left of the root,
    the iterates :math:`\tau_{k+1} = (\sum_{v_i > \tau_k} v_i - r) / |\{v_i > \tau_k\}|` increase
    monotonically and stop, exactly, once the support no longer changes.
    The start :math:`\max(\max_i v_i - r, (\sum_i v_i - r)/n)` lies left of the root.
    """
    n = v.shape[-1]
    tau = torch.maximum(v.amax(-1, keepdim=True) - radius, (v.sum(-1, keepdim=True) - radius) / n)
    count = None
    for _ in range(n + 1):
        above = v > tau
        new_count = above.sum(-1, keepdim=True)
        if count is not None and torch.equal(new_count, count):
            break
        count = new_count
        tau = (torch.where(above, v, 0).sum(-1, keepdim=True) - radius) / new_count
    return tau


def _sort_threshold(v: Tensor, radius: Tensor) -> Tensor:
    """Reference threshold by sorting (O(n log n)); used by tests and benchmarks."""
    u, _ = torch.sort(v, dim=-1, descending=True)
    cumsum = u.cumsum(-1) - radius
    ks = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    support = (u * ks > cumsum).sum(-1, keepdim=True)
    return cumsum.gather(-1, support - 1) / support.to(v.dtype)


_THRESHOLDS = {"newton": _newton_threshold, "sort": _sort_threshold}


class _SimplexOrBallProjection(torch.autograd.Function):
    """Forward: projection of each row. Backward: the exact Jacobian, applied in O(n)."""

    @staticmethod
    def forward(ctx, x: Tensor, radius: Tensor, ball: bool, method: str) -> Tensor:  # type: ignore[override]
        threshold = _THRESHOLDS[method]
        if ball:
            magnitude = x.abs()
            outside = magnitude.sum(-1, keepdim=True) > radius
            tau = threshold(magnitude, radius).clamp_min_(0).masked_fill_(~outside, 0)
            y = torch.sign(x) * (magnitude - tau).clamp_min_(0)
        else:
            outside = None
            y = (x - threshold(x, radius)).clamp_min_(0)
        ctx.ball = ball
        ctx.save_for_backward(y, outside)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        y, outside = ctx.saved_tensors
        signs = torch.sign(y)  # 1 on the simplex support; +-1 on the ball's support; 0 elsewhere
        size = signs.abs().sum(-1, keepdim=True).clamp_min_(1)
        radius_grad = (signs * grad).sum(-1, keepdim=True) / size
        grad_x = grad * signs.abs() - signs * radius_grad
        if ctx.ball:
            grad_x = torch.where(outside, grad_x, grad)
            radius_grad = radius_grad * outside
        return grad_x, radius_grad, None, None


def _project(x: Tensor, radius: Radius, dim: int, ball: bool, method: str) -> Tensor:
    x = check_tensor(x)
    dim = check_dim(x, dim)
    moved = x.movedim(dim, -1)
    r = check_radius(radius, moved, moved.shape[:-1])
    if moved.numel() == 0:
        if moved.shape[-1] == 0 and not ball and moved.shape[:-1].numel():
            raise ValueError("cannot project onto the simplex in 0 dimensions: it is empty for radius > 0.")
        return x.clone()
    compute_dtype = torch.float32 if x.dtype in LOW_PRECISION else x.dtype
    check_finite(moved.sum(-1) if not ball else moved.abs().sum(-1))
    y = _SimplexOrBallProjection.apply(moved.to(compute_dtype), r.to(compute_dtype), ball, method)
    return y.to(x.dtype).movedim(-1, dim)


def project_simplex(x: Tensor, radius: Radius = 1.0, dim: int = -1) -> Tensor:
    r"""Project each slice of ``x`` along ``dim`` onto :math:`\{y \ge 0, \sum y = r\}`.

    ``radius``: a positive float, or a tensor broadcastable to the other dimensions
    (one radius per row). Differentiable in ``x`` and ``radius`` with the exact Jacobian.
    float16 / bfloat16 inputs are computed in float32 and returned in their own dtype.
    """
    return _project(x, radius, dim, ball=False, method="newton")


def project_l1_ball(x: Tensor, radius: Radius = 1.0, dim: int = -1) -> Tensor:
    r"""Project each slice of ``x`` along ``dim`` onto :math:`\{y : \|y\|_1 \le r\}`.

    Rows inside the ball are returned unchanged (Jacobian: identity). ``radius`` as in
    :func:`project_simplex`. Differentiable in ``x`` and ``radius`` with the exact Jacobian.
    """
    return _project(x, radius, dim, ball=True, method="newton")


def l1_ball_threshold(x: Tensor, radius: Radius = 1.0, dim: int = -1) -> Tensor:
    r"""The soft-threshold :math:`\tau \ge 0` of each row: ``P(x) = sign(x) * relu(|x| - tau)``.

    Zero for rows inside the ball. Returned with the projected dimension kept (size 1) and
    not differentiated: use it to build the "threshold held constant" shortcut Jacobian.
    """
    x = check_tensor(x)
    dim = check_dim(x, dim)
    moved = x.movedim(dim, -1).detach()
    r = check_radius(radius, moved, moved.shape[:-1]).detach()
    if moved.numel() == 0:
        return torch.zeros_like(moved[..., :1]).movedim(-1, dim)
    magnitude = moved.abs()
    norms = magnitude.sum(-1, keepdim=True)
    check_finite(norms)
    tau = _newton_threshold(magnitude, r).clamp_min_(0).masked_fill_(norms <= r, 0)
    return tau.movedim(-1, dim)


def _project_sort(x: Tensor, radius: Radius = 1.0, dim: int = -1, ball: bool = True) -> Tensor:
    """Sort-based projection (O(n log n)): the reference for tests and benchmarks."""
    return _project(x, radius, dim, ball=ball, method="sort")
