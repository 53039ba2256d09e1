"""The L1-ball and simplex projections without numba: missing, broken or switched off, they fall back to
pure torch and still give the exact projection (compared with the sets' independent float64 reference)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

import constrain
from constrain import L1Ball, Simplex, _simplex, project_l1_ball, project_simplex


@pytest.fixture
def fresh_numba_state(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Forget the cached kernels (and the imported kernel module) for one test; monkeypatch restores both."""
    monkeypatch.setattr(_simplex, "_NUMBA_STATE", [])
    monkeypatch.delitem(sys.modules, "constrain._numba_kernels", raising=False)
    monkeypatch.delattr(constrain, "_numba_kernels", raising=False)
    monkeypatch.delenv("CONSTRAIN_NO_NUMBA", raising=False)
    return monkeypatch


def _check_exact_projections() -> None:
    x = torch.randn(5, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    torch.testing.assert_close(project_simplex(x, 2.0), Simplex(2.0).exact_projection(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(project_l1_ball(x, 2.0), L1Ball(2.0).exact_projection(x), rtol=0, atol=1e-12)


def test_numba_missing_falls_back_to_torch(fresh_numba_state: pytest.MonkeyPatch) -> None:
    fresh_numba_state.setitem(sys.modules, "numba", None)  # `import numba` raises ModuleNotFoundError(name="numba")
    assert _simplex._numba_kernels() is None
    assert _simplex._NUMBA_STATE == [None]  # cached: the import is tried once
    assert not _simplex._numba_usable(torch.zeros(2, 3))
    _check_exact_projections()


class _BrokenNumba(types.ModuleType):
    """A numba whose every attribute fails to load, as one built for another numpy does."""

    def __getattr__(self, name: str) -> object:
        raise ImportError(f"numba.{name}: compiled for another numpy")


def test_numba_broken_warns_and_falls_back(fresh_numba_state: pytest.MonkeyPatch) -> None:
    broken = _BrokenNumba("numba")
    fresh_numba_state.setitem(sys.modules, "numba", broken)
    with pytest.warns(RuntimeWarning, match="numba is installed but cannot be imported"):
        assert _simplex._numba_kernels() is None
    _check_exact_projections()


@pytest.mark.parametrize(("value", "off"), [("1", True), (" yes ", True), ("0", False), ("", False)])
def test_constrain_no_numba_switch(fresh_numba_state: pytest.MonkeyPatch, value: str, off: bool) -> None:
    pytest.importorskip("numba", reason="the switch is observable only where numba is installed")
    fresh_numba_state.setenv("CONSTRAIN_NO_NUMBA", value)
    kernels = _simplex._numba_kernels()
    assert (kernels is None) == off
    if not off:
        assert isinstance(kernels, types.ModuleType) and kernels.__name__ == "constrain._numba_kernels"
    _check_exact_projections()


@pytest.mark.parametrize(
    ("dtype", "switch", "kernel_dtypes"),
    [
        (torch.float64, "", [torch.float64]),
        (torch.float32, "", [torch.float32]),
        (torch.float16, "", [torch.float32]),
        (torch.float64, "1", []),
    ],
)
def test_auto_uses_the_kernels_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, switch: str, kernel_dtypes: list[torch.dtype]
) -> None:
    """method="auto" (the default) takes the compiled kernels for CPU rows (float16 computed in float32) when
    numba is there and not switched off; the result is the exact projection either way."""
    pytest.importorskip("numba", reason="the dispatch to the kernels needs numba")
    monkeypatch.setenv("CONSTRAIN_NO_NUMBA", switch)
    calls: list[torch.dtype] = []
    original = _simplex._forward_numba

    def spy(x: torch.Tensor, radius: torch.Tensor, ball: bool) -> object:
        calls.append(x.dtype)
        return original(x, radius, ball)

    monkeypatch.setattr(_simplex, "_forward_numba", spy)
    x = torch.randn(4, 7, generator=torch.Generator().manual_seed(5)).to(dtype) * 3
    y = project_simplex(x, 1.5)
    assert calls == kernel_dtypes
    reference = Simplex(1.5).exact_projection(x.double())
    torch.testing.assert_close(y.double(), reference, rtol=0, atol=1e-2 if dtype == torch.float16 else 1e-5)
