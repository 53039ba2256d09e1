"""Drift checks: every table in the README against the command or the file that produces it.

- the support matrix: the output of ``constrain list``, line for line;
- the strategy table: the names of each family are the registered ones;
- the validate table: its header and notes are the command's, its rows are consistent (instance
  counts, verdicts, the total), and ``constrain validate`` re-run for one set at small sizes gives
  the same instances, rows and verdicts as the README rows it made (and errors of the same order
  where they are above rounding level, which differs between machines);
- the study, PSiLON and L1 tables: the committed ``figures/*.md`` they come from;
- the benchmark tables (timings, not reproducible): their columns are the command's (the README
  shows the ratio columns only), and every "ok" / "MISS" verdict follows from the ratio next to it.

They pass whenever the README is regenerated faithfully, and fail when a table is edited by hand
or goes stale.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import experiments.cli as cli
import strategies

ROOT = Path(__file__).resolve().parents[1]
#: The strategies the toolkit ships (other tests register their own, which the README does not list).
BUILT_IN = {n for n in strategies.available() if strategies.strategy_class(n).__module__.startswith("strategies.")}
README = (ROOT / "README.md").read_text()


def _code_blocks() -> list[str]:
    """The README's plain fenced blocks (no language), fence by fence."""
    blocks, current, language = [], None, None
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None:
                current, language = [], line[3:].strip()
            else:
                if not language:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _block_starting_with(prefix: str) -> list[str]:
    blocks = [b for b in _code_blocks() if b.lstrip().startswith(prefix)]
    assert len(blocks) == 1, f"expected one README block starting with {prefix!r}, found {len(blocks)}"
    return blocks[0].rstrip("\n").splitlines()


def _markdown_rows(text: str, header_contains: str) -> list[str]:
    """The rows (after the separator) of the first markdown table whose header line contains the text."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if (
            line.startswith("|")
            and header_contains in line
            and i + 1 < len(lines)
            and lines[i + 1].startswith("|-")
            or (line.startswith("|") and header_contains in line and lines[i + 1].startswith("| -"))
        ):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(row)
            return rows
    raise AssertionError(f"no markdown table with {header_contains!r} in its header")


def _run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    status = cli.main(argv)
    return status, capsys.readouterr().out


# ------------------------------------------------------------------ support matrix and strategy table
def test_support_matrix_is_the_output_of_constrain_list(capsys):
    status, printed = _run_cli(["list"], capsys)
    assert status == 0
    readme = [line.rstrip() for line in _block_starting_with("strategy")]
    printed_lines = [
        line.rstrip()
        for line in printed.splitlines()
        if not line.split() or line.split()[0] in BUILT_IN or line.split()[0] == "strategy"
    ]
    start = next(i for i, line in enumerate(printed_lines) if line.strip().startswith("strategy") and "(1)" in line)
    produced = [line for line in printed_lines[start : start + len(readme) + 1] if line.strip()]
    assert readme == produced[: len(readme)]
    assert len(produced) == len(readme), "constrain list prints more strategies than the README's matrix"


def test_strategy_table_lists_every_registered_name_in_its_family():
    rows = _markdown_rows(README, "| family | names |")
    listed: dict[str, set[str]] = {}
    for row in rows:
        family, names = row.split("|")[1].strip(), row.split("|")[2]
        key = family.split()[0].lower()  # "penalty / barrier" -> "penalty", "L1 regularization" -> "l1"
        listed[key] = set(re.findall(r"`([a-z0-9-]+)`", names))
    registered: dict[str, set[str]] = {}
    for name in sorted(BUILT_IN):
        family = strategies.strategy_class(name).family
        registered.setdefault(family.split("-")[0], set()).add(name)
    assert listed == registered


# ------------------------------------------------------------------ validate
VALIDATE_ROW = re.compile(
    r"^(?P<set>[\w-]+)\s+(?P<n>\d+) (?P<dtype>float\d+)\s+(?P<instances>\d+)\s+(?P<rows>\d+) (?P<ref>\w+)\s+"
    r"(?P<error>\S+)\s+(?P<violation>\S+) (?P<worst>\S+(?: #\d+)?)\s+(?P<verdict>pass|FAIL \(\d+\))$"
)


def _validate_rows(lines: list[str]) -> dict[tuple[str, int, str], dict]:
    rows = {}
    for line in lines:
        m = VALIDATE_ROW.match(line)
        if m:
            rows[(m["set"], int(m["n"]), m["dtype"])] = m.groupdict()
    return rows


def test_validate_table_is_consistent_and_matches_a_rerun(capsys):
    readme = _block_starting_with("constrain validate: ")[1:]  # under the title line: the table
    rows = _validate_rows(readme)
    table_lines = [line for line in readme if VALIDATE_ROW.match(line)]
    assert len(rows) == len(table_lines) > 0
    # every README row passes, and the total is the sum of the instance column
    assert all(row["verdict"] == "pass" for row in rows.values())
    total = re.fullmatch(r"(\d+) instance checks in [\d.]+ s: all pass", readme[-1])
    assert total and int(total[1]) == sum(int(row["instances"]) for row in rows.values())

    # re-run one set at small sizes (deterministic instances: seeded by set, size, trial and kind)
    status, printed = _run_cli(["validate", "--sets", "l1ball", "--max-n", "2", "--seed", "0"], capsys)
    assert status == 0
    out = printed.splitlines()
    header_at = next(i for i, line in enumerate(out) if line.startswith("set "))
    # the header, the rule and the notes under the table are verbatim the command's
    assert readme[:2] == out[header_at : header_at + 2]
    notes = [line for line in out[header_at + 2 :] if not VALIDATE_ROW.match(line) and "instance checks" not in line]
    readme_notes = [line for line in readme[2:-1] if not VALIDATE_ROW.match(line)]
    assert readme_notes == notes
    rerun = _validate_rows(out)
    assert rerun, printed
    for key, row in rerun.items():
        assert key in rows, f"the README has no row {key}"
        mine = rows[key]
        for column in ("instances", "rows", "ref", "verdict"):
            assert mine[column] == row[column], (key, column)
        # errors at rounding level differ between machines and kernel paths (numba or torch); above it
        # (1000 ulps of the dtype) the README and the re-run must agree to an order of magnitude
        rounding = 1000 * torch.finfo(getattr(torch, key[2])).eps
        for column in ("error", "violation"):
            a, b = float(mine[column]), float(row[column])
            assert max(a, b) <= rounding or 0.1 <= a / max(b, 1e-300) <= 10, (key, column, a, b)


# ------------------------------------------------------------------ tables copied from figures/*.md
def _table_lines(text: str, header_contains: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|") and header_contains in line)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


@pytest.mark.parametrize("figure, header", [("psilon.md", "| data set | model |"), ("l1.md", "| data set | method |")])
def test_tables_equal_the_committed_figures(figure, header):
    produced = _table_lines((ROOT / "figures" / figure).read_text(), header)
    assert len(produced) > 3
    assert _table_lines(README, header) == produced


def test_study_winners_equal_figures_study_md():
    """The README's "who reaches the optimum" table is the last section of figures/study.md."""
    import experiments.study as study
    from experiments.problems import CONVEX_PROBLEMS

    text = (ROOT / "figures" / "study.md").read_text()
    section = text.split("## Gap <=")[1]
    strategy_of = {entry.label: entry.strategy for entry in study.all_entries()}
    produced = {}
    for line in section.splitlines():
        m = re.match(r"- (\S+): (.*)$", line)
        if m:
            names = [] if m[2] == "none" else [strategy_of[label.strip()] for label in m[2].split(",")]
            produced[m[1]] = sorted(names)
    assert set(produced) == set(CONVEX_PROBLEMS)
    rows = _markdown_rows(README, "strategies at gap")
    assert len(rows) == len(CONVEX_PROBLEMS)
    for problem, row in zip(CONVEX_PROBLEMS, rows, strict=True):  # the README lists the problems in this order
        cell = row.split("|")[2].strip()
        names = (
            []
            if cell == "none"
            else sorted(re.split(r"\s*\(", item.strip())[0].strip("`") for item in re.split(r",\s*(?![^()]*\))", cell))
        )
        assert names == produced[problem], (problem, row)


