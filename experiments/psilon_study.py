r"""PSiLON Net against its baselines on the bundled data sets (``constrain study psilon``).

Protocol (per data set): ``k``-fold cross-validation. For outer fold ``i`` the test fold is ``i``,
the validation fold ``i + 1 (mod k)``, the rest trains. Each regularization strength of the model's
grid is trained on the training folds and scored on the validation fold by its loss
(cross-entropy, or MSE; as the official code selects); the chosen strength is retrained on
training + validation folds and evaluated once on the test fold. Features are standardized with
the statistics of the data the model is trained on; regression targets too (RMSE is reported in
the original units). The grid models are also scored on the test fold (never used to select):
they trace each model's metric-sparsity-bound curve for the matched comparison.

Training recipe of the official code (adityaxbiswas/PSiLON-Net): loss
:math:`(1 - a)\,\ell + a\,\lambda R` with :math:`a = 0.5`, Adam with a one-cycle learning rate
(stepped once per epoch: from 1e-4 up to ``lr`` over the first 20% of the epochs, then cosine
down to :math:`10^{-7} / \mathrm{lr}`, 5e-5 at lr 2e-3), shuffled mini-batches, and for
the L1-normalized models the gradual projection towards sparsity (:func:`sparsify_alpha`).
``--protocol paper`` is the official budget (width 500, 1000 epochs, batch 400, lr 2e-3, the
13-value lambda grid); the default protocol is a cheaper budget of the same recipe.

Models (``experiments.psilon``): ``mlp`` (plain ReLU MLP, no regularization), ``standard`` (L2
weight normalization with :math:`\lambda \sum g^2`), ``l1-mlp`` (MLP with L1 regularization by the
toolkit's ``l1-proximal`` strategy, threshold :math:`\eta_t a \lambda` at the current learning rate),
``psilon`` (L1 weight normalization + :math:`\lambda` 1-path-norm in product form), ``psilon-res``
(CReLU residual blocks + :math:`\lambda` improved bound), and ``rf`` (scikit-learn's random forest).
The deep residual ablation (digits) trains the paper's residual variants with 9 CReLU blocks
(10 hidden layers) at the official fixed strengths.

Reported per model: test metric, metric after pruning the near-zero weights
(:math:`|w_{ij}| \le \mathrm{tol}\,\|w_i\|_1`, set to 0), the entropy-based near sparsity
(:func:`experiments.psilon.near_sparsity`) and the exact zeros, FLOPs per sample before/after
pruning (live multiply-adds), the 1-path-norm Lipschitz bound and the largest sampled
:math:`\|J(x)\|_{\infty\to1}`, both in standardized-input / model-output units.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from experiments import datasets as ds
from experiments import psilon as ps
from experiments._args import positive_int
from experiments._runner import run_tasks
from experiments._study_cli import add_run_options, add_selection_options, output_dirs
from experiments._study_cli import config_from as config_from_args
from experiments._training import Batch, shrink_follows_lr, train
from experiments.datasets import Split, make_split, objective

#: The official code's lambda grid (13 values from 5e-5 to 0.5).
PAPER_GRID: tuple[float, ...] = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 1e-1, 2.5e-1, 5e-1)
#: The default protocol's grid: every fourth value of the official one (5e-5, 1e-3, 2.5e-2, 0.5).
DEFAULT_GRID: tuple[float, ...] = PAPER_GRID[::4]
REGULARIZED: tuple[str, ...] = ("standard", "l1-mlp", "psilon", "psilon-res")


def _grids(grid: tuple[float, ...]) -> dict[str, tuple[float, ...]]:
    return {"mlp": (0.0,), "rf": (0.0,), **{m: grid for m in REGULARIZED}}


#: Regularization grids (lambda) per model of the default protocol; 0 means no regularization.
DEFAULT_GRIDS: dict[str, tuple[float, ...]] = _grids(DEFAULT_GRID)
MODELS: tuple[str, ...] = ("mlp", "standard", "l1-mlp", "psilon", "psilon-res", "rf")
#: The deep residual ablation's variants and the official code's fixed strengths for them.
DEEP_LAMBDAS: dict[str, float] = {
    "psilon-res": 2.5e-4,
    "l1-ib": 2.5e-4,
    "l2-ib": 2.5e-4,
    "l1-ob": 1e-4,
    "l2-ob": 1e-4,
    "standard-res": 2.5e-2,
}
DEEP_MODELS: tuple[str, ...] = tuple(DEEP_LAMBDAS)
DEEP_DATASET = "digits"
PROTOCOLS: tuple[str, ...] = ("default", "paper")


@dataclass(frozen=True)
class Recipe:
    r"""How one network is trained: size, epochs, mini-batch, peak learning rate of the one-cycle
    schedule, the loss mix :math:`a` of :math:`(1 - a)\ell + a\lambda R`, and the sparsification
    ramp ``(start, end)`` as fractions of the optimizer steps (None: off)."""

    hidden: int
    hidden_layers: int
    epochs: int
    batch_size: int
    lr: float
    loss_mix: float = 0.5
    sparsify: tuple[float, float] | None = (0.5, 0.8)

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.hidden_layers < 0 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"need hidden, epochs, batch_size >= 1 and hidden_layers >= 0, got {self}.")
        if not 1e-4 < self.lr < 1.0:
            raise ValueError(f"lr must be in (1e-4, 1): the one-cycle schedule starts at 1e-4, got {self.lr}.")
        if not 0.0 <= self.loss_mix < 1.0:
            raise ValueError(f"loss_mix must be in [0, 1), got {self.loss_mix}.")
        if self.sparsify is not None and not 0.0 <= self.sparsify[0] < self.sparsify[1] <= 1.0:
            raise ValueError(f"sparsify must be (start, end) with 0 <= start < end <= 1, got {self.sparsify}.")


#: The official tabular recipe: 4 linear layers of width 500, 1000 epochs, batch 400, lr 2e-3.
PAPER_RECIPE = Recipe(hidden=500, hidden_layers=2, epochs=1000, batch_size=400, lr=2e-3)
#: The official deep ablation: 10 hidden layers (9 CReLU blocks) of width 500, 400 epochs, batch
#: 200, lr 2e-2, no sparsification (the official scripts never switch it on).
PAPER_DEEP = Recipe(hidden=500, hidden_layers=9, epochs=400, batch_size=200, lr=2e-2, sparsify=None)
#: The default budget of the same recipe (about 1/40 of the paper's optimizer steps on the small
#: sets): width 64, 60 epochs, a 10-fold higher peak lr (the deep ablation's official 2e-2).
DEFAULT_RECIPE = Recipe(hidden=64, hidden_layers=2, epochs=60, batch_size=400, lr=2e-2)
DEFAULT_DEEP = Recipe(hidden=64, hidden_layers=9, epochs=20, batch_size=200, lr=2e-2, sparsify=None)


@dataclass(frozen=True)
class Config:
    """Everything a run depends on."""

    protocol: str = "default"
    datasets: tuple[str, ...] = tuple(ds.BUNDLED)
    models: tuple[str, ...] = MODELS
    folds: int = 5
    run_folds: tuple[int, ...] | None = None
    recipe: Recipe = DEFAULT_RECIPE
    grids: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_GRIDS))
    deep_models: tuple[str, ...] = DEEP_MODELS
    deep: Recipe = DEFAULT_DEEP
    prune_tol: float = 1e-3
    lipschitz_samples: int = 2048
    forest_trees: int = 200
    seed: int = 0
    jobs: int = 2

    def folds_run(self) -> tuple[int, ...]:
        """The outer folds this run evaluates (all of them unless ``run_folds``)."""
        return tuple(range(self.folds)) if self.run_folds is None else self.run_folds


def paper_config(**overrides: Any) -> Config:
    """The official code's budget on the bundled data (see the module docstring)."""
    return replace(Config(protocol="paper", recipe=PAPER_RECIPE, grids=_grids(PAPER_GRID), deep=PAPER_DEEP), **overrides)


