r"""DC3's QP benchmark: every applicable strategy on the same data, network and budget (``constrain study dc3``).

The family is DC3's "simple" problem regenerated from its published recipe (numpy's legacy generator
seeded with 17; draws in this order): :math:`Q = \operatorname{diag}(\text{rand}(n))`,
:math:`p = \text{rand}(n)`, :math:`A \sim N(0, 1)^{m \times n}`, :math:`X \sim U(-1, 1)^{N \times m}`,
:math:`G \sim N(0, 1)^{k \times n}`, :math:`h_i = \sum_j |(G A^+)_{ij}|`. Instance :math:`x`:

.. math::  \min_y\ \tfrac12 y^\top Q y + p^\top y \quad \text{s.t.}\quad A y = x,\ G y \le h.

(:math:`h` makes :math:`y = A^+ x` feasible for every :math:`\|x\|_\infty \le 1`.) Split as DC3: the
last 833 of 10000 instances are the test set, the 833 before them validation, the rest training
(fractions 0.0833 of ``--instances``). The optimum of every test instance comes from cvxpy (OSQP,
polished, tolerances 1e-9), cached under ``--out``.

Every strategy trains DC3's network (two hidden layers of 200 with batch normalization, ReLU and
dropout 0.2; 100 outputs; float64) on the self-supervised loss: the batch mean of the objective of
the constrained outputs, plus the strategy's own terms (``strategy.loss``). The right-hand side
``b = x`` is a callable of the network's input, so the strategies see a per-sample polyhedron.
Reported on the test set: the mean objective, the mean optimality gap
:math:`(f(y) - f^*) / |f^*|` in percent, the largest and the mean (over instances, of each
instance's largest) equality and inequality violation, training time, and the inference time for
the whole test set next to cvxpy solving the same instances one after another. A last column
gives the largest violation on the test inputs scaled by 10 (far outside the training range; kept
where that instance is still feasible).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import constrain
import strategies
from experiments._paths import figures_dir, prepare_output_dir
from experiments._runner import run_with_progress
from experiments._study_cli import add_run_options
from experiments._training import TrainResult, reshuffled_batches, train
from experiments.study import write_json_atomic

#: Bump when the record layout or the training loop changes: old run files are then ignored.
FORMAT = 1
SEED = 17
VALID_FRACTION = TEST_FRACTION = 0.0833


# ====================================================================== the data
@dataclass(frozen=True)
class QPFamily:
    """DC3's "simple" QP family (see the module doc); arrays in float64."""

    variables: int = 100
    eq: int = 50
    ineq: int = 50
    instances: int = 10000

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        """``q`` (the diagonal of ``Q``), ``p``, ``A``, ``X``, ``G``, ``h``, drawn as DC3 draws them."""
        state = np.random.get_state()
        try:
            np.random.seed(SEED)
            Q = np.diag(np.random.random(self.variables))
            p = np.random.random(self.variables)
            A = np.random.normal(loc=0, scale=1.0, size=(self.eq, self.variables))
            X = np.random.uniform(-1, 1, size=(self.instances, self.eq))
            G = np.random.normal(loc=0, scale=1.0, size=(self.ineq, self.variables))
            completed = _dc3_completed_draw(A)
        finally:
            np.random.set_state(state)
        h = np.sum(np.abs(G @ np.linalg.pinv(A)), axis=1)
        return {"q": np.diag(Q).copy(), "p": p, "A": A, "X": X, "G": G, "h": h, "completed": completed}

    @property
    def dc3_completed(self) -> tuple[int, ...]:
        """The variables DC3's code solves from the equalities on this family: its seeded random draw."""
        return tuple(int(i) for i in self.arrays["completed"])

    @property
    def name(self) -> str:
        return f"simple-var{self.variables}-eq{self.eq}-ineq{self.ineq}-ex{self.instances}"

    def split(self) -> dict[str, slice]:
        """DC3's split: train, then validation, then test (the last ``0.0833 N`` instances)."""
        n = self.instances
        train_end = int(n * (1 - VALID_FRACTION - TEST_FRACTION))
        valid_end = int(n * (1 - TEST_FRACTION))
        return {"train": slice(0, train_end), "valid": slice(train_end, valid_end), "test": slice(valid_end, n)}

    def tensors(self, part: str) -> Tensor:
        """The inputs ``X`` of ``part`` (``train``, ``valid``, ``test``) as float64 tensors."""
        return torch.from_numpy(self.arrays["X"][self.split()[part]].copy())

    def objective(self, y: Tensor) -> Tensor:
        r"""Per row: :math:`\frac12 y^\top Q y + p^\top y`."""
        q = torch.from_numpy(self.arrays["q"]).to(y)
        p = torch.from_numpy(self.arrays["p"]).to(y)
        return 0.5 * (y.square() * q).sum(-1) + y @ p

    def violations(self, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per row: the largest ``|A y - x|`` and the largest ``max(G y - h, 0)``."""
        A, G, h = (torch.from_numpy(self.arrays[k]).to(y) for k in ("A", "G", "h"))
        eq = (y @ A.T - x).abs().amax(-1)
        ineq = (y @ G.T - h).clamp_min(0).amax(-1)
        return eq, ineq

    def polyhedron(self) -> constrain.Polyhedron:
        """``{y : A y = x, G y <= h}`` with ``b = x`` read from the network's input."""
        A, G, h = (torch.from_numpy(self.arrays[k]) for k in ("A", "G", "h"))
        return constrain.Polyhedron(A=A, b=_identity, G=G, h=h)


def _dc3_completed_draw(A: np.ndarray) -> np.ndarray:
    """DC3's choice of completed variables, continuing the legacy generator right after the recipe's
    draws: ``n - m`` free variables drawn without replacement, redrawn (at most 100 times) while the
    completed block's determinant is below 1e-4; the completed ones are the rest, ascending."""
    m, n = A.shape
    for _ in range(100):
        free = np.random.choice(n, n - m, replace=False)
        completed = np.setdiff1d(np.arange(n), free)
        if abs(np.linalg.det(A[:, completed])) >= 1e-4:
            return completed
    raise ValueError(f"no invertible {m}x{m} block of A in 100 draws: the equalities are rank-deficient.")


def _identity(x: Tensor) -> Tensor:
    """The right-hand side ``b(x) = x`` (a module-level function, so that run specs pickle)."""
    return x


def family_from(args: argparse.Namespace) -> QPFamily:
    family = QPFamily(eq=args.eq, ineq=args.ineq, instances=args.instances)
    if family.eq >= family.variables:
        raise ValueError(f"--eq must be below the {family.variables} variables, got {family.eq}.")
    if int(family.instances * TEST_FRACTION) < 1 or family.split()["train"].stop < 1:
        raise ValueError(f"--instances {family.instances} leaves no test or training instances; give at least 100.")
    return family


# ====================================================================== the cvxpy optimum
def _cvxpy_problem(family: QPFamily):
    import cvxpy as cp

    a = family.arrays
    y = cp.Variable(family.variables)
    x = cp.Parameter(family.eq)
    objective = 0.5 * cp.sum(cp.multiply(a["q"], cp.square(y))) + a["p"] @ y
    return cp.Problem(cp.Minimize(objective), [a["A"] @ y == x, a["G"] @ y <= a["h"]]), y, x


def solve_instances(family: QPFamily, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """cvxpy (OSQP, polished, tolerances 1e-9) on every row of ``X``: ``(Y, objective, seconds)``;
    infeasible rows get NaN. One parametrized problem, solved row after row."""
    import osqp

    problem, y, x = _cvxpy_problem(family)
    polish = {"polishing" if int(osqp.__version__.split(".")[0]) >= 1 else "polish": True}  # renamed in OSQP 1.0
    Y = np.full((X.shape[0], family.variables), np.nan)
    tic = time.perf_counter()
    for i, row in enumerate(X):
        x.value = row
        problem.solve(solver="OSQP", eps_abs=1e-9, eps_rel=1e-9, max_iter=200000, **polish)
        if problem.status == "optimal":
            Y[i] = y.value
    seconds = time.perf_counter() - tic
    obj = 0.5 * np.sum(family.arrays["q"] * Y**2, axis=1) + Y @ family.arrays["p"]
    return Y, obj, seconds


def test_optimum(family: QPFamily, cache: Path) -> dict[str, Any]:
    """The cvxpy optimum of every test instance (cached as ``cache/<family>-optimum.npz``)."""
    path = Path(cache) / f"{family.name}-optimum.npz"
    if path.exists():
        data = np.load(path)
        return {"Y": data["Y"], "objective": data["objective"], "seconds": float(data["seconds"])}
    Y, obj, seconds = solve_instances(family, family.tensors("test").numpy())
    if np.isnan(obj).any():
        bad = int(np.flatnonzero(np.isnan(obj))[0])
        raise ValueError(
            f"cvxpy found test instance {bad} of {family.name} infeasible; this variant has no optimum "
            f"for every instance (choose other --eq / --ineq)."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, Y=Y, objective=obj, seconds=seconds)
    os.replace(tmp, path)
    return {"Y": Y, "objective": obj, "seconds": seconds}


def far_inputs(family: QPFamily, scale: float = 10.0) -> Tensor:
    """The test inputs times ``scale``, far outside the training range ``[-1, 1]``, that are still
    feasible. When ``[A; G]`` has full row rank every right-hand side is feasible (``y = M^+ (x, h)``);
    otherwise each row is checked by an LP."""
    a = family.arrays
    X = family.tensors("test").numpy() * scale
    M = np.vstack([a["A"], a["G"]])
    if np.linalg.matrix_rank(M) == M.shape[0]:
        return torch.from_numpy(X)
    from scipy.optimize import linprog

    keep = [
        linprog(
            np.zeros(family.variables), A_ub=a["G"], b_ub=a["h"], A_eq=a["A"], b_eq=row, bounds=(None, None), method="highs"
        ).status
        == 0
        for row in X
    ]
    return torch.from_numpy(X[np.array(keep, dtype=bool)].copy())


# ====================================================================== the network
class DC3Net(nn.Module):
    """DC3's network: two hidden layers with batch normalization, ReLU and dropout, Kaiming-normal weights."""

    def __init__(self, inputs: int, outputs: int, hidden: int = 200, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in ((inputs, hidden), (hidden, hidden)):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden, outputs))
        for layer in layers:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# ====================================================================== budgets and entries
@dataclass(frozen=True)
class Budget:
    """How long and how each strategy trains (the same for all): Adam at ``lr`` decayed linearly to
    ``lr * lr_final_fraction`` over ``steps`` mini-batch steps of ``batch`` instances."""

    name: str
    steps: int
    lr: float
    lr_final_fraction: float = 1.0
    batch: int = 200
    hidden: int = 200
    dropout: float = 0.2
    evaluations: int = 30

    def lr_at(self, step: int) -> float:
        return self.lr * (1.0 + (self.lr_final_fraction - 1.0) * step / max(1, self.steps))


#: ``--quick``: a smoke run; default: what ``constrain study dc3`` runs (about 10 minutes on 2 cores);
#: ``--paper``: DC3's published budget (1000 epochs of 42 batches at lr 1e-4, constant).
BUDGETS: dict[str, Budget] = {
    "quick": Budget("quick", steps=60, lr=1e-3, lr_final_fraction=0.1, evaluations=4),
    "default": Budget("default", steps=2000, lr=1e-3, lr_final_fraction=0.01),
    "paper": Budget("paper", steps=1000 * 42, lr=1e-4, evaluations=50),
}


@dataclass(frozen=True)
class Entry:
    """One row of the study: a ``label``, the registered ``strategy`` name and its ``options``."""

    label: str
    strategy: str
    options: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


#: An option value resolved per family: the variables DC3's code completes (``QPFamily.dc3_completed``).
DC3_COMPLETED = "DC3's draw"

#: The strategies of the study with their options. Any other registered strategy that accepts the
#: polyhedron is added with its default options (a new strategy is never silently missing).
ENTRIES: tuple[Entry, ...] = (
    Entry("quadratic-penalty", "quadratic-penalty", {"weight": 10.0, "growth": 1.002, "weight_limit": 1e6}),
    Entry("exact-penalty", "exact-penalty", {"weight": 10.0}),
    Entry("lagrangian", "lagrangian", {"dual_lr": 0.1}),
    Entry("augmented-lagrangian", "augmented-lagrangian", {"penalty": 10.0, "dual_lr": 0.1}),
    Entry("projected", "projected", {}),
    Entry("dc3", "dc3", {"completed": DC3_COMPLETED}, note="DC3's published settings and completed subset"),
    Entry("dc3 (last m completed)", "dc3", {}, note="DC3's settings, the last m variables completed"),
    Entry(
        "dc3 (completion only)",
        "dc3",
        {"steps": 0, "completed": DC3_COMPLETED},
        note="DC3's subset, no correction: completion and the soft loss",
    ),
    Entry("hardnet-aff", "hardnet-aff", {}),
    Entry(
        "reparam-gauge",
        "reparam-gauge",
        {"interior": "auto"},
        note="y0 = A^+ x where strictly feasible (every |x_j| < 1), else a phase-1 projection",
    ),
)

#: DC3's published test results on the 100/50/50 family (means over its test set).
PUBLISHED: tuple[dict[str, Any], ...] = (
    {"label": "optimizer (OSQP)", "objective": -15.047, "eq_max": 0.0, "ineq_max": 0.0},
    {"label": "DC3", "objective": -13.455, "eq_max": 0.0, "ineq_max": 2.1e-4},
    {"label": "NN, soft penalty", "objective": -12.569, "eq_max": 0.349, "ineq_max": None},
    {"label": "Eq. NN (supervised: MSE to the optimizer's solutions)", "objective": -14.679, "eq_max": None, "ineq_max": 0.893},
    {"label": "qpth", "objective": None, "eq_max": None, "ineq_max": None, "inference": 1.34},
)


def entries(family: QPFamily, wanted: Sequence[str] | None = None) -> tuple[list[Entry], list[tuple[str, str]]]:
    """The entries run on ``family`` and the ``(label, reason)`` of those skipped."""
    named = {e.strategy for e in ENTRIES}
    extra = [Entry(n, n, {}, note="default options") for n in strategies.available() if n not in named]
    run, skipped = [], []
    target = _target(family)
    for entry in (*ENTRIES, *extra):
        if wanted and not any(w in (entry.label, entry.strategy) for w in wanted):
            continue
        if entry.options.get("completed") == DC3_COMPLETED:
            entry = replace(entry, options={**entry.options, "completed": family.dc3_completed})
        cls = strategies.strategy_class(entry.strategy)
        reason = cls.unsupported_reason(target)
        if reason is None and cls.family == "l1-regularization":
            reason = "L1 regularization acts on weights"
        if reason is None:
            run.append(entry)
        else:
            skipped.append((entry.label, reason))
    if wanted:
        known = {w for e in (*ENTRIES, *extra) for w in (e.label, e.strategy)}
        missing = [w for w in wanted if w not in known]
        if missing:
            raise KeyError(
                f"no strategy entry matches {', '.join(missing)}; entries: {', '.join(e.label for e in (*ENTRIES, *extra))}."
            )
    return run, skipped


def _target(family: QPFamily) -> Any:
    """``on_output(polyhedron)`` of the family."""
    return constrain.on_output(family.polyhedron())


# ====================================================================== one run
@dataclass(frozen=True)
class RunSpec:
    family: QPFamily
    entry: Entry
    budget: Budget
    seed: int

    def identity(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "family": self.family.name,
            "strategy": self.entry.strategy,
            "options": dict(self.entry.options),
            "budget": asdict(self.budget),
            "seed": self.seed,
        }

    @property
    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:10]

    def path(self, out: Path) -> Path:
        label = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.entry.label)
        return Path(out) / self.family.name / f"{label}--{self.budget.name}--seed{self.seed}--{self.key}.json"


