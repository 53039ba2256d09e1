r"""Figures of a study (matplotlib, Agg backend, PNG at 100 dpi).

- ``<prefix>-<problem>.png``: per problem, :math:`|F - F^*|/|F^*|` (or the objective where
  :math:`F^*` is unknown), the max training violation and, for output constraints, the max
  held-out violation against the step, on log scales: one line per strategy (median over seeds)
  with a band from the smallest to the largest seed.
- ``<prefix>-pareto.png``: final gap (or objective) against final max training violation, one
  panel per problem, a marker per strategy (median) and a small dot per seed.
- ``<prefix>-time.png``: training time per step relative to the unconstrained run, per problem.

A violation of exactly 0 cannot be drawn on a log axis; it is drawn at :data:`FLOOR` (the dotted
line labelled "0").
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after matplotlib.use: no display needed
import numpy as np  # noqa: E402 - kept with the imports above
from matplotlib.ticker import LogLocator, NullLocator  # noqa: E402 - after matplotlib.use
from PIL import Image  # noqa: E402  (matplotlib's own dependency)

from experiments.problems import get_problem  # noqa: E402 - kept with the imports above

#: Zero (and anything smaller) is drawn at this height on log axes.
FLOOR = 1e-17
DPI = 100
_FAMILY_STYLE = {
    "baseline": ("-", "k"),
    "penalty": ("-", None),
    "lagrangian": ("--", None),
    "projected": ("-", None),
    "reparameterization": (":", None),
    "l1-regularization": ("-.", None),
}
_MARKERS = {
    "baseline": "o",
    "penalty": "s",
    "lagrangian": "^",
    "projected": "D",
    "reparameterization": "v",
    "l1-regularization": "P",
}


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a 256-colour PNG (about a third of the RGBA size; plots have few colours)
    and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return Path(path)


def _log_axis(axis: Any) -> None:
    """Log scale with at most about six labelled decades and no minor ticks (cheap to draw)."""
    axis.set_major_locator(LogLocator(base=10, numticks=7))
    axis.set_minor_locator(NullLocator())


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    """One colour per label, the same in every figure: the label's place in the default strategy
    table (then in ``labels``), over tab20 and tab20b; black for the baseline."""
    from experiments.study import all_entries

    order = [e.label for e in all_entries()]
    order += [label for label in labels if label not in order]
    palette = [plt.get_cmap("tab20")(i) for i in range(20)] + [plt.get_cmap("tab20b")(i) for i in range(20)]
    return {
        label: "k" if label == "unconstrained" else palette[(i - 1) % len(palette)]
        for i, label in enumerate(order)
        if label in labels
    }


def _runs_by_label(plan: Any, records: Mapping[str, dict], problem: str) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for spec in plan.specs:
        if spec.problem == problem and spec.key in records:
            by.setdefault(spec.entry.label, []).append(records[spec.key])
    return by


def _band(runs: list[dict], key: str, absolute: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Steps and the median, min and max over seeds of a logged column. A run that stopped once converged
    (shorter log) counts up to its last step only: each logged step takes the seeds that reached it."""
    runs = [r for r in runs if r["log"][key] and r["log"][key][0] is not None]
    if not runs:
        return None
    longest = max(runs, key=lambda r: len(r["log"][key]))
    steps = np.asarray(longest["log"]["step"][: len(longest["log"][key])], dtype=float)
    values = np.full((len(runs), len(steps)), np.nan)
    for i, run in enumerate(runs):
        column = np.asarray(run["log"][key], dtype=float)
        values[i, : len(column)] = np.nan_to_num(column, nan=np.inf)  # a failed run's NaN: off the top
    if absolute:
        values = np.abs(values)
    values = np.clip(values, FLOOR, None)  # NaN (not reached) stays NaN
    return steps, np.nanmedian(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)


def plot_problem(plan: Any, records: Mapping[str, dict], problem: str, path: Path) -> Path:
    """Convergence figure of one problem: gap or objective, train violation, held-out violation."""
    p = get_problem(problem)
    by = _runs_by_label(plan, records, problem)
    labels = [e.label for e in plan.entries[problem] if e.label in by]
    colors = _colors([e.label for e in plan.entries[problem]])
    has_gap = p.f_star is not None
    panels = [
        ("gap", "|gap| = |F - F*| / |F*|" if has_gap else "objective F (train MSE)", has_gap),
        ("train_max", "max violation, training inputs", False),
    ]
    if p.has_output_target:
        panels.append(("test_max", "max violation, held-out inputs", False))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 2.6, 4.2), dpi=DPI, squeeze=False)
    for ax, (key, title, absolute) in zip(axes[0], panels, strict=True):
        column = key if key != "gap" or has_gap else "objective"
        for label in labels:
            runs = by[label]
            band = _band(runs, column, absolute)
            if band is None:
                continue
            steps, mid, lo, hi = band
            family = runs[0].get("family", "penalty")
            style = _FAMILY_STYLE.get(family, ("-", None))[0]
            failed = any(r["status"] != "done" for r in runs)
            ax.plot(steps, mid, style, color=colors[label], lw=1.4, label=label + (" (failed)" if failed else ""))
            if len(runs) > 1:
                ax.fill_between(steps, lo, hi, color=colors[label], alpha=0.15, lw=0)
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        if key != "gap":
            ax.axhline(FLOOR, color="0.6", lw=0.8, ls=":")
            ax.text(0.99, FLOOR, "0", transform=ax.get_yaxis_transform(), ha="right", va="bottom", fontsize=8, color="0.4")
        ax.grid(alpha=0.3, which="major")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"{problem}: {p.description}", fontsize=10)
    width = 5.2 * len(panels) + 2.6
    fig.subplots_adjust(left=0.7 / width, right=1 - 2.8 / width, bottom=0.13, top=0.86, wspace=0.25)
    return save(fig, path)


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return (n + cols - 1) // cols, cols


