r"""The strategy interface shared by every family.

A strategy enforces constraint targets (``on_output(set)``, ``on_parameter(name, set)``) during
training with the same four calls::

    model = strategy.attach(model, constraints)
    loss = strategy.loss(objective, outputs)        # + penalty / multiplier terms, if any
    loss.backward(); optimizer.step()
    strategy.after_step()                           # projection, dual ascent, schedules

Constraint values are computed on rows: each sample's output (``output_rows``) or each output
unit of a weight (``parameter_rows``); flat-vector sets (``Affine``) see ``vec`` of the parameters.
"""

from __future__ import annotations

import math
import numbers
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from constrain import ConstraintSet, OutputTarget, ParameterTarget, output_rows
from strategies import _distributed
from strategies._optimizer_metric import OptimizerWatch
from strategies._options import check_choice, check_literal_options

Target = OutputTarget | ParameterTarget
#: What a strategy does with a non-finite loss: raise ``FloatingPointError`` or skip the step.
OnNonFinite = Literal["raise", "skip"]


class UnsupportedConstraint(ValueError):
    """The strategy cannot enforce this kind of constraint; the message says why and what to use."""


class NotAttachedError(RuntimeError):
    """A strategy method that needs a model was called before :meth:`Strategy.attach`."""


def as_targets(constraints: Target | Iterable[Target]) -> list[Target]:
    """Normalize one target or an iterable of them to a non-empty list, checking each."""
    items = [constraints] if isinstance(constraints, (OutputTarget, ParameterTarget)) else constraints
    try:
        targets = list(items)
    except TypeError:
        raise TypeError(
            f"constraints must be a target or a list of targets built with on_output(...) / "
            f"on_parameter(...); got {type(constraints).__name__}."
        ) from None
    for i, target in enumerate(targets):
        if not isinstance(target, (OutputTarget, ParameterTarget)):
            raise TypeError(
                f"constraints[{i}] is a {type(target).__name__}; wrap the set with on_output(set) or "
                f"on_parameter('layer.weight', set)."
            )
    if not targets:
        raise ValueError("constraints is empty: give at least one on_output(...) or on_parameter(...) target.")
    return targets


def target_rows(target: Target, model: nn.Module, outputs: Tensor | None) -> Tensor:
    """The rows a target constrains: the outputs' rows or the parameter's rows."""
    if isinstance(target, OutputTarget):
        if outputs is None:
            raise ValueError(
                f"the constraint {target.label} is on the model's outputs: pass them, strategy.loss(objective, outputs)."
            )
        if not isinstance(outputs, Tensor):
            raise TypeError(f"outputs must be the model's output tensor, got {type(outputs).__name__}.")
        if not outputs.is_floating_point():
            raise TypeError(
                f"outputs has dtype {outputs.dtype}; constraints on outputs need the model's floating-point "
                f"outputs (pass the tensor the model returned, not labels or indices)."
            )
        if outputs.dim() == 0 or outputs.shape[0] == 0:
            raise ValueError(
                f"outputs has shape {tuple(outputs.shape)}: the constraint {target.label} needs a batch of at least "
                f"one sample, shape (batch, ...). Skip empty batches (e.g. DataLoader(..., drop_last=True))."
            )
        rows = outputs if outputs.dim() == 2 else output_rows(outputs)  # 2-d: the rows already (no view node)
        target.set.check_length(rows.shape[-1], "the output rows")  # the set states the length it acts on
        return rows
    return target.gather(model)


def constraint_values(target: Target, rows: Tensor) -> tuple[Tensor | None, Tensor | None]:
    r"""``(g, h)`` of the target's set on ``rows``: :math:`g \le 0` and :math:`h = 0`, each ``(rows, k)``."""
    constraint_set = bound_set(target, rows)
    return constraint_set.inequality(rows), constraint_set.equality(rows)


