r"""Dual optimizers: how the Lagrangian strategies step their multipliers.

A multiplier :math:`\lambda` ascends on its constraint's value :math:`c` (the gradient of the
Lagrangian in :math:`\lambda`). A dual optimizer is a torch optimizer over the multiplier tensors;
the strategy hands it the *descent* gradient ``lam.grad = -c`` and calls ``step()``, then clips
inequality multipliers at 0. So any torch optimizer serves (``torch.optim.SGD`` with ``lr=eta`` is
plain ascent :math:`\lambda \leftarrow \lambda + \eta c`), and so does :class:`NuPI`:

.. math::  \xi_t = \nu \xi_{t-1} + (1 - \nu) e_t, \qquad
           \lambda_{t+1} = \lambda_t - \eta (K_I e_t + K_P (\xi_t - \xi_{t-1}))

with the error :math:`e_t` = the gradient (here :math:`-c_t`), :math:`\xi_{-1} = e_0` (the first
step is plain gradient ascent). The proportional term damps the cycling of plain descent-ascent
on equality constraints (Sohrabi et al., "On PI controllers for updating Lagrange multipliers in
constrained optimization", ICML 2024). With :math:`K_P = K_I = 1, \nu = 0` it is the optimistic
gradient method, :math:`\lambda_{t+1} = \lambda_t + \eta (2 c_t - c_{t-1})`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

#: What ``dual_optimizer=`` accepts: a name, a torch optimizer class (built as ``cls(params, lr=dual_lr)``)
#: or a factory ``params -> optimizer``.
DualOptimizer = str | type | Callable[[list[Tensor]], torch.optim.Optimizer]
#: The names ``dual_optimizer=`` knows.
DUAL_NAMES = ("sgd", "nupi", "optimistic")


class NuPI(torch.optim.Optimizer):
    r"""The :math:`\nu`\ PI controller as a torch optimizer (minimizes, like every torch optimizer).

    ``lr`` :math:`\eta`, ``kp`` :math:`K_P \ge 0`, ``ki`` :math:`K_I \ge 0`, ``ema_nu``
    :math:`\nu \in [0, 1)`. ``kp = 0`` is SGD with learning rate :math:`\eta K_I`.
    """

    def __init__(self, params: Iterable[Tensor], lr: float, kp: float = 1.0, ki: float = 1.0, ema_nu: float = 0.0):
        for name, value in (("lr", lr), ("kp", kp), ("ki", ki)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"NuPI: {name} must be a finite number >= 0, got {value!r}.")
        if not 0 <= ema_nu < 1:
            raise ValueError(f"NuPI: ema_nu must lie in [0, 1), got {ema_nu!r}.")
        super().__init__(params, {"lr": float(lr), "kp": float(kp), "ki": float(ki), "ema_nu": float(ema_nu)})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None if closure is None else closure()
        for group in self.param_groups:
            lr, kp, ki, nu = group["lr"], group["kp"], group["ki"], group["ema_nu"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                error = p.grad
                state = self.state[p]
                previous = state.get("xi")  # xi_{t-1}; at the first step xi_{-1} = e_0 (a plain gradient step)
                update = error.mul(ki)
                if previous is None:
                    state["xi"] = error.clone()
                else:
                    xi = previous.mul(nu).add_(error, alpha=1 - nu)
                    if kp:
                        update.add_(xi - previous, alpha=kp)
                    state["xi"] = xi
                p.add_(update, alpha=-lr)
        return loss


def optimistic(params: Iterable[Tensor], lr: float) -> NuPI:
    r"""Optimistic gradient: :math:`\lambda_{t+1} = \lambda_t + \eta(2 c_t - c_{t-1})` (``NuPI(kp=1, ki=1)``)."""
    return NuPI(params, lr=lr, kp=1.0, ki=1.0)


def dual_factory(
    spec: DualOptimizer | None, lr: float, kp: float
) -> tuple[Callable[[list[Tensor]], torch.optim.Optimizer] | None, bool]:
    """``(factory, follows_lr)``: how to build the optimizer of one multiplier tensor, and whether its
    learning rate is the strategy's ``dual_lr`` (set again before each step, so schedules apply).
    ``None`` (and ``"sgd"``): the built-in ascent, no optimizer object."""
    if spec is None or spec == "sgd":
        return None, True
    if isinstance(spec, str):
        if spec == "nupi":
            return (lambda params: NuPI(params, lr=lr, kp=kp, ki=1.0)), True
        if spec == "optimistic":
            return (lambda params: optimistic(params, lr=lr)), True
        raise ValueError(
            f"dual_optimizer must be one of {', '.join(map(repr, DUAL_NAMES))}, a torch optimizer class "
            f"or a factory params -> optimizer; got {spec!r}."
        )
    if isinstance(spec, type):
        if not issubclass(spec, torch.optim.Optimizer):
            raise TypeError(f"dual_optimizer class must subclass torch.optim.Optimizer, got {spec.__name__}.")
        optimizer_class: Callable[..., torch.optim.Optimizer] = spec  # a subclass: it takes lr (checked above)
        return (lambda params: optimizer_class(params, lr=lr)), True
    if callable(spec):
        return spec, False
    raise TypeError(f"dual_optimizer must be a name, a torch optimizer class or a factory, got {type(spec).__name__}.")
