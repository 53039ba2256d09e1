"""Lagrangian saddle-point strategies: convergence to cvxpy's optimum on small convex problems,
the dual step, per-sample multipliers, state round trips, dtypes and error messages."""

from __future__ import annotations

import functools
import io
import math

import cvxpy as cp
import numpy as np
import pytest
import torch
from torch import nn

import strategies
from constrain import Affine, L1Ball, NonNegative, Simplex, on_output, on_parameter
from strategies._base import target_rows

NAMES = ["lagrangian", "augmented-lagrangian", "slack-lagrangian"]

# ----------------------------------------------------------------------------- the convex problems
# Linear regression y = W x + b (float64, full batch) under one constraint; the exact optimum comes
# from cvxpy on theta = [vec(W) row-major, b].
N, D, M = 16, 3, 2
R_OUT, R_ROW = 2.5, 1.2  # radii chosen so the active L1 constraints have no zero coordinate (no kink)


@functools.cache
def _data() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=g, dtype=torch.float64)
    W = torch.tensor([[1.5, -1.0, 0.5], [-0.8, 1.2, 0.7]], dtype=torch.float64)
    Y = X @ W.T + torch.tensor([0.3, -0.2], dtype=torch.float64)
    Y = Y + 0.1 * torch.randn(N, M, generator=g, dtype=torch.float64)
    design = np.zeros((N * M, M * D + M))  # vec(outputs) = design @ theta
    for i in range(N):
        for j in range(M):
            design[i * M + j, j * D : (j + 1) * D] = X[i].numpy()
            design[i * M + j, M * D + j] = 1.0
    A = np.random.default_rng(1).standard_normal((2, M * D + M))
    return X, Y, design, A


def _cell(cell: str):
    """(target, cvxpy constraints on theta, per-sample multipliers?) for one cell of the matrix."""
    _, _, P, A = _data()
    c = np.array([0.5, -0.3])
    out_rows = [P[i * M : (i + 1) * M] for i in range(N)]
    return {
        "l1-output": (on_output(L1Ball(R_OUT)), lambda t: [cp.norm1(R @ t) <= R_OUT for R in out_rows], True),
        "nonneg-output": (on_output(NonNegative()), lambda t: [P @ t >= 0], True),
        "nonneg-output-mean": (
            on_output(NonNegative()),
            lambda t: [cp.reshape(P @ t, (N, M), order="C").sum(0) >= 0],  # shared: on average
            False,
        ),
        "nonneg-weight": (on_parameter("weight", NonNegative()), lambda t: [t[: M * D] >= 0], False),
        "affine-weight+bias": (on_parameter(["weight", "bias"], Affine(A, c)), lambda t: [A @ t == c], False),
        "l1-weight-rows": (
            on_parameter("weight", L1Ball(R_ROW)),
            lambda t: [cp.norm1(t[j * D : (j + 1) * D]) <= R_ROW for j in range(M)],
            False,
        ),
    }[cell]


@functools.cache
def _optimum(cell: str) -> float:
    _, Y, P, _ = _data()
    theta = cp.Variable(M * D + M)
    objective = cp.sum_squares(P @ theta - Y.numpy().reshape(-1)) / (N * M)
    problem = cp.Problem(cp.Minimize(objective), _cell(cell)[1](theta))
    problem.solve()
    assert problem.status == "optimal"
    return float(problem.value)


def _violation(cell: str, target, model: nn.Module) -> float:
    X = _data()[0]
    with torch.no_grad():
        out = model(X)
        if cell == "nonneg-output-mean":
            return float((-out.mean(0)).clamp_min(0).max())
        return float(target.set.violation(target_rows(target, model, out)).max())


