r"""``constrain bench strategies``: what a strategy costs per training step, and Cooper side by side.

Two measurements, each taken in one run with the contenders interleaved so that machine noise
hits all of them alike:

**Overhead.** One training step is ``forward + strategy.loss + backward + optimizer.step +
strategy.after_step`` on an MLP with three hidden layers of width 512 (inputs 512, outputs 10),
batch 256, Adam. Every cell (a strategy on one constraint) trains its own copy of the same
initial model on the same batch; the unconstrained step (``forward + loss + backward +
optimizer.step``) on another copy is the reference. Each round visits every cell in a rotating
order and times, back to back, a block of ``steps`` reference steps and a block of ``steps``
cell steps (which one goes first alternates); the ratio of a cell is the median over rounds of
its per-round ratio, so slow drifts of the machine cancel. Weight constraints sit on the
512 x 512 middle layer ``fc2.weight``; output constraints on the 10 outputs per sample (random
N(0, 1) targets, so the constraints are active).

**Cooper.** Non-negative outputs, one Lagrange multiplier on the batch mean
(:math:`\bar g = -\frac1B\sum_i f(x_i) \le 0`), simultaneous gradient descent-ascent (primal
Adam, dual gradient ascent clipped at 0), an MLP 10-64-64-1, batch 512, targets with mean -1 (so
the constraint binds). Ours is ``strategies.get("lagrangian", multipliers="mean")``; Cooper's is a
``ConstrainedMinimizationProblem`` with one ``Constraint(INEQUALITY, Lagrangian,
DenseMultiplier)`` and a ``SimultaneousOptimizer`` (primal Adam, dual ``SGD(maximize=True)``):
the same mathematics, so both take the same steps (the same multipliers and outputs, step for step, up to
float roundoff). The default ``multipliers="shared"`` would price the mean *violation*
:math:`\frac1B\sum_i \max(0, -f(x_i))` instead, another constraint (every output non-negative on average, not
the mean output), whose trajectory parts from Cooper's at the first step where an output is positive. Both
(and a plain Adam run) train
``cooper_steps`` steps over the same sequence of minibatches from the same initial weights, in
interleaved blocks; the step times are the blocks' medians. A fourth contender, ``hand-written``, is the
same step written out with no library (the objective plus ``dot(lam, (-f).mean(0))``, the finiteness
check and the overflow bound as ``item()`` reads, ``lam.add_(g, alpha=eta).clamp_min_(0)``): the floor
that the overhead of a library's step is measured against; it takes bitwise the same steps as ours.
Cooper (``cooper-optim``) is an optional dependency: without it Cooper is skipped with a note.

Targets (from the Performance issue; reported, never asserted): every family at most 1.15x the
unconstrained step, per-sample multipliers at most 1.3x; ours at most 0.70x Cooper's step (issue 13).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import strategies
from constrain import NonNegative, on_output
from experiments import catalogue
from experiments._args import positive_int
from experiments._training import Batch, train_step
from experiments.catalogue import STUDY_KINDS, Target, example_target

#: Targets of the Performance issue (reported, not asserted).
TARGET_RATIO = 1.15
TARGET_PER_SAMPLE_RATIO = 1.3
TARGET_COOPER_RATIO = 0.70

#: The overhead model: inputs, hidden widths, outputs, batch.
DEFAULT_SIZES = {"d_in": 512, "width": 512, "hidden_layers": 3, "d_out": 10, "batch": 256}
#: The Cooper comparison: MLP 10-64-64-1, batch 512.
COOPER_SIZES = {"d_in": 10, "width": 64, "hidden_layers": 2, "d_out": 1, "batch": 512}
LR = 1e-3
DUAL_LR = 0.05
#: The side-by-side contender that writes the Lagrangian step out by hand.
HAND_WRITTEN = "hand-written"


# ---------------------------------------------------------------------------------------------
# The model


def mlp(d_in: int, width: int, hidden_layers: int, d_out: int, fc2_twice: bool = False) -> nn.Sequential:
    """ReLU MLP with named layers ``fc1 .. fc<hidden_layers>`` and ``head``; ``fc2_twice``: the layer
    ``fc2`` is applied a second time right after itself (one weight read twice per forward)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    fan_in = d_in
    for i in range(1, hidden_layers + 1):
        layers[f"fc{i}"] = nn.Linear(fan_in, width)
        layers[f"act{i}"] = nn.ReLU()
        fan_in = width
        if fc2_twice and i == 2:
            layers["fc2_again"] = layers["fc2"]  # the same module: its parameters are listed once, as fc2
            layers["act2_again"] = nn.ReLU()
    layers["head"] = nn.Linear(fan_in, d_out)
    return nn.Sequential(layers)


