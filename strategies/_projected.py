r"""Projected strategies: keep the iterate inside the set by Euclidean projection.

Parameters: after every optimizer step, :math:`w \leftarrow P_C(w)` (Keras' ``NonNeg`` does this
for the orthant). For ``A w = c`` there is a second variant, ``mode="gradient"``: the gradient is
projected onto the null space of :math:`A` before the optimizer step,
:math:`\nabla \leftarrow (I - V^\top V)\nabla`. With plain SGD that keeps :math:`A w = c` by itself;
Adam rescales coordinates, so the weights are projected after the step as well, and the two
variants follow different trajectories.

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

from constrain import Affine, ConstraintSet, L1Ball, OutputTarget, ParameterTarget, l1_ball_threshold
from strategies._base import Strategy, Target, install_output_map
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
    summary = "Euclidean projection: weights after each step, a projection layer on outputs"

    def __init__(
        self,
        *,
        mode: Literal["weights", "gradient"] = "weights",
        jacobian: Literal["exact", "threshold-constant"] = "exact",
    ) -> None:
        super().__init__()
        self.mode = mode
        self.jacobian = jacobian
        self._handles: list = []

    @classmethod
    def unsupported_reason(cls, target: Target) -> str | None:
        if isinstance(target, OutputTarget) and target.set.acts_on_flat_vector:
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
        self._project_parameters()  # start feasible

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
                projected = target.set.project(rows)
                for param, value in zip(target.tensors(model), target.split(projected, model)):
                    param.copy_(value)

    def detach(self) -> None:
        """Remove the hooks this strategy installed (projection layers, gradient projections)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _project_gradients(model: nn.Module, target: ParameterTarget) -> list:
    r"""Hooks that replace the gradient of ``vec(W)`` by :math:`(I - V^\top V)\nabla` once every
    parameter of the target has its gradient accumulated (the null space couples them)."""
    params = target.tensors(model)
    factor = target.set.factor  # type: ignore[union-attr]
    pending: set[int] = set()

    def hook(param: Tensor) -> None:
        pending.add(id(param))
        if len(pending) < len(params) or any(p.grad is None for p in params):
            return
        pending.clear()
        grad = torch.cat([p.grad.reshape(-1) for p in params])
        grad = factor.project_direction(grad)
        for p, part in zip(params, grad.split([p.numel() for p in params])):
            p.grad.copy_(part.reshape(p.shape))

    return [p.register_post_accumulate_grad_hook(hook) for p in params]