# ----------------------------------------------------------------- the model's input of a forward
#: Recent forwards of models whose output constraints read the input:
#: (weak reference to the output, the inputs, the output's leading size, whether grad was enabled).
_FORWARDS: list[tuple[weakref.ref, tuple, int, bool]] = []
#: How many recent forwards are remembered (the loss is computed right after its forward).
_REMEMBERED = 8


def _root(t: Tensor) -> Tensor:
    """The tensor a view was taken of (itself if it is not a view)."""
    return t._base if t._base is not None else t


def capture_inputs(model: nn.Module) -> torch.utils.hooks.RemovableHandle:
    """Record, for every forward of ``model``, which inputs produced which output (a forward hook; register
    it after any output map, so that it sees the final outputs). :func:`bound_set` reads it."""

    def record(module: nn.Module, inputs: tuple, outputs: Any) -> None:
        if isinstance(outputs, Tensor):
            kept = _FORWARDS[-(_REMEMBERED - 1) :]  # entries whose output is gone still serve derived tensors
            size = outputs.shape[0] if outputs.dim() else 1
            _FORWARDS[:] = kept + [(weakref.ref(_root(outputs)), inputs, size, torch.is_grad_enabled())]

    return model.register_forward_hook(record)


def inputs_of(outputs: Tensor) -> tuple | None:
    """The model's positional inputs of the forward that produced ``outputs`` (or the tensor ``outputs`` is a
    view of). When ``outputs`` is another tensor computed from the model's output (DistributedDataParallel with
    ``find_unused_parameters`` returns such a copy): the most recent forward with the same batch size and the
    same grad mode (a validation forward under ``torch.no_grad()`` in between does not count for training
    outputs). None if there is none."""
    root = _root(outputs)
    for ref, inputs, _, _ in reversed(_FORWARDS):
        if ref() is root:
            return inputs
    size = outputs.shape[0] if outputs.dim() else 1
    for _, inputs, batch, grad in reversed(_FORWARDS):
        if batch == size and grad == outputs.requires_grad:
            return inputs
    return None


def bound_set(target: Target, rows: Tensor) -> ConstraintSet:
    """The target's set with its callable right-hand sides evaluated on the model's input of the forward
    that produced ``rows`` (the set itself when it has none)."""
    constraint_set = target.set
    if not constraint_set.needs_inputs:
        return constraint_set
    inputs = inputs_of(rows) if isinstance(target, OutputTarget) else None
    if inputs is None:
        raise ValueError(
            f"{target.label} has a right-hand side computed from the model's input, but no recorded forward of an "
            f"attached model produced these outputs (batch of {rows.shape[0]}): attach the strategy first "
            f"(model = strategy.attach(model, constraints)) and pass the outputs of model(x), or a view of them."
        )
    return constraint_set.bind(*inputs)


def all_finite(value: Tensor) -> bool:
    """Whether every entry of ``value`` is finite (one host synchronisation). A single float is read with
    one ``item()``: ``torch.isfinite(...).all()`` would cost three kernels more on every step."""
    if value.numel() == 1 and value.is_floating_point():
        return math.isfinite(value.item())
    return bool(torch.isfinite(value.detach()).all())


def install_output_map(
    model: nn.Module, row_map: Callable[..., Tensor], constraint_set: ConstraintSet | None = None
) -> torch.utils.hooks.RemovableHandle:
    """Append ``row_map`` to ``model`` as a forward hook: ``model(x)`` returns ``row_map`` applied to
    its output rows (``output_rows``), reshaped back. The model object, its parameter names and its
    state_dict stay the same, and the map holds on every input, seen or unseen. When ``constraint_set``
    reads the model's input (a right-hand side ``f(x)``), the map is called as ``row_map(rows, bound)``
    with the set bound to this forward's input."""

    def hook(module: nn.Module, inputs: Any, outputs: Tensor) -> Tensor:
        if constraint_set is not None and constraint_set.needs_inputs:
            return row_map(output_rows(outputs), constraint_set.bind(*inputs)).reshape(outputs.shape)
        return row_map(output_rows(outputs)).reshape(outputs.shape)

    return model.register_forward_hook(hook)


