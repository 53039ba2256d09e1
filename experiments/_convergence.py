r"""When a study run has converged, so that the rest of its step budget would not change what the table says.

A run is evaluated at its log steps (:func:`experiments.study.log_steps`). At a log step :math:`t` the rule
looks back over the window :math:`[t - w, t]`, :math:`w` = :data:`WINDOW` of the budget :math:`T`, and stops
the run when every logged point in it agrees with the last one:

.. math::  \max_{s \in \text{window}} F_s - \min_{s} F_s \le \max(\rho\,|F_t - F^*|,\ \epsilon\,|F^*|)

(without a known :math:`F^*`: :math:`\le \epsilon_{\text{mlp}}\,|F_t|`), and the same spread rule for the
max violation on the training (and held-out) inputs, :math:`\text{spread}(v) \le \max(\rho\,v_t, \epsilon_v)`,
with :math:`\rho` = :data:`RELATIVE`. In words: over the last :math:`w` steps neither the distance to the
optimum nor the violation moved by more than a tenth of a percent of itself, so the two digits the table
prints are settled. The rule never fires before :data:`EARLIEST` of the budget (the learning rate has then
decayed by at least a factor 20), needs :data:`MIN_POINTS` logged points in the window, and cannot stop a
run that cycles (its objective or violation spreads over the window), one that still improves (the spread
is its progress), or a run with a non-finite value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: The look-back window, as a fraction of the step budget.
WINDOW = 0.2
#: The earliest stop, as a fraction of the step budget.
EARLIEST = 1 / 3
#: The spread allowed over the window, relative to the distance to the optimum (or to the violation).
RELATIVE = 1e-3
#: Absolute floors: relative to |F*| for the objective, and for the violation (machine-precision jitter).
OBJECTIVE_FLOOR, VIOLATION_FLOOR = 1e-14, 1e-12
#: Without F*: the objective's spread relative to itself.
OBJECTIVE_ALONE = 1e-6
#: Logged points the window must hold.
MIN_POINTS = 5


def _window(log: Mapping[str, Sequence[Any]], t: int, budget: int) -> list[int] | None:
    """Indices of the logged points in ``[t - w, t]`` (None when the rule may not fire at ``t``)."""
    steps = log["step"]
    if not steps or steps[-1] != t or t >= budget or t < EARLIEST * budget:
        return None
    first = t - max(1, round(WINDOW * budget))
    window = [i for i, s in enumerate(steps) if s >= first]
    return window if len(window) >= MIN_POINTS else None


def _spread(values: list[float | None]) -> float | None:
    """max - min of ``values`` (None if one is missing or not finite)."""
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    finite = [float(v) for v in values if v is not None]
    return max(finite) - min(finite)


def convergence_reason(log: Mapping[str, Sequence[Any]], budget: int, f_star: float | None) -> str | None:
    """Why the run whose ``log`` ends at its latest logged step has converged, or None (see the module doc)."""
    t = int(log["step"][-1]) if log["step"] else 0
    window = _window(log, t, budget)
    if window is None:
        return None
    objective = [log["objective"][i] for i in window]
    spread_f = _spread(objective)
    last = objective[-1]
    if spread_f is None or last is None:
        return None
    if f_star is not None:
        allowed_f = max(RELATIVE * abs(last - f_star), OBJECTIVE_FLOOR * abs(f_star))
    else:
        allowed_f = OBJECTIVE_ALONE * abs(last)
    if spread_f > allowed_f:
        return None
    moved: list[str] = [f"objective {spread_f:.1e}"]
    for key in ("train_max", "test_max"):
        column = [log[key][i] for i in window]
        if all(v is None for v in column):
            continue
        spread_v = _spread(column)
        now = column[-1]
        if spread_v is None or now is None or spread_v > max(RELATIVE * now, VIOLATION_FLOOR):
            return None
        moved.append(f"{'held-out' if key == 'test_max' else 'max'} violation {spread_v:.1e}")
    first = log["step"][window[0]]
    return f"converged at step {t}: over steps {first}-{t}, " + ", ".join(moved) + f" (at most {RELATIVE:g} of their size)"


__all__ = ["convergence_reason"]
