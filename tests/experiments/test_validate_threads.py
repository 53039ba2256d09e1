"""``constrain validate`` runs its many small solves on one BLAS thread, scipy's own OpenBLAS included."""

from __future__ import annotations

from threadpoolctl import threadpool_info

from experiments.validate import _one_blas_thread


def _blas_threads() -> dict[str, int]:
    return {info["filepath"]: info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


def test_every_blas_runs_one_thread_and_is_restored() -> None:
    import scipy.linalg  # noqa: F401  # scipy's wheels bundle their own OpenBLAS: loaded before the snapshot

    before = _blas_threads()
    with _one_blas_thread():
        inside = _blas_threads()
        assert inside and set(inside.values()) == {1}
    assert _blas_threads() == before
