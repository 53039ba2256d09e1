"""A barrier's loss term sums over every attached target (each parameter's rows), by the barrier's formula."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import strategies
from constrain import NonNegative, on_parameter


@pytest.mark.parametrize(
    ("name", "psi"),
    [("log-barrier", lambda x: -torch.log(x)), ("reciprocal-barrier", lambda x: 1.0 / x)],
    ids=["log", "reciprocal"],
)
def test_the_term_covers_the_weight_and_the_bias(name: str, psi) -> None:
    model = nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, 1.0, 2.0], [0.25, 3.0, 0.1]]))
        model.bias.copy_(torch.tensor([0.2, 4.0]))
    strategy = strategies.get(name, weight=0.5)
    strategy.attach(model, [on_parameter("weight", NonNegative()), on_parameter("bias", NonNegative())])
    objective = torch.tensor(1.0, dtype=torch.float64)
    # by hand: weight * (sum of psi over every entry of the weight and of the bias), psi of the slack s = x
    want = 1.0 + 0.5 * (psi(model.weight.detach()).sum() + psi(model.bias.detach()).sum())
    assert float(strategy.loss(objective).detach()) == pytest.approx(float(want), rel=1e-12)