def _train(name: str, cell: str, steps: int, lr: float, check_signs: bool = False, **options):
    X, Y, _, _ = _data()
    target, _, per_sample = _cell(cell)
    if per_sample:
        options.update(multipliers="per-sample", num_samples=N)
    else:  # the exact form: one multiplier per entry (parameters), on the batch mean (outputs)
        options.setdefault("multipliers", "mean")
    if name == "slack-lagrangian":  # the slacks at the model's pace (plain gradient descent, the same step)
        options.update(slack_optimizer="sgd", slack_lr=lr)
    torch.manual_seed(0)
    strategy = strategies.get(name, **options)
    model = strategy.attach(nn.Linear(D, M).double(), [target])
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    ids = torch.arange(N)
    for _ in range(steps):
        out = model(X)
        loss = strategy.loss(((out - Y) ** 2).mean(), out, sample_ids=ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()
        if check_signs:
            for key, lam in strategy.multipliers().items():
                if key.endswith("[inequality]"):
                    assert float(lam.min()) >= 0, key
    with torch.no_grad():
        objective = float(((model(X) - Y) ** 2).mean())
    return strategy, model, _violation(cell, target, model), objective


# (cell, steps, SGD lr, options[, violation and gap tolerances]): full-batch gradient
# descent-ascent, a few hundred steps each; the measured results are far below 1e-3 except where noted.
CASES = {
    "lagrangian": [
        ("nonneg-weight", 400, 0.2, dict(dual_lr=0.05)),
        ("affine-weight+bias", 400, 0.2, dict(dual_lr=0.05)),
        ("l1-weight-rows", 400, 0.2, dict(dual_lr=0.05)),
        ("nonneg-output", 450, 0.1, dict(dual_lr=1.0)),
        ("l1-output", 400, 0.3, dict(dual_lr=0.2)),
        ("nonneg-output-mean", 300, 0.2, dict(dual_lr=0.1)),
    ],
    "augmented-lagrangian": [
        (cell, 300, 0.3, dict(penalty=1.0, dual_lr=None))  # dual step = penalty (the method of multipliers)
        for cell in ["nonneg-weight", "affine-weight+bias", "l1-weight-rows"]
        + ["nonneg-output", "l1-output", "nonneg-output-mean"]
    ],
    "slack-lagrangian": [
        ("nonneg-weight", 300, 0.3, dict(dual_lr=0.3, penalty=1.0)),
        ("affine-weight+bias", 300, 0.3, dict(dual_lr=0.3, penalty=1.0)),
        ("l1-weight-rows", 300, 0.3, dict(dual_lr=0.3, penalty=1.0)),
        ("l1-weight-rows", 800, 0.1, dict(dual_lr=0.05, penalty=0.0)),  # the plain form (no augmentation)
        ("affine-weight+bias", 400, 0.2, dict(dual_lr=0.05, penalty=0.0)),
        ("l1-output", 800, 0.3, dict(dual_lr=0.3, penalty=1.0)),
        # per-sample squared slacks on an elementwise constraint converge slowly and oscillate
        # (violation 1.5e-4 / 7e-7 / 3e-3 and gap 5e-3 / 2.4e-3 / 7e-4 at 600 / 800 / 1000 steps)
        ("nonneg-output", 800, 0.3, dict(dual_lr=0.3, penalty=1.0), 1e-2),
        ("nonneg-output-mean", 300, 0.3, dict(dual_lr=0.3, penalty=1.0)),
    ],
}
PARAMS = [
    pytest.param(
        name,
        *case[:4],
        case[4] if len(case) > 4 else 1e-3,
        id=f"{name}-{case[0]}-{'-'.join(f'{k}={v}' for k, v in case[3].items())}",
    )
    for name, cases in CASES.items()
    for case in cases
]


@pytest.mark.parametrize("name, cell, steps, lr, options, gap_tol", PARAMS)
def test_converges_to_the_cvxpy_optimum(name: str, cell: str, steps: int, lr: float, options: dict, gap_tol: float) -> None:
    strategy, model, violation, objective = _train(name, cell, steps, lr, check_signs=True, **options)
    best = _optimum(cell)
    gap = abs(objective - best) / best
    print(f"{name} {cell} {options}: violation {violation:.1e}, relative gap {gap:.1e}")
    assert violation <= max(gap_tol, 1e-3)
    assert gap <= gap_tol


# ----------------------------------------------------------------------------- the dual step
def _linear(weight: list[list[float]]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight)).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float64))
        layer.bias.zero_()
    return layer


