"""slack-lagrangian with per-sample multipliers and ``output_width``: attach sizes one slack row per training
sample, and each sample's row starts from its own first defect, s = sqrt(max(-g, 0) + 1e-4); rows of samples
not seen yet keep the floor sqrt(1e-4)."""

from __future__ import annotations

import math

import torch
from torch import nn

import strategies
from constrain import NonNegative, on_output


def test_one_slack_row_per_sample_initialised_on_first_sight() -> None:
    model = nn.Linear(3, 2).double()
    strategy = strategies.SlackLagrangian(multipliers="per-sample", num_samples=5, output_width=2)
    strategy.attach(model, [on_output(NonNegative())])
    slack = strategy.slack(0)
    assert slack.shape == (5, 2)
    torch.testing.assert_close(slack.detach(), torch.full((5, 2), math.sqrt(1e-4), dtype=torch.float64))
    ids = torch.tensor([1, 3])
    outputs = torch.tensor([[0.5, -2.0], [4.0, 0.0]], dtype=torch.float64)  # g = -y for y >= 0
    strategy.loss(torch.zeros((), dtype=torch.float64), outputs, sample_ids=ids)
    want = torch.full((5, 2), math.sqrt(1e-4), dtype=torch.float64)
    want[ids] = (outputs.clamp_min(0) + 1e-4).sqrt()
    torch.testing.assert_close(slack.detach(), want, rtol=0, atol=1e-15)