#: The hook dictionaries of a module (a handle's id is the key in each).
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
#: The hook dictionaries of a parameter.
_TENSOR_HOOK_DICTS = ("_backward_hooks", "_post_accumulate_grad_hooks")


class _Undo:
    """What :meth:`Strategy.attach` changed on a model, to undo it: the hooks registered on its modules and
    parameters while attaching (their ids are consecutive: torch numbers every handle from one counter), the
    parametrizations put on tensors, and the parameters, buffers and submodules added to its modules."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.first_id = torch.utils.hooks.RemovableHandle.next_id
        self.last_id = self.first_id
        self.members = [(m, list(m._parameters), list(m._buffers), list(m._modules)) for m in model.modules()]
        self.parametrized = self._parametrizations()
        self.requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}

    def _parametrizations(self) -> dict[tuple[nn.Module, str], int]:
        """How many parametrizations each parametrized tensor of the model carries."""
        return {
            (m, n): len(cast(nn.ModuleList, plist))
            for m in self.model.modules()
            if parametrize.is_parametrized(m)
            for n, plist in cast(nn.ModuleDict, m.parametrizations).items()
        }

    def finish(self) -> None:
        """Mark the end of the attach: hooks registered later (by the user) are left alone."""
        self.last_id = torch.utils.hooks.RemovableHandle.next_id

    def _drop_hooks(self, owner: object, names: tuple[str, ...]) -> None:
        """Remove from ``owner``'s hook dictionaries ``names`` the hooks registered while attaching."""
        for name in names:
            hooks = getattr(owner, name, None)
            if isinstance(hooks, dict):
                for key in [k for k in hooks if isinstance(k, int) and self.first_id <= k < self.last_id]:
                    del hooks[key]

    def apply(self) -> None:
        """Undo: hooks, then parametrizations (keeping values), then added members; restore requires_grad."""
        for module in list(self.model.modules()):
            self._drop_hooks(module, _HOOK_DICTS)
            for param in module.parameters(recurse=False):
                self._drop_hooks(param, _TENSOR_HOOK_DICTS)
        for (module, attr), count in self._parametrizations().items():
            if self.parametrized.get((module, attr)) != count:  # maps were added: remove them all, keeping the value
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
        for module, params, buffers, children in self.members:
            _restore_members(module, cast(dict[str, Any], module._parameters), params)
            _restore_members(module, cast(dict[str, Any], module._buffers), buffers)
            _restore_members(module, cast(dict[str, Any], module._modules), children)
        for name, param in self.model.named_parameters():
            param.requires_grad_(self.requires_grad.get(name, param.requires_grad))


def _restore_members(module: nn.Module, store: dict[str, Any], kept: list[str]) -> None:
    """Delete the entries of ``store`` (a module's parameters, buffers or submodules) not in ``kept``, and put the
    others back in ``kept``'s order (a parametrization removed re-adds its tensor last)."""
    for key in [k for k in store if k not in kept and k != "parametrizations"]:
        delattr(module, key)
    order = {k: store[k] for k in kept if k in store}
    order.update(store)
    store.clear()
    store.update(order)