@pytest.mark.parametrize("name", ["lagrangian", "augmented-lagrangian"])
def test_dual_step_ascends_on_violation_and_stays_nonnegative(name: str) -> None:
    options = {"dual_lr": 0.5, "multipliers": "mean"} if name == "lagrangian" else {"penalty": 2.0, "dual_lr": None}
    strategy = strategies.get(name, **options)
    model = strategy.attach(_linear([[1.0, -2.0], [-0.5, 3.0]]), on_parameter("weight", NonNegative()))
    strategy.loss(torch.zeros((), dtype=torch.float64))
    strategy.after_step()
    (lam,) = strategy.multipliers().values()
    eta = 0.5 if name == "lagrangian" else 2.0  # augmented: dual_lr defaults to the penalty
    assert torch.allclose(lam, eta * torch.tensor([[0.0, 2.0], [0.5, 0.0]], dtype=torch.float64))
    with torch.no_grad():
        model.weight.abs_()  # now feasible: the multipliers shrink to 0 and stay there
    for _ in range(10):
        strategy.loss(torch.zeros((), dtype=torch.float64))
        strategy.after_step()
        (lam,) = strategy.multipliers().values()
        assert float(lam.min()) >= 0
    assert float(lam.max()) == 0.0


def test_equality_multipliers_are_not_clipped() -> None:
    strategy = strategies.get("lagrangian", dual_lr=0.1, multipliers="mean")
    strategy.attach(_linear([[1.0, 2.0]]), on_parameter("weight", Affine([[1.0, 1.0]], [5.0])))
    strategy.loss(torch.zeros((), dtype=torch.float64))
    strategy.after_step()
    (mu,) = strategy.multipliers().values()
    assert torch.allclose(mu, torch.tensor([[-0.2]], dtype=torch.float64))  # 0.1 * (3 - 5)


def test_per_sample_multipliers_move_only_the_batch_rows() -> None:
    strategy = strategies.get("lagrangian", dual_lr=1.0, multipliers="per-sample", num_samples=6)
    strategy.attach(nn.Identity(), on_output(L1Ball(1.0)))
    outputs = torch.tensor([[2.0, 0.0], [0.5, 0.0], [0.0, -3.0]])
    strategy.loss(torch.zeros(()), outputs, sample_ids=torch.tensor([4, 1, 4]))  # duplicates add up
    strategy.after_step()
    (lam,) = strategy.multipliers().values()
    assert lam.shape == (6, 1)
    assert torch.allclose(lam.squeeze(1), torch.tensor([0.0, 0.0, 0.0, 0.0, 3.0, 0.0]))


def test_per_sample_step_on_a_batch_as_large_as_the_table() -> None:
    """A batch with as many ids as the table has rows (full-batch training) clips the whole table in one pass: the
    same multipliers as max(0, lam + eta * the sum of each row's defects), duplicates included; the ids tensor,
    the same object at both steps, is checked once and reused."""
    strategy = strategies.get("lagrangian", dual_lr=0.5, multipliers="per-sample", num_samples=3)
    strategy.attach(nn.Identity(), on_output(NonNegative()))
    ids = torch.tensor([2, 0, 2, 1])
    for outputs in (torch.tensor([[-1.0], [2.0], [-3.0], [0.5]]), torch.tensor([[1.0], [-4.0], [0.5], [0.25]])):
        strategy.loss(torch.zeros(()), outputs, sample_ids=ids)
        strategy.after_step()
    # g = -outputs. Step 1: row 0 max(0, -1) = 0, row 1 max(0, -0.25) = 0, row 2 0.5 * (1 + 3) = 2.
    # Step 2: row 0 max(0, 0.5 * 4) = 2, row 1 max(0, -0.125) = 0, row 2 max(0, 2 + 0.5 * (-1 - 0.5)) = 1.25.
    (lam,) = strategy.multipliers().values()
    assert lam.squeeze(1).tolist() == [2.0, 0.0, 1.25]


