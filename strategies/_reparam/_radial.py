r"""The radial map onto the L1 ball, per row: :math:`w_j = r v_j / \max(r, \|v_j\|_1)`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from constrain import parameter_rows
from constrain._checks import check_radius
from strategies._output_maps import RadiusLike, radial_l1

__all__ = ["RadialL1", "radius_buffer"]


def radius_buffer(radius: RadiusLike, rows: int, like: Tensor) -> Tensor:
    """A positive finite radius, one or one per row, as a ``(rows, 1)`` tensor on ``like``'s device and dtype
    (the projections' own check, :func:`constrain._checks.check_radius`)."""
    return check_radius(radius, like.detach(), torch.Size([rows])).contiguous()


class RadialL1(nn.Module):
    r"""Radial map onto the L1 ball, per row: :math:`w_j = r v_j / \max(r, \|v_j\|_1)`.

    The identity inside the ball, so ``right_inverse`` is the identity (:math:`v = W`): a feasible
    :math:`W` is kept exactly and an infeasible one is scaled onto the sphere.
    """

    radius: Tensor

    def __init__(self, radius: RadiusLike, like: Tensor) -> None:
        super().__init__()
        rows = parameter_rows(like.detach()).shape[0]
        self.register_buffer("radius", radius_buffer(radius, rows, like.detach()), persistent=False)

    def forward(self, v: Tensor) -> Tensor:
        return radial_l1(parameter_rows(v), self.radius).reshape(v.shape)

    def right_inverse(self, w: Tensor) -> Tensor:
        return w
