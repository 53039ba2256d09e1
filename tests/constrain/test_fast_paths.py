"""The fast L1-ball / simplex projections agree with the sort-based reference, on every path.

Paths: the compiled numba kernels (CPU), the pure-torch Newton path, and the public functions
with numba on and off (``CONSTRAIN_NO_NUMBA=1``). Also: their gradients (float64 gradcheck),
the non-finite checks, the threaded long-row path, and a smoke test of ``constrain bench
projections`` (its JSON structure only; no speed is asserted anywhere).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from constrain import L1Ball, Simplex, _simplex, l1_ball_threshold, project_l1_ball, project_simplex
from constrain._simplex import _project, _project_sort, _sort_threshold

HAVE_NUMBA = _simplex._numba_kernels() is not None
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")

METHODS = [pytest.param("numba", marks=needs_numba), "torch", "auto"]
DTYPES = [torch.float32, torch.float64]
EPS = {torch.float32: 2e-6, torch.float64: 1e-13}


def _cases(dtype: torch.dtype, seed: int = 0):
    """(name, x, radius) with x of shape (rows, n): random and adversarial rows."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    for n in (1, 2, 3, 7, 16, 64, 65, 200, 1000):
        rows = 5
        yield f"randn-{n}", randn(rows, n) * 3, 1.0
        yield f"per-row-radius-{n}", randn(rows, n), (torch.rand(rows, generator=g, dtype=torch.float64) + 0.05).to(dtype)
        yield f"ties-{n}", torch.randint(-3, 4, (rows, n), generator=g).to(dtype), 2.0
        yield f"all-equal-{n}", torch.full((rows, n), 0.7, dtype=dtype), 1.0
        yield f"zeros-{n}", torch.zeros(rows, n, dtype=dtype), 1.0
        yield f"inside-{n}", randn(rows, n) / (10 * n), 1.0
        yield f"huge-{n}", randn(rows, n) * 1e20, 1e20
        yield f"tiny-{n}", randn(rows, n) * 1e-20, 1e-20
        yield f"large-radius-{n}", randn(rows, n), 1e3
        yield f"uniform-{n}", torch.rand(rows, n, generator=g, dtype=torch.float64).to(dtype), 1.0
        yield f"heavy-tailed-{n}", randn(rows, n) ** 5, 1.0
        mixed = randn(rows, n)
        mixed[::2] /= 100 * n  # rows inside and outside the ball in one batch
        yield f"mixed-{n}", mixed, 1.0


def _check_close(y: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, radius, name: str) -> None:
    """Same values up to rounding, same support wherever the reference is clear of rounding."""
    r = radius.abs().max().item() if isinstance(radius, torch.Tensor) else float(radius)
    scale = max(x.abs().max().item(), r)
    tol = 64 * EPS[x.dtype] * scale * max(1, x.shape[-1]) ** 0.5
    err = (y.double() - ref.double()).abs().max().item()
    assert err <= tol, f"{name}: max error {err:.3g} > {tol:.3g}"
    clear = ref.abs() > tol
    assert torch.equal((y != 0) & clear, clear), f"{name}: support differs"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ball", [True, False])
@pytest.mark.parametrize("method", METHODS)
def test_agrees_with_sort_reference(method, ball, dtype):
    for name, x, radius in _cases(dtype):
        ref = _project_sort(x, radius, ball=ball)
        y = _project(x, radius, -1, ball, method)
        assert y.dtype == dtype and y.shape == x.shape
        _check_close(y, ref, x, radius, f"{method} {'ball' if ball else 'simplex'} {name}")


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ball", [True, False])
def test_numba_and_torch_paths_agree(ball, dtype):
    x = torch.randn(100, 300, generator=torch.Generator().manual_seed(1), dtype=dtype)
    a = _project(x, 1.0, -1, ball, "numba")
    b = _project(x, 1.0, -1, ball, "torch")
    assert torch.equal(a != 0, b != 0)  # same support
    assert (a - b).abs().max() <= 8 * EPS[dtype] * x.abs().max()


