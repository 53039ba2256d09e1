"""Edges of the Lagrangian strategies' options, checked against hand-computed multipliers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import strategies
from constrain import L1Ball, on_output
from strategies._lagrangian import Lagrangian


@pytest.mark.parametrize("bad", [True, False, 0, -2])
def test_num_samples_must_be_a_positive_int(bad: object) -> None:
    """The class itself refuses what the registry's type check would let through (a bool is an int)."""
    with pytest.raises(ValueError, match=r"num_samples must be a positive int .*got " + repr(bad)):
        Lagrangian(multipliers="per-sample", num_samples=bad)  # type: ignore[arg-type]  # bad input on purpose


def test_a_single_sample_has_its_own_multiplier() -> None:
    """num_samples=1 is valid: one row of multipliers, moved by dual_lr * g(x) = 0.5 * (|3| + |-1| - 1)."""
    strategy = Lagrangian(dual_lr=0.5, multipliers="per-sample", num_samples=1)
    strategy.attach(nn.Identity(), on_output(L1Ball(1.0)))
    strategy.loss(torch.zeros(()), torch.tensor([[3.0, -1.0]]), sample_ids=torch.tensor([0]))
    strategy.after_step()
    (lam,) = strategy.multipliers().values()
    assert lam.shape == (1, 1)
    assert torch.allclose(lam, torch.tensor([[1.5]]))


@pytest.mark.parametrize("dual_optimizer", [None, torch.optim.SGD, "nupi"])
def test_inequality_multipliers_are_clipped_at_zero(dual_optimizer: object) -> None:
    """An inequality multiplier ascends on g and is projected onto lambda >= 0: max(0, 0 + 2 * (0.25 - 1)) = 0
    (NuPI's first step is plain ascent), with the built-in ascent or a dual optimizer."""
    strategy = strategies.get("lagrangian", dual_lr=2.0, multipliers="mean", dual_optimizer=dual_optimizer)
    assert isinstance(strategy, Lagrangian)
    strategy.attach(nn.Identity(), on_output(L1Ball(1.0)))
    strategy.loss(torch.zeros(()), torch.tensor([[0.25], [-0.25]]))
    strategy.after_step()
    (lam,) = strategy.multipliers().values()
    assert torch.equal(lam, torch.zeros_like(lam))


def test_a_state_with_an_integer_multiplier_is_refused_by_name() -> None:
    strategy = Lagrangian(dual_lr=1.0, multipliers="mean")
    strategy.attach(nn.Identity(), on_output(L1Ball(1.0)))
    state = {"steps": 0, "multipliers": {"0:inequality": torch.tensor([1])}}
    with pytest.raises(TypeError, match=r"strategy 'lagrangian': multiplier '0:inequality' must be a floating-point tensor"):
        strategy.load_state_dict(state)
