r"""Rows of more than :math:`2^{23}` float32 entries, where a float sum of the support's signs is no longer an exact
count (the Newton path then counts with ``count_nonzero``), in a batch of batches, against the projection by hand."""

from __future__ import annotations

import torch

from constrain import project_simplex


def test_a_batch_of_long_float32_rows_is_projected_exactly() -> None:
    n = 2**23 + 1  # n * eps(float32) > 1
    x = torch.zeros(1, 2, n)
    x[0, 0, :3] = torch.tensor([0.9, 0.5, 0.2])  # tau = 0.2: y = (0.7, 0.3, 0, ...)
    x[0, 1, -2:] = torch.tensor([2.0, -1.0])  # tau = 1: y = e_{n-2}
    y = project_simplex(x, 1.0, method="torch")
    assert y.shape == x.shape and y.dtype == torch.float32
    support = [tuple(torch.nonzero(y[0, i]).flatten().tolist()) for i in range(2)]
    assert support == [(0, 1), (n - 2,)]
    torch.testing.assert_close(y[0, 0, :2], torch.tensor([0.7, 0.3]), rtol=0, atol=1e-6)
    assert float(y[0, 1, n - 2]) == 1.0
