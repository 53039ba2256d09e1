"""``constrain validate --workers``: the same table whether the units run here, in forked or in spawned processes."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict

import pytest

from experiments import validate as validate_module
from experiments.validate import default_workers, validate

SETS, SIZES = ["l1ball", "tie"], [2, 5]


def _table(workers: int | None) -> list[dict]:
    return [asdict(row) for row in validate(SETS, SIZES, workers=workers)]


def test_default_run_forks_two_workers_on_linux() -> None:
    # forked workers inherit this process's imports: the default run uses both cores of a 2-core machine
    expected = 2 if sys.platform.startswith("linux") and (os.cpu_count() or 1) >= 2 else 1
    assert default_workers() == expected


def test_forked_workers_give_the_same_table() -> None:
    here = _table(workers=1)
    assert [(r["set"], r["n"], r["dtype"]) for r in here] == [
        (name, n, dtype) for name in SETS for n in SIZES for dtype in ("float32", "float64")
    ]
    assert all(r["failed"] == 0 and r["instances"] > 0 for r in here)
    assert _table(workers=None) == here  # the default: forked where the platform forks
    assert _table(workers=3) == here


@pytest.mark.slow
def test_spawned_workers_give_the_same_table(monkeypatch) -> None:
    monkeypatch.setattr(validate_module, "_start_method", lambda: "spawn")  # as on macOS and Windows
    assert _table(workers=2) == _table(workers=1)
