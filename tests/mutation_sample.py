"""Uniform random sample of mutmut's mutants per package, and its mutation score with a Wilson interval.

A full mutation run of `constrain/` and `strategies/` takes hours on a small machine, so the score is
estimated on a seeded uniform sample of the mutants that `mutmut run` generated (the names in
`mutants/**/*.py.meta`). Usage, from the repository root (see README, "Development"):

    python tests/mutation_sample.py names [--seed 17] [--per-package 100]   # the sample, one name a line
    python tests/mutation_sample.py score [--seed 17] [--per-package 100]   # per-package score table
    python tests/mutation_sample.py run [--seed 17] [--per-package 100]     # check the sample without `mutmut run`

`run` does what `mutmut run NAMES` does per mutant (the tests that mutmut's stats say reach the mutated
function, `-x`, in a process forked from one that imported the packages, with MUTANT_UNDER_TEST set)
and records the exit codes where `mutmut run` does; it skips mutmut's clean-test and forced-fail runs,
so run the test selection inside mutants/ once first (a failing clean run makes every kill suspect).

The score counts killed (and caught-by-type-check) mutants over the non-equivalent ones: equivalent
mutants are the names listed as "- equivalent `NAME`: reason" in tests/mutation_triage.md. Survivors,
timeouts, "no tests" and unchecked mutants all count as not killed, except those listed as
"- killed `NAME`: test" (re-run by hand: MUTANT_UNDER_TEST=NAME pytest TEST inside mutants/ fails).
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

_PACKAGES = ("constrain", "strategies")
_KILLED_CODES = {1, 3, 37}  # mutmut's "killed" (pytest failed or errored) and "caught by type check"
_TRIAGE = Path(__file__).with_name("mutation_triage.md")
_EQUIVALENT = re.compile(r"^- equivalent `([^`]+)`:", re.MULTILINE)
#: survivors (or "no tests") re-run by hand against the test named after them, which fails: killed
_KILLED_BY_HAND = re.compile(r"^- killed `([^`]+)`:", re.MULTILINE)


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


def _run_one(name: str, tests: list[str], timeout: float) -> int:
    """Exit code of pytest over ``tests`` (cwd mutants/) with mutant ``name`` active, in a forked child; 36 on timeout."""
    pid = os.fork()
    if pid == 0:  # the child: pytest with the mutant switched on, then exit without running the parent's cleanup
        import pytest

        os.environ["MUTANT_UNDER_TEST"] = name
        quiet = os.open(os.devnull, os.O_WRONLY)  # the exit code is the result; pytest's report would flood the log
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        code = pytest.main(["--rootdir=.", "--tb=native", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *tests])
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


def run_sample(root: Path, names: list[str], timeout: float, quick: int = 0) -> None:
    """Check ``names`` as `mutmut run` would, cheapest first, saving each exit code in its ``.py.meta`` file.

    ``quick > 0``: only the ``quick`` fastest tests of each mutant, and only unchecked mutants; a kill is saved
    (those tests pass on the clean code), a pass is not (the mutant stays unchecked: the rest of its tests may kill it).
    """
    stats = json.loads((root / "mutants" / "mutmut-stats.json").read_text())
    tests_by_function, duration = stats["tests_by_mangled_function_name"], stats["duration_by_test"]
    metas = {meta: json.loads(meta.read_text()) for meta in (root / "mutants").glob("*/**/*.py.meta")}
    owner = {name: meta for meta, data in metas.items() for name in data["exit_code_by_key"]}
    tests = {name: sorted(tests_by_function.get(name.rsplit("__mutmut_", 1)[0], [])) for name in names}
    triage = _TRIAGE.read_text()
    triaged = set(_EQUIVALENT.findall(triage)) | set(_KILLED_BY_HAND.findall(triage))  # quick: not run again
    os.chdir(root / "mutants")
    sys.path.insert(0, ".")
    import constrain  # noqa: F401  # imported once here (the mutated copies), shared by every forked child
    import strategies  # noqa: F401  # (the same)

    for name in sorted(names, key=lambda n: sum(duration.get(t, 0.0) for t in tests[n])):
        chosen = tests[name]
        if quick:
            if metas[owner[name]]["exit_code_by_key"][name] is not None or name in triaged:
                continue
            chosen = sorted(sorted(chosen, key=lambda t: duration.get(t, 0.0))[:quick])
        code = _run_one(name, chosen, timeout) if chosen else 33  # 33: mutmut's "no tests"
        print(f"{code:3d} {name}" + (f" (its {len(chosen)} fastest tests)" if quick else ""), flush=True)
        if quick and code not in _KILLED_CODES:
            continue
        metas[owner[name]]["exit_code_by_key"][name] = code
        owner[name].write_text(json.dumps(metas[owner[name]], indent=4))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["names", "score", "run"])
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--per-package", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds of wall time per mutant (run)")
    parser.add_argument("--quick", type=int, default=0, help="run: only the N fastest tests of each unchecked mutant")
    args = parser.parse_args(argv)
    root = Path.cwd()
    codes = _exit_codes(root)
    drawn = sample(list(codes), args.seed, args.per_package)
    if args.what == "names":
        print("\n".join(name for names in drawn.values() for name in names))
        return
    if args.what == "run":
        run_sample(root, [name for names in drawn.values() for name in names], args.timeout, args.quick)
        return
    triage = _TRIAGE.read_text()
    equivalent, by_hand = set(_EQUIVALENT.findall(triage)), set(_KILLED_BY_HAND.findall(triage))
    print(score_table(codes, drawn, equivalent, by_hand))
    unchecked = [n for names in drawn.values() for n in names if codes[n] is None and n not in by_hand]
    if unchecked:
        print(f"\n{len(unchecked)} sampled mutants not checked yet (counted as not killed)")


if __name__ == "__main__":
    main()
