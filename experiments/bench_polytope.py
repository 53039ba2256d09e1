r"""``constrain bench polytope``: the projection layer onto a polytope against qpth and cvxpylayers.

The polytope is the one of DC3's benchmark (``experiments.dc3_study``): :math:`n = 100` variables,
:math:`A y = b` (50 rows, ``b`` one row per sample from the data set's inputs) and
:math:`G y \le h` (50 rows). Each contender maps a batch of points :math:`z` (standard normal times
``--scale``, so that many inequalities are active) to :math:`\arg\min_y \tfrac12\|y - z\|^2` on the
polytope, and back-propagates a fixed random cotangent to :math:`z` and :math:`b`
(forward + backward, the cost of one training step of a projection layer):

- ``ours``: ``constrain.Polyhedron(A, b, G, h).project(z)`` (certified active set, exact KKT backward);
- ``qpth``: ``QPFunction`` (batched interior point, Amos and Kolter 2017), :math:`Q = I`, :math:`p = -z`;
- ``cvxpylayers``: ``CvxpyLayer`` (cone program through diffcp, Agrawal et al. 2019).

The last two are optional (``pip install constrain[bench]``) and timed when installed. Accuracy is
measured on the same batch against cvxpy (OSQP, polished) on the first ``--check-rows`` rows:
the largest distance to the reference and the largest constraint violation over the batch. The
contenders are timed interleaved (the order rotates per repeat) on one torch thread each, and the
ratios of the medians are reported with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from experiments._paths import check_output_file

#: The speed target of the issue: ours at least this many times faster than each contender.
TARGET_SPEEDUP = 10.0


def _problem(batch: int, scale: float, seed: int, eq: int, ineq: int) -> dict[str, Any]:
    """DC3's polytope with ``b`` from the first ``batch`` training inputs, and the points ``z``."""
    from experiments.dc3_study import QPFamily

    family = QPFamily(eq=eq, ineq=ineq, instances=max(10 * batch, 1000))
    a = family.arrays
    g = torch.Generator().manual_seed(seed)
    n = family.variables
    return {
        "A": torch.from_numpy(a["A"]),
        "G": torch.from_numpy(a["G"]),
        "h": torch.from_numpy(a["h"]),
        "b": family.tensors("train")[:batch].clone(),
        "z": scale * torch.randn(batch, n, generator=g, dtype=torch.float64),
        "v": torch.randn(batch, n, generator=g, dtype=torch.float64),
    }


