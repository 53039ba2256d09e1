"""Projections in a diagonal metric ||.||_D: against cvxpy with the weighted objective, against an
exact sort-based reference, KKT optimality, gradients, and the Euclidean case D = I."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constrain import Affine, L1Ball, NonNegative, project_affine, project_l1_ball, project_l1_ball_metric, project_metric


def _weighted_l1_reference(z: np.ndarray, d: np.ndarray, r: float) -> np.ndarray:
    """Exact weighted L1-ball projection by sorting the breakpoints d_i |z_i| (independent of the kernel)."""
    a = np.abs(z)
    if a.sum() <= r:
        return z.copy()
    order = np.argsort(-(a * d))
    key, cum_a, cum_w = (a * d)[order], np.cumsum(a[order]), np.cumsum(1.0 / d[order])
    tau = 0.0
    for k in range(len(z)):
        t = (cum_a[k] - r) / cum_w[k]
        if t < key[k]:
            tau = t
    return np.sign(z) * np.maximum(a - tau / d, 0.0)


def _cvxpy_weighted(z: np.ndarray, d: np.ndarray, constraints) -> np.ndarray:
    v = cp.Variable(z.shape[0])
    problem = cp.Problem(cp.Minimize(cp.sum(cp.multiply(d, cp.square(v - z)))), constraints(v))
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    assert problem.status == cp.OPTIMAL
    return np.asarray(v.value)


@pytest.mark.parametrize("n, scale", [(1, 3.0), (5, 0.3), (7, 2.0), (50, 1.0)])
def test_weighted_l1_ball_agrees_with_cvxpy_and_the_sort_reference(n: int, scale: float) -> None:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(6, n, generator=g, dtype=torch.float64) * scale
    d = torch.rand(6, n, generator=g, dtype=torch.float64) * 10 + 0.05
    y = project_l1_ball_metric(x, d, 1.0)
    for i in range(6):
        exact = _weighted_l1_reference(x[i].numpy(), d[i].numpy(), 1.0)
        assert np.abs(y[i].numpy() - exact).max() <= 1e-12 * max(1.0, np.abs(x[i].numpy()).max())
        solved = _cvxpy_weighted(x[i].numpy(), d[i].numpy(), lambda v: [cp.norm1(v) <= 1.0])
        assert np.abs(y[i].numpy() - solved).max() <= 1e-6


def test_weighted_affine_agrees_with_cvxpy_and_the_closed_form() -> None:
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 9, generator=g, dtype=torch.float64)
    A = torch.cat([A, A[:1] + A[1:2]])  # rank deficient, consistent
    c = A @ torch.randn(9, generator=g, dtype=torch.float64)
    x = torch.randn(4, 9, generator=g, dtype=torch.float64)
    d = torch.rand(4, 9, generator=g, dtype=torch.float64) + 0.1
    y = project_metric(Affine(A, c), x, d)
    A3, c3 = A[:3], c[:3]  # full-rank rows of the same system: the textbook formula
    for i in range(4):
        Dinv = torch.diag(1 / d[i])
        closed = x[i] - Dinv @ A3.T @ torch.linalg.solve(A3 @ Dinv @ A3.T, A3 @ x[i] - c3)
        assert torch.allclose(y[i], closed, atol=1e-12)
        solved = _cvxpy_weighted(x[i].numpy(), d[i].numpy(), lambda v: [A3.numpy() @ v == c3.numpy()])
        assert np.abs(y[i].numpy() - solved).max() <= 1e-7
    assert float((y @ A.T - c).abs().max()) <= 1e-12


def test_identity_metric_is_the_euclidean_projection() -> None:
    x = torch.randn(8, 6, dtype=torch.float64) * 2
    ones = torch.ones_like(x)
    assert torch.allclose(project_l1_ball_metric(x, ones, 0.7), project_l1_ball(x, 0.7), atol=1e-14)
    A, c = torch.randn(2, 6, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    assert torch.allclose(project_metric(Affine(A, c), x, ones), project_affine(x, A, c), atol=1e-12)
    assert torch.equal(project_metric(NonNegative(), x, torch.rand_like(x) + 0.1), x.clamp_min(0))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.floats(0.05, 5.0), st.integers(0, 10_000))
def test_weighted_l1_ball_is_feasible_idempotent_and_optimal(n: int, radius: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, n, generator=g, dtype=torch.float64) * 3
    d = torch.rand(3, n, generator=g, dtype=torch.float64) * 5 + 0.01
    y = project_l1_ball_metric(x, d, radius)
    assert float(L1Ball(radius).violation(y).max()) <= 1e-12 * radius
    assert torch.allclose(project_l1_ball_metric(y, d, radius), y, atol=1e-12)
    # optimality in the D inner product: <D (x - y), v - y> <= 0 for feasible v (random points of the ball)
    v = project_l1_ball(torch.randn(20, 3, n, generator=g, dtype=torch.float64), radius)
    assert float(((d * (x - y)) * (v - y)).sum(-1).max()) <= 1e-9


def test_gradients_pass_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(3, 6, generator=g, dtype=torch.float64) * 2).requires_grad_()
    d = torch.rand(3, 6, generator=g, dtype=torch.float64) + 0.2
    assert torch.autograd.gradcheck(lambda z: project_l1_ball_metric(z, d, 1.0), (x,))
    A, c = torch.randn(2, 6, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: project_metric(Affine(A, c), z, d), (x,))


def test_bad_metrics_are_clear_errors() -> None:
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="positive and finite"):
        project_l1_ball_metric(x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="does not broadcast"):
        project_l1_ball_metric(x, torch.ones(4))
    with pytest.raises(TypeError, match="supports L1Ball, Affine and NonNegative"):
        from constrain import Simplex

        project_metric(Simplex(1.0), x, torch.ones(2, 3))


def test_affine_metric_on_the_columns_a_sparse_system_touches_equals_the_dense_formula() -> None:
    """A tie-like A touches 7 of 300 columns: the projection works on those only (AffineFactor.support_on) and must
    give the dense formula's point, move nothing else, and keep its exact gradient."""
    torch.manual_seed(3)
    A = torch.zeros(4, 300, dtype=torch.float64)
    A[:, 10:17] = torch.randn(4, 7, dtype=torch.float64)
    c = torch.randn(4, dtype=torch.float64)
    affine = Affine(A, c)
    x = torch.randn(5, 300, dtype=torch.float64, requires_grad=True)
    d = torch.rand(5, 300, dtype=torch.float64) + 0.1
    columns, _, _ = affine.factor.support_on(x)
    assert columns is not None and columns.tolist() == list(range(10, 17))
    y = project_metric(affine, x, d)
    inv = 1 / d.detach()
    gram = torch.einsum("kn,bn,jn->bkj", A, inv, A)
    dense = x.detach() - inv * (torch.linalg.solve(gram, (x.detach() @ A.T - c).unsqueeze(-1)).squeeze(-1) @ A)
    torch.testing.assert_close(y.detach(), dense, rtol=0, atol=1e-12)
    outside = torch.ones(300, dtype=torch.bool)
    outside[10:17] = False
    assert torch.equal(y.detach()[:, outside], x.detach()[:, outside])
    assert torch.autograd.gradcheck(lambda v: project_metric(affine, v, d), (x,))
