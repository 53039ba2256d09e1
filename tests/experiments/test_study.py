"""The convergence study: quick mode end to end, resume, interruption, and the cvxpy ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import experiments.cli as cli
import experiments.problems as study_problems
import experiments.study as study
from constrain import L1Ball, on_output
from experiments.problems import CONVEX_PROBLEMS, get_problem, linear_reference, reference_violation
from experiments.study_cmd import SUITES


@pytest.fixture
def main(monkeypatch: pytest.MonkeyPatch):
    """``experiments.cli.main`` with only the ``study`` subcommand loaded (so that this test does not
    depend on the other subcommands' modules)."""
    assert "experiments.study_cmd" in cli.COMMAND_MODULES
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("experiments.study_cmd",))
    return cli.main


def _args(tmp_path: Path, *extra: str, workers: int = 1) -> list[str]:
    return [
        "study",
        "--out",
        str(tmp_path / "results"),
        "--figures",
        str(tmp_path / "figures"),
        "--no-progress",
        "--workers",
        str(workers),
        *extra,
    ]


def _run_files(tmp_path: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime_ns for p in sorted((tmp_path / "results").rglob("*.json"))}


def _table_rows(markdown: str) -> list[str]:
    """The rows of the per-strategy tables (the per-family summaries have 6 columns, not 11)."""
    return [
        line
        for line in markdown.splitlines()
        if line.startswith("| ") and not line.startswith("| strategy") and not line.startswith("|---") and line.count("|") == 12
    ]


def test_each_problem_summarizes_the_best_entry_of_each_family(tmp_path: Path, main) -> None:
    assert (
        main(
            _args(
                tmp_path,
                "--quick",
                "--steps",
                "30",
                "--problems",
                "lin-weight-affine",
                "--strategies",
                "projected,lagrangian,quadratic-penalty",
            )
        )
        == 0
    )
    table = (tmp_path / "figures" / "study.md").read_text()
    assert "Best entry of each family" in table
    best = [
        line for line in table.splitlines() if line.startswith("| ") and line.count("|") == 7 and not line.startswith("| family")
    ]
    assert sorted(line.split("|")[1].strip() for line in best) == ["lagrangian", "penalty", "projected"]


# ---------------------------------------------------------------------- end to end
#: Steps per run in the end-to-end test: --quick's 150 would keep it a minute on a busy 2-core box.
QUICK_TEST_STEPS = 40


def test_quick_suite_end_to_end(tmp_path: Path, main, capsys: pytest.CaptureFixture) -> None:
    """``constrain study --quick``: every default problem, every applicable family, figures and table."""
    assert main(_args(tmp_path, "--quick", "--steps", str(QUICK_TEST_STEPS))) == 0
    printed = capsys.readouterr().out
    figures = tmp_path / "figures"
    table = (figures / "study.md").read_text()
    assert table.split("\n![")[0].strip() in printed  # the table is printed as written
    problems = SUITES["default"].problems
    for problem in problems:
        assert (figures / f"study-{problem}.png").stat().st_size > 5_000
        assert f"## {problem}:" in table
    for name in ("pareto", "time"):
        assert (figures / f"study-{name}.png").stat().st_size > 5_000
    rows = _table_rows(table)
    labels = {row.split("|")[1].strip().strip("*").split(" ")[0] for row in rows}
    # every family appears; the unconstrained baseline is in every problem
    assert {"unconstrained", "quadratic-penalty", "projected"} <= labels
    assert sum(row.split("|")[1].strip() == "unconstrained" for row in rows) == len(problems)
    assert "Not applicable here" in table  # unsupported cells are reported, not run
    files = _run_files(tmp_path)
    records = [json.loads(p.read_text()) for p in files]
    assert len(records) == len(rows)  # one seed with --quick: one file per table row
    for record in records:
        assert record["status"] in ("done", "failed")
        log = record["log"]
        assert log["step"][0] == 0 and set(study.LOG_FIELDS) <= set(log)
        if record["status"] == "done":
            assert log["step"][-1] == record["steps"] == QUICK_TEST_STEPS
    # the projected strategy is feasible on every problem it runs on, at every logged step
    for record in records:
        if record["strategy"] == "projected" and record["status"] == "done":
            assert max(record["log"]["train_max"]) <= 1e-6, record["problem"]


