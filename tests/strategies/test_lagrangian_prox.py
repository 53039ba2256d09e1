"""primal="proximal": the multiplier term's proximal step on L1-ball weights, against cvxpy, and what it buys."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from torch import nn

import strategies
from constrain import L1Ball, on_output, on_parameter
from strategies._lagrangian import LagrangianStrategy
from strategies._lagrangian_prox import l1_multiplier_prox

_SOLVER = {"solver": cp.CLARABEL, "tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12}


def _cvxpy_prox(z: np.ndarray, t: np.ndarray, lam: np.ndarray, r: float, rho: float) -> np.ndarray:
    """argmin phi(||x||_1 - r) + 1/2 sum (x - z)^2 / t row by row, phi the plain (rho = 0) or the PHR term."""
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        x, s = cp.Variable(z.shape[1]), cp.Variable(nonneg=True)  # s >= max(0, lambda + rho g) at the optimum
        g = cp.norm1(x) - r
        term, constraints = (lam[i, 0] * g, []) if rho == 0 else (cp.square(s) / (2 * rho), [s >= lam[i, 0] + rho * g])
        distance = 0.5 * cp.sum(cp.multiply(1.0 / t[i], cp.square(x - z[i])))
        cp.Problem(cp.Minimize(term + distance), constraints).solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10)
        out[i] = x.value
    return out


@pytest.mark.parametrize("rho", [0.0, 0.5, 10.0, 1e3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prox_matches_cvxpy(seed: int, rho: float) -> None:
    """Rows far outside, near the boundary and inside the ball, multipliers from 0 (the PHR weight may be 0
    too: lambda + rho g <= 0) to large (every coordinate shrunk to 0)."""
    g = np.random.default_rng(seed)
    z = g.standard_normal((5, 9)) * np.array([[1.0], [0.15], [0.05], [0.6], [2.0]])
    t = np.exp(g.uniform(-3, 1, z.shape))
    lam = np.array([[0.3], [0.0], [0.1], [1.2], [50.0]])
    got = l1_multiplier_prox(torch.tensor(z), torch.tensor(t), torch.tensor(lam), 1.0, rho).numpy()
    np.testing.assert_allclose(got, _cvxpy_prox(z, t, lam, 1.0, rho), atol=1e-7)


def test_prox_takes_one_radius_per_row() -> None:
    g = np.random.default_rng(4)
    z, t = g.standard_normal((3, 6)), np.exp(g.uniform(-2, 0, (3, 6)))
    lam, radii = np.array([[0.2], [0.5], [0.1]]), torch.tensor([[0.5], [1.0], [2.0]], dtype=torch.float64)
    got = l1_multiplier_prox(torch.tensor(z), torch.tensor(t), torch.tensor(lam), radii, rho=5.0).numpy()
    for i, r in enumerate(radii.flatten().tolist()):
        np.testing.assert_allclose(got[i : i + 1], _cvxpy_prox(z[i : i + 1], t[i : i + 1], lam[i : i + 1], r, 5.0), atol=1e-7)


def test_prox_refuses_mismatched_shapes() -> None:
    z = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="lam must be"):
        l1_multiplier_prox(z, torch.ones_like(z), torch.zeros(2), 1.0)


# A weighted least-squares target C for a (2, 5) weight, each row in the L1 ball of radius 1: its optimum has
# zero coordinates (where Adam's step on the subgradient chatters) and multipliers of different sizes.
_C = torch.tensor([[1.0, 0.6, 0.1, -0.05, -0.8], [-0.3, 0.9, 0.02, 0.7, -0.1]], dtype=torch.float64)
_Q = torch.tensor([[1.0, 2.0, 0.5, 1.5, 3.0], [2.5, 1.0, 1.0, 0.3, 2.0]], dtype=torch.float64)


def _lagrangian(name: str, **options: object) -> LagrangianStrategy:
    strategy = strategies.get(name, **options)
    assert isinstance(strategy, LagrangianStrategy)
    return strategy


def _objective(w: torch.Tensor) -> torch.Tensor:
    return 0.5 * (_Q * (w - _C).square()).sum()


@pytest.fixture(scope="module")
def optimum() -> tuple[float, np.ndarray, np.ndarray]:
    """cvxpy's optimal value, weight and row multipliers."""
    w = cp.Variable(tuple(_C.shape))
    rows = [cp.norm1(w[j]) <= 1.0 for j in range(_C.shape[0])]
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum(cp.multiply(_Q.numpy(), cp.square(w - _C.numpy())))), rows)
    problem.solve(**_SOLVER)
    assert w.value is not None
    return float(problem.value), w.value, np.array([[float(c.dual_value)] for c in rows])


