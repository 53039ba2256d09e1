"""``constrain list``: the strategies, their options, the constraints, and the support matrix."""

from __future__ import annotations

import argparse
import inspect
import json

import strategies
from experiments.catalogue import KINDS_CATALOGUE, example_target

#: The constraints of the support matrix (the catalogue's kinds), as targets on a layer called ``layer``
#: (outputs: 2 values per sample; input-dependent right-hand sides read 3 input features).
CONSTRAINTS = {kind.label: example_target(kind.key) for kind in KINDS_CATALOGUE}


def support_matrix() -> dict[str, dict[str, str | None]]:
    """``{strategy: {constraint: None if supported else the reason}}`` for every registered strategy."""
    return {
        name: {label: strategies.strategy_class(name).unsupported_reason(target) for label, target in CONSTRAINTS.items()}
        for name in strategies.available()
    }


def _options(name: str) -> str:
    parts = []
    for option, param in strategies.options_of(strategies.strategy_class(name)).items():
        default = "" if param.default is inspect.Parameter.empty else f"={param.default!r}"
        parts.append(f"{option}{default}")
    return ", ".join(parts) or "-"


def render(matrix: dict[str, dict[str, str | None]], reasons: bool = False) -> str:
    """The strategies table and the support matrix as plain text; ``reasons`` adds why a cell is refused."""
    lines = ["Strategies", ""]
    width = max(map(len, matrix)) + 2
    for name in matrix:
        cls = strategies.strategy_class(name)
        lines.append(f"  {name:<{width}}[{cls.family}] {cls.summary}")
        lines.append(f"  {'':<{width}}options: {_options(name)}")
    lines += ["", "Constraints", ""]
    for i, (label, target) in enumerate(CONSTRAINTS.items(), 1):
        lines.append(f"  ({i}) {label}: {target.label.replace('layer.weight', 'W')}")
    lines += [
        "",
        "Support matrix" + (" (no[k]: reason k below)" if reasons else " (constrain list --reasons says why a cell is refused)"),
        "",
    ]
    header = f"  {'strategy':<{width}}" + "".join(f"({i})".center(7) for i in range(1, len(CONSTRAINTS) + 1))
    lines.append(header)
    notes: dict[str, int] = {}
    for name, row in matrix.items():
        cells = []
        for reason in row.values():
            if reason is None:
                cells.append("yes".center(7))
            elif reasons:
                cells.append(f"no[{notes.setdefault(reason, len(notes) + 1)}]".center(7))
            else:
                cells.append("no".center(7))
        lines.append(f"  {name:<{width}}" + "".join(cells))
    if notes:
        lines.append("")
        lines += [f"  [{key}] {reason}" for reason, key in notes.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    matrix = support_matrix()
    if args.json:
        print(json.dumps(matrix, indent=2))
    else:
        print(render(matrix, reasons=args.reasons))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list",
        help="strategies, constraints and which strategy supports which",
        description="Every registered strategy with its family and options, the constraint kinds, and the "
        "support matrix: which strategy can enforce which constraint (--reasons: why not).",
    )
    parser.add_argument("--json", action="store_true", help="print the support matrix as JSON")
    parser.add_argument("--reasons", action="store_true", help="say why each refused cell is refused")
    parser.set_defaults(func=run)