# Two spawned workers write the same records as this process: test_study_reliability.py, whose reference study
# (every strategy on lin-output-l1 and lin-weight-nonneg) runs in two workers and is compared record by record.


# ---------------------------------------------------------------------- resume
SMALL = (
    "--problems",
    "lin-weight-nonneg",
    "--strategies",
    "projected,quadratic-penalty",
    "--seeds",
    "2",
    "--steps",
    "12",
    "--no-figures",
)


class Counter:
    """Wraps ``study.train_run``, counting calls and raising ``KeyboardInterrupt`` on call ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.fail_at = fail_at
        self.real = study.train_run

    def __call__(self, problem, entry, seed, steps, *args):
        self.calls.append((problem.name, entry.label, seed))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt
        return self.real(problem, entry, seed, steps, *args)


def test_resume_recomputes_only_missing_runs(tmp_path: Path, main, monkeypatch: pytest.MonkeyPatch) -> None:
    first = Counter()
    monkeypatch.setattr(study, "train_run", first)
    assert main(_args(tmp_path, *SMALL)) == 0
    files = _run_files(tmp_path)
    assert len(first.calls) == len(files) == 6  # 3 entries (with the baseline) x 2 seeds
    deleted = next(p for p in files if p.name.startswith("projected--seed1"))
    deleted.unlink()

    second = Counter()
    monkeypatch.setattr(study, "train_run", second)
    assert main(_args(tmp_path, *SMALL)) == 0
    assert second.calls == [("lin-weight-nonneg", "projected", 1)]
    after = _run_files(tmp_path)
    assert set(after) == set(files)
    assert all(after[p] == files[p] for p in files if p != deleted)  # the others are untouched

    third = Counter()
    monkeypatch.setattr(study, "train_run", third)
    assert main(_args(tmp_path, *SMALL, "--fresh")) == 0
    assert len(third.calls) == 6


def test_interrupted_study_keeps_finished_runs(tmp_path: Path, main, monkeypatch: pytest.MonkeyPatch) -> None:
    crash = Counter(fail_at=4)
    monkeypatch.setattr(study, "train_run", crash)
    assert main(_args(tmp_path, *SMALL)) == 130  # interrupted
    kept = _run_files(tmp_path)
    assert len(kept) == 3  # the three runs before the crash are on disk, whole
    for path in kept:
        assert json.loads(path.read_text())["status"] == "done"
    assert not list((tmp_path / "results").rglob("*.tmp"))  # no partial files

    rest = Counter()
    monkeypatch.setattr(study, "train_run", rest)
    assert main(_args(tmp_path, *SMALL)) == 0
    assert len(rest.calls) == 3 and set(rest.calls).isdisjoint(crash.calls[:3])
    after = _run_files(tmp_path)
    assert len(after) == 6 and all(after[p] == kept[p] for p in kept)


def test_failed_run_is_recorded_and_retried_on_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A strategy that raises is a result (status failed), kept on resume, redone with retry_failed."""
    plan = study.plan_study(["lin-weight-nonneg"], [0], steps=5, strategy_filter=["projected"])

    def broken(problem, entry, seed, steps, *args):
        record = real(problem, entry, seed, steps, *args)
        if entry.strategy == "projected":
            record.update(status="failed", error="RuntimeError: boom", failed_at=0)
        return record

    real = study.train_run
    monkeypatch.setattr(study, "train_run", broken)
    records = study.execute(plan, tmp_path, progress=False)
    rows = study.summarize(plan, records)
    table = study.markdown_table(plan, rows)
    assert "failed: seed 0 at step 0: RuntimeError: boom" in table
    monkeypatch.setattr(study, "train_run", real)
    again = study.execute(plan, tmp_path, progress=False)
    assert sum(r["status"] == "failed" for r in again.values()) == 1
    retried = study.execute(plan, tmp_path, progress=False, retry_failed=True)
    assert all(r["status"] == "done" for r in retried.values())