# ---------------------------------------------------------------------------------------------
# The cells


#: The study's constraint kinds (:mod:`experiments.catalogue`) by label -> targets, given the hidden width
#: (weight constraints act on ``fc2.weight``).
def _targets(key: str) -> Callable[[int], list[Target]]:
    return lambda width: [example_target(key, "fc2.weight", (width, width))]


CONSTRAINTS: dict[str, Callable[[int], list[Target]]] = {catalogue.label(key): _targets(key) for key in STUDY_KINDS}
OUT_L1, OUT_NONNEG, W_NONNEG, W_AFFINE, W_L1 = (catalogue.label(key) for key in STUDY_KINDS)


@dataclass(frozen=True)
class Cell:
    """One row of the overhead table: a strategy (with options) on one constraint."""

    family: str
    strategy: str
    constraint: str
    options: dict = field(default_factory=dict)
    #: What the row stands for, when the strategy name alone does not say it.
    note: str = ""
    limit: float = TARGET_RATIO
    #: The model: "mlp", or "fc2-twice" (the MLP with fc2 applied twice; its reference is that model too).
    model: str = "mlp"
    #: Start strictly inside (barriers): outputs >= 0 by shifting the output bias so that every output on
    #: the batch is at least 1; fc2.weight >= 0 by taking absolute values (plus 1e-3).
    feasible_start: bool = False

    @property
    def label(self) -> str:
        return self.strategy + (f" ({self.note})" if self.note else "")

    @property
    def per_sample(self) -> bool:
        return self.options.get("multipliers") == "per-sample"


L1_OPTIONS = {"strength": 1e-4, "lr": LR}

#: The cells of ``bench strategies``: representatives of every family.
CELLS: tuple[Cell, ...] = (
    Cell("penalty", "quadratic-penalty", OUT_NONNEG, {"weight": 10.0}),
    Cell("penalty", "exact-penalty", OUT_NONNEG, {"weight": 1.0}),
    Cell("penalty", "extended-log-barrier", OUT_NONNEG, {"weight": 1.0, "t": 5.0}),
    Cell("penalty", "log-barrier", OUT_NONNEG, {"weight": 0.1}, note="outputs, next forward checked", feasible_start=True),
    Cell("penalty", "log-barrier", W_NONNEG, {"weight": 1e-4}, note="weight", feasible_start=True),
    Cell("projected", "projected", OUT_L1, note="projection layer"),
    Cell("projected", "projected", W_NONNEG, note="weights"),
    Cell("projected", "projected", W_AFFINE, note="weights"),
    Cell("reparameterization", "reparam-softplus", W_NONNEG, note="parametrization"),
    Cell("reparameterization", "reparam-null-space", W_AFFINE, note="parametrization"),
    Cell("reparameterization", "reparam-l1-weight-norm", W_L1, note="parametrization"),
    Cell("reparameterization", "reparam-softplus", W_NONNEG, note="parametrization, fc2 applied twice", model="fc2-twice"),
    Cell("reparameterization", "reparam-softplus", OUT_NONNEG, note="output map"),
    Cell("reparameterization", "reparam-radial", OUT_L1, note="output map"),
    Cell("reparameterization", "reparam-sigmoid-simplex", OUT_L1, note="output map"),
    Cell("lagrangian", "lagrangian", OUT_NONNEG, {"dual_lr": DUAL_LR}, note="shared"),
    Cell(
        "lagrangian",
        "lagrangian",
        OUT_NONNEG,
        {"dual_lr": DUAL_LR, "multipliers": "per-sample"},
        note="per-sample",
        limit=TARGET_PER_SAMPLE_RATIO,
    ),
    Cell("lagrangian", "lagrangian", W_NONNEG, {"dual_lr": DUAL_LR}, note="one per weight"),
    Cell("lagrangian", "augmented-lagrangian", OUT_NONNEG, {"penalty": 1.0}, note="shared"),
    Cell("lagrangian", "slack-lagrangian", OUT_NONNEG, {"dual_lr": DUAL_LR, "penalty": 1.0}, note="shared"),
    Cell("l1-regularization", "l1-subgradient", W_L1, L1_OPTIONS),
    Cell("l1-regularization", "l1-sign-step", W_L1, L1_OPTIONS),
    Cell("l1-regularization", "l1-proximal", W_L1, L1_OPTIONS),
    Cell("l1-regularization", "l1-truncated", W_L1, L1_OPTIONS),
    Cell("l1-regularization", "l1-cumulative", W_L1, L1_OPTIONS),
)


