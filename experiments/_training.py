r"""The one training loop of the experiments: mini-batches, a strategy, logging, early stops, timing.

One step is ``outputs = model(batch.inputs)``, ``loss = loss_fn(outputs, batch)``, then
``strategy.loss(loss, outputs, sample_ids=batch.sample_ids)`` (with a strategy), ``zero_grad``,
``backward``, ``optimizer.step()`` and ``strategy.after_step()``. :func:`train_step` is that step
alone (benchmarks time it); :func:`train` runs ``steps`` of them over an iterable of
:class:`Batch` and adds what the studies need: a learning-rate schedule :math:`\eta_t` that
options may follow, logging at chosen steps (excluded from the timing), an early stop with its
reason, a check that the loss is finite, and wall and CPU time of the training work.
"""

from __future__ import annotations

import itertools
import math
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

import strategies


class Batch(NamedTuple):
    """One mini-batch: the model's ``inputs``, optional ``targets`` for the loss, and the
    ``sample_ids`` of its rows in the training set (per-sample multipliers)."""

    inputs: Tensor
    targets: Tensor | None = None
    sample_ids: Tensor | None = None


#: ``loss_fn(outputs, batch)``: the scalar training objective of one batch (before the strategy's terms).
LossFn = Callable[[Tensor, Batch], Tensor]
#: An optimizer, or a factory called once after the first loss (when parameters a strategy creates
#: lazily, such as slack variables, exist).
OptimizerOrFactory = torch.optim.Optimizer | Callable[[], torch.optim.Optimizer]


@dataclass
class TrainResult:
    """What :func:`train` did: ``steps`` optimizer steps taken; ``stopped``: why it ended before
    ``steps`` (None: it ran them all; ``"error"``: an exception, kept in ``error`` with its
    ``traceback``); ``wall`` and ``cpu``: seconds of training work (logging excluded), ``warm_cpu``:
    ``cpu`` after the warm-up steps; ``loss``: the last loss (detached)."""

    steps: int = 0
    stopped: str | None = None
    wall: float = 0.0
    cpu: float = 0.0
    warm_cpu: float = 0.0
    loss: Tensor | None = None
    error: Exception | None = None
    traceback: str = ""
    optimizer: torch.optim.Optimizer | None = None


def _loss(model: nn.Module, loss_fn: LossFn, batch: Batch, strategy: strategies.Strategy | None) -> Tensor:
    outputs = model(batch.inputs)
    loss = loss_fn(outputs, batch)
    return loss if strategy is None else strategy.loss(loss, outputs, sample_ids=batch.sample_ids)


def _clear_gradients(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)`` (every gradient of the optimizer's parameters set to None), done
    here directly unless the optimizer's class overrides ``zero_grad``: torch's method wraps the loop in a profiler
    record that costs about as much as a small model's forward on a CPU. Every step of the loop uses it."""
    if type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad:
        optimizer.zero_grad(set_to_none=True)
        return
    for group in optimizer.param_groups:
        for param in group["params"]:
            param.grad = None


def _update(loss: Tensor, optimizer: torch.optim.Optimizer, strategy: strategies.Strategy | None) -> None:
    _clear_gradients(optimizer)
    loss.backward()
    optimizer.step()
    if strategy is not None:
        strategy.after_step()


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    batch: Batch,
    strategy: strategies.Strategy | None = None,
) -> Tensor:
    """One training step on ``batch`` (see the module doc), the step :func:`train` takes (benchmarks time it
    against other libraries' steps); gradients are cleared as :func:`train` clears them (set to None, without
    the profiler record of ``optimizer.zero_grad()``). Returns the loss (not synchronized)."""
    loss = _loss(model, loss_fn, batch, strategy)
    _update(loss, optimizer, strategy)
    return loss


@dataclass
class _Loop:
    """The fixed parts of one :func:`train` call."""

    model: nn.Module
    make: OptimizerOrFactory
    loss_fn: LossFn
    strategy: strategies.Strategy | None
    lr: Callable[[int], float] | None
    follow_lr: Callable[[float], None] | None
    check_finite: bool

    def step(self, t: int, batch: Batch, state: TrainResult) -> None:
        """Step ``t`` (0-based): learning rate, loss, finiteness check, update (untimed: :func:`train` times
        whole stretches of steps, so that no step pays for clock reads)."""
        rate = self.lr(t) if self.lr is not None else None
        if rate is None and state.optimizer is not None:
            rate = state.optimizer.param_groups[0]["lr"]
        if self.follow_lr is not None and rate is not None:
            self.follow_lr(rate)
        loss = _loss(self.model, self.loss_fn, batch, self.strategy)
        if self.check_finite and not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"the loss is not finite at step {t}.")
        if state.optimizer is None:  # built after the first loss: lazily created parameters exist now
            state.optimizer = self.make if isinstance(self.make, torch.optim.Optimizer) else self.make()
        if self.lr is not None:
            for group in state.optimizer.param_groups:
                group["lr"] = rate
        _update(loss, state.optimizer, self.strategy)
        state.loss = loss.detach()


