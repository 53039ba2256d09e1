"""``reparam-gauge``'s default interior point (``interior="auto"``): certified strictly feasible on inputs far outside
the range where ``A^+ b`` is, refusing (by sample) only polytopes without interior; gradients of the map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

import strategies
from constrain import Polyhedron, on_output
from strategies._reparam._interior import auto_interior, certify_interior


def _dc3_recipe(n: int, m_eq: int, m_in: int, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DC3's construction, small: ``h_i = sum_j |(G A^+)_ij|``, so ``A^+ x`` is strictly feasible only for |x_j| < 1."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m_eq, n, generator=g, dtype=torch.float64)
    G = torch.randn(m_in, n, generator=g, dtype=torch.float64)
    return A, G, (G @ torch.linalg.pinv(A)).abs().sum(1)


def _chebyshev_radius(A: np.ndarray, b: np.ndarray, G: np.ndarray, h: np.ndarray) -> float:
    """The largest ball inside {A y = b, G y <= h} (an independent LP; capped at 1e3)."""
    n = G.shape[1]
    norms = np.linalg.norm(G, axis=1)
    res = linprog(
        np.r_[np.zeros(n), -1.0],
        A_ub=np.hstack([G, norms[:, None]]),
        b_ub=h,
        A_eq=np.hstack([A, np.zeros((A.shape[0], 1))]),
        b_eq=b,
        bounds=[(None, None)] * n + [(None, 1e3)],
        method="highs",
    )
    return -res.fun if res.status == 0 else -np.inf


@pytest.mark.parametrize("m_in", [10, 25])  # a simplicial cone on the slice (DC3's shape) and a bounded polytope
@pytest.mark.parametrize("scale", [10.0, 100.0])
def test_far_inputs_hold_with_the_auto_interior(m_in, scale):
    A, G, h = _dc3_recipe(20, 10, m_in)
    model = strategies.get("reparam-gauge").attach(  # the default interior
        torch.nn.Linear(10, 20).double(), [on_output(Polyhedron(A=A, b=lambda x: x, G=G, h=h))]
    )
    x = scale * (2 * torch.rand(40, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 1)
    An, Gn, hn = A.numpy(), G.numpy(), h.numpy()
    feasible = [i for i in range(40) if _chebyshev_radius(An, x[i].numpy(), Gn, hn) > 0]
    x = x[feasible]
    assert x.shape[0] >= 5  # some scaled inputs still have an interior (independently, by LP; 7 of 40 at m_in=25, x100)
    outside = ((x @ torch.linalg.pinv(A).T) @ G.T > h).any(-1)
    assert float(outside.double().mean()) >= 0.75  # A^+ x is outside for most of them: the phase 1 does the work
    with torch.no_grad():
        model.bias.fill_(3 * scale)  # outputs far outside too: the map retracts every row
        y = model(x)
    assert float((y @ A.T - x).abs().max()) <= 1e-6 * scale
    assert float((y @ G.T - h).max()) <= 1e-6


def test_auto_keeps_the_least_norm_point_where_it_is_strictly_inside_and_moves_the_others():
    A, G, h = _dc3_recipe(20, 10, 10)
    x = 2 * torch.rand(30, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64) - 1
    x[::3] *= 10  # every third sample far outside
    s = Polyhedron(A=A, b=x, G=G, h=h)
    y0 = auto_interior(s, torch.zeros(30, 20, dtype=torch.float64), {})
    yp = x @ torch.linalg.pinv(A).T
    inside = ((yp @ G.T) < h).all(-1)
    assert not bool(inside[::3].any()) and bool(inside[1::3].all())
    torch.testing.assert_close(y0[inside], yp[inside])  # A^+ x kept (independently computed)
    assert float(((y0 @ G.T) - h).max()) < 0 and float((y0 @ A.T - x).abs().max()) <= 1e-12  # strictly inside, on A y = x
    certify_interior(s, y0)  # and the map's certificate accepts every row


def test_auto_without_equalities_and_in_float32():
    # y <= -1 - x: the origin (A^+ b = 0 without equalities) is outside for every sample
    P = Polyhedron(G=torch.eye(3), h=lambda x: -1 - x.abs())
    model = strategies.get("reparam-gauge").attach(torch.nn.Linear(3, 3), [on_output(P)])
    x = 50 * torch.randn(16, 3)
    y = model(x).detach()
    assert y.dtype == torch.float32 and float((y + 1 + x.abs()).max()) <= 1e-6 * 50


def test_rows_the_projection_cannot_certify_go_to_the_lp(monkeypatch):
    A, G, h = _dc3_recipe(20, 10, 25)
    x = 10 * (2 * torch.rand(6, 10, generator=torch.Generator().manual_seed(8), dtype=torch.float64) - 1)
    keep = [i for i in range(6) if _chebyshev_radius(A.numpy(), x[i].numpy(), G.numpy(), h.numpy()) > 0]
    assert keep and bool(((x[keep] @ torch.linalg.pinv(A).T) @ G.T > h).any(-1).all())  # phase 1 would run on each
    s = Polyhedron(A=A, b=x[keep], G=G, h=h)

    def uncertified(self, rows):
        raise RuntimeError("could not be certified")

    monkeypatch.setattr(Polyhedron, "project", uncertified)
    y0 = auto_interior(s, torch.zeros(len(keep), 20, dtype=torch.float64), {})
    assert float((y0 @ G.T - h).max()) < 0 and float((y0 @ A.T - x[keep]).abs().max()) <= 1e-10  # the LP centres
    certify_interior(s, y0)


def _box_rows(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``lower <= y <= upper`` per row as ``G y <= h``."""
    n = lower.shape[1]
    G = torch.cat([torch.eye(n), -torch.eye(n)]).double()
    return G, torch.cat([upper, -lower], 1).double()


