"""The certified KKT reference of ``constrain validate`` (``constrain.reference.certified_projection``): it agrees
with independent computations (``clip`` for boxes, the pseudoinverse formula for ``A y = c``, cvxpy for polytopes),
whatever guess proposes its active set, and its certificate rejects wrong answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from constrain import Affine, Box, L1Ball, Polyhedron, ReferenceSolverError
from constrain.reference import POLISH_TOL, certified_projection, certified_row, kkt_certificate
from experiments.validate import check_instance, instances


def _polytope(rng: np.random.Generator, n: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two equalities and eight inequalities around a feasible point: ``A, b, G, h``."""
    A, G, y0 = rng.standard_normal((2, n)), rng.standard_normal((8, n)), rng.standard_normal(n)
    return A, A @ y0, G, G @ y0 + rng.random(8)


def test_box_and_affine_agree_with_closed_forms() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 7)) * 3
    lower, upper = -rng.random(7), rng.random(7)
    box = certified_projection(Box(lower, upper), torch.from_numpy(x), torch.zeros(4, 7))  # a poor guess on purpose
    np.testing.assert_allclose(box.numpy(), np.clip(x, lower, upper), rtol=0, atol=1e-14)
    A, c = rng.standard_normal((3, 7)), rng.standard_normal(3)
    affine = certified_projection(Affine(A, c), torch.from_numpy(x), torch.from_numpy(x))
    np.testing.assert_allclose(affine.numpy(), x - (x @ A.T - c) @ np.linalg.pinv(A).T, rtol=0, atol=1e-13)


@pytest.mark.parametrize("guess", ["exact", "kernel", "zeros", "x", "nan"])
def test_polytope_agrees_with_cvxpy_whatever_the_guess(guess: str) -> None:
    """A guess only proposes the first active set: a poor one may cost the certificate (then cvxpy decides),
    never give a wrong reference; the exact answer and the kernel's always give one."""
    rng = np.random.default_rng(1)
    for _ in range(4):
        A, b, G, h = _polytope(rng)
        x = rng.standard_normal(6) * 4
        P = Polyhedron(A, b, G, h)
        ref = P.reference_projection(torch.from_numpy(x)[None], method="cvxpy")[0].numpy()
        kernel = P.project(torch.from_numpy(x)[None])[0].numpy()
        start = {"exact": ref, "kernel": kernel, "zeros": np.zeros(6), "x": x, "nan": np.full(6, np.nan)}[guess]
        y = certified_row(x, start, A, b, G, h)
        if guess in ("exact", "kernel"):
            assert y is not None
        if y is not None:
            np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12 * np.abs(x).max())
            assert kkt_certificate(x, y, A, b, G, h).passed  # multipliers recovered by least squares


def test_weighted_projection_onto_an_affine_set() -> None:
    rng = np.random.default_rng(2)
    A, c, x, d = rng.standard_normal((2, 5)), rng.standard_normal(2), rng.standard_normal(5), 10.0 ** rng.uniform(-2, 2, 5)
    y = certified_row(x, x, A, c, weights=d)
    assert y is not None
    # min sum d (y - x)^2 s.t. A y = c: y = x - D^-1 A^T (A D^-1 A^T)^-1 (A x - c)
    expected = x - (A.T / d[:, None]) @ np.linalg.solve((A / d) @ A.T, A @ x - c)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-13)


def test_certificate_rejects_a_perturbed_projection() -> None:
    rng = np.random.default_rng(3)
    A, b, G, h = _polytope(rng)
    x = rng.standard_normal(6) * 4
    y = certified_row(x, Polyhedron(A, b, G, h).project(torch.from_numpy(x)[None])[0].numpy(), A, b, G, h)
    assert y is not None and kkt_certificate(x, y, A, b, G, h).passed
    bumped = y + 1e-7 * rng.standard_normal(6)
    certificate = kkt_certificate(x, bumped, A, b, G, h)
    assert not certificate.passed and certificate.primal > POLISH_TOL  # off A y = b
    # moved within A y = b along the null space: feasible, but no longer stationary
    null = np.linalg.svd(A)[2][-1]
    slid = kkt_certificate(x, y + 1e-6 * null, A, b, G, h)
    assert not slid.passed


def test_certificate_rejects_a_negative_multiplier() -> None:
    # x = 0 is inside y_0 <= 1: the point (1, 0) on the face has multiplier (x - y)_0 = -1
    G, h = np.array([[1.0, 0.0]]), np.array([1.0])
    certificate = kkt_certificate(np.zeros(2), np.array([1.0, 0.0]), G=G, h=h)
    assert certificate.primal == 0.0 and certificate.stationarity <= 1e-15
    assert certificate.dual == pytest.approx(1.0) and not certificate.passed
    # the same point with multipliers given: a positive one does not satisfy stationarity
    assert not kkt_certificate(np.zeros(2), np.array([1.0, 0.0]), G=G, h=h, multipliers=np.array([1.0])).passed


def test_certificate_rejects_an_infeasible_point() -> None:
    G, h = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 1.0])
    x = np.array([3.0, 0.5])
    assert not kkt_certificate(x, x, G=G, h=h).passed  # stationary (y = x, no multiplier) but outside
    assert kkt_certificate(x, np.array([1.0, 0.5]), G=G, h=h).passed  # the projection


def test_no_certificate_for_an_empty_polytope_and_other_sets() -> None:
    empty = Polyhedron(G=np.array([[1.0], [-1.0]]), h=np.array([-1.0, -1.0]))  # y <= -1 and y >= 1
    with pytest.raises(ReferenceSolverError, match="row 0"):
        certified_projection(empty, torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="L1Ball"):
        certified_projection(L1Ball(1.0), torch.zeros(1, 3), torch.zeros(1, 3))


def test_validate_catches_a_wrong_kernel_through_the_kkt_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's output only proposes the active set: a wrong kernel meets a right reference and fails."""
    instance = instances("polyhedron", 5, only=["random"])[0]
    good = check_instance(instance)
    assert [o.reference for o in good] == ["kkt", "kkt"] and all(o.passed for o in good)
    project = Polyhedron.project
    # wrong in float32 only: the float64 answer proposes the right active set, the float32 one is caught
    monkeypatch.setattr(Polyhedron, "project", lambda self, x: project(self, x) + (1e-3 if x.dtype == torch.float32 else 0.0))
    bad32 = check_instance(instance)
    assert [o.reference for o in bad32] == ["kkt", "kkt"] and [o.passed for o in bad32] == [False, True]
    assert bad32[0].error >= 1e-4
    # wrong in both: the reference is still right (kkt from corrections, or cvxpy without a certificate)
    monkeypatch.setattr(Polyhedron, "project", lambda self, x: project(self, x) + 1e-3)
    bad = check_instance(instance)
    assert not any(o.passed for o in bad) and all(o.error >= 1e-4 for o in bad)
