r"""Projection onto the affine set :math:`\{w \in \mathbb{R}^n : A w = c\}`.

With an orthonormal basis :math:`V \in \mathbb{R}^{k \times n}` of the row space of :math:`A`
(:math:`k = \operatorname{rank} A`, from the SVD :math:`A = U \Sigma V^\top`) and the least-norm
solution :math:`w_0 = A^+ c`,

.. math::  P(x) = x - V^\top (V x - V w_0),

which costs O(k n) per row once the factor is known. A rank-deficient but consistent
:math:`A` is fine; an inconsistent system (:math:`c` outside the range of :math:`A`) has no
feasible point and is refused. The null-space basis :math:`N` (:math:`A N = 0`, orthonormal
columns) parameterizes the set as :math:`w = w_0 + N v`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from constrain._checks import LOW_PRECISION, check_finite, check_tensor, is_vmapped


def as_real_tensor(value: object, name: str) -> Tensor:
    """``value`` (a tensor, an array, a number or nested lists of numbers) as a tensor; a clear error otherwise."""
    if isinstance(value, Tensor):
        return value
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array of numbers: {error}") from None
    if array.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be a tensor, an array or nested lists of numbers, got {type(value).__name__}.")
    return torch.as_tensor(array)


def _as_matrix(A: object, c: object) -> tuple[Tensor, Tensor]:
    A = as_real_tensor(A, "A")
    c = as_real_tensor(c, "c")
    if is_vmapped(A) or is_vmapped(c):
        raise ValueError(
            "A and c are constants of the projection (it factorizes A once): torch.func.vmap over "
            "A or c is not supported. vmap over x, or build one constrain.Affine(A, c) per system."
        )
    if A.dim() == 1:
        A = A.unsqueeze(0)
    if A.dim() != 2:
        raise ValueError(f"A must be a matrix of shape (m, n), got shape {tuple(A.shape)}.")
    c = c.reshape(-1) if c.dim() == 0 else c
    if c.dim() != 1 or c.shape[0] != A.shape[0]:
        raise ValueError(
            f"c must be a vector with one entry per row of A: A has shape {tuple(A.shape)}, c has shape {tuple(c.shape)}."
        )
    if A.is_complex() or c.is_complex():
        raise TypeError("A and c must be real.")
    A64, c64 = A.detach().to(torch.float64), c.detach().to(device=A.device, dtype=torch.float64)  # c follows A
    check_finite(A64, "A")
    check_finite(c64, "c")
    return A64, c64


class AffineFactor:
    """The factorization of ``A w = c`` reused for every projection (float64, A's device).

    ``row_basis``: :math:`V` (k, n), orthonormal rows spanning the row space of A.
    ``particular``: :math:`w_0 = A^+ c` (n,), the least-norm feasible point.
    Use :meth:`of` to build one from ``A`` and ``c``.
    """

    def __init__(self, row_basis: Tensor, particular: Tensor) -> None:
        self.row_basis, self.particular = row_basis, particular
        self._offset = row_basis @ particular
        self._cache: dict = {}

    @classmethod
    def of(cls, A: object, c: object, rtol: float | None = None) -> AffineFactor:
        r"""Factorize :math:`A w = c`; raise ``ValueError`` if the system is inconsistent.

        ``rtol``: singular values below ``rtol * sigma_max`` count as zero
        (default ``max(m, n) * eps(float64) * 1e3``).
        """
        A64, c64 = _as_matrix(A, c)
        m, n = A64.shape
        if n == 0:
            raise ValueError("A has no columns: there is nothing to constrain.")
        columns = torch.nonzero((A64 != 0).any(0)).squeeze(-1)  # the row space lies on A's nonzero columns
        U, S, Vh_on = torch.linalg.svd(A64[:, columns], full_matrices=False)
        rtol = max(m, n) * torch.finfo(torch.float64).eps * 1e3 if rtol is None else rtol
        rank = int((S > rtol * S.max()).sum()) if S.numel() and float(S.max()) > 0 else 0
        U, S = U[:, :rank], S[:rank]
        Vh = A64.new_zeros(rank, n)
        Vh[:, columns] = Vh_on[:rank]  # exactly zero on the other columns
        particular = Vh.T @ ((U.T @ c64) / S)
        residual = float(torch.linalg.vector_norm(A64 @ particular - c64))
        scale = float(torch.linalg.vector_norm(c64)) + float(torch.linalg.matrix_norm(A64, 2) if m else 0) * float(
            torch.linalg.vector_norm(particular)
        )
        if residual > 1e-9 * scale:  # relative: c = 1e-10 * (1, -1) with A = (1, 1)^T is as inconsistent as (1, -1)
            raise ValueError(
                f"A w = c is inconsistent: no w satisfies it (rank A = {rank} < {m} rows and c is not in "
                f"the range of A; least-squares residual {residual:.3g}). Remove or fix the contradicting "
                f"rows of A or entries of c."
            )
        return cls(Vh.contiguous(), particular)

    @property
    def rank(self) -> int:
        return self.row_basis.shape[0]

    @property
    def size(self) -> int:
        return self.row_basis.shape[1]

    def _on(self, like: Tensor) -> tuple[Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = (self.row_basis.to(**_kw(like)), self._offset.to(**_kw(like)))
        return self._cache[key]

    def support_on(self, like: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        """``(columns, V_S, V w_0)`` on ``like``'s device and dtype: the columns where some row of V is nonzero
        (``None`` when all are), V restricted to them, and the offset. Directions off these columns are
        orthogonal to the row space, so a diagonal-metric projection leaves those entries unchanged."""
        key = ("support", like.device, like.dtype)
        if key not in self._cache:
            V, offset = self._on(like)
            columns = torch.nonzero((self.row_basis != 0).any(0)).squeeze(-1)
            if columns.numel() == self.size:
                self._cache[key] = (None, V, offset)
            else:
                columns = columns.to(like.device)
                self._cache[key] = (columns, V.index_select(1, columns), offset)
        return self._cache[key]

    def project(self, x: Tensor) -> Tensor:
        r""":math:`x - V^\top (V x - V w_0)` for each row of ``x`` (shape ``(..., n)``).

        O(min(k, n - k) n) per row: when the rank k exceeds n / 2 the same projection is
        computed as :math:`w_0 + N N^\top x` with the null-space basis N (:math:`w_0 \perp N`).
        float16 / bfloat16 rows are computed in float32 and returned in their own dtype.
        """
        if x.dtype in LOW_PRECISION:
            return self.project(x.float()).to(x.dtype)
        flat = x.reshape(-1, self.size)
        if 2 * self.rank > self.size:  # fewer null-space than row-space directions: w0 + N N^T x
            N, particular = self._null_on(x)
            out = torch.addmm(particular, flat @ N, N.T)
        else:  # x - V^T (V x - V w0), written straight into the one output buffer
            V, offset = self._on(x)
            out = torch.addmm(flat, flat @ V.T - offset, V, alpha=-1)
        return out.reshape(x.shape)

    def _null_on(self, like: Tensor) -> tuple[Tensor, Tensor]:
        key = ("null", like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = (self.null_basis().to(**_kw(like)), self.particular.to(**_kw(like)))
        return self._cache[key]

    def project_direction(self, v: Tensor) -> Tensor:
        r"""Project directions (rows of ``v``) onto the null space of A: :math:`v - V^\top V v`."""
        V, _ = self._on(v)
        return v - (v @ V.T) @ V

    def particular_like(self, like: Tensor) -> Tensor:
        return self.particular.to(**_kw(like))

    def null_basis(self) -> Tensor:
        r"""Orthonormal :math:`N` (n, n - k) with :math:`A N = 0`, so that :math:`w = w_0 + N v`."""
        if "null" not in self._cache:
            # Complete V to an orthonormal basis of R^n: the last n - k columns of Q span null(A).
            n, k = self.size, self.rank
            basis = torch.cat([self.row_basis.T, torch.eye(n, dtype=torch.float64, device=self.row_basis.device)], 1)
            Q, _ = torch.linalg.qr(basis, mode="complete")
            self._cache["null"] = Q[:, k:n].contiguous()
        return self._cache["null"]


def _kw(like: Tensor) -> dict:
    return {"device": like.device, "dtype": like.dtype}


def project_affine(x: Tensor, A: Tensor, c: Tensor) -> Tensor:
    r"""Project each row of ``x`` (shape ``(..., n)``) onto :math:`\{w : A w = c\}`.

    ``A`` (m, n) and ``c`` (m,) are treated as constants; gradients flow to ``x`` (the map is
    affine, its Jacobian is the projector :math:`I - V^\top V`). Works under ``torch.func``
    transforms of ``x`` (``vmap``, ``jvp``, ``jacrev``, ``jacfwd``). To project many times onto the
    same set, build :class:`constrain.Affine` once: it keeps the factorization.
    """
    x = check_tensor(x)
    factor = AffineFactor.of(A, c)
    check_dims(x, factor.size)
    if x.numel():
        check_finite(x.sum(-1))
    return factor.project(x)


def check_dims(x: Tensor, n: int) -> None:
    if x.dim() == 0 or x.shape[-1] != n:
        raise ValueError(
            f"x has shape {tuple(x.shape)} but A has {n} columns: the last dimension of x must be {n} "
            f"(for a weight matrix W, constrain vec(W) = W.reshape(-1))."
        )