@pytest.mark.parametrize("rho", [0.0, 10.0])
def test_the_optimum_is_a_fixed_point(optimum: tuple[float, np.ndarray, np.ndarray], rho: float) -> None:
    """KKT: with cvxpy's multipliers, a gradient step from the optimum followed by the proximal step returns to it,
    for any positive steps (here Adam-like, different per coordinate)."""
    _, w_star, lam = optimum
    w = torch.tensor(w_star)
    t = torch.linspace(0.01, 0.3, w.numel(), dtype=torch.float64).reshape(w.shape)
    z = w - t * _Q * (w - _C)  # the gradient step on the objective
    back = l1_multiplier_prox(z, t, torch.tensor(lam), 1.0, rho)
    torch.testing.assert_close(back, w, atol=1e-8, rtol=0)


def _train(name: str, options: dict, steps: int = 600, lr: float = 0.05) -> tuple[float, float, LagrangianStrategy, torch.Tensor]:
    """Adam from zero with the learning rate decaying to lr * 1e-4; returns the objective, the largest
    violation over the last 50 steps, the strategy and the weight."""
    model = nn.Module()
    model.weight = nn.Parameter(torch.zeros_like(_C))
    strategy = _lagrangian(name, dual_lr=1.0, **options)
    strategy.attach(model, on_parameter("weight", L1Ball(1.0)))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    late = 0.0
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * 1e-4 ** (step / (steps - 1))
        loss = strategy.loss(_objective(model.weight))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        strategy.after_step()
        if step >= steps - 50:
            late = max(late, float((model.weight.detach().abs().sum(1) - 1.0).clamp_min(0).max()))
    return float(_objective(model.weight.detach())), late, strategy, model.weight.detach()


def test_proximal_augmented_lagrangian_reaches_the_optimum(optimum: tuple[float, np.ndarray, np.ndarray]) -> None:
    """The proximal form reaches cvxpy's optimum and multipliers; the gradient form (the same options otherwise)
    stalls with its multipliers far from the optimal ones and a violation at the size of Adam's chatter."""
    f_star, _, lam_star = optimum
    f, late, strategy, _ = _train("augmented-lagrangian", {"penalty": 10.0, "multipliers": "mean", "primal": "proximal"})
    (lam,) = strategy.multipliers().values()
    assert abs(f - f_star) / f_star <= 1e-6
    assert late <= 1e-7
    np.testing.assert_allclose(lam.numpy(), lam_star, atol=1e-3)
    f_gradient, late_gradient, plain, _ = _train("augmented-lagrangian", {"penalty": 10.0, "multipliers": "mean"})
    (lam_gradient,) = plain.multipliers().values()
    assert late_gradient > 1e-4
    assert float(np.abs(lam_gradient.numpy() - lam_star).max()) > 0.1
    assert abs(f_gradient - f_star) / f_star > 1e-3


def test_shared_multipliers_take_the_exact_penalty_prox(optimum: tuple[float, np.ndarray, np.ndarray]) -> None:
    """Plain Lagrangian with one multiplier on the rows' mean violation (an exact penalty of weight lambda / rows):
    its proximal form ends feasible at the optimum once lambda exceeds every row's multiplier."""
    f_star, w_star, lam_star = optimum
    f, late, strategy, w = _train("lagrangian", {"primal": "proximal"})
    (lam,) = strategy.multipliers().values()
    assert float(lam) / w.shape[0] > lam_star.max()
    assert late == 0.0
    assert abs(f - f_star) / f_star <= 1e-6
    np.testing.assert_allclose(w.numpy(), w_star, atol=1e-3)


def test_other_terms_stay_in_the_loss() -> None:
    """Only L1-ball weight inequalities leave the loss: an output L1 ball keeps its term (lambda * g)."""
    strategy = strategies.get("lagrangian", dual_lr=1.0, multipliers="mean", primal="proximal")
    strategy.attach(nn.Identity(), on_output(L1Ball(1.0)))
    objective = torch.zeros((), dtype=torch.float64)
    strategy.loss(objective, torch.tensor([[3.0]], dtype=torch.float64))
    strategy.after_step()  # lambda = 1 * (3 - 1) = 2
    loss = strategy.loss(objective, torch.tensor([[3.0]], dtype=torch.float64))
    assert float(loss) == pytest.approx(2.0 * 2.0)


def test_an_optimizer_without_a_metric_falls_back_to_the_gradient_form() -> None:
    model = nn.Module()
    model.weight = nn.Parameter(torch.full_like(_C, 0.5))
    strategy = _lagrangian("augmented-lagrangian", primal="proximal", multipliers="mean")
    strategy.attach(model, on_parameter("weight", L1Ball(1.0)))
    optimizer = torch.optim.Adadelta(model.parameters())
    loss = strategy.loss(_objective(model.weight))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with pytest.warns(RuntimeWarning, match="switching to primal='gradient'") as caught:
        strategy.after_step()
    assert caught[0].filename == __file__  # the warning names the user's after_step() line, not ours
    assert strategy.primal == "gradient"
    with torch.no_grad():
        assert float(strategy.loss(_objective(model.weight))) > float(_objective(model.weight))  # the term is back


def test_primal_must_be_a_known_form() -> None:
    with pytest.raises(ValueError, match="primal"):
        strategies.get("augmented-lagrangian", primal="projected")
