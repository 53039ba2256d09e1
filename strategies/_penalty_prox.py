r"""Proximal steps of the exact (L1) penalty on parameters, in the optimizer's diagonal metric.

After an optimizer step to :math:`z` with per-coordinate step :math:`t_i` (Adam: :math:`t_i = \eta / d_i`,
:math:`d_i = \sqrt{\hat v_i} + \epsilon`; SGD: :math:`t_i = \eta`), the proximal step of the penalty
:math:`\mu P` is

.. math:: x = \arg\min_x \mu P(x) + \tfrac12 \sum_i (x_i - z_i)^2 / t_i .

Its fixed points :math:`x = \operatorname{prox}(x - t \odot \nabla f(x))` are the minimizers of
:math:`f + \mu P` for any positive :math:`t`, and for :math:`\mu` above the largest optimal multiplier
those are the constrained minimizers (the penalty is exact). The subgradient of :math:`\mu P` taken by
Adam instead chatters around the boundary at the size of the step.

* Orthant, :math:`P = \sum_i (-x_i)^+`: separable, :math:`x_i = z_i` if :math:`z_i \ge 0`, else
  :math:`\min(z_i + \mu t_i, 0)`.
* L1 ball, :math:`P = (\|x\|_1 - r)^+` per row: :math:`x = z` inside the ball; else the weighted soft
  threshold :math:`S_\mu(z)_i = \operatorname{sign}(z_i)\max(|z_i| - \mu t_i, 0)` when
  :math:`\|S_\mu(z)\|_1 \ge r` (the hinge is active with slope 1), otherwise the projection onto the
  ball in the metric :math:`1/t` (the hinge is at its kink; that projection's threshold is
  :math:`\le \mu`).
* Affine, :math:`P = \|A x - c\|_1`: by duality :math:`x = z - t \odot A^\top y` with
  :math:`y = \arg\min_{\|y\|_\infty \le \mu} \tfrac12 y^\top B y - y^\top (A z - c)`,
  :math:`B = A\,\mathrm{diag}(t) A^\top` (k x k). When the unconstrained solution :math:`B^+ (A z - c)`
  lies in the box (the case near convergence), :math:`x` is the projection onto :math:`A x = c` in the
  metric :math:`1/t`; otherwise the box-constrained least-squares problem is solved exactly by
  bounded-variable least squares (scipy, k unknowns, on the host).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from constrain import Affine, ConstraintSet, L1Ball, NonNegative, project_l1_ball_metric

#: The sets whose penalty has a proximal step here; others keep the subgradient form.
PROX_SETS = (NonNegative, L1Ball, Affine)


def has_prox(constraint_set: ConstraintSet) -> bool:
    """Whether :func:`exact_penalty_prox` handles ``constraint_set``."""
    return isinstance(constraint_set, PROX_SETS)


@torch.no_grad()
def exact_penalty_prox(constraint_set: ConstraintSet, z: Tensor, t: Tensor, mu: float) -> Tensor:
    r"""The proximal step of :math:`\mu P` at the rows ``z`` with per-entry steps ``t`` (same shape, > 0)."""
    if isinstance(constraint_set, NonNegative):
        return torch.where(z >= 0, z, (z + mu * t).clamp_max(0))
    if isinstance(constraint_set, L1Ball):
        return _prox_l1_hinge(constraint_set, z, t, mu)
    if isinstance(constraint_set, Affine):
        return _prox_affine_l1(constraint_set, z, t, mu)
    raise TypeError(f"no proximal step for {type(constraint_set).__name__}; the sets with one: NonNegative, L1Ball, Affine.")


def _prox_l1_hinge(constraint_set: L1Ball, z: Tensor, t: Tensor, mu: float) -> Tensor:
    r"""Rows inside: unchanged; else :math:`S_\mu(z)` if it is still outside the ball, else the metric projection."""
    shrunk = torch.sign(z) * (z.abs() - mu * t).clamp_min(0)
    outside = constraint_set.inequality(z) > 0  # (rows, 1)
    still_outside = constraint_set.inequality(shrunk) >= 0
    if not bool((outside & ~still_outside).any()):
        return torch.where(outside, shrunk, z)
    onto = project_l1_ball_metric(z, t.reciprocal(), constraint_set.radius)
    return torch.where(outside, torch.where(still_outside, shrunk, onto), z)


def _prox_affine_l1(constraint_set: Affine, z: Tensor, t: Tensor, mu: float) -> Tensor:
    """The dual box QP (module doc); float64 for the k x k system."""
    A = constraint_set.A.to(device=z.device, dtype=torch.float64)
    assert isinstance(constraint_set.c, Tensor)  # on a parameter, c is constant (Affine refuses the others there)
    c = constraint_set.c.to(device=z.device, dtype=torch.float64)
    flat, steps = z.reshape(-1).double(), t.reshape(-1).double()
    residual = A @ flat - c
    B = (A * steps) @ A.T
    y = torch.linalg.lstsq(B.cpu(), residual.cpu().unsqueeze(-1), driver="gelsd").solution.squeeze(-1).to(z.device)
    if float(y.abs().max()) > mu:
        y = _box_least_squares(B, residual, mu)
    return (flat - steps * (A.T @ y)).to(z.dtype).reshape(z.shape)


def _box_least_squares(B: Tensor, r: Tensor, mu: float) -> Tensor:
    r""":math:`\arg\min_{|y_i| \le \mu} \tfrac12 y^\top B y - r^\top y` for a positive semidefinite ``B`` with ``r`` in
    its range: with :math:`B = Q \Lambda Q^\top`, the objective is :math:`\tfrac12\|\Lambda^{1/2} Q^\top y - b\|^2` +
    const, :math:`b = \Lambda^{-1/2} Q^\top r` (zero eigenvalues dropped), solved by BVLS (finite, exact)."""
    from scipy.optimize import lsq_linear

    lam, Q = np.linalg.eigh(B.cpu().numpy())
    keep = lam > lam.max() * B.shape[0] * np.finfo(np.float64).eps
    root = np.sqrt(lam[keep])
    M = root[:, None] * Q[:, keep].T
    b = (Q[:, keep].T @ r.cpu().numpy()) / root
    result = lsq_linear(M, b, bounds=(-mu, mu), method="bvls", tol=1e-14)
    return torch.as_tensor(np.clip(result.x, -mu, mu), dtype=torch.float64, device=B.device)
