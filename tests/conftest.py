"""Fixtures and hooks of the whole suite.

The default run is split over worker processes by pytest-xdist (``-n auto --dist loadgroup`` in
pyproject's addopts). A module- or session-scoped fixture is built once per worker that runs one of
its tests: the tests of a module that uses an expensive shared fixture (a DDP run, a study run) are
therefore kept together on one worker, so that the fixture is built once, as in a serial run.

Each worker computes with one torch (and so numba) thread: the workers already occupy the cores, and a
second intra-op thread per worker only adds synchronisation (OpenMP threads spin while they wait, which
cost a third of the CPU time of the projection tests on the 2-core machine). Tests of threaded code
pass their thread counts explicitly.
"""

from __future__ import annotations

import pytest
import torch

#: Shared fixtures cheap enough to build once per worker (grouping their users would serialize the run).
_CHEAP_SHARED = {"problem"}

#: The most expensive tests first (node id prefixes, costliest first; CPU-seconds measured on the 2-core
#: machine, subprocesses included): xdist hands out the work in this order (``--no-loadscope-reorder``), so
#: that no long test starts last and runs alone while the other workers are idle.
_LONGEST_FIRST = (
    "tests/experiments/test_study_reliability.py",  # ~50 s: studies killed and resumed, their workers spawned
    "tests/experiments/test_study.py::test_quick_suite_end_to_end",  # ~20 s
    "tests/experiments/test_l1_study.py::test_quick_study_end_to_end",  # ~10 s
    "tests/experiments/test_cli.py::test_a_quick_run_never_writes_into_figures",  # ~13 s, three runs
    "tests/strategies/test_dual.py::test_nupi_converges_where_descent_ascent_cycles",  # ~7 s
    "tests/test_bad_inputs.py::test_the_console_script",  # ~5 s each: a new interpreter
    "tests/strategies/test_distributed.py",  # ~3 s: two forked gloo processes
    "tests/strategies/test_defaults.py",  # ~3 s each
    "tests/experiments/test_dc3_study.py",
    "tests/experiments/test_study_convergence.py",
    "tests/strategies/test_penalty_prox.py",
    "tests/strategies/test_lagrangian_prox.py",
    "tests/strategies/test_min_norm.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread in every xdist worker (``workerinput`` exists only there); a serial run keeps torch's default."""
    if hasattr(config, "workerinput"):
        torch.set_num_threads(1)


def _rank(item: pytest.Item) -> int:
    """Position of ``item``'s first matching prefix in :data:`_LONGEST_FIRST` (after all of them if none)."""
    return next((i for i, prefix in enumerate(_LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(_LONGEST_FIRST))


def _shares_an_expensive_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` uses a module/package/session fixture of this suite (not one of pytest's or a plugin's,
    whose ``baseid`` is empty) other than the cheap ones."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        d.baseid and d.scope != "function" and name not in _CHEAP_SHARED
        for name, definitions in info.name2fixturedefs.items()
        for d in definitions
    )


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest tests first (stable sort by :func:`_rank`); under xdist's ``loadgroup``: one group per
    module whose tests share a module/session fixture."""
    items.sort(key=_rank)
    for item in items:
        if _shares_an_expensive_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
