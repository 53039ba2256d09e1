"""A new constraint set is one class: it works with targets, the penalty, Lagrangian and projected
families, the reference and ``constrain validate``'s check, with no other edit.

The set below is defined here, in the test, as a user would: nothing in ``constrain``,
``strategies`` or ``experiments`` knows about it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import strategies
from constrain import ConstraintSet, on_output, on_parameter
from experiments.validate import Instance, check_instance


class HalfSpace(ConstraintSet):
    r""":math:`\{x \in \mathbb{R}^n : a^\top x \le b\}` along the last dimension."""

    def __init__(self, a: list[float], b: float) -> None:
        self.a, self.b = torch.tensor(a, dtype=torch.float64), float(b)

    def __repr__(self) -> str:
        return f"HalfSpace(n={self.a.numel()}, b={self.b})"

    @property
    def size(self) -> int:
        return self.a.numel()

    def project(self, x):
        a = self.a.to(x)
        return x - (x @ a - self.b).clamp_min(0).unsqueeze(-1) * a / a.dot(a)

    def inequality(self, x):
        return (x @ self.a.to(x) - self.b).unsqueeze(-1)

    def cvxpy_constraint(self, var):
        return [self.a.numpy() @ var <= self.b]

    def scaled(self, t):
        return HalfSpace(self.a.tolist(), self.b * t)

    def own_scale(self, x):  # the distance from the origin to the boundary
        return torch.full(x.shape[:-1], abs(self.b) / float(self.a.norm()), dtype=torch.float64, device=x.device)


A, B = [1.0, 2.0, -1.0], 1.0


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """Targets whose unconstrained fit violates a.y <= b by about 8 on every sample."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return x, x @ torch.randn(4, 3, generator=g) * 0.3 + torch.tensor([3.0, 3.0, 0.0])


def _train(name: str, target, steps: int = 400, **options) -> tuple[nn.Module, strategies.Strategy]:
    torch.manual_seed(0)
    x, y = _data()
    strategy = strategies.get(name, **options)
    model = strategy.attach(nn.Linear(4, 3), target)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(steps):
        out = model(x)
        loss = strategy.loss(nn.functional.mse_loss(out, y), out, sample_ids=torch.arange(len(x)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()
    return model, strategy


@pytest.mark.parametrize(
    ("name", "options", "tol"),
    [
        ("projected", {}, 1e-6),  # exact on every input
        ("quadratic-penalty", {"weight": 1e3}, 5e-2),  # approximate: the violation shrinks like 1/weight
        ("lagrangian", {"dual_lr": 0.5, "multipliers": "per-sample", "num_samples": 64}, 5e-2),
    ],
)
def test_a_new_set_on_outputs_trains_with_every_family(name, options, tol) -> None:
    x, y = _data()
    s = HalfSpace(A, B)
    assert float(s.violation(y).max()) > 5  # the plain fit is far outside
    model, strategy = _train(name, on_output(s), **options)
    out = model(x).detach().double()
    assert float(s.violation(out).max()) <= tol
    assert strategy.report(model(x))[f"output in {s!r}"] <= tol


@pytest.mark.parametrize("name", ["projected", "quadratic-penalty", "lagrangian"])
def test_a_new_set_on_a_parameter_and_its_size_is_checked(name) -> None:
    s = HalfSpace([1.0, 1.0, 1.0, 1.0], -0.5)  # each row w_j of the 3x4 weight: sum(w_j) <= -0.5
    options = {"weight": 1e3} if name == "quadratic-penalty" else {"dual_lr": 2.0} if name == "lagrangian" else {}
    model, _ = _train(name, on_parameter("weight", s), **options)
    assert float(s.violation(model.weight.detach().double()).max()) <= 5e-2  # unconstrained: 0.94
    # the set states its size: a 4x3 weight has rows of length 3, refused at attach with both lengths named
    with pytest.raises(
        ValueError,
        match=r"on_parameter: HalfSpace\(n=4, b=-0.5\) acts on vectors of length 4, "
        r"but the rows of weight: \(4, 3\) have length 3",
    ):
        strategies.get(name).attach(nn.Linear(3, 4), on_parameter("weight", s))
    # and on outputs, the first loss names the output width
    strategy = strategies.get("quadratic-penalty")
    model = strategy.attach(nn.Linear(4, 2), on_output(s))
    with pytest.raises(ValueError, match="acts on vectors of length 4, but the output rows have length 2"):
        strategy.loss(torch.zeros(()), model(torch.randn(5, 4)))


def test_a_new_set_has_a_reference_and_passes_the_validate_check() -> None:
    s = HalfSpace(A, B)
    x = torch.randn(6, 3, dtype=torch.float64) * 10
    x[0] = torch.tensor([0.5, 0.0, 0.0])  # inside: unchanged
    ref = s.reference_projection(x)  # cvxpy, solved at the scale max(max|x|, own_scale) and KKT-certified
    closed_form = x - (x @ s.a - B).clamp_min(0)[:, None] * s.a / s.a.dot(s.a)
    torch.testing.assert_close(ref, closed_form, rtol=0, atol=1e-12)
    outcomes = check_instance(Instance("halfspace", "random", s, x.float().double()))
    assert [o.dtype for o in outcomes] == ["float32", "float64"]
    assert all(o.passed and o.reference == "cvxpy" for o in outcomes), outcomes
