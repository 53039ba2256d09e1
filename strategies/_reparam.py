r"""Reparameterization strategies: train free variables and map them onto the set.

Weights use :func:`torch.nn.utils.parametrize.register_parametrization` with the modules below;
each has a ``right_inverse``, so weights that are already feasible are kept (up to rounding) and
infeasible ones start from a nearby feasible point. ``model.lin.weight`` still resolves (it is the
mapped value); the free variable lives at ``lin.parametrizations.weight.original``.

=================  ==========================  ====================================================
set, where         map (option value)          math
=================  ==========================  ====================================================
NonNegative, W     ``softplus`` / ``exp`` /    :math:`w = \log(1 + e^v)`, :math:`e^v`, :math:`v^2`
                   ``square``
NonNegative, y     same names                  the same maps on the output rows
Affine, W          ``null-space``              :math:`\operatorname{vec} W = w_0 + N v`, :math:`A N = 0`
                                               (large W: :math:`w_0 + (I - V^\top V) v`)
L1Ball, W rows     ``l1-weight-norm``          :math:`w_j = g_j v_j / \|v_j\|_1`, :math:`g_j = r\sigma(a_j)`
L1Ball, W rows     ``radial``                  :math:`w_j = r v_j / \max(r, \|v_j\|_1)`
L1Ball, y          ``radial``                  :math:`y = r z / \max(r, \|z\|_1)`
L1Ball, y          ``sigmoid-simplex``         the seed answer's map, :func:`sigmoid_simplex`
=================  ==========================  ====================================================

Output maps are forward hooks on the model (:func:`strategies._base.install_output_map`): the model
object, its parameter names and its state_dict stay the same. Every map holds by construction,
after every step and on every input, up to floating-point rounding.

Strategy names: ``reparameterization`` picks a map per set with options; ``reparam-<map>`` fixes
one map and refuses the sets it does not cover (one row per map in the comparison matrix).
A NonNegative and an L1Ball constraint on the same place compose (non-negative map first, the L1
map keeps signs); other combinations are refused.
"""

from __future__ import annotations

import math
import typing
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from constrain import Affine, AffineFactor, L1Ball, NonNegative, OutputTarget, ParameterTarget, parameter_rows
from strategies._base import Strategy, Target, UnsupportedConstraint, install_output_map
from strategies._output_maps import NONNEGATIVE_MAPS, guard_nonfinite, radial_l1, sigmoid_simplex
from strategies._registry import register

__all__ = [
    "AffineLatent",
    "ExpNonNegative",
    "L1WeightNorm",
    "NullSpace",
    "NullSpaceSlice",
    "RadialL1",
    "Reparameterization",
    "SoftplusNonNegative",
    "SquareNonNegative",
]

RadiusLike = float | Tensor


