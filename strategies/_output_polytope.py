r"""Reparameterizations of outputs onto polyhedra and boxes: maps :math:`\mathbb{R}^n \to C`, row by row.

- ``reparam-completion`` (``Polyhedron`` with equalities only, or ``Affine``): the null-space completion
  :math:`y = A^+ b + N N^\top z` (:math:`N` an orthonormal null-space basis of :math:`A`): the model's
  output :math:`z` gives the free coordinates :math:`N^\top z` and the equalities fix the rest, for every
  right-hand side :math:`b` (one per sample, or :math:`b(x)`). For an affine set this map coincides
  with the Euclidean projection, computed by two matrix products.
- ``reparam-gauge`` (``Polyhedron`` with inequalities, ``Box``): the ray (gauge) map of RAYEN
  (Tordesillas et al. 2023) and Li et al. (2023). From a strictly feasible :math:`y_0` on the affine
  slice, with :math:`v = \operatorname{complete}(z) - y_0`,

  .. math:: y = y_0 + v / \max\bigl(1, \max_i (G v)_i / (h - G y_0)_i\bigr),

  the identity (up to the completion) inside the set and a radial retraction towards :math:`y_0`
  outside. :math:`y_0` is given (``interior``: a tensor ``(n,)`` / ``(batch, n)`` or a callable of the
  model's input) or computed per sample: ``interior="auto"`` (the default; :mod:`strategies._reparam._interior`)
  keeps the least-norm point :math:`A^+ b` where it is strictly inside, moves the other rows inside by a
  batched phase 1 of the exact polytope projection, and leaves a Chebyshev LP only to rows that this
  does not settle (it refuses, naming the sample, a polytope without interior); ``interior="pinv"`` is
  :math:`y_0 = A^+ b` alone (two matrix products; :math:`y_0 = 0` without equalities; strictly feasible
  for DC3's family when :math:`|x_j| < 1`: there :math:`h_i = \sum_j |(G A^+)_{ij}|`, so
  :math:`h_i - (G y_0)_i \ge \sum_j |(G A^+)_{ij}| (1 - |x_j|) > 0`); ``interior="chebyshev"`` the
  Chebyshev centre of each sample's polytope (one LP per sample on the CPU when the right-hand sides vary,
  once when they are constant). Every :math:`y_0` is certified before use: a slack :math:`h - G y_0` not
  clearly positive (relative to the rounding of :math:`G y_0`) or a defect in :math:`A y_0 = b` raises
  ``ValueError`` naming the sample. A box uses its
  centre (two-sided) or :math:`l + \operatorname{softplus}(z - l)` / :math:`u - \operatorname{softplus}(u - z)`
  (one-sided).

Both hold on every input, seen or unseen, up to floating-point rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from constrain import Affine, Box, ConstraintSet, OutputTarget, Polyhedron
from strategies._base import Strategy, Target, install_output_map
from strategies._options import check_choice
from strategies._output_maps import guard_nonfinite
from strategies._registry import register
from strategies._reparam._interior import auto_interior, certify_interior

Interior = str | Tensor | Callable[..., Tensor]
#: The interior points chosen by name (serialisable: a study config can name them).
INTERIORS = ("auto", "chebyshev", "pinv")


def _interior(s: Polyhedron, interior: Interior, rows: Tensor, inputs: tuple, cache: dict) -> Tensor:
    """The strictly feasible point of each row: given, ``A^+ b``, or computed (cached when the sides are constant)."""
    if isinstance(interior, str) and interior == "pinv":
        return s.complete(torch.zeros_like(rows))  # A^+ b per row (0 without equalities)
    if isinstance(interior, str):
        constant = not any(side is not None and (side.per_row or side.is_callable) for side in (s._b, s._h))
        key = (id(s), rows.device, rows.dtype, interior)
        if constant and key in cache:
            return cache[key].expand(rows.shape[0], -1)
        like = rows[:1] if constant else rows
        if interior == "auto":
            point = auto_interior(s, like, cache)
        else:
            center, _ = s.chebyshev_center(like)
            # the LP meets A y = b only to its tolerance (1e-10 at |b| ~ 10 on DC3's far inputs): snap the centre
            # onto it exactly; the move is that small, and the certificate still checks the result
            point = s.complete(center.contiguous())
        if constant:
            cache[key] = point[:1].detach()
        return point.expand(rows.shape[0], -1)
    y0 = interior(*inputs) if callable(interior) and not isinstance(interior, Tensor) else interior
    if not isinstance(y0, Tensor):
        raise TypeError(f"interior must give a tensor of shape (batch, {s.size}), got {type(y0).__name__}.")
    y0 = y0.to(rows)
    if y0.dim() == 1:
        y0 = y0.expand(rows.shape[0], -1)
    if tuple(y0.shape) != tuple(rows.shape):
        raise ValueError(f"interior has shape {tuple(y0.shape)}; expected ({rows.shape[0]}, {s.size}) or ({s.size},).")
    return y0


def gauge_map(s: Polyhedron, z: Tensor, y0: Tensor) -> Tensor:
    r"""RAYEN's ray map of rows ``z`` onto ``s`` from strictly feasible rows ``y0`` (see the module doc); ``y0`` is
    certified first (:func:`certify_interior`)."""
    certify_interior(s, y0)
    v = s.complete(z) - y0
    slack = -s.inequality(y0)  # type: ignore[operator]  # h - G y0 > 0; certify_interior checked inequalities
    assert s.G is not None  # certified above: the set has inequalities
    kappa = ((v @ s.G.to(v).T) / slack).amax(-1, keepdim=True)
    return y0 + v / kappa.clamp_min(1.0)


def box_map(s: Box, z: Tensor) -> Tensor:
    """Two-sided: the ray map from the centre, :math:`m + v / \\max(1, \\max_i |v_i| / r_i)`; one-sided: softplus."""
    _, lo, up = s._bounds(z)
    if lo is not None and up is not None:
        center, half = (lo + up) / 2, (up - lo) / 2
        v = z - center
        if bool((torch.as_tensor(half) <= 0).any()):
            return s.project(z)  # a flat box (lower = upper somewhere): the clamp itself
        kappa = (v.abs() / half).amax(-1, keepdim=True)
        return center + v / kappa.clamp_min(1.0)
    if lo is not None:
        return lo + F.softplus(z - lo)
    assert up is not None, "a Box has a lower or an upper bound"
    return up - F.softplus(up - z)


class _OutputPolytopeStrategy(Strategy):
    """Shared attach: one output map per target, bound to each forward's input."""

    family = "reparameterization"

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict = {}

    def _row_map(self, target: OutputTarget) -> Callable[..., Tensor]:
        raise NotImplementedError

    def _attach(self) -> None:
        model = self._require_model()
        for target in self.targets:
            assert isinstance(target, OutputTarget)
            self._handles.append(
                install_output_map(model, guard_nonfinite(self, target.label, self._row_map(target)), target.set)
            )


