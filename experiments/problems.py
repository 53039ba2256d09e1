r"""The problems of the convergence studies: data, model, constraint targets and ground truth.

Every problem trains a model :math:`f_\theta` on fixed data to minimize the mean squared error

.. math::  F(\theta) = \frac{1}{n k} \sum_{i=1}^n \|f_\theta(x_i) - y_i\|_2^2

under one constraint target. The *convex* problems are linear regressions
(``nn.Linear``, float64, full batch) whose optimum :math:`F^*` is solved by cvxpy at tight
tolerances; the *MLP* problems are small networks without a known optimum. A run reports

- the objective :math:`F` at the current weights, evaluated on the model's own outputs (for a
  strategy that appends an output map, e.g. a projection layer, the mapped outputs);
- the relative gap :math:`(F - F^*) / \max(|F^*|, 10^{-12})` where :math:`F^*` is known (it is
  the optimum over *linear* models, so a strategy that changes the output map can beat it:
  a negative gap);
- the violation of every constrained row (``ConstraintSet.violation``) on the training inputs
  (max and mean) and on held-out inputs (output constraints only; a weight constraint does not
  depend on the input).

Every model starts strictly inside its set on the training and held-out inputs (each problem
says how), so that barriers, which need an interior, start too; every strategy gets that same
start for a given seed.

Problems are built by name (:func:`get_problem`); :data:`PROBLEMS` maps each name to its builder.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from constrain import Affine, L1Ball, NonNegative, OutputTarget, ParameterTarget, on_output, on_parameter, output_rows
from experiments import datasets
from experiments._problem_names import CONVEX_PROBLEMS as CONVEX_PROBLEMS  # re-exported (imported from here)
from experiments._problem_names import MLP_PROBLEMS as MLP_PROBLEMS  # re-exported (imported from here)
from experiments._storage import write_json_atomic
from experiments.catalogue import STUDY_KINDS

Target = OutputTarget | ParameterTarget

#: Constraint kinds (keys of :mod:`experiments.catalogue`); the study's strategy table is keyed by these.
KINDS = STUDY_KINDS


@dataclass
class Problem:
    r"""One training problem: data, a seeded model factory, constraint targets and an optimizer plan.

    ``make_model(seed)`` returns a freshly initialized model (strictly feasible, see the module
    doc). The optimizer is Adam with the learning rate decaying exponentially from ``lr`` to
    ``lr * lr_final`` over the run: :math:`\eta_t = \eta\, r^{t/(T-1)}`.
    """

    name: str
    kind: str
    description: str
    X_train: Tensor
    Y_train: Tensor
    X_test: Tensor
    Y_test: Tensor
    targets: tuple[Target, ...]
    make_model: Callable[[int], nn.Module]
    lr: float
    lr_final: float = 1.0
    steps: int = 2000
    quick_steps: int = 150
    convex: bool = False
    #: Settings that identify the data and model (hashed into the run files' names).
    config: dict[str, Any] = field(default_factory=dict)
    #: The cvxpy ground truth, solved on first use (see :meth:`reference`).
    _reference: Reference | None = field(default=None, repr=False)
    _solve: Callable[[], Reference] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ ground truth
    def reference(self) -> Reference | None:
        """The cvxpy optimum (``None`` for nonconvex problems); solved once, kept in memory."""
        if self._reference is None and self._solve is not None:
            self._reference = self._solve()
        return self._reference

    def stored_reference(self, folder: Path, reuse: bool = True) -> Reference | None:
        """:meth:`reference`, kept on disk: read from ``folder`` when a file there has this problem's
        :meth:`reference_key` (and ``reuse``), else solved (or taken from memory) and written there, as JSON in a
        ``.ref`` file (not ``*.json``: the run files); ``None`` for nonconvex problems. A file that cannot be
        read, or holds another problem's solution, is solved again and replaced."""
        if self._solve is None:
            return None
        key = self.reference_key()
        path = Path(folder) / f"{self.name}--{key}.ref"
        stored = _read_reference(path, key) if reuse and self._reference is None else None
        if stored is not None:
            self._reference = stored
            return stored
        ref = self.reference()  # the one in memory, or solved now
        assert ref is not None  # _solve is set
        write_json_atomic(path, {"key": key, "problem": self.name, **ref.as_json()})
        return ref

    def reference_key(self) -> str:
        """A hash of what :math:`F^*` depends on: the problem's name and config (data, model, constraint), the
        solver settings and the versions of cvxpy, Clarabel, OSQP and numpy."""
        versions = {name: _version(name) for name in ("cvxpy", "clarabel", "osqp", "numpy")}
        blob = json.dumps(
            {"problem": self.name, "config": self.config, "clarabel": CLARABEL_OPTIONS, "osqp": OSQP_OPTIONS, **versions},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    @property
    def f_star(self) -> float | None:
        """:math:`F^*`, the optimal objective, or None when unknown."""
        ref = self.reference()
        return None if ref is None else ref.f_star

    # ------------------------------------------------------------------ training pieces
    def lr_at(self, step: int, steps: int) -> float:
        r""":math:`\eta_t = \eta\, r^{t/(T-1)}`, the learning rate of step ``step`` (0-based) of ``steps``."""
        if steps <= 1 or self.lr_final == 1.0:
            return self.lr
        return self.lr * self.lr_final ** (step / (steps - 1))

    def objective(self, outputs: Tensor, Y: Tensor | None = None) -> Tensor:
        r""":math:`\frac{1}{nk}\sum_i \|\hat y_i - y_i\|^2` of the outputs against ``Y`` (default: training targets)."""
        Y = self.Y_train if Y is None else Y
        return torch.nn.functional.mse_loss(outputs, Y if Y.dtype == outputs.dtype else Y.to(outputs.dtype))

    @property
    def has_output_target(self) -> bool:
        return any(isinstance(t, OutputTarget) for t in self.targets)

    @torch.no_grad()
    def violations(self, model: nn.Module, outputs: Tensor | None) -> Tensor:
        """Violation of every constrained row (output rows on ``outputs``, parameter rows), 1-d."""
        parts = []
        for target in self.targets:
            if isinstance(target, OutputTarget):
                if outputs is not None:
                    parts.append(target.set.violation(output_rows(outputs)).reshape(-1))
            else:
                parts.append(target.set.violation(target.gather(model)).reshape(-1))
        if not parts:
            return torch.zeros(1, dtype=torch.float64)
        return torch.cat([p.double() for p in parts])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, f_star: float | None = None) -> dict[str, float | None]:
        r"""Objective, relative gap to ``f_star`` and violations (train max/mean, held-out max/mean).

        Held-out violations are ``None`` when no target is on the outputs."""
        out_train = model(self.X_train)
        train = self.violations(model, out_train)
        values = [self.objective(out_train).double(), train.max(), train.mean()]
        if self.has_output_target:
            out_test = model(self.X_test)
            test = torch.cat(
                [t.set.violation(output_rows(out_test)).reshape(-1).double() for t in self.targets if isinstance(t, OutputTarget)]
            )
            values += [test.max(), test.mean()]
        numbers = torch.stack(values).tolist()  # one read of the device for all of them
        value = numbers[0]
        return {
            "objective": value,
            "gap": None if f_star is None else relative_gap(value, f_star),
            "train_max": numbers[1],
            "train_mean": numbers[2],
            "test_max": numbers[3] if len(numbers) > 3 else None,
            "test_mean": numbers[4] if len(numbers) > 3 else None,
        }