def _evaluate(model: nn.Module, family: QPFamily, X: Tensor, f_star: Tensor) -> dict[str, float]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        Y = model(X)
    model.train(was_training)
    obj = family.objective(Y)
    eq, ineq = family.violations(Y, X)
    gap = (obj - f_star) / f_star.abs()
    return {
        "objective": float(obj.mean()),
        "gap": float(gap.mean()),
        "eq_max": float(eq.max()),
        "eq_mean": float(eq.mean()),
        "ineq_max": float(ineq.max()),
        "ineq_mean": float(ineq.mean()),
    }


def _final_metrics(model: nn.Module, family: QPFamily, X_test: Tensor, f_star: Tensor, X_far: Tensor) -> dict[str, Any]:
    """After training: the test metrics (``final``), the inference time of the whole test set (best of 3),
    and the largest violation on the far inputs (``far_max``; ``far_error`` instead when the strategy
    refuses them, e.g. an interior point that is not strictly feasible there)."""
    model.eval()
    out: dict[str, Any] = {"final": _evaluate(model, family, X_test, f_star), "far_max": None}
    timings = []
    with torch.no_grad():
        for _ in range(3):
            tic = time.perf_counter()
            model(X_test)
            timings.append(time.perf_counter() - tic)
        out["inference"] = min(timings)
        if X_far.shape[0]:
            try:
                Y_far = model(X_far)
            except ValueError as error:  # a refusal is a result: recorded, not a failed run
                out["far_error"] = str(error)
            else:
                eq, ineq = family.violations(Y_far, X_far)
                out["far_max"] = float(torch.maximum(eq, ineq).max())
    return out


