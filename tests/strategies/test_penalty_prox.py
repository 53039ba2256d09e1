"""The exact penalty's proximal steps against cvxpy, and the proximal form reaching the constrained optimum."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from torch import nn

import strategies
from constrain import Affine, L1Ball, NonNegative, on_parameter
from strategies._penalty_prox import exact_penalty_prox


def _cvxpy_prox(kind: str, z: np.ndarray, t: np.ndarray, mu: float, A=None, c=None, r: float = 1.0) -> np.ndarray:
    """argmin mu P(x) + 1/2 sum (x - z)^2 / t, row by row (Affine: one flat row), solved by cvxpy."""
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        x = cp.Variable(z.shape[1])
        if kind == "nonneg":
            penalty = cp.sum(cp.pos(-x))
        elif kind == "l1":
            penalty = cp.pos(cp.norm1(x) - r)
        else:
            penalty = cp.norm1(A @ x - c)
        objective = mu * penalty + 0.5 * cp.sum(cp.multiply(1.0 / t[i], cp.square(x - z[i])))
        cp.Problem(cp.Minimize(objective)).solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        out[i] = x.value
    return out


def _instance(seed: int, rows: int, n: int, scale: float = 1.0):
    g = np.random.default_rng(seed)
    return scale * g.standard_normal((rows, n)), np.exp(g.uniform(-3, 1, (rows, n)))


@pytest.mark.parametrize("mu", [0.05, 0.5, 5.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_orthant_prox_matches_cvxpy(seed, mu):
    z, t = _instance(seed, 3, 7)
    got = exact_penalty_prox(NonNegative(), torch.tensor(z), torch.tensor(t), mu).numpy()
    np.testing.assert_allclose(got, _cvxpy_prox("nonneg", z, t, mu), atol=1e-7)


@pytest.mark.parametrize("mu", [0.02, 0.3, 3.0, 50.0])  # hinge active with slope 1 (small mu), at its kink (large)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_l1_hinge_prox_matches_cvxpy(seed, mu):
    z, t = _instance(seed, 4, 9, scale=0.6)
    z[0] *= 0.05  # a row inside the ball: unchanged
    got = exact_penalty_prox(L1Ball(1.0), torch.tensor(z), torch.tensor(t), mu).numpy()
    np.testing.assert_allclose(got, _cvxpy_prox("l1", z, t, mu), atol=1e-7)
    np.testing.assert_array_equal(got[0], z[0])


@pytest.mark.parametrize("mu", [0.01, 0.2, 100.0])  # box QP active (small mu) and the metric projection (large)
@pytest.mark.parametrize("rank_deficient", [False, True])
def test_affine_l1_prox_matches_cvxpy(mu, rank_deficient):
    g = np.random.default_rng(3)
    A = g.standard_normal((4, 10))
    if rank_deficient:  # a fifth row, the sum of two others (consistent)
        A = np.vstack([A, A[0] + A[1]])
    c = A @ g.standard_normal(10)
    z, t = _instance(4, 1, 10)
    got = exact_penalty_prox(Affine(A, c), torch.tensor(z), torch.tensor(t), mu).numpy()
    np.testing.assert_allclose(got, _cvxpy_prox("affine", z, t, mu, A, c), atol=1e-6)
    if mu == 100.0:  # above the multipliers: the prox lands on A x = c
        np.testing.assert_allclose(A @ got[0], c, atol=1e-10)


def _least_squares(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 6, generator=g, dtype=torch.float64)
    Y = X @ torch.randn(6, 3, generator=g, dtype=torch.float64) + 0.1 * torch.randn(64, 3, generator=g, dtype=torch.float64)
    return X, Y


def _optimum(X, Y, constraint) -> float:
    W, b = cp.Variable((3, 6)), cp.Variable(3)
    fit = cp.sum_squares(X.numpy() @ W.T + np.ones((64, 1)) @ b[None, :] - Y.numpy()) / Y.numel()
    if isinstance(constraint, NonNegative):
        cons = [W >= 0]
    elif isinstance(constraint, L1Ball):
        cons = [cp.norm1(W[j]) <= constraint.radius for j in range(3)]
    else:
        cons = [constraint.A.numpy() @ cp.vec(W, order="C") == constraint.c.numpy()]
    return float(cp.Problem(cp.Minimize(fit), cons).solve(solver=cp.CLARABEL))


def _train(constraint, optimizer: str, steps: int, **options):
    X, Y = _least_squares()
    torch.manual_seed(0)
    model = nn.Linear(6, 3, dtype=torch.float64)
    strategy = strategies.get("exact-penalty", **options)
    model = strategy.attach(model, [on_parameter("weight", constraint)])
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.995)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=1.0)
    for _ in range(steps):
        out = model(X)
        loss = strategy.loss(nn.functional.mse_loss(out, Y), out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()
        sched.step()
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(X), Y)), max(strategy.report().values()), X, Y


CONSTRAINTS = {
    "nonneg": NonNegative,
    "l1": lambda: L1Ball(0.8),
    "affine": lambda: Affine.tie((3, 6), [[(0, 0), (1, 0), (2, 0)], [(0, 1), (2, 3)]]),
}


@pytest.mark.parametrize(
    "kind, optimizer",
    [
        pytest.param(kind, optimizer, marks=[] if (kind, optimizer) == ("affine", "adam") else [pytest.mark.slow])
        for kind in CONSTRAINTS
        for optimizer in ("adam", "sgd")
    ],
)
def test_proximal_form_reaches_the_constrained_optimum(kind, optimizer):
    """Weight 10 (above the multipliers), no growth: the proximal steps converge to cvxpy's optimum."""
    constraint = CONSTRAINTS[kind]()
    value, violation, X, Y = _train(constraint, optimizer, 1500, weight=10.0, growth=1.0)
    f_star = _optimum(X, Y, constraint)
    assert violation <= 1e-9
    assert (value - f_star) / f_star <= 1e-6


