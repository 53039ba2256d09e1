"""Uniform random sample of mutmut's mutants per package, and its mutation score with a Wilson interval.

A full mutation run of `constrain/` and `strategies/` takes hours on a small machine, so the score is
estimated on a seeded uniform sample of the mutants that `mutmut run` generated (the names in
`mutants/**/*.py.meta`). Usage, from the repository root (see README, "Development"):

    python tests/mutation_sample.py names [--seed 17] [--per-package 100]   # the sample, one name a line
    python tests/mutation_sample.py score [--seed 17] [--per-package 100]   # per-package score table
    python tests/mutation_sample.py score --seed 17 23 --per-package 40    # two draws pooled
    python tests/mutation_sample.py score --seed 17 --package strategies   # one package's row only
    python tests/mutation_sample.py run [--seed 17] [--per-package 100]     # check the sample without `mutmut run`
    python tests/mutation_sample.py run NAME [NAME ...] [--control]          # only these mutants, on all their tests

`run` does what `mutmut run NAMES` does per mutant (the tests that mutmut's stats say reach the mutated
function, `-x`, in a process forked from one that imported the packages, with MUTANT_UNDER_TEST set)
and records the exit codes where `mutmut run` does; it skips mutmut's clean-test and forced-fail runs,
so run the test selection inside mutants/ once first (a failing clean run makes every kill suspect).
`run --quick N` tries each unchecked mutant on its N fastest tests in one process and prints a
"- killed" triage line for each kill whose control (the same tests, no mutant) passes. Given NAMES,
`run` checks only those (sampled or not, checked before or not) on every test that reaches their function;
`--control` re-runs the tests the mutant ran, up to its first failure and in the same order, with a no-op
mutant name and records the kill only if they pass (the failing test alone can pass where it failed after
the others: an order-dependent test then passed for a kill).

Functions that call into `strategies._distributed` are reached only under torch.distributed, in the
2 gloo processes that tests/strategies/test_distributed.py spawns: mutmut's stats (one process) never
see those calls, so the runner adds that file to the tests of every mutant of such a function. The
spawned processes inherit MUTANT_UNDER_TEST through the environment and import the mutated packages
from mutants/ (the parent's cwd and sys.path), so they run the mutant.

The score counts killed (and caught-by-type-check) mutants over the non-equivalent ones: equivalent
mutants are the names listed as "- equivalent `NAME`: reason" in tests/mutation_triage.md. Survivors,
timeouts, "no tests" and unchecked mutants all count as not killed, except those listed as
"- killed `NAME`: test" (re-run by hand: MUTANT_UNDER_TEST=NAME pytest TEST inside mutants/ fails).
Only the verdicts of the current round count: the first "## Round" section of the triage file. A mutant's
name is its function and a number, so an older round's verdict may name another mutation of changed code.
The 95% interval is Wilson's:
(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.96.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

_PACKAGES = ("constrain", "strategies")
_KILLED_CODES = {1, 3, 37}  # mutmut's "killed" (pytest failed or errored) and "caught by type check"
_TRIAGE = Path(__file__).with_name("mutation_triage.md")
_EQUIVALENT = re.compile(r"^- equivalent `([^`]+)`:", re.MULTILINE)
#: survivors (or "no tests") re-run by hand against the test named after them, which fails: killed
_KILLED_BY_HAND = re.compile(r"^- killed `([^`]+)`:", re.MULTILINE)


def current_round(triage: str) -> str:
    """The first ``## Round`` section of the triage text (up to the next ``## `` heading): this code's verdicts."""
    start = re.search(r"^## Round", triage, re.MULTILINE)
    if start is None:
        raise ValueError(f"no '## Round' section in {_TRIAGE}: the verdicts of the current round go under one")
    end = re.search(r"^## ", triage[start.end() :], re.MULTILINE)
    return triage[start.start() : start.end() + end.start()] if end else triage[start.start() :]


