"""Dual dynamics: the nuPI controller and the dual_optimizer option of the Lagrangian strategies."""

from __future__ import annotations

import pytest
import torch

import strategies
from constrain import Affine, on_parameter
from strategies._dual import NuPI, optimistic

TARGET = torch.tensor([3.0, -1.0, 2.0, 0.5], dtype=torch.float64)
OPTIMUM = TARGET - (TARGET.sum() - 1) / 4  # argmin ||x - t||^2 s.t. sum(x) = 1


def _equality_qp(options: dict, steps: int = 2000) -> tuple[float, float]:
    """min ||x - t||^2 s.t. sum x = 1 with Adam (lr 0.05 decaying to 5e-4); returns (|x - x*|_inf, |sum x - 1|)."""
    model = torch.nn.Module()
    model.x = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    strategy = strategies.get("lagrangian", multipliers="mean", **options)  # one multiplier per equation
    strategy.attach(model, [on_parameter("x", Affine(torch.ones(1, 4), [1.0]))])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.01 ** (k / steps))
    for _ in range(steps):
        loss = strategy.loss((model.x - TARGET).square().sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()
        schedule.step()
    x = model.x.detach()
    return float((x - OPTIMUM).abs().max()), float((x.sum() - 1).abs())


def test_nupi_converges_where_descent_ascent_cycles() -> None:
    plain = _equality_qp({"dual_lr": 0.1})
    controlled = _equality_qp({"dual_lr": 0.1, "dual_optimizer": "nupi", "dual_kp": 20.0})
    assert plain[0] > 1e-2 and plain[1] > 1e-2, plain  # plain gradient ascent on the multiplier: no convergence
    assert controlled[0] <= 1e-8 and controlled[1] <= 1e-8, controlled


def test_a_torch_optimizer_class_is_plain_ascent() -> None:
    """dual_optimizer=torch.optim.SGD takes the same steps as the built-in ascent."""
    builtin = _equality_qp({"dual_lr": 0.3}, steps=50)
    via_class = _equality_qp({"dual_lr": 0.3, "dual_optimizer": torch.optim.SGD}, steps=50)
    assert builtin == pytest.approx(via_class, rel=1e-12, abs=1e-14)


def test_nupi_update_rule() -> None:
    lam = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = NuPI([lam], lr=0.5, kp=2.0, ki=1.0)
    errors = [torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5]), torch.tensor([-1.0, 1.0])]
    expected, previous = torch.zeros(2, dtype=torch.float64), None
    for e in errors:
        lam.grad = e.double()
        opt.step()
        p_term = 0 if previous is None else e - previous  # nu = 0: xi_t = e_t; the first step is plain SGD
        expected = expected - 0.5 * (e + 2.0 * p_term)
        previous = e
        assert torch.allclose(lam.detach(), expected.double())
    # the optimistic gradient method is NuPI(kp=1, ki=1): lam <- lam - lr (2 e_t - e_{t-1})
    mu = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    o = optimistic([mu], lr=0.1)
    for e in (1.0, 3.0):
        mu.grad = torch.tensor([e], dtype=torch.float64)
        o.step()
    assert float(mu.detach()) == pytest.approx(-0.1 * 1.0 - 0.1 * (2 * 3.0 - 1.0))


def test_dual_optimizer_state_round_trips() -> None:
    def build() -> tuple:
        model = torch.nn.Module()
        model.x = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
        s = strategies.get("lagrangian", multipliers="mean", dual_lr=0.1, dual_optimizer="nupi")
        s.attach(model, [on_parameter("x", Affine(torch.ones(1, 4), [1.0]))])
        return model, s, torch.optim.SGD(model.parameters(), lr=0.05)

    def step(model, s, opt) -> None:
        loss = s.loss((model.x - TARGET).square().sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        s.after_step()

    model, s, opt = build()
    for _ in range(5):
        step(model, s, opt)
    state, weights = s.state_dict(), {k: v.clone() for k, v in model.state_dict().items()}
    assert "dual_optimizer" in state
    for _ in range(5):
        step(model, s, opt)
    model2, s2, opt2 = build()
    model2.load_state_dict(weights)
    s2.load_state_dict(state)
    for _ in range(5):
        step(model2, s2, opt2)
    assert torch.equal(model.x, model2.x)


@pytest.mark.parametrize("bad, error", [("adam", ValueError), (int, TypeError)])
def test_bad_dual_optimizers_are_clear_errors(bad, error) -> None:
    with pytest.raises(error, match="dual_optimizer"):
        strategies.get("lagrangian", dual_optimizer=bad)
