r"""PSiLON Net against its baselines on the bundled data sets (``constrain study psilon``).

Protocol (per data set): ``k``-fold cross-validation. For outer fold ``i`` the test fold is ``i``,
the validation fold ``i + 1 (mod k)``, the rest trains. Each regularization strength of the model's
grid is trained on the training folds and scored on the validation fold (accuracy, or RMSE; ties
broken by the validation loss); the chosen strength is retrained on training + validation folds
and evaluated once on the test fold. Features are standardized with the statistics of the data
the model is trained on; regression targets too (RMSE is reported in the original units).

Models (``experiments.psilon``): ``mlp`` (plain ReLU MLP, no regularization), ``standard`` (L2
weight normalization with :math:`\lambda \sum g^2`), ``l1-mlp`` (MLP with L1 regularization by the
toolkit's ``l1-proximal`` strategy), ``psilon`` (L1 weight normalization + :math:`\lambda` 1-path-norm
in product form), ``psilon-res`` (CReLU residual blocks + :math:`\lambda` improved bound), and
``rf`` (scikit-learn's random forest). Full-batch Adam, the same steps and learning rate for all.

Reported per model: test metric, metric after pruning the near-zero weights
(:math:`|w_{ij}| \le \mathrm{tol}\,\|w_i\|_1`, set to 0), the fraction of such weights, FLOPs per
sample before/after pruning (live multiply-adds), the 1-path-norm Lipschitz bound and the largest
sampled :math:`\|J(x)\|_{\infty\to1}`, both in standardized-input / model-output units.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from experiments import datasets as ds
from experiments import psilon as ps
from experiments._args import positive_int
from experiments._study_cli import add_run_options, add_selection_options, output_dirs
from experiments._study_cli import config_from as config_from_args
from experiments._runner import run_tasks

#: Regularization grids (lambda) per model; 0 means no regularization.
DEFAULT_GRIDS: dict[str, tuple[float, ...]] = {
    "mlp": (0.0,),
    "standard": (1e-4, 1e-3, 1e-2, 1e-1),
    "l1-mlp": (1e-3, 1e-2, 1e-1, 1.0),
    "psilon": (1e-4, 1e-3, 1e-2, 1e-1),
    "psilon-res": (1e-4, 1e-3, 1e-2, 1e-1),
    "rf": (0.0,),
}
MODELS: tuple[str, ...] = ("mlp", "standard", "l1-mlp", "psilon", "psilon-res", "rf")


@dataclass(frozen=True)
class Config:
    """Everything a run depends on."""

    datasets: tuple[str, ...] = tuple(ds.BUNDLED)
    models: tuple[str, ...] = MODELS
    folds: int = 5
    hidden: int = 64
    hidden_layers: int = 2
    steps: int = 300
    lr: float = 1e-2
    grids: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_GRIDS))
    prune_tol: float = 1e-3
    lipschitz_samples: int = 2048
    forest_trees: int = 200
    seed: int = 0
    jobs: int = 2


def quick_config(**overrides: Any) -> Config:
    """A small end-to-end run (tests, smoke checks): two data sets, 3 folds, small nets, short training."""
    grids = {m: g[:1] if m in ("mlp", "rf") else g[1:3] for m, g in DEFAULT_GRIDS.items()}
    base = Config(
        datasets=("iris", "diabetes"), folds=3, hidden=16, hidden_layers=1, steps=60, grids=grids,
        lipschitz_samples=256, forest_trees=20, jobs=1,
    )
    return replace(base, **overrides)


# --------------------------------------------------------------------------- data


@dataclass
class Split:
    """Standardized tensors of one train / evaluation pair; ``y_mean``/``y_std`` undo target scaling."""

    X: Tensor
    y: Tensor
    X_eval: Tensor
    y_eval: Tensor
    y_mean: float = 0.0
    y_std: float = 1.0


def make_split(data: ds.Dataset, train: np.ndarray, evaluate: np.ndarray) -> Split:
    X, X_eval = ds.standardize(data.X[train], data.X[evaluate])
    if data.task == "classification":
        Xt, Xe = ds.as_tensors(X, X_eval)
        return Split(Xt, torch.as_tensor(data.y[train]), Xe, torch.as_tensor(data.y[evaluate]))
    mean, std = float(data.y[train].mean()), float(data.y[train].std()) or 1.0
    Xt, Xe, yt, ye = ds.as_tensors(X, X_eval, (data.y[train] - mean) / std, (data.y[evaluate] - mean) / std)
    return Split(Xt, yt, Xe, ye, mean, std)


def fold_indices(data: ds.Dataset, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` disjoint index sets (stratified for classification)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if folds < 3:
        raise ValueError(f"need at least 3 folds (train, validation, test), got {folds}.")
    splitter = (StratifiedKFold if data.task == "classification" else KFold)(folds, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(data.X, data.y)]


# --------------------------------------------------------------------------- training


def objective(out: Tensor, y: Tensor, task: str) -> Tensor:
    """Cross-entropy (classification) or mean squared error on standardized targets."""
    return F.cross_entropy(out, y) if task == "classification" else F.mse_loss(out.squeeze(-1), y)


def regularizer(net: ps.Net, kind: str) -> Tensor | None:
    """The model's penalty term R (multiplied by lambda in the loss), or None."""
    if kind == "standard":
        return ps.standard_penalty(net)
    if kind == "psilon":
        return ps.path_norm_bound(net)
    if kind == "psilon-res":
        return ps.path_norm_bound(net, improved=True)
    return None


