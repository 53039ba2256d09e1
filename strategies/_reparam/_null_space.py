r"""The null-space map onto :math:`\{w : A \operatorname{vec}(W) = c\}`: :math:`\operatorname{vec}(W) = w_0 + B v`.

:class:`NullSpace` parametrizes one weight; :class:`AffineLatent` holds the one free vector of a
constraint across several parameters, each reading its block through a :class:`NullSpaceSlice`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from constrain import AffineFactor
from strategies._options import check_choice

__all__ = ["DENSE_BASIS_LIMIT", "AffineLatent", "NullSpace", "NullSpaceSlice", "resolve_affine_form"]

AffineForm = Literal["basis", "projector"]

#: ``affine_form="auto"`` uses the dense basis N up to this many constrained entries (N is n x (n - k)
#: and its QR costs O(n^3)); beyond it, the projector form (O(k n) memory and time).
DENSE_BASIS_LIMIT = 1024


def resolve_affine_form(form: str, size: int) -> AffineForm:
    """``"auto"`` -> ``"basis"`` for at most :data:`DENSE_BASIS_LIMIT` entries, else ``"projector"``."""
    check_choice("affine_form", form, ("auto", "basis", "projector"))
    if form == "auto":
        return "basis" if size <= DENSE_BASIS_LIMIT else "projector"
    return "basis" if form == "basis" else "projector"


class _AffineMap(nn.Module):
    r"""The map :math:`v \mapsto w_0 + B v` onto :math:`\{w : A w = c\}`, in one of two forms.

    ``"basis"``: :math:`B = N` (n, d), an orthonormal basis of the null space of :math:`A`
    (``factor.null_basis()``, :math:`A N = 0`), so :math:`v \in \mathbb{R}^{n-k}` is a minimal
    coordinate vector; inverse :math:`v = N^\top (w - w_0)`.
    ``"projector"``: :math:`B = I - V^\top V` with :math:`V` (k, n) the orthonormal row basis of
    :math:`A`, applied implicitly in O(k n) (for large n, where N would not fit);
    :math:`v \in \mathbb{R}^n`, inverse :math:`v = B (w - w_0)`.
    In both :math:`w_0 = A^+ c` is the least-norm solution (``factor.particular``) and
    :math:`w_0 + B\,\mathrm{inverse}(w)` is the Euclidean projection of :math:`w` onto the set.
    The matrices are non-persistent buffers in the weight's dtype; after ``.to()`` they are
    recomputed from the float64 factor, so a float64 model gets float64-exact matrices.
    """

    matrix: Tensor
    particular: Tensor
    support: Tensor
    support_matrix: Tensor

    def __init__(self, factor: AffineFactor, like: Tensor, form: str = "auto") -> None:
        super().__init__()
        self.factor, self.form = factor, resolve_affine_form(form, factor.size)
        matrix = factor.null_basis() if self.form == "basis" else factor.row_basis
        self.register_buffer("matrix", matrix.to(like), persistent=False)
        self.register_buffer("particular", factor.particular.to(like), persistent=False)
        # Sparse rows (ties, small groups: V is zero outside the few columns A touches): the projector form
        # reads and writes only those columns, O(k |S|) plus one pass over v instead of two passes over V.
        columns = factor.row_basis.ne(0).any(0).nonzero().reshape(-1) if self.form == "projector" else None
        self._columns = columns if columns is not None and columns.numel() <= factor.size // 8 else None
        self._blocks: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
        if self._columns is not None:
            self.register_buffer("support", self._columns.to(like.device), persistent=False)
            self.register_buffer("support_matrix", factor.row_basis[:, self._columns].to(like), persistent=False)

    @property
    def latent_size(self) -> int:
        """d: the length of the free vector v."""
        return self.matrix.shape[1] if self.form == "basis" else self.factor.size

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> _AffineMap:
        super()._apply(fn, recurse)
        matrix = self.factor.null_basis() if self.form == "basis" else self.factor.row_basis
        self.matrix = matrix.to(self.matrix)
        self.particular = self.factor.particular.to(self.particular)
        if self._columns is not None:
            self.support_matrix = self.factor.row_basis[:, self._columns].to(self.support_matrix)
        self._blocks = {}
        return self

    def block(self, v: Tensor, start: int, stop: int) -> Tensor:
        r"""Entries ``start:stop`` of :math:`w_0 + B v` (all of them for ``0, n``)."""
        w0 = self.particular[start:stop]
        if self.form == "basis":
            return torch.addmv(w0, self.matrix[start:stop], v)
        if self._columns is not None:  # V v and V^T (V v) on the support S of V only
            local, rows = self._block_support(start, stop)
            out = w0 + v[start:stop]
            if local.numel():
                coef = self.support_matrix @ v[self.support]
                out.index_add_(0, local, self.support_matrix[:, rows].T @ coef, alpha=-1)
            return out
        V = self.matrix
        return w0 + v[start:stop] - V[:, start:stop].T @ (V @ v)

    def _block_support(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """The support columns inside ``start:stop``: their offsets in the block and their positions in S."""
        key = (start, stop)
        if key not in self._blocks:
            inside = ((self.support >= start) & (self.support < stop)).nonzero().reshape(-1)
            self._blocks[key] = (self.support[inside] - start, inside)
        return self._blocks[key]

    def inverse(self, flat: Tensor) -> Tensor:
        r"""The v with :math:`w_0 + B v = P(\text{flat})`, the projection of ``flat`` onto the set."""
        d = flat.reshape(-1) - self.particular
        if self.form == "basis":
            return self.matrix.T @ d
        return d - self.matrix.T @ (self.matrix @ d)


class NullSpace(_AffineMap):
    r"""Parametrization of one weight under :math:`A \operatorname{vec}(W) = c`:
    :math:`\operatorname{vec}(W) = w_0 + B v` (see :class:`_AffineMap`; by default :math:`B = N`, the
    orthonormal null-space basis). Right inverse: :math:`v` of the projection of :math:`W`, so a
    feasible :math:`W` is kept."""

    def __init__(self, factor: AffineFactor, like: Tensor, form: str = "auto") -> None:
        if factor.size != like.numel():
            raise ValueError(f"A has {factor.size} columns but the weight has {like.numel()} entries.")
        super().__init__(factor, like.detach(), form)
        self.shape = tuple(like.shape)

    def forward(self, v: Tensor) -> Tensor:
        return self.block(v, 0, self.factor.size).reshape(self.shape)

    def right_inverse(self, w: Tensor) -> Tensor:
        return self.inverse(w)


class AffineLatent(_AffineMap):
    r"""The shared free vector of an affine constraint over several parameters.

    :math:`\operatorname{vec}(W_1, \dots, W_k) = w_0 + B v` with one latent :math:`v` (parameter
    ``latent``); each parameter reads its block of entries through a :class:`NullSpaceSlice`.
    """

    def __init__(self, factor: AffineFactor, like: Tensor, form: str = "auto") -> None:
        super().__init__(factor, like.detach(), form)
        self.latent = nn.Parameter(like.detach().new_zeros(self.latent_size))

    def value(self) -> Tensor:
        """:math:`w_0 + B v`, the concatenated flat parameters."""
        return self.block(self.latent, 0, self.factor.size)

    @torch.no_grad()
    def assign(self, flat: Tensor) -> None:
        """Set the latent to the projection of ``flat`` (the concatenated flat parameters)."""
        self.latent.copy_(self.inverse(flat.to(self.particular)))


class NullSpaceSlice(nn.Module):
    r"""One parameter of a multi-parameter affine constraint: :math:`W_k = (w_0 + B v)[\text{block } k]`.

    Its own ``original`` is empty (the free variable is the shared ``latent.latent``). Assigning
    ``module.weight = W`` projects the concatenation with block :math:`k` replaced by ``W``.
    """

    def __init__(self, latent: AffineLatent, start: int, like: Tensor) -> None:
        super().__init__()
        self.latent = latent
        self.start, self.stop, self.shape = start, start + like.numel(), tuple(like.shape)

    def forward(self, unused: Tensor) -> Tensor:
        return self.latent.block(self.latent.latent, self.start, self.stop).reshape(self.shape)

    def right_inverse(self, w: Tensor) -> Tensor:
        flat = self.latent.value().detach().clone()
        flat[self.start : self.stop] = w.reshape(-1)
        self.latent.assign(flat)
        return w.new_empty(0)
