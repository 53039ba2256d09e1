"""The command-line scaffold of a study subcommand with its own runner (``constrain study l1``,
``constrain study psilon``): the options every such study has, its configuration from the
parsed options, and its output folders (checked before any work).

A study module keeps a frozen ``Config`` dataclass (with a ``jobs`` field: worker processes) and a
``quick_config()``; it adds its own options, then :func:`add_run_options`, and in ``run(args)``
calls :func:`config_from` and :func:`output_dirs` before it starts working.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from experiments._args import positive_int
from experiments._paths import figures_dir, prepare_output_dir

C = TypeVar("C")


def add_selection_options(parser: argparse.ArgumentParser, quick: str, **choices: Sequence[str]) -> None:
    """``--quick`` (``quick``: what the smoke run is), ``--datasets`` (the bundled data sets) and one
    ``--<name> NAME ...`` option per keyword (e.g. ``methods=METHODS``), each defaulting to all."""
    from experiments.datasets import BUNDLED

    parser.add_argument("--quick", action="store_true", help=f"small smoke run: {quick}")
    for name, names in {"datasets": tuple(BUNDLED), **choices}.items():
        what = "data sets" if name == "datasets" else name
        parser.add_argument(
            f"--{name}", nargs="+", choices=list(names), metavar="NAME", help=f"{what} (default: all: {', '.join(names)})"
        )


def add_run_options(parser: argparse.ArgumentParser, name: str, files: str, workers: int = 2) -> None:
    """``--workers``, ``--figures``, ``--out`` (default ``results/<name>``) and ``--no-progress``;
    ``files`` says what goes into the figures folder (e.g. ``"l1.md and the l1_*.png figures"``)."""
    parser.add_argument("--workers", type=positive_int, metavar="N", help=f"worker processes (default {workers})")
    parser.add_argument(
        "--figures",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"folder for {files} (default: figures/ for the full run; OUT/figures for --quick or "
        f"any other option that changes the results)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results") / name,
        metavar="DIR",
        help=f"every result as JSON in DIR/{name}.json (default results/{name}/)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from(args: argparse.Namespace, full: C, quick: C, fields: Iterable[str]) -> C:
    """``quick`` (with ``--quick``) or ``full``, with the config ``fields`` given as options of the
    same name replaced; lists become tuples, ``--workers`` sets ``jobs``."""
    updates: dict[str, Any] = {}
    for field, dest in [*((f, f) for f in fields), ("jobs", "workers")]:
        value = getattr(args, dest)
        if value is not None and value != []:
            updates[field] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(quick if args.quick else full, **updates)  # type: ignore[type-var]  # C is unbound, but every study's config is a dataclass


def output_dirs(args: argparse.Namespace, cfg: Any, full: Any) -> tuple[Path, Path]:
    """``(--out folder, figures folder)``, both created and probed for writing. The figures go to
    ``figures/`` only when ``cfg`` is the documented full run ``full`` (the worker count aside)."""
    documented = dataclasses.replace(cfg, jobs=0) == dataclasses.replace(full, jobs=0)
    out = prepare_output_dir(args.out, "--out")
    return out, prepare_output_dir(figures_dir(args.figures, out, documented), "--figures")
