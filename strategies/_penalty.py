r"""Penalty and barrier strategies: add :math:`\mu \sum \phi(g) + \mu \sum \psi(h)` to the objective.

Exterior penalties (:math:`\phi(g) = (g^+)^2` or :math:`g^+`) give approximate feasibility that
improves as the weight :math:`\mu` grows. Barriers (:math:`-\log(-g)`, :math:`-1/g`) are defined
only strictly inside the set: they refuse an infeasible start, and a parameter step that would
leave the interior is shortened (backtracking towards the last strictly feasible iterate): right after
the step for parameter constraints, and on the next training forward for output constraints (a
forward hook checks its outputs before the loss evaluates the barrier on them). The exact penalty on
parameters takes its proximal step after the optimizer's (``strategies._penalty_prox``). The
extended log barrier (Kervadec et al. 2019) continues :math:`-\frac1t\log(-z)` linearly for
:math:`z > -1/t^2`, so it accepts an infeasible start. Barriers have no meaning for equalities.

Aggregation: output constraints are averaged over the batch (as the objective is), parameter
constraints are summed over their rows.

Schedule: after each step the weight is multiplied by ``growth`` (bounded by ``weight_limit``).
With ``growth > 1`` it grows only while the constraint is violated: while the largest violation
of the last step's values, relative to the largest magnitude of the constrained values, exceeds
``tolerance`` (``tolerance=None``: every step). So a penalty picked by name with its defaults
(weight 1, growth 1.02, tolerance 1e-3, limit 1e8) raises its weight until the constraint holds
to about 1e-3 of the scale of what it constrains, and then stops. ``growth < 1`` (annealing a
barrier) applies every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from constrain import NonNegative, OutputTarget, ParameterTarget
from strategies import _distributed
from strategies._base import Strategy, Target, all_finite, bound_set, constraint_values, target_rows
from strategies._optimizer_metric import OptimizerWatch
from strategies._options import check_positive as _check_positive
from strategies._penalty_prox import exact_penalty_prox, has_prox
from strategies._registry import register
from strategies._warnings import warn_at_caller


class InfeasibleStartError(ValueError):
    """A barrier was asked to start from (or reached) a point outside the interior of its set."""


def _positive_entries(name: str, state: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    """``state``'s entries ``keys``, each a positive finite number; a clear error for anything else."""
    missing, extra = [k for k in keys if k not in state], sorted(set(state) - set(keys))
    if missing or extra:
        raise KeyError(
            f"strategy {name!r}: the state {'lacks ' + ', '.join(map(repr, missing)) if missing else ''}"
            f"{' and ' if missing and extra else ''}{'has unknown entries ' + ', '.join(map(repr, extra)) if extra else ''}; "
            f"it was saved by another strategy. Load the state_dict() of a {name!r} strategy."
        )
    out = {}
    for key in keys:
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"strategy {name!r}: state[{key!r}] must be a positive finite number, got {value!r}.")
        out[key] = float(value)
    return out


def _relative_violation(rows: Tensor, g: Tensor | None, h: Tensor | None) -> Tensor:
    r""":math:`\max(\max g^+, \max |h|) / \max |x|`: the largest violation relative to the largest
    magnitude of the constrained values ``rows`` (detached; a zero-dimensional tensor)."""
    parts = [
        c.detach().clamp_min(0).amax() if kind == "g" else c.detach().abs().amax()
        for kind, c in (("g", g), ("h", h))
        if c is not None and c.numel()
    ]
    if not parts:
        return rows.new_zeros(())
    worst = parts[0] if len(parts) == 1 else torch.maximum(parts[0], parts[1])
    return worst / rows.abs().amax().clamp_min(torch.finfo(rows.dtype).tiny)


def interior_slack(target: Target, rows: Tensor) -> Tensor:
    r"""The slacks :math:`s = -g` of ``target``'s inequalities on ``rows`` (positive strictly inside), ``(rows, k)``.
    For a set whose :math:`g` is :math:`-x` (``NonNegative``) they are ``rows`` themselves: no temporary."""
    constraint_set = bound_set(target, rows)
    if type(constraint_set).inequality is NonNegative.inequality:
        return rows
    g = constraint_set.inequality(rows)
    return rows.new_zeros((*rows.shape[:-1], 0)) if g is None else g.neg()


