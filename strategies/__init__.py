"""strategies: the *how* of constrained training, picked by name from one registry.

>>> import strategies
>>> strategies.available()                       # every registered name
>>> s = strategies.get("quadratic-penalty", weight=10.0)
>>> model = s.attach(model, [on_output(L1Ball(1.0))])
>>> s = strategies.QuadraticPenalty(weight=10.0)  # the same, by class
>>> s.detach()                                   # undo attach: hooks, maps and added parameters removed

Families: penalty / barrier, Lagrangian saddle point, projected, reparameterization, and the
L1-regularization implementations for the weight L1 constraint.
"""

from strategies._base import NotAttachedError, Strategy, UnsupportedConstraint
from strategies._registry import available, get, options_of, register, strategy_class

# Importing a family module registers its strategies; the classes are exported for users who prefer them to names.
from strategies._penalty import ExactPenalty, ExtendedLogBarrier, LogBarrier, QuadraticPenalty, ReciprocalBarrier  # noqa: E402  isort: skip
from strategies._projected import Projected  # noqa: E402  isort: skip
from strategies._lagrangian import AugmentedLagrangian, Lagrangian  # noqa: E402  isort: skip
from strategies._slack_lagrangian import SlackLagrangian  # noqa: E402  isort: skip

# L1Regularization: the base class; its ``strength`` and ``lr`` (the shrink steps' step size, which should
# follow the optimizer's learning rate) are public attributes a training loop may update.
from strategies._l1reg import (  # noqa: E402  isort: skip
    L1Cumulative,
    L1Proximal,
    L1Regularization,
    L1SignStep,
    L1Subgradient,
    L1Truncated,
)
from strategies._reparam import (  # noqa: E402  isort: skip
    ExpReparameterization,
    L1WeightNormReparameterization,
    NullSpaceReparameterization,
    RadialReparameterization,
    Reparameterization,
    SigmoidSimplexReparameterization,
    SoftplusReparameterization,
    SquareReparameterization,
)
from strategies._output_polytope import CompletionReparameterization, GaugeReparameterization  # noqa: E402  isort: skip
from strategies._dc3 import DC3  # noqa: E402  isort: skip
from strategies._hardnet import HardNetAff  # noqa: E402  isort: skip

# Parametrization modules, reusable on their own (e.g. L1WeightNorm in PSiLON layers).
from strategies._reparam import (  # noqa: E402  isort: skip
    AffineLatent,
    ExpNonNegative,
    L1WeightNorm,
    NullSpace,
    NullSpaceSlice,
    RadialL1,
    SoftplusNonNegative,
    SquareNonNegative,
)

__all__ = [
    "DC3",
    "AffineLatent",
    "AugmentedLagrangian",
    "CompletionReparameterization",
    "ExactPenalty",
    "ExpNonNegative",
    "ExpReparameterization",
    "ExtendedLogBarrier",
    "GaugeReparameterization",
    "HardNetAff",
    "L1Cumulative",
    "L1Proximal",
    "L1SignStep",
    "L1Subgradient",
    "L1Regularization",
    "L1Truncated",
    "L1WeightNorm",
    "L1WeightNormReparameterization",
    "Lagrangian",
    "LogBarrier",
    "NotAttachedError",
    "NullSpace",
    "NullSpaceReparameterization",
    "NullSpaceSlice",
    "Projected",
    "QuadraticPenalty",
    "RadialL1",
    "RadialReparameterization",
    "Reparameterization",
    "ReciprocalBarrier",
    "SigmoidSimplexReparameterization",
    "SlackLagrangian",
    "SoftplusNonNegative",
    "SoftplusReparameterization",
    "SquareNonNegative",
    "SquareReparameterization",
    "Strategy",
    "UnsupportedConstraint",
    "available",
    "get",
    "options_of",
    "register",
    "strategy_class",
]
