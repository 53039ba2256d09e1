"""``load_state_dict`` refuses ``state['multipliers']`` that is not a dict, naming the type it got, and
changes nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import strategies
from constrain import NonNegative, on_parameter
from strategies._lagrangian import LagrangianStrategy


@pytest.mark.parametrize("name", ["lagrangian", "augmented-lagrangian", "slack-lagrangian"])
@pytest.mark.parametrize("bad", [[torch.ones(2, 3)], (torch.ones(2, 3),)], ids=["list", "tuple"])
def test_the_error_names_the_type_given(name: str, bad: object) -> None:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(-1.0)  # every weight violates w >= 0
    strategy = strategies.get(name, dual_lr=0.5)
    assert isinstance(strategy, LagrangianStrategy)
    strategy.attach(model, [on_parameter("weight", NonNegative())])
    strategy.loss(torch.zeros(())).backward()
    strategy.after_step()
    before = {k: v.clone() for k, v in strategy.multipliers().items()}
    assert before  # sized by the first loss
    state = {**strategy.state_dict(), "multipliers": bad}
    with pytest.raises(TypeError, match=rf"state\['multipliers'\] must be a dict of tensors, got {type(bad).__name__}\."):
        strategy.load_state_dict(state)
    after = strategy.multipliers()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert strategy.steps == 1
