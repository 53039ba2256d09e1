r"""Every public kernel under ``torch.func``: ``vmap``, ``jvp``, ``jacrev``, ``jacfwd``.

Jacobians are compared, in float64, with the closed forms and with each other:
L1 ball / simplex, on the support S of y = P(x) with s = sign(y):
:math:`J_x = \operatorname{diag}(|s|) - s s^\top / |S|` and :math:`\partial y / \partial r = s / |S|`
(ball rows inside: identity and 0); orthant: diag(1[x > 0]); affine: :math:`I - A^+ A`. The
projections are piecewise linear, so their second derivatives are exactly zero. Input checks
stay in force under the transforms.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.func import hessian, jacfwd, jacrev, jvp, vmap

from constrain import (
    Affine,
    _simplex,
    l1_ball_threshold,
    project_affine,
    project_l1_ball,
    project_nonnegative,
    project_simplex,
)
from constrain._simplex import _project

HAVE_NUMBA = _simplex._numba_kernels() is not None
METHODS = [pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")), "torch", "sort"]
SETS = {"ball": True, "simplex": False}


def _x(rows: int = 5, n: int = 7, seed: int = 0) -> torch.Tensor:
    """Generic rows (no ties), float64; for the ball, rows 1 and 3 are inside the unit-ish ball."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, generator=g, dtype=torch.float64) * 2
    x[1::2] /= 40 * n
    return x


