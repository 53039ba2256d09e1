r"""Maps onto the orthant :math:`\{w \ge 0\}`, elementwise: ``softplus``, ``exp``, ``square``.

Each is a parametrization (``forward`` maps the free variable, ``right_inverse`` recovers one from a
value, first clamped to :math:`\ge \varepsilon`); the same maps on output rows are
:data:`strategies._output_maps.NONNEGATIVE_MAPS`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NONNEGATIVE_PARAMETRIZATIONS", "ExpNonNegative", "SoftplusNonNegative", "SquareNonNegative"]


class _NonNegativeMap(nn.Module):
    """Base of the elementwise maps onto :math:`\\{w \\ge 0\\}`; ``right_inverse`` first clamps to ``eps``."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = float(eps)


class SoftplusNonNegative(_NonNegativeMap):
    r""":math:`w = \operatorname{softplus}(v) = \log(1 + e^v)`; right inverse
    :math:`v = \log(e^{w} - 1) = w + \log(1 - e^{-w})` with :math:`w` clamped to :math:`\ge \varepsilon`."""

    def forward(self, v: Tensor) -> Tensor:
        return F.softplus(v)

    def right_inverse(self, w: Tensor) -> Tensor:
        w = w.clamp_min(self.eps)
        return w + torch.log(-torch.expm1(-w))  # log(expm1(w)) without overflow for large w


class ExpNonNegative(_NonNegativeMap):
    r""":math:`w = e^v`; right inverse :math:`v = \log \max(w, \varepsilon)`."""

    def forward(self, v: Tensor) -> Tensor:
        return torch.exp(v)

    def right_inverse(self, w: Tensor) -> Tensor:
        return torch.log(w.clamp_min(self.eps))


class SquareNonNegative(_NonNegativeMap):
    r""":math:`w = v^2`; right inverse :math:`v = \sqrt{\max(w, \varepsilon)}` (kept off 0, where the
    gradient :math:`2v` would vanish)."""

    def forward(self, v: Tensor) -> Tensor:
        return v * v

    def right_inverse(self, w: Tensor) -> Tensor:
        return torch.sqrt(w.clamp_min(self.eps))


#: The parametrizations by option value (``nonnegative=...``).
NONNEGATIVE_PARAMETRIZATIONS: dict[str, type[_NonNegativeMap]] = {
    "softplus": SoftplusNonNegative,
    "exp": ExpNonNegative,
    "square": SquareNonNegative,
}
