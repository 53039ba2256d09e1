r"""Rows with a large common offset, ``x = noise + c``, project exactly on every path.

The simplex projection is shift-invariant, :math:`P_\Delta(x + c\,1) = P_\Delta(x)`, and the
L1-ball projection of a row outside the ball is :math:`\operatorname{sign}(x) P_\Delta(|x|)`, so
the exact answer has entries of order ``r`` whatever ``c`` is. Each path (numba kernels, the
pure-torch Newton path, the sort-based reference) must return a feasible point within
``1e-5 r`` of the exact projection of the *rounded* input (the tensor actually passed).

The independent reference, :func:`exact_projection`, sorts the row in numpy and works in
extended precision (``np.longdouble``) on the row shifted by its maximum; tiny rows are also
checked against rational arithmetic (:mod:`fractions`).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constrain import _simplex, project_l1_ball, project_simplex
from constrain._simplex import _project

HAVE_NUMBA = _simplex._numba_kernels() is not None
METHODS = [pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")), "torch", "sort"]
#: The paths as plain names (the numba kernels only where numba is installed; METHODS's skip reports it).
PATHS = ["numba", "torch", "sort"] if HAVE_NUMBA else ["torch", "sort"]
DTYPES = [torch.float32, torch.float64]
OFFSETS = [0.0, 1e2, 1e4, 1e6, 1e7, 1e8, -1e2, -1e4, -1e6, -1e7, -1e8]
#: Tolerance of the answer, relative to r (the issue's goal).
ANSWER_TOL = 1e-5
#: Feasibility, relative to r: a few ulps of r (float32 outputs are rescaled onto the set).
FEASIBLE_TOL = {torch.float32: 8 * 2.0**-23, torch.float64: 1e-12}


def _simplex_exact(a: np.ndarray, r: float) -> np.ndarray:
    """Projection of the rows of ``a`` onto the simplex of radius ``r``, in extended precision."""
    a = a.astype(np.longdouble)
    top = a.max(-1, keepdims=True)
    d = a - top  # exact on the support
    u = -np.sort(-d, axis=-1)
    cumsum = np.cumsum(u, axis=-1) - np.longdouble(r)
    ks = np.arange(1, a.shape[-1] + 1, dtype=np.longdouble)
    support = (u * ks > cumsum).sum(-1, keepdims=True)
    tau = np.take_along_axis(cumsum, support - 1, -1) / support
    return np.maximum(d - tau, 0)


def exact_projection(x: torch.Tensor, r: float, ball: bool) -> np.ndarray:
    """The exact projection (longdouble) of the rows of the rounded input ``x``."""
    a = x.double().numpy()
    if not ball:
        return _simplex_exact(a, r)
    out = np.sign(a).astype(np.longdouble) * _simplex_exact(np.abs(a), r)
    inside = np.abs(a).astype(np.longdouble).sum(-1) <= r
    out[inside] = a[inside]
    return out


def _fraction_simplex(row: list[float], r: float) -> list[Fraction]:
    """Simplex projection of one short row in rational arithmetic (every support size tried)."""
    values = sorted((Fraction(v) for v in row), reverse=True)
    radius = Fraction(r)
    for k in range(len(values), 0, -1):
        tau = (sum(values[:k]) - radius) / k
        if values[k - 1] > tau:
            return [max(Fraction(v) - tau, Fraction(0)) for v in row]
    raise AssertionError("unreachable: k = 1 always qualifies")


def check_offset_rows(
    y: torch.Tensor, x: torch.Tensor, r: float, ball: bool, what: str, expected: np.ndarray | None = None
) -> None:
    """Feasible to a few ulps of r and within ANSWER_TOL * r of the exact projection of ``x`` (``expected``:
    that projection, when the caller computed it once for several paths)."""
    assert y.dtype == x.dtype and y.shape == x.shape and bool(torch.isfinite(y).all()), what
    if expected is None:
        expected = exact_projection(x, r, ball)
    err = float(np.abs(y.double().numpy().astype(np.longdouble) - expected).max())
    assert err <= ANSWER_TOL * r, f"{what}: error {err / r:.3g} r > {ANSWER_TOL} r"
    y64 = y.double()
    if ball:
        violation = (y64.abs().sum(-1) - r).clamp_min(0).max()
    else:
        violation = torch.maximum((y64.sum(-1) - r).abs().max(), (-y64).clamp_min(0).max())
    assert float(violation) <= FEASIBLE_TOL[x.dtype] * r, f"{what}: infeasible by {float(violation) / r:.3g} r"


def _rows(seed: int, n: int, offsets: list[float], dtype: torch.dtype) -> torch.Tensor:
    """One row ``N(0, 1) + c`` per offset ``c``, rounded to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(offsets), n, generator=g, dtype=torch.float64)
    return (noise + torch.tensor(offsets, dtype=torch.float64).unsqueeze(-1)).to(dtype)


