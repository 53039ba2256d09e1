"""The branches the torch path takes under ``torch.compile``, run eagerly in a fraction of a second.

``tests/constrain/test_torch_path_compiles.py`` compiles the path (slow: minutes). Here
``torch.compiler.is_compiling`` is patched to True and ``torch.cond`` replaced by its eager meaning
(both branches traced, here run, on the operands; their outputs must agree in shape and dtype, as
``torch.cond`` requires; the one ``pred`` picks is returned), so the same code runs without compiling: no
finiteness check raises, a row with NaN or Inf comes back NaN, every other row is the exact projection
(against a sort-based projection written here in numpy).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from constrain import project_l1_ball, project_simplex


def _simplex_numpy(v: np.ndarray, r: float) -> np.ndarray:
    """Held and Wolfe's sort-based projection of one row onto {y >= 0, sum y = r}."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - r
    k = np.nonzero(u - cumulative / np.arange(1, v.size + 1) > 0)[0][-1]
    return np.maximum(v - cumulative[k] / (k + 1), 0.0)


def _ball_numpy(v: np.ndarray, r: float) -> np.ndarray:
    return v if np.abs(v).sum() <= r else np.sign(v) * _simplex_numpy(np.abs(v), r)


def _eager_cond(pred: torch.Tensor, true_fn: Callable, false_fn: Callable, operands: tuple) -> tuple[torch.Tensor, ...]:
    """``torch.cond`` eagerly: both branches run; their outputs alike in shape and dtype (cond's contract)."""
    when_true, when_false = true_fn(*operands), false_fn(*operands)
    alike = [(t.shape, t.dtype) for t in when_true] == [(t.shape, t.dtype) for t in when_false]
    assert alike, f"torch.cond's branches return different metadata: {when_true} vs {when_false}"
    return when_true if bool(pred) else when_false


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code as ``torch.compile`` traces it, run eagerly."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(torch, "cond", _eager_cond)


@pytest.mark.parametrize("ball", [True, False], ids=["l1_ball", "simplex"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_rows_come_back_nan_and_the_others_exact(traced: None, ball: bool, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(5)
    x = (2 * torch.randn(12, 30, generator=g, dtype=torch.float64)).to(dtype)
    x[::3] /= 1000  # rows inside the ball
    x[4, 7] = float("nan")
    x[8, 2] = -float("inf")
    y = (project_l1_ball if ball else project_simplex)(x, 1.0, method="torch")
    assert y.dtype == dtype and bool(torch.isnan(y[4]).all()) and bool(torch.isnan(y[8]).all())
    project = _ball_numpy if ball else _simplex_numpy
    for i in sorted(set(range(12)) - {4, 8}):
        np.testing.assert_allclose(y[i].double().numpy(), project(x[i].double().numpy(), 1.0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_newton_does_not_finish_take_the_sorted_branch(
    traced: None, monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    from constrain import _simplex

    monkeypatch.setattr(_simplex, "_NEWTON_STEPS", 1)  # one block of one step: most rows are left to the sort
    x = torch.rand(6, 300, generator=torch.Generator().manual_seed(6), dtype=torch.float64).to(dtype)
    y = project_simplex(x, 1.0, method="torch")
    assert y.dtype == dtype
    for i in range(6):
        np.testing.assert_allclose(y[i].double().numpy(), _simplex_numpy(x[i].double().numpy(), 1.0), rtol=0, atol=1e-6)
