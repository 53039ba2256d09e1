r"""Strictly feasible points of polytopes :math:`\{y : A y = b,\ G y \le h\}`, one per row, and their certificate.

The ray (gauge) map of ``reparam-gauge`` needs, per sample, a point :math:`y_0` with :math:`A y_0 = b` and
:math:`G y_0 < h`. ``interior="auto"`` (:func:`auto_interior`) gives one on every row whose polytope has an
interior, batched:

1. the least-norm point :math:`y_p = A^+ b` (:math:`0` without equalities), kept where it is strictly inside;
2. elsewhere a phase 1 by the exact projection: with :math:`\sigma_i = (h_i - G_i y_p) / \|G_i\|`, project
   :math:`(y_p, T)` onto the lifted polytope
   :math:`L = \{(y, t) : A y = b,\ G_i y + \|G_i\|\, t \le h_i\}` (never empty when :math:`A y = b` is
   consistent: :math:`t` may be very negative). Its solution :math:`(y^*, t^*)` has slack
   :math:`h_i - G_i y^* \ge t^* \|G_i\|`, so :math:`t^* > 0` makes :math:`y^*` strictly feasible. :math:`t^*`
   grows with :math:`T` up to the Chebyshev radius (the objective :math:`\|y - y_p\|^2 + (t - T)^2` trades
   distance for depth), so :math:`T` starts at :math:`16 (1 + \max_i |\sigma_i|)` and grows 8-fold on the rows
   not yet strictly inside, for a few rounds, each round one batched projection of those rows only;
3. a row still not strictly inside gets the Chebyshev LP (HiGHS), which either finds its centre or proves
   that the polytope has no interior and refuses, naming the sample.

Every point is then snapped onto :math:`A y = b` by the null-space completion and certified
(:func:`certify_interior`): the slack must exceed the rounding error of :math:`G y_0` in the rows' dtype.
Differentiable in :math:`b` and :math:`h` (matrix products and the projection's exact Jacobian).
"""

from __future__ import annotations

import torch
from torch import Tensor

from constrain import Polyhedron

#: Phase-1 rounds (the lifted projection's depth target T grows by _GROWTH per round) before the LP decides.
_ROUNDS = 6
_GROWTH = 8.0
#: The rounding allowance of the certificate, in units of eps(dtype) times the magnitudes of h and G y0.
_ROUNDING = 1e3


def strictly_inside(s: Polyhedron, y0: Tensor) -> Tensor:
    """Per row: is the slack ``h - G y0`` of every constraint above the rounding of ``G y0`` in ``y0``'s dtype,
    ``1e3 eps (|h| + |G| |y0|)``?"""
    assert s.G is not None, "interior points are for sets with inequalities"
    G = s.G.to(y0)
    slack = -s.inequality(y0)  # type: ignore[operator]  # a set with inequalities (asserted)
    rounding = _ROUNDING * torch.finfo(y0.dtype).eps * ((slack + y0 @ G.T).abs() + y0.abs() @ G.abs().T)
    return (slack > rounding).all(-1)


