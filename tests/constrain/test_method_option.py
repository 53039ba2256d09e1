"""The `method=` option of the L1-ball and simplex projections: a bad value names the option and lists the choices."""

from __future__ import annotations

import pytest
import torch

from constrain import project_l1_ball, project_simplex


@pytest.mark.parametrize("project", [project_l1_ball, project_simplex], ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", ["fast", "Torch", None, 1])
def test_a_bad_method_names_the_option_and_the_choices(project, bad: object) -> None:
    x = torch.randn(3, 5, dtype=torch.float64)
    pattern = rf"^option 'method' must be one of 'auto', 'numba', 'torch', 'sort'; got {bad!r}\.$"
    with pytest.raises(ValueError, match=pattern):
        project(x, 1.0, method=bad)  # type: ignore[arg-type]  # bad on purpose
