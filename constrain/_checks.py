"""Input checks shared by the kernels and the sets: one place, one wording."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

Radius = float | int | Tensor

#: dtypes the kernels upcast to float32 internally and cast back.
LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_tensor(x: object, name: str = "x") -> Tensor:
    """Return ``x`` if it is a real floating-point tensor; raise a clear error otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}; wrap it with torch.as_tensor({name}, dtype=torch.float32)."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} has dtype {x.dtype}; projections need a floating-point tensor: pass {name}.float() or {name}.double()."
        )
    return x


_NON_FINITE_FIX = (
    "projections are defined for finite inputs only. Find where the non-finite values come from "
    "(torch.autograd.set_detect_anomaly helps) or clean them with torch.nan_to_num({name})."
)


def is_functorch_wrapped(x: Tensor) -> bool:
    """Whether ``x`` is wrapped by a ``torch.func`` transform (vmap's batched tensors, grad / jvp levels)."""
    return torch._C._functorch.is_functorch_wrapped_tensor(x)


def is_transformed(x: Tensor) -> bool:
    """Whether ``x`` is wrapped by ``torch.func`` or by the legacy vmap (``gradcheck``'s batched checks): plain ops only."""
    return is_functorch_wrapped(x) or torch._C._functorch.is_legacy_batchedtensor(x)


def is_vmapped(x: Tensor) -> bool:
    """Whether ``x`` is batched by ``torch.func.vmap`` at some level."""
    while is_functorch_wrapped(x):
        if torch._C._functorch.is_batchedtensor(x):
            return True
        x = torch._C._functorch.get_unwrapped(x)
    return False


def plain(x: Tensor) -> Tensor:
    """The tensor under every ``torch.func`` wrapper of ``x`` (``x`` itself if none), detached.

    Data checks read it: under ``vmap`` a check on the whole physical tensor (every vmapped
    sample at once) replaces the data-dependent control flow vmap cannot trace.
    """
    while is_functorch_wrapped(x):
        x = torch._C._functorch.get_unwrapped(x)
    return x.detach()


def check_finite(values: Tensor, name: str = "x") -> None:
    """Raise if ``values`` holds NaN or Inf (works under ``torch.func`` transforms).

    Inside ``torch.compile`` nothing is checked (a check would synchronise with the host):
    the callers there return NaN for rows with a non-finite entry instead.

    Callers pass a reduction they computed anyway (row sums, norms): a sum is
    finite iff every summand is, so this costs no extra pass over the input.
    """
    if torch.compiler.is_compiling():  # no host synchronisation in a compiled graph: the caller returns NaN rows
        return
    values = plain(values)
    if values.numel() and not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} contains NaN or Inf; {_NON_FINITE_FIX.format(name=name)}")


def check_positive(value: object, name: str) -> float:
    """``value`` as a float if it is a positive finite real number; a clear error naming ``name`` otherwise.

    The one positive-number check of the project (radii, weights, learning rates, growth factors).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive and finite, got {value}; pass e.g. {name}=1.0.")
    return float(value)


def check_choice(option: str, value: object, choices: Iterable[object], owner: str = "") -> Any:
    """Return ``value`` if it is one of ``choices``; else ``ValueError`` naming ``option`` (of strategy ``owner``,
    if given) and listing them. The one check of an enumerated option in the project."""
    allowed = tuple(choices)
    if any(type(value) is type(c) and value == c for c in allowed):
        return value
    where = f" of strategy {owner!r}" if owner else ""
    raise ValueError(f"option {option!r}{where} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")


def check_radius(radius: Radius, x: Tensor, batch_shape: torch.Size, name: str = "radius") -> Tensor:
    """Return ``radius`` as a tensor of shape ``batch_shape + (1,)`` on ``x``'s device and dtype.

    ``radius`` is a positive finite number or a tensor broadcastable to ``batch_shape``
    (one radius per row, e.g. per sample). Gradients flow through a tensor radius.
    """
    if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, (numbers.Real, Tensor)):
        raise TypeError(f"{name} must be a positive float or a tensor, got {type(radius).__name__}.")
    if not isinstance(radius, Tensor):
        check_positive(radius, name)
        if float(radius) > torch.finfo(x.dtype).max:
            raise ValueError(f"{name}={float(radius):g} overflows {x.dtype}; pass a smaller {name} or a float64 input.")
        return torch.full((*batch_shape, 1), float(radius), dtype=x.dtype, device=x.device)
    if radius.is_complex() or radius.dtype == torch.bool:
        raise TypeError(f"{name} must be a real tensor, got dtype {radius.dtype}.")
    r = radius.to(device=x.device, dtype=x.dtype)
    values = plain(r)
    if values.numel() and not bool(((values > 0) & torch.isfinite(values)).all()):
        raise ValueError(
            f"every entry of {name} must be positive and finite; got min {values.min().item():g}, "
            f"max {values.max().item():g}. A zero radius has a single feasible point: use torch.zeros_like."
        )
    expanded: Tensor | None
    try:
        expanded = r.expand(batch_shape) if r.dim() <= len(batch_shape) else None
    except RuntimeError:
        expanded = None
    if expanded is None:
        raise ValueError(
            f"{name} of shape {tuple(radius.shape)} does not broadcast to the batch shape "
            f"{tuple(batch_shape)} (the input's shape without the projected dimension); "
            f"pass a float or one radius per row."
        )
    return expanded.unsqueeze(-1)


def check_dim(x: Tensor, dim: int, name: str = "dim") -> int:
    """Normalize ``dim`` for ``x``; raise if it is out of range."""
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (the vector to project); got a 0-d tensor.")
    if not -x.dim() <= dim < x.dim():
        raise IndexError(f"{name}={dim} is out of range for a tensor with {x.dim()} dimensions.")
    return dim % x.dim()
