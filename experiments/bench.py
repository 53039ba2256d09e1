r"""``constrain bench``: timings, as ratios measured in one run on the same tensors.

Nested subcommands, one per benchmark; each adds its parser in a function listed in
:data:`BENCHMARKS` and sets ``func`` on it.

``constrain bench projections``: the L1-ball and simplex projections per (set, n, batch,
dtype), on one tensor of ``batch`` rows of ``n`` standard normal values and radius 1:

- ``numba``: the compiled CPU kernels (what ``project_l1_ball`` / ``project_simplex`` run on
  the CPU when numba is installed); ``torch``: the pure-torch path (GPUs, or no numba);
- ``sort``: the sort-based reference ``_project_sort`` (O(n log n));
- ``abs``: one elementwise pass ``torch.abs(x, out=buf)`` over the same tensor, the floor;
- ``cvxpy``: ``set.reference_projection`` on a few rows (small n only), per row.

Every call is timed with ``time.perf_counter`` after warm-up runs; the methods are
interleaved within each repeat (in a rotating order) so that machine noise hits all alike,
and the median of the repeats is reported. All methods run on the same number of threads
(``--threads``, default 1: on a shared machine a descheduled worker stalls a multi-threaded
call, which swamps the ratios). Absolute times vary with the machine; compare the ratios.

``constrain bench strategies``: the per-step overhead of every strategy family and the
Lagrangian side by side with Cooper (:mod:`experiments.bench_strategies`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from experiments._bench_default import short_default

#: Sizes and batches of the default ``bench projections`` run: about 2^20 values per tensor.
DEFAULT_SIZES = (16, 1000, 100_000)
DEFAULT_VALUES = 1 << 20
#: cvxpy is timed only up to this n (one solve per row; it is slow).
CVXPY_MAX_N = 1000
SET_NAMES = ("l1ball", "simplex")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Targets of the projection kernels (see the Performance issue); reported, never asserted.
TARGET_SORT_SPEEDUP = 20.0  # for n >= TARGET_LARGE_N: at least this much faster than sorting
TARGET_ABS_RATIO = 10.0  # ... and within this factor of one elementwise pass
TARGET_LARGE_N = 1000
TARGET_CVXPY_SPEEDUP = 1000.0  # per row, against cvxpy


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _name_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown or text!r}; choose from {','.join(choices)}")
        return names

    return parse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


# ---------------------------------------------------------------------------------------------
# Timing


def time_interleaved(
    methods: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Seconds per call of each method: ``warmup`` untimed rounds, then ``repeats`` rounds.

    Within a round every method runs once; the order rotates from round to round.
    ``sync``: called before starting and before stopping each clock (e.g. ``torch.cuda.synchronize``).
    """
    names = list(methods)
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for name in names:
            methods[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = time.perf_counter()
            methods[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------------------------
# bench projections


def _projection_methods(set_name: str, x: torch.Tensor, buf: torch.Tensor) -> dict[str, Callable[[], object]]:
    from constrain._simplex import _numba_kernels, _project

    ball = set_name == "l1ball"
    methods: dict[str, Callable[[], object]] = {"abs": lambda: torch.abs(x, out=buf)}
    if _numba_kernels() is not None and x.device.type == "cpu":
        methods["numba"] = lambda: _project(x, 1.0, -1, ball, "numba")
    methods["torch"] = lambda: _project(x, 1.0, -1, ball, "torch")
    methods["sort"] = lambda: _project(x, 1.0, -1, ball, "sort")
    return methods


def _cvxpy_per_row(set_name: str, x: torch.Tensor, rows: int, repeats: int) -> float:
    """Median seconds per row of ``set.reference_projection`` on ``rows`` rows (after one warm-up row)."""
    from constrain import L1Ball, Simplex

    constraint = L1Ball(1.0) if set_name == "l1ball" else Simplex(1.0)
    sample = x[:rows].double().cpu()
    constraint.reference_projection(sample[:1])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        constraint.reference_projection(sample)
        times.append((time.perf_counter() - start) / sample.shape[0])
    return statistics.median(times)


def bench_projections(
    sets: Sequence[str],
    sizes: Sequence[int],
    batches: Sequence[int],
    dtypes: Sequence[str],
    repeats: int,
    cvxpy_rows: int,
    seed: int = 0,
    progress: bool = False,
    device: str = "cpu",
) -> list[dict]:
    """One record per (set, n, batch, dtype): median milliseconds per call and the ratios."""
    from constrain._simplex import _numba_kernels

    if _numba_kernels() is not None and progress:
        print("(loading the numba kernels; the very first run on a machine compiles them)", file=sys.stderr, flush=True)
    records = []
    generator = torch.Generator().manual_seed(seed)
    for n, batch in zip(sizes, batches):
        for dtype_name in dtypes:
            x = torch.randn(batch, n, generator=generator, dtype=DTYPES[dtype_name]).to(device)
            buf = torch.empty_like(x)
            for set_name in sets:
                if progress:
                    print(f"  {set_name} n={n} batch={batch} {dtype_name}", file=sys.stderr, flush=True)
                sync = torch.cuda.synchronize if x.device.type == "cuda" else None
                times = time_interleaved(_projection_methods(set_name, x, buf), repeats, sync=sync)
                ms = {name: statistics.median(values) * 1e3 for name, values in times.items()}
                fastest = {name: min(values) * 1e3 for name, values in times.items()}
                cvxpy_ms = None
                if cvxpy_rows and n <= CVXPY_MAX_N:
                    cvxpy_ms = _cvxpy_per_row(set_name, x, min(cvxpy_rows, batch), max(1, min(repeats, 3))) * 1e3
                record = _projection_record(set_name, n, batch, dtype_name, ms, cvxpy_ms)
                record["min_ms"] = fastest  # context: the median is what the table and targets use
                records.append(record)
    return records


def _projection_record(set_name: str, n: int, batch: int, dtype: str, ms: dict, cvxpy_ms: float | None) -> dict:
    ours = "numba" if "numba" in ms else "torch"
    ratios = {f"{name}_over_abs": ms[name] / ms["abs"] for name in ms if name != "abs"}
    for name in ("numba", "torch"):
        if name in ms:
            ratios[f"sort_over_{name}"] = ms["sort"] / ms[name]
    per_row = ms[ours] / batch
    if cvxpy_ms is not None:
        ratios[f"cvxpy_per_row_over_{ours}_per_row"] = cvxpy_ms / per_row
    targets = {}
    if n >= TARGET_LARGE_N:
        targets["sort_speedup>=20"] = ratios[f"sort_over_{ours}"] >= TARGET_SORT_SPEEDUP
        targets["within_10x_abs"] = ratios[f"{ours}_over_abs"] <= TARGET_ABS_RATIO
    else:
        targets["not_slower_than_sort"] = ratios[f"sort_over_{ours}"] >= 1.0
    if cvxpy_ms is not None:
        targets["cvxpy_speedup>=1000"] = ratios[f"cvxpy_per_row_over_{ours}_per_row"] >= TARGET_CVXPY_SPEEDUP
    return {
        "set": set_name,
        "n": n,
        "batch": batch,
        "dtype": dtype,
        "ours": ours,
        "median_ms": {**ms, **({"cvxpy_per_row": cvxpy_ms} if cvxpy_ms is not None else {})},
        "ratios": ratios,
        "targets": targets,
    }


def format_projection_table(records: Sequence[dict]) -> str:
    """The table ``bench projections`` prints: median ms per call, and ratios."""
    header = (
        f"{'set':<8} {'n':>7} {'batch':>6} {'dtype':<8} {'abs ms':>8} {'numba ms':>9} {'torch ms':>9} {'sort ms':>9} "
        f"{'numba/abs':>9} {'torch/abs':>9} {'sort/numba':>10} {'sort/torch':>10} {'cvxpy ms/row':>12} {'cvxpy/ours':>10}  targets"
    )
    lines = [header, "-" * len(header)]

    def cell(value: float | None, width: int, digits: int = 3) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    def ratio(value: float | None, width: int) -> str:
        if value is None:
            return f"{'-':>{width}}"
        return f"{value:>{width - 1}.1f}x" if value < 1e4 else f"{value:>{width - 1}.2e}x"

    for rec in records:
        ms, r = rec["median_ms"], rec["ratios"]
        ours = rec["ours"]
        verdict = " ".join(f"{name}:{'ok' if ok else 'MISS'}" for name, ok in rec["targets"].items())
        lines.append(
            f"{rec['set']:<8} {rec['n']:>7} {rec['batch']:>6} {rec['dtype']:<8} {cell(ms['abs'], 8)} "
            f"{cell(ms.get('numba'), 9)} {cell(ms['torch'], 9)} {cell(ms['sort'], 9, 2)} "
            f"{ratio(r.get('numba_over_abs'), 9)} {ratio(r.get('torch_over_abs'), 9)} "
            f"{ratio(r.get('sort_over_numba'), 10)} {ratio(r.get('sort_over_torch'), 10)} "
            f"{cell(ms.get('cvxpy_per_row'), 12, 2)} {ratio(r.get(f'cvxpy_per_row_over_{ours}_per_row'), 10)}  {verdict}"
        )
    return "\n".join(lines)


def _environment() -> dict:
    from constrain._simplex import _numba_kernels

    numba_version = None
    if _numba_kernels() is not None:
        import numba

        numba_version = numba.__version__
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numba": numba_version,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
    }


def run_projections(args: argparse.Namespace) -> int:
    """``constrain bench projections``: print the table, optionally write JSON; always 0."""
    sizes = args.sizes
    if args.batch is None:
        batches = [max(1, round(DEFAULT_VALUES / n)) for n in sizes]
    elif len(args.batch) == 1:
        batches = args.batch * len(sizes)
    elif len(args.batch) == len(sizes):
        batches = args.batch
    else:
        raise ValueError(f"--batch takes one value or one per size; got {len(args.batch)} for {len(sizes)} sizes.")
    try:
        device = torch.device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        raise ValueError(f"--device {args.device!r} is not usable here: {error}") from None
    if args.threads < 0:
        raise ValueError(f"--threads must be 0 (torch's setting) or positive, got {args.threads}.")
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        start = time.perf_counter()
        records = bench_projections(
            args.sets, sizes, batches, args.dtypes, args.repeats, args.cvxpy_rows, args.seed, progress=True,
            device=args.device,
        )
        seconds = time.perf_counter() - start
        env = _environment()
    finally:
        torch.set_num_threads(threads_before)
    print(
        f"constrain bench projections: median of {args.repeats} interleaved repeats per method, ms per call "
        f"(x: batch rows of n N(0,1) values, radius 1; torch {env['torch']}, numba {env['numba']}, "
        f"{env['threads']} threads, device {args.device})"
    )
    print(format_projection_table(records))
    print(
        "abs = torch.abs(x, out=buf), one elementwise pass; numba/torch = the kernels (numba is what the CPU runs); "
        "sort = sort-based reference;\ncvxpy = set.reference_projection per row; cvxpy/ours = per-row ratio. "
        f"Targets: n >= {TARGET_LARGE_N}: sort/ours >= {TARGET_SORT_SPEEDUP:g}x and ours/abs <= {TARGET_ABS_RATIO:g}x; "
        f"smaller n: not slower than sort; cvxpy/ours >= {TARGET_CVXPY_SPEEDUP:g}x. ({seconds:.1f} s)"
    )
    if args.json:
        payload = {
            "benchmark": "projections",
            "config": {
                "sets": list(args.sets),
                "sizes": list(sizes),
                "batches": list(batches),
                "dtypes": list(args.dtypes),
                "repeats": args.repeats,
                "cvxpy_rows": args.cvxpy_rows,
                "seed": args.seed,
                "device": args.device,
            },
            "environment": env,
            "seconds": seconds,
            "results": records,
        }
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


def _add_projections(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "projections",
        help="time the L1-ball and simplex projections against sorting, one elementwise pass and cvxpy",
        description="Median time per call of the numba and torch projection kernels, the sort-based reference, "
        "one elementwise pass (torch.abs) and cvxpy (per row, small n), interleaved on the same tensor; "
        "prints ratios and the targets they meet.",
    )
    parser.add_argument("--sizes", type=_int_list, default=list(DEFAULT_SIZES),
                        help=f"comma-separated row lengths n (default: {','.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--batch", type=_int_list, default=None,
                        help=f"rows per tensor: one value, or one per size (default: about {DEFAULT_VALUES} values "
                        "per tensor, i.e. 2^20 / n rows)")
    parser.add_argument("--repeats", type=_positive_int, default=11, help="timed repeats per method (default: 11)")
    parser.add_argument("--sets", type=_name_list(SET_NAMES), default=list(SET_NAMES),
                        help=f"comma-separated sets (default: {','.join(SET_NAMES)})")
    parser.add_argument("--dtypes", type=_name_list(tuple(DTYPES)), default=["float32"],
                        help="comma-separated dtypes (default: float32)")
    parser.add_argument("--cvxpy-rows", type=int, default=3,
                        help=f"rows solved with cvxpy per timing for n <= {CVXPY_MAX_N} (default: 3; 0 skips cvxpy)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for every method (torch.set_num_threads; the numba kernels follow it); "
                        "0 keeps torch's setting (default: 1: one core each, the steadiest ratios on a shared machine)")
    parser.add_argument("--device", default="cpu",
                        help="torch device of the tensors, e.g. cuda (default: cpu; numba runs on the CPU only)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")
    parser.set_defaults(func=run_projections)
    return parser


def _add_strategies(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``constrain bench strategies``: per-step overhead of each strategy, and Cooper side by side."""
    from experiments.bench_strategies import add_parser as add_strategies

    return add_strategies(subparsers)


#: One function per ``constrain bench`` subcommand; each adds its parser and sets ``func``.
BENCHMARKS: list[Callable[[argparse._SubParsersAction], argparse.ArgumentParser]] = [_add_projections, _add_strategies]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``constrain bench`` (with its own subcommands) to the CLI."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmarks: timings reported as ratios measured in one run",
        description="Benchmarks. Each subcommand times its contenders interleaved on the same inputs and reports "
        "medians and ratios; absolute times depend on the machine. Without BENCHMARK: a short run of both.",
    )
    benches = parser.add_subparsers(dest="bench_command", metavar="[BENCHMARK]", required=False)
    for add in BENCHMARKS:
        add(benches)
    parser.set_defaults(func=short_default(parser))
    return parser
