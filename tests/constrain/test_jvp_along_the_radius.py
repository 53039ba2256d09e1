"""Forward mode with a tangent on the radius alone (``x`` a constant): the jvp against central finite differences in
float64, and against its closed form, ``sign(y) / |S|`` on the support S of each row outside the set (0 inside)."""

from __future__ import annotations

import pytest
import torch
from torch.func import jvp

from constrain import project_l1_ball, project_simplex


@pytest.mark.parametrize("project", [project_simplex, project_l1_ball], ids=["simplex", "l1_ball"])
def test_the_jvp_along_the_radius_is_the_derivative_in_the_radius(project) -> None:
    x = torch.tensor([[0.9, -0.5, 0.3, 0.05], [0.1, 0.05, -0.02, 0.0], [3.0, -2.0, 1.0, 0.5]], dtype=torch.float64)
    radius = torch.tensor([1.0, 0.6, 2.5], dtype=torch.float64)  # no entry at its threshold; the ball holds row 2
    tangent = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    y, along = jvp(lambda r: project(x, r), (radius,), (tangent,))
    h = 1e-6
    finite = (project(x, radius + h * tangent) - project(x, radius - h * tangent)) / (2 * h)
    torch.testing.assert_close(along, finite, rtol=0, atol=1e-8)
    support = (y != 0).double()
    closed = torch.sign(y) * tangent.unsqueeze(-1) / support.sum(-1, keepdim=True)
    if project is project_l1_ball:
        closed[1] = 0.0  # inside the ball: y = x whatever the radius
    torch.testing.assert_close(along, closed, rtol=0, atol=1e-12)
