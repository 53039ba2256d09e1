"""``constrain validate --workers``: the same table whether the units run here or in spawned processes."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from experiments.validate import validate


@pytest.mark.slow
def test_workers_give_the_same_table() -> None:
    sets, sizes = ["l1ball", "tie"], [2, 5]
    here = [asdict(row) for row in validate(sets, sizes, workers=1)]
    spawned = [asdict(row) for row in validate(sets, sizes, workers=2)]
    assert [(r["set"], r["n"], r["dtype"]) for r in here] == [
        (name, n, dtype) for name in sets for n in sizes for dtype in ("float32", "float64")
    ]
    assert spawned == here
    assert all(r["failed"] == 0 and r["instances"] > 0 for r in here)