# ---------------------------------------------------------------------------------------------
# Timing helpers


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _time_block(step: Callable[[], None], steps: int, sync: Callable[[], None]) -> float:
    """Seconds per step of ``steps`` consecutive steps (the device drained at both ends)."""
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


# ---------------------------------------------------------------------------------------------
# Overhead


def _mse(out: Tensor, batch: Batch) -> Tensor:
    assert batch.targets is not None  # every benchmark batch has its targets
    return F.mse_loss(out, batch.targets)


def _step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, strategy: strategies.Strategy | None = None
) -> Callable[[], None]:
    """One training step on ``batch`` (with ``strategy``, if any) as a closure to time."""

    def step() -> None:
        train_step(model, optimizer, _mse, batch, strategy)

    return step


def _linear(model: nn.Module, name: str) -> nn.Linear:
    layer = model.get_submodule(name)
    assert isinstance(layer, nn.Linear)  # the layers of mlp()
    return layer


def _build_cell(cell: Cell, base: nn.Module, x: Tensor, y: Tensor, width: int) -> tuple[Callable[[], None], strategies.Strategy]:
    model = copy.deepcopy(base)
    options = dict(cell.options)
    ids = None
    if cell.per_sample:
        options.setdefault("num_samples", 8 * x.shape[0])  # a training set of 8 batches
        ids = torch.arange(x.shape[0], device=x.device)
    if cell.feasible_start:  # a barrier's interior
        with torch.no_grad():
            if cell.constraint == OUT_NONNEG:
                _linear(model, "head").bias.add_(1.0 - model(x).min())
            elif cell.constraint == W_NONNEG:
                _linear(model, "fc2").weight.abs_().add_(1e-3)
            else:  # pragma: no cover - a cell added without a feasible start
                raise ValueError(f"no feasible start for {cell.constraint!r}")
    strategy = strategies.get(cell.strategy, **options)
    model = strategy.attach(model, CONSTRAINTS[cell.constraint](width))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)  # after attach: slacks, parametrizations
    return _step(model, optimizer, Batch(x, y, ids), strategy), strategy


def _interleave(
    built: list[tuple[Cell, Callable[[], None], strategies.Strategy]],
    references: dict[str, Callable[[], None]],
    steps: int,
    rounds: int,
    sync: Callable[[], None],
    progress: Callable[[str], None] | None,
) -> tuple[list[list[float]], list[list[float]]]:
    """Per cell, the seconds per step of its blocks and of the paired reference blocks, round by round
    (a rotating order of cells; which of the pair goes first alternates)."""
    cell_times: list[list[float]] = [[] for _ in built]
    ref_times: list[list[float]] = [[] for _ in built]
    for round_ in range(rounds):
        if progress is not None:
            progress(f"round {round_ + 1}/{rounds}")
        shift = round_ % len(built)
        order = list(range(shift, len(built))) + list(range(shift))
        for position, i in enumerate(order):
            step, reference = built[i][1], references[built[i][0].model]
            if (round_ + position) % 2:
                ref_times[i].append(_time_block(reference, steps, sync))
                cell_times[i].append(_time_block(step, steps, sync))
            else:
                cell_times[i].append(_time_block(step, steps, sync))
                ref_times[i].append(_time_block(reference, steps, sync))
    return cell_times, ref_times


def _overhead_record(cell: Cell, strategy: strategies.Strategy, times: list[float], refs: list[float]) -> dict[str, Any]:
    """One row of the overhead result: medians, the ratio of medians of per-round ratios, its spread."""
    ratios = [t / r for t, r in zip(times, refs, strict=True)]
    ratio = statistics.median(ratios)
    return {
        "family": cell.family,
        "strategy": cell.strategy,
        "label": cell.label,
        "constraint": cell.constraint,
        "model": cell.model,
        "options": dict(cell.options),
        "median_ms": statistics.median(times) * 1e3,
        "reference_median_ms": statistics.median(refs) * 1e3,
        "ratio": ratio,
        "ratio_q25": _quantile(ratios, 0.25),
        "ratio_q75": _quantile(ratios, 0.75),
        "target": cell.limit,
        "met": ratio <= cell.limit,
        "steps_taken": strategy.steps,
    }


