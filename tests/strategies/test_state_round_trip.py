"""Strategy state_dict round trip mid-training, for every registered strategy on every constraint it supports.

Train 4 steps, save the model's, the optimizer's and the strategy's state, rebuild all three from
scratch (another seed, so nothing carries over by accident), load, train 4 more steps: the
trajectory must equal the uninterrupted 8-step run bit for bit (parameters, strategy state, outputs).
Mini-batches with sample ids, so per-sample multipliers and slacks see every sample.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import strategies
from constrain import Polyhedron, on_output
from experiments.listing import CONSTRAINTS, support_matrix

N, BATCH, STEPS, RESUME_AT = 16, 8, 8, 4

#: Options that make each strategy's state non-trivial (multipliers per sample, schedules that move).
OPTIONS = {
    "lagrangian": {"dual_lr": 0.5, "multipliers": "per-sample", "num_samples": N},
    "augmented-lagrangian": {"penalty": 2.0, "multipliers": "per-sample", "num_samples": N, "penalty_growth": 1.1},
    "slack-lagrangian": {"dual_lr": 0.5, "multipliers": "per-sample", "num_samples": N, "penalty": 1.0},
    "quadratic-penalty": {"weight": 2.0, "growth": 1.2},
    "exact-penalty": {"weight": 2.0, "growth": 1.2},
    "log-barrier": {"weight": 0.1, "growth": 0.9},
    "reciprocal-barrier": {"weight": 0.01, "growth": 0.9},
    "extended-log-barrier": {"weight": 0.1, "t_growth": 1.2},
    "l1-truncated": {"strength": 0.05, "lr": 0.05, "period": 3},
    "l1-cumulative": {"strength": 0.05, "lr": 0.05},
}

CELLS = [(name, label) for name, row in support_matrix().items() for label, reason in row.items() if reason is None]
#: Strategies that act on output polyhedra only (none of the listing's constraints), on one of their own.
POLYHEDRON = {"output polyhedron": on_output(Polyhedron(A=[[1.0, 1.0]], b=lambda x: x[:, :1], G=[[1.0, -1.0]], h=[0.5]))}
CELLS += [(name, label) for name in ("dc3", "hardnet-aff") for label in POLYHEDRON if (name, label) not in CELLS]


class Net(nn.Module):
    """3 -> 2 -> 2 (float64); the listing's cells constrain ``layer.weight`` (2 x 2) or the outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 2, dtype=torch.float64)
        self.layer = nn.Linear(2, 2, dtype=torch.float64)
        with torch.no_grad():  # strictly inside every cell's set, so that barriers may start
            self.layer.weight.copy_(0.1 * self.layer.weight.abs() + 0.01)
            self.layer.bias.fill_(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.tanh(self.hidden(x)))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, 3, generator=g, dtype=torch.float64), torch.randn(N, 2, generator=g, dtype=torch.float64)


def _build(name: str, label: str, seed: int):
    torch.manual_seed(seed)
    strategy = strategies.get(name, **OPTIONS.get(name, {}))
    model = strategy.attach(Net(), [{**CONSTRAINTS, **POLYHEDRON}[label]])
    return model, strategy, torch.optim.Adam(model.parameters(), lr=0.05)


def _steps(model, strategy, optimizer, start: int, stop: int) -> None:
    X, Y = _data()
    full = "barrier" in strategy.name and strategy.name != "extended-log-barrier"  # inside only on the last batch
    for step in range(start, stop):
        ids = torch.arange(N) if full else torch.arange(N)[(step % 2) * BATCH :][:BATCH]
        out = model(X[ids])
        loss = strategy.loss(nn.functional.mse_loss(out, Y[ids]), out, sample_ids=ids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        strategy.after_step()


def _through_bytes(obj):
    """What torch.save / torch.load give back (a deep copy through a file)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _assert_same(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("name,label", CELLS, ids=[f"{n}|{c}" for n, c in CELLS])
def test_save_rebuild_load_continue_equals_the_uninterrupted_run(name: str, label: str) -> None:
    model, strategy, optimizer = _build(name, label, seed=0)
    _steps(model, strategy, optimizer, 0, STEPS)

    first, first_strategy, first_opt = _build(name, label, seed=0)
    _steps(first, first_strategy, first_opt, 0, RESUME_AT)
    saved = _through_bytes((first.state_dict(), first_opt.state_dict(), first_strategy.state_dict()))
    del first, first_strategy, first_opt

    again, again_strategy, again_opt = _build(name, label, seed=123)  # a different start: all must come from the state
    again.load_state_dict(saved[0])
    again_strategy.load_state_dict(saved[2])
    again_opt.load_state_dict(saved[1])
    _steps(again, again_strategy, again_opt, RESUME_AT, STEPS)

    _assert_same(model.state_dict(), again.state_dict(), "model")
    _assert_same(strategy.state_dict(), again_strategy.state_dict(), "strategy")
    X, _ = _data()
    with torch.no_grad():
        assert torch.equal(model(X), again(X))
    assert again_strategy.steps == STEPS


def test_every_registered_strategy_is_covered() -> None:
    assert {name for name, _ in CELLS} == {
        n for n in strategies.available() if strategies.strategy_class(n).__module__.startswith("strategies.")
    }  # not the ones tests register
