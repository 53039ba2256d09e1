"""numba installed without llvmlite (its compiler backend): importing numba then raises ModuleNotFoundError naming
llvmlite, and the projections fall back to pure torch, exact (against the sets' float64 reference), with no warning."""

from __future__ import annotations

import importlib.abc
import sys
import warnings
from collections.abc import Iterator

import pytest
import torch

import constrain
from constrain import L1Ball, Simplex, _simplex, project_l1_ball, project_simplex


class _NoLlvmlite(importlib.abc.MetaPathFinder):
    """An import finder that answers for llvmlite as an environment without it does: No module named 'llvmlite'."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname.split(".")[0] == "llvmlite":
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@pytest.fixture
def without_llvmlite(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """numba and the kernels not imported yet, llvmlite missing; every module restored afterwards."""
    pytest.importorskip("numba", reason="numba must be installed for its import to fail on llvmlite")

    def ours(name: str) -> bool:
        return name.split(".")[0] in ("numba", "llvmlite") or name == "constrain._numba_kernels"

    before = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in before:
        del sys.modules[name]
    monkeypatch.setattr(sys, "meta_path", [_NoLlvmlite(), *sys.meta_path])
    monkeypatch.setattr(_simplex, "_NUMBA_STATE", [])
    monkeypatch.delattr(constrain, "_numba_kernels", raising=False)
    monkeypatch.delenv("CONSTRAIN_NO_NUMBA", raising=False)
    yield
    for name in [name for name in sys.modules if ours(name)]:  # what the failed import left behind
        del sys.modules[name]
    sys.modules.update(before)


def test_numba_without_llvmlite_falls_back_to_torch_quietly(without_llvmlite: None) -> None:
    with pytest.raises(ModuleNotFoundError) as missing:
        import numba  # noqa: F401  # the situation under test: numba's own import fails on llvmlite
    assert missing.value.name == "llvmlite"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing backend is "numba not available", not a broken install
        assert _simplex._numba_kernels() is None
    assert not _simplex._numba_usable(torch.zeros(2, 3))
    x = torch.randn(5, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    torch.testing.assert_close(project_simplex(x, 2.0), Simplex(2.0).exact_projection(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(project_l1_ball(x, 2.0), L1Ball(2.0).exact_projection(x), rtol=0, atol=1e-12)
