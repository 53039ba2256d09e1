"""Cooper's min-norm example: min ||x||^2 s.t. A x = b (A with N(0, 1/n) entries), SGD lr 1e-3 with momentum
0.9. The augmented Lagrangian with its defaults converges (it raised FloatingPointError at step ~1500-2500 when
its dual step equalled its penalty)."""

from __future__ import annotations

import pytest
import torch

import strategies
from constrain import Affine, on_parameter


def _min_norm(name: str, m: int, n: int, steps: int, **options) -> tuple[float, float]:
    """(max |A x - b|, relative gap of ||x||^2 to the least-norm solution's) after ``steps`` SGD steps."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(m, n, generator=g, dtype=torch.float64) / n**0.5
    b = torch.randn(m, generator=g, dtype=torch.float64)
    model = torch.nn.Module()
    model.x = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))
    strategy = strategies.get(name, **options)
    strategy.attach(model, [on_parameter("x", Affine(A, b))])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    for _ in range(steps):
        loss = strategy.loss(model.x.square().sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()
    best = float(torch.linalg.pinv(A) @ b @ (torch.linalg.pinv(A) @ b))  # ||A^+ b||^2
    x = model.x.detach()
    return float((A @ x - b).abs().max()), abs(float(x @ x) - best) / best


def test_augmented_lagrangian_defaults_converge_small() -> None:
    violation, gap = _min_norm("augmented-lagrangian", 20, 100, 3000)
    assert violation <= 1e-4 and gap <= 1e-4, (violation, gap)


@pytest.mark.slow
def test_augmented_lagrangian_defaults_converge_full() -> None:
    violation, gap = _min_norm("augmented-lagrangian", 100, 500, 5000)
    assert violation <= 1e-4 and gap <= 1e-4, (violation, gap)
