"""A barrier remembers the last strictly feasible parameters in buffers it keeps across steps (copied into,
not allocated per step), holding the parameters after each accepted step; a dtype change rebuilds them."""

from __future__ import annotations

import torch
from torch import nn

import strategies
from constrain import NonNegative, on_parameter


def _step(model: nn.Linear, strategy: strategies.Strategy, lr: float) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    dtype = model.weight.dtype
    loss = strategy.loss((model(torch.ones(4, 3, dtype=dtype)) - 1.0).square().mean())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    strategy.after_step()


def test_the_buffers_are_kept_and_hold_the_accepted_parameters() -> None:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, 1.0, 2.0], [0.25, 3.0, 0.1]]))
    strategy = strategies.LogBarrier(weight=0.01)
    strategy.attach(model, [on_parameter("weight", NonNegative())])
    buffer = strategy._last_feasible["weight"]
    torch.testing.assert_close(buffer, model.weight.detach())  # the starting point
    for _ in range(3):
        _step(model, strategy, 0.05)
        assert strategy._last_feasible["weight"] is buffer  # the same tensor, written in place
        torch.testing.assert_close(buffer, model.weight.detach(), rtol=0, atol=0)
        assert bool((model.weight > 0).all())
    model.double()
    _step(model, strategy, 0.05)
    rebuilt = strategy._last_feasible["weight"]
    assert rebuilt.dtype == torch.float64
    torch.testing.assert_close(rebuilt, model.weight.detach(), rtol=0, atol=0)
