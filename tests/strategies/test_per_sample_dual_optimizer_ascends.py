"""Per-sample multipliers stepped by a torch optimizer ascend on their own rows' defects: with plain SGD at
``dual_lr`` each batch row's multiplier becomes max(0, lambda + dual_lr * g), the other rows stay 0."""

from __future__ import annotations

import torch
from torch import nn

import strategies
from constrain import NonNegative, on_output


def test_sgd_class_steps_each_batch_row_up_by_its_defect() -> None:
    strategy = strategies.Lagrangian(multipliers="per-sample", num_samples=4, dual_lr=0.5, dual_optimizer=torch.optim.SGD)
    strategy.attach(nn.Linear(3, 1).double(), [on_output(NonNegative())])
    outputs = torch.tensor([[-1.0], [2.0]], dtype=torch.float64, requires_grad=True)  # g = -y: 1 (violated), -2
    strategy.loss(outputs.sum(), outputs, sample_ids=torch.tensor([0, 2])).backward()
    strategy.after_step()
    (lam,) = strategy.multipliers().values()
    want = torch.tensor([[0.5], [0.0], [0.0], [0.0]], dtype=torch.float64)  # max(0, 0.5 * 1), max(0, 0.5 * -2) = 0
    torch.testing.assert_close(lam, want, rtol=0, atol=1e-15)
    strategy.loss(outputs.sum(), outputs, sample_ids=torch.tensor([0, 1])).backward()
    strategy.after_step()
    (lam,) = strategy.multipliers().values()
    want = torch.tensor([[1.0], [0.0], [0.0], [0.0]], dtype=torch.float64)  # 0.5 + 0.5 * 1; max(0, 0 + 0.5 * -2)
    torch.testing.assert_close(lam, want, rtol=0, atol=1e-15)
