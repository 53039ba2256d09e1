"""The cumulative L1 penalty keeps its three scratch buffers across steps and rebuilds them when a
weight's shape or dtype changes."""

from __future__ import annotations

import torch
from torch import nn

from constrain import L1Ball, on_parameter
from strategies._l1reg import L1Cumulative


def test_scratch_buffers_are_reused_and_rebuilt() -> None:
    strategy = L1Cumulative()
    strategy.attach(nn.Sequential(nn.Linear(4, 3)), [on_parameter("0.weight", L1Ball(1.0))])
    w = torch.zeros(3, 4)
    first = strategy._scratch(0, w)
    assert all(b.shape == w.shape and b.dtype == w.dtype for b in first)
    again = strategy._scratch(0, torch.ones(3, 4))
    assert all(a is b for a, b in zip(first, again, strict=True))  # same shape and dtype: no new allocation
    wider = strategy._scratch(0, torch.zeros(3, 5))
    assert all(b.shape == (3, 5) for b in wider)
    double = strategy._scratch(0, torch.zeros(3, 5, dtype=torch.float64))
    assert all(b.dtype == torch.float64 for b in double)
