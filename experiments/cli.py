"""The ``constrain`` command line: ``constrain validate | list | study | bench``.

Each subcommand lives in its own module, which exposes ``add_parser(subparsers)``; the parser
it adds carries a ``run(args) -> int`` function as its default ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules that each add one subcommand, in the order ``constrain --help`` lists them.
COMMAND_MODULES = (
    "experiments.validate",
    "experiments.listing",
    "experiments.study_cmd",
    "experiments.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="constrain",
        description="Train networks under constraints and compare the ways of enforcing them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, KeyError, LookupError, ArithmeticError) as error:
        # bad input (a name, an option, a value): the message says which and how to fix it
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"constrain {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as error:  # a folder that cannot be written (--out / --figures is a file, no permission, disk full)
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        print(f"constrain {args.command}: error: {error.strerror or error}{where}; check the paths given on the "
              f"command line (--out and --figures must be writable folders).", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"constrain {args.command}: interrupted; finished work is kept.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
