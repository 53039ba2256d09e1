"""The per-family summary of the study, on hand-made rows: which entry is each family's best, and the tables."""

from __future__ import annotations

from types import SimpleNamespace

from experiments._family_best import best_of_families, family_best_lines, family_overview
from experiments.study import Entry, Row


def _row(label: str, strategy: str | None, gap: float, violation: float, problem: str = "lin-weight-affine", **kw) -> Row:
    fields = dict(runs=3, failed=[], objective=1.0 + gap, gap=gap, train_max=violation, train_mean=violation, test_max=None)
    fields.update(steps_to_feasible=10.0, time_per_step=1e-3, relative_time=1.5, worst_gap=abs(gap), worst_violation=violation)
    fields.update(kw)
    return Row(problem, Entry(label, strategy), **fields)  # type: ignore[arg-type]


ROWS = [
    _row("unconstrained", None, -0.9, 0.7),
    _row("quadratic-penalty", "quadratic-penalty", 0.16, 6e-6),
    _row("exact-penalty", "exact-penalty", 2e-12, 0.0),
    _row("exact-penalty (subgradient)", "exact-penalty", 1.6, 1e-6),
    _row("lagrangian", "lagrangian", 0.42, 0.47),
    _row("augmented-lagrangian", "augmented-lagrangian", -1e-5, 2e-3),  # small gap but infeasible
    _row("lagrangian (nupi)", "lagrangian", 3e-3, 4e-8),  # feasible, larger gap: the best of its family
    _row("projected", "projected", 1e-13, 7e-16),
    _row("projected (failed)", "projected", 0.0, 0.0, failed=["a", "b", "c"]),  # every seed failed: never chosen
]


def test_best_of_each_family():
    best = best_of_families(ROWS, convex=True)
    assert {f: r.entry.label for f, r in best.items()} == {
        "penalty": "exact-penalty",
        "lagrangian": "lagrangian (nupi)",
        "projected": "projected",
    }


def test_best_on_a_problem_without_optimum_is_the_lowest_feasible_objective():
    rows = [_row("a", "quadratic-penalty", 0.0, 1e-2, objective=0.1), _row("b", "exact-penalty", 0.0, 0.0, objective=0.3)]
    assert best_of_families(rows, convex=False)["penalty"].entry.label == "b"  # a is infeasible (1e-2 > 1e-4)


def test_family_table_lines():
    lines = family_best_lines(SimpleNamespace(convex=True, f_star=1.0), ROWS)  # type: ignore[arg-type]
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| family")]
    assert body == [
        "| penalty | **exact-penalty** | +2.0e-12 | 0 | 10 | 1.5 |",
        "| lagrangian | lagrangian (nupi) | +3.0e-03 | 4.0e-08 | 10 | 1.5 |",
        "| projected | **projected** | +1.0e-13 | 7.0e-16 | 10 | 1.5 |",
    ]


def test_overview_across_problems():
    rows = [*ROWS, _row("projected", "projected", -2e-1, 0.0, problem="lin-weight-l1")]
    plan = SimpleNamespace(problems=["lin-weight-affine", "lin-weight-l1", "mlp-synthetic-l1"])  # the MLP: not convex
    lines = family_overview(plan, rows)  # type: ignore[arg-type]
    assert lines[2] == "| problem | penalty | lagrangian | projected |"
    assert lines[4] == (
        "| lin-weight-affine | **exact-penalty: +2.0e-12, 0** | lagrangian (nupi): +3.0e-03, 4.0e-08 | "
        "**projected: +1.0e-13, 7.0e-16** |"
    )
    assert lines[5] == "| lin-weight-l1 | - | - | projected: -2.0e-01, 0 |"
    assert not any("mlp-synthetic-l1" in line for line in lines)
