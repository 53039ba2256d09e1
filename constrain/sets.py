r"""Constraint sets: the *what* of constrained training.

Each set :math:`C` is described by functions :math:`g(x) \le 0` (inequalities) and
:math:`h(x) = 0` (equalities) acting on the last dimension of ``x`` (one row = one sample's
output, or one row of a weight matrix), and knows its Euclidean projection
:math:`P_C(x) = \arg\min_{y \in C} \|y - x\|_2`, its violation and its cvxpy form.
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from constrain import reference
from constrain._affine import AffineFactor, as_real_tensor, check_dims
from constrain._checks import Radius, check_finite, check_radius, check_tensor
from constrain._orthant import project_nonnegative
from constrain._simplex import project_l1_ball, project_simplex


class ConstraintSet(abc.ABC):
    r"""A closed convex set :math:`C = \{x : g(x) \le 0,\ h(x) = 0\}` acting on rows of ``x``.

    A new set is one subclass: :meth:`project`, :meth:`inequality` and/or :meth:`equality`,
    :meth:`cvxpy_constraint` and :meth:`scaled`. It states what it needs, so that targets,
    strategies and ``constrain validate`` need no edit: :attr:`size` and :attr:`shape` (what it
    acts on, checked when a target is attached), :meth:`own_scale` (its scale, for the reference
    and for relative errors) and, where one exists, :meth:`exact_projection` (a reference that
    cannot fail).
    """

    #: True when the set constrains a parameter as one flat vector ``vec(W)`` (e.g. ``A vec(W) = c``);
    #: False when it acts on each row of the parameter (its last dimension) independently.
    acts_on_flat_vector: ClassVar[bool] = False
    #: Which kinds of constraints :meth:`inequality` and :meth:`equality` return.
    has_inequalities: ClassVar[bool] = True
    has_equalities: ClassVar[bool] = False

    @abc.abstractmethod
    def project(self, x: Tensor) -> Tensor:
        """Euclidean projection of each row of ``x`` onto the set; differentiable."""

    def inequality(self, x: Tensor) -> Tensor | None:
        r""":math:`g(x)` of shape ``(..., p)``, feasible iff every entry is :math:`\le 0`; None if none."""
        return None

    def equality(self, x: Tensor) -> Tensor | None:
        r""":math:`h(x)` of shape ``(..., q)``, feasible iff every entry is :math:`0`; None if none."""
        return None

    def violation(self, x: Tensor) -> Tensor:
        r"""Per row: :math:`\max(\max_i g_i(x)^+, \max_j |h_j(x)|) \ge 0`, zero iff the row is in the set."""
        x = check_tensor(x)
        parts = []
        g, h = self.inequality(x), self.equality(x)
        if g is not None:
            parts.append(g.clamp_min(0).amax(-1) if g.shape[-1] else g.new_zeros(g.shape[:-1]))
        if h is not None:
            parts.append(h.abs().amax(-1) if h.shape[-1] else h.new_zeros(h.shape[:-1]))
        out = parts[0]
        for part in parts[1:]:
            out = torch.maximum(out, part)
        return out

    @property
    def size(self) -> int | None:
        """The length of the vector the set acts on (a row, or ``vec`` of the parameters); None: any."""
        return None

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The shape of the one parameter the set was built for (e.g. by ``Affine.tie``); None: any."""
        return None

    def check_length(self, n: int, what: str) -> None:
        """Raise ``ValueError`` unless the set acts on vectors of length ``n`` (``what``, plural, names them)."""
        if self.size is not None and n != self.size:
            raise ValueError(f"{self!r} acts on vectors of length {self.size}, but {what} have length {n}.")

    def check_parameters(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Raise ``ValueError`` unless the set can constrain parameters of these shapes (by name).

        A flat-vector set acts on the concatenated ``vec`` of every parameter; a row-wise set on
        each row ``W.reshape(W.shape[0], -1)`` of its one parameter (a 1-d parameter is one row).
        Parameters follow torch's layout: an ``nn.Linear(in_features, out_features)`` has a weight
        of shape ``(out_features, in_features)``.
        """
        shapes = {name: tuple(int(s) for s in shape) for name, shape in shapes.items()}
        listed = ", ".join(f"{name}: {shape}" for name, shape in shapes.items())
        if self.shape is not None and list(shapes.values()) != [self.shape]:
            given = " and ".join(f"{name!r} of shape {shape}" for name, shape in shapes.items())
            raise ValueError(
                f"on_parameter: {self!r} was built for a parameter of shape {self.shape}, but it is attached to "
                f"{given}. Parameters have torch's layout (out_features, in_features): nn.Linear(32, 4).weight "
                f"has shape (4, 32). Build the set for the parameter's shape."
            )
        try:
            if self.acts_on_flat_vector:
                self.check_length(sum(math.prod(s) for s in shapes.values()), f"the parameters {listed}")
                return
            for name, shape in shapes.items():
                self.check_length(math.prod(shape[1:]) if len(shape) >= 2 else math.prod(shape), f"the rows of {name}: {shape}")
        except ValueError as error:
            raise ValueError(f"on_parameter: {error}") from None

    def own_scale(self, x: Tensor) -> Tensor:
        r"""The set's own scale for each row of ``x`` (float64, shape ``x.shape[:-1]``), 0 if it has none.

        The radius of a ball or simplex, :math:`\max_i |(A^+ c)_i|` of an affine set, 0 for a cone
        through the origin. The reference solves at the unit scale :math:`\max(\max_i |x_i|, \text{own})`
        and ``constrain validate`` measures errors relative to it.
        """
        return torch.zeros(x.shape[:-1], dtype=torch.float64, device=x.device)

    def exact_projection(self, x: Tensor) -> Tensor | None:
        """An exact projection of every row of ``x`` (float64, on ``x``'s device), independent of
        :meth:`project`, or None if the set has none (the reference is then cvxpy's, KKT-certified)."""
        return None

    def contains(self, x: Tensor, tol: float = 1e-6) -> Tensor:
        """Boolean per row: violation at most ``tol``."""
        return self.violation(x) <= tol

    @abc.abstractmethod
    def cvxpy_constraint(self, var: Any) -> list:
        """The set as a list of cvxpy constraints on the 1-d cvxpy variable ``var``."""

    @abc.abstractmethod
    def scaled(self, t: float) -> ConstraintSet:
        r"""The set :math:`t C` for :math:`t > 0` (every set here is a cone or an affine set)."""

    def row_sets(self, x: Tensor) -> Iterator[ConstraintSet]:
        """The set each row of ``x`` is projected onto (differs only with per-row parameters)."""
        return itertools.repeat(self)

    def reference_projection(self, x: Tensor, method: str = "auto") -> Tensor:
        """The reference projection of every row of ``x`` (float64): the ground truth for :meth:`project`.

        :meth:`exact_projection` where the set has one, else cvxpy (``method="cvxpy"``: always cvxpy)."""
        return reference.reference_projection(self, x, method)

    @property
    def needs_inputs(self) -> bool:
        """True when a parameter of the set is a callable of the model's input (see :meth:`bind`)."""
        return False

    def bind(self, *inputs: Any) -> ConstraintSet:
        """The set with every callable parameter evaluated on the model's ``inputs`` (self if none)."""
        return self


class _RadiusSet(ConstraintSet):
    """A set with a radius ``r``: a positive float, or a tensor with one radius per row."""

    def __init__(self, radius: Radius = 1.0) -> None:
        if isinstance(radius, Tensor):
            check_radius(radius, radius, radius.shape)  # positive and finite
        else:
            check_radius(radius, torch.empty(0, dtype=torch.float64), torch.Size())
        self.radius = radius

    def __repr__(self) -> str:
        r = self.radius if not isinstance(self.radius, Tensor) else f"tensor{tuple(self.radius.shape)}"
        return f"{type(self).__name__}(radius={r})"

    def radius_like(self, x: Tensor) -> Tensor:
        """The radius for each row of ``x``, shape ``x.shape[:-1] + (1,)``."""
        return check_radius(self.radius, x, x.shape[:-1])

    def scaled(self, t: float) -> _RadiusSet:
        return type(self)(self.radius * t)

    def own_scale(self, x: Tensor) -> Tensor:
        return self.radius_like(x.detach().double()).squeeze(-1)

    #: ``(row, radius) -> projection`` of one 1-d float64 array, exact (see :mod:`constrain.reference`).
    _exact_row: ClassVar[staticmethod[[np.ndarray, float], np.ndarray]]

    def exact_projection(self, x: Tensor) -> Tensor:
        x64 = check_tensor(x).detach().to("cpu", torch.float64)
        if x.dim() == 0:
            raise ValueError("x must have at least one dimension (the vector to project); got a 0-d tensor.")
        rows = x64.reshape(-1, x.shape[-1]).numpy()
        radii = self.radius_like(x64).reshape(-1).tolist()
        out = [type(self)._exact_row(row, r) if row.size else row for row, r in zip(rows, radii, strict=True)]
        return torch.from_numpy(np.stack(out) if out else rows).reshape(x.shape).to(x.device)

    def check_parameters(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        super().check_parameters(shapes)
        if isinstance(self.radius, Tensor):  # one radius per row: the rows must match
            for name, shape in shapes.items():
                rows = torch.Size([shape[0] if len(shape) >= 2 else 1])
                try:
                    check_radius(self.radius, torch.empty(0, dtype=torch.float64), rows)
                except ValueError:
                    raise ValueError(
                        f"on_parameter: {self!r} has radius of shape {tuple(self.radius.shape)}, but {name!r} "
                        f"{tuple(shape)} has {rows[0]} row(s); give one radius per row (output unit) or a float."
                    ) from None

    def row_sets(self, x: Tensor) -> Iterator[ConstraintSet]:
        if not isinstance(self.radius, Tensor):
            return itertools.repeat(self)
        radii = self.radius_like(x.detach().double()).reshape(-1).tolist()
        return (type(self)(r) for r in radii)


class L1Ball(_RadiusSet):
    r""":math:`\{x : \|x\|_1 \le r\}` along the last dimension; ``radius`` a float or one per row."""

    _exact_row = staticmethod(reference.exact_l1_ball)

    def project(self, x: Tensor) -> Tensor:
        return project_l1_ball(x, self.radius)

    def inequality(self, x: Tensor) -> Tensor:
        return x.abs().sum(-1, keepdim=True) - self.radius_like(x)

    def cvxpy_constraint(self, var: Any) -> list:
        import cvxpy as cp

        return [cp.norm1(var) <= float(self.radius)]


class Simplex(_RadiusSet):
    r""":math:`\{x : x \ge 0,\ \sum_i x_i = r\}` along the last dimension; the kernel of the L1 ball."""

    has_equalities = True

    _exact_row = staticmethod(reference.exact_simplex)

    def project(self, x: Tensor) -> Tensor:
        return project_simplex(x, self.radius)

    def inequality(self, x: Tensor) -> Tensor:
        return -x

    def equality(self, x: Tensor) -> Tensor:
        return x.sum(-1, keepdim=True) - self.radius_like(x)

    def cvxpy_constraint(self, var: Any) -> list:
        import cvxpy as cp

        return [var >= 0, cp.sum(var) == float(self.radius)]


class NonNegative(ConstraintSet):
    r"""The orthant :math:`\{x : x \ge 0\}`, elementwise."""

    def __repr__(self) -> str:
        return "NonNegative()"

    def project(self, x: Tensor) -> Tensor:
        return project_nonnegative(x)

    def inequality(self, x: Tensor) -> Tensor:
        return -x

    def cvxpy_constraint(self, var: Any) -> list:
        return [var >= 0]

    def scaled(self, t: float) -> NonNegative:
        return self

    def exact_projection(self, x: Tensor) -> Tensor:
        return check_tensor(x).detach().double().clamp_min(0.0)  # max(x, 0) is exact in floating point


class Affine(ConstraintSet):
    r""":math:`\{w \in \mathbb{R}^n : A w = c\}`; on a parameter ``W`` it constrains ``vec(W) = W.reshape(-1)``.

    ``A`` (m, n) may be rank deficient as long as the system is consistent; an inconsistent
    system raises ``ValueError`` at construction. The factorization is computed once.

    ``c`` is a constant (a float for every entry, or shape ``(m,)``) or, on outputs only, one row per
    sample ``(batch, m)`` or a callable ``f(*inputs) -> (batch, m)`` of the model's input, exactly as the
    right-hand sides of :class:`constrain.Polyhedron` (whose machinery carries it: :meth:`bind`, the
    per-sample projection :math:`x - V^\top V x + A^+ c_i`, the per-sample consistency check).
    """

    acts_on_flat_vector = True
    has_inequalities = False
    has_equalities = True

    def __init__(self, A: Tensor | np.ndarray | Sequence, c: Any = 0.0, *, shape: Sequence[int] | None = None) -> None:
        A_t = as_real_tensor(A, "A")
        if A_t.dim() == 1:
            A_t = A_t.unsqueeze(0)
        if A_t.dim() != 2:
            raise ValueError(f"A must be a matrix of shape (m, n) or one row of shape (n,), got shape {tuple(A_t.shape)}.")
        if isinstance(c, (int, float)):
            c = torch.full((A_t.shape[0],), float(c), dtype=torch.float64, device=A_t.device)
        self._varying: Any = None  # a Polyhedron(A, b=c) when c is per sample or a callable
        if callable(c) or as_real_tensor(c, "c").dim() == 2:
            from constrain._polyhedron_sets import Polyhedron, RightHandSideValue

            zero = torch.zeros(A_t.shape[0], dtype=torch.float64, device=A_t.device)
            self._varying = Polyhedron._with(Polyhedron(A=A_t), RightHandSideValue(c, "c", A_t.shape[0]), None)
            c = zero
        c_t = as_real_tensor(c, "c")
        self.factor = AffineFactor.of(A_t, c_t)
        self.A = A_t.detach().to(device=self.factor.row_basis.device, dtype=torch.float64)
        self._c = c_t.detach().reshape(-1).to(device=self.factor.row_basis.device, dtype=torch.float64)
        self._shape = _check_shape(shape, self.factor.size) if shape is not None else None

    @classmethod
    def _from_factor(cls, A: Tensor, c: Tensor, factor: AffineFactor, shape: tuple[int, ...] | None) -> Affine:
        new = cls.__new__(cls)
        new.A, new._c, new.factor, new._shape, new._varying = A, c, factor, shape, None
        return new

    def _with_varying(self, varying: Any) -> Affine:
        """This set with another per-sample or callable right-hand side (a bound or scaled Polyhedron)."""
        new = Affine._from_factor(self.A, self._c, self.factor, self._shape)
        new._varying = varying
        return new

    @property
    def c(self) -> Tensor | Callable[..., Tensor]:
        """The right-hand side: the constant ``(m,)``, the per-sample ``(batch, m)`` or the callable."""
        return self._c if self._varying is None else self._varying.b

    @property
    def per_sample(self) -> bool:
        """True when ``c`` is one row per sample or a callable of the model's input (outputs only)."""
        return self._varying is not None

    @classmethod
    def tie(cls, shape: Sequence[int] | int, groups: Iterable[Sequence[Sequence[int] | int]]) -> Affine:
        """Tying constraint on a tensor of ``shape``: within each group, all listed entries are equal.

        ``shape`` is the parameter's shape in torch's layout: ``(out_features, in_features)`` for
        the weight of ``nn.Linear(in_features, out_features)``. The set remembers it, and attaching
        it to a parameter of another shape is an error (even when the sizes agree).
        ``groups``: e.g. ``[[(0, 0), (1, 1)], [(0, 2), (2, 0), (3, 3)]]`` ties ``w[0,0] = w[1,1]``
        and ``w[0,2] = w[2,0] = w[3,3]``. Each group needs at least two index tuples.
        """
        shape = _as_shape(shape)
        if isinstance(groups, (str, bytes)) or not isinstance(groups, Iterable):
            raise TypeError(f"groups must be a list of groups of indices, got {type(groups).__name__}.")
        n = int(np.prod(shape))
        rows = []
        for g, group in enumerate(groups):
            flat = []
            for index in group:
                index = (index,) if isinstance(index, (int, np.integer)) else tuple(index)
                if len(index) != len(shape) or any(not 0 <= i < s for i, s in zip(index, shape, strict=True)):
                    raise ValueError(f"groups[{g}] has index {index}, which is not an index of shape {shape}.")
                if int(np.ravel_multi_index(index, shape)) in flat:
                    raise ValueError(f"groups[{g}] lists index {index} twice; list each tied entry once.")
                flat.append(int(np.ravel_multi_index(index, shape)))
            if len(flat) < 2:
                raise ValueError(f"groups[{g}] has {len(flat)} index; a tied group needs at least two.")
            for other in flat[1:]:
                row = np.zeros(n)
                row[flat[0]], row[other] = 1.0, -1.0
                rows.append(row)
        if not rows:
            raise ValueError("groups is empty: give at least one group of indices to tie.")
        return cls(np.stack(rows), np.zeros(len(rows)), shape=shape)

    def __repr__(self) -> str:
        shape = f", shape {self._shape}" if self._shape is not None else ""
        varying = f", c: {self._varying._b.describe()}" if self._varying is not None else ""
        return f"Affine(A: {tuple(self.A.shape)}, rank {self.factor.rank}{varying}{shape})"

    @property
    def size(self) -> int:
        """n, the length of the constrained vector."""
        return self.factor.size

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The parameter shape given at construction (``Affine.tie`` always gives one), or None."""
        return self._shape

    @property
    def needs_inputs(self) -> bool:
        return self._varying is not None and self._varying.needs_inputs

    def bind(self, *inputs: Any) -> Affine:
        if not self.needs_inputs:
            return self
        return self._with_varying(self._varying.bind(*inputs))

    def check_length(self, n: int, what: str) -> None:
        if n != self.size:
            raise ValueError(
                f"A has {self.size} columns but {what} have {n} entries in all; A must have one column per entry "
                f"of vec(W) (row-major flattening)."
            )

    def check_parameters(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        if self._varying is not None:
            raise ValueError(
                f"on_parameter: {self!r} has a right-hand side per sample or from the model's input, which applies to "
                f"outputs only; give a parameter constraint a constant c of shape ({self.A.shape[0]},)."
            )
        super().check_parameters(shapes)

    def own_scale(self, x: Tensor) -> Tensor:
        if self._varying is not None:  # max_i |(A^+ c)_i| of each row's own c
            rows = x.detach().double().reshape(-1, self.size)
            c = self._varying._b.rows(rows, rows.shape[0])
            scale = (c @ self._varying._factor.E.to(c).T).abs().amax(-1)
            return scale.expand(rows.shape[0]).reshape(x.shape[:-1])
        particular = self.factor.particular
        scale = float(particular.abs().max()) if particular.numel() else 0.0
        return torch.full(x.shape[:-1], scale, dtype=torch.float64, device=x.device)

    def project(self, x: Tensor) -> Tensor:
        x = check_tensor(x)
        check_dims(x, self.size)
        if self._varying is not None:  # x - V^T V x + A^+ c_i per row; an inconsistent c_i names its sample
            return self._varying.project(x)
        if x.numel():
            check_finite(x.sum(-1))
        return self.factor.project(x)

    def complete(self, x: Tensor) -> Tensor:
        r"""The null-space completion :math:`x - V^\top V x + A^+ c` of each row, as plain differentiable
        matrix products (for an affine set it is the projection, without the finiteness checks)."""
        check_dims(x, self.size)
        if self._varying is not None:
            return self._varying.complete(x)
        return self.factor.project(x)

    def equality(self, x: Tensor) -> Tensor:
        check_dims(x, self.size)
        if self._varying is not None:
            return self._varying.equality(x)
        A, c = self.A.to(device=x.device, dtype=x.dtype), self._c.to(device=x.device, dtype=x.dtype)
        return x @ A.T - c

    def cvxpy_constraint(self, var: Any) -> list:
        if self._varying is not None:
            raise ValueError(f"{self!r} has one c per row; take the set of one row from row_sets(x).")
        return [self.A.cpu().numpy() @ var == self._c.cpu().numpy()]

    def row_sets(self, x: Tensor) -> Iterator[ConstraintSet]:
        if self._varying is None:
            return itertools.repeat(self)
        return (Affine(self.A, row.b) for row in self._varying.row_sets(x))

    def scaled(self, t: float) -> Affine:
        if self._varying is not None:
            return self._with_varying(self._varying.scaled(t))
        factor = AffineFactor(self.factor.row_basis, self.factor.particular * t)
        return Affine._from_factor(self.A, self._c * t, factor, self._shape)


def _as_shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    """``shape`` as a tuple of ints; a clear error for anything else."""
    try:
        return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise TypeError(f"shape must be an int or a sequence of ints such as (4, 3), got {shape!r}.") from None


def _check_shape(shape: Sequence[int] | int, size: int) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints whose product is ``size`` (the columns of ``A``)."""
    out = _as_shape(shape)
    if any(s < 0 for s in out) or math.prod(out) != size:
        raise ValueError(f"shape {out} has {math.prod(out)} entries but A has {size} columns; give the parameter's shape.")
    return out
