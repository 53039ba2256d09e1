"""``constrain study [SUITE]``: run a study suite, write its figures and its markdown table.

Named suites are subcommands of ``study``: ``constrain study`` runs the default suite (the five
convex problems and one MLP problem), ``constrain study convex``, ``constrain study mlp`` and
``constrain study all`` run the others listed in :data:`SUITES`. Options go after the suite name.

Another study with its own runner (PSiLON, the L1 implementations) plugs in as one more
subcommand with one line in :data:`STUDY_MODULES`: ``name -> module``, where the module exposes
``add_arguments(parser)`` (its own options; values given after the name win over the shared
ones) and ``run(args) -> int``; its docstring's first line is the help. The shared options are
:func:`common_options`, for a module that wants them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments._args import csv_list, positive_int
from experiments._paths import figures_dir, prepare_output_dir
from experiments._problem_names import CONVEX_PROBLEMS, MLP_PROBLEMS, PROBLEM_NAMES


@dataclass(frozen=True)
class Suite:
    """A named set of problems run with the default strategy table."""

    name: str
    help: str
    problems: tuple[str, ...]
    seeds: int = 3


#: The suites of the generic study. ``default`` is what ``constrain study`` runs.
SUITES: dict[str, Suite] = {
    "default": Suite(
        "default",
        "the five convex problems and one MLP problem (about 3 minutes on 2 cores)",
        (*CONVEX_PROBLEMS, "mlp-synthetic-l1"),
    ),
    "convex": Suite("convex", "the five linear-regression problems with a cvxpy optimum", CONVEX_PROBLEMS),
    "mlp": Suite("mlp", "the MLP problems (synthetic data, scikit-learn's diabetes data)", MLP_PROBLEMS),
    "all": Suite("all", "every problem", PROBLEM_NAMES),
}

#: More named studies, ``constrain study NAME``: ``{NAME: module}`` (see the module doc).
STUDY_MODULES: dict[str, str] = {
    "psilon": "experiments.psilon_study",
    "l1": "experiments.l1_study",
    "dc3": "experiments.dc3_study",
}

QUICK_SEEDS = 1


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"0,5,7"`` -> those seeds."""
    try:
        parts = [int(p) for p in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a list (0,5,7), got {text!r}") from None
    if not parts or any(p < 0 for p in parts):
        raise argparse.ArgumentTypeError(f"--seeds takes a positive count or non-negative seeds, got {text!r}")
    if len(parts) == 1 and "," not in text:
        if parts[0] == 0:
            raise argparse.ArgumentTypeError("--seeds 0 would run nothing; give a count >= 1")
        return list(range(parts[0]))
    return parts


def common_options(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The options every study shares, as a parent parser (see :func:`add_common_options`)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_common_options(parser, suppress_defaults)
    return parser


def add_common_options(parser: argparse.ArgumentParser, suppress_defaults: bool = False) -> None:
    """Add the options every study shares to ``parser``. ``suppress_defaults``: leave options that
    are not given out of the namespace (for suite subparsers, so that options given before the
    suite name are kept)."""
    default = (lambda value: argparse.SUPPRESS) if suppress_defaults else (lambda value: value)
    group = parser.add_argument_group("study options")
    group.add_argument(
        "--problems",
        type=csv_list,
        default=default(None),
        metavar="P,...",
        help=f"problems to run (default: the suite's); known: {', '.join(PROBLEM_NAMES)}",
    )
    group.add_argument(
        "--strategies",
        type=csv_list,
        default=default(None),
        metavar="S,...",
        help="keep entries whose label, strategy name or family is listed (the unconstrained baseline is always run)",
    )
    group.add_argument(
        "--seeds",
        type=parse_seeds,
        default=default(None),
        metavar="N|S,...",
        help="a count N (seeds 0..N-1) or a list of seeds (default 3, 1 with --quick)",
    )
    group.add_argument(
        "--steps",
        type=positive_int,
        default=default(None),
        metavar="N",
        help="optimizer steps per run (default: each problem's budget)",
    )
    group.add_argument(
        "--quick", action="store_true", default=default(False), help="a smoke run: short runs and one seed (under a minute)"
    )
    _add_output_options(group, default)


def _add_output_options(group: Any, default: Callable[[Any], Any]) -> None:
    """``--out``, ``--figures``, ``--no-figures``, ``--resume``/``--fresh``, ``--retry-failed``,
    ``--workers``, ``--no-progress`` (``default(value)``: the default to register)."""
    group.add_argument(
        "--out",
        type=Path,
        default=default(Path("results/study")),
        metavar="DIR",
        help="results folder, one JSON file per run (default results/study)",
    )
    group.add_argument(
        "--figures",
        type=Path,
        default=default(None),
        metavar="DIR",
        help="where the PNG figures and the markdown table go (default: figures/ for the full run "
        "of a suite; OUT/figures for --quick or any run with --problems, --strategies, "
        "--seeds or --steps, so that it never overwrites the full run's figures)",
    )
    group.add_argument(
        "--no-figures",
        action="store_true",
        default=default(False),
        help="write neither figures nor the markdown file (the table is still printed)",
    )
    resume = group.add_mutually_exclusive_group()  # inside the group, so --help lists them with it
    resume.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=default(True),
        help="skip runs whose file is already in --out (default)",
    )
    resume.add_argument(
        "--fresh", dest="resume", action="store_false", default=default(True), help="redo every run, overwriting its file"
    )
    group.add_argument(
        "--retry-failed", action="store_true", default=default(False), help="when resuming, redo runs stored as failed"
    )
    group.add_argument(
        "--workers", type=positive_int, default=default(None), metavar="N", help="worker processes (default: min(2, CPU count))"
    )
    group.add_argument("--no-progress", action="store_true", default=default(False), help="no progress bar")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``study`` and its named suites to the ``constrain`` command line."""
    parser = subparsers.add_parser(
        "study",
        help="run strategies side by side on problems with known optima; figures and a results table",
        description="Run every applicable strategy on the same problems (same data, start, optimizer and step "
        "budget), store each run in its own file (resumable), and write figures and a markdown "
        "table. Without a SUITE name: the default suite. Options may come before or after SUITE.",
    )
    add_common_options(parser)
    _add_budget_option(parser)
    parser.set_defaults(func=run, suite=None)
    named = parser.add_subparsers(
        dest="suite", metavar="[SUITE]", required=False, title="suites and studies (optional; default: the default suite)"
    )
    for suite in SUITES.values():
        sub = named.add_parser(suite.name, help=suite.help, description=f"The {suite.name} suite: {suite.help}.")
        add_common_options(sub, suppress_defaults=True)
        _add_budget_option(sub, suppress_defaults=True)
        sub.set_defaults(func=run)
    for name, module_name in STUDY_MODULES.items():
        module = importlib.import_module(module_name)
        summary = _summary(module.__doc__ or name)
        sub = named.add_parser(
            name,
            help=summary,
            description=(
                f"{summary}. The protocol: the README and `python -m pydoc {module_name}`. Options go after "
                f"the name: constrain study {name} --quick."
            ),
        )
        module.add_arguments(sub)
        sub.set_defaults(func=module.run)


def _add_budget_option(parser: argparse.ArgumentParser, suppress_defaults: bool = False) -> None:
    """``--full-budget``: no convergence stop (the generic suites only; the other studies have their own rules)."""
    parser.add_argument(
        "--full-budget",
        action="store_true",
        default=argparse.SUPPRESS if suppress_defaults else False,
        help="run every step of the budget (default: a run stops once its objective and violation have "
        "settled, and the table says where and why)",
    )


def _summary(doc: str) -> str:
    """A module docstring's first line as plain text, without its ``(``constrain ...``)`` note."""
    first = doc.strip().splitlines()[0]
    return re.sub(r"\s*\(``[^`]*``\)", "", first).replace("``", "").rstrip(".")


def run(args: argparse.Namespace) -> int:
    """Run the suite named in ``args`` (the default suite when none) and print its table."""
    from experiments.study import run_study

    suite = SUITES[args.suite or "default"]
    quick = bool(args.quick)
    seeds = args.seeds if args.seeds is not None else list(range(QUICK_SEEDS if quick else suite.seeds))
    workers = args.workers if args.workers is not None else max(1, min(2, os.cpu_count() or 1))
    early_stop = not args.full_budget
    documented = (
        not quick
        and early_stop
        and args.problems is None
        and args.strategies is None
        and args.seeds is None
        and args.steps is None
    )
    out = prepare_output_dir(args.out, "--out")
    figures = None if args.no_figures else prepare_output_dir(figures_dir(args.figures, out, documented), "--figures")
    args.interrupt_note = f"finished runs are kept in {out}/ and the same command resumes from them"
    prefix = "study" if suite.name == "default" else f"study-{suite.name}"
    command = "constrain study" + ("" if suite.name == "default" else f" {suite.name}") + (" --quick" if quick else "")
    tic = time.perf_counter()
    result = run_study(
        args.problems or list(suite.problems),
        seeds=seeds,
        steps=args.steps,
        quick=quick,
        strategy_filter=args.strategies,
        out=out,
        figures=figures,
        prefix=prefix,
        resume=args.resume,
        retry_failed=args.retry_failed,
        workers=workers,
        progress=not args.no_progress,
        early_stop=early_stop,
        title=f"Study: {suite.name} suite" + (" (quick)" if quick else ""),
        command=command,
    )
    print(result.table)
    ran = len(result.plan.specs)
    print(
        f"{ran} runs ({len(result.plan.skipped)} cells not applicable) in {time.perf_counter() - tic:.1f} s; "
        f"results in {out}/" + ("" if figures is None else f"; table and figures in {figures}/")
    )
    return 0
