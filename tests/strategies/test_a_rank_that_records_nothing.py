"""Under torch.distributed, a rank whose loss recorded no defect for a multiplier (a loss under no_grad)
contributes nothing to the dual step: the multipliers keep their values, nothing fails.

A real process group of one gloo rank, with ``_distributed.active`` forced on (it is off for one rank
by design: single-process training pays nothing), runs the collectives of ``_combine_ranks`` in this
process; with one rank they reduce over that rank only, so the first step must equal plain dual ascent
by hand: lambda = max(0, dual_lr * c) with c the mean violation (shared) or each sample's g (per-sample).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import strategies
from constrain import NonNegative, on_output
from strategies import _distributed
from strategies._lagrangian import LagrangianStrategy

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)


@pytest.fixture
def one_rank_group(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    monkeypatch.setattr(_distributed, "active", lambda: True)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("mode", ["shared", "per-sample"])
def test_a_step_without_records_leaves_the_multipliers(one_rank_group: None, mode: str) -> None:
    options = {"num_samples": 4} if mode == "per-sample" else {}
    strategy = strategies.get("lagrangian", dual_lr=0.5, multipliers=mode, **options)
    assert isinstance(strategy, LagrangianStrategy)
    strategy.attach(nn.Identity(), on_output(NonNegative()))
    outputs = torch.tensor([[-1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    ids = torch.tensor([0, 2]) if mode == "per-sample" else None
    zero = torch.zeros((), dtype=torch.float64)
    g = (-outputs).clamp_min(0)  # g = -x for x >= 0, violations only (the multipliers start at 0)
    want = 0.5 * g.mean(0) if ids is None else torch.zeros(4, 2, dtype=torch.float64).index_copy(0, ids, 0.5 * g)
    strategy.loss(zero, outputs, sample_ids=ids)
    strategy.after_step()
    (lam,) = strategy.multipliers().values()
    torch.testing.assert_close(lam, want, rtol=0, atol=0)
    with torch.no_grad():  # a validation loss: records nothing
        strategy.loss(zero, outputs, sample_ids=ids)
    strategy.after_step()
    (lam,) = strategy.multipliers().values()
    torch.testing.assert_close(lam, want, rtol=0, atol=0)