def certify_interior(s: Polyhedron, y0: Tensor) -> None:
    """Raise ``ValueError`` naming the first row of ``y0`` that is not strictly inside ``s`` or misses ``A y = b``
    beyond rounding (``1e3 eps (1 + max |y0|)``)."""
    y0 = y0.detach()
    bad = ~strictly_inside(s, y0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        slack = -s.inequality(y0)[i]  # type: ignore[index]  # strictly_inside asserted inequalities
        raise ValueError(
            f"the interior point of sample {i} is not strictly inside {s!r} (min slack {float(slack.min()):.3g}); "
            f"give a strictly feasible interior or use interior='auto' (a certified interior point of each sample)."
        )
    e0 = s.equality(y0)
    if e0 is not None:
        defect = e0.abs().amax(-1)
        scale = _ROUNDING * torch.finfo(y0.dtype).eps * (1 + y0.abs().amax(-1))
        if bool((defect > scale).any()):
            i = int((defect > scale).nonzero()[0])
            raise ValueError(f"the interior point of sample {i} does not satisfy A y = b (defect {float(defect[i]):.3g}).")


def _sides(s: Polyhedron, zeros: Tensor) -> tuple[Tensor | None, Tensor]:
    """Each row's ``b`` and ``h`` as ``(B, m)`` tensors (the constraint values at ``y = 0``, negated)."""
    e, g = s.equality(zeros), s.inequality(zeros)
    assert g is not None, "interior points are for sets with inequalities"
    return (None if e is None else -e), -g


def _check_consistent(s: Polyhedron, yp: Tensor, b: Tensor, todo: Tensor) -> None:
    """Raise ``ValueError`` naming the first sample of ``todo`` whose ``A y = b`` has no solution (its least-norm
    point ``yp`` misses ``b`` by more than ``1e-9`` of the scale ``|b| + |A|_F |yp|``)."""
    assert s.A is not None, "b comes with A"
    residual = torch.linalg.vector_norm(yp[todo] @ s.A.to(yp).T - b[todo], dim=-1)
    scale = torch.linalg.vector_norm(b[todo], dim=-1) + torch.linalg.norm(s.A).item() * torch.linalg.vector_norm(yp[todo], dim=-1)
    bad = residual > 1e-9 * scale
    if bool(bad.any()):
        i = int(todo[bad][0])
        raise ValueError(
            f"{s!r} is empty for sample {i}: A y = b[{i}] has no solution (least-squares residual "
            f"{float(residual[bad][0]):.3g}); fix that row of b or the rows of A."
        )


def _first(b: Tensor, h: Tensor) -> Tensor:
    return b


def _second(b: Tensor | None, h: Tensor) -> Tensor:
    return h


def _shapes(s: Polyhedron, cache: dict) -> tuple[Polyhedron, Polyhedron]:
    """``s``'s matrices with right-hand sides bound later, ``bind(b, h)`` with ``(B, m)`` rows (for subsets of the
    rows), and the lifted polytope ``{(y, t) : A y = b, G_i y + |G_i| t <= h_i}``; cached per ``G`` (one
    factorization for every forward)."""
    assert s.G is not None, "interior points are for sets with inequalities"
    key = ("interior", id(s.G))
    if key not in cache:
        G, A = s.G, s.A
        column = torch.linalg.vector_norm(G, dim=1, keepdim=True)
        A_lift = None if A is None else torch.cat([A, A.new_zeros(A.shape[0], 1)], 1)
        rows = Polyhedron(A=A, b=None if A is None else _first, G=G, h=_second)
        lifted = Polyhedron(A=A_lift, b=None if A is None else _first, G=torch.cat([G, column], 1), h=_second)
        cache[key] = (G, rows, lifted)  # G is kept alive with its id
    return cache[key][1], cache[key][2]


def _phase_one(
    rows: Polyhedron, lifted: Polyhedron, yp: Tensor, b: Tensor | None, h: Tensor, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Rows ``yp`` (float64, each row's ``b``, ``h``) moved strictly inside by the lifted projection (module doc,
    step 2). Returns ``(points, done)``: rows not strictly inside after the last round (or left when the projection
    cannot certify a row) keep ``yp``, ``done`` False."""
    assert rows.G is not None, "interior points are for sets with inequalities"
    G = rows.G.to(yp)
    sigma = (h - yp @ G.T) / torch.linalg.vector_norm(G, dim=1)
    depth = 16.0 * (1.0 + sigma.abs().amax(-1, keepdim=True))
    out, done = yp, torch.zeros(yp.shape[0], dtype=torch.bool, device=yp.device)
    todo = torch.arange(yp.shape[0], device=yp.device)
    for _ in range(_ROUNDS):
        if todo.numel() == 0:
            break
        b_t = None if b is None else b[todo]
        try:
            point = lifted.bind(b_t, h[todo]).project(torch.cat([yp[todo], depth], 1))[:, :-1]
        except RuntimeError:  # a row the projection could not certify (ill-conditioned G): the LP takes the rest
            break
        sub = rows.bind(b_t, h[todo])
        y = sub.complete(point)  # onto A y = b to rounding (the projection meets it to its tolerance)
        ok = strictly_inside(sub, y.to(dtype))
        out = out.index_put((todo[ok],), y[ok])
        done = done.index_put((todo[ok],), torch.ones_like(ok[ok]))
        todo, depth = todo[~ok], depth[~ok] * _GROWTH
    return out, done


def _chebyshev_rows(rows: Polyhedron, b: Tensor | None, h: Tensor, todo: Tensor, like: Tensor) -> Tensor:
    """The Chebyshev centre (one LP each) of the rows ``todo`` of ``b``, ``h`` (float64); raises naming the first
    sample without interior."""
    centers = []
    for i in todo.tolist():
        sub = rows.bind(None if b is None else b[i : i + 1].detach(), h[i : i + 1].detach())
        try:
            center, _ = sub.chebyshev_center(like[:1])
        except ValueError as error:
            raise ValueError(
                f"the polytope of sample {i} has no interior (no strictly feasible point: the phase-1 projection found "
                f"none and the Chebyshev LP confirms); the ray map needs one. Fix that sample's right-hand sides or use "
                f"'projected'."
            ) from error
        centers.append(sub.complete(center))
    return torch.cat(centers)


def auto_interior(s: Polyhedron, like: Tensor, cache: dict) -> Tensor:
    """A strictly feasible point of each row's polytope (module doc), in ``like``'s dtype and device; ``like``
    gives the row count. Raises ``ValueError`` naming the first sample whose polytope has no interior."""
    zeros = like.new_zeros(like.shape[0], s.size, dtype=torch.float64)
    b, h = _sides(s, zeros)
    yp = s.complete(zeros)
    ok = strictly_inside(s, yp.to(like.dtype))
    if bool(ok.all()):
        return yp.to(like.dtype)
    todo = (~ok).nonzero().reshape(-1)
    if b is not None:
        _check_consistent(s, yp, b, todo)
    rows, lifted = _shapes(s, cache)
    b_t = None if b is None else b[todo]
    points, done = _phase_one(rows, lifted, yp[todo], b_t, h[todo], like.dtype)
    if not bool(done.all()):
        rest = (~done).nonzero().reshape(-1)
        points = points.index_put((rest,), _chebyshev_rows(rows, b, h, todo[rest], zeros))
    return yp.index_put((todo,), points).to(like.dtype)