def train_run(spec: RunSpec, f_star: np.ndarray, X_far: Tensor) -> dict[str, Any]:
    """Train ``spec``'s strategy on the family; the record of its logged and final test metrics."""
    family, budget = spec.family, spec.budget
    record: dict[str, Any] = {
        "label": spec.entry.label,
        "strategy": spec.entry.strategy,
        "options": dict(spec.entry.options),
        "note": spec.entry.note,
        "seed": spec.seed,
        "status": "done",
        "error": None,
        "log": [],
    }
    torch.manual_seed(spec.seed)
    X_train, X_test = family.tensors("train"), family.tensors("test")
    f_star_t = torch.from_numpy(f_star)
    cpu, result = time.process_time(), None
    try:
        strategy = strategies.get(spec.entry.strategy, **spec.entry.options)
        model = strategy.attach(DC3Net(family.eq, family.variables, budget.hidden, budget.dropout).double(), [_target(family)])
        model.train()
        at = set(np.unique(np.geomspace(1, budget.steps, budget.evaluations).round().astype(int)).tolist())

        def log(t: int, progress: TrainResult) -> None:
            record["log"].append({"step": t, "time": progress.wall, **_evaluate(model, family, X_test, f_star_t)})

        result = train(
            model,
            torch.optim.Adam(model.parameters(), lr=budget.lr),
            lambda out, batch: family.objective(out).mean(),
            # a new shuffle each epoch; DC3 keeps the last short batch of an epoch, we drop it
            reshuffled_batches(X_train, None, budget.batch, torch.Generator().manual_seed(spec.seed), sample_ids=False),
            budget.steps,
            strategy=strategy,
            lr=budget.lr_at,
            log_at=at | {0},
            on_log=log,
            record_errors=True,
        )
        if result.error is not None:
            raise result.error
        record.update(_final_metrics(model, family, X_test, f_star_t, X_far))
    except Exception as error:  # a failing strategy is a result, recorded as such
        own = result is not None and result.error is error
        record.update(
            status="failed",
            error=f"{type(error).__name__}: {error}".strip(),
            failed_at=result.steps if result is not None else 0,
            traceback=result.traceback if own and result is not None else traceback.format_exc(limit=6),
        )
    record["train_time"] = result.wall if result is not None else 0.0
    record["cpu_time"] = time.process_time() - cpu  # this process's CPU seconds (training and evaluations): load-independent
    return record


