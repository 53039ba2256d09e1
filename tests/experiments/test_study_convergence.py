"""The study's convergence stop: it fires on settled runs only, records why, and does not change their results."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import experiments.study as study
from experiments._convergence import EARLIEST, WINDOW, convergence_reason
from experiments.problems import get_problem

BUDGET = 1500
F_STAR = 0.5


def _log(objective, violation, steps=None) -> dict:
    steps = list(steps if steps is not None else study.log_steps(BUDGET))
    return {
        "step": steps,
        "objective": [objective(s) for s in steps],
        "train_max": [violation(s) for s in steps],
        "test_max": [None for _ in steps],
    }


def _first_stop(log: dict, f_star: float | None = F_STAR) -> tuple[int, str] | None:
    """Replays the log point by point, as the study does after each evaluation."""
    for i in range(1, len(log["step"]) + 1):
        head = {k: v[:i] for k, v in log.items()}
        reason = convergence_reason(head, BUDGET, f_star)
        if reason is not None:
            return head["step"][-1], reason
    return None


def test_a_settled_run_stops_once_its_window_is_flat_and_says_why() -> None:
    # the gap halves every 50 steps until step 400, then stays at 1e-6 (violation 0 throughout)
    log = _log(lambda s: F_STAR * (1 + max(1e-6, 0.5 ** (s / 50))), lambda s: 0.0)
    stop = _first_stop(log)
    assert stop is not None
    step, reason = stop
    settled = 50 * math.log2(1e6)  # where 0.5**(s/50) reaches 1e-6
    assert max(EARLIEST * BUDGET, settled + WINDOW * BUDGET) <= step <= settled + WINDOW * BUDGET + 50
    assert reason.startswith(f"converged at step {step}: over steps ") and "max violation 0.0e+00" in reason


def test_a_cycling_or_improving_run_never_stops() -> None:
    cycling = _log(lambda s: F_STAR * (1.4 + 0.1 * math.sin(s / 40)), lambda s: 0.47 + 0.01 * math.cos(s / 40))
    assert _first_stop(cycling) is None
    # the gap still shrinks by 0.5 % per 100 steps: far more than the 0.1 % allowed over the window
    improving = _log(lambda s: F_STAR * (1 + 1e-3 * 0.99995**s), lambda s: 0.0)
    assert _first_stop(improving) is None
    # the objective has settled but the violation still falls
    falling = _log(lambda s: F_STAR * (1 + 1e-3), lambda s: 1e-3 * 0.999**s)
    assert _first_stop(falling) is None


def test_no_stop_before_the_earliest_step_nor_on_non_finite_values() -> None:
    flat = _log(lambda s: F_STAR * 1.01, lambda s: 0.0)
    step, _ = _first_stop(flat)
    assert step >= EARLIEST * BUDGET and step >= WINDOW * BUDGET
    broken = _log(lambda s: F_STAR * 1.01 if s < 1200 else float("nan"), lambda s: 0.0)
    stop = _first_stop({k: v[: broken["step"].index(1200) + 1] for k, v in broken.items()})
    assert stop is not None  # it had settled before the NaN...
    nan_window = {k: v for k, v in broken.items()}
    assert convergence_reason(nan_window, BUDGET, F_STAR) is None  # ...and a window with a NaN never stops
    # without F*, the objective may move only by 1e-6 of itself
    assert _first_stop(_log(lambda s: 1 + 1e-5 * math.sin(s), lambda s: 0.0), f_star=None) is None
    assert _first_stop(_log(lambda s: 1.0, lambda s: 0.0), f_star=None) is not None


def _run(label: str, early_stop: bool, steps: int = BUDGET) -> dict:
    problem = get_problem("lin-weight-affine")
    entry = next(e for e in study.suite_for(problem.kind) if e.label == label)
    return study.train_run(problem, entry, 0, steps, problem.f_star, early_stop)


def test_a_stopped_run_ends_where_the_full_run_ends() -> None:
    """The exact reparameterization settles: stopped early, its final objective is the full run's to the
    rule's precision (1e-3 of the distance to F*, or 1e-14 of F*); a cycling Lagrangian runs its whole budget."""
    f_star = get_problem("lin-weight-affine").f_star
    stopped, full = _run("reparam-null-space", True), _run("reparam-null-space", False)
    assert stopped["status"] == full["status"] == "done"
    assert stopped["stopped"].startswith("converged at step ") and full["stopped"] is None
    assert stopped["steps_run"] == stopped["log"]["step"][-1] < BUDGET == full["steps_run"]
    f_stop, f_full = stopped["log"]["objective"][-1], full["log"]["objective"][-1]
    assert abs(f_stop - f_full) <= 1e-3 * abs(f_full - f_star) + 1e-14 * abs(f_star)
    assert stopped["log"]["train_max"][-1] <= 1e-12
    cycling = _run("lagrangian", True, 600)
    assert cycling["stopped"] is None and cycling["steps_run"] == 600
    assert cycling["log"]["train_max"][-1] > 1e-2  # still the evidence of what not to do


def test_the_table_says_which_runs_stopped_where_and_why(tmp_path: Path) -> None:
    plan = study.plan_study(["lin-weight-affine"], [0], BUDGET, strategy_filter=["reparam-null-space", "projected (euclidean)"])
    records = study.execute(plan, tmp_path, progress=False)
    rows = study.summarize(plan, records)
    table = study.markdown_table(plan, rows)
    by_label = {r.entry.label: r for r in rows}
    null_space = by_label["reparam-null-space"]
    (seed, step), *_ = null_space.stops
    assert seed == 0 and step < BUDGET and null_space.steps_run == step
    assert f"| {step:g} (1 stopped) |" in table and "reparam-null-space (seed 0 at step" in table
    assert "Stopped once converged" in table
    # the naive Euclidean projection after Adam's step stalls at the wrong point: it may stop, but far from F*
    naive = by_label["projected (euclidean)"]
    assert naive.gap is not None and naive.gap > 1e-2
    full = study.plan_study(["lin-weight-affine"], [0], BUDGET, strategy_filter=["reparam-null-space"], early_stop=False)
    assert {s.key for s in full.specs}.isdisjoint(s.key for s in plan.specs)  # another rule, other run files


def test_bands_keep_every_seed_up_to_its_own_last_step() -> None:
    from experiments import figures  # here, not at collection: it imports matplotlib in every test worker

    short = {"log": {"step": [0, 10, 20], "gap": [1.0, 0.1, 0.01]}}
    long = {"log": {"step": [0, 10, 20, 30, 40], "gap": [2.0, 0.2, 0.02, 0.004, 0.002]}}
    band = figures._band([short, long], "gap")
    assert band is not None
    steps, mid, lo, hi = band
    assert steps.tolist() == [0, 10, 20, 30, 40]
    np.testing.assert_allclose(mid, [1.5, 0.15, 0.015, 0.004, 0.002])
    np.testing.assert_allclose(lo, [1.0, 0.1, 0.01, 0.004, 0.002])
    np.testing.assert_allclose(hi, [2.0, 0.2, 0.02, 0.004, 0.002])


@pytest.mark.parametrize("argv", [["--full-budget"], ["convex", "--full-budget"]])
def test_full_budget_option_parses(argv: list[str]) -> None:
    import argparse

    from experiments import study_cmd

    parser = argparse.ArgumentParser()
    study_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["study", *argv])
    assert args.full_budget is True
    assert parser.parse_args(["study"]).full_budget is False
