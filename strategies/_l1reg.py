r"""Five implementations of L1 regularization :math:`\lambda \|w\|_1` for the weight L1 constraint.

They answer "which L1 implementation really gives sparse weights?". Each acts on the weights of
``on_parameter(name, L1Ball(r))`` targets; the radius is not enforced as a hard bound (that is the
projected strategy's job): :math:`\lambda` plays the role of the multiplier of
:math:`\|w_j\|_1 \le r`. ``lr`` is the step size of the separate shrink steps and should equal the
optimizer's learning rate.

- ``l1-subgradient``: adds :math:`\lambda\|w\|_1` to the loss; the step :math:`-\eta\lambda\,\mathrm{sign}(w)`
  overshoots zero and rarely lands on it exactly, so weights oscillate around 0 instead.
- ``l1-sign-step``: the same step applied separately after the optimizer step,
  :math:`w \leftarrow w - \eta\lambda\,\mathrm{sign}(w)`: it moves against the sign (the seed question's
  ``w + sign(w) * lambda`` has it backwards), but a weight with :math:`|w| < \eta\lambda` crosses zero.
- ``l1-proximal``: soft-thresholding (FOBOS, ISTA), :math:`w \leftarrow \mathrm{sign}(w)\max(|w| - \eta\lambda, 0)`.
- ``l1-truncated``: truncated gradient (Langford, Li & Zhang 2009): every ``period`` steps, weights
  with :math:`|w| \le \theta` move towards zero by :math:`\text{period}\cdot\eta\lambda`, clipped at zero.
- ``l1-cumulative``: cumulative penalty (Tsuruoka, Tsujii & Ananiadou 2009; scikit-learn's SGD):
  each weight receives the penalty :math:`u_k = \sum \eta\lambda` it should have received so far,
  minus what it did (:math:`q_i`), clipped at zero.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from constrain import L1Ball, ParameterTarget
from strategies._base import Strategy, Target
from strategies._options import check_positive
from strategies._registry import register


def soft_threshold(w: Tensor, amount: float | Tensor) -> Tensor:
    r""":math:`\mathrm{sign}(w)\max(|w| - a, 0)`: the proximal map of :math:`a\|\cdot\|_1`."""
    return torch.sign(w) * (w.abs() - amount).clamp_min(0)


class L1Regularization(Strategy):
    """Shared options and target handling; subclasses implement the shrink."""

    family = "l1-regularization"

    def __init__(self, *, strength: float = 1e-3, lr: float = 1e-2) -> None:
        super().__init__()
        self.strength, self.lr = check_positive(strength, "strength"), check_positive(lr, "lr")

    @classmethod
    def unsupported_reason(cls, target: Target) -> str | None:
        if not isinstance(target, ParameterTarget) or not isinstance(target.set, L1Ball):
            return (
                "L1 regularization shrinks weights towards sparsity; it applies to on_parameter(name, L1Ball(r)) "
                "targets only. Use a penalty, Lagrangian, projected or reparameterization strategy instead."
            )
        return None

    def _weights(self) -> list[Tensor]:
        """The constrained weights (``unsupported_reason`` admits parameter targets only)."""
        model = self._require_model()
        return [w for t in self.targets if isinstance(t, ParameterTarget) for w in t.tensors(model)]

    @torch.no_grad()
    def _after_step(self) -> None:
        for target in self.targets:
            assert isinstance(target, ParameterTarget)  # unsupported_reason admits parameter targets only
            for w in target.tensors(self._require_model()):
                self._check_finite_parameters(target, w)
                w.copy_(self.shrink(w))

    def shrink(self, w: Tensor) -> Tensor:
        """The separate shrink step applied after the optimizer step (identity by default)."""
        return w


@register("l1-subgradient")
class L1Subgradient(L1Regularization):
    r"""Adds :math:`\lambda\|w\|_1` to the loss; autograd's subgradient is :math:`\lambda\,\mathrm{sign}(w)`."""

    summary = "L1 penalty in the loss (subgradient): rarely gives exact zeros"

    def _loss_terms(self, model: nn.Module, outputs: Tensor | None, sample_ids: Tensor | None) -> Tensor:
        return self.strength * sum(w.abs().sum() for w in self._weights())  # type: ignore[return-value]  # attach needs a target, so a Tensor sum, not 0


@register("l1-sign-step")
class L1SignStep(L1Regularization):
    r""":math:`w \leftarrow w - \eta\lambda\,\mathrm{sign}(w)` after the optimizer step."""

    summary = "separate sign step w -= lr*lambda*sign(w) after each step: oscillates around zero"

    def shrink(self, w: Tensor) -> Tensor:
        return w - self.lr * self.strength * torch.sign(w)


@register("l1-proximal")
class L1Proximal(L1Regularization):
    r"""Soft-thresholding :math:`w \leftarrow \mathrm{sign}(w)\max(|w| - \eta\lambda, 0)` (FOBOS)."""

    summary = "proximal soft-threshold after each step (FOBOS): exact zeros"

    def shrink(self, w: Tensor) -> Tensor:
        return soft_threshold(w, self.lr * self.strength)


