r"""Do two study reports (``figures/study.md`` layout) draw the same conclusions?

``python -m experiments.study_compare A.md B.md``.

A cheaper study (a smaller budget, a cheaper problem) is acceptable only where it concludes what the full one
does. Read from the markdown that :func:`experiments.study.markdown_table` writes, per problem:

- ``bold``: the entries at :math:`|gap| \le` ``GAP_OK`` and violation :math:`\le` ``VIOLATION_OK`` on every seed;
- ``family bests``: each family's best entry and whether it is bold;
- ``ranking`` (problems with F*): the families in order of their best entry's distance to the target,
  :math:`\max(|gap| / GAP_{OK}, viol / VIOLATION_{OK})` (:func:`experiments._family_best.best_key`); the bold
  families first, as one group (their order is rounding noise);
- ``feasible families`` (problems without F*): the families whose best entry has violation :math:`\le` ``FEASIBLE``,
  and ``feasible by objective``: the feasible entries from the lowest objective up;
- ``never feasible``: the entries whose violation does not stay :math:`\le` ``FEASIBLE`` on some seed;
- ``below F*``: the entries whose median gap is below ``-GAP_OK`` (a different model class, or infeasible; a gap of
  -1e-14 is rounding, not a conclusion);
- ``held-out feasible``: the entries whose held-out violation is at most 1e-6.

The exit status is 0 when every conclusion is the same, 1 when one differs. ``--numbers`` also lists the
numbers that moved without changing a conclusion (a gap or violation by a decade or more, an objective by
more than 1%, steps to feasibility).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.study import FEASIBLE, GAP_OK, VIOLATION_OK

#: The columns of a problem's table, in order (the markdown of :func:`experiments.study.markdown_table`).
_COLUMNS = ("name", "family", "options", "objective", "gap", "viol", "viol_mean", "held_out", "to_feasible", "steps", "time")
#: A held-out violation at most this is "feasible on unseen inputs" (a projection's rounding, not a violation).
HELD_OUT_TOL = 1e-6


@dataclass
class ProblemReport:
    """One problem of a report: its rows (label -> column -> text, plus ``bold``) and its family-best table."""

    name: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    best: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def convex(self) -> bool:
        """A problem with an optimum F* (its gap column has numbers)."""
        return any(_number(r["gap"]) is not None for r in self.rows.values())


def _number(text: str) -> float | None:
    """A table cell as a number (``never``: infinity; ``-``, empty or text: None)."""
    if text == "never":
        return math.inf
    try:
        return float(text)
    except ValueError:
        return None


def _label(cell: str) -> str:
    """The entry's label from a strategy cell: ``**x (`name`)** (1 of 3 failed)`` -> ``x``."""
    cell = re.sub(r" \(\d+ of \d+ failed\)", "", cell.strip()).strip("*")
    return re.sub(r"\s*\(`[^`]*`\)", "", cell).strip()


def read_report(text: str) -> dict[str, ProblemReport]:
    """The problems of a study report (markdown), in order."""
    problems: dict[str, ProblemReport] = {}
    current: ProblemReport | None = None
    in_best = False
    for line in text.splitlines():
        heading = re.match(r"## (\S+): ", line)
        if heading or line.startswith("## "):
            current = ProblemReport(heading.group(1)) if heading else None
            if current is not None:
                problems[current.name] = current
            in_best = False
            continue
        if current is None:
            continue
        if line.startswith("Best entry of each family"):
            in_best = True
        if not line.startswith("| ") or line.startswith(("| strategy ", "| family ")):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if in_best:
            family, entry, gap, viol, to_feasible = cells[:5]
            current.best[family] = {"entry": entry.strip("*"), "bold": entry.startswith("**"), "gap": gap, "viol": viol}
            current.best[family]["to_feasible"] = to_feasible
        elif len(cells) == len(_COLUMNS):
            row: dict[str, Any] = dict(zip(_COLUMNS, cells, strict=True))
            row["bold"] = cells[0].startswith("**")
            current.rows[_label(cells[0])] = row
    return problems


def _units(best: dict[str, Any]) -> float:
    """Distance of a family's best entry to the target, in units of the target (infinite when unknown)."""
    gap, viol = _number(best["gap"]), _number(best["viol"])
    if gap is None or viol is None:
        return math.inf
    return max(abs(gap) / GAP_OK, viol / VIOLATION_OK)


def _ranking(report: ProblemReport) -> list[Any]:
    """The bold families (as one sorted group), then the others from the nearest to the target."""
    bold = sorted(f for f, b in report.best.items() if b["bold"])
    others = sorted((f for f, b in report.best.items() if not b["bold"]), key=lambda f: _units(report.best[f]))
    return [bold, *others]


