r"""Reparameterization strategies: train free variables and map them onto the set.

Weights use :func:`torch.nn.utils.parametrize.register_parametrization` with the modules below;
each has a ``right_inverse``, so weights that are already feasible are kept (up to rounding) and
infeasible ones start from a nearby feasible point. ``model.lin.weight`` still resolves (it is the
mapped value); the free variable lives at ``lin.parametrizations.weight.original``.

=================  ==========================  ====================================================
set, where         map (option value)          math
=================  ==========================  ====================================================
NonNegative, W     ``softplus`` / ``exp`` /    :math:`w = \log(1 + e^v)`, :math:`e^v`, :math:`v^2`
                   ``square``
NonNegative, y     same names                  the same maps on the output rows
Affine, W          ``null-space``              :math:`\operatorname{vec} W = w_0 + N v`, :math:`A N = 0`
                                               (large W: :math:`w_0 + (I - V^\top V) v`)
L1Ball, W rows     ``l1-weight-norm``          :math:`w_j = g_j v_j / \|v_j\|_1`, :math:`g_j = r\sigma(a_j)`
L1Ball, W rows     ``radial``                  :math:`w_j = r v_j / \max(r, \|v_j\|_1)`
L1Ball, y          ``radial``                  :math:`y = r z / \max(r, \|z\|_1)`
L1Ball, y          ``sigmoid-simplex``         the seed answer's map, :func:`sigmoid_simplex`
=================  ==========================  ====================================================

One module per map (:mod:`._nonnegative`, :mod:`._null_space`, :mod:`._l1_weight_norm`, :mod:`._radial`; the
output maps in :mod:`strategies._output_maps`); the strategy plumbing is written once in :mod:`._strategy`, and
:mod:`._fixed` declares one registered name per map.

Output maps are forward hooks on the model (:func:`strategies._base.install_output_map`): the model
object, its parameter names and its state_dict stay the same. Every map holds by construction,
after every step and on every input, up to floating-point rounding.

Strategy names: ``reparameterization`` picks a map per set with options; ``reparam-<map>`` fixes
one map and refuses the sets it does not cover (one row per map in the comparison matrix).
A NonNegative and an L1Ball constraint on the same place compose (non-negative map first, the L1
map keeps signs); other combinations are refused.
"""

from __future__ import annotations

from strategies._reparam._fixed import (
    ExpReparameterization,
    L1WeightNormReparameterization,
    NullSpaceReparameterization,
    RadialReparameterization,
    SigmoidSimplexReparameterization,
    SoftplusReparameterization,
    SquareReparameterization,
)
from strategies._reparam._l1_weight_norm import L1WeightNorm
from strategies._reparam._nonnegative import ExpNonNegative, SoftplusNonNegative, SquareNonNegative
from strategies._reparam._null_space import DENSE_BASIS_LIMIT, AffineLatent, NullSpace, NullSpaceSlice, resolve_affine_form
from strategies._reparam._radial import RadialL1
from strategies._reparam._strategy import Reparameterization, cache_parametrizations

__all__ = [
    "DENSE_BASIS_LIMIT",
    "AffineLatent",
    "ExpNonNegative",
    "ExpReparameterization",
    "L1WeightNorm",
    "L1WeightNormReparameterization",
    "NullSpace",
    "NullSpaceReparameterization",
    "NullSpaceSlice",
    "RadialL1",
    "RadialReparameterization",
    "Reparameterization",
    "SigmoidSimplexReparameterization",
    "SoftplusNonNegative",
    "SoftplusReparameterization",
    "SquareNonNegative",
    "SquareReparameterization",
    "cache_parametrizations",
    "resolve_affine_form",
]
