"""A set with one radius per row hands each row its own set (``row_sets``, what the cvxpy reference solves row by
row): the sets' radii against the ones given, row by row."""

from __future__ import annotations

import pytest
import torch

from constrain import L1Ball, Simplex


@pytest.mark.parametrize("kind", [L1Ball, Simplex])
def test_each_row_gets_a_set_of_its_own_radius(kind: type) -> None:
    radii = [[0.5, 2.0, 1.25], [3.0, 0.75, 1.0]]
    x = torch.zeros(2, 3, 4, dtype=torch.float64)
    rows = list(kind(torch.tensor(radii, dtype=torch.float64)).row_sets(x))
    assert [type(s) for s in rows] == [kind] * 6
    assert [s.radius for s in rows] == [r for row in radii for r in row]
    shared = kind(2.0)
    assert next(iter(shared.row_sets(x))) is shared  # a float radius: the same set for every row
