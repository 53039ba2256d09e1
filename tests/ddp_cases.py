"""Shared by the distributed tests: one small problem trained by one process on the global batch,
or by several processes (gloo, DistributedDataParallel) on its shards.

Module level (not in a test file) so that a spawned child process (where there is no fork) can import
:func:`worker` (it inherits ``sys.path``, which holds ``tests/``).
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

import strategies
from constrain import Affine, L1Ball, NonNegative, Polyhedron, on_output, on_parameter
from experiments._runner import fork_on_linux

GLOBAL_BATCH = 16
STEPS = 6


class Net(nn.Module):
    """3 -> 4 -> 2, float64; the constrained layer is ``layer`` (2 x 4 weight), as in the listing's cells."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 4, dtype=torch.float64)
        self.layer = nn.Linear(4, 2, dtype=torch.float64)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(torch.tanh(self.hidden(x)))


@dataclass(frozen=True)
class Case:
    """A strategy, its options and its constraints; ``ddp`` are extra DistributedDataParallel arguments;
    ``nan_at``: the step at which sample 1 (on rank 1 of 2) becomes NaN."""

    strategy: str
    options: dict[str, Any] = field(default_factory=dict)
    constraints: Callable[[], list] = lambda: [on_output(L1Ball(0.5))]
    ddp: dict[str, Any] = field(default_factory=dict)
    nan_at: int | None = None


_TIE = lambda: Affine.tie((2, 4), [[(0, 0), (1, 1)], [(0, 3), (1, 2)]])  # noqa: E731
_TIE_ACROSS = lambda: Affine(torch.cat([torch.eye(2), -torch.eye(2)], 1).repeat(1, 5)[:, :10], torch.zeros(2))  # noqa: E731


def _FIRST_INPUT(x: Tensor) -> Tensor:
    """Right-hand side from the input (module level, so that spawned workers can unpickle it)."""
    return x[:, :1]


#: The checks of the default run: at least one strategy of every family (shared and per-sample multipliers,
#: projections, a reparameterization, penalties and a barrier, an L1 implementation), and every kind of collective.
CASES: dict[str, Case] = {
    "lagrangian-shared": Case(
        "lagrangian", {"dual_lr": 0.5}, lambda: [on_output(L1Ball(0.5)), on_parameter("layer.weight", NonNegative())]
    ),
    "lagrangian-per-sample": Case(
        "lagrangian",
        {"dual_lr": 0.5, "multipliers": "per-sample", "num_samples": GLOBAL_BATCH},
        lambda: [on_output(L1Ball(0.5)), on_parameter("layer.weight", L1Ball(0.3))],
    ),
    "projected": Case("projected", {}, lambda: [on_output(L1Ball(0.5)), on_parameter("layer.weight", L1Ball(0.3))]),
    "reparameterization": Case(
        "reparameterization",
        {},
        lambda: [on_output(L1Ball(0.5)), on_parameter("layer.weight", NonNegative()), on_parameter("hidden.weight", L1Ball(0.8))],
    ),
    "quadratic-penalty": Case(
        "quadratic-penalty",
        {"weight": 5.0, "growth": 1.1},
        lambda: [on_output(L1Ball(0.5)), on_parameter("layer.weight", _TIE())],
    ),
    # a NaN on one rank only: every rank skips that step
    "lagrangian-skip": Case(
        "lagrangian",
        {"dual_lr": 0.5, "on_nonfinite": "skip"},
        lambda: [on_output(L1Ball(0.5)), on_parameter("layer.weight", NonNegative())],
        nan_at=3,
    ),
    # every family, and every kind of collective: the barrier's MIN all-reduce while backtracking, the
    # augmented and slack terms' extra all-reduces, an L1 shrink step
    "augmented-lagrangian-shared": Case(
        "augmented-lagrangian", {"penalty": 2.0}, lambda: [on_output(L1Ball(0.5)), on_parameter("layer.weight", NonNegative())]
    ),
    "slack-lagrangian-shared": Case(
        "slack-lagrangian",
        {"dual_lr": 0.5, "penalty": 1.0, "output_width": 2},
        lambda: [on_output(NonNegative()), on_parameter("layer.weight", L1Ball(0.3))],
    ),
    "log-barrier": Case("log-barrier", {"weight": 0.1}, lambda: [on_output(L1Ball(3.0))]),
    "l1-proximal": Case("l1-proximal", {"strength": 0.05, "lr": 0.1}, lambda: [on_parameter("layer.weight", L1Ball(0.3))]),
}

