r"""Gradients of the kernels: ``torch.autograd.gradcheck`` in float64 and the closed-form Jacobians.

L1 ball / simplex, on the support S of y = P(x) with s = sign(y):
:math:`J_x = \operatorname{diag}(1_S) - s_S s_S^\top / |S|`, :math:`\partial y / \partial r = s_S / |S|`;
identity in x and zero in r for rows inside the ball. Affine: :math:`J = I - A^+ A`.
Orthant: diag(1[x > 0]). Inputs are generic (no ties, no entry at the threshold), where the
projection is differentiable and finite differences are meaningful.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from constrain import Affine, L1Ball, project_affine, project_l1_ball, project_nonnegative, project_simplex


def _generic(rows: int, n: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, n, generator=g, dtype=torch.float64) * scale).requires_grad_()


def _analytic_jacobian(y: torch.Tensor) -> torch.Tensor:
    """diag(|s|) - s s^T / |S| for one projected row y."""
    s = torch.sign(y)
    return torch.diag(s.abs()) - torch.outer(s, s) / s.abs().sum()


@pytest.mark.parametrize("kernel", [project_l1_ball, project_simplex], ids=["l1_ball", "simplex"])
def test_gradcheck_wrt_x_and_per_sample_radius(kernel) -> None:
    x = _generic(4, 7, seed=0, scale=2.0)
    radius = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)  # all rows outside
    assert gradcheck(kernel, (x, radius), eps=1e-6, atol=1e-8)
    assert gradcheck(lambda v: kernel(v, 1.3), (x,), eps=1e-6, atol=1e-8)


def test_gradcheck_l1_ball_rows_inside() -> None:
    x = _generic(3, 5, seed=1, scale=0.1)
    radius = (x.detach().abs().sum(-1) * 2).requires_grad_()
    assert gradcheck(project_l1_ball, (x, radius), eps=1e-6, atol=1e-8)
    y = project_l1_ball(x, radius)
    gx, gr = torch.autograd.grad(y.sum(), (x, radius))
    torch.testing.assert_close(gx, torch.ones_like(x))  # identity
    torch.testing.assert_close(gr, torch.zeros_like(radius))  # the radius does not move an inside row


def test_gradcheck_l1_ball_mixed_batch() -> None:
    """Some rows inside, some outside, in one batch, with a per-sample radius."""
    x = _generic(6, 5, seed=2)
    norms = x.detach().abs().sum(-1)
    factors = torch.tensor([0.3, 2.0, 0.6, 1.5, 0.1, 3.0], dtype=torch.float64)
    radius = (norms * factors).requires_grad_()
    assert gradcheck(project_l1_ball, (x, radius), eps=1e-6, atol=1e-8)
    # 3-d batch along dim 1 as well
    x3 = _generic(2, 5, seed=3).reshape(2, 5, 1).expand(2, 5, 3).contiguous().detach().requires_grad_()
    r3 = torch.tensor([[0.5, 1.0, 20.0], [30.0, 0.2, 1.0]], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda v, r: project_l1_ball(v, r, dim=1), (x3, r3), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("kernel", [project_l1_ball, project_simplex], ids=["l1_ball", "simplex"])
def test_jacobian_is_the_closed_form(kernel) -> None:
    x = _generic(1, 9, seed=4, scale=2.0).detach()[0]
    radius = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    y = kernel(x, radius)
    jac = torch.autograd.functional.jacobian(lambda v: kernel(v, radius.detach()), x)
    torch.testing.assert_close(jac, _analytic_jacobian(y.detach()))
    (dr,) = torch.autograd.grad(y, radius, grad_outputs=torch.eye(9, dtype=torch.float64)[2])
    s = torch.sign(y.detach())
    torch.testing.assert_close(dr, s[2] / s.abs().sum())


def test_gradcheck_affine() -> None:
    rng = np.random.default_rng(5)
    A, c = torch.from_numpy(rng.standard_normal((3, 6))), torch.from_numpy(rng.standard_normal(3))
    x = _generic(4, 6, seed=5)
    assert gradcheck(lambda v: project_affine(v, A, c), (x,), eps=1e-6, atol=1e-8)
    constraint = Affine(A, c)
    assert gradcheck(constraint.project, (x,), eps=1e-6, atol=1e-8)
    jac = torch.autograd.functional.jacobian(constraint.project, x.detach()[0])
    torch.testing.assert_close(jac, torch.eye(6, dtype=torch.float64) - torch.linalg.pinv(A) @ A)
    # a tying constraint spanning a (2, 3) weight
    tie = Affine.tie((2, 3), [[(0, 0), (1, 2)], [(0, 1), (1, 0), (1, 1)]])
    assert gradcheck(tie.project, (x,), eps=1e-6, atol=1e-8)


def test_gradcheck_nonnegative_away_from_zero() -> None:
    x = _generic(3, 6, seed=6)
    x = (x.detach() + 0.2 * torch.sign(x.detach())).requires_grad_()  # |x| >= 0.2
    assert gradcheck(project_nonnegative, (x,), eps=1e-6, atol=1e-8)
    (g,) = torch.autograd.grad(project_nonnegative(x).sum(), x)
    torch.testing.assert_close(g, (x.detach() > 0).double())


def test_low_precision_backward() -> None:
    x = _generic(2, 5, seed=7).detach().to(torch.bfloat16).requires_grad_()
    y = L1Ball(0.5).project(x)
    y.float().pow(2).sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()
