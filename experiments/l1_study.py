r"""Five implementations of L1 regularization, same model, data, lambda and lr (``constrain study l1``).

Objective :math:`\min_w\ \frac1n \sum_i \ell(f_w(x_i), y_i) + \lambda \sum_l \|W_l\|_1` (biases not
penalized) for the MLP of ``experiments.psilon`` (``mlp``), trained by mini-batch SGD with step
:math:`\eta`. The L1 term is handled by the strategy picked by name,
``strategies.get(name, strength=lambda, lr=eta)`` on ``on_parameter("layers.<i>.weight", L1Ball(1))``
targets (the radius is not enforced by this family; lambda plays its multiplier):

- ``l1-subgradient``: :math:`\lambda\|w\|_1` in the loss, autograd's subgradient :math:`\lambda\,\mathrm{sign}(w)`;
- ``l1-sign-step``: :math:`w \leftarrow w - \eta\lambda\,\mathrm{sign}(w)` after the optimizer step;
- ``l1-proximal``: soft-thresholding :math:`w \leftarrow \mathrm{sign}(w)\max(|w| - \eta\lambda, 0)` (FOBOS);
- ``l1-truncated``: every ``period`` steps, soft-threshold by :math:`\text{period}\cdot\eta\lambda`;
- ``l1-cumulative``: the cumulative penalty of Tsuruoka et al. (2009), clipped at zero;

plus ``none`` (no L1 term) for reference. Reported: the fraction of weights exactly zero and below
``1e-3``, the objective on the whole training set, the test metric, and sparsity against the step.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments import datasets as ds
from experiments import psilon as ps
from experiments._args import positive_int
from experiments._runner import run_tasks
from experiments._study_cli import add_run_options, add_selection_options, output_dirs
from experiments._study_cli import config_from as config_from_args
from experiments._training import Batch, reshuffled_batches, train
from experiments.datasets import Split, make_split, objective

STRATEGIES: tuple[str, ...] = ("l1-subgradient", "l1-sign-step", "l1-proximal", "l1-truncated", "l1-cumulative")
METHODS: tuple[str, ...] = ("none",) + STRATEGIES


@dataclass(frozen=True)
class Config:
    """Everything a run depends on."""

    datasets: tuple[str, ...] = tuple(ds.BUNDLED)
    methods: tuple[str, ...] = METHODS
    strength: float = 1e-3
    lr: float = 0.05
    steps: int = 3000
    batch_size: int = 32
    hidden: int = 64
    hidden_layers: int = 1
    truncated_period: int = 10
    small: float = 1e-3
    record_every: int = 50
    seeds: int = 3
    test_fraction: float = 0.25
    jobs: int = 2


def quick_config(**overrides: Any) -> Config:
    """A small end-to-end run: two data sets, one seed, short training."""
    base = Config(datasets=("iris", "diabetes"), steps=300, hidden=16, seeds=1, record_every=25, jobs=1)
    return replace(base, **overrides)


def targets(net: ps.Net) -> list:
    """``on_parameter("layers.<i>.weight", L1Ball(1.0))`` for every layer."""
    from constrain import L1Ball, on_parameter

    return [on_parameter(f"layers.{i}.weight", L1Ball(1.0)) for i in range(len(net.layers))]


def strategy_for(method: str, cfg: Config):
    """The strategy of ``method`` by name from the registry (None for ``none``)."""
    import strategies

    if method == "none":
        return None
    options: dict[str, Any] = {"strength": cfg.strength, "lr": cfg.lr}
    if method == "l1-truncated":
        options["period"] = cfg.truncated_period
    return strategies.get(method, **options)


def sparsity(net: ps.Net, small: float) -> tuple[float, float]:
    """(fraction of weights exactly 0, fraction with ``|w| < small``), biases excluded."""
    with torch.no_grad():
        ws = net.weights()
        total = sum(w.numel() for w in ws)
        return sum(int((w == 0).sum()) for w in ws) / total, sum(int((w.abs() < small).sum()) for w in ws) / total


@torch.no_grad()
def full_objective(net: ps.Net, split: Split, task: str, strength: float) -> float:
    r"""Training loss on the whole training set plus :math:`\lambda \sum_l \|W_l\|_1`."""
    data = float(objective(net(split.X), split.y, task))
    return data + strength * sum(float(w.abs().sum()) for w in net.weights())


@torch.no_grad()
def test_metric(net: ps.Net, split: Split, task: str) -> float:
    out = net(split.X_eval)
    if task == "classification":
        return float((out.argmax(1) == split.y_eval).float().mean())
    return math.sqrt(float(objective(out, split.y_eval, task))) * split.y_std


def _targets(batch: Batch) -> torch.Tensor:
    assert batch.targets is not None  # the batches below carry their targets
    return batch.targets


def run_one(cfg: Config, dataset: str, method: str, seed: int) -> dict[str, Any]:
    """Train one (data set, method, seed); the final numbers and the sparsity trace."""
    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    data = ds.load(dataset)
    rows_train, rows_test = ds.split(len(data.y), cfg.test_fraction, seed)
    split = make_split(data, rows_train, rows_test)
    torch.manual_seed(seed)  # the same initial weights and batches for every method
    k = data.num_classes if data.task == "classification" else 1
    net = ps.build("mlp", split.X.shape[1], k, cfg.hidden, cfg.hidden_layers)
    strategy = strategy_for(method, cfg)
    if strategy is not None:
        strategy.attach(net, targets(net))
    trace: list[tuple[int, float, float]] = []
    train(
        net,
        torch.optim.SGD(net.parameters(), lr=cfg.lr),
        lambda out, batch: objective(out, _targets(batch), data.task),
        reshuffled_batches(split.X, split.y, cfg.batch_size, torch.Generator().manual_seed(seed), sample_ids=False),
        cfg.steps,
        strategy=strategy,
        log_at={*range(0, cfg.steps, cfg.record_every), cfg.steps},
        on_log=lambda step, _: trace.append((step, *sparsity(net, cfg.small))),
    )
    exact, small = sparsity(net, cfg.small)
    with torch.no_grad():
        magnitudes = torch.cat([w.abs().reshape(-1) for w in net.weights()])
    return {
        "dataset": dataset,
        "task": data.task,
        "method": method,
        "seed": seed,
        "exact_zero": exact,
        "below_small": small,
        "objective": full_objective(net, split, data.task, cfg.strength),
        "metric": test_metric(net, split, data.task),
        "trace": trace,
        "magnitudes": magnitudes.numpy().astype(np.float64).tolist() if dataset == cfg.datasets[0] and seed == 0 else [],
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
    }


def run_study(cfg: Config, progress: bool = True) -> list[dict[str, Any]]:
    """Every (data set, method, seed); in ``cfg.jobs`` processes when above 1."""
    for name in cfg.datasets:
        if name not in ds.BUNDLED:
            raise KeyError(f"unknown data set {name!r}; bundled data sets: {', '.join(ds.BUNDLED)}.")
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise KeyError(f"unknown method(s) {', '.join(unknown)}; methods: {', '.join(METHODS)}.")
    jobs = [(cfg, d, m, s) for d in cfg.datasets for m in cfg.methods for s in range(cfg.seeds)]
    from tqdm import tqdm

    with tqdm(total=len(jobs), desc="l1 study", disable=not progress, file=sys.stderr) as bar:
        return run_tasks(run_one, jobs, cfg.jobs, on_result=lambda i, row: bar.update())


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds per (data set, method)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["method"]), []).append(row)
    out = []
    for (dataset, method), rs in groups.items():
        entry: dict[str, Any] = {"dataset": dataset, "method": method, "task": rs[0]["task"], "seeds": len(rs)}
        for key in ("exact_zero", "below_small", "objective", "metric", "seconds"):
            a = np.asarray([r[key] for r in rs], dtype=float)
            entry[key] = (float(a.mean()), float(a.std()))
        out.append(entry)
    return out


def table(summary: list[dict[str, Any]], cfg: Config) -> str:
    """The markdown table of the study."""
    lines = [
        f"| data set | method | exactly 0 | \\|w\\| < {cfg.small:g} | objective | test metric |",
        "|---|---|---|---|---|---|",
    ]
    for e in summary:
        name = "acc" if e["task"] == "classification" else "RMSE"
        lines.append(
            f"| {e['dataset']} | {e['method']} | {100 * e['exact_zero'][0]:.1f}% | {100 * e['below_small'][0]:.1f}% | "
            f"{e['objective'][0]:.4g} ± {e['objective'][1]:.2g} | {name} {e['metric'][0]:.4g} ± {e['metric'][1]:.2g} |"
        )
    lines += [
        "",
        f"MLP with {cfg.hidden_layers} hidden layer(s) of width {cfg.hidden}; plain SGD, lr η = {cfg.lr:g}, batch "
        f"{cfg.batch_size}, {cfg.steps} steps; λ = {cfg.strength:g} on every weight matrix (biases free); "
        f"l1-truncated with period {cfg.truncated_period}, θ = ∞. Objective: training loss on the whole training set "
        f"+ λ Σ‖W‖₁ (the same for every method; 'none' is evaluated with the λ term too). Mean over {cfg.seeds} "
        f"seed(s) (split, initialization and batches shared by all methods within a seed); ± is the std over seeds.",
    ]
    return "\n".join(lines) + "\n"


def figures(rows: list[dict[str, Any]], cfg: Config, out: Path) -> list[Path]:
    """l1_sparsity.png (sparsity vs step) and l1_magnitudes.png (weight magnitudes, first data set)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))  # the colour cycle is longer
    paths: list[Path] = []
    fig, axes = plt.subplots(1, len(cfg.datasets), figsize=(3.3 * len(cfg.datasets), 3.3), squeeze=False, sharey=True)
    for ax, dataset in zip(axes[0], cfg.datasets, strict=True):
        for method in cfg.methods:
            rs = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            if not rs:
                continue
            steps = [t[0] for t in rs[0]["trace"]]
            exact = np.mean([[t[1] for t in r["trace"]] for r in rs], axis=0)
            small = np.mean([[t[2] for t in r["trace"]] for r in rs], axis=0)
            ax.plot(steps, 100 * exact, color=colors[method], label=method)
            ax.plot(steps, 100 * small, color=colors[method], ls=":", lw=1)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("SGD step")
    axes[0][0].set_ylabel(f"weights exactly 0 (solid), |w| < {cfg.small:g} (dotted), %")
    axes[0][0].yaxis.label.set_fontsize(8)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "l1_sparsity.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    first = [r for r in rows if r["magnitudes"]]
    if first:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        bins = np.linspace(-12, 1, 60).tolist()
        for r in first:
            m = np.asarray(r["magnitudes"])
            zeros = float((m == 0).mean())
            ax.hist(
                np.log10(m[m > 0]),
                bins=bins,
                histtype="step",
                color=colors[r["method"]],
                label=f"{r['method']} ({100 * zeros:.0f}% exactly 0)",
            )
        ax.axvline(math.log10(cfg.lr * cfg.strength), color="k", ls="--", lw=1, label="log10(ηλ)")
        ax.set(xlabel="log10 |w| (non-zero weights)", ylabel="count", title=f"{first[0]['dataset']}: weight magnitudes")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "l1_magnitudes.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``constrain study l1``."""
    add_selection_options(parser, "iris + diabetes, one seed, 300 steps", methods=METHODS)
    parser.add_argument("--strength", type=float, metavar="LAMBDA", help="lambda (default 1e-3)")
    parser.add_argument("--lr", type=float, metavar="ETA", help="SGD step size, also the strategies' lr (default 0.05)")
    parser.add_argument("--steps", type=positive_int, metavar="N", help="SGD steps (default 3000)")
    parser.add_argument("--seeds", type=positive_int, metavar="N", help="seeds 0..N-1 (default 3)")
    add_run_options(parser, "l1", "l1.md and the l1_*.png figures")


