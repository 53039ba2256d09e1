r"""Property tests of the projection kernels (hypothesis).

For a closed convex set C, the Euclidean projection P is characterised by

* feasibility: P(x) in C;
* idempotence: P(P(x)) = P(x);
* non-expansiveness: ||P(x) - P(w)|| <= ||x - w||;
* optimality, the variational inequality: <x - P(x), z - P(x)> <= 0 for every z in C.

Each is checked in float32 and float64, relative to the row scale s = max(max|x|, r), on inputs
with ties, zeros, rows already inside the set, scales from 1e-8 to 1e8, n = 1, per-sample radii,
batched (3-d) inputs and a projected dimension other than the last.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from constrain_testing import (
    DTYPES,
    TOL,
    as_radius,
    batches,
    l1_violation,
    radii,
    row_scale,
    simplex_violation,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import Tensor

from constrain import (
    Affine,
    L1Ball,
    NonNegative,
    Simplex,
    project_affine,
    project_l1_ball,
    project_nonnegative,
    project_simplex,
)

# 30 examples per dtype: 60 drawn problems per set across the two dtypes (the same properties on fixed
# instances against cvxpy: test_cvxpy_agreement.py); 60 per dtype doubled the file's time for no new path
SETTINGS = settings(max_examples=30, deadline=None)


def _feasible_points(kind: str, x: Tensor, radius: float | np.ndarray, rng: np.random.Generator) -> list[Tensor]:
    """Points of the set for the variational inequality: projections of random points, and corners."""
    r = torch.as_tensor(radius, dtype=torch.float64)
    r_col = r.reshape(-1, 1) if r.dim() else r
    rows, n = x.shape
    w = torch.from_numpy(rng.standard_normal((rows, n))) * row_scale(x, radius).unsqueeze(-1) * 3
    vertex = torch.zeros(rows, n, dtype=torch.float64)
    vertex[:, int(rng.integers(n))] = 1.0
    if kind == "ball":
        return [project_l1_ball(w, as_radius(radius, torch.float64)), torch.zeros_like(w), -vertex * r_col]
    return [project_simplex(w, as_radius(radius, torch.float64)), vertex * r_col, torch.ones_like(w) * r_col / n]


def _check_projection(
    project: Callable[[Tensor], Tensor],
    x64: Tensor,
    other64: Tensor,
    dtype: torch.dtype,
    violation: Callable[[Tensor], Tensor],
    feasible: list[Tensor],
    scale: Tensor,
) -> None:
    """Feasible, idempotent, non-expansive and optimal, all relative to ``scale`` (per row)."""
    tol, n = TOL[dtype], x64.shape[-1]
    x = x64.to(dtype)
    y = project(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.isfinite(y).all()
    y64 = y.double()
    # feasible
    assert (violation(y) / scale).max() <= tol * n
    # idempotent
    assert ((project(y).double() - y64).abs().amax(-1) / scale).max() <= tol * n
    # non-expansive (row by row: the rows are independent problems)
    z = project(other64.to(dtype)).double()
    lhs = (y64 - z).norm(dim=-1)
    rhs = (x64 - other64).norm(dim=-1)
    assert (lhs <= rhs + tol * n * scale).all(), (lhs, rhs)
    # optimal: <x - P(x), z - P(x)> <= 0 for feasible z
    for point in feasible:
        inner = ((x64 - y64) * (point - y64)).sum(-1)
        assert (inner / scale**2).max() <= tol * n * 10, inner


@st.composite
def _problem(draw, max_n: int = 12):
    x = draw(batches(max_n=max_n))
    radius = draw(radii(x))
    # a second point near x (small moves cross the support's boundaries) or far from it
    step = draw(st.sampled_from([1e-3, 0.3, 3.0]))
    noise = draw(arrays(np.float64, x.shape, elements=st.floats(-1, 1, width=32)))
    other = np.asarray(x + step * noise * max(float(np.abs(x).max()), 1e-8), dtype=np.float32).astype(np.float64)
    return x, other, radius, draw(st.integers(0, 2**32 - 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(problem=_problem())
def test_l1_ball_is_a_projection(problem, dtype: torch.dtype) -> None:
    x, other, radius, seed = problem
    x64, other64 = torch.from_numpy(x), torch.from_numpy(other)
    r = as_radius(radius, dtype)
    _check_projection(
        lambda v: project_l1_ball(v, r),
        x64,
        other64,
        dtype,
        lambda y: l1_violation(y, radius),
        _feasible_points("ball", x64, radius, np.random.default_rng(seed)),
        row_scale(x64, radius),
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(problem=_problem())
def test_simplex_is_a_projection(problem, dtype: torch.dtype) -> None:
    x, other, radius, seed = problem
    x64, other64 = torch.from_numpy(x), torch.from_numpy(other)
    r = as_radius(radius, dtype)
    _check_projection(
        lambda v: project_simplex(v, r),
        x64,
        other64,
        dtype,
        lambda y: simplex_violation(y, radius),
        _feasible_points("simplex", x64, radius, np.random.default_rng(seed)),
        row_scale(x64, radius),
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(problem=_problem())
def test_nonnegative_is_a_projection(problem, dtype: torch.dtype) -> None:
    x, other, _, seed = problem
    x64, other64 = torch.from_numpy(x), torch.from_numpy(other)
    rng = np.random.default_rng(seed)
    feasible = [torch.from_numpy(np.abs(rng.standard_normal(x.shape))) * row_scale(x64).unsqueeze(-1), torch.zeros_like(x64)]
    _check_projection(
        project_nonnegative, x64, other64, dtype, lambda y: (-y.double()).clamp_min(0).amax(-1), feasible, row_scale(x64)
    )
    # the orthant projection is exact: max(x, 0) in any dtype
    assert torch.equal(project_nonnegative(x64.to(dtype)), x64.to(dtype).clamp_min(0))


@st.composite
def _affine_problem(draw):
    x, other, _, seed = draw(_problem(max_n=10))
    n = x.shape[-1]
    rng = np.random.default_rng(seed)
    m = draw(st.integers(1, max(1, n)))
    A = rng.standard_normal((m, n))
    if draw(st.booleans()) and m > 1:  # rank deficient but consistent: a repeated row, c = A w
        A[-1] = A[0]
    scale = float(np.abs(x).max()) or 1.0
    c = A @ rng.standard_normal(n) * scale
    return x, other, A, c, seed


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(problem=_affine_problem())
def test_affine_is_a_projection(problem, dtype: torch.dtype) -> None:
    x, other, A, c, seed = problem
    x64, other64 = torch.from_numpy(x), torch.from_numpy(other)
    constraint = Affine(A, c)
    w0 = torch.from_numpy(np.linalg.pinv(A) @ c)
    scale = torch.maximum(row_scale(x64), w0.abs().max())
    A_t, c_t = torch.from_numpy(A), torch.from_numpy(c)
    rng = np.random.default_rng(seed)
    feasible = [constraint.project(torch.from_numpy(rng.standard_normal(x.shape)) * scale.unsqueeze(-1))]

    def violation(y: Tensor) -> Tensor:  # |A y - c| relative to the size of the terms summed
        return (y.double() @ A_t.T - c_t).abs().amax(-1) / (A_t.abs().sum(-1).max())

    _check_projection(constraint.project, x64, other64, dtype, violation, feasible, scale)
    # affine set: the variational inequality is an equality, <x - P(x), z - P(x)> = 0
    y = constraint.project(x64)
    inner = ((x64 - y) * (feasible[0] - y)).sum(-1)
    assert (inner.abs() / scale**2).max() <= 1e-9 * x.shape[-1]
    # the functional form builds the same factorization
    torch.testing.assert_close(project_affine(x64.to(dtype), A_t, c_t), constraint.project(x64.to(dtype)))


# ---------------------------------------------------------------------------------------------
# n = 1, rows inside the set, batched shapes, dim != -1


def test_n_equals_one() -> None:
    x = torch.tensor([[3.0], [-0.25], [0.0], [-7.0]], dtype=torch.float64)
    torch.testing.assert_close(project_l1_ball(x, 1.0), torch.tensor([[1.0], [-0.25], [0.0], [-1.0]], dtype=torch.float64))
    torch.testing.assert_close(project_simplex(x, 2.0), torch.full_like(x, 2.0))  # the simplex in R^1 is {r}
    torch.testing.assert_close(project_nonnegative(x), x.clamp_min(0))
    torch.testing.assert_close(Affine([[2.0]], [3.0]).project(x), torch.full_like(x, 1.5))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=40, deadline=None)
@given(x=batches(max_n=12), shrink=st.floats(0.05, 0.99))
def test_rows_inside_are_returned_unchanged(x: np.ndarray, shrink: float, dtype: torch.dtype) -> None:
    x_t = torch.from_numpy(x).to(dtype)
    radius = x_t.double().abs().sum(-1) / shrink  # strictly inside the ball
    radius = torch.where(radius > 0, radius, torch.ones_like(radius)).to(dtype)
    assert torch.equal(project_l1_ball(x_t, radius), x_t)
    # exactly on the boundary (small integers: the sums are exact in any dtype)
    ints = torch.from_numpy(np.round(x / max(float(np.abs(x).max()), 1e-30) * 8)).to(dtype)
    norm = ints.abs().sum(-1)
    if bool((norm > 0).all()):
        assert torch.equal(project_l1_ball(ints, norm), ints)
    assert torch.equal(project_nonnegative(x_t.abs()), x_t.abs())
    # a point of the simplex stays (up to rounding of the threshold)
    on_simplex = x_t.abs() + 1e-3 * x_t.abs().amax(-1, keepdim=True) + (x_t == 0).all(-1, keepdim=True).to(dtype)
    r = on_simplex.double().sum(-1).to(dtype)
    scale = row_scale(on_simplex, r.double())
    assert ((project_simplex(on_simplex, r).double() - on_simplex.double()).abs().amax(-1) / scale).max() <= TOL[dtype] * 10


@pytest.mark.parametrize("kernel", [project_l1_ball, project_simplex], ids=["l1_ball", "simplex"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_batched_and_dim(kernel, data) -> None:
    """A 3-d input projected along dim 1 (or 0) is the row-wise projection of the moved tensor."""
    a, n, b = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 6)), data.draw(st.integers(1, 3))
    x = torch.from_numpy(data.draw(arrays(np.float64, (a, n, b), elements=st.floats(-5, 5, width=32))))
    per_sample = data.draw(st.booleans())
    radius = (
        torch.from_numpy(np.asarray(data.draw(arrays(np.float64, (a, b), elements=st.floats(0.1, 4))))) if per_sample else 1.5
    )
    for dim in (1, -2):
        y = kernel(x, radius, dim=dim)
        expected = kernel(x.movedim(1, -1), radius).movedim(-1, 1)
        assert y.shape == x.shape
        torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    # dim = 0 on a 2-d input: columns are the vectors
    x2 = x[:, :, 0]
    r2 = radius[:, 0] if per_sample else radius
    torch.testing.assert_close(kernel(x2.T, r2, dim=0), kernel(x2, r2).T, rtol=0, atol=1e-12)


def test_sets_project_rows_like_the_kernels() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 7, dtype=torch.float64) * 3
    r = torch.rand(5, dtype=torch.float64) + 0.5
    assert torch.equal(L1Ball(r).project(x), project_l1_ball(x, r))
    assert torch.equal(Simplex(2.0).project(x), project_simplex(x, 2.0))
    assert torch.equal(NonNegative().project(x), project_nonnegative(x))
    # and a batched 3-d input: the set acts on the last dimension
    x3 = x.reshape(5, 1, 7).expand(5, 2, 7)
    assert torch.equal(L1Ball(1.0).project(x3)[:, 1], project_l1_ball(x, 1.0))
    assert L1Ball(1.0).violation(L1Ball(1.0).project(x3)).shape == (5, 2)
    assert bool(L1Ball(1.0).contains(L1Ball(1.0).project(x3)).all())


def test_float32_simplex_sums_to_r_at_n_1000() -> None:
    """In float32 the projection onto the simplex sums to r to a few ulps of r (here 1e-6 relative)."""
    g = torch.Generator().manual_seed(0)
    rows = torch.cat([torch.zeros(1, 1000), torch.randn(3, 1000, generator=g) * 1e-2])
    y = project_simplex(rows, 1.0)
    assert (y.double().sum(-1) - 1).abs().max() <= 1e-6
