"""Shared strategies and checks for the tests of the ``constrain`` layer.

Inputs are drawn as float32-representable float64 arrays, so that the float32 and float64 kernels
see the same point; every check is made in float64, relative to the row scale
``s = max(max_i |x_i|, r)`` (r the radius where there is one).
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import Tensor

#: Relative tolerance of a computed quantity, by the dtype it was computed in.
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
DTYPES = (torch.float32, torch.float64)
SCALES = (1e-8, 1e-3, 1.0, 1e3, 1e8)

# entries: generic float32 values, plus exact small integers and zeros so that ties are common.
# Magnitudes below 1e-6 become 0: times the smallest scale (1e-8) they would stay normal floats,
# whereas a whole row near float32's subnormal range (< 1.2e-38) has no relative precision left.
_entries = st.one_of(
    st.floats(-10.0, 10.0, width=32, allow_subnormal=False).map(lambda v: 0.0 if abs(v) < 1e-6 else v),
    st.sampled_from([0.0, 1.0, -1.0, 2.0, -2.0, 0.5]),
)


@st.composite
def batches(draw, max_rows: int = 4, max_n: int = 12, min_n: int = 1) -> np.ndarray:
    """A (rows, n) float64 array of float32 values at a random scale from 1e-8 to 1e8."""
    rows = draw(st.integers(1, max_rows))
    n = draw(st.integers(min_n, max_n))
    scale = draw(st.sampled_from(SCALES))
    base = draw(arrays(np.float64, (rows, n), elements=_entries))
    return np.asarray(base * scale, dtype=np.float32).astype(np.float64)


@st.composite
def radii(draw, x: np.ndarray) -> float | np.ndarray:
    """A positive radius for the rows of ``x``: one float, or one per row (a per-sample radius).

    ``u * max(||x_i||_1, s)`` with ``u`` from 0.01 to 2, so some rows are inside the ball and
    some outside; float32-representable.
    """
    norms = np.abs(x).sum(-1)
    floor = max(float(np.abs(x).max()), 1e-8)
    if draw(st.booleans()):
        u = draw(st.floats(0.01, 2.0))
        return float(np.float32(u * max(float(norms.max()), floor)))
    u = np.array(draw(st.lists(st.floats(0.01, 2.0), min_size=len(norms), max_size=len(norms))))
    return np.asarray(u * np.maximum(norms, floor), dtype=np.float32).astype(np.float64)


def as_radius(radius: float | np.ndarray, dtype: torch.dtype) -> float | Tensor:
    return radius if isinstance(radius, float) else torch.as_tensor(radius, dtype=dtype)


def row_scale(x: Tensor, radius: float | np.ndarray | Tensor | None = None) -> Tensor:
    """``s = max(max_i |x_i|, r)`` per row (shape ``x.shape[:-1]``), 1 where that is 0."""
    s = x.detach().double().abs().amax(-1)
    if radius is not None:
        r = torch.as_tensor(radius, dtype=torch.float64)
        s = torch.maximum(s, r.expand(s.shape) if r.dim() else r)
    return torch.where(s > 0, s, torch.ones_like(s))


def l1_violation(y: Tensor, radius: float | np.ndarray | Tensor) -> Tensor:
    r = torch.as_tensor(radius, dtype=torch.float64)
    return (y.double().abs().sum(-1) - r).clamp_min(0)


def simplex_violation(y: Tensor, radius: float | np.ndarray | Tensor) -> Tensor:
    r = torch.as_tensor(radius, dtype=torch.float64)
    y = y.double()
    return torch.maximum((y.sum(-1) - r).abs(), (-y).clamp_min(0).amax(-1))
