"""Targets bind a constraint set to what it constrains: a model's outputs or named parameters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from constrain.sets import ConstraintSet


def _check_set(constraint_set: object) -> ConstraintSet:
    if not isinstance(constraint_set, ConstraintSet):
        raise TypeError(
            f"expected a constraint set such as L1Ball(radius=1.0), NonNegative() or Affine(A, c); "
            f"got {type(constraint_set).__name__}."
        )
    return constraint_set


@dataclass(frozen=True)
class OutputTarget:
    """The model's outputs, row by row (one row per sample), must lie in ``set``."""

    set: ConstraintSet

    @property
    def label(self) -> str:
        return f"output in {self.set!r}"


@dataclass(frozen=True)
class ParameterTarget:
    """Named parameters must lie in ``set``.

    Row-wise sets (L1 ball, non-negativity) act on each row of one parameter; flat-vector sets
    (``Affine``) act on the concatenation of the flattened parameters, so one linear constraint
    may tie weights across layers.
    """

    names: tuple[str, ...]
    set: ConstraintSet

    @property
    def label(self) -> str:
        return f"{'+'.join(self.names)} in {self.set!r}"

    def tensors(self, model: nn.Module) -> list[Tensor]:
        """The current values (a parametrized weight gives its constrained value)."""
        _check_model(model)
        return [getattr(model.get_submodule(module), attr) for module, attr in map(_split, self.names)]

    def validate(self, model: nn.Module, require_grad: bool = True) -> None:
        """Raise a clear error if a name is unknown, frozen, or the shapes do not fit the set
        (the set states what it acts on: :meth:`ConstraintSet.check_parameters`)."""
        known = _parameter_names(_check_model(model))
        for name in self.names:
            if name not in known:
                raise KeyError(
                    f"on_parameter: the model has no parameter {name!r}; its parameters are: "
                    f"{', '.join(sorted(known)) or '(none)'}."
                )
            if require_grad and not known[name].requires_grad:
                raise ValueError(
                    f"on_parameter: parameter {name!r} is frozen (requires_grad=False); training cannot move it "
                    f"into the set. Unfreeze it with .requires_grad_(True) or drop the constraint."
                )
        self.set.check_parameters({name: tuple(known[name].shape) for name in self.names})

    def gather(self, model: nn.Module) -> Tensor:
        """The constrained value as rows ``(rows, n)``: ``vec`` of the concatenated parameters (one
        row) for flat-vector sets; otherwise one row per output unit, ``W.reshape(W.shape[0], -1)``
        (a 1-d parameter is one row)."""
        values = self.tensors(model)
        if self.set.acts_on_flat_vector:
            return torch.cat([v.reshape(-1) for v in values]).unsqueeze(0)
        return parameter_rows(values[0])

    def split(self, rows: Tensor, model: nn.Module) -> list[Tensor]:
        """Inverse of :meth:`gather`: one tensor per name, each in its parameter's shape."""
        shapes = [v.shape for v in self.tensors(model)]
        sizes = [int(torch.Size(s).numel()) for s in shapes]
        return [part.reshape(s) for part, s in zip(rows.reshape(-1).split(sizes), shapes, strict=True)]


def parameter_rows(value: Tensor) -> Tensor:
    """A parameter as rows ``(units, n)``: one row per output unit (``W.reshape(W.shape[0], -1)``);
    a 1-d parameter (a bias) is a single row."""
    return value.reshape(value.shape[0], -1) if value.dim() >= 2 else value.reshape(1, -1)


def output_rows(outputs: Tensor) -> Tensor:
    """A batch of outputs as rows ``(batch, n)``: one row per sample; ``(B,)`` becomes ``(B, 1)``."""
    return outputs.reshape(outputs.shape[0], -1) if outputs.dim() >= 2 else outputs.reshape(-1, 1)


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    return model


def _split(name: str) -> tuple[str, str]:
    module, _, attr = name.rpartition(".")
    return module, attr


def _parameter_names(model: nn.Module) -> dict[str, Tensor]:
    """Every constrainable name: plain parameters and parametrized attributes (``layer.weight``)."""
    names: dict[str, Tensor] = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for attr, param in module.named_parameters(recurse=False):
            names[prefix + attr] = param
        if parametrize.is_parametrized(module):
            for attr in module.parametrizations:
                names[prefix + attr] = module.parametrizations[attr].original
    return {name: p for name, p in names.items() if ".parametrizations." not in name}


def on_output(constraint_set: ConstraintSet) -> OutputTarget:
    """Constrain the model's output: each sample's output row must lie in ``constraint_set``."""
    return OutputTarget(_check_set(constraint_set))


def on_parameter(names: str | Sequence[str], constraint_set: ConstraintSet) -> ParameterTarget:
    """Constrain the parameter(s) called ``names`` (as in ``model.named_parameters()``).

    Several names are allowed only for flat-vector sets such as ``Affine``, which then act on
    the concatenation of the flattened parameters.
    """
    constraint_set = _check_set(constraint_set)
    try:
        names_t = (names,) if isinstance(names, str) else tuple(names)
    except TypeError:
        raise TypeError(f"names must be a parameter name such as 'head.weight' or a list of them; got {names!r}.") from None
    if not names_t or not all(isinstance(n, str) and n for n in names_t):
        raise ValueError(f"names must be a parameter name such as 'head.weight' or a list of them; got {names!r}.")
    if len(names_t) > 1 and not constraint_set.acts_on_flat_vector:
        raise ValueError(
            f"{constraint_set!r} acts on each parameter's rows; only a flat-vector set such as Affine can span "
            f"several parameters. Use one on_parameter(...) per name instead."
        )
    return ParameterTarget(names_t, constraint_set)
