"""A multiplier appears (in ``multipliers()`` and the saved state) once its constraint has been evaluated, sized
by it: nothing right after attach, then one entry per constraint entry, starting from 0 plus one dual step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import strategies
from constrain import NonNegative, on_parameter
from strategies._lagrangian import LagrangianStrategy


@pytest.mark.parametrize("name", ["lagrangian", "augmented-lagrangian"])
def test_nothing_before_the_first_loss_then_the_constraints_shape(name: str) -> None:
    model = nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0, 0.5, 0.0], [2.0, -0.25, 1.0]]))
    strategy = strategies.get(name, dual_lr=0.5, multipliers="per-sample", num_samples=1)
    assert isinstance(strategy, LagrangianStrategy)
    strategy.attach(model, [on_parameter("weight", NonNegative())])
    assert strategy.multipliers() == {} and strategy.state_dict()["multipliers"] == {}
    strategy.loss(torch.zeros((), dtype=torch.float64)).backward()
    strategy.after_step()
    (lam,) = strategy.multipliers().values()
    # one multiplier per weight (the exact form), each max(0, 0 + 0.5 g) with g = -w
    torch.testing.assert_close(lam, (0.5 * -model.weight.detach()).clamp_min(0), rtol=0, atol=1e-15)
    assert set(strategy.state_dict()["multipliers"]) == set(strategy.multiplier_modules)
