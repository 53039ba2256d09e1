"""Every public entry point refuses bad input with a specific exception whose message names the argument.

Also: empty batches give empty results, and float16 / bfloat16 inputs are computed in float32 and
returned in their own dtype.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from constrain import (
    Affine,
    L1Ball,
    NonNegative,
    Simplex,
    l1_ball_threshold,
    on_output,
    on_parameter,
    project_affine,
    project_l1_ball,
    project_nonnegative,
    project_simplex,
)

X = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
A = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
C = torch.tensor([0.0, 1.0])

# every kernel as a function of x alone
KERNELS = {
    "project_l1_ball": lambda x: project_l1_ball(x, 1.0),
    "project_simplex": lambda x: project_simplex(x, 1.0),
    "l1_ball_threshold": lambda x: l1_ball_threshold(x, 1.0),
    "project_nonnegative": project_nonnegative,
    "project_affine": lambda x: project_affine(x, A, C),
    "L1Ball.project": L1Ball(1.0).project,
    "Simplex.project": Simplex(1.0).project,
    "NonNegative.project": NonNegative().project,
    "Affine.project": Affine(A, C).project,
    "L1Ball.violation": L1Ball(1.0).violation,
    "L1Ball.reference_projection": L1Ball(1.0).reference_projection,
}
RADIUS_KERNELS = {
    "project_l1_ball": project_l1_ball,
    "project_simplex": project_simplex,
    "l1_ball_threshold": l1_ball_threshold,
    "L1Ball": lambda x, r: L1Ball(r).project(x),
    "Simplex": lambda x, r: Simplex(r).project(x),
}


@pytest.mark.parametrize("kernel", KERNELS.values(), ids=KERNELS.keys())
@pytest.mark.parametrize("bad", [[[1.0, 2.0]], np.ones((2, 4)), 3.0, None], ids=["list", "ndarray", "float", "None"])
def test_x_of_a_wrong_type(kernel, bad) -> None:
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        kernel(bad)


@pytest.mark.parametrize("kernel", KERNELS.values(), ids=KERNELS.keys())
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64], ids=str)
def test_x_of_a_non_floating_dtype(kernel, dtype) -> None:
    with pytest.raises(TypeError, match=r"x has dtype torch\.\w+; projections need a floating-point tensor"):
        kernel(torch.ones(3, 4, dtype=dtype))


@pytest.mark.parametrize(
    "kernel",
    [k for name, k in KERNELS.items() if name != "L1Ball.violation" and "reference" not in name],
    ids=[name for name in KERNELS if name != "L1Ball.violation" and "reference" not in name],
)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_x_not_finite(kernel, value) -> None:
    x = X.clone()
    x[1, 2] = value
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        kernel(x)


@pytest.mark.parametrize("kernel", RADIUS_KERNELS.values(), ids=RADIUS_KERNELS.keys())
def test_bad_radius(kernel) -> None:
    for value in (0.0, -1.0, 0, math.inf, math.nan):
        with pytest.raises(ValueError, match="radius must be positive and finite"):
            kernel(X, value)
    for value in ("1", None, True, [1.0, 2.0, 3.0], np.ones(3)):
        with pytest.raises(TypeError, match="radius must be a positive float or a tensor"):
            kernel(X, value)
    for value in (
        torch.tensor([1.0, 0.0, 2.0]),
        torch.tensor([1.0, -2.0, 1.0]),
        torch.tensor(math.inf),
        torch.tensor([1.0, math.nan, 1.0]),
    ):
        with pytest.raises(ValueError, match="every entry of radius must be positive and finite"):
            kernel(X, value)
    for value in (torch.ones(2), torch.ones(3, 1), torch.ones(4, 3)):
        with pytest.raises(ValueError, match=r"radius of shape \([\d, ]+\) does not broadcast to the batch shape \(3,\)"):
            kernel(X, value)
    with pytest.raises(TypeError, match="radius must be a real tensor"):
        kernel(X, torch.ones(3, dtype=torch.complex64))


def test_radius_accepts_numpy_scalars_and_broadcasts() -> None:
    torch.testing.assert_close(project_l1_ball(X, np.float32(0.5)), project_l1_ball(X, 0.5))
    torch.testing.assert_close(project_l1_ball(X, np.int64(2)), project_l1_ball(X, 2.0))
    torch.testing.assert_close(project_l1_ball(X, torch.tensor(0.5)), project_l1_ball(X, 0.5))  # 0-d tensor
    x3 = torch.randn(2, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(
        project_simplex(x3, torch.tensor([1.0, 2.0, 3.0])), project_simplex(x3, torch.tensor([[1.0, 2.0, 3.0]] * 2))
    )


def test_radius_that_overflows_the_dtype() -> None:
    with pytest.raises(ValueError, match=r"radius=1e\+300 overflows torch\.float32"):
        project_simplex(X, 1e300)
    assert torch.isfinite(project_simplex(X.double(), 1e300)).all()  # fine in float64
    assert L1Ball(1e300).radius == 1e300  # the set does not assume a dtype


@pytest.mark.parametrize("kernel", [project_l1_ball, project_simplex, l1_ball_threshold], ids=lambda k: k.__name__)
def test_bad_dim(kernel) -> None:
    with pytest.raises(IndexError, match=r"dim=2 is out of range for a tensor with 2 dimensions"):
        kernel(X, 1.0, dim=2)
    with pytest.raises(IndexError, match=r"dim=-3 is out of range"):
        kernel(X, 1.0, dim=-3)
    with pytest.raises(ValueError, match="x must have at least one dimension"):
        kernel(torch.tensor(1.0), 1.0)


# ---------------------------------------------------------------------------------------------
# affine: A, c and x must fit


AFFINE_ENTRIES = {
    "project_affine": lambda x, a, c: project_affine(x, a, c),
    "Affine": lambda x, a, c: Affine(a, c).project(x),
}


@pytest.mark.parametrize("entry", AFFINE_ENTRIES.values(), ids=AFFINE_ENTRIES.keys())
def test_affine_shapes_must_fit(entry) -> None:
    with pytest.raises(ValueError, match=r"x has shape \(3, 4\) but A has 5 columns"):
        entry(X, torch.ones(2, 5), torch.ones(2))
    with pytest.raises(
        ValueError, match=r"c must be a vector with one entry per row of A: A has shape \(2, 4\), c has shape \(3,\)"
    ):
        entry(X, A, torch.ones(3))
    with pytest.raises(ValueError, match=r"A must be a matrix of shape \(m, n\)"):
        entry(X, torch.ones(2, 2, 4), C)
    with pytest.raises(ValueError, match=r"A must be a matrix of shape \(m, n\)"):
        entry(X, torch.tensor(2.0), 1.0)
    with pytest.raises(ValueError, match="A has no columns"):
        entry(torch.ones(3, 0), torch.ones(2, 0), torch.zeros(2))


@pytest.mark.parametrize("entry", AFFINE_ENTRIES.values(), ids=AFFINE_ENTRIES.keys())
def test_affine_bad_values(entry) -> None:
    inconsistent = torch.tensor([[1.0, 1.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"A w = c is inconsistent: no w satisfies it \(rank A = 1 < 2 rows"):
        entry(X, inconsistent, torch.tensor([1.0, 3.0]))
    with pytest.raises(ValueError, match="A contains NaN or Inf"):
        entry(X, torch.tensor([[1.0, math.nan, 0.0, 0.0]]), torch.zeros(1))
    with pytest.raises(ValueError, match="c contains NaN or Inf"):
        entry(X, A, torch.tensor([0.0, math.inf]))
    with pytest.raises(TypeError, match="A and c must be real"):
        entry(X, A.to(torch.complex64), C)
    with pytest.raises(TypeError, match="A must be a tensor, an array or nested lists of numbers, got str"):
        entry(X, "A", C)
    with pytest.raises(TypeError, match="c must be a tensor, an array or nested lists of numbers, got NoneType"):
        entry(X, A, None)
    with pytest.raises(ValueError, match="A must be a rectangular array of numbers"):
        entry(X, [[1.0, 2.0, 3.0, 4.0], [1.0]], [0.0, 0.0])


def test_affine_accepts_lists_integers_and_a_rank_deficient_consistent_system() -> None:
    consistent = Affine([[1, 1, 0, 0], [2, 2, 0, 0]], [1, 2])  # rank 1, c in the range of A
    assert consistent.factor.rank == 1
    y = consistent.project(X)
    torch.testing.assert_close(y[:, 0] + y[:, 1], torch.ones(3))
    assert Affine([1.0, 1.0, 1.0, 1.0], 2.0).size == 4  # one row given as a vector, c a float


def test_affine_tie_bad_groups() -> None:
    with pytest.raises(ValueError, match=r"groups\[1\] has index \(2, 0\), which is not an index of shape \(2, 2\)"):
        Affine.tie((2, 2), [[(0, 0), (1, 1)], [(0, 1), (2, 0)]])
    with pytest.raises(ValueError, match=r"groups\[0\] has index \(0,\), which is not an index of shape \(2, 2\)"):
        Affine.tie((2, 2), [[0, 1]])
    with pytest.raises(ValueError, match=r"groups\[0\] has index \(-1,\)"):
        Affine.tie(3, [[-1, 0]])
    with pytest.raises(ValueError, match=r"groups\[0\] has 1 index; a tied group needs at least two"):
        Affine.tie((2, 2), [[(0, 0)]])
    with pytest.raises(ValueError, match="groups is empty"):
        Affine.tie((2, 2), [])
    with pytest.raises(ValueError, match=r"groups\[0\] lists index \(0, 0\) twice"):
        Affine.tie((2, 2), [[(0, 0), (0, 0)]])
    with pytest.raises(TypeError, match="shape must be an int or a sequence of ints"):
        Affine.tie("ab", [[0, 1]])
    with pytest.raises(TypeError, match="groups must be a list of groups of indices, got int"):
        Affine.tie(3, 5)


def test_affine_tie_overlapping_groups_tie_transitively() -> None:
    tie = Affine.tie(4, [[0, 1], [1, 2]])
    y = tie.project(torch.tensor([[3.0, 0.0, 0.0, 5.0]]))
    torch.testing.assert_close(y, torch.tensor([[1.0, 1.0, 1.0, 5.0]]))


# ---------------------------------------------------------------------------------------------
# set constructors


@pytest.mark.parametrize("cls", [L1Ball, Simplex])
def test_set_constructors(cls) -> None:
    for value in (0.0, -2.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="radius must be positive and finite"):
            cls(value)
    for value in ("1", None, False, [1.0]):
        with pytest.raises(TypeError, match="radius must be a positive float or a tensor"):
            cls(value)
    with pytest.raises(ValueError, match="every entry of radius must be positive and finite"):
        cls(torch.tensor([1.0, 0.0]))
    with pytest.raises(TypeError, match="radius must be a real tensor"):
        cls(torch.tensor([True]))
    # a per-row radius must fit the batch it is used with
    with pytest.raises(ValueError, match=r"radius of shape \(3,\) does not broadcast to the batch shape \(4,\)"):
        cls(torch.ones(3)).project(torch.ones(4, 2))


# ---------------------------------------------------------------------------------------------
# targets


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_on_output_and_on_parameter_types() -> None:
    with pytest.raises(TypeError, match="expected a constraint set such as L1Ball"):
        on_output("l1")
    with pytest.raises(TypeError, match="expected a constraint set"):
        on_parameter("0.weight", lambda x: x)
    with pytest.raises(TypeError, match="names must be a parameter name"):
        on_parameter(None, NonNegative())
    for names in ("", [], [3], ["0.weight", ""]):
        with pytest.raises(ValueError, match="names must be a parameter name"):
            on_parameter(names, NonNegative())
    with pytest.raises(ValueError, match="only a flat-vector set such as Affine can span several parameters"):
        on_parameter(["0.weight", "2.weight"], L1Ball(1.0))


def test_parameter_target_validate() -> None:
    model = _model()
    target = on_parameter("0.wieght", NonNegative())
    with pytest.raises(KeyError, match=r"no parameter '0\.wieght'; its parameters are: 0\.bias, 0\.weight, 2\.bias, 2\.weight"):
        target.validate(model)
    model[2].weight.requires_grad_(False)
    with pytest.raises(ValueError, match=r"parameter '2\.weight' is frozen \(requires_grad=False\)"):
        on_parameter("2.weight", NonNegative()).validate(model)
    on_parameter("2.weight", NonNegative()).validate(model, require_grad=False)  # allowed when asked
    with pytest.raises(ValueError, match=r"A has 5 columns but the parameters 0\.bias: \(4,\) have 4 entries"):
        on_parameter("0.bias", Affine(torch.ones(1, 5), 1.0)).validate(model)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        on_parameter("0.bias", NonNegative()).validate("model")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got dict"):
        on_parameter("0.bias", NonNegative()).gather({"0.bias": torch.ones(4)})


# ---------------------------------------------------------------------------------------------
# empty batches and low precision


@pytest.mark.parametrize(
    "kernel", [k for n, k in KERNELS.items() if "threshold" not in n], ids=[n for n in KERNELS if "threshold" not in n]
)
def test_empty_batch(kernel) -> None:
    x = torch.empty(0, 4)
    y = kernel(x)
    assert y.shape[0] == 0
    if y.dim() == 2:  # a projection (the violation is one value per row); the reference is float64
        assert y.shape == (0, 4) and y.dtype in (x.dtype, torch.float64)


def test_empty_batch_threshold_and_grad() -> None:
    assert l1_ball_threshold(torch.empty(0, 4), 1.0).shape == (0, 1)
    x = torch.empty(0, 4, requires_grad=True)
    project_l1_ball(x, 1.0).sum().backward()
    assert x.grad is not None and x.grad.shape == (0, 4)
    assert project_l1_ball(torch.empty(2, 0), 1.0).shape == (2, 0)  # the ball in R^0 is {0}
    with pytest.raises(ValueError, match="cannot project onto the simplex in 0 dimensions"):
        project_simplex(torch.empty(2, 0), 1.0)


LOW = {  # radii exactly representable in float16 and bfloat16 (see test_low_precision_radius)
    "project_l1_ball": lambda x: project_l1_ball(x, 0.75),
    "project_simplex": lambda x: project_simplex(x, 0.75),
    "project_nonnegative": project_nonnegative,
    "project_affine": lambda x: project_affine(x, A, C),
    "Affine.project": Affine(A, C).project,
    "L1Ball(tensor).project": L1Ball(torch.tensor([0.5, 1.0, 2.0])).project,
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kernel", LOW.values(), ids=LOW.keys())
def test_low_precision_is_computed_in_float32(kernel, dtype) -> None:
    x = (X * 3).to(dtype)
    y = kernel(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.equal(y, kernel(x.float()).to(dtype))  # computed in float32, rounded once
    assert l1_ball_threshold(x, 0.75).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_radius(dtype) -> None:
    x = (X * 3).to(dtype)
    assert torch.equal(project_l1_ball(x, 0.7), project_l1_ball(x.float(), 0.7).to(dtype))


def test_finite_inputs_whose_sum_overflows() -> None:
    """The finiteness check looks at a reduction; a sum that overflows must not reject finite entries."""
    x = torch.full((2, 4), 3e38)
    x[1] = -3e38
    torch.testing.assert_close(project_nonnegative(x), x.clamp_min(0))
    bad = x.clone()
    bad[0, 1] = math.nan
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        project_nonnegative(bad)


def test_inconsistent_system_is_refused_at_any_scale() -> None:
    for scale in (1.0, 1e-10, 1e10):
        with pytest.raises(ValueError, match="A w = c is inconsistent"):
            Affine([[1.0], [1.0]], [scale, -scale])
        assert Affine([[1.0], [1.0]], [scale, scale]).factor.rank == 1  # consistent, rank deficient