def fit(kind: str, split: Split, task: str, lam: float, cfg: Config, seed: int) -> ps.Net:
    """Train a fresh ``kind`` net for ``cfg.steps`` full-batch Adam steps on ``split.X``."""
    import strategies
    from constrain import L1Ball, on_parameter

    torch.manual_seed(seed)
    k = int(split.y.max()) + 1 if task == "classification" else 1
    net = ps.build(kind, split.X.shape[1], k, cfg.hidden, cfg.hidden_layers)  # type: ignore[arg-type]
    strategy = None
    if kind == "l1-mlp" and lam > 0:
        strategy = strategies.get("l1-proximal", strength=lam, lr=cfg.lr)
        strategy.attach(net, [on_parameter(f"layers.{i}.weight", L1Ball(1.0)) for i in range(len(net.layers))])
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    for _ in range(cfg.steps):
        out = net(split.X)
        loss = objective(out, split.y, task)
        reg = regularizer(net, kind)
        if reg is not None and lam > 0:
            loss = loss + lam * reg
        if strategy is not None:
            loss = strategy.loss(loss, out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if strategy is not None:
            strategy.after_step()
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
    """Is validation result ``a`` better than ``b`` (metric first, then loss)?"""
    ka = (-a[0] if task == "classification" else a[0], a[1])
    kb = (-b[0] if task == "classification" else b[0], b[1])
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


def run_cell(cfg: Config, dataset: str, fold: int, kind: str) -> dict[str, Any]:
    """Select lambda on the validation fold, retrain, evaluate on the test fold; one result row."""
    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    data = ds.load(dataset)
    parts = fold_indices(data, cfg.folds, cfg.seed)
    test, val = parts[fold], parts[(fold + 1) % cfg.folds]
    train = np.concatenate([p for i, p in enumerate(parts) if i not in (fold, (fold + 1) % cfg.folds)])
    final = make_split(data, np.concatenate([train, val]), test)
    row: dict[str, Any] = {"dataset": dataset, "task": data.task, "fold": fold, "model": kind}
    seed = cfg.seed * 1000 + fold
    if kind == "rf":
        row.update(metric=forest(data, final, cfg, seed), lam=0.0, seconds=time.perf_counter() - start,
                   cpu=time.process_time() - cpu)
        return row
    grid = cfg.grids[kind]
    lam = grid[0]
    if len(grid) > 1:
        select = make_split(data, train, val)
        best: tuple[float, float] | None = None
        for candidate in grid:
            result = score(fit(kind, select, data.task, candidate, cfg, seed), select, data.task)
            if best is None or better(result, best, data.task):
                best, lam = result, candidate
    net = fit(kind, final, data.task, lam, cfg, seed)
    metric, _ = score(net, final, data.task)
    report = ps.prune_report(net, cfg.prune_tol)
    plain = ps.materialize(net)
    with torch.no_grad():
        weights = plain.weights()
        exact = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        bound_product = float(ps.path_norm_bound(net)) if kind.startswith("psilon") else float("nan")
    row.update(
        lam=lam,
        metric=metric,
        metric_pruned=score(report.pruned, final, data.task)[0],
        near_zero=ps.near_zero_fraction(net, cfg.prune_tol),
        exact_zero=exact,
        flops_dense=report.flops_dense,
        flops_pruned=report.flops_pruned,
        bound=ps.lipschitz_bound(net),
        bound_product=bound_product,
        bound_original=float(ps.path_norm_explicit(plain, improved=False).detach()),
        sampled=ps.sampled_lipschitz(plain, final.X, cfg.lipschitz_samples, seed),
        seconds=time.perf_counter() - start,
        cpu=time.process_time() - cpu,
    )
    return row


def run_study(cfg: Config, progress: bool = True) -> list[dict[str, Any]]:
    """Every (data set, fold, model) cell; in ``cfg.jobs`` processes when above 1."""
    unknown = [m for m in cfg.models if m not in MODELS]
    if unknown:
        raise KeyError(f"unknown model(s) {', '.join(unknown)}; models: {', '.join(MODELS)}.")
    for name in cfg.datasets:
        if name not in ds.BUNDLED:
            raise KeyError(f"unknown data set {name!r}; bundled data sets: {', '.join(ds.BUNDLED)}.")
    cells = [(cfg, d, f, m) for d in cfg.datasets for f in range(cfg.folds) for m in cfg.models]
    # the slowest cells first, so two workers finish together
    cells.sort(key=lambda c: (c[1] != "digits", c[3] in ("mlp", "rf")))
    from tqdm import tqdm

    with tqdm(total=len(cells), desc="psilon study", disable=not progress, file=sys.stderr) as bar:
        rows = run_tasks(run_cell, cells, cfg.jobs, on_result=lambda i, row: bar.update())
    order = {(d, m): i for i, (d, m) in enumerate((d, m) for d in cfg.datasets for m in cfg.models)}
    return sorted(rows, key=lambda r: (order[(r["dataset"], r["model"])], r["fold"]))


# --------------------------------------------------------------------------- summary, table, figures


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std())


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (data set, model): means and standard deviations over the folds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["model"]), []).append(row)
    out = []
    for (dataset, model), rs in groups.items():
        entry: dict[str, Any] = {"dataset": dataset, "model": model, "task": rs[0]["task"], "folds": len(rs)}
        for key in ("metric", "metric_pruned", "near_zero", "exact_zero", "flops_dense", "flops_pruned", "bound",
                    "bound_product", "bound_original", "sampled", "seconds"):
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


