"""The catalogue of constraint kinds: one key, one label and one example target per kind.

Every experiment that names a kind of constraint takes it from here: ``constrain list`` (the
support matrix, one column per kind), the study problems (keyed by :attr:`Kind.key`) and
``constrain bench strategies`` (its cells). :func:`example_target` builds a kind's target on a
weight called ``layer`` of shape ``(rows, cols)``; output kinds act on 2 values per sample and the
right-hand sides of the input-dependent ones read the first 3 input features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from constrain import Affine, Box, L1Ball, NonNegative, OutputTarget, ParameterTarget, Polyhedron, on_output, on_parameter

Target = OutputTarget | ParameterTarget


def _tie(shape: tuple[int, int]) -> Affine:
    """Tie the first (up to) 8 diagonal entries of a weight of ``shape`` to each other."""
    k = max(2, min(8, *shape))
    return Affine.tie(shape, [[(i, i) for i in range(k)]])


def _polyhedron() -> Polyhedron:
    # roomy, so that every strategy can start strictly inside
    return Polyhedron(A=torch.ones(1, 2), b=lambda x: x[:, :1], G=torch.eye(2), h=lambda x: x[:, 1:].abs() + 1)


@dataclass(frozen=True)
class Kind:
    """A kind of constraint: ``key`` (the study's name), ``label`` (tables) and ``make(layer, shape)``,
    an example target (``layer``: the weight's name, ``shape``: its shape; unused by output kinds)."""

    key: str
    label: str
    make: Callable[[str, tuple[int, int]], Target]
    #: On a weight (True) or on the outputs (False).
    on_weight: bool = False


#: Every kind, in the order of the support matrix.
KINDS_CATALOGUE: tuple[Kind, ...] = (
    Kind("output-l1", "L1 ball on outputs", lambda layer, shape: on_output(L1Ball(1.0))),
    Kind("output-nonneg", "outputs >= 0", lambda layer, shape: on_output(NonNegative())),
    Kind("weight-nonneg", "weights >= 0", lambda layer, shape: on_parameter(layer, NonNegative()), on_weight=True),
    Kind("weight-affine", "A vec(W) = c on weights", lambda layer, shape: on_parameter(layer, _tie(shape)), on_weight=True),
    Kind("weight-l1", "L1 ball on weight rows", lambda layer, shape: on_parameter(layer, L1Ball(1.0)), on_weight=True),
    Kind("output-polyhedron", "A y = b(x), G y <= h(x) on outputs", lambda layer, shape: on_output(_polyhedron())),
    Kind(
        "output-inequalities",
        "G y <= h(x) on outputs",
        lambda layer, shape: on_output(Polyhedron(G=torch.eye(2), h=lambda x: x[:, :2].abs() + 1)),
    ),
    Kind(
        "output-equalities",
        "A y = b(x) on outputs",
        lambda layer, shape: on_output(Polyhedron(A=torch.ones(1, 2), b=lambda x: x[:, :1])),
    ),
    Kind(
        "output-box",
        "l(x) <= y <= u(x) on outputs",
        lambda layer, shape: on_output(Box(lower=lambda x: -1 - x[:, :2].abs(), upper=lambda x: 1 + x[:, :2].abs())),
    ),
)

#: The kinds of the convergence study (its strategy table is keyed by these).
STUDY_KINDS: tuple[str, ...] = ("output-l1", "output-nonneg", "weight-nonneg", "weight-affine", "weight-l1")


def kind(key: str) -> Kind:
    """The kind called ``key`` (a KeyError naming the known keys otherwise)."""
    for entry in KINDS_CATALOGUE:
        if entry.key == key:
            return entry
    raise KeyError(f"unknown constraint kind {key!r}; kinds: {', '.join(k.key for k in KINDS_CATALOGUE)}.")


def label(key: str) -> str:
    """The table label of the kind ``key``."""
    return kind(key).label


def example_target(key: str, layer: str = "layer.weight", shape: tuple[int, int] = (2, 2)) -> Target:
    """The example target of the kind ``key`` on the weight ``layer`` of ``shape`` (outputs: 2 per sample)."""
    return kind(key).make(layer, shape)


__all__ = ["KINDS_CATALOGUE", "STUDY_KINDS", "Kind", "Target", "example_target", "kind", "label"]
