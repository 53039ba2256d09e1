"""The sets' constraint functions, violations and projections on hand-made rows, values written out.

``g(x) <= 0`` and ``h(x) = 0`` per row, shapes ``(rows, k)``; the violation per row is
``max(max_i g_i^+, max_j |h_j|)``. Expected values are plain numbers computed by hand.
"""

from __future__ import annotations

import torch

from constrain import ConstraintSet, L1Ball, NonNegative, Simplex

X = torch.tensor([[0.5, -0.2, 0.1], [1.0, -1.0, 0.5], [0.0, 0.0, -3.0]], dtype=torch.float64)  # L1 0.8, 2.5, 3


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_l1_ball_inequality_and_violation():
    ball = L1Ball(1.0)
    assert ball.inequality(X).shape == (3, 1)
    torch.testing.assert_close(ball.inequality(X), _t([[-0.2], [1.5], [2.0]]), rtol=0, atol=1e-15)
    torch.testing.assert_close(ball.violation(X), _t([0.0, 1.5, 2.0]), rtol=0, atol=1e-15)
    assert ball.contains(X).tolist() == [True, False, False]
    assert ball.contains(X, tol=1.6).tolist() == [True, True, False]
    # one radius per row
    per_row = L1Ball(_t([0.5, 3.0, 1.0]))
    torch.testing.assert_close(per_row.inequality(X), _t([[0.3], [-0.5], [2.0]]), rtol=0, atol=1e-15)
    torch.testing.assert_close(per_row.violation(X), _t([0.3, 0.0, 2.0]), rtol=0, atol=1e-15)
    assert per_row.radius_like(X).shape == (3, 1)


def test_simplex_constraints_and_violation():
    simplex = Simplex(1.0)
    g, h = simplex.inequality(X), simplex.equality(X)
    torch.testing.assert_close(g, -X, rtol=0, atol=0)
    assert h.shape == (3, 1)
    torch.testing.assert_close(h, _t([[-0.6], [-0.5], [-4.0]]), rtol=0, atol=1e-15)  # sums 0.4, 0.5, -3
    # max(max_i (-x_i)^+, |sum x - r|): (0.2, 0.6) -> 0.6; (1.0, 0.5) -> 1.0; (3.0, 4.0) -> 4.0
    torch.testing.assert_close(simplex.violation(X), _t([0.6, 1.0, 4.0]), rtol=0, atol=1e-15)
    inside = _t([[0.25, 0.75, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(simplex.violation(inside), _t([0.0, 0.0]), rtol=0, atol=0)
    per_row = Simplex(_t([1.0, 2.0]))
    torch.testing.assert_close(per_row.equality(inside), _t([[0.0], [-1.0]]), rtol=0, atol=0)


def test_nonnegative_constraints_and_violation():
    orthant = NonNegative()
    torch.testing.assert_close(orthant.inequality(X), -X, rtol=0, atol=0)
    assert orthant.equality(X) is None
    torch.testing.assert_close(orthant.violation(X), _t([0.2, 1.0, 3.0]), rtol=0, atol=0)
    torch.testing.assert_close(orthant.project(X), X.clamp_min(0), rtol=0, atol=0)


def test_projections_of_hand_made_rows():
    # the simplex of radius 1: (0.5, -0.2, 0.1) -> tau = -0.2 over the support {0, 2}: (0.7, 0, 0.3)
    torch.testing.assert_close(Simplex(1.0).project(X[:1]), _t([[0.7, 0.0, 0.3]]), rtol=0, atol=1e-15)
    # the unit ball: (1, -1, 0.5) -> tau = 0.5: (0.5, -0.5, 0); (0, 0, -3) -> (0, 0, -1); inside: unchanged
    torch.testing.assert_close(
        L1Ball(1.0).project(X), _t([[0.5, -0.2, 0.1], [0.5, -0.5, 0.0], [0.0, 0.0, -1.0]]), rtol=0, atol=1e-15
    )


def test_violation_of_empty_constraint_rows_is_zero():
    """A row with no constraint entries (k = 0) has violation 0, one per row."""
    empty = torch.zeros(4, 0, dtype=torch.float64)
    torch.testing.assert_close(NonNegative().violation(empty), torch.zeros(4, dtype=torch.float64), rtol=0, atol=0)


def test_projections_use_the_sets_radius():
    # radius 2: (1, -1, 0.5) -> tau = (2.5 - 2) / 3 = 1/6: (5/6, -5/6, 1/3)
    torch.testing.assert_close(L1Ball(2.0).project(X[1:2]), _t([[5 / 6, -5 / 6, 1 / 3]]), rtol=0, atol=1e-15)
    # simplex of radius 2: (0.5, -0.2, 0.1) -> tau = (0.4 - 2) / 3 = -8/15: (31/30, 1/3, 19/30)
    torch.testing.assert_close(Simplex(2.0).project(X[:1]), _t([[31 / 30, 1 / 3, 19 / 30]]), rtol=0, atol=1e-15)


def test_violation_of_batches_of_rows():
    """Rows along the last dimension of any batch shape: (2, 3, k) gives one violation per row, (2, 3)."""
    batch = torch.stack([X, -X])  # (2, 3, 3)
    torch.testing.assert_close(Simplex(1.0).violation(batch), _t([[0.6, 1.0, 4.0], [1.4, 1.5, 2.0]]), rtol=0, atol=1e-15)
    torch.testing.assert_close(L1Ball(1.0).violation(batch), _t([[0.0, 1.5, 2.0], [0.0, 1.5, 2.0]]), rtol=0, atol=1e-15)
    empty = torch.zeros(2, 3, 0, dtype=torch.float64)
    torch.testing.assert_close(NonNegative().violation(empty), torch.zeros(2, 3, dtype=torch.float64), rtol=0, atol=0)


class _OnlyEqualities(ConstraintSet):
    """A user-defined set with equalities only, k of them per row (k may be 0)."""

    has_inequalities, has_equalities = False, True

    def __init__(self, k: int) -> None:
        self.k = k

    def project(self, x):
        return x

    def equality(self, x):
        return x[..., : self.k] - 1.0

    def cvxpy_constraint(self, var):
        return []

    def scaled(self, t):
        return self


def test_violation_of_a_user_defined_set():
    torch.testing.assert_close(_OnlyEqualities(2).violation(X), _t([1.2, 2.0, 1.0]), rtol=0, atol=1e-15)
    torch.testing.assert_close(_OnlyEqualities(0).violation(X), torch.zeros(3, dtype=torch.float64), rtol=0, atol=0)
    batch = torch.stack([X, X])
    torch.testing.assert_close(_OnlyEqualities(0).violation(batch), torch.zeros(2, 3, dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(_OnlyEqualities(2).violation(batch), _t([[1.2, 2.0, 1.0]] * 2), rtol=0, atol=1e-15)


def test_nonnegative_cvxpy_reference():
    """The cvxpy form of the orthant: its reference projection is max(x, 0)."""
    torch.testing.assert_close(NonNegative().reference_projection(X), X.clamp_min(0), rtol=0, atol=1e-9)
