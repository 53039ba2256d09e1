"""NuPI's arguments: each bad gain is refused with an error that names it; valid ones reach the param group."""

from __future__ import annotations

import pytest
import torch

from strategies._dual import NuPI

_GOOD = {"lr": 0.5, "kp": 2.0, "ki": 0.25}


@pytest.mark.parametrize("name", sorted(_GOOD))
@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), True, "1"])
def test_a_bad_gain_is_refused_by_its_name(name: str, bad: object) -> None:
    with pytest.raises(ValueError, match=rf"^NuPI: {name} must be a finite number >= 0, got {bad!r}"):
        NuPI([torch.zeros(2, requires_grad=True)], **{**_GOOD, name: bad})  # type: ignore[arg-type]  # bad on purpose


@pytest.mark.parametrize("ema_nu", [-0.1, 1.0, float("nan")])
def test_ema_nu_outside_zero_one_is_refused(ema_nu: float) -> None:
    with pytest.raises(ValueError, match=r"^NuPI: ema_nu must lie in \[0, 1\)"):
        NuPI([torch.zeros(2, requires_grad=True)], **_GOOD, ema_nu=ema_nu)


def test_valid_gains_are_the_param_groups_values() -> None:
    lam = torch.zeros(3, requires_grad=True)
    (group,) = NuPI([lam], lr=1, kp=0, ki=3, ema_nu=0.5).param_groups  # ints and zero gains are valid
    assert group["params"] == [lam]
    assert (group["lr"], group["kp"], group["ki"], group["ema_nu"]) == (1.0, 0.0, 3.0, 0.5)
    assert all(type(group[key]) is float for key in ("lr", "kp", "ki", "ema_nu"))
