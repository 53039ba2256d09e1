"""``sigmoid_simplex`` maps every row of a ``(..., n)`` input (a single vector, a batch of batches), each by
the formula of its docstring, computed here in numpy with a sort-based simplex projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from strategies._output_maps import sigmoid_simplex


def _simplex(q: np.ndarray, r: float) -> np.ndarray:
    """Euclidean projection of the vector q onto {p >= 0, sum p = r} (sort and threshold)."""
    s = np.sort(q)[::-1]
    k = np.arange(1, q.size + 1)
    cumulative = np.cumsum(s) - r
    rho = np.nonzero(s * k > cumulative)[0][-1]
    return np.maximum(q - cumulative[rho] / (rho + 1), 0.0)


def _by_hand(z: np.ndarray, r: float) -> np.ndarray:
    """u = r tanh(z/2), q = (|u|, |r - ||u||_1|) projected onto the simplex of radius r, y = sign(u) p[:n]."""
    u = r * np.tanh(0.5 * z)
    q = np.concatenate([np.abs(u), [abs(r - np.abs(u).sum())]])
    return np.sign(u) * _simplex(q, r)[:-1]


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)], ids=["vector", "batch-of-batches"])
def test_each_row_is_mapped_by_the_formula(shape: tuple[int, ...]) -> None:
    z = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 3  # rows in and out
    y = sigmoid_simplex(z, 1.5)
    assert y.shape == z.shape
    rows = z.reshape(-1, shape[-1]).numpy()
    want = np.stack([_by_hand(row, 1.5) for row in rows]).reshape(shape)
    np.testing.assert_allclose(y.numpy(), want, atol=1e-12)
    assert bool((y.abs().sum(-1) <= 1.5 + 1e-12).all())
