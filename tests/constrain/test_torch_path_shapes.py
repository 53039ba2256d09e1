"""The torch and sort paths on a single vector and on a batch of batches agree with the exact reference per row."""

from __future__ import annotations

import pytest
import torch

from constrain import L1Ball, Simplex, project_l1_ball, project_simplex

CASES = [(project_l1_ball, L1Ball(1.3)), (project_simplex, Simplex(1.3))]


@pytest.mark.parametrize("method", ["torch", "sort"])
@pytest.mark.parametrize(("project", "constraint"), CASES, ids=["l1_ball", "simplex"])
@pytest.mark.parametrize("shape", [(9,), (2, 3, 7)], ids=["vector", "batch-of-batches"])
def test_each_row_is_the_exact_projection(method: str, project, constraint, shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    x = torch.randn(*shape, dtype=torch.float64) * 2
    x[..., 0] += torch.arange(x[..., 0].numel(), dtype=torch.float64).reshape(x.shape[:-1])  # rows of different maxima
    y = project(x, 1.3, method=method)
    rows = x.reshape(-1, shape[-1])
    expected = constraint.reference_projection(rows).reshape(shape)  # exact: sorting in integer arithmetic
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
