r"""Exact, batched, differentiable Euclidean projection onto polyhedra
:math:`\{y : A y = b,\ G y \le h\}`, one polytope per row when the right-hand sides are per row.

**Equalities.** With the SVD :math:`A = U \Sigma V^\top` (rank :math:`k`, :math:`V` (k, n) orthonormal
rows), :math:`E = A^+ = V^\top \Sigma^{-1} U^\top` and :math:`P = I - V^\top V`, the projection onto
:math:`\{A y = b\}` is :math:`p = P x + E b`. A row whose :math:`b` is not in the range of :math:`A`
has no feasible point and is refused by index.

**Inequalities.** With the rows of :math:`G` normalised to unit length (:math:`\hat G`,
:math:`\hat h`), :math:`W = \hat G P` and :math:`K = W W^\top` (both fixed, computed once), the
projection is :math:`y = p - W^\top \lambda` where :math:`\lambda \ge 0` solves the dual, a
bound-constrained QP :math:`\min_{\lambda \ge 0} \tfrac12 \lambda^\top K \lambda - r^\top \lambda`
with :math:`r = \hat G p - \hat h` (the constraint values at :math:`p`). Constraint values at
:math:`y` are :math:`g = r - K\lambda` (distances, since the rows are unit).

**Solver.** A batched primal-dual active-set (semismooth Newton) method on the dual: for the
active set :math:`S` solve :math:`K_{SS} \lambda_S = r_S`, :math:`\lambda_{\bar S} = 0`; then keep
:math:`i \in S` with :math:`\lambda_i \ge 0` and add :math:`i \notin S` with :math:`g_i > 0`, until
:math:`S` repeats. Each solve is one batched Cholesky factorization of the masked matrix
:math:`K \odot s s^\top + \operatorname{diag}(1 - s) + \delta \operatorname{diag}(s)` with iterative
refinement against :math:`\delta = 0`, which gives the minimum-norm multiplier when redundant active
constraints make :math:`K_{SS}` singular (:math:`y` does not depend on that choice). Rows that do not
settle (redundant or degenerate constraints make the plain iterations cycle) are solved again by
Goldfarb and Idnani's dual method, which adds one constraint at a time and keeps the active rows
linearly independent (finite, never cycles), then certified by an exact solve on its active set. Every row
ends with a certificate: :math:`g \le \text{tol}` (primal feasibility), :math:`\lambda \ge -\text{tol}`
(dual feasibility), complementarity and stationarity hold by construction. A row that cannot be
certified raises: ``ValueError`` naming the sample when its polytope is empty (checked with an LP),
``RuntimeError`` otherwise. Arithmetic is float64 whatever the input dtype.

**Backward.** On the final active set :math:`y` is the projection onto the affine set
:math:`\{A y = b, G_S y = h_S\}`, so with :math:`w = K_{SS}^+ W_S v` for the incoming gradient
:math:`v`: :math:`\partial_x = P v - W^\top w`, :math:`\partial_b = E^\top (v - \hat G^\top w)`,
:math:`\partial_{\hat h} = w` (exact implicit differentiation of the KKT system; no unrolling).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from constrain._checks import check_finite

#: Relative regularization of the masked Cholesky factorizations (removed by iterative refinement).
_DELTA = 1e-10
#: Iterative refinement steps of a masked solve.
_REFINE = 4
#: Relative certificate tolerance (float64 arithmetic): constraint values and multipliers.
_CERT_TOL = 1e-9
#: Active-set iterations before a row is warm-started again by projected gradient.
_MAX_ACTIVE_SET = 40
#: A constraint row whose direction lies in the row space of A (|P g_i| below this) is constant on the affine set.
_CONSTANT_ROW = 1e-10


def _largest_gram_eigenvalue(W: Tensor) -> float:
    r""":math:`\|W\|_2^2`, the largest eigenvalue of :math:`W W^\top`, from the smaller of the two Gram
    matrices (:math:`W W^\top` and :math:`W^\top W` share their nonzero eigenvalues): exact, and
    :math:`O(\min(m, n)^3)` instead of :math:`O(m^3)` for a tall ``W`` (m, n)."""
    gram = W.T @ W if W.shape[0] > W.shape[1] else W @ W.T
    return float(torch.linalg.eigvalsh(gram).max())


class PolyhedronFactor:
    r"""The fixed part of :math:`\{A y = b, G y \le h\}` (float64 on the device of ``A``/``G``).

    ``A`` (m_e, n) or None, ``G`` (m_i, n) or None, ``n`` the dimension. Holds :math:`V`, :math:`E`,
    the row norms of :math:`G`, :math:`\hat G`, :math:`W = \hat G P`, :math:`K = W W^\top` and the step
    :math:`1 / \|K\|` of the warm start; copies on other devices and dtypes are cached.
    """

    def __init__(self, A: Tensor | None, G: Tensor | None, n: int) -> None:
        self.n = n
        self.V: Tensor | None
        self.E: Tensor | None
        self.A: Tensor | None
        self.gnorm: Tensor | None
        self.Gn: Tensor | None
        self.W: Tensor | None
        self.K: Tensor | None
        self.constant: Tensor | None
        some = A if A is not None else G
        assert some is not None, "Polyhedron checks that A or G is given"
        device = some.device
        eye = torch.eye(n, dtype=torch.float64, device=device)
        if A is not None and A.shape[0]:
            U, S, Vh = torch.linalg.svd(A, full_matrices=False)
            rtol = max(A.shape) * torch.finfo(torch.float64).eps * 1e3
            rank = int((S > rtol * S.max()).sum()) if float(S.max()) > 0 else 0
            U, S, Vh = U[:, :rank], S[:rank], Vh[:rank]
            self.V = Vh.contiguous()  # (k, n)
            self.E = (Vh.T / S) @ U.T  # (n, m_e): A^+
            self.A = A
            self.A_norm = float(S.max()) if rank else 0.0  # the spectral norm of A
            P = eye - self.V.T @ self.V
        else:
            self.V = self.E = self.A = None
            self.A_norm = 0.0
            P = eye
        if G is not None and G.shape[0]:
            norms = torch.linalg.vector_norm(G, dim=1)
            if bool((norms == 0).any()):
                i = int((norms == 0).nonzero()[0])
                raise ValueError(f"G has a zero row (row {i}): 0 <= h[{i}] constrains nothing; remove the row.")
            self.gnorm = norms
            self.Gn = G / norms[:, None]
            self.W = self.Gn @ P  # (m_i, n)
            self.K = self.W @ self.W.T
            self.constant = torch.linalg.vector_norm(self.W, dim=1) <= _CONSTANT_ROW  # rows fixed by A y = b
            largest = _largest_gram_eigenvalue(self.W) if self.K.numel() else 0.0
            self.step = 1.0 / largest if largest > 0 else 1.0
        else:
            self.gnorm = self.Gn = self.W = self.K = self.constant = None
            self.step = 1.0
        self._cache: dict = {}

    @property
    def has_equalities(self) -> bool:
        return self.A is not None

    @property
    def has_inequalities(self) -> bool:
        return self.K is not None

    def on(self, device: torch.device) -> dict[str, Tensor | None]:  # None: that part is absent
        """The float64 matrices on ``device`` (cached)."""
        if device not in self._cache:
            names = ("V", "E", "A", "gnorm", "Gn", "W", "K", "constant")
            self._cache[device] = {k: (None if getattr(self, k) is None else getattr(self, k).to(device)) for k in names}
        return self._cache[device]

    # ------------------------------------------------------------------ forward pieces
    def affine_part(self, x: Tensor, b: Tensor | None) -> Tensor:
        r""":math:`p = P x + E b` for rows ``x`` (B, n) and ``b`` (B, m_e) (float64)."""
        V, E = _parts(self.on(x.device), "V", "E", optional=True)
        if V is None:
            return x
        assert E is not None and b is not None, "E comes with V; a set with equalities has b"
        p = x - (x @ V.T) @ V
        return p + b @ E.T

    def check_consistent(self, b: Tensor) -> None:
        """Raise ``ValueError`` naming the first row whose ``A y = b`` has no solution."""
        E, A = _parts(self.on(b.device), "E", "A")
        y0 = b @ E.T
        residual = torch.linalg.vector_norm(y0 @ A.T - b, dim=-1)
        scale = torch.linalg.vector_norm(b, dim=-1) + self.A_norm * torch.linalg.vector_norm(y0, dim=-1)
        bad = residual > 1e-9 * scale
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(
                f"Polyhedron is empty for sample {i}: A y = b[{i}] has no solution (b[{i}] is not in the range of A; "
                f"least-squares residual {float(residual[i]):.3g}). Fix that row of b or the rows of A."
            )


def _parts(m: dict[str, Tensor | None], *names: str, optional: bool = False) -> list[Any]:
    """The matrices ``names`` of :meth:`PolyhedronFactor.on`; each must be present unless ``optional``."""
    out = [m[k] for k in names]
    if not optional and any(t is None for t in out):
        raise RuntimeError(f"the polyhedron has no {', '.join(k for k, t in zip(names, out, strict=True) if t is None)}")
    return out


def _masked_solve(K: Tensor, rhs: Tensor, mask: Tensor) -> Tensor:
    r"""Per row: :math:`\lambda_S = K_{SS}^+ r_S` (minimum norm on a consistent singular system), 0 off S."""
    s = mask.to(K.dtype)
    M = K * (s[:, :, None] * s[:, None, :])
    scale = float(K.diagonal().max()) if K.numel() else 1.0
    delta = _DELTA * max(scale, 1e-300)
    Md = M + torch.diag_embed(1.0 - s + delta * s)
    L, info = torch.linalg.cholesky_ex(Md)
    if bool(info.any()):  # rounding made a block indefinite: more regularization for those rows
        bad = info.nonzero().reshape(-1)
        L[bad] = torch.linalg.cholesky(M[bad] + torch.diag_embed(1.0 - s[bad] + 1e3 * delta * s[bad]))
    b = (rhs * s).unsqueeze(-1)
    lam = torch.cholesky_solve(b, L)
    M0 = M + torch.diag_embed(1.0 - s)
    for step in range(_REFINE):
        residual = b - M0 @ lam
        if step and float(residual.abs().amax()) <= 1e-15 * float(b.abs().amax()):
            break
        lam = lam + torch.cholesky_solve(residual, L)
    return lam.squeeze(-1) * s


def _row_tolerance(r: Tensor, y: Tensor, p: Tensor, h: Tensor) -> Tensor:
    """The certificate tolerance of each row, relative to the row's scale (its points and right-hand sides)."""
    scale = torch.maximum(p.abs().amax(-1), h.abs().amax(-1))
    scale = torch.maximum(scale, r.abs().amax(-1))
    scale = torch.maximum(scale, y.abs().amax(-1))
    return _CERT_TOL * torch.where(scale > 0, scale, torch.ones_like(scale))


