r"""``constrain validate``: every projection kernel against a reference, on random and adversarial inputs.

For each set (L1 ball, simplex, orthant, affine ``A w = c``, weight tying, and rows with a large
common offset onto the L1 ball and the simplex) and size ``n``, the generators below build
instances: batches of rows ``x`` (float64 values exactly representable in float32, so float32 and
float64 kernels see the same problem), one constraint set each. Every row is projected by the
kernel (``set.project``) in float32 and in float64 and by a reference that shares no code with
it: the set's ``exact_projection`` where it has one (the L1 ball and the simplex in exact rational
arithmetic, the orthant); for the polyhedral sets (affine, tie, polyhedron, box, affine-metric) the
certified KKT point (:func:`constrain.reference.certified_projection`: the KKT system of an active
set solved exactly in float64, the active set proposed by the float64 kernel and corrected, the
answer accepted only with a passed KKT certificate, which proves optimality whoever proposed the
active set), and up to ``CVXPY_CHECK_MAX_N`` cvxpy on the first row of every instance as well; else
cvxpy (``set.reference_projection(x, method="cvxpy")``: Clarabel plus the same KKT-certified
active-set polish). A row without a certificate falls back to cvxpy; an instance that the cvxpy
reference cannot solve is reported as "reference unavailable", not as a kernel failure.

Per row, with the instance scale :math:`s`,

.. math:: \text{error} = \max_i |P(x)_i - P_{\text{ref}}(x)_i| / s, \qquad
          \text{violation} = \operatorname{violation}_C(P(x)) / s,

:math:`s = \max(\max_i |x_i|, r)`, where :math:`r` is the radius (L1 ball, simplex; per row when
the radius is a tensor), :math:`\max_i |(A^+ c)_i|` (affine sets: the size of their least-norm
point) or 0 (orthant), and :math:`s = 1` where that is 0. A row passes when its error is at most
``TOLERANCE[dtype]`` (1e-6 in float64, 1e-4 in float32). Offset rows (``randn + c``, ``|c|`` up to
1e8) are measured against the radius instead, :math:`s = r`, and pass at ``OFFSET_TOLERANCE``
(1e-5) in both dtypes: their exact answer has entries of order :math:`r` whatever :math:`c` is.
The violation is reported but not part
of the verdict: for affine sets it is :math:`|A y - c|`, which an error :math:`e` moves by up to
:math:`e \max_i \|A_i\|_1`, so it grows with the row norms of ``A`` (about 8e4 for a Gaussian
``A`` at n = 1e5, where float32 shows a violation of about 4e-4 at an error of 5e-8).

The generators (:func:`instances`) and the check (:func:`check_instance`) are plain functions so
that the tests can run them at small sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from constrain import (
    Affine,
    Box,
    ConstraintSet,
    L1Ball,
    NonNegative,
    Polyhedron,
    ReferenceSolverError,
    Simplex,
)
from constrain.reference import certified_projection, solve_projection
from experiments._args import positive_int
from experiments._paths import check_output_file
from experiments._runner import fork_on_linux as _start_method  # a module name: tests patch it

#: Set names accepted by ``--sets``, in table order. The offset sets are rows ``randn + c`` with
#: ``|c|`` up to 1e8 onto the L1 ball and the simplex, errors relative to the radius; the metric sets
#: are projections in a diagonal metric ``||.||_D`` (see :func:`check_metric`).
SET_NAMES = (
    "l1ball",
    "simplex",
    "nonnegative",
    "affine",
    "tie",
    "polyhedron",
    "box",
    "l1ball-offset",
    "simplex-offset",
    "l1ball-metric",
    "affine-metric",
)
OFFSET_SETS = ("l1ball-offset", "simplex-offset")
#: Sizes of the default run; ``--max-n`` drops the larger ones.
DEFAULT_SIZES = (1, 2, 5, 64, 1000, 100_000)
#: From this size on, an instance is one row and only the ``LARGE_KINDS`` are generated.
LARGE_N = 10_000
LARGE_KINDS = ("random",)
#: Pass threshold on the relative error, per dtype.
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}
#: Pass threshold of the offset rows, relative to the radius, in both dtypes.
OFFSET_TOLERANCE = 1e-5
DTYPES = (torch.float32, torch.float64)

SCALE_NOTE = (
    "error = max_i |P(x)_i - P_ref(x)_i| / s and violation = set.violation(P(x)) / s, per row (max over rows shown);\n"
    "s = max(max_i |x_i|, r): r = radius (l1ball, simplex), max_i |(A^+ c)_i| (affine, tie), 0 (nonnegative); "
    "s = 1 if that is 0.\n"
    "P = set.project (the kernel, in the row's dtype), P_ref = the reference (column ref): exact = the set's\n"
    "exact_projection (l1ball, simplex: sort-based threshold in exact rational arithmetic; nonnegative: max(x, 0));\n"
    "kkt = every row's KKT system solved exactly on an active set (proposed by the float64 kernel, corrected until\n"
    "feasible with multipliers >= 0) and accepted only with a passed KKT certificate (affine, tie, polyhedron, box,\n"
    "affine-metric), and up to n = 64 the first row of each instance (every row for affine-metric) also against\n"
    "cvxpy; cvxpy = Clarabel polished onto the active set with a KKT certificate (l1ball-metric: Clarabel alone).\n"
    "Metric rows (sum d (y - x)^2, d over four decades): s = max_i |x_i|, pass at 10x the tolerance below.\n"
    "pass: error <= 1e-6 (float64), <= 1e-4 (float32). The violation is reported, not thresholded: for affine sets\n"
    "it is |A y - c|, which an error e moves by up to e * max_i ||A_i||_1 (about 8e4 * e for a Gaussian A at n = 1e5).\n"
    "Offset rows (l1ball-offset, simplex-offset: randn + c, |c| = 1 to 1e8 of either sign, r from 1e-2 to 1e2):\n"
    "s = r, pass: error <= 1e-5 in both dtypes. A reference that cannot solve an instance is reported as\n"
    "unavailable, apart from kernel failures; the exit status counts kernel failures only."
)


@dataclass
class Instance:
    """One batch of rows ``x`` (float64, shape ``(rows, n)``, float32-representable) and its set."""

    set_name: str
    kind: str
    constraint: ConstraintSet
    x: Tensor

    @property
    def n(self) -> int:
        return int(self.x.shape[-1])

    @property
    def offset(self) -> bool:
        """Offset rows: errors relative to the radius, one threshold for both dtypes."""
        return self.set_name in OFFSET_SETS


@dataclass
class Outcome:
    """The worst row of one instance in one dtype."""

    set_name: str
    kind: str
    n: int
    dtype: str
    rows: int
    error: float
    violation: float
    passed: bool
    note: str = ""
    #: ``"exact"`` or ``"cvxpy"``: which reference was compared; ``"unavailable"`` if none could solve it.
    reference: str = "exact"


# --------------------------------------------------------------------------------------------
# instance generators: one function per (set, kind), (rng, n, rows) -> (x, set)

Made = tuple[np.ndarray, ConstraintSet]
Generator = Callable[[np.random.Generator, int, int], Made]


def _f32(a: np.ndarray | float) -> np.ndarray:
    """Round to float32 and back: the value both dtypes hold exactly."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def _rows(set_name: str, n: int) -> int:
    """Rows per instance: two at small n, one from n = 1000 on (the cvxpy reference solves row by row);
    always two for the offset sets (``+|c|`` and ``-|c|``; their reference is the exact one)."""
    return 2 if n <= 64 or set_name in OFFSET_SETS else 1