def plot_pareto(plan: Any, records: Mapping[str, dict], path: Path) -> Path:
    """Final |gap| (or objective) against final max training violation, one panel per problem."""
    rows, cols = _grid(len(plan.problems))
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols + 2.4, 4.0 * rows), dpi=DPI, squeeze=False)
    legend: dict[str, Any] = {}
    for ax, problem in zip(axes.flat, plan.problems, strict=True):
        p = get_problem(problem)
        by = _runs_by_label(plan, records, problem)
        colors = _colors([e.label for e in plan.entries[problem]])
        key = "gap" if p.f_star is not None else "objective"
        for entry in plan.entries[problem]:
            done = [r for r in by.get(entry.label, []) if r["status"] == "done"]
            if not done:
                continue
            xs = np.clip([r["log"]["train_max"][-1] for r in done], FLOOR, None)
            ys = np.clip(np.abs([r["log"][key][-1] for r in done]), FLOOR, None)
            marker = _MARKERS.get(done[0].get("family", ""), "o")
            ax.scatter(xs, ys, s=8, color=colors[entry.label], alpha=0.5, marker=marker)
            legend[entry.label] = ax.scatter(
                np.median(xs),
                np.median(ys),
                s=50,
                color=colors[entry.label],
                marker=marker,
                edgecolor="k",
                lw=0.5,
                label=entry.label,
                zorder=3,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axis(ax.xaxis)
        _log_axis(ax.yaxis)
        ax.set_xlabel("final max training violation (0 drawn at 1e-17)")
        ax.set_ylabel("final |gap|" if key == "gap" else "final objective")
        ax.set_title(problem, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(plan.problems) :]:
        ax.axis("off")
    from experiments.study import all_entries

    order = [e.label for e in all_entries()]
    labels = sorted(legend, key=lambda label: order.index(label) if label in order else len(order))
    fig.legend([legend[label] for label in labels], labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(
        "Objective against feasibility at the end of training, median over seeds (big) and each seed "
        "(small); lower left is better",
        fontsize=11,
    )
    width = 5.0 * cols + 2.4
    fig.subplots_adjust(
        left=0.7 / width, right=1 - 2.6 / width, bottom=0.55 / (4.0 * rows), top=1 - 0.6 / (4.0 * rows), wspace=0.3, hspace=0.4
    )
    return save(fig, path)


def plot_time(plan: Any, rows: Sequence[Any], path: Path) -> Path:
    """Training time per step relative to the unconstrained run, one panel per problem."""
    n = len(plan.problems)
    rcount, cols = _grid(n)
    fig, axes = plt.subplots(
        rcount,
        cols,
        figsize=(5.0 * cols, 0.9 + 0.28 * max(len(plan.entries[p]) for p in plan.problems) * rcount),
        dpi=DPI,
        squeeze=False,
    )
    for ax, problem in zip(axes.flat, plan.problems, strict=True):
        these = [r for r in rows if r.problem == problem and r.relative_time is not None]
        colors = _colors([e.label for e in plan.entries[problem]])
        labels = [r.entry.label for r in these]
        values = [r.relative_time for r in these]
        y = np.arange(len(these))
        ax.barh(y, values, color=[colors[label] for label in labels])
        ax.set_yticks(y, labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel("time per step / unconstrained")
        ax.set_title(problem, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Cost of enforcing the constraint (median over seeds)", fontsize=11)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.13, right=0.98, bottom=0.5 / height, top=1 - 0.75 / height, wspace=0.75, hspace=0.35)
    return save(fig, path)


def study_figures(plan: Any, records: Mapping[str, dict], rows: Sequence[Any], folder: Path, prefix: str = "study") -> list[Path]:
    """Every figure of a study into ``folder``; returns the paths written."""
    folder = Path(folder)
    paths = [plot_problem(plan, records, p, folder / f"{prefix}-{p}.png") for p in plan.problems]
    paths.append(plot_pareto(plan, records, folder / f"{prefix}-pareto.png"))
    paths.append(plot_time(plan, rows, folder / f"{prefix}-time.png"))
    return paths