def _active_set(
    K: Tensor,
    r: Tensor,
    active: Tensor,
    tol: Tensor,
    free: Tensor,
    rho: float = 0.0,
    center: Tensor | None = None,
    iterations: int = _MAX_ACTIVE_SET,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Primal-dual active-set iterations from ``active`` (B, m) on
    :math:`\min_{\lambda \ge 0} \tfrac12 \lambda^\top (K + \rho I) \lambda - (r + \rho c)^\top \lambda`
    (:math:`\rho = 0`: the dual itself). Returns ``(lam, active, settled)``: a row is settled when its set
    repeats and its active constraints hold with equality (a consistent active system)."""
    B = r.shape[0]
    Kr = K + rho * torch.eye(K.shape[0], dtype=K.dtype, device=K.device) if rho else K
    if rho:
        assert center is not None, "a proximal term needs its centre"
    rhs = r + rho * center if rho and center is not None else r
    lam = r.new_zeros(r.shape)
    settled = torch.zeros(B, dtype=torch.bool, device=r.device)
    todo = torch.arange(B, device=r.device)
    active = active & free
    for _ in range(iterations):
        if todo.numel() == 0:
            break
        rr, act, t = rhs[todo], active[todo], tol[todo, None]
        lam_t = _masked_solve(Kr, rr, act)
        g = rr - lam_t @ Kr
        new = ((act & (lam_t > -t)) | (~act & (g > t))) & free[todo]
        same = (new == act).all(-1) & (g.abs() <= t).logical_or(~act).all(-1)
        lam[todo] = lam_t
        active[todo] = new
        settled[todo[same]] = True
        todo = todo[~same]
    return lam, active, settled


def _dual_active_set(K: Tensor, r: Tensor, tol: Tensor, free: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Goldfarb-Idnani's dual method, batched: from :math:`y = p` (no constraint active), add one violated
    constraint :math:`q` at a time, with partial steps that drop the active constraint whose multiplier
    reaches 0 first, keeping the active rows linearly independent (so :math:`K_{SS}` is non-singular and
    :math:`\lambda \ge 0` throughout). Finite; slower than the plain iterations (one factorization per added
    constraint), so it serves the rows they leave unsettled. Returns ``(lam, active, settled)``; a row
    with no step left while a constraint is violated is infeasible (not settled)."""
    B, m = r.shape
    lam = r.new_zeros(B, m)
    active = torch.zeros(B, m, dtype=torch.bool, device=r.device)
    pending = torch.full((B,), -1, dtype=torch.long, device=r.device)
    settled = torch.zeros(B, dtype=torch.bool, device=r.device)
    failed = torch.zeros(B, dtype=torch.bool, device=r.device)
    rows = torch.arange(B, device=r.device)
    diag = K.diagonal()
    for _ in range(4 * m + 20):
        g = r - lam @ K
        violation = torch.where(active | ~free, torch.full_like(g, -torch.inf), g)
        worst, q_new = violation.max(-1)
        pending = torch.where(pending >= 0, pending, torch.where(worst > tol, q_new, torch.full_like(q_new, -1)))
        settled = (pending < 0) & ~failed
        todo = rows[(pending >= 0) & ~failed]
        if todo.numel() == 0:
            break
        q = pending[todo]
        act, lam_t, g_t = active[todo], lam[todo], g[todo]
        kq = K[q]  # (T, m): K[q, :]
        direction = _masked_solve(K, kq, act)  # K_SS^{-1} K_Sq on S
        curvature = diag[q] - (kq * direction).sum(-1)  # |P_S w_q|^2
        dependent = curvature <= 1e-9 * diag[q]  # |sin| of the angle to the active span below ~3e-5
        gq = g_t.gather(1, q[:, None]).squeeze(1)
        full = torch.where(dependent, torch.full_like(gq, torch.inf), gq / curvature.clamp_min(1e-300))
        ratio = torch.where(act & (direction > 1e-14), lam_t / direction.clamp_min(1e-300), torch.full_like(lam_t, torch.inf))
        partial, j = ratio.min(-1)
        step = torch.minimum(full, partial)
        stuck = ~torch.isfinite(step)
        failed[todo[stuck]] = True
        step = torch.where(stuck, torch.zeros_like(step), step)
        lam_t = lam_t - step[:, None] * direction  # direction is 0 off S: the pending q keeps its multiplier
        lam_t = lam_t.scatter_add(1, q[:, None], step[:, None])
        add = (full <= partial) & ~stuck
        drop = ~add & ~stuck
        act = act.clone()
        act[add, q[add]] = True
        act[drop, j[drop]] = False
        lam_t[drop, j[drop]] = 0.0
        lam[todo], active[todo] = lam_t.clamp_min(0) * (act | (torch.arange(m, device=r.device) == q[:, None])), act
        done = todo[add]
        pending[done] = -1
    return lam, active, settled & ~failed


def solve(factor: PolyhedronFactor, x: Tensor, b: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    r"""Project rows ``x`` (B, n) float64; ``b`` (B, m_e), ``h`` (B, m_i) float64 (unnormalised).

    Returns ``(y, lam, active)``: the projection, the multipliers of the normalised inequalities and
    the final active set (None without inequalities). Raises on rows that cannot be certified.
    """
    if b is not None:
        factor.check_consistent(b)
    p = factor.affine_part(x, b)
    if not factor.has_inequalities:
        return p, None, None
    assert h is not None, "a set with inequalities has h"
    m = factor.on(x.device)
    K, W, gnorm, Gn, constant = _parts(m, "K", "W", "gnorm", "Gn", "constant")
    hn = h / gnorm
    r = p @ Gn.T - hn
    free = ~constant.expand_as(r)
    tol = _row_tolerance(r, p, p, hn)
    lam, active, settled = _active_set(K, r, r > tol[:, None], tol, free)
    if not bool(settled.all()):
        rows = (~settled).nonzero().reshape(-1)
        _, start, ok_r = _dual_active_set(K, r[rows], tol[rows], free[rows])
        # the exact solve on the independent active set it found (and its certificate, below)
        lam_r, act_r, ok_e = _active_set(K, r[rows], start, tol[rows], free[rows], iterations=3)
        lam[rows], active[rows], settled[rows] = lam_r, act_r, ok_r & ok_e
    y = p - lam @ W
    g = y @ Gn.T - hn  # the certificate is checked on y itself, in distance units
    tol = _row_tolerance(r, y, p, hn)
    dual_tol = torch.maximum(tol, _CERT_TOL * lam.abs().amax(-1))
    ok = settled & (g <= tol[:, None]).all(-1) & (lam >= -dual_tol[:, None]).all(-1)
    if b is not None:
        (A,) = _parts(m, "A")
        ok &= torch.linalg.vector_norm(y @ A.T - b, dim=-1) <= _CERT_TOL * 1e3 * (
            torch.linalg.vector_norm(b, dim=-1) + factor.A_norm * torch.linalg.vector_norm(y, dim=-1)
        )
    if not bool(ok.all()):
        _refuse(factor, x, b, h, int((~ok).nonzero()[0]), float((g - tol[:, None]).amax(-1)[~ok][0]))
    return y, lam, active


def _refuse(factor: PolyhedronFactor, x: Tensor, b: Tensor | None, h: Tensor, i: int, gap: float) -> None:
    """Raise for row ``i``: empty polytope (an LP says so) or no certificate."""
    from scipy.optimize import linprog

    A = None if factor.A is None else factor.A.cpu().numpy()
    assert factor.Gn is not None and factor.gnorm is not None, "only sets with inequalities are refused here"
    G = (factor.Gn * factor.gnorm[:, None]).cpu().numpy()
    bi = None if b is None else b[i].cpu().numpy()
    result = linprog(
        c=[0.0] * factor.n,
        A_ub=G,
        b_ub=h[i].cpu().numpy(),
        A_eq=A,
        b_eq=bi,
        bounds=[(None, None)] * factor.n,
        method="highs",
    )
    if result.status == 2:
        raise ValueError(
            f"Polyhedron is empty for sample {i}: no y satisfies "
            f"{'A y = b[' + str(i) + '], ' if A is not None else ''}G y <= h[{i}] (the LP is infeasible). "
            f"Check that row of the right-hand sides."
        )
    raise RuntimeError(
        f"the polyhedron projection of sample {i} could not be certified optimal (largest constraint value above "
        f"tolerance {gap:.3g}); the constraints are likely too ill-conditioned (nearly parallel rows of G). "
        f"Rescale or remove nearly dependent rows of G."
    )


class _Projection(torch.autograd.Function):
    """The projection with the exact KKT backward on the active set (see the module doc)."""

    @staticmethod
    def forward(ctx, x: Tensor, b: Tensor | None, h: Tensor | None, factor: PolyhedronFactor) -> Tensor:
        y, lam, active = solve(factor, x, b, h)
        ctx.factor = factor
        ctx.save_for_backward(active if active is not None else torch.empty(0))
        ctx.has_active = active is not None
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, v: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, None]:
        factor: PolyhedronFactor = ctx.factor
        m = factor.on(v.device)
        (active,) = ctx.saved_tensors
        dp = v
        dh = None
        if ctx.has_active:
            W, K, Gn, gnorm = _parts(m, "W", "K", "Gn", "gnorm")
            z = v @ W.T  # W_S v for every constraint; the solve masks it to S
            w = _masked_solve(K, z, active)
            dp = v - w @ Gn
            dh = w / gnorm
        V, E = _parts(m, "V", "E", optional=True)
        dx = dp if V is None else dp - (dp @ V.T) @ V
        db = None if E is None else dp @ E
        return dx, db, dh, None


def project_polyhedron_rows(factor: PolyhedronFactor, x: Tensor, b: Tensor | None, h: Tensor | None) -> Tensor:
    """Project rows ``x`` (B, n) with right-hand sides ``b`` (B, m_e) / ``h`` (B, m_i) in float64 and return
    the result in ``x``'s dtype; differentiable in ``x``, ``b`` and ``h``."""
    check_finite(x.sum(-1) if x.numel() else x)
    work = torch.float64
    xd = x.to(work)
    bd = None if b is None else b.to(device=x.device, dtype=work)
    hd = None if h is None else h.to(device=x.device, dtype=work)
    if x.shape[0] == 0:
        return x.clone()
    y = _Projection.apply(xd, bd, hd, factor)
    return y.to(x.dtype)