def _run_and_store(spec: RunSpec, out: Path, f_star: np.ndarray, X_far: Tensor) -> dict[str, Any]:
    record = train_run(spec, f_star, X_far)
    record.update(format=FORMAT, key=spec.key, identity=spec.identity())
    write_json_atomic(spec.path(out), record)
    return record


def _read(path: Path) -> dict[str, Any] | None:
    """A stored run record, or None if the file is missing or unreadable."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _init_worker() -> None:
    torch.set_num_threads(1)


def execute(
    specs: Sequence[RunSpec],
    out: Path,
    f_star: np.ndarray,
    X_far: Tensor,
    *,
    resume: bool = True,
    workers: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every spec not already stored in ``out`` (one JSON file per run; an interrupted study
    keeps its finished runs); returns the records in the order of ``specs``."""
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for spec in specs:
        record = _read(spec.path(out)) if resume else None
        if record is not None and record.get("format") == FORMAT and record.get("key") == spec.key:
            records[spec.key] = record
        else:
            todo.append(spec)

    def finished(index: int, record: dict[str, Any]) -> None:
        records[todo[index].key] = record

    run_with_progress(
        _run_and_store,
        [(spec, out, f_star, X_far) for spec in todo],
        [spec.entry.label for spec in todo],
        finished,
        workers=workers,
        total=len(specs),
        desc="study dc3",
        progress=progress,
        initializer=_init_worker,
    )
    return [records[s.key] for s in specs]


