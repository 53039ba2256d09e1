"""Projected family: every iterate is feasible, on training and on held-out inputs."""

from __future__ import annotations

import pytest
import torch
from training_problem import CELLS

import strategies
from constrain import Affine, L1Ball, NonNegative, on_output, on_parameter, project_l1_ball


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
        start = torch.nn.functional.mse_loss(
            strategies.get("projected").attach(problem.model(), CELLS[cell]())(problem.X), problem.Y
        )
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
    (exact,) = torch.autograd.grad((project_l1_ball(z, 1.0) * w).sum(), z)
    s = strategies.get("projected", jacobian="threshold-constant")
    model = torch.nn.Identity()
    s.attach(model, [on_output(L1Ball(1.0))])
    y = model(z)
    assert torch.allclose(y, project_l1_ball(z, 1.0))
    (shortcut,) = torch.autograd.grad((y * w).sum(), z)
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


def _linear_optimum(problem, constraint) -> float:
    """cvxpy's optimum of the mean squared error of lin (weight W, bias b) under ``constraint`` on W."""
    import cvxpy as cp
    import numpy as np

    X, Y = problem.X.numpy(), problem.Y.numpy()
    W, b = cp.Variable((3, 5)), cp.Variable(3)
    Z = X @ W.T + np.ones((X.shape[0], 1)) @ cp.reshape(b, (1, 3), order="C")
    if isinstance(constraint, Affine):
        cons = constraint.cvxpy_constraint(cp.reshape(W, (15,), order="C"))
    else:
        cons = [c for j in range(3) for c in constraint.cvxpy_constraint(W[j, :])]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(Z - Y) / Y.size), cons)
    prob.solve(solver=cp.CLARABEL)
    return float(prob.value)


@pytest.mark.parametrize("cell", ["affine-weight", "l1-weight"])
def test_projection_in_adams_metric_reaches_the_constrained_optimum(problem, cell):
    """Projecting Adam's step in ||.||_D (the default) converges to cvxpy's optimum; the Euclidean projection
    after the same steps stalls at another point (its fixed points move with Adam's scaling)."""
    gaps = {}
    for metric in ("optimizer", "euclidean"):
        s = strategies.get("projected", metric=metric)
        # 400 steps reach cvxpy's optimum to 1e-10 (relative) here, far below the 1e-5 asked (1500 took 4x the time)
        model = problem.train(s, problem.model(), CELLS[cell](), steps=400, lr=0.05)
        with torch.no_grad():
            value = float(torch.nn.functional.mse_loss(model(problem.X), problem.Y))
        best = _linear_optimum(problem, CELLS[cell]()[0].set)
        gaps[metric] = (value - best) / best
        assert problem.violations(s, model, problem.X) <= 1e-9
    assert abs(gaps["optimizer"]) <= 1e-5, gaps
    assert gaps["euclidean"] > 10 * abs(gaps["optimizer"]), gaps


def test_metric_follows_the_optimizer(problem):
    """The strategy finds the optimizer by itself: Adam's diagonal after its step; SGD keeps the Euclidean metric."""
    from strategies._optimizer_metric import optimizer_diagonal

    for make, diagonal in ((lambda p: torch.optim.Adam(p, lr=0.01), True), (lambda p: torch.optim.SGD(p, lr=0.01), False)):
        s = strategies.get("projected")
        model = s.attach(problem.model(), CELLS["l1-weight"]())
        opt = make(model.parameters())
        loss = torch.nn.functional.mse_loss(model(problem.X), problem.Y)
        loss.backward()
        opt.step()
        d = s.current_metric(s.targets[0])
        assert (d is not None) == diagonal
        if diagonal:
            state = opt.state[model.lin.weight]
            expected = (state["exp_avg_sq"] / (1 - 0.999 ** float(state["step"]))).sqrt() + 1e-8
            assert torch.allclose(d, expected) and torch.equal(optimizer_diagonal(opt, model.lin.weight), d)
        s.detach()


def test_bad_projected_options_are_value_errors():
    for option in ({"mode": "grad"}, {"metric": "adam"}):
        with pytest.raises((ValueError, TypeError), match=next(iter(option))):
            strategies.get("projected", **option)
