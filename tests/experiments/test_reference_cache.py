"""F* kept on disk: solved once, read back to the last bit, re-solved when the file is stale or damaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiments import problems
from experiments.problems import PROBLEMS, Reference


def _fresh(name: str = "lin-weight-nonneg") -> problems.Problem:
    """A new instance (get_problem caches one per process, with its solution in memory)."""
    return PROBLEMS[name]()


def _no_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> Reference:
        raise AssertionError("cvxpy was called although the solution is stored")

    monkeypatch.setattr(problems, "linear_reference", refuse)


def test_solved_once_then_read_back_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    solved = _fresh().stored_reference(tmp_path)
    assert solved is not None
    files = list(tmp_path.glob("lin-weight-nonneg--*.ref"))
    assert len(files) == 1 and _fresh().reference_key() in files[0].name
    direct = _fresh().reference()  # an independent solve, no cache
    assert direct is not None and direct.f_star == solved.f_star
    _no_solver(monkeypatch)
    again = _fresh()
    read = again.stored_reference(tmp_path)
    assert read is not None
    assert read.f_star == solved.f_star  # bit for bit: JSON keeps every digit of a float64
    assert np.array_equal(read.weight, solved.weight) and np.array_equal(read.bias, solved.bias)
    assert (read.solver, read.status) == (solved.solver, solved.status)
    assert again.f_star == solved.f_star  # the problem uses it from now on


def test_damaged_or_foreign_files_are_solved_again(tmp_path: Path) -> None:
    problem = _fresh()
    path = tmp_path / f"{problem.name}--{problem.reference_key()}.ref"
    path.write_text("{not json")
    ref = problem.stored_reference(tmp_path)
    assert ref is not None and ref.f_star > 0
    assert '"key"' in path.read_text()  # replaced by a good file
    path.write_text(path.read_text().replace(problem.reference_key(), "0123456789"))  # another problem's key inside
    again = _fresh().stored_reference(tmp_path)
    assert again is not None and again.f_star == ref.f_star
    assert problem.reference_key() in path.read_text()


def test_reuse_false_solves_and_nonconvex_problems_have_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _fresh().stored_reference(tmp_path)
    assert first is not None
    calls: list[int] = []
    real = problems.linear_reference

    def counting(*args: object) -> Reference:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]  # the arguments linear_reference was called with

    monkeypatch.setattr(problems, "linear_reference", counting)
    resolved = _fresh().stored_reference(tmp_path, reuse=False)
    assert resolved is not None and resolved.f_star == first.f_star
    assert calls == [1]
    assert _fresh("mlp-synthetic-l1").stored_reference(tmp_path) is None
    assert not list(tmp_path.glob("mlp-*"))


def test_a_solution_in_memory_is_written_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    problem = _fresh()
    solved = problem.reference()
    _no_solver(monkeypatch)
    assert problem.stored_reference(tmp_path) is solved
    read = _fresh().stored_reference(tmp_path)
    assert read is not None and solved is not None and read.f_star == solved.f_star


def test_the_key_follows_the_problem() -> None:
    keys = {name: PROBLEMS[name]().reference_key() for name in ("lin-weight-nonneg", "lin-weight-l1", "lin-output-l1")}
    assert len(set(keys.values())) == 3
    assert PROBLEMS["lin-weight-l1"]().reference_key() == keys["lin-weight-l1"]  # stable across instances


def test_a_temporary_left_by_a_killed_write_is_removed(tmp_path: Path) -> None:
    problem = _fresh()
    path = tmp_path / f"{problem.name}--{problem.reference_key()}.ref"
    stale = tmp_path / f".{path.name}.abc123.tmp"  # what write_json_atomic leaves when killed mid-write
    stale.write_text('{"half')
    assert problem.stored_reference(tmp_path) is not None
    assert path.is_file() and not stale.exists()