def _aggregate(target: Target, per_row: Tensor) -> Tensor:
    """Mean over samples for output constraints, sum over rows for parameter constraints."""
    return per_row.mean() if isinstance(target, OutputTarget) else per_row.sum()


#: The cap on a growing penalty weight when ``weight_limit`` is not given.
DEFAULT_WEIGHT_LIMIT = 1e8


class PenaltyStrategy(Strategy):
    r"""Shared machinery: weight :math:`\mu`, multiplied by ``growth`` after a step (bounded by
    ``weight_limit`` in the direction of growth); growth waits for a violation above ``tolerance``
    (see the module doc). ``growth=None`` takes the class default :attr:`default_growth`."""

    family = "penalty"
    barrier = False
    #: The growth factor when ``growth`` is not given: exterior penalties grow until feasible, barriers keep theirs.
    default_growth = 1.02
    #: Whether a barrier's row sums are finite exactly when every slack is positive and finite (the log: log(0) is
    #: -inf, log of a negative NaN), so that they certify the interior; otherwise one reduction checks the slacks.
    finite_inside = False

    def __init__(
        self,
        *,
        weight: float = 1.0,
        growth: float | None = None,
        weight_limit: float | None = None,
        tolerance: float | None = 1e-3,
    ) -> None:
        super().__init__()
        self.weight = _check_positive(weight, "weight")
        self.growth = _check_positive(self.default_growth if growth is None else growth, "growth")
        if weight_limit is None:  # the default caps a growing weight; a shrinking one has no floor
            weight_limit = DEFAULT_WEIGHT_LIMIT if self.growth > 1 else None
        self.weight_limit = None if weight_limit is None else _check_positive(weight_limit, "weight_limit")
        self.tolerance = None if tolerance is None else _check_positive(tolerance, "tolerance")
        self._violation: Tensor | None = None  # the largest relative violation recorded by the last loss

    @classmethod
    def unsupported_reason(cls, target: Target) -> str | None:
        if cls.barrier and target.set.has_equalities:
            return (
                "a barrier needs an interior, and an equality constraint has none; use quadratic-penalty, "
                "lagrangian, projected or a reparameterization instead."
            )
        return None

    def inequality_term(self, g: Tensor) -> Tensor:
        """Elementwise :math:`\\phi(g)` for the inequalities."""
        raise NotImplementedError

    def inequality_rows(self, g: Tensor) -> Tensor:
        """:math:`\\sum_i \\phi(g_i)` per row; a subclass may fuse it (one weight-sized temporary less)."""
        return self.inequality_term(g).sum(-1)

    def slack_rows(self, slack: Tensor) -> Tensor:
        """A barrier's :math:`\\sum_i \\phi(-s_i)` per row, on the slacks :math:`s = -g` (positive inside); a
        subclass may write it without forming :math:`g`."""
        return self.inequality_term(slack.neg()).sum(-1)

    def equality_term(self, h: Tensor) -> Tensor:
        """Elementwise :math:`\\psi(h)` for the equalities."""
        raise NotImplementedError

    def _loss_terms(self, model: nn.Module, outputs: Tensor | None, sample_ids: Tensor | None) -> Tensor | None:
        total: Tensor | float = 0.0
        watch = self.growth > 1 and self.tolerance is not None and torch.is_grad_enabled()
        worst: list[Tensor] = []
        for target in self.targets:
            rows = target_rows(target, model, outputs)
            if watch or not self.barrier:  # a barrier forms g only to watch the violation
                g, h = constraint_values(target, rows)
            if watch:
                worst.append(_relative_violation(rows.detach(), g, h))
            if not self._in_loss(target):
                continue
            if self.barrier:  # inequalities only (a barrier refuses equalities)
                total = total + _aggregate(target, self._barrier_rows(target, rows))
                continue
            parts = [self.inequality_rows(g)] if g is not None else []
            if h is not None:
                parts.append(self.equality_term(h).sum(-1))
            if parts:
                total = total + _aggregate(target, parts[0] if len(parts) == 1 else parts[0] + parts[1])
        if watch:
            self._violation = worst[0] if len(worst) == 1 else torch.stack([w.to(worst[0]) for w in worst]).amax()
        return None if isinstance(total, float) else self.weight * total  # no term: every target is proximal

    def _barrier_rows(self, target: Target, rows: Tensor) -> Tensor:
        """The barrier's row sums on the slacks :math:`s = -g` of ``rows``, after checking that they are strictly
        inside: from the sums themselves when :attr:`finite_inside` (one scalar read), else by one reduction."""
        slack = interior_slack(target, rows)
        per_row = self.slack_rows(slack)
        if self.finite_inside:
            inside = all_finite(per_row.detach().sum())
        else:
            inside = slack.numel() == 0 or bool(slack.detach().amin() > 0)  # NaN is not > 0
        if not inside:
            with torch.no_grad():  # on rows themselves: a set reading the model's input finds its forward by them
                g, _ = constraint_values(target, rows)
            if g is not None:
                self._check_interior(target, g)  # raises unless only non-finite values made the sums infinite
        return per_row

    def _in_loss(self, target: Target) -> bool:
        """Whether ``target``'s penalty is a term of the loss (a subclass may apply it otherwise)."""
        return True

    def _check_interior(self, target: Target, g: Tensor, at_attach: bool = False) -> None:
        if g.numel() and bool(g.detach().amax() >= 0):  # one reduction, no mask (NaN: not >= 0 either way)
            if at_attach:
                where = "attach (the starting parameters)"
            else:
                first = self.steps == 0 and isinstance(target, OutputTarget)
                where = "the first batch's outputs" if first else f"step {self.steps}"
            raise InfeasibleStartError(
                f"{self.name}: {target.label} is not strictly satisfied at {where} (max g = {float(g.detach().max()):.3g} >= 0); "
                f"a barrier is undefined outside its set's interior. Start strictly feasible ("
                + (
                    "e.g. initialise the last layer so outputs lie inside"
                    if isinstance(target, OutputTarget)
                    else f"initialise {'+'.join(target.names)} strictly inside, e.g. for NonNegative: "
                    f"with torch.no_grad(): w.abs_().add_(1e-3)"
                )
                + "), lower the learning rate, or use 'extended-log-barrier', which accepts infeasible points."
            )

    def _attach(self) -> None:
        model = self._require_model()
        self._last_feasible: dict[str, Tensor] = {}
        self._outputs_verified = False  # whether a training forward has been checked strictly inside
        self._spare_feasible: dict[str, Tensor] = {}  # the point verified before, until this step's loss is finite
        self._accepted: bool | None = None  # _outputs_verified before the forward of this step, if it accepted one
        self._rechecking = False
        if not self.barrier:
            return
        for target in self.targets:
            if isinstance(target, ParameterTarget):
                g, _ = constraint_values(target, target.gather(model).detach())
                if g is not None:
                    self._check_interior(target, g, at_attach=True)
        if any(isinstance(t, OutputTarget) for t in self.targets):
            model.register_forward_hook(self._check_forward, with_kwargs=True)
        self._remember_parameters()

    def _after_step(self) -> None:
        self._accepted = None
        if self.barrier:
            self._stay_inside()
        self._grow()

    def _after_skipped_step(self) -> None:
        self._accepted = None
        if self.barrier:  # no schedule; only keep the iterate strictly inside (a no-op if nothing moved)
            self._stay_inside()

    def _grow(self) -> None:
        if self.growth > 1 and self.tolerance is not None:  # grow only while the last step violated the constraints
            violation, self._violation = self._violation, None
            violated = violation is not None and float(violation) > self.tolerance
            if not violated if not _distributed.active() else _distributed.all_true(not violated):
                return  # feasible to the tolerance (on every rank): keep the weight
        self.weight *= self.growth
        if self.weight_limit is not None:
            self.weight = min(self.weight, self.weight_limit) if self.growth >= 1 else max(self.weight, self.weight_limit)

    def _halve_until(self, inside: Callable[[], bool]) -> bool:
        """Fraction-to-boundary rule: halve the last step, ``w <- w_prev + (w - w_prev) / 2``, until ``inside()``
        (at most 60 times; then back to ``w_prev``). The set is convex and ``w_prev`` strictly inside, so a short
        enough step always is. Under torch.distributed every rank takes the same decision (one all-reduce of the
        flag per check), so the parameters stay identical on every rank. Whether it ended inside."""
        params = self._barrier_parameters()
        with torch.no_grad():
            for _ in range(60):
                if _distributed.all_true(inside()):
                    return True
                for name, p in params.items():
                    p.copy_(self._last_feasible[name] + 0.5 * (p - self._last_feasible[name]))
            for name, p in params.items():
                p.copy_(self._last_feasible[name])
        return False

    @torch.no_grad()
    def _stay_inside(self) -> None:
        """After a step: parameter constraints are checked exactly (no forward). Output constraints are checked on
        the next training forward (:meth:`_check_forward`), before the loss evaluates the barrier there; the point
        last verified on outputs stays the one to return to, so it is only remembered here without them."""
        if any(isinstance(t, ParameterTarget) for t in self.targets):
            self._halve_until(self._parameters_inside)
        if not any(isinstance(t, OutputTarget) for t in self.targets):
            self._remember_parameters()

    def _parameters_inside(self) -> bool:
        model = self._require_model()
        for target in self.targets:
            if isinstance(target, ParameterTarget):
                slack = interior_slack(target, target.gather(model))
                if slack.numel() and not bool(slack.amin() > 0):  # one reduction; NaN is not > 0
                    return False
        return True

    def _output_values(self, outputs: Tensor, args: tuple) -> list[Tensor]:
        """``g`` of every output constraint on ``outputs`` (of the forward on ``args``), detached."""
        model = self._require_model()
        values = []
        for target in self.targets:
            if isinstance(target, OutputTarget):
                bound = target.set.bind(*args) if target.set.needs_inputs else target.set
                g = bound.inequality(target_rows(target, model, outputs).detach())
                if g is not None and g.numel():
                    values.append(g)
        return values

    def _outputs_inside(self, outputs: Tensor, args: tuple) -> bool:
        """Whether every output constraint is strictly satisfied by ``outputs`` (of the forward on ``args``)."""
        return all(bool(g.amax() < 0) for g in self._output_values(outputs, args)) and self._parameters_inside()

    def _check_forward(self, module: nn.Module, args: tuple, kwargs: dict, outputs: Any) -> Tensor | None:
        """Forward hook of a barrier on outputs: a training forward (grad enabled) whose outputs are not strictly
        inside has its parameters pulled back along the last step (:meth:`_halve_until`, re-running this forward
        without gradient) and returns the outputs of the accepted point, so the loss never evaluates the barrier
        outside; outputs that are inside make the current parameters the point to return to."""
        if self._rechecking or not torch.is_grad_enabled() or not isinstance(outputs, Tensor):
            return None
        if _distributed.all_true(self._outputs_inside(outputs, args)):
            self._accept_point()
            return None
        if not self._outputs_verified:  # nothing verified to return to: the loss reports the infeasible start
            return None
        if not _distributed.all_true(all(all_finite(g) for g in self._output_values(outputs, args))):
            return None  # NaN or Inf (inputs, right-hand sides, parameters): the loss raises or skips, nothing moves
        self._rechecking = True
        try:
            with torch.no_grad():
                inside = self._halve_until(lambda: self._outputs_inside(module(*args, **kwargs), args))
            outputs = module(*args, **kwargs)  # at the accepted point, with gradient
        finally:
            self._rechecking = False
        if inside:
            self._accept_point()
        return outputs

    def _accept_point(self) -> None:
        """The current parameters become the point to return to; the previous one is kept (buffers swapped, no
        copy) until this step's loss turns out finite (:meth:`_discard_loss` restores it)."""
        self._spare_feasible, self._last_feasible = self._last_feasible, self._spare_feasible
        self._remember_parameters()
        if self._accepted is None:
            self._accepted = self._outputs_verified
        self._outputs_verified = True

    def _discard_loss(self) -> None:
        if self._accepted is not None:  # a non-finite loss: the state as before this step's forward
            self._spare_feasible, self._last_feasible = self._last_feasible, self._spare_feasible
            self._outputs_verified, self._accepted = self._accepted, None

    def _barrier_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters a step may have pushed out: all trainable ones when outputs are constrained."""
        model = self._require_model()
        named = dict(model.named_parameters())
        if any(isinstance(t, OutputTarget) for t in self.targets):
            return {n: p for n, p in named.items() if p.requires_grad}
        return {n: named[n] for t in self.targets if isinstance(t, ParameterTarget) for n in t.names if n in named}

    def _remember_parameters(self) -> None:
        """Copy the (strictly feasible) parameters into the buffers of the last step: no fresh copies per step."""
        last, kept = self._last_feasible, {}
        for n, p in self._barrier_parameters().items():
            buf = last.get(n)
            if buf is not None and buf.shape == p.shape and buf.dtype == p.dtype and buf.device == p.device:
                kept[n] = buf.copy_(p.detach())
            else:
                kept[n] = p.detach().clone()
        self._last_feasible = kept

    def _on_outputs(self) -> bool:
        return self.barrier and any(isinstance(t, OutputTarget) for t in self.targets)

    def _state(self) -> dict[str, Any]:
        if self._on_outputs():  # the point verified on outputs: the next forward may have to return to it
            verified = {n: t.detach().clone() for n, t in self._last_feasible.items()} if self._outputs_verified else {}
            return {"weight": self.weight, "last_feasible": verified}
        return {"weight": self.weight}

    def _load_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        verified = state.pop("last_feasible", None) if self._on_outputs() else None
        values = _positive_entries(self.name, state, tuple(k for k in self._state() if k != "last_feasible"))
        self.weight = values["weight"]
        if self.barrier:
            self._remember_parameters()
        if verified:
            self._load_verified(verified)

    def _load_verified(self, verified: Any) -> None:
        """Restore the point last verified on outputs (``state["last_feasible"]``), checking names and shapes."""
        own = self._last_feasible
        if not isinstance(verified, dict) or set(verified) != set(own):
            raise KeyError(
                f"strategy {self.name!r}: state['last_feasible'] must hold the parameters {sorted(own)}; "
                f"got {sorted(verified) if isinstance(verified, dict) else type(verified).__name__}."
            )
        for name, buf in own.items():
            value = verified[name]
            if not isinstance(value, Tensor) or value.shape != buf.shape:
                raise ValueError(
                    f"strategy {self.name!r}: state['last_feasible'][{name!r}] must be a tensor of shape {tuple(buf.shape)}."
                )
            buf.copy_(value)
        self._outputs_verified = True


@register("quadratic-penalty")
class QuadraticPenalty(PenaltyStrategy):
    r""":math:`\mu \sum (g^+)^2 + \mu \sum h^2`."""

    summary = "exterior quadratic penalty mu*relu(g)^2 + mu*h^2; feasibility improves as the weight grows"

    def inequality_term(self, g: Tensor) -> Tensor:
        return g.clamp_min(0).square()

    def equality_term(self, h: Tensor) -> Tensor:
        return h.square()


@register("exact-penalty")
class ExactPenalty(PenaltyStrategy):
    r""":math:`\mu \sum g^+ + \mu \sum |h|`: exact for a weight above the largest multiplier.

    ``form="proximal"`` (default): on parameters whose set has a proximal step (orthant, L1 ball, affine:
    ``strategies._penalty_prox``), the penalty is left out of the loss and applied after each optimizer step
    as its proximal step in the optimizer's metric (Adam, AdamW, RMSprop, Adagrad: per-coordinate steps
    :math:`\eta / d_i`; SGD: :math:`\eta`). Proximal gradient descent converges to the minimizer of
    :math:`f + \mu P`, which is the constrained optimum once :math:`\mu` exceeds the multipliers. Outputs,
    and parameters on other sets, keep the subgradient term in the loss (outputs have no proximal step: they
    are not the optimizer's variables). ``form="subgradient"``: the penalty in the loss everywhere; Adam's
    step on its subgradient chatters around the boundary at the size of the step."""

    summary = "exact (L1) penalty mu*relu(g) + mu*|h|, its proximal step on weights; exact once mu exceeds the multipliers"

    def __init__(
        self,
        *,
        weight: float = 1.0,
        growth: float | None = None,
        weight_limit: float | None = None,
        tolerance: float | None = 1e-3,
        form: Literal["proximal", "subgradient"] = "proximal",
    ) -> None:
        super().__init__(weight=weight, growth=growth, weight_limit=weight_limit, tolerance=tolerance)
        self.form = form
        self._watch: OptimizerWatch | None = None

    def inequality_term(self, g: Tensor) -> Tensor:
        return g.clamp_min(0)

    def equality_term(self, h: Tensor) -> Tensor:
        return h.abs()

    def _in_loss(self, target: Target) -> bool:
        return not self._proximal(target)

    def _proximal(self, target: Target) -> bool:
        return self.form == "proximal" and isinstance(target, ParameterTarget) and has_prox(target.set)

    def _attach(self) -> None:
        super()._attach()
        model = self._require_model()
        params = [p for t in self.targets if isinstance(t, ParameterTarget) and self._proximal(t) for p in t.tensors(model)]
        if params:
            self._watch = self._watch_optimizer(params)

    def _after_step(self) -> None:
        self._apply_prox()
        super()._after_step()

    @torch.no_grad()
    def _apply_prox(self) -> None:
        if self._watch is None:
            return
        model = self._require_model()
        for target in self.targets:
            if not self._proximal(target):
                continue
            assert isinstance(target, ParameterTarget)
            rows = target.gather(model)
            self._check_finite_parameters(target, rows)
            steps = self._watch.step_sizes(target, model)
            if steps is None:
                self._fall_back(target)
                return
            new = exact_penalty_prox(target.set, rows, steps.to(rows), self.weight)
            for param, value in zip(target.tensors(model), target.split(new, model), strict=True):
                param.copy_(value)

    def _fall_back(self, target: Target) -> None:
        warn_at_caller(
            f"exact-penalty: no optimizer with a known step (Adam, AdamW, RMSprop, Adagrad, SGD) stepped {target.label}, "
            f"so its proximal step has no metric; switching to form='subgradient' (the penalty in the loss) from the next step."
        )
        self.form = "subgradient"


@register("log-barrier")
class LogBarrier(PenaltyStrategy):
    r""":math:`-\mu \sum \log(-g)`; needs a strictly feasible start; shrink :math:`\mu` with growth < 1."""

    summary = "log barrier -mu*log(-g); strictly feasible start required, steps kept inside"
    barrier = True
    default_growth = 1.0
    finite_inside = True

    def inequality_term(self, g: Tensor) -> Tensor:
        return -torch.log(-g)

    def inequality_rows(self, g: Tensor) -> Tensor:
        return torch.log(-g).sum(-1).neg()  # the same value: negating the row sums, not every entry

    def slack_rows(self, slack: Tensor) -> Tensor:
        return torch.log(slack).sum(-1).neg()  # backward: one division, -grad / s


@register("reciprocal-barrier")
class ReciprocalBarrier(PenaltyStrategy):
    r""":math:`\mu \sum 1 / (-g)`; needs a strictly feasible start."""

    summary = "reciprocal barrier mu/(-g); strictly feasible start required, steps kept inside"
    barrier = True
    default_growth = 1.0

    def inequality_term(self, g: Tensor) -> Tensor:
        return 1.0 / (-g)

    def slack_rows(self, slack: Tensor) -> Tensor:
        return slack.reciprocal().sum(-1)


@register("extended-log-barrier")
class ExtendedLogBarrier(PenaltyStrategy):
    r"""Kervadec et al.'s extension :math:`\tilde\psi_t(z) = -\frac1t\log(-z)` for :math:`z \le -1/t^2`,
    else :math:`t z - \frac1t\log(1/t^2) + \frac1t`: smooth, linear outside, accepts infeasible starts.
    ``t`` is multiplied by ``t_growth`` after every step (the barrier sharpens)."""

    summary = "extended log barrier (Kervadec et al.): log inside, linear outside; infeasible start allowed"

    def __init__(
        self,
        *,
        weight: float = 1.0,
        growth: float | None = None,
        weight_limit: float | None = None,
        tolerance: float | None = 1e-3,
        t: float = 5.0,
        t_growth: float = 1.0,
    ) -> None:
        super().__init__(weight=weight, growth=growth, weight_limit=weight_limit, tolerance=tolerance)
        self.t = _check_positive(t, "t")
        self.t_growth = _check_positive(t_growth, "t_growth")

    @classmethod
    def unsupported_reason(cls, target: Target) -> str | None:
        if target.set.has_equalities:
            return (
                "the extended log barrier acts on inequalities only (an equality has no interior); use "
                "quadratic-penalty, lagrangian, projected or a reparameterization instead."
            )
        return None

    def inequality_term(self, g: Tensor) -> Tensor:
        t = self.t
        threshold = -1.0 / t**2
        inside = -torch.log(-g.clamp_max(threshold)) / t
        outside = t * g - math.log(1.0 / t**2) / t + 1.0 / t
        return torch.where(g <= threshold, inside, outside)

    def _after_step(self) -> None:
        super()._after_step()
        self.t *= self.t_growth

    def _state(self) -> dict[str, Any]:
        return {"weight": self.weight, "t": self.t}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)  # checks both entries
        self.t = float(state["t"])
