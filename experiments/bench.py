r"""``constrain bench``: timings, as ratios measured in one run on the same tensors.

Nested subcommands, one per benchmark; each adds its parser in a function listed in
:data:`BENCHMARKS` and sets ``func`` on it.

``constrain bench projections``: the L1-ball and simplex projections per (set, n, batch,
dtype, threads), on one tensor of ``batch`` rows of ``n`` standard normal values and radius 1:

- ``ours``: the public ``project_l1_ball`` / ``project_simplex`` (numba on the CPU when
  installed); ``numba`` and ``torch``: the two paths (torch is what a GPU runs);
- ``sort``: the sort-based reference ``_project_sort`` (O(n log n));
- ``abs``: one elementwise pass ``torch.abs(x, out=buf)`` over the same tensor: x / abs is
  the cost in elementwise passes;
- ``cvxpy``: ``set.reference_projection`` on a few rows (small n only), per row.

It prints the machine first (CPU model, thread counts, library versions, load), so a table
can be traced to it. Every call is timed with ``time.perf_counter`` after warm-up runs; the
methods are interleaved within each repeat (in a random order) so that machine noise hits
all alike, and the median of the repeats is reported. All methods of a run share its thread
count; ``--threads 1,0`` (the default) runs at one thread and at torch's default count.
Targets print as ok/MISS; ``--check`` exits 1 when one misses. Absolute times vary with the
machine; compare the ratios.

``constrain bench strategies``: the per-step overhead of every strategy family and the
Lagrangian side by side with Cooper (:mod:`experiments.bench_strategies`).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from experiments._args import positive_int
from experiments._bench_default import short_default

#: Sizes and batches of the default ``bench projections`` run: about 2^20 values per tensor.
DEFAULT_SIZES = (16, 1000, 100_000)
DEFAULT_VALUES = 1 << 20
#: cvxpy is timed only up to this n (one solve per row; it is slow).
CVXPY_MAX_N = 1000
SET_NAMES = ("l1ball", "simplex")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Targets of the projection kernels (issue 13), for the public API (``ours``); printed as
#: ok/MISS, and ``--check`` exits non-zero when one misses.
TARGET_SORT_SPEEDUP = 25.0  # for n >= TARGET_LARGE_N: at least this much faster than sorting
TARGET_ABS_RATIO = 6.0  # ... and at most this many elementwise passes (torch.abs(x, out=buf))
TARGET_TORCH_ABS_RATIO = 20.0  # the pure-torch path (what a GPU runs), on the CPU, n >= TARGET_LARGE_N
TARGET_LARGE_N = 1000
TARGET_SMALL_SORT_SPEEDUP = 3.0  # n < TARGET_LARGE_N (16 values a row): at least this much faster than sorting
TARGET_CVXPY_SPEEDUP = 1000.0  # per row, against cvxpy


def _ints_at_least(text: str, minimum: int) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < minimum for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= {minimum}, got {text!r}")
    return values


def _int_list(text: str) -> list[int]:
    return _ints_at_least(text, 1)


def _count_list(text: str) -> list[int]:
    return _ints_at_least(text, 0)


def _name_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown or text!r}; choose from {','.join(choices)}")
        return names

    return parse


# ---------------------------------------------------------------------------------------------
# Timing


def time_interleaved(
    methods: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Seconds per call of each method: ``warmup`` untimed rounds, then ``repeats`` rounds.

    Within a round every method runs once, in a fresh (seeded) random order: a rotation would keep each
    method right behind the same one, and what runs before a call matters on a CPU (a parallel torch op
    leaves its OpenMP threads spinning for milliseconds, which slows a multithreaded call right after it).
    ``sync``: called before starting and before stopping each clock (e.g. ``torch.cuda.synchronize``).
    """
    names = list(methods)
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for name in names:
            methods[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    order = random.Random(0)
    for _ in range(repeats):
        for name in order.sample(names, len(names)):
            sync()
            start = time.perf_counter()
            methods[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------------------------
# bench projections


def _projection_methods(set_name: str, x: torch.Tensor, buf: torch.Tensor) -> dict[str, Callable[[], object]]:
    from constrain import numba_available, project_l1_ball, project_simplex

    public = project_l1_ball if set_name == "l1ball" else project_simplex
    methods: dict[str, Callable[[], object]] = {"abs": lambda: torch.abs(x, out=buf), "ours": lambda: public(x, 1.0)}
    if numba_available() and x.device.type == "cpu":
        methods["numba"] = lambda: public(x, 1.0, method="numba")
    methods["torch"] = lambda: public(x, 1.0, method="torch")
    methods["sort"] = lambda: public(x, 1.0, method="sort")
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
    threads: int | None = None,
) -> list[dict]:
    """One record per (set, n, batch, dtype): median milliseconds per call and the ratios (``threads``: recorded)."""
    from constrain import numba_available

    if numba_available() and progress:
        print("(loading the numba kernels; the very first run on a machine compiles them)", file=sys.stderr, flush=True)
    records = []
    generator = torch.Generator().manual_seed(seed)
    for n, batch in zip(sizes, batches, strict=True):
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
                record["threads"] = threads if threads is not None else torch.get_num_threads()
                record["min_ms"] = fastest  # context: the median is what the table and targets use
                records.append(record)
    return records


def _projection_record(set_name: str, n: int, batch: int, dtype: str, ms: dict, cvxpy_ms: float | None) -> dict:
    """Ratios and targets of one timing; ``ours`` is the public function (``project_l1_ball`` / ``project_simplex``)."""
    ratios = {f"{name}_over_abs": ms[name] / ms["abs"] for name in ms if name != "abs"}
    for name in ("ours", "numba", "torch"):
        if name in ms:
            ratios[f"sort_over_{name}"] = ms["sort"] / ms[name]
    per_row = ms["ours"] / batch
    if cvxpy_ms is not None:
        ratios["cvxpy_per_row_over_ours_per_row"] = cvxpy_ms / per_row
    targets = {}
    if n >= TARGET_LARGE_N:
        targets[f"passes<={TARGET_ABS_RATIO:g}"] = ratios["ours_over_abs"] <= TARGET_ABS_RATIO
        targets[f"sort/ours>={TARGET_SORT_SPEEDUP:g}"] = ratios["sort_over_ours"] >= TARGET_SORT_SPEEDUP
        targets[f"torch_passes<={TARGET_TORCH_ABS_RATIO:g}"] = ratios["torch_over_abs"] <= TARGET_TORCH_ABS_RATIO
    else:
        targets[f"sort/ours>={TARGET_SMALL_SORT_SPEEDUP:g}"] = ratios["sort_over_ours"] >= TARGET_SMALL_SORT_SPEEDUP
    if cvxpy_ms is not None:
        targets[f"cvxpy/ours>={TARGET_CVXPY_SPEEDUP:g}"] = ratios["cvxpy_per_row_over_ours_per_row"] >= TARGET_CVXPY_SPEEDUP
    return {
        "set": set_name,
        "n": n,
        "batch": batch,
        "dtype": dtype,
        "ours": "ours",
        "median_ms": {**ms, **({"cvxpy_per_row": cvxpy_ms} if cvxpy_ms is not None else {})},
        "ratios": ratios,
        "targets": targets,
    }


def format_projection_table(records: Sequence[dict]) -> str:
    """The table ``bench projections`` prints: median ms per call, passes (x / abs) and speed-ups over sorting."""
    header = (
        f"{'set':<8} {'n':>7} {'batch':>6} {'dtype':<8} {'thr':>3} {'abs ms':>7} {'ours ms':>8} {'sort ms':>8} "
        f"{'ours/abs':>8} {'numba/abs':>9} {'torch/abs':>9} {'sort/ours':>9} {'sort/torch':>10} {'cvxpy/ours':>10}  targets"
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
        verdict = " ".join(f"{name}:{'ok' if ok else 'MISS'}" for name, ok in rec["targets"].items())
        lines.append(
            f"{rec['set']:<8} {rec['n']:>7} {rec['batch']:>6} {rec['dtype']:<8} {rec.get('threads', '-'):>3} "
            f"{cell(ms['abs'], 7)} {cell(ms['ours'], 8)} {cell(ms['sort'], 8, 2)} "
            f"{ratio(r.get('ours_over_abs'), 8)} {ratio(r.get('numba_over_abs'), 9)} {ratio(r.get('torch_over_abs'), 9)} "
            f"{ratio(r.get('sort_over_ours'), 9)} {ratio(r.get('sort_over_torch'), 10)} "
            f"{ratio(r.get('cvxpy_per_row_over_ours_per_row'), 10)}  {verdict}"
        )
    return "\n".join(lines)


def _cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere platform.processor())."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _environment() -> dict:
    import os

    import numpy

    from constrain import numba_available

    numba_version = numba_threads = None
    if numba_available():
        import numba

        numba_version, numba_threads = numba.__version__, numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # set at import from the environment
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numba": numba_version,
        "numpy": numpy.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "numba_threads": numba_threads,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "load": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _environment_line(env: dict) -> str:
    load = "-" if env["load"] is None else ", ".join(f"{value:.2f}" for value in env["load"])
    return (
        f"machine: {env['cpu']} ({env['cpus']} logical CPUs, {env['machine']}); torch {env['torch']} "
        f"({env['threads']} threads, {env['interop_threads']} interop), numba {env['numba']} "
        f"({env['numba_threads']} threads), numpy {env['numpy']}, python {env['python']}; load average {load}"
    )


def _projection_batches(args: argparse.Namespace) -> list[int]:
    """Rows per size: ``--batch`` (one value, or one per size), else about ``DEFAULT_VALUES`` values per call."""
    sizes = args.sizes
    if args.batch is None:
        return [max(1, round(DEFAULT_VALUES / n)) for n in sizes]
    if len(args.batch) == 1:
        return args.batch * len(sizes)
    if len(args.batch) == len(sizes):
        return args.batch
    raise ValueError(f"--batch takes one value or one per size; got {len(args.batch)} for {len(sizes)} sizes.")


def _check_projection_args(args: argparse.Namespace) -> None:
    try:
        torch.empty(0, device=torch.device(args.device))
    except (RuntimeError, AssertionError) as error:
        raise ValueError(f"--device {args.device!r} is not usable here: {error}") from None
    if any(t < 0 for t in args.threads):
        raise ValueError(f"--threads takes 0 (torch's default) or positive counts, got {args.threads}.")


def _bench_every_thread_count(args: argparse.Namespace, batches: list[int]) -> list[dict]:
    """The records of :func:`bench_projections` at each ``--threads`` count (0: torch's default)."""
    threads_before = torch.get_num_threads()
    records: list[dict] = []
    try:
        for threads in args.threads:
            torch.set_num_threads(threads or threads_before)
            records += bench_projections(
                args.sets,
                args.sizes,
                batches,
                args.dtypes,
                args.repeats,
                args.cvxpy_rows,
                args.seed,
                progress=True,
                device=args.device,
                threads=torch.get_num_threads(),
            )
    finally:
        torch.set_num_threads(threads_before)
    return records


def _print_projection_report(args: argparse.Namespace, records: list[dict], seconds: float) -> list[str]:
    """Print the table, its legend and the missed targets; return the missed targets."""
    print(
        f"constrain bench projections: median of {args.repeats} interleaved repeats per method, ms per call "
        f"(x: batch rows of n N(0,1) values, radius 1; thr = threads; device {args.device})"
    )
    print(format_projection_table(records))
    print(
        "abs = torch.abs(x, out=buf), one elementwise pass; ours = project_l1_ball / project_simplex (public API; "
        "numba on the CPU); numba, torch = the two paths; sort = sort-based reference; cvxpy = per row.\n"
        f"Targets: n >= {TARGET_LARGE_N}: ours/abs <= {TARGET_ABS_RATIO:g} passes, sort/ours >= {TARGET_SORT_SPEEDUP:g}x, "
        f"torch/abs <= {TARGET_TORCH_ABS_RATIO:g}; smaller n: sort/ours >= {TARGET_SMALL_SORT_SPEEDUP:g}x; "
        f"cvxpy/ours >= {TARGET_CVXPY_SPEEDUP:g}x. ({seconds:.1f} s)"
    )
    missed = [
        f"{rec['set']} n={rec['n']} threads={rec['threads']} {name}"
        for rec in records
        for name, ok in rec["targets"].items()
        if not ok
    ]
    print(f"targets missed: {len(missed)}" + ("" if not missed else " (" + "; ".join(missed) + ")"))
    return missed


def run_projections(args: argparse.Namespace) -> int:
    """``constrain bench projections``: print the machine and the table, optionally write JSON;
    1 if ``--check`` and a target misses."""
    batches = _projection_batches(args)
    _check_projection_args(args)
    env = _environment()
    print(_environment_line(env), flush=True)
    start = time.perf_counter()
    records = _bench_every_thread_count(args, batches)
    seconds = time.perf_counter() - start
    missed = _print_projection_report(args, records, seconds)
    if args.json:
        config = {
            "sets": list(args.sets),
            "sizes": list(args.sizes),
            "batches": list(batches),
            "dtypes": list(args.dtypes),
            "repeats": args.repeats,
            "cvxpy_rows": args.cvxpy_rows,
            "seed": args.seed,
            "device": args.device,
            "threads": list(args.threads),
        }
        payload = {"benchmark": "projections", "config": config, "environment": env, "seconds": seconds, "results": records}
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=2)
        print(f"wrote {args.json}")
    return 1 if args.check and missed else 0


