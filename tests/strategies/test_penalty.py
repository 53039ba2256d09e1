"""Penalty and barrier family: feasibility improves with the weight; barriers stay strictly inside."""

from __future__ import annotations

import pytest
import torch
from training_problem import CELLS

import strategies
from constrain import L1Ball, NonNegative, ParameterTarget, on_parameter
from strategies import UnsupportedConstraint
from strategies._penalty import InfeasibleStartError

PENALTIES = ["quadratic-penalty", "exact-penalty"]
BARRIERS = ["log-barrier", "reciprocal-barrier"]


@pytest.mark.parametrize("name", PENALTIES)
@pytest.mark.parametrize("cell", CELLS)
def test_violation_shrinks_as_weight_grows(problem, name, cell):
    violations = []
    for weight in (0.3, 3.0, 30.0):
        s = strategies.get(name, weight=weight, growth=1.0)  # a fixed weight
        # 150 steps: the violations already fall by 3x or more from weight to weight (300 gave the same order)
        model = problem.train(s, problem.model(), CELLS[cell](), steps=150)
        violations.append(problem.violations(s, model, problem.X))
    assert violations[0] > 1e-3, f"the unconstrained optimum should violate {cell}: {violations}"
    assert violations[0] >= violations[1] >= violations[2], violations
    assert violations[2] < 0.5 * violations[0], violations


def _strictly_feasible_start(model, cell):
    with torch.no_grad():
        model.lin.weight.mul_(0.05).abs_() if cell in ("nonneg-weight", "l1-weight") else model.lin.weight.zero_()
        model.lin.bias.fill_(0.5 if cell == "nonneg-output" else 0.0)
    return model


@pytest.mark.parametrize("name", BARRIERS)
@pytest.mark.parametrize("cell", ["l1-output", "nonneg-output", "nonneg-weight", "l1-weight"])
def test_barrier_stays_strictly_feasible(problem, name, cell):
    """From a strictly feasible start, every iterate stays strictly inside (on the training inputs)."""
    s = strategies.get(name, weight=0.05)
    worst = []
    evaluate = s.slack_rows

    def recording(slack):  # the barrier's own evaluations, on the slacks s = -g: every one strictly inside
        worst.append(-float(slack.detach().min()))
        return evaluate(slack)

    s.slack_rows = recording

    def check(model):  # parameters: every iterate after its step strictly inside (no forward needed)
        for target in s.targets:
            if isinstance(target, ParameterTarget):
                worst.append(float(target.set.inequality(target.gather(model).detach()).max()))

    problem.train(s, _strictly_feasible_start(problem.model(), cell), CELLS[cell](), steps=150, lr=0.01, each_step=check)
    assert len(worst) >= 150 and max(worst) < 0, f"left the interior: max g = {max(worst)}"


@pytest.mark.parametrize("name", BARRIERS)
def test_barrier_refuses_infeasible_start(problem, name):
    model = problem.model()
    with torch.no_grad():
        model.lin.weight.fill_(-1.0)
    with pytest.raises(InfeasibleStartError, match="extended-log-barrier"):
        strategies.get(name).attach(model, [on_parameter("lin.weight", NonNegative())])
    s = strategies.get(name)
    model = s.attach(problem.model(), CELLS["nonneg-output"]())
    with pytest.raises(InfeasibleStartError, match="first batch"):
        s.loss(torch.tensor(0.0), model(problem.X))


def test_extended_log_barrier_accepts_infeasible_start(problem):
    s = strategies.get("extended-log-barrier", weight=1.0, t=5.0, t_growth=1.01)
    before = problem.model()
    with torch.no_grad():
        v0 = NonNegative().violation(before(problem.X)).max()
    model = problem.train(s, before, CELLS["nonneg-output"](), steps=300)
    assert problem.violations(s, model, problem.X) < 0.1 * float(v0)


@pytest.mark.parametrize("name", BARRIERS + ["extended-log-barrier"])
def test_barriers_refuse_equalities(problem, name):
    with pytest.raises(UnsupportedConstraint, match="equality"):
        strategies.get(name).attach(problem.model(), CELLS["affine-weight"]())


