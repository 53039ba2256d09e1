"""Constrained training with DistributedDataParallel: one script for one process or many.

    torchrun --nproc_per_node=2 experiments/ddp_example.py                    # 2 CPU processes, gloo
    torchrun --nproc_per_node=2 experiments/ddp_example.py --strategy projected
    python experiments/ddp_example.py                                         # one process, same code

A small MLP regression with two constraints: every sample's output in the L1 ball of radius 1,
and non-negative weights in the last layer. The strategy is attached *before* DDP wraps the model
(attach may register parametrizations, hooks or slack parameters, and DDP must see every
parameter); the strategy object keeps the unwrapped model. Each batch carries the indices of its
samples, for per-sample multipliers. At the end every rank checks that it holds the same
weights and multipliers as rank 0, and rank 0 prints the violations and saves a checkpoint.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import strategies
from constrain import L1Ball, NonNegative, on_output, on_parameter
from experiments._training import Batch, TrainResult, train
from experiments.catalogue import Target

#: Options per strategy for this example (any registered name works with its defaults).
OPTIONS: dict[str, dict[str, object]] = {
    "lagrangian": {"dual_lr": 1.0, "multipliers": "per-sample"},
    "augmented-lagrangian": {"penalty": 1.0, "multipliers": "per-sample"},
    "slack-lagrangian": {"dual_lr": 0.05, "penalty": 1.0, "output_width": 2},  # slacks created by attach
    "quadratic-penalty": {"weight": 10.0},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategy", default="lagrangian", help="a registered strategy name (default: lagrangian)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--checkpoint", type=Path, default=None, help="where rank 0 saves model + strategy state")
    return parser.parse_args(argv)


def make_data(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 8, generator=g)
    Y = torch.tanh(X @ torch.randn(8, 2, generator=g)) * 0.8
    return TensorDataset(X, Y, torch.arange(n))  # the last tensor: each sample's index (per-sample multipliers)


def epochs(loader: DataLoader, sampler: DistributedSampler | None, count: int) -> Iterator[Batch]:
    """``count`` passes over ``loader`` as :class:`Batch` es with their sample ids."""
    for epoch in range(count):
        if sampler is not None:
            sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every rank
        for x, y, ids in loader:
            yield Batch(x, y, ids)


def _targets(batch: Batch) -> torch.Tensor:
    assert batch.targets is not None  # every batch of epochs() has its targets
    return batch.targets


def build(args: argparse.Namespace, num_samples: int) -> tuple[nn.Module, strategies.Strategy]:
    """The MLP with the strategy attached to the constraints it supports."""
    model: nn.Module = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    options: dict[str, object] = dict(OPTIONS.get(args.strategy, {}))
    if options.get("multipliers") == "per-sample":
        options["num_samples"] = num_samples
    strategy = strategies.get(args.strategy, **options)
    constraints: list[Target] = [on_output(L1Ball(1.0)), on_parameter("2.weight", NonNegative())]
    supported = [c for c in constraints if strategy.unsupported_reason(c) is None]
    return strategy.attach(model, supported), strategy  # before DDP: attach may add parameters and hooks


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    distributed = "RANK" in os.environ  # set by torchrun
    if distributed:
        dist.init_process_group("gloo")  # "nccl" on GPUs (then also move model and batches to cuda:LOCAL_RANK)
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)

    data = make_data(args.samples)
    sampler: DistributedSampler | None = DistributedSampler(data, shuffle=True, seed=0, drop_last=True) if distributed else None
    loader = DataLoader(data, batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None, drop_last=True)
    model, strategy = build(args, len(data))
    ddp = DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.Adam(ddp.parameters(), lr=3e-3)  # after attach: slack variables are parameters too

    def report(step: int, progress: TrainResult) -> None:
        if rank == 0:
            with torch.no_grad():
                worst = ", ".join(f"{k}: {v:.2e}" for k, v in strategy.report(model(data.tensors[0])).items())
            loss = float(progress.loss) if progress.loss is not None else math.nan
            print(f"epoch {step // len(loader)}: loss {loss:.4f}; largest violation on the training set: {worst}")

    # DDP averages the gradients over the ranks; after_step: projections, dual steps (multipliers all-reduced), schedules
    train(
        ddp,
        optimizer,
        lambda out, batch: nn.functional.mse_loss(out, _targets(batch)),
        epochs(loader, sampler, args.epochs),
        args.epochs * len(loader),
        strategy=strategy,
        log_at={e * len(loader) for e in range(5, args.epochs + 1, 5)},
        on_log=report,
    )

    # every rank holds the same weights and multipliers
    state = [t.detach().reshape(-1).double() for t in model.state_dict().values() if t.is_floating_point()]
    state += [t.reshape(-1).double() for t in strategy.state_dict().get("multipliers", {}).values()]
    mine = torch.cat(state) if state else torch.zeros(1)
    if distributed:
        copy = mine.clone()
        dist.broadcast(copy, src=0)
        assert torch.equal(copy, mine), f"rank {rank} differs from rank 0"
    if rank == 0:
        print(f"{world} process(es), strategy {args.strategy!r}: weights and multipliers identical on every rank.")
        if args.checkpoint is not None:
            torch.save({"model": model.state_dict(), "strategy": strategy.state_dict()}, args.checkpoint)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
