r"""HardNet-Aff (Min and Azizan, 2024): a closed-form affine correction onto ``{A y = b, G y <= h}``.

Stack the constraints as :math:`M = [A; G]` of shape ``(m + k, n)``. When :math:`M` has full row
rank (so :math:`M M^+ = I`), the layer

.. math::  y = f + M^+ \begin{bmatrix} b - A f \\ -\max(G f - h, 0) \end{bmatrix}

gives :math:`A y = b` and :math:`G y = \min(G f, h) \le h` exactly, for every input (seen or not):
equality rows are moved onto their value, violated inequality rows onto their bound, satisfied ones
are left where they are. It is not the Euclidean projection (the correction of one row moves the
others along :math:`M^+`), but it is one matrix product, differentiable almost everywhere.

With more constraints than variables, or linearly dependent rows, :math:`M M^+ \ne I` and the
correction no longer lands in the set: the strategy refuses such a stack at :meth:`attach`.
Feasibility holds up to rounding, about ``cond(M) * eps`` times the scale of ``f``, ``b`` and ``h``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from constrain import Polyhedron
from strategies._base import Target
from strategies._dc3 import _LinearOutputStrategy, check_matrix, linear_parts
from strategies._registry import register

#: Smallest ratio of the smallest to the largest singular value of ``[A; G]`` accepted as full rank.
RANK_TOLERANCE = 1e-10


def stacked_pseudoinverse(A: Tensor | None, G: Tensor | None, n: int) -> Tensor:
    r""":math:`M^+ = M^\top (M M^\top)^{-1}` of :math:`M = [A; G]` (float64, ``(n, m + k)``); raises
    ``ValueError`` saying why when :math:`M` does not have full row rank."""
    parts = [check_matrix(M, name, n) for M, name in ((A, "A"), (G, "G")) if M is not None]
    if not parts:
        raise ValueError("hardnet-aff needs at least one of A (equalities) or G (inequalities).")
    M = torch.cat(parts)
    rows = M.shape[0]
    if rows > n:
        raise ValueError(
            f"hardnet-aff needs the stacked matrix [A; G] to have full row rank, but it has {rows} rows "
            f"for {n} variables (more constraints than variables), so its rank is at most {n} < {rows}. "
            f"Use 'projected' or 'dc3' for this polyhedron."
        )
    s = torch.linalg.svdvals(M)
    if not float(s[-1]) > RANK_TOLERANCE * float(s[0]):
        rank = int((s > RANK_TOLERANCE * s[0]).sum())
        raise ValueError(
            f"hardnet-aff needs the stacked matrix [A; G] to have full row rank, but its rank is {rank} < "
            f"{rows} rows (smallest singular value {float(s[-1]):.3g}, largest {float(s[0]):.3g}): some "
            f"constraints are linear combinations of others. Remove the redundant rows, or use "
            f"'projected' or 'dc3'."
        )
    return torch.linalg.pinv(M)


def hardnet_affine(f: Tensor, pinv: Tensor, A: Tensor | None, b: Tensor | None, G: Tensor | None, h: Tensor | None) -> Tensor:
    r"""The HardNet-Aff correction of the rows ``f`` ``(batch, n)``; ``pinv`` from :func:`stacked_pseudoinverse`."""
    parts = []
    if A is not None and b is not None:
        parts.append(b - f @ A.to(f).T)
    if G is not None and h is not None:
        parts.append(-(f @ G.to(f).T - h).clamp_min(0))
    residual = torch.cat([p.expand(f.shape[0], -1) for p in parts], dim=-1)
    return f + residual @ pinv.to(f).T


@register("hardnet-aff")
class HardNetAff(_LinearOutputStrategy):
    """HardNet-Aff: an output layer that lands exactly on ``{A y = b, G y <= h}`` when ``[A; G]`` has full row rank."""

    family = "reparameterization"  # an output map onto the set, like reparam-radial
    summary = "HardNet-Aff: closed-form affine correction onto A y = b, G y <= h ([A; G] of full row rank)"

    @classmethod
    def unsupported_reason(cls, target: Target) -> str | None:
        """Also refuses a polyhedron whose stacked ``[A; G]`` is not of full row rank (the reason says why)."""
        reason = super().unsupported_reason(target)
        if reason is None:
            assert isinstance(target.set, Polyhedron)  # the base class refuses every other set
            A, _, G, _ = linear_parts(target.set)
            try:
                stacked_pseudoinverse(A, G, int((A if A is not None else G).shape[-1]))  # type: ignore[union-attr]  # a Polyhedron has A or G (its __init__ refuses neither)
            except ValueError as error:
                return str(error)
        return reason

    def _prepare(self, A: Tensor | None, G: Tensor | None) -> None:
        self._pinv = stacked_pseudoinverse(A, G, self._n)
        self._A = check_matrix(A, "A", self._n) if A is not None else None
        self._G = check_matrix(G, "G", self._n) if G is not None else None

    def _map(self, rows: Tensor, b: Tensor | None, h: Tensor | None) -> Tensor:
        return hardnet_affine(rows, self._pinv, self._A, b, self._G, h)
