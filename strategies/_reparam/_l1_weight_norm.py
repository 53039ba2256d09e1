r"""L1 weight normalization (PSiLON Net) onto the L1 ball on weight rows: :math:`w_j = g_j v_j / \|v_j\|_1`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from constrain import parameter_rows
from strategies._output_maps import RadiusLike
from strategies._reparam._radial import radius_buffer

__all__ = ["L1WeightNorm"]


class L1WeightNorm(nn.Module):
    r"""L1 weight normalization (PSiLON Net): :math:`w_j = g_j\, v_j / \|v_j\|_1` for each row :math:`j`.

    ``radius=r`` (a float or one per row): :math:`g_j = r_j\,\sigma(a_j)`, so
    :math:`\|w_j\|_1 = g_j \le r_j` (the L1 ball on rows); ``radius=None``: :math:`g_j` is a free
    learnable length (PSiLON's unconstrained mode, :math:`\|w_j\|_1 = |g_j|`). ``shared_length``: one
    :math:`a` (or :math:`g`) for the whole weight (PSiLON's hidden layers) instead of one per row.
    :math:`\|v_j\|_1` is guarded below by ``eps``. The length parameter is ``raw_length``
    (:math:`a` or :math:`g`, shape ``(rows or 1, 1)``); :attr:`length` gives :math:`g`.

    ``right_inverse(W)`` keeps the direction (:math:`v = W`) and sets the length from the current row
    norms (the mean over rows if shared), with :math:`\|w_j\|_1 / r_j` clamped into
    :math:`[\varepsilon, 1 - \varepsilon]`: rows inside the ball are kept, rows outside are scaled
    radially to just inside the sphere.
    """

    def __init__(
        self, weight: Tensor, radius: RadiusLike | None = 1.0, *, shared_length: bool = False, eps: float = 1e-6
    ) -> None:
        super().__init__()
        rows = parameter_rows(weight.detach()).shape[0]
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps}.")
        self.eps, self.shared_length = float(eps), bool(shared_length)
        self.raw_length = nn.Parameter(weight.detach().new_zeros(1 if shared_length else rows, 1))
        if radius is None:
            self.radius: Tensor | None = None
        else:
            self.register_buffer("radius", radius_buffer(radius, rows, weight.detach()), persistent=False)

    @property
    def length(self) -> Tensor:
        """:math:`g`, shape ``(rows or 1, 1)``: :math:`r\\sigma(a)` or the free length."""
        if self.radius is None:
            return self.raw_length
        return self.radius * torch.sigmoid(self.raw_length)

    def forward(self, v: Tensor) -> Tensor:
        rows = parameter_rows(v)
        norm = rows.abs().sum(-1, keepdim=True).clamp_min(self.eps)
        return (rows * (self.length / norm)).reshape(v.shape)

    @torch.no_grad()
    def right_inverse(self, w: Tensor) -> Tensor:
        norms = parameter_rows(w).abs().sum(-1, keepdim=True)
        if self.radius is None:
            self.raw_length.copy_(norms.mean(0, keepdim=True) if self.shared_length else norms)
        else:
            ratio = norms / self.radius
            ratio = (ratio.mean(0, keepdim=True) if self.shared_length else ratio).clamp(self.eps, 1.0 - self.eps)
            self.raw_length.copy_(torch.logit(ratio))
        return w