def config_from(args: argparse.Namespace) -> Config:
    return config_from_args(args, Config(), quick_config(), ("datasets", "methods", "strength", "lr", "steps", "seeds"))


def run(args: argparse.Namespace) -> int:
    """Run the study; write ``l1.md`` and the figures (see ``--figures``) and ``l1.json`` into ``--out``."""
    cfg = config_from(args)
    json_dir, out = output_dirs(args, cfg, Config())  # checked before any work
    start = time.perf_counter()
    rows = run_study(cfg, progress=not args.no_progress)
    text = table(summarize(rows), cfg)
    elapsed = time.perf_counter() - start
    cpu = sum(r["cpu"] for r in rows)
    command = " ".join(["constrain study l1"] + (["--quick"] if args.quick else []))
    (out / "l1.md").write_text(
        f"# L1 regularization, five ways\n\n`{command}`: {elapsed:.0f} s wall with {cfg.jobs} "
        f"worker process(es), {cpu:.0f} s CPU time in the runs (one torch thread each).\n\n" + text
    )
    (json_dir / "l1.json").write_text(json.dumps({"config": asdict(cfg), "rows": rows}, default=float))
    paths = figures(rows, cfg, out)
    print(text)
    print(f"wrote {out / 'l1.md'}, {', '.join(str(p) for p in paths)} ({elapsed:.0f} s wall, {cpu:.0f} s CPU)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.l1_study", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