# ------------------------------------------------------------------ benchmarks: format and verdicts
def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(any(word == other for other in it) for word in short)


def test_bench_projection_table_format():
    """The README shows ``constrain bench projections`` as printed (the machine line, then the
    table): its columns are the command's, and every target verdict follows from its ratio."""
    from experiments.bench import format_projection_table

    readme = _block_starting_with("machine:")
    assert readme[1].split() == format_projection_table([]).splitlines()[0].split()
    columns = re.sub(r" ms\b", "_ms", readme[1]).split()  # "abs ms" is one column
    checked = 0
    for line in readme[2:]:
        cells = line.split()
        ratios = dict(zip(columns, cells, strict=False))  # the verdict cells follow the columns
        for verdict in cells[len(columns) - 1 :]:
            name, _, state = verdict.rpartition(":")
            column, target, sense = {
                "sort/ours>=3": ("sort/ours", 3, ">="),
                "sort/ours>=25": ("sort/ours", 25, ">="),
                "passes<=6": ("ours/abs", 6, "<="),
                "torch_passes<=20": ("torch/abs", 20, "<="),
            }[name]
            ratio = float(ratios[column].rstrip("x"))
            ok = ratio >= target if sense == ">=" else ratio <= target
            # a ratio printed as the target itself (25.0x) may be 24.97x or 25.03x: either verdict
            assert state == ("ok" if ok else "MISS") or ratio == target, line
            checked += 1
    assert checked >= 10


def test_bench_strategy_verdicts_follow_from_the_ratios():
    from experiments.bench_strategies import format_overhead_table

    readme = _block_starting_with("family")
    printed_header = format_overhead_table({"cells": []}).splitlines()[0]
    assert _is_subsequence(readme[0].split(), printed_header.split())
    checked = 0
    for line in readme[1:]:
        m = re.search(r"(\d+\.\d+)x\s+<=(\d+(?:\.\d+)?)x (ok|MISS)$", line)
        if m:
            ratio, target, state = float(m[1]), float(m[2]), m[3]
            assert state == ("ok" if ratio <= target else "MISS"), line
            checked += 1
    assert checked >= 10
