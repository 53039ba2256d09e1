"""The study's per-family summary: on each problem, the best entry of each strategy family, and one overview
table across the problems (which family reaches the target where). Computed from the study's rows (medians and
worst seeds of the run logs), so it needs no run of its own."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experiments.problems import Problem
    from experiments.study import Plan, Row


def best_key(row: Row, convex: bool) -> tuple:
    r"""Order rows of one family. With an optimum F*: meets the target, then the nearest to it in units of the
    target, :math:`\max(|gap| / GAP_{OK}, viol / VIOLATION_{OK})` (so neither a feasible run far from F* nor a
    close but infeasible one wins by one measure alone), then |gap|. Without: feasible, then the objective."""
    from experiments.study import FEASIBLE, GAP_OK, VIOLATION_OK

    violation = row.worst_violation if row.worst_violation is not None else math.inf
    if convex:
        gap = row.worst_gap if row.worst_gap is not None else math.inf
        return (not row.reaches_target, max(gap / GAP_OK, violation / VIOLATION_OK), gap, violation)
    return (violation > FEASIBLE, row.objective if row.objective is not None else math.inf, violation)


def best_of_families(rows: Sequence[Row], convex: bool) -> dict[str, Row]:
    """``{family: its best row}`` among the strategy rows (not the baseline) with at least one finished run."""
    families: dict[str, list[Row]] = {}
    for row in rows:
        if row.entry.strategy is not None and row.runs and len(row.failed) < row.runs:
            families.setdefault(row.entry.family, []).append(row)
    return {family: min(group, key=lambda r: best_key(r, convex)) for family, group in families.items()}


def _signed_worst_gap(row: Row) -> float | None:
    """The worst seed's |gap| with the sign of the median gap."""
    return row.worst_gap if row.gap is None or row.worst_gap is None else math.copysign(row.worst_gap, row.gap)


def family_best_lines(problem: Problem, rows: Sequence[Row]) -> list[str]:
    """The best entry of each family on one problem (gap, violation, steps to feasibility, time)."""
    from experiments.study import FEASIBLE, _gap, _num, _steps, _violation

    best = best_of_families(rows, problem.convex)
    if not best:
        return []
    lines = [
        "",
        "Best entry of each family (worst seed for gap and violation):",
        "",
        f"| family | best entry | gap | train viol max | steps to viol <= {FEASIBLE:g} | time/step |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for family, row in best.items():
        name = f"**{row.entry.label}**" if row.reaches_target and problem.convex else row.entry.label
        lines.append(
            f"| {family} | {name} | {_gap(_signed_worst_gap(row)) if problem.f_star is not None else '-'} | "
            f"{_violation(row.worst_violation)} | {_steps(row.steps_to_feasible, row.runs > 0)} | "
            f"{_num(row.relative_time, 3)} |"
        )
    return lines


def family_overview(plan: Plan, rows: Sequence[Row]) -> list[str]:
    """One table over the convex problems: per family, its best entry with its worst-seed gap and violation
    (**bold**: gap and violation within the study's target on every seed; '-': no applicable entry)."""
    from experiments.problems import get_problem
    from experiments.study import GAP_OK, VIOLATION_OK, _gap, _violation

    convex = [p for p in plan.problems if get_problem(p).convex]
    best = {p: best_of_families([r for r in rows if r.problem == p], True) for p in convex}
    families = list(dict.fromkeys(f for p in convex for f in best[p]))
    if not families:
        return []
    lines = [
        f"## Each family at its best (worst seed; **bold**: gap <= {GAP_OK:g} and violation <= {VIOLATION_OK:g})",
        "",
        "| problem | " + " | ".join(families) + " |",
        "|---|" + "---|" * len(families),
    ]
    for p in convex:
        cells = []
        for family in families:
            row = best[p].get(family)
            if row is None:
                cells.append("-")
                continue
            text = f"{row.entry.label}: {_gap(_signed_worst_gap(row))}, {_violation(row.worst_violation)}"
            cells.append(f"**{text}**" if row.reaches_target else text)
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return [*lines, ""]