def _ours(P: dict[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    from constrain import Polyhedron

    def project(z: Tensor, b: Tensor) -> Tensor:
        return Polyhedron(A=P["A"], b=b, G=P["G"], h=P["h"]).project(z)

    return project


def _qpth(P: dict[str, Any], eps: float) -> Callable[[Tensor, Tensor], Tensor]:
    from qpth.qp import QPFunction

    n = P["z"].shape[1]
    Q = torch.eye(n, dtype=torch.float64)

    def project(z: Tensor, b: Tensor) -> Tensor:
        return QPFunction(eps=eps, verbose=-1, maxIter=50)(Q, -z, P["G"], P["h"], P["A"], b)

    return project


def _cvxpylayers(P: dict[str, Any], eps: float) -> Callable[[Tensor, Tensor], Tensor]:
    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer

    n, m = P["z"].shape[1], P["A"].shape[0]
    y = cp.Variable(n)
    z = cp.Parameter(n)
    b = cp.Parameter(m)
    problem = cp.Problem(
        cp.Minimize(0.5 * cp.sum_squares(y - z)), [P["A"].numpy() @ y == b, P["G"].numpy() @ y <= P["h"].numpy()]
    )
    layer = CvxpyLayer(problem, parameters=[z, b], variables=[y])

    def project(zz: Tensor, bb: Tensor) -> Tensor:
        return layer(zz, bb, solver_args={"eps": eps, "max_iters": 100_000})[0]

    return project


def contenders(P: dict[str, Any], eps: float) -> tuple[dict[str, Callable], dict[str, str]]:
    """``{name: project(z, b)}`` for ours and every installed contender, and ``{name: why not}``."""
    found: dict[str, Callable] = {"ours": _ours(P)}
    missing: dict[str, str] = {}
    for name, make in (("qpth", _qpth), ("cvxpylayers", _cvxpylayers)):
        try:
            found[name] = make(P, eps)
        except ImportError as error:
            missing[name] = f"not installed ({error.name}); pip install constrain[bench]"
    return found, missing


def _step(project: Callable, P: dict[str, Any]) -> tuple[Tensor, float]:
    """One forward + backward; the output and the seconds it took."""
    z = P["z"].clone().requires_grad_(True)
    b = P["b"].clone().requires_grad_(True)
    tic = time.perf_counter()
    y = project(z, b)
    (y * P["v"]).sum().backward()
    seconds = time.perf_counter() - tic
    if z.grad is None or not bool(torch.isfinite(z.grad).all()):
        raise FloatingPointError("the backward gave no finite gradient for z")
    return y.detach(), seconds


def reference(P: dict[str, Any], rows: int) -> np.ndarray:
    """cvxpy (OSQP, polished, tolerances 1e-10) on the first ``rows`` rows."""
    import cvxpy as cp
    import osqp

    n = P["z"].shape[1]
    y = cp.Variable(n)
    z = cp.Parameter(n)
    b = cp.Parameter(P["A"].shape[0])
    problem = cp.Problem(
        cp.Minimize(0.5 * cp.sum_squares(y - z)), [P["A"].numpy() @ y == b, P["G"].numpy() @ y <= P["h"].numpy()]
    )
    polish = {"polishing" if int(osqp.__version__.split(".")[0]) >= 1 else "polish": True}
    out = []
    for i in range(rows):
        z.value, b.value = P["z"][i].numpy(), P["b"][i].numpy()
        problem.solve(solver="OSQP", eps_abs=1e-10, eps_rel=1e-10, max_iter=400_000, **polish)
        out.append(y.value)
    return np.array(out)


def run_bench(
    batch: int = 200,
    repeats: int = 7,
    scale: float = 3.0,
    eps: float = 1e-10,
    check_rows: int = 20,
    seed: int = 0,
    eq: int = 50,
    ineq: int = 50,
) -> dict[str, Any]:
    """Time every contender; returns ``{"rows": [...], "missing": {...}, "environment": {...}}``."""
    P = _problem(batch, scale, seed, eq, ineq)
    found, missing = contenders(P, eps)
    ref = reference(P, min(check_rows, batch))
    A, G, h, b = P["A"], P["G"], P["h"], P["b"]
    times: dict[str, list[float]] = {name: [] for name in found}
    accuracy: dict[str, dict[str, float]] = {}
    for name, project in found.items():  # warm-up, and the accuracy of each
        y, _ = _step(project, P)
        accuracy[name] = {
            "error": float(np.abs(y[: len(ref)].numpy() - ref).max()),
            "violation": float(max((y @ A.T - b).abs().max(), (y @ G.T - h).clamp_min(0).max())),
        }
    names = list(found)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(_step(found[name], P)[1])
    ours = statistics.median(times["ours"])
    rows = [
        {
            "method": name,
            "median_s": statistics.median(times[name]),
            "ratio_to_ours": statistics.median(times[name]) / ours,
            **accuracy[name],
        }
        for name in names
    ]
    return {
        "rows": rows,
        "missing": missing,
        "environment": environment(),
        "settings": {
            "batch": batch,
            "n": P["z"].shape[1],
            "eq": eq,
            "ineq": ineq,
            "scale": scale,
            "eps": eps,
            "repeats": repeats,
            "check_rows": len(ref),
        },
    }


def environment() -> dict[str, Any]:
    versions = {}
    for module in ("qpth", "cvxpylayers", "cvxpy", "diffcp"):
        try:
            versions[module] = getattr(__import__(module), "__version__", "?")
        except ImportError:
            versions[module] = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
        "load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        **versions,
    }


def format_table(result: dict[str, Any]) -> str:
    s, env = result["settings"], result["environment"]
    lines = [
        f"Polytope projection, forward + backward: batch {s['batch']}, n {s['n']}, {s['eq']} equalities + "
        f"{s['ineq']} inequalities, float64, z ~ {s['scale']:g} N(0, 1); median of {s['repeats']} interleaved repeats.",
        f"Machine: {env['machine']} {env['processor'] or ''}, {env['cpus']} CPUs, {env['threads']} torch thread(s), "
        f"load {env['load_1min']:.1f} (1 min); torch {env['torch']}, qpth {env['qpth']}, cvxpylayers "
        f"{env['cvxpylayers']}.",
        "",
        "| method | median s | time / ours | max error vs cvxpy (first rows) | max violation |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['method']} | {row['median_s']:.4f} | {row['ratio_to_ours']:.1f}x | {row['error']:.1e} | "
            f"{row['violation']:.1e} |"
        )
    for name, why in result["missing"].items():
        lines.append(f"| {name} | - | - | - | {why} |")
    others = [r for r in result["rows"] if r["method"] != "ours"]
    if others:
        verdict = ", ".join(
            f"{r['method']} {r['ratio_to_ours']:.1f}x ({'meets' if r['ratio_to_ours'] >= TARGET_SPEEDUP else 'misses'} "
            f"the {TARGET_SPEEDUP:g}x target)"
            for r in others
        )
        lines += ["", f"Ours is faster than {verdict}."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """``constrain bench polytope``: print the table, optionally write JSON; always 0."""
    for key in ("batch", "repeats"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key} must be >= 1, got {getattr(args, key)}.")
    if not args.scale > 0 or not args.eps > 0:
        raise ValueError(f"--scale and --eps must be positive, got {args.scale} and {args.eps}.")
    if args.json:
        check_output_file(args.json, "--json")  # before any work (cli.main checks it too)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = run_bench(args.batch, args.repeats, args.scale, args.eps, args.check_rows, args.seed)
    finally:
        torch.set_num_threads(threads)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``polytope`` to ``constrain bench``'s subcommands."""
    parser = subparsers.add_parser(
        "polytope",
        help="the polytope projection layer against qpth and cvxpylayers (forward + backward)",
        description=__doc__.splitlines()[0].strip("`: ") + ". " + "See the module doc of experiments.bench_polytope.",
    )
    parser.add_argument("--batch", type=int, default=200, help="rows per batch (default 200)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per method (default 7)")
    parser.add_argument("--scale", type=float, default=3.0, help="z ~ scale * N(0, 1) (default 3)")
    parser.add_argument("--eps", type=float, default=1e-10, help="tolerance passed to qpth and to SCS (default 1e-10)")
    parser.add_argument("--check-rows", type=int, default=20, help="rows checked against cvxpy (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every method (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")
    parser.set_defaults(func=run)
    return parser