def relative_gap(value: float, f_star: float) -> float:
    r""":math:`(F - F^*) / \max(|F^*|, 10^{-12})`."""
    return (value - f_star) / max(abs(f_star), 1e-12)


# ---------------------------------------------------------------------- cvxpy ground truth
@dataclass(frozen=True)
class Reference:
    """cvxpy's optimum of a linear-regression problem: :math:`F^*`, the weights, the solver's status."""

    f_star: float
    weight: np.ndarray
    bias: np.ndarray
    solver: str
    status: str

    def as_json(self) -> dict[str, Any]:
        """The fields as JSON values (floats exactly: JSON keeps every digit of a float64)."""
        return {
            "f_star": self.f_star,
            "weight": self.weight.tolist(),
            "bias": self.bias.tolist(),
            "solver": self.solver,
            "status": self.status,
        }


def _read_reference(path: Path, key: str) -> Reference | None:
    """The :class:`Reference` stored at ``path`` under ``key`` (None: missing, unreadable or another key)."""
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") != key:
            return None
        weight, bias = (np.asarray(stored[name], dtype=np.float64) for name in ("weight", "bias"))
        return Reference(float(stored["f_star"]), weight, bias, str(stored["solver"]), str(stored["status"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


#: Interior-point settings for :math:`F^*`: far tighter than any gap the study reports.
CLARABEL_OPTIONS = {"tol_gap_abs": 1e-13, "tol_gap_rel": 1e-13, "tol_feas": 1e-13, "max_iter": 1000}
#: The fallback solver's settings.
OSQP_OPTIONS = {"eps_abs": 1e-12, "eps_rel": 1e-12, "max_iter": 400_000, "polishing": True}


def linear_reference(X: Tensor, Y: Tensor, targets: Sequence[Target]) -> Reference:
    r"""Solve :math:`\min_{W, b} \frac{1}{nk}\|X W^\top + 1 b^\top - Y\|_F^2` s.t. the targets, with cvxpy.

    Output targets constrain every training row :math:`W x_i + b`; parameter targets name
    ``"weight"`` or ``"bias"`` of the ``nn.Linear`` (flat-vector sets act on ``vec(W)``, row-major).
    Each set contributes its own ``cvxpy_constraint``. Solved with Clarabel at tolerance 1e-13
    (OSQP with polishing as the fallback).
    """
    import cvxpy as cp

    Xn, Yn = X.detach().double().numpy(), Y.detach().double().numpy()
    n, d = Xn.shape
    k = Yn.shape[1]
    W, b = cp.Variable((k, d)), cp.Variable(k)
    Z = Xn @ W.T + np.ones((n, 1)) @ cp.reshape(b, (1, k), order="C")
    constraints: list = []
    variables = {"weight": W, "bias": b}
    for target in targets:
        if isinstance(target, OutputTarget):
            if isinstance(target.set, NonNegative):
                constraints.append(Z >= 0)
            elif isinstance(target.set, L1Ball) and not isinstance(target.set.radius, Tensor):
                # ||Z_i||_1 <= r for every row i in one expression (row by row, cvxpy spends seconds compiling n norms)
                constraints.append(cp.sum(cp.abs(Z), axis=1) <= float(target.set.radius))
            else:
                for i in range(n):
                    constraints += target.set.cvxpy_constraint(Z[i, :])
            continue
        if target.set.acts_on_flat_vector:
            flat = cp.hstack(
                [cp.reshape(variables[name], (int(np.prod(variables[name].shape)),), order="C") for name in target.names]
            )
            constraints += target.set.cvxpy_constraint(flat)
            continue
        (name,) = target.names
        var = variables[name]
        rows = [var] if var.ndim == 1 else [var[j, :] for j in range(var.shape[0])]
        for row in rows:
            constraints += target.set.cvxpy_constraint(row)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(Z - Yn) / (n * k)), constraints)
    for solver, options in (
        (cp.CLARABEL, CLARABEL_OPTIONS),
        (cp.OSQP, OSQP_OPTIONS),
    ):
        try:
            problem.solve(solver=solver, **options)
        except cp.error.SolverError:
            continue
        if problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and W.value is not None:
            weight, bias = np.asarray(W.value), np.asarray(b.value)
            # F* evaluated in float64 numpy at the solution, not the solver's scaled value.
            f_star = float(np.mean((Xn @ weight.T + bias - Yn) ** 2))
            return Reference(f_star, weight, bias, str(solver), str(problem.status))
    raise RuntimeError(f"cvxpy could not solve the reference problem (status {problem.status}).")


def reference_violation(problem: Problem) -> float:
    """Largest violation of cvxpy's solution (a check that the ground truth is feasible)."""
    ref = problem.reference()
    if ref is None:
        raise ValueError(f"problem {problem.name!r} has no reference solution.")
    model = problem.make_model(0)
    assert isinstance(model, nn.Linear)  # the convex problems (the ones with a reference) are linear models
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(ref.weight))
        model.bias.copy_(torch.as_tensor(ref.bias))
    return float(problem.violations(model, model(problem.X_train)).max())