def test_sample_ids_changed_in_place_are_checked_again() -> None:
    strategy = strategies.get("lagrangian", multipliers="per-sample", num_samples=4)
    strategy.attach(nn.Identity(), on_output(NonNegative()))
    ids, outputs = torch.arange(3), torch.randn(3, 1)
    strategy.loss(torch.zeros(()), outputs, sample_ids=ids)
    strategy.after_step()
    ids[1] = 9  # the same tensor object, now out of range
    with pytest.raises(IndexError, match=r"\[0, num_samples=4\); got values from 0 to 9"):
        strategy.loss(torch.zeros(()), outputs, sample_ids=ids)
    with torch.inference_mode():  # an inference tensor has no version counter: checked on every call
        frozen = torch.tensor([0, 1, 2])
    for _ in range(2):
        strategy.loss(torch.zeros(()), outputs, sample_ids=frozen)
        strategy.after_step()


def test_mean_output_multiplier_acts_on_the_batch_mean() -> None:
    strategy = strategies.get("lagrangian", dual_lr=1.0, multipliers="mean")
    strategy.attach(nn.Identity(), on_output(L1Ball(1.0)))
    outputs = torch.tensor([[3.0], [0.0]], requires_grad=True)  # mean of g: (2 + -1) / 2
    strategy.loss(torch.zeros(()), outputs).backward()
    strategy.after_step()
    assert torch.allclose(next(iter(strategy.multipliers().values())), torch.tensor([0.5]))


def test_shared_output_multiplier_acts_on_the_mean_violation() -> None:
    """The default: one multiplier on the batch mean of g+, so a sample inside cannot offset one outside."""
    strategy = strategies.get("lagrangian", dual_lr=1.0)
    strategy.attach(nn.Identity(), on_output(L1Ball(1.0)))
    outputs = torch.tensor([[3.0], [0.0]], requires_grad=True)  # g = (2, -1): mean of g+ is 1, mean of g is 0.5
    strategy.loss(torch.zeros(()), outputs).backward()
    strategy.after_step()
    assert torch.allclose(next(iter(strategy.multipliers().values())), torch.tensor([1.0]))
    assert torch.allclose(outputs.grad, torch.zeros(2, 1))  # multiplier 0 at the first loss: no term yet


def test_validation_losses_record_nothing() -> None:
    strategy = strategies.get("lagrangian", dual_lr=1.0)
    strategy.attach(_linear([[-1.0]]), on_parameter("weight", NonNegative()))
    with torch.no_grad():
        strategy.loss(torch.zeros((), dtype=torch.float64))
    strategy.after_step()
    assert float(next(iter(strategy.multipliers().values())).abs().max()) == 0.0


def test_simplex_outputs_through_the_same_g_and_h() -> None:
    X = _data()[0]
    target = torch.softmax(X @ torch.tensor([[1.0, -1.0, 0.5], [0.2, 0.3, -0.7], [-1.0, 0.5, 0.5]]).double().T, -1)
    strategy = strategies.get("augmented-lagrangian", penalty=1.0, dual_lr=None, multipliers="per-sample", num_samples=N)
    torch.manual_seed(0)
    model = strategy.attach(nn.Linear(D, 3).double(), on_output(Simplex(1.0)))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in range(300):
        out = model(X)
        loss = strategy.loss(((out - 2 * target) ** 2).mean(), out, sample_ids=torch.arange(N))
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()
    keys = sorted(strategy.multipliers())
    assert any(k.endswith("[inequality]") for k in keys) and any(k.endswith("[equality]") for k in keys)
    assert strategy.report(model(X))["output in Simplex(radius=1.0)"] <= 1e-3