def _exit_codes(root: Path) -> dict[str, int | None]:
    """Every mutant name that mutmut generated under root/mutants, with its recorded exit code."""
    codes: dict[str, int | None] = {}
    metas = sorted((root / "mutants").glob("*/**/*.py.meta"))
    if not metas:
        raise ValueError(f"no mutmut metadata under {root / 'mutants'}: run `mutmut run` once first (README, Development)")
    for meta in metas:
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def sample(names: list[str], seed: int, per_package: int) -> dict[str, list[str]]:
    """A seeded uniform sample without replacement of per_package names from each package (sorted names in)."""
    if per_package < 1:
        raise ValueError(f"per_package must be a positive integer, got {per_package}")
    drawn: dict[str, list[str]] = {}
    for package in _PACKAGES:
        population = sorted(n for n in names if n.startswith(package + "."))
        drawn[package] = sorted(random.Random(f"{seed}-{package}").sample(population, min(per_package, len(population))))
    return drawn


def pooled_sample(names: list[str], seeds: list[int], per_package: int) -> dict[str, list[str]]:
    """The union of the seeded samples of ``seeds`` per package (a name drawn by two seeds counts once)."""
    draws = [sample(names, seed, per_package) for seed in seeds]
    return {package: sorted({n for drawn in draws for n in drawn[package]}) for package in _PACKAGES}


def wilson(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion killed/n."""
    if n == 0:
        return (0.0, 1.0)
    p = killed / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n)))


def score_table(codes: dict[str, int | None], drawn: dict[str, list[str]], equivalent: set[str], by_hand: set[str]) -> str:
    """Markdown table: per package the sample size, killed, equivalent, not killed and the score with its interval."""
    rows = [
        "| package | sampled | of | killed | equivalent | not killed | score (non-equivalent) | 95% Wilson |",
        "|---|" + "---:|" * 7,
    ]
    for package, names in drawn.items():
        population = sum(n.startswith(package + ".") for n in codes)
        equiv = sum(n in equivalent for n in names)
        killed = sum(codes[n] in _KILLED_CODES or n in by_hand for n in names if n not in equivalent)
        n = len(names) - equiv
        low, high = wilson(killed, n)
        share = f"{100 * killed / n:.1f}% ({killed}/{n})" if n else "-"
        rows.append(
            f"| `{package}/` | {len(names)} | {population} | {killed} | {equiv} | {n - killed} | {share} "
            f"| {100 * low:.1f}-{100 * high:.1f}% |"
        )
    return "\n".join(rows)


#: tests run in spawned processes that mutmut's stats cannot attribute: added for the functions that call this
_DDP_CALL = re.compile(r"\b_distributed\.\w+\(")
_DDP_TESTS = ["tests/strategies/test_distributed.py"]


def _noop(name: str) -> str:
    """A mutant name of the same function that does not exist: the trampoline then runs the original code."""
    return name.rsplit("__mutmut_", 1)[0] + "__mutmut_999"


def _original_source(name: str) -> str:
    """The source of the unmutated function of mutant ``name`` (cwd mutants/), as mutmut copied it: its
    ``def`` line and the lines below it indented deeper (blank lines included)."""
    module, _, function = name.rsplit("__mutmut_", 1)[0].rpartition(".")
    lines = Path(*module.split(".")).with_suffix(".py").read_text().splitlines()
    head = f"def {function}__mutmut_orig("
    first = next((i for i, line in enumerate(lines) if line.lstrip().startswith(head)), None)
    if first is None:
        raise ValueError(f"mutant {name!r}: no function {head}...) in {module} (regenerate mutants/)")
    indent = len(lines[first]) - len(lines[first].lstrip())
    body = [lines[first]]
    for line in lines[first + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    return "\n".join(body)


def tests_of(name: str, stats: dict[str, Any]) -> list[str]:
    """The tests that reach mutant ``name``'s function (mutmut's stats), plus the DDP tests where it calls
    ``_distributed`` (cwd mutants/)."""
    tests = sorted(stats["tests_by_mangled_function_name"].get(name.rsplit("__mutmut_", 1)[0], []))
    return tests + (_DDP_TESTS if _DDP_CALL.search(_original_source(name)) else [])


class _FirstFailure:
    """pytest plugin: writes the node id of the first test that fails (or errors) to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed and not self.path.exists():
            self.path.write_text(report.nodeid)