def _add_projections(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "projections",
        help="time the L1-ball and simplex projections against sorting, one elementwise pass and cvxpy",
        description="Median time per call of the numba and torch projection kernels, the sort-based reference, "
        "one elementwise pass (torch.abs) and cvxpy (per row, small n), interleaved on the same tensor; "
        "prints ratios and the targets they meet.",
    )
    parser.add_argument(
        "--sizes",
        type=_int_list,
        default=list(DEFAULT_SIZES),
        help=f"comma-separated row lengths n (default: {','.join(map(str, DEFAULT_SIZES))})",
    )
    parser.add_argument(
        "--batch",
        type=_int_list,
        default=None,
        help=f"rows per tensor: one value, or one per size (default: about {DEFAULT_VALUES} values "
        "per tensor, i.e. 2^20 / n rows)",
    )
    parser.add_argument("--repeats", type=positive_int, default=11, help="timed repeats per method (default: 11)")
    parser.add_argument(
        "--sets",
        type=_name_list(SET_NAMES),
        default=list(SET_NAMES),
        help=f"comma-separated sets (default: {','.join(SET_NAMES)})",
    )
    parser.add_argument(
        "--dtypes", type=_name_list(tuple(DTYPES)), default=["float32"], help="comma-separated dtypes (default: float32)"
    )
    parser.add_argument(
        "--cvxpy-rows",
        type=int,
        default=3,
        help=f"rows solved with cvxpy per timing for n <= {CVXPY_MAX_N} (default: 3; 0 skips cvxpy)",
    )
    parser.add_argument(
        "--threads",
        type=_count_list,
        default=[1, 0],
        help="comma-separated thread counts, each a full run (torch.set_num_threads; the numba kernels "
        "follow it); 0 is torch's default (default: 1,0)",
    )
    parser.add_argument("--check", action="store_true", help="exit with status 1 when any target misses (default: report only)")
    parser.add_argument(
        "--device", default="cpu", help="torch device of the tensors, e.g. cuda (default: cpu; numba runs on the CPU only)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")
    parser.set_defaults(func=run_projections)
    return parser


def _add_strategies(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``constrain bench strategies``: per-step overhead of each strategy, and Cooper side by side."""
    from experiments.bench_strategies import add_parser as add_strategies

    return add_strategies(subparsers)


def _add_polytope(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``constrain bench polytope``: the polytope projection layer against qpth and cvxpylayers."""
    from experiments.bench_polytope import add_parser as add_polytope

    return add_polytope(subparsers)


#: One function per ``constrain bench`` subcommand; each adds its parser and sets ``func``.
BENCHMARKS: list[Callable[[argparse._SubParsersAction], argparse.ArgumentParser]] = [
    _add_projections,
    _add_strategies,
    _add_polytope,
]


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
