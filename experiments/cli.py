"""The ``constrain`` command line: ``constrain validate | list | study | bench``.

Each subcommand lives in its own module, which exposes ``add_parser(subparsers)``; the parser
it adds carries a ``run(args) -> int`` function as its default ``func``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from experiments._paths import check_output_file
from experiments._runner import Interrupted, handle_interrupts

#: Modules that each add one subcommand, in the order ``constrain --help`` lists them.
COMMAND_MODULES = (
    "experiments.validate",
    "experiments.listing",
    "experiments.study_cmd",
    "experiments.bench",
)

EPILOG = """examples:
  constrain study               the default convergence study (about 3 minutes on 2 cores),
                                figures and table into figures/
  constrain study --quick       a smoke run (under a minute); figures under --out, never figures/
  constrain study l1 --help     the options of one study
  constrain list --reasons      which strategy supports which constraint, and why not
  constrain validate            every projection kernel against cvxpy
  constrain bench               a short run of both benchmarks

Every output path (--out, --figures, --json) is checked before any work starts.
exit status: 0 done; 1 a check failed (validate); 2 bad input or a path that cannot be
written; 130 stopped by Ctrl-C, 143 by SIGTERM (workers stopped, finished study runs
kept: the same command resumes; a second Ctrl-C stops at once)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="constrain",
        description="Train networks under constraints and compare the ways of enforcing them.\n"
        "`constrain COMMAND --help` lists each command's options.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status (2: bad input; 128 + signal
    number when interrupted: 130 for Ctrl-C, 143 for SIGTERM)."""
    with handle_interrupts():  # from the start: a Ctrl-C while torch imports prints one line too
        early = _unknown_study_problems(sys.argv[1:] if argv is None else list(argv))
        if early is not None:  # before the parser imports torch and every command (seconds)
            print(f"constrain study: error: {early}", file=sys.stderr)
            return 2
        try:
            args = build_parser().parse_args(argv)
        except KeyboardInterrupt as stop:
            return _interrupted("constrain", stop, None)
        try:
            _check_output_files(args)
            return int(args.func(args) or 0)
        except (ValueError, TypeError, KeyError, LookupError, ArithmeticError) as error:
            # bad input (a name, an option, a value): the message says which and how to fix it
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            print(f"constrain {args.command}: error: {message}", file=sys.stderr)
            return 2
        except OSError as error:  # a disk that filled up or a folder that went away while working
            where = f" ({error.filename})" if getattr(error, "filename", None) else ""
            print(f"constrain {args.command}: error: {error.strerror or error}{where}.", file=sys.stderr)
            return 2
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM (a second one exits at once, see handle_interrupts)
            return _interrupted(f"constrain {args.command}", stop, getattr(args, "interrupt_note", None))


def _unknown_study_problems(argv: Sequence[str]) -> str | None:
    """The error for ``constrain study [SUITE] --problems P,...`` naming a problem that does not exist, found
    from the raw arguments without importing torch; None otherwise (the parser and the study check the rest)."""
    from experiments._args import csv_list
    from experiments._problem_names import unknown_problems
    from experiments.study_cmd import STUDY_MODULES  # torch-free at import

    if not argv or argv[0] != "study" or any(arg in STUDY_MODULES for arg in argv[1:]):
        return None  # another command, or a study with its own options (no --problems)
    names: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--problems" and i + 1 < len(argv):
            names += csv_list(argv[i + 1])
        elif arg.startswith("--problems="):
            names += csv_list(arg.partition("=")[2])
    return unknown_problems(names)


#: Options that name an output file, checked (folder created, writable) before any subcommand starts
#: working; output folders (``--out``, ``--figures``) are checked by the subcommands that have them.
OUTPUT_FILE_OPTIONS = {"json": "--json"}


def _check_output_files(args: argparse.Namespace) -> None:
    for dest, flag in OUTPUT_FILE_OPTIONS.items():
        value = getattr(args, dest, None)
        if isinstance(value, (str, os.PathLike)):  # ``constrain list --json`` is a switch, not a path
            check_output_file(os.fspath(value), flag)


def _interrupted(command: str, stop: KeyboardInterrupt, note: str | None) -> int:
    """Say so in one line; the exit status is 128 + the signal number. After a real signal the
    process ends here: the interpreter's own shutdown (torch, numba, cvxpy) takes seconds."""
    print(f"{command}: interrupted" + (f"; {note}" if note else "") + ".", file=sys.stderr)
    if not isinstance(stop, Interrupted):  # raised by code, not by a signal: an ordinary return
        return 128 + signal.SIGINT
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(stop.exit_status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
