r"""Side-by-side convergence studies: every strategy on the same problems, runs stored one per file.

The pieces, each usable on its own (``constrain study`` in :mod:`experiments.study_cmd` strings
them together):

- :class:`Entry` and :data:`ENTRIES`: the strategies a study runs, as data: ``(label, strategy
  name, options)``, optionally restricted to some constraint kinds. :func:`suite_for` gives the
  table for one kind; ``Strategy.unsupported_reason(target)`` decides whether a cell applies,
  and unsupported or unregistered cells are skipped and reported, not run.
- :func:`plan_study`: problems x entries x seeds -> :class:`RunSpec` (each with a stable key that
  hashes everything the run depends on) plus the skipped cells.
- :func:`train_run`: one run, a pure function of the spec: same data, the problem's seeded
  initialization, Adam with the problem's learning-rate schedule, full batch, a fixed number of
  steps; it logs objective, relative gap, train/held-out violations and training wall time at
  :func:`log_steps`.
- :func:`execute`: runs the specs (in worker processes when asked), each written to its own JSON
  file atomically (temporary file + ``os.replace``); finished files are skipped when resuming,
  so an interrupted study loses nothing but the runs in flight.
- :func:`summarize` and :func:`markdown_table`: medians over seeds per problem and strategy.

Time per step counts forward, loss, backward, optimizer step and ``after_step`` only (not the
evaluation at logged steps and the first :data:`WARMUP_STEPS` steps), as CPU time of the process
(torch runs one thread per run); it is compared with the ``unconstrained`` run of the same problem.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import os
import re
import statistics
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import strategies
from experiments._convergence import (
    EARLIEST,
    MIN_POINTS,
    OBJECTIVE_ALONE,
    OBJECTIVE_FLOOR,
    RELATIVE,
    VIOLATION_FLOOR,
    WINDOW,
    convergence_reason,
)
from experiments._family_best import family_best_lines, family_overview
from experiments._fused_adam import FusedAdam
from experiments._problem_names import unknown_problems
from experiments._runner import run_with_progress
from experiments._storage import write_json_atomic
from experiments._training import TrainResult, full_batches, shrink_follows_lr, train
from experiments.problems import CONVEX_PROBLEMS, KINDS, Problem, get_problem

#: Bump when the record layout or the training loop changes: old run files are then ignored.
FORMAT = 3
#: The violation threshold of the "steps to feasibility" column.
FEASIBLE = 1e-4
#: The success criterion on the convex problems: |gap| <= GAP_OK and max violation <= VIOLATION_OK.
GAP_OK, VIOLATION_OK = 1e-4, 1e-6
#: The convergence stop as hashed into run keys (runs stopped by another rule are redone).
STOP_RULE = (
    f"converged: window {WINDOW:g}, from {EARLIEST:.4g}, relative {RELATIVE:g}, floors {OBJECTIVE_FLOOR:g} "
    f"{VIOLATION_FLOOR:g}, alone {OBJECTIVE_ALONE:g}, points {MIN_POINTS}"
)
#: The fields logged at every logged step, in order.
LOG_FIELDS = ("step", "objective", "gap", "train_max", "train_mean", "test_max", "test_mean", "time", "cpu")
BASELINE_LABEL = "unconstrained"
#: The folder under ``--out`` that keeps each problem's cvxpy optimum (:meth:`Problem.stored_reference`).
REFERENCES = "references"
#: Steps left out of ``time_per_step``: first calls pay one-time costs (imports, kernel compilation).
WARMUP_STEPS = 10


# ====================================================================== the strategy table
@dataclass(frozen=True)
class Entry:
    """One strategy of a study: a ``label`` (unique in a study), the registered ``strategy`` name
    (None: the unconstrained baseline), its ``options``, and the constraint ``kinds`` it is run on
    (None: every kind, filtered by the strategy's ``unsupported_reason``); ``default=False`` entries
    run only when named in ``--strategies``.

    An option value may be a :class:`RunValue` (:data:`LEARNING_RATE`, :data:`TRAINING_SAMPLES`),
    resolved from the problem when the strategy is built; ``follow_lr(strategy, lr)`` is called
    before every step with the scheduled learning rate (the L1 shrink steps: :func:`shrink_follows_lr`)."""

    label: str
    strategy: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    kinds: tuple[str, ...] | None = None
    note: str = ""
    #: False: left out of the default run (to keep it within its time budget) but selectable by
    #: naming it in ``strategy_filter`` (``--strategies``).
    default: bool = True
    #: Called before every step with the strategy and the scheduled learning rate (None: nothing follows it).
    follow_lr: Callable[[strategies.Strategy, float], None] | None = None

    @property
    def family(self) -> str:
        if self.strategy is None:
            return "baseline"
        try:
            return strategies.strategy_class(self.strategy).family
        except KeyError:
            return "unregistered"

    def stored_options(self) -> dict[str, Any]:
        """The options as stored in run records and hashed into run keys (a :class:`RunValue` by its name)."""
        return {k: str(v) if isinstance(v, RunValue) else v for k, v in self.options.items()}

    def options_text(self) -> str:
        """``k=v, ...`` for the table (``num_samples=@n_train`` is implied by per-sample multipliers)."""
        shown = {k: v for k, v in self.options.items() if v != TRAINING_SAMPLES}
        text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        return ", ".join(p for p in (text, self.note) if p) or "-"


@dataclass(frozen=True)
class RunValue:
    """An option value taken from the problem a run trains on: ``resolve(problem)``; ``name`` is how
    tables, run records and run keys show it."""

    name: str
    resolve: Callable[[Problem], float | int]

    def __str__(self) -> str:
        return self.name


def _learning_rate(problem: Problem) -> float:
    return problem.lr


def _training_samples(problem: Problem) -> int:
    return int(problem.X_train.shape[0])


# (module-level functions, not lambdas: entries travel to worker processes by pickle)
#: The problem's (initial) learning rate.
LEARNING_RATE = RunValue("@lr", _learning_rate)
#: The number of training samples (per-sample multipliers).
TRAINING_SAMPLES = RunValue("@n_train", _training_samples)


_PER_SAMPLE = {"multipliers": "per-sample", "num_samples": TRAINING_SAMPLES}
_L1: dict[str, Any] = {"strength": 0.3, "lr": LEARNING_RATE}

#: Every strategy of the default suite with its options, chosen once for all problems:
#:
#: - quadratic penalty: weight 10 growing x1.005 every step (``tolerance=None``) up to 1e6 (the violation of its
#:   minimizer falls like 1/weight); exact penalty: weight 100, above the largest optimal
#:   multiplier of any problem here (about 15, per sample, on lin-output-l1), where the L1
#:   penalty becomes exact; barriers: weight shrinking x0.995 per step (the barrier's bias falls
#:   with it); extended log barrier: t growing x1.005 per step.
#: - Lagrangian family: one dual step 0.1 for all three (augmented: penalty 10, no growth), so
#:   that the three differ only in their formulation; one multiplier per training sample on outputs.
#:   Larger dual steps diverge on the affine problem, smaller ones are slow on the output problems.
#:   ``lagrangian (nupi)``: the same multipliers stepped by the nuPI controller (integral gain 0.1,
#:   proportional gain 3), which damps the cycling of plain descent-ascent on the weight problems.
#: - L1 regularization: strength 0.3, about the largest optimal multiplier of the weight-row L1
#:   constraints (cvxpy's duals, 0.30): the penalized and the constrained problems nearly coincide
#:   there. Their shrink steps use the optimizer's current learning rate.
#: - projected and reparameterizations: no options to tune (projection layers with the exact
#:   Jacobian; the threshold-constant shortcut and the projected update are extra rows).
#:
#: Left out of the default run for time (``default=False``; name them in ``--strategies``): the
#: reciprocal barrier (the log barrier's sibling), ``reparam-exp`` (softplus's sibling) and three
#: of the five L1 implementations, which ``constrain study l1`` compares in depth.
ENTRIES: tuple[Entry, ...] = (
    Entry(BASELINE_LABEL, None),
    # ---- penalty / barrier
    Entry("quadratic-penalty", "quadratic-penalty", {"weight": 10.0, "growth": 1.005, "weight_limit": 1e6, "tolerance": None}),
    Entry("exact-penalty", "exact-penalty", {"weight": 100.0, "growth": 1.0}),
    Entry(
        "exact-penalty (subgradient)",
        "exact-penalty",
        {"weight": 100.0, "growth": 1.0, "form": "subgradient"},
        kinds=("weight-nonneg", "weight-affine", "weight-l1"),
        note="naive: Adam on the L1 penalty's subgradient, chatters at the step size",
    ),
    Entry("log-barrier", "log-barrier", {"weight": 0.1, "growth": 0.995, "weight_limit": 1e-6}),
    Entry("reciprocal-barrier", "reciprocal-barrier", {"weight": 0.01, "growth": 0.995, "weight_limit": 1e-8}, default=False),
    Entry("extended-log-barrier", "extended-log-barrier", {"weight": 0.1, "growth": 1.0, "t": 5.0, "t_growth": 1.005}),
    # ---- Lagrangian
    Entry("lagrangian", "lagrangian", {"dual_lr": 0.1, **_PER_SAMPLE}),
    Entry("augmented-lagrangian", "augmented-lagrangian", {"penalty": 10.0, "dual_lr": 0.1, **_PER_SAMPLE}),
    Entry("slack-lagrangian", "slack-lagrangian", {"dual_lr": 0.1, **_PER_SAMPLE}),
    Entry(
        "slack-lagrangian (plain)",
        "slack-lagrangian",
        {"dual_lr": 0.1, "penalty": 0.0, **_PER_SAMPLE},
        note="naive: no augmentation, cycles at inactive constraints",
    ),
    Entry(
        "augmented-lagrangian (prox)",
        "augmented-lagrangian",
        {"penalty": 10.0, "dual_lr": 0.1, "primal": "proximal", **_PER_SAMPLE},
        kinds=("weight-l1",),
    ),
    Entry(
        "lagrangian (nupi)",
        "lagrangian",
        {"dual_lr": 0.1, "dual_optimizer": "nupi", "dual_kp": 30.0, **_PER_SAMPLE},
        kinds=("weight-nonneg", "weight-affine", "weight-l1"),
    ),
    # ---- projected
    Entry("projected", "projected", {}),
    Entry(
        "projected (euclidean)",
        "projected",
        {"metric": "euclidean"},
        kinds=("weight-affine", "weight-l1"),
        note="naive: Euclidean projection after Adam's step",
    ),
    Entry("projected (update)", "projected", {"mode": "gradient"}, kinds=("weight-affine",)),
    Entry("projected (tau const)", "projected", {"jacobian": "threshold-constant"}, kinds=("output-l1",)),
    # ---- reparameterization
    Entry("reparam-softplus", "reparam-softplus", {}),
    Entry("reparam-exp", "reparam-exp", {}, default=False),
    Entry("reparam-square", "reparam-square", {}),
    Entry("reparam-null-space", "reparam-null-space", {}),
    Entry("reparam-l1-weight-norm", "reparam-l1-weight-norm", {}),
    Entry("reparam-radial", "reparam-radial", {}),
    Entry("reparam-sigmoid-simplex", "reparam-sigmoid-simplex", {}),
    # ---- L1 regularization (weight L1 ball only; the radius is not a hard bound for them)
    Entry("l1-subgradient", "l1-subgradient", _L1, follow_lr=shrink_follows_lr),
    Entry("l1-proximal", "l1-proximal", _L1, follow_lr=shrink_follows_lr),
    Entry("l1-sign-step", "l1-sign-step", _L1, default=False, follow_lr=shrink_follows_lr),
    Entry("l1-truncated", "l1-truncated", {**_L1, "period": 10}, default=False, follow_lr=shrink_follows_lr),
    Entry("l1-cumulative", "l1-cumulative", _L1, default=False, follow_lr=shrink_follows_lr),
)

#: Registered names the suite leaves out on purpose, and why (any other registered name that no
#: entry mentions is added with its default options, so a new strategy is never silently missing).
COVERED_ELSEWHERE: dict[str, str] = {
    "reparameterization": "picks one of the reparam-* maps per set; each map has its own row",
}


def all_entries(entries: Sequence[Entry] = ENTRIES) -> list[Entry]:
    """``entries`` plus one default-options entry for every registered strategy no entry names."""
    named = {e.strategy for e in entries}
    extra = [
        Entry(name, name, {}, note="default options")
        for name in strategies.available()
        if name not in named and name not in COVERED_ELSEWHERE
    ]
    return [*entries, *extra]


def suite_for(kind: str, entries: Sequence[Entry] | None = None, optional: bool = True) -> list[Entry]:
    """The table of entries run on problems of constraint ``kind`` (before support filtering);
    ``optional=False`` leaves out the ``default=False`` entries."""
    entries = all_entries() if entries is None else entries
    return [e for e in entries if (e.kinds is None or kind in e.kinds) and (optional or e.default)]


def default_suite(optional: bool = True) -> dict[str, list[Entry]]:
    """``{constraint kind: [Entry, ...]}``: every entry (``optional=False``: what ``constrain
    study`` runs when no ``--strategies`` are given)."""
    return {kind: suite_for(kind, optional=optional) for kind in KINDS}


def skip_reason(entry: Entry, problem: Problem) -> str | None:
    """Why ``entry`` is not run on ``problem`` (unregistered, or unsupported for one of its targets)."""
    if entry.strategy is None:
        return None
    if entry.strategy not in strategies.available():
        return "not registered in this installation"
    cls = strategies.strategy_class(entry.strategy)
    for target in problem.targets:
        reason = cls.unsupported_reason(target)
        if reason is not None:
            return reason
    return None


def resolve_options(entry: Entry, problem: Problem) -> dict[str, Any]:
    """The entry's options with every :class:`RunValue` resolved for ``problem``."""
    return {k: v.resolve(problem) if isinstance(v, RunValue) else v for k, v in entry.options.items()}


# ====================================================================== the plan
@dataclass(frozen=True)
class RunSpec:
    """One run: a problem, an entry, a seed and a step budget; ``early_stop``: the run may end before its
    budget once it has converged (:func:`experiments._convergence.convergence_reason`; the reason is recorded)."""

    problem: str
    entry: Entry
    seed: int
    steps: int
    early_stop: bool = True

    def identity(self) -> dict[str, Any]:
        """Everything the run's result depends on (hashed into its file name)."""
        p = get_problem(self.problem)
        return {
            "format": FORMAT,
            "problem": self.problem,
            "config": p.config,
            "lr": p.lr,
            "lr_final": p.lr_final,
            "strategy": self.entry.strategy,
            "options": self.entry.stored_options(),
            "seed": self.seed,
            "steps": self.steps,
            "stop": STOP_RULE if self.early_stop else None,
        }

    @property
    def key(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def path(self, out: Path) -> Path:
        """``out/<problem>/<label>--seed<k>--<key>.json``."""
        label = re.sub(r"[^A-Za-z0-9._-]+", "_", self.entry.label).strip("_")
        return Path(out) / self.problem / f"{label}--seed{self.seed}--{self.key}.json"


@dataclass(frozen=True)
class Skipped:
    """A (problem, entry) cell that is not run, and why."""

    problem: str
    entry: Entry
    reason: str


@dataclass
class Plan:
    """The runs of a study, the cells it skips, and the settings it was planned with."""

    problems: list[str]
    entries: dict[str, list[Entry]]  # problem -> entries that run, in table order
    specs: list[RunSpec]
    skipped: list[Skipped]
    seeds: list[int]
    steps: dict[str, int]  # problem -> step budget
    left_out: list[str] = field(default_factory=list)  # labels of default=False entries not run
    early_stop: bool = True  # runs may stop once converged (RunSpec.early_stop)


def _matches(entry: Entry, wanted: Sequence[str]) -> bool:
    return entry.strategy is None or any(w in (entry.label, entry.strategy, entry.family) for w in wanted)


def plan_study(
    problems: Sequence[str],
    seeds: Sequence[int],
    steps: int | None = None,
    quick: bool = False,
    strategy_filter: Sequence[str] | None = None,
    suite: Mapping[str, Sequence[Entry]] | None = None,
    early_stop: bool = True,
) -> Plan:
    """Cross ``problems`` with their kind's entries and ``seeds``.

    ``steps``: the budget for every problem (default: each problem's ``steps``, or ``quick_steps``
    with ``quick``). ``strategy_filter``: keep entries whose label, strategy name or family is
    listed (the unconstrained baseline is always kept); without it, ``default=False`` entries are
    left out. ``suite``: ``{kind: entries}`` (default :func:`default_suite`). ``early_stop``: runs may end
    once converged (False: every run takes its whole budget).
    """
    suite = default_suite() if suite is None else suite
    unknown = unknown_problems(problems)
    if unknown:
        raise KeyError(unknown)
    if strategy_filter:
        known = {w for entries in suite.values() for e in entries for w in (e.label, e.strategy, e.family) if w is not None}
        missing = [w for w in strategy_filter if w not in known]
        if missing:
            close = [m for w in missing for m in difflib.get_close_matches(w, sorted(known), n=1, cutoff=0.6)]
            raise KeyError(
                f"no strategy entry matches {', '.join(missing)}; labels: "
                f"{', '.join(sorted({e.label for es in suite.values() for e in es}))}."
                + (f" Did you mean {', '.join(map(repr, close))}?" if close else "")
            )
    specs: list[RunSpec] = []
    skipped: list[Skipped] = []
    entries_of: dict[str, list[Entry]] = {}
    budget: dict[str, int] = {}
    left_out: list[str] = []
    for name in problems:
        problem = get_problem(name)
        budget[name] = steps if steps is not None else (problem.quick_steps if quick else problem.steps)
        entries_of[name] = []
        for entry in suite.get(problem.kind, []):
            if strategy_filter and not _matches(entry, strategy_filter):
                continue
            if not strategy_filter and not entry.default:
                if entry.label not in left_out:
                    left_out.append(entry.label)
                continue
            reason = skip_reason(entry, problem)
            if reason is not None:
                skipped.append(Skipped(name, entry, reason))
                continue
            entries_of[name].append(entry)
            specs.extend(RunSpec(name, entry, seed, budget[name], early_stop) for seed in seeds)
    return Plan(list(problems), entries_of, specs, skipped, list(seeds), budget, left_out, early_stop)


# ====================================================================== one run
def log_steps(steps: int, linear: int = 60, geometric: int = 30) -> list[int]:
    """Steps at which a run is evaluated: 0, about ``geometric`` log-spaced and ``linear`` evenly
    spaced steps (fewer for short runs: at most one evaluation per 4 steps of each kind), and
    ``steps`` (step ``t`` = after ``t`` optimizer steps)."""
    linear, geometric = max(1, min(linear, steps // 4)), max(2, min(geometric, steps // 4))
    points = {0, steps}
    points.update(int(round(s)) for s in np.geomspace(1, max(steps, 1), geometric))
    points.update(int(round(s)) for s in np.linspace(0, steps, linear + 1))
    return sorted(p for p in points if 0 <= p <= steps)


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam over every parameter of ``model``, torch's fused kernel called directly (:class:`FusedAdam`: the
    same update as ``torch.optim.Adam``, bit for bit, with a third of a small model's step less overhead)."""
    try:
        return FusedAdam(model.parameters(), lr=lr)
    except (RuntimeError, TypeError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(model.parameters(), lr=lr)


def _new_record(problem: Problem, entry: Entry, seed: int, steps: int, f_star: float | None) -> dict[str, Any]:
    """The fields of a run record known before training."""
    return {
        "status": "done",
        "error": None,
        "failed_at": None,
        "problem": problem.name,
        "kind": problem.kind,
        "label": entry.label,
        "strategy": entry.strategy,
        "family": entry.family,
        "options": entry.stored_options(),
        "seed": seed,
        "steps": steps,
        "lr": problem.lr,
        "lr_final": problem.lr_final,
        "f_star": f_star,
        "log": {k: [] for k in LOG_FIELDS},
    }


def _train(
    problem: Problem, entry: Entry, seed: int, steps: int, f_star: float | None, log: dict[str, list], early_stop: bool
) -> TrainResult:
    """Build the seeded model and the entry's strategy, then train full batch (see :func:`train_run`)."""
    torch.manual_seed(seed)
    model = problem.make_model(seed)
    strategy = None
    if entry.strategy is not None:
        strategy = strategies.get(entry.strategy, **resolve_options(entry, problem))
        model = strategy.attach(model, list(problem.targets))

    def evaluate(t: int, progress: TrainResult) -> None:
        values = problem.evaluate(model, f_star)
        for k, v in (("step", t), *values.items(), ("time", progress.wall), ("cpu", progress.cpu)):
            log[k].append(v)

    def converged(t: int, progress: TrainResult) -> str | None:
        just_logged = bool(log["step"]) and log["step"][-1] == t
        return convergence_reason(log, steps, f_star) if early_stop and just_logged else None

    follow = entry.follow_lr
    return train(
        model,
        lambda: make_optimizer(model, problem.lr),
        lambda outputs, batch: problem.objective(outputs),
        full_batches(problem.X_train),
        steps,
        strategy=strategy,
        lr=lambda t: problem.lr_at(t, steps),
        follow_lr=None if follow is None or strategy is None else functools.partial(follow, strategy),
        log_at=set(log_steps(steps)),
        on_log=evaluate,
        stop_when=converged,
        check_finite=strategy is None,
        warmup=min(WARMUP_STEPS, steps // 2),
        record_errors=True,
    )


def train_run(
    problem: Problem, entry: Entry, seed: int, steps: int, f_star: float | None = None, early_stop: bool = False
) -> dict[str, Any]:
    r"""Train ``problem`` with ``entry``'s strategy for ``steps`` full-batch Adam steps from the seeded start
    (``early_stop``: fewer once converged; ``stopped`` then says at which step and why, else it is None).

    Returns the record: ``status`` (``"done"`` or ``"failed"`` with ``error`` and ``failed_at``),
    the columns of :data:`LOG_FIELDS` under ``log`` (``time``: cumulative wall-clock seconds of
    training work, ``cpu``: the same in CPU seconds of the process; evaluation excluded), and
    ``time_per_step`` (CPU seconds per step after the first :data:`WARMUP_STEPS`: CPU time is far
    less disturbed than wall time by other load on the machine). A strategy error (infeasible barrier start, non-finite
    loss, ...) ends the run as failed; ``KeyboardInterrupt`` propagates.
    """
    started = time.time()
    record = _new_record(problem, entry, seed, steps, f_star)
    log = record["log"]
    warmup = min(WARMUP_STEPS, steps // 2)
    try:
        result = _train(problem, entry, seed, steps, f_star, log, early_stop)
    except Exception as setup_error:  # a failing setup (options, attach) is a result too
        result = TrainResult(stopped="error", error=setup_error, traceback=traceback.format_exc(limit=6))
    if result.error is not None:
        failure = f"{type(result.error).__name__}: {result.error}".strip()
        record.update(status="failed", failed_at=result.steps, error=failure, traceback=result.traceback)
    done = log["step"][-1] if log["step"] else 0
    record["stopped"] = result.stopped if result.error is None else None
    record["steps_run"] = result.steps
    cpu = result.cpu
    record["time_per_step"] = (cpu - result.warm_cpu) / (done - warmup) if done > warmup else None
    record["wall_per_step"] = result.wall / done if done else None
    record["train_time"], record["train_cpu"] = result.wall, cpu
    record["wall_time"] = time.time() - started
    record["torch"] = torch.__version__
    return record


# ====================================================================== storage
def read_run(path: Path) -> dict[str, Any] | None:
    """A stored run record, or None if the file is missing, unreadable or of another format."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def run_spec(spec: RunSpec, out: Path, f_star: float | None) -> dict[str, Any]:
    """Run ``spec`` and store its record at ``spec.path(out)``; returns the record."""
    record = train_run(get_problem(spec.problem), spec.entry, spec.seed, spec.steps, f_star, spec.early_stop)
    record.update(format=FORMAT, key=spec.key, identity=spec.identity())
    write_json_atomic(spec.path(out), record)
    return record


def _init_worker() -> None:
    """One torch thread per worker, and the one-time costs of a first training step paid up front."""
    torch.set_num_threads(1)
    warm_up()


def warm_up() -> None:
    """Take two Adam steps on a tiny model: the first optimizer step imports and sets up machinery
    (seconds) that would otherwise land in the first run's timing."""
    model = torch.nn.Linear(2, 1)
    optimizer = make_optimizer(model, 1e-3)
    for _ in range(2):
        loss = model(torch.ones(1, 2)).square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _f_star(problem: str, out: Path, reuse: bool) -> float | None:
    """The problem's :math:`F^*`, solved once and kept in ``out/references/`` (``reuse=False``: solved again)."""
    ref = get_problem(problem).stored_reference(out / REFERENCES, reuse)
    return None if ref is None else ref.f_star


def _finished(record: dict[str, Any] | None, retry_failed: bool) -> bool:
    return record is not None and (record.get("status") == "done" or (record.get("status") == "failed" and not retry_failed))


def execute(
    plan: Plan,
    out: Path,
    *,
    resume: bool = True,
    retry_failed: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run every spec of ``plan`` not already finished in ``out``; returns ``{spec.key: record}``.

    ``resume``: keep finished run files (``False``: redo every run). ``retry_failed``: redo runs
    whose stored status is ``failed``. ``workers > 1`` runs specs in that many spawned processes
    (one torch thread each); every run writes its own file, so an interruption keeps all
    finished runs.
    """
    out = Path(out)
    records: dict[str, dict[str, Any]] = {}
    todo: list[RunSpec] = []
    for spec in plan.specs:
        record = read_run(spec.path(out)) if resume else None
        if _finished(record, retry_failed):
            records[spec.key] = record  # type: ignore[assignment]  # _finished is False for None
        else:
            todo.append(spec)
    f_stars = {name: _f_star(name, out, resume) for name in plan.problems}
    # Longest runs first (MLP problems), so the two workers finish together.
    order = sorted(
        todo, key=lambda s: -get_problem(s.problem).X_train.shape[0] * s.steps * (2 if s.problem.startswith("mlp") else 1)
    )

    def finished(index: int, record: dict[str, Any]) -> None:
        records[order[index].key] = record

    run_with_progress(
        run_spec,
        [(spec, out, f_stars[spec.problem]) for spec in order],
        [f"{spec.problem} / {spec.entry.label} / seed {spec.seed}" for spec in order],
        finished,
        workers=workers,
        total=len(plan.specs),
        desc="study",
        progress=progress,
        initializer=_init_worker,
        warm_up=warm_up,
    )
    return records


# ====================================================================== summaries
@dataclass
class Row:
    """One line of the results table: medians over the seeds of one (problem, entry)."""

    problem: str
    entry: Entry
    runs: int
    failed: list[str]
    objective: float | None
    gap: float | None
    train_max: float | None
    train_mean: float | None
    test_max: float | None
    steps_to_feasible: float | None  # None: some seed never stayed below FEASIBLE
    time_per_step: float | None
    relative_time: float | None
    worst_gap: float | None  # max |gap| over seeds
    worst_violation: float | None  # max train violation over seeds
    steps_run: float | None = None  # median over the finished seeds of the steps taken
    stops: list[tuple[int, int]] = field(default_factory=list)  # (seed, step) of the runs stopped once converged

    @property
    def reaches_target(self) -> bool:
        """Every seed finished with |gap| <= GAP_OK and max violation <= VIOLATION_OK."""
        return (
            not self.failed
            and self.worst_gap is not None
            and self.worst_gap <= GAP_OK
            and self.worst_violation is not None
            and self.worst_violation <= VIOLATION_OK
        )


def steps_to_feasible(record: dict[str, Any], threshold: float = FEASIBLE) -> int | None:
    """The first logged step from which the max training violation stays <= ``threshold`` to the
    end of the run (None if the final violation is above it, or the run failed)."""
    if record.get("status") != "done":
        return None
    steps, viol = record["log"]["step"], record["log"]["train_max"]
    first = None
    for s, v in zip(steps, viol, strict=True):
        if v is not None and v <= threshold:
            first = s if first is None else first
        else:
            first = None
    return first


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(vals) if vals else None


def _final(record: dict[str, Any], key: str) -> float | None:
    column = record["log"][key]
    return column[-1] if column else None


def summarize(plan: Plan, records: Mapping[str, dict[str, Any]]) -> list[Row]:
    """One :class:`Row` per (problem, entry) of ``plan``, medians over seeds of the final values."""
    rows = []
    for problem in plan.problems:
        base_time = None
        for entry in plan.entries[problem]:
            runs = [
                records[s.key] for s in plan.specs if s.problem == problem and s.entry.label == entry.label and s.key in records
            ]
            done = [r for r in runs if r["status"] == "done"]
            failed = [f"seed {r['seed']} at step {r['failed_at']}: {r['error']}" for r in runs if r["status"] != "done"]
            to_feasible = [steps_to_feasible(r) for r in done]
            reached = [s for s in to_feasible if s is not None]
            time_per_step = _median(r.get("time_per_step") for r in done)
            if entry.strategy is None:
                base_time = time_per_step
            gaps = [_final(r, "gap") for r in done]
            viol = [_final(r, "train_max") for r in done]
            rows.append(
                Row(
                    problem=problem,
                    entry=entry,
                    runs=len(runs),
                    failed=failed,
                    objective=_median(_final(r, "objective") for r in done),
                    gap=_median(gaps),
                    train_max=_median(viol),
                    train_mean=_median(_final(r, "train_mean") for r in done),
                    test_max=_median(_final(r, "test_max") for r in done),
                    steps_to_feasible=statistics.median(reached) if done and len(reached) == len(to_feasible) else None,
                    time_per_step=time_per_step,
                    relative_time=None,
                    worst_gap=max((abs(g) for g in gaps if g is not None), default=None) if None not in gaps else None,
                    worst_violation=max((v for v in viol if v is not None), default=None),
                    steps_run=_median(r.get("steps_run") for r in done),
                    stops=[(r["seed"], r["steps_run"]) for r in done if r.get("stopped")],
                )
            )
        for row in rows:
            if row.problem == problem and base_time and row.time_per_step is not None:
                row.relative_time = row.time_per_step / base_time
    return rows


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.{max(digits - 1, 1)}e}"


def _violation(value: float | None) -> str:
    return "-" if value is None else ("0" if value == 0 else f"{value:.1e}")


def _gap(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1e}"


def _steps(value: float | None, has_runs: bool) -> str:
    if not has_runs:
        return "-"
    return "never" if value is None else f"{value:g}"


def _steps_run(row: Row) -> str:
    """The median steps taken, with how many seeds stopped once converged (``600 (3 stopped)``)."""
    if row.steps_run is None:
        return "-"
    return f"{row.steps_run:g}" + (f" ({len(row.stops)} stopped)" if row.stops else "")


def _stop_lines(rows: Sequence[Row], has_f_star: bool) -> list[str]:
    """Which runs stopped before their budget, at which step, and the rule that stopped them."""
    stopped = [r for r in rows if r.stops]
    if not stopped:
        return []
    runs = "; ".join(
        f"{r.entry.label} (seed{'s' if len(r.stops) > 1 else ''} {', '.join(str(s) for s, _ in r.stops)} "
        f"at step{'s' if len(r.stops) > 1 else ''} {', '.join(str(k) for _, k in r.stops)})"
        for r in stopped
    )
    return [
        "",
        f"Stopped once converged (over the last {WINDOW:.0%} of the budget, the objective moved less than "
        + (f"{RELATIVE:g} of its distance to F*" if has_f_star else f"{OBJECTIVE_ALONE:g} of itself")
        + f" and the max violation less than {RELATIVE:g} of itself, "
        f"checked from {EARLIEST:.0%} of the budget on; their final values are those of the stop): {runs}.",
    ]


def _problem_section(plan: Plan, rows: Sequence[Row], problem_name: str) -> list[str]:
    """The markdown of one problem: its header, one row per strategy, the best entry of each family
    and the cells not applicable."""
    lines: list[str] = []
    problem = get_problem(problem_name)
    f_star = problem.f_star
    header = f"## {problem_name}: {problem.description}"
    lines += [header, ""]
    info = [f"{plan.steps[problem_name]} steps", f"Adam lr {problem.lr:g} -> {problem.lr * problem.lr_final:g}"]
    if f_star is not None:
        ref = problem.reference()
        assert ref is not None  # a problem with F* has its cvxpy reference
        info.insert(0, f"F* = {f_star:.10g} (cvxpy {ref.solver}, {ref.status})")
    lines += ["; ".join(info) + ".", ""]
    lines += [
        "| strategy | family | options | objective | gap | train viol max | train viol mean | held-out viol max "
        f"| steps to viol <= {FEASIBLE:g} | steps run | time/step (x unconstrained) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in (r for r in rows if r.problem == problem_name):
        e = row.entry
        name = e.label if e.strategy in (None, e.label) else f"{e.label} (`{e.strategy}`)"
        if row.reaches_target and problem.convex:
            name = f"**{name}**"
        if row.failed and len(row.failed) == row.runs:
            lines.append(f"| {name} | {e.family} | {e.options_text()} | failed: {_short(row.failed[0])} | | | | | | | |")
            continue
        flag = f" ({len(row.failed)} of {row.runs} failed)" if row.failed else ""
        lines.append(
            f"| {name}{flag} | {e.family} | {e.options_text()} | {_num(row.objective, 6)} | "
            f"{_gap(row.gap) if f_star is not None else '-'} | {_violation(row.train_max)} | "
            f"{_violation(row.train_mean)} | {_violation(row.test_max)} | "
            f"{_steps(row.steps_to_feasible, row.runs > 0)} | {_steps_run(row)} | {_num(row.relative_time, 3)} |"
        )
    lines += _stop_lines([r for r in rows if r.problem == problem_name], f_star is not None)
    lines += family_best_lines(problem, [r for r in rows if r.problem == problem_name])
    skipped = [s for s in plan.skipped if s.problem == problem_name]
    if skipped:
        by_family: dict[str, list[Skipped]] = {}
        for s in skipped:
            by_family.setdefault(s.entry.family, []).append(s)
        parts = [f"{', '.join(s.entry.label for s in group)} ({_short(group[0].reason, 110)})" for group in by_family.values()]
        lines += ["", "Not applicable here (`unsupported_reason`): " + "; ".join(parts) + "."]
    lines.append("")
    return lines


def markdown_table(plan: Plan, rows: Sequence[Row], title: str = "Study", command: str = "") -> str:
    """The results as markdown: per problem, one row per strategy (medians over seeds), the
    skipped cells with their reasons, and which strategies meet the convex-problem target."""
    lines = [f"# {title}", ""]
    if command:
        lines += [f"Produced by `{command}`.", ""]
    lines += [
        f"Seeds {', '.join(map(str, plan.seeds))}; values are medians over seeds of the final step. "
        f"Full batch, Adam, learning rate decaying exponentially from lr to lr x lr_final; every strategy gets "
        f"the same data, seeded start and step budget. "
        f"gap = (F - F*) / |F*| (F* from cvxpy; negative: below the optimum of the constrained linear model, "
        f"i.e. infeasible or a different model class). "
        f"Violations: max over constrained rows (samples or weight rows); held-out only for output constraints. "
        f"Steps to feasible: first logged step from which the max training violation stays <= {FEASIBLE:g}. "
        f"Steps run: the steps taken (median over seeds); a run stops before its budget once converged "
        f"(the line under each table says which, where and why). "
        f"Time/step: CPU time of the training work per step (one torch thread; evaluation and the first "
        f"{WARMUP_STEPS} steps excluded) relative to the unconstrained run.",
        "",
    ]
    if plan.left_out:
        lines += [f"Not in this run, to keep it short (name them in `--strategies` to run them): {', '.join(plan.left_out)}.", ""]
    for problem_name in plan.problems:
        lines += _problem_section(plan, rows, problem_name)
    convex = [p for p in plan.problems if get_problem(p).convex]
    if convex:
        lines += [f"## Gap <= {GAP_OK:g} and violation <= {VIOLATION_OK:g} (every seed; **bold** above)", ""]
        for p in convex:
            winners = [r.entry.label for r in rows if r.problem == p and r.reaches_target and r.entry.strategy]
            lines.append(f"- {p}: {', '.join(winners) if winners else 'none'}")
        lines.append("")
        lines += family_overview(plan, rows)
    return "\n".join(lines)


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ====================================================================== the whole study
@dataclass
class StudyResult:
    """What :func:`run_study` produced."""

    plan: Plan
    records: dict[str, dict[str, Any]]
    rows: list[Row]
    table: str
    figures: list[Path]
    seconds: float


def run_study(
    problems: Sequence[str],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int | None = None,
    quick: bool = False,
    strategy_filter: Sequence[str] | None = None,
    suite: Mapping[str, Sequence[Entry]] | None = None,
    out: Path = Path("results/study"),
    figures: Path | None = Path("figures"),
    prefix: str = "study",
    resume: bool = True,
    retry_failed: bool = False,
    workers: int = 1,
    progress: bool = True,
    title: str = "Study",
    command: str = "",
    early_stop: bool = True,
) -> StudyResult:
    """Plan, run (resuming), summarize, write ``<figures>/<prefix>.md`` and the figures (``early_stop``:
    see :func:`plan_study`)."""
    tic = time.perf_counter()
    plan = plan_study(problems, seeds, steps, quick, strategy_filter, suite, early_stop)
    records = execute(plan, out, resume=resume, retry_failed=retry_failed, workers=workers, progress=progress)
    rows = summarize(plan, records)
    table = markdown_table(plan, rows, title=title, command=command)
    written: list[Path] = []
    if figures is not None:
        from experiments import figures as figs

        figures = Path(figures)
        figures.mkdir(parents=True, exist_ok=True)
        written = figs.study_figures(plan, records, rows, figures, prefix)
        table_path = figures / f"{prefix}.md"
        body = table + "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in written) + "\n"
        tmp = table_path.with_suffix(".md.tmp")
        tmp.write_text(body)
        os.replace(tmp, table_path)
        written.append(table_path)
    return StudyResult(plan, records, rows, table, written, time.perf_counter() - tic)


def replace_fields(entry: Entry, **changes: Any) -> Entry:
    """A copy of ``entry`` with ``changes`` (e.g. other options), for custom suites."""
    return dataclasses.replace(entry, **changes)


__all__ = [
    "BASELINE_LABEL",
    "CONVEX_PROBLEMS",
    "ENTRIES",
    "Entry",
    "Plan",
    "Row",
    "RunSpec",
    "Skipped",
    "StudyResult",
    "all_entries",
    "default_suite",
    "execute",
    "log_steps",
    "markdown_table",
    "plan_study",
    "read_run",
    "replace_fields",
    "run_spec",
    "run_study",
    "skip_reason",
    "steps_to_feasible",
    "suite_for",
    "summarize",
    "train_run",
    "write_json_atomic",
]
