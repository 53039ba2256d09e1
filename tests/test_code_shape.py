"""The shape of the code: lint, format, types and function length hold for the packages.

ruff and mypy run in CI before the tests (``.ci/run``); these checks are the ones a reader meets first:
no function of the packages runs over 60 lines (Cooper's longest is 57, geotorch's 47)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("constrain", "strategies", "experiments")
LONGEST = 60
_NOQA_CODES = r"^:?\s*[A-Z]+[0-9]+(\s*,\s*[A-Z]+[0-9]+)*"


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_longer_than_60_lines(package: str) -> None:
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted((ROOT / package).rglob("*.py"))
        for node in _functions(path)
        if node.end_lineno is not None and node.end_lineno - node.lineno + 1 > LONGEST
    ]
    assert not long, "split these functions (at most 60 lines each):\n" + "\n".join(long)


def test_every_package_ships_its_type_hints() -> None:
    assert all((ROOT / package / "py.typed").is_file() for package in PACKAGES)


def test_every_suppression_says_why() -> None:
    """A ``noqa`` or ``type: ignore`` without a reason after it hides a problem from the next reader."""
    bare = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for marker in ("# noqa", "# type: ignore"):
                    if marker in line:
                        tail = line.split(marker, 1)[1]
                        # after the codes: "[code, ...]" (type: ignore) or ": E402, F401" (noqa)
                        reason = tail.split("]", 1)[1] if tail.startswith("[") else re.sub(_NOQA_CODES, "", tail)
                        if not reason.strip(" -#:"):
                            bare.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bare, "give each suppression its reason on the same line:\n" + "\n".join(bare)
