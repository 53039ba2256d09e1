"""Fixtures and hooks of the whole suite.

The default run is split over worker processes by pytest-xdist (``-n auto --dist loadgroup`` in
pyproject's addopts). A module- or session-scoped fixture is built once per worker that runs one of
its tests: the tests of a module that uses an expensive shared fixture (a DDP run, a study run) are
therefore kept together on one worker, so that the fixture is built once, as in a serial run.
"""

from __future__ import annotations

import pytest

#: Shared fixtures cheap enough to build once per worker (grouping their users would serialize the run).
_CHEAP_SHARED = {"problem"}


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
    """Under xdist's ``loadgroup``: one group per module whose tests share a module/session fixture."""
    for item in items:
        if _shares_an_expensive_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