#: Every other registered strategy, on constraints it supports (the slow run).
MORE_CASES: dict[str, Case] = {
    "augmented-lagrangian": Case(
        "augmented-lagrangian",
        {"penalty": 2.0, "multipliers": "per-sample", "num_samples": GLOBAL_BATCH},
        lambda: [on_output(L1Ball(0.5)), on_parameter("layer.weight", _TIE())],
    ),
    "reparam-null-space-across-used": Case(
        "reparam-null-space", {}, lambda: [on_parameter(["layer.weight", "layer.bias"], _TIE_ACROSS())]
    ),
    "slack-lagrangian-per-sample": Case(
        "slack-lagrangian",
        {"dual_lr": 0.5, "multipliers": "per-sample", "num_samples": GLOBAL_BATCH, "output_width": 2},
        lambda: [on_output(L1Ball(0.5))],
    ),
    "exact-penalty": Case("exact-penalty", {"weight": 2.0}, lambda: [on_output(NonNegative())]),
    "reciprocal-barrier": Case("reciprocal-barrier", {"weight": 0.01}, lambda: [on_output(L1Ball(3.0))]),
    "extended-log-barrier": Case("extended-log-barrier", {"weight": 0.1, "t_growth": 1.1}, lambda: [on_output(L1Ball(0.5))]),
    "projected-gradient": Case("projected", {"mode": "gradient"}, lambda: [on_parameter("layer.weight", _TIE())]),
    "reparam-null-space-across": Case(
        "reparam-null-space",
        {},
        lambda: [on_parameter(["layer.weight", "layer.bias"], _TIE_ACROSS())],
        {"find_unused_parameters": True},
    ),
    **{
        name: Case(name, {"strength": 0.05, "lr": 0.1}, lambda: [on_parameter("layer.weight", L1Ball(0.3))])
        for name in ("l1-subgradient", "l1-sign-step", "l1-truncated", "l1-cumulative")
    },
    **{
        name: Case(name, {}, lambda: [on_parameter("layer.weight", NonNegative())])
        for name in ("reparam-softplus", "reparam-exp", "reparam-square")
    },
    "reparam-l1-weight-norm": Case("reparam-l1-weight-norm", {}, lambda: [on_parameter("layer.weight", L1Ball(0.3))]),
    "reparam-radial": Case("reparam-radial", {}, lambda: [on_output(L1Ball(0.5))]),
    "reparam-sigmoid-simplex": Case("reparam-sigmoid-simplex", {}, lambda: [on_output(L1Ball(0.5))]),
    # right-hand sides computed from each rank's own inputs
    "reparam-completion": Case(
        "reparam-completion", {}, lambda: [on_output(Polyhedron(A=torch.ones(1, 2), b=lambda x: x[:, :1]))]
    ),
    "reparam-gauge": Case("reparam-gauge", {}, lambda: [on_output(Polyhedron(G=torch.eye(2), h=lambda x: x[:, :2].abs() + 1))]),
    "projected-polyhedron": Case(
        "projected",
        {},
        lambda: [
            on_output(Polyhedron(A=torch.ones(1, 2), b=lambda x: x[:, :1].abs(), G=-torch.eye(2), h=lambda x: x[:, 1:].abs()))
        ],
    ),
    **{
        name: Case(name, {}, lambda: [on_output(Polyhedron(A=[[1.0, 1.0]], b=_FIRST_INPUT, G=[[1.0, -1.0]], h=[0.5]))])
        for name in ("dc3", "hardnet-aff")
    },
}

ALL_CASES = {**CASES, **MORE_CASES}


def data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(GLOBAL_BATCH, 3, generator=g, dtype=torch.float64)
    Y = torch.randn(GLOBAL_BATCH, 2, generator=g, dtype=torch.float64)
    return X, Y


def shard(rank: int, world_size: int) -> Tensor:
    """The sample ids of ``rank``: every ``world_size``-th sample (DistributedSampler without shuffling)."""
    return torch.arange(GLOBAL_BATCH)[rank::world_size]


def train(case: Case, ids: Tensor, distributed: bool = False, steps: int = STEPS) -> dict[str, Any]:
    """SGD on the mean squared error of the samples ``ids``; returns the final parameters and strategy state."""
    X, Y = data()
    torch.manual_seed(0)
    net = Net()
    strategy = strategies.get(case.strategy, **case.options)
    net = strategy.attach(net, case.constraints())
    model: nn.Module = net
    if distributed:
        model = nn.parallel.DistributedDataParallel(net, **case.ddp)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        x = X[ids]
        if step == case.nan_at:
            x[ids == 1] = float("nan")
        out = model(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the skipped step's warning
            loss = strategy.loss(nn.functional.mse_loss(out, Y[ids]), out, sample_ids=ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()
    with torch.no_grad():
        outputs = net(X)
    return {
        "parameters": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "strategy": strategy.state_dict(),
        "outputs": outputs,
        "skipped": strategy.skipped_steps,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world_size: int, port: int, names: list[str], out_dir: str) -> None:
    """One rank: train every case in ``names`` under DDP on its shard; save ``{name: result}``."""
    torch.set_num_threads(1)
    os.environ["CONSTRAIN_NO_NUMBA"] = "1"  # the torch kernels: no numba start-up in each worker (seconds)
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=300),  # a hang fails the test instead of blocking it (slow starts on a loaded box)
    )
    # an error raises in this process; spawn then stops the other one and re-raises it in the parent
    results = {name: train(ALL_CASES[name], shard(rank, world_size), distributed=True) for name in names}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the results are saved: skip the interpreter's teardown of torch (seconds per process)


def run_distributed(names: list[str], out_dir: str, world_size: int = 2) -> list[dict[str, Any]]:
    """Start ``world_size`` gloo processes training ``names``; their results, rank by rank."""
    method = fork_on_linux()  # the ranks inherit this process's imports where they fork
    if method == "fork":
        import torch._dynamo  # noqa: F401  # what a first optimizer imports (seconds): once here, inherited by the ranks
    torch.multiprocessing.start_processes(
        worker, args=(world_size, free_port(), names, out_dir), nprocs=world_size, join=True, start_method=method
    )
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world_size)]
