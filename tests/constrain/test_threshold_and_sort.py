r"""The sort-based reference ``_project_sort`` and the soft threshold ``l1_ball_threshold``.

Sort reference (Held et al. 1974): with :math:`u` sorted descending, the support size is the
largest :math:`k` with :math:`u_k > (\sum_{j \le k} u_j - r)/k` and
:math:`\tau = (\sum_{j \le k} u_j - r)/k`. It must agree with the public kernels, whatever
algorithm they use for the threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from constrain_testing import DTYPES, TOL, as_radius, batches, radii, row_scale
from hypothesis import given, settings
from hypothesis import strategies as st

from constrain import l1_ball_threshold, project_l1_ball, project_simplex
from constrain._simplex import _project_sort


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_sort_reference_agrees_with_the_kernels(data, dtype: torch.dtype) -> None:
    x = data.draw(batches(max_n=16))
    radius = data.draw(radii(x))
    x_t, r = torch.from_numpy(x).to(dtype), as_radius(radius, dtype)
    scale = row_scale(torch.from_numpy(x), radius).unsqueeze(-1)
    tol = TOL[dtype] * x.shape[-1]
    for ball, kernel in ((True, project_l1_ball), (False, project_simplex)):
        expected = _project_sort(x_t, r, ball=ball).double()
        got = kernel(x_t, r).double()
        assert ((got - expected).abs() / scale).max() <= tol


def test_sort_reference_on_known_points() -> None:
    x = torch.tensor([[0.5, 0.5, 0.5], [3.0, 0.0, -1.0], [0.2, 0.1, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(_project_sort(x, 1.0, ball=False)[0], torch.full((3,), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(_project_sort(x, 1.0, ball=False)[1], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(_project_sort(x, 2.0, ball=True)[1], torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(_project_sort(x, 1.0, ball=True)[2], x[2])  # inside
    # along dim 0
    torch.testing.assert_close(_project_sort(x.T, 1.0, dim=0, ball=True), project_l1_ball(x, 1.0).T)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_l1_ball_threshold_gives_the_projection(data, dtype: torch.dtype) -> None:
    r"""P(x) = sign(x) relu(|x| - tau), tau >= 0, and tau = 0 on rows inside the ball."""
    x = data.draw(batches(max_n=16))
    radius = data.draw(radii(x))
    x_t, r = torch.from_numpy(x).to(dtype), as_radius(radius, dtype)
    tau = l1_ball_threshold(x_t, r)
    assert tau.shape == (*x_t.shape[:-1], 1) and tau.dtype == dtype and not tau.requires_grad
    assert (tau >= 0).all()
    rebuilt = torch.sign(x_t) * torch.relu(x_t.abs() - tau)
    scale = row_scale(torch.from_numpy(x), radius).unsqueeze(-1)
    assert ((rebuilt.double() - project_l1_ball(x_t, r).double()).abs() / scale).max() <= TOL[dtype] * x.shape[-1]
    # rows clearly inside (on the boundary, the kernel's own rounding of ||x||_1 decides)
    inside = x_t.double().abs().sum(-1) <= torch.as_tensor(r, dtype=dtype).double() * (1 - 1e-5)
    assert (tau[inside] == 0).all()


def test_l1_ball_threshold_dim_and_gradient_free() -> None:
    x = torch.randn(3, 6, 2, dtype=torch.float64, requires_grad=True)
    tau = l1_ball_threshold(x, 0.5, dim=1)
    assert tau.shape == (3, 1, 2) and not tau.requires_grad
    torch.testing.assert_close(tau, l1_ball_threshold(x.detach().movedim(1, -1), 0.5).movedim(-1, 1))
    # the known value: |x| = (3, 1, 0.5), r = 2: tau = (3 + 1 - 2) / 2 = 1
    torch.testing.assert_close(l1_ball_threshold(torch.tensor([3.0, -1.0, 0.5]), 2.0), torch.tensor([1.0]))
    assert float(l1_ball_threshold(np.float32(1) * torch.ones(4), 10.0)) == 0.0


def test_l1_ball_threshold_of_empty_rows() -> None:
    assert l1_ball_threshold(torch.empty(3, 0), 1.0).shape == (3, 1)


def _fraction_simplex(x: np.ndarray, radius: float) -> np.ndarray:
    """The simplex projection in exact rational arithmetic, entry by entry over the sorted row, rounded once."""
    from fractions import Fraction

    u = sorted((Fraction(v) for v in x.tolist()), reverse=True)
    r, total, support, support_total = Fraction(radius), Fraction(0), 0, Fraction(0)
    for k, value in enumerate(u, start=1):
        total += value
        if k * value - total + r > 0:
            support, support_total = k, total
    tau = (support_total - r) / support
    return np.array([float(max(Fraction(v) - tau, Fraction(0))) for v in x.tolist()])


@settings(max_examples=150, deadline=None)
@given(
    levels=st.lists(st.sampled_from([0.0, -0.0, 0.25, -1.5, 3.0, 1e8, -1e8, 1e8 + 2.0, 5e-324, 0.1]), min_size=1, max_size=6),
    picks=st.lists(st.integers(0, 5), min_size=1, max_size=40),
    radius=st.sampled_from([1e-9, 0.3, 1.0, 7.5, 1e9]),
)
def test_exact_simplex_over_distinct_values_matches_fractions(levels: list[float], picks: list[int], radius: float) -> None:
    # rows of few distinct values, many repeated: exact_simplex walks the distinct values, the check every entry
    from constrain.reference import exact_l1_ball, exact_simplex

    x = np.array([levels[i % len(levels)] for i in picks])
    np.testing.assert_array_equal(exact_simplex(x, radius), _fraction_simplex(x, radius))
    from fractions import Fraction

    inside = sum(Fraction(abs(v)) for v in x.tolist()) <= Fraction(radius)
    expected_ball = x if inside else np.sign(x) * _fraction_simplex(np.abs(x), radius)
    np.testing.assert_array_equal(exact_l1_ball(x, radius), expected_ball)
