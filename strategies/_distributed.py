r"""The few collectives strategies need under ``torch.distributed`` (DistributedDataParallel).

Every helper is a no-op (no communication, no synchronisation) unless a process group with more
than one rank is initialized, so single-process training pays nothing. Under DDP the model's
parameters are identical on every rank (DDP broadcasts them at construction and averages the
gradients), so anything computed from the parameters alone is identical already; what differs
between ranks is what depends on each rank's own batch:

- shared multipliers (Lagrangian family, output targets): the batch means of the constraint
  values are averaged over the ranks (:func:`all_mean`), one all-reduce per dual step;
- per-sample multipliers: every rank's ``(sample ids, constraint values)`` are gathered
  (:func:`all_gather_rows`), so every rank applies every rank's update to its table;
- decisions taken on a rank's batch (barrier backtracking, skipping a non-finite step):
  :func:`all_true`, one all-reduce of a flag.

Collectives use the device of the backend (CUDA tensors for NCCL, CPU tensors for gloo) and are
called in the same order on every rank; a rank that raises instead stops the job (``torchrun``
then terminates the other workers).
"""

from __future__ import annotations

import torch
from torch import Tensor


def active() -> bool:
    """True inside an initialized process group of more than one rank."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


def _device() -> torch.device:
    """Where the backend wants its tensors: the current CUDA device for NCCL, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_true(flag: bool) -> bool:
    """``flag`` on every rank? (one all-reduce of one integer; ``flag`` itself when not distributed)"""
    if not active():
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device())
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value.item())


def all_mean(tensors: list[Tensor], weights: list[float] | None = None) -> list[Tensor | None]:
    r"""The weighted mean over the ranks of each tensor, in one all-reduce.

    Rank :math:`r` contributes :math:`w_r t_r` and :math:`w_r` (default 1); the result is
    :math:`\sum_r w_r t_r / \sum_r w_r` (None where every rank's weight is 0), in each tensor's
    dtype and device. Identical on every rank: every rank runs the same operations on the same sums.
    """
    if not active() or not tensors:
        weights = [1.0] * len(tensors) if weights is None else weights
        return [t if w else None for t, w in zip(tensors, weights, strict=True)]
    weights = [1.0] * len(tensors) if weights is None else weights
    flat = torch.cat(
        [
            torch.cat([(t.detach().to(torch.float64) * w).reshape(-1), t.new_full((1,), w, dtype=torch.float64)])
            for t, w in zip(tensors, weights, strict=True)
        ]
    ).to(_device())
    torch.distributed.all_reduce(flat)
    out, start = [], 0
    for t in tensors:
        n = t.numel()
        total, weight = flat[start : start + n], flat[start + n]
        out.append((total / weight).reshape(t.shape).to(device=t.device, dtype=t.dtype) if float(weight) > 0 else None)
        start += n + 1
    return out


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; the backward sums the gradients over the ranks too (every rank's loss
    depends on every rank's input)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        out = t.detach().to(_device(), copy=True)
        torch.distributed.all_reduce(out)
        return out.to(t.device)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        out = grad.to(_device(), copy=True)
        torch.distributed.all_reduce(out)
        return out.to(grad.device)


def global_mean(t: Tensor) -> Tensor:
    """The mean of ``t`` over the ranks, differentiable (one all-reduce forward, one backward), so that
    a term nonlinear in a batch mean sees the global batch's mean and gets its gradient."""
    if not active():
        return t
    return _AllReduceSum.apply(t) / world_size()


def all_gather_rows(ids: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's ``ids`` (n_r,) and ``values`` (n_r, k), concatenated in rank order on every rank.

    Three collectives: the counts, then the ids and the values padded to the largest count.
    """
    if not active():
        return ids, values
    dist, device = torch.distributed, _device()
    size = dist.get_world_size()
    count = torch.tensor([ids.numel()], dtype=torch.int64, device=device)
    counts = [torch.empty_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    k = values.shape[-1] if values.dim() > 1 else 1
    ids_pad = torch.zeros(longest, dtype=torch.int64, device=device)
    val_pad = torch.zeros(longest, k, dtype=values.dtype, device=device)
    ids_pad[: ids.numel()] = ids.reshape(-1).to(device)
    val_pad[: ids.numel()] = values.reshape(ids.numel(), k).to(device)
    all_ids = [torch.empty_like(ids_pad) for _ in range(size)]
    all_vals = [torch.empty_like(val_pad) for _ in range(size)]
    dist.all_gather(all_ids, ids_pad)
    dist.all_gather(all_vals, val_pad)
    gathered_ids = torch.cat([part[:n] for part, n in zip(all_ids, sizes, strict=True)]).to(ids.device)
    gathered_vals = torch.cat([part[:n] for part, n in zip(all_vals, sizes, strict=True)]).to(values.device)
    return gathered_ids, gathered_vals.reshape(-1, *values.shape[1:])