def test_auto_refuses_a_polytope_without_interior_by_sample():
    lower, upper = torch.ones(6, 3), torch.full((6, 3), 2.0)  # 0 is outside every box: phase 1 runs for each row
    upper[2, 1] = 1.0  # sample 2: a flat box (not empty, no interior)
    lower[4, 0] = 3.0  # sample 4: empty
    G, h = _box_rows(lower, upper)
    with pytest.raises(ValueError, match="sample 2 has no interior"):
        auto_interior(Polyhedron(G=G, h=h), torch.zeros(6, 3, dtype=torch.float64), {})
    G, h = _box_rows(lower[3:], upper[3:])
    with pytest.raises(ValueError, match="sample 1 has no interior"):  # the empty one, now sample 1
        auto_interior(Polyhedron(G=G, h=h), torch.zeros(3, 3, dtype=torch.float64), {})
    A = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0]], dtype=torch.float64)  # rank 1
    b = torch.tensor([[1.0, 2.0], [1.0, 3.0]], dtype=torch.float64)  # sample 1 is inconsistent
    G, h = _box_rows(torch.full((2, 3), 0.1), torch.full((2, 3), 2.0))  # A^+ b has y_3 = 0 < 0.1: phase 1 runs
    with pytest.raises(ValueError, match="empty for sample 1"):
        auto_interior(Polyhedron(A=A, b=b, G=G, h=h), torch.zeros(2, 3, dtype=torch.float64), {})
    y0 = auto_interior(Polyhedron(A=A, b=b[:1], G=G, h=h[:1]), torch.zeros(1, 3, dtype=torch.float64), {})
    assert float((y0 @ G.T - h[:1]).max()) < 0 and abs(float(y0[0, :2].sum()) - 1) <= 1e-12  # sample 0 alone holds


@pytest.mark.parametrize("scale", [1.0, 10.0])  # A^+ b itself; the phase-1 projection
def test_gauge_map_gradcheck(scale):
    from strategies._output_polytope import gauge_map

    A, G, h = _dc3_recipe(8, 3, 5)
    x = scale * (2 * torch.rand(4, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) - 1)
    assert bool(((x @ torch.linalg.pinv(A).T) @ G.T > h).any(-1).all()) == (scale > 1)  # which interior is used
    z = 5 * torch.randn(4, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def mapped(z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        s = Polyhedron(A=A, b=b, G=G, h=h)
        return gauge_map(s, z, auto_interior(s, z, {}))

    assert torch.autograd.gradcheck(mapped, (z.requires_grad_(), x.requires_grad_()), atol=1e-6)
