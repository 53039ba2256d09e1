"""constrain study dc3: DC3's recipe reproduced draw by draw, its split, and a small end-to-end run in
which every hard strategy holds its constraints on the test set and far outside the training range."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from experiments import dc3_study as d
from experiments.cli import main as cli_main


def test_recipe_is_dc3s_draw_by_draw():
    family = d.QPFamily(instances=500)
    a = family.arrays
    rng = np.random.RandomState(17)  # the legacy generator, drawn in DC3's order
    Q = np.diag(rng.random_sample(100))
    p = rng.random_sample(100)
    A = rng.normal(0, 1, (50, 100))
    X = rng.uniform(-1, 1, (500, 50))
    G = rng.normal(0, 1, (50, 100))
    for key, value in (("q", np.diag(Q)), ("p", p), ("A", A), ("X", X), ("G", G)):
        np.testing.assert_array_equal(a[key], value)
    np.testing.assert_allclose(a["h"], np.abs(G @ np.linalg.pinv(A)).sum(1), rtol=1e-12)
    # h makes A^+ x feasible for every |x|_inf <= 1
    assert np.all(X @ np.linalg.pinv(A).T @ G.T <= a["h"] + 1e-9)


#: The variables DC3's code (locuslab/DC3, utils.SimpleProblem) completes on the 100/50/50 family,
#: printed by running its constructor after make_dataset.py's draws; its block of A has condition 727.227.
DC3_OTHER_VARS = (4, 6, 7, 9, 10, 11, 14, 15, 16, 17, 20, 24, 26, 29, 33, 34, 35, 37, 39, 40, 42, 43, 45, 47, 48)
DC3_OTHER_VARS += (49, 52, 53, 54, 57, 59, 61, 63, 64, 65, 68, 72, 76, 77, 80, 82, 83, 85, 89, 90, 91, 94, 95, 96, 97)


def test_completed_subset_is_dc3s_draw():
    family = d.QPFamily()
    assert family.dc3_completed == DC3_OTHER_VARS
    assert np.linalg.cond(family.arrays["A"][:, list(DC3_OTHER_VARS)]) == pytest.approx(727.227, rel=1e-5)
    entries, _ = d.entries(family, ["dc3"])
    by_label = {e.label: e.options for e in entries}
    assert by_label["dc3"]["completed"] == DC3_OTHER_VARS
    assert by_label["dc3 (completion only)"] == {"steps": 0, "completed": DC3_OTHER_VARS}
    assert "completed" not in by_label["dc3 (last m completed)"]


def test_split_is_dc3s():
    parts = d.QPFamily().split()
    assert (parts["train"].stop, parts["valid"].stop - parts["valid"].start, parts["test"].stop - parts["test"].start) == (
        8334,
        833,
        833,
    )
    assert parts["test"].stop == 10000 and parts["valid"].stop == parts["test"].start


def test_objective_and_violations_against_numpy():
    family = d.QPFamily(eq=10, ineq=30, instances=200)
    a = family.arrays
    y = np.random.default_rng(0).normal(size=(4, 100))
    x = a["X"][:4]
    obj = family.objective(torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(obj, [0.5 * r @ np.diag(a["q"]) @ r + a["p"] @ r for r in y], rtol=1e-12)
    eq, ineq = family.violations(torch.from_numpy(y), torch.from_numpy(x))
    np.testing.assert_allclose(eq.numpy(), np.abs(y @ a["A"].T - x).max(1), rtol=1e-12)
    np.testing.assert_allclose(ineq.numpy(), np.maximum(y @ a["G"].T - a["h"], 0).max(1), rtol=1e-12)


def test_cvxpy_optimum_is_cached_and_satisfies_kkt_feasibility(tmp_path):
    family = d.QPFamily(instances=120)
    first = d.test_optimum(family, tmp_path)
    assert (tmp_path / f"{family.name}-optimum.npz").exists()
    again = d.test_optimum(family, tmp_path)
    np.testing.assert_array_equal(first["objective"], again["objective"])
    Y, X = first["Y"], family.tensors("test").numpy()
    a = family.arrays
    assert np.abs(Y @ a["A"].T - X).max() <= 1e-6
    assert (Y @ a["G"].T - a["h"]).max() <= 1e-6
    # no feasible point does better: A^+ x is feasible, so the optimum is at most its objective
    Y0 = X @ np.linalg.pinv(a["A"]).T
    worse = 0.5 * (Y0**2 * a["q"]).sum(1) + Y0 @ a["p"]
    assert np.all(first["objective"] <= worse + 1e-6)


HARD = ("projected", "hardnet-aff", "reparam-gauge")


def test_quick_run_end_to_end_hard_strategies_hold_everywhere(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["study", "dc3", "--quick", "--instances", "240", "--steps", "4", "--workers", "1", "--no-progress"]
    argv += ["--strategies", "dc3,hardnet-aff,projected,quadratic-penalty,reparam-gauge", "--out", str(out)]
    assert cli_main(argv) == 0
    family = d.QPFamily(instances=240)
    md = out / "figures" / f"dc3-{family.name}.md"  # a run other than the documented one: its figures under --out
    assert md.exists() and (out / "figures" / f"dc3-{family.name}-gap.png").exists()
    text = md.read_text()
    labels = {"dc3", "dc3 (last m completed)", "dc3 (completion only)", "hardnet-aff", "projected", "quadratic-penalty"}
    labels.add("reparam-gauge")  # "dc3" selects the three dc3 entries
    for label in labels:
        assert f"| {label} |" in text
    assert "| cvxpy (OSQP, polished), optimum |" in text and "*published:" not in text  # not the published family
    assert "far inputs refused" not in text and "CPU-seconds in all" in text  # reparam-gauge's auto interior holds there
    records = [json.loads(p.read_text()) for p in (out / family.name).glob("*.json")]
    assert {r["label"] for r in records} == labels
    for r in records:
        assert r["status"] == "done", r.get("error")
        assert len(r["log"]) >= 2 and r["log"][-1]["step"] == 4
        assert r["cpu_time"] > 0
        if r["label"] in HARD:
            assert r["final"]["eq_max"] <= 1e-6 and r["final"]["ineq_max"] <= 1e-6
            assert r["far_max"] is not None and r["far_max"] <= 1e-6
        if r["label"] == "dc3":
            assert r["final"]["eq_max"] <= 1e-6  # completion holds the equalities on every instance
            assert r["far_max"] is not None
    # a second run resumes: nothing is retrained (same files, same contents)
    before = {p.name: p.read_text() for p in (out / family.name).glob("*.json")}
    assert cli_main(argv) == 0
    assert {p.name: p.read_text() for p in (out / family.name).glob("*.json")} == before


def test_quick_never_writes_into_figures_and_bad_options(tmp_path, capsys):
    assert cli_main(["study", "dc3", "--quick", "--figures", "figures", "--out", str(tmp_path)]) == 2
    assert "--quick never writes into figures/" in capsys.readouterr().err
    assert cli_main(["study", "dc3", "--eq", "100", "--out", str(tmp_path)]) == 2
    assert "--eq must be below" in capsys.readouterr().err
    assert cli_main(["study", "dc3", "--quick", "--strategies", "no-such", "--instances", "120", "--out", str(tmp_path)]) == 2
    assert "no strategy entry matches no-such" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert cli_main(["study", "dc3", "--quick", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_published_rows_are_marked_and_only_for_the_published_family():
    family = d.QPFamily()
    optimum = {"objective": np.full(833, -15.0), "seconds": 1.0}
    text = d.markdown_table(family, d.BUDGETS["quick"], [], optimum, [0], [], "cmd", 1.0)
    assert text.count("*published:") == len(d.PUBLISHED)
    assert "| *published: DC3* | -13.455 | 10.58 |" in text
    other = d.markdown_table(d.QPFamily(eq=30), d.BUDGETS["quick"], [], optimum, [0], [], "cmd", 1.0)
    assert "*published:" not in other


def test_every_applicable_strategy_runs_gauge_with_the_auto_interior():
    run, skipped = d.entries(d.QPFamily(instances=200))
    gauge = [e for e in run if e.strategy == "reparam-gauge"]
    assert len(gauge) == 1 and gauge[0].options == {"interior": "auto"}  # by name: JSON and worker processes
    assert "reparam-gauge" not in {label for label, _ in skipped}
    assert {label for label, _ in skipped} >= {"log-barrier", "l1-proximal"}  # an equality has no interior; weights only


def test_a_far_input_refusal_is_reported_in_the_row_not_as_a_failure():
    keys = ("objective", "eq_max", "eq_mean", "ineq_max", "ineq_mean", "train_time", "inference")
    row = {"label": "reparam-gauge", "options": {"interior": "pinv"}, "note": "", "failed": [], "gap": 0.0195}
    row |= dict.fromkeys(keys, 1.0) | {"far_max": None, "runs": [{"far_error": "the interior point of sample 3 is ..."}]}
    line = d._row_line(row)
    assert line.startswith("| reparam-gauge | 1.000 | 1.95 |") and "| - |" in line  # no far max
    assert line.endswith("interior=pinv; far inputs refused: the interior point of sample 3 is ... |")
