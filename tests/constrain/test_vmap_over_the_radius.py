"""`vmap` over the radius alone (the rows shared): one projection per radius, as separate calls give."""

from __future__ import annotations

import pytest
import torch
from torch.func import vmap

from constrain import project_l1_ball, project_simplex


@pytest.mark.parametrize("project", [project_l1_ball, project_simplex], ids=lambda f: f.__name__)
def test_vmap_over_the_radius_matches_one_call_per_radius(project) -> None:
    x = torch.tensor([[0.9, -2.0, 0.3, 1.1], [0.2, 0.1, -0.4, 3.0]], dtype=torch.float64)
    radii = torch.tensor([0.5, 1.0, 2.5], dtype=torch.float64)
    got = vmap(lambda r: project(x, r))(radii)
    assert got.shape == (3, 2, 4)
    for k, r in enumerate(radii.tolist()):
        torch.testing.assert_close(got[k], project(x, r), rtol=0, atol=0)
    norms = got.abs().sum(-1) if project is project_l1_ball else got.sum(-1)  # every row on its radius (all outside)
    torch.testing.assert_close(norms, radii[:, None].expand(3, 2), rtol=1e-12, atol=0)