# ====================================================================== table and figures
def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 1e-2 and abs(value) < 1e4:
        return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.1f}"
    return f"{value:.1e}"


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.median(kept)) if kept else None


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per label: medians over its seeds of the final test metrics (failed runs counted)."""
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        row = rows.setdefault(
            r["label"],
            {
                "label": r["label"],
                "strategy": r["strategy"],
                "options": r["options"],
                "note": r.get("note", ""),
                "runs": [],
                "failed": [],
            },
        )
        (row["runs"] if r["status"] == "done" else row["failed"]).append(r)
    for row in rows.values():
        done = row["runs"]
        for key in ("objective", "gap", "eq_max", "eq_mean", "ineq_max", "ineq_mean"):
            row[key] = _median([r["final"][key] for r in done])
        for key in ("train_time", "inference", "far_max"):
            row[key] = _median([r.get(key) for r in done])
    return list(rows.values())


def _option_text(key: str, value: Any) -> str:
    """``key=value``, with a long index list shortened to its length (the note says what it is)."""
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"{key}=[{len(value)} indices]"
    return f"{key}={value}"


def _row_line(row: dict[str, Any]) -> str:
    """One strategy's row of the table (its options, notes, failures and far-input refusals last)."""
    options = ", ".join(_option_text(k, v) for k, v in row["options"].items()) or "defaults"
    options += f"; {row['note']}" if row["note"] else ""
    if row["failed"]:
        options += f"; {len(row['failed'])} failed: {row['failed'][0]['error'][:120]}"
    if not row["runs"]:
        return f"| {row['label']} | failed | | | | | | | | | {options} |"
    refused = [r["far_error"] for r in row["runs"] if r.get("far_error")]
    if refused:
        options += f"; far inputs refused: {refused[0][:110]}"
    gap = None if row["gap"] is None else 100 * row["gap"]
    return (
        f"| {row['label']} | {_fmt(row['objective'])} | {_fmt(gap, 2)} | {_fmt(row['eq_max'])} | "
        f"{_fmt(row['eq_mean'])} | {_fmt(row['ineq_max'])} | {_fmt(row['ineq_mean'])} | {_fmt(row['far_max'])} | "
        f"{_fmt(row['train_time'], 1)} | {_fmt(row['inference'])} | {options} |"
    )


