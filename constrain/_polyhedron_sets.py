r"""General linear constraint sets on rows: :class:`Polyhedron` :math:`\{y : A y = b, G y \le h\}` and
:class:`Box` :math:`\{y : l \le y \le u\}`.

Every right-hand side (``b``, ``h``, ``lower``, ``upper``) is one of

- a constant: a tensor, array or list of shape ``(m,)`` (a float for a box bound: every entry);
- one per row (per sample): shape ``(batch, m)``, row ``i`` of the input uses row ``i``;
- a callable ``f(*inputs) -> (batch, m)`` of the model's input. A strategy evaluates it on the input
  of the forward that produced the outputs (:meth:`ConstraintSet.bind`); the set itself cannot
  project until it is bound.

A right-hand side given as a tensor that requires grad receives gradients through the projection.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from constrain._affine import as_real_tensor
from constrain._checks import check_finite, check_tensor
from constrain._polyhedron import PolyhedronFactor, project_polyhedron_rows
from constrain.sets import ConstraintSet

RightHandSide = Tensor | np.ndarray | list | float | Callable[..., Tensor] | None


class RightHandSideValue:
    """One right-hand side: a float, a ``(m,)`` or ``(batch, m)`` tensor, or a callable of the inputs."""

    def __init__(self, value: Any, name: str, size: int | None, scalar_ok: bool = False) -> None:
        self.name, self.size = name, size
        self.fn: Callable[..., Tensor] | None = None
        self.value: Tensor | float | None = None
        if callable(value) and not isinstance(value, (Tensor, np.ndarray)):
            self.fn = value
            return
        if scalar_ok and isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not np.isfinite(float(value)):
                raise ValueError(f"{name} must be finite, got {value}; leave a side out (None) to drop it.")
            self.value = float(value)
            return
        self.value = self._checked(as_real_tensor(value, name), f"{name}")

    def _checked(self, t: Tensor, what: str, rows: int | None = None, finite: bool = True) -> Tensor:
        if not isinstance(t, Tensor):
            raise TypeError(f"{what} must return a tensor of shape (batch, {self.size or 'm'}), got {type(t).__name__}.")
        if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{what} must be a real tensor, got dtype {t.dtype}.")
        t = t if t.is_floating_point() else t.double()
        if (
            t.dim() == 0
            or t.dim() > 2
            or (self.size is not None and t.shape[-1] != self.size)
            or (rows is not None and t.dim() == 2 and t.shape[0] != rows)
        ):
            want = f"({self.size},) or (batch, {self.size})" if self.size is not None else "(n,) or (batch, n)"
            if rows is not None:
                want = f"({rows}, {self.size if self.size is not None else 'n'})"
            raise ValueError(f"{what} has shape {tuple(t.shape)}; expected {want} (one entry per constraint row).")
        if finite:
            check_finite(t.detach().sum(-1) if t.numel() else t.detach(), what)
        return t

    @property
    def is_callable(self) -> bool:
        return self.fn is not None

    @property
    def per_row(self) -> bool:
        return isinstance(self.value, Tensor) and self.value.dim() == 2

    def bound(self, inputs: tuple) -> RightHandSideValue:
        """This side with a callable evaluated on ``inputs``."""
        if self.fn is None:
            return self
        out = RightHandSideValue.__new__(RightHandSideValue)
        out.name, out.size, out.fn = f"{self.name}(inputs)", self.size, None
        # non-finite values are let through here (a NaN input gives NaN constraint values, which the strategies
        # report as a non-finite step); project() refuses them
        out.value = self._checked(self.fn(*inputs), f"{self.name}(inputs)", finite=False)
        if out.value.dim() == 1:
            out.value = out.value.unsqueeze(0)
        return out

    def rows(self, x: Tensor, rows: int, finite: bool = False) -> Tensor | float:
        """The value for ``rows`` rows on ``x``'s device and dtype: ``(rows, m)`` or ``(1, m)`` (or a float);
        ``finite``: refuse NaN or Inf (projections; constraint values let them through)."""
        if self.fn is not None:
            raise ValueError(
                f"{self.name} is a callable of the model's input: bind the set first, set.bind(inputs) (a strategy "
                f"does this with the input of each forward), or pass a tensor."
            )
        if isinstance(self.value, float):
            return self.value
        assert self.value is not None  # value is None only for a callable side, refused above
        v = self.value.to(device=x.device, dtype=x.dtype)
        if finite:
            check_finite(v.detach().sum(-1) if v.numel() else v.detach(), self.name)
        if v.dim() == 2 and v.shape[0] != rows:
            raise ValueError(
                f"{self.name} has one row per sample, shape {tuple(v.shape)}, but the input has {rows} rows; "
                f"give one row of {self.name} per row of the input (or a callable of the model's input)."
            )
        return v if v.dim() == 2 else v.unsqueeze(0)

    def row(self, i: int) -> Any:
        """Row ``i`` of a per-row side (the constant otherwise)."""
        return self.value[i] if self.per_row else self.value  # type: ignore[index]  # per_row holds only for a 2-d Tensor value

    def scaled(self, t: float) -> RightHandSideValue:
        out = RightHandSideValue.__new__(RightHandSideValue)
        out.name, out.size = self.name, self.size
        if self.fn is not None:
            fn = self.fn
            out.fn, out.value = (lambda *inputs: t * fn(*inputs)), None
        else:
            assert self.value is not None  # value is None only for a callable side (fn set)
            out.fn, out.value = None, self.value * t
        return out

    def describe(self) -> str:
        if self.fn is not None:
            return "f(inputs)"
        if isinstance(self.value, float):
            return f"{self.value:g}"
        assert self.value is not None  # value is None only for a callable side, handled above
        return f"tensor{tuple(self.value.shape)}"


def _tensor(value: Tensor | float | None) -> Tensor:
    """A Polyhedron's right-hand side as the tensor it always is (floats are for Box bounds only)."""
    assert isinstance(value, Tensor), "Polyhedron right-hand sides are tensors"
    return value


