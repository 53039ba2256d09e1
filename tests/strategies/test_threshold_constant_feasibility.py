"""projected(jacobian="threshold-constant") on float32 rows: the rows that rounding leaves outside the L1
ball are pulled back onto it, to within one float32 ulp of the radius (L1 norms summed exactly in float64)."""

from __future__ import annotations

import torch

from constrain import l1_ball_threshold
from strategies._projected import _l1_ball_threshold_constant


def test_rows_are_pulled_back_onto_the_ball() -> None:
    g = torch.Generator().manual_seed(0)
    rows = (torch.randn(400, 37, generator=g) * torch.logspace(-2, 3, 400).unsqueeze(1)).float()
    radius = 1.3
    y = _l1_ball_threshold_constant(radius)(rows)
    # the soft threshold alone leaves large rows hundreds of ulps outside: the pull matters here
    tau = l1_ball_threshold(rows, radius)
    raw = (torch.sign(rows) * (rows.abs() - tau).clamp_min(0)).double().abs().sum(-1)
    ulp = torch.finfo(torch.float32).eps * radius
    assert float(raw.max()) - radius > 100 * ulp
    excess = y.double().abs().sum(-1) - radius
    assert float(excess.max()) <= ulp
    # rows well inside are not scaled: the map is the soft threshold there
    inside = raw < radius * (1 - 1e-4)
    assert bool(inside.any())
    torch.testing.assert_close(y[inside].double().abs().sum(-1), raw[inside], rtol=0, atol=0)
