"""The augmented Lagrangian with ``dual_lr=None`` steps its multipliers with the current penalty rho_k,
also through a dual optimizer class: plain SGD on -c then gives lambda_{k+1} = max(0, lambda_k + rho_k c_k),
with rho growing by ``penalty_growth`` after each dual step."""

from __future__ import annotations

import torch
from torch import nn

import strategies
from constrain import NonNegative, on_output
from strategies._lagrangian import LagrangianStrategy


def test_sgd_dual_steps_use_the_grown_penalty() -> None:
    strategy = strategies.get(
        "augmented-lagrangian",
        penalty=1.0,
        penalty_growth=2.0,
        dual_lr=None,
        multipliers="shared",
        dual_optimizer=torch.optim.SGD,
    )
    assert isinstance(strategy, LagrangianStrategy)
    strategy.attach(nn.Identity(), on_output(NonNegative()))
    outputs = torch.tensor([[-1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    c = (-outputs).clamp_min(0).mean(0)  # shared multipliers act on the mean violation of g = -x: (2, 0)
    lam, rho = torch.zeros(2, dtype=torch.float64), 1.0
    for _ in range(3):
        strategy.loss(torch.zeros((), dtype=torch.float64), outputs)
        strategy.after_step()
        lam, rho = (lam + rho * c).clamp_min(0), rho * 2.0  # by hand: rho_k = 1, 2, 4
        (got,) = strategy.multipliers().values()
        torch.testing.assert_close(got, lam, rtol=0, atol=1e-12)
    assert lam.tolist() == [14.0, 0.0]
