r"""The double backward (``create_graph=True``) of the L1-ball and simplex projections, in float64.

The first-order backward has two code paths: an in-place one (plain ``backward()``, checked by
``gradcheck`` elsewhere) and an out-of-place one that runs when the backward itself is being
differentiated (``create_graph=True``: Hessians, gradient penalties, meta-learning). The second
path is checked here against independent computations:

- its VJP against the Jacobian from central finite differences of the forward;
- the Hessian of a nonlinear loss :math:`L(x, r) = \sum_i w_i P(x, r)_i^2 + \sum_i u_i P(x, r)_i^3`,
  obtained by differentiating the first-order backward (double backward), against central finite
  differences of the first-order gradient (the plain backward);
- ``torch.autograd.gradgradcheck``.

``gradgradcheck`` alone cannot catch a wrong ``create_graph`` branch: a branch that drops the
:math:`-s s^\top/|S|` term is a wrong but self-consistent linear map, whose derivatives autograd
reproduces. The first two checks compare it with something it does not compute itself.

Points are away from ties and from the kinks of the projection (every :math:`|x_i|` at least
``MARGIN`` from the threshold, no zero entry), where the projection is locally affine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from constrain import project_l1_ball, project_simplex

EPS = 1e-6
MARGIN = 1e-3

ROWS = [
    [0.9, -0.35, 0.62, -0.05, 1.3, -0.8],  # outside the unit ball; support of 3
    [0.3, 0.2, -0.1, 0.12, -0.05, 0.01],  # inside the ball of radius 0.8 (identity Jacobian)
    [2.0, -3.1, 0.7, 1.6, -0.4, 2.2],  # outside the ball of radius 5; support of 5
    [0.25, 0.4, -0.7, 0.1, 0.55, -0.15],  # outside the ball of radius 0.5; support of 2
]
RADII = [1.0, 0.8, 5.0, 0.5]
PROJECTIONS = {"l1_ball": project_l1_ball, "simplex": project_simplex}


def _threshold(v: np.ndarray, r: float) -> float:
    """The simplex threshold of ``v`` by sorting (Held et al.), written out independently."""
    u = np.sort(v)[::-1]
    cumsum = np.cumsum(u) - r
    k = np.nonzero(u * np.arange(1, len(u) + 1) > cumsum)[0][-1] + 1
    return cumsum[k - 1] / k


def _away_from_kinks(kind: str) -> None:
    for row, r in zip(ROWS, RADII, strict=True):
        v = np.asarray(row)
        assert np.min(np.abs(v)) > MARGIN
        if kind == "l1_ball":
            if np.abs(v).sum() <= r:
                assert r - np.abs(v).sum() > MARGIN
                continue
            v = np.abs(v)
        tau = _threshold(v, r)
        assert np.min(np.abs(v - tau)) > MARGIN, (row, tau)


def _inputs():
    x = torch.tensor(ROWS, dtype=torch.float64, requires_grad=True)
    r = torch.tensor(RADII, dtype=torch.float64, requires_grad=True)
    return x, r


def _split(z: torch.Tensor):
    n = len(ROWS) * len(ROWS[0])
    return z[:n].reshape(len(ROWS), -1), z[n:]


def _packed() -> torch.Tensor:
    x, r = _inputs()
    return torch.cat([x.detach().reshape(-1), r.detach()])


W = torch.linspace(0.5, 2.0, len(ROWS[0]), dtype=torch.float64)
U = torch.linspace(-1.0, 1.0, len(ROWS[0]), dtype=torch.float64)


def _loss(project, z: torch.Tensor) -> torch.Tensor:
    x, r = _split(z)
    y = project(x, radius=r)
    return (W * y.square()).sum() + (U * y.pow(3)).sum()


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_create_graph_vjp_matches_finite_differences(kind):
    """The VJP of the create_graph=True branch is J^T v, J from finite differences of the forward."""
    _away_from_kinks(kind)
    project = PROJECTIONS[kind]
    z0 = _packed()
    m = len(ROWS) * len(ROWS[0])

    def forward(z):
        x, r = _split(z)
        return project(x, radius=r).reshape(-1)

    with torch.no_grad():
        columns = []
        for k in range(z0.numel()):
            e = torch.zeros_like(z0)
            e[k] = EPS
            columns.append((forward(z0 + e) - forward(z0 - e)) / (2 * EPS))
        jacobian = torch.stack(columns, 1)  # (m, m + rows)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(m, dtype=torch.float64, generator=generator)
        z = z0.clone().requires_grad_()
        (vjp,) = torch.autograd.grad(forward(z), z, v, create_graph=True)
        torch.testing.assert_close(vjp.detach(), jacobian.T @ v, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_hessian_by_double_backward_matches_finite_differences_of_gradient(kind):
    """d/dz of the first-order backward (create_graph branch, differentiated) equals central finite
    differences of the plain first-order gradient."""
    _away_from_kinks(kind)
    project = PROJECTIONS[kind]
    z0 = _packed()

    def gradient(z):  # the plain first-order backward (no create_graph)
        z = z.clone().requires_grad_()
        return torch.autograd.grad(_loss(project, z), z)[0]

    z = z0.clone().requires_grad_()
    (g,) = torch.autograd.grad(_loss(project, z), z, create_graph=True)
    torch.testing.assert_close(g.detach(), gradient(z0), rtol=1e-12, atol=1e-12)
    hessian = torch.stack(
        [torch.autograd.grad(g, z, e, retain_graph=True)[0] for e in torch.eye(z0.numel(), dtype=torch.float64)]
    )
    numeric = torch.stack(
        [(gradient(z0 + EPS * e) - gradient(z0 - EPS * e)) / (2 * EPS) for e in torch.eye(z0.numel(), dtype=torch.float64)]
    )
    torch.testing.assert_close(hessian, numeric, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(hessian, hessian.T, rtol=1e-10, atol=1e-12)
    assert hessian.abs().max() > 0.1  # a real second derivative, not an all-zero map


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_gradgradcheck(kind):
    _away_from_kinks(kind)
    project = PROJECTIONS[kind]
    x, r = _inputs()
    assert torch.autograd.gradgradcheck(lambda a, b: project(a, radius=b), (x, r), eps=EPS, atol=1e-6)
    assert torch.autograd.gradgradcheck(lambda a, b: project(a, radius=b).pow(3), (x, r), eps=EPS, atol=1e-6)