def _log_uniform(rng: np.random.Generator, low: float, high: float, size: int | tuple | None = None) -> np.ndarray:
    return 10.0 ** rng.uniform(math.log10(low), math.log10(high), size)


def _radius_set(name: str, radius: float | np.ndarray) -> ConstraintSet:
    """``L1Ball`` or ``Simplex``; an array radius becomes a per-row tensor radius."""
    cls = L1Ball if name == "l1ball" else Simplex
    if isinstance(radius, np.ndarray) and radius.ndim:
        return cls(torch.from_numpy(_f32(radius)))
    return cls(float(_f32(float(radius))))


def _radius_random(name: str, rng: np.random.Generator, n: int, rows: int) -> Made:
    """Gaussian rows of mixed scales, one radius: some rows inside, some outside."""
    x = rng.standard_normal((rows, n)) * _log_uniform(rng, 0.1, 10, (rows, 1))
    return x, _radius_set(name, _log_uniform(rng, 0.1, 10))


def _radius_per_sample(name: str, rng: np.random.Generator, n: int, rows: int) -> Made:
    """One radius per row, rows and radii spanning six decades."""
    scales = _log_uniform(rng, 1e-3, 1e3, (rows, 1))
    x = rng.standard_normal((rows, n)) * scales
    return x, _radius_set(name, np.abs(x).sum(1) * rng.uniform(0.02, 1.5, rows) + 1e-3 * scales[:, 0])


