"""``parameter_rows`` and ``output_rows``, the row layouts every set acts on, against the layouts written out by hand."""

from __future__ import annotations

import torch

from constrain import output_rows, parameter_rows


def test_a_parameter_is_one_row_per_output_unit_and_a_bias_is_one_row() -> None:
    weight = torch.arange(24.0).reshape(2, 3, 4)  # a conv-like weight: 2 output units of 12 entries
    assert parameter_rows(weight).tolist() == [list(range(12)), list(range(12, 24))]
    assert parameter_rows(torch.tensor([1.0, -2.0, 3.0])).tolist() == [[1.0, -2.0, 3.0]]


def test_outputs_are_one_row_per_sample() -> None:
    assert output_rows(torch.arange(6.0).reshape(3, 2)).tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert output_rows(torch.tensor([4.0, 5.0])).tolist() == [[4.0], [5.0]]  # (B,) becomes (B, 1)