def _rows_of(x: Tensor, n: int, what: str) -> Tensor:
    x = check_tensor(x)
    if x.dim() == 0 or x.shape[-1] != n:
        raise ValueError(
            f"x has shape {tuple(x.shape)} but {what} acts on vectors of length {n}: the last dimension of x must be {n}."
        )
    return x.reshape(-1, n)


def _matrix(M: Any, name: str) -> Tensor:
    t = as_real_tensor(M, name)
    if t.is_complex():
        raise TypeError(f"{name} must be real, got dtype {t.dtype}.")
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise ValueError(f"{name} must be a matrix of shape (m, n) or one row of shape (n,), got shape {tuple(t.shape)}.")
    t = t.detach().to(torch.float64)
    check_finite(t, name)
    return t


class Polyhedron(ConstraintSet):
    r""":math:`\{y \in \mathbb{R}^n : A y = b,\ G y \le h\}` on the last dimension; either part may be absent.

    ``A`` (m_e, n) and ``G`` (m_i, n) are constant matrices (a rank-deficient ``A`` and redundant rows
    of ``G`` are fine); ``b`` and ``h`` are right-hand sides (see the module doc: constant, per row, or
    a callable of the model's input); ``b`` and ``h`` default to zeros. :meth:`project` is exact
    (certified active set) and differentiable in ``x``, ``b`` and ``h`` with the exact Jacobian.
    """

    def __init__(self, A: Any = None, b: RightHandSide = None, G: Any = None, h: RightHandSide = None) -> None:
        if A is None and G is None:
            raise ValueError("Polyhedron needs A (equalities A y = b) or G (inequalities G y <= h), or both.")
        if A is None and b is not None:
            raise ValueError("b is given without A: the equalities are A y = b; pass A too.")
        if G is None and h is not None:
            raise ValueError("h is given without G: the inequalities are G y <= h; pass G too.")
        A64 = None if A is None else _matrix(A, "A")
        G64 = None if G is None else _matrix(G, "G")
        if A64 is not None and G64 is not None and A64.shape[1] != G64.shape[1]:
            raise ValueError(
                f"A has {A64.shape[1]} columns and G has {G64.shape[1]}: both act on the same vector y, so they need "
                f"the same number of columns."
            )
        n = (A64 if A64 is not None else G64).shape[1]  # type: ignore[union-attr]  # A or G is given (checked above)
        if n == 0:
            raise ValueError("A and G have no columns: there is nothing to constrain.")
        if A64 is not None and G64 is not None and A64.device != G64.device:
            G64 = G64.to(A64.device)
        self.A, self.G = A64, G64
        self._factor = PolyhedronFactor(A64, G64, n)
        self._b = (
            None
            if A64 is None
            else RightHandSideValue(torch.zeros(A64.shape[0], dtype=torch.float64) if b is None else b, "b", A64.shape[0])
        )
        self._h = (
            None
            if G64 is None
            else RightHandSideValue(torch.zeros(G64.shape[0], dtype=torch.float64) if h is None else h, "h", G64.shape[0])
        )
        self.has_equalities = A64 is not None  # type: ignore[misc]  # per instance: a Polyhedron may lack either part
        self.has_inequalities = G64 is not None  # type: ignore[misc]  # (the base class states it per class)

    @classmethod
    def _with(cls, like: Polyhedron, b: RightHandSideValue | None, h: RightHandSideValue | None) -> Polyhedron:
        new = cls.__new__(cls)
        new.__dict__.update(like.__dict__)
        new._b, new._h = b, h
        return new

    def __repr__(self) -> str:
        parts = []
        if self.A is not None:
            parts.append(f"A: {tuple(self.A.shape)}, b: {self._b.describe()}")  # type: ignore[union-attr]  # _b is set whenever A is (__init__; _with keeps it)
        if self.G is not None:
            parts.append(f"G: {tuple(self.G.shape)}, h: {self._h.describe()}")  # type: ignore[union-attr]  # _h is set whenever G is (__init__; _with keeps it)
        return f"Polyhedron({'; '.join(parts)})"

    @property
    def size(self) -> int:
        """n, the length of each constrained row."""
        return self._factor.n

    @property
    def b(self) -> Tensor | Callable | None:
        return None if self._b is None else (self._b.fn or _tensor(self._b.value))

    @property
    def h(self) -> Tensor | Callable | None:
        return None if self._h is None else (self._h.fn or _tensor(self._h.value))

    @property
    def needs_inputs(self) -> bool:
        return any(s is not None and s.is_callable for s in (self._b, self._h))

    def bind(self, *inputs: Any) -> Polyhedron:
        if not self.needs_inputs:
            return self
        return self._with(
            self, None if self._b is None else self._b.bound(inputs), None if self._h is None else self._h.bound(inputs)
        )

    def _sides(self, rows: Tensor, finite: bool = False) -> tuple[Tensor | None, Tensor | None]:
        B = rows.shape[0]
        b = None if self._b is None else _tensor(self._b.rows(rows, B, finite))
        h = None if self._h is None else _tensor(self._h.rows(rows, B, finite))
        return b, h

    def project(self, x: Tensor) -> Tensor:
        rows = _rows_of(x, self.size, repr(self))
        b, h = self._sides(rows, finite=True)
        B = rows.shape[0]
        b = None if b is None else b.expand(B, -1)
        h = None if h is None else h.expand(B, -1)
        return project_polyhedron_rows(self._factor, rows, b, h).reshape(x.shape)

    def complete(self, x: Tensor) -> Tensor:
        r"""Null-space completion :math:`P x + A^+ b` of each row (:math:`P = I - A^+ A`): the point of
        :math:`\{A y = b\}` nearest to ``x``, written with plain differentiable matrix products; ``x`` itself
        without equalities. The inequalities are not enforced."""
        rows = _rows_of(x, self.size, repr(self))
        if self.A is None:
            return x
        b, _ = self._sides(rows)
        assert b is not None and self._factor.V is not None and self._factor.E is not None, "A comes with b, V and E"
        V, E = self._factor.V.to(rows), self._factor.E.to(rows)
        return (rows - (rows @ V.T) @ V + b @ E.T).reshape(x.shape)

    def chebyshev_center(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Per row of ``x`` (only its row count, device and dtype are used): the centre :math:`c` and radius
        :math:`t` of the largest ball inside :math:`\{G y \le h\}` within :math:`\{A y = b\}`, from the LP
        :math:`\max t` s.t. :math:`A c = b`, :math:`G_i c + t \|G_i\| \le h_i`, :math:`t \le 1 + \max|h|`
        (scipy's HiGHS, on the CPU; one LP per distinct row). Raises ``ValueError`` naming the sample whose
        polytope has no interior."""
        from scipy.optimize import linprog

        if self.G is None:
            raise ValueError(f"{self!r} has no inequalities: every point of A y = b is a centre; use complete(x).")
        rows = _rows_of(x, self.size, repr(self))
        b, h = self._sides(rows.detach().double())
        assert h is not None, "G comes with h"
        n, B = self.size, rows.shape[0]
        G = self.G.cpu().numpy()
        norms = np.linalg.norm(G, axis=1)
        A = None if self.A is None else np.hstack([self.A.cpu().numpy(), np.zeros((self.A.shape[0], 1))])
        hs = h.detach().cpu().numpy()
        bs = None if b is None else b.detach().cpu().numpy()
        distinct = 1 if hs.shape[0] == 1 and (bs is None or bs.shape[0] == 1) else B
        centers, radii = np.zeros((distinct, n)), np.zeros(distinct)
        for i in range(distinct):
            hi = hs[min(i, hs.shape[0] - 1)]
            result = linprog(
                c=np.r_[np.zeros(n), -1.0],
                A_ub=np.hstack([G, norms[:, None]]),
                b_ub=hi,
                A_eq=A,
                b_eq=None if bs is None else bs[min(i, bs.shape[0] - 1)],
                bounds=[(None, None)] * n + [(None, 1.0 + float(np.abs(hi).max()))],
                method="highs",
            )
            if result.status != 0 or -result.fun <= 0:
                raise ValueError(
                    f"{self!r} has no interior for sample {i} (Chebyshev radius "
                    f"{'undefined: the LP is ' + result.message if result.status else f'{-result.fun:.3g}'}); "
                    f"a ray map needs a strictly feasible point. Use 'projected' instead."
                )
            centers[i], radii[i] = result.x[:n], -result.fun
        c = torch.as_tensor(centers, dtype=x.dtype, device=x.device).expand(B, n)
        return c, torch.as_tensor(radii, dtype=x.dtype, device=x.device).expand(B)

    def inequality(self, x: Tensor) -> Tensor | None:
        if self.G is None:
            return None
        rows = _rows_of(x, self.size, repr(self))
        _, h = self._sides(rows)
        assert h is not None, "G comes with h"
        return (rows @ self.G.to(rows).T - h).reshape(*x.shape[:-1], -1)

    def equality(self, x: Tensor) -> Tensor | None:
        if self.A is None:
            return None
        rows = _rows_of(x, self.size, repr(self))
        b, _ = self._sides(rows)
        assert b is not None, "A comes with b"
        return (rows @ self.A.to(rows).T - b).reshape(*x.shape[:-1], -1)

    def cvxpy_constraint(self, var: Any) -> list:
        if any(s is not None and (s.is_callable or s.per_row) for s in (self._b, self._h)):
            raise ValueError(f"{self!r} has one polytope per row; take the set of one row from row_sets(x).")
        out = []
        if self.A is not None:
            out.append(self.A.cpu().numpy() @ var == self._b.value.detach().cpu().double().numpy())  # type: ignore[union-attr]  # _b is set with A; a tensor, not callable (refused above)
        if self.G is not None:
            out.append(self.G.cpu().numpy() @ var <= self._h.value.detach().cpu().double().numpy())  # type: ignore[union-attr]  # _h is set with G; a tensor, not callable (refused above)
        return out

    def scaled(self, t: float) -> Polyhedron:
        return self._with(self, None if self._b is None else self._b.scaled(t), None if self._h is None else self._h.scaled(t))

    def row_sets(self, x: Tensor) -> Iterator[ConstraintSet]:
        sides = [s for s in (self._b, self._h) if s is not None]
        if any(s.is_callable for s in sides):
            raise ValueError(f"{self!r} has a callable right-hand side: bind it to the model's input first, set.bind(inputs).")
        if not any(s.per_row for s in sides):
            return itertools.repeat(self)
        rows = x.reshape(-1, self.size).shape[0]
        for s in sides:
            s.rows(x, rows)  # checks the row count
        return (
            self._with(
                self,
                None if self._b is None else RightHandSideValue(self._b.row(i).detach(), "b", self._b.size),
                None if self._h is None else RightHandSideValue(self._h.row(i).detach(), "h", self._h.size),
            )
            for i in range(rows)
        )


class Box(ConstraintSet):
    r""":math:`\{y : l \le y \le u\}` elementwise; ``lower`` or ``upper`` may be None (that side absent).

    A bound is a float (every entry), a tensor ``(n,)`` or ``(batch, n)``, or a callable of the model's
    input. The projection is the clamp :math:`\min(\max(x, l), u)`; rows whose ``lower`` exceeds their
    ``upper`` are empty and refused by index.
    """

    has_equalities = False

    def __init__(self, lower: RightHandSide = None, upper: RightHandSide = None) -> None:
        if lower is None and upper is None:
            raise ValueError("Box needs lower, upper or both; with neither it constrains nothing.")
        size = None
        for value in (lower, upper):
            if isinstance(value, (Tensor, np.ndarray, list, tuple)):
                shape = as_real_tensor(value, "bound").shape
                if len(shape):
                    if size is not None and shape[-1] != size:
                        raise ValueError(f"lower and upper have {size} and {shape[-1]} entries per row; they must match.")
                    size = shape[-1]
        self._lower = None if lower is None else RightHandSideValue(lower, "lower", size, scalar_ok=True)
        self._upper = None if upper is None else RightHandSideValue(upper, "upper", size, scalar_ok=True)
        self._check_order()

    def __repr__(self) -> str:
        lo = "None" if self._lower is None else self._lower.describe()
        up = "None" if self._upper is None else self._upper.describe()
        return f"Box(lower={lo}, upper={up})"

    @property
    def size(self) -> int | None:
        """n when a bound is a tensor; None when both are floats or callables (any n)."""
        return next((s.size for s in (self._lower, self._upper) if s is not None and s.size is not None), None)

    @property
    def lower(self) -> Any:
        return None if self._lower is None else (self._lower.fn or self._lower.value)

    @property
    def upper(self) -> Any:
        return None if self._upper is None else (self._upper.fn or self._upper.value)

    @property
    def needs_inputs(self) -> bool:
        return any(s is not None and s.is_callable for s in (self._lower, self._upper))

    def _check_order(self) -> None:
        lo, up = self._lower, self._upper
        if lo is None or up is None or lo.is_callable or up.is_callable:
            return
        diff = torch.as_tensor(lo.value, dtype=torch.float64) - torch.as_tensor(up.value, dtype=torch.float64).to(
            torch.as_tensor(lo.value).device
        )
        if bool((diff.detach() > 0).any()):
            bad = (diff.detach() > 0).nonzero()[0].tolist()
            where = f"sample {bad[0]}, entry {bad[1]}" if diff.dim() == 2 else (f"entry {bad[0]}" if bad else "")
            raise ValueError(f"Box is empty at {where}: lower > upper there. Every lower bound must be <= its upper bound.")

    def bind(self, *inputs: Any) -> Box:
        if not self.needs_inputs:
            return self
        new = Box.__new__(Box)
        new._lower = None if self._lower is None else self._lower.bound(inputs)
        new._upper = None if self._upper is None else self._upper.bound(inputs)
        new._check_order()
        return new

    def _bounds(self, x: Tensor, finite: bool = False) -> tuple[Tensor, Tensor | float | None, Tensor | float | None]:
        n = self.size if self.size is not None else (x.shape[-1] if x.dim() else 0)
        rows = _rows_of(x, n, repr(self))
        B = rows.shape[0]
        lo = None if self._lower is None else self._lower.rows(rows, B, finite)
        up = None if self._upper is None else self._upper.rows(rows, B, finite)
        return rows, lo, up

    def project(self, x: Tensor) -> Tensor:
        rows, lo, up = self._bounds(x, finite=True)
        if rows.numel():
            check_finite(rows.sum(-1))
        y = rows
        if lo is not None:
            y = torch.clamp(y, min=lo) if isinstance(lo, float) else torch.maximum(y, lo)
        if up is not None:
            y = torch.clamp(y, max=up) if isinstance(up, float) else torch.minimum(y, up)
        return y.reshape(x.shape)

    def inequality(self, x: Tensor) -> Tensor:
        rows, lo, up = self._bounds(x)
        parts = []
        if lo is not None:
            parts.append(lo - rows)
        if up is not None:
            parts.append(rows - up)
        return torch.cat([p.expand_as(rows) for p in parts], -1).reshape(*x.shape[:-1], -1)

    def cvxpy_constraint(self, var: Any) -> list:
        out = []
        for side, op in ((self._lower, "lower"), (self._upper, "upper")):
            if side is None:
                continue
            if side.is_callable or side.per_row:
                raise ValueError(f"{self!r} has one box per row; take the set of one row from row_sets(x).")
            v = side.value if isinstance(side.value, float) else side.value.detach().cpu().double().numpy()  # type: ignore[union-attr]  # None only for a callable side, refused above
            out.append(var >= v if op == "lower" else var <= v)
        return out

    def scaled(self, t: float) -> Box:
        new = Box.__new__(Box)
        new._lower = None if self._lower is None else self._lower.scaled(t)
        new._upper = None if self._upper is None else self._upper.scaled(t)
        return new

    def row_sets(self, x: Tensor) -> Iterator[ConstraintSet]:
        sides = [s for s in (self._lower, self._upper) if s is not None]
        if any(s.is_callable for s in sides):
            raise ValueError(f"{self!r} has a callable bound: bind it to the model's input first, set.bind(inputs).")
        if not any(s.per_row for s in sides):
            return itertools.repeat(self)
        rows, _, _ = self._bounds(x)

        def one(i: int) -> Box:
            new = Box.__new__(Box)
            new._lower = (
                None if self._lower is None else RightHandSideValue(_plain(self._lower.row(i)), "lower", self._lower.size, True)
            )
            new._upper = (
                None if self._upper is None else RightHandSideValue(_plain(self._upper.row(i)), "upper", self._upper.size, True)
            )
            return new

        return (one(i) for i in range(rows.shape[0]))


def _plain(v: Any) -> Any:
    return v.detach() if isinstance(v, Tensor) else v