# ---------------------------------------------------------------------- models and starts
M = TypeVar("M", bound=nn.Module)


def _seeded(seed: int, build: Callable[[], M]) -> M:
    """``build()`` under ``torch.manual_seed(seed)``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _linear_model(d: int, k: int, seed: int, start: Callable[[nn.Linear], None]) -> nn.Linear:
    def build() -> nn.Linear:
        model = nn.Linear(d, k).double()
        with torch.no_grad():
            start(model)
        return model

    return _seeded(seed, build)


# ---------------------------------------------------------------------- convex problems
#: The synthetic regression data of every convex problem: n train, n test, d features, k outputs.
class _LinearData(TypedDict):
    n_train: int
    n_test: int
    d: int
    k: int
    noise: float
    seed: int


LINEAR_DATA: _LinearData = {"n_train": 200, "n_test": 100, "d": 8, "k": 3, "noise": 0.1, "seed": 0}


def _linear_data(
    transform: Callable[[np.ndarray], np.ndarray] | None = None, scale: float = 1.0, bias: float = 0.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Fixed synthetic data :math:`y = \mathrm{transform}(s\,W_0 x + b_0) + \epsilon`, float64."""
    cfg = LINEAR_DATA
    rng = np.random.default_rng(cfg["seed"])
    n = cfg["n_train"] + cfg["n_test"]
    X = rng.standard_normal((n, cfg["d"]))
    W0 = rng.standard_normal((cfg["k"], cfg["d"])) / math.sqrt(cfg["d"])
    b0 = bias + 0.2 * rng.standard_normal(cfg["k"])
    Y = scale * X @ W0.T + b0
    if transform is not None:
        Y = transform(Y)
    Y = Y + cfg["noise"] * rng.standard_normal(Y.shape)
    t = [torch.as_tensor(a, dtype=torch.float64) for a in (X, Y)]
    m = cfg["n_train"]
    return t[0][:m], t[1][:m], t[0][m:], t[1][m:]


