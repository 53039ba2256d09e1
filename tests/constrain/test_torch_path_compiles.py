"""The pure-torch path (what a GPU runs) has no host synchronisation: it compiles with ``fullgraph=True``.

``torch.compile(fullgraph=True)`` refuses any graph break, and a host synchronisation
(``bool(tensor)``, ``.item()``, data-dependent control flow) is one; so compiling the whole
forward is the test. Slow (compilation takes minutes on a loaded 2-core machine).
"""

from __future__ import annotations

import pytest
import torch

from constrain import _simplex
from constrain._simplex import _forward_torch, _project_sort


@pytest.mark.slow
@pytest.mark.parametrize("ball", [True, False], ids=["ball", "simplex"])
def test_torch_path_compiles_fullgraph_and_agrees(ball: bool, monkeypatch) -> None:
    torch._dynamo.reset()
    compiled = torch.compile(_forward_torch, fullgraph=True, dynamic=False)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 100, generator=g) * 2
    x[::4] /= 1000  # ball rows inside
    radius = torch.ones(64, 1)
    y, outside, tau = compiled(x, radius, ball)
    torch.testing.assert_close(y, _project_sort(x, 1.0, ball=ball), rtol=0, atol=1e-6)
    eager = _forward_torch(x, radius, ball)
    assert torch.equal(outside, eager[1])
    torch.testing.assert_close(tau, eager[2], rtol=0, atol=1e-6)
    # a non-finite entry cannot raise without a synchronisation: its row comes back NaN, the others exact
    x[5, 7] = float("nan")
    x[9, 3] = -float("inf")
    y, _, _ = compiled(x, radius, ball)
    assert bool(torch.isnan(y[5]).all()) and bool(torch.isnan(y[9]).all())
    keep = torch.ones(64, dtype=torch.bool)
    keep[[5, 9]] = False
    torch.testing.assert_close(y[keep], _project_sort(x[keep], 1.0, ball=ball), rtol=0, atol=1e-6)
    # adversarial rows that Newton does not finish in its fixed steps are sorted (torch.cond)
    monkeypatch.setattr(_simplex, "_NEWTON_STEPS", 1)  # compiled: one block, then torch.cond
    torch._dynamo.reset()
    x = torch.rand(8, 300, generator=g)
    y, _, _ = torch.compile(_forward_torch, fullgraph=True, dynamic=False)(x, torch.ones(8, 1), ball)
    torch.testing.assert_close(y, _project_sort(x, 1.0, ball=ball), rtol=0, atol=1e-6)