def _radius_ties(name: str, rng: np.random.Generator, n: int, rows: int) -> Made:
    """Equal magnitudes with random signs; then rows with few distinct levels."""
    level = float(_f32(_log_uniform(rng, 0.1, 10)))
    x = level * rng.choice([-1.0, 1.0], (rows, n))
    x[rows // 2 :] = level * rng.integers(-2, 3, (rows - rows // 2, n))
    return x, _radius_set(name, level * rng.uniform(0.3, 0.9 * n))


def _radius_zeros(name: str, rng: np.random.Generator, n: int, rows: int) -> Made:
    """The zero row, then sparse rows (one entry of 3, a fifth of the rest Gaussian)."""
    x = np.zeros((rows, n))
    for row in range(1, rows):
        mask = rng.random(n) < 0.2
        x[row, mask] = rng.standard_normal(int(mask.sum()))
        x[row, rng.integers(n)] = rng.choice([-3.0, 3.0])
    return x, _radius_set(name, 1.0)


def _radius_inside(name: str, rng: np.random.Generator, n: int, rows: int) -> Made:
    """Rows inside the ball, or on the simplex."""
    radius = float(_f32(_log_uniform(rng, 0.1, 10)))
    if name == "simplex":
        return rng.dirichlet(np.ones(n), rows) * radius, _radius_set(name, radius)
    v = rng.standard_normal((rows, n))
    x = v / np.abs(v).sum(1, keepdims=True) * radius * rng.uniform(0.1, 0.99, (rows, 1))
    return x, _radius_set(name, radius)


def _radius_boundary(name: str, rng: np.random.Generator, n: int, rows: int) -> Made:
    """Small integers with ||x||_1 = r exactly (ball); vertices r e_i (simplex)."""
    if name == "simplex":
        x = np.zeros((rows, n))
        x[np.arange(rows), rng.integers(n, size=rows)] = 2.0
        return x, _radius_set(name, 2.0)
    x = rng.integers(-3, 4, (rows, n)).astype(np.float64)
    x[:, 0] = np.where(x[:, 0] == 0, 1.0, x[:, 0])
    return x, _radius_set(name, np.abs(x).sum(1))


def _radius_scaled(name: str, scale: float, rng: np.random.Generator, n: int, rows: int) -> Made:
    """Inputs of size ``scale``, the radius on the same scale (rows in and out)."""
    x = rng.standard_normal((rows, n)) * scale
    return x, _radius_set(name, np.abs(x).sum(1).mean() * rng.uniform(0.2, 1.2))


def _radius_outlier(name: str, rng: np.random.Generator, n: int, rows: int) -> Made:
    """One entry of 1e3 among entries of 1e-3: the support of the projection is one entry."""
    x = rng.standard_normal((rows, n)) * 1e-3
    x[np.arange(rows), rng.integers(n, size=rows)] = rng.choice([-1e3, 1e3], rows)
    return x, _radius_set(name, 1.0)


def _radius_extreme_radius(name: str, rng: np.random.Generator, n: int, rows: int) -> Made:
    # radius 1e-9 or 1e9 times the row's size: max(x) - r rounds to max(x) (the threshold lands on
    # the largest entry), or the ball is huge and the simplex shifts every entry by about r / n.
    x = rng.standard_normal((rows, n)) * _log_uniform(rng, 0.1, 10, (rows, 1))
    x[0, rng.integers(n)] = 0.0
    factors = np.where(np.arange(rows) % 2 == 0, 1e-9, 1e9)
    return x, _radius_set(name, np.maximum(np.abs(x).sum(1), 1.0) * factors)


def _radius_kinds(name: str) -> dict[str, Generator]:
    """Kinds for the radius sets: the L1 ball and the simplex (the generators below, given the set's name)."""
    simplex = name == "simplex"

    kinds: dict[str, Generator] = {
        "random": partial(_radius_random, name),
        "per-sample": partial(_radius_per_sample, name),
        "ties": partial(_radius_ties, name),
        "zeros": partial(_radius_zeros, name),
        "inside": partial(_radius_inside, name),
        "boundary": partial(_radius_boundary, name),
        "tiny": partial(_radius_scaled, name, 1e-8),
        "huge": partial(_radius_scaled, name, 1e8),
        "outlier": partial(_radius_outlier, name),
        "extreme-radius": partial(_radius_extreme_radius, name),
    }
    if simplex:
        # every entry negative: the projection still sums to r.
        kinds["negative"] = lambda rng, n, rows: (
            -np.abs(rng.standard_normal((rows, n))) - rng.uniform(0, 5),
            _radius_set(name, 1.0),
        )
    return kinds


def _gaussian(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    return rng.standard_normal((rows, n)) * _log_uniform(rng, 0.1, 10, (rows, 1))


def _boundary_orthant(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    x = np.abs(rng.standard_normal((rows, n)))
    x[rng.random((rows, n)) < 0.5] = 0.0
    return x


NONNEGATIVE_KINDS: dict[str, Generator] = {
    "random": lambda rng, n, rows: (_gaussian(rng, n, rows), NonNegative()),
    "ties": lambda rng, n, rows: (rng.choice([-1.5, 1.5], (rows, n)), NonNegative()),
    "zeros": lambda rng, n, rows: (np.zeros((rows, n)), NonNegative()),
    "inside": lambda rng, n, rows: (np.abs(_gaussian(rng, n, rows)), NonNegative()),
    "boundary": lambda rng, n, rows: (_boundary_orthant(rng, n, rows), NonNegative()),
    "negative": lambda rng, n, rows: (-np.abs(_gaussian(rng, n, rows)) - 1.0, NonNegative()),
    "tiny": lambda rng, n, rows: (rng.standard_normal((rows, n)) * 1e-8, NonNegative()),
    "huge": lambda rng, n, rows: (rng.standard_normal((rows, n)) * 1e8, NonNegative()),
}


def _constraint_rows(n: int) -> int:
    """Rows of A: about n / 3, at least 1, at most 64, and 4 at large n (A is stored dense)."""
    return max(1, min(n // 3, 64 if n < LARGE_N else 4))


def feasible_rows(A: np.ndarray, c: np.ndarray, x: np.ndarray) -> np.ndarray:
    r"""Rows of ``x`` moved onto :math:`A w = c`: :math:`x - A^+ (A x - c)` with numpy (independent of constrain)."""
    return x - (x @ A.T - c) @ np.linalg.pinv(A).T


def _random_affine(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    m = _constraint_rows(n)
    return rng.standard_normal((m, n)), rng.standard_normal(m)


def _affine_random(rng, n, rows):
    A, c = _random_affine(rng, n)
    return _gaussian(rng, n, rows), Affine(A, c)


def _affine_zeros(rng, n, rows):
    return np.zeros((rows, n)), Affine(*_random_affine(rng, n))


def _affine_inside(rng, n, rows):
    A, c = _random_affine(rng, n)
    return feasible_rows(A, c, _gaussian(rng, n, rows)), Affine(A, c)


def _affine_rank_deficient(rng, n, rows):
    # A = B C of rank k < m with one row repeated; c = A w, so the system is consistent.
    m = _constraint_rows(n)
    k = max(1, m // 2)
    A = rng.standard_normal((m, k)) @ rng.standard_normal((k, n))
    if m > 1:
        A[-1] = A[0]
    return rng.standard_normal((rows, n)), Affine(A, A @ rng.standard_normal(n))


def _affine_ill_conditioned(rng, n, rows):
    # singular values from 1 down to 1e-3, c = A w. (At condition 1e6 the kernel still matches
    # numpy's pinv, see tests/constrain, but the KKT-polished reference loses digits.)
    m = _constraint_rows(n)
    U, _ = np.linalg.qr(rng.standard_normal((m, m)))
    V, _ = np.linalg.qr(rng.standard_normal((n, m)))
    A = U @ np.diag(np.logspace(0, -3, m)) @ V.T
    return rng.standard_normal((rows, n)), Affine(A, A @ rng.standard_normal(n))


def _affine_tiny(rng, n, rows):
    A, c = _random_affine(rng, n)
    return rng.standard_normal((rows, n)) * 1e-8, Affine(A, c * 1e-8)


def _affine_huge(rng, n, rows):
    A, c = _random_affine(rng, n)
    return rng.standard_normal((rows, n)) * 1e8, Affine(A, c)


AFFINE_KINDS: dict[str, Generator] = {
    "random": _affine_random,
    "zeros": _affine_zeros,
    "inside": _affine_inside,
    "rank-deficient": _affine_rank_deficient,
    "ill-conditioned": _affine_ill_conditioned,
    "tiny": _affine_tiny,
    "huge": _affine_huge,
}


def _tie_shape(n: int) -> tuple[int, ...]:
    """Tie entries of a matrix where n allows one, else of a vector."""
    return (n // 4, 4) if n >= 8 and n % 4 == 0 else (n,)


def _tie_groups(rng: np.random.Generator, n: int) -> tuple[tuple[int, ...], list[list[tuple[int, ...]]]]:
    """Random disjoint groups of 2 to 4 entries (at most 100, fewer at large n: A is dense)."""
    shape = _tie_shape(n)
    order = rng.permutation(n)[: min(n, 400)]
    groups: list[list[tuple[int, ...]]] = []
    start = 0
    while start + 2 <= len(order) and len(groups) < (100 if n < LARGE_N else 10):
        size = int(rng.integers(2, 5))
        group = order[start : start + size]
        start += size
        if len(group) >= 2:
            groups.append([tuple(int(i) for i in np.unravel_index(j, shape)) for j in group])
    return shape, groups


def _tie_kind(make_x: Callable[[np.random.Generator, int, int, tuple, list], np.ndarray]) -> Generator:
    def generate(rng, n, rows):
        shape, groups = _tie_groups(rng, n)
        return make_x(rng, n, rows, shape, groups), Affine.tie(shape, groups)

    return generate


def _tied(rng, n, rows, shape, groups):
    x = _gaussian(rng, n, rows)
    for group in groups:
        flat = [int(np.ravel_multi_index(index, shape)) for index in group]
        x[:, flat] = x[:, flat[:1]]
    return x


TIE_KINDS: dict[str, Generator] = {
    "random": _tie_kind(lambda rng, n, rows, shape, groups: _gaussian(rng, n, rows)),
    "ties": _tie_kind(lambda rng, n, rows, shape, groups: rng.choice([-2.0, 2.0], (rows, n))),
    "zeros": _tie_kind(lambda rng, n, rows, shape, groups: np.zeros((rows, n))),
    "inside": _tie_kind(_tied),
    "tiny": _tie_kind(lambda rng, n, rows, shape, groups: _gaussian(rng, n, rows) * 1e-8),
    "huge": _tie_kind(lambda rng, n, rows, shape, groups: _gaussian(rng, n, rows) * 1e8),
}


def _offset_kinds(name: str) -> dict[str, Generator]:
    """Rows ``randn + c`` (the first row ``+|c|``, the second ``-|c|``, a single row a random sign),
    and rows of one repeated value; radius log-uniform in [1e-2, 1e2]. The simplex projection does
    not depend on ``c`` and the L1-ball projection is ``sign(x) simplex(|x|)``: entries of order r."""
    base = name.removesuffix("-offset")

    def shifted(offset: float) -> Generator:
        def generate(rng, n, rows):
            signs = np.array([1.0, -1.0]) if rows == 2 else rng.choice([-1.0, 1.0], rows)
            x = rng.standard_normal((rows, n)) + signs[:, None] * offset
            return x, _radius_set(base, _log_uniform(rng, 1e-2, 1e2))

        return generate

    def equal(rng, n, rows):
        # every entry the same value (0.3 for the first row): the answer is r / n on every entry
        values = np.where(np.arange(rows) == 0, 0.3, rng.choice([-1.0, 1.0], rows) * _log_uniform(rng, 1e-1, 1e8, rows))
        return np.repeat(values[:, None], n, 1), _radius_set(base, _log_uniform(rng, 1e-2, 1e2))

    table: dict[str, Generator] = {f"c=1e{k}": shifted(10.0**k) for k in (0, 2, 4, 6, 7, 8)}
    table["equal"] = equal
    return table


# --------------------------------------------------------------------------------------------
# polyhedra {y : A y = b, G y <= h} and boxes, with per-row right-hand sides (issue 10)

#: Largest n of the polyhedron and box instances (the projection factorizes n x n matrices).
POLYHEDRON_MAX_N = 1000


def _polytope(rng: np.random.Generator, n: int, rows: int, me: int, mi: int, per_row: bool = True, slack: float = 1.0):
    """A random polyhedron around feasible points ``y0`` (so that every row's polytope is non-empty):
    ``b = A y0``, ``h = G y0 + slack * u``, one right-hand side per row (``per_row``) or one for all."""
    A = _f32(rng.standard_normal((me, n))) if me else None
    G = _f32(rng.standard_normal((mi, n))) if mi else None
    y0 = rng.standard_normal((rows if per_row else 1, n))
    b = None if A is None else _f32(y0 @ A.T)
    h = None if G is None else _f32(y0 @ G.T + slack * rng.random((y0.shape[0], mi)))
    if not per_row:
        b, h = (None if b is None else b[0]), (None if h is None else h[0])
    return Polyhedron(A, b, G, h), y0


def _sizes(n: int) -> tuple[int, int]:
    """Equalities and inequalities of an instance in dimension n: about n/4 and n/2 (at most 200)."""
    return (min(max(n // 4, 1), n - 1) if n > 1 else 0), min(n // 2 + 1, 200)


def _poly_random(rng, n, rows):
    me, mi = _sizes(n)
    P, _ = _polytope(rng, n, rows, me, mi, per_row=False)
    return 3 * _gaussian(rng, n, rows), P


def _poly_per_sample(rng, n, rows):
    me, mi = _sizes(n)
    P, _ = _polytope(rng, n, rows, me, mi)
    return 3 * _gaussian(rng, n, rows), P


def _poly_redundant(rng, n, rows):
    """Every row of G twice (once scaled by 2), plus implied rows (G_i y <= h_i + 1)."""
    me, mi = _sizes(n)
    P, y0 = _polytope(rng, n, rows, me, mi)
    G, h = P.G.numpy(), P.h.numpy()
    P2 = Polyhedron(P.A, P.b, np.vstack([G, 2 * G, G]), np.hstack([h, 2 * h, h + 1]))
    return 3 * _gaussian(rng, n, rows), P2


def _poly_vertices(rng, n, rows):
    """A cube |y_i| <= 1 cut by random halfspaces; far points land on vertices and edges."""
    cube = np.vstack([np.eye(n), -np.eye(n)])
    extra = _f32(rng.standard_normal((min(n, 50), n)))
    G = np.vstack([cube, extra])
    h = np.hstack([np.ones(2 * n), np.abs(extra).sum(1) * 0.5 + 0.5])
    return 10 * _gaussian(rng, n, rows), Polyhedron(G=G, h=_f32(h))


def _poly_inside(rng, n, rows):
    me, mi = _sizes(n)
    P, y0 = _polytope(rng, n, rows, me, mi)
    return y0, P


def _poly_equalities(rng, n, rows):
    me = max(_sizes(n)[0], 1)
    P, _ = _polytope(rng, n, rows, me, 0)
    return 3 * _gaussian(rng, n, rows), P


def _poly_inequalities(rng, n, rows):
    P, _ = _polytope(rng, n, rows, 0, _sizes(n)[1])
    return 3 * _gaussian(rng, n, rows), P


def _poly_zeros(rng, n, rows):
    me, mi = _sizes(n)
    P, _ = _polytope(rng, n, rows, me, mi)
    return np.zeros((rows, n)), P


POLYHEDRON_KINDS: dict[str, Generator] = {
    "random": _poly_random,
    "zeros": _poly_zeros,
    "per_sample": _poly_per_sample,
    "redundant": _poly_redundant,
    "vertices": _poly_vertices,
    "inside": _poly_inside,
    "equalities": _poly_equalities,
    "inequalities": _poly_inequalities,
}


def _box_bounds(rng, n, rows):
    lower = -_f32(rng.random((rows, n)))
    return lower, lower + _f32(rng.random((rows, n)))


BOX_KINDS: dict[str, Generator] = {
    "random": lambda rng, n, rows: (2 * _gaussian(rng, n, rows), Box(*(b[0] for b in _box_bounds(rng, n, 1)))),
    "per_sample": lambda rng, n, rows: (2 * _gaussian(rng, n, rows), Box(*_box_bounds(rng, n, rows))),
    "lower_only": lambda rng, n, rows: (2 * _gaussian(rng, n, rows), Box(lower=_box_bounds(rng, n, rows)[0])),
    "inside": lambda rng, n, rows: (0.5 * _gaussian(rng, n, rows).clip(-1, 1), Box(-1.0, 1.0)),
    "zeros": lambda rng, n, rows: (np.zeros((rows, n)), Box(*(b[0] + 0.5 for b in _box_bounds(rng, n, 1)))),
}


def kinds(set_name: str) -> dict[str, Generator]:
    """The instance kinds of ``set_name``: kind name -> generator ``(rng, n, rows) -> (x, set)``."""
    if set_name in ("l1ball", "simplex"):
        return _radius_kinds(set_name)
    if set_name in OFFSET_SETS:
        return _offset_kinds(set_name)
    try:
        return {
            "nonnegative": NONNEGATIVE_KINDS,
            "affine": AFFINE_KINDS,
            "tie": TIE_KINDS,
            "polyhedron": POLYHEDRON_KINDS,
            "box": BOX_KINDS,
        }[set_name]
    except KeyError:
        raise ValueError(f"unknown set {set_name!r}; choose from {', '.join(SET_NAMES)}.") from None


def _selected_kinds(set_name: str, n: int, only: Sequence[str] | None = None) -> list[str]:
    """The kinds :func:`instances` builds for ``set_name`` at size ``n`` (see there)."""
    if set_name in ("tie", *OFFSET_SETS) and n < 2:
        return []
    if set_name in ("polyhedron", "box") and n > POLYHEDRON_MAX_N:
        return []
    every_kind = n < LARGE_N or set_name in OFFSET_SETS
    return [k for k in kinds(set_name) if (only is None or k in only) and (every_kind or k in LARGE_KINDS)]


def instances(set_name: str, n: int, trials: int = 1, seed: int = 0, only: Sequence[str] | None = None) -> list[Instance]:
    """Random and adversarial instances of ``set_name`` in dimension ``n``: ``trials`` of each kind.

    Deterministic in ``(seed, set_name, n, trial, kind)``. ``only`` keeps the listed kinds; at
    ``n >= LARGE_N`` only ``LARGE_KINDS`` are built, one row each (the cvxpy reference is the
    expensive side), except for the offset sets (every kind: their reference is the exact one).
    Weight tying and the offset rows need ``n >= 2``: at ``n = 1`` there is no instance.
    """
    table = kinds(set_name)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    unknown = sorted(set(only or ()) - set(table))
    if unknown:
        raise ValueError(f"unknown kind(s) {unknown} for {set_name}; its kinds are {sorted(table)}.")
    selected = _selected_kinds(set_name, n, only)
    out: list[Instance] = []
    for trial in range(trials):
        for kind in selected:
            rng = np.random.default_rng([seed, SET_NAMES.index(set_name), n, trial, list(table).index(kind)])
            x, constraint = table[kind](rng, n, _rows(set_name, n))
            out.append(Instance(set_name, kind, constraint, torch.from_numpy(_f32(x)).reshape(-1, n)))
    return out


# --------------------------------------------------------------------------------------------
# the check


def instance_scale(instance: Instance) -> Tensor:
    r"""Per row: :math:`s = \max(\max_i |x_i|, \text{own scale of the set})` (the module docstring), 1 where
    that is 0; for offset rows :math:`s = r`."""
    x, constraint = instance.x, instance.constraint
    own = constraint.own_scale(x).to(torch.float64)
    s = own if instance.offset else torch.maximum(x.detach().double().abs().amax(-1), own)
    return torch.where(s > 0, s, torch.ones_like(s))


def tolerance(instance: Instance, dtype: torch.dtype) -> float:
    """The pass threshold on the relative error of ``instance`` in ``dtype``."""
    return OFFSET_TOLERANCE if instance.offset else TOLERANCE[dtype]


#: Sets whose reference is the certified KKT point (:func:`constrain.reference.certified_projection`).
KKT_SETS = ("affine", "tie", "polyhedron", "box", "affine-metric")
#: Up to this n, the first row of every instance of a KKT set is also solved by cvxpy and the kernel compared with
#: both references (every kind of every such set is checked against cvxpy at n = 1, 2, 5, 64).
CVXPY_CHECK_MAX_N = 64


def reference_of(constraint: ConstraintSet, x: Tensor, guess: Tensor | None = None) -> tuple[Tensor | None, str]:
    """The reference projection of the rows ``x`` and its kind: ``"exact"`` (the set's exact projection, where it
    has one), ``"kkt"`` (a polyhedral set and a ``guess``: the certified KKT point of every row, see
    :func:`constrain.reference.certified_projection`), else ``"cvxpy"`` (also when a row has no certificate);
    ``(None, reason)`` if the cvxpy reference cannot solve an instance."""
    exact = constraint.exact_projection(x)
    if exact is not None:
        return exact, "exact"
    if guess is not None and isinstance(constraint, (Affine, Polyhedron, Box)):
        try:
            return certified_projection(constraint, x, guess), "kkt"
        except ReferenceSolverError:
            pass  # no certificate from this guess: cvxpy decides
    try:
        return constraint.reference_projection(x, method="cvxpy"), "cvxpy"
    except ReferenceSolverError as error:
        return None, str(error)


def _kernel_outputs(constraint: ConstraintSet, x: Tensor, dtypes: Sequence[torch.dtype]) -> dict[torch.dtype, Tensor | str]:
    """``set.project`` of the rows in each dtype, or why it failed (it raised, or returned the wrong dtype or shape)."""
    out: dict[torch.dtype, Tensor | str] = {}
    for dtype in dtypes:
        try:
            y = constraint.project(x.to(dtype))
        except Exception as raised:  # a kernel that raises on valid input fails the instance
            out[dtype] = f"kernel raised {raised!r}"
            continue
        if y.dtype != dtype or y.shape != x.shape:
            out[dtype] = f"kernel returned {y.dtype} {tuple(y.shape)} for {dtype} {tuple(x.shape)}"
        else:
            out[dtype] = y.detach().double()
    return out


def _cvxpy_first_row(constraint: ConstraintSet, x: Tensor) -> Tensor | None:
    """cvxpy's projection of the first row (the cross-check of the KKT references), None if it cannot solve it."""
    first_set = next(iter(constraint.row_sets(x)))  # the set of the first row (per-row right-hand sides)
    try:
        return torch.from_numpy(solve_projection(first_set, x[0].detach().cpu().double().numpy())).to(x.device)[None]
    except ReferenceSolverError:
        return None


def check_instance(instance: Instance, dtypes: Sequence[torch.dtype] = DTYPES) -> list[Outcome]:
    """Compare ``instance.constraint.project`` in each dtype with the reference, worst row each.

    The float64 kernel output proposes the active sets of a KKT reference (:func:`reference_of`), which
    certifies its own answer; up to ``CVXPY_CHECK_MAX_N`` the first row is compared with cvxpy too.
    A reference that cannot solve the instance gives outcomes with ``reference="unavailable"``,
    ``passed=False`` and NaN errors: the kernel was not checked (which is not a kernel failure).
    """
    x, constraint = instance.x, instance.constraint
    scale = instance_scale(instance)
    kernels = _kernel_outputs(constraint, x, dtypes)
    guess = kernels.get(torch.float64)
    reference, kind = reference_of(constraint, x, guess if isinstance(guess, Tensor) else None)
    second = _cvxpy_first_row(constraint, x) if kind == "kkt" and instance.n <= CVXPY_CHECK_MAX_N else None

    def outcome(dtype: torch.dtype, error: float, violation: float, passed: bool, note: str, ref: str) -> Outcome:
        name = str(dtype).removeprefix("torch.")
        return Outcome(instance.set_name, instance.kind, instance.n, name, x.shape[0], error, violation, passed, note, ref)

    if reference is None:
        return [outcome(d, math.nan, math.nan, False, f"reference unavailable: {kind}", "unavailable") for d in dtypes]
    outcomes = []
    for dtype in dtypes:
        y64 = kernels[dtype]
        if isinstance(y64, str):
            outcomes.append(outcome(dtype, math.nan, math.nan, False, y64, kind))
            continue
        errors = (y64 - reference).abs().amax(-1) / scale
        if second is not None:
            errors[:1] = torch.maximum(errors[:1], (y64[:1] - second).abs().amax(-1) / scale[:1])
        error = errors.max().item()
        violation = abs((constraint.violation(y64) / scale).max().item())  # >= 0; abs drops a -0.0
        outcomes.append(outcome(dtype, error, violation, error <= tolerance(instance, dtype), "", kind))  # NaN fails
    return outcomes


# ---------------------------------------------------------------- projections in a diagonal metric
#: The metric projections (``constrain.project_metric``), checked against cvxpy with the weighted objective.
METRIC_SETS = ("l1ball-metric", "affine-metric")
#: Sets checked against cvxpy (the costly references; :func:`validate` schedules them first).
CVXPY_SETS = ("affine", "tie", "polyhedron", "box", *METRIC_SETS)


def _metric_instance(name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, ConstraintSet]:
    """Three rows ``x``, their weights ``d`` (four decades) and the set: the L1 ball of radius 1 or ``A y = c``."""
    x = rng.standard_normal((3, n)) * 3
    d = 10.0 ** rng.uniform(-2, 2, (3, n))
    if name == "l1ball-metric":
        return x, d, L1Ball(1.0)
    A = rng.standard_normal((max(1, n // 3), n))
    return x, d, Affine(A, A @ rng.standard_normal(n))


def _cvxpy_metric(constraint: ConstraintSet, x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``argmin sum d (y - x)^2`` over the set for every row, by Clarabel (not polished onto the active set)."""
    import cvxpy as cp

    out = np.empty_like(x)
    for i in range(x.shape[0]):
        v = cp.Variable(x.shape[1])
        problem = cp.Problem(cp.Minimize(cp.sum(cp.multiply(d[i], cp.square(v - x[i])))), constraint.cvxpy_constraint(v))
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        out[i] = v.value
    return out


def check_metric(name: str, n: int, trials: int, seed: int) -> list[Outcome]:
    r"""``min sum d (y - x)^2`` over the L1 ball (radius 1) or ``A y = c`` for random rows and weights ``d`` spread
    over four decades; the kernel in each dtype against the references in float64, errors relative to max|x|.

    References: the L1 ball: Clarabel on every row (column ref ``cvxpy``); ``A y = c``: the certified KKT point of
    every row (``kkt``, :func:`constrain.reference.certified_projection` with the weights, its active set proposed
    by the float64 kernel) and, up to ``CVXPY_CHECK_MAX_N``, Clarabel on every row as well. Pass: 10x the kernels'
    tolerance, since the Clarabel reference is not polished onto the active set (the exact check is
    tests/constrain/test_metric_projections.py, against a sort). Skipped (no rows) above n = 1000: cvxpy's weighted
    problems get slow and add nothing the sizes below miss."""
    from constrain import project_metric

    if n > 1000:
        return []
    rng = np.random.default_rng([seed, n, len(name)])
    outcomes = []
    for trial in range(trials):
        x, d, constraint = _metric_instance(name, n, rng)
        kernels = {
            dtype: project_metric(constraint, torch.as_tensor(x, dtype=dtype), torch.as_tensor(d, dtype=dtype)).double()
            for dtype in DTYPES
        }
        references, ref = [], "cvxpy"
        if name == "affine-metric":
            certified = certified_projection(constraint, torch.from_numpy(x), kernels[torch.float64], torch.from_numpy(d))
            references, ref = [certified.numpy()], "kkt"
        if name != "affine-metric" or n <= CVXPY_CHECK_MAX_N:
            references.append(_cvxpy_metric(constraint, x, d))
        scale = np.abs(x).max(-1)
        for dtype, y in kernels.items():
            error = max(float((np.abs(y.numpy() - r).max(-1) / scale).max()) for r in references)
            violation = float((constraint.violation(y).numpy() / scale).max())
            passed = error <= 10 * TOLERANCE[dtype]
            outcomes.append(
                Outcome(name, f"random #{trial}", n, str(dtype).removeprefix("torch."), 3, error, violation, passed, "", ref)
            )
    return outcomes


@dataclass
class Row:
    """One line of the table: every instance of one set, size and dtype."""

    set: str
    n: int
    dtype: str
    instances: int = 0
    rows: int = 0
    max_error: float = 0.0
    max_violation: float = 0.0
    worst: str = ""
    failed: int = 0
    unavailable: int = 0
    references: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.failed:
            return f"FAIL ({self.failed})"
        return f"pass, {self.unavailable} ref. unavailable" if self.unavailable else "pass"

    @property
    def reference(self) -> str:
        return "+".join(self.references) or "-"

    def add(self, outcome: Outcome) -> None:
        self.instances += 1
        self.rows += outcome.rows
        if outcome.reference == "unavailable":
            self.unavailable += 1
            self.notes.append(f"{outcome.kind}: {outcome.note}")
            return
        if outcome.reference not in self.references:
            self.references.append(outcome.reference)
        if not math.isnan(self.max_error) and not outcome.error <= self.max_error:  # a NaN sticks
            self.max_error, self.worst = outcome.error, outcome.kind
        if not math.isnan(self.max_violation) and not outcome.violation <= self.max_violation:
            self.max_violation = outcome.violation
        if not outcome.passed:
            self.failed += 1
            self.notes.append(f"{outcome.kind}: error {outcome.error:.3g}, violation {outcome.violation:.3g} {outcome.note}")


def _check_unit(name: str, n: int, trials: int, seed: int) -> list[Outcome]:
    """Every instance of one set and size (the metric sets: :func:`check_metric`), each in both dtypes."""
    if name in METRIC_SETS:
        return check_metric(name, n, trials, seed)
    return [outcome for instance in instances(name, n, trials, seed) for outcome in check_instance(instance)]


def _unit_size(name: str, n: int, trials: int) -> int:
    """Instance checks of one work unit (one progress step each)."""
    return trials * (1 if name in METRIC_SETS else len(_selected_kinds(name, n)))


def _one_thread() -> None:
    """One torch thread and one BLAS thread (numpy, scipy): many small problems, where threads only wait on each
    other (on a loaded 2-core machine a multithreaded 1000 x 1000 Cholesky took 1.2 s of wall time, one thread 0.03 s)."""
    torch.set_num_threads(1)
    _one_blas_thread()


def _one_blas_thread() -> Any:
    """Limit every BLAS loaded so far, after loading scipy's own (a limit covers the libraries already loaded only);
    the returned limiter restores the previous counts when used as a context manager."""
    import scipy.linalg  # noqa: F401  # loads scipy's OpenBLAS, which numpy's limit would not cover
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def default_workers() -> int:
    """Processes of the default run: two where workers fork and the machine has two CPUs or more, else one."""
    import os

    return 2 if _start_method() == "fork" and (os.cpu_count() or 1) >= 2 else 1


def _forked_worker() -> None:
    """A forked worker: one thread (:func:`_one_thread`), and Ctrl-C left to the main process."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _one_thread()


def _load_before_fork(units: list[tuple[str, int]]) -> None:
    """Load what every worker needs once, here, before forking: the numba kernels and, if a unit has a cvxpy
    reference, cvxpy (seconds per process otherwise)."""
    from constrain._simplex import _numba_kernels

    _numba_kernels()
    if any(name in CVXPY_SETS for name, _ in units):
        import cvxpy  # noqa: F401  # imported for the forked workers to inherit


def _run_units(units: list[tuple[str, int]], trials: int, seed: int, workers: int, bar) -> list[list[Outcome]]:
    """The outcomes of every unit, in order; ``workers > 1``: in that many processes (one torch thread each,
    forked from this one where the platform allows, see :func:`_start_method`), the units with the most
    expensive references submitted first."""
    if workers <= 1:
        results = []
        for name, n in units:
            bar.set_postfix_str(f"{name} n={n}")
            results.append(_check_unit(name, n, trials, seed))
            bar.update(_unit_size(name, n, trials))
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    method = _start_method()
    if method == "fork":
        _load_before_fork(units)
        sys.stdout.flush()
        sys.stderr.flush()
    # cvxpy references (and the metric sets') cost far more than the exact ones, and grow with n
    order = sorted(range(len(units)), key=lambda i: (units[i][0] in CVXPY_SETS, units[i][1]), reverse=True)
    out: list[list[Outcome]] = [[] for _ in units]
    context = multiprocessing.get_context(method)
    initializer = _forked_worker if method == "fork" else _one_thread
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=initializer) as pool:
        jobs = {pool.submit(_check_unit, *units[i], trials, seed): i for i in order}
        try:
            for job in as_completed(jobs):
                i = jobs[job]
                out[i] = job.result()
                bar.update(_unit_size(*units[i], trials))
                bar.set_postfix_str(f"{units[i][0]} n={units[i][1]}")  # the unit just checked, drawn now: a run of
                # units that finish within tqdm's mininterval would otherwise close the bar before it shows a name
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return out


def validate(
    sets: Sequence[str] = SET_NAMES,
    sizes: Sequence[int] = DEFAULT_SIZES,
    trials: int = 1,
    seed: int = 0,
    progress: bool = False,
    workers: int | None = None,
) -> list[Row]:
    """Run every instance of every set and size; one :class:`Row` per (set, n, dtype).

    ``progress``: a progress bar on stderr (one step per instance), shown only on a terminal.
    ``workers``: processes that check (set, size) units in parallel (1: in this process; None:
    :func:`default_workers`); the table does not depend on it (every instance is seeded by its set, size,
    trial and kind).
    """
    units = [(name, n) for name in sets for n in sizes]
    workers = default_workers() if workers is None else workers
    total = sum(_unit_size(name, n, trials) for name, n in units)
    from tqdm import tqdm

    table: list[Row] = []
    with tqdm(
        total=total, desc="validate", unit="instance", leave=False, file=sys.stderr, disable=None if progress else True
    ) as bar:
        results = _run_units(units, trials, seed, min(workers, len(units)), bar)
    for (name, n), outcomes in zip(units, results, strict=True):
        rows = {d: Row(name, n, str(d).removeprefix("torch.")) for d in DTYPES}
        for outcome in outcomes:
            rows[getattr(torch, outcome.dtype)].add(outcome)
        table += [row for row in rows.values() if row.instances]
    return table


def format_table(table: Iterable[Row]) -> str:
    """The table as printed by ``constrain validate``."""
    header = (
        f"{'set':<14} {'n':>7} {'dtype':<8} {'instances':>9} {'rows':>5} {'ref':<5} {'max error':>10} "
        f"{'max violation':>13} {'worst case':<16} verdict"
    )
    lines = [header, "-" * len(header)]
    for r in table:
        lines.append(
            f"{r.set:<14} {r.n:>7} {r.dtype:<8} {r.instances:>9} {r.rows:>5} {r.reference:<5} {r.max_error:>10.2e} "
            f"{r.max_violation:>13.2e} {r.worst or '-':<16} {r.verdict}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# command line


def _set_list(text: str) -> list[str]:
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SET_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown set(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(SET_NAMES)}."
        )
    return names


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``constrain validate`` to the CLI."""
    parser = subparsers.add_parser(
        "validate",
        help="check every projection kernel against an exact or cvxpy reference on random and adversarial inputs",
        description="Compare each kernel (set.project) in float32 and float64 with a reference projection "
        "(exact where the set has one, else cvxpy) on random and adversarial instances; exit 1 if any kernel "
        "fails (an instance no reference can solve is reported, not counted as a failure).",
        epilog=SCALE_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sets", type=_set_list, default=list(SET_NAMES), help=f"comma-separated sets to check (default: {','.join(SET_NAMES)})"
    )
    parser.add_argument(
        "--trials", type=positive_int, default=1, help="rounds of every instance kind per set and size (default: 1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--max-n",
        type=positive_int,
        default=max(DEFAULT_SIZES),
        help=f"skip sizes above this (default: {max(DEFAULT_SIZES)}; sizes {DEFAULT_SIZES})",
    )
    parser.add_argument(
        "--json", metavar="PATH", default=None, help="also write every row as JSON to PATH (checked for writing before any work)"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="processes checking (set, size) units in parallel, one torch thread each (default: 2 on Linux with 2 or "
        "more CPUs, where the workers are forked from this process and inherit its imports; else 1, in this process: "
        "a spawned worker first pays a few seconds of imports); the table does not depend on it",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (it is shown on stderr only when stderr is a terminal)"
    )
    parser.set_defaults(func=run)
    return parser


def _finite(record: dict) -> dict:
    """NaN (a failed reference or kernel) as null, so that the JSON is standard."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}


def run(args: argparse.Namespace) -> int:
    """Run the validation, print the table; 0 if every kernel passes, 1 if one fails.

    Instances that no reference could solve are listed apart and do not change the exit status.
    """
    sizes = [n for n in DEFAULT_SIZES if n <= args.max_n]
    if not sizes:
        raise ValueError(f"--max-n {args.max_n} leaves no size to check; the smallest is {min(DEFAULT_SIZES)}.")
    if args.json:
        check_output_file(args.json, "--json")  # cli.main checks it too; run() may be called on its own
    start = time.perf_counter()
    threads = torch.get_num_threads()
    # Many small problems: one thread avoids OpenMP barrier stalls (seconds per SVD on a busy machine).
    torch.set_num_threads(1)
    try:
        with _one_blas_thread():
            table = validate(args.sets, sizes, args.trials, args.seed, progress=not args.no_progress, workers=args.workers)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    print(
        "constrain validate: kernels vs exact, KKT-certified and cvxpy references, "
        f"{args.trials} trial(s) per instance kind, seed {args.seed}"
    )
    print(format_table(table))
    print(SCALE_NOTE)
    failed = [row for row in table if row.failed]
    for row in table:
        for note in row.notes:
            print(
                f"  {'FAIL' if 'reference unavailable' not in note else 'reference unavailable'} "
                f"{row.set} n={row.n} {row.dtype}: {note}"
            )
    total = sum(row.instances for row in table)
    unavailable = sum(row.unavailable for row in table)
    verdict = f"{len(failed)} row(s) FAILED" if failed else "all pass"
    if unavailable:
        verdict += f"; {unavailable} instance check(s) not made: reference unavailable (not kernel failures)"
    print(f"{total} instance checks in {seconds:.1f} s: {verdict}")
    if args.json:
        payload = {
            "seed": args.seed,
            "trials": args.trials,
            "sizes": sizes,
            "tolerance": {str(d).removeprefix("torch."): t for d, t in TOLERANCE.items()},
            "scale": SCALE_NOTE,
            "seconds": seconds,
            "rows": [_finite({**asdict(row), "reference": row.reference, "verdict": row.verdict}) for row in table],
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return 1 if failed else 0