# ----------------------------------------------------------------------------- support, registry, errors
@pytest.mark.parametrize("name", NAMES)
def test_every_constraint_of_the_matrix_is_supported(name: str) -> None:
    cls = strategies.strategy_class(name)
    assert cls.family == "lagrangian" and cls.summary
    for target in [
        on_output(L1Ball(1.0)),
        on_output(NonNegative()),
        on_output(Simplex(1.0)),
        on_parameter("weight", NonNegative()),
        on_parameter(["weight", "bias"], Affine(np.ones((1, 8)), [1.0])),
        on_parameter("weight", L1Ball(1.0)),
    ]:
        assert cls.unsupported_reason(target) is None


def test_registry_rejects_unknown_and_ill_typed_options() -> None:
    with pytest.raises(TypeError, match="no option 'dual_rate'"):
        strategies.get("lagrangian", dual_rate=0.1)
    with pytest.raises(TypeError, match="dual_lr"):
        strategies.get("lagrangian", dual_lr="fast")
    with pytest.raises(ValueError, match="multipliers"):
        strategies.get("augmented-lagrangian", multipliers="per_sample")
    with pytest.raises(TypeError, match="num_samples"):
        strategies.get("slack-lagrangian", num_samples=2.5)
    with pytest.raises(KeyError, match="'lagrangian'"):
        strategies.get("lagrangain")
    with pytest.raises(ValueError, match="dual_lr"):
        strategies.get("lagrangian", dual_lr=-1.0)
    with pytest.raises(ValueError, match="penalty"):
        strategies.get("augmented-lagrangian", penalty=0.0)
    assert strategies.available("lagrangian") == sorted(NAMES)


