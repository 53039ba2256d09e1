"""``experiments._runner``: results in task order, a task's exception as itself, a dead worker named.

(Its behaviour under real signals: ``test_study_reliability.py``.)
"""

from __future__ import annotations

import os

import pytest

from experiments._runner import WorkerError, run_tasks


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_task_order(workers: int) -> None:
    seen: list[int] = []
    results = run_tasks(pow, [(2, i) for i in range(7)], workers, on_result=lambda i, value: seen.append(i))
    assert results == [2**i for i in range(7)]
    assert sorted(seen) == list(range(7))


def test_a_task_exception_is_raised_as_itself_with_the_worker_traceback() -> None:
    with pytest.raises(ValueError, match="invalid literal") as caught:
        run_tasks(int, [("1",), ("x",), ("3",)], 2)
    assert isinstance(caught.value.__cause__, WorkerError) and "Traceback" in str(caught.value.__cause__)


def test_a_worker_that_dies_is_reported_with_its_exit_code() -> None:
    with pytest.raises(WorkerError, match=r"died \(exit code 3\)"):
        run_tasks(os._exit, [(3,), (3,)], 2)