@pytest.mark.parametrize("ball", [True, False])
def test_no_numba_env_var_gives_the_same_results(monkeypatch, ball):
    x = torch.randn(64, 200, generator=torch.Generator().manual_seed(2))
    radius = torch.rand(64, generator=torch.Generator().manual_seed(3)) + 0.5
    fast = project_l1_ball(x, radius) if ball else project_simplex(x, radius)
    monkeypatch.setenv("CONSTRAIN_NO_NUMBA", "1")
    assert not _simplex._numba_usable(x)
    slow = project_l1_ball(x, radius) if ball else project_simplex(x, radius)
    assert torch.equal(fast != 0, slow != 0)
    assert (fast - slow).abs().max() <= 1e-5
    with pytest.raises(RuntimeError, match="numba"):
        _project(x, radius, -1, ball, "numba")


@pytest.mark.parametrize("method", METHODS)
def test_other_dims_and_low_precision(method):
    x = torch.randn(30, 4, 9, generator=torch.Generator().manual_seed(4))
    radius = torch.rand(4, 9, generator=torch.Generator().manual_seed(5)) + 0.1
    for ball in (True, False):
        ref = _project_sort(x, radius, dim=0, ball=ball)
        y = _project(x, radius, 0, ball, method)
        _check_close(y, ref, x, radius, f"{method} dim=0")
        if method != "numba":
            for low in (torch.float16, torch.bfloat16):
                y = _project(x.to(low), 1.0, -1, ball, method)
                assert y.dtype == low
                assert (y.float() - _project_sort(x.to(low).float(), 1.0, ball=ball)).abs().max() < 1e-2


