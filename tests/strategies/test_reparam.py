"""Reparameterization strategies: feasible after every step, on training and held-out inputs."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

import strategies
from constrain import Affine, L1Ball, NonNegative, Simplex, on_output, on_parameter, parameter_rows
from strategies import UnsupportedConstraint
from strategies._output_maps import NONNEGATIVE_MAPS, radial_l1, sigmoid_simplex
from strategies._reparam import (
    AffineLatent,
    ExpNonNegative,
    L1WeightNorm,
    NullSpace,
    NullSpaceSlice,
    RadialL1,
    SoftplusNonNegative,
    SquareNonNegative,
)

TOL = 1e-6


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class MLP(nn.Module):
    """5 -> 8 -> 3 with a ReLU; the last layer is ``lin``."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.hidden = nn.Linear(5, 8, dtype=dtype)
        self.lin = nn.Linear(8, 3, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(torch.relu(self.hidden(x)))


def data(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """Training inputs and targets far outside every set (large, mixed signs); held-out inputs 3x wider."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 5, generator=g, dtype=dtype)
    Y = X @ torch.randn(5, 3, generator=g, dtype=dtype) * 3 - 1
    return X, Y, 3 * torch.randn(64, 5, generator=g, dtype=dtype)


def _tie_across_layers() -> Affine:
    """hidden.weight[0, 0] = lin.weight[0, 0] and hidden.weight[1, 2] = lin.weight[2, 7] = lin.bias[1]."""
    n_hidden, n_lin = 40, 24
    rows = torch.zeros(3, n_hidden + n_lin + 3, dtype=torch.float64)
    rows[0, 0], rows[0, n_hidden + 0] = 1, -1
    rows[1, 1 * 5 + 2], rows[1, n_hidden + 2 * 8 + 7] = 1, -1
    rows[2, 1 * 5 + 2], rows[2, n_hidden + n_lin + 1] = 1, -1
    return Affine(rows, torch.zeros(3))


def _random_affine(n: int, m: int = 2, seed: int = 1) -> Affine:
    g = torch.Generator().manual_seed(seed)
    return Affine(torch.randn(m, n, generator=g, dtype=torch.float64), torch.randn(m, generator=g, dtype=torch.float64))


TIE = [[(0, 0), (1, 1), (2, 2)], [(0, 4), (2, 3), (1, 7)]]

# (id, strategy name, options, constraints, dtype)
CELLS = [
    ("l1-output-radial", "reparam-radial", {}, lambda: [on_output(L1Ball(1.0))], torch.float32),
    ("l1-output-sigmoid-simplex", "reparam-sigmoid-simplex", {}, lambda: [on_output(L1Ball(1.0))], torch.float32),
    (
        "l1-output-option",
        "reparameterization",
        {"l1_outputs": "sigmoid-simplex"},
        lambda: [on_output(L1Ball(2.0))],
        torch.float32,
    ),
    *[
        (f"nonneg-output-{m}", f"reparam-{m}", {}, lambda: [on_output(NonNegative())], torch.float32)
        for m in ("softplus", "exp", "square")
    ],
    *[
        (f"nonneg-weight-{m}", f"reparam-{m}", {}, lambda: [on_parameter("lin.weight", NonNegative())], torch.float32)
        for m in ("softplus", "exp", "square")
    ],
    ("affine-weight-tie", "reparam-null-space", {}, lambda: [on_parameter("lin.weight", Affine.tie((3, 8), TIE))], torch.float32),
    (
        "affine-weight-tie-projector",
        "reparam-null-space",
        {"affine_form": "projector"},
        lambda: [on_parameter("lin.weight", Affine.tie((3, 8), TIE))],
        torch.float32,
    ),
    # A general A: float32 rounding of A w alone is ~1e-7 ||A|| ||w||, so this cell trains in float64.
    ("affine-weight-random", "reparam-null-space", {}, lambda: [on_parameter("lin.weight", _random_affine(24))], torch.float64),
    (
        "affine-weight-random-projector",
        "reparameterization",
        {"affine_form": "projector"},
        lambda: [on_parameter("lin.weight", _random_affine(24))],
        torch.float64,
    ),
    (
        "affine-across-layers",
        "reparameterization",
        {},
        lambda: [on_parameter(["hidden.weight", "lin.weight", "lin.bias"], _tie_across_layers())],
        torch.float32,
    ),
    ("l1-weight-norm", "reparam-l1-weight-norm", {}, lambda: [on_parameter("lin.weight", L1Ball(0.5))], torch.float32),
    (
        "l1-weight-norm-shared",
        "reparam-l1-weight-norm",
        {"shared_length": True},
        lambda: [on_parameter("lin.weight", L1Ball(0.5))],
        torch.float32,
    ),
    ("l1-weight-radial", "reparam-radial", {}, lambda: [on_parameter("hidden.weight", L1Ball(0.3))], torch.float32),
    (
        "l1-weight-per-row-radius",
        "reparameterization",
        {},
        lambda: [on_parameter("lin.weight", L1Ball(torch.tensor([0.2, 0.5, 1.0])))],
        torch.float32,
    ),
    (
        "nonneg-and-l1-everywhere",
        "reparameterization",
        {"nonnegative": "exp", "l1_outputs": "sigmoid-simplex"},
        lambda: [
            on_parameter("lin.weight", L1Ball(0.5)),
            on_parameter("lin.weight", NonNegative()),
            on_output(L1Ball(1.0)),
            on_output(NonNegative()),
        ],
        torch.float32,
    ),
]


@pytest.mark.parametrize("name, options, constraints, dtype", [c[1:] for c in CELLS], ids=[c[0] for c in CELLS])
def test_feasible_after_every_step_on_training_and_held_out_inputs(name, options, constraints, dtype) -> None:
    torch.manual_seed(0)
    X, Y, X_test = data(dtype)
    strategy = strategies.get(name, **options)
    model = strategy.attach(MLP(dtype), constraints())
    opt = torch.optim.Adam(model.parameters(), lr=0.05)

    def worst() -> float:
        with torch.no_grad():
            return max(*strategy.report(model(X)).values(), *strategy.report(model(X_test)).values())

    assert worst() <= TOL  # an infeasible start is mapped into the set at attach
    first = None
    for _ in range(50):
        out = model(X)
        loss = strategy.loss(nn.functional.mse_loss(out, Y), out)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        strategy.after_step()
        assert worst() <= TOL
    assert float(loss.detach()) < first  # it trains
    assert torch.equal(strategy.loss(loss.detach(), out), loss.detach())


# ---------------------------------------------------------------------- right inverse keeps feasible weights
def _feasible_weight(kind: str) -> Tensor:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(3, 8, generator=g)
    if kind == "nonneg":
        return w.abs() + 0.01
    if kind == "affine":
        return Affine.tie((3, 8), TIE).project(w.reshape(1, -1)).reshape(3, 8).float()
    if kind == "l1-shared":
        return w / w.abs().sum(-1, keepdim=True) * 0.3  # equal row norms, inside the ball of 0.5
    return w / w.abs().sum(-1, keepdim=True) * torch.tensor([[0.1], [0.3], [0.45]])


KEEP = [
    ("reparam-softplus", {}, "nonneg", NonNegative()),
    ("reparam-exp", {}, "nonneg", NonNegative()),
    ("reparam-square", {}, "nonneg", NonNegative()),
    ("reparam-null-space", {}, "affine", Affine.tie((3, 8), TIE)),
    ("reparam-null-space", {"affine_form": "projector"}, "affine", Affine.tie((3, 8), TIE)),
    ("reparam-l1-weight-norm", {}, "l1", L1Ball(0.5)),
    ("reparam-l1-weight-norm", {"shared_length": True}, "l1-shared", L1Ball(0.5)),
    ("reparam-radial", {}, "l1", L1Ball(0.5)),
]


@pytest.mark.parametrize("name, options, kind, cset", KEEP, ids=[f"{k[0]}-{k[2]}-{len(k[1])}" for k in KEEP])
def test_right_inverse_keeps_feasible_weights(name, options, kind, cset) -> None:
    model = MLP()
    w = _feasible_weight(kind)
    with torch.no_grad():
        model.lin.weight.copy_(w)
    strategies.get(name, **options).attach(model, [on_parameter("lin.weight", cset)])
    assert parametrize.is_parametrized(model.lin, "weight")
    torch.testing.assert_close(model.lin.weight, w, atol=1e-6, rtol=0)


def test_infeasible_weights_start_at_a_nearby_feasible_point() -> None:
    model = MLP()
    w = model.lin.weight.detach().clone() * 10
    with torch.no_grad():
        model.lin.weight.copy_(w)
    strategies.get("reparam-null-space").attach(model, [on_parameter("lin.weight", Affine.tie((3, 8), TIE))])
    expected = Affine.tie((3, 8), TIE).project(w.double().reshape(1, -1)).reshape(3, 8)
    torch.testing.assert_close(model.lin.weight.double(), expected, atol=1e-5, rtol=0)  # the projection
    model = MLP()
    strategies.get("reparam-softplus").attach(model, [on_parameter("lin.weight", NonNegative())])
    assert float(model.lin.weight.detach().min()) > 0


# ---------------------------------------------------------------------- gradcheck (float64)
def _gradcheck(fn, *inputs: Tensor) -> None:
    inputs = tuple(x.detach().double().requires_grad_(True) for x in inputs)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def test_gradcheck_nonnegative_parametrizations() -> None:
    v = torch.randn(4, 6, dtype=torch.float64)
    for p in (SoftplusNonNegative(), ExpNonNegative(), SquareNonNegative()):
        _gradcheck(p, v)
        w = p(v)
        torch.testing.assert_close(p(p.right_inverse(w)), w, atol=1e-6, rtol=1e-6)  # w >= eps: kept
        assert float(w.detach().min()) >= 0


@pytest.mark.parametrize("form", ["basis", "projector"])
def test_gradcheck_null_space(form: str) -> None:
    like = torch.zeros(3, 8, dtype=torch.float64)
    s = _random_affine(24, m=3)
    p = NullSpace(s.factor, like, form)
    v = torch.randn(p.latent_size, dtype=torch.float64)
    _gradcheck(p, v)
    w = p(v)
    assert float(s.violation(w.detach().reshape(1, -1)).max()) < 1e-12
    torch.testing.assert_close(p(p.right_inverse(w)), w)  # feasible -> kept
    latent = AffineLatent(s.factor, like, form)
    part = NullSpaceSlice(latent, 8, torch.zeros(2, 8, dtype=torch.float64))

    def block(v: Tensor) -> Tensor:
        return torch.func.functional_call(part, {"latent.latent": v}, (like.new_empty(0),))

    _gradcheck(block, torch.randn(latent.latent_size, dtype=torch.float64))


@pytest.mark.parametrize("radius, shared", [(0.7, False), (0.7, True), (None, False), (None, True)])
def test_gradcheck_l1_weight_norm(radius: float | None, shared: bool) -> None:
    w = torch.randn(4, 6, dtype=torch.float64)
    p = L1WeightNorm(w, radius, shared_length=shared)
    v = p.right_inverse(w)
    length = torch.randn_like(p.raw_length)

    def fn(v: Tensor, raw: Tensor) -> Tensor:
        return torch.func.functional_call(p, {"raw_length": raw}, (v,))

    _gradcheck(fn, v, length)
    norms = parameter_rows(p(v)).abs().sum(-1, keepdim=True)
    torch.testing.assert_close(norms, p.length.abs().expand_as(norms))
    if radius is not None:
        assert float(norms.detach().max()) <= radius


def test_gradcheck_radial_parametrization_and_output_maps() -> None:
    z = torch.randn(6, 5, dtype=torch.float64)
    z[:3] *= 0.05  # rows inside the ball (identity) and outside
    _gradcheck(RadialL1(1.0, z), z)
    _gradcheck(lambda z: radial_l1(z, 1.0), z)
    _gradcheck(lambda z: sigmoid_simplex(z, 1.5), z * 4)
    for fn in NONNEGATIVE_MAPS.values():
        _gradcheck(fn, z)


# ---------------------------------------------------------------------- the output maps themselves
def test_sigmoid_simplex_map() -> None:
    z = torch.randn(200, 6, dtype=torch.float64) * torch.logspace(-2, 1, 200, dtype=torch.float64)[:, None]
    for r in (0.5, 1.0, 3.0):
        y = sigmoid_simplex(z, r)
        assert float(y.abs().sum(-1).max()) <= r + 1e-12
        torch.testing.assert_close(y, r * sigmoid_simplex(z, 1.0))  # scales with the radius
        u = r * (2 * torch.sigmoid(z) - 1)
        inside = u.abs().sum(-1) <= r
        assert inside.any() and (~inside).any()
        torch.testing.assert_close(y[inside], u[inside])  # y = u where u is already in the ball
        assert bool((torch.sign(y) * torch.sign(u) >= 0).all())  # signs kept
    y = radial_l1(z, 2.0)
    assert float(y.abs().sum(-1).max()) <= 2.0 + 1e-12
    small = z.abs().sum(-1) <= 2.0
    torch.testing.assert_close(y[small], z[small])


# ---------------------------------------------------------------------- names, dtype, removal, state
def test_parameter_names_resolve_and_output_maps_keep_the_model() -> None:
    model = MLP()
    names, keys = [n for n, _ in model.named_parameters()], list(model.state_dict())
    strategy = strategies.get("reparameterization")
    same = strategy.attach(model, [on_output(L1Ball(1.0)), on_parameter("lin.weight", NonNegative())])
    assert same is model
    assert model.lin.weight.shape == (3, 8) and float(model.lin.weight.detach().min()) >= 0
    assert "lin.weight" not in [n for n, _ in model.named_parameters()]  # the free variable is `original`
    assert "lin.parametrizations.weight.original" in [n for n, _ in model.named_parameters()]
    assert "hidden.weight" in [n for n, _ in model.named_parameters()] and "hidden.weight" in names
    assert set(strategy.report()) == {"lin.weight in NonNegative()"}
    other = MLP()
    strategies.get("reparam-radial").attach(other, [on_output(L1Ball(1.0))])
    assert [n for n, _ in other.named_parameters()] == names and list(other.state_dict()) == keys
    # a parametrized name can be constrained again by name (validated through the parametrization)
    on_parameter("lin.weight", L1Ball(1.0)).validate(model)


@pytest.mark.parametrize(
    "constraints",
    [
        [on_parameter("lin.weight", NonNegative()), on_output(L1Ball(1.0))],
        [on_parameter(["hidden.weight", "lin.weight", "lin.bias"], _tie_across_layers())],
        [on_parameter("lin.weight", _random_affine(24))],
        [on_parameter("lin.weight", L1Ball(0.5)), on_output(NonNegative())],
    ],
    ids=["nonneg+l1-output", "affine-across-layers", "affine", "l1+nonneg-output"],
)
def test_model_to_float64_after_attach(constraints) -> None:
    strategy = strategies.get("reparameterization", l1_outputs="sigmoid-simplex")
    model = strategy.attach(MLP(), constraints).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert all(b.dtype == torch.float64 for b in model.buffers())
    out = model(torch.randn(16, 5, dtype=torch.float64))
    assert out.dtype == torch.float64 and max(strategy.report(out).values()) <= 1e-12
    out.sum().backward()


def test_assigning_a_weight_projects_it() -> None:
    cset = _tie_across_layers()
    model = MLP(torch.float64)
    strategy = strategies.get("reparameterization")
    strategy.attach(model, [on_parameter(["hidden.weight", "lin.weight", "lin.bias"], cset)])
    flat = torch.cat([model.hidden.weight.reshape(-1), model.lin.weight.reshape(-1), model.lin.bias]).detach()
    new = torch.randn(3, 8, dtype=torch.float64)
    model.lin.weight = new
    flat[40:64] = new.reshape(-1)
    after = torch.cat([model.hidden.weight.reshape(-1), model.lin.weight.reshape(-1), model.lin.bias])
    torch.testing.assert_close(after, cset.project(flat.unsqueeze(0))[0])
    assert max(strategy.report().values()) <= 1e-12


def test_state_dict_round_trip_and_remove() -> None:
    constraints = [on_parameter(["hidden.weight", "lin.weight", "lin.bias"], _tie_across_layers()), on_output(L1Ball(1.0))]
    torch.manual_seed(0)
    a = strategies.get("reparameterization").attach(MLP(), constraints)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn_like(p))
    torch.manual_seed(1)
    b_strategy = strategies.get("reparameterization")
    b = b_strategy.attach(MLP(), constraints)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 5) * 5
    torch.testing.assert_close(b(x), a(x))
    before = {
        n: getattr(b.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]).detach().clone()
        for n in ("hidden.weight", "lin.weight", "lin.bias")
    }
    raw = b.lin(torch.relu(b.hidden(x)))
    assert b_strategy.detach() is b
    assert not parametrize.is_parametrized(b)
    assert sorted(n for n, _ in b.named_parameters()) == sorted(n for n, _ in MLP().named_parameters())
    for n, value in before.items():
        torch.testing.assert_close(b.get_parameter(n), value)
    torch.testing.assert_close(b(x), raw)  # the output map is gone too


# ---------------------------------------------------------------------- what is refused, and why
REFUSED = [
    ("reparameterization", [on_output(Simplex(1.0))], "projected"),
    ("reparameterization", [on_parameter("lin.weight", Simplex(1.0))], "projected"),
    ("reparameterization", [on_output(Affine.tie(3, [[0, 1]]))], "projected"),
    ("reparameterization", [on_output(L1Ball(torch.ones(64)))], "per-sample"),
    ("reparam-softplus", [on_output(L1Ball(1.0))], "reparam-radial"),
    ("reparam-l1-weight-norm", [on_output(L1Ball(1.0))], "reparam-sigmoid-simplex"),
    ("reparam-sigmoid-simplex", [on_parameter("lin.weight", L1Ball(1.0))], "reparam-l1-weight-norm"),
    ("reparam-null-space", [on_parameter("lin.weight", NonNegative())], "reparam-softplus"),
    (
        "reparameterization",
        [on_parameter("lin.weight", Affine.tie((3, 8), TIE)), on_parameter("lin.weight", NonNegative())],
        "Merge",
    ),
    ("reparameterization", [on_parameter("lin.weight", L1Ball(1.0)), on_parameter("lin.weight", L1Ball(2.0))], "duplicates"),
]


@pytest.mark.parametrize("name, constraints, hint", REFUSED, ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSED)])
def test_unsupported_cells_are_refused_with_a_reason(name, constraints, hint) -> None:
    model = MLP()
    keys = list(model.state_dict())
    with pytest.raises(UnsupportedConstraint, match=hint):
        strategies.get(name).attach(model, constraints)
    assert list(model.state_dict()) == keys and not model._forward_hooks  # nothing was touched


def test_support_matrix_and_options() -> None:
    cls = strategies.strategy_class("reparameterization")
    for target in (
        on_output(L1Ball(1.0)),
        on_output(NonNegative()),
        on_parameter("w", NonNegative()),
        on_parameter("w", Affine.tie(4, [[0, 1]])),
        on_parameter("w", L1Ball(1.0)),
    ):
        assert cls.unsupported_reason(target) is None
    names = strategies.available("reparameterization")
    assert {
        "reparameterization",
        "reparam-softplus",
        "reparam-exp",
        "reparam-square",
        "reparam-null-space",
        "reparam-l1-weight-norm",
        "reparam-radial",
        "reparam-sigmoid-simplex",
    } <= set(names)
    with pytest.raises(ValueError, match="nonnegative"):
        strategies.get("reparameterization", nonnegative="relu")
    with pytest.raises(TypeError, match="shared_length"):
        strategies.get("reparam-radial", shared_length=True)


def test_foreign_parametrization_is_refused_for_maps_that_would_change_it() -> None:
    model = MLP()
    parametrize.register_parametrization(model.lin, "weight", L1WeightNorm(model.lin.weight, None))
    with pytest.raises(UnsupportedConstraint, match="already carries a parametrization"):
        strategies.get("reparam-softplus").attach(model, [on_parameter("lin.weight", NonNegative())])
    w = model.lin.weight.detach().clone() * 0.01  # an L1 map appends and keeps a feasible value
    model.lin.weight = w
    strategies.get("reparam-l1-weight-norm").attach(model, [on_parameter("lin.weight", L1Ball(1.0))])
    torch.testing.assert_close(model.lin.weight, w, atol=1e-6, rtol=0)


def test_l1_weight_norm_free_length_is_learnable() -> None:
    layer = nn.Linear(6, 4)
    norm = L1WeightNorm(layer.weight, radius=None, shared_length=True)
    parametrize.register_parametrization(layer, "weight", norm)
    assert norm.length.shape == (1, 1)
    with torch.no_grad():
        norm.raw_length.fill_(2.5)
    torch.testing.assert_close(layer.weight.abs().sum(-1), torch.full((4,), 2.5))
    layer(torch.randn(3, 6)).sum().backward()
    assert norm.raw_length.grad is not None and layer.parametrizations.weight.original.grad is not None
