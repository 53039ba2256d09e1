r"""One registered name per map, ``reparam-<map>``: the map fixed, the sets it does not cover refused.

Each is declared by its map, the options it fixes and the options it keeps
(:meth:`Reparameterization.__init_subclass__`); the plumbing is :class:`Reparameterization`'s.
"""

from __future__ import annotations

from strategies._registry import register
from strategies._reparam._strategy import Reparameterization

__all__ = [
    "ExpReparameterization",
    "L1WeightNormReparameterization",
    "NullSpaceReparameterization",
    "RadialReparameterization",
    "SigmoidSimplexReparameterization",
    "SoftplusReparameterization",
    "SquareReparameterization",
]


@register("reparam-softplus")
class SoftplusReparameterization(Reparameterization, map_name="softplus", fixed={"nonnegative": "softplus"}, keeps=("eps",)):
    r"""NonNegative by :math:`w = \operatorname{softplus}(v)` on weights and :math:`y = \operatorname{softplus}(z)`
    on outputs."""

    summary = "NonNegative weights/outputs as softplus(v); right inverse log(expm1(w))"


@register("reparam-exp")
class ExpReparameterization(Reparameterization, map_name="exp", fixed={"nonnegative": "exp"}, keeps=("eps",)):
    r"""NonNegative by :math:`w = e^v` on weights, :math:`y = e^z` on outputs."""

    summary = "NonNegative weights/outputs as exp(v); right inverse log(max(w, eps))"


@register("reparam-square")
class SquareReparameterization(Reparameterization, map_name="square", fixed={"nonnegative": "square"}, keeps=("eps",)):
    r"""NonNegative by :math:`w = v^2` on weights, :math:`y = z^2` on outputs."""

    summary = "NonNegative weights/outputs as v^2; right inverse sqrt(max(w, eps))"


@register("reparam-null-space")
class NullSpaceReparameterization(Reparameterization, map_name="null-space", keeps=("affine_form",)):
    r"""``A vec(W) = c`` by :math:`\operatorname{vec}(W) = w_0 + N v` (orthonormal null-space basis :math:`N`)."""

    summary = "Affine weights as w0 + N v (N orthonormal null-space basis, w0 least-norm); also across parameters"


@register("reparam-l1-weight-norm")
class L1WeightNormReparameterization(
    Reparameterization, map_name="l1-weight-norm", fixed={"l1_weights": "l1-weight-norm"}, keeps=("shared_length", "eps")
):
    r"""L1 ball on weight rows by L1 weight normalization :math:`w_j = r\sigma(a_j) v_j / \|v_j\|_1` (PSiLON Net)."""

    summary = "L1 ball on weight rows as r sigmoid(a) v / ||v||_1 (PSiLON's L1 weight normalization)"


@register("reparam-radial")
class RadialReparameterization(Reparameterization, map_name="radial", fixed={"l1_weights": "radial", "l1_outputs": "radial"}):
    r"""L1 ball by the radial map :math:`r z / \max(r, \|z\|_1)` on weight rows or output rows."""

    summary = "L1 ball on weight rows or outputs as r z / max(r, ||z||_1) (identity inside the ball)"


@register("reparam-sigmoid-simplex")
class SigmoidSimplexReparameterization(Reparameterization, map_name="sigmoid-simplex", fixed={"l1_outputs": "sigmoid-simplex"}):
    r"""L1 ball on outputs by the seed answer's map: sigmoid to :math:`[-r, r]`, slack, simplex projection."""

    summary = "L1 ball on outputs: u = r(2 sigmoid(z) - 1), slack r - ||u||_1, simplex projection (exact Jacobian)"