def _run_one(name: str, tests: list[str], timeout: float, failed: Path | None = None) -> int:
    """Exit code of pytest over ``tests`` (cwd mutants/) with mutant ``name`` active, in a forked child; 36 on timeout.
    ``failed``: where the child writes the node id of the first failing test (none written if all pass)."""
    pid = os.fork()
    if pid == 0:  # the child: pytest with the mutant switched on, then exit without running the parent's cleanup
        import pytest

        os.environ["MUTANT_UNDER_TEST"] = name  # inherited by the processes a test spawns (DDP)
        quiet = os.open(os.devnull, os.O_WRONLY)  # the exit code is the result; pytest's report would flood the log
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        # -n 0: one process, as mutmut's pytest_add_cli_args (xdist turns a -x failure into exit code 2, "interrupted")
        args = ["--rootdir=.", "--tb=native", "-x", "-q", "-n", "0", "-p", "no:randomly", "-p", "no:cacheprovider", *tests]
        code = pytest.main(args, plugins=[_FirstFailure(failed)] if failed is not None else [])
        os._exit(int(code))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return 36  # mutmut's "timeout"


def control_tests(tests: list[str], first: str | None) -> list[str]:
    """The tests a kill's control re-runs: ``tests`` up to the item holding ``first`` (the node id that failed
    first), in the same order, so that a test whose outcome depends on the ones before it (e.g. on the random
    state they leave) fails the control too; all of ``tests`` if pytest named none (e.g. a collection error)."""
    if first is not None:
        for i, item in enumerate(tests):
            if first == item or first.startswith(item + "::") or first.startswith(item + "["):
                return tests[: i + 1]
    return tests


def _check(name: str, tests: list[str], timeout: float, control: bool) -> int | None:
    """mutmut's exit code for mutant ``name`` on ``tests``; None (unchecked) for a kill whose control fails.

    The control runs the no-op mutant on :func:`control_tests` (the tests the mutant ran, up to the first
    failure): the kill counts only if they pass on the original code."""
    if not tests:
        return 33  # mutmut's "no tests"
    failed = Path(f".first_failure_{os.getpid()}")
    failed.unlink(missing_ok=True)
    code = _run_one(name, tests, timeout, failed)
    first = failed.read_text() if failed.exists() else None
    failed.unlink(missing_ok=True)
    if control and code in _KILLED_CODES:
        control_code = _run_one(_noop(name), control_tests(tests, first), timeout)
        if control_code != 0:
            print(f"CONTROL FAILED ({control_code}) {name}: the kill is not counted", flush=True)
            return None
    if code in _KILLED_CODES:
        print(f"    {name}: first failure {first}", flush=True)
    return code


