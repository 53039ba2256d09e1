"""Projected family: every iterate is feasible, on training and on held-out inputs."""

from __future__ import annotations

import pytest
import torch

import strategies
from constrain import Affine, L1Ball, NonNegative, on_output, on_parameter, project_l1_ball
from training_problem import CELLS


@pytest.mark.parametrize("cell", CELLS)
def test_feasible_after_every_step(problem, cell):
    s = strategies.get("projected")
    worst = []

    def check(model):
        worst.append(problem.violations(s, model, problem.X))
        worst.append(problem.violations(s, model, problem.X_test))

    model = problem.train(s, problem.model(), CELLS[cell](), steps=60, each_step=check)
    assert max(worst) <= 1e-6, max(worst)
    with torch.no_grad():  # and training still lowers the objective
        start = torch.nn.functional.mse_loss(strategies.get("projected").attach(problem.model(), CELLS[cell]())(problem.X), problem.Y)
        assert torch.nn.functional.mse_loss(model(problem.X), problem.Y) < start


def test_projection_layer_keeps_model_identity(problem):
    model = problem.model()
    names = [n for n, _ in model.named_parameters()]
    s = strategies.get("projected")
    assert s.attach(model, CELLS["l1-output"]()) is model
    assert [n for n, _ in model.named_parameters()] == names
    with torch.no_grad():
        assert float(L1Ball(1.0).violation(model(problem.X_test * 100)).max()) <= 1e-9
        s.detach()
        assert float(L1Ball(1.0).violation(model(problem.X_test * 100)).max()) > 1


def test_threshold_constant_jacobian_differs_from_exact():
    """The shortcut drops -s s^T/|S| from the Jacobian: same forward, different gradient."""
    torch.manual_seed(0)
    z = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, dtype=torch.float64)
    exact, = torch.autograd.grad((project_l1_ball(z, 1.0) * w).sum(), z)
    s = strategies.get("projected", jacobian="threshold-constant")
    model = torch.nn.Identity()
    s.attach(model, [on_output(L1Ball(1.0))])
    y = model(z)
    assert torch.allclose(y, project_l1_ball(z, 1.0))
    shortcut, = torch.autograd.grad((y * w).sum(), z)
    support = (y != 0).double()
    assert torch.allclose(shortcut, w * support)
    assert not torch.allclose(shortcut, exact)


def test_threshold_constant_needs_l1_ball(problem):
    with pytest.raises(ValueError, match="jacobian='exact'"):
        strategies.get("projected", jacobian="threshold-constant").attach(problem.model(), CELLS["nonneg-output"]())


def test_gradient_mode_keeps_affine_constraint_with_sgd(problem):
    """With SGD, projecting the gradient onto null(A) alone keeps A w = c (the weight projection is a no-op)."""
    s = strategies.get("projected", mode="gradient")
    constraints = CELLS["affine-weight"]()
    model = s.attach(problem.model(), constraints)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    A, c = constraints[0].set.A, constraints[0].set.c
    for _ in range(20):
        out = model(problem.X)
        loss = s.loss(torch.nn.functional.mse_loss(out, problem.Y), out)
        opt.zero_grad()
        loss.backward()
        before = model.lin.weight.detach().clone()
        opt.step()
        assert float((A @ model.lin.weight.detach().reshape(-1) - c).abs().max()) <= 1e-12
        assert not torch.equal(before, model.lin.weight)
        s.after_step()


def test_gradient_mode_needs_affine(problem):
    with pytest.raises(ValueError, match="mode='weights'"):
        strategies.get("projected", mode="gradient").attach(problem.model(), CELLS["nonneg-weight"]())


def test_affine_spanning_two_layers_ties_them():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh(), torch.nn.Linear(3, 3))
    n = 9
    A = torch.cat([torch.eye(n), -torch.eye(n)], 1)  # W0 = W2 entry by entry
    s = strategies.get("projected")
    model = s.attach(model, [on_parameter(["0.weight", "2.weight"], Affine(A, torch.zeros(n)))])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 3), torch.randn(32, 3)
    for _ in range(10):
        loss = s.loss(torch.nn.functional.mse_loss(model(x), y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        s.after_step()
        assert torch.allclose(model[0].weight, model[2].weight, atol=1e-6)


def test_parametrized_weight_is_refused(problem):
    model = problem.model()
    torch.nn.utils.parametrize.register_parametrization(model.lin, "weight", torch.nn.Identity())
    with pytest.raises(ValueError, match="parametrized"):
        strategies.get("projected").attach(model, [on_parameter("lin.weight", NonNegative())])
