"""Shared by the strategy tests: a small linear-regression problem and the five constraint cells."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from constrain import Affine, L1Ball, NonNegative, on_output, on_parameter

#: The five constraints of the product, on an ``nn.Linear`` called ``lin`` (inputs 5, outputs 3).
CELLS: dict[str, Callable[[], list]] = {
    "l1-output": lambda: [on_output(L1Ball(1.0))],
    "nonneg-output": lambda: [on_output(NonNegative())],
    "nonneg-weight": lambda: [on_parameter("lin.weight", NonNegative())],
    "affine-weight": lambda: [on_parameter("lin.weight", Affine.tie((3, 5), [[(0, 0), (1, 1), (2, 2)], [(0, 4), (2, 3)]]))],
    "l1-weight": lambda: [on_parameter("lin.weight", L1Ball(0.5))],
}


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 3, dtype=torch.float64)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x)


@dataclass
class Problem:
    X: Tensor
    Y: Tensor
    X_test: Tensor

    def model(self, seed: int = 0) -> Linear:
        torch.manual_seed(seed)
        return Linear()

    def train(
        self,
        strategy,
        model: nn.Module,
        constraints: list,
        steps: int = 200,
        lr: float = 0.02,
        each_step: Callable[[nn.Module], None] | None = None,
    ) -> nn.Module:
        """Full-batch Adam on the mean squared error, learning rate decayed linearly to 1% so that
        iterates settle; ``each_step(model)`` runs after every step."""
        model = strategy.attach(model, constraints)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: max(1.0 - k / steps, 0.01))
        for _ in range(steps):
            out = model(self.X)
            loss = strategy.loss(nn.functional.mse_loss(out, self.Y), out)
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            strategy.after_step()
            if each_step is not None:
                each_step(model)
        return model

    def violations(self, strategy, model: nn.Module, inputs: Tensor) -> float:
        with torch.no_grad():
            report = strategy.report(model(inputs))
        return max(report.values())


def make_problem(seed: int = 0) -> Problem:
    """64 training points, 32 held-out points (twice as spread), 5 inputs, 3 outputs, float64."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 5, generator=g, dtype=torch.float64)
    W = torch.randn(5, 3, generator=g, dtype=torch.float64)
    Y = X @ W - 0.5 + 0.1 * torch.randn(64, 3, generator=g, dtype=torch.float64)
    return Problem(X, Y, torch.randn(32, 5, generator=g, dtype=torch.float64) * 2)