def run_sample(
    root: Path, names: list[str], timeout: float, quick: int = 0, *, control: bool = False, again: bool = False
) -> None:
    """Check ``names`` as `mutmut run` would, cheapest first, saving each exit code in its ``.py.meta`` file.

    ``quick > 0``: each unchecked, untriaged mutant (every one of ``names`` with ``again``) against its ``quick``
    fastest tests in this process (no fork, no collection per mutant: fast on a loaded machine); prints a triage
    line for each kill whose control passes. ``control``: a kill counts only if the no-op control passes.
    """
    stats = json.loads((root / "mutants" / "mutmut-stats.json").read_text())
    duration = stats["duration_by_test"]
    metas = {meta: json.loads(meta.read_text()) for meta in (root / "mutants").glob("*/**/*.py.meta")}
    owner = {name: meta for meta, data in metas.items() for name in data["exit_code_by_key"]}
    triage = current_round(_TRIAGE.read_text())
    triaged = set(_EQUIVALENT.findall(triage)) | set(_KILLED_BY_HAND.findall(triage))  # quick: not run again
    os.chdir(root / "mutants")
    sys.path.insert(0, ".")
    tests = {name: tests_of(name, stats) for name in names}
    import constrain  # noqa: F401  # imported once here (the mutated copies), shared by every forked child
    import strategies  # noqa: F401  # (the same)

    for name in sorted(names, key=lambda n: sum(duration.get(t, 0.0) for t in tests[n])):
        if quick:
            if again or (metas[owner[name]]["exit_code_by_key"][name] is None and name not in triaged):
                _quick_kill(name, sorted(tests[name], key=lambda t: duration.get(t, 0.0))[:quick])
            continue
        code = _check(name, tests[name], timeout, control)
        metas[owner[name]]["exit_code_by_key"][name] = code
        owner[name].write_text(json.dumps(metas[owner[name]], indent=4))
        print(f"{code if code is not None else '-':>3} {name} ({len(tests[name])} tests)", flush=True)


def _quick_kill(name: str, tests: list[str]) -> None:
    """In this process (cwd mutants/): ``tests`` with mutant ``name``, then with a no-op name as the control.
    Prints a triage line "- killed `name`: tests" when the mutant fails them and the control passes."""
    import pytest

    if not tests:
        return
    args = ["--rootdir=.", "-x", "-q", "--tb=no", "-p", "no:randomly", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
    os.environ["MUTANT_UNDER_TEST"] = name
    code = int(pytest.main(args))
    os.environ["MUTANT_UNDER_TEST"] = _noop(name)  # no such mutant: the original
    if code in _KILLED_CODES and int(pytest.main(args)) == 0:
        print(f"KILLED - killed `{name}`: {' '.join(tests)} (fastest reaching tests, control passes)", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["names", "score", "run"])
    parser.add_argument("names", nargs="*", metavar="NAME", help="run: only these mutants (default: the sample)")
    parser.add_argument("--seed", type=int, nargs="+", default=[17], help="several: the pooled draws (no name twice)")
    parser.add_argument("--per-package", type=int, default=100)
    parser.add_argument("--package", choices=_PACKAGES, help="names, run, score: only this package's sample")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds of wall time per mutant (run)")
    parser.add_argument(
        "--quick",
        type=int,
        default=0,
        help="run: each unchecked mutant on its N fastest tests, in-process, printing triage lines for kills",
    )
    parser.add_argument("--control", action="store_true", help="run: count a kill only if a no-op control passes")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.names and args.what != "run":
        parser.error(f"mutant names are for 'run' only, not {args.what!r}")
    root = Path.cwd()
    codes = _exit_codes(root)
    unknown = [n for n in args.names if n not in codes]
    if unknown:
        parser.error(f"no such mutant under {root / 'mutants'}: {', '.join(unknown)} (see `mutmut results` for names)")
    drawn = pooled_sample(list(codes), args.seed, args.per_package)
    if args.package is not None:  # one package's draw (e.g. the only one a round re-measured)
        drawn = {args.package: drawn[args.package]}
    picked = [name for names in drawn.values() for name in names]
    if args.what == "names":
        print("\n".join(picked))
        return
    if args.what == "run":
        run_sample(root, args.names or picked, args.timeout, args.quick, control=args.control, again=bool(args.names))
        return
    triage = current_round(_TRIAGE.read_text())
    equivalent, by_hand = set(_EQUIVALENT.findall(triage)), set(_KILLED_BY_HAND.findall(triage))
    print(score_table(codes, drawn, equivalent, by_hand))
    unchecked = [n for names in drawn.values() for n in names if codes[n] is None and n not in by_hand]
    if unchecked:
        print(f"\n{len(unchecked)} sampled mutants not checked yet (counted as not killed)")


if __name__ == "__main__":
    main()