def bench_overhead(
    cells: Sequence[Cell] = CELLS,
    *,
    steps: int = 3,
    rounds: int = 15,
    warmup: int = 2,
    sizes: dict | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Time every cell against the unconstrained step; returns ``{"reference_ms", "cells": [...]}``."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    device = torch.device(device)
    sync = _synchronizer(device)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(sizes["batch"], sizes["d_in"], generator=generator).to(device)
    y = torch.randn(sizes["batch"], sizes["d_out"], generator=generator).to(device)
    bases: dict[str, nn.Module] = {}
    references: dict[str, Callable[[], None]] = {}
    for name in sorted({cell.model for cell in cells}):
        torch.manual_seed(seed)
        bases[name] = mlp(
            sizes["d_in"], sizes["width"], sizes["hidden_layers"], sizes["d_out"], fc2_twice=name == "fc2-twice"
        ).to(device)
        model = copy.deepcopy(bases[name])
        references[name] = _step(model, torch.optim.Adam(model.parameters(), lr=LR), Batch(x, y))
    built = [(cell, *_build_cell(cell, bases[cell.model], x, y, sizes["width"])) for cell in cells]
    for _ in range(warmup):
        for reference in references.values():
            reference()
        for _, step, _ in built:
            step()
    sync()
    cell_times, ref_times = _interleave(built, references, steps, rounds, sync, progress)
    records = [
        _overhead_record(cell, strategy, times, refs)
        for (cell, _, strategy), times, refs in zip(built, cell_times, ref_times, strict=True)
    ]
    all_refs = [t for (cell, _, _), refs in zip(built, ref_times, strict=True) if cell.model == "mlp" for t in refs]
    all_refs = all_refs or [t for refs in ref_times for t in refs]
    return {"reference_ms": statistics.median(all_refs) * 1e3, "cells": records}


def format_overhead_table(result: dict) -> str:
    """The table ``bench strategies`` prints for the overhead part."""
    header = (
        f"{'family':<19} {'strategy':<54} {'constraint':<28} {'step ms':>8} {'ref ms':>8} "
        f"{'ratio':>6} {'q25-q75':>11} {'target':>7}"
    )
    lines = [header, "-" * len(header)]
    for rec in result["cells"]:
        verdict = "ok" if rec["met"] else "MISS"
        lines.append(
            f"{rec['family']:<19} {rec['label']:<54} {rec['constraint']:<28} {rec['median_ms']:>8.2f} "
            f"{rec['reference_median_ms']:>8.2f} {rec['ratio']:>5.3f}x "
            f"{rec['ratio_q25']:>5.3f}-{rec['ratio_q75']:<5.3f} "
            f"{'<=' + format(rec['target'], 'g'):>6}x {verdict}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Cooper side by side


def cooper_available() -> bool:
    try:
        import cooper  # noqa: F401 - imported only to see whether it is installed
    except ImportError:
        return False
    return True


def _cooper_contender(model: nn.Module, dual_lr: float) -> tuple[Callable[[Tensor, Tensor], None], Callable[[], float]]:
    """Cooper's simultaneous GDA on ``model`` (imported here: cooper is optional)."""
    import cooper

    class NonNegativeMean(cooper.ConstrainedMinimizationProblem):
        def __init__(self) -> None:
            super().__init__()
            multiplier = cooper.multipliers.DenseMultiplier(num_constraints=1, device=next(model.parameters()).device)
            self.nonnegative = cooper.Constraint(
                constraint_type=cooper.ConstraintType.INEQUALITY,
                formulation_type=cooper.formulations.Lagrangian,
                multiplier=multiplier,
            )

        def compute_cmp_state(self, x: Tensor, y: Tensor) -> cooper.CMPState:
            out = model(x)
            loss = F.mse_loss(out, y)
            violation = (-out).mean(0)  # g = -mean f(x) <= 0, shape (1,)
            state = cooper.ConstraintState(violation=violation)
            return cooper.CMPState(loss=loss, observed_constraints={self.nonnegative: state})

    cmp = NonNegativeMean()
    optimizer = cooper.optim.SimultaneousOptimizer(
        cmp=cmp,
        primal_optimizers=torch.optim.Adam(model.parameters(), lr=LR),
        dual_optimizers=torch.optim.SGD(cmp.dual_parameters(), lr=dual_lr, maximize=True),
    )

    def step(x: Tensor, y: Tensor) -> None:
        optimizer.roll(compute_cmp_state_kwargs={"x": x, "y": y})

    def multiplier() -> float:
        dense = cmp.nonnegative.multiplier
        assert dense is not None  # set in __init__
        weight = dense.weight
        assert isinstance(weight, Tensor)  # a DenseMultiplier's weight
        return float(weight.detach().reshape(-1)[0])

    return step, multiplier


@runtime_checkable
class _HasMultipliers(Protocol):
    def multipliers(self) -> dict[str, Tensor]: ...


def _ours_contender(model: nn.Module, dual_lr: float) -> tuple[Callable[[Tensor, Tensor], None], Callable[[], float]]:
    strategy = strategies.get("lagrangian", dual_lr=dual_lr, multipliers="mean")  # on mean f(x), as Cooper's
    strategy.attach(model, [on_output(NonNegative())])
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def step(x: Tensor, y: Tensor) -> None:
        train_step(model, optimizer, _mse, Batch(x, y), strategy)

    def multiplier() -> float:
        assert isinstance(strategy, _HasMultipliers)  # the Lagrangian family
        return float(next(iter(strategy.multipliers().values()), torch.zeros(1)).reshape(-1)[0])

    return step, multiplier


def _hand_written_contender(model: nn.Module, dual_lr: float) -> tuple[Callable[[Tensor, Tensor], None], Callable[[], float]]:
    r"""The same algorithm as ours and Cooper's written out by hand, no library: :math:`L = f + \lambda \bar g` with
    :math:`\bar g = -\frac1B\sum_i f(x_i)`, the finiteness check of :math:`L` (one ``item()``), the overflow bound
    :math:`|\lambda| + \eta|\bar g| \le` half the largest float (two ``item()``), then
    :math:`\lambda \leftarrow \max(0, \lambda + \eta \bar g)`. The floor a library's step can be held to: the same
    operations in the same order as ours, so both take bitwise the same steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    first = params[0]
    lam = torch.zeros(1, dtype=first.dtype, device=first.device)
    limit = 0.5 * torch.finfo(lam.dtype).max

    def step(x: Tensor, y: Tensor) -> None:
        out = model(x)
        objective = F.mse_loss(out, y)
        g = (-out).mean(0)  # shape (1,): the batch mean of g = -f(x)
        loss = objective + torch.dot(lam, g)
        if not math.isfinite(loss.item()):
            raise FloatingPointError("the hand-written Lagrangian step: the loss is not finite.")
        for p in params:  # as train_step clears them
            p.grad = None
        loss.backward()
        optimizer.step()
        g = g.detach()
        if not abs(lam.item()) + dual_lr * abs(g.item()) <= limit:
            raise FloatingPointError("the hand-written Lagrangian step: the dual step would overflow.")
        lam.add_(g, alpha=dual_lr).clamp_min_(0)

    return step, lambda: float(lam[0])


def _plain_contender(model: nn.Module, dual_lr: float) -> tuple[Callable[[Tensor, Tensor], None], Callable[[], float]]:
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def step(x: Tensor, y: Tensor) -> None:
        train_step(model, optimizer, _mse, Batch(x, y))

    return step, lambda: float("nan")


@dataclass
class _Contender:
    """One side-by-side run: its model, its step on a minibatch, its multiplier, progress and block times."""

    model: nn.Module
    step: Callable[[Tensor, Tensor], None]
    multiplier: Callable[[], float]
    done: int = 0
    times: list[float] = field(default_factory=list)

    def run_block(self, X: Tensor, Y: Tensor, batches: list[Tensor], count: int, sync: Callable[[], None]) -> None:
        """Take the next ``count`` steps (minibatches ``batches[done:done + count]``), timed as one block."""

        def step() -> None:
            idx = batches[self.done]
            self.step(X[idx], Y[idx])
            self.done += 1

        self.times.append(_time_block(step, count, sync))

    def timed(self) -> list[float]:
        """The block times without the first (warm-up) block, when there are more."""
        return self.times[1:] or self.times

    @torch.no_grad()
    def final(self, X: Tensor, Y: Tensor) -> dict[str, float]:
        out = self.model(X)
        return {
            "median_step_ms": statistics.median(self.timed()) * 1e3,
            "steps": self.done,
            "final_mean_violation": float((-out.mean()).clamp_min(0)),
            "final_mean_output": float(out.mean()),
            "final_fraction_negative": float((out < 0).float().mean()),
            "final_objective": float(F.mse_loss(out, Y)),
            "final_multiplier": self.multiplier(),
        }


def _cooper_data(sizes: dict, steps: int, seed: int, device: torch.device) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Inputs, targets (mostly negative: the constraint mean f(x) >= 0 binds) and ``steps`` minibatch index sets."""
    batch = sizes["batch"]
    generator = torch.Generator().manual_seed(seed)
    n = 8 * batch
    X = torch.randn(n, sizes["d_in"], generator=generator)
    w = torch.randn(sizes["d_in"], sizes["d_out"], generator=generator) / math.sqrt(sizes["d_in"])
    Y = X @ w - 1.0
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(math.ceil(steps * batch / n))])
    return X.to(device), Y.to(device), [order[i * batch : (i + 1) * batch].to(device) for i in range(steps)]


