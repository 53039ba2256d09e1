r"""The proximal step of a Lagrangian's multiplier term on weight rows in an L1 ball.

For a weight row :math:`x` in the ball :math:`g(x) = \|x\|_1 - r \le 0` the multiplier term is
:math:`\phi(g(x))` with :math:`\phi(g) = \lambda g` (``lagrangian``) or the PHR term
:math:`\phi(g) = \frac{1}{2\rho}(\max(0, \lambda + \rho g)^2 - \lambda^2)` (``augmented-lagrangian``).
Both are convex and nondecreasing in :math:`g`, so :math:`\phi(\|x\|_1 - r)` is convex but not smooth
where a coordinate is 0. After an optimizer step to :math:`z` with per-coordinate steps :math:`t`
(Adam: :math:`t_i = \eta / d_i`) its proximal step is

.. math:: x = \arg\min_x \phi(\|x\|_1 - r) + \tfrac12 \sum_i (x_i - z_i)^2 / t_i
          = S_{\mu t}(z), \qquad S_{\mu t}(z)_i = \operatorname{sign}(z_i)\max(|z_i| - \mu t_i, 0),

a soft threshold whose weight :math:`\mu = \phi'(g(x))` is the multiplier the term exerts at the result:
:math:`\mu = \lambda` for the plain term and the root of the increasing, piecewise linear

.. math:: h(\mu) = \mu - \lambda - \rho\,\big(\textstyle\sum_i (|z_i| - \mu t_i)^+ - r\big)

for the PHR term (:math:`\mu = 0` when :math:`h(0) \ge 0`), found exactly by sorting the breakpoints
:math:`|z_i| / t_i`. Its fixed points :math:`x = \operatorname{prox}(x - t \odot \nabla f(x))` are the points
where :math:`0 \in \nabla f(x) + \mu\,\partial\|x\|_1`, i.e. the minimizers of the Lagrangian in :math:`x`:
zero coordinates sit exactly at zero instead of chattering around it at the size of the step, as Adam's
step on the subgradient :math:`\mu\,\mathrm{sign}(x)` does.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def l1_multiplier_prox(z: Tensor, t: Tensor, lam: Tensor, radius: float | Tensor, rho: float = 0.0) -> Tensor:
    r"""``S_{mu t}(z)`` row by row (module doc): rows ``z`` (R, n), steps ``t`` (R, n) > 0, multipliers
    ``lam`` (R, 1) >= 0, ``radius`` a float or one per row (R, 1); ``rho = 0``: the plain term
    (:math:`\mu = \lambda`), ``rho > 0``: the PHR term."""
    if z.shape != t.shape or lam.shape != (*z.shape[:-1], 1):
        raise ValueError(f"l1_multiplier_prox: z {tuple(z.shape)} and t {tuple(t.shape)} must match, lam must be (rows, 1).")
    mu = lam if rho == 0 else _phr_weight(z.abs(), t, lam, radius, rho)
    return torch.sign(z) * (z.abs() - mu * t).clamp_min(0)


def _phr_weight(a: Tensor, t: Tensor, lam: Tensor, radius: float | Tensor, rho: float) -> Tensor:
    r""":math:`\mu \ge 0` with :math:`h(\mu) = 0`, :math:`a = |z|`: on :math:`[b_{k+1}, b_k]` (breakpoints
    :math:`b = a / t` in decreasing order) the active coordinates are the first :math:`k`, and
    :math:`h(\mu) = \mu (1 + \rho T_k) - \lambda - \rho (A_k - r)` with prefix sums :math:`A_k, T_k` of
    :math:`a, t`; :math:`h(b_k)` decreases in :math:`k`, so the root's piece is the number of positive
    :math:`h(b_k)`."""
    b, order = (a / t).sort(dim=-1, descending=True)
    a_sorted, t_sorted = a.gather(-1, order), t.gather(-1, order)
    zero = a.new_zeros(*a.shape[:-1], 1)
    A = torch.cat([zero, a_sorted.cumsum(-1)], -1)  # A[k]: the sum of the k largest breakpoints' |z|
    T = torch.cat([zero, t_sorted.cumsum(-1)], -1)
    h_at_b = b * (1 + rho * T[..., :-1]) - lam - rho * (A[..., :-1] - radius)  # h(b_k), first k-1 active
    k = (h_at_b > 0).sum(-1, keepdim=True)
    mu = (lam + rho * (A.gather(-1, k) - radius)) / (1 + rho * T.gather(-1, k))
    return mu.clamp_min(0)