def test_subgradient_form_chatters():
    """The naive form with Adam stays visibly above the optimum (the row the study keeps as evidence)."""
    constraint = CONSTRAINTS["nonneg"]()
    value, _, X, Y = _train(constraint, "adam", 400, weight=10.0, growth=1.0, form="subgradient")
    proximal, *_ = _train(constraint, "adam", 400, weight=10.0, growth=1.0)
    f_star = _optimum(X, Y, constraint)
    assert (proximal - f_star) / f_star < 0.1 * (value - f_star) / f_star


def test_unknown_optimizer_falls_back_to_the_subgradient_form():
    model = nn.Linear(3, 2)
    strategy = strategies.get("exact-penalty")
    model = strategy.attach(model, [on_parameter("weight", NonNegative())])
    opt = torch.optim.Adamax(model.parameters(), lr=0.1)  # no diagonal metric known for Adamax
    loss = strategy.loss(model(torch.randn(4, 3)).square().mean())
    loss.backward()
    opt.step()
    with pytest.warns(RuntimeWarning, match="switching to form='subgradient'") as caught:
        strategy.after_step()
    assert caught[0].filename == __file__  # the warning names the user's after_step() line, not ours or torch's
    assert strategy.form == "subgradient"
    with torch.no_grad():
        model.weight.fill_(-1.0)
    objective = torch.tensor(0.0)
    assert float(strategy.loss(objective).detach()) == pytest.approx(6.0 * strategy.weight)  # the penalty is in the loss now


def test_bad_form():
    with pytest.raises(ValueError, match="option 'form' of strategy 'exact-penalty' must be one of 'proximal', 'subgradient'"):
        strategies.get("exact-penalty", form="prox")
    with pytest.raises(ValueError, match="option 'form' of strategy 'exact-penalty' must be one of 'proximal', 'subgradient'"):
        strategies.strategy_class("exact-penalty")(form="prox")
