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

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Union

import torch
from torch import Tensor, nn

from constrain import OutputTarget, ParameterTarget, output_rows

Target = Union[OutputTarget, ParameterTarget]


class UnsupportedConstraint(ValueError):
    """The strategy cannot enforce this kind of constraint; the message says why and what to use."""


class NotAttachedError(RuntimeError):
    """A strategy method that needs a model was called before :meth:`Strategy.attach`."""


def as_targets(constraints: Target | Iterable[Target]) -> list[Target]:
    """Normalize one target or an iterable of them to a non-empty list, checking each."""
    items = [constraints] if isinstance(constraints, (OutputTarget, ParameterTarget)) else constraints
    try:
        targets = list(items)  # type: ignore[arg-type]
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
                f"the constraint {target.label} is on the model's outputs: pass them, "
                f"strategy.loss(objective, outputs)."
            )
        if not isinstance(outputs, Tensor):
            raise TypeError(f"outputs must be the model's output tensor, got {type(outputs).__name__}.")
        return output_rows(outputs)
    return target.gather(model)


def constraint_values(target: Target, rows: Tensor) -> tuple[Tensor | None, Tensor | None]:
    r"""``(g, h)`` of the target's set on ``rows``: :math:`g \le 0` and :math:`h = 0`, each ``(rows, k)``."""
    return target.set.inequality(rows), target.set.equality(rows)


def install_output_map(model: nn.Module, row_map: Callable[[Tensor], Tensor]) -> torch.utils.hooks.RemovableHandle:
    """Append ``row_map`` to ``model`` as a forward hook: ``model(x)`` returns ``row_map`` applied to
    its output rows (``output_rows``), reshaped back. The model object, its parameter names and its
    state_dict stay the same, and the map holds on every input, seen or unseen."""

    def hook(module: nn.Module, inputs: Any, outputs: Tensor) -> Tensor:
        return row_map(output_rows(outputs)).reshape(outputs.shape)

    return model.register_forward_hook(hook)


class Strategy:
    """Base class: subclasses set ``family`` and ``summary`` and override the ``_hooks``."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.targets: list[Target] = []
        self.steps = 0

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
            reason = self.unsupported_reason(target)
            if reason is not None:
                raise UnsupportedConstraint(f"strategy {self.name!r} cannot enforce {target.label}: {reason}")
        self.model, self.targets = model, targets
        self._attach()
        return model

    def loss(self, objective: Tensor, outputs: Tensor | None = None, sample_ids: Tensor | None = None) -> Tensor:
        """``objective`` plus this strategy's penalty or multiplier terms (unchanged if it has none).

        ``outputs``: the model's outputs on this batch (needed for output constraints).
        ``sample_ids``: the batch's indices into the training set (per-sample multipliers).
        """
        model = self._require_model()
        if not isinstance(objective, Tensor) or objective.numel() != 1:
            raise TypeError("objective must be a scalar tensor (the training loss of this batch).")
        extra = self._loss_terms(model, outputs, sample_ids)
        total = objective if extra is None else objective + extra
        if not bool(torch.isfinite(total.detach()).all()):
            raise FloatingPointError(
                f"strategy {self.name!r}: the loss is not finite at step {self.steps} "
                f"(objective {float(objective):g}); constraints: {', '.join(t.label for t in self.targets)}. "
                f"Lower the learning rate or the penalty weight; nothing was updated."
            )
        return total

    def after_step(self) -> None:
        """Call after ``optimizer.step()``: projection, dual ascent, schedules."""
        self._require_model()
        self._after_step()
        self.steps += 1

    @torch.no_grad()
    def report(self, outputs: Tensor | None = None) -> dict[str, float]:
        """Largest violation of each constraint now: outputs on ``outputs`` (skipped if None)."""
        model = self._require_model()
        out: dict[str, float] = {}
        for target in self.targets:
            if isinstance(target, OutputTarget) and outputs is None:
                continue
            rows = target_rows(target, model, outputs)
            out[target.label] = float(target.set.violation(rows).max()) if rows.numel() else 0.0
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: step count, multipliers, schedules, buffers."""
        return {"steps": self.steps, **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call after :meth:`attach` on the rebuilt model."""
        self._require_model()
        if "steps" not in state:
            raise KeyError("state has no 'steps': it was not produced by Strategy.state_dict().")
        self.steps = int(state["steps"])
        self._load_state({k: v for k, v in state.items() if k != "steps"})

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
