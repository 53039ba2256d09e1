"""``constrain bench`` with no benchmark named: both benchmarks, short (about 16 s of CPU).

The sizes are cut down (the ratios are noisier than the full runs'); the output says how to run
each benchmark in full.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

#: The argument lists of the short default, one per benchmark, parsed by the ``bench`` parser.
SHORT_RUNS: tuple[tuple[str, ...], ...] = (
    ("projections", "--sizes", "1000,100000", "--repeats", "3", "--cvxpy-rows", "1"),
    ("strategies", "--rounds", "2", "--width", "128", "--batch", "64", "--cooper-steps", "200"),
)


def short_default(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """The ``func`` of ``constrain bench`` without a subcommand: run :data:`SHORT_RUNS` through ``parser``."""

    def run(args: argparse.Namespace) -> int:
        status = 0
        for argv in SHORT_RUNS:
            print(
                f"== constrain bench {' '.join(argv)}  (short default; `constrain bench {argv[0]}` runs it in full)", flush=True
            )
            sub = parser.parse_args(list(argv))
            status = max(status, int(sub.func(sub) or 0))
            print(flush=True)
        return status

    return run
