"""A barrier on outputs after one or two skipped (non-finite) steps in a row still remembers the point to
return to: a training forward that left the set is pulled back inside, to outputs that are strictly positive."""

from __future__ import annotations

import contextlib

import pytest
import torch

import strategies
from constrain import NonNegative, on_output


@pytest.mark.parametrize("skipped", [1, 2])
@pytest.mark.parametrize("name", ["log-barrier", "reciprocal-barrier"])
def test_skipped_steps_keep_the_point_to_return_to(name: str, skipped: int) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.mul_(0.1)
        model.bias.fill_(1.0)  # outputs strictly inside y > 0 for inputs in [0, 1)
    x = torch.rand(8, 3, dtype=torch.float64)
    strategy = strategies.get(name, on_nonfinite="skip")
    strategy.attach(model, [on_output(NonNegative())])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for objective in (0.0, *[float("nan")] * skipped):  # a normal step, then steps whose loss is NaN (skipped)
        out = model(x)
        with pytest.warns(RuntimeWarning, match="Skipping") if objective != objective else contextlib.nullcontext():
            loss = strategy.loss(out.sum() * 0 + objective, out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()
    with torch.no_grad():
        model.bias.fill_(-5.0)  # a step that left the set: every output negative
    assert bool((torch.nn.functional.linear(x, model.weight, model.bias) < 0).all())
    out = model(x)  # the training forward returns the outputs of the accepted point, pulled back inside
    assert bool((out > 0).all()), out.min()
    assert torch.isfinite(strategy.loss(out.sum(), out))
