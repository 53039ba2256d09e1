"""The right-hand side ``c`` of ``A w = c`` is moved to ``A``'s device (a GPU ``A`` with the default ``c = 0``
would otherwise meet a CPU ``c`` in the factorization). Checked on the ``meta`` device, which has no data."""

from __future__ import annotations

import pytest
import torch

import constrain._affine
from constrain._affine import _as_matrix


def test_c_is_moved_to_the_device_of_a(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constrain._affine, "check_finite", lambda x, name: x)  # reads values: meta has none
    A = torch.ones(2, 3, device="meta")
    A64, c64 = _as_matrix(A, torch.tensor([1.0, 2.0]))  # c on the CPU
    assert A64.device.type == c64.device.type == "meta"
    assert c64.dtype == torch.float64 and c64.shape == (2,)


def test_on_the_cpu_c_keeps_its_values() -> None:
    A64, c64 = _as_matrix(torch.eye(2), torch.tensor([1.5, -2.0]))
    assert c64.device == A64.device
    assert c64.tolist() == [1.5, -2.0]