# ====================================================================== parametrizations
class _NonNegativeMap(nn.Module):
    """Base of the elementwise maps onto :math:`\\{w \\ge 0\\}`; ``right_inverse`` first clamps to ``eps``."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = float(eps)


class SoftplusNonNegative(_NonNegativeMap):
    r""":math:`w = \operatorname{softplus}(v) = \log(1 + e^v)`; right inverse
    :math:`v = \log(e^{w} - 1) = w + \log(1 - e^{-w})` with :math:`w` clamped to :math:`\ge \varepsilon`."""

    def forward(self, v: Tensor) -> Tensor:
        return F.softplus(v)

    def right_inverse(self, w: Tensor) -> Tensor:
        w = w.clamp_min(self.eps)
        return w + torch.log(-torch.expm1(-w))  # log(expm1(w)) without overflow for large w


class ExpNonNegative(_NonNegativeMap):
    r""":math:`w = e^v`; right inverse :math:`v = \log \max(w, \varepsilon)`."""

    def forward(self, v: Tensor) -> Tensor:
        return torch.exp(v)

    def right_inverse(self, w: Tensor) -> Tensor:
        return torch.log(w.clamp_min(self.eps))


class SquareNonNegative(_NonNegativeMap):
    r""":math:`w = v^2`; right inverse :math:`v = \sqrt{\max(w, \varepsilon)}` (kept off 0, where the
    gradient :math:`2v` would vanish)."""

    def forward(self, v: Tensor) -> Tensor:
        return v * v

    def right_inverse(self, w: Tensor) -> Tensor:
        return torch.sqrt(w.clamp_min(self.eps))


AffineForm = Literal["basis", "projector"]

#: ``affine_form="auto"`` uses the dense basis N up to this many constrained entries (N is n x (n - k)
#: and its QR costs O(n^3)); beyond it, the projector form (O(k n) memory and time).
DENSE_BASIS_LIMIT = 1024


def resolve_affine_form(form: str, size: int) -> AffineForm:
    """``"auto"`` -> ``"basis"`` for at most :data:`DENSE_BASIS_LIMIT` entries, else ``"projector"``."""
    if form == "auto":
        return "basis" if size <= DENSE_BASIS_LIMIT else "projector"
    if form not in ("basis", "projector"):
        raise ValueError(f"affine form must be 'auto', 'basis' or 'projector', got {form!r}.")
    return form  # type: ignore[return-value]


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

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
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


def _radius_buffer(radius: RadiusLike, rows: int, like: Tensor) -> Tensor:
    """A positive radius as a ``(rows or 1, 1)`` tensor on ``like``'s device and dtype."""
    r = torch.as_tensor(radius).to(like).reshape(-1, 1)
    if r.shape[0] not in (1, rows):
        raise ValueError(f"radius has {r.shape[0]} entries but the weight has {rows} rows; give one or one per row.")
    if not bool(((r > 0) & torch.isfinite(r)).all()):
        raise ValueError("radius must be positive and finite.")
    return r


class L1WeightNorm(nn.Module):
    r"""L1 weight normalization (PSiLON Net): :math:`w_j = g_j\, v_j / \|v_j\|_1` for each row :math:`j`.

    ``radius=r`` (a float or one per row): :math:`g_j = r_j\,\sigma(a_j)`, so
    :math:`\|w_j\|_1 = g_j \le r_j` (the L1 ball on rows); ``radius=None``: :math:`g_j` is a free
    learnable length (PSiLON's unconstrained mode, :math:`\|w_j\|_1 = |g_j|`). ``shared_length``: one
    :math:`a` (or :math:`g`) for the whole weight (PSiLON's hidden layers) instead of one per row.
    :math:`\|v_j\|_1` is guarded below by ``eps``. The length parameter is ``raw_length``
    (:math:`a` or :math:`g`, shape ``(rows or 1, 1)``); :attr:`length` gives :math:`g`.

    ``right_inverse(W)`` keeps the direction (:math:`v = W`) and sets the length from the current row
    norms (the mean over rows if shared), with :math:`\|w_j\|_1 / r_j` clamped into
    :math:`[\varepsilon, 1 - \varepsilon]`: rows inside the ball are kept, rows outside are scaled
    radially to just inside the sphere.
    """

    def __init__(
        self, weight: Tensor, radius: RadiusLike | None = 1.0, *, shared_length: bool = False, eps: float = 1e-6
    ) -> None:
        super().__init__()
        rows = parameter_rows(weight.detach()).shape[0]
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps}.")
        self.eps, self.shared_length = float(eps), bool(shared_length)
        self.raw_length = nn.Parameter(weight.detach().new_zeros(1 if shared_length else rows, 1))
        if radius is None:
            self.radius: Tensor | None = None
        else:
            self.register_buffer("radius", _radius_buffer(radius, rows, weight.detach()), persistent=False)

    @property
    def length(self) -> Tensor:
        """:math:`g`, shape ``(rows or 1, 1)``: :math:`r\\sigma(a)` or the free length."""
        if self.radius is None:
            return self.raw_length
        return self.radius * torch.sigmoid(self.raw_length)

    def forward(self, v: Tensor) -> Tensor:
        rows = parameter_rows(v)
        norm = rows.abs().sum(-1, keepdim=True).clamp_min(self.eps)
        return (rows * (self.length / norm)).reshape(v.shape)

    @torch.no_grad()
    def right_inverse(self, w: Tensor) -> Tensor:
        norms = parameter_rows(w).abs().sum(-1, keepdim=True)
        if self.radius is None:
            self.raw_length.copy_(norms.mean(0, keepdim=True) if self.shared_length else norms)
        else:
            ratio = norms / self.radius
            ratio = (ratio.mean(0, keepdim=True) if self.shared_length else ratio).clamp(self.eps, 1.0 - self.eps)
            self.raw_length.copy_(torch.logit(ratio))
        return w


