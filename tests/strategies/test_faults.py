"""Numerical faults during training, and float16 / bfloat16.

- A NaN (or Inf) loss stops with ``FloatingPointError`` naming the step and the constraint, with
  the parameters, the optimizer state and the strategy's state as they were before that step;
  with ``on_nonfinite="skip"`` the step is skipped instead (same state, the step counted as
  skipped) and training goes on. For every registered strategy on every constraint it supports.
- Multipliers never become NaN, Inf or (inequality ones) negative: a dual step that would overflow
  raises and changes nothing.
- NaN written by the optimizer itself into a constrained weight is caught by ``after_step``.
- float16 / bfloat16: the kernels compute in float32 and return the input's dtype; every strategy
  trains a float16 / bfloat16 model.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

import strategies
from constrain import (
    Affine,
    L1Ball,
    NonNegative,
    Simplex,
    on_output,
    on_parameter,
    project_affine,
    project_l1_ball,
    project_nonnegative,
    project_simplex,
)
from experiments.listing import CONSTRAINTS, support_matrix

N = 8
CELLS = [(name, label) for name, row in support_matrix().items() for label, reason in row.items() if reason is None]
IDS = [f"{n}|{c}" for n, c in CELLS]


def _options(name: str) -> dict:
    if "lagrangian" in name:
        return {"dual_lr": 0.5, "multipliers": "per-sample", "num_samples": N}
    return {}


class Net(nn.Module):
    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 2, dtype=dtype)
        self.layer = nn.Linear(2, 2, dtype=dtype)
        with torch.no_grad():  # strictly inside every cell's set (barriers)
            self.layer.weight.copy_(0.1 * self.layer.weight.abs() + 0.01)
            self.layer.bias.fill_(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.tanh(self.hidden(x)))


def _setup(name: str, label: str, on_nonfinite: str = "raise", dtype: torch.dtype = torch.float64):
    torch.manual_seed(0)
    strategy = strategies.get(name, on_nonfinite=on_nonfinite, **_options(name))
    model = strategy.attach(Net(dtype), [CONSTRAINTS[label]])
    X = torch.randn(N, 3, dtype=dtype, generator=torch.Generator().manual_seed(1))
    Y = torch.randn(N, 2, dtype=dtype, generator=torch.Generator().manual_seed(2))
    # Adam's default eps (1e-8) is 0 in float16: 0 / 0 on parameters without gradient. Not ours to fix.
    eps = 1e-4 if dtype == torch.float16 else 1e-8
    return model, strategy, torch.optim.Adam(model.parameters(), lr=0.01, eps=eps), X, Y


def _step(model, strategy, optimizer, X, Y) -> None:
    out = model(X)
    loss = strategy.loss(nn.functional.mse_loss(out, Y), out, sample_ids=torch.arange(N))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    strategy.after_step()


def _snapshot(model, strategy, optimizer) -> tuple:
    return copy.deepcopy((model.state_dict(), optimizer.state_dict(), strategy.state_dict()))


def _assert_equal(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _poisoned(X: torch.Tensor, value: float) -> torch.Tensor:
    X = X.clone()
    X[3, 1] = value
    return X


# ----------------------------------------------------------------------------- raise / skip
@pytest.mark.parametrize("where", ["nan-input", "inf-target"])
@pytest.mark.parametrize("name,label", CELLS, ids=IDS)
def test_a_non_finite_step_raises_naming_the_step_and_leaves_everything_as_before(name, label, where) -> None:
    model, strategy, optimizer, X, Y = _setup(name, label)
    for _ in range(3):
        _step(model, strategy, optimizer, X, Y)
    before = _snapshot(model, strategy, optimizer)
    with pytest.raises(FloatingPointError) as info:  # NaN outputs and objective, or an Inf objective
        if where == "nan-input":
            _step(model, strategy, optimizer, _poisoned(X, math.nan), Y)
        else:
            _step(model, strategy, optimizer, X, _poisoned(Y, math.inf))
    message = str(info.value)
    assert "step 3" in message and repr(name) in message
    assert "NaN or Inf" in message or "not finite" in message
    _assert_equal(before, _snapshot(model, strategy, optimizer), "state after the refused step")
    _step(model, strategy, optimizer, X, Y)  # and training can go on from there
    assert strategy.steps == 4 and strategy.skipped_steps == 0


@pytest.mark.parametrize("name,label", CELLS, ids=IDS)
def test_skip_leaves_parameters_optimizer_and_strategy_state_alone_and_training_goes_on(name, label) -> None:
    model, strategy, optimizer, X, Y = _setup(name, label, on_nonfinite="skip")
    reference, ref_strategy, ref_optimizer, _, _ = _setup(name, label)
    for _ in range(3):
        _step(model, strategy, optimizer, X, Y)
        _step(reference, ref_strategy, ref_optimizer, X, Y)
    before = _snapshot(model, strategy, optimizer)
    with pytest.warns(RuntimeWarning, match=r"not finite at step 3.*Skipping"):
        _step(model, strategy, optimizer, _poisoned(X, math.nan), Y)
    params, opt_state, strategy_state = _snapshot(model, strategy, optimizer)
    _assert_equal(before[0], params, "parameters")
    _assert_equal(before[1], opt_state, "optimizer state")
    assert strategy_state.pop("steps") == 4 and strategy_state.pop("skipped_steps") == 1
    before[2].pop("steps"), before[2].pop("skipped_steps")
    _assert_equal(before[2], strategy_state, "strategy state")
    for _ in range(3):  # the skipped step changed nothing: the rest is the run without it
        _step(model, strategy, optimizer, X, Y)
        _step(reference, ref_strategy, ref_optimizer, X, Y)
    _assert_equal(reference.state_dict(), model.state_dict(), "parameters after the skip")
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_skip_with_gradient_accumulation_skips_only_the_bad_micro_batch_dual_defects() -> None:
    strategy = strategies.get("lagrangian", on_nonfinite="skip", dual_lr=1.0)
    model = strategy.attach(nn.Linear(2, 2), on_output(NonNegative()))
    good = torch.tensor([[1.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        strategy.loss(model(good).sum(), -torch.ones(1, 2))  # finite: recorded
        strategy.loss(torch.tensor(math.nan), -torch.ones(1, 2))  # skipped: the whole step is skipped
    strategy.after_step()
    assert strategy.skipped_steps == 1 and all(float(v.abs().max()) == 0 for v in strategy.multipliers().values())
    strategy.loss(model(good).sum(), -torch.ones(1, 2))
    strategy.after_step()  # a normal step again
    assert all(float(v.max()) > 0 for v in strategy.multipliers().values())


def test_on_nonfinite_is_an_option_of_every_strategy() -> None:
    for name in strategies.available():
        assert "on_nonfinite" in strategies.options_of(strategies.strategy_class(name))
        assert strategies.get(name, on_nonfinite="skip").on_nonfinite == "skip"
    with pytest.raises(ValueError, match="on_nonfinite.*'raise', 'skip'"):
        strategies.get("projected", on_nonfinite="ignore")


# ----------------------------------------------------------------------------- multipliers
@pytest.mark.parametrize("name", ["lagrangian", "augmented-lagrangian", "slack-lagrangian"])
@pytest.mark.parametrize("multipliers", ["shared", "per-sample"])
def test_multipliers_stay_finite_and_non_negative_under_wild_defects(name: str, multipliers: str) -> None:
    g = torch.Generator().manual_seed(0)
    options = {"dual_lr": 10.0, "multipliers": multipliers, "num_samples": 6}
    strategy = strategies.get(name, **options)
    strategy.attach(nn.Linear(2, 3), [on_output(NonNegative()), on_output(Simplex(1.0)), on_parameter("weight", L1Ball(0.1))])
    for step in range(40):
        scale = 10.0 ** float(torch.randint(-3, 38, (), generator=g))  # up to float32's largest numbers
        outputs = torch.randn(4, 3, generator=g) * scale
        ids = torch.randint(0, 6, (4,), generator=g)
        before = strategy.state_dict()["multipliers"]
        try:
            strategy.loss(outputs.square().mean(), outputs, sample_ids=ids)
            strategy.after_step()
        except FloatingPointError:
            strategy._discard_step()  # refused: nothing moved
            for key, value in before.items():
                assert torch.equal(strategy.state_dict()["multipliers"][key], value)
        for key, lam in strategy.state_dict()["multipliers"].items():
            assert bool(torch.isfinite(lam).all()), f"step {step}: {key} not finite"
            if key.endswith(":inequality"):
                assert bool((lam >= 0).all()), f"step {step}: {key} negative"


def test_a_dual_step_that_would_overflow_raises_and_changes_nothing() -> None:
    strategy = strategies.get("lagrangian", dual_lr=1e30)
    strategy.attach(nn.Linear(2, 2), on_output(NonNegative()))
    strategy.loss(torch.zeros(()), -torch.full((1, 2), 1e-3))
    strategy.after_step()  # multipliers 1e27: fine in float32
    before = strategy.multipliers()
    strategy.loss(torch.zeros(()), -torch.full((1, 2), 1e9))
    with pytest.raises(FloatingPointError, match="step 1 would overflow.*Lower dual_lr"):
        strategy.after_step()
    _assert_equal(before, strategy.multipliers())


# ----------------------------------------------------------------------------- the optimizer writes NaN
@pytest.mark.parametrize("name", ["projected", "l1-proximal", "l1-cumulative"])
def test_nan_written_by_the_optimizer_is_caught_by_after_step(name: str) -> None:
    strategy = strategies.get(name)
    model = strategy.attach(nn.Linear(2, 2), on_parameter("weight", L1Ball(1.0)))
    with torch.no_grad():
        model.weight[0, 0] = math.nan  # what an optimizer step with a NaN gradient leaves
    with pytest.raises(FloatingPointError, match=r"after optimizer step 0, weight.*clip_grad_norm_"):
        strategy.after_step()


def test_a_nan_output_before_a_projection_layer_names_the_step_and_constraint() -> None:
    strategy = strategies.get("projected")
    model = strategy.attach(nn.Linear(2, 2), on_output(L1Ball(1.0)))
    with pytest.raises(FloatingPointError, match=r"outputs contain NaN or Inf at step 0.*output in L1Ball"):
        model(torch.tensor([[math.nan, 1.0]]))


# ----------------------------------------------------------------------------- float16 / bfloat16
LOW = [torch.float16, torch.bfloat16]
KERNELS = {
    "project_l1_ball": lambda x: project_l1_ball(x, 1.0),
    "project_simplex": lambda x: project_simplex(x, 1.0),
    "project_nonnegative": project_nonnegative,
    "project_affine": lambda x: project_affine(x, torch.ones(1, 5), torch.ones(1)),
    "L1Ball.project": L1Ball(1.0).project,
    "Affine.project": Affine(torch.ones(1, 5), torch.ones(1)).project,
}


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("kernel", KERNELS.values(), ids=KERNELS.keys())
def test_low_precision_kernels_compute_in_float32_and_keep_the_dtype(kernel, dtype) -> None:
    x = (torch.randn(6, 5, generator=torch.Generator().manual_seed(0)) * 2).to(dtype)
    y = kernel(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.equal(y, kernel(x.float()).to(dtype))  # the float32 result, rounded once
    xg = x.clone().requires_grad_()
    kernel(xg).sum().backward()
    assert xg.grad.dtype == dtype and bool(torch.isfinite(xg.grad).all())


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("name,label", CELLS, ids=IDS)
def test_every_strategy_trains_a_low_precision_model(name: str, label: str, dtype: torch.dtype) -> None:
    model, strategy, optimizer, X, Y = _setup(name, label, dtype=dtype)
    for _ in range(3):
        _step(model, strategy, optimizer, X, Y)
    assert all(p.dtype == dtype and bool(torch.isfinite(p).all()) for p in model.parameters())
    with torch.no_grad():
        report = strategy.report(model(X))
    assert all(math.isfinite(v) for v in report.values())
