"""The numbers a study prints are the runs' final values, recomputed independently.

A tiny ``constrain study`` (two problems, a penalty and the projection, two seeds, 30 steps) runs
in ``tmp_path`` while every evaluation's model is captured: its predictions on the training and
held-out inputs and its effective weight. From those the test recomputes, in numpy and with the
formulas written out here, the objective (mean squared error), the relative gap to cvxpy's
``F*`` and the violations, and compares them with

- each run's own log (the saved JSON): its last entry is the final step's values;
- the summary rows (medians over seeds of the final values);
- the table the command prints: every number is compared at the precision it is printed with,
  so the check holds whatever the column layout, and fails if a number is not the final one.
"""

from __future__ import annotations

import json
import re
import statistics

import numpy as np
import pytest
import torch

import experiments.cli as cli
import experiments.study as study
from experiments.problems import Problem, get_problem

PROBLEMS = ("lin-output-nonneg", "lin-weight-nonneg")  # cheap cvxpy optima (lin-output-l1's takes ~10 s)
STRATEGIES = ("quadratic-penalty", "projected")
SEEDS = (0, 1)
STEPS = 30


def _negative_part(rows: np.ndarray) -> np.ndarray:
    """Per row, the largest negative part: the violation of ``x >= 0``."""
    return np.maximum(-rows, 0.0).max(1)


def _recompute(problem_name: str, capture: dict) -> dict:
    """Objective, gap and violations from one captured evaluation, independently of the package."""
    problem = get_problem(problem_name)
    y_train = problem.Y_train.numpy()
    objective = float(np.mean((capture["train"] - y_train) ** 2))
    f_star = problem.f_star
    values = {"objective": objective, "gap": (objective - f_star) / abs(f_star)}
    if problem_name == "lin-output-nonneg":  # outputs >= 0, per sample
        train, test = _negative_part(capture["train"]), _negative_part(capture["test"])
        values.update(train_max=train.max(), train_mean=train.mean(), test_max=test.max())
    else:  # W >= 0, per weight row
        rows = _negative_part(capture["weight"])
        values.update(train_max=rows.max(), train_mean=rows.mean(), test_max=None)
    return values


def _argv(out) -> list[str]:
    """The tiny study's command line, writing its runs under ``out``."""
    return [
        "study",
        *("--problems", ",".join(PROBLEMS), "--strategies", ",".join(STRATEGIES)),
        *("--seeds", ",".join(map(str, SEEDS)), "--steps", str(STEPS), "--out", str(out)),
        *("--no-figures", "--no-progress", "--workers", "1", "--fresh"),
    ]


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """Run the tiny study through the CLI, capturing every evaluation of every run."""
    tmp_path = tmp_path_factory.mktemp("study")
    captures: dict[tuple[str, str, int], list[dict]] = {}
    current: list[tuple[str, str, int]] = []
    original_train_run, original_evaluate = study.train_run, Problem.evaluate

    def train_run(problem, entry, seed, steps, *args):
        current.append((problem.name, entry.label, seed))
        captures[current[-1]] = []
        try:
            return original_train_run(problem, entry, seed, steps, *args)
        finally:
            current.pop()

    def evaluate(self, model, f_star=None):
        with torch.no_grad():
            captures[current[-1]].append(
                {
                    "train": model(self.X_train).double().numpy().copy(),
                    "test": model(self.X_test).double().numpy().copy(),
                    "weight": model.weight.detach().double().numpy().copy(),
                }
            )
        return original_evaluate(self, model, f_star)

    mp = pytest.MonkeyPatch()
    mp.setattr(study, "train_run", train_run)
    mp.setattr(Problem, "evaluate", evaluate)
    mp.setattr(cli, "COMMAND_MODULES", ("experiments.study_cmd",))
    out = tmp_path / "results"
    import io
    from contextlib import redirect_stdout

    printed = io.StringIO()
    try:
        with redirect_stdout(printed):
            status = cli.main(_argv(out))
    finally:
        mp.undo()
    assert status == 0
    records = {}
    for path in out.rglob("*.json"):
        record = json.loads(path.read_text())
        records[(record["problem"], record["label"], record["seed"])] = record
    return captures, records, printed.getvalue()


