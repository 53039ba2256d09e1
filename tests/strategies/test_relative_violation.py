r"""The penalty family's measure of how far a batch is from feasible, against the formula
:math:`\max(\max g^+, \max |h|) / \max |x|` on hand-made values."""

from __future__ import annotations

import torch

from strategies._penalty import _relative_violation

ROWS = torch.tensor([[1.0, -4.0], [2.0, 0.5]])  # max |x| = 4


def test_satisfied_inequalities_count_zero_and_equalities_both_ways() -> None:
    g = torch.tensor([[-3.0], [0.5]])  # g+ = (0, 0.5): a satisfied -3 is no violation
    h = torch.tensor([[-1.0], [0.2]])  # |h| = (1, 0.2): an equality is violated on either side
    assert float(_relative_violation(ROWS, g, None)) == 0.5 / 4
    assert float(_relative_violation(ROWS, None, h)) == 1.0 / 4
    assert float(_relative_violation(ROWS, g, h)) == 1.0 / 4
    assert float(_relative_violation(ROWS, -g.abs(), None)) == 0.0
    assert float(_relative_violation(ROWS, None, None)) == 0.0