# ---------------------------------------------------------------------- planning and the CLI
def test_unsupported_cells_are_skipped_with_a_reason() -> None:
    plan = study.plan_study(["lin-weight-affine", "lin-output-nonneg"], [0], steps=3)
    skipped = {(s.problem, s.entry.label): s.reason for s in plan.skipped}
    assert "barrier" in skipped[("lin-weight-affine", "log-barrier")]
    assert ("lin-output-nonneg", "l1-proximal") in skipped
    ran = {(s.problem, s.entry.label) for s in plan.specs}
    assert ("lin-weight-affine", "projected (update)") in ran
    assert ("lin-output-nonneg", "projected (update)") not in ran | set(skipped)  # restricted by kind
    assert all((p, "unconstrained") in ran for p in plan.problems)


def test_every_registered_strategy_is_in_the_default_suite() -> None:
    import strategies

    named = {e.strategy for e in study.all_entries()} | set(study.COVERED_ELSEWHERE)
    assert set(strategies.available()) <= named
    families = {strategies.strategy_class(n).family for n in strategies.available()}
    plan = study.plan_study(list(SUITES["default"].problems), [0], steps=3)
    assert families <= {s.entry.family for s in plan.specs}


def test_optional_entries_run_only_when_named() -> None:
    plain = study.plan_study(["lin-weight-nonneg"], [0], steps=3)
    assert "reciprocal-barrier" in plain.left_out
    assert "reciprocal-barrier" not in {s.entry.label for s in plain.specs}
    named = study.plan_study(["lin-weight-nonneg"], [0], steps=3, strategy_filter=["reciprocal-barrier"])
    assert {s.entry.label for s in named.specs} == {"unconstrained", "reciprocal-barrier"}
    assert "Not in this run" in study.markdown_table(plain, [])


def test_run_keys_change_with_what_the_run_depends_on() -> None:
    entry = study.ENTRIES[1]
    base = study.RunSpec("lin-weight-l1", entry, 0, 100)
    assert base.key == study.RunSpec("lin-weight-l1", entry, 0, 100).key
    assert base.key != study.RunSpec("lin-weight-l1", entry, 1, 100).key
    assert base.key != study.RunSpec("lin-weight-l1", entry, 0, 101).key
    other = study.replace_fields(entry, options={**entry.options, "weight": 1.0})
    assert base.key != study.RunSpec("lin-weight-l1", other, 0, 100).key


def test_suite_names_and_options_in_either_order() -> None:
    import argparse

    from experiments import study_cmd

    root = argparse.ArgumentParser()
    study_cmd.add_parser(root.add_subparsers(dest="command"))
    before = root.parse_args(["study", "--quick", "--seeds", "0,4", "convex"])
    after = root.parse_args(["study", "convex", "--quick", "--seeds", "0,4"])
    for args in (before, after):
        assert args.suite == "convex" and args.quick and args.seeds == [0, 4]
    plain = root.parse_args(["study"])
    assert plain.suite is None and not plain.quick and plain.resume and plain.seeds is None
    assert not root.parse_args(["study", "--fresh"]).resume


def test_steps_to_feasible_and_log_steps() -> None:
    record = {"status": "done", "log": {"step": [0, 1, 2, 3, 4], "train_max": [1.0, 1e-5, 1.0, 1e-5, 0.0]}}
    assert study.steps_to_feasible(record) == 3
    record["log"]["train_max"][-1] = 1.0
    assert study.steps_to_feasible(record) is None
    steps = study.log_steps(1000)
    assert steps[0] == 0 and steps[-1] == 1000 and steps == sorted(set(steps)) and len(steps) < 120


