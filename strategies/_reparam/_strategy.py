r"""The reparameterization strategies: one class picks a map per set, one registered name per map.

``reparameterization`` picks a map per set with its options; ``reparam-<map>`` fixes one map and refuses
the sets it does not cover (one row per map in the comparison matrix). The maps themselves live in one
module each (:mod:`._nonnegative`, :mod:`._null_space`, :mod:`._l1_weight_norm`, :mod:`._radial`, and the
output maps of :mod:`strategies._output_maps`); a fixed-map class is declared in one line with the options it
keeps (:meth:`Reparameterization.__init_subclass__`).
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Literal, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from constrain import Affine, L1Ball, NonNegative, OutputTarget, ParameterTarget
from strategies._base import Strategy, Target, UnsupportedConstraint, install_output_map
from strategies._output_maps import NONNEGATIVE_MAPS, RadiusLike, guard_nonfinite, radial_l1, sigmoid_simplex
from strategies._registry import register
from strategies._reparam._l1_weight_norm import L1WeightNorm
from strategies._reparam._nonnegative import NONNEGATIVE_PARAMETRIZATIONS
from strategies._reparam._null_space import AffineLatent, NullSpace, NullSpaceSlice
from strategies._reparam._radial import RadialL1

__all__ = ["Reparameterization", "cache_parametrizations"]

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
    #: The options a fixed-map name sets (option -> value); its other options are the ones it keeps.
    fixed: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(
        cls, *, map_name: str | None = None, fixed: dict[str, Any] | None = None, keeps: tuple[str, ...] = (), **kwargs: Any
    ) -> None:
        """``class X(Reparameterization, map_name="exp", fixed={"nonnegative": "exp"}, keeps=("eps",))``: a strategy
        fixed to one map, whose constructor takes only the options in ``keeps`` (keyword-only, as here)."""
        super().__init_subclass__(**kwargs)
        if map_name is not None:
            cls.map_name, cls.fixed = map_name, dict(fixed or {})
            cls.__init__ = _fixed_init(keeps, cls.fixed)  # type: ignore[method-assign]  # built once per fixed map

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
        super().__init__()  # the enumerated options are checked by Strategy.__new__ (their Literal types)
        if not (math.isfinite(eps) and 0 < eps < 0.5):
            raise ValueError(f"eps must be in (0, 0.5), got {eps}.")
        self.nonnegative, self.l1_weights, self.l1_outputs = nonnegative, l1_weights, l1_outputs
        self.shared_length, self.affine_form, self.eps = bool(shared_length), affine_form, float(eps)
        self._parametrized = False

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
                    existing = ", ".join(type(p).__name__ for p in _maps(module, attr))
                    raise UnsupportedConstraint(
                        f"{name!r} already carries a parametrization ({existing}); a map for {first.set!r} on top "
                        f"of it would change its value. Remove it first "
                        f"(torch.nn.utils.parametrize.remove_parametrizations) or use 'projected'."
                    )
        except UnsupportedConstraint as error:
            self.model, self.targets = None, []  # not attached: the model is untouched
            raise UnsupportedConstraint(f"strategy {self.name!r}: {error}") from None
        for output in sorted(outputs, key=_order):
            self._handles.append(install_output_map(model, guard_nonfinite(self, output.label, self._output_map(output.set))))
        for target in self.targets:
            if isinstance(target, ParameterTarget) and isinstance(target.set, Affine):
                self._attach_affine(model, target)
        for name, group in by_name.items():
            module, attr = _resolve(model, name)
            for weight in sorted((t for t in group if not isinstance(t.set, Affine)), key=_order):
                self._register(module, attr, self._weight_map(weight.set, getattr(module, attr)))
        if self._parametrized:  # each mapped weight computed once per forward, however often the forward reads it
            self._handles.extend(cache_parametrizations(model))

    # ----------------------------------------------------------------- maps
    def _output_map(self, s: object) -> Callable[[Tensor], Tensor]:
        if isinstance(s, NonNegative):
            return NONNEGATIVE_MAPS[self.nonnegative]
        assert isinstance(s, L1Ball)
        radius = _float_radius(s.radius)
        assert radius is not None  # unsupported_reason refuses per-sample radii on outputs
        return partial(radial_l1 if self.l1_outputs == "radial" else sigmoid_simplex, radius=radius)

    def _weight_map(self, s: object, current: Tensor) -> nn.Module:
        if isinstance(s, NonNegative):
            return NONNEGATIVE_PARAMETRIZATIONS[self.nonnegative](eps=self.eps)
        assert isinstance(s, L1Ball)
        if self.l1_weights == "radial":
            return RadialL1(s.radius, current)
        return L1WeightNorm(current, s.radius, shared_length=self.shared_length, eps=self.eps)

    def _register(self, module: nn.Module, attr: str, parametrization: nn.Module) -> None:
        if parametrize.is_parametrized(module, attr):
            # torch does not call right_inverse when appending: initialise the map's own state from
            # the current value (L1 maps keep feasible values, checked in _attach).
            with torch.no_grad():
                parametrization.right_inverse(getattr(module, attr))  # type: ignore[operator]  # every map of _weight_map defines right_inverse
        parametrize.register_parametrization(module, attr, parametrization)
        self._parametrized = True

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
            _maps(module, attr).original.requires_grad_(False)
            start += value.numel()
        latent.assign(torch.cat([v.reshape(-1) for v in values]))  # the projection of the starting point


def _fixed_init(keeps: tuple[str, ...], fixed: dict[str, Any]) -> Callable[..., None]:
    """A constructor taking the options ``keeps`` of :class:`Reparameterization` and setting ``fixed``; its
    signature and annotations are those options', so ``strategies.get`` and ``constrain list`` read them."""
    base = Reparameterization.__init__
    signature = inspect.signature(base)
    unknown = set(keeps) - set(signature.parameters)
    if unknown or set(keeps) & set(fixed):
        raise TypeError(f"keeps={keeps} must name options of Reparameterization that fixed={fixed} does not set.")

    def __init__(self: Reparameterization, **options: Any) -> None:
        extra = sorted(set(options) - set(keeps))
        if extra:
            raise TypeError(
                f"{type(self).__name__} has no option {extra[0]!r}; its options are: {', '.join(keeps) or 'none'} "
                f"(the map is fixed: {fixed or self.map_name})."
            )
        base(self, **fixed, **options)

    params = [p for name, p in signature.parameters.items() if name == "self" or name in keeps]
    __init__.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]  # read by inspect
    __init__.__annotations__ = {k: v for k, v in base.__annotations__.items() if k in keeps or k == "return"}
    return __init__


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


def _maps(module: nn.Module, attr: str) -> parametrize.ParametrizationList:
    """The parametrizations of ``module.attr`` (a parametrized tensor)."""
    return cast(parametrize.ParametrizationList, cast(nn.ModuleDict, module.parametrizations)[attr])


def _resolve(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module, _, attr = name.rpartition(".")
    return model.get_submodule(module), attr