class RadialL1(nn.Module):
    r"""Radial map onto the L1 ball, per row: :math:`w_j = r v_j / \max(r, \|v_j\|_1)`.

    The identity inside the ball, so ``right_inverse`` is the identity (:math:`v = W`): a feasible
    :math:`W` is kept exactly and an infeasible one is scaled onto the sphere.
    """

    def __init__(self, radius: RadiusLike, like: Tensor) -> None:
        super().__init__()
        rows = parameter_rows(like.detach()).shape[0]
        self.register_buffer("radius", _radius_buffer(radius, rows, like.detach()), persistent=False)

    def forward(self, v: Tensor) -> Tensor:
        return radial_l1(parameter_rows(v), self.radius).reshape(v.shape)

    def right_inverse(self, w: Tensor) -> Tensor:
        return w


_NONNEGATIVE_PARAMETRIZATIONS: dict[str, type[_NonNegativeMap]] = {
    "softplus": SoftplusNonNegative,
    "exp": ExpNonNegative,
    "square": SquareNonNegative,
}

NonNegativeMapName = Literal["softplus", "exp", "square"]
L1WeightMapName = Literal["l1-weight-norm", "radial"]
L1OutputMapName = Literal["radial", "sigmoid-simplex"]

#: (set type, place) -> the map names this family has for it; every other cell is refused.
_NATURAL_CELLS: dict[tuple[type, str], tuple[str, ...]] = {
    (NonNegative, "weights"): ("softplus", "exp", "square"),
    (NonNegative, "outputs"): ("softplus", "exp", "square"),
    (Affine, "weights"): ("null-space",),
    (L1Ball, "weights"): ("l1-weight-norm", "radial"),
    (L1Ball, "outputs"): ("radial", "sigmoid-simplex"),
}


def _place(target: Target) -> str:
    return "outputs" if isinstance(target, OutputTarget) else "weights"


def _float_radius(radius: RadiusLike) -> float | None:
    """``radius`` as a float if it is one number, else None."""
    if isinstance(radius, Tensor):
        return float(radius.reshape(-1)[0]) if radius.numel() == 1 else None
    return float(radius)


