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

from constrain import Affine, L1Ball, NonNegative, Simplex, project_l1_ball, reference
from constrain.reference import ReferenceSolverError, exact_l1_ball, exact_simplex
from experiments import cli, validate
from experiments.validate import (
    METRIC_SETS,
    OFFSET_SETS,
    SET_NAMES,
    TOLERANCE,
    check_instance,
    feasible_rows,
    instance_scale,
    instances,
    kinds,
)

#: Sets checked instance by instance (the metric sets have their own check, ``check_metric``, tested
#: in tests/constrain/test_metric_projections.py and by the command below).
INSTANCE_SETS = [name for name in SET_NAMES if name not in METRIC_SETS]
CASES = [(name, kind) for name in INSTANCE_SETS for kind in kinds(name)]


@pytest.mark.parametrize(("set_name", "kind"), CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_kernels_agree_with_cvxpy(set_name: str, kind: str) -> None:
    for n in (1, 6):
        for instance in instances(set_name, n, trials=1, seed=1, only=[kind]):
            for outcome in check_instance(instance):
                assert outcome.passed, outcome
                assert outcome.error <= TOLERANCE[getattr(torch, outcome.dtype)]


@pytest.mark.parametrize("set_name", [name for name in INSTANCE_SETS if name not in OFFSET_SETS])
def test_kernels_agree_with_cvxpy_medium_size(set_name: str) -> None:
    for instance in instances(set_name, 64, trials=1, seed=2, only=["random", "zeros"]):
        assert all(outcome.passed for outcome in check_instance(instance))


def test_instances_are_deterministic_and_well_formed() -> None:
    first = instances("simplex", 5, trials=2, seed=3)
    again = instances("simplex", 5, trials=2, seed=3)
    assert [i.kind for i in first] == [i.kind for i in again] == list(kinds("simplex")) * 2
    for a, b in zip(first, again, strict=True):
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
# the exact references (issue 11.3)


def _kkt_simplex(x: np.ndarray, r: float, y: np.ndarray, tol: float) -> None:
    """Optimality of ``y`` for the simplex projection of ``x``: y >= 0, sum y = r, and one threshold
    tau with y_i = x_i - tau on the support and x_i <= tau off it (checked in float64, to ``tol``)."""
    assert (y >= 0).all() and abs(y.sum() - r) <= tol * r
    support = y > 0
    tau = np.median(x[support] - y[support])  # the shift; every support entry must agree with it
    assert np.abs((x[support] - y[support]) - tau).max() <= tol * max(1.0, abs(tau))
    assert (x[~support] <= tau + tol * max(1.0, abs(tau))).all()


@pytest.mark.parametrize("set_name", ["l1ball", "simplex"])
@pytest.mark.parametrize("kind", ["random", "ties", "zeros", "boundary", "outlier", "per-sample"])
def test_exact_reference_agrees_with_cvxpy(set_name: str, kind: str) -> None:
    for n in (1, 6, 64):
        for instance in instances(set_name, n, trials=1, seed=5, only=[kind]):
            exact = instance.constraint.exact_projection(instance.x)
            solved = instance.constraint.reference_projection(instance.x, method="cvxpy")
            assert exact.dtype == torch.float64 and exact.shape == instance.x.shape
            torch.testing.assert_close(exact, solved, rtol=0, atol=1e-9 * float(instance_scale(instance).max()))
            torch.testing.assert_close(instance.constraint.reference_projection(instance.x), exact, rtol=0, atol=0)


def test_exact_reference_on_offsets_and_closed_forms() -> None:
    # the row: the answer does not depend on the offset
    np.testing.assert_array_equal(exact_simplex(np.array([1e8, 0.3, 1e8, -0.2]), 1.0), [0.5, 0.0, 0.5, 0.0])
    np.testing.assert_array_equal(exact_l1_ball(np.array([-1e8, 0.3, 1e8, -0.2]), 1.0), [-0.5, 0.0, 0.5, -0.0])
    # 1e5 equal entries: r / n each, so the row sums to r to rounding
    y = exact_simplex(np.full(100_000, 0.3), 2.0)
    assert (y == 2e-5).all()
    # randn + c for c up to 1e8 of either sign: optimal to rounding, the same answer as at c = 0 for the
    # simplex (the input is rounded once, so compare with the shifted rounded input)
    rng = np.random.default_rng(0)
    for c in (1e2, -1e6, 1e8, -1e8):
        x = rng.standard_normal(1000) + c
        y = exact_simplex(x, 1e-2)
        _kkt_simplex(x - c, 1e-2, y, 1e-12)  # x - c is exact here (Sterbenz), so this is the same problem
        ball = exact_l1_ball(x, 1e-2)
        np.testing.assert_array_equal(ball, np.sign(x) * exact_simplex(np.abs(x), 1e-2))
        assert abs(np.abs(ball).sum() - 1e-2) <= 1e-17
    # inside the ball, the point itself; the exact test does not round the norm up or down
    x = np.array([0.1, 0.2, -0.7])
    np.testing.assert_array_equal(exact_l1_ball(x, 1.0), x)
    with pytest.raises(ValueError, match="positive finite radius"):
        exact_simplex(np.ones(3), 0.0)


def test_validate_passes_where_cvxpy_gives_up() -> None:
    """Seed 0, trial 2, simplex n = 1000, radius 1.4e-6: cvxpy reports optimal_inaccurate, the row was FAIL."""
    instance = instances("simplex", 1000, trials=2, seed=0, only=["extreme-radius"])[1]
    assert float(instance.constraint.radius) == pytest.approx(1.4385e-6, rel=1e-3)
    outcomes = check_instance(instance)
    assert all(o.passed and o.reference == "exact" for o in outcomes), outcomes


def test_offset_rows_are_measured_against_the_radius() -> None:
    for name in OFFSET_SETS:
        for instance in instances(name, 5, seed=3):
            r = instance.constraint.radius
            assert 1e-2 <= r <= 1e2 and instance.x.shape[0] == 2
            torch.testing.assert_close(instance_scale(instance), torch.full((2,), float(r), dtype=torch.float64))
    big = instances("simplex-offset", 5, seed=3, only=["c=1e8"])[0].x
    assert big[0].min() > 9e7 and big[1].max() < -9e7  # both signs
    assert instances("simplex-offset", 1) == []  # n from 2
    assert {i.kind for i in instances("l1ball-offset", 10**5, seed=1)} == set(kinds("l1ball-offset"))


@pytest.mark.parametrize("set_name", OFFSET_SETS)
def test_offset_rows_pass(set_name: str) -> None:
    """Issue 11.1: rows randn + c, |c| up to 1e8, within 1e-5 r of the exact projection (needs the kernel fix)."""
    for n in (2, 5, 64, 1000):
        for instance in instances(set_name, n, seed=7):
            for outcome in check_instance(instance):
                assert outcome.passed and outcome.error <= 1e-5, outcome


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


def test_validate_reports_an_unavailable_reference_apart(monkeypatch, capsys) -> None:
    def give_up(constraint_set, x):
        raise ReferenceSolverError("cvxpy could not project (last status: optimal_inaccurate)")

    monkeypatch.setattr(reference, "solve_projection", give_up)
    monkeypatch.setattr(reference, "certified_row", lambda *args, **kwargs: None)  # no KKT certificate either
    status = cli.main(["validate", "--sets", "tie,simplex", "--max-n", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0, out  # no kernel failed
    assert "pass, 6 ref. unavailable" in out  # every tie instance, in each dtype
    assert "reference unavailable tie n=2 float32: random: reference unavailable: cvxpy could not project" in out
    assert "12 instance check(s) not made: reference unavailable (not kernel failures)" in out
    assert "simplex              2 float64         11    22 exact" in out  # exact: unaffected


def test_validate_checks_json_before_any_work(monkeypatch, tmp_path, capsys) -> None:
    def ran(*args, **kwargs):
        raise AssertionError("validate ran before --json was checked")

    monkeypatch.setattr(validate, "validate", ran)
    (tmp_path / "file").write_text("")
    for bad, why in ((tmp_path / "file" / "v.json", "cannot write it"), (tmp_path, "it is a folder")):
        assert cli.main(["validate", "--json", str(bad)]) == 2
        err = capsys.readouterr().err
        assert f"constrain validate: error: --json {bad}: {why}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probe left nothing


def test_validate_shows_progress_on_a_terminal_only(monkeypatch, capsys) -> None:
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for argv, shown in (
        (["--sets", "nonnegative", "--max-n", "2"], True),
        (["--sets", "nonnegative", "--max-n", "2", "--no-progress"], False),
    ):
        terminal = Terminal()
        monkeypatch.setattr("sys.stderr", terminal)
        assert cli.main(["validate", *argv]) == 0
        value = terminal.getvalue()  # a bar that counts instances and names the set and size at work
        assert ("validate:" in value and "/16 [" in value and "instance/s, nonnegative n=" in value) is shown, value
    capsys.readouterr()
    # not a terminal (pytest's capture): nothing on stderr
    assert cli.main(["validate", "--sets", "nonnegative", "--max-n", "2"]) == 0
    assert capsys.readouterr().err == ""