def _ratio(a: _Contender, b: _Contender) -> float:
    """Median over blocks of a's block time over b's."""
    return statistics.median([x / y for x, y in zip(a.timed(), b.timed(), strict=True)])


def bench_cooper(
    *,
    steps: int = 3000,
    block: int = 50,
    sizes: dict | None = None,
    dual_lr: float = DUAL_LR,
    device: str | torch.device = "cpu",
    seed: int = 0,
    include_cooper: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Train plain Adam, ours, the hand-written step and (if importable and asked) Cooper ``steps`` steps each on
    the same minibatches, interleaved in blocks of ``block`` steps; step times and the final state."""
    sizes = {**COOPER_SIZES, **(sizes or {})}
    device = torch.device(device)
    sync = _synchronizer(device)
    X, Y, batches = _cooper_data(sizes, steps, seed, device)
    torch.manual_seed(seed)
    base = mlp(sizes["d_in"], sizes["width"], sizes["hidden_layers"], sizes["d_out"]).to(device)
    builders = {"plain Adam": _plain_contender, "ours (lagrangian)": _ours_contender, HAND_WRITTEN: _hand_written_contender}
    skipped = None
    if include_cooper:
        if cooper_available():
            builders["Cooper"] = _cooper_contender
        else:
            skipped = "cooper-optim is not installed (pip install cooper-optim); Cooper was skipped"
    contenders: dict[str, _Contender] = {}
    for name, build in builders.items():
        model = copy.deepcopy(base)
        contenders[name] = _Contender(model, *build(model, dual_lr))
    names = list(contenders)
    blocks = math.ceil(steps / block)
    for b in range(blocks):
        if progress is not None and b % max(1, blocks // 5) == 0:
            progress(f"block {b + 1}/{blocks}")
        shift = b % len(names)
        for name in names[shift:] + names[:shift]:
            contenders[name].run_block(X, Y, batches, min(block, steps - b * block), sync)
    record: dict[str, Any] = {"sizes": sizes, "steps": steps, "block": block, "dual_lr": dual_lr, "lr": LR}
    record.update(contenders={name: c.final(X, Y) for name, c in contenders.items()}, skipped=skipped)
    return {**record, **_cooper_ratios(contenders, record["contenders"])}


def _cooper_ratios(contenders: dict[str, _Contender], results: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The ratios of the side-by-side runs (medians of per-block ratios), the target's verdict and how far ours
    ended from Cooper's point."""
    ours, plain, hand = contenders["ours (lagrangian)"], contenders["plain Adam"], contenders[HAND_WRITTEN]
    record: dict[str, Any] = {
        "ours_over_plain": _ratio(ours, plain),
        "hand_written_over_plain": _ratio(hand, plain),
        "ours_over_hand_written": _ratio(ours, hand),
    }
    if "Cooper" in contenders:
        theirs = contenders["Cooper"]
        record.update(ours_over_cooper=_ratio(ours, theirs), cooper_over_plain=_ratio(theirs, plain), target=TARGET_COOPER_RATIO)
        record.update(hand_written_over_cooper=_ratio(hand, theirs), met=record["ours_over_cooper"] <= TARGET_COOPER_RATIO)
        a, c = results["ours (lagrangian)"], results["Cooper"]
        record["violation_difference"] = abs(a["final_mean_violation"] - c["final_mean_violation"])
        record["mean_output_difference"] = abs(a["final_mean_output"] - c["final_mean_output"])
    return record


def format_cooper_table(record: dict) -> str:
    """The side-by-side table of ``bench strategies``."""
    header = (
        f"{'contender':<18} {'step ms':>8} {'/ plain':>8} {'mean f(x)':>10} {'violation':>10} "
        f"{'frac f<0':>9} {'objective':>10} {'multiplier':>11}"
    )
    lines = [header, "-" * len(header)]
    plain = record["contenders"]["plain Adam"]["median_step_ms"]
    for name, r in record["contenders"].items():
        lines.append(
            f"{name:<18} {r['median_step_ms']:>8.3f} {r['median_step_ms'] / plain:>7.2f}x "
            f"{r['final_mean_output']:>10.4f} "
            f"{r['final_mean_violation']:>10.2e} {r['final_fraction_negative']:>9.3f} {r['final_objective']:>10.4f} "
            f"{r['final_multiplier']:>11.4f}"
        )
    if "ours_over_cooper" in record:
        verdict = "ok" if record["met"] else "MISS"
        lines.append(
            f"ours / Cooper (median of per-block ratios): {record['ours_over_cooper']:.3f}x "
            f"(target <= {record['target']:g}x: {verdict}); Cooper / plain {record['cooper_over_plain']:.2f}x, "
            f"ours / plain {record['ours_over_plain']:.2f}x; "
            f"|violation difference| {record['violation_difference']:.2e}, "
            f"|mean f(x) difference| {record['mean_output_difference']:.2e}"
        )
    else:
        lines.append(f"ours / plain {record['ours_over_plain']:.2f}x; {record['skipped'] or 'Cooper not run'}")
    cooper = f", hand-written / Cooper {record['hand_written_over_cooper']:.3f}x" if "hand_written_over_cooper" in record else ""
    lines.append(
        f"{HAND_WRITTEN} (the same algorithm, no library): / plain {record['hand_written_over_plain']:.2f}x{cooper}; "
        f"ours / {HAND_WRITTEN} {record['ours_over_hand_written']:.3f}x"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def environment() -> dict:
    cooper_version = None
    if cooper_available():
        import cooper

        cooper_version = getattr(cooper, "__version__", "?")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cooper": cooper_version,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
    }


def select_cells(patterns: Sequence[str] | None) -> list[Cell]:
    """The cells whose label, strategy, family or constraint contains one of ``patterns`` (all if None)."""
    if not patterns:
        return list(CELLS)
    chosen = [c for c in CELLS if any(p in c.label or p == c.family or p in c.constraint for p in patterns)]
    if not chosen:
        raise ValueError(f"no benchmark cell matches {', '.join(patterns)}; cells: {', '.join(c.label for c in CELLS)}")
    return chosen


def run(args: argparse.Namespace) -> int:
    """``constrain bench strategies``: print the tables, optionally write JSON; always 0."""
    if args.threads < 0:
        raise ValueError(f"--threads must be 0 (torch's setting) or positive, got {args.threads}.")
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads_before)