@pytest.mark.parametrize("method", METHODS)
def test_the_reported_row(method: str) -> None:
    """``[1e8, 0.3, 1e8, -0.2]`` onto the unit simplex is ``[.5, 0, .5, 0]`` (it was all zeros)."""
    for dtype in DTYPES:
        x = torch.tensor([[1e8, 0.3, 1e8, -0.2]], dtype=dtype)
        expected = torch.tensor([[0.5, 0.0, 0.5, 0.0]], dtype=dtype)
        assert torch.equal(_project(x, 1.0, -1, False, method), expected)
        assert torch.equal(_project(-x, 1.0, -1, True, method), -expected)  # ball: sign(x) simplex(|x|)
        assert torch.equal(_project(x - 2e8, 1.0, -1, False, method), expected)  # negative offset


@pytest.mark.parametrize("method", METHODS)
def test_many_equal_entries_sum_to_r_in_float64(method: str) -> None:
    """1e5 entries equal to 0.3: each gets r / n, and the row sums to r up to rounding (was 6.5e-9 off)."""
    x = torch.full((1, 100_000), 0.3, dtype=torch.float64)
    for r in (1.0, 1e-2, 1e2):
        y = _project(x, r, -1, False, method)
        assert abs(float(y.sum()) - r) <= 1e-13 * r
        assert float((y - r / 1e5).abs().max()) <= 1e-15 * r


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("ball", [False, True], ids=["simplex", "ball"])
def test_offset_grid(dtype: torch.dtype, ball: bool) -> None:
    """Every offset from -1e8 to 1e8, n from 2 to 1e5, r from 1e-2 to 1e2, on every path (numba when installed,
    torch, sort): one exact reference per row set and radius serves the three paths (it is the costly part)."""
    for n in (2, 16, 65, 1000, 100_000):
        x = _rows(n, n, OFFSETS * (3 if n < 100 else 1), dtype)
        for r in (1e-2, 1.0, 1e2):
            expected = exact_projection(x, r, ball)
            for method in PATHS:
                y = _project(x, r, -1, ball, method)
                check_offset_rows(y, x, r, ball, f"{method} {dtype} ball={ball} n={n} r={r:g}", expected)


@settings(max_examples=80, deadline=None)
@given(
    method=st.sampled_from(PATHS),
    dtype=st.sampled_from(DTYPES),
    ball=st.booleans(),
    n=st.integers(2, 3000),
    rows=st.integers(1, 4),
    offset=st.floats(-1e8, 1e8, allow_subnormal=False),
    log_r=st.floats(-2, 2),
    noise=st.sampled_from([1e-3, 1.0, 1e2]),
    ties=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_offset_rows_property(method, dtype, ball, n, rows, offset, log_r, noise, ties, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(rows, n, generator=g, dtype=torch.float64) * noise
    if ties:
        base = base.round()
    x = (base + offset).to(dtype)
    r = float(10.0**log_r)
    check_offset_rows(_project(x, r, -1, ball, method), x, r, ball, f"{method} {dtype} ball={ball}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_public_functions_on_offset_rows(dtype: torch.dtype, monkeypatch) -> None:
    """The public API, with numba (when installed) and with ``CONSTRAIN_NO_NUMBA=1``."""
    x = _rows(0, 300, [1e7, -1e7, 1e3, 0.0], dtype)
    for env in ("0", "1"):
        monkeypatch.setenv("CONSTRAIN_NO_NUMBA", env)
        check_offset_rows(project_simplex(x, 0.5), x, 0.5, False, f"simplex env={env}")
        check_offset_rows(project_l1_ball(-x, 0.5), -x, 0.5, True, f"ball env={env}")


def test_reference_agrees_with_rational_arithmetic() -> None:
    """The extended-precision reference itself, against fractions on short rows."""
    g = torch.Generator().manual_seed(1)
    for offset in (0.0, 1e8, -1e6):
        x = (torch.randn(20, 5, generator=g, dtype=torch.float64) + offset).float().double()
        for r in (1e-2, 1.0, 1e2):
            expected = exact_projection(x, r, ball=False)
            for row, exp in zip(x.tolist(), expected, strict=True):
                exact = _fraction_simplex(row, r)
                assert max(abs(float(Fraction(float(e)) - f)) for e, f in zip(exp, exact, strict=True)) <= 1e-15 * max(r, 1)
