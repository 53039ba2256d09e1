"""``projected`` refuses a parametrized tensor by its name only: a layer whose weight carries a parametrization
may still have its (plain) bias projected, which then starts and stays feasible."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import strategies
from constrain import NonNegative, on_parameter


class _Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x


def _layer() -> tuple[nn.Linear, torch.Tensor]:
    """A layer whose weight is parametrized (twice its raw value) and whose bias has a negative entry; its raw weight."""
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([-0.5, 0.25]))
    raw = layer.weight.detach().clone()
    parametrize.register_parametrization(layer, "weight", _Scale())
    return layer, raw


def test_the_bias_beside_a_parametrized_weight_is_projected() -> None:
    layer, raw = _layer()
    strategies.get("projected").attach(layer, [on_parameter("bias", NonNegative())])
    torch.testing.assert_close(layer.bias.detach(), torch.tensor([0.0, 0.25]))  # max(b, 0): onto the set at attach
    assert parametrize.is_parametrized(layer, "weight")  # the weight's parametrization is left alone
    torch.testing.assert_close(layer.weight.detach(), 2.0 * raw)


def test_the_parametrized_weight_itself_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'weight' is parametrized"):
        strategies.get("projected").attach(_layer()[0], [on_parameter("weight", NonNegative())])
