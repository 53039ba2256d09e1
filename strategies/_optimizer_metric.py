r"""The optimizer's metric: which optimizer steps a parameter, and the diagonal it preconditions with.

Adam, AdamW, RMSprop and Adagrad take steps :math:`-\frac{\eta}{D} \odot m` with a per-coordinate
diagonal :math:`D` (:func:`optimizer_diagonal`); plain SGD has :math:`D = 1`. ``projected metric="optimizer"``
projects in the norm :math:`\|\cdot\|_D` and ``exact-penalty``'s proximal form takes its prox with the
per-coordinate steps :math:`t = \eta / D` (:func:`param_steps`); both find the optimizer with an
:class:`OptimizerWatch`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from constrain import ParameterTarget, parameter_rows


@torch.no_grad()
def optimizer_diagonal(optimizer: torch.optim.Optimizer, param: Tensor) -> Tensor | None:
    r"""The diagonal :math:`D` by which ``optimizer`` divided its last step of ``param``, or None.

    Adam / AdamW: :math:`\sqrt{v / (1 - \beta_2^t)} + \epsilon` (``max_exp_avg_sq`` with amsgrad);
    RMSprop: :math:`\sqrt{s} + \epsilon` (centered: :math:`\sqrt{s - \bar g^2} + \epsilon`);
    Adagrad: :math:`\sqrt{G} + \epsilon`. None for any other optimizer, or before its first step.
    """
    state = optimizer.state.get(param)
    if not state:
        return None
    group = next((g for g in optimizer.param_groups if any(p is param for p in g["params"])), None)
    if group is None:
        return None
    eps = float(group.get("eps", 0.0))
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        v = state.get("max_exp_avg_sq") if group.get("amsgrad") else state.get("exp_avg_sq")
        if v is None or "step" not in state:
            return None
        correction = 1.0 - group["betas"][1] ** float(state["step"])
        return v.div(correction).sqrt_().add_(eps)
    if isinstance(optimizer, torch.optim.RMSprop):
        s = state.get("square_avg")
        if s is None:
            return None
        if group.get("centered"):
            s = s - state["grad_avg"].square()
        return s.sqrt().add_(eps)
    if isinstance(optimizer, torch.optim.Adagrad):
        s = state.get("sum")
        return None if s is None else s.sqrt().add_(eps)
    return None


@torch.no_grad()
def param_steps(optimizer: torch.optim.Optimizer, param: Tensor) -> Tensor | None:
    """Adam, AdamW, RMSprop: lr / D; Adagrad: its decayed lr / D; SGD: lr everywhere; None otherwise."""
    group = next((g for g in optimizer.param_groups if any(p is param for p in g["params"])), None)
    if group is None:
        return None
    lr = float(group["lr"])
    if type(optimizer) is torch.optim.SGD:
        return torch.full_like(param, lr)
    d = optimizer_diagonal(optimizer, param)
    if d is None:
        return None
    if isinstance(optimizer, torch.optim.Adagrad):
        lr /= 1.0 + (float(optimizer.state[param]["step"]) - 1.0) * float(group.get("lr_decay", 0.0))
    return d.reciprocal().mul_(lr)


class OptimizerWatch:
    """Finds the optimizer that steps ``params`` (a global ``optimizer.step`` post-hook, holding the
    optimizer weakly) and reads its per-coordinate step sizes :math:`t` after its step."""

    def __init__(self, params: list[Tensor]) -> None:
        watched = {id(p) for p in params}
        self._optimizer: weakref.ref | None = None

        def hook(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
            known = self._optimizer() if self._optimizer is not None else None
            if known is not optimizer and any(id(p) in watched for g in optimizer.param_groups for p in g["params"]):
                self._optimizer = weakref.ref(optimizer)

        self.handle = register_optimizer_step_post_hook(hook)

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer last seen stepping one of ``params`` (None before its first step, or once it is gone)."""
        return self._optimizer() if self._optimizer is not None else None

    def remove(self) -> None:
        self.handle.remove()

    def rows(
        self, target: ParameterTarget, model: nn.Module, read: Callable[[torch.optim.Optimizer, Tensor], Tensor | None]
    ) -> Tensor | None:
        """``read(optimizer, param)`` (:func:`optimizer_diagonal` or :func:`param_steps`) for each of ``target``'s
        tensors, in ``target.gather``'s layout; None if no optimizer was seen or ``read`` has nothing for one."""
        optimizer = self.optimizer
        if optimizer is None:
            return None
        parts = []
        for param in target.tensors(model):
            part = read(optimizer, param)
            if part is None:
                return None
            parts.append(part)
        if target.set.acts_on_flat_vector:
            return torch.cat([part.reshape(-1) for part in parts]).unsqueeze(0)
        return parameter_rows(parts[0])

    def step_sizes(self, target: ParameterTarget, model: nn.Module) -> Tensor | None:
        """The steps :math:`t` in ``target.gather``'s layout, or None (no optimizer seen, or one whose
        step is not a diagonal scaling of its direction: then there is no metric to take the prox in)."""
        return self.rows(target, model, param_steps)
