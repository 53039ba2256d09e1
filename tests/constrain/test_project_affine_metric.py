r"""``constrain.project_affine_metric`` called directly (the sets reach it through ``project_metric``'s factor path):
each row against the KKT system of :math:`\min_y \sum_i d_i (y_i - x_i)^2` s.t. :math:`A y = c`, solved in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from constrain import AffineFactor, project_affine_metric


def _kkt_projection(x: np.ndarray, d: np.ndarray, A: np.ndarray, c: np.ndarray) -> np.ndarray:
    r"""Each row of x: :math:`[2D, A^\top; A, 0] [y; \nu] = [2 D x; c]` by least squares (A may be rank deficient)."""
    m, n = A.shape
    rows = []
    for xi, di in zip(x.reshape(-1, n), np.broadcast_to(d, x.shape).reshape(-1, n), strict=True):
        kkt = np.block([[2 * np.diag(di), A.T], [A, np.zeros((m, m))]])
        rows.append(np.linalg.lstsq(kkt, np.concatenate([2 * di * xi, c]), rcond=None)[0][:n])
    return np.stack(rows).reshape(x.shape)


def _system(rank_deficient: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    A = torch.randn(2, 5, generator=g, dtype=torch.float64)
    c = torch.randn(2, generator=g, dtype=torch.float64)
    if rank_deficient:  # a third row that is the sum of the first two, with the matching right-hand side
        A, c = torch.cat([A, A.sum(0, keepdim=True)]), torch.cat([c, c.sum(0, keepdim=True)])
    return A, c


@pytest.mark.parametrize("rank_deficient", [False, True])
@pytest.mark.parametrize("per_entry_metric", [False, True])
def test_each_row_solves_the_weighted_kkt_system(rank_deficient: bool, per_entry_metric: bool) -> None:
    A, c = _system(rank_deficient)
    factor = AffineFactor.of(A, c)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    shape = x.shape if per_entry_metric else (5,)
    d = 0.2 + 3 * torch.rand(shape, generator=g, dtype=torch.float64)
    y = project_affine_metric(x, d, factor.row_basis, factor.particular)
    assert y.shape == x.shape and y.dtype == torch.float64
    np.testing.assert_allclose(y.numpy(), _kkt_projection(x.numpy(), d.numpy(), A.numpy(), c.numpy()), atol=1e-10)
    np.testing.assert_allclose((y @ A.T).numpy(), np.broadcast_to(c.numpy(), (2, 3, A.shape[0])), atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_rows_keep_their_dtype_and_agree_with_float64(dtype: torch.dtype) -> None:
    A, c = _system(False)
    factor = AffineFactor.of(A, c)
    x = torch.linspace(-2, 2, 15, dtype=torch.float64).reshape(3, 5)
    d = torch.tensor([0.5, 1.0, 2.0, 4.0, 1.5], dtype=torch.float64)
    y = project_affine_metric(x.to(dtype), d.to(dtype), factor.row_basis, factor.particular)
    assert y.dtype == dtype
    # the input rounded to dtype, projected exactly, then rounded once more: a few ulps of dtype
    want = _kkt_projection(x.to(dtype).double().numpy(), d.to(dtype).double().numpy(), A.numpy(), c.numpy())
    np.testing.assert_allclose(y.double().numpy(), want, atol=8 * torch.finfo(dtype).eps * float(np.abs(want).max()))


def test_bad_inputs_are_refused_by_name() -> None:
    A, c = _system(False)
    factor = AffineFactor.of(A, c)
    x = torch.zeros(2, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="5 columns"):
        project_affine_metric(torch.zeros(2, 4, dtype=torch.float64), torch.ones(4), factor.row_basis, factor.particular)
    with pytest.raises(ValueError, match="positive"):
        project_affine_metric(x, torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0]), factor.row_basis, factor.particular)
    with pytest.raises(ValueError, match="broadcast"):
        project_affine_metric(x, torch.ones(3), factor.row_basis, factor.particular)
    with pytest.raises(ValueError, match="finite"):
        project_affine_metric(
            x.index_fill(1, torch.tensor([2]), float("nan")), torch.ones(5), factor.row_basis, factor.particular
        )
    empty = project_affine_metric(torch.zeros(0, 5, dtype=torch.float64), torch.ones(5), factor.row_basis, factor.particular)
    assert empty.shape == (0, 5)