def test_growth_schedule_and_state_round_trip(problem):
    s = strategies.get("quadratic-penalty", weight=1.0, growth=2.0, weight_limit=8.0)
    problem.train(s, problem.model(), CELLS["nonneg-weight"](), steps=5)
    assert s.weight == 8.0
    state = s.state_dict()
    t = strategies.get("quadratic-penalty", weight=1.0, growth=2.0, weight_limit=8.0)
    t.attach(problem.model(), CELLS["nonneg-weight"]())
    t.load_state_dict(state)
    assert t.weight == 8.0 and t.steps == 5


@pytest.mark.parametrize("bad", [{"weight": 0.0}, {"weight": float("nan")}, {"growth": -1.0}])
def test_bad_options(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        strategies.get("quadratic-penalty", **bad)


def test_non_finite_loss_is_an_error(problem):
    s = strategies.get("quadratic-penalty")
    model = s.attach(problem.model(), CELLS["nonneg-output"]())
    out = model(problem.X)
    with pytest.raises(FloatingPointError, match="step 0"):
        s.loss(torch.tensor(float("nan"), dtype=torch.float64), out)


@pytest.mark.parametrize("name", BARRIERS)
@pytest.mark.parametrize("constraint", [NonNegative(), L1Ball(2.0)])
def test_barrier_term_and_gradient_are_the_elementwise_formula(name, constraint):
    """The fused barrier (row sums on the slacks s = -g; for NonNegative s is the weight itself) gives the value
    and the gradient of ``weight * sum(inequality_term(g))`` formed elementwise by autograd."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(3, 5, dtype=torch.float64) * 0.3 + 0.01)  # strictly inside both sets
    s = strategies.get(name, weight=0.7)
    s.attach(layer, [on_parameter("weight", constraint)])
    term = s.loss(torch.zeros((), dtype=torch.float64))
    (grad,) = torch.autograd.grad(term, layer.weight)
    w = layer.weight.detach().clone().requires_grad_(True)
    expected = 0.7 * s.inequality_term(constraint.inequality(w)).sum()
    (expected_grad,) = torch.autograd.grad(expected, w)
    torch.testing.assert_close(term, expected.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", BARRIERS)
@pytest.mark.parametrize("value", [0.0, -1e-3])
def test_barrier_on_weights_refuses_a_weight_moved_outside_between_steps(name, value):
    """A weight put on the boundary or outside after attach (by hand) raises InfeasibleStartError at the next loss,
    found from the barrier's own sums (log) or one reduction of the slacks (reciprocal); an infinite weight, inside
    but not finite, is reported as a non-finite loss instead."""
    layer = torch.nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.abs_().add_(1e-2)
    s = strategies.get(name)
    s.attach(layer, [on_parameter("weight", NonNegative())])
    with torch.no_grad():
        layer.weight[1, 2] = value
    with pytest.raises(InfeasibleStartError, match=r"at step 0 \(max g = "):
        s.loss(torch.tensor(0.0))
    with torch.no_grad():
        layer.weight[1, 2] = float("inf")
    if name == "log-barrier":  # -log(inf) = -inf: the loss is not finite
        with pytest.raises(FloatingPointError, match="not finite") as raised:
            s.loss(torch.tensor(0.0))
        assert not isinstance(raised.value, InfeasibleStartError)
    else:  # 1/inf = 0: a finite loss, the point is inside
        assert torch.isfinite(s.loss(torch.tensor(0.0)))


@pytest.mark.parametrize("name", BARRIERS)
def test_barrier_names_an_infeasible_start_with_input_dependent_bounds(name):
    """Outputs outside a polyhedron whose right-hand side is computed from the model's input: the barrier's loss
    finds the forward of these outputs and raises InfeasibleStartError (not a missing-forward error)."""
    from constrain import Polyhedron, on_output

    torch.manual_seed(0)
    x = torch.randn(6, 3)
    below = Polyhedron(G=torch.eye(2), h=lambda inputs: inputs[:, :2] - 100.0)  # y <= x[:, :2] - 100
    s = strategies.get(name)
    model = s.attach(torch.nn.Linear(3, 2), [on_output(below)])
    with pytest.raises(InfeasibleStartError, match="first batch's outputs"):
        s.loss(torch.tensor(0.0), model(x))
