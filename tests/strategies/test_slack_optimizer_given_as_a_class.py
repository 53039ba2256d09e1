"""``slack_optimizer`` given as a torch optimizer class is built over the slacks with ``lr=slack_lr``: one
SGD step moves each slack by ``-slack_lr`` times the gradient ``backward()`` left on it."""

from __future__ import annotations

import torch
from torch import nn

import strategies
from constrain import NonNegative, on_parameter


def test_an_sgd_class_takes_the_plain_gradient_step_at_slack_lr() -> None:
    model = nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 2.0], [-0.25, 3.0, 0.1]]))
    strategy = strategies.SlackLagrangian(slack_optimizer=torch.optim.SGD, slack_lr=0.1, dual_lr=0.5)
    strategy.attach(model, [on_parameter("weight", NonNegative())])
    slack = strategy.slack(0)
    strategy.loss(torch.zeros((), dtype=torch.float64)).backward()
    assert slack.grad is not None and bool(slack.grad.abs().sum() > 0)
    want = slack.detach() - 0.1 * slack.grad
    strategy.after_step()
    torch.testing.assert_close(slack.detach(), want, rtol=0, atol=1e-15)
    assert type(strategy._slack_opt) is torch.optim.SGD
