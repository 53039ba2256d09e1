"""The metric projections name their weight ``d`` when it is not a floating-point tensor (not ``x``, not another name)."""

from __future__ import annotations

import pytest
import torch

from constrain import Affine, L1Ball, NonNegative, project_metric


@pytest.mark.parametrize("constraint_set", [L1Ball(1.0), Affine([[1.0, 1.0, 0.0]], 1.0), NonNegative()], ids=repr)
def test_a_bad_d_is_refused_by_its_name(constraint_set) -> None:
    x = torch.ones(2, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^d must be a torch\.Tensor, got list"):
        project_metric(constraint_set, x, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match=r"^d has dtype torch\.int64"):
        project_metric(constraint_set, x, torch.ones(3, dtype=torch.int64))
