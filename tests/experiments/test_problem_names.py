"""A mistyped ``--problems`` name is reported before torch is imported; the torch-free name list is the real one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments import cli
from experiments._problem_names import CONVEX_PROBLEMS, MLP_PROBLEMS, PROBLEM_NAMES
from experiments.problems import PROBLEMS, get_problem

ROOT = Path(__file__).resolve().parents[2]


def test_the_torch_free_names_are_the_problems() -> None:
    assert PROBLEM_NAMES == tuple(PROBLEMS)
    assert all(get_problem(name).convex for name in CONVEX_PROBLEMS)
    assert not any(PROBLEMS[name]().convex for name in MLP_PROBLEMS)


def test_a_bad_name_is_reported_without_importing_torch(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom experiments.cli import main\n"
        f"status = main(['study', '--problems', 'lin-weight-l1,nope', '--out', {str(tmp_path / 'out')!r}])\n"
        "print(status, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "constrain study: error: unknown problem(s) nope; problems: lin-output-l1," in done.stderr
    assert not (tmp_path / "out").exists()  # nothing was created either


@pytest.mark.parametrize(
    ("argv", "unknown"),
    [
        (["study", "--problems=zzz,lin-weight-l1"], "zzz"),
        (["study", "convex", "--seeds", "2", "--problems", "a,b"], "a, b"),
        (["study", "--problems", "lin-weight-l1"], None),
        (["study", "l1", "--problems", "nope"], None),  # the L1 study has no --problems: its parser says so
        (["list", "--problems", "nope"], None),
        ([], None),
    ],
)
def test_which_arguments_are_checked_early(argv: list[str], unknown: str | None) -> None:
    message = cli._unknown_study_problems(argv)
    assert (message is None) == (unknown is None)
    if unknown is not None:
        assert message is not None and message.startswith(f"unknown problem(s) {unknown};")


def test_main_returns_2_with_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["study", "--problems", "nope"]) == 2
    assert capsys.readouterr().err.startswith("constrain study: error: unknown problem(s) nope;")
