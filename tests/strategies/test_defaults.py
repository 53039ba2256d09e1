"""Defaults that work: every soft strategy, built by name with its default options, brings the largest
training violation below 1e-2 of the scale of the constrained values within 1000 Adam steps (lr 1e-2) on
an MLP whose unconstrained fit violates the constraint by several units."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import strategies
from constrain import Affine, L1Ball, NonNegative, on_output, on_parameter

CELLS = {
    "l1-output": lambda: [on_output(L1Ball(2.0))],
    "nonneg-output": lambda: [on_output(NonNegative())],
    "nonneg-weight": lambda: [on_parameter("4.weight", NonNegative())],
    "affine-weight": lambda: [on_parameter("4.weight", Affine.tie((3, 16), [[(0, j), (1, j), (2, j)] for j in range(0, 16, 4)]))],
    "l1-weight": lambda: [on_parameter("4.weight", L1Ball(1.0))],
}
SOFT = ["quadratic-penalty", "exact-penalty", "extended-log-barrier", "lagrangian", "augmented-lagrangian", "slack-lagrangian"]


def _data(cell: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of scale 1 to 10: ||y||_1 up to ~15 against a radius 2; outputs down to -10 against y >= 0."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(96, 5, generator=g)
    W = torch.randn(5, 3, generator=g)
    if cell == "l1-output":
        return X, 4 * torch.tanh(X @ W) + 1.0
    if cell == "nonneg-output":
        return X, 8 * torch.tanh(X @ W) - 2.0
    return X, 5 * torch.tanh(X @ W)


def _train_with_defaults(name: str, cell: str, steps: int = 1000) -> float:
    """The largest training violation after ``steps`` Adam steps, relative to the scale of what is constrained:
    the targets' largest magnitude for outputs, the radius for the L1 ball on weights, the weights' largest
    magnitude otherwise."""
    X, Y = _data(cell)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    strategy = strategies.get(name)
    model = strategy.attach(model, CELLS[cell]())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # right after attach: no strategy adds model parameters
    for _ in range(steps):
        out = model(X)
        loss = strategy.loss(nn.functional.mse_loss(out, Y), out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()
    with torch.no_grad():
        violation = max(strategy.report(model(X)).values())
        weight = model[4].weight.detach()
    scale = {"l1-output": float(Y.abs().max()), "nonneg-output": float(Y.abs().max()), "l1-weight": 1.0}.get(
        cell, float(weight.abs().max())
    )
    return violation / scale


def _cells(representative: set[tuple[str, str]]):
    for name in SOFT:
        for cell in CELLS:
            if strategies.strategy_class(name).unsupported_reason(CELLS[cell]()[0]) is not None:
                continue
            marks = [] if (name, cell) in representative else [pytest.mark.slow]
            yield pytest.param(name, cell, marks=marks, id=f"{name}-{cell}")


REPRESENTATIVE = {("lagrangian", "l1-output"), ("augmented-lagrangian", "affine-weight"), ("quadratic-penalty", "nonneg-output")}


@pytest.mark.parametrize("name, cell", list(_cells(REPRESENTATIVE)))
def test_defaults_enforce_the_constraint(name: str, cell: str) -> None:
    if cell.endswith("output"):  # fitting the targets alone would violate the constraint by units
        X, Y = _data(cell)
        assert float(CELLS[cell]()[0].set.violation(Y).max()) > 1.0
    relative = _train_with_defaults(name, cell)
    assert relative <= 1e-2, f"{name} on {cell} with defaults: relative violation {relative:.2e}"
