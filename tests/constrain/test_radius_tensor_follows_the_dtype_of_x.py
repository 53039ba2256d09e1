"""A float64 radius tensor is taken in the dtype of ``x``: the per-row radius and the simplex residual of a float32
``x`` are float32, with the values written out by hand."""

from __future__ import annotations

import pytest
import torch

from constrain import L1Ball, Simplex


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_float64_radius_tensor_is_taken_in_the_dtype_of_x(dtype: torch.dtype) -> None:
    radius = torch.tensor([1.5, 0.25], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.5, 0.25], [0.0, -0.5, 0.5]], dtype=dtype)
    r = L1Ball(radius).radius_like(x)
    assert r.dtype == dtype and r.tolist() == [[1.5], [0.25]]
    h = Simplex(radius).equality(x)  # sum(x) - r per row: (1.75 - 1.5, 0 - 0.25)
    assert h.dtype == dtype and h.tolist() == [[0.25], [-0.25]]
