"""projected(jacobian="threshold-constant") gives rows in the model's dtype (the pull-back factor is computed in
float64, then cast), equal to the soft threshold computed here in numpy float64 to the dtype's precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import strategies
from constrain import L1Ball, on_output


def _by_hand(rows: np.ndarray, r: float) -> np.ndarray:
    """Each row's projection onto the L1 ball of radius r: soft threshold at the sort-based tau (0 inside)."""
    out = rows.copy()
    for i, x in enumerate(rows):
        if np.abs(x).sum() <= r:
            continue
        s = np.sort(np.abs(x))[::-1]
        cumulative = np.cumsum(s) - r
        k = np.nonzero(s * np.arange(1, x.size + 1) > cumulative)[0][-1]
        out[i] = np.sign(x) * np.maximum(np.abs(x) - cumulative[k] / (k + 1), 0.0)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_output_layer_keeps_the_dtype(dtype: torch.dtype) -> None:
    layer = nn.Linear(4, 5).to(dtype)
    x = torch.randn(8, 4, dtype=dtype, generator=torch.Generator().manual_seed(1)) * 4
    raw = (x @ layer.weight.T + layer.bias).detach().double().numpy()  # the layer's outputs before the map
    assert (np.abs(raw).sum(-1) > 1.3).sum() >= 4  # most rows outside the ball
    model = strategies.get("projected", jacobian="threshold-constant").attach(layer, [on_output(L1Ball(1.3))])
    y = model(x)
    assert y.dtype == dtype
    want = _by_hand(raw, 1.3)
    np.testing.assert_allclose(y.detach().double().numpy(), want, atol=10 * torch.finfo(dtype).eps * 4 * 5)