def markdown_table(
    family: QPFamily,
    budget: Budget,
    rows: Sequence[dict[str, Any]],
    optimum: dict[str, Any],
    seeds: Sequence[int],
    skipped: Sequence[tuple[str, str]],
    command: str,
    wall: float,
    cpu: float | None = None,
) -> str:
    """The results table with the published rows, as markdown."""
    f_star = float(np.mean(optimum["objective"]))
    n_test = int(len(optimum["objective"]))
    lines = [
        f"# DC3 benchmark: {family.name}",
        "",
        f"`{command}`: budget `{budget.name}` ({budget.steps} Adam steps of batch {budget.batch}, lr {budget.lr:g}"
        + (f" decayed linearly to {budget.lr * budget.lr_final_fraction:g}" if budget.lr_final_fraction != 1 else "")
        + f"), seeds {', '.join(map(str, seeds))} (medians), {wall:.0f} s wall on {os.cpu_count()} CPU(s)"
        + (f" (load average {os.getloadavg()[0]:.1f} at the end)" if hasattr(os, "getloadavg") else "")
        + ("" if cpu is None else f", the runs {cpu:.0f} CPU-seconds in all")
        + f", torch {torch.__version__}. Test set: {n_test} instances.",
        "",
        "| strategy | test objective | gap % | eq max | eq mean | ineq max | ineq mean | far max | train s | "
        "inference s | options |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| cvxpy (OSQP, polished), optimum | {f_star:.3f} | 0 | - | - | - | - | - | - | "
        f"{optimum['seconds']:.2f} | one solve per instance |",
    ]
    lines += [_row_line(row) for row in rows]
    if (family.variables, family.eq, family.ineq, family.instances) == (100, 50, 50, 10000):
        for p in PUBLISHED:
            gap = None if p["objective"] is None else 100 * (p["objective"] - (-15.047)) / 15.047
            lines.append(
                f"| *published: {p['label']}* | {_fmt(p['objective'])} | {_fmt(gap, 2)} | "
                f"{_fmt(p['eq_max'])} | - | {_fmt(p['ineq_max'])} | - | - | - | {_fmt(p.get('inference'))} | "
                f"DC3 paper, Table 1 (its machine) |"
            )
    lines += [
        "",
        "Gap: mean over test instances of `(f(y) - f*) / |f*|`. *eq/ineq max*: the largest violation over every test "
        "instance and constraint; *mean*: the mean over instances of each instance's largest violation (DC3 reports "
        "means over instances). *far max*: the largest violation (equality or inequality) on the test inputs scaled "
        "by 10, far outside the training range `[-1, 1]` (feasible ones only). Inference: the whole test set in one "
        "batch (best of 3); cvxpy: one solve per instance, one after another. Published gaps are against the "
        "published optimizer row.",
    ]
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{label} ({reason})" for label, reason in skipped) + "."]
    return "\n".join(lines) + "\n"


