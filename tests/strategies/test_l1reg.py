"""The five L1-regularization implementations: which ones give exact zeros, and the sign of the step."""

from __future__ import annotations

import math

import pytest
import torch
from training_problem import CELLS

import strategies
from constrain import L1Ball, on_parameter
from strategies import UnsupportedConstraint

L1 = ["l1-subgradient", "l1-sign-step", "l1-proximal", "l1-truncated", "l1-cumulative"]


def _sparse_regression(seed: int = 0):
    """Only 3 of 20 inputs matter: a good L1 method zeroes the other 17 weights of each output."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(200, 20, generator=g, dtype=torch.float64)
    w = torch.zeros(20, 2, dtype=torch.float64)
    w[:3] = torch.tensor([[2.0, -1.0], [-1.5, 1.0], [1.0, 2.0]], dtype=torch.float64)
    return X, X @ w + 0.1 * torch.randn(200, 2, generator=g, dtype=torch.float64)


def _train(name: str, steps: int = 400, lr: float = 0.01, strength: float = 0.05):
    X, Y = _sparse_regression()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 2, dtype=torch.float64))
    s = strategies.get(name, strength=strength, lr=lr)
    model = s.attach(model, [on_parameter("0.weight", L1Ball(1.0))])
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        out = model(X)
        loss = s.loss(torch.nn.functional.mse_loss(out, Y), out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        s.after_step()
    return model[0].weight.detach()


@pytest.mark.parametrize("name", ["l1-proximal", "l1-truncated", "l1-cumulative"])
def test_shrinking_methods_give_exact_zeros(name):
    w = _train(name)
    irrelevant = w[:, 3:]
    assert float((irrelevant == 0).double().mean()) >= 0.9, irrelevant
    assert float((w[:, :3] == 0).double().mean()) == 0.0  # the true support survives


@pytest.mark.parametrize("name", ["l1-subgradient", "l1-sign-step"])
def test_subgradient_methods_hover_around_zero(name):
    w = _train(name)
    irrelevant = w[:, 3:]
    assert float((irrelevant == 0).double().mean()) <= 0.1
    assert float(irrelevant.abs().max()) < 0.05  # small, but not zero: they oscillate around it


def test_sign_step_shrinks_towards_zero():
    s = strategies.get("l1-sign-step", strength=0.1, lr=0.5)
    model = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
    s.attach(model, [on_parameter("0.weight", L1Ball(1.0))])
    s.after_step()
    assert torch.allclose(model[0].weight, torch.tensor([[0.95, -0.95]]))


def test_cumulative_penalty_matches_tsuruoka_update():
    s = strategies.get("l1-cumulative", strength=1.0, lr=0.1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.25, -0.05, 0.0]]))
    s.attach(model, [on_parameter("0.weight", L1Ball(1.0))])
    s.after_step()  # u = 0.1: 0.25 -> 0.15, -0.05 -> 0 (clipped), 0 stays
    assert torch.allclose(model[0].weight, torch.tensor([[0.15, 0.0, 0.0]]))
    with torch.no_grad():
        model[0].weight[0, 1] = -0.3  # a gradient step moves it away; it owes u - q = 0.2 - 0.05
    s.after_step()
    assert torch.allclose(model[0].weight, torch.tensor([[0.05, -0.15, 0.0]]))


def test_truncated_gradient_period_and_theta():
    s = strategies.get("l1-truncated", strength=1.0, lr=0.1, period=2, theta=0.5)
    model = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.3, 0.9]]))
    s.attach(model, [on_parameter("0.weight", L1Ball(1.0))])
    s.after_step()
    assert torch.allclose(model[0].weight, torch.tensor([[0.3, 0.9]]))  # not yet: every 2nd step
    s.after_step()
    assert torch.allclose(model[0].weight, torch.tensor([[0.1, 0.9]]))  # 0.9 > theta is left alone


@pytest.mark.parametrize("name", L1)
@pytest.mark.parametrize("cell", ["l1-output", "nonneg-output", "nonneg-weight", "affine-weight"])
def test_other_constraints_are_refused(problem, name, cell):
    with pytest.raises(UnsupportedConstraint, match="L1Ball"):
        strategies.get(name).attach(problem.model(), CELLS[cell]())


@pytest.mark.parametrize("bad", [{"strength": -1.0}, {"lr": 0.0}, {"strength": math.nan}])
def test_bad_options(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        strategies.get("l1-proximal", **bad)


def test_cumulative_state_round_trip():
    s = strategies.get("l1-cumulative", strength=1.0, lr=0.1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 1))
    s.attach(model, [on_parameter("0.weight", L1Ball(1.0))])
    s.after_step()
    state = s.state_dict()
    t = strategies.get("l1-cumulative", strength=1.0, lr=0.1)
    t.attach(model, [on_parameter("0.weight", L1Ball(1.0))])
    t.load_state_dict(state)
    assert t.total == s.total and torch.equal(t.applied[0], s.applied[0]) and t.steps == 1