def _closed_form(y: torch.Tensor, x: torch.Tensor, ball: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(J_x, dy/dr) of one row."""
    if ball and torch.equal(y, x):  # inside the ball
        return torch.eye(x.numel(), dtype=x.dtype), torch.zeros_like(x)
    s = torch.sign(y)
    size = s.abs().sum()
    return torch.diag(s.abs()) - torch.outer(s, s) / size, s / size


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", SETS)
def test_jacobians_forward_and_reverse_are_the_closed_form(method: str, kind: str) -> None:
    ball = SETS[kind]
    x = _x()
    radius = torch.tensor(1.0, dtype=torch.float64)

    def f(v, r):
        return _project(v, r, -1, ball, method)

    for row in x:
        y = f(row, radius)
        jx, jr = _closed_form(y, row, ball)
        for jac in (jacfwd, jacrev):
            torch.testing.assert_close(jac(f, argnums=0)(row, radius), jx, rtol=0, atol=1e-14)
            torch.testing.assert_close(jac(f, argnums=1)(row, radius), jr, rtol=0, atol=1e-14)
        # jvp along a direction, both tangents at once
        u = torch.linspace(-1, 1, row.numel(), dtype=torch.float64)
        _, tangent = jvp(f, (row, radius), (u, torch.tensor(0.5, dtype=torch.float64)))
        torch.testing.assert_close(tangent, jx @ u + 0.5 * jr, rtol=0, atol=1e-14)
        # piecewise linear: the second derivative is exactly zero, forward over reverse and reverse over reverse
        assert torch.equal(
            jacfwd(jacrev(f))(row, radius), torch.zeros(row.numel(), row.numel(), row.numel(), dtype=torch.float64)
        )
        assert torch.equal(
            hessian(lambda v, u=u: f(v, radius) @ u)(row), torch.zeros(row.numel(), row.numel(), dtype=torch.float64)
        )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", SETS)
def test_vmap_matches_the_batched_call(method: str, kind: str) -> None:
    ball = SETS[kind]
    x = _x(rows=6).reshape(2, 3, 7)
    radius = torch.tensor([[0.5, 1.0, 2.0], [1.5, 0.3, 4.0]], dtype=torch.float64)
    expected = _project(x, radius, -1, ball, method)
    # vmapped over the first dimension, the radius vmapped with it or shared
    torch.testing.assert_close(vmap(lambda v, r: _project(v, r, -1, ball, method))(x, radius), expected, rtol=0, atol=0)
    shared = _project(x, 0.7, -1, ball, method)
    torch.testing.assert_close(
        vmap(lambda v: _project(v, 0.7, -1, ball, method), in_dims=1, out_dims=1)(x), shared, rtol=0, atol=0
    )
    # the projected dimension in front, the vmapped one after it
    moved = x.permute(2, 0, 1)  # (7, 2, 3)
    got = vmap(lambda v, r: _project(v, r, 0, ball, method), in_dims=(2, 1), out_dims=2)(moved, radius)
    torch.testing.assert_close(got, expected.permute(2, 0, 1), rtol=0, atol=0)
    # nested vmap, and vmap of jacfwd / jacrev
    torch.testing.assert_close(vmap(vmap(lambda v, r: _project(v, r, -1, ball, method)))(x, radius), expected, rtol=0, atol=0)
    flat, r_flat = x.reshape(6, 7), radius.reshape(6)
    for jac in (jacfwd, jacrev):
        jacobians = vmap(jac(lambda v, r: _project(v, r, -1, ball, method)))(flat, r_flat)
        for row, r, jx in zip(flat, r_flat, jacobians, strict=True):
            torch.testing.assert_close(jx, _closed_form(_project(row, r, -1, ball, method), row, ball)[0], rtol=0, atol=1e-14)


@pytest.mark.parametrize("kernel", [project_l1_ball, project_simplex], ids=["ball", "simplex"])
def test_gradcheck_forward_and_batched_modes(kernel) -> None:
    """gradcheck's forward-mode, batched-grad (vmap over backward) and batched forward-grad checks; gradgradcheck."""
    x = _x(rows=4, n=6).requires_grad_()
    radius = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    assert gradcheck(
        kernel, (x, radius), eps=1e-6, atol=1e-8, check_forward_ad=True, check_batched_grad=True, check_batched_forward_grad=True
    )
    assert gradgradcheck(kernel, (x, radius), eps=1e-6, atol=1e-8, check_fwd_over_rev=True, check_rev_over_rev=True)


@pytest.mark.parametrize("kind", SETS)
def test_create_graph_double_backward_is_exact(kind: str) -> None:
    """grad of (grad . w) with create_graph: the second derivative of a piecewise-linear map is 0, exactly."""
    kernel = project_l1_ball if SETS[kind] else project_simplex
    x = _x().requires_grad_()
    w = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (g,) = torch.autograd.grad((kernel(x, 1.0) * w).sum(), x, create_graph=True)
    rows = zip(x.detach(), w, strict=True)
    expected = torch.stack([_closed_form(kernel(row, 1.0), row, SETS[kind])[0].T @ wr for row, wr in rows])
    torch.testing.assert_close(g.detach(), expected, rtol=0, atol=1e-14)
    (gg,) = torch.autograd.grad((g * w).sum(), x, allow_unused=True, materialize_grads=True)
    assert torch.equal(gg, torch.zeros_like(x))


def test_no_numba_path_under_transforms(monkeypatch) -> None:
    monkeypatch.setenv("CONSTRAIN_NO_NUMBA", "1")
    x = _x()
    for kernel, ball in ((project_l1_ball, True), (project_simplex, False)):

        def unit(v, kernel=kernel):
            return kernel(v, 1.0)

        torch.testing.assert_close(vmap(unit)(x), unit(x), rtol=0, atol=0)
        row = x[0]
        torch.testing.assert_close(jacfwd(unit)(row), _closed_form(unit(row), row, ball)[0])


def test_nonnegative_under_transforms() -> None:
    x = _x()
    torch.testing.assert_close(vmap(project_nonnegative)(x), x.clamp_min(0), rtol=0, atol=0)
    for row in x:
        expected = torch.diag((row > 0).double())
        for jac in (jacfwd, jacrev):
            torch.testing.assert_close(jac(project_nonnegative)(row), expected, rtol=0, atol=0)
    torch.testing.assert_close(jvp(project_nonnegative, (x,), (torch.ones_like(x),))[1], (x > 0).double())


def test_affine_under_transforms() -> None:
    g = torch.Generator().manual_seed(4)
    A, c = torch.randn(3, 7, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    x = _x()
    projector = torch.eye(7, dtype=torch.float64) - torch.linalg.pinv(A) @ A
    torch.testing.assert_close(vmap(lambda v: project_affine(v, A, c))(x), project_affine(x, A, c))
    for jac in (jacfwd, jacrev):
        torch.testing.assert_close(jac(lambda v: project_affine(v, A, c))(x[0]), projector)
        torch.testing.assert_close(jac(Affine(A, c).project)(x[0]), projector)
    u = torch.ones(7, dtype=torch.float64)
    torch.testing.assert_close(jvp(lambda v: project_affine(v, A, c), (x[0],), (u,))[1], projector @ u)
    with pytest.raises(ValueError, match="vmap over x"):
        vmap(lambda a: project_affine(x[0], a, c))(torch.stack([A, A]))


def test_l1_ball_threshold_under_transforms() -> None:
    """vmap gives the batched thresholds; the threshold is not differentiated: zero Jacobians, zero tangents."""
    x = _x()
    torch.testing.assert_close(vmap(lambda v: l1_ball_threshold(v, 1.0))(x), l1_ball_threshold(x, 1.0), rtol=0, atol=0)
    for jac in (jacfwd, jacrev):
        assert torch.equal(jac(lambda v: l1_ball_threshold(v, 1.0))(x[0]), torch.zeros(1, 7, dtype=torch.float64))
    assert torch.equal(
        jvp(lambda v: l1_ball_threshold(v, 1.0), (x,), (torch.ones_like(x),))[1], torch.zeros(5, 1, dtype=torch.float64)
    )


@pytest.mark.parametrize(
    "kernel",
    [
        lambda v: project_l1_ball(v, 1.0),
        lambda v: project_simplex(v, 1.0),
        project_nonnegative,
        lambda v: l1_ball_threshold(v, 1.0),
        lambda v: project_affine(v, torch.ones(1, 7, dtype=torch.float64), torch.ones(1, dtype=torch.float64)),
    ],
    ids=["ball", "simplex", "nonnegative", "threshold", "affine"],
)
def test_input_checks_hold_under_vmap(kernel) -> None:
    x = _x()
    x[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        vmap(kernel)(x)
    with pytest.raises(ValueError, match="NaN or Inf"):
        jacfwd(kernel)(x[3])


def test_radius_checks_hold_under_vmap() -> None:
    x = _x()
    radius = torch.tensor([1.0, 0.5, -1.0, 2.0, 1.0], dtype=torch.float64)
    for kernel in (project_l1_ball, project_simplex):
        with pytest.raises(ValueError, match="positive and finite"):
            vmap(kernel)(x, radius)