@register("l1-truncated")
class L1Truncated(L1Regularization):
    r"""Truncated gradient: every ``period`` steps, :math:`T(w, \text{period}\,\eta\lambda, \theta)` where
    :math:`T` soft-thresholds entries with :math:`|w| \le \theta` and leaves the others alone."""

    summary = "truncated gradient (Langford et al. 2009): periodic soft-threshold of small weights"

    def __init__(self, *, strength: float = 1e-3, lr: float = 1e-2, period: int = 1, theta: float = math.inf) -> None:
        super().__init__(strength=strength, lr=lr)
        if period < 1:
            raise ValueError(f"period must be a positive number of steps, got {period}.")
        if not theta > 0:
            raise ValueError(f"theta must be positive (math.inf truncates every weight), got {theta}.")
        self.period, self.theta = int(period), float(theta)

    def shrink(self, w: Tensor) -> Tensor:
        if (self.steps + 1) % self.period:
            return w
        shrunk = soft_threshold(w, self.period * self.lr * self.strength)
        if self.theta == math.inf:  # every finite weight is truncated (and NaN stays NaN either way)
            return shrunk
        return torch.where(w.abs() <= self.theta, shrunk, w)


@register("l1-cumulative")
class L1Cumulative(L1Regularization):
    r"""Cumulative penalty: with :math:`u = \sum_k \eta\lambda` and :math:`q_i` the penalty already
    applied to :math:`w_i`: :math:`w_i \leftarrow \max(0, w_i - (u + q_i))` if :math:`w_i > 0`,
    :math:`\min(0, w_i + (u - q_i))` if :math:`w_i < 0`; then :math:`q_i \mathrel{+}= w_i^{new} - w_i^{old}`."""

    summary = "cumulative penalty (Tsuruoka et al. 2009, scikit-learn SGD): exact zeros, robust to noise"

    def _attach(self) -> None:
        self.total = 0.0
        self.applied = [torch.zeros_like(w) for w in self._weights()]
        self._scratch_buffers: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    @torch.no_grad()
    def _after_step(self) -> None:
        weights = self._weights()
        for target in self.targets:
            assert isinstance(target, ParameterTarget)  # unsupported_reason admits parameter targets only
            for w in target.tensors(self._require_model()):
                self._check_finite_parameters(target, w)
        self.total += self.lr * self.strength
        for i, w in enumerate(weights):
            q = self.applied[i] = self.applied[i].to(w)
            a, b, m = self._scratch(i, w)  # reused every step: no fresh weight-sized tensors (page faults)
            torch.add(q, self.total, out=a)  # u + q
            torch.sub(w, a, out=a).clamp_min_(0)  # max(w - (u + q), 0): the new value where w > 0
            torch.sub(q, self.total, out=b)  # q - u, i.e. -(u - q) exactly
            torch.sub(w, b, out=b).clamp_max_(0)  # min(w + (u - q), 0): the new value where w < 0
            # Select by 1/0 weights rather than boolean masks and torch.where (several times slower on the CPU):
            # exact while both candidates are finite (x * 1 + y * 0 = x); zeros stay zero.
            a.mul_(torch.gt(w, 0, out=m)).add_(b.mul_(torch.lt(w, 0, out=m)))
            if not math.isfinite(a.sum().item()):  # Inf / NaN in a candidate (a corrupt q): the selection itself
                a = torch.where(
                    w > 0,
                    (w - (self.total + q)).clamp_min(0),
                    torch.where(w < 0, (w + (self.total - q)).clamp_max(0), w),
                )
            q.add_(torch.sub(a, w, out=b))  # q += new - old
            w.copy_(a)

    def _scratch(self, i: int, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Three buffers like ``w``, kept across steps (rebuilt if ``w`` changes)."""
        bufs = self._scratch_buffers.get(i)
        if bufs is None or bufs[0].shape != w.shape or bufs[0].dtype != w.dtype or bufs[0].device != w.device:
            bufs = (torch.empty_like(w), torch.empty_like(w), torch.empty_like(w))
            self._scratch_buffers[i] = bufs
        return bufs

    def _state(self) -> dict[str, Any]:
        return {"total": self.total, "applied": [q.clone() for q in self.applied]}

    def _load_state(self, state: dict[str, Any]) -> None:
        if set(state) != {"total", "applied"}:
            raise KeyError(
                f"strategy {self.name!r}: the state has entries {sorted(state)}, expected 'total' and 'applied'; "
                f"it was saved by another strategy. Load the state_dict() of an {self.name!r} strategy."
            )
        applied, weights = state["applied"], self._weights()
        if (
            not isinstance(applied, (list, tuple))
            or len(applied) != len(weights)
            or any(not isinstance(q, Tensor) or q.shape != w.shape for q, w in zip(applied, weights, strict=True))
        ):
            raise ValueError(
                f"strategy {self.name!r}: state['applied'] must hold one tensor per constrained weight, shaped like "
                f"it ({[tuple(w.shape) for w in weights]}); attach the same constraints before load_state_dict."
            )
        total = state["total"]
        if isinstance(total, bool) or not isinstance(total, (int, float)) or not math.isfinite(total) or total < 0:
            raise ValueError(f"strategy {self.name!r}: state['total'] must be a finite number >= 0, got {total!r}.")
        self.total = float(total)
        self.applied = [q.clone() for q in applied]