def figures(records: Sequence[dict[str, Any]], folder: Path, prefix: str) -> list[Path]:
    """``<prefix>-gap.png``: mean optimality gap against the step; ``<prefix>-violation.png``: the
    largest test violation against the step; one line per strategy (median over seeds)."""
    import matplotlib.pyplot as plt

    from experiments.figures import FLOOR, _log_axis, save

    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["status"] == "done" and r["log"]:
            by.setdefault(r["label"], []).append(r)
    palette = [plt.get_cmap("tab10")(i) for i in range(10)] + [plt.get_cmap("Dark2")(i) for i in range(8)]
    paths = []
    for name, keys, ylabel in (
        ("gap", ("gap",), "mean optimality gap (test), |f - f*| / |f*|"),
        ("violation", ("eq_max", "ineq_max"), "largest violation on the test set"),
    ):
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for i, (label, runs) in enumerate(by.items()):
            steps = [e["step"] for e in runs[0]["log"]]
            values = np.median([[max(abs(e[k]) for k in keys) for e in r["log"]] for r in runs], axis=0)
            ax.plot(
                np.maximum(steps, 1),
                np.maximum(values, FLOOR),
                label=label,
                color=palette[i % len(palette)],
                linestyle="-" if i < 10 else "--",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
        ax.set_xlabel("training step (step 0 drawn at 1)")
        ax.set_ylabel(ylabel)
        if name == "violation":
            ax.axhline(1e-6, color="grey", linewidth=0.8, linestyle=":")
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        paths.append(save(fig, Path(folder) / f"{prefix}-{name}.png"))
    return paths


# ====================================================================== the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``constrain study dc3``."""
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 60 steps, one seed (under a minute once the optimum is cached); writes only under --out",
    )
    budget.add_argument(
        "--paper", action="store_true", help="DC3's budget: 1000 epochs (42000 steps) at lr 1e-4 (hours on a CPU)"
    )
    parser.add_argument("--eq", type=int, default=50, help="equality constraints (default 50)")
    parser.add_argument("--ineq", type=int, default=50, help="inequality constraints (default 50)")
    parser.add_argument("--instances", type=int, default=10000, help="instances in all (default 10000)")
    parser.add_argument(
        "--strategies",
        type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
        metavar="S,...",
        help="only these labels or strategy names",
    )
    parser.add_argument("--steps", type=int, metavar="N", help="override the budget's step count")
    parser.add_argument("--seeds", type=int, default=None, metavar="N", help="seeds 0..N-1 (default 1)")
    parser.add_argument("--fresh", action="store_true", help="redo every run")
    add_run_options(parser, "dc3", "dc3.md and the dc3-*.png figures")


