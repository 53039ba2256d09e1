r"""Projected strategies: keep the iterate inside the set by Euclidean projection.

Parameters: after every optimizer step, :math:`w \leftarrow P_C(w)` (Keras' ``NonNeg`` does this
for the orthant). For ``A w = c`` there is a second variant, ``mode="gradient"``: the gradient is
projected onto the null space of :math:`A` before the optimizer step,
:math:`\nabla \leftarrow (I - V^\top V)\nabla`. With plain SGD that keeps :math:`A w = c` by itself;
Adam rescales coordinates, so the weights are projected after the step as well, and the two
variants follow different trajectories.

The metric (``metric="optimizer"``, the default): Adam, AdamW, RMSprop and Adagrad step
:math:`w - \eta D^{-1} m` with a diagonal :math:`D` (Adam: :math:`\sqrt{\hat v} + \epsilon`), and a
Euclidean projection after such a step moves the fixed point away from the constrained optimum
(projected gradient descent needs the projection in the step's own metric). So the weights are
projected in :math:`\|\cdot\|_D` (``constrain.project_metric``: the weighted soft threshold for
the L1 ball, :math:`z - D^{-1}A^\top(A D^{-1} A^\top)^{-1}(A z - c)` for ``A w = c``; the orthant
is separable, so nothing changes there), with :math:`D` read from the optimizer's state after its
step. The strategy finds the optimizer by itself: a global ``optimizer.step`` post-hook (installed
by ``attach``, removed by :meth:`Strategy.detach`) remembers the optimizer that stepped the
constrained parameters, so the four calls stay the same. Any other optimizer (SGD, or one that
does not hold these parameters), and ``metric="euclidean"``, project in the Euclidean metric.

Outputs: a projection layer :math:`y = P_C(f(x))` appended to the model as a forward hook. Its
backward is the exact Jacobian (``jacobian="exact"``) or, for the L1 ball, the shortcut that treats
the soft-threshold :math:`\tau` as a constant (``jacobian="threshold-constant"``: the Jacobian
:math:`\operatorname{diag}(1_S)`, dropping :math:`-s s^\top / |S|`), as an often-cited answer
recommends in place of differentiable sorting.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from constrain import (
    Affine,
    ConstraintSet,
    L1Ball,
    OutputTarget,
    ParameterTarget,
    l1_ball_threshold,
    project_metric,
)
from strategies._base import Strategy, Target, install_output_map
from strategies._optimizer_metric import OptimizerWatch, optimizer_diagonal
from strategies._output_maps import guard_nonfinite
from strategies._registry import register


def _l1_ball_threshold_constant(radius: float | Tensor):
    """Row map ``sign(z) relu(|z| - tau)`` with ``tau`` computed without gradient; rows that float32
    rounding left outside are pulled in by a constant factor ``r / ||y||_1`` (a few ulps)."""

    def project(rows: Tensor) -> Tensor:
        tau = l1_ball_threshold(rows, radius)
        y = torch.sign(rows) * (rows.abs() - tau).clamp_min(0)
        with torch.no_grad():
            total = torch.linalg.vector_norm(y, ord=1, dim=-1, keepdim=True, dtype=torch.float64)
            r = torch.as_tensor(radius, dtype=torch.float64, device=y.device)
            r = r.reshape(*r.shape, 1) if r.dim() else r
            scale = torch.where(total > r, r / total, 1.0).to(y.dtype)
        return y * scale

    return project


@register("projected")
class Projected(Strategy):
    """Project parameters after each step; append a projection layer for outputs."""

    family = "projected"
    summary = "projection: weights after each step (in the optimizer's metric), a projection layer on outputs"

    def __init__(
        self,
        *,
        mode: Literal["weights", "gradient"] = "weights",
        jacobian: Literal["exact", "threshold-constant"] = "exact",
        metric: Literal["optimizer", "euclidean"] = "optimizer",
    ) -> None:
        super().__init__()  # the enumerated options are checked by Strategy.__new__ (their Literal types)
        self.mode = mode
        self.jacobian = jacobian
        self.metric = metric
        self._watch: OptimizerWatch | None = None  # finds the optimizer that steps the constrained parameters

    @classmethod
    def unsupported_reason(cls, target: Target) -> str | None:
        if isinstance(target, OutputTarget) and target.set.acts_on_flat_vector and not isinstance(target.set, Affine):
            return "a projection layer acts on each output row; flat-vector sets constrain parameters."
        return None

    def _attach(self) -> None:
        model = self._require_model()
        for target in self.targets:
            if isinstance(target, OutputTarget):
                self._handles.append(install_output_map(model, self._output_map(target), target.set))
                continue
            for name in target.names:
                module, _, attr = name.rpartition(".")
                if parametrize.is_parametrized(model.get_submodule(module), attr):
                    raise ValueError(
                        f"projected: {name!r} is parametrized; the projection needs the raw weight. "
                        f"Remove the parametrization or use the reparameterization strategies."
                    )
            if self.mode == "gradient":
                if not isinstance(target.set, Affine):
                    raise ValueError(
                        f"projected: mode='gradient' projects gradients onto the null space of A, which needs an "
                        f"Affine set; {target.label} has {target.set!r}. Use mode='weights'."
                    )
                self._handles.extend(_project_gradients(model, target))
        if self.metric == "optimizer" and any(_metric_applies(t) for t in self.targets):
            self._watch = self._watch_optimizer(
                [p for t in self.targets if isinstance(t, ParameterTarget) for p in t.tensors(model)]
            )
        self._project_parameters()  # start feasible

    def current_metric(self, target: ParameterTarget) -> Tensor | None:
        r"""The diagonal :math:`D` of the remembered optimizer for ``target``'s rows (the layout of
        ``target.gather``), or None: Euclidean (no diagonal optimizer seen, ``metric="euclidean"``, or a set
        the metric does not change)."""
        if self.metric != "optimizer" or self._watch is None or not _metric_applies(target):
            return None
        return self._watch.rows(target, self._require_model(), optimizer_diagonal)

    def _output_map(self, target: OutputTarget):
        if self.jacobian == "threshold-constant":
            if not isinstance(target.set, L1Ball):
                raise ValueError(
                    f"projected: jacobian='threshold-constant' is the L1-ball shortcut; {target.label} uses "
                    f"{target.set!r}. Use jacobian='exact'."
                )
            project = _l1_ball_threshold_constant(target.set.radius)
        else:

            def project(rows: Tensor, bound: ConstraintSet = target.set) -> Tensor:  # bound: set of this forward
                return bound.project(rows)

        return guard_nonfinite(self, target.label, project)

    def _after_step(self) -> None:
        self._project_parameters()

    def _after_skipped_step(self) -> None:
        self._project_parameters()  # feasibility first; a no-op when the parameters did not move

    @torch.no_grad()
    def _project_parameters(self) -> None:
        model = self._require_model()
        for target in self.targets:
            if isinstance(target, ParameterTarget):
                rows = target.gather(model)
                self._check_finite_parameters(target, rows)
                d = self.current_metric(target)
                projected = target.set.project(rows) if d is None else project_metric(target.set, rows, d.to(rows))
                for param, value in zip(target.tensors(model), target.split(projected, model), strict=True):
                    param.copy_(value)


def _metric_applies(target: Target) -> bool:
    """Whether the projection of ``target`` depends on the metric: parameter targets on an L1 ball or an
    affine set (the orthant is separable; other sets keep the Euclidean projection)."""
    return isinstance(target, ParameterTarget) and isinstance(target.set, (L1Ball, Affine))


def _project_gradients(model: nn.Module, target: ParameterTarget) -> list:
    r"""Hooks that replace the gradient of ``vec(W)`` by :math:`(I - V^\top V)\nabla` once every
    parameter of the target has its gradient accumulated (the null space couples them)."""
    params = target.tensors(model)
    assert isinstance(target.set, Affine)  # _attach refuses mode="gradient" for any other set
    factor = target.set.factor
    pending: set[int] = set()

    def hook(param: Tensor) -> None:
        pending.add(id(param))
        if len(pending) < len(params) or any(p.grad is None for p in params):
            return
        pending.clear()
        grads = [p.grad for p in params]
        assert all(g is not None for g in grads)  # checked above
        grad = factor.project_direction(torch.cat([g.reshape(-1) for g in grads if g is not None]))
        for g, part in zip(grads, grad.split([p.numel() for p in params]), strict=True):
            if g is not None:
                g.copy_(part.reshape(g.shape))

    return [p.register_post_accumulate_grad_hook(hook) for p in params]
