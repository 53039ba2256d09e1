"""FusedAdam: the same steps as torch.optim.Adam(fused=True), bit for bit, and torch's own step wherever
its fast path does not apply (first step, closure, pre-hooks, missing gradients, several groups or dtypes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from experiments._fused_adam import FusedAdam
from experiments.study import make_optimizer


def _model(dtype: torch.dtype) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).to(dtype)


def _train(
    optimizer_class: Callable[..., torch.optim.Optimizer],
    dtype: torch.dtype,
    steps: int = 60,
    device: str = "cpu",
    **options: Any,
) -> tuple:
    """``steps`` steps with a decaying learning rate set on the group before each (as the study's loop does)."""
    model = _model(dtype).to(device)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    optimizer = optimizer_class(model.parameters(), lr=0.05, **{"fused": True, **options})
    for t in range(steps):
        optimizer.param_groups[0]["lr"] = 0.05 * 0.01 ** (t / (steps - 1))
        for p in model.parameters():
            p.grad = None
        model(x).sin().square().mean().backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()], optimizer.state_dict()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", [{}, {"weight_decay": 0.01, "betas": (0.8, 0.99)}, {"maximize": True}])
@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))]
)
def test_same_parameters_and_state_as_torch_fused_adam(dtype: torch.dtype, options: dict, device: str) -> None:
    expected, expected_state = _train(torch.optim.Adam, dtype, device=device, **options)
    got, state = _train(FusedAdam, dtype, device=device, **options)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    for index, fields in expected_state["state"].items():
        for name, value in fields.items():
            assert torch.equal(value, state["state"][index][name]), (index, name)


def test_fast_path_taken_after_the_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = torch._fused_adam_

    def counting(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        real(*args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", counting)
    model = _model(torch.float64)
    optimizer = FusedAdam(model.parameters(), lr=0.01)
    seen = {"torch": 0}
    original = FusedAdam._fast_lists

    def spy(self: FusedAdam) -> object:
        lists = original(self)
        seen["torch"] += lists is None
        return lists

    monkeypatch.setattr(FusedAdam, "_fast_lists", spy)
    for _ in range(3):
        for p in model.parameters():
            p.grad = None
        model(torch.ones(2, 6, dtype=torch.float64)).sum().backward()
        optimizer.step()
    assert seen["torch"] == 1  # only the first step (state initialization) took torch's path
    assert len(calls) == 3  # torch's fused path and ours both call the kernel, once per step


def test_post_hooks_run_on_the_fast_path_and_pre_hooks_take_torchs_step() -> None:
    model = _model(torch.float64)
    optimizer = FusedAdam(model.parameters(), lr=0.01)
    seen: list[str] = []
    own = optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append("own"))
    handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: seen.append("global") if opt is optimizer else None)
    try:
        for _ in range(2):
            for p in model.parameters():
                p.grad = None
            model(torch.ones(2, 6, dtype=torch.float64)).sum().backward()
            optimizer.step()
        assert seen == ["own", "global"] * 2  # torch's order: the optimizer's own hooks, then the global ones
        pre = optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append("pre"))
        optimizer.step()
        pre.remove()
        assert seen[-3:] == ["pre", "own", "global"]
    finally:
        own.remove()
        handle.remove()


def test_torchs_step_where_the_fast_path_does_not_apply() -> None:
    model = _model(torch.float64)
    first = model[0]
    assert isinstance(first, torch.nn.Linear)
    frozen = first.weight
    optimizer = FusedAdam(model.parameters(), lr=0.01)
    loss = model(torch.ones(2, 6, dtype=torch.float64)).sum()
    loss.backward()
    optimizer.step()
    frozen.grad = None  # a parameter without a gradient this step: torch's step skips it
    before = frozen.detach().clone()
    optimizer.step()
    assert torch.equal(frozen, before)
    assert float(optimizer.state[frozen]["step"]) == 1.0
    closure_loss = optimizer.step(lambda: torch.tensor(3.0))
    assert float(closure_loss) == 3.0


def test_mixed_dtypes_match_torch() -> None:
    def run(cls: Callable[..., torch.optim.Optimizer]) -> list[torch.Tensor]:
        a = torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64))
        b = torch.nn.Parameter(torch.linspace(-2, 1, 4, dtype=torch.float32))
        optimizer = cls([a, b], lr=0.1, fused=True)
        for _ in range(5):
            a.grad, b.grad = None, None
            (a.sin().sum() + b.cos().sum().double()).backward()
            optimizer.step()
        return [a.detach().clone(), b.detach().clone()]

    assert all(torch.equal(x, y) for x, y in zip(run(torch.optim.Adam), run(FusedAdam), strict=True))


def test_fused_false_is_an_error_and_the_study_builds_it() -> None:
    with pytest.raises(ValueError, match="fused=False"):
        FusedAdam([torch.nn.Parameter(torch.zeros(2))], fused=False)
    assert isinstance(make_optimizer(torch.nn.Linear(2, 1).double(), 0.01), FusedAdam)