class _Stopwatch:
    """Wall and CPU seconds of training work, read only where somebody looks (log steps, the warm-up
    step, the end): one pair of clock reads per stretch of steps instead of per step (reading the process
    CPU clock is a system call that costs tens of microseconds on a loaded machine, as much as a small step)."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def add_to(self, state: TrainResult) -> None:
        """Add the time since the last (re)start to ``state`` and restart."""
        wall, cpu = time.perf_counter(), time.process_time()
        state.wall += wall - self.wall
        state.cpu += cpu - self.cpu
        self.wall, self.cpu = wall, cpu


def train(
    model: nn.Module,
    optimizer: OptimizerOrFactory,
    loss_fn: LossFn,
    batches: Iterable[Batch],
    steps: int,
    *,
    strategy: strategies.Strategy | None = None,
    lr: Callable[[int], float] | None = None,
    follow_lr: Callable[[float], None] | None = None,
    log_at: Collection[int] = (),
    on_log: Callable[[int, TrainResult], None] | None = None,
    stop_when: Callable[[int, TrainResult], str | None] | None = None,
    check_finite: bool = False,
    warmup: int = 0,
    record_errors: bool = False,
) -> TrainResult:
    r"""Train ``model`` for ``steps`` steps on the first ``steps`` batches of ``batches``.

    ``lr(t)``: the learning rate :math:`\eta_t` of step ``t`` (0-based), set on every parameter
    group before the step (None: the optimizer's own, e.g. a torch scheduler's). ``follow_lr``:
    called with :math:`\eta_t` before each step (options that follow the learning rate).
    ``on_log(t, result)``: called after ``t`` steps for each ``t`` in ``log_at`` (``0``: before the
    first), outside the timing; ``result.wall``/``cpu`` are brought up to date there, at the ``warmup``
    step and at the end (not at every step). ``stop_when(t, result)``: after step ``t``, a reason to
    stop early (kept in ``result.stopped``) or None. ``check_finite``: a non-finite loss raises
    FloatingPointError (a strategy checks its own). ``warmup``: ``result.warm_cpu`` is the CPU time
    after that many steps. ``record_errors``: an exception ends training as ``stopped="error"`` with
    the error kept, instead of propagating (KeyboardInterrupt always propagates).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    loop = _Loop(model, optimizer, loss_fn, strategy, lr, follow_lr, check_finite)
    state = TrainResult(optimizer=optimizer if isinstance(optimizer, torch.optim.Optimizer) else None)
    watch = _Stopwatch()
    try:
        if 0 in log_at and on_log is not None:
            on_log(0, state)
        watch.restart()
        for t, batch in zip(range(steps), batches, strict=False):
            loop.step(t, batch, state)
            state.steps = t + 1
            logging = state.steps in log_at and on_log is not None
            if logging or state.steps == warmup:
                watch.add_to(state)
            state.warm_cpu = state.cpu if state.steps == warmup else state.warm_cpu
            if logging and on_log is not None:
                on_log(state.steps, state)
                watch.restart()  # the evaluation is not training work
            reason = stop_when(state.steps, state) if stop_when is not None else None
            if reason is not None:
                state.stopped = reason
                break
    except Exception as error:
        if not record_errors:
            raise
        state.stopped, state.error = "error", error
        state.traceback = "".join(traceback.format_exception(error, limit=6))
    watch.add_to(state)
    return state


def shrink_follows_lr(strategy: strategies.Strategy, lr: float) -> None:
    """A ``follow_lr`` hook (with the strategy bound): the L1 strategies' shrink steps use the
    optimizer's current learning rate ``lr``."""
    if not isinstance(strategy, strategies.L1Regularization):
        raise TypeError(f"shrink_follows_lr applies to the L1-regularization strategies, not {strategy.name!r}.")
    strategy.lr = lr


def full_batches(inputs: Tensor, targets: Tensor | None = None) -> Iterator[Batch]:
    """The whole training set as every batch, with its sample ids ``0 .. n-1``."""
    return itertools.repeat(Batch(inputs, targets, torch.arange(inputs.shape[0], device=inputs.device)))


def reshuffled_batches(
    inputs: Tensor, targets: Tensor | None, size: int, generator: torch.Generator, *, sample_ids: bool = True
) -> Iterator[Batch]:
    """Endless mini-batches of ``size`` rows in a random order, reshuffled (``generator``) when fewer
    than ``size`` rows are left (the short rest is dropped); with their sample ids if ``sample_ids``."""
    n = inputs.shape[0]
    if not 1 <= size <= n:
        raise ValueError(f"size must be between 1 and the number of samples {n}, got {size}.")
    order, cursor = torch.randperm(n, generator=generator), 0
    while True:
        if cursor + size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor : cursor + size]
        cursor += size
        yield Batch(inputs[idx], None if targets is None else targets[idx], idx if sample_ids else None)


__all__ = ["Batch", "LossFn", "TrainResult", "full_batches", "reshuffled_batches", "shrink_follows_lr", "train", "train_step"]