def _convex(
    name: str,
    kind: str,
    description: str,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    targets: tuple[Target, ...],
    start: Callable[[nn.Linear], None],
    config: dict[str, Any],
    lr: float = 0.02,
    lr_final: float = 1e-4,
    steps: int = 1500,
) -> Problem:
    X, Y, Xt, Yt = data
    d, k = X.shape[1], Y.shape[1]
    problem = Problem(
        name=name,
        kind=kind,
        description=description,
        X_train=X,
        Y_train=Y,
        X_test=Xt,
        Y_test=Yt,
        targets=targets,
        make_model=functools.partial(_linear_model, d, k, start=start),
        lr=lr,
        lr_final=lr_final,
        steps=steps,
        convex=True,
        config={"data": LINEAR_DATA, **config, "model": f"Linear({d},{k}) float64"},
    )
    problem._solve = lambda: linear_reference(X, Y, targets)
    return problem


def _scale_outputs_into_l1(model: nn.Linear, X: Tensor, radius: float, fill: float = 0.5) -> None:
    """Shrink W and b so that every ``||W x + b||_1 <= fill * radius`` on ``X`` (strictly inside)."""
    largest = float((X @ model.weight.T + model.bias).abs().sum(-1).max())
    if largest > fill * radius:
        model.weight.mul_(fill * radius / largest)
        model.bias.mul_(fill * radius / largest)


def linear_output_l1(radius: float = 1.5) -> Problem:
    r"""Outputs in the L1 ball at every training point: :math:`\|W x_i + b\|_1 \le r`."""
    data = _linear_data(scale=1.5)
    X_all = torch.cat([data[0], data[2]])
    return _convex(
        "lin-output-l1",
        "output-l1",
        f"linear regression, outputs in the L1 ball ||W x + b||_1 <= {radius} at every training point",
        data,
        (on_output(L1Ball(radius)),),
        start=lambda m: _scale_outputs_into_l1(m, X_all, radius),
        config={"radius": radius, "scale": 1.5},
    )


def _positive_outputs(model: nn.Linear, X: Tensor, margin: float = 0.1) -> None:
    """Shrink W and raise b so that every output is at least ``margin`` on ``X``."""
    model.weight.mul_(0.2)
    low = (X @ model.weight.T + model.bias).amin(0)
    model.bias.add_((margin - low).clamp_min(0))


def linear_output_nonneg() -> Problem:
    r"""Non-negative outputs at every training point, for a target :math:`y = \max(W_0 x + b_0, 0) + \epsilon`."""
    data = _linear_data(transform=lambda y: np.maximum(y, 0.0), bias=0.3)
    X_all = torch.cat([data[0], data[2]])
    return _convex(
        "lin-output-nonneg",
        "output-nonneg",
        "linear regression of a rectified target, outputs W x + b >= 0 at every training point",
        data,
        (on_output(NonNegative()),),
        start=lambda m: _positive_outputs(m, X_all),
        config={"transform": "relu", "bias": 0.3},
        steps=2000,  # the exact penalty needs 2000 to reach 1e-4
    )


