"""A one-dimensional parameter (a bias) is one row: a radius tensor given for it must hold one radius, and a longer one
is refused when the target is validated, naming the parameter, its shape and the row count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from constrain import L1Ball, Simplex, on_parameter


@pytest.mark.parametrize("kind", [L1Ball, Simplex])
def test_a_bias_takes_one_radius_and_refuses_two(kind: type) -> None:
    model = nn.Linear(3, 4)
    on_parameter("bias", kind(torch.tensor([1.5]))).validate(model)  # one row, one radius: accepted
    with pytest.raises(ValueError, match=r"'bias' \(4,\) has 1 row\(s\)"):
        on_parameter("bias", kind(torch.tensor([1.0, 2.0]))).validate(model)
    on_parameter("weight", kind(torch.tensor([1.0, 2.0, 3.0, 4.0]))).validate(model)  # a matrix: one radius per row