def table(summary: list[dict[str, Any]], cfg: Config) -> str:
    """The markdown table of the study."""
    lines = [
        "| data set | model | test metric | after pruning | near-zero weights | FLOPs dense → pruned | "
        "path-norm bound | sampled Lip. | bound ≥ sampled | λ (mode) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        metric_name = "acc" if e["task"] == "classification" else "RMSE"
        if e["model"] == "rf":
            lines.append(f"| {e['dataset']} | rf | {metric_name} {_fmt(e['metric'])} | - | - | - | - | - | - | - |")
            continue
        flops = f"{e['flops_dense'][0]:.0f} → {e['flops_pruned'][0]:.0f}"
        bound = _fmt(e["bound"])
        if e["model"] == "psilon-res":
            bound += f" (product {_fmt(e['bound_product'])}; not improved {_fmt(e['bound_original'])})"
        elif math.isfinite(e["bound_product"][0]):
            bound += f" (product {_fmt(e['bound_product'])})"
        lines.append(
            f"| {e['dataset']} | {e['model']} | {metric_name} {_fmt(e['metric'])} | {_fmt(e['metric_pruned'])} | "
            f"{_fmt(e['near_zero'], pct=True)} | {flops} | {bound} | {_fmt(e['sampled'])} | "
            f"{e['holds']}/{e['folds']} | {e['lam']:g} |"
        )
    notes = [
        "",
        f"{cfg.folds}-fold cross-validation (mean ± std over test folds); λ chosen per fold on a validation fold "
        f"from the grids {', '.join(f'{m}: {list(cfg.grids[m])}' for m in cfg.models if m in cfg.grids and len(cfg.grids[m]) > 1)}. "
        f"Nets: {cfg.hidden_layers} hidden layers (residual blocks for psilon-res) of width {cfg.hidden}, "
        f"{cfg.steps} full-batch Adam steps, lr {cfg.lr}. Near-zero: |w_ij| ≤ {cfg.prune_tol:g}·‖w_i‖₁; pruning sets "
        f"them to 0. FLOPs: 2 × live multiply-adds per sample. Path-norm bound: the improved explicit 1-path-norm "
        f"(for PSiLON also the product-of-lengths form; for psilon-res also the path norm that counts both CReLU "
        f"halves, i.e. without the improvement), an upper bound of the L∞→L1 Lipschitz constant in "
        f"standardized-input / model-output units; sampled: max ‖J(x)‖_∞→1 over {cfg.lipschitz_samples} points.",
    ]
    return "\n".join(lines + notes) + "\n"


def figures(summary: list[dict[str, Any]], rows: list[dict[str, Any]], cfg: Config, out: Path) -> list[Path]:
    """psilon_metric.png, psilon_lipschitz.png, psilon_pruning.png into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    colors = dict(zip(MODELS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    datasets = [d for d in cfg.datasets if any(e["dataset"] == d for e in summary)]

    fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 3.2), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        entries = [e for e in summary if e["dataset"] == d]
        names = [e["model"] for e in entries]
        ax.bar(names, [e["metric"][0] for e in entries], yerr=[e["metric"][1] for e in entries],
               color=[colors[n] for n in names], capsize=3)
        pruned = [(i, e["metric_pruned"][0]) for i, e in enumerate(entries) if "metric_pruned" in e]
        ax.scatter([i for i, _ in pruned], [v for _, v in pruned], marker="_", s=200, color="k",
                   label="after pruning", zorder=3)
        task = entries[0]["task"]
        ax.set_title(f"{d} ({'accuracy ↑' if task == 'classification' else 'RMSE ↓'})", fontsize=9)
        if task == "classification":
            lo = min(e["metric"][0] for e in entries)
            ax.set_ylim(max(0.0, lo - 0.1), 1.0)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "psilon_metric.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4.2))
    nets = [r for r in rows if r["model"] != "rf"]
    for model in [m for m in cfg.models if m != "rf"]:
        rs = [r for r in nets if r["model"] == model]
        ax.scatter([r["sampled"] for r in rs], [r["bound"] for r in rs], s=14, color=colors[model], label=model)
    lo = min(r["sampled"] for r in nets) * 0.8
    hi = max(r["bound"] for r in nets) * 1.2
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="bound = sampled")
    ax.set(xscale="log", yscale="log", xlabel="largest sampled ‖J(x)‖∞→1", ylabel="1-path-norm bound",
           title="Lipschitz: bound vs. sampled (above the line = holds)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "psilon_lipschitz.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4.2))
    for model in [m for m in cfg.models if m != "rf"]:
        es = [e for e in summary if e["model"] == model]
        saved = [100 * (1 - e["flops_pruned"][0] / e["flops_dense"][0]) for e in es]
        sign = [1 if e["task"] == "classification" else -1 for e in es]
        change = [s * (e["metric_pruned"][0] - e["metric"][0]) / max(abs(e["metric"][0]), 1e-12) * 100
                  for s, e in zip(sign, es)]
        ax.scatter(saved, change, color=colors[model], label=model, s=20)
        for x, y, e in zip(saved, change, es):
            ax.annotate(e["dataset"][:4], (x, y), fontsize=6)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="FLOPs saved by pruning (%)", ylabel="metric change after pruning (%, + = better)",
           title=f"pruning |w| ≤ {cfg.prune_tol:g}·‖row‖₁")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "psilon_pruning.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``constrain study psilon``."""
    add_selection_options(parser, "iris + diabetes, 3 folds, short training", models=MODELS)
    parser.add_argument("--folds", type=positive_int, metavar="K", help="cross-validation folds (>= 3; default 5)")
    parser.add_argument("--steps", type=positive_int, metavar="N", help="Adam steps per training (default 300)")
    parser.add_argument("--hidden", type=positive_int, metavar="N", help="hidden width (default 64)")
    parser.add_argument("--seed", type=int, metavar="S", help="seed of the folds and the initializations (default 0)")
    add_run_options(parser, "psilon", "psilon.md and the psilon_*.png figures")


def config_from(args: argparse.Namespace) -> Config:
    return config_from_args(args, Config(), quick_config(),
                            ("datasets", "models", "folds", "steps", "hidden", "seed"))


def run(args: argparse.Namespace) -> int:
    """Run the study; write ``psilon.md`` and the figures (see ``--figures``) and ``psilon.json`` into ``--out``."""
    cfg = config_from(args)
    json_dir, out = output_dirs(args, cfg, Config())  # checked before any work
    start = time.perf_counter()
    rows = run_study(cfg, progress=not args.no_progress)
    summary = summarize(rows)
    text = table(summary, cfg)
    elapsed = time.perf_counter() - start
    cpu = sum(r["cpu"] for r in rows)
    command = " ".join(["constrain study psilon"] + (["--quick"] if args.quick else []))
    header = (f"# PSiLON Net study\n\n`{command}`: {elapsed:.0f} s wall with {cfg.jobs} worker process(es), "
              f"{cpu:.0f} s CPU time in the cells (one torch thread each).\n\n")
    (out / "psilon.md").write_text(header + text)
    (json_dir / "psilon.json").write_text(json.dumps({"config": asdict(cfg), "rows": rows}, indent=1, default=float))
    paths = figures(summary, rows, cfg, out)
    print(text)
    print(f"wrote {out / 'psilon.md'}, {', '.join(str(p) for p in paths)} ({elapsed:.0f} s wall, {cpu:.0f} s CPU)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.psilon_study", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