def _positive_weights(model: nn.Linear) -> None:
    """Start strictly inside the orthant: :math:`W \\leftarrow |W| + 0.01`."""
    model.weight.abs_().add_(0.01)


def linear_weight_nonneg() -> Problem:
    r"""Non-negative least squares: :math:`\min F` s.t. :math:`W \ge 0` elementwise."""
    return _convex(
        "lin-weight-nonneg",
        "weight-nonneg",
        "non-negative least squares, W >= 0 elementwise",
        _linear_data(),
        (on_parameter("weight", NonNegative()),),
        start=_positive_weights,
        config={},
    )


def tied_constraint(d: int = LINEAR_DATA["d"], k: int = LINEAR_DATA["k"]) -> Affine:
    r"""``A vec(W) = c`` on a (k, d) weight: feature 0 shares one weight across all outputs, W[0,1] = W[1,2],
    W[1,3] = W[2,4] = W[0,5] (:meth:`Affine.tie`), and the last row sums to 1."""
    tie = Affine.tie((k, d), [[(j, 0) for j in range(k)], [(0, 1), (1, 2)], [(1, 3), (2, 4), (0, 5)]])
    row_sum = np.zeros(k * d)
    row_sum[(k - 1) * d :] = 1.0
    A = np.vstack([tie.A.numpy(), row_sum])
    assert isinstance(tie.c, torch.Tensor)  # Affine.tie's right-hand side is a constant tensor
    c = np.concatenate([tie.c.numpy(), [1.0]])
    return Affine(A, c)


def linear_weight_affine() -> Problem:
    r"""Tied weights and a sum constraint: :math:`A\,\mathrm{vec}(W) = c` (see :func:`tied_constraint`)."""
    return _convex(
        "lin-weight-affine",
        "weight-affine",
        "linear regression with tied weights and a row sum, A vec(W) = c (6 equations)",
        _linear_data(),
        (on_parameter("weight", tied_constraint()),),
        start=lambda m: None,
        config={"A": "tie 3+2+3 entries, last row sums to 1"},
    )


def _weights_into_l1(model: nn.Linear, radius: float, fill: float = 0.5) -> None:
    """Shrink every row so that :math:`\\|W_j\\|_1 \\le` ``fill * radius``."""
    norms = model.weight.abs().sum(-1, keepdim=True)
    model.weight.mul_(torch.clamp(fill * radius / norms, max=1.0))


def linear_weight_l1(radius: float = 1.0) -> Problem:
    r"""Row-wise L1 ball on the weights: :math:`\|W_j\|_1 \le r` for every output row :math:`j`."""
    return _convex(
        "lin-weight-l1",
        "weight-l1",
        f"linear regression, every weight row in the L1 ball ||W_j||_1 <= {radius}",
        _linear_data(scale=1.5),
        (on_parameter("weight", L1Ball(radius)),),
        start=lambda m: _weights_into_l1(m, radius),
        config={"radius": radius, "scale": 1.5},
    )


# ---------------------------------------------------------------------- MLP problems
def _mlp(d: int, k: int, hidden: int, seed: int, start: Callable[[nn.Sequential], None]) -> nn.Sequential:
    def build() -> nn.Sequential:
        model = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, k))
        with torch.no_grad():
            start(model)
        return model

    return _seeded(seed, build)


def _head(model: nn.Sequential) -> nn.Linear:
    head = model[-1]
    assert isinstance(head, nn.Linear)  # the MLPs of _mlp end in a linear layer
    return head


def _small_head(model: nn.Sequential, X: Tensor, radius: float) -> None:
    """Scale the last layer so every output row is strictly inside the L1 ball on ``X``."""
    head = _head(model)
    head.weight.mul_(0.1)
    head.bias.zero_()
    with torch.no_grad():
        largest = float(model(X).abs().sum(-1).max())
    if largest > 0.5 * radius:
        head.weight.mul_(0.5 * radius / largest)


