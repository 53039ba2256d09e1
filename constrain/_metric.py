r"""Projections in a diagonal metric: :math:`P^D_C(z) = \arg\min_{y \in C} \tfrac12 \|y - z\|_D^2`,
:math:`\|v\|_D^2 = \sum_i d_i v_i^2` with every :math:`d_i > 0`, row by row.

A diagonally preconditioned optimizer (Adam, RMSprop, Adagrad) steps :math:`w - D^{-1} g`; projecting
that step in :math:`\|\cdot\|_D` is projected (preconditioned) gradient descent, whose fixed points
are exactly the constrained optima. The Euclidean projection after such a step is not: its fixed
points move with :math:`D`.

* L1 ball :math:`\|y\|_1 \le r`: :math:`y_i = \operatorname{sign}(z_i) \max(|z_i| - \tau / d_i, 0)`,
  with :math:`\tau = 0` inside the ball, else the root of
  :math:`\phi(\tau) = \sum_i \max(|z_i| - \tau/d_i, 0) = r`. :math:`\phi` is convex, piecewise linear
  and decreasing, so Newton's method from :math:`\tau = 0`,
  :math:`\tau \leftarrow (\sum_{S} |z_i| - r) / \sum_{S} d_i^{-1}` over the current support
  :math:`S = \{i : d_i |z_i| > \tau\}`, increases monotonically, never overshoots, and stops
  exactly when the support stops changing: :math:`\tau` is then exact (expected O(n) per row, a
  few passes; at most n + 1).
* Affine :math:`A y = c` (:math:`V` an orthonormal basis of the row space of :math:`A`,
  :math:`w_0` a feasible point): :math:`y = z - D^{-1} V^\top (V D^{-1} V^\top)^{-1} (V z - V w_0)`,
  the same point as :math:`z - D^{-1} A^\top (A D^{-1} A^\top)^{-1} (A z - c)` for a full-rank
  :math:`A`, and also defined for a rank-deficient consistent one.
* Orthant: separable, so the metric changes nothing: :math:`\max(z, 0)`.

Both maps are differentiable (autograd through the exact formulas on the final support); with
:math:`D = I` they are the Euclidean projections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from constrain._checks import LOW_PRECISION, Radius, check_finite, check_radius, check_tensor
from constrain._orthant import project_nonnegative

if TYPE_CHECKING:
    from constrain._affine import AffineFactor


def _check_metric(d: Tensor, x: Tensor, name: str = "d") -> Tensor:
    """``d`` broadcast to ``x``'s shape, on its device and dtype; every entry positive and finite."""
    return _check_positive_metric(_broadcast_metric(d, x, name), name)


def _broadcast_metric(d: Tensor, x: Tensor, name: str = "d") -> Tensor:
    """``d`` broadcast to ``x``'s shape, on its device and dtype (a clear error when it does not broadcast)."""
    d = check_tensor(d, name)
    try:
        return torch.broadcast_to(d.to(device=x.device, dtype=x.dtype), x.shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(d.shape)} does not broadcast to x's shape {tuple(x.shape)}: give one positive "
            f"weight per entry of x (e.g. the optimizer's denominator sqrt(v) + eps)."
        ) from None


def _check_positive_metric(d: Tensor, name: str = "d") -> Tensor:
    """``d`` itself, after checking that every entry is positive and finite (a metric)."""
    if d.numel() and not bool(((d > 0) & torch.isfinite(d)).all()):
        raise ValueError(
            f"every entry of {name} must be positive and finite (a metric); got min {float(d.min()):g}. "
            f"Add a small epsilon, as Adam does (sqrt(v) + eps)."
        )
    return d


def l1_ball_metric_threshold(x: Tensor, d: Tensor, radius: Radius = 1.0) -> Tensor:
    r"""The exact :math:`\tau \ge 0` of :func:`project_l1_ball_metric` for each row (shape ``x.shape[:-1] + (1,)``),
    without gradient; 0 for rows inside the ball."""
    x, d = x.detach(), d.detach()
    r = check_radius(radius, x, x.shape[:-1]).detach()
    a, inv = x.abs(), d.reciprocal()
    key = a * d  # entry i is in the support while tau < d_i |x_i|
    tau = torch.zeros_like(r)
    outside = a.sum(-1, keepdim=True) > r
    if not bool(outside.any()):
        return tau
    support = torch.ones_like(a, dtype=torch.bool)
    for _ in range(x.shape[-1] + 1):
        # Newton's step from the left on phi(tau) = r: exact on the current support; in float64 for the sums.
        total = torch.where(support, a, 0).sum(-1, keepdim=True, dtype=torch.float64)
        weight = torch.where(support, inv, 0).sum(-1, keepdim=True, dtype=torch.float64)
        new_tau = ((total - r.double()) / weight.clamp_min(torch.finfo(torch.float64).tiny)).clamp_min(0)
        new_tau = torch.where(outside, new_tau, 0)
        new_support = (key.double() > new_tau) & support
        tau = new_tau.to(x.dtype)
        if torch.equal(new_support, support):
            break
        support = new_support
    return tau


