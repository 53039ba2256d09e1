"""slack-lagrangian after `model.double()` mid-training: the slacks and their optimizer's state follow to float64."""

from __future__ import annotations

import torch

import strategies
from constrain import NonNegative, on_output


def test_the_slack_step_continues_in_float64() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x = torch.randn(16, 3)
    strategy = strategies.get("slack-lagrangian")  # slacks stepped by Adam (its default slack optimizer)
    strategy.attach(model, [on_output(NonNegative())])
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)

    def step(inputs: torch.Tensor) -> None:
        out = model(inputs)
        loss = strategy.loss((out - 1).square().mean(), out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()

    for _ in range(3):
        step(x)
    (before,) = [p.detach().clone() for p in strategy.slack_parameters()]
    assert before.dtype == torch.float32
    model.double()
    step(x.double())  # Adam's moments were float32: they must be recast with the slacks, or its step fails
    (after,) = list(strategy.slack_parameters())
    assert after.dtype == torch.float64 and bool(torch.isfinite(after).all())
    assert not torch.equal(after.detach(), before.double())  # the slacks took a step
