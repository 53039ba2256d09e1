"""strategies: the *how* of constrained training, picked by name from one registry.

>>> import strategies
>>> strategies.available()                       # every registered name
>>> s = strategies.get("quadratic-penalty", weight=10.0)
>>> model = s.attach(model, [on_output(L1Ball(1.0))])

Families: penalty / barrier, Lagrangian saddle point, projected, reparameterization, and the
L1-regularization implementations for the weight L1 constraint.
"""

from strategies._base import NotAttachedError, Strategy, UnsupportedConstraint
from strategies._registry import available, get, options_of, register, strategy_class

# Importing a family module registers its strategies.
from strategies import _penalty  # noqa: E402,F401  isort: skip
from strategies import _projected  # noqa: E402,F401  isort: skip
from strategies import _lagrangian  # noqa: E402,F401  isort: skip
from strategies import _slack_lagrangian  # noqa: E402,F401  isort: skip
from strategies import _l1reg  # noqa: E402,F401  isort: skip
from strategies import _reparam  # noqa: E402,F401  isort: skip
from strategies import _output_polytope  # noqa: E402,F401  isort: skip
from strategies import _dc3  # noqa: E402,F401  isort: skip
from strategies import _hardnet  # noqa: E402,F401  isort: skip

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
    "AffineLatent",
    "ExpNonNegative",
    "L1WeightNorm",
    "NotAttachedError",
    "NullSpace",
    "NullSpaceSlice",
    "RadialL1",
    "SoftplusNonNegative",
    "SquareNonNegative",
    "Strategy",
    "UnsupportedConstraint",
    "available",
    "get",
    "options_of",
    "register",
    "strategy_class",
]
