r"""torch's fused Adam, stepped without the Python around its kernel (the study's optimizer).

:class:`FusedAdam` is ``torch.optim.Adam(..., fused=True)``: the same state, the same kernel, the same
numbers (bit for bit). What it leaves out, on the steps where it can: torch's ``step`` wrapper (a profiler
record, the gradient-mode switch, regrouping the tensors by device and dtype, the dispatch to the fused
function), about 70 µs of Python per step on a CPU, a third of a small model's whole step. Each step is

.. math::  t \leftarrow t + 1,\quad m \leftarrow \beta_1 m + (1 - \beta_1) g,\quad
           v \leftarrow \beta_2 v + (1 - \beta_2) g^2,\quad
           \theta \leftarrow \theta - \eta\, \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon}

in ``torch._fused_adam_``, the kernel torch's own fused path calls. The optimizer's step post-hooks (its
own and the global ones, which strategies use to find the optimizer) run as they do under torch's wrapper.
Every other case takes torch's own ``step``: the first step of a parameter (state initialization), a
closure, step pre-hooks, a missing or sparse gradient, more than one parameter group, parameters of several
devices or dtypes, and the options the fast path does not carry (amsgrad, decoupled weight decay,
``capturable``, ``differentiable``, gradient scaling).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, _global_optimizer_post_hooks, _global_optimizer_pre_hooks


def _torch_step(optimizer: FusedAdam, closure: Callable[[], Any] | None) -> Any:
    """``torch.optim.Adam.step`` with torch's wrapper (profiler record and hooks), as a plain Adam steps."""
    step = torch.optim.Adam.step
    if not getattr(step, "hooked", False):  # torch wraps a class's step when its first instance is built
        step = Optimizer.profile_hook_step(step)
    return step(optimizer, closure)


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(params, lr=lr, fused=True, **options)`` whose steps call the fused kernel directly
    (see the module doc): the same update to the last bit, less Python per step."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3, **options: Any) -> None:
        if options.get("fused") is False:
            raise ValueError("FusedAdam is the fused Adam: drop fused=False, or use torch.optim.Adam.")
        super().__init__(params, lr=lr, **{**options, "fused": True})

    def _fast_lists(self) -> tuple[list[Tensor], ...] | None:
        """``(params, grads, exp_avgs, exp_avg_sqs, steps)`` of the one group when the fast path applies, else None."""
        if len(self.param_groups) != 1 or _global_optimizer_pre_hooks or self._optimizer_step_pre_hooks:
            return None
        group = self.param_groups[0]
        if group["amsgrad"] or group["decoupled_weight_decay"] or group["capturable"] or group["differentiable"]:
            return None
        if (
            isinstance(group["lr"], Tensor)
            or getattr(self, "grad_scale", None) is not None
            or getattr(self, "found_inf", None) is not None
        ):
            return None
        params: list[Tensor] = group["params"]
        if not params:
            return None
        first = params[0]
        grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
        for p in params:
            state = self.state.get(p)
            if p.grad is None or p.grad.is_sparse or not state or p.device != first.device or p.dtype != first.dtype:
                return None
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return params, grads, exp_avgs, exp_avg_sqs, steps

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Adam step (see the class doc); returns the closure's loss (None without a closure)."""
        lists = None if closure is not None else self._fast_lists()
        if lists is None:
            return _torch_step(self, closure)
        params, grads, exp_avgs, exp_avg_sqs, steps = lists
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=float(beta1),
                beta2=float(beta2),
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                grad_scale=None,
                found_inf=None,
            )
        for hook in chain(self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()):
            hook(self, (self,), {})
        return None

    step.hooked = True  # type: ignore[attr-defined]  # torch must not wrap it: the fallback is wrapped, the fast path runs the hooks


__all__ = ["FusedAdam"]