def conclusions(report: ProblemReport) -> dict[str, Any]:
    """What one problem's table concludes (see the module doc)."""
    rows = report.rows
    found: dict[str, Any] = {
        "bold": sorted(n for n, r in rows.items() if r["bold"]),
        "family bests": {f: (b["entry"], b["bold"]) for f, b in report.best.items()},
    }
    if report.convex:
        found["ranking"] = _ranking(report)
        found["below F*"] = sorted(
            n for n, r in rows.items() if (_number(r["gap"]) or 0.0) < -GAP_OK and r["family"] != "baseline"
        )
    else:
        found["feasible families"] = sorted(f for f, b in report.best.items() if (_number(b["viol"]) or math.inf) <= FEASIBLE)
        feasible = {
            n: _number(r["objective"]) or math.inf
            for n, r in rows.items()
            if r["family"] != "baseline" and (_number(r["viol"]) or math.inf) <= FEASIBLE
        }
        found["feasible by objective"] = sorted(feasible, key=lambda n: feasible[n])
    found["never feasible"] = sorted(n for n, r in rows.items() if r["to_feasible"] == "never")
    found["held-out feasible"] = sorted(
        n for n, r in rows.items() if (held := _number(r["held_out"])) is not None and held <= HELD_OUT_TOL
    )
    return found


def compare(a: dict[str, ProblemReport], b: dict[str, ProblemReport], common: bool = False) -> list[str]:
    """The conclusions of ``a`` that ``b`` does not draw (problems missing from ``b`` included unless ``common``:
    then only the problems of both are compared); empty: the same."""
    differences = []
    for name, report in a.items():
        if name not in b and common:
            continue
        if name not in b:
            differences.append(f"{name}: not in the second report")
            continue
        mine, theirs = conclusions(report), conclusions(b[name])
        for key, value in mine.items():
            if value == theirs[key]:
                continue
            if isinstance(value, list) and key != "ranking" and key != "feasible by objective":
                only_a = sorted(set(value) - set(theirs[key]))
                only_b = sorted(set(theirs[key]) - set(value))
                differences.append(f"{name} / {key}: only in the first {only_a}, only in the second {only_b}")
            else:
                differences.append(f"{name} / {key}: {value} -> {theirs[key]}")
    return differences


def _moved(column: str, x: float, y: float) -> bool:
    if column == "objective":
        return abs(x - y) > 0.01 * abs(x)
    if column == "to_feasible":
        return x != y
    if x == 0 or y == 0:
        return x != y
    return abs(math.log10(abs(x)) - math.log10(abs(y))) >= 1


def moved_numbers(a: dict[str, ProblemReport], b: dict[str, ProblemReport]) -> list[str]:
    """Numbers of ``a`` that moved in ``b``: a gap or violation by a decade or more (or to/from 0), an objective by
    more than 1%, the steps to feasibility."""
    lines = []
    for name, report in a.items():
        for label, row in report.rows.items():
            other = b[name].rows.get(label) if name in b else None
            if other is None:
                continue
            for column in ("objective", "gap", "viol", "to_feasible"):
                x, y = _number(row[column]), _number(other[column])
                if x is not None and y is not None and x != y and _moved(column, x, y):
                    lines.append(f"{name} / {label} / {column}: {row[column]} -> {other[column]}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Print the differing conclusions of two reports (and with ``--numbers`` the numbers that moved)."""
    parser = argparse.ArgumentParser(prog="python -m experiments.study_compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="the reference report (e.g. figures/study.md)")
    parser.add_argument("second", type=Path, help="the report to check against it")
    parser.add_argument("--numbers", action="store_true", help="also list the numbers that moved")
    parser.add_argument("--common", action="store_true", help="compare only the problems both reports have")
    args = parser.parse_args(argv)
    for path in (args.first, args.second):
        if not path.is_file():
            parser.error(f"{path}: no such file; pass two study reports (markdown written by `constrain study`).")
    a, b = read_report(args.first.read_text()), read_report(args.second.read_text())
    if not a:
        parser.error(f"{args.first}: no problem section ('## name: description') found; is it a study report?")
    differences = compare(a, b, args.common)
    compared = [name for name in a if name in b or not args.common]
    print(
        "\n".join(differences) if differences else f"The same conclusions on {len(compared)} problem(s): {', '.join(compared)}."
    )
    if args.numbers:
        numbers = moved_numbers(a, b)
        print("\nNumbers that moved:" if numbers else "\nNo number moved.")
        print("\n".join(f"  {line}" for line in numbers))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
