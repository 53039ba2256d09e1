"""tests/mutation_sample.py, the mutation runner: its Wilson interval, its seeded sample, and which
tests it gives a mutant (mutmut's stats, plus the DDP tests for functions that call ``_distributed``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mutation_sample
import pytest
from scipy.optimize import brentq

Z = 1.96


def _score_test_bounds(killed: int, n: int) -> tuple[float, float]:
    """The Wilson interval by definition: the p0 where the score statistic (p - p0) / sqrt(p0 (1 - p0) / n)
    equals -+z, found by root finding on each side of p = killed / n."""
    p = killed / n

    def excess(p0: float) -> float:
        return (p - p0) ** 2 - Z * Z * p0 * (1 - p0) / n

    low = 0.0 if killed == 0 else brentq(excess, 0.0, p - 1e-12, xtol=1e-14)  # excess < 0 next to p
    high = 1.0 if killed == n else brentq(excess, p + 1e-12, 1.0, xtol=1e-14)
    return low, high


@pytest.mark.parametrize(("killed", "n"), [(0, 10), (1, 10), (26, 36), (34, 37), (40, 40), (150, 200)])
def test_wilson_is_the_inverted_score_test(killed: int, n: int) -> None:
    low, high = mutation_sample.wilson(killed, n, Z)
    want_low, want_high = _score_test_bounds(killed, n)
    assert math.isclose(low, want_low, abs_tol=1e-10) and math.isclose(high, want_high, abs_tol=1e-10)


def test_the_sample_is_seeded_per_package_and_without_replacement() -> None:
    names = [f"constrain.m.f__mutmut_{i}" for i in range(50)] + [f"strategies.m.f__mutmut_{i}" for i in range(7)]
    drawn = mutation_sample.sample(names, seed=17, per_package=10)
    assert drawn == mutation_sample.sample(list(reversed(names)), seed=17, per_package=10)  # order of the input: no effect
    assert len(set(drawn["constrain"])) == 10 and all(n.startswith("constrain.") for n in drawn["constrain"])
    assert sorted(drawn["strategies"]) == sorted(n for n in names if n.startswith("strategies."))  # fewer than asked: all
    assert drawn["constrain"] != mutation_sample.sample(names, seed=18, per_package=10)["constrain"]
    with pytest.raises(ValueError, match="per_package"):
        mutation_sample.sample(names, seed=17, per_package=0)


_MUTATED_MODULE = """
class Strategy:

    def xǁStrategyǁcombine__mutmut_orig(self):
        values = [1.0]

        return _distributed.all_mean(values)

    def xǁStrategyǁcombine__mutmut_1(self):
        return None

    def xǁStrategyǁlocal__mutmut_orig(self):
        return _distributed_name  # not a call into _distributed

def x_helper__mutmut_orig(x):
    return x