# ====================================================================== strategies
@register("reparameterization")
class Reparameterization(Strategy):
    r"""Map free variables onto the set: parametrizations on weights, a map layer on outputs.

    Options pick the map per set: ``nonnegative`` (weights and outputs), ``l1_weights``,
    ``l1_outputs``; ``shared_length`` (one length per layer for ``l1-weight-norm``) and ``eps``
    (clamp of the non-negative right inverses, guard of :math:`\|v_j\|_1`). Affine constraints on
    weights use the null-space map :math:`w = w_0 + N v`, also across several parameters;
    ``affine_form="projector"`` uses :math:`w = w_0 + (I - V^\top V) v` instead (no dense :math:`N`),
    and ``"auto"`` switches to it above :data:`DENSE_BASIS_LIMIT` constrained entries.
    """

    family = "reparameterization"
    summary = "free variables mapped onto the set: softplus/exp/square, w0 + N v, L1 weight norm, radial, sigmoid-simplex"
    #: The map this registered name is fixed to (None: chosen per set by the options).
    map_name: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        nonnegative: NonNegativeMapName = "softplus",
        l1_weights: L1WeightMapName = "l1-weight-norm",
        l1_outputs: L1OutputMapName = "radial",
        shared_length: bool = False,
        affine_form: Literal["auto", "basis", "projector"] = "auto",
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        for option, value, names in (
            ("nonnegative", nonnegative, NonNegativeMapName),
            ("l1_weights", l1_weights, L1WeightMapName),
            ("l1_outputs", l1_outputs, L1OutputMapName),
        ):
            if value not in typing.get_args(names):
                raise ValueError(f"{option} must be one of {', '.join(typing.get_args(names))}; got {value!r}.")
        if not (math.isfinite(eps) and 0 < eps < 0.5):
            raise ValueError(f"eps must be in (0, 0.5), got {eps}.")
        self.nonnegative, self.l1_weights, self.l1_outputs = nonnegative, l1_weights, l1_outputs
        resolve_affine_form(affine_form, 1)  # checks the value
        self.shared_length, self.affine_form, self.eps = bool(shared_length), affine_form, float(eps)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._parametrized: list[tuple[nn.Module, str]] = []

    # ----------------------------------------------------------------- support matrix
    @classmethod
    def unsupported_reason(cls, target: Target) -> str | None:
        s, place = target.set, _place(target)
        maps = _NATURAL_CELLS.get((type(s), place))
        if maps is None:
            if place == "outputs" and s.acts_on_flat_vector:
                return (
                    f"no map onto {s!r} is offered for outputs other than the Euclidean projection itself; "
                    f"use 'projected' (a projection layer y = P(f(x)))."
                )
            return (
                f"no reparameterization of {s!r} on {place} is offered (no natural map onto it here); "
                f"use 'projected' (exact projection), a penalty or the Lagrangian family."
            )
        if place == "outputs" and isinstance(s, L1Ball) and _float_radius(s.radius) is None:
            return (
                "the output maps take one radius for all samples, not a per-sample radius tensor; use 'projected' "
                "(its projection layer accepts one radius per row)."
            )
        if cls.map_name is not None and cls.map_name not in maps:
            others = ", ".join(f"'reparam-{m}'" for m in maps)
            return (
                f"the {cls.map_name} map does not apply to {s!r} on {place}; use {others} or 'reparameterization' "
                f"(which picks a map for each set)."
            )
        return None

    # ----------------------------------------------------------------- attach / remove
    def _attach(self) -> None:
        model = self._require_model()
        outputs = [t for t in self.targets if isinstance(t, OutputTarget)]
        by_name: dict[str, list[ParameterTarget]] = {}
        for t in self.targets:
            if isinstance(t, ParameterTarget):
                for name in t.names:
                    by_name.setdefault(name, []).append(t)
        try:  # check everything before touching the model
            _check_combination("the outputs", outputs)
            for name, group in by_name.items():
                _check_combination(repr(name), group)
                module, attr = _resolve(model, name)
                first = min(group, key=_order)
                if parametrize.is_parametrized(module, attr) and not isinstance(first.set, L1Ball):
                    existing = ", ".join(type(p).__name__ for p in module.parametrizations[attr])
                    raise UnsupportedConstraint(
                        f"{name!r} already carries a parametrization ({existing}); a map for {first.set!r} on top "
                        f"of it would change its value. Remove it first "
                        f"(torch.nn.utils.parametrize.remove_parametrizations) or use 'projected'."
                    )
        except UnsupportedConstraint as error:
            self.model, self.targets = None, []  # not attached: the model is untouched
            raise UnsupportedConstraint(f"strategy {self.name!r}: {error}") from None
        for target in sorted(outputs, key=_order):
            self._handles.append(install_output_map(model, guard_nonfinite(self, target.label, self._output_map(target.set))))
        for target in self.targets:
            if isinstance(target, ParameterTarget) and isinstance(target.set, Affine):
                self._attach_affine(model, target)
        for name, group in by_name.items():
            module, attr = _resolve(model, name)
            for target in sorted((t for t in group if not isinstance(t.set, Affine)), key=_order):
                self._register(module, attr, self._weight_map(target.set, getattr(module, attr)))
        if self._parametrized:  # each mapped weight computed once per forward, however often the forward reads it
            self._handles.extend(cache_parametrizations(model))

    def remove(self) -> nn.Module:
        """Take the maps off the model: remove the output hooks and the parametrizations of the
        constrained tensors (all of them, including any they had before), leaving the current
        constrained values as plain parameters. Returns the model."""
        model = self._require_model()
        for handle in self._handles:
            handle.remove()
        for module, attr in self._parametrized:
            if parametrize.is_parametrized(module, attr):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
        self._handles, self._parametrized = [], []
        return model

    # ----------------------------------------------------------------- maps
    def _output_map(self, s: object) -> Callable[[Tensor], Tensor]:
        if isinstance(s, NonNegative):
            return NONNEGATIVE_MAPS[self.nonnegative]
        assert isinstance(s, L1Ball)
        radius = _float_radius(s.radius)
        return partial(radial_l1 if self.l1_outputs == "radial" else sigmoid_simplex, radius=radius)

    def _weight_map(self, s: object, current: Tensor) -> nn.Module:
        if isinstance(s, NonNegative):
            return _NONNEGATIVE_PARAMETRIZATIONS[self.nonnegative](eps=self.eps)
        assert isinstance(s, L1Ball)
        if self.l1_weights == "radial":
            return RadialL1(s.radius, current)
        return L1WeightNorm(current, s.radius, shared_length=self.shared_length, eps=self.eps)

    def _register(self, module: nn.Module, attr: str, parametrization: nn.Module) -> None:
        if parametrize.is_parametrized(module, attr):
            # torch does not call right_inverse when appending: initialise the map's own state from
            # the current value (L1 maps keep feasible values, checked in _attach).
            with torch.no_grad():
                parametrization.right_inverse(getattr(module, attr))  # type: ignore[operator]
        parametrize.register_parametrization(module, attr, parametrization)
        self._parametrized.append((module, attr))

    def _attach_affine(self, model: nn.Module, target: ParameterTarget) -> None:
        s = target.set
        assert isinstance(s, Affine)
        places = [_resolve(model, name) for name in target.names]
        values = [getattr(module, attr).detach() for module, attr in places]
        if len(places) == 1:
            self._register(*places[0], NullSpace(s.factor, values[0], self.affine_form))
            return
        if len({(v.dtype, v.device) for v in values}) > 1:
            raise UnsupportedConstraint(
                f"strategy {self.name!r}: the parameters {', '.join(target.names)} of {target.label} differ in dtype "
                f"or device; one shared null-space latent needs them alike. Convert the model first."
            )
        latent = AffineLatent(s.factor, values[0], self.affine_form)
        start = 0
        for (module, attr), value in zip(places, values, strict=True):
            self._register(module, attr, NullSpaceSlice(latent, start, value))
            # its `original` is an empty placeholder (the free variable is the shared latent): frozen, so that
            # DistributedDataParallel does not wait for a gradient it never gets (no find_unused_parameters)
            module.parametrizations[attr].original.requires_grad_(False)
            start += value.numel()
        latent.assign(torch.cat([v.reshape(-1) for v in values]))  # the projection of the starting point