def _run_cooper(args: argparse.Namespace, env: dict, progress: Callable[[str], None]) -> dict:
    """The side-by-side part of ``bench strategies``: run it and print its table."""
    record = bench_cooper(
        steps=args.cooper_steps,
        block=args.cooper_block,
        device=args.device,
        seed=args.seed,
        include_cooper=not args.no_cooper,
        progress=progress,
    )
    c = COOPER_SIZES
    print()
    print(
        f"Side by side: non-negative outputs (mean), Lagrangian, simultaneous GDA; MLP {c['d_in']}-"
        f"{'-'.join([str(c['width'])] * c['hidden_layers'])}-{c['d_out']}, batch {c['batch']}, "
        f"{args.cooper_steps} steps each on the same minibatches, Adam lr {LR:g}, dual lr {DUAL_LR:g}; "
        f"median step time over blocks of {args.cooper_block} (cooper {env['cooper']})"
    )
    print(format_cooper_table(record))
    return record


def _run(args: argparse.Namespace) -> int:
    """``constrain bench strategies``: the machine, the overhead table and the side-by-side table; 1 if ``--check``
    and a target misses."""
    from experiments.bench import _environment, _environment_line

    print(_environment_line(_environment()), flush=True)  # the machine, as bench projections prints it
    env = environment()
    started = time.perf_counter()

    def progress(message: str) -> None:
        import sys

        print(f"  {message}", file=sys.stderr, flush=True)

    cells = select_cells(args.only)
    s = {**DEFAULT_SIZES, "d_in": args.width, "width": args.width, "batch": args.batch}
    overhead = bench_overhead(
        cells, steps=args.steps, rounds=args.rounds, sizes=s, device=args.device, seed=args.seed, progress=progress
    )
    print(
        f"constrain bench strategies: time per training step relative to the unconstrained step "
        f"(MLP {s['d_in']}-{'-'.join([str(s['width'])] * s['hidden_layers'])}-{s['d_out']}, batch {s['batch']}, Adam; "
        f"median of {args.rounds} rounds x {args.steps} steps, each cell paired with reference steps; "
        f"torch {env['torch']}, {env['threads']} threads, {args.device})"
    )
    print(format_overhead_table(overhead))
    missed = [r["label"] + " on " + r["constraint"] for r in overhead["cells"] if not r["met"]]
    print(
        f"ratio = median over rounds of (cell step / reference step); q25-q75: spread of the per-round ratios. "
        f"Targets: <= {TARGET_RATIO:g}x, per-sample multipliers <= {TARGET_PER_SAMPLE_RATIO:g}x."
        + (f" Missed: {'; '.join(missed)}." if missed else " All met.")
    )
    cooper_record = _run_cooper(args, env, progress) if args.cooper_steps > 0 else None
    seconds = time.perf_counter() - started
    print(f"({seconds:.1f} s)")
    if args.json:
        payload = {
            "benchmark": "strategies",
            "config": {
                "steps": args.steps,
                "rounds": args.rounds,
                "sizes": s,
                "cooper_sizes": COOPER_SIZES,
                "cooper_steps": args.cooper_steps,
                "cooper_block": args.cooper_block,
                "device": args.device,
                "seed": args.seed,
                "lr": LR,
            },
            "environment": env,
            "seconds": seconds,
            "overhead": overhead,
            "cooper": cooper_record,
        }
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=2)
        print(f"wrote {args.json}")
    cooper_missed = cooper_record is not None and cooper_record.get("met") is False
    return 1 if args.check and (missed or cooper_missed) else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``strategies`` benchmark to ``constrain bench``'s subcommands."""
    parser = subparsers.add_parser(
        "strategies",
        help="time each strategy's training step against the unconstrained step, and ours against Cooper",
        description="Per-step overhead of each strategy family relative to the unconstrained step (MLP 512-512-512-"
        "512-10, batch 256, Adam), interleaved; then the Lagrangian side by side with Cooper (MLP 10-64-64-1, "
        "batch 512) with the final violations.",
    )
    parser.add_argument("--steps", type=positive_int, default=3, help="training steps per timed block (default: 3)")
    parser.add_argument("--rounds", type=positive_int, default=15, help="interleaved rounds over the cells (default: 15)")
    parser.add_argument(
        "--width",
        type=positive_int,
        default=DEFAULT_SIZES["width"],
        help=f"inputs and hidden width of the overhead MLP (default: {DEFAULT_SIZES['width']})",
    )
    parser.add_argument(
        "--batch",
        type=positive_int,
        default=DEFAULT_SIZES["batch"],
        help=f"batch of the overhead runs (default: {DEFAULT_SIZES['batch']})",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="PATTERN", default=None, help="only the cells whose strategy, family or constraint matches"
    )
    parser.add_argument(
        "--cooper-steps",
        type=int,
        default=3000,
        help="training steps of the side-by-side runs (default: 3000; 0 skips the comparison)",
    )
    parser.add_argument(
        "--cooper-block", type=positive_int, default=50, help="steps per timed block in the side-by-side runs (default: 50)"
    )
    parser.add_argument(
        "--no-cooper", action="store_true", help="leave Cooper out of the side-by-side runs (ours and plain Adam only)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads for every contender; 0 keeps torch's setting (default: 1: the "
        "steadiest ratios on a shared machine)",
    )
    parser.add_argument("--check", action="store_true", help="exit with status 1 when any target misses (default: report only)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")
    parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run without the ``constrain`` console script: ``python -m experiments.bench_strategies``."""
    parser = argparse.ArgumentParser(prog="bench_strategies")
    sub = parser.add_subparsers(dest="bench_command", required=True)
    add_parser(sub)
    args = parser.parse_args(["strategies", *(argv or [])])
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main(sys.argv[1:]))