def test_per_sample_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        strategies.get("lagrangian", multipliers="per-sample").attach(nn.Identity(), on_output(NonNegative()))
    strategy = strategies.get("lagrangian", multipliers="per-sample", num_samples=4)
    strategy.attach(nn.Identity(), on_output(NonNegative()))
    outputs = torch.randn(3, 2)
    with pytest.raises(ValueError, match="sample_ids=idx"):
        strategy.loss(torch.zeros(()), outputs)
    with pytest.raises(IndexError, match=r"\[0, num_samples=4\)"):
        strategy.loss(torch.zeros(()), outputs, sample_ids=torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="3 samples"):
        strategy.loss(torch.zeros(()), outputs, sample_ids=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer"):
        strategy.loss(torch.zeros(()), outputs, sample_ids=torch.tensor([0.0, 1.0, 2.0]))


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_defects_leave_the_multipliers_alone(name: str) -> None:
    strategy = strategies.get(name, multipliers="per-sample", num_samples=2)
    strategy.attach(nn.Linear(2, 2), on_output(NonNegative()))
    good = torch.tensor([[-1.0, 2.0], [1.0, 1.0]])
    strategy.loss(torch.zeros(()), good, sample_ids=torch.arange(2))
    strategy.after_step()
    before = strategy.state_dict()
    bad = torch.tensor([[math.inf, 1.0], [1.0, 1.0]])  # g = -inf: the augmented term is still finite
    try:
        strategy.loss(torch.zeros(()), bad, sample_ids=torch.arange(2))
    except FloatingPointError as error:  # caught at the loss already (0 * inf): the loss forgot its defects
        assert "step 1" in str(error) and "output in NonNegative()" in str(error)
        strategy.after_step()  # so the dual step has nothing to use
        assert strategy.steps == 2
    else:
        with pytest.raises(FloatingPointError, match="not finite") as info:
            strategy.after_step()
        assert "step 1" in str(info.value) and "output in NonNegative()" in str(info.value)
        assert strategy.steps == before["steps"] == 1
    after = strategy.state_dict()
    for key, lam in before["multipliers"].items():
        assert torch.equal(lam, after["multipliers"][key])


# ----------------------------------------------------------------------------- state and dtype
def _run(name: str, options: dict, steps: int, resume_at: int | None = None):
    """Adam on a two-layer net under an output and a weight constraint; resume from saved state."""
    g = torch.Generator().manual_seed(3)
    X, Y = torch.randn(12, 3, generator=g), torch.randn(12, 2, generator=g)
    batches = [torch.arange(0, 6), torch.arange(6, 12)]

    def build():
        torch.manual_seed(0)
        strategy = strategies.get(name, multipliers="per-sample", num_samples=12, **options)
        net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        net = strategy.attach(net, [on_output(L1Ball(0.5)), on_parameter("2.weight", NonNegative())])
        return net, strategy, torch.optim.Adam(net.parameters(), lr=0.02)

    net, strategy, opt = build()
    for step in range(steps):
        if step == resume_at:
            saved = (net.state_dict(), opt.state_dict(), strategy.state_dict())
            net, strategy, opt = build()
            net.load_state_dict(saved[0])
            opt.load_state_dict(saved[1])
            strategy.load_state_dict(saved[2])
        idx = batches[step % 2]
        out = net(X[idx])
        loss = strategy.loss(((out - Y[idx]) ** 2).mean(), out, sample_ids=idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()
    return net, strategy


@pytest.mark.parametrize(
    "name, options",
    [
        ("lagrangian", {"dual_lr": 0.1}),
        ("augmented-lagrangian", {"penalty": 0.5, "penalty_growth": 1.01}),
        ("slack-lagrangian", {"dual_lr": 0.1, "penalty": 0.5}),
    ],
)
def test_state_dict_round_trip_continues_the_same_trajectory(name: str, options: dict) -> None:
    net_a, strat_a = _run(name, options, 20)
    net_b, strat_b = _run(name, options, 20, resume_at=9)
    for (key, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    state_a, state_b = strat_a.state_dict(), strat_b.state_dict()
    assert state_a.keys() == state_b.keys() and state_a["steps"] == 20
    assert state_a["multipliers"].keys() == state_b["multipliers"].keys()
    for key, lam in state_a["multipliers"].items():
        assert torch.equal(lam, state_b["multipliers"][key])
    if name == "augmented-lagrangian":
        assert state_a["penalty"] == state_b["penalty"] == pytest.approx(0.5 * 1.01**20)


def test_state_dict_returns_clones() -> None:
    strategy = strategies.get("lagrangian", dual_lr=1.0)
    strategy.attach(_linear([[-1.0]]), on_parameter("weight", NonNegative()))
    strategy.loss(torch.zeros((), dtype=torch.float64))
    strategy.after_step()
    state = strategy.state_dict()
    next(iter(state["multipliers"].values())).fill_(123.0)
    assert float(next(iter(strategy.multipliers().values()))) == 1.0
    with pytest.raises(KeyError, match="does not fit"):
        strategy.load_state_dict({"steps": 1, "multipliers": {"3:inequality": torch.zeros(1)}})


@pytest.mark.parametrize("name", NAMES)
def test_model_to_float64_keeps_working(name: str) -> None:
    torch.manual_seed(0)
    X = torch.randn(8, 3)
    strategy = strategies.get(name, multipliers="per-sample", num_samples=8)
    net = strategy.attach(nn.Linear(3, 2), [on_output(NonNegative()), on_parameter("weight", L1Ball(0.5))])
    opt = torch.optim.SGD(net.parameters(), lr=0.05)

    def step(x):
        out = net(x)
        loss = strategy.loss(out.square().mean(), out, sample_ids=torch.arange(8))
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()

    step(X)
    net.to(torch.float64)
    for _ in range(2):
        step(X.double())
    assert all(lam.dtype == torch.float64 for lam in strategy.multipliers().values())
    assert all(p.dtype == torch.float64 for p in net.parameters())
    if name == "slack-lagrangian":  # the slacks follow the model into float64, in the strategy
        assert strategy.slack(0).shape == (8, 2) and strategy.slack(0).dtype == torch.float64  # per-sample output slacks
        assert strategy.slack(1).shape == (2, 1)  # one per weight row


def test_slacks_live_in_the_strategy_and_load_before_and_after_the_first_batch() -> None:
    def build():
        strategy = strategies.get("slack-lagrangian")
        net = nn.Sequential(nn.Linear(3, 2))
        net[0].weight.data = torch.tensor([[-1.0, 0.5, 0.0], [2.0, -0.25, 1.0]])
        before = ([n for n, _ in net.named_parameters()], list(net.state_dict()), len(net._load_state_dict_pre_hooks))
        strategy.attach(net, [on_output(NonNegative()), on_parameter("0.weight", NonNegative())])
        after = ([n for n, _ in net.named_parameters()], list(net.state_dict()), len(net._load_state_dict_pre_hooks))
        assert before == after  # no parameter, buffer or load hook added to the model
        return strategy, net

    strategy, net = build()
    expected = (torch.tensor([[-1.0, 0.5, 0.0], [2.0, -0.25, 1.0]]).clamp_min(0) + 1e-4).sqrt()
    assert torch.allclose(strategy.slack(1), expected)  # sqrt(max(-g, 0)) with a small floor, g = -w
    assert strategy.slack(0).shape == (0,)  # output slacks are sized on the first batch
    assert {id(p) for p in strategy.slack_parameters()} == {id(strategy.slack(0)), id(strategy.slack(1))}
    fresh, _ = build()
    fresh.load_state_dict(strategy.state_dict())  # saved before the first batch
    assert fresh.slack(0).shape == (0,)
    out = net(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))  # seeded: not the previous test's stream
    strategy.loss(out.sum(), out).backward()
    assert strategy.slack(0).shape == (2,) and strategy.slack(0).grad is not None
    before = strategy.slack(0).detach().clone()
    strategy.after_step()  # the strategy steps its slacks (Adam, lr 1e-2) and clears their gradients
    assert strategy.slack(0).grad is None
    assert torch.allclose((strategy.slack(0) - before).abs(), torch.full((2,), 1e-2))  # Adam's first step: lr
    fresh, _ = build()
    fresh.load_state_dict(strategy.state_dict())  # saved after it: the unsized slack takes the saved shape
    assert torch.equal(fresh.slack(0), strategy.slack(0)) and torch.equal(fresh.slack(1), strategy.slack(1))


def test_the_optimizer_built_right_after_attach_trains_and_a_checkpoint_resumes_bit_for_bit() -> None:
    """Checkpoint = model.state_dict() + optimizer + strategy.state_dict(): resuming from it equals the run that
    went on, exactly (lazily sized per-sample output slacks, slack and dual optimizer states included)."""
    g = torch.Generator().manual_seed(3)
    X, Y = torch.randn(12, 3, generator=g), 3 * torch.randn(12, 2, generator=g)
    constraints = [on_output(L1Ball(1.0)), on_parameter("0.weight", NonNegative())]

    def build(seed: int):
        torch.manual_seed(seed)
        strategy = strategies.get("slack-lagrangian", multipliers="per-sample", num_samples=12, dual_optimizer="nupi")
        net = strategy.attach(nn.Sequential(nn.Linear(3, 2)), constraints)
        return net, strategy, torch.optim.Adam(net.parameters(), lr=1e-2)  # right after attach

    def run(net, strategy, opt, steps: range) -> None:
        for step in steps:
            ids = torch.arange(12)[(step % 3) * 4 :][:4]
            out = net(X[ids])
            loss = strategy.loss(nn.functional.mse_loss(out, Y[ids]), out, sample_ids=ids)
            opt.zero_grad()
            loss.backward()
            opt.step()
            strategy.after_step()

    net, strategy, opt = build(0)
    run(net, strategy, opt, range(10))
    first, first_strategy, first_opt = build(0)
    run(first, first_strategy, first_opt, range(5))
    buffer = io.BytesIO()
    torch.save(
        {"model": first.state_dict(), "optimizer": first_opt.state_dict(), "strategy": first_strategy.state_dict()}, buffer
    )
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=False)
    again, again_strategy, again_opt = build(7)
    again.load_state_dict(checkpoint["model"])
    again_opt.load_state_dict(checkpoint["optimizer"])
    again_strategy.load_state_dict(checkpoint["strategy"])
    run(again, again_strategy, again_opt, range(5, 10))
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters(), strict=True))
    assert torch.equal(strategy.slack(0), again_strategy.slack(0)) and torch.equal(strategy.slack(1), again_strategy.slack(1))
    for key, lam in strategy.multipliers().items():
        assert torch.equal(lam, again_strategy.multipliers()[key]), key
    assert not torch.equal(strategy.slack(0), torch.full_like(strategy.slack(0), 1e-2))  # the slacks did move


