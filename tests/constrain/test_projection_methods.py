"""The public ``method=`` of the L1-ball and simplex projections: every path gives the exact answer."""

from __future__ import annotations

import pytest
import torch

from constrain import L1Ball, Simplex, numba_available, project_l1_ball, project_simplex
from constrain._simplex import Method

METHODS: list[Method] = ["auto", "torch", "sort"]
if numba_available():
    METHODS.append("numba")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_method_matches_the_exact_reference(method: Method, dtype: torch.dtype) -> None:
    x = torch.randn(64, 37, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 3
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for project, constraint in ((project_l1_ball, L1Ball(1.5)), (project_simplex, Simplex(1.5))):
        y = project(x.to(dtype), 1.5, method=method)
        torch.testing.assert_close(y.double(), constraint.exact_projection(x), rtol=0, atol=tolerance)


def test_an_unknown_method_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="option 'method' must be one of 'auto', 'numba', 'torch', 'sort'; got 'fast'"):
        project_l1_ball(torch.randn(2, 3), method="fast")  # type: ignore[arg-type]  # the wrong value is the point


def test_numba_where_it_cannot_run_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSTRAIN_NO_NUMBA", "1")
    assert not numba_available()
    with pytest.raises(RuntimeError, match="numba kernels need numba"):
        project_simplex(torch.randn(2, 3), method="numba")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("project", [project_l1_ball, project_simplex], ids=["l1_ball", "simplex"])
def test_calls_that_differentiate_and_calls_that_do_not_agree(method: Method, project) -> None:
    """Without a graph, a transform or a dual level, the forward runs without the autograd.Function: same values;
    with any of them the Function runs, and its derivatives are the exact Jacobian's."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(6, 40, generator=g, dtype=torch.float64) * 2
    x[::3] /= 1e3  # ball rows inside
    tangent = torch.randn(6, 40, generator=g, dtype=torch.float64)
    plain = project(x, 1.2, method=method)
    leaf = x.clone().requires_grad_()
    tracked = project(leaf, 1.2, method=method)
    assert torch.equal(plain, tracked.detach()) and tracked.grad_fn is not None
    expected = torch.func.jvp(lambda v: project(v, 1.2, method="sort"), (x,), (tangent,))[1]
    with torch.autograd.forward_ad.dual_level():  # a dual tensor does not require grad, yet has a tangent
        dual = project(torch.autograd.forward_ad.make_dual(x, tangent), 1.2, method=method)
        unpacked = torch.autograd.forward_ad.unpack_dual(dual)
    assert torch.equal(unpacked.primal, plain) and unpacked.tangent is not None
    torch.testing.assert_close(unpacked.tangent, expected, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(tracked, leaf, tangent)
    # the Jacobian is symmetric (diag(|s|) - s s^T / |S|, or the identity inside the ball): vjp = jvp
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)
