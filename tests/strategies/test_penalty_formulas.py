"""Every penalty and barrier VALUE against its formula, on hand-made inputs.

``strategy.loss(objective, outputs) = objective + mu * sum phi(g) + mu * sum psi(h)``, where the sum
is averaged over the samples of the batch for output constraints and summed over the rows for
parameter constraints (README, "Pick a strategy by name"). The expected values below are written
out by hand from the documented formulas (numbers or plain Python arithmetic), not computed with
the package's helpers: ``g`` of the L1 ball is ``||x||_1 - r`` per row, of the orthant ``-x`` per
entry; ``h`` of ``A w = c`` is ``A vec(W) - c``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import strategies
from constrain import Affine, L1Ball, NonNegative, on_output, on_parameter

OBJECTIVE = 0.75

# outputs: three samples, three outputs each; L1 norms 0.8, 2.5 and 3.0
OUTPUTS = [[0.5, -0.2, 0.1], [1.0, -1.0, 0.5], [0.0, 0.0, -3.0]]
# a 2 x 3 weight; row L1 norms 0.6 and 3.5
WEIGHT = [[0.1, -0.2, 0.3], [-2.0, 0.5, 1.0]]


def _quadratic(v: float) -> float:
    return max(v, 0.0) ** 2


def _exact(v: float) -> float:
    return max(v, 0.0)


def _log(v: float) -> float:
    return -math.log(-v)


def _reciprocal(v: float) -> float:
    return 1.0 / (-v)


def _extended_log(v: float, t: float) -> float:
    """Kervadec et al. (2019): -(1/t) log(-z) for z <= -1/t^2, else t z - (1/t) log(1/t^2) + 1/t."""
    if v <= -1.0 / t**2:
        return -math.log(-v) / t
    return t * v - math.log(1.0 / t**2) / t + 1.0 / t


class _Net(nn.Module):
    def __init__(self, weight) -> None:
        super().__init__()
        w = torch.tensor(weight, dtype=torch.float64)
        self.lin = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
        with torch.no_grad():
            self.lin.weight.copy_(w)
            self.lin.bias.zero_()

    def forward(self, x):
        return self.lin(x)


def _value(name: str, constraint, outputs=None, params=WEIGHT, **options) -> float:
    strategy = strategies.get(name, **options)
    strategy.attach(_Net(params), [constraint])
    out = None if outputs is None else torch.tensor(outputs, dtype=torch.float64)
    loss = strategy.loss(torch.tensor(OBJECTIVE, dtype=torch.float64), out)
    return float(loss.detach())


def _l1_rows(rows, r):
    return [sum(abs(v) for v in row) - r for row in rows]


# ------------------------------------------------------------------ exterior penalties
@pytest.mark.parametrize(
    "name, phi, psi, form",
    [
        ("quadratic-penalty", _quadratic, lambda h: h * h, {}),
        ("exact-penalty", _exact, abs, {"form": "subgradient"}),  # the proximal form: test_exact_penalty_proximal_terms
    ],
)
def test_exterior_penalty_values(name, phi, psi, form):
    mu = 2.5
    # L1 ball on outputs: batch mean of phi(||y||_1 - r), one inequality per sample
    g = _l1_rows(OUTPUTS, 1.0)  # -0.2, 1.5, 2.0
    expected = OBJECTIVE + mu * sum(phi(v) for v in g) / len(g)
    assert _value(name, on_output(L1Ball(1.0)), OUTPUTS, weight=mu, **form) == pytest.approx(expected, rel=1e-12)
    # outputs >= 0: g = -y per entry, summed per sample, averaged over the batch
    per_sample = [sum(phi(-v) for v in row) for row in OUTPUTS]
    expected = OBJECTIVE + mu * sum(per_sample) / len(per_sample)
    assert _value(name, on_output(NonNegative()), OUTPUTS, weight=mu, **form) == pytest.approx(expected, rel=1e-12)
    # weights >= 0: summed over every entry of the weight (rows are summed, not averaged)
    expected = OBJECTIVE + mu * sum(phi(-v) for row in WEIGHT for v in row)
    assert _value(name, on_parameter("lin.weight", NonNegative()), weight=mu, **form) == pytest.approx(expected, rel=1e-12)
    # L1 ball on each weight row: summed over the rows
    expected = OBJECTIVE + mu * sum(phi(v) for v in _l1_rows(WEIGHT, 0.5))
    assert _value(name, on_parameter("lin.weight", L1Ball(0.5)), weight=mu, **form) == pytest.approx(expected, rel=1e-12)
    # A vec(W) = c: psi of every residual, summed
    A = [[1.0, 0.0, 0.0, 0.0, -1.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]
    c = [0.0, 2.0, -0.5]
    flat = [v for row in WEIGHT for v in row]
    residuals = [sum(a * w for a, w in zip(row, flat, strict=True)) - ci for row, ci in zip(A, c, strict=True)]  # -0.4, -0.7, 0.2
    expected = OBJECTIVE + mu * sum(psi(h) for h in residuals)
    assert _value(name, on_parameter("lin.weight", Affine(A, c)), weight=mu, **form) == pytest.approx(expected, rel=1e-12)


def test_exact_penalty_proximal_terms():
    """The default (proximal) form: the weight penalty leaves the loss (its proximal step follows the optimizer's
    step), the output penalty stays in it with the documented value."""
    mu = 2.5
    for constraint in (NonNegative(), L1Ball(0.5)):
        assert _value("exact-penalty", on_parameter("lin.weight", constraint), weight=mu) == OBJECTIVE
    g = _l1_rows(OUTPUTS, 1.0)
    expected = OBJECTIVE + mu * sum(_exact(v) for v in g) / len(g)
    assert _value("exact-penalty", on_output(L1Ball(1.0)), OUTPUTS, weight=mu) == pytest.approx(expected, rel=1e-12)


def test_quadratic_penalty_numbers():
    """The same formula as plain numbers, so that a wrong power cannot hide in a shared helper."""
    # rows with ||y||_1 - 1 = -0.2, 1.5, 2.0: mean of (0, 2.25, 4.0) = 6.25 / 3
    assert _value("quadratic-penalty", on_output(L1Ball(1.0)), OUTPUTS, weight=3.0) == pytest.approx(
        0.75 + 3.0 * 6.25 / 3, rel=1e-12
    )
    # exact: mean of (0, 1.5, 2.0) = 3.5 / 3
    assert _value("exact-penalty", on_output(L1Ball(1.0)), OUTPUTS, weight=3.0) == pytest.approx(0.75 + 3.0 * 3.5 / 3, rel=1e-12)


# ------------------------------------------------------------------ barriers
INSIDE_OUTPUTS = [[0.2, -0.3, 0.1], [0.05, 0.05, -0.1], [0.0, 0.9, 0.0]]  # L1 norms 0.6, 0.2, 0.9
POSITIVE_OUTPUTS = [[0.2, 0.3, 0.1], [0.05, 1.5, 0.7]]
POSITIVE_WEIGHT = [[0.1, 0.2, 0.3], [2.0, 0.5, 0.01]]


@pytest.mark.parametrize("name, phi", [("log-barrier", _log), ("reciprocal-barrier", _reciprocal)])
def test_barrier_values(name, phi):
    mu = 0.3
    g = _l1_rows(INSIDE_OUTPUTS, 1.0)  # -0.4, -0.8, -0.1
    expected = OBJECTIVE + mu * sum(phi(v) for v in g) / len(g)
    assert _value(name, on_output(L1Ball(1.0)), INSIDE_OUTPUTS, weight=mu) == pytest.approx(expected, rel=1e-12)
    per_sample = [sum(phi(-v) for v in row) for row in POSITIVE_OUTPUTS]
    expected = OBJECTIVE + mu * sum(per_sample) / len(per_sample)
    assert _value(name, on_output(NonNegative()), POSITIVE_OUTPUTS, weight=mu) == pytest.approx(expected, rel=1e-12)
    expected = OBJECTIVE + mu * sum(phi(-v) for row in POSITIVE_WEIGHT for v in row)
    value = _value(name, on_parameter("lin.weight", NonNegative()), params=POSITIVE_WEIGHT, weight=mu)
    assert value == pytest.approx(expected, rel=1e-12)
    expected = OBJECTIVE + mu * sum(phi(v) for v in _l1_rows(WEIGHT, 4.0))  # rows 0.6 and 3.5 inside r = 4
    assert _value(name, on_parameter("lin.weight", L1Ball(4.0)), weight=mu) == pytest.approx(expected, rel=1e-12)


def test_barrier_numbers():
    # -log(0.4), -log(0.8), -log(0.1), averaged; 1/0.4 + 1/0.8 + 1/0.1 averaged
    assert _value("log-barrier", on_output(L1Ball(1.0)), INSIDE_OUTPUTS, weight=1.0) == pytest.approx(
        0.75 - (math.log(0.4) + math.log(0.8) + math.log(0.1)) / 3, rel=1e-12
    )
    assert _value("reciprocal-barrier", on_output(L1Ball(1.0)), INSIDE_OUTPUTS, weight=1.0) == pytest.approx(
        0.75 + (2.5 + 1.25 + 10.0) / 3, rel=1e-12
    )


@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_extended_log_barrier_values(t):
    """Both branches (inside, and linear past -1/t^2, including infeasible points) and their seam."""
    mu = 0.7
    g = _l1_rows(OUTPUTS, 1.0)  # -0.2 (inside branch for t >= 2.24 only), 1.5, 2.0 (linear)
    expected = OBJECTIVE + mu * sum(_extended_log(v, t) for v in g) / len(g)
    got = _value("extended-log-barrier", on_output(L1Ball(1.0)), OUTPUTS, weight=mu, t=t)
    assert got == pytest.approx(expected, rel=1e-12)
    expected = OBJECTIVE + mu * sum(_extended_log(-v, t) for row in WEIGHT for v in row)
    got = _value("extended-log-barrier", on_parameter("lin.weight", NonNegative()), weight=mu, t=t)
    assert got == pytest.approx(expected, rel=1e-12)
    # the seam: continuous at z = -1/t^2 (value -(1/t) log(1/t^2) from both sides)
    z = -1.0 / t**2
    assert _extended_log(z, t) == pytest.approx(t * z - math.log(1 / t**2) / t + 1 / t, rel=1e-12)


def test_extended_log_barrier_numbers():
    # t = 5: threshold -0.04; g = -0.2 -> -(1/5) log(0.2); g = 1.5 -> 7.5 - log(0.04)/5 + 0.2; g = 2 -> 10 - ... + 0.2
    inside = -math.log(0.2) / 5
    linear = lambda z: 5 * z - math.log(0.04) / 5 + 0.2  # noqa: E731
    expected = 0.75 + (inside + linear(1.5) + linear(2.0)) / 3
    assert _value("extended-log-barrier", on_output(L1Ball(1.0)), OUTPUTS, weight=1.0, t=5.0) == pytest.approx(
        expected, rel=1e-12
    )


# ------------------------------------------------------------------ schedules
def _penalty_after_steps(name, steps, **options):
    strategy = strategies.get(name, **options)
    strategy.attach(_Net(WEIGHT), [on_parameter("lin.weight", NonNegative())])
    values = []
    for _ in range(steps):
        values.append(float(strategy.loss(torch.tensor(0.0, dtype=torch.float64)).detach()))
        strategy.after_step()
    return values


def test_weight_growth_and_limit():
    """mu_k = min(mu_0 growth^k, weight_limit) for growth > 1, max(...) for growth < 1."""
    base = sum(max(-v, 0.0) ** 2 for row in WEIGHT for v in row)  # 2.0^2 + 0.2^2 = 4.04
    got = _penalty_after_steps("quadratic-penalty", 5, weight=1.0, growth=2.0, weight_limit=5.0)
    assert got == pytest.approx([base * m for m in (1.0, 2.0, 4.0, 5.0, 5.0)], rel=1e-12)
    base = sum(max(-v, 0.0) for row in WEIGHT for v in row)  # 2.2
    got = _penalty_after_steps("exact-penalty", 4, weight=1.0, growth=0.5, weight_limit=0.3, form="subgradient")
    assert got == pytest.approx([base * m for m in (1.0, 0.5, 0.3, 0.3)], rel=1e-12)


def test_weight_limit_bounds_a_constant_weight_from_above():
    """growth = 1 is not a shrinking schedule: weight_limit is an upper bound, applied after the first step."""
    base = sum(max(-v, 0.0) ** 2 for row in WEIGHT for v in row)
    got = _penalty_after_steps("quadratic-penalty", 3, weight=3.0, growth=1.0, weight_limit=2.0)
    assert got == pytest.approx([base * m for m in (3.0, 2.0, 2.0)], rel=1e-12)


def test_extended_barrier_t_growth():
    """t_k = t_0 t_growth^k enters the formula (one inequality g = 1.5 - r past the seam)."""
    strategy = strategies.get("extended-log-barrier", weight=1.0, growth=1.0, t=1.0, t_growth=3.0)
    strategy.attach(_Net(WEIGHT), [on_output(L1Ball(1.0))])
    out = torch.tensor([[1.0, -0.5, 1.0]], dtype=torch.float64)  # g = 1.5
    for t in (1.0, 3.0, 9.0):
        assert float(strategy.loss(torch.tensor(0.0, dtype=torch.float64), out).detach()) == pytest.approx(
            _extended_log(1.5, t), rel=1e-12
        )
        strategy.after_step()


# ------------------------------------------------------------------ options, state, backtracking
@pytest.mark.parametrize(
    "name, option",
    [
        ("quadratic-penalty", "weight"),
        ("exact-penalty", "growth"),
        ("log-barrier", "weight_limit"),
        ("extended-log-barrier", "t"),
        ("extended-log-barrier", "t_growth"),
    ],
)
@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan])
def test_options_must_be_positive_and_finite(name, option, value):
    with pytest.raises(ValueError, match=f"{option} must be positive and finite"):
        strategies.get(name, **{option: value})


def test_state_round_trip_carries_the_schedules():
    source = strategies.get("extended-log-barrier", weight=2.0, growth=0.5, t=1.0, t_growth=3.0)
    source.attach(_Net(WEIGHT), [on_output(L1Ball(1.0))])
    source.after_step()
    source.after_step()  # weight 0.5, t 9
    state = source.state_dict()
    assert state == {"steps": 2, "skipped_steps": 0, "weight": 0.5, "t": 9.0}
    target = strategies.get("extended-log-barrier")
    target.attach(_Net(WEIGHT), [on_output(L1Ball(1.0))])
    target.load_state_dict(state)
    out = torch.tensor([[1.0, -0.5, 1.0]], dtype=torch.float64)  # g = 1.5, linear branch
    assert float(target.loss(torch.tensor(0.0, dtype=torch.float64), out).detach()) == pytest.approx(
        0.5 * _extended_log(1.5, 9.0), rel=1e-12
    )
    penalty = strategies.get("quadratic-penalty", weight=3.0)
    penalty.attach(_Net(WEIGHT), [on_parameter("lin.weight", NonNegative())])
    assert penalty.state_dict() == {"steps": 0, "skipped_steps": 0, "weight": 3.0}
    for bad in ({"steps": 0, "weight": 0.0}, {"steps": 0, "weight": True}, {"steps": 0, "weight": "1"}):
        with pytest.raises(ValueError, match="positive finite number"):
            penalty.load_state_dict(bad)
    with pytest.raises(KeyError, match="lacks 'weight'"):
        penalty.load_state_dict({"steps": 0})
    with pytest.raises(KeyError, match="unknown entries 't'"):
        penalty.load_state_dict({"steps": 0, "weight": 1.0, "t": 2.0})
    penalty.load_state_dict({"steps": 5, "weight": 7.0})
    assert penalty.weight == 7.0 and penalty.state_dict()["steps"] == 5


def test_barrier_halves_a_step_that_leaves_the_interior():
    """w <- w_prev + (w - w_prev) / 2^k with the least k that is strictly inside (here k = 4: the
    entry 0.01 stepped to -0.07 comes back as 0.01 - 0.08/16 = 0.005; 0.01 - 0.08/8 = 0 is not inside)."""
    strategy = strategies.get("log-barrier", weight=0.1)
    model = strategy.attach(_Net(POSITIVE_WEIGHT), [on_parameter("lin.weight", NonNegative())])
    before = torch.tensor(POSITIVE_WEIGHT, dtype=torch.float64)
    step = torch.zeros_like(before)
    step[1, 2], step[0, 0] = -0.08, 0.4
    with torch.no_grad():
        model.lin.weight.add_(step)
    strategy.after_step()
    torch.testing.assert_close(model.lin.weight.detach(), before + step / 16, rtol=0, atol=1e-15)
    # the new point is remembered: a step that stays inside is kept as it is
    with torch.no_grad():
        model.lin.weight.add_(0.001)
    strategy.after_step()
    torch.testing.assert_close(model.lin.weight.detach(), before + step / 16 + 0.001, rtol=0, atol=1e-15)


def test_barrier_keeps_the_last_training_outputs_inside():
    """Outputs: the next training forward is checked before the loss sees it; the last step is halved until
    every output is strictly inside (here the bias step +2 on an output of 0.5 in the unit ball: 1/8), and the
    forward returns the outputs of that point."""
    strategy = strategies.get("reciprocal-barrier", weight=0.1)
    model = _Net([[0.0, 0.0, 0.0]])  # one output, 0.5 on every input
    with torch.no_grad():
        model.lin.bias.fill_(0.5)
    model = strategy.attach(model, [on_output(L1Ball(1.0))])
    x = torch.ones(2, 3, dtype=torch.float64)
    out = model(x)  # a training forward: checked, and its point remembered
    strategy.loss(torch.tensor(0.0, dtype=torch.float64), out).backward()
    with torch.no_grad():
        model.lin.bias.add_(2.0)  # outputs 2.5: outside
    strategy.after_step()
    with torch.no_grad():  # an evaluation forward is not checked: it sees the step as taken
        assert float(model(x).abs().max()) == pytest.approx(2.5, abs=1e-15)
    out = model(x)  # the next training forward: halvings 1.5, 1.0 (on the boundary: not strictly inside), 0.75
    assert float(model.lin.bias.detach()) == pytest.approx(0.75, abs=1e-15)
    assert out.detach().reshape(-1).tolist() == pytest.approx([0.75, 0.75], abs=1e-15) and out.requires_grad
    loss = strategy.loss(torch.tensor(0.0, dtype=torch.float64), out)
    assert float(loss.detach()) == pytest.approx(0.1 / 0.25, rel=1e-12)  # mu / (r - |y|) at the accepted point


@pytest.mark.parametrize(
    "name, phi",
    [
        ("quadratic-penalty", _quadratic),
        ("exact-penalty", _exact),
        ("log-barrier", _log),
        ("reciprocal-barrier", _reciprocal),
        ("extended-log-barrier", lambda v: _extended_log(v, 5.0)),
    ],
)
def test_elementwise_terms(name, phi):
    """``inequality_term(g)``, the documented elementwise phi (a subclass may fuse the row sums)."""
    g = [-2.0, -0.5, -0.01] if "barrier" in name and name != "extended-log-barrier" else [-2.0, -0.01, 0.0, 0.3, 4.0]
    got = strategies.get(name).inequality_term(torch.tensor(g, dtype=torch.float64))
    assert got.tolist() == pytest.approx([phi(v) for v in g], rel=1e-12)


def test_a_skipped_step_keeps_the_barrier_schedule_and_the_point():
    """on_nonfinite='skip': after a NaN loss, after_step neither shrinks the weight nor moves the parameters,
    and the remembered training batch is dropped (only the parameter targets are checked)."""
    strategy = strategies.get("log-barrier", weight=1.0, growth=0.5, on_nonfinite="skip")
    model = _Net(POSITIVE_WEIGHT)
    model = strategy.attach(model, [on_parameter("lin.weight", NonNegative()), on_output(L1Ball(100.0))])
    x = torch.ones(1, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="Skipping this step"):
        loss = strategy.loss(torch.tensor(math.nan, dtype=torch.float64), model(x))
    loss.backward()
    strategy.after_step()
    assert strategy.weight == 1.0 and strategy.skipped_steps == 1
    torch.testing.assert_close(model.lin.weight.detach(), torch.tensor(POSITIVE_WEIGHT, dtype=torch.float64))
    strategy.loss(torch.tensor(0.0, dtype=torch.float64), model(x)).backward()
    strategy.after_step()
    assert strategy.weight == 0.5
