"""Polyhedron and Box: exact projection against cvxpy, the KKT backward, properties and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constrain import Box, Polyhedron

F64 = torch.float64


def _scale(x: torch.Tensor, *rhs: torch.Tensor) -> float:
    return max([float(x.abs().max())] + [float(r.abs().max()) for r in rhs if r is not None] + [1.0])


def _agree(P, x: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    y = P.project(x)
    ref = P.reference_projection(x)
    err = float((y - ref).abs().max()) / _scale(x)
    assert err <= tol, f"error {err:.3g} against cvxpy"
    assert bool(P.contains(y, 1e-8 * _scale(x)).all())
    return y


def _random(n: int, me: int, mi: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(me, n, dtype=F64, generator=g) if me else None
    G = torch.randn(mi, n, dtype=F64, generator=g) if mi else None
    return A, G, g


@pytest.mark.parametrize("n,me,mi", [(1, 0, 1), (3, 1, 2), (8, 3, 6), (20, 5, 30), (40, 10, 10)])
def test_random_agrees_with_cvxpy(n, me, mi):
    A, G, g = _random(n, me, mi, seed=n)
    rows = 5
    b = torch.randn(rows, me, dtype=F64, generator=g) if me else None
    y_feasible = torch.randn(rows, n, dtype=F64, generator=g)
    # right-hand sides built around a feasible point, so every sample's polytope is non-empty
    if A is not None:
        b = y_feasible @ A.T
    h = y_feasible @ G.T + torch.rand(rows, mi, dtype=F64, generator=g)
    P = Polyhedron(A, b, G, h)
    x = 3 * torch.randn(rows, n, dtype=F64, generator=g)
    y = _agree(P, x)
    # a per-sample right-hand side is one polytope per row: row i equals the projection onto set i
    for i, row_set in enumerate(P.row_sets(x)):
        torch.testing.assert_close(row_set.project(x[i : i + 1]), y[i : i + 1], rtol=0, atol=1e-9)


def test_equalities_only_and_inequalities_only():
    A, G, g = _random(7, 3, 4, seed=3)
    x = torch.randn(6, 7, dtype=F64, generator=g)
    y = _agree(Polyhedron(A=A, b=torch.randn(3, dtype=F64, generator=g)), x)
    assert Polyhedron(A=A).equality(y).shape == (6, 3)
    _agree(Polyhedron(G=G, h=torch.rand(4, dtype=F64, generator=g)), x)


def test_rows_inside_are_unchanged():
    A, G, g = _random(6, 2, 5, seed=4)
    x = torch.randn(4, 6, dtype=F64, generator=g)
    P = Polyhedron(A, x @ A.T, G, x @ G.T + 0.1)
    torch.testing.assert_close(P.project(x), x, rtol=0, atol=1e-12)


def test_vertices_and_edges_of_a_cube():
    """The unit cube as G y <= h: far points land on vertices (all coordinates clipped) and edges."""
    n = 3
    G = torch.cat([torch.eye(n), -torch.eye(n)]).double()
    P = Polyhedron(G=G, h=torch.ones(2 * n, dtype=F64))
    x = torch.tensor([[5.0, 7.0, -9.0], [5.0, 0.5, -3.0], [0.2, 0.1, 3.0]], dtype=F64)
    y = _agree(P, x)
    torch.testing.assert_close(y, x.clamp(-1, 1), rtol=0, atol=1e-12)
    torch.testing.assert_close(y, Box(-1.0, 1.0).project(x), rtol=0, atol=1e-12)


def test_redundant_and_degenerate_constraints():
    """Duplicated rows, scaled copies, an implied row and three rows through one vertex in the plane."""
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [2.0, 0.0], [1.0, 2.0]], dtype=F64)
    h = torch.tensor([1.0, 1.0, 2.0, 1.0, 2.0, 10.0], dtype=F64)
    P = Polyhedron(G=G, h=h)
    x = torch.tensor([[5.0, 5.0], [3.0, 0.0], [0.0, 0.0], [4.0, 1.5], [-3.0, 8.0]], dtype=F64)
    y = _agree(P, x)
    torch.testing.assert_close(y[0], torch.tensor([1.0, 1.0], dtype=F64), rtol=0, atol=1e-12)
    # a rank-deficient A (a row repeated) with a consistent b
    A = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    P2 = Polyhedron(A, torch.tensor([1.0, 2.0, 0.5], dtype=F64), torch.eye(3, dtype=F64), torch.full((3,), 0.6, dtype=F64))
    _agree(P2, torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0)))
    # the same with bounds 0.4: y1 + y2 = 1 and y3 = 0.5 cannot hold below 0.4 (a row of G in the row space of A)
    P3 = Polyhedron(A, torch.tensor([1.0, 2.0, 0.5], dtype=F64), torch.eye(3, dtype=F64), torch.full((3,), 0.4, dtype=F64))
    with pytest.raises(ValueError, match="empty for sample 0"):
        P3.project(torch.zeros(2, 3, dtype=F64))


def test_many_more_constraints_than_dimensions():
    A, G, g = _random(10, 2, 60, seed=5)
    y0 = torch.randn(3, 10, dtype=F64, generator=g)
    P = Polyhedron(A, y0 @ A.T, G, y0 @ G.T + 0.05 * torch.rand(3, 60, dtype=F64, generator=g))
    _agree(P, 4 * torch.randn(3, 10, dtype=F64, generator=g))


def test_large_n():
    A, G, g = _random(300, 30, 60, seed=6)
    y0 = torch.randn(2, 300, dtype=F64, generator=g)
    P = Polyhedron(A, y0 @ A.T, G, y0 @ G.T + torch.rand(2, 60, dtype=F64, generator=g))
    _agree(P, 2 * torch.randn(2, 300, dtype=F64, generator=g))


@pytest.mark.slow
def test_n_1000():
    A, G, g = _random(1000, 100, 200, seed=7)
    y0 = torch.randn(2, 1000, dtype=F64, generator=g)
    P = Polyhedron(A, y0 @ A.T, G, y0 @ G.T + torch.rand(2, 200, dtype=F64, generator=g))
    _agree(P, 2 * torch.randn(2, 1000, dtype=F64, generator=g))


def test_float32_rows_keep_their_dtype():
    A, G, g = _random(5, 2, 4, seed=8)
    x = torch.randn(3, 5, dtype=F64, generator=g)
    P = Polyhedron(A, torch.zeros(2), G, torch.ones(4))
    y32 = P.project(x.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), P.project(x), rtol=0, atol=1e-6)


def test_leading_dimensions_are_rows():
    A, G, g = _random(4, 1, 3, seed=9)
    P = Polyhedron(A, torch.ones(1), G, torch.ones(3))
    x = torch.randn(2, 3, 4, dtype=F64, generator=g)
    torch.testing.assert_close(P.project(x), P.project(x.reshape(6, 4)).reshape(2, 3, 4))


# --------------------------------------------------------------------------------------- gradients
def test_gradcheck_in_x_b_and_h():
    A, G, g = _random(6, 2, 5, seed=1)
    x = torch.randn(4, 6, dtype=F64, generator=g).requires_grad_()
    b = torch.randn(4, 2, dtype=F64, generator=g).requires_grad_()
    h = (0.5 * torch.rand(4, 5, dtype=F64, generator=g)).requires_grad_()
    P = lambda x, b, h: Polyhedron(A, b, G, h).project(x)  # noqa: E731
    y = P(x, b, h)
    active = Polyhedron(A, b, G, h).inequality(y).detach().abs() < 1e-9
    assert bool(active.any()) and not bool(active.all())  # a real active set, not the trivial cases
    assert torch.autograd.gradcheck(P, (x, b, h))


def test_gradcheck_inequalities_only_and_equalities_only():
    A, G, g = _random(5, 2, 7, seed=2)
    x = (2 * torch.randn(3, 5, dtype=F64, generator=g)).requires_grad_()
    h = torch.rand(3, 7, dtype=F64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, h: Polyhedron(G=G, h=h).project(x), (x, h))
    b = torch.randn(3, 2, dtype=F64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, b: Polyhedron(A=A, b=b).project(x), (x, b))


def test_jacobian_is_the_projector_onto_the_active_face():
    """Independent check: on the active face the Jacobian is I - R^T (R R^T)^-1 R, R = [A; G_S]."""
    A, G, g = _random(6, 1, 4, seed=11)
    P = Polyhedron(A, torch.zeros(1, dtype=F64), G, 0.1 * torch.ones(4, dtype=F64))
    x = 3 * torch.randn(6, dtype=F64, generator=g)
    y = P.project(x.unsqueeze(0))
    S = P.inequality(y)[0].abs() < 1e-9
    R = torch.cat([A, G[S]])
    expected = torch.eye(6, dtype=F64) - R.T @ torch.linalg.solve(R @ R.T, R)
    J = torch.autograd.functional.jacobian(lambda v: P.project(v.unsqueeze(0))[0], x)
    torch.testing.assert_close(J, expected, rtol=0, atol=1e-10)


def test_box_projection_and_gradients():
    g = torch.Generator().manual_seed(3)
    lo = -torch.rand(4, 5, dtype=F64, generator=g)
    up = torch.rand(4, 5, dtype=F64, generator=g)
    x = 2 * torch.randn(4, 5, dtype=F64, generator=g)
    B = Box(lo, up)
    _agree(B, x)
    _agree(Box(lower=0.0), x)
    _agree(Box(upper=up[0]), x)
    xr, lr, ur = (t.clone().requires_grad_() for t in (x, lo, up))
    assert torch.autograd.gradcheck(lambda a, b, c: Box(b, c).project(a), (xr, lr, ur))


# --------------------------------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 3), st.integers(1, 8), st.integers(0, 10_000), st.sampled_from([1e-3, 1.0, 1e3]))
def test_properties(n, me, mi, seed, scale):
    """Feasible, idempotent, and optimal: <x - P(x), z - P(x)> <= 0 for feasible points z."""
    me = min(me, n)
    A, G, g = _random(n, me, mi, seed)
    z = scale * torch.randn(3, n, dtype=F64, generator=g)
    b = None if A is None else z @ A.T
    h = z @ G.T + scale * torch.rand(3, mi, dtype=F64, generator=g)
    P = Polyhedron(A, b, G, h)
    x = scale * 3 * torch.randn(3, n, dtype=F64, generator=g)
    y = P.project(x)
    tol = 1e-9 * scale * 3 * max(1.0, float(x.abs().max()) / scale)
    assert float(P.violation(y).max()) <= tol
    torch.testing.assert_close(P.project(y), y, rtol=0, atol=tol)
    assert float(((x - y) * (z - y)).sum(-1).max()) <= tol * float((x - y).abs().sum() + 1)


# --------------------------------------------------------------------------------------- binding
def test_callable_right_hand_side_is_bound_to_inputs():
    A = torch.ones(1, 3, dtype=F64)
    P = Polyhedron(A=A, b=lambda x: x[:, :1], G=-torch.eye(3, dtype=F64), h=torch.zeros(3, dtype=F64))
    assert P.needs_inputs
    inputs = torch.tensor([[1.0], [2.0]], dtype=F64)
    bound = P.bind(inputs)
    assert not bound.needs_inputs
    y = bound.project(torch.tensor([[3.0, -1.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64))
    torch.testing.assert_close(y.sum(-1), inputs[:, 0])
    assert bool((y >= -1e-12).all())
    with pytest.raises(ValueError, match="bind the set first"):
        P.project(torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"b\(inputs\) has shape \(2, 2\)"):
        Polyhedron(A=A, b=lambda x: x.repeat(1, 2)).bind(inputs)
    with pytest.raises(ValueError, match=r"b\(inputs\) has one row per sample, shape \(3, 1\)"):
        Polyhedron(A=A, b=lambda x: torch.ones(3, 1)).bind(inputs).project(torch.zeros(2, 3, dtype=F64))


# --------------------------------------------------------------------------------------- bad inputs
def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="needs A"):
        Polyhedron()
    with pytest.raises(ValueError, match="b is given without A"):
        Polyhedron(G=torch.eye(2), b=torch.ones(2))
    with pytest.raises(ValueError, match="same number of columns"):
        Polyhedron(A=torch.ones(1, 3), G=torch.eye(2))
    with pytest.raises(ValueError, match=r"b has shape \(3,\)"):
        Polyhedron(A=torch.ones(2, 3), b=torch.ones(3))
    with pytest.raises(ValueError, match=r"h has shape"):
        Polyhedron(G=torch.eye(2), h=torch.ones(2, 3))
    P = Polyhedron(G=torch.eye(2), h=torch.ones(4, 2))
    with pytest.raises(ValueError, match="one row per sample"):
        P.project(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="last dimension of x must be 2"):
        P.project(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="zero row"):
        Polyhedron(G=torch.zeros(1, 2))


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError, match="A contains NaN"):
        Polyhedron(A=torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="h contains NaN or Inf"):
        Polyhedron(G=torch.eye(2), h=torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="x contains NaN"):
        Polyhedron(G=torch.eye(2), h=torch.ones(2)).project(torch.tensor([[float("nan"), 0.0]]))
    bound = Polyhedron(G=torch.eye(2), h=lambda x: x).bind(torch.tensor([[float("nan"), 0.0]]))
    assert bool(bound.inequality(torch.zeros(1, 2)).isnan().any())  # values flow (strategies report the step)
    with pytest.raises(ValueError, match=r"h\(inputs\) contains NaN or Inf"):
        bound.project(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="lower must be finite"):
        Box(lower=float("-inf"))


def test_empty_polytope_names_the_sample():
    G = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    h = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, -2.0]], dtype=F64)  # sample 2: y1 <= 1 and y1 >= 2
    with pytest.raises(ValueError, match="empty for sample 2"):
        Polyhedron(G=G, h=h).project(torch.zeros(3, 2, dtype=F64))
    A = torch.tensor([[1.0, 1.0], [2.0, 2.0]], dtype=F64)
    b = torch.tensor([[1.0, 2.0], [1.0, 3.0]], dtype=F64)  # sample 1: inconsistent equalities
    with pytest.raises(ValueError, match="empty for sample 1"):
        Polyhedron(A=A, b=b).project(torch.zeros(2, 2, dtype=F64))
    with pytest.raises(ValueError, match="sample 1, entry 0"):
        Box(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.ones(2, 2))


def test_cvxpy_constraint_needs_one_polytope():
    P = Polyhedron(G=torch.eye(2), h=torch.ones(3, 2))
    with pytest.raises(ValueError, match="one polytope per row"):
        P.cvxpy_constraint(None)
    assert np.isclose(len(Polyhedron(G=torch.eye(2), h=torch.ones(2)).cvxpy_constraint(__import__("cvxpy").Variable(2))), 1)


# ---------------------------------------------------------------- Affine with a per-sample or callable c
def _affine_system(seed: int = 5, m: int = 3, n: int = 7) -> torch.Tensor:
    return torch.randn(m, n, dtype=F64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["per_sample", "callable"])
def test_affine_with_varying_c_agrees_with_cvxpy_per_sample(kind):
    from constrain import Affine

    A = _affine_system()
    g = torch.Generator().manual_seed(6)
    inputs, x = torch.randn(6, 4, dtype=F64, generator=g), 3 * torch.randn(6, 7, dtype=F64, generator=g)
    C = inputs[:, :3] * 2 - 1  # c of each sample
    S = Affine(A, C) if kind == "per_sample" else Affine(A, lambda u: u[:, :3] * 2 - 1).bind(inputs)
    y = S.project(x)
    for i, row in enumerate(S.row_sets(x)):  # the set of sample i, solved by cvxpy on its own
        assert isinstance(row, Affine)
        torch.testing.assert_close(row.c, C[i])
        ref = row.reference_projection(x[i : i + 1], method="cvxpy")
        assert float((y[i] - ref[0]).abs().max()) <= 1e-6 * _scale(x, C)
    torch.testing.assert_close(S.equality(y), torch.zeros(6, 3, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(S.equality(x), x @ A.T - C)
    assert float(S.violation(y).max()) <= 1e-12 and S.own_scale(x).shape == (6,)


def test_affine_with_per_sample_c_gradcheck_in_x_and_c():
    from constrain import Affine

    A = _affine_system(m=2, n=4)
    x = torch.randn(3, 4, dtype=F64, requires_grad=True)
    c = torch.randn(3, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, c: Affine(A, c).project(x), (x, c))


def test_affine_with_varying_c_bad_input():
    from constrain import Affine

    A = _affine_system()
    with pytest.raises(ValueError, match=r"c\(inputs\) has shape \(4, 2\)"):
        Affine(A, lambda u: u[:, :2]).bind(torch.randn(4, 5))  # the callable returns 2 columns for 3 rows of A
    with pytest.raises(ValueError, match="one row per sample"):
        Affine(A, torch.zeros(4, 3)).project(torch.randn(5, 7))  # 4 rows of c for 5 samples
    with pytest.raises(ValueError, match="bind the set first"):
        Affine(A, lambda u: u[:, :3]).project(torch.randn(2, 7))
    bound = Affine(A, lambda u: u[:, :3]).bind(torch.tensor([[0.0, float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="NaN|finite"):
        bound.project(torch.randn(1, 7, dtype=F64))
    with pytest.raises(ValueError, match="finite|NaN"):
        Affine(A, torch.full((2, 3), float("inf"))).project(torch.randn(2, 7))
    deficient = torch.cat([A[:2], A[:1]])  # row 3 repeats row 1: c_3 must equal c_1
    c = torch.zeros(3, 3, dtype=F64)
    c[2, 2] = 1.0
    with pytest.raises(ValueError, match="sample 2"):
        Affine(deficient, c).project(torch.randn(3, 7, dtype=F64))
    with pytest.raises(ValueError, match="outputs only"):
        Affine(A, torch.zeros(2, 3)).check_parameters({"w": (7,)})


@pytest.mark.parametrize("shape", [(40, 7), (7, 40), (12, 12)])
def test_the_warm_start_step_uses_the_largest_eigenvalue_of_w_w_transpose(shape: tuple[int, int]) -> None:
    from constrain._polyhedron import _largest_gram_eigenvalue

    W = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = float(np.linalg.eigvalsh((W @ W.T).numpy()).max())  # the m x m Gram matrix, as the step's 1/||K||
    assert _largest_gram_eigenvalue(W) == pytest.approx(expected, rel=1e-12)
    assert _largest_gram_eigenvalue(W) == pytest.approx(float(torch.linalg.matrix_norm(W, ord=2)) ** 2, rel=1e-12)