def project_l1_ball_metric(x: Tensor, d: Tensor, radius: Radius = 1.0) -> Tensor:
    r""":math:`\arg\min_{\|y\|_1 \le r} \sum_i d_i (y_i - x_i)^2` for each row of ``x`` (the last dimension).

    ``d``: positive weights broadcastable to ``x``; ``radius``: a positive float or one per row.
    Differentiable in ``x`` (and ``d``): the exact formula on the final support. float16 / bfloat16
    are computed in float32.
    """
    x = check_tensor(x)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (the rows to project); got a 0-d tensor.")
    if x.dtype in LOW_PRECISION:
        return project_l1_ball_metric(x.float(), d.float() if isinstance(d, Tensor) else d, radius).to(x.dtype)
    d = _check_metric(d, x)
    if x.numel():
        check_finite(x.sum(-1))
    r = check_radius(radius, x, x.shape[:-1])
    tau = l1_ball_metric_threshold(x, d, r.squeeze(-1))
    with torch.no_grad():
        support = (x.abs() * d > tau) & (tau > 0)
        inside = tau == 0
    # tau again, with gradient, from the exact support: (sum_S |x| - r) / sum_S 1/d
    inv = d.reciprocal()
    total = torch.where(support, x.abs(), 0).sum(-1, keepdim=True)
    weight = torch.where(support, inv, 0).sum(-1, keepdim=True)
    tau_g = torch.where(inside, 0, (total - r) / torch.where(inside, 1, weight))
    y = torch.where(support, x - torch.sign(x) * tau_g * inv, 0)
    y = torch.where(inside, x, y)
    return _pull_inside(y, r)


def _pull_inside(y: Tensor, r: Tensor) -> Tensor:
    """Rows that rounding left a few ulps outside the ball, scaled back onto it (a constant factor)."""
    with torch.no_grad():
        total = y.abs().sum(-1, keepdim=True, dtype=torch.float64)
        scale = torch.where(total > r.double(), r.double() / total, 1.0).to(y.dtype)
    return y * scale


def _rows_of(x: Tensor, n: int) -> Tensor:
    """``x`` as a tensor of rows of ``n`` entries (``A``'s columns); a clear error for any other shape."""
    x = check_tensor(x)
    if x.dim() == 0 or x.shape[-1] != n:
        raise ValueError(f"x has shape {tuple(x.shape)} but A has {n} columns: the last dimension of x must be {n}.")
    return x


def project_affine_metric(x: Tensor, d: Tensor, row_basis: Tensor, particular: Tensor) -> Tensor:
    r""":math:`\arg\min_{A y = c} \sum_i d_i (y_i - x_i)^2` for each row of ``x`` (shape ``(..., n)``), given the
    factorization of :math:`A y = c`: ``row_basis`` :math:`V` (k, n) with orthonormal rows spanning the row
    space of :math:`A`, and ``particular`` :math:`w_0` (n,) with :math:`A w_0 = c` (see
    ``constrain.AffineFactor``; :func:`project_metric` takes an ``Affine`` set).

    :math:`y = x - D^{-1} V^\top (V D^{-1} V^\top)^{-1} (V x - V w_0)`: one k x k solve per row.
    """
    x = _rows_of(x, row_basis.shape[-1])
    if x.dtype in LOW_PRECISION:
        return project_affine_metric(x.float(), d, row_basis, particular).to(x.dtype)
    d = _check_metric(d, x)
    if x.numel():
        check_finite(x.sum(-1))
    V = row_basis.to(device=x.device, dtype=x.dtype)
    return _affine_metric_step(x, d, V, V @ particular.to(device=x.device, dtype=x.dtype))


def _affine_metric_step(x: Tensor, d: Tensor, V: Tensor, offset: Tensor) -> Tensor:
    r""":math:`x - D^{-1} V^\top (V D^{-1} V^\top)^{-1} (V x - V w_0)` (``d`` already checked and broadcast)."""
    inv = d.reciprocal()
    residual = x @ V.T - offset  # (..., k)
    gram = (V * inv.unsqueeze(-2)) @ V.T  # V D^-1 V^T, (..., k, k), symmetric positive definite
    step = torch.linalg.solve(gram, residual.unsqueeze(-1)).squeeze(-1)  # (..., k)
    return x - inv * (step @ V)


def _project_affine_factor_metric(x: Tensor, d: Tensor, factor: AffineFactor) -> Tensor:
    """:func:`project_affine_metric` through ``factor``, on the columns its row space touches only (a tie
    of 8 weights among 262144 costs a few operations on 8 entries, not a pass over V)."""
    x = _rows_of(x, factor.size)
    if x.dtype in LOW_PRECISION:
        return _project_affine_factor_metric(x.float(), d, factor).to(x.dtype)
    d = _broadcast_metric(d, x)
    if x.numel():
        check_finite(x.sum(-1))
    columns, V, offset = factor.support_on(x)
    if columns is None:
        return _affine_metric_step(x, _check_positive_metric(d), V, offset)
    d_on = _check_positive_metric(d.index_select(-1, columns))  # d elsewhere weighs entries that do not move
    moved = _affine_metric_step(x.index_select(-1, columns), d_on, V, offset)
    return x.index_copy(-1, columns, moved)


def project_metric(constraint_set: object, x: Tensor, d: Tensor) -> Tensor:
    r"""The projection of each row of ``x`` onto ``constraint_set`` in the metric :math:`\|\cdot\|_D`.

    Supports ``L1Ball`` (weighted soft threshold), ``Affine`` (on ``vec``) and ``NonNegative``
    (unchanged by the metric); another set raises ``TypeError`` naming the ones supported.
    """
    from constrain.sets import Affine, L1Ball, NonNegative

    if isinstance(constraint_set, NonNegative):
        _check_metric(d, check_tensor(x))
        return project_nonnegative(x)
    if isinstance(constraint_set, L1Ball):
        return project_l1_ball_metric(x, d, constraint_set.radius)
    if isinstance(constraint_set, Affine):
        return _project_affine_factor_metric(x, d, constraint_set.factor)
    raise TypeError(
        f"project_metric supports L1Ball, Affine and NonNegative; got {type(constraint_set).__name__}. "
        f"Project in the Euclidean metric with constraint_set.project(x) instead."
    )
