"""constrain: constraint sets, exact differentiable projections and their cvxpy references.

The bottom layer of the toolkit; :mod:`strategies` enforces these sets during training and
:mod:`experiments` compares the ways of doing so.
"""

from constrain._affine import AffineFactor, project_affine
from constrain._metric import l1_ball_metric_threshold, project_affine_metric, project_l1_ball_metric, project_metric
from constrain._orthant import project_nonnegative
from constrain._polyhedron_sets import Box, Polyhedron
from constrain._simplex import l1_ball_threshold, numba_available, project_l1_ball, project_simplex
from constrain.reference import ReferenceSolverError, reference_projection
from constrain.sets import Affine, ConstraintSet, L1Ball, NonNegative, Simplex
from constrain.targets import OutputTarget, ParameterTarget, on_output, on_parameter, output_rows, parameter_rows

__all__ = [
    "Affine",
    "AffineFactor",
    "Box",
    "ConstraintSet",
    "L1Ball",
    "NonNegative",
    "OutputTarget",
    "ParameterTarget",
    "Polyhedron",
    "ReferenceSolverError",
    "Simplex",
    "l1_ball_metric_threshold",
    "l1_ball_threshold",
    "on_output",
    "on_parameter",
    "output_rows",
    "parameter_rows",
    "project_affine",
    "project_affine_metric",
    "project_l1_ball",
    "project_l1_ball_metric",
    "project_metric",
    "project_nonnegative",
    "project_simplex",
    "numba_available",
    "reference_projection",
]