def test_every_run_was_captured_and_logged(study_run):
    captures, records, _ = study_run
    expected = {(spec.problem, spec.entry.label, spec.seed) for spec in _plan().specs}
    assert {(p, label) for p, label, _ in expected} >= {(p, label) for p in PROBLEMS for label in ("unconstrained", *STRATEGIES)}
    assert set(records) == expected
    assert set(captures) == expected
    for key, record in records.items():
        assert record["status"] == "done", record.get("error")
        assert record["log"]["step"][-1] == STEPS
        assert len(record["log"]["step"]) == len(captures[key])  # one capture per logged step


def test_logs_match_recomputation_at_every_logged_step(study_run):
    captures, records, _ = study_run
    for key, record in records.items():
        log = record["log"]
        for i, capture in enumerate(captures[key]):
            values = _recompute(key[0], capture)
            for name, value in values.items():
                if value is None:
                    assert log[name][i] is None
                else:
                    assert log[name][i] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, name, log["step"][i])


def _plan() -> study.Plan:
    return study.plan_study(list(PROBLEMS), SEEDS, STEPS, strategy_filter=list(STRATEGIES))


def _final_medians(captures, problem: str, label: str) -> dict:
    finals = [_recompute(problem, captures[(problem, label, s)][-1]) for s in SEEDS]
    return {name: None if finals[0][name] is None else statistics.median(f[name] for f in finals) for name in finals[0]}


def test_summary_rows_are_medians_of_final_values(study_run):
    captures, records, _ = study_run
    plan = _plan()
    by_key = {spec.key: records[(spec.problem, spec.entry.label, spec.seed)] for spec in plan.specs}
    rows = study.summarize(plan, by_key)
    assert len(rows) == len({(spec.problem, spec.entry.label) for spec in plan.specs})
    for row in rows:
        expected = _final_medians(captures, row.problem, row.entry.label)
        # also straight from the runs' own logs: the last entry, not any earlier one
        from_logs = statistics.median(records[(row.problem, row.entry.label, s)]["log"]["objective"][-1] for s in SEEDS)
        assert row.objective == pytest.approx(from_logs, rel=1e-12)
        for name in ("objective", "gap", "train_max", "train_mean", "test_max"):
            got, want = getattr(row, name), expected[name]
            if want is None:
                assert got is None
            else:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (row.problem, row.entry.label, name)


_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])")


def _printed_as(value: float, token: str) -> bool:
    """Whether ``token`` is ``value`` rounded to the digits ``token`` shows."""
    mantissa, _, exponent = token.partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    half_unit = 0.5 * 10.0 ** (int(exponent or 0) - decimals)
    return abs(float(token) - value) <= half_unit * (1 + 1e-9) + 1e-300


def _table_row(table: str, problem: str, label: str) -> str:
    section = table.split(f"## {problem}")[1].split("\n## ")[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and re.sub(r"\s*\(`[^`]*`\)$", "", cells[1].strip("*")) == label:
            return line
    raise AssertionError(f"no row for {label} under {problem} in the printed table:\n{section}")


def test_printed_table_shows_the_final_values(study_run):
    captures, _, printed = study_run
    for problem, label in sorted({(spec.problem, spec.entry.label) for spec in _plan().specs}):
        if True:
            row = _table_row(printed, problem, label)
            tokens = _NUMBER.findall(row.split("|", 3)[-1])  # past the name and family cells
            expected = _final_medians(captures, problem, label)
            for name in ("objective", "gap", "train_max", "test_max"):
                value = expected[name]
                if value is None:
                    continue
                if value == 0:
                    assert "0" in tokens, (problem, label, name, row)
                    continue
                matches = [t for t in tokens if float(t) != 0 and _printed_as(value, t)]
                assert matches, f"{problem} / {label}: {name} = {value:.6g} is not printed in\n{row}"
