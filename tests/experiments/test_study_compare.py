"""``experiments.study_compare``: the conclusions read back from a study report, and what a change to one shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments import study_compare
from experiments.study_compare import compare, conclusions, main, moved_numbers, read_report

REPORT = Path(__file__).resolve().parents[2] / "figures" / "study.md"


@pytest.fixture(scope="module")
def text() -> str:
    return REPORT.read_text()


def _target_list(text: str) -> dict[str, list[str]]:
    """The report's own list of entries at the target (``- problem: a, b``), written by ``markdown_table``."""
    section = text.split("## Gap <= ", 1)[1].split("\n## ", 1)[0]
    found = {}
    for problem, names in re.findall(r"^- (\S+): (.*)$", section, flags=re.M):
        found[problem] = [] if names == "none" else names.split(", ")
    return found


def test_the_bold_rows_are_the_reports_own_list_of_entries_at_the_target(text: str) -> None:
    report = read_report(text)
    listed = _target_list(text)
    assert listed and set(listed) <= set(report)
    for problem, names in listed.items():
        assert conclusions(report[problem])["bold"] == sorted(names), problem


def test_every_problem_and_row_is_read(text: str) -> None:
    report = read_report(text)
    headings = re.findall(r"^## (\S+): ", text, flags=re.M)
    assert list(report) == headings
    for problem in report.values():
        table = text.split(f"## {problem.name}: ", 1)[1].split("\nBest entry", 1)[0]
        assert len(problem.rows) == len(re.findall(r"^\| (?!strategy |---)", table, flags=re.M))
        assert set(problem.best) and all(b["entry"] in problem.rows for b in problem.best.values())


def test_a_report_draws_its_own_conclusions(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    report = read_report(text)
    assert compare(report, report) == [] and moved_numbers(report, report) == []
    assert main([str(REPORT), str(REPORT)]) == 0
    assert "The same conclusions on" in capsys.readouterr().out


def _first_bold_row(text: str) -> tuple[str, str]:
    """(problem, the line of its first bold strategy row)."""
    for problem, body in re.findall(r"^## (\S+): .*?\n(.*?)(?=^## )", text, flags=re.M | re.S):
        for line in body.splitlines():
            if line.startswith("| **") and "| never |" not in line:
                return problem, line
    raise AssertionError("no bold row in the report")


def test_an_entry_that_misses_the_target_is_a_changed_conclusion(text: str, tmp_path: Path) -> None:
    problem, line = _first_bold_row(text)
    cells = line.split(" | ")
    label = re.sub(r"\s*\(`[^`]*`\)", "", cells[0].removeprefix("| ").strip("*"))
    cells[0] = cells[0].replace("**", "")
    cells[4] = "+3.0e-03"  # the gap far above the target
    cells[8] = "never"
    changed = text.replace(line, " | ".join(cells), 1)
    differences = compare(read_report(text), read_report(changed))
    assert any(d.startswith(f"{problem} / bold: only in the first ['{label}']") for d in differences), differences
    assert any(
        d.startswith(f"{problem} / never feasible: only in the first [], only in the second ['{label}']") for d in differences
    )
    assert f"{problem} / {label} / gap: {line.split(' | ')[4]} -> +3.0e-03" in moved_numbers(
        read_report(text), read_report(changed)
    )
    (tmp_path / "b.md").write_text(changed)
    assert main([str(REPORT), str(tmp_path / "b.md")]) == 1


def test_a_number_that_moves_within_its_conclusion_is_listed_but_not_a_difference(text: str) -> None:
    problem, line = _first_bold_row(text)
    cells = line.split(" | ")
    cells[3] = f"{float(cells[3]) * 1.5:g}"  # the objective, not a conclusion by itself on a convex problem
    changed = read_report(text.replace(line, " | ".join(cells), 1))
    original = read_report(text)
    assert compare(original, changed) == []
    assert len(moved_numbers(original, changed)) == 1


def test_missing_problems_differ_unless_only_the_common_ones_are_compared(text: str) -> None:
    report = read_report(text)
    first = next(iter(report))
    fewer = {name: p for name, p in report.items() if name != first}
    assert compare(report, fewer) == [f"{first}: not in the second report"]
    assert compare(report, fewer, common=True) == []


def test_bad_input_is_refused_with_the_file_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as missing:
        main([str(REPORT), str(tmp_path / "none.md")])
    assert missing.value.code == 2 and "none.md: no such file" in capsys.readouterr().err
    (tmp_path / "other.md").write_text("# not a study\n\nsome text\n")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "other.md"), str(REPORT)])
    assert "no problem section" in capsys.readouterr().err


def test_the_ranking_puts_the_bold_families_first_as_one_group() -> None:
    report = study_compare.ProblemReport("p")
    report.rows["x"] = dict.fromkeys(study_compare._COLUMNS, "-") | {"gap": "+1.0e-03", "bold": False}
    report.best = {
        "b": {"entry": "x", "bold": True, "gap": "+1.0e-05", "viol": "0"},
        "a": {"entry": "x", "bold": True, "gap": "-4.0e-14", "viol": "0"},
        "far": {"entry": "x", "bold": False, "gap": "+2.0e-01", "viol": "0"},
        "near": {"entry": "x", "bold": False, "gap": "+1.0e-03", "viol": "1.0e-05"},  # 10 and 10 units: 10
    }
    assert study_compare._ranking(report) == [["a", "b"], "near", "far"]
