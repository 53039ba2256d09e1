"""slack-lagrangian's options at their bounds: ``output_width=1`` (one output per sample) is accepted and sizes one
slack per inequality at attach, 0 is refused by name; a ``slack_optimizer`` of a wrong type is refused naming the
type it got."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import strategies
from constrain import NonNegative, on_output


def test_one_output_per_sample_is_a_valid_width() -> None:
    strategy = strategies.SlackLagrangian(output_width=1)
    strategy.attach(nn.Linear(3, 1), [on_output(NonNegative())])
    torch.testing.assert_close(strategy.slack(0).detach(), torch.full((1,), math.sqrt(1e-4)))
    with pytest.raises(ValueError, match="output_width must be a positive int"):
        strategies.SlackLagrangian(output_width=0)


@pytest.mark.parametrize("spec", [42, 0.5], ids=["int", "float"])
def test_a_slack_optimizer_of_a_wrong_type_is_refused_by_its_type(spec: object) -> None:
    with pytest.raises(TypeError, match=rf"slack_optimizer must be a name, .* got {type(spec).__name__}\."):
        strategies.get("slack-lagrangian", slack_optimizer=spec)
