r"""cvxpy reference projections: :math:`\min_y \|y - x\|_2^2 \text{ s.t. } y \in C`, row by row.

A reference is only as exact as its solver. Every set here is a cone or an affine set, so
:math:`P_C(x) = s\,P_{C/s}(x/s)`: each row is solved at unit scale (``s = max|x|``), with OSQP at
tight tolerances and its solution polished onto the active set; Clarabel is the fallback.
cvxpy is imported on first use, so ``import constrain`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from constrain._checks import check_tensor

if TYPE_CHECKING:  # pragma: no cover
    from constrain.sets import ConstraintSet

#: Solver settings for the reference: tight enough that the reference is the more exact side.
OSQP_OPTIONS = {"eps_abs": 1e-12, "eps_rel": 1e-12, "max_iter": 400_000, "polishing": True}
CLARABEL_OPTIONS = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "max_iter": 500}


class ReferenceSolverError(RuntimeError):
    """cvxpy could not solve a reference projection to optimality."""


def solve_projection(constraint_set: "ConstraintSet", x: np.ndarray) -> np.ndarray:
    """Solve one projection ``argmin ||y - x||^2, y in constraint_set`` for a 1-d ``x``."""
    import cvxpy as cp

    scale = float(np.max(np.abs(x))) if x.size else 1.0
    scale = scale if scale > 0 else 1.0
    scaled_set = constraint_set.scaled(1.0 / scale)
    y = cp.Variable(x.shape[0])
    problem = cp.Problem(cp.Minimize(cp.sum_squares(y - x / scale)), scaled_set.cvxpy_constraint(y))
    for solver, options in ((cp.OSQP, OSQP_OPTIONS), (cp.CLARABEL, CLARABEL_OPTIONS)):
        try:
            problem.solve(solver=solver, **options)
        except cp.error.SolverError:
            continue
        if problem.status == cp.OPTIMAL and y.value is not None:
            return np.asarray(y.value, dtype=np.float64) * scale
    raise ReferenceSolverError(
        f"cvxpy could not project onto {constraint_set!r} (last status: {problem.status}); "
        "the input may be too ill-conditioned for the reference solvers."
    )


def reference_projection(constraint_set: "ConstraintSet", x: Tensor) -> Tensor:
    """Project every row of ``x`` (shape ``(..., n)``) with cvxpy; returns float64 on ``x``'s device."""
    x = check_tensor(x)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension.")
    rows = x.detach().to("cpu", torch.float64).reshape(-1, x.shape[-1]).numpy()
    row_sets = constraint_set.row_sets(x)
    solved = [solve_projection(row_set, row) for row_set, row in zip(row_sets, rows)]
    out = np.stack(solved) if solved else np.zeros_like(rows)
    return torch.from_numpy(out).reshape(x.shape).to(x.device)