def test_write_json_atomic_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "a" / "run.json"
    study.write_json_atomic(path, {"format": study.FORMAT, "x": 1})
    study.write_json_atomic(path, {"format": study.FORMAT, "x": 2})
    assert study.read_run(path) == {"format": study.FORMAT, "x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]
    path.write_text('{"format": 1, "x":')  # a torn file (not written by us) reads as missing
    assert study.read_run(path) is None


def test_write_json_atomic_removes_the_temporaries_a_killed_write_left(tmp_path: Path) -> None:
    """Every writer (study runs, DC3 runs, F* files) cleans up after a writer of the same path killed mid-write;
    a temporary of another path stays."""
    path = tmp_path / "run[1].json"  # glob characters in the name are matched literally
    stale, other = tmp_path / ".run[1].json.k1ll3d.tmp", tmp_path / ".run2.json.k1ll3d.tmp"
    stale.write_text('{"x": ')
    other.write_text('{"x": ')
    study.write_json_atomic(path, {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, path.name]


# ---------------------------------------------------------------------- ground truth
@pytest.mark.parametrize("name", CONVEX_PROBLEMS)
def test_cvxpy_optimum_is_a_lower_bound_on_feasible_points(name: str) -> None:
    """F* <= F(any feasible linear model); F* >= the unconstrained least-squares optimum; cvxpy's
    solution is feasible and attains F*."""
    problem = get_problem(name)
    f_star = problem.f_star
    assert f_star is not None and reference_violation(problem) <= 1e-8
    X, Y = problem.X_train, problem.Y_train
    X1 = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    unconstrained = float(((X1 @ torch.linalg.lstsq(X1, Y).solution - Y) ** 2).mean())
    assert unconstrained <= f_star + 1e-12
    generator = torch.Generator().manual_seed(1)
    for trial in range(5):
        model = problem.make_model(trial)
        with torch.no_grad():
            model.weight.copy_(torch.randn(model.weight.shape, generator=generator, dtype=torch.float64))
            model.bias.copy_(torch.randn(model.bias.shape, generator=generator, dtype=torch.float64))
            for target in problem.targets:
                if hasattr(target, "names"):  # a weight constraint: project the weights onto the set
                    rows = target.set.project(target.gather(model))
                    model.weight.copy_(target.split(rows, model)[0])
                else:  # an output constraint: a constant model whose constant is in the set
                    model.weight.zero_()
                    model.bias.copy_(target.set.project(model.bias.unsqueeze(0))[0])
            outputs = model(X)
            assert float(problem.violations(model, outputs).max()) <= 1e-9
            assert f_star <= float(problem.objective(outputs)) + 1e-12


def test_the_output_l1_reference_is_the_row_by_row_problem() -> None:
    """The L1-ball output constraint, given to cvxpy as one expression over all rows, has the optimum of the
    problem written row by row (one ``norm1(W x_i + b) <= r`` per sample), solved here independently."""
    import cvxpy as cp
    import numpy as np

    generator = torch.Generator().manual_seed(3)
    X = torch.randn(30, 4, generator=generator, dtype=torch.float64)
    Y = 2.0 * torch.randn(30, 2, generator=generator, dtype=torch.float64)
    radius = 1.2
    ours = linear_reference(X, Y, [on_output(L1Ball(radius))])
    W, b = cp.Variable((2, 4)), cp.Variable(2)
    rows = [W @ x + b for x in X.numpy()]
    by_row = cp.Problem(
        cp.Minimize(sum(cp.sum_squares(r - y) for r, y in zip(rows, Y.numpy(), strict=True)) / Y.numel()),
        [cp.norm1(r) <= radius for r in rows],
    )
    by_row.solve(solver=cp.CLARABEL, **study_problems.CLARABEL_OPTIONS)
    assert by_row.status == cp.OPTIMAL
    assert abs(ours.f_star - by_row.value) <= 1e-9 * by_row.value
    outputs = X.numpy() @ ours.weight.T + ours.bias
    assert np.abs(outputs).sum(1).max() <= radius + 1e-9  # binding: the unconstrained fit is far outside
    assert np.abs(Y.numpy()).sum(1).max() > 2 * radius