def run(args: argparse.Namespace) -> int:
    """Run the study; print the table and write ``dc3.md`` and the figures."""
    family = family_from(args)
    budget = BUDGETS["quick" if args.quick else "paper" if args.paper else "default"]
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}.")
        budget = replace(budget, steps=args.steps)
    seeds = list(range(args.seeds if args.seeds is not None else 1))
    if not seeds:
        raise ValueError("--seeds must be >= 1.")
    workers = args.workers if args.workers is not None else max(1, min(2, os.cpu_count() or 1))
    default_family = (family.eq, family.ineq, family.instances) == (50, 50, 10000)
    documented = default_family and not (args.quick or args.paper) and args.strategies is None and args.steps is None
    documented = documented and args.seeds is None
    if args.quick and args.figures is not None and Path(args.figures).resolve() == Path("figures").resolve():
        raise ValueError("--quick never writes into figures/; give another --figures folder or leave it out.")
    out = prepare_output_dir(args.out, "--out")
    folder = prepare_output_dir(figures_dir(args.figures, out, documented), "--figures")
    tic = time.perf_counter()
    run_entries, skipped = entries(family, args.strategies)
    optimum = test_optimum(family, out)
    X_far = far_inputs(family)
    specs = [RunSpec(family, e, budget, s) for e in run_entries for s in seeds]
    records = execute(
        specs, out, optimum["objective"], X_far, resume=not args.fresh, workers=workers, progress=not args.no_progress
    )
    rows = summarize(records)
    command = "constrain study dc3" + (" --quick" if args.quick else " --paper" if args.paper else "")
    if not default_family:
        command += f" --eq {family.eq} --ineq {family.ineq} --instances {family.instances}"
    if args.strategies:
        command += f" --strategies {','.join(args.strategies)}"
    command += "".join(f" --{k} {v}" for k, v in (("steps", args.steps), ("seeds", args.seeds)) if v is not None)
    prefix = "dc3" if default_family else f"dc3-{family.name}"
    cpu = sum(r.get("cpu_time") or 0.0 for r in records)
    text = markdown_table(family, budget, rows, optimum, seeds, skipped, command, time.perf_counter() - tic, cpu)
    (folder / f"{prefix}.md").write_text(text)
    paths = figures(records, folder, prefix)
    print(text)
    print(f"wrote {folder / (prefix + '.md')}, {', '.join(map(str, paths))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.dc3_study", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