@register("reparam-completion")
class CompletionReparameterization(_OutputPolytopeStrategy):
    r"""``Polyhedron`` with equalities only, or ``Affine``, on outputs: :math:`y = A^+ b + N N^\top z`."""

    summary = (
        "Polyhedron A y = b or Affine A y = c on outputs as y = A^+ b + N N^T z (null-space completion; b per sample or b(x))"
    )

    @classmethod
    def unsupported_reason(cls, target: Target) -> str | None:
        s = target.set
        if not isinstance(target, OutputTarget):
            return "the completion is an output map; for A vec(W) = c on weights use 'reparam-null-space'."
        if isinstance(s, Affine):
            return None
        if not isinstance(s, Polyhedron) or s.G is not None or s.A is None:
            return (
                f"the null-space completion covers a Polyhedron with equalities only (A y = b); {s!r} needs "
                f"{'reparam-gauge' if isinstance(s, (Polyhedron, Box)) else 'another map'} or 'projected'."
            )
        return None

    def _row_map(self, target: OutputTarget) -> Callable[..., Tensor]:
        def complete(rows: Tensor, bound: ConstraintSet = target.set) -> Tensor:
            return bound.complete(rows)  # type: ignore[attr-defined]  # an Affine or Polyhedron (unsupported_reason)

        return complete


@register("reparam-gauge")
class GaugeReparameterization(_OutputPolytopeStrategy):
    r"""``Polyhedron`` with inequalities (equalities by completion) and ``Box``, on outputs: the ray map from an
    interior point (module doc). ``interior``: ``"auto"`` (default), ``"pinv"`` (:math:`A^+ b`), ``"chebyshev"``, a
    tensor or a callable of the input."""

    summary = "Polyhedron/Box on outputs by the ray (gauge) map y0 + v / max(1, max_i (Gv)_i/(h-Gy0)_i) (RAYEN)"

    def __init__(self, *, interior: Interior = "auto") -> None:
        super().__init__()
        if isinstance(interior, str):  # else a tensor or a callable of the model's input
            check_choice("interior", interior, INTERIORS, self.name)
        self.interior = interior

    @classmethod
    def unsupported_reason(cls, target: Target) -> str | None:
        s = target.set
        if not isinstance(target, OutputTarget):
            return "the gauge map is an output map; use 'projected' for parameters."
        if isinstance(s, Box) or (isinstance(s, Polyhedron) and s.G is not None):
            return None
        if isinstance(s, Polyhedron):
            return "the set has equalities only (no inequality to scale against); use 'reparam-completion'."
        return f"the gauge map covers Polyhedron and Box sets; {s!r} has its own maps ('reparameterization')."

    def _row_map(self, target: OutputTarget) -> Callable[..., Tensor]:
        interior, cache = self.interior, self._cache
        capture: dict[str, Any] = {}

        def gauge(rows: Tensor, bound: ConstraintSet = target.set) -> Tensor:
            if rows.dtype in (torch.float16, torch.bfloat16):  # mapped in float32, returned in their dtype
                return gauge(rows.float(), bound).to(rows.dtype)
            if isinstance(bound, Box):
                return box_map(bound, rows)
            y0 = _interior(bound, interior, rows, capture.get("inputs", ()), cache)  # type: ignore[arg-type]  # not a Box: a Polyhedron (unsupported_reason)
            return gauge_map(bound, rows, y0)  # type: ignore[arg-type]  # a Polyhedron, as above

        if callable(interior) and not isinstance(interior, (str, Tensor)):
            model = self._require_model()

            def remember(module: Any, inputs: tuple) -> None:
                capture["inputs"] = inputs

            self._handles.append(model.register_forward_pre_hook(remember))
        return gauge
