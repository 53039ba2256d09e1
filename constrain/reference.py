r"""Reference projections: :math:`\min_y \|y - x\|_2^2 \text{ s.t. } y \in C`, row by row.

A reference must not give up on a valid instance, and must not share the kernels' code. Two kinds:

- exact: where the set has one (:meth:`ConstraintSet.exact_projection`): the simplex and the L1
  ball by the sort-based threshold in exact rational arithmetic on the float64 input, rounded once
  to float64 (so it is within half an ulp of the exact projection, whatever the offset or scale of
  the row); the orthant by ``max(x, 0)``.
- cvxpy: every set is a cone or an affine set, so :math:`P_C(x) = s\,P_{C/s}(x/s)`: each row is
  solved at unit scale (``s = max(max|x|, own scale)``) by Clarabel, then polished onto the active
  set and accepted with a KKT certificate; OSQP and Clarabel at tight tolerances are the fallback.
  If none is optimal, :class:`ReferenceSolverError` ("reference unavailable", not a kernel failure).
- certified (polyhedral sets, :func:`certified_projection`): the same exact active-set solve and
  KKT certificate without cvxpy, the first active set proposed by any guess (``constrain validate``
  uses the float64 kernel's answer); :func:`kkt_certificate` checks a candidate on its own.

cvxpy is imported on first use, so ``import constrain`` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from constrain._checks import check_choice, check_tensor

if TYPE_CHECKING:  # pragma: no cover
    from constrain.sets import ConstraintSet

#: Solver settings for the reference: tight enough that the reference is the more exact side.
OSQP_OPTIONS = {"eps_abs": 1e-12, "eps_rel": 1e-12, "max_iter": 400_000, "polishing": True}
CLARABEL_OPTIONS = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "max_iter": 500}
#: Clarabel settings for finding the active set; the polish below, not this tolerance, makes the reference exact.
ACTIVE_SET_OPTIONS = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 200}
#: KKT residual (at unit scale) below which a polished reference is accepted as exact.
POLISH_TOL = 1e-11
#: Active-set corrections tried before the polish gives up.
POLISH_ROUNDS = 20


class ReferenceSolverError(RuntimeError):
    """cvxpy could not solve a reference projection to optimality."""


def solve_projection(constraint_set: ConstraintSet, x: np.ndarray) -> np.ndarray:
    """Solve one projection ``argmin ||y - x||^2, y in constraint_set`` for a 1-d ``x``."""
    import cvxpy as cp

    own = float(constraint_set.own_scale(torch.from_numpy(x).reshape(1, -1)).max())
    scale = max(float(np.max(np.abs(x))) if x.size else 0.0, own)
    scale = scale if scale > 0 else 1.0
    scaled_set = constraint_set.scaled(1.0 / scale)
    y = cp.Variable(x.shape[0])
    problem = cp.Problem(cp.Minimize(cp.sum_squares(y - x / scale)), scaled_set.cvxpy_constraint(y))
    polished = _polished_solution(problem, y)
    if polished is not None:
        return np.asarray(polished, dtype=np.float64) * scale
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


def _polished_solution(problem: Any, var: Any) -> np.ndarray | None:
    r"""Clarabel on cvxpy's conic form, then an exact active-set polish certified by the KKT conditions.

    The conic form is :math:`\min \tfrac12 z^\top P z + c^\top z` s.t. :math:`A z + s = b`,
    :math:`s \in \{0\}^{m_0} \times \mathbb{R}_+^{m_1}`. An interior-point solution misses the exact
    point by about its tolerance, and by more on large or degenerate inputs, but it tells which
    inequalities are active (dual above slack). The polish (as OSQP's) solves the KKT system of that
    active set :math:`\mathcal{A}` exactly: :math:`P z + c + A_{\mathcal{A}}^\top \lambda = 0`,
    :math:`A_{\mathcal{A}} z = b_{\mathcal{A}}`; it then adds violated inequalities and drops active
    ones with :math:`\lambda < 0` until the point is primal feasible, dual feasible and stationary to
    ``POLISH_TOL``: a certificate of optimality that owes nothing to the kernels under test.
    Returns the variable's value, or None (no certificate, a non-polyhedral cone, a solver failure).
    """
    import cvxpy as cp
    import scipy.sparse as sp

    try:
        data, chain, inverse = problem.get_problem_data(cp.CLARABEL)
        dims = data["dims"]
        if dims.exp or dims.soc or dims.psd or dims.p3d:
            return None
        if data.get("lower_bounds") is not None or data.get("upper_bounds") is not None:
            return None
        raw = chain.solve_via_data(problem, data, warm_start=False, verbose=False, solver_opts=dict(ACTIVE_SET_OPTIONS))
    except (cp.error.SolverError, ValueError, AttributeError):
        return None
    c = np.asarray(data["c"], dtype=np.float64)
    n = c.shape[0]
    offsets = [
        inv.var_offsets[var.id]
        for inv in inverse
        if getattr(inv, "x_length", None) == n and var.id in getattr(inv, "var_offsets", {})
    ]
    m0, m1 = dims.zero, dims.nonneg
    if not offsets or raw.x is None or len(raw.x) != n or len(raw.s) != m0 + m1:
        return None
    P = sp.csc_matrix(data["P"]) if data.get("P") is not None else sp.csc_matrix((n, n))
    P = (sp.triu(P) + sp.triu(P, 1).T).tocsr()  # cvxpy may hand over the upper triangle only
    A, b = sp.csr_matrix(data["A"]), np.asarray(data["b"], dtype=np.float64)
    slack, dual = np.asarray(raw.s, dtype=np.float64), np.asarray(raw.z, dtype=np.float64)
    # Guesses of the active inequalities: the dual above the slack (complementarity), then small
    # slacks only (an entry of the projection below the interior-point accuracy reads as active
    # by its dual). Each guess is corrected and must end with the certificate.
    for guess in (dual[m0:] > slack[m0:], slack[m0:] <= 1e-9, slack[m0:] <= 1e-6):
        active = np.r_[np.ones(m0, dtype=bool), guess]
        polished = _polish(P, c, A, b, m0, active)
        if polished is not None:
            z = polished[0]
            return z[offsets[-1] : offsets[-1] + var.size].reshape(var.shape)
    return None


def _polish(P: Any, c: np.ndarray, A: Any, b: np.ndarray, m0: int, active: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Active-set corrections from ``active``: the certified KKT point and its multipliers (one per row of
    ``A``, zero on the inactive rows), or None."""
    for _ in range(POLISH_ROUNDS):
        solved = _solve_kkt(P, c, A[active], b[active])
        if solved is None:
            return None
        z, lam = solved
        gap = b - A @ z  # the slack s = b - A z: zero on equalities, >= 0 on inequalities
        multipliers = np.zeros(A.shape[0])
        multipliers[active] = lam
        ineq_dual = multipliers[m0:]
        add = ~active[m0:] & (gap[m0:] < -POLISH_TOL)
        drop = active[m0:] & (ineq_dual < -POLISH_TOL)
        if not add.any() and not drop.any():
            return z, multipliers
        active[m0:] |= add
        active[m0:] &= ~drop
    return None


def _solve_kkt(P: Any, c: np.ndarray, A: Any, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    r"""Solve :math:`[P, A^\top; A, 0] [z; \lambda] = [-c; b]` to machine precision, or return None.

    The quasi-definite regularization :math:`[P + \delta I, A^\top; A, -\delta I]` has an
    :math:`LDL^\top` factorization (qdldl, as in OSQP) even when rows of ``A`` are dependent;
    iterative refinement against the unregularized matrix removes the :math:`\delta` bias. It
    converges at the rate :math:`\delta / (\sigma_{\min}(A)^2 + \delta)`, so an ill-conditioned
    ``A`` is retried with a smaller :math:`\delta`. Accepted when the constraint residual
    :math:`|A z - b|` is below ``POLISH_TOL`` and the stationarity residual is at rounding level
    relative to the terms it sums, ``POLISH_TOL * (1 + |c| + |A^T| |lambda|)`` (large multipliers
    of nearly dependent rows cannot be summed more exactly).
    """
    n, k = P.shape[0], A.shape[0]
    AT = A.T.tocsr()
    magnitude_T = abs(AT)
    rhs = np.r_[-c, b]
    for delta in (1e-10, 1e-13):
        factor = _regularized_factor(P, A, delta)
        if factor is None:
            continue
        sol, best, best_sol = np.zeros(n + k), np.inf, None
        for _ in range(60):
            residual = rhs - np.r_[P @ sol[:n] + AT @ sol[n:], A @ sol[:n]]  # the KKT matrix times sol, unassembled
            # residual relative to the terms it sums (stationarity rows) or absolute (constraint rows)
            relative = (np.abs(residual) / np.r_[1.0 + np.abs(c) + magnitude_T @ np.abs(sol[n:]), np.ones(k)]).max(initial=0.0)
            if not np.isfinite(relative) or relative > 0.5 * best:
                break  # rounding level reached, or stagnation: keep the best iterate
            best, best_sol = relative, sol
            if relative <= 1e-16:
                break
            sol = sol + factor(residual)
        if best_sol is not None and best <= POLISH_TOL:
            return best_sol[:n], best_sol[n:]
    return None


#: Largest number of constraint rows for the dense Schur-complement factorization of a diagonal ``P``.
DENSE_SCHUR_MAX_ROWS = 4000


def _regularized_factor(P: Any, A: Any, delta: float) -> Callable[[np.ndarray], np.ndarray] | None:
    r"""A solver of :math:`[P + \delta I, A^\top; A, -\delta I] [u; v] = [r_1; r_2]`, or None if it cannot factorize.

    A positive diagonal ``P`` (every projection, Euclidean or weighted) with at most ``DENSE_SCHUR_MAX_ROWS`` rows
    in ``A``: :math:`v = S^{-1} (A D^{-1} r_1 - r_2)`, :math:`u = D^{-1} (r_1 - A^\top v)` with
    :math:`D = P + \delta I` and the dense Cholesky factor of :math:`S = A D^{-1} A^\top + \delta I` (positive
    definite even for dependent rows). Otherwise qdldl's sparse :math:`LDL^\top` of the whole matrix.
    """
    import scipy.linalg
    import scipy.sparse as sp

    n, k = P.shape[0], A.shape[0]
    diagonal = P.diagonal()
    if sp.csr_matrix(P).count_nonzero() == np.count_nonzero(diagonal) and (diagonal > 0).all() and k <= DENSE_SCHUR_MAX_ROWS:
        inverse = 1.0 / (diagonal + delta)
        A = sp.csr_matrix(A)
        if A.nnz > 0.05 * k * n:  # a dense A: BLAS, not sparse products with dense fill
            A = A.toarray()
        scaled = A * inverse[None, :] if isinstance(A, np.ndarray) else A.multiply(inverse[None, :]).tocsr()  # A D^-1
        product = scaled @ A.T
        schur = (product if isinstance(product, np.ndarray) else product.toarray()) + delta * np.eye(k)
        try:
            cholesky = scipy.linalg.cho_factor(schur) if k else None
        except np.linalg.LinAlgError:
            return None

        def solve(r: np.ndarray) -> np.ndarray:
            r1, r2 = r[:n], r[n:]
            v = scipy.linalg.cho_solve(cholesky, scaled @ r1 - r2) if k else np.zeros(0)
            return np.r_[inverse * (r1 - A.T @ v), v]

        return solve
    import qdldl

    kkt = sp.bmat([[P, A.T], [A, None]], format="csc")
    try:
        return qdldl.Solver((kkt + sp.diags(np.r_[np.full(n, delta), np.full(k, -delta)])).tocsc()).solve
    except (RuntimeError, ValueError):
        return None


# ------------------------------------------------------------------ certified references for polyhedral sets
#: Slack (at unit scale) under which an inequality of the guess starts in the active set.
ACTIVE_GUESS_TOL = 1e-9


@dataclass(frozen=True)
class KKTCertificate:
    r"""The KKT residuals of a candidate :math:`y` for :math:`\min \tfrac12 (y - x)^\top D (y - x)` s.t.
    :math:`A y = b`, :math:`G y \le h`, all at unit scale (``x``, ``y``, ``b``, ``h`` divided by
    :math:`s = \max(\max|x|, \max|y|)`; ``D`` divided by its largest entry).

    - ``primal``: :math:`\max(|A y - b|_\infty, \max(G y - h)_+)`;
    - ``dual``: :math:`\max(-\lambda)_+`, the most negative inequality multiplier;
    - ``stationarity``: :math:`|D (y - x) + A^\top \nu + G^\top \lambda|_i`, each entry divided by the terms it
      sums, :math:`1 + |D x|_i + (|A^\top| |\nu| + |G^\top| |\lambda|)_i` (rounding level is about 1e-16);
    - ``complementarity``: :math:`\max_i \lambda_i (h - G y)_i / \max(1, |\lambda|_\infty)`.

    Passed when all four are at most ``POLISH_TOL``: then :math:`y` is the projection to that accuracy, whatever
    produced it (for a convex problem the KKT conditions are sufficient).
    """

    primal: float
    dual: float
    stationarity: float
    complementarity: float

    @property
    def passed(self) -> bool:
        return max(self.primal, self.dual, self.stationarity, self.complementarity) <= POLISH_TOL  # NaN fails


def kkt_certificate(
    x: np.ndarray,
    y: np.ndarray,
    A: Any = None,
    b: np.ndarray | None = None,
    G: Any = None,
    h: np.ndarray | None = None,
    multipliers: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> KKTCertificate:
    r"""Check that the 1-d ``y`` is the projection of ``x`` onto :math:`\{A y = b, G y \le h\}` (metric
    ``diag(weights)``, default the identity): the residuals of :class:`KKTCertificate`.

    ``multipliers`` (:math:`[\nu; \lambda]`, one per row of ``A`` then of ``G``): given, they are checked as
    they are; None, they are recovered by least squares from the stationarity condition on the rows of ``G``
    within ``POLISH_TOL`` of equality (the active set; :math:`\lambda = 0` elsewhere). ``A``, ``G``: dense
    arrays or scipy sparse matrices; rows of ``h`` that are infinite are ignored.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = x.shape[0]
    s = max(float(np.abs(x).max(initial=0.0)), float(np.abs(y).max(initial=0.0))) or 1.0
    d = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64) / float(np.max(weights))
    me = 0 if A is None else A.shape[0]
    M, rhs, finite = _stacked(A, b, G, h)
    M, rhs = M[finite], rhs[finite] / s
    xs, ys = x / s, y / s
    residual = M @ ys - rhs  # = 0 on equalities, <= 0 on inequalities
    ineq = np.arange(M.shape[0]) >= int(finite[:me].sum())
    primal = max(float(np.abs(residual[~ineq]).max(initial=0.0)), float(residual[ineq].max(initial=0.0)))
    target = d * (xs - ys)  # stationarity: M^T mu = D (x - y)
    if multipliers is None:
        mu = np.zeros(M.shape[0])
        use = ~ineq | (residual >= -POLISH_TOL)
        dense = M[use].toarray() if hasattr(M, "toarray") else np.asarray(M[use])
        if use.any():
            mu[use] = np.linalg.lstsq(dense.T, target, rcond=None)[0]
    else:
        mu = np.asarray(multipliers, dtype=np.float64)[finite]
    lam = mu[ineq]
    stationarity_residual = target - M.T @ mu
    summed = 1.0 + np.abs(d * xs) + abs(M).T @ np.abs(mu)
    return KKTCertificate(
        primal=primal,
        dual=float(np.maximum(-lam, 0.0).max(initial=0.0)),
        stationarity=float((np.abs(stationarity_residual) / summed).max(initial=0.0)),
        complementarity=float((np.abs(lam * residual[ineq])).max(initial=0.0) / max(1.0, float(np.abs(lam).max(initial=0.0)))),
    )


def _stacked(A: Any, b: np.ndarray | None, G: Any, h: np.ndarray | None) -> tuple[Any, np.ndarray, np.ndarray]:
    """``[A; G]`` (sparse CSR), ``[b; h]`` and the mask of its finite right-hand sides."""
    import scipy.sparse as sp

    blocks = [sp.csr_matrix(M) for M in (A, G) if M is not None]
    sides = [np.asarray(v, dtype=np.float64).reshape(-1) for v in (b, h) if v is not None]
    if len(blocks) != len(sides):
        raise ValueError("give b with A and h with G.")
    M = sp.vstack(blocks, format="csr")
    rhs = np.concatenate(sides)
    if rhs.shape[0] != M.shape[0]:
        raise ValueError(f"[A; G] has {M.shape[0]} rows but [b; h] has {rhs.shape[0]} entries.")
    return M, rhs, np.isfinite(rhs)


def certified_row(
    x: np.ndarray,
    guess: np.ndarray,
    A: Any = None,
    b: np.ndarray | None = None,
    G: Any = None,
    h: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray | None:
    r"""The projection of the 1-d ``x`` onto :math:`\{A y = b, G y \le h\}` (metric ``diag(weights)``), solved
    exactly on an active set and accepted only with a passed :func:`kkt_certificate`; None without one.

    ``guess`` (any approximation of the answer, e.g. the kernel's) only proposes the first active set: the
    inequalities it meets within ``ACTIVE_GUESS_TOL``. The KKT system of that set is solved in float64 with
    iterative refinement, violated inequalities are added and negative multipliers dropped (as the cvxpy
    reference's polish does), and the final point and multipliers are checked: a wrong guess can cost a
    certificate, never give a wrong reference.
    """
    import scipy.sparse as sp

    x, guess = np.asarray(x, dtype=np.float64), np.asarray(guess, dtype=np.float64)
    n = x.shape[0]
    s = max(float(np.abs(x).max(initial=0.0)), float(np.nan_to_num(np.abs(guess)).max(initial=0.0))) or 1.0
    M, rhs, finite = _stacked(A, b, G, h)
    M, rhs = M[finite], rhs[finite] / s
    me = int(finite[: 0 if A is None else A.shape[0]].sum())
    d = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64) / float(np.max(weights))
    active = np.ones(M.shape[0], dtype=bool)
    with np.errstate(invalid="ignore"):
        active[me:] = (M[me:] @ (guess / s)) >= rhs[me:] - ACTIVE_GUESS_TOL  # NaN guess: nothing active
    polished = _polish(sp.diags(d, format="csr"), -d * x / s, M, rhs, me, active)
    if polished is None:
        return None
    z, mu = polished
    full = np.zeros(finite.shape[0])
    full[finite] = mu
    if not kkt_certificate(x / s, z, A, None if b is None else b / s, G, None if h is None else h / s, full, d).passed:
        return None
    return z * s


def certified_projection(constraint_set: ConstraintSet, x: Tensor, guess: Tensor, weights: Tensor | None = None) -> Tensor:
    r"""Every row of ``x`` projected onto a polyhedral set (``Affine``, ``Polyhedron``, ``Box``) by
    :func:`certified_row`, ``guess`` (same shape) proposing the active sets; float64 on ``x``'s device.

    ``weights`` (same shape, positive): the metric :math:`\sum_i d_i (y_i - x_i)^2` instead of the Euclidean one.
    Raises :class:`ReferenceSolverError` naming the first row without a certificate, TypeError for other sets.
    """
    n = x.shape[-1]
    A, G = _linear_parts(constraint_set, n)
    rows = x.detach().to("cpu", torch.float64).reshape(-1, n)
    guesses = guess.detach().to("cpu", torch.float64).reshape(-1, n).numpy()
    d = None if weights is None else weights.detach().to("cpu", torch.float64).reshape(-1, n).numpy()
    zeros = torch.zeros_like(rows)  # the right-hand sides: A 0 - b and G 0 - h, one row each
    b = None if A is None else (-constraint_set.equality(zeros)).reshape(-1, A.shape[0]).numpy()  # type: ignore[operator]  # a set with A has equalities
    h = None if G is None else (-constraint_set.inequality(zeros)).reshape(-1, G.shape[0]).numpy()  # type: ignore[operator]  # a set with G has inequalities
    out = np.empty(rows.shape)
    for i, row in enumerate(rows.numpy()):
        y = certified_row(
            row, guesses[i], A, None if b is None else b[i], G, None if h is None else h[i], None if d is None else d[i]
        )
        if y is None:
            raise ReferenceSolverError(f"row {i}: no KKT certificate from the active set of the guess (nor its corrections).")
        out[i] = y
    return torch.from_numpy(out).reshape(x.shape).to(x.device)


def _linear_parts(constraint_set: ConstraintSet, n: int) -> tuple[Any, Any]:
    """``(A, G)`` of a polyhedral set on rows of length ``n`` as scipy sparse matrices (None where absent), in
    the row order of its ``equality`` and ``inequality``; TypeError for any other set."""
    import scipy.sparse as sp

    from constrain import Affine, Box, Polyhedron

    if isinstance(constraint_set, Affine):
        return sp.csr_matrix(constraint_set.A.cpu().numpy()), None
    if isinstance(constraint_set, Polyhedron):
        A, G = constraint_set.A, constraint_set.G
        return (None if A is None else sp.csr_matrix(A.cpu().numpy())), (None if G is None else sp.csr_matrix(G.cpu().numpy()))
    if isinstance(constraint_set, Box):
        eye = sp.identity(n, format="csr")
        # Box.inequality is [lower - y, y - upper] for the sides it has
        blocks = [block for side, block in ((constraint_set.lower, -eye), (constraint_set.upper, eye)) if side is not None]
        return None, sp.vstack(blocks, format="csr")
    raise TypeError(f"certified_projection handles Affine, Polyhedron and Box sets, not {type(constraint_set).__name__}.")


def exact_simplex(x: np.ndarray, radius: float) -> np.ndarray:
    r"""The projection of the 1-d float64 ``x`` onto :math:`\{y \ge 0, \sum_i y_i = r\}`, computed exactly.

    With :math:`u` the entries sorted in decreasing order and :math:`S_k = \sum_{i \le k} u_i`, the
    support size is the largest :math:`K` with :math:`k u_k - S_k + r > 0`, the threshold
    :math:`\tau = (S_K - r) / K`, and :math:`y = \max(x - \tau, 0)` (Held et al. 1974; Duchi et al.
    2008). Every float is an integer times a power of two, so on the common grid :math:`2^{e_0}`
    the sums and the test are integer arithmetic (no rounding, no cancellation, any offset), and
    each output is one correctly rounded integer division.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or not x.size or not np.isfinite(x).all() or not (math.isfinite(radius) and radius > 0):
        raise ValueError("exact_simplex needs a non-empty finite 1-d x and a positive finite radius.")
    # Equal entries fall in or out of the support together (the test is constant over a run of equal u_k:
    # at its first k, (k - 1) u - S_{k-1} + r, and each further equal entry adds u to both terms), so the
    # loops run over the distinct values, largest first (a row of one repeated value costs one step).
    levels, where, counts = np.unique(x, return_inverse=True, return_counts=True)
    mantissa, exponent = _integer_parts(np.append(levels, radius))
    e0 = int(exponent[mantissa != 0].min())  # the finest grid: every value is an integer multiple of 2**e0

    def integer(i: int) -> int:  # value i exactly, in units of 2**e0
        m = int(mantissa[i])
        return m << int(exponent[i] - e0) if m else 0

    r_int = integer(levels.size)
    support, total, kept = 0, 0, levels.size  # K, S_K, and the first level in the support
    for level in range(levels.size - 1, -1, -1):
        u, count = integer(level), int(counts[level])
        if support * u - total + r_int <= 0:
            break  # the test holds exactly for k = 1..K and fails after
        support, total, kept = support + count, total + count * u, level
    shift, denominator = total - r_int, support << max(-e0, 0)  # tau = shift * 2**e0 / K
    scale = 1 << max(e0, 0)
    values = np.zeros(levels.size)
    for level in range(kept, levels.size):
        values[level] = (integer(level) * support - shift) * scale / denominator  # int / int: correctly rounded
    return values[where.reshape(-1)]


def exact_l1_ball(x: np.ndarray, radius: float) -> np.ndarray:
    r"""The projection of the 1-d float64 ``x`` onto :math:`\{\|y\|_1 \le r\}`, computed exactly:
    ``x`` itself inside (tested in integer arithmetic), else :math:`\operatorname{sign}(x)\,P_\Delta(|x|)`."""
    x = np.asarray(x, dtype=np.float64)
    magnitude = np.abs(x)
    if _exact_sum(magnitude) <= Fraction(radius):
        return x.copy()
    return np.sign(x) * exact_simplex(magnitude, radius)


def _integer_parts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values = mantissa * 2**exponent`` exactly, with int64 mantissas below 2**53 in magnitude."""
    fraction, exponent = np.frexp(values)
    return (fraction * 2.0**53).astype(np.int64), exponent.astype(np.int64) - 53


def _exact_sum(x: np.ndarray) -> Fraction:
    """The exact sum of float64 values: the int64 mantissas summed per exponent (in two 26-bit
    halves, so that no partial sum overflows), then combined as Python integers."""
    mantissa, exponent = _integer_parts(np.asarray(x, dtype=np.float64).reshape(-1))
    if not mantissa.any():
        return Fraction(0)
    e0 = int(exponent[mantissa != 0].min())
    levels, where = np.unique(exponent, return_inverse=True)
    high, low = np.zeros(levels.size, np.int64), np.zeros(levels.size, np.int64)
    np.add.at(high, where, mantissa >> 26)
    np.add.at(low, where, mantissa & ((1 << 26) - 1))
    total = sum(((int(h) << 26) + int(lo)) << int(e - e0) for h, lo, e in zip(high, low, levels, strict=True) if h or lo)
    return Fraction(total) * Fraction(2) ** e0


def reference_projection(constraint_set: ConstraintSet, x: Tensor, method: str = "auto") -> Tensor:
    """Project every row of ``x`` (shape ``(..., n)``); returns float64 on ``x``'s device.

    ``method``: ``"auto"`` uses the set's exact projection where it has one and cvxpy otherwise;
    ``"cvxpy"`` always solves with cvxpy (to check the two references against each other).
    Raises :class:`ReferenceSolverError` if cvxpy cannot solve a row (the exact ones cannot fail).
    """
    check_choice("method", method, ("auto", "cvxpy"))
    x = check_tensor(x)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension.")
    exact = constraint_set.exact_projection(x) if method == "auto" else None
    if exact is not None:
        return exact
    rows = x.detach().to("cpu", torch.float64).reshape(-1, x.shape[-1]).numpy()
    # row_sets repeats one set forever when the parameters are shared: the rows decide the length
    solved = [solve_projection(row_set, row) for row_set, row in zip(constraint_set.row_sets(x), rows, strict=False)]
    out = np.stack(solved) if solved else np.zeros_like(rows)
    return torch.from_numpy(out).reshape(x.shape).to(x.device)
