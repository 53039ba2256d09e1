"""A barrier on outputs saves, as ``state['last_feasible']``, only a point a training forward verified strictly
inside: nothing right after attach (the starting parameters were never checked on data), then the parameters of
the last forward whose outputs were inside."""

from __future__ import annotations

import torch
from torch import nn

import strategies
from constrain import NonNegative, on_output


def test_nothing_before_the_first_forward_then_the_verified_parameters() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.fill_(0.5)
    strategy = strategies.LogBarrier(weight=0.1)
    strategy.attach(model, [on_output(NonNegative())])
    assert strategy.state_dict()["last_feasible"] == {}
    outputs = model(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))  # 1.5 and 6.5: strictly inside
    assert bool((outputs > 0).all())
    saved = strategy.state_dict()["last_feasible"]
    assert set(saved) == {"weight", "bias"}
    torch.testing.assert_close(saved["weight"], torch.tensor([[1.0, 2.0]]), rtol=0, atol=0)
    torch.testing.assert_close(saved["bias"], torch.tensor([0.5]), rtol=0, atol=0)
