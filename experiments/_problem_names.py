"""The names of the study problems, importable without torch: the command line checks a ``--problems``
name before it loads anything heavy (:mod:`experiments.problems` builds the problems themselves)."""

from __future__ import annotations

from collections.abc import Sequence

#: The linear-regression problems with a cvxpy optimum.
CONVEX_PROBLEMS = ("lin-output-l1", "lin-output-nonneg", "lin-weight-nonneg", "lin-weight-affine", "lin-weight-l1")
#: The MLP problems (no known optimum).
MLP_PROBLEMS = ("mlp-synthetic-l1", "mlp-diabetes-nonneg")
#: Every problem, in the order of :data:`experiments.problems.PROBLEMS`.
PROBLEM_NAMES = (*CONVEX_PROBLEMS, *MLP_PROBLEMS)


def unknown_problems(names: Sequence[str]) -> str | None:
    """The error message for the ``names`` that are no problem (listing the problems), or None if all are."""
    unknown = [name for name in names if name not in PROBLEM_NAMES]
    return f"unknown problem(s) {', '.join(unknown)}; problems: {', '.join(PROBLEM_NAMES)}." if unknown else None


__all__ = ["CONVEX_PROBLEMS", "MLP_PROBLEMS", "PROBLEM_NAMES", "unknown_problems"]