@pytest.mark.parametrize("method", METHODS)
def test_threshold_matches_sort(method, monkeypatch):
    if method == "torch":
        monkeypatch.setenv("CONSTRAIN_NO_NUMBA", "1")
    x = torch.randn(50, 300, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    x[::3] /= 1000  # inside the ball: threshold 0
    tau = l1_ball_threshold(x, 1.0)
    top = x.abs().amax(-1, keepdim=True)  # _sort_threshold is relative to the row's maximum
    ref = (top + _sort_threshold(x.abs(), torch.ones(50, 1, dtype=torch.float64))).clamp_min(0)
    ref[x.abs().sum(-1) <= 1] = 0
    assert tau.shape == (50, 1)
    assert torch.allclose(tau, ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("ball", [True, False])
def test_gradients_unchanged(method, ball):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 7, generator=g, dtype=torch.float64) * 2
    x[1] /= 100  # a row inside the ball
    x = x.requires_grad_()
    radius = torch.tensor([0.5, 1.0, 2.0, 30.0], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, r: _project(x, r, -1, ball, method), (x, radius))
    # same gradient as the reference
    y = _project(x, radius, -1, ball, method)
    y_ref = _project(x, radius, -1, ball, "sort")
    w = torch.randn(4, 7, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((y * w).sum(), (x, radius))
    grads_ref = torch.autograd.grad((y_ref * w).sum(), (x, radius))
    for a, b in zip(grads, grads_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    # create_graph=True takes the out-of-place backward, which differentiates again
    assert gradgradcheck(lambda x, r: _project(x, r, -1, ball, method), (x, radius))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("ball", [True, False])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_raise(method, ball, bad):
    for n in (5, 500):
        x = torch.randn(3, n)
        x[1, n // 2] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            _project(x, 1.0, -1, ball, method)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ball", [True, False])
def test_numba_threaded_long_rows(dtype, ball):
    """Few long rows take the segmented path: candidates of segments merged, same result."""
    kernels = _simplex._numba_kernels()
    g = torch.Generator().manual_seed(8)
    for x, radius in (
        (torch.randn(1, 140_000, generator=g, dtype=dtype), 1.0),
        (torch.randn(2, 70_000, generator=g, dtype=dtype), 50.0),
        (torch.randn(1, 140_000, generator=g, dtype=dtype) * 1e-7, 1.0),  # inside the ball
    ):
        r = torch.full((x.shape[0],), radius, dtype=dtype)
        outs = []
        for threads in (1, 4):
            out, taus = torch.empty_like(x), torch.empty(x.shape[0], dtype=dtype)
            assert kernels.project_rows(x.numpy(), r.numpy(), ball, out.numpy(), taus.numpy(), threads) == 0
            outs.append(out)
        _check_close(outs[1], outs[0], x, radius, "threads")
        _check_close(outs[0], _project_sort(x, radius, ball=ball), x, radius, "long rows")
        x[-1, 12345] = float("nan")
        out, taus = torch.empty_like(x), torch.empty(x.shape[0], dtype=dtype)
        assert kernels.project_rows(x.numpy(), r.numpy(), ball, out.numpy(), taus.numpy(), 4) == 1


@needs_numba
@pytest.mark.parametrize("ball", [True, False])
def test_numba_threaded_rows_are_bitwise_those_of_one_thread(ball):
    """Many rows are cut into chunks that the threads claim from a shared counter: each row is projected by the
    same code whatever the thread count and whichever thread claims it, so outputs and thresholds are bitwise equal."""
    kernels = _simplex._numba_kernels()
    x = torch.randn(301, 700, generator=torch.Generator().manual_seed(13)) * 3
    x[::7] /= 1e4  # ball rows inside
    x[200, 5] = float("inf")
    r = torch.full((301,), 1.5)
    results = []
    for threads in (1, 2, 3):
        out, taus = torch.empty_like(x), torch.empty(301, dtype=torch.float64)
        assert kernels.project_rows(x.numpy(), r.numpy(), ball, out.numpy(), taus.numpy(), threads) == 1
        results.append((out, taus))
    for out, taus in results[1:]:
        keep = torch.arange(301) != 200  # (the bad row's output is unspecified)
        assert torch.equal(out[keep], results[0][0][keep]) and torch.equal(taus, results[0][1])
    keep = torch.arange(301) != 200
    _check_close(results[0][0][keep], _project_sort(x[keep], 1.5, ball=ball), x[keep], 1.5, "rows")
    # a thread that starts after the others have claimed every chunk finds nothing left and writes nothing
    counter = np.zeros(1, dtype=np.int64)
    out, taus = torch.empty_like(x), torch.empty(301, dtype=torch.float64)
    xi = x.numpy().view(np.int32)
    args = (x.numpy(), xi, r.numpy(), ball, out.numpy(), taus.numpy(), counter)
    assert kernels._project_claimed_rows(*args, 5) == 1 and counter[0] >= 301  # chunks of 5 rows, the last one short
    before = out.clone()
    assert kernels._project_claimed_rows(*args, 5) == 0
    assert torch.equal(out.view(torch.int32), before.view(torch.int32))  # bitwise: the bad row's NaN too
    assert torch.equal(out[keep], results[0][0][keep]) and torch.equal(taus, results[0][1])


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ball", [True, False])
def test_numba_candidates_at_every_bit_of_a_block(dtype, ball):
    """The kernels select a block's candidates through one bit per value (bit 63 included): put the
    support at each position of a block, at block edges and in a partial last block."""
    kernels = _simplex._numba_kernels()
    block = kernels._BLOCK
    n = 3 * block + 5  # three full blocks and a partial one
    x = torch.full((n, n), -0.01, dtype=dtype)
    x[1::2] *= -1  # both signs for the ball
    positions = torch.arange(n)
    x[positions, positions] = 3.0  # row i: its largest value at column i
    x[positions, (positions + block - 1) % n] = -2.5 if ball else 2.5  # and one a block (less one) further
    for radius in (0.5, 1.5):
        ref = _project_sort(x, radius, ball=ball)
        y = _project(x, radius, -1, ball, "numba")
        _check_close(y, ref, x, radius, f"bits {'ball' if ball else 'simplex'} r={radius}")
        assert torch.equal(y != 0, ref != 0)


def _spy(monkeypatch, name: str) -> list[int]:
    """Count the rows each call of ``_simplex.<name>(d, ...)`` receives."""
    original, seen = getattr(_simplex, name), []

    def spy(d, *args):
        seen.append(d.shape[0])
        return original(d, *args)

    monkeypatch.setattr(_simplex, name, spy)
    return seen


def test_torch_path_falls_back_to_sorting(monkeypatch):
    monkeypatch.setattr(_simplex, "_FIRST_STEPS", 1)
    monkeypatch.setattr(_simplex, "_NEWTON_STEPS", 1)
    monkeypatch.setattr(_simplex, "_NEWTON_BLOCKS", 1)
    sorted_rows = _spy(monkeypatch, "_sort_unconverged")
    x = torch.rand(20, 300, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for ball in (True, False):
        _check_close(_project(x, 1.0, -1, ball, "torch"), _project_sort(x, 1.0, ball=ball), x, 1.0, "fallback")
    assert sorted_rows and all(0 < rows <= 20 for rows in sorted_rows)  # only the unfinished rows are sorted


@pytest.mark.parametrize("ball", [True, False])
def test_torch_path_finishes_the_rows_left_on_their_own(monkeypatch, ball):
    """Eagerly, rows not converged after the first block continue alone (gathered), then are scattered back."""
    monkeypatch.setattr(_simplex, "_FIRST_STEPS", 1)  # one step cannot see the support repeat: every row is left
    rest_rows = _spy(monkeypatch, "_newton_rest")
    sorted_rows = _spy(monkeypatch, "_sort_unconverged")
    g = torch.Generator().manual_seed(12)
    x = torch.randn(3, 40, 200, generator=g, dtype=torch.float64) * 2
    x[:, ::5] /= 1e4  # ball rows inside
    radius = torch.rand(3, 40, generator=g, dtype=torch.float64) + 0.5
    y = _project(x, radius, -1, ball, "torch")
    assert rest_rows == [3] and not sorted_rows  # (the batch shape is kept: d is (3, 40, 200))
    _check_close(y, _project_sort(x, radius, ball=ball), x, radius, "rest")


def test_bench_projections_smoke(tmp_path, capsys, monkeypatch):
    from experiments.cli import main

    path = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "projections",
            "--sizes",
            "16,40",
            "--batch",
            "4",
            "--repeats",
            "1",
            "--cvxpy-rows",
            "1",
            "--threads",
            "1",
            "--json",
            str(path),
        ]
    )
    assert code == 0  # without --check, misses are reported only
    printed = capsys.readouterr().out
    assert printed.startswith("machine: ") and "torch " + torch.__version__ in printed.splitlines()[0]
    assert "ours/abs" in printed and "sort" in printed and "targets missed:" in printed
    payload = json.loads(path.read_text())
    assert payload["benchmark"] == "projections"
    assert payload["config"]["sizes"] == [16, 40] and payload["config"]["batches"] == [4, 4]
    assert payload["config"]["threads"] == [1]
    assert {"torch", "numba", "numpy", "python", "threads", "cpu", "cpus"} <= set(payload["environment"])
    records = payload["results"]
    assert [(rec["set"], rec["n"]) for rec in records] == [("l1ball", 16), ("simplex", 16), ("l1ball", 40), ("simplex", 40)]
    for rec in records:
        assert rec["batch"] == 4 and rec["dtype"] == "float32" and rec["threads"] == 1
        ms = rec["median_ms"]
        assert {"abs", "ours", "torch", "sort", "cvxpy_per_row"} <= set(ms)
        assert ("numba" in ms) == HAVE_NUMBA
        assert all(isinstance(v, float) and v > 0 for v in ms.values())
        assert set(rec["min_ms"]) == set(ms) - {"cvxpy_per_row"}
        assert all(rec["min_ms"][name] <= ms[name] for name in rec["min_ms"])
        assert all(v > 0 for v in rec["ratios"].values())
        assert rec["targets"] and all(isinstance(v, bool) for v in rec["targets"].values())
    # --check turns a missed target into exit status 1; without it the run reports and exits 0
    from experiments import bench

    monkeypatch.setattr(bench, "TARGET_SMALL_SORT_SPEEDUP", 1e9)  # a target no kernel meets
    quick = ["bench", "projections", "--sizes", "16", "--batch", "4", "--repeats", "1", "--cvxpy-rows", "0", "--threads", "1"]
    assert main([*quick, "--check"]) == 1
    assert main(quick) == 0
    assert "sort/ours>=1e+09:MISS" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_outputs_are_feasible_to_the_precision_of_the_radius(dtype):
    """Rounding |x| - tau leaves ||y||_1 off by ~|S| eps tau; the kernel rescales such rows, so a
    large input projected onto the unit ball is inside up to a few ulps of r, not of ||x||_1."""
    torch.manual_seed(0)
    x = (torch.randn(256, 16) * 1000).to(dtype)
    eps = torch.finfo(dtype).eps
    assert float(L1Ball(1.0).violation(project_l1_ball(x, 1.0).float()).max()) <= 8 * eps
    assert float(Simplex(1.0).violation(project_simplex(x, 1.0).float()).max()) <= 8 * eps


@needs_numba
@pytest.mark.parametrize("ball", [True, False])
def test_numba_kernels_put_float32_rows_on_the_set(ball):
    """The kernels rescale float32 rows off r themselves (short rows, one thread, and the segmented long
    rows): ||y||_1 is r (simplex) or at most r (ball) to a few ulps of r, not of ||x||_1."""
    kernels = _simplex._numba_kernels()
    g = torch.Generator().manual_seed(3)
    eps = torch.finfo(torch.float32).eps
    for x in (torch.randn(512, 16, generator=g) * 1000, torch.randn(2, 70_000, generator=g) * 1000):
        r = torch.full((x.shape[0],), 2.5)
        for threads in (1, 4):
            out, taus = torch.empty_like(x), torch.empty(x.shape[0], dtype=torch.float64)
            assert kernels.project_rows(x.numpy(), r.numpy(), ball, out.numpy(), taus.numpy(), threads) == 0
            norm = out.double().abs().sum(-1)
            assert float((norm - 2.5).max()) <= 8 * eps * 2.5, threads
            if not ball:
                assert float((norm - 2.5).abs().max()) <= 8 * eps * 2.5, threads
            _check_close(out, _project_sort(x, 2.5, ball=ball), x, 2.5, "rescaled")


@pytest.mark.parametrize("ball", [True, False])
def test_torch_path_norm_float32_or_float64_by_support_size(ball):
    """The torch path sums a float32 row's norm in float32 only when it has at most _FLOAT32_NORM_TERMS nonzeros
    (error at most (k - 1) u of the norm); rows with larger supports take a float64 sum. Both land on the set."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(64, 300, generator=g) * 1000
    radius = torch.where(torch.arange(64) % 2 == 0, 1.0, 2e4)  # even rows: a few nonzeros; odd: hundreds
    y = _project(x, radius, -1, ball, "torch")
    nonzeros = (y != 0).sum(-1)
    assert int(nonzeros[::2].max()) <= _simplex._FLOAT32_NORM_TERMS < int(nonzeros[1::2].min())
    norm = y.double().abs().sum(-1)
    excess = (norm - radius.double()) / radius.double()
    eps = torch.finfo(torch.float32).eps
    assert float(excess.max()) <= 8 * eps
    if not ball:
        assert float(excess.abs().max()) <= 8 * eps
    _check_close(y, _project_sort(x.double(), radius.double(), ball=ball).float(), x, radius, "norm")