# ----------------------------------------------------------------------------- the scalar dual step
def _scalar_mean(name: str, **options) -> strategies.Strategy:
    """One multiplier on the batch mean of one output: the dual step that reads one number."""
    strategy = strategies.get(name, multipliers="mean", **options)
    strategy.attach(nn.Identity(), on_output(NonNegative()))
    return strategy


def test_a_scalar_dual_step_that_would_overflow_raises_and_changes_nothing() -> None:
    strategy = _scalar_mean("lagrangian", dual_lr=1e30)
    strategy.loss(torch.zeros(()), -torch.full((2, 1), 1e-3))
    strategy.after_step()  # multiplier 1e27: fine in float32
    before = strategy.multipliers()
    assert float(next(iter(before.values()))) == pytest.approx(1e27, rel=1e-6)
    strategy.loss(torch.zeros(()), -torch.full((2, 1), 1e9))  # 1e27 + 1e39: not a float32
    with pytest.raises(FloatingPointError, match="step 1 would overflow.*Lower dual_lr"):
        strategy.after_step()
    assert all(torch.equal(before[k], v) for k, v in strategy.multipliers().items())
    strategy.loss(torch.zeros(()), -torch.full((2, 1), 1e-3))  # the strategy goes on from where it was
    strategy.after_step()
    assert float(next(iter(strategy.multipliers().values()))) == pytest.approx(2e27, rel=1e-6)


