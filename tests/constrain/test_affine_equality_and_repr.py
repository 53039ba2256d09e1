"""``Affine``'s residual ``A x - c`` in the dtype of ``x`` (against numpy), and its ``repr`` word for word."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from constrain import Affine

A = np.array([[1.0, -2.0, 0.5, 0.0], [0.0, 1.0, 1.0, 3.0], [1.0, -1.0, 1.5, 3.0]])  # row 3 = row 1 + row 2: rank 2
C = np.array([0.25, -1.0, -0.75])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_equality_residual_is_a_x_minus_c_in_the_dtype_of_x(dtype: torch.dtype) -> None:
    x = torch.linspace(-1.5, 2.0, 8, dtype=torch.float64).reshape(2, 4).to(dtype)
    h = Affine(A, C).equality(x)
    assert h.dtype == dtype and h.shape == (2, 3)
    np.testing.assert_allclose(h.double().numpy(), x.double().numpy() @ A.T - C, rtol=0, atol=10 * torch.finfo(dtype).eps)


def test_the_repr_names_the_shape_of_a_its_rank_and_the_parameter_shape() -> None:
    rank = np.linalg.matrix_rank(A)
    assert repr(Affine(A, C)) == f"Affine(A: (3, 4), rank {rank})"
    assert repr(Affine(A, C, shape=(2, 2))) == f"Affine(A: (3, 4), rank {rank}, shape (2, 2))"
