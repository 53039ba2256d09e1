"""Slacks sized at attach (``output_width`` given) follow the model: float64 slacks for a float64 model,
holding sqrt(SLACK_FLOOR) to float64 precision (``slack_dtype``: at least float32, as a master copy)."""

from __future__ import annotations

import math

import pytest
import torch

import strategies
from constrain import NonNegative, on_output
from strategies._slack_lagrangian import SLACK_FLOOR, SlackLagrangian


@pytest.mark.parametrize(("dtype", "want"), [(torch.float64, torch.float64), (torch.float16, torch.float32)])
def test_slacks_sized_at_attach_take_the_models_dtype(dtype: torch.dtype, want: torch.dtype) -> None:
    strategy = strategies.get("slack-lagrangian", output_width=3)
    assert isinstance(strategy, SlackLagrangian)
    strategy.attach(torch.nn.Linear(2, 3).to(dtype), on_output(NonNegative()))
    (slack,) = strategy.slack_parameters()
    assert slack.dtype == want and slack.shape == (3,)
    assert slack.tolist() == [float(torch.tensor(math.sqrt(SLACK_FLOOR), dtype=want))] * 3