def test_a_scalar_defect_of_minus_inf_is_refused_not_clipped_to_zero() -> None:
    """The augmented term of g = -Inf is finite, so the loss passes; the dual step reads lam + eta c before the clip
    (after it, -Inf would have become a quiet 0) and refuses it."""
    strategy = _scalar_mean("augmented-lagrangian", dual_lr=1.0)
    strategy.loss(torch.zeros(()), -torch.ones(2, 1))
    strategy.after_step()
    before = strategy.multipliers()
    assert float(next(iter(before.values()))) == 1.0
    total = strategy.loss(torch.zeros(()), torch.tensor([[math.inf], [1.0]]))  # g = (-Inf, -1)
    assert math.isfinite(float(total))
    with pytest.raises(FloatingPointError, match="inequality constraint values of output in NonNegative.*not finite"):
        strategy.after_step()
    assert all(torch.equal(before[k], v) for k, v in strategy.multipliers().items())


def test_a_scalar_dual_step_reads_one_number(monkeypatch) -> None:
    """One host synchronisation in the dual step of one scalar multiplier (and one in the loss, its finiteness
    check): every read of a tensor's value onto the host is counted."""
    strategy = _scalar_mean("lagrangian", dual_lr=0.5)
    outputs = torch.tensor([[-1.0], [-3.0]], requires_grad=True)
    strategy.loss(torch.zeros(()), outputs)
    strategy.after_step()
    reads = []
    for method in ("item", "tolist", "__bool__", "__float__"):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method, lambda self, *a, _f=original, _m=method: reads.append(_m) or _f(self, *a))
    total = strategy.loss(torch.zeros(()), outputs)
    assert reads == ["item"]
    strategy.after_step()
    assert reads == ["item", "item"]
    monkeypatch.undo()
    assert float(total.detach()) == pytest.approx(1.0 * 2.0)  # lam 1 after the first step, mean g = 2
    assert float(next(iter(strategy.multipliers().values()))) == 2.0  # 1 + 0.5 * 2