def cache_parametrizations(model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Run every forward of ``model`` inside :func:`torch.nn.utils.parametrize.cached`: a parametrized
    weight read several times in one forward (a layer applied twice, a recurrent loop) is computed once,
    and its gradient flows through that one evaluation. Two hooks (the second runs even if the forward
    raises); returns their handles."""
    entered: list = []

    def enter(module: nn.Module, inputs: tuple) -> None:
        context = parametrize.cached()
        context.__enter__()
        entered.append(context)

    def leave(module: nn.Module, inputs: tuple, outputs: object) -> None:
        if entered:
            entered.pop().__exit__(None, None, None)

    return [model.register_forward_pre_hook(enter), model.register_forward_hook(leave, always_call=True)]


def _order(target: Target) -> int:
    """Non-negative maps first: the L1 maps keep signs, so the composition stays non-negative."""
    return 0 if isinstance(target.set, NonNegative) else 1


def _check_combination(place: str, group: list) -> None:
    if len(group) <= 1:
        return
    kinds = Counter(type(t.set) for t in group)
    labels = "; ".join(t.label for t in group)
    if kinds.get(Affine):
        raise UnsupportedConstraint(
            f"{place} carries {len(group)} constraints ({labels}); an affine constraint fixes the map "
            f"w = w0 + N v and cannot be combined with another one on the same parameter. Merge them into one "
            f"Affine(A, c), or use 'projected' or a penalty."
        )
    if set(kinds) - {NonNegative, L1Ball} or max(kinds.values()) > 1:
        raise UnsupportedConstraint(
            f"{place} carries {len(group)} constraints ({labels}); reparameterizations compose only one "
            f"NonNegative with one L1Ball. Merge or drop duplicates, or use 'projected' or a penalty."
        )


def _resolve(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module, _, attr = name.rpartition(".")
    return model.get_submodule(module), attr


# ---------------------------------------------------------------------- one name per map
@register("reparam-softplus")
class SoftplusReparameterization(Reparameterization):
    r"""NonNegative by :math:`w = \operatorname{softplus}(v)` on weights and :math:`y = \operatorname{softplus}(z)`
    on outputs."""

    summary = "NonNegative weights/outputs as softplus(v); right inverse log(expm1(w))"
    map_name = "softplus"

    def __init__(self, *, eps: float = 1e-6) -> None:
        super().__init__(nonnegative="softplus", eps=eps)


@register("reparam-exp")
class ExpReparameterization(Reparameterization):
    r"""NonNegative by :math:`w = e^v` on weights, :math:`y = e^z` on outputs."""

    summary = "NonNegative weights/outputs as exp(v); right inverse log(max(w, eps))"
    map_name = "exp"

    def __init__(self, *, eps: float = 1e-6) -> None:
        super().__init__(nonnegative="exp", eps=eps)


@register("reparam-square")
class SquareReparameterization(Reparameterization):
    r"""NonNegative by :math:`w = v^2` on weights, :math:`y = z^2` on outputs."""

    summary = "NonNegative weights/outputs as v^2; right inverse sqrt(max(w, eps))"
    map_name = "square"

    def __init__(self, *, eps: float = 1e-6) -> None:
        super().__init__(nonnegative="square", eps=eps)


@register("reparam-null-space")
class NullSpaceReparameterization(Reparameterization):
    r"""``A vec(W) = c`` by :math:`\operatorname{vec}(W) = w_0 + N v` (orthonormal null-space basis :math:`N`)."""

    summary = "Affine weights as w0 + N v (N orthonormal null-space basis, w0 least-norm); also across parameters"
    map_name = "null-space"

    def __init__(self, *, affine_form: Literal["auto", "basis", "projector"] = "auto") -> None:
        super().__init__(affine_form=affine_form)


@register("reparam-l1-weight-norm")
class L1WeightNormReparameterization(Reparameterization):
    r"""L1 ball on weight rows by L1 weight normalization :math:`w_j = r\sigma(a_j) v_j / \|v_j\|_1` (PSiLON Net)."""

    summary = "L1 ball on weight rows as r sigmoid(a) v / ||v||_1 (PSiLON's L1 weight normalization)"
    map_name = "l1-weight-norm"

    def __init__(self, *, shared_length: bool = False, eps: float = 1e-6) -> None:
        super().__init__(l1_weights="l1-weight-norm", shared_length=shared_length, eps=eps)


@register("reparam-radial")
class RadialReparameterization(Reparameterization):
    r"""L1 ball by the radial map :math:`r z / \max(r, \|z\|_1)` on weight rows or output rows."""

    summary = "L1 ball on weight rows or outputs as r z / max(r, ||z||_1) (identity inside the ball)"
    map_name = "radial"

    def __init__(self) -> None:
        super().__init__(l1_weights="radial", l1_outputs="radial")


@register("reparam-sigmoid-simplex")
class SigmoidSimplexReparameterization(Reparameterization):
    r"""L1 ball on outputs by the seed answer's map: sigmoid to :math:`[-r, r]`, slack, simplex projection."""

    summary = "L1 ball on outputs: u = r(2 sigmoid(z) - 1), slack r - ||u||_1, simplex projection (exact Jacobian)"
    map_name = "sigmoid-simplex"

    def __init__(self) -> None:
        super().__init__(l1_outputs="sigmoid-simplex")
