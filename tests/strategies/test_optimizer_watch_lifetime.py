"""A strategy that watches its optimizer (a global optimizer hook) leaves no hook behind: not after ``detach``,
and not once it is dropped without ``detach`` and garbage collected (as a study drops each run's strategy)."""

import gc

import pytest
import torch
from torch import nn
from torch.optim import optimizer as torch_optimizer

import strategies
from constrain import L1Ball, NonNegative, on_parameter

_WATCHING = [
    ("projected", {"metric": "optimizer"}, L1Ball(1.0)),
    ("exact-penalty", {}, NonNegative()),
    ("augmented-lagrangian", {"primal": "proximal", "multipliers": "mean"}, L1Ball(1.0)),
]


def _hooks() -> int:
    return len(torch_optimizer._global_optimizer_post_hooks)


@pytest.mark.parametrize(("name", "options", "constraint_set"), _WATCHING, ids=[w[0] for w in _WATCHING])
def test_the_optimizer_hook_goes_with_detach_or_with_the_strategy(name, options, constraint_set) -> None:
    gc.collect()
    before = _hooks()
    strategy = strategies.get(name, **options)
    model = strategy.attach(nn.Linear(3, 2), [on_parameter("weight", constraint_set)])
    assert _hooks() == before + 1  # the strategy watches the optimizer that steps the weight
    strategy.detach()
    assert _hooks() == before
    strategy = strategies.get(name, **options)
    model = strategy.attach(nn.Linear(3, 2), [on_parameter("weight", constraint_set)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = strategy.loss(model(torch.ones(4, 3)).square().mean())
    loss.backward()
    optimizer.step()
    strategy.after_step()
    assert _hooks() == before + 1
    del strategy, model, optimizer, loss  # dropped without detach: the model and strategy form cycles
    gc.collect()
    assert _hooks() == before
