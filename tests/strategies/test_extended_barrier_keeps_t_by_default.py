"""extended-log-barrier's documented defaults (README: ``t=5``, ``t_growth=1``): ``t`` stays 5 over the steps and
the term is Kervadec's extension at t = 5 on a hand-made value; ``t_growth`` given multiplies ``t`` per step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import strategies
from constrain import NonNegative, on_parameter


def _steps(strategy: strategies.ExtendedLogBarrier, n: int) -> None:
    model = nn.Linear(2, 1)
    strategy.attach(model, [on_parameter("weight", NonNegative())])
    for _ in range(n):
        strategy.loss(model.weight.sum()).backward()
        strategy.after_step()


def test_t_stays_at_five_and_the_term_follows_the_formula() -> None:
    strategy = strategies.get("extended-log-barrier")
    assert isinstance(strategy, strategies.ExtendedLogBarrier)
    _steps(strategy, 3)
    assert strategy.t == 5.0
    g = torch.tensor([-0.5, 0.1], dtype=torch.float64)  # inside (-0.5 <= -1/25) and outside
    inside, outside = -math.log(0.5) / 5, 5 * 0.1 - math.log(1 / 25) / 5 + 1 / 5
    torch.testing.assert_close(strategy.inequality_term(g), torch.tensor([inside, outside], dtype=torch.float64))


def test_a_given_t_growth_multiplies_t_after_every_step() -> None:
    strategy = strategies.ExtendedLogBarrier(t=2.0, t_growth=1.5)
    _steps(strategy, 3)
    assert strategy.t == pytest.approx(2.0 * 1.5**3)
