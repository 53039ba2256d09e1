"""The optimizer watch (the metric of projected / proximal steps) follows the optimizer that steps the watched
parameters: an optimizer over other tensors (another model part, the dual variables) stepping afterwards does
not replace it; another optimizer over a watched parameter does."""

from __future__ import annotations

import torch

from strategies._optimizer_metric import OptimizerWatch


def _step(optimizer: torch.optim.Optimizer, *params: torch.Tensor) -> None:
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()


def test_only_an_optimizer_of_a_watched_parameter_is_taken() -> None:
    w, other = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    watch = OptimizerWatch([w])
    try:
        assert watch.optimizer is None
        adam, sgd = torch.optim.Adam([w], lr=0.1), torch.optim.SGD([other], lr=0.1)
        _step(adam, w)
        assert watch.optimizer is adam
        _step(sgd, other)  # not over w: Adam stays the metric
        assert watch.optimizer is adam
        rms = torch.optim.RMSprop([w, other], lr=0.1)
        _step(rms, w, other)  # over w: it is now the optimizer of w
        assert watch.optimizer is rms
    finally:
        watch.remove()