_distributed.active()
"""


def test_functions_calling_distributed_get_the_ddp_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(_MUTATED_MODULE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    stats = {"tests_by_mangled_function_name": {"pkg.mod.xǁStrategyǁcombine": ["b.py::t", "a.py::t"]}}
    assert mutation_sample.tests_of("pkg.mod.xǁStrategyǁcombine__mutmut_1", stats) == [
        "a.py::t",
        "b.py::t",
        "tests/strategies/test_distributed.py",
    ]
    assert mutation_sample.tests_of("pkg.mod.xǁStrategyǁlocal__mutmut_3", stats) == []  # ends before the module's call
    assert mutation_sample.tests_of("pkg.mod.x_helper__mutmut_2", stats) == []
    with pytest.raises(ValueError, match="regenerate mutants"):
        mutation_sample.tests_of("pkg.mod.x_gone__mutmut_1", stats)


def test_mutant_names_are_for_run_only() -> None:
    with pytest.raises(SystemExit):
        mutation_sample.main(["score", "constrain.m.f__mutmut_1"])


def test_only_the_current_rounds_verdicts_count() -> None:
    triage = (
        "# Title\n\n- killed `a__mutmut_1`: before any round\n\n## Round 4 (this code)\n\n### Round 4 triage\n\n"
        "- equivalent `b__mutmut_2`: reason\n- killed `c__mutmut_3`: test\n\n## Round 3 (older code)\n\n"
        "- killed `d__mutmut_4`: test of other code\n"
    )
    current = mutation_sample.current_round(triage)
    assert mutation_sample._EQUIVALENT.findall(current) == ["b__mutmut_2"]
    assert mutation_sample._KILLED_BY_HAND.findall(current) == ["c__mutmut_3"]  # neither a__ (no round) nor d__ (older)
    assert mutation_sample.current_round("## Round 1\n- killed `e__mutmut_5`: t\n") == "## Round 1\n- killed `e__mutmut_5`: t\n"
    with pytest.raises(ValueError, match="Round"):
        mutation_sample.current_round("- killed `a__mutmut_1`: no section\n")


def test_pooled_samples_are_the_union_of_the_seeds_draws() -> None:
    names = [f"constrain.m.f__mutmut_{i}" for i in range(30)] + [f"strategies.m.f__mutmut_{i}" for i in range(30)]
    one, two = (mutation_sample.sample(names, seed, 8) for seed in (17, 23))
    pooled = mutation_sample.pooled_sample(names, [17, 23], 8)
    for package in ("constrain", "strategies"):
        assert pooled[package] == sorted(set(one[package]) | set(two[package]))
        assert len(pooled[package]) == len(set(pooled[package]))  # a name two draws share counts once
    assert mutation_sample.pooled_sample(names, [17], 8) == one


def test_score_counts_the_current_rounds_verdicts_for_one_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``score --package``: that package's row only; killed = a killing exit code or a "- killed" line of the
    current round, equivalent = its "- equivalent" lines; the rest (survived, unchecked) not killed."""
    names = [f"strategies.m.f__mutmut_{i}" for i in range(1, 7)] + ["constrain.m.g__mutmut_1"]
    codes = {n: None for n in names} | {"strategies.m.f__mutmut_1": 1, "strategies.m.f__mutmut_2": 0}
    (tmp_path / "mutants" / "strategies").mkdir(parents=True)
    (tmp_path / "mutants" / "strategies" / "m.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    triage = tmp_path / "triage.md"
    triage.write_text(
        "## Round 5\n\n- killed `strategies.m.f__mutmut_3`: t\n- equivalent `strategies.m.f__mutmut_4`: r\n\n"
        "## Round 4\n\n- killed `strategies.m.f__mutmut_5`: older code\n"
    )
    monkeypatch.setattr(mutation_sample, "_TRIAGE", triage)
    monkeypatch.chdir(tmp_path)
    mutation_sample.main(["score", "--seed", "17", "--per-package", "6", "--package", "strategies"])
    out = capsys.readouterr().out
    assert "constrain/" not in out
    # 6 sampled, 6 in the population, killed 1 (exit code) + 1 (by hand), 1 equivalent, 3 not killed: 2/5
    row = next(line for line in out.splitlines() if line.startswith("| `strategies/`"))
    low, high = mutation_sample.wilson(2, 5)
    assert row == f"| `strategies/` | 6 | 6 | 2 | 1 | 3 | 40.0% (2/5) | {100 * low:.1f}-{100 * high:.1f}% |"
    assert "3 sampled mutants not checked yet" in out  # 4 unchecked, one of them killed by hand


def test_the_control_reruns_the_mutants_tests_up_to_its_first_failure() -> None:
    tests = ["a.py::t1", "b.py::t[x y]", "tests/strategies/test_distributed.py", "c.py::t3"]
    assert mutation_sample.control_tests(tests, "b.py::t[x y]") == tests[:2]  # same order: the state t1 leaves
    assert mutation_sample.control_tests(tests, "tests/strategies/test_distributed.py::test_ddp[lagrangian]") == tests[:3]
    assert mutation_sample.control_tests(tests, None) == tests  # pytest named no test (e.g. a collection error)
    assert mutation_sample.control_tests(tests, "d.py::t4") == tests  # not in the list: all of them