class Strategy:
    """Base class: subclasses set ``family`` and ``summary`` and override the ``_hooks``.

    Non-finite values. :meth:`loss` checks that the loss it returns is finite (one host
    synchronisation per call). If it is not, what happens is the ``on_nonfinite`` option, which
    every strategy accepts (``strategies.get(name, on_nonfinite="skip")``, or :meth:`configure`):

    - ``"raise"`` (default): ``FloatingPointError`` naming the step, the objective's value and the
      constraints whose values are not finite. Nothing was updated: the parameters and the
      multipliers are as they were before this step (the strategy forgets what this loss recorded).
    - ``"skip"``: the step is skipped. :meth:`loss` returns a zero loss that is not connected to
      the model (a warning says why): ``backward()`` gives the parameters no gradient, so after
      ``optimizer.zero_grad()`` (``set_to_none=True``, torch's default) torch's optimizers leave
      every parameter, and its optimizer state, untouched. The next :meth:`after_step` then takes
      no dual step and advances no schedule (penalty weights, barrier sharpness, L1 shrinkage);
      it only re-applies what keeps the iterate feasible (the projection after the step, barrier
      backtracking), which changes nothing when the parameters did not move. The step still counts
      in :attr:`steps`; :attr:`skipped_steps` counts the skipped ones. With gradient accumulation
      the finite micro-batches of the step still contribute their gradients. Under
      ``torch.distributed`` the ranks agree (one all-reduce of a flag per :meth:`loss`): a step is
      skipped on every rank if the loss is not finite on one of them.

    Non-finite values that appear only after the optimizer step (the optimizer itself wrote NaN or
    Inf into a constrained parameter, e.g. from non-finite gradients of a finite loss) raise
    ``FloatingPointError`` from :meth:`after_step` naming the step and the constraint; the strategy
    changes nothing, but the optimizer already has. Clip with
    ``torch.nn.utils.clip_grad_norm_(..., error_if_nonfinite=True)`` to stop before that.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __new__(cls, *args: Any, **options: Any) -> Strategy:
        """Check the enumerated (``Literal``) options of ``cls`` before its constructor runs."""
        check_literal_options(cls, options)
        return super().__new__(cls)

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.targets: list[Target] = []
        self.steps = 0
        self.skipped_steps = 0
        self.on_nonfinite: str = "raise"
        self._skipping = False
        #: Handles of what :meth:`attach` installed outside the model's modules (optimizer hooks, tensor hooks).
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._undo: _Undo | None = None

    def configure(self, *, on_nonfinite: OnNonFinite = "raise") -> Strategy:
        """Set the options every strategy shares (``strategies.get`` passes them here); returns ``self``.

        ``on_nonfinite``: ``"raise"`` or ``"skip"`` a step whose loss is NaN or Inf (see the class doc).
        """
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, ("raise", "skip"), self.name)
        return self

    # ----------------------------------------------------------------- support matrix
    @classmethod
    def unsupported_reason(cls, target: Target) -> str | None:
        """Why this strategy cannot enforce ``target`` (None if it can). Drives ``constrain list``."""
        return None

    # ----------------------------------------------------------------- public API
    def attach(self, model: nn.Module, constraints: Target | Iterable[Target]) -> nn.Module:
        """Bind the strategy to ``model`` and ``constraints``; returns the model to train."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        if self.model is not None:
            raise RuntimeError(f"strategy {self.name!r} is already attached; build a new one with strategies.get().")
        targets = as_targets(constraints)
        for target in targets:
            if isinstance(target, ParameterTarget):
                target.validate(model)
                if target.set.needs_inputs:
                    raise ValueError(
                        f"{target.label}: a right-hand side computed from the model's input applies to outputs only; "
                        f"give the parameter constraint constant right-hand sides."
                    )
            reason = self.unsupported_reason(target)
            if reason is not None:
                raise UnsupportedConstraint(f"strategy {self.name!r} cannot enforce {target.label}: {reason}")
        self.model, self.targets = model, targets
        undo = _Undo(model)
        try:
            self._attach()
            if any(isinstance(t, OutputTarget) and t.set.needs_inputs for t in targets):
                self._handles.append(capture_inputs(model))  # after the output maps of _attach: the final outputs
        except BaseException:  # a refused attach leaves the model as it was
            undo.finish()
            self._undo = undo
            self._undo_attach()
            raise
        undo.finish()
        self._undo = undo
        return model

    def detach(self) -> nn.Module:
        """Undo :meth:`attach` and return the model: the hooks the strategy installed are removed, the
        parametrizations it put on constrained tensors are removed keeping their current values as plain
        parameters (with any parametrization those tensors had before), parameters and buffers it added to
        the model are deleted, so the model has its original parameter names again. The strategy is then
        unattached (its state is kept); attach it again, or build a new one."""
        model = self._require_model()
        self._undo_attach()
        return model

    def _watch_optimizer(self, params: list[Tensor]) -> OptimizerWatch:
        """An :class:`OptimizerWatch` of ``params``: its global optimizer hook goes with :meth:`detach`, or with this
        strategy once it is garbage collected (a strategy dropped without ``detach`` leaves no hook behind)."""
        watch = OptimizerWatch(params)
        self._handles.append(watch.handle)
        weakref.finalize(self, watch.remove)
        return watch

    def _undo_attach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._undo is not None:
            self._undo.apply()
        self.model, self.targets, self._undo = None, [], None

    def loss(self, objective: Tensor, outputs: Tensor | None = None, sample_ids: Tensor | None = None) -> Tensor:
        """``objective`` plus this strategy's penalty or multiplier terms (unchanged if it has none).

        ``outputs``: the model's outputs on this batch (needed for output constraints).
        ``sample_ids``: the batch's indices into the training set (per-sample multipliers).
        A non-finite result raises or skips the step, as ``on_nonfinite`` says (see the class doc).
        """
        model = self._require_model()
        if not isinstance(objective, Tensor) or objective.numel() != 1:
            raise TypeError(
                f"objective must be a scalar tensor (the training loss of this batch), got "
                f"{type(objective).__name__}{tuple(objective.shape) if isinstance(objective, Tensor) else ''}; "
                f"reduce it first, e.g. loss.mean()."
            )
        extra = self._loss_terms(model, outputs, sample_ids)
        total = objective if extra is None else objective + extra
        finite = all_finite(total)
        if self.on_nonfinite == "skip":
            finite = _distributed.all_true(finite)
        if finite:
            return total
        self._discard_loss()
        message = self._nonfinite_message(model, objective, outputs)
        if self.on_nonfinite == "raise":
            raise FloatingPointError(
                f"{message} Nothing was updated: the parameters and multipliers are as before this step. Lower the "
                f"learning rate or the penalty weight, or pass on_nonfinite='skip' to strategies.get to skip such steps."
            )
        warnings.warn(f"{message} Skipping this step (on_nonfinite='skip').", RuntimeWarning, stacklevel=2)
        self._skipping = True
        return torch.zeros((), dtype=objective.dtype, device=objective.device, requires_grad=True)

    def after_step(self) -> None:
        """Call after ``optimizer.step()``: projection, dual ascent, schedules."""
        self._require_model()
        if self._skipping:
            self._skipping = False
            self.skipped_steps += 1
            self._discard_step()
            self._after_skipped_step()
        else:
            self._after_step()
        self.steps += 1

    @torch.no_grad()
    def report(self, outputs: Tensor | None = None) -> dict[str, float]:
        """Largest violation of each constraint now: outputs on ``outputs`` (skipped if None).

        Raises ``FloatingPointError`` naming the constraint if its values are NaN or Inf.
        """
        model = self._require_model()
        out: dict[str, float] = {}
        for target in self.targets:
            if isinstance(target, OutputTarget) and outputs is None:
                continue
            rows = target_rows(target, model, outputs)
            value = float(bound_set(target, rows).violation(rows).max()) + 0.0 if rows.numel() else 0.0  # + 0.0: -0.0 -> 0.0
            if not math.isfinite(value):
                what = "outputs" if isinstance(target, OutputTarget) else "values"
                raise FloatingPointError(
                    f"strategy {self.name!r}: the {what} of {target.label} contain NaN or Inf at step {self.steps}; "
                    f"their violation is undefined. Find where they come from (torch.autograd.set_detect_anomaly)."
                )
            out[target.label] = value
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: step count, multipliers, schedules, buffers."""
        return {"steps": self.steps, "skipped_steps": self.skipped_steps, **self._state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; call after :meth:`attach` on the rebuilt model."""
        self._require_model()
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be the dict returned by strategy.state_dict(), got {type(state).__name__}.")
        if "steps" not in state:
            raise KeyError(
                f"strategy {self.name!r}: state has no 'steps', so it was not produced by Strategy.state_dict(); "
                f"pass strategy.state_dict() of a {self.name!r} strategy."
            )
        steps, skipped = state["steps"], state.get("skipped_steps", 0)
        for key, value in (("steps", steps), ("skipped_steps", skipped)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"state[{key!r}] must be a non-negative int (a step count), got {value!r}.")
        self._load_state({k: v for k, v in state.items() if k not in ("steps", "skipped_steps")})
        self.steps, self.skipped_steps, self._skipping = int(steps), int(skipped), False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # ----------------------------------------------------------------- hooks for subclasses
    def _attach(self) -> None:
        """Set up after the targets are validated (register parametrizations, hooks, buffers)."""

    def _loss_terms(self, model: nn.Module, outputs: Tensor | None, sample_ids: Tensor | None) -> Tensor | None:
        """Extra terms added to the objective, or None."""
        for target in self.targets:  # still check that outputs were given when they are needed
            if isinstance(target, OutputTarget):
                target_rows(target, model, outputs)
        return None

    def _after_step(self) -> None:
        """Work after the optimizer step."""

    def _after_skipped_step(self) -> None:
        """Work after a skipped step: only what restores feasibility (projections, backtracking)."""

    def _discard_loss(self) -> None:
        """Forget what the last :meth:`loss` call recorded (it was not finite)."""

    def _discard_step(self) -> None:
        """Forget everything recorded since the last :meth:`after_step` (the step is skipped)."""

    def _nonfinite_message(self, model: nn.Module, objective: Tensor, outputs: Tensor | None) -> str:
        """Which values are not finite: the objective, a constraint's rows or values, or the terms."""
        parts = []
        value = float(objective.detach())
        if not math.isfinite(value):
            parts.append(f"the objective is {value}")
        with torch.no_grad():
            for target in self.targets:
                if isinstance(target, OutputTarget) and outputs is None:
                    continue
                rows = target_rows(target, model, outputs)
                if not bool(torch.isfinite(rows).all()):
                    what = "the outputs" if isinstance(target, OutputTarget) else "the parameter values"
                    parts.append(f"{what} of {target.label} contain NaN or Inf")
                    continue
                g, h = constraint_values(target, rows)
                if any(c is not None and not bool(torch.isfinite(c).all()) for c in (g, h)):
                    parts.append(f"the constraint values of {target.label} are not finite")
        if not parts:
            parts.append(
                f"the constraint terms of {', '.join(t.label for t in self.targets)} overflowed (objective {value:g}; "
                f"e.g. a barrier at its boundary or a penalty weight too large)"
            )
        return f"strategy {self.name!r}: the loss is not finite at step {self.steps}: {'; '.join(parts)}."

    def _check_finite_parameters(self, target: ParameterTarget, rows: Tensor) -> None:
        """Raise FloatingPointError if the optimizer left NaN or Inf in ``target``'s parameters."""
        # One pass without temporaries: a finite sum means every entry is finite (Inf or NaN make it Inf or NaN);
        # only a non-finite sum (or an overflowing one) pays for the exact elementwise test.
        if rows.numel() and not math.isfinite(rows.sum().item()) and not bool(torch.isfinite(rows).all()):
            raise FloatingPointError(
                f"strategy {self.name!r}: after optimizer step {self.steps}, {'+'.join(target.names)} "
                f"({target.label}) contains NaN or Inf. The strategy changed nothing, but the optimizer already wrote "
                f"these values: restore a checkpoint and lower the learning rate, or stop before the step with "
                f"torch.nn.utils.clip_grad_norm_(..., error_if_nonfinite=True)."
            )

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        if state:
            raise KeyError(f"strategy {self.name!r} has no state entries {sorted(state)}.")

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise NotAttachedError(
                f"strategy {self.name!r} is not attached: call model = strategy.attach(model, constraints) first."
            )
        return self.model