def _positive_head(model: nn.Sequential, X: Tensor, margin: float = 0.1) -> None:
    """Scale the last layer down and raise its bias so every output is at least ``margin`` on ``X``."""
    head = _head(model)
    head.weight.mul_(0.1)
    with torch.no_grad():
        low = model(X).amin(0)
    head.bias.add_((margin - low).clamp_min(0))


def mlp_synthetic_l1(radius: float = 1.5, hidden: int = 16) -> Problem:
    r"""MLP 10-16-16-3 (tanh), synthetic :math:`y = \tanh(X W_1) W_2 + \epsilon` (standardized), outputs in
    the L1 ball :math:`\|f(x)\|_1 \le r`."""
    X, Y = datasets.synthetic_regression(n=600, d=10, k=3, noise=0.1, seed=0)
    train, test = datasets.split(len(X), 1 / 3, seed=0)
    Xtr, Xte = datasets.standardize(X[train], X[test])
    scale = Y[train].std(0)
    Ytr, Yte = Y[train] / scale, Y[test] / scale
    Xtr_t, Ytr_t, Xte_t, Yte_t = datasets.as_tensors(Xtr, Ytr, Xte, Yte)
    X_all = torch.cat([Xtr_t, Xte_t])
    return Problem(
        name="mlp-synthetic-l1",
        kind="output-l1",
        description=f"MLP 10-{hidden}-{hidden}-3 on synthetic data (400 train / 200 held out), "
        f"outputs in the L1 ball of radius {radius}",
        X_train=Xtr_t,
        Y_train=Ytr_t,
        X_test=Xte_t,
        Y_test=Yte_t,
        targets=(on_output(L1Ball(radius)),),
        make_model=functools.partial(_mlp, 10, 3, hidden, start=lambda m: _small_head(m, X_all, radius)),
        lr=0.01,
        lr_final=0.1,
        steps=1000,
        config={"data": "synthetic_regression(600, 10, 3, 0.1, 0)", "radius": radius, "hidden": hidden, "dtype": "float32"},
    )


def mlp_diabetes_nonneg(hidden: int = 16) -> Problem:
    r"""MLP 10-16-16-1 (tanh) on scikit-learn's bundled diabetes data; the target is progression above the
    cohort's median in standard deviations, and the prediction must be non-negative: :math:`f(x) \ge 0`."""
    data = datasets.load("diabetes")
    train, test = datasets.split(len(data.X), 0.25, seed=0)
    Xtr, Xte = datasets.standardize(data.X[train], data.X[test])
    y = data.y
    y = (y - np.median(y[train])) / y[train].std()
    Ytr, Yte = y[train, None], y[test, None]
    Xtr_t, Ytr_t, Xte_t, Yte_t = datasets.as_tensors(Xtr, Ytr, Xte, Yte)
    X_all = torch.cat([Xtr_t, Xte_t])
    return Problem(
        name="mlp-diabetes-nonneg",
        kind="output-nonneg",
        description=f"MLP 10-{hidden}-{hidden}-1 on scikit-learn's diabetes data (332 train / 110 held out), "
        f"predicted excess progression >= 0",
        X_train=Xtr_t,
        Y_train=Ytr_t,
        X_test=Xte_t,
        Y_test=Yte_t,
        targets=(on_output(NonNegative()),),
        make_model=functools.partial(_mlp, 10, 1, hidden, start=lambda m: _positive_head(m, X_all)),
        lr=0.01,
        lr_final=0.1,
        steps=1000,
        config={"data": "load_diabetes, y - median", "hidden": hidden, "dtype": "float32"},
    )


#: Every problem by name, with its builder.
PROBLEMS: dict[str, Callable[[], Problem]] = {
    "lin-output-l1": linear_output_l1,
    "lin-output-nonneg": linear_output_nonneg,
    "lin-weight-nonneg": linear_weight_nonneg,
    "lin-weight-affine": linear_weight_affine,
    "lin-weight-l1": linear_weight_l1,
    "mlp-synthetic-l1": mlp_synthetic_l1,
    "mlp-diabetes-nonneg": mlp_diabetes_nonneg,
}


@functools.cache
def get_problem(name: str) -> Problem:
    """The problem called ``name`` (built once per process; its cvxpy optimum is solved on first use)."""
    try:
        builder = PROBLEMS[name]
    except KeyError:
        raise KeyError(f"unknown problem {name!r}; problems: {', '.join(PROBLEMS)}.") from None
    return builder()
