"""A per-sample table's recorded ``(ids, defects)`` come back on the table's device and in its dtype (records
taken elsewhere, e.g. gathered over ranks on the CPU for a table on an accelerator): here a table on the
``meta`` device and one in float64, both with CPU float32 records."""

from __future__ import annotations

import torch
from torch import nn

from strategies._multipliers import Kind, Layout, Multiplier


def _table(device: str, dtype: torch.dtype) -> Multiplier:
    table = Multiplier(0, Kind.INEQUALITY, Layout.PER_SAMPLE, num_samples=5)
    table.value = nn.Parameter(torch.zeros(5, 2, device=device, dtype=dtype), requires_grad=False)  # as sized by use
    table.records = [
        (torch.tensor([[1.0, -2.0]]), torch.tensor([3])),
        (torch.tensor([[0.5, 0.25], [4.0, 0.0]]), torch.tensor([0, 3])),
    ]
    return table


def test_the_records_move_to_the_tables_device() -> None:
    ids, c = _table("meta", torch.float32).rows_record()
    assert ids.device.type == "meta" and c.device.type == "meta"
    assert ids.shape == (3,) and c.shape == (3, 2)


def test_the_records_take_the_tables_dtype_in_order() -> None:
    ids, c = _table("cpu", torch.float64).rows_record()
    assert torch.equal(ids, torch.tensor([3, 0, 3]))
    assert c.dtype == torch.float64
    torch.testing.assert_close(c, torch.tensor([[1.0, -2.0], [0.5, 0.25], [4.0, 0.0]], dtype=torch.float64))
