"""Kernels against cvxpy (``reference_projection``) on the generators of ``constrain validate``,
and the ``constrain validate`` command end to end.

The generators and the check are those of :mod:`experiments.validate`, run here at small sizes:
every instance kind of every set, float32 and float64, error relative to the instance scale.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from constrain import Affine, L1Ball, NonNegative, Simplex, project_l1_ball
from experiments import cli
from experiments.validate import SET_NAMES, TOLERANCE, check_instance, feasible_rows, instances, kinds

CASES = [(name, kind) for name in SET_NAMES for kind in kinds(name)]


@pytest.mark.parametrize(("set_name", "kind"), CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_kernels_agree_with_cvxpy(set_name: str, kind: str) -> None:
    for n in (1, 6):
        for instance in instances(set_name, n, trials=1, seed=1, only=[kind]):
            for outcome in check_instance(instance):
                assert outcome.passed, outcome
                assert outcome.error <= TOLERANCE[getattr(torch, outcome.dtype)]


@pytest.mark.parametrize("set_name", SET_NAMES)
def test_kernels_agree_with_cvxpy_medium_size(set_name: str) -> None:
    for instance in instances(set_name, 64, trials=1, seed=2, only=["random", "zeros"]):
        assert all(outcome.passed for outcome in check_instance(instance))


def test_instances_are_deterministic_and_well_formed() -> None:
    first = instances("simplex", 5, trials=2, seed=3)
    again = instances("simplex", 5, trials=2, seed=3)
    assert [i.kind for i in first] == [i.kind for i in again] == list(kinds("simplex")) * 2
    for a, b in zip(first, again):
        assert torch.equal(a.x, b.x) and a.x.dtype == torch.float64 and a.x.shape[-1] == 5
        assert torch.equal(a.x, a.x.float().double())  # float32-representable: both dtypes see one problem
    assert instances("simplex", 5, seed=4)[0].x.ne(first[0].x).any()
    assert instances("tie", 1) == []  # nothing to tie in one dimension
    assert [i.kind for i in instances("l1ball", 10**5)] == ["random"]  # large n: one row of one kind
    with pytest.raises(ValueError, match="unknown set 'cube'"):
        instances("cube", 3)
    with pytest.raises(ValueError, match=r"unknown kind\(s\) \['flat'\]"):
        instances("l1ball", 3, only=["flat"])


def test_reference_on_known_projections() -> None:
    """Closed forms: uniform simplex point, soft threshold, ties, and tiny inputs with a unit radius."""
    x = torch.tensor([[0.5, 0.5, 0.5], [3.0, -1.0, 0.5], [1e-9, 2e-9, 0.0]], dtype=torch.float64)
    ref = Simplex(1.0).reference_projection(x)
    torch.testing.assert_close(ref[0], torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=1e-14)
    torch.testing.assert_close(ref[2], (x[2] + (1 - x[2].sum()) / 3), rtol=0, atol=1e-14)
    ref = L1Ball(2.0).reference_projection(x)
    torch.testing.assert_close(ref[1], torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64), rtol=0, atol=1e-14)
    torch.testing.assert_close(ref[2], x[2], rtol=0, atol=1e-15)  # inside: unchanged (to 1e-15 of the scale r = 2)
    ties = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(L1Ball(2.0).reference_projection(ties), ties / 2, rtol=0, atol=1e-14)


def test_affine_kernel_on_an_ill_conditioned_system_matches_numpy() -> None:
    """Singular values down to 1e-6: beyond what the KKT-polished reference resolves, so compare with numpy."""
    rng = np.random.default_rng(7)
    m, n = 8, 30
    U, _ = np.linalg.qr(rng.standard_normal((m, m)))
    V, _ = np.linalg.qr(rng.standard_normal((n, m)))
    A = U @ np.diag(np.logspace(0, -6, m)) @ V.T
    c = A @ rng.standard_normal(n)
    x = rng.standard_normal((4, n))
    expected = feasible_rows(A, c, x)
    got = Affine(A, c).project(torch.from_numpy(x)).numpy()
    assert np.abs(got - expected).max() <= 1e-8
    assert np.abs(got @ A.T - c).max() <= 1e-12


# ---------------------------------------------------------------------------------------------
# the command


def test_validate_command_end_to_end(tmp_path, capsys) -> None:
    path = tmp_path / "rows.json"
    status = cli.main(["validate", "--trials", "1", "--sets", "l1ball,nonnegative,tie", "--max-n", "5", "--json", str(path)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "max error" in out and "max violation" in out and "verdict" in out
    assert "s = max(max_i |x_i|, r)" in out and "all pass" in out
    payload = json.loads(path.read_text())
    rows = payload["rows"]
    assert {(r["set"], r["n"], r["dtype"]) for r in rows} >= {("l1ball", 1, "float32"), ("tie", 5, "float64")}
    assert all(r["verdict"] == "pass" and r["max_error"] <= 1e-4 for r in rows)
    assert not any(r["set"] == "tie" and r["n"] == 1 for r in rows)
    assert payload["tolerance"] == {"float64": 1e-6, "float32": 1e-4}


def test_validate_command_fails_on_a_wrong_kernel(monkeypatch, capsys) -> None:
    monkeypatch.setattr(L1Ball, "project", lambda self, x: project_l1_ball(x, self.radius) * (1 + 1e-3))
    status = cli.main(["validate", "--sets", "l1ball", "--max-n", "2"])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL" in out and "row(s) FAILED" in out


def test_validate_command_fails_on_a_kernel_that_raises(monkeypatch, capsys, tmp_path) -> None:
    def broken(self, x):
        raise RuntimeError("broken kernel")

    monkeypatch.setattr(NonNegative, "project", broken)
    path = tmp_path / "rows.json"
    assert cli.main(["validate", "--sets", "nonnegative", "--max-n", "1", "--json", str(path)]) == 1
    assert "kernel raised RuntimeError('broken kernel')" in capsys.readouterr().out
    rows = json.loads(path.read_text())["rows"]  # standard JSON: NaN written as null
    assert rows and all(r["max_error"] is None and r["verdict"].startswith("FAIL") for r in rows)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sets", "l1ball,cube"], "unknown set(s) cube"),
        (["--trials", "0"], "expected a positive integer, got 0"),
        (["--max-n", "x"], "expected a positive integer, got 'x'"),
    ],
)
def test_validate_command_bad_options(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["validate", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_validate_command_default_run(capsys) -> None:
    """The default run: every set, n from 1 to 1e5 (about a minute on two cores)."""
    assert cli.main(["validate"]) == 0, capsys.readouterr().out