def quick_config(**overrides: Any) -> Config:
    """A small end-to-end run (tests, smoke checks): two data sets, 3 folds, small nets, short training."""
    grids = {m: g[:1] if m in ("mlp", "rf") else g[1:3] for m, g in DEFAULT_GRIDS.items()}
    base = Config(
        datasets=("iris", "diabetes"),
        folds=3,
        recipe=Recipe(16, 1, 30, 400, 1e-2),
        grids=grids,
        deep_models=("psilon-res", "l1-ob"),
        deep=Recipe(8, 3, 10, 200, 1e-2, sparsify=None),
        lipschitz_samples=256,
        forest_trees=20,
        jobs=1,
    )
    return replace(base, **overrides)


# --------------------------------------------------------------------------- data


def fold_indices(data: ds.Dataset, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` disjoint index sets (stratified for classification)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if folds < 3:
        raise ValueError(f"need at least 3 folds (train, validation, test), got {folds}.")
    splitter = (StratifiedKFold if data.task == "classification" else KFold)(folds, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(data.X, data.y)]


# --------------------------------------------------------------------------- training


def one_cycle(opt: torch.optim.Optimizer, lr: float, epochs: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """The official schedule, stepped once per epoch: from 1e-4 up to ``lr`` over the first 20% of
    the epochs (``div_factor = lr / 1e-4``), then cosine down to ``1e-4 / (div_factor / 10)``."""
    factor = lr / 1e-4
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs, pct_start=0.2, div_factor=factor, final_div_factor=factor / 10
    )


def sparsify_alpha(step: int, total: int, ramp: tuple[float, float] | None) -> float:
    r"""The blend :math:`\alpha` towards the sparse projection at optimizer step ``step`` of ``total``:
    0 before ``ramp[0] * total``, rising linearly to 1 at ``ramp[1] * total``, then held at 1 (the
    official layer ramps over a given number of steps; when to start is ours: the scripts never
    switch it on)."""
    if ramp is None:
        return 0.0
    start, end = ramp
    return min(max((step / total - start) / (end - start), 0.0), 1.0)


@dataclass
class Trace:
    """What :func:`fit` saw: optimizer steps, the learning rate per epoch, alpha per step (first
    batch of each epoch), the data term and the penalty term of the last step."""

    steps: int = 0
    lrs: list[float] = field(default_factory=list)
    alphas: list[float] = field(default_factory=list)
    last_loss: float = math.nan
    last_penalty: float = math.nan


def training_loss(
    net: ps.Net, kind: str, out: Tensor, y: Tensor, task: str, lam: float, mix: float
) -> tuple[Tensor, Tensor, Tensor]:
    r"""(loss, data term, penalty) with loss :math:`(1 - a)\,\ell + a\,\lambda R` (the official mix,
    :math:`a` = ``mix``); the L1 penalty of ``l1-mlp`` is not in it (a proximal step applies it)."""
    data_term = objective(out, y, task)
    reg = ps.regularizer(net, kind) if lam > 0 else None
    penalty = lam * reg if reg is not None else data_term.new_zeros(())
    return (1 - mix) * data_term + mix * penalty, data_term, penalty


def _epoch_batches(
    net: ps.Net,
    split: Split,
    recipe: Recipe,
    seed: int,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    trace: Trace,
    ramp: tuple[float, float] | None,
) -> Iterator[Batch]:
    """The recipe's mini-batches epoch by epoch: a new order each epoch (the last batch may be
    short; one batch: no shuffling), the schedule stepped at each new epoch, and the sparsity blend
    alpha set before each step (see :func:`sparsify_alpha`); the trace records both."""
    n = len(split.X)
    size = min(recipe.batch_size, n)
    batches = math.ceil(n / size)
    total = recipe.epochs * batches
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for epoch in range(recipe.epochs):
        if epoch:
            schedule.step()
        order = torch.randperm(n, generator=gen) if batches > 1 else None
        trace.lrs.append(schedule.optimizer.param_groups[0]["lr"])
        for b in range(batches):
            idx = order[b * size : (b + 1) * size] if order is not None else slice(None)
            alpha = sparsify_alpha(step, total, ramp)
            if ramp is not None:
                ps.set_sparsify(net, alpha)
            if b == 0:
                trace.alphas.append(alpha)
            step += 1
            yield Batch(split.X[idx], split.y[idx])


def fit(kind: str, split: Split, task: str, lam: float, recipe: Recipe, seed: int, trace: Trace | None = None) -> ps.Net:
    """Train a fresh ``kind`` net with ``recipe`` on ``split.X`` (see the module docstring)."""
    import strategies
    from constrain import L1Ball, on_parameter

    torch.manual_seed(seed)
    k = int(split.y.max()) + 1 if task == "classification" else 1
    net = ps.build(kind, split.X.shape[1], k, recipe.hidden, recipe.hidden_layers)  # type: ignore[arg-type]  # kind: a str; build refuses one that is not a Kind
    mix = recipe.loss_mix
    strategy = None
    if ps.SPECS[kind].reg == "l1" and lam > 0:
        strategy = strategies.get("l1-proximal", strength=mix * lam, lr=recipe.lr)
        strategy.attach(net, [on_parameter(f"layers.{i}.weight", L1Ball(1.0)) for i in range(len(net.layers))])
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    trace = trace if trace is not None else Trace()

    def loss_fn(out: Tensor, batch: Batch) -> Tensor:
        assert batch.targets is not None  # the epoch batches carry their targets
        loss, data_term, penalty = training_loss(net, kind, out, batch.targets, task, lam, mix)
        trace.last_loss, trace.last_penalty = float(data_term.detach()), float(penalty.detach())
        return loss

    ramp = recipe.sparsify if ps.SPECS[kind].norm == 1 else None
    batches = _epoch_batches(net, split, recipe, seed, one_cycle(opt, recipe.lr, recipe.epochs), trace, ramp)
    steps = recipe.epochs * math.ceil(len(split.X) / min(recipe.batch_size, len(split.X)))
    follow = None if strategy is None else functools.partial(shrink_follows_lr, strategy)  # the proximal threshold
    trace.steps += train(net, opt, loss_fn, batches, steps, strategy=strategy, follow_lr=follow).steps
    if ramp is not None:
        ps.set_sparsify(net, sparsify_alpha(steps, steps, ramp))
    return net


@torch.no_grad()
def score(net: torch.nn.Module, split: Split, task: str) -> tuple[float, float]:
    """(metric, loss) on the evaluation part: accuracy, or RMSE in the original target units."""
    out = net(split.X_eval)
    loss = float(objective(out, split.y_eval, task))
    if task == "classification":
        return float((out.argmax(1) == split.y_eval).float().mean()), loss
    return math.sqrt(loss) * split.y_std, loss


def better(a: tuple[float, float], b: tuple[float, float], task: str) -> bool:
    """Is validation result ``(metric, loss)`` ``a`` better than ``b``? The loss decides, as in the
    official code (accuracy on a small fold is too coarse); the metric breaks ties."""
    ka = (a[1], -a[0] if task == "classification" else a[0])
    kb = (b[1], -b[0] if task == "classification" else b[0])
    return ka < kb


def forest(data: ds.Dataset, split: Split, cfg: Config, seed: int) -> float:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if data.task == "classification" else RandomForestRegressor
    model = cls(n_estimators=cfg.forest_trees, random_state=seed, n_jobs=1)
    model.fit(split.X.numpy(), split.y.numpy())
    pred = model.predict(split.X_eval.numpy())
    if data.task == "classification":
        return float((pred == split.y_eval.numpy()).mean())
    return float(np.sqrt(np.mean((pred - split.y_eval.numpy()) ** 2)) * split.y_std)


def _structure(net: ps.Net) -> dict[str, float]:
    """Near sparsity, exact zeros and the improved path-norm bound of a trained net."""
    return {"near_sparsity": ps.near_sparsity(net), "exact_zero": ps.exact_zero_fraction(net), "bound": ps.lipschitz_bound(net)}


def _split_parts(data: ds.Dataset, cfg: Config, fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) indices of outer fold ``fold``."""
    parts = fold_indices(data, cfg.folds, cfg.seed)
    val_fold = (fold + 1) % cfg.folds
    train = np.concatenate([p for i, p in enumerate(parts) if i not in (fold, val_fold)])
    return train, parts[val_fold], parts[fold]


def _final_report(net: ps.Net, kind: str, final: Split, task: str, cfg: Config, seed: int) -> dict[str, Any]:
    """Everything the tables report about a trained net on its test fold."""
    report = ps.prune_report(net, cfg.prune_tol)
    plain = ps.materialize(net)
    metric, loss = score(net, final, task)
    with torch.no_grad():
        product = float(ps.path_norm_bound(net)) if ps.SPECS[kind].reg == "path" else float("nan")
        original = float(ps.path_norm_explicit(plain, improved=False))
    return dict(
        metric=metric,
        test_loss=loss,
        metric_pruned=score(report.pruned, final, task)[0],
        near_zero=ps.near_zero_fraction(net, cfg.prune_tol),
        **_structure(net),
        flops_dense=report.flops_dense,
        flops_pruned=report.flops_pruned,
        bound_product=product,
        bound_original=original,
        sampled=ps.sampled_lipschitz(plain, final.X, cfg.lipschitz_samples, seed),
    )


def run_cell(cfg: Config, dataset: str, fold: int, kind: str) -> dict[str, Any]:
    """Select lambda on the validation fold, retrain, evaluate on the test fold; one result row.

    ``row["grid"]``: every candidate's validation (metric, loss) and, trained on the training folds
    only, its test metric and structure (the curves of the matched comparison)."""
    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    data = ds.load(dataset)
    train, val, test = _split_parts(data, cfg, fold)
    final = make_split(data, np.concatenate([train, val]), test)
    row: dict[str, Any] = {"dataset": dataset, "task": data.task, "fold": fold, "model": kind}
    seed = cfg.seed * 1000 + fold
    if kind == "rf":
        row.update(
            metric=forest(data, final, cfg, seed),
            lam=0.0,
            seconds=time.perf_counter() - start,
            cpu=time.process_time() - cpu,
            steps=0,
        )
        return row
    grid = cfg.grids[kind]
    lam = grid[0]
    trace = Trace()
    row["grid"] = []
    if len(grid) > 1:
        select = make_split(data, train, val)
        held_out = make_split(data, train, test)  # same training statistics, scored on the test fold
        best: tuple[float, float] | None = None
        for candidate in grid:
            net = fit(kind, select, data.task, candidate, cfg.recipe, seed, trace)
            result = score(net, select, data.task)
            row["grid"].append(
                {
                    "lam": candidate,
                    "val_metric": result[0],
                    "val_loss": result[1],
                    "test_metric": score(net, held_out, data.task)[0],
                    **_structure(net),
                }
            )
            if best is None or better(result, best, data.task):
                best, lam = result, candidate
    net = fit(kind, final, data.task, lam, cfg.recipe, seed, trace)
    row.update(
        lam=lam,
        **_final_report(net, kind, final, data.task, cfg, seed),
        steps=trace.steps,
        seconds=time.perf_counter() - start,
        cpu=time.process_time() - cpu,
    )
    return row


def run_deep_cell(cfg: Config, fold: int, kind: str) -> dict[str, Any]:
    """The deep residual ablation: ``kind`` at its official fixed strength, trained on the training
    + validation folds of digits and evaluated on the test fold."""
    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    data = ds.load(DEEP_DATASET)
    train, val, test = _split_parts(data, cfg, fold)
    final = make_split(data, np.concatenate([train, val]), test)
    seed = cfg.seed * 1000 + fold
    trace = Trace()
    lam = DEEP_LAMBDAS[kind]
    net = fit(kind, final, data.task, lam, cfg.deep, seed, trace)
    row: dict[str, Any] = {"dataset": DEEP_DATASET, "task": data.task, "fold": fold, "model": kind, "deep": True, "lam": lam}
    row.update(
        **_final_report(net, kind, final, data.task, cfg, seed),
        steps=trace.steps,
        seconds=time.perf_counter() - start,
        cpu=time.process_time() - cpu,
    )
    return row


def planned_steps(cfg: Config) -> dict[str, int]:
    """Optimizer steps a run of ``cfg`` takes, per model (deep variants as ``deep:NAME``): with the
    measured seconds per step this sizes a run before it starts (e.g. the full paper protocol)."""
    steps: dict[str, int] = {}
    for name in cfg.datasets:
        data = ds.load(name)
        for fold in cfg.folds_run():
            train, val, _ = _split_parts(data, cfg, fold)
            per_epoch = {part: math.ceil(part / min(cfg.recipe.batch_size, part)) for part in (len(train), len(train) + len(val))}
            for model in cfg.models:
                if model == "rf":
                    continue
                grid = len(cfg.grids[model])
                select = grid * per_epoch[len(train)] if grid > 1 else 0
                steps[model] = steps.get(model, 0) + cfg.recipe.epochs * (select + per_epoch[len(train) + len(val)])
    if cfg.deep_models:
        data = ds.load(DEEP_DATASET)
        for fold in cfg.folds_run():
            train, val, _ = _split_parts(data, cfg, fold)
            n = len(train) + len(val)
            for model in cfg.deep_models:
                key = "deep:" + model
                steps[key] = steps.get(key, 0) + cfg.deep.epochs * math.ceil(n / min(cfg.deep.batch_size, n))
    return steps


def _cell(cfg: Config, dataset: str, fold: int, kind: str) -> dict[str, Any]:
    """One task of :func:`run_study`: a cell, or a deep-ablation cell (``kind`` is ``deep:NAME``)."""
    if kind.startswith("deep:"):
        return run_deep_cell(cfg, fold, kind[len("deep:") :])
    return run_cell(cfg, dataset, fold, kind)


def run_study(cfg: Config, progress: bool = True) -> list[dict[str, Any]]:
    """Every (data set, fold, model) cell and the deep ablation's (fold, variant) cells; in
    ``cfg.jobs`` processes when above 1."""
    unknown = [m for m in cfg.models if m not in MODELS] + [m for m in cfg.deep_models if m not in DEEP_MODELS]
    if unknown:
        raise KeyError(
            f"unknown model(s) {', '.join(unknown)}; models: {', '.join(MODELS)}; deep ablation: {', '.join(DEEP_MODELS)}."
        )
    for name in cfg.datasets:
        if name not in ds.BUNDLED:
            raise KeyError(f"unknown data set {name!r}; bundled data sets: {', '.join(ds.BUNDLED)}.")
    bad = [f for f in cfg.folds_run() if not 0 <= f < cfg.folds]
    if bad:
        raise ValueError(f"run_folds must lie in 0..{cfg.folds - 1}, got {bad}.")
    folds = cfg.folds_run()
    cells = [(cfg, d, f, m) for d in cfg.datasets for f in folds for m in cfg.models]
    cells += [(cfg, DEEP_DATASET, f, "deep:" + m) for f in folds for m in cfg.deep_models]
    # the slowest cells first, so two workers finish together
    cells.sort(key=lambda c: (not c[3].startswith("deep:"), c[1] != "digits", c[3] in ("mlp", "rf")))
    from tqdm import tqdm

    with tqdm(total=len(cells), desc="psilon study", disable=not progress, file=sys.stderr) as bar:
        rows = run_tasks(_cell, cells, cfg.jobs, on_result=lambda i, row: bar.update())
    order = {(d, m): i for i, (d, m) in enumerate((d, m) for d in cfg.datasets for m in cfg.models)}
    order.update({("deep", m): len(order) + i for i, m in enumerate(cfg.deep_models)})
    return sorted(rows, key=lambda r: (order[("deep" if r.get("deep") else r["dataset"], r["model"])], r["fold"]))


# --------------------------------------------------------------------------- summary, table, figures


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std())


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (data set, model) and per deep-ablation variant: means and standard deviations
    over the folds (``entry["deep"]`` marks the ablation)."""
    groups: dict[tuple[bool, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((bool(row.get("deep")), row["dataset"], row["model"]), []).append(row)
    out = []
    for (deep, dataset, model), rs in groups.items():
        entry: dict[str, Any] = {"dataset": dataset, "model": model, "task": rs[0]["task"], "folds": len(rs), "deep": deep}
        for key in (
            "metric",
            "test_loss",
            "metric_pruned",
            "near_zero",
            "near_sparsity",
            "exact_zero",
            "flops_dense",
            "flops_pruned",
            "bound",
            "bound_product",
            "bound_original",
            "sampled",
            "seconds",
        ):
            if key in rs[0]:
                entry[key] = _mean_std([r[key] for r in rs])
        if "bound" in rs[0]:
            entry["holds"] = sum(r["bound"] >= r["sampled"] * (1 - 1e-5) for r in rs)
        lams = [r["lam"] for r in rs]
        entry["lam"] = max(set(lams), key=lams.count)
        out.append(entry)
    return out


def _fmt(pair: tuple[float, float] | None, digits: int = 3, pct: bool = False) -> str:
    if pair is None or not math.isfinite(pair[0]):
        return "-"
    m, s = pair
    if pct:
        return f"{100 * m:.1f}% ± {100 * s:.1f}"
    if abs(m) >= 1000:
        return f"{m:.3g} ± {s:.2g}"
    return f"{m:.{digits}g} ± {s:.2g}"


def _recipe_text(r: Recipe) -> str:
    sparsify = (
        f"sparsification ramp over {r.sparsify[0]:.0%}–{r.sparsify[1]:.0%} of the steps (L1-normalized models)"
        if r.sparsify
        else "no sparsification"
    )
    return (
        f"width {r.hidden}, {r.hidden_layers} hidden layers (or blocks), {r.epochs} epochs of batch "
        f"{r.batch_size}, Adam with one-cycle lr (peak {r.lr:g}), loss (1−{r.loss_mix:g})·ℓ + {r.loss_mix:g}·λR, "
        f"{sparsify}"
    )


def _folds_text(cfg: Config) -> str:
    run = cfg.folds_run()
    if len(run) == cfg.folds:
        return f"{cfg.folds}-fold cross-validation (mean ± std over the test folds)"
    return f"outer fold(s) {', '.join(map(str, run))} of {cfg.folds}-fold cross-validation only (a subset)"


def table(summary: list[dict[str, Any]], cfg: Config) -> str:
    """The markdown table of the tabular study."""
    lines = [
        "| data set | model | test metric | after pruning | near sparsity | exact zeros | FLOPs dense → pruned | "
        "path-norm bound | sampled Lip. | bound ≥ sampled | λ (mode) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in (e for e in summary if not e["deep"]):
        metric_name = "acc" if e["task"] == "classification" else "RMSE"
        if e["model"] == "rf":
            lines.append(f"| {e['dataset']} | rf | {metric_name} {_fmt(e['metric'])} | - | - | - | - | - | - | - | - |")
            continue
        flops = f"{e['flops_dense'][0]:.0f} → {e['flops_pruned'][0]:.0f}"
        bound = _fmt(e["bound"])
        if e["model"] == "psilon-res":
            bound += f" (product {_fmt(e['bound_product'])}; not improved {_fmt(e['bound_original'])})"
        elif math.isfinite(e["bound_product"][0]):
            bound += f" (product {_fmt(e['bound_product'])})"
        lines.append(
            f"| {e['dataset']} | {e['model']} | {metric_name} {_fmt(e['metric'])} | {_fmt(e['metric_pruned'])} | "
            f"{_fmt(e['near_sparsity'], pct=True)} | {_fmt(e['exact_zero'], pct=True)} | {flops} | {bound} | "
            f"{_fmt(e['sampled'])} | {e['holds']}/{e['folds']} | {e['lam']:g} |"
        )
    grids = {tuple(cfg.grids[m]) for m in cfg.models if m in cfg.grids and len(cfg.grids[m]) > 1}
    notes = [
        "",
        f"{_folds_text(cfg)}; "
        + (
            f"λ chosen per fold by the validation loss from "
            f"{' / '.join(str([f'{v:g}' for v in g]).replace(chr(39), '') for g in grids)}. "
            if grids
            else "λ fixed (no selection). "
        )
        + f"Recipe ({cfg.protocol} protocol): {_recipe_text(cfg.recipe)}. "
        f"Near sparsity: the paper's entropy measure 1 − e^H/d per unit (0: uniform weights, 1: all zero). "
        f"Pruning sets |w_ij| ≤ {cfg.prune_tol:g}·‖w_i‖₁ to 0. FLOPs: 2 × live multiply-adds per sample. "
        f"Path-norm bound: the improved explicit 1-path-norm (for PSiLON also the product-of-lengths form; for "
        f"psilon-res also the path norm that counts both CReLU halves), an upper bound of the L∞→L1 Lipschitz "
        f"constant in standardized-input / model-output units; sampled: max ‖J(x)‖_∞→1 over "
        f"{cfg.lipschitz_samples} points.",
    ]
    return "\n".join(lines + notes) + "\n"


_DEEP_TEXT = {
    "psilon-res": "L1, shared lengths, improved bound (PSiLON)",
    "l1-ib": "L1, improved bound",
    "l2-ib": "L2, improved bound",
    "l1-ob": "L1, original bound",
    "l2-ob": "L2, original bound",
    "standard-res": "L2, weight decay (standard)",
}


def deep_table(summary: list[dict[str, Any]], cfg: Config) -> str:
    """The deep residual ablation's table (empty string if it did not run)."""
    entries = [e for e in summary if e["deep"]]
    if not entries:
        return ""
    lines = [
        "| variant | normalization, regularizer | λ | test acc | test cross-entropy | near sparsity | "
        "improved bound | original bound | sampled Lip. | bound ≥ sampled |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e['model']} | {_DEEP_TEXT[e['model']]} | {e['lam']:g} | {_fmt(e['metric'])} | {_fmt(e['test_loss'])} | "
            f"{_fmt(e['near_sparsity'], pct=True)} | {_fmt(e['bound'])} | {_fmt(e['bound_original'])} | "
            f"{_fmt(e['sampled'])} | {e['holds']}/{e['folds']} |"
        )
    lines += [
        "",
        f"Deep residual ablation on {DEEP_DATASET}: {_folds_text(cfg)}, each variant at the official "
        f"code's fixed λ (tuned by the authors on Fashion-MNIST; not re-tuned here), trained on the training + "
        f"validation folds. Recipe: {_recipe_text(cfg.deep)}; lengths per unit except PSiLON's shared ones.",
    ]
    return "\n".join(lines) + "\n"


def matched(rows: list[dict[str, Any]], a: str = "psilon", b: str = "l1-mlp") -> list[dict[str, Any]]:
    """The paper's central claim at matched test metric, per data set and fold.

    Each model's grid models (trained on the training folds, scored on the test fold) give points
    (metric, structure). The level both reach is the weaker model's best grid metric; each model is
    then represented by its most strongly regularized grid model that reaches that level, and the
    two are compared on near sparsity, exact zeros and the path-norm bound."""
    by_cell = {(r["dataset"], r["fold"], r["model"]): r for r in rows if not r.get("deep") and r.get("grid")}
    out = []
    for (dataset, fold, model), row in by_cell.items():
        other = by_cell.get((dataset, fold, b))
        if model != a or other is None:
            continue
        up = row["task"] == "classification"

        def reaches(point: dict[str, Any], level: float, up: bool = up) -> bool:
            return point["test_metric"] >= level if up else point["test_metric"] <= level

        pick = max if up else min
        level = (min if up else max)(pick(p["test_metric"] for p in row["grid"]), pick(p["test_metric"] for p in other["grid"]))
        chosen = [max((p for p in r["grid"] if reaches(p, level)), key=lambda p: p["lam"]) for r in (row, other)]
        out.append(
            {
                "dataset": dataset,
                "fold": fold,
                "task": row["task"],
                "level": level,
                **{
                    f"{key}_{side}": c[key]
                    for side, c in zip("ab", chosen, strict=True)
                    for key in ("lam", "test_metric", "near_sparsity", "exact_zero", "bound")
                },
            }
        )
    return out


def matched_table(pairs: list[dict[str, Any]], a: str = "psilon", b: str = "l1-mlp") -> str:
    """Per data set: the matched comparison, means over folds; the bound ratio is a geometric mean."""
    if not pairs:
        return ""
    lines = [
        f"| data set | matched test metric | near sparsity {a} / {b} | exact zeros {a} / {b} | "
        f"path-norm bound {a} / {b} | bound ratio {b} ÷ {a} | folds |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset in dict.fromkeys(p["dataset"] for p in pairs):
        ps_ = [p for p in pairs if p["dataset"] == dataset]
        mean = {k: float(np.mean([p[k] for p in ps_])) for k in ps_[0] if k not in ("dataset", "task", "fold")}
        ratio = float(np.exp(np.mean([np.log(p["bound_b"] / p["bound_a"]) for p in ps_])))
        metric = "acc" if ps_[0]["task"] == "classification" else "RMSE"
        lines.append(
            f"| {dataset} | {metric} {mean['level']:.3g} | {100 * mean['near_sparsity_a']:.1f}% / "
            f"{100 * mean['near_sparsity_b']:.1f}% | {100 * mean['exact_zero_a']:.1f}% / {100 * mean['exact_zero_b']:.1f}% | "
            f"{mean['bound_a']:.3g} / {mean['bound_b']:.3g} | {ratio:.3g}× | {len(ps_)} |"
        )
    lines += [
        "",
        f"Matched test metric: per fold, the level is the weaker model's best test metric over its λ grid "
        f"(grid models trained on the training folds only); each model is represented by its most strongly "
        f"regularized grid model that reaches the level. Means over folds; the bound ratio is the geometric "
        f"mean of the per-fold ratios (> 1: {a} has the smaller bound).",
    ]
    return "\n".join(lines) + "\n"


def _metric_figure(plt: Any, summary: list[dict[str, Any]], datasets: list[str], colors: dict[str, str]) -> Any:
    """Test metric per model and data set (bars), after pruning (ticks)."""
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 3.2), squeeze=False)
    for ax, d in zip(axes[0], datasets, strict=True):
        entries = [e for e in summary if e["dataset"] == d]
        names = [e["model"] for e in entries]
        ax.bar(
            names,
            [e["metric"][0] for e in entries],
            yerr=[e["metric"][1] for e in entries],
            color=[colors[n] for n in names],
            capsize=3,
        )
        pruned = [(i, e["metric_pruned"][0]) for i, e in enumerate(entries) if "metric_pruned" in e]
        ax.scatter([i for i, _ in pruned], [v for _, v in pruned], marker="_", s=200, color="k", label="after pruning", zorder=3)
        task = entries[0]["task"]
        ax.set_title(f"{d} ({'accuracy ↑' if task == 'classification' else 'RMSE ↓'})", fontsize=9)
        if task == "classification":
            lo = min(e["metric"][0] for e in entries)
            ax.set_ylim(max(0.0, lo - 0.1), 1.0)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    axes[0][0].legend(fontsize=7)
    return fig


def _lipschitz_figure(plt: Any, rows: list[dict[str, Any]], cfg: Config, colors: dict[str, str]) -> Any:
    """The 1-path-norm bound against the largest sampled Jacobian norm, per net."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    nets = [r for r in rows if r["model"] != "rf"]
    for model in [m for m in cfg.models if m != "rf"]:
        rs = [r for r in nets if r["model"] == model]
        ax.scatter([r["sampled"] for r in rs], [r["bound"] for r in rs], s=14, color=colors[model], label=model)
    lo = min(r["sampled"] for r in nets) * 0.8
    hi = max(r["bound"] for r in nets) * 1.2
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="bound = sampled")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="largest sampled ‖J(x)‖∞→1",
        ylabel="1-path-norm bound",
        title="Lipschitz: bound vs. sampled (above the line = holds)",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    return fig


def _pruning_figure(plt: Any, summary: list[dict[str, Any]], cfg: Config, colors: dict[str, str]) -> Any:
    """FLOPs saved by pruning against the change of the metric."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for model in [m for m in cfg.models if m != "rf"]:
        es = [e for e in summary if e["model"] == model]
        saved = [100 * (1 - e["flops_pruned"][0] / e["flops_dense"][0]) for e in es]
        sign = [1 if e["task"] == "classification" else -1 for e in es]
        change = [
            s * (e["metric_pruned"][0] - e["metric"][0]) / max(abs(e["metric"][0]), 1e-12) * 100
            for s, e in zip(sign, es, strict=True)
        ]
        ax.scatter(saved, change, color=colors[model], label=model, s=20)
        for x, y, e in zip(saved, change, es, strict=True):
            ax.annotate(e["dataset"][:4], (x, y), fontsize=6)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(
        xlabel="FLOPs saved by pruning (%)",
        ylabel="metric change after pruning (%, + = better)",
        title=f"pruning |w| ≤ {cfg.prune_tol:g}·‖row‖₁",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    return fig


def _matched_figure(plt: Any, rows: list[dict[str, Any]], datasets: list[str], colors: dict[str, str]) -> Any | None:
    """Test metric against exact zeros of the grid models (None without grids)."""
    curves = [r for r in rows if r.get("grid") and r["model"] in ("psilon", "l1-mlp", "psilon-res")]
    if curves:
        fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 3.2), squeeze=False)
        for ax, d in zip(axes[0], datasets, strict=True):
            for model in ("l1-mlp", "psilon", "psilon-res"):
                points = [p for r in curves if r["dataset"] == d and r["model"] == model for p in r["grid"]]
                ax.scatter(
                    [100 * p["exact_zero"] for p in points],
                    [p["test_metric"] for p in points],
                    s=10,
                    color=colors[model],
                    label=model,
                    alpha=0.7,
                )
            task = next(r["task"] for r in curves if r["dataset"] == d)
            ax.set_title(f"{d} ({'accuracy ↑' if task == 'classification' else 'RMSE ↓'})", fontsize=9)
            ax.set_xlabel("exact zeros (%)", fontsize=8)
        axes[0][0].set_ylabel("test metric of the grid models", fontsize=8)
        axes[0][0].legend(fontsize=7)
        return fig
    return None


def figures(
    summary: list[dict[str, Any]], rows: list[dict[str, Any]], cfg: Config, out: Path, prefix: str = "psilon"
) -> list[Path]:
    """PREFIX_metric.png, PREFIX_lipschitz.png, PREFIX_pruning.png, PREFIX_matched.png into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(MODELS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))  # the colour cycle is longer
    summary = [e for e in summary if not e["deep"]]
    rows = [r for r in rows if not r.get("deep")]
    datasets = [d for d in cfg.datasets if any(e["dataset"] == d for e in summary)]
    made = {
        "metric": _metric_figure(plt, summary, datasets, colors),
        "lipschitz": _lipschitz_figure(plt, rows, cfg, colors),
        "pruning": _pruning_figure(plt, summary, cfg, colors),
        "matched": _matched_figure(plt, rows, datasets, colors),
    }
    paths: list[Path] = []
    for name, fig in made.items():
        if fig is not None:
            fig.tight_layout()
            paths.append(out / f"{prefix}_{name}.png")
            fig.savefig(paths[-1], dpi=100)
            plt.close(fig)
    return paths


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``constrain study psilon``."""
    add_selection_options(parser, "iris + diabetes, 3 folds, short training", models=MODELS)
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="default",
        help="'paper': the official code's budget (width 500, 1000 epochs, 13 lambdas; hours of CPU); "
        "'default': a cheaper budget of the same recipe",
    )
    parser.add_argument("--folds", type=positive_int, metavar="K", help="cross-validation folds (>= 3; default 5)")
    parser.add_argument("--run-folds", type=int, nargs="+", metavar="I", help="evaluate only these outer folds (a subset)")
    parser.add_argument("--lambdas", type=float, nargs="+", metavar="L", help="the lambda grid of every regularized model")
    parser.add_argument(
        "--epochs", "--steps", dest="epochs", type=positive_int, metavar="N", help="training epochs (default: the protocol's)"
    )
    parser.add_argument("--hidden", type=positive_int, metavar="N", help="hidden width (default: the protocol's)")
    parser.add_argument("--no-sparsify", action="store_true", help="no gradual projection towards sparsity")
    parser.add_argument("--no-deep", action="store_true", help="skip the deep residual ablation on digits")
    parser.add_argument("--seed", type=int, metavar="S", help="seed of the folds and the initializations (default 0)")
    add_run_options(parser, "psilon", "psilon.md (psilon_paper.md) and the psilon_*.png figures")


def config_from(args: argparse.Namespace) -> Config:
    full = paper_config() if args.protocol == "paper" else Config()
    cfg = config_from_args(args, full, quick_config(), ("datasets", "models", "folds", "run_folds", "seed"))
    recipe = cfg.recipe
    if args.epochs is not None or args.hidden is not None or args.no_sparsify:
        recipe = replace(
            recipe,
            epochs=args.epochs or recipe.epochs,
            hidden=args.hidden or recipe.hidden,
            sparsify=None if args.no_sparsify else recipe.sparsify,
        )
    grids = cfg.grids
    if args.lambdas:
        if any(not (math.isfinite(v) and v > 0) for v in args.lambdas):
            raise ValueError(f"--lambdas must be positive and finite, got {args.lambdas}.")
        grids = {**grids, **{m: tuple(args.lambdas) for m in REGULARIZED}}
    return replace(cfg, recipe=recipe, grids=grids, deep_models=() if args.no_deep else cfg.deep_models)


def output_prefix(cfg: Config) -> str:
    """File name stem of the run's table and figures: ``psilon`` or ``psilon_paper``."""
    return "psilon" if cfg.protocol == "default" else f"psilon_{cfg.protocol}"


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces ``args`` (the options that change the result)."""
    parts = ["constrain study psilon"] + (["--quick"] if args.quick else [])
    if args.protocol != "default":
        parts.append(f"--protocol {args.protocol}")
    for flag, value in (
        ("--datasets", args.datasets),
        ("--models", args.models),
        ("--run-folds", args.run_folds),
        ("--lambdas", args.lambdas),
    ):
        if value:
            parts.append(f"{flag} {' '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in value)}")
    for flag, value in (("--folds", args.folds), ("--epochs", args.epochs), ("--hidden", args.hidden), ("--seed", args.seed)):
        if value is not None:
            parts.append(f"{flag} {value}")
    parts += [flag for flag, on in (("--no-sparsify", args.no_sparsify), ("--no-deep", args.no_deep)) if on]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Run the study; write ``psilon.md`` (``psilon_paper.md``), the figures (see ``--figures``)
    and the JSON into ``--out``."""
    cfg = config_from(args)
    prefix = output_prefix(cfg)
    documented = paper_config() if cfg.protocol == "paper" else Config()
    json_dir, out = output_dirs(args, cfg, documented)  # checked before any work
    start = time.perf_counter()
    rows = run_study(cfg, progress=not args.no_progress)
    summary = summarize(rows)
    pairs = matched(rows)
    text = table(summary, cfg)
    extra = [
        ("At matched test metric: PSiLON against the L1-regularized MLP", matched_table(pairs)),
        ("Deep residual ablation", deep_table(summary, cfg)),
    ]
    text += "".join(f"\n## {title}\n\n{body}" for title, body in extra if body)
    elapsed = time.perf_counter() - start
    cpu = sum(r["cpu"] for r in rows)
    steps = sum(r["steps"] for r in rows)
    header = (
        f"# PSiLON Net study ({cfg.protocol} protocol)\n\n`{_command(args)}`: {elapsed:.0f} s wall with "
        f"{cfg.jobs} worker process(es), {cpu:.0f} s CPU time in the cells (one torch thread each), "
        f"{steps} optimizer steps.\n\n"
    )
    (out / f"{prefix}.md").write_text(header + text)
    (json_dir / f"{prefix}.json").write_text(
        json.dumps({"config": asdict(cfg), "rows": rows, "matched": pairs}, indent=1, default=float)
    )
    paths = figures(summary, rows, cfg, out, prefix)
    print(text)
    print(f"wrote {out / (prefix + '.md')}, {', '.join(str(p) for p in paths)} ({elapsed:.0f} s wall, {cpu:.0f} s CPU)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.psilon_study", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
