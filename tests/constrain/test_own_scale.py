"""`own_scale`: one float64 scale per row of x (shape x.shape[:-1]) on x's device, by each set's formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from constrain import Affine, L1Ball, NonNegative, Simplex

A = [[1.0, 2.0, 0.0, 1.0], [0.0, 1.0, 1.0, -1.0]]
C = [1.0, -2.0]


def _expected(constraint: object) -> float:
    """The scale written out: 0 for the cone, r for a ball or simplex, max_i |(A^+ c)_i| (numpy's pinv) for Affine."""
    if isinstance(constraint, NonNegative):
        return 0.0
    if isinstance(constraint, Affine):
        return float(np.abs(np.linalg.pinv(np.array(A)) @ np.array(C)).max())
    assert isinstance(constraint, (L1Ball, Simplex))
    return float(constraint.radius)


SETS = [NonNegative(), L1Ball(1.5), Simplex(2.0), Affine(A, C)]


@pytest.mark.parametrize("constraint", SETS, ids=lambda s: type(s).__name__)
def test_one_scale_per_row_by_the_formula(constraint) -> None:
    x = torch.randn(2, 3, 4, dtype=torch.float32)  # a batch of batches: the scale keeps both leading axes
    scale = constraint.own_scale(x)
    assert scale.shape == (2, 3) and scale.dtype == torch.float64
    torch.testing.assert_close(scale, torch.full((2, 3), _expected(constraint), dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("constraint", SETS, ids=lambda s: type(s).__name__)
def test_the_scale_follows_the_device_of_x(constraint) -> None:
    x = torch.empty(5, 4, device="meta")  # a device other than the CPU that every machine has
    scale = constraint.own_scale(x)
    assert scale.device == x.device and scale.shape == (5,)
